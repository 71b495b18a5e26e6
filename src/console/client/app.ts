// @ts-nocheck
/*
 * The stepgate console in the browser (served as /static/app.js). Plain standards-based JavaScript for
 * current Chromium and Firefox: no framework, no build step. tsc copies it to dist as it is; it is checked
 * by the end-to-end tests in a real browser, not by the compiler (the project's TypeScript lib has no DOM
 * types, hence @ts-nocheck).
 *
 * Data never becomes HTML: every value goes through textContent or setAttribute.
 * Passkey ceremonies use the @simplewebauthn/browser bundle (window.SimpleWebAuthnBrowser).
 */

import { codeControls, connectView, IDENTITY_ACTIONS, initIdentity, prepareSignIn, renderFactors, signalList, withFreshSso } from './identity.js';
import { initNotifications, notifyHeld, notifyResolved } from './notifications.js';

const state = {
  me: null,
  challenges: new Map(),
  cards: new Map(),
  grants: [],
  recent: [],
  /** server clock minus ours, ms */
  offset: 0,
  ws: null,
  retry: 0,
  reconnectTimer: null,
  focusId: null,
  focusDone: false,
  signedOut: false,
  ticker: null,
  refresher: null,
};

const $ = (id) => document.getElementById(id);
const now = () => Date.now() + state.offset;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ───────────────────────────── API ─────────────────────────────

async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { 'X-Stepgate': '1' } };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body || {});
  }
  const res = await fetch(path, init);
  let data = {};
  try {
    data = await res.json();
  } catch {
    data = {};
  }
  if (!res.ok) {
    const err = new Error(data.error || `the server answered ${res.status}`);
    err.status = res.status;
    err.code = data.code;
    throw err;
  }
  return data;
}

function webauthn() {
  const lib = window.SimpleWebAuthnBrowser;
  if (!lib || !lib.browserSupportsWebAuthn()) {
    const err = new Error('This browser cannot use passkeys here. Use a current Chrome, Edge, Firefox or Safari, over https or on localhost.');
    err.code = 'unsupported';
    throw err;
  }
  return lib;
}

function friendly(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError') return 'The passkey request was cancelled or timed out. Try again.';
  if (name === 'InvalidStateError') return 'This passkey is already registered for you.';
  if (name === 'SecurityError') return 'The browser refused passkeys on this address. Open the console at its configured URL.';
  if (err && err.code === 'ERROR_CEREMONY_ABORTED') return 'The passkey request was cancelled.';
  return (err && err.message) || String(err);
}

/** Runs fn; when the server asks for a fresh passkey check first, does one and runs fn again. */
async function withRecentAuth(fn) {
  try {
    return await withFreshSso(fn);
  } catch (err) {
    if (err.code !== 'reauth') throw err;
    const optionsJSON = await api('POST', '/api/reauth/options');
    const response = await webauthn().startAuthentication({ optionsJSON });
    await api('POST', '/api/reauth/verify', { response });
    return await fn();
  }
}

// ───────────────────────────── views ─────────────────────────────

function show(view) {
  for (const v of ['loading', 'signin', 'enroll', 'console', 'audit', 'connect']) $(`view-${v}`).hidden = v !== view;
  const signedIn = (view === 'console' || view === 'audit' || view === 'connect') && !!state.me;
  $('who').hidden = !signedIn;
  if (signedIn) $('who-name').textContent = state.me.user;
  // Only auditors have a second section to go to.
  $('nav').hidden = !(signedIn && (state.me.auditor || state.me.credentials));
  $('audit-nav').hidden = !(signedIn && state.me.auditor);
  if (signedIn) renderFactors();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

const isAuditPath = () => location.pathname === '/audit' || location.pathname.startsWith('/audit/');

/** After signing in: the view the address asks for. */
function enter() {
  if (isAuditPath()) auditView();
  else if (location.pathname === '/connect') {
    show('connect');
    document.title = 'Connect · stepgate console';
    connectView();
  } else consoleView();
}

function setStatus(kind, text) {
  const el = $('status');
  el.dataset.state = kind;
  el.textContent = text;
}

function announce(text) {
  const el = $('announcer');
  el.textContent = '';
  requestAnimationFrame(() => (el.textContent = text));
}

async function busy(button, label, fn) {
  const old = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  if (label) button.textContent = label;
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = old;
  }
}

async function boot() {
  const m = /^\/c\/([A-Za-z0-9_-]+)$/.exec(location.pathname);
  if (m) state.focusId = m[1];
  if (location.pathname === '/enroll') return enrollView();
  try {
    state.me = await api('GET', '/api/me');
    enter();
  } catch (err) {
    if (err.status === 401) signinView();
    else {
      show('signin');
      $('signin-error').textContent = `The console is not reachable: ${friendly(err)}`;
    }
  }
}

function signinView(message) {
  state.me = null;
  show('signin');
  setStatus('', '');
  $('signin-error').textContent = message || '';
  document.title = 'Sign in · stepgate console';
  prepareSignIn();
}

async function signIn(button) {
  $('signin-error').textContent = '';
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const optionsJSON = await api('POST', '/api/signin/options');
      const response = await webauthn().startAuthentication({ optionsJSON });
      state.me = await api('POST', '/api/signin/verify', { response });
      state.signedOut = false;
      enter();
      announce(`Signed in as ${state.me.user}`);
    } catch (err) {
      $('signin-error').textContent = friendly(err);
    }
  });
}

async function signOut() {
  state.signedOut = true;
  try {
    await api('POST', '/api/signout');
  } catch {
    /* signed out locally anyway */
  }
  stopLive();
  signinView('You are signed out.');
}

// ───────────────────────────── enrollment ─────────────────────────────

