/**
 * Held statements: one card each (what it is, which terminal it comes from, what its preview did, what it
 * needs, the timer), approving with a passkey and rejecting, and the live messages that add, update and
 * remove cards.
 *
 * Invariant: a card is rebuilt from its ChallengeView whenever the view changes, keeping only what the
 * person typed and the messages shown; every value reaches the page through textContent.
 */
import type { ApprovalOptions, ApproveReply, ChallengeView, ConnectionView, GrantView, PreviewView, RequirementView, ResolvedView } from '../protocol.js';
import { api, errorOf, friendly, webauthn } from './api.js';
import { $, announce, busy, fmt, fmtDuration, h } from './dom.js';
import { onGrants, tickGrants } from './grants.js';
import { codeControls, signalList } from './identity.js';
import { notifyHeld, notifyResolved } from './notifications.js';
import { focusDecided, renderRecent, rememberResolved, statusText } from './recent.js';
import { now, state } from './state.js';
import { sessionEnded } from './views.js';

interface TimerParts {
  left: HTMLElement;
  waited: HTMLElement;
  barFill: HTMLElement;
}
const timers = new WeakMap<HTMLElement, TimerParts>();

// ───────────────────────────── live messages ─────────────────────────────

export function onSnapshot(challenges: ChallengeView[], recent: ResolvedView[], grants: GrantView[]): void {
  const fresh = new Map(challenges.map((c) => [c.id, c]));
  for (const id of [...state.challenges.keys()]) if (!fresh.has(id)) removeCard(id);
  state.challenges = fresh;
  for (const c of challenges) upsertCard(c);
  state.recent = recent.slice().reverse();
  renderPending();
  renderRecent();
  onGrants(grants);
  focusRequested();
}

export function onChallenge(c: ChallengeView): void {
  state.challenges.set(c.id, c);
  upsertCard(c);
  renderPending();
  announce(`New statement waiting for approval: ${titleOf(c)}`);
  notifyHeld(c, titleOf(c));
  focusRequested();
}

export function onChallengeUpdated(c: ChallengeView): void {
  state.challenges.set(c.id, c);
  upsertCard(c);
}

export function onResolved(r: ResolvedView): void {
  const was = state.challenges.get(r.id);
  state.challenges.delete(r.id);
  removeCard(r.id);
  notifyResolved(r.id);
  rememberResolved(r);
  renderPending();
  if (was) announce(`${titleOf(was)}: ${statusText(r)}`);
}

/** /c/ID: the card of that statement, or what became of it. */
function focusRequested(): void {
  if (!state.focusId || state.focusDone) return;
  const card = state.cards.get(state.focusId);
  if (card) {
    state.focusDone = true;
    card.classList.add('focus');
    card.scrollIntoView({ block: 'center' });
    card.focus({ preventScroll: true });
    return;
  }
  state.focusDone = true;
  void focusDecided(state.focusId);
}

// ───────────────────────────── cards ─────────────────────────────

export function titleOf(c: ChallengeView): string {
  if (c.kind === 'connect') return `Login to ${c.database}`;
  const parts = c.statements.map((s) => s.command + (s.tables.length ? ` on ${s.tables.join(', ')}` : ''));
  return parts.length > 2 ? `${parts.length} statements: ${parts.slice(0, 2).join('; ')} …` : parts.join('; ');
}

function requirementText(c: ChallengeView, r: RequirementView): string {
  if (r.groups.length === 0) {
    const who = c.you.author ? 'your own passkey' : `${c.user}'s own passkey`;
    return `${r.satisfied ? '✓ ' : ''}Needs ${who} (rule ${r.rule})`;
  }
  const got = r.approvedBy.length;
  const by = got ? ` so far: ${r.approvedBy.join(', ')}` : '';
  return `${r.satisfied ? '✓ ' : ''}Needs ${r.count} approval${r.count > 1 ? 's' : ''} from ${r.groups.join(', ')}, not the author (rule ${r.rule}) — ${got} of ${r.count}${by}`;
}

function grantText(c: ChallengeView): string | null {
  const g = c.requirements.filter((r) => r.grantMs > 0);
  if (!g.length) return null;
  return g
    .map((r) => `Approving also lets rule ${r.rule} pass without asking for ${fmtDuration(r.grantMs)} (${r.grantScope === 'user' ? `all of ${c.you.author ? 'your' : `${c.user}'s`} connections` : 'this connection'}).`)
    .join(' ');
}

/** "127.0.0.1:52114", "[::1]:52114". */
export function clientText(c: ConnectionView): string {
  if (!c.clientAddress) return 'local';
  const host = c.clientAddress.includes(':') ? `[${c.clientAddress}]` : c.clientAddress;
  return c.clientPort === null ? c.clientAddress : `${host}:${c.clientPort}`;
}

