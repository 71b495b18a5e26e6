/**
 * Console sign-in sessions: a short-lived token signed with jose (HS256, key from identity.secret) in an
 * HttpOnly, SameSite=Strict cookie (Secure and `__Host-` prefixed over https).
 *
 * - `exp`: 30 minutes; an open console page refreshes it, so it slides while the page is in use.
 * - `sat`: when the person signed in with a passkey; no refresh beyond 12 hours after it.
 * - `auth_time`: the last passkey assertion (sign-in or re-check); adding or removing passkeys needs one
 *   in the last 5 minutes, so a stolen cookie alone cannot register an attacker's passkey.
 * - `sid`: signing out revokes it (Revocations: in memory, where a token outlives a restart until its `exp`,
 *   at most 30 min; with shared state, in the state database, so every instance refuses it).
 * - `aud`: the console origin, so a token minted for one console is useless at another.
 */
import { randomBytes } from 'node:crypto';
import { jwtVerify, SignJWT } from 'jose';
import type { IdentityStore } from '../identity/store.js';

export const SESSION_TTL_MS = 30 * 60_000;
export const SESSION_MAX_MS = 12 * 60 * 60_000;
export const RECENT_AUTH_MS = 5 * 60_000;

export interface ConsoleSession {
  user: string;
  sid: string;
  /** Epoch ms. */
  expiresAt: number;
  signedInAt: number;
  authTime: number;
  /** How the person signed in: a passkey (or an enrollment link), or single sign-on. */
  via: 'passkey' | 'sso';
  /** The last sign-in at the IdP (0: none in this session). Enrolling factors needs a recent one for SSO users. */
  ssoAuthTime: number;
  /** No refresh beyond this (12 h after a passkey sign-in, `sso.session_ttl` after an SSO one). */
  maxAt: number;
}

export interface IssueOptions {
  /** A fresh confirmation now (sign-in, passkey re-check, SSO sign-in). */
  freshAuth?: boolean;
  via?: 'passkey' | 'sso';
  /** An SSO sign-in happened now (ms; the IdP's auth_time). */
  ssoAuthTime?: number;
  /** Longest life of this sign-in (ms from signedInAt). */
  maxMs?: number;
}

/** Signed-out sessions (by sid), kept until they could no longer be refreshed (their maxAt). */
export interface Revocations {
  has(sid: string): boolean;
  /** Resolves once the revocation is in force (with shared state: committed). */
  add(sid: string, until: number): Promise<void>;
  /** Sessions signed out elsewhere (shared state): their live connections here end too. */
  onRevoked?(fn: (sid: string) => void): void;
}

/** This process's own list (one instance). */
export class LocalRevocations implements Revocations {
  private readonly revoked = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  has(sid: string): boolean {
    return this.revoked.has(sid);
  }

  async add(sid: string, until: number): Promise<void> {
    this.revoked.set(sid, until);
    const now = this.now();
    for (const [s, u] of this.revoked) if (u < now) this.revoked.delete(s);
  }
}

export class SessionManager {
  private readonly key: Uint8Array;
  readonly cookieName: string;

  /** `port`: the console's public port (its URL's): instances behind one address share the cookie's name. */
  constructor(
    private readonly identity: IdentityStore,
    private readonly origin: string,
    private readonly secure: boolean,
    port: number,
    private readonly now: () => number = Date.now,
    private readonly revoked: Revocations = new LocalRevocations(now),
  ) {
    this.key = new Uint8Array(identity.secret('console-session-key'));
    // Cookies ignore ports: name it after this console, so two stepgates on one host do not clash.
    this.cookieName = secure ? `__Host-stepgate_${port}` : `stepgate_${port}`;
  }

  async issue(user: string, previous?: ConsoleSession, freshAuthOrOptions: boolean | IssueOptions = true): Promise<{ token: string; session: ConsoleSession }> {
    const o: IssueOptions = typeof freshAuthOrOptions === 'boolean' ? { freshAuth: freshAuthOrOptions } : freshAuthOrOptions;
    const freshAuth = o.freshAuth ?? true;
    const now = this.now();
    // A new sign-in (or one by another person) starts a new session; a refresh keeps its limits.
    const same = previous !== undefined && previous.user === user && o.via === undefined;
    const signedInAt = same ? previous.signedInAt : now;
    const session: ConsoleSession = {
      user,
      sid: same ? previous.sid : randomBytes(16).toString('base64url'),
      signedInAt,
      authTime: freshAuth ? now : (previous?.authTime ?? now),
      expiresAt: 0,
      via: same ? previous.via : (o.via ?? 'passkey'),
      ssoAuthTime: o.ssoAuthTime ?? (same ? previous.ssoAuthTime : 0),
      maxAt: same ? previous.maxAt : signedInAt + Math.min(o.maxMs ?? SESSION_MAX_MS, SESSION_MAX_MS),
    };
    session.expiresAt = Math.min(now + SESSION_TTL_MS, session.maxAt);
    const token = await new SignJWT({
      sid: session.sid,
      sat: Math.floor(session.signedInAt / 1000),
      auth_time: Math.floor(session.authTime / 1000),
      via: session.via,
      sso_at: Math.floor(session.ssoAuthTime / 1000),
      max: Math.floor(session.maxAt / 1000),
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(user)
      .setAudience(this.origin)
      .setIssuer('stepgate-console')
      .setIssuedAt(Math.floor(now / 1000))
      .setExpirationTime(Math.floor(session.expiresAt / 1000))
      .sign(this.key);
    return { token, session };
  }

  /** The session of a Cookie header, or null (missing, bad signature, expired, revoked, user gone). */
  async verify(cookieHeader: string | undefined): Promise<ConsoleSession | null> {
    const token = readCookie(cookieHeader, this.cookieName);
    if (!token || token.length > 4096) return null;
    try {
      const { payload } = await jwtVerify(token, this.key, { algorithms: ['HS256'], audience: this.origin, issuer: 'stepgate-console', currentDate: new Date(this.now()) });
      const user = payload.sub;
      const sid = payload.sid;
      if (typeof user !== 'string' || typeof sid !== 'string' || typeof payload.exp !== 'number') return null;
      if (this.revoked.has(sid)) return null;
      const found = this.identity.getUser(user);
      if (!found || found.disabled) return null;
      const signedInAt = Number(payload.sat ?? 0) * 1000;
      return {
        user,
        sid,
        expiresAt: payload.exp * 1000,
        signedInAt,
        authTime: Number(payload.auth_time ?? 0) * 1000,
        via: payload.via === 'sso' ? 'sso' : 'passkey',
        ssoAuthTime: Number(payload.sso_at ?? 0) * 1000,
        maxAt: typeof payload.max === 'number' ? payload.max * 1000 : signedInAt + SESSION_MAX_MS,
      };
    } catch {
      return null;
    }
  }

  isRevoked(sid: string): boolean {
    return this.revoked.has(sid);
  }

  revoke(session: ConsoleSession): Promise<void> {
    return this.revoked.add(session.sid, session.maxAt);
  }

  cookie(token: string, session: ConsoleSession): string {
    const maxAge = Math.max(0, Math.floor((session.expiresAt - this.now()) / 1000));
    return `${this.cookieName}=${token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${this.secure ? '; Secure' : ''}`;
  }

  clearCookie(): string {
    return `${this.cookieName}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0${this.secure ? '; Secure' : ''}`;
  }
}

export function readCookie(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}