function defaultPasskeyName() {
  const ua = navigator.userAgent;
  const os = /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'Mac' : /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iPhone' : /Linux/.test(ua) ? 'Linux' : 'this device';
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrome\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'browser';
  return `${browser} on ${os}`;
}

async function enrollView() {
  show('enroll');
  document.title = 'Register a passkey · stepgate console';
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) sessionStorage.setItem('stepgate-enroll', fromHash);
  // Keep the secret out of the address bar and history.
  if (location.hash) history.replaceState(null, '', '/enroll');
  const token = sessionStorage.getItem('stepgate-enroll');
  if (!token) {
    $('enroll-error').textContent = 'This page needs the enrollment link your administrator gave you (it ends in #token=…).';
    return;
  }
  try {
    const info = await api('POST', '/api/enroll/info', { token });
    $('enroll-user').textContent = info.user;
    $('enroll-name').value = defaultPasskeyName();
    if (info.passkeys > 0) {
      $('enroll-existing').hidden = false;
      $('enroll-existing').textContent = `You already have ${info.passkeys} passkey${info.passkeys > 1 ? 's' : ''}; this adds another one.`;
    }
    $('enroll-ready').hidden = false;
  } catch (err) {
    $('enroll-error').textContent = friendly(err);
  }
}

async function registerPasskey(button) {
  const token = sessionStorage.getItem('stepgate-enroll');
  $('enroll-error').textContent = '';
  const name = $('enroll-name').value.trim() || defaultPasskeyName();
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const optionsJSON = await api('POST', '/api/enroll/options', { token });
      const response = await webauthn().startRegistration({ optionsJSON });
      state.me = await api('POST', '/api/enroll/verify', { token, name, response });
      sessionStorage.removeItem('stepgate-enroll');
      history.replaceState(null, '', '/');
      consoleView();
      announce('Your passkey is registered. You are signed in.');
      setStatus('live', 'Passkey registered');
    } catch (err) {
      $('enroll-error').textContent = friendly(err);
    }
  });
}

// ───────────────────────────── the console ─────────────────────────────

function consoleView() {
  show('console');
  $('who-name').textContent = state.me.user;
  renderPasskeys();
  renderFactors();
  renderPending();
  renderGrants();
  renderRecent();
  connect();
  if (!state.ticker) state.ticker = setInterval(tick, 1000);
  if (!state.refresher) state.refresher = setInterval(refreshSession, 10 * 60 * 1000);
}

function stopLive() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.onclose = null;
    ws.close();
  }
  clearInterval(state.ticker);
  clearInterval(state.refresher);
  state.ticker = state.refresher = null;
  stopAudit();
  state.challenges.clear();
  for (const card of state.cards.values()) card.remove();
  state.cards.clear();
  state.grants = [];
  state.recent = [];
}

function sessionEnded() {
  stopLive();
  signinView('Your session ended. Sign in again to see statements waiting for you.');
}

async function refreshSession() {
  try {
    await api('POST', '/api/session/refresh');
  } catch (err) {
    if (err.status === 401) sessionEnded();
  }
}

function connect() {
  if (state.ws || state.signedOut) return;
  setStatus('connecting', state.retry ? 'Reconnecting…' : 'Connecting…');
  const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.retry = 0;
    setStatus('live', 'Live');
  };
  ws.onmessage = (event) => {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    onMessage(msg);
  };
  ws.onclose = async (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (event.code === 4401) return sessionEnded();
    setStatus('connecting', 'Reconnecting…');
    // A refused upgrade looks like a network error: ask whether the session is still good.
    try {
      await api('GET', '/api/me');
    } catch (err) {
      if (err.status === 401) return sessionEnded();
    }
    const delay = Math.min(10000, 300 * 2 ** state.retry++);
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
  };
}

function onMessage(msg) {
  if (typeof msg.now === 'number') state.offset = msg.now - Date.now();
  switch (msg.type) {
    case 'snapshot': {
      const fresh = new Map(msg.challenges.map((c) => [c.id, c]));
      for (const id of [...state.challenges.keys()]) if (!fresh.has(id)) removeCard(id);
      state.challenges = fresh;
      for (const c of msg.challenges) upsertCard(c);
      state.recent = msg.recent.slice().reverse();
      state.grants = msg.grants;
      renderPending();
      renderGrants();
      renderRecent();
      focusRequested();
      break;
    }
    case 'challenge':
      state.challenges.set(msg.challenge.id, msg.challenge);
      upsertCard(msg.challenge);
      renderPending();
      announce(`New statement waiting for approval: ${titleOf(msg.challenge)}`);
      notifyHeld(msg.challenge, titleOf(msg.challenge));
      focusRequested();
      break;
    case 'challenge-updated':
      state.challenges.set(msg.challenge.id, msg.challenge);
      upsertCard(msg.challenge);
      break;
    case 'resolved': {
      const r = msg.resolved;
      const was = state.challenges.get(r.id);
      state.challenges.delete(r.id);
      removeCard(r.id);
      notifyResolved(r.id);
      state.recent.unshift(r);
      state.recent.length = Math.min(state.recent.length, 25);
      renderPending();
      renderRecent();
      if (was) announce(`${titleOf(was)}: ${statusText(r)}`);
      break;
    }
    case 'grants':
      state.grants = msg.grants;
      renderGrants();
      break;
  }
}

function focusRequested() {
  if (!state.focusId || state.focusDone) return;
  const card = state.cards.get(state.focusId);
  if (card) {
    state.focusDone = true;
    card.classList.add('focus');
    card.scrollIntoView({ block: 'center' });
    card.focus({ preventScroll: true });
  } else if (state.recent.some((r) => r.id === state.focusId)) {
    state.focusDone = true;
    setStatus('live', 'That statement was already decided (see Recently decided).');
  }
}

