/**
 * Which view the page shows (sign-in, enrollment, the console, Connect, the audit trail), signing in and
 * out, and the session's upkeep (refresh, ended).
 *
 * Invariant: only one view is visible; leaving the signed-in views stops everything live (socket,
 * timers, the auditor view) and forgets what was shown.
 */
import type { MeView } from '../protocol.js';
import { api, errorOf, friendly, webauthn } from './api.js';
import { clearCards, renderPending, tick } from './approvals.js';
import { auditView, stopAudit } from './audit.js';
import { $, announce, busy, setStatus } from './dom.js';
import { renderGrants } from './grants.js';
import { connectView, prepareSignIn, renderFactors } from './identity.js';
import { connectLive, stopLive } from './live.js';
import { enrollView, renderPasskeys } from './passkeys.js';
import { renderRecent } from './recent.js';
import { state } from './state.js';

type View = 'loading' | 'signin' | 'enroll' | 'console' | 'audit' | 'connect';
const VIEWS: View[] = ['loading', 'signin', 'enroll', 'console', 'audit', 'connect'];

export function show(view: View): void {
  for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
  const me = state.me;
  const signedIn = (view === 'console' || view === 'audit' || view === 'connect') && me !== null;
  $('who').hidden = !signedIn;
  if (signedIn) $('who-name').textContent = me.user;
  // Only auditors and people with database credentials have a second section to go to.
  $('nav').hidden = !(signedIn && (me.auditor || me.credentials));
  $('audit-nav').hidden = !(signedIn && me.auditor);
  if (signedIn) renderFactors();
  for (const a of document.querySelectorAll<HTMLElement>('[data-nav]')) {
    if (a.dataset.nav === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

export const isAuditPath = (): boolean => location.pathname === '/audit' || location.pathname.startsWith('/audit/');

/** After signing in: the view the address asks for. */
export function enter(): void {
  if (isAuditPath()) auditView();
  else if (location.pathname === '/connect') {
    show('connect');
    document.title = 'Connect · stepgate console';
    void connectView();
  } else consoleView();
}

export function consoleView(): void {
  show('console');
  renderPasskeys();
  renderFactors();
  renderPending();
  renderGrants();
  renderRecent();
  connectLive();
  if (state.ticker === null) state.ticker = window.setInterval(tick, 1000);
  startRefresher();
}

export function startRefresher(): void {
  if (state.refresher === null) state.refresher = window.setInterval(() => void refreshSession(), 10 * 60 * 1000);
}

export async function boot(): Promise<void> {
  const m = /^\/c\/([A-Za-z0-9_-]+)$/.exec(location.pathname);
  if (m) state.focusId = m[1]!;
  if (location.pathname === '/enroll') return enrollView();
  try {
    state.me = await api<MeView>('GET', '/api/me');
    enter();
  } catch (err) {
    if (errorOf(err).status === 401) signinView();
    else {
      show('signin');
      $('signin-error').textContent = `The console is not reachable: ${friendly(err)}`;
    }
  }
}

export function signinView(message?: string): void {
  state.me = null;
  show('signin');
  setStatus('', '');
  $('signin-error').textContent = message ?? '';
  document.title = 'Sign in · stepgate console';
  void prepareSignIn();
}

export async function signIn(button: HTMLButtonElement): Promise<void> {
  $('signin-error').textContent = '';
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const optionsJSON = await api('POST', '/api/signin/options');
      const response = await webauthn().startAuthentication({ optionsJSON });
      const me = await api<MeView>('POST', '/api/signin/verify', { response });
      state.me = me;
      state.signedOut = false;
      enter();
      announce(`Signed in as ${me.user}`);
    } catch (err) {
      $('signin-error').textContent = friendly(err);
    }
  });
}

export async function signOut(): Promise<void> {
  state.signedOut = true;
  try {
    await api('POST', '/api/signout');
  } catch {
    /* signed out locally anyway */
  }
  stopAll();
  signinView('You are signed out.');
}

/** Stops everything live and forgets what was shown. */
export function stopAll(): void {
  stopLive();
  if (state.ticker !== null) clearInterval(state.ticker);
  if (state.refresher !== null) clearInterval(state.refresher);
  state.ticker = state.refresher = null;
  stopAudit();
  clearCards();
  state.grants = [];
  state.recent = [];
}

export function sessionEnded(): void {
  stopAll();
  signinView('Your session ended. Sign in again to see statements waiting for you.');
}

async function refreshSession(): Promise<void> {
  try {
    await api('POST', '/api/session/refresh');
  } catch (err) {
    if (errorOf(err).status === 401) sessionEnded();
  }
}
