/**
 * Live updates: the console's WebSocket (/ws), what its messages change on the page, and what the page
 * says while it is down.
 *
 * The socket only receives (protocol.ts ServerMessage); approvals go through the API. When it closes, the
 * page says so plainly (the "stepgate is unreachable" banner: what is shown may be out of date) and
 * reconnects with exponential backoff (0.5 s doubling to 15 s; at once when the tab becomes visible or the
 * person asks). A close with code 4401, or an API answer 401, means the session ended: sign in again. On
 * reconnect the server's snapshot replaces what the page showed, so nothing missed stays missing.
 */
import type { CloseSessionEnded, ServerMessage } from '../protocol.js';
import { api, errorOf } from './api.js';
import { onChallenge, onChallengeUpdated, onResolved, onSnapshot } from './approvals.js';
import { $, setStatus } from './dom.js';
import { onGrants } from './grants.js';
import { onPasskeys } from './passkeys.js';
import { onOutcome } from './recent.js';
import { state } from './state.js';
import { sessionEnded } from './views.js';

const CLOSE_SESSION_ENDED: CloseSessionEnded = 4401;
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15_000;

let ws: WebSocket | null = null;
let retry = 0;
let reconnectTimer: number | null = null;
let countdown: number | null = null;
/** When the next attempt is due (ms, our clock); null when none is planned. */
let nextAttemptAt: number | null = null;

export function connectLive(): void {
  if (ws || state.signedOut) return;
  setStatus('connecting', retry ? 'Reconnecting…' : 'Connecting…');
  const socket = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/ws`);
  ws = socket;
  socket.onopen = () => {
    retry = 0;
    setStatus('live', 'Live');
    hideBanner();
  };
  socket.onmessage = (event: MessageEvent) => {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(String(event.data)) as ServerMessage;
    } catch {
      return;
    }
    onMessage(msg);
  };
  socket.onclose = (event: CloseEvent) => {
    if (ws !== socket) return;
    ws = null;
    if (event.code === CLOSE_SESSION_ENDED) return sessionEnded();
    void lost();
  };
}

/** The socket is gone: say so, ask whether the session is still good, and plan the next attempt. */
async function lost(): Promise<void> {
  setStatus('connecting', 'Reconnecting…');
  showBanner();
  // A refused upgrade looks like a network error: ask whether the session is still good.
  try {
    await api('GET', '/api/me');
  } catch (err) {
    if (errorOf(err).status === 401) return sessionEnded();
  }
  if (ws || state.signedOut || state.me === null) return;
  const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** retry++);
  schedule(delay);
}

function schedule(delay: number): void {
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  nextAttemptAt = Date.now() + delay;
  reconnectTimer = window.setTimeout(() => {
    reconnectTimer = null;
    nextAttemptAt = null;
    connectLive();
  }, delay);
  updateBanner();
}

/** Reconnect now (the banner's button, or the tab became visible again). */
export function reconnectNow(): void {
  if (ws || state.signedOut || state.me === null) return;
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  reconnectTimer = null;
  nextAttemptAt = null;
  connectLive();
}

export function liveConnected(): boolean {
  return ws !== null;
}

export function stopLive(): void {
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  reconnectTimer = null;
  nextAttemptAt = null;
  retry = 0;
  hideBanner();
  if (ws) {
    const socket = ws;
    ws = null;
    socket.onclose = null;
    socket.close();
  }
}

function onMessage(msg: ServerMessage): void {
  if (typeof msg.now === 'number') state.offset = msg.now - Date.now();
  switch (msg.type) {
    case 'snapshot':
      return onSnapshot(msg.challenges, msg.recent, msg.grants);
    case 'challenge':
      return onChallenge(msg.challenge);
    case 'challenge-updated':
      return onChallengeUpdated(msg.challenge);
    case 'resolved':
      return onResolved(msg.resolved);
    case 'outcome':
      return onOutcome(msg.resolved);
    case 'grants':
      return onGrants(msg.grants);
    case 'passkeys':
      return onPasskeys(msg.passkeys);
  }
}

// ───────────────────────────── the banner ─────────────────────────────

function showBanner(): void {
  const banner = $('unreachable');
  if (banner.hidden) {
    banner.hidden = false;
    banner.dataset.since = String(Date.now());
  }
  updateBanner();
  if (countdown === null) countdown = window.setInterval(updateBanner, 1000);
}

function hideBanner(): void {
  $('unreachable').hidden = true;
  if (countdown !== null) clearInterval(countdown);
  countdown = null;
}

function updateBanner(): void {
  const when = $('unreachable-retry');
  if (ws) when.textContent = 'Connecting…';
  else if (nextAttemptAt === null) when.textContent = 'Checking…';
  else when.textContent = `Trying again in ${Math.max(1, Math.ceil((nextAttemptAt - Date.now()) / 1000))} s.`;
}