// ───────────────────────────── held statements ─────────────────────────────

function titleOf(c) {
  if (c.kind === 'connect') return `Login to ${c.database}`;
  const parts = c.statements.map((s) => s.command + (s.tables.length ? ` on ${s.tables.join(', ')}` : ''));
  return parts.length > 2 ? `${parts.length} statements: ${parts.slice(0, 2).join('; ')} …` : parts.join('; ');
}

function fmt(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function fmtDuration(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 360) / 10} h`;
}

function requirementText(c, r) {
  if (r.groups.length === 0) {
    const who = c.you.author ? 'your own passkey' : `${c.user}'s own passkey`;
    return `${r.satisfied ? '✓ ' : ''}Needs ${who} (rule ${r.rule})`;
  }
  const got = r.approvedBy.length;
  const by = got ? ` so far: ${r.approvedBy.join(', ')}` : '';
  return `${r.satisfied ? '✓ ' : ''}Needs ${r.count} approval${r.count > 1 ? 's' : ''} from ${r.groups.join(', ')}, not the author (rule ${r.rule}) — ${got} of ${r.count}${by}`;
}

function grantText(c) {
  const g = c.requirements.filter((r) => r.grantMs > 0);
  if (!g.length) return null;
  return g
    .map((r) => `Approving also lets rule ${r.rule} pass without asking for ${fmtDuration(r.grantMs)} (${r.grantScope === 'user' ? `all of ${c.you.author ? 'your' : `${c.user}'s`} connections` : 'this connection'}).`)
    .join(' ');
}

function buildCard(c) {
  const id = c.id;
  const titleId = `title-${id}`;
  const card = h('article', { class: 'card', 'data-challenge-id': id, 'aria-labelledby': titleId, tabindex: '-1' });
  const left = h('span', { class: 'left' });
  const waited = h('span', { class: 'waited' });
  const barFill = h('span', {});
  card._timer = { left, waited, barFill };
  card.append(
    h(
      'div',
      { class: 'head' },
      h('div', {}, h('h3', { id: titleId, text: titleOf(c) }), h('div', { class: 'muted small', text: c.kind === 'connect' ? (c.you.author ? 'Your login is held' : `Login by ${c.user}`) : c.you.author ? 'Your statement' : `Statement by ${c.user}` })),
      h('div', { class: 'timer', role: 'timer' }, waited, ' · ', left, h('div', { class: 'bar', 'aria-hidden': 'true' }, barFill)),
    ),
  );
  const facts = h('dl', { class: 'facts' });
  for (const [k, v] of [
    ['User', c.user],
    ['Database', c.database],
    ['Application', c.application || '—'],
    ['Client', c.clientAddress || '—'],
  ]) {
    facts.append(h('div', {}, h('dt', { text: k }), h('dd', { text: v })));
  }
  card.append(facts);
  card.append(h('p', { class: 'rule' }, 'Held by rule ', h('span', { class: 'name', text: c.rule }), c.message ? `: ${c.message}` : ''));
  const signals = signalList(c);
  if (signals) card.append(signals);
  for (const s of c.statements) {
    card.append(h('pre', { class: 'sql', 'aria-label': `SQL of the ${s.command} statement` }, h('code', { text: s.sql })));
    if (s.omitted) card.append(h('p', { class: 'note', text: `This statement is too long to show in full: ${s.omitted} more characters are not shown. Reject it unless you know exactly what it is.` }));
    const chips = h('ul', { class: 'chips', 'aria-label': 'classification' });
    for (const cl of s.classes) chips.append(h('li', { text: cl }));
    for (const f of s.flags) chips.append(h('li', { class: 'flag', text: f }));
    card.append(chips);
    if (s.reasons.length) card.append(h('ul', { class: 'reasons' }, s.reasons.map((r) => h('li', { text: r }))));
  }
  if (c.omittedStatements) {
    card.append(h('p', { class: 'note', text: `…and ${c.omittedStatements} more statements in the same message (${c.omittedCommands.join(', ')}), not shown. Reject unless you know exactly what they are.` }));
  }
  for (const r of c.requirements) card.append(h('p', { class: 'needs', text: requirementText(c, r) }));
  // What a passkey approval signs (the audit trail keeps the signature; `stepgate audit verify` checks it).
  card.append(h('p', { class: 'digest muted small' }, 'Approval digest ', h('code', { text: c.digest.slice(0, 12) })));
  const grant = grantText(c);
  if (grant) card.append(h('p', { class: 'muted small', text: grant }));
  if (c.you.note) card.append(h('p', { class: 'note', text: c.you.note }));
  const actions = h('div', { class: 'actions' });
  if (c.you.canApprove && c.you.factors.includes('passkey')) {
    actions.append(h('button', { type: 'button', class: 'primary', 'data-action': 'approve', 'data-id': id, text: 'Approve with passkey' }));
  }
  const code = c.you.canApprove ? codeControls(c) : null;
  if (code) actions.append(code);
  if (c.you.canReject) {
    const reasonId = `reason-${id}`;
    actions.append(h('label', { for: reasonId }, 'Reason (optional)', h('input', { id: reasonId, name: 'reason', maxlength: '500', autocomplete: 'off' })));
    actions.append(h('button', { type: 'button', class: 'danger', 'data-action': 'reject', 'data-id': id, text: c.you.author && !c.you.canApprove ? 'Withdraw' : 'Reject' }));
  }
  card.append(actions);
  card.append(h('p', { class: 'result', role: 'status' }));
  card.append(h('p', { class: 'error', role: 'alert' }));
  updateTimer(card, c);
  return card;
}

