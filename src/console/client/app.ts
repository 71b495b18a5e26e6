/**
 * The stepgate console in the browser (served as /static/app.js, the entry module): wires the page's
 * buttons and keys to the modules that do the work, and starts.
 *
 *   api.ts        fetch wrappers of the JSON API, the passkey library
 *   live.ts       the WebSocket: live updates, reconnecting, the "stepgate is unreachable" banner
 *   approvals.ts  held statements' cards, approve and reject
 *   recent.ts     "Recently decided" and what a /c/ID link of a decided statement shows
 *   grants.ts     active grants
 *   passkeys.ts   enrollment and the passkey list
 *   identity.ts   single sign-on, the authenticator app, Connect (database credentials)
 *   notifications.ts  opt-in browser notifications while the tab is in the background
 *   audit.ts      the auditor view
 *   views.ts      which view is shown, signing in and out
 *
 * Plain standards-based modules for current Chromium and Firefox, no framework, compiled by
 * src/console/client/tsconfig.json (DOM library, strict); message shapes are protocol.ts's, shared with
 * the server. Data never becomes HTML: every value goes through textContent or setAttribute. Passkey
 * ceremonies use the @simplewebauthn/browser bundle (window.SimpleWebAuthnBrowser).
 */
import type { ApproveReply } from '../protocol.js';
import { api } from './api.js';
import { approve, approveChallenge, reject } from './approvals.js';
import { applyFilter, auditStarted, back, clearFilter, loadSessions, loadTimeline, openSession, routeAudit, verifyNow } from './audit.js';
import { $, closest } from './dom.js';
import { revokeGrant } from './grants.js';
import { connectView, IDENTITY_ACTIONS } from './identity.js';
import { liveConnected, reconnectNow } from './live.js';
import { initNotifications } from './notifications.js';
import { addPasskey, cancelRename, enrollView, registerPasskey, removePasskey, renamePasskey } from './passkeys.js';
import { state } from './state.js';
import { boot, isAuditPath, signIn, signOut } from './views.js';

const ACTIONS: Record<string, (button: HTMLButtonElement) => unknown> = {
  ...IDENTITY_ACTIONS,
  'sign-in': signIn,
  'sign-out': signOut,
  'register-passkey': registerPasskey,
  approve,
  reject,
  'revoke-grant': revokeGrant,
  'rename-passkey': renamePasskey,
  'cancel-rename': cancelRename,
  'remove-passkey': removePasskey,
  'add-passkey': addPasskey,
  'reconnect-now': reconnectNow,
  'verify-audit': verifyNow,
  'audit-filter': applyFilter,
  'audit-clear': clearFilter,
  'audit-more': () => loadSessions(false),
  'audit-open': (button) => openSession(button.dataset.id ?? '', true, button.dataset.instance ?? null),
  'audit-back': back,
  'audit-timeline-more': () => loadTimeline(),
};

document.addEventListener('click', (event) => {
  const button = closest<HTMLButtonElement>(event.target, '[data-action]');
  if (!button) {
    // A click anywhere on a session's row opens it (the button in its first cell is the keyboard way).
    const row = closest(event.target, 'tr[data-audit-session]');
    if (row && !window.getSelection()?.toString()) void openSession(row.dataset.auditSession ?? '', true, row.dataset.instance ?? null);
    return;
  }
  if (button.disabled) return;
  const action = ACTIONS[button.dataset.action ?? ''];
  if (!action) return;
  event.preventDefault();
  void action(button);
});

const click = (root: ParentNode | null | undefined, selector: string): void => root?.querySelector<HTMLElement>(selector)?.click();

document.addEventListener('keydown', (event) => {
  if (event.key !== 'Enter' || !(event.target instanceof HTMLElement)) return;
  const target = event.target;
  // Enter in a rejection reason rejects that statement.
  if (target.matches('input[name=reason]')) click(target.closest('[data-challenge-id]'), '[data-action=reject]');
  if (target.matches('input[name=code]')) click(target.closest('.code-approve'), '[data-action=approve-code]');
  if (target.id === 'totp-code') click(document, '[data-action=totp-confirm]');
  if (target.id === 'enroll-name') click(document, '[data-action=register-passkey]');
  if (['audit-user', 'audit-since', 'audit-until'].includes(target.id)) applyFilter();
});

window.addEventListener('hashchange', () => {
  // A new enrollment link pasted into a tab already showing /enroll only changes the fragment.
  if (location.pathname === '/enroll' && /token=/.test(location.hash)) {
    $('enroll-error').textContent = '';
    $('enroll-ready').hidden = true;
    void enrollView();
  }
  // A `stepgate login` link opened in a tab already showing /connect only changes the fragment.
  if (location.pathname === '/connect' && /code=/.test(location.hash) && state.me) void connectView();
});

// Back and forward between the sessions and a timeline.
window.addEventListener('popstate', () => {
  if (auditStarted() && isAuditPath()) routeAudit();
});

// A tab coming back to the front reconnects at once rather than at the next backoff step.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.me && !liveConnected() && !state.signedOut && !$('view-console').hidden) reconnectNow();
});

declare global {
  interface Window {
    /** For scripts and tests: the API without the page's buttons (the server checks everything anyway). */
    stepgateConsole: { api: typeof api; approve: (id: string) => Promise<ApproveReply> };
  }
}
window.stepgateConsole = { api, approve: approveChallenge };

initNotifications();
void boot();