/** The facts that tell two terminals apart (the same person may hold statements in several). */
function terminalFacts(c: ChallengeView): [key: string, label: string, value: string][] {
  const t = c.connection;
  const facts: [string, string, string][] = [
    ['session', 'Session', t.session],
    ['client', 'Client', clientText(t)],
  ];
  if (t.serverPid !== null) facts.push(['server-pid', 'Server pid', String(t.serverPid)]);
  // A time, not a duration: it stays true while the card is shown.
  if (t.connectedAt !== null) facts.push(['connected', 'Connected', `since ${new Date(t.connectedAt).toLocaleString()}`]);
  return facts;
}

/** What the preview found, plainly: "DELETE 7 · locks orders", or why there is none. */
export function previewText(p: PreviewView): string {
  switch (p.status) {
    case 'ran': {
      const locks = p.locks.length ? ` · locks ${p.locks.join(', ')}` : '';
      return `${p.tags.join('; ') || 'no reply'}${locks}`;
    }
    case 'failed':
      return `it failed: ${p.message}${p.sqlstate ? ` (${p.sqlstate})` : ''}`;
    case 'unavailable':
      return `${p.reason}${p.estimatedRows !== null ? ` (the planner estimates about ${p.estimatedRows} rows)` : ''}`;
  }
}

function previewBlock(p: PreviewView | null): HTMLElement | null {
  if (!p) return null;
  const label = p.status === 'ran' ? 'Preview (ran, not committed yet): ' : p.status === 'failed' ? 'Preview: ' : 'No preview: ';
  const block = h('div', { class: `preview preview-${p.status}`, 'data-preview': p.status }, h('p', {}, label, h('strong', { class: 'preview-result', text: previewText(p) })));
  if (p.status === 'ran' && p.notices.length) block.append(h('ul', { class: 'notices', 'aria-label': 'notices from the preview' }, p.notices.map((n) => h('li', { text: n }))));
  if (p.status === 'ran' && p.locks.length) block.append(h('p', { class: 'muted small', text: 'Writers to these tables wait until you decide.' }));
  return block;
}