function upsertCard(c) {
  const old = state.cards.get(c.id);
  const card = buildCard(c);
  if (old) {
    // Keep what the person typed and any message shown.
    const reason = old.querySelector('input[name=reason]');
    const input = card.querySelector('input[name=reason]');
    if (reason && input) input.value = reason.value;
    card.querySelector('.result').textContent = old.querySelector('.result').textContent;
    card.querySelector('.error').textContent = old.querySelector('.error').textContent;
    const wasBusy = old.querySelector('[data-action=approve][aria-busy]');
    const button = card.querySelector('[data-action=approve]');
    if (wasBusy && button) {
      button.disabled = true;
      button.textContent = wasBusy.textContent;
    }
    if (old.classList.contains('focus')) card.classList.add('focus');
    old.replaceWith(card);
  } else {
    const list = $('pending');
    const next = [...state.cards.values()].find((other) => state.challenges.get(other.dataset.challengeId)?.createdAt > c.createdAt);
    list.insertBefore(card, next || null);
  }
  state.cards.set(c.id, card);
}

function removeCard(id) {
  const card = state.cards.get(id);
  if (card) card.remove();
  state.cards.delete(id);
}

function renderPending() {
  const n = state.challenges.size;
  $('pending-empty').hidden = n > 0;
  $('pending-count').hidden = n === 0;
  $('pending-count').textContent = String(n);
  document.title = n ? `(${n}) stepgate console` : 'stepgate console';
}

function updateTimer(card, c) {
  const t = now();
  const left = c.expiresAt - t;
  const total = Math.max(1, c.expiresAt - c.createdAt);
  card._timer.waited.textContent = `waiting ${fmt(t - c.createdAt)}`;
  card._timer.left.textContent = left > 0 ? `${fmt(left)} left` : 'timed out';
  card._timer.left.classList.toggle('urgent', left < 15000);
  card._timer.barFill.style.width = `${Math.max(0, Math.min(100, (left / total) * 100))}%`;
  card.classList.toggle('expired', left <= 0);
}

function tick() {
  for (const [id, card] of state.cards) {
    const c = state.challenges.get(id);
    if (c) updateTimer(card, c);
  }
  const t = now();
  for (const li of $('grants').children) {
    const exp = Number(li.dataset.expiresAt);
    const el = li.querySelector('.expires');
    if (el) el.textContent = exp > t ? `expires in ${fmt(exp - t)}` : 'expired';
  }
}

/** The approval ceremony for one held statement; returns the server's answer. Exposed for tests. */
async function approveChallenge(id) {
  const optionsJSON = await api('POST', `/api/challenges/${encodeURIComponent(id)}/options`);
  await checkApprovalChallenge(id, optionsJSON);
  const response = await webauthn().startAuthentication({ optionsJSON });
  return api('POST', `/api/challenges/${encodeURIComponent(id)}/approve`, { response });
}

/**
 * The passkey signs the challenge; it must commit to the digest this card shows, for this held statement
 * (src/stepup/evidence.ts): recomputed here before the authenticator is asked.
 */
async function checkApprovalChallenge(id, options) {
  const a = options.approval;
  const shown = state.challenges.get(id)?.digest;
  const refuse = () => {
    throw new Error('stepgate asked to sign something other than what this card shows; nothing was signed. Reload the page.');
  };
  if (!a || a.challengeId !== id || (shown !== undefined && a.digest !== shown)) refuse();
  const bytes = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`stepgate-approval-v1\n${a.digest}\n${id}\n${a.nonce}`)));
  const b64url = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  if (b64url !== options.challenge) refuse();
}

async function approve(button) {
  const id = button.dataset.id;
  // The card may be rebuilt while the ceremony runs (another approver's update): look it up afterwards.
  const part = (selector) => state.cards.get(id)?.querySelector(selector);
  const clear = part('.error');
  if (clear) clear.textContent = '';
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const r = await approveChallenge(id);
      const result = part('.result');
      if (result) {
        result.classList.add('ok');
        result.textContent = r.status === 'pending' ? `Your approval is recorded; it still needs ${r.remaining === 1 ? 'another approval' : `${r.remaining} more approvals`}.` : 'Approved: the statement runs now.';
      }
    } catch (err) {
      if (err.status === 401 && err.code === 'signin') return sessionEnded();
      const error = part('.error');
      if (error) error.textContent = friendly(err);
    }
  });
}

async function reject(button) {
  const id = button.dataset.id;
  const part = (selector) => state.cards.get(id)?.querySelector(selector);
  const reason = part('input[name=reason]')?.value || '';
  await busy(button, 'Rejecting…', async () => {
    try {
      await api('POST', `/api/challenges/${encodeURIComponent(id)}/reject`, { reason });
    } catch (err) {
      if (err.status === 401 && err.code === 'signin') return sessionEnded();
      const error = part('.error');
      if (error) error.textContent = friendly(err);
    }
  });
}

function statusText(r) {
  switch (r.status) {
    case 'approved':
      return `approved${r.by ? ` by ${r.by}` : ''}`;
    case 'rejected':
      return `rejected by ${r.by}${r.reason ? `: ${r.reason}` : ''}`;
    case 'expired':
      return 'timed out: nobody approved it in time';
    case 'cancelled':
      return 'cancelled by the client';
    case 'withdrawn':
      return 'withdrawn: the client disconnected';
    case 'shutdown':
      return 'ended: stepgate shut down while it waited';
    default:
      return r.reason || r.status;
  }
}

