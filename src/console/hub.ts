/**
 * The console's WebSocket side: one socket per open console page, authenticated by the session cookie at
 * the upgrade. Pushes, per person, the messages of protocol.ts (ServerMessage, shared with the page):
 *
 *   {type:'snapshot', now, user, challenges, recent, grants}   on connect (what a reconnecting page missed)
 *   {type:'challenge', now, challenge}                         a statement is held that this person may see
 *   {type:'challenge-updated', now, challenge}                 an approval was added (count > 1)
 *   {type:'resolved', now, resolved}                           approved, rejected, expired, cancelled, withdrawn, shutdown
 *   {type:'outcome', now, resolved}                            an approved statement ran (tag, rows, error)
 *   {type:'grants', now, grants}                               this person's active grants changed
 *   {type:'passkeys', now, passkeys}                           this person's passkeys changed (one was just used)
 *
 * Nothing is accepted from the page over the socket (approvals go through the HTTP API, which checks
 * Origin and the custom header); the server pings to notice dead connections, and closes a socket whose
 * session expired or was signed out (code 4401: the page asks to sign in again).
 */
import type { WebSocket } from 'ws';
import type { Logger } from '../log.js';
import type { HoldOutcome } from '../stepup/types.js';
import type { BrokerListener, Challenge, ConsoleBroker, ResolvedView } from '../stepup/broker.js';
import type { CloseSessionEnded, PasskeyView, ServerMessageBody } from './protocol.js';

export const CLOSE_SESSION_ENDED: CloseSessionEnded = 4401;
const PING_MS = 25_000;

interface Client {
  ws: WebSocket;
  user: string;
  sid: string;
  expiresAt: number;
  alive: boolean;
}

export class Hub implements BrokerListener {
  private readonly clients = new Set<Client>();
  private readonly timer: NodeJS.Timeout;
  private readonly detach: () => void;

  constructor(
    private readonly broker: ConsoleBroker,
    private readonly log: Logger,
    /** Still a valid session (not signed out, user still exists)? */
    private readonly sessionValid: (sid: string, user: string) => boolean,
  ) {
    this.detach = broker.addListener(this);
    this.timer = setInterval(() => this.sweep(), PING_MS);
    this.timer.unref();
  }

  get size(): number {
    return this.clients.size;
  }

  add(ws: WebSocket, session: { user: string; sid: string; expiresAt: number }): void {
    const client: Client = { ws, user: session.user, sid: session.sid, expiresAt: session.expiresAt, alive: true };
    this.clients.add(client);
    ws.on('pong', () => (client.alive = true));
    ws.on('message', () => {}); // nothing to read; approvals go through the API
    ws.on('error', () => {});
    ws.on('close', () => this.clients.delete(client));
    const groups = this.broker.groupsOf(client.user);
    this.send(client, {
      type: 'snapshot',
      user: client.user,
      groups,
      challenges: this.broker.pendingFor(client.user, groups).map((c) => this.broker.view(c, client.user, groups)),
      recent: this.broker.recentFor(client.user, groups),
      grants: this.broker.grantsFor(client.user),
    });
    this.log.debug('console.ws_open', { user: client.user, sockets: this.clients.size });
  }

  /** The page refreshed its session: the socket lives on until the new expiry. */
  extend(sid: string, expiresAt: number): void {
    for (const c of this.clients) if (c.sid === sid) c.expiresAt = Math.max(c.expiresAt, expiresAt);
  }

  /** Signed out, or the session is no longer valid: close its sockets. */
  endSession(sid: string): void {
    for (const c of this.clients) if (c.sid === sid) c.ws.close(CLOSE_SESSION_ENDED, 'signed out');
  }

  close(): void {
    clearInterval(this.timer);
    this.detach();
    for (const c of this.clients) c.ws.terminate();
    this.clients.clear();
  }

  // ───────────────────────────── broker events ─────────────────────────────

  challengeCreated(challenge: Challenge): void {
    this.toViewers(challenge, (client, groups) => ({ type: 'challenge', challenge: this.broker.view(challenge, client.user, groups) }));
  }

  challengeUpdated(challenge: Challenge): void {
    this.toViewers(challenge, (client, groups) => ({ type: 'challenge-updated', challenge: this.broker.view(challenge, client.user, groups) }));
  }

  challengeResolved(challenge: Challenge, _outcome: HoldOutcome, resolved: ResolvedView): void {
    this.toViewers(challenge, () => ({ type: 'resolved', resolved }));
  }

  challengeOutcome(challenge: Challenge, resolved: ResolvedView): void {
    this.toViewers(challenge, () => ({ type: 'outcome', resolved }));
  }

  /** This person's passkeys changed (an approval or sign-in used one): their open pages show it. */
  passkeysChanged(user: string, passkeys: PasskeyView[]): void {
    for (const c of this.clients) if (c.user === user) this.send(c, { type: 'passkeys', passkeys });
  }

  grantsChanged(users: string[]): void {
    for (const c of this.clients) if (users.includes(c.user)) this.send(c, { type: 'grants', grants: this.broker.grantsFor(c.user) });
  }

  // ───────────────────────────── internals ─────────────────────────────

  private toViewers(challenge: Challenge, message: (client: Client, groups: string[]) => ServerMessageBody): void {
    const groupsByUser = new Map<string, string[]>();
    for (const c of this.clients) {
      let groups = groupsByUser.get(c.user);
      if (!groups) groupsByUser.set(c.user, (groups = this.broker.groupsOf(c.user)));
      if (challenge.visibleTo(c.user, groups)) this.send(c, message(c, groups));
    }
  }

  private send(client: Client, message: ServerMessageBody): void {
    if (client.ws.readyState !== client.ws.OPEN) return;
    client.ws.send(JSON.stringify({ ...message, now: Date.now() }));
  }

  private sweep(): void {
    const now = Date.now();
    for (const c of this.clients) {
      if (c.expiresAt <= now || !this.sessionValid(c.sid, c.user)) {
        c.ws.close(CLOSE_SESSION_ENDED, 'session ended');
        continue;
      }
      if (!c.alive) {
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }
}