function buildCard(c: ChallengeView): HTMLElement {
  const id = c.id;
  const titleId = `title-${id}`;
  const card = h('article', { class: 'card', 'data-challenge-id': id, 'aria-labelledby': titleId, tabindex: '-1' });
  const left = h('span', { class: 'left' });
  const waited = h('span', { class: 'waited' });
  const barFill = h('span', {});
  timers.set(card, { left, waited, barFill });
  const who = c.kind === 'connect' ? (c.you.author ? 'Your login is held' : `Login by ${c.user}`) : c.you.author ? 'Your statement' : `Statement by ${c.user}`;
  card.append(
    h(
      'div',
      { class: 'head' },
      h('div', {}, h('h3', { id: titleId, text: titleOf(c) }), h('div', { class: 'muted small', text: `${who} · session ${c.connection.session}` })),
      h('div', { class: 'timer', role: 'timer' }, waited, ' · ', left, h('div', { class: 'bar', 'aria-hidden': 'true' }, barFill)),
    ),
  );
  const facts = h('dl', { class: 'facts' });
  const rows: [string, string, string][] = [
    ['user', 'User', c.user],
    ['database', 'Database', c.database],
    ['application', 'Application', c.application || '—'],
    ...terminalFacts(c),
  ];
  for (const [key, k, v] of rows) facts.append(h('div', { 'data-fact': key }, h('dt', { text: k }), h('dd', { text: v })));
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
  const preview = previewBlock(c.preview);
  if (preview) card.append(preview);
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

const textOf = (root: ParentNode, selector: string): string => root.querySelector(selector)?.textContent ?? '';

export function upsertCard(c: ChallengeView): void {
  const old = state.cards.get(c.id);
  const card = buildCard(c);
  if (old) {
    // Keep what the person typed and any message shown.
    const reason = old.querySelector<HTMLInputElement>('input[name=reason]');
    const input = card.querySelector<HTMLInputElement>('input[name=reason]');
    if (reason && input) input.value = reason.value;
    card.querySelector('.result')!.textContent = textOf(old, '.result');
    card.querySelector('.error')!.textContent = textOf(old, '.error');
    const wasBusy = old.querySelector<HTMLButtonElement>('[data-action=approve][aria-busy]');
    const button = card.querySelector<HTMLButtonElement>('[data-action=approve]');
    if (wasBusy && button) {
      button.disabled = true;
      button.textContent = wasBusy.textContent;
    }
    if (old.classList.contains('focus')) card.classList.add('focus');
    old.replaceWith(card);
  } else {
    const next = [...state.cards.values()].find((other) => (state.challenges.get(other.dataset.challengeId ?? '')?.createdAt ?? 0) > c.createdAt);
    $('pending').insertBefore(card, next ?? null);
  }
  state.cards.set(c.id, card);
}

/** Rebuilds every card (what the viewer may approve with changed). */
export function rebuildCards(): void {
  for (const c of state.challenges.values()) upsertCard(c);
}

function removeCard(id: string): void {
  state.cards.get(id)?.remove();
  state.cards.delete(id);
}

export function clearCards(): void {
  state.challenges.clear();
  for (const card of state.cards.values()) card.remove();
  state.cards.clear();
}

export function renderPending(): void {
  const n = state.challenges.size;
  $('pending-empty').hidden = n > 0;
  $('pending-count').hidden = n === 0;
  $('pending-count').textContent = String(n);
  document.title = n ? `(${n}) stepgate console` : 'stepgate console';
}

function updateTimer(card: HTMLElement, c: ChallengeView): void {
  const parts = timers.get(card);
  if (!parts) return;
  const t = now();
  const left = c.expiresAt - t;
  const total = Math.max(1, c.expiresAt - c.createdAt);
  parts.waited.textContent = `waiting ${fmt(t - c.createdAt)}`;
  parts.left.textContent = left > 0 ? `${fmt(left)} left` : 'timed out';
  parts.left.classList.toggle('urgent', left < 15000);
  parts.barFill.style.width = `${Math.max(0, Math.min(100, (left / total) * 100))}%`;
  card.classList.toggle('expired', left <= 0);
}

/** Every second: timers of cards and grants. */
export function tick(): void {
  for (const [id, card] of state.cards) {
    const c = state.challenges.get(id);
    if (c) updateTimer(card, c);
  }
  tickGrants();
}

// ───────────────────────────── deciding ─────────────────────────────

/** The approval ceremony for one held statement; returns the server's answer. Exposed for tests. */
export async function approveChallenge(id: string): Promise<ApproveReply> {
  const optionsJSON = await api<ApprovalOptions>('POST', `/api/challenges/${encodeURIComponent(id)}/options`);
  await checkApprovalChallenge(id, optionsJSON);
  const response = await webauthn().startAuthentication({ optionsJSON });
  return api<ApproveReply>('POST', `/api/challenges/${encodeURIComponent(id)}/approve`, { response });
}

/**
 * The passkey signs the challenge; it must commit to the digest this card shows, for this held statement
 * (src/stepup/evidence.ts): recomputed here before the authenticator is asked.
 */
async function checkApprovalChallenge(id: string, options: ApprovalOptions): Promise<void> {
  const a = options.approval;
  const shown = state.challenges.get(id)?.digest;
  const refuse = (): never => {
    throw new Error('stepgate asked to sign something other than what this card shows; nothing was signed. Reload the page.');
  };
  if (!a || a.challengeId !== id || (shown !== undefined && a.digest !== shown)) return refuse();
  const bytes = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(`stepgate-approval-v1\n${a.digest}\n${id}\n${a.nonce}`)));
  const b64url = btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  if (b64url !== options.challenge) refuse();
}

/** A part of a card, looked up when needed (the card may be rebuilt while a ceremony runs). */
export function cardPart<E extends HTMLElement = HTMLElement>(id: string, selector: string): E | null {
  return state.cards.get(id)?.querySelector<E>(selector) ?? null;
}

export async function approve(button: HTMLButtonElement): Promise<void> {
  const id = button.dataset.id ?? '';
  const clear = cardPart(id, '.error');
  if (clear) clear.textContent = '';
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const r = await approveChallenge(id);
      const result = cardPart(id, '.result');
      if (result) {
        result.classList.add('ok');
        result.textContent = r.status === 'pending' ? `Your approval is recorded; it still needs ${r.remaining === 1 ? 'another approval' : `${r.remaining} more approvals`}.` : 'Approved: the statement runs now.';
      }
    } catch (err) {
      const { status, code } = errorOf(err);
      if (status === 401 && code === 'signin') return sessionEnded();
      const error = cardPart(id, '.error');
      if (error) error.textContent = friendly(err);
    }
  });
}

export async function reject(button: HTMLButtonElement): Promise<void> {
  const id = button.dataset.id ?? '';
  const reason = cardPart<HTMLInputElement>(id, 'input[name=reason]')?.value ?? '';
  await busy(button, 'Rejecting…', async () => {
    try {
      await api('POST', `/api/challenges/${encodeURIComponent(id)}/reject`, { reason });
    } catch (err) {
      const { status, code } = errorOf(err);
      if (status === 401 && code === 'signin') return sessionEnded();
      const error = cardPart(id, '.error');
      if (error) error.textContent = friendly(err);
    }
  });
}