function renderRecent() {
  const list = $('recent');
  list.replaceChildren(
    ...state.recent.map((r) =>
      h(
        'li',
        {},
        h('div', { class: 'what' }, h('span', {}, h('span', { class: `status-${r.status}`, text: r.status }), ` ${r.summary}`), h('span', { class: 'meta', text: `${r.user} · rule ${r.rule} · ${statusText(r)} · ${new Date(r.at).toLocaleTimeString()}` })),
      ),
    ),
  );
  $('recent-empty').hidden = state.recent.length > 0;
}

// ───────────────────────────── grants ─────────────────────────────

function renderGrants() {
  const list = $('grants');
  const t = now();
  list.replaceChildren(
    ...state.grants.map((g) => {
      const scope = g.scope === 'user' ? `all of ${g.yours ? 'your' : `${g.user}'s`} connections` : `one connection (${g.application || 'no application name'}, ${g.database}, ${g.clientAddress || 'local'})`;
      const li = h(
        'li',
        { 'data-grant-id': g.id, 'data-expires-at': g.expiresAt },
        h(
          'div',
          { class: 'what' },
          h('span', {}, 'Rule ', h('strong', { text: g.rule }), g.yours ? '' : ` for ${g.user}`),
          h('span', { class: 'meta' }, `${scope}${g.approvedBy.length ? ` · approved by ${g.approvedBy.join(', ')}` : ''} · `, h('span', { class: 'expires', text: `expires in ${fmt(g.expiresAt - t)}` })),
        ),
        h('div', { class: 'buttons' }, h('button', { type: 'button', 'data-action': 'revoke-grant', 'data-id': g.id, text: 'Revoke' })),
      );
      return li;
    }),
  );
  $('grants-empty').hidden = state.grants.length > 0;
}

async function revokeGrant(button) {
  await busy(button, 'Revoking…', async () => {
    try {
      const r = await api('DELETE', `/api/grants/${encodeURIComponent(button.dataset.id)}`);
      state.grants = r.grants;
      renderGrants();
      announce('Grant revoked');
    } catch (err) {
      announce(friendly(err));
    }
  });
}

// ───────────────────────────── passkeys ─────────────────────────────

function renderPasskeys() {
  const list = $('passkeys');
  const keys = state.me?.passkeys || [];
  list.replaceChildren(
    ...keys.map((p) => {
      const only = keys.length === 1;
      return h(
        'li',
        { 'data-passkey-id': p.id },
        h(
          'div',
          { class: 'what' },
          h('strong', { class: 'pk-name', text: p.name }),
          h('span', { class: 'meta', text: `added ${new Date(p.createdAt).toLocaleDateString()}${p.lastUsedAt ? ` · last used ${new Date(p.lastUsedAt).toLocaleString()}` : ' · not used yet'}${p.backedUp ? ' · synced' : ''}` }),
        ),
        h(
          'div',
          { class: 'buttons' },
          h('button', { type: 'button', 'data-action': 'rename-passkey', 'data-id': p.id, text: 'Rename' }),
          h('button', {
            type: 'button',
            class: 'danger',
            'data-action': 'remove-passkey',
            'data-id': p.id,
            disabled: only,
            title: only ? 'Your only passkey cannot be removed: add another one first.' : null,
            text: 'Remove',
          }),
        ),
      );
    }),
  );
}

function passkeyError(text) {
  $('passkeys-error').textContent = text;
}

function renamePasskey(button) {
  const li = button.closest('li');
  if (li.querySelector('form')) return;
  const current = li.querySelector('.pk-name').textContent;
  const input = h('input', { name: 'name', maxlength: '64', 'aria-label': 'New name for this passkey', value: current });
  const form = h('form', { class: 'buttons' }, input, h('button', { type: 'submit', class: 'primary', text: 'Save' }), h('button', { type: 'button', 'data-action': 'cancel-rename', text: 'Cancel' }));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      state.me = await api('POST', `/api/passkeys/${encodeURIComponent(button.dataset.id)}/rename`, { name: input.value });
      renderPasskeys();
      passkeyError('');
    } catch (err) {
      passkeyError(friendly(err));
    }
  });
  li.querySelector('.buttons').hidden = true;
  li.append(form);
  input.focus();
  input.select();
}

async function removePasskey(button) {
  const li = button.closest('li');
  const name = li.querySelector('.pk-name').textContent;
  if (!confirm(`Remove the passkey "${name}"? You will no longer be able to sign in or approve with it.`)) return;
  passkeyError('');
  await busy(button, 'Removing…', async () => {
    try {
      state.me = await withRecentAuth(() => api('DELETE', `/api/passkeys/${encodeURIComponent(button.dataset.id)}`));
      renderPasskeys();
      announce(`Passkey ${name} removed`);
    } catch (err) {
      passkeyError(friendly(err));
    }
  });
}

async function addPasskey(button) {
  passkeyError('');
  const name = prompt('Name for the new passkey:', defaultPasskeyName());
  if (name === null) return;
  await busy(button, 'Waiting for your passkeys…', async () => {
    try {
      state.me = await withRecentAuth(async () => {
        const optionsJSON = await api('POST', '/api/passkeys/options');
        const response = await webauthn().startRegistration({ optionsJSON });
        return api('POST', '/api/passkeys/verify', { name: name.trim() || defaultPasskeyName(), response });
      });
      renderPasskeys();
      announce('Passkey added');
    } catch (err) {
      passkeyError(friendly(err));
    }
  });
}

// ───────────────────────────── the auditor view ─────────────────────────────
// Members of `auditors`: sessions (every user's, read-only), one session's timeline as `stepgate audit
// replay` prints it, and the hash chain's verification. The server refuses the API to everyone else.

const audit = {
  started: false,
  filter: { user: '', since: '', until: '' },
  /** Cursor of the next page of sessions (null: no more). */
  next: null,
  sessionsGen: 0,
  /** The session whose timeline is shown (its id, or #NUMBER). */
  open: null,
  timelineNext: null,
  timelineGen: 0,
  poll: null,
};

const fmtUtc = (ms) => (ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('T', ' ').slice(0, 19));

function auditView() {
  show('audit');
  setStatus('', '');
  document.title = 'Audit trail · stepgate console';
  if (!state.refresher) state.refresher = setInterval(refreshSession, 10 * 60 * 1000);
  const allowed = !!state.me.auditor;
  $('audit-denied').hidden = allowed;
  $('audit-body').hidden = !allowed;
  if (!allowed || audit.started) return;
  audit.started = true;
  loadVerification(true);
  loadSessions(true);
  routeAudit();
}

function stopAudit() {
  clearTimeout(audit.poll);
  audit.poll = null;
  audit.started = false;
  audit.sessionsGen++;
  audit.timelineGen++;
  audit.open = null;
  audit.next = audit.timelineNext = null;
  $('audit-sessions').replaceChildren();
  $('audit-timeline').replaceChildren();
  $('audit-session-facts').replaceChildren();
  $('audit-verify-facts').replaceChildren();
  $('audit-problems').replaceChildren();
  $('audit-status').textContent = '';
  $('audit-status').setAttribute('data-audit-status', '');
}

/** Shared error handling of the auditor API: signed out, no longer an auditor, or a message. */
function auditFailed(err, where) {
  if (err.status === 401 && err.code === 'signin') return sessionEnded();
  if (err.status === 403 && err.code === 'not_auditor') {
    state.me.auditor = false;
    stopAudit();
    return auditView();
  }
  $(where).textContent = friendly(err);
}

/** The address says which session (if any) to show: /audit/ID, or #NUMBER kept in the history entry. */
function routeAudit() {
  const m = /^\/audit\/([A-Za-z0-9_-]+)$/.exec(location.pathname);
  const key = m ? m[1] : (history.state && history.state.audit) || null;
  if (key) {
    if (key !== audit.open) openSession(key, false);
  } else {
    closeTimeline();
  }
}

// Sessions.

async function loadSessions(reset) {
  if (reset) {
    audit.sessionsGen++;
    audit.next = null;
    $('audit-sessions').replaceChildren();
    $('audit-more').hidden = true;
    $('audit-sessions-empty').hidden = true;
  }
  const gen = audit.sessionsGen;
  const more = $('audit-more');
  more.disabled = true;
  $('audit-sessions-error').textContent = '';
  try {
    let cursor = audit.next;
    let page;
    let rounds = 0;
    // A page examines a bounded number of sessions on the server; when a filter skipped them all, go on.
    do {
      const q = new URLSearchParams();
      for (const k of ['user', 'since', 'until']) if (audit.filter[k]) q.set(k, audit.filter[k]);
      if (cursor) q.set('cursor', cursor);
      page = await api('GET', `/api/audit/sessions?${q}`);
      if (gen !== audit.sessionsGen) return;
      for (const s of page.sessions) $('audit-sessions').append(sessionRow(s));
      cursor = page.next;
    } while (page.sessions.length === 0 && cursor && ++rounds < 10);
    audit.next = cursor;
    more.hidden = !cursor;
    $('audit-sessions-empty').hidden = $('audit-sessions').children.length > 0 || !!cursor;
  } catch (err) {
    if (gen === audit.sessionsGen) auditFailed(err, 'audit-sessions-error');
  } finally {
    more.disabled = false;
  }
}

function sessionKey(s) {
  return s.id || `#${s.no}`;
}

function sessionRow(s) {
  const key = sessionKey(s);
  const cell = (text, cls) => h('td', { class: cls, text: text === null || text === undefined || text === '' ? '—' : String(text) });
  return h(
    'tr',
    { 'data-audit-session': key, 'data-session-no': s.no, class: s.denied ? 'has-denied' : null },
    h('td', {}, h('button', { type: 'button', class: 'link mono', 'data-action': 'audit-open', 'data-id': key, 'aria-label': `Open session ${s.short} of ${s.user || 'unknown user'}`, text: s.short })),
    cell(s.user),
    cell(s.database),
    cell(s.clientAddress),
    cell(s.application),
    cell(fmtUtc(s.start), 'time'),
    cell(s.end === null ? 'open' : fmtUtc(s.end), 'time'),
    cell(s.statements, 'num'),
    cell(s.denied, s.denied ? 'num denied' : 'num'),
    cell(s.held, s.held ? 'num held' : 'num'),
  );
}

function applyFilter() {
  audit.filter = { user: $('audit-user').value.trim(), since: $('audit-since').value.trim(), until: $('audit-until').value.trim() };
  loadSessions(true);
}

function clearFilter() {
  for (const id of ['audit-user', 'audit-since', 'audit-until']) $(id).value = '';
  applyFilter();
}

// A session's timeline.

async function openSession(key, push) {
  audit.timelineGen++;
  audit.open = key;
  audit.timelineNext = null;
  if (push) history.pushState({ audit: key }, '', key.startsWith('#') ? '/audit' : `/audit/${key}`);
  $('audit-sessions-panel').hidden = true;
  $('audit-timeline-panel').hidden = false;
  $('audit-timeline').replaceChildren();
  $('audit-session-facts').replaceChildren();
  $('audit-timeline-error').textContent = '';
  $('audit-timeline-more').hidden = true;
  $('timeline-title').textContent = 'Session';
  await loadTimeline();
  $('audit-timeline-panel').scrollIntoView({ block: 'start' });
}

function closeTimeline() {
  audit.timelineGen++;
  audit.open = null;
  $('audit-timeline-panel').hidden = true;
  $('audit-sessions-panel').hidden = false;
}

function back() {
  history.pushState({}, '', '/audit');
  closeTimeline();
}

async function loadTimeline() {
  const gen = audit.timelineGen;
  const more = $('audit-timeline-more');
  more.disabled = true;
  try {
    const q = new URLSearchParams();
    if (audit.timelineNext !== null) q.set('after', String(audit.timelineNext));
    const r = await api('GET', `/api/audit/sessions/${encodeURIComponent(audit.open)}?${q}`);
    if (gen !== audit.timelineGen) return;
    if (!$('audit-session-facts').children.length) renderSessionFacts(r.session);
    for (const step of r.steps) $('audit-timeline').append(timelineStep(step));
    audit.timelineNext = r.next;
    more.hidden = r.next === null;
  } catch (err) {
    if (gen === audit.timelineGen) auditFailed(err, 'audit-timeline-error');
  } finally {
    more.disabled = false;
  }
}

function renderSessionFacts(s) {
  $('timeline-title').textContent = `Session ${s.short} · ${s.user || '?'}`;
  const facts = $('audit-session-facts');
  const rows = [
    ['Session', s.id || `#${s.no}`],
    ['User', s.user],
    ['Database', s.database],
    ['Client', s.clientAddress],
    ['Application', s.application || '—'],
    ['TLS', s.tls === null ? '—' : s.tls ? 'on' : 'off'],
    ['Started (UTC)', fmtUtc(s.start)],
    ['Ended (UTC)', s.end === null ? 'no end recorded' : `${fmtUtc(s.end)}${s.endReason ? ` (${s.endReason})` : ''}`],
    ['Statements', `${s.statements} (${s.denied} denied, ${s.held} held)`],
  ];
  for (const [k, v] of rows) facts.append(h('div', {}, h('dt', { text: k }), h('dd', { text: v === null || v === undefined ? '—' : String(v) })));
}

function timelineStep(step) {
  const tone =
    step.kind === 'statement' ? `decision-${step.decision.action}` : step.kind === 'challenge.resolved' ? `resolved-${step.status}` : step.status === 'error' ? 'outcome-error' : '';
  const li = h('li', {
    class: `step kind-${step.kind.replace(/\./g, '-')} ${tone}`.trim(),
    'data-audit-event': step.seq,
    'data-kind': step.kind,
    'data-decision': step.decision ? step.decision.action : null,
    'data-status': step.status || null,
  });
  li.append(h('pre', {}, h('code', { text: step.lines.join('\n') })));
  if (step.statements && step.statements.length) {
    for (const st of step.statements) {
      const chips = h('ul', { class: 'chips', 'aria-label': `classification of the ${st.command} statement` });
      chips.append(h('li', { class: 'command', text: st.command }));
      for (const c of st.classes) chips.append(h('li', { text: c }));
      for (const t of st.tables) chips.append(h('li', { class: 'table', text: t }));
      for (const f of st.flags) chips.append(h('li', { class: 'flag', text: f }));
      li.append(chips);
    }
    if (step.decision && step.decision.reason) li.append(h('p', { class: 'muted small why', text: `Why: ${step.decision.reason}` }));
  }
  return li;
}

// Verification.

async function loadVerification(startIfNever) {
  try {
    let v = await api('GET', '/api/audit/verification');
    if (startIfNever && v.state === 'never') v = await api('POST', '/api/audit/verify');
    if (!audit.started) return;
    renderVerification(v);
  } catch (err) {
    if (audit.started) auditFailed(err, 'audit-status');
  }
}

async function verifyNow(button) {
  button.disabled = true;
  try {
    renderVerification(await api('POST', '/api/audit/verify'));
  } catch (err) {
    button.disabled = false;
    auditFailed(err, 'audit-status');
  }
}

function renderVerification(v) {
  clearTimeout(audit.poll);
  audit.poll = null;
  const el = $('audit-status');
  el.setAttribute('data-audit-status', v.state);
  const last = v.last;
  const button = document.querySelector('[data-action="verify-audit"]');
  button.disabled = v.state === 'running';
  button.textContent = v.state === 'running' ? 'Verifying…' : 'Verify now';
  switch (v.state) {
    case 'never':
      el.textContent = 'Not checked yet.';
      break;
    case 'running':
      el.textContent = `Checking the chain… (started ${fmtUtc(v.running.startedAt)} UTC by ${v.running.by})`;
      break;
    case 'verified':
      el.textContent = last.events === 0 ? 'Verified: the trail has no events yet.' : `Verified: events ${last.firstSeq} to ${last.lastSeq} are intact.`;
      break;
    case 'broken':
      el.textContent = `BROKEN: ${last.firstProblem ? last.firstProblem.message : 'the chain does not verify'}`;
      break;
    default:
      el.textContent = `Could not verify: ${last.error}`;
  }
  const facts = [];
  if (last && last.error === null) {
    if (v.state === 'running') facts.push(`Previous result: ${last.ok ? 'verified' : 'BROKEN'}.`);
    facts.push(
      `Checked up to event ${last.lastSeq ?? '—'} (${last.events} events, ${last.sessions} sessions)${last.anchor ? `; events up to ${last.anchor.seq} were pruned by retention` : ''}.`,
    );
    const cps = last.checkpoints;
    const invalid = cps.total - cps.valid;
    facts.push(
      cps.total === 0
        ? 'No signed checkpoints yet.'
        : `${cps.total} signed checkpoint${cps.total === 1 ? '' : 's'}${invalid ? `, ${invalid} NOT VALID` : ', all signatures valid'}${cps.lastSeq !== null ? `; the last covers event ${cps.lastSeq}` : ''}${last.unsealed ? `; ${last.unsealed} event${last.unsealed === 1 ? '' : 's'} after it not sealed yet` : ''}.`,
    );
    const a = last.approvals;
    if (a) {
      facts.push(
        `${a.verified} passkey approval${a.verified === 1 ? '' : 's'} signature-checked against the statements they approved${a.failed ? `, ${a.failed} FAILED` : ''}${a.codes ? `; ${a.codes} by authenticator app or recovery code (no signature to check)` : ''}${a.noKey + a.unsigned ? `; ${a.noKey + a.unsigned} without a key or signature on record (not checked)` : ''}.`,
      );
    }
  }
  if (v.checkpoint) {
    const c = v.checkpoint;
    facts.push(`Latest signed checkpoint: #${c.id}, event ${c.seq}, signed ${fmtUtc(c.time)} UTC (${c.reason})${c.kid ? ` with key ${c.kid}` : ''}.`);
  } else {
    facts.push('Latest signed checkpoint: none yet.');
  }
  if (v.head) facts.push(`Newest event: ${v.head.seq}, ${fmtUtc(v.head.time)} UTC.`);
  if (last) facts.push(`Checked ${fmtUtc(last.finishedAt)} UTC by ${last.by} (took ${last.durationMs < 1000 ? `${last.durationMs} ms` : `${(last.durationMs / 1000).toFixed(1)} s`}).`);
  $('audit-verify-facts').replaceChildren(...facts.map((f) => h('li', { text: f })));
  // The first break is in the status line; the rest (and warnings) below it.
  const problems = last && last.problems ? last.problems.filter((p) => !(last.firstProblem && p.message === last.firstProblem.message && p.seq === last.firstProblem.seq)) : [];
  const list = $('audit-problems');
  list.replaceChildren(
    ...problems.map((p) => h('li', { class: p.severity, 'data-seq': p.seq }, h('strong', { text: p.severity === 'error' ? 'also:' : 'warning:' }), ` ${p.message}`)),
  );
  if (last && last.moreProblems) list.append(h('li', { class: 'muted', text: `…and ${last.moreProblems} more (run stepgate audit verify for the list)` }));
  list.hidden = list.children.length === 0;
  if (v.state === 'running' && audit.started) audit.poll = setTimeout(() => loadVerification(false), 500);
}

// ───────────────────────────── wiring ─────────────────────────────

const ACTIONS = {
  ...IDENTITY_ACTIONS,
  'sign-in': signIn,
  'sign-out': signOut,
  'register-passkey': registerPasskey,
  approve,
  reject,
  'revoke-grant': revokeGrant,
  'rename-passkey': renamePasskey,
  'cancel-rename': (button) => {
    const li = button.closest('li');
    li.querySelector('form').remove();
    li.querySelector('.buttons').hidden = false;
  },
  'remove-passkey': removePasskey,
  'add-passkey': addPasskey,
  'verify-audit': verifyNow,
  'audit-filter': applyFilter,
  'audit-clear': clearFilter,
  'audit-more': () => loadSessions(false),
  'audit-open': (button) => openSession(button.dataset.id, true),
  'audit-back': back,
  'audit-timeline-more': () => loadTimeline(),
};

document.addEventListener('click', (event) => {
  const button = event.target.closest('[data-action]');
  if (!button) {
    // A click anywhere on a session's row opens it (the button in its first cell is the keyboard way).
    const row = event.target.closest('tr[data-audit-session]');
    if (row && !window.getSelection()?.toString()) openSession(row.dataset.auditSession, true);
    return;
  }
  if (button.disabled) return;
  const action = ACTIONS[button.dataset.action];
  if (!action) return;
  event.preventDefault();
  action(button);
});

document.addEventListener('keydown', (event) => {
  // Enter in a rejection reason rejects that statement.
  if (event.key === 'Enter' && event.target.matches?.('input[name=reason]')) {
    const card = event.target.closest('[data-challenge-id]');
    card?.querySelector('[data-action=reject]')?.click();
  }
  if (event.key === 'Enter' && event.target.matches?.('input[name=code]')) {
    event.target.closest('.code-approve')?.querySelector('[data-action=approve-code]')?.click();
  }
  if (event.key === 'Enter' && event.target.id === 'totp-code') document.querySelector('[data-action=totp-confirm]')?.click();
  if (event.key === 'Enter' && event.target.id === 'enroll-name') {
    document.querySelector('[data-action=register-passkey]')?.click();
  }
  if (event.key === 'Enter' && ['audit-user', 'audit-since', 'audit-until'].includes(event.target.id)) applyFilter();
});

// A new enrollment link pasted into a tab already showing /enroll only changes the fragment.
window.addEventListener('hashchange', () => {
  if (location.pathname === '/enroll' && /token=/.test(location.hash)) {
    $('enroll-error').textContent = '';
    $('enroll-ready').hidden = true;
    enrollView();
  }
});

// A `stepgate login` link opened in a tab already showing /connect only changes the fragment.
window.addEventListener('hashchange', () => {
  if (location.pathname === '/connect' && /code=/.test(location.hash) && state.me) connectView();
});

// Back and forward between the sessions and a timeline.
window.addEventListener('popstate', () => {
  if (audit.started && isAuditPath()) routeAudit();
});

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.me && !state.ws && !state.signedOut && !$('view-console').hidden) {
    clearTimeout(state.reconnectTimer);
    connect();
  }
});

/** For scripts and tests: the API without the page's buttons (the server checks everything anyway). */
window.stepgateConsole = { api, approve: approveChallenge };

initIdentity({
  api,
  h,
  $,
  friendly,
  busy,
  announce,
  state,
  sessionEnded,
  // Cards show what the viewer may approve with: rebuild them when a factor changes.
  render: () => {
    for (const c of state.challenges.values()) upsertCard(c);
  },
});

initNotifications();
boot();
