/**
 * The console: an HTTP(S) server for the browser page, its JSON API and its WebSocket.
 *
 * Pages (GET, no session needed; the page asks the API):
 *   /                the console (sign in, pending approvals, grants, passkeys)
 *   /c/ID            the same, focused on one held statement (the link in the client's notice)
 *   /audit           the auditor view (members of `auditors`): sessions and the chain's verification
 *   /audit/ID        the same, showing one session's timeline
 *   /enroll#token=…  register a passkey with a one-time enrollment link (the token stays in the fragment,
 *                    so it never reaches logs or Referer headers)
 *   /static/…        app.js, app.css, webauthn.js (the @simplewebauthn/browser bundle from node_modules)
 *
 * API (JSON only). Every /api request must carry `X-Stepgate: 1` (a custom header: cross-site pages cannot
 * send it without a CORS preflight, which this server never grants); requests that change anything must be
 * POST or DELETE with `Content-Type: application/json` and an `Origin` equal to the console's origin. The
 * session cookie is SameSite=Strict. See docs/console.md for the list of endpoints.
 *
 * WebSocket /ws: Origin must be the console's; the session cookie must be valid; see hub.ts.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import type { Config } from '../config.js';
import { randomBytes } from 'node:crypto';
import QRCode from 'qrcode';
import { passkeyEnrolledBody } from '../audit/passkey-keys.js';
import type { AuditSink } from '../audit/types.js';
import { SsoRefused, type PendingSignIn, type SsoProvider } from '../identity/sso.js';
import { cleanPasskeyName, type Credential, type IdentityStore, type Passkey } from '../identity/store.js';
import { CodeFactors, newRecoveryCodes, newTotpSecret, totpUri } from '../identity/totp.js';
import type { Logger } from '../log.js';
import { makeVerifier } from '../protocol/scram.js';
import type { ConsoleBroker, Refusal } from '../stepup/broker.js';
import { AUDITORS_GROUP, AuditorError, AuditorService, type AuditorShared } from './auditor.js';
import { pageHtml } from './client/page.js';
import { CONSOLE_CSS } from './client/styles.js';
import { Hub } from './hub.js';
import type {
  ApproveReply,
  ChallengeLookup,
  ChallengesReply,
  CliLoginInfo,
  CodeApproveReply,
  CredentialsReply,
  CredentialView,
  EnrollInfo,
  GrantsReply,
  IssuedCredential,
  MeView,
  PasskeyView,
  PublicInfo,
  RecoveryCodesReply,
  TotpSetup,
} from './protocol.js';
import { readCookie, RECENT_AUTH_MS, SessionManager, type ConsoleSession, type Revocations } from './sessions.js';
import { consoleIdentity, deriveConsoleUrl, webauthnProblem } from './url.js';
import { Ceremonies, CeremonyError, type CeremonyStore } from './webauthn.js';

const MAX_BODY = 64 * 1024;
const HERE = path.dirname(fileURLToPath(import.meta.url));

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code = 'error',
  ) {
    super(message);
  }
}

/** The broker's refusal as the console answers it. */
const REFUSAL_STATUS: Record<Refusal['refusal'], number> = { not_found: 404, not_allowed: 403, stale: 409, unavailable: 503 };

function refused(r: Refusal): HttpError {
  return new HttpError(REFUSAL_STATUS[r.refusal], r.error, 'refused');
}

interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  params: string[];
  query: URLSearchParams;
  body: Record<string, unknown>;
  session: ConsoleSession | null;
}

type Handler = (ctx: Ctx) => Promise<unknown>;

interface Route {
  method: 'GET' | 'POST' | 'DELETE';
  pattern: RegExp;
  /** Needs a signed-in session. */
  auth: boolean;
  handler: Handler;
}

export interface ConsoleServerOptions {
  config: Pick<Config, 'console' | 'consoleUrl' | 'tls' | 'dataDir'> & Partial<Pick<Config, 'sso'>>;
  identity: IdentityStore;
  broker: ConsoleBroker;
  log: Logger;
  /** Single sign-on (sign-in, credentials); null: passkeys and enrollment links only. */
  sso?: SsoProvider | null;
  /** For `factor.failed` and `passkey.*` events (a new passkey's public key, for `audit verify`). */
  audit?: AuditSink | null;
  /** The clock (sessions, TOTP steps); tests pass their own. */
  now?: () => number;
  /** Signed-out sessions; default: this process's own list (shared state passes the shared one). */
  revocations?: Revocations;
  /** Passkey ceremonies in progress; default: this process's memory (shared state: the state database). */
  ceremonies?: CeremonyStore;
  /** With `state:`: the auditor view reads every instance's trail from the shared store. */
  auditShared?: AuditorShared | null;
}

/** Where database clients connect (for the Connect page, `stepgate login`, credentials). */
export interface ConnectInfo {
  host: string;
  port: number;
  /** What a client should ask for: require when stepgate offers TLS, else disable. */
  sslmode: 'require' | 'disable';
}

/** A `stepgate login` waiting for its person to confirm in the console (like the OAuth device flow). */
interface CliLogin {
  device: string;
  code: string;
  createdAt: number;
  expiresAt: number;
  client: string;
  label: string;
  status: 'pending' | 'approved' | 'denied';
  user?: string;
  result?: IssuedCredential;
}

const CLI_LOGIN_TTL_MS = 10 * 60_000;
const MAX_CLI_LOGINS = 200;
const SSO_PENDING_TTL_MS = 10 * 60_000;
const MAX_SSO_PENDING = 2000;

export class ConsoleServer {
  private readonly server: http.Server | https.Server;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });
  private readonly sockets = new Set<net.Socket>();
  private readonly routes: Route[] = [];
  private readonly assets = new Map<string, { type: string; body: Buffer }>();
  private readonly identity: IdentityStore;
  private readonly broker: ConsoleBroker;
  private readonly log: Logger;
  private readonly tls: boolean;
  private sessions!: SessionManager;
  private ceremonies!: Ceremonies;
  private hub!: Hub;
  private readonly auditor: AuditorService;
  private readonly sso: SsoProvider | null;
  private readonly codes: CodeFactors;
  private readonly now: () => number;
  /** SSO sign-ins in progress, by state. */
  private readonly ssoPending = new Map<string, PendingSignIn & { binding: string }>();
  /** TOTP secrets shown but not confirmed yet, by console session. */
  private readonly totpPending = new Map<string, { secret: string; user: string; expiresAt: number }>();
  private readonly cliLogins = new Map<string, CliLogin>();
  private connectInfo: ConnectInfo | null = null;
  private csp = '';
  /** Public URL (no trailing slash), known once listening. */
  url = '';
  origin = '';
  private canonicalHost = '';

  constructor(private readonly options: ConsoleServerOptions) {
    this.identity = options.identity;
    this.broker = options.broker;
    this.log = options.log;
    this.tls = options.config.tls !== null;
    this.auditor = new AuditorService(options.config.dataDir, options.log, options.auditShared ?? null);
    this.sso = options.sso ?? null;
    this.now = options.now ?? Date.now;
    this.codes = new CodeFactors(options.identity, this.now);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    };
    this.server = options.config.tls
      ? https.createServer({ cert: fs.readFileSync(options.config.tls.cert), key: fs.readFileSync(options.config.tls.key) }, handler)
      : http.createServer(handler);
    this.server.headersTimeout = 20_000;
    this.server.requestTimeout = 30_000;
    this.server.keepAliveTimeout = 5_000;
    this.server.on('connection', (socket: net.Socket) => {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      this.upgrade(req, socket, head).catch(() => socket.destroy());
    });
    this.defineRoutes();
    this.loadAssets();
  }

  /** Starts listening; returns the console's public URL. */
  async listen(): Promise<string> {
    const { host, port } = this.options.config.console;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      // exclusive: in a cluster (`workers: N`) only worker 1 serves the console, on a socket of its own;
      // shared through the primary, a port-0 console could be handed the proxy's port.
      this.server.listen({ port, host, exclusive: true }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as net.AddressInfo;
    this.url = deriveConsoleUrl({ host, port: address.port, tls: this.tls, consoleUrl: this.options.config.consoleUrl });
    const { origin, rpId, secure } = consoleIdentity(this.url);
    this.origin = origin;
    this.canonicalHost = new URL(this.url).host;
    const publicPort = Number(new URL(this.url).port) || (secure ? 443 : 80);
    this.sessions = new SessionManager(this.identity, origin, secure, publicPort, this.now, this.options.revocations);
    this.ceremonies = new Ceremonies(this.identity, origin, rpId, this.options.ceremonies);
    this.hub = new Hub(this.broker, this.log, (sid, user) => !this.sessions.isRevoked(sid) && this.identity.getUser(user)?.disabled === false);
    this.options.revocations?.onRevoked?.((sid) => this.hub.endSession(sid));
    const wsOrigin = origin.replace(/^http/, 'ws');
    this.csp = [
      "default-src 'none'",
      "script-src 'self'",
      "style-src 'self'",
      "img-src 'self' data:",
      `connect-src 'self' ${wsOrigin}`,
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join('; ');
    if (new URL(this.url).pathname !== '/') {
      this.log.warn('console.url_path', { url: this.url, note: 'the console must be served at the root of its host; a path in console_url is not supported' });
    }
    const problem = webauthnProblem(this.url);
    if (problem) this.log.warn('console.passkeys_unavailable', { url: this.url, problem });
    this.log.info('console.listening', { listen: `${address.address}:${address.port}`, url: this.url });
    return this.url;
  }

  get address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  /** Where database clients connect; set once the proxy listens. */
  setConnectInfo(info: ConnectInfo): void {
    this.connectInfo = info;
  }

  /** Open console pages (WebSocket connections). */
  get openConsoles(): number {
    return this.hub?.size ?? 0;
  }

  async close(): Promise<void> {
    this.hub?.close();
    this.wss.close();
    await this.auditor.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  // ───────────────────────────── HTTP ─────────────────────────────

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.securityHeaders(res);
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    const p = url.pathname;
    if (p.startsWith('/api/')) return this.api(req, res, p, url.searchParams);
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'method not allowed');
    // People who type the IP address land on the name passkeys are bound to.
    const host = req.headers.host ?? '';
    if (this.canonicalHost.startsWith('localhost') && /^(127\.\d+\.\d+\.\d+|\[::1\]):\d+$/.test(host)) {
      res.writeHead(302, { location: `${this.url}${p}${url.search}` }).end();
      return;
    }
    if (p === '/sso/start') return this.ssoStart(req, res, url.searchParams);
    if (p === '/sso/callback') return this.ssoCallback(req, res, url);
    if (p === '/' || p === '/enroll' || p === '/audit' || p === '/connect' || /^\/(c|audit)\/[A-Za-z0-9_-]{1,64}$/.test(p)) {
      this.send(res, 200, 'text/html; charset=utf-8', Buffer.from(pageHtml()), 'no-store');
      return;
    }
    const asset = this.assets.get(p);
    if (asset) {
      this.send(res, 200, asset.type, asset.body, 'no-cache');
      return;
    }
    if (p === '/favicon.ico') {
      res.writeHead(204).end();
      return;
    }
    throw new HttpError(404, 'not found');
  }

  private async api(req: http.IncomingMessage, res: http.ServerResponse, p: string, query: URLSearchParams): Promise<void> {
    res.setHeader('cache-control', 'no-store');
    const method = req.method ?? 'GET';
    // CSRF: a custom header (never sent cross-site without a preflight we do not grant) ...
    if (req.headers['x-stepgate'] !== '1') throw new HttpError(403, 'missing X-Stepgate header', 'csrf');
    // ... the browser's own statement of where the request comes from ...
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new HttpError(403, 'cross-site request refused', 'csrf');
    if (origin !== undefined && origin !== this.origin) throw new HttpError(403, `requests from ${origin} are refused`, 'origin');
    const route = this.routes.find((r) => r.method === method && r.pattern.test(p));
    if (!route) throw new HttpError(this.routes.some((r) => r.pattern.test(p)) ? 405 : 404, 'no such API endpoint', 'not_found');
    let body: Record<string, unknown> = {};
    if (method !== 'GET') {
      // ... and for anything that changes state: JSON only, with an Origin header.
      if (origin === undefined) throw new HttpError(403, 'an Origin header is required', 'origin');
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
      if (type !== 'application/json') throw new HttpError(415, 'send JSON (Content-Type: application/json)', 'content_type');
      body = await readJson(req);
    }
    const session = await this.sessions.verify(req.headers.cookie);
    if (route.auth && !session) throw new HttpError(401, this.sso ? 'sign in first' : 'sign in with your passkey', 'signin');
    let params: string[];
    try {
      params = route.pattern.exec(p)!.slice(1).map(decodeURIComponent);
    } catch {
      throw new HttpError(400, 'malformed path', 'bad_request');
    }
    const result = await route.handler({ req, res, params, query, body, session });
    this.json(res, 200, result ?? {});
  }

  private defineRoutes(): void {
    const route = (method: Route['method'], pattern: string, auth: boolean, handler: Handler): void => {
      this.routes.push({ method, pattern: new RegExp(`^${pattern}$`), auth, handler });
    };
    const ID = '([A-Za-z0-9_-]{1,200})';

    route('GET', '/api/me', true, async ({ session }) => this.me(session!));

    route('POST', '/api/session/refresh', true, async ({ res, session }) => {
      const s = session!;
      if (this.now() >= s.maxAt) throw new HttpError(401, 'your sign-in is too old: sign in again', 'signin');
      const { token, session: next } = await this.sessions.issue(s.user, s, false);
      res.setHeader('set-cookie', this.sessions.cookie(token, next));
      this.hub.extend(next.sid, next.expiresAt);
      return { expiresAt: next.expiresAt };
    });

    route('POST', '/api/signout', false, async ({ res, session }) => {
      if (session) {
        await this.sessions.revoke(session);
        this.hub.endSession(session.sid);
      }
      res.setHeader('set-cookie', this.sessions.clearCookie());
      return {};
    });

    // Sign-in with a discoverable passkey.
    route('POST', '/api/signin/options', false, async () => this.ceremonies.assertionOptions({ purpose: 'signin', user: null, sid: null }));
    route('POST', '/api/signin/verify', false, async ({ res, body }) => {
      const ceremony = await this.ceremonies.take(body.response, 'signin');
      const passkey = await this.ceremonies.verifyAssertion(ceremony, body.response);
      this.refuseSsoUserPasskeySignIn(passkey.user);
      await this.startSession(res, passkey.user);
      this.hub.passkeysChanged(passkey.user, this.identity.passkeys(passkey.user).map(passkeyView));
      this.log.info('console.signin', { user: passkey.user, credential: passkey.id });
      return this.me(null, passkey.user);
    });

    // Re-check with a passkey (before adding or removing passkeys).
    route('POST', '/api/reauth/options', true, async ({ session }) =>
      this.ceremonies.assertionOptions({ purpose: 'reauth', user: session!.user, sid: session!.sid }),
    );
    route('POST', '/api/reauth/verify', true, async ({ res, body, session }) => {
      const ceremony = await this.ceremonies.take(body.response, 'reauth');
      if (ceremony.sid !== session!.sid || ceremony.user !== session!.user) throw new HttpError(403, 'this passkey response belongs to another session');
      await this.ceremonies.verifyAssertion(ceremony, body.response);
      const { token, session: next } = await this.sessions.issue(session!.user, session!, true);
      res.setHeader('set-cookie', this.sessions.cookie(token, next));
      this.hub.extend(next.sid, next.expiresAt);
      return { authTime: next.authTime };
    });

    // Enrollment with a one-time link.
    route('POST', '/api/enroll/info', false, async ({ body }) => {
      const user = this.enrollmentUser(body.token);
      return { user, passkeys: this.identity.passkeyCount(user) } satisfies EnrollInfo;
    });
    route('POST', '/api/enroll/options', false, async ({ body }) => {
      const user = this.enrollmentUser(body.token);
      return this.ceremonies.registrationOptions(user, { purpose: 'enroll', token: String(body.token), sid: null });
    });
    route('POST', '/api/enroll/verify', false, async ({ res, body }) => {
      const ceremony = await this.ceremonies.take(body.response, 'enroll');
      if (ceremony.token !== body.token) throw new HttpError(400, 'this passkey response was made for another enrollment link');
      const name = cleanPasskeyName(body.name ?? 'Passkey');
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      const passkey = await this.ceremonies.verifyRegistration(ceremony, body.response, name);
      try {
        await this.identity.enrollPasskey(String(body.token), passkey);
      } catch (err) {
        throw new HttpError(409, (err as Error).message, 'enrollment');
      }
      await this.passkeyRecorded(passkey, 'enrollment link');
      this.log.info('console.enrolled', { user: passkey.user, credential: passkey.id });
      await this.startSession(res, passkey.user);
      return this.me(null, passkey.user);
    });

    // Passkeys of the signed-in person.
    route('POST', '/api/passkeys/options', true, async ({ session }) => {
      this.requireRecentAuth(session!);
      return this.ceremonies.registrationOptions(session!.user, { purpose: 'add-passkey', sid: session!.sid });
    });
    route('POST', '/api/passkeys/verify', true, async ({ body, session }) => {
      this.requireRecentAuth(session!);
      const ceremony = await this.ceremonies.take(body.response, 'add-passkey');
      if (ceremony.sid !== session!.sid || ceremony.user !== session!.user) throw new HttpError(403, 'this passkey response belongs to another session');
      const name = cleanPasskeyName(body.name ?? 'Passkey');
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      const passkey = await this.ceremonies.verifyRegistration(ceremony, body.response, name);
      try {
        await this.identity.addPasskey(passkey);
      } catch (err) {
        throw new HttpError(409, (err as Error).message);
      }
      await this.passkeyRecorded(passkey, 'console');
      this.log.info('console.passkey_added', { user: passkey.user, credential: passkey.id });
      return this.me(session!);
    });
    route('POST', `/api/passkeys/${ID}/rename`, true, async ({ params, body, session }) => {
      const name = cleanPasskeyName(body.name);
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      if (!(await this.identity.renamePasskey(session!.user, params[0]!, name))) throw new HttpError(404, 'no such passkey');
      this.options.audit?.event?.('passkey.renamed', { user: session!.user, credential: params[0]!, name });
      return this.me(session!);
    });
    route('DELETE', `/api/passkeys/${ID}`, true, async ({ params, session }) => {
      this.requireRecentAuth(session!);
      const user = session!.user;
      if (!this.identity.passkeys(user).some((p) => p.id === params[0])) throw new HttpError(404, 'no such passkey');
      if (this.identity.passkeyCount(user) <= 1) {
        throw new HttpError(409, 'this is your only passkey: add another one before removing it (without one you could not sign in or approve anything)', 'last_passkey');
      }
      if (!(await this.identity.removePasskey(user, params[0]!))) throw new HttpError(404, 'no such passkey');
      this.options.audit?.event?.('passkey.removed', { user, credential: params[0]! });
      this.log.info('console.passkey_removed', { user, credential: params[0] });
      return this.me(session!);
    });

    // Held statements.
    route('GET', '/api/challenges', true, async ({ session }) => {
      const user = session!.user;
      const groups = this.broker.groupsOf(user);
      return {
        now: Date.now(),
        challenges: this.broker.pendingFor(user, groups).map((c) => this.broker.view(c, user, groups)),
        recent: this.broker.recentFor(user, groups),
      } satisfies ChallengesReply;
    });
    // One held statement, or what became of it (the page at /c/ID asks this).
    route('GET', `/api/challenges/${ID}`, true, async ({ params, session }) => {
      const user = session!.user;
      const groups = this.broker.groupsOf(user);
      const pending = this.broker.get(params[0]!);
      if (pending && pending.visibleTo(user, groups)) return { state: 'pending', now: Date.now(), challenge: this.broker.view(pending, user, groups) } satisfies ChallengeLookup;
      const resolved = this.broker.decided(params[0]!, user, groups);
      if (resolved) return { state: 'decided', now: Date.now(), resolved } satisfies ChallengeLookup;
      throw new HttpError(
        404,
        'stepgate does not remember this statement: it was decided more than 30 minutes ago or before stepgate restarted, or it is not one you may see. The audit trail keeps every decision (stepgate audit replay, or the Audit trail page for auditors).',
        'unknown_challenge',
      );
    });
    route('POST', `/api/challenges/${ID}/options`, true, async ({ params, session }) => {
      const check = this.broker.mayApprove(params[0]!, session!.user, 'passkey');
      if (!check.ok) throw refused(check);
      const ttl = Math.min(3 * 60_000, Math.max(5_000, check.challenge.expiresAt - Date.now() + 5_000));
      return this.ceremonies.assertionOptions({ purpose: 'approve', user: session!.user, challengeId: params[0]!, digest: check.challenge.digest, sid: session!.sid }, ttl);
    });
    route('POST', `/api/challenges/${ID}/approve`, true, async ({ params, body, session }) => {
      const user = session!.user;
      const ceremony = await this.ceremonies.take(body.response, 'approve');
      if (ceremony.challengeId !== params[0]) throw new HttpError(403, 'this passkey response was made for another statement', 'wrong_challenge');
      if (ceremony.user !== user || ceremony.sid !== session!.sid) throw new HttpError(403, 'this passkey response belongs to another session', 'wrong_session');
      const passkey = await this.ceremonies.verifyAssertion(ceremony, body.response);
      // The assertion itself goes into the audit trail, so that `stepgate audit verify` can check it again.
      const signed = this.ceremonies.signedAssertion(ceremony, body.response);
      const result = await this.broker.approve(params[0]!, user, passkey.id, 'passkey', { passkey: passkey.name, signed });
      // Its "last used" changed: the person's open pages show it.
      this.hub.passkeysChanged(user, this.identity.passkeys(user).map(passkeyView));
      if (!result.ok) throw refused(result);
      return { status: result.status, remaining: result.remaining } satisfies ApproveReply;
    });
    route('POST', `/api/challenges/${ID}/reject`, true, async ({ params, body, session }) => {
      const result = await this.broker.reject(params[0]!, session!.user, typeof body.reason === 'string' ? body.reason : '');
      if (!result.ok) throw refused(result);
      return { status: 'rejected' };
    });

    // Grants.
    route('GET', '/api/grants', true, async ({ session }) => ({ now: Date.now(), grants: this.broker.grantsFor(session!.user) }) satisfies GrantsReply);
    route('DELETE', `/api/grants/${ID}`, true, async ({ params, session }) => {
      if (!(await this.broker.revokeGrant(params[0]!, session!.user))) throw new HttpError(404, 'no such grant');
      return { grants: this.broker.grantsFor(session!.user) } satisfies GrantsReply;
    });

    this.defineIdentityRoutes(route, ID);

    // The auditor view (members of `auditors` only; read-only: nothing here approves or changes the trail).
    route('GET', '/api/audit/sessions', true, async ({ query, session }) => {
      this.requireAuditor(session!);
      return this.auditor.sessions(query);
    });
    // A session id as listed, a unique prefix of it, or #NUMBER (URL-encoded: %23NUMBER).
    route('GET', '/api/audit/sessions/([A-Za-z0-9_%-]{1,200})', true, async ({ params, query, session }) => {
      this.requireAuditor(session!);
      return this.auditor.timeline(params[0]!, query);
    });
    route('GET', '/api/audit/verification', true, async ({ session }) => {
      this.requireAuditor(session!);
      return this.auditor.verification();
    });
    route('POST', '/api/audit/verify', true, async ({ session }) => {
      this.requireAuditor(session!);
      return this.auditor.verify(session!.user);
    });
  }

  // ───────────────────────────── single sign-on, factors, credentials ─────────────────────────────

  private defineIdentityRoutes(route: (method: Route['method'], pattern: string, auth: boolean, handler: Handler) => void, ID: string): void {
    // What the sign-in page offers (no session needed).
    route('GET', '/api/public', false, async () => ({ sso: this.sso !== null, consoleUrl: this.url }) satisfies PublicInfo);

    // TOTP: set up (after a recent passkey or SSO sign-in), confirm with a first code, remove.
    route('POST', '/api/totp/setup', true, async ({ session }) => {
      this.requireRecentAuth(session!);
      const secret = newTotpSecret();
      this.totpPending.set(session!.sid, { secret, user: session!.user, expiresAt: this.now() + 10 * 60_000 });
      const uri = totpUri(session!.user, secret);
      return { secret, uri, qr: await QRCode.toDataURL(uri, { errorCorrectionLevel: 'M', margin: 1, width: 220 }) } satisfies TotpSetup;
    });
    route('POST', '/api/totp/confirm', true, async ({ body, session }) => {
      this.requireRecentAuth(session!);
      const pending = this.totpPending.get(session!.sid);
      if (!pending || pending.user !== session!.user || pending.expiresAt < this.now()) throw new HttpError(409, 'start the set-up again (it lasts 10 minutes)', 'totp_setup');
      const step = this.codes.confirmStep(pending.secret, String(body.code ?? ''));
      if (step === null) throw new HttpError(400, 'this code does not match: enter the 6-digit code your app shows for stepgate now', 'totp_code');
      this.totpPending.delete(session!.sid);
      const codes = newRecoveryCodes();
      await this.identity.setTotp(session!.user, pending.secret, step, codes.map((c) => this.codes.recoveryHash(c)));
      this.log.info('console.totp_added', { user: session!.user });
      return { recoveryCodes: codes, me: this.me(session!) } satisfies RecoveryCodesReply;
    });
    route('DELETE', '/api/totp', true, async ({ session }) => {
      this.requireRecentAuth(session!);
      if (!(await this.identity.removeTotp(session!.user))) throw new HttpError(404, 'you have no authenticator app set up');
      this.log.info('console.totp_removed', { user: session!.user });
      return this.me(session!);
    });
    route('POST', '/api/recovery-codes', true, async ({ session }) => {
      this.requireRecentAuth(session!);
      if (!this.codes.hasTotp(session!.user)) throw new HttpError(409, 'set up an authenticator app first');
      const codes = newRecoveryCodes();
      await this.identity.setRecoveryCodes(session!.user, codes.map((c) => this.codes.recoveryHash(c)));
      return { recoveryCodes: codes, me: this.me(session!) } satisfies RecoveryCodesReply;
    });

    // Approving a held statement with a TOTP or recovery code (where its rules allow TOTP).
    route('POST', `/api/challenges/${ID}/approve-code`, true, async ({ params, body, session }) => {
      const user = session!.user;
      const check = this.broker.mayApprove(params[0]!, user, 'totp');
      if (!check.ok) throw refused(check);
      const result = await this.codes.verify(user, body.code);
      if (!result.ok) {
        // Audited, never with the code itself.
        this.options.audit?.event?.('factor.failed', { user, factor: 'totp', reason: result.reason, challenge: params[0]!, connection: check.challenge.request.connectionId });
        this.log.info('console.code_refused', { user, reason: result.reason, challenge: params[0] });
        throw new HttpError(result.reason === 'locked' ? 429 : 403, result.message, result.reason === 'locked' ? 'locked' : 'code');
      }
      const approved = await this.broker.approve(params[0]!, user, result.factor, result.factor);
      if (!approved.ok) throw refused(approved);
      return { status: approved.status, remaining: approved.remaining, recoveryCodesLeft: result.recoveryLeft } satisfies CodeApproveReply;
    });

    // Short-lived database credentials (people without a local password: SSO users).
    route('GET', '/api/credentials', true, async ({ session }) => ({
      now: this.now(),
      credentials: this.identity.activeCredentials(session!.user, this.now()).map(credentialView),
      connect: this.connectInfo,
      ttlMs: this.options.config.sso?.credentialTtlMs ?? null,
    }) satisfies CredentialsReply);
    route('POST', '/api/credentials', true, async ({ body, session }) => this.issueCredential(session!.user, typeof body.label === 'string' ? body.label : 'console'));
    route('DELETE', `/api/credentials/${ID}`, true, async ({ params, session }) => {
      if (!(await this.identity.revokeCredential(session!.user, params[0]!, this.now()))) throw new HttpError(404, 'no such credential');
      this.log.info('console.credential_revoked', { user: session!.user, credential: params[0] });
      return { credentials: this.identity.activeCredentials(session!.user, this.now()).map(credentialView) } satisfies CredentialsReply;
    });

    // `stepgate login`: the terminal starts, the person confirms the code in the console, the terminal collects.
    route('POST', '/api/cli/start', false, async ({ req, body }) => {
      const now = this.now();
      for (const [k, l] of this.cliLogins) if (l.expiresAt < now) this.cliLogins.delete(k);
      if (this.cliLogins.size >= MAX_CLI_LOGINS) throw new HttpError(429, 'too many logins waiting; try again in a few minutes', 'busy');
      const device = randomBytes(32).toString('base64url');
      const letters = 'BCDFGHJKLMNPQRSTVWXZ';
      const code = [...randomBytes(8)].map((b, i) => (i === 4 ? '-' : '') + letters[b % letters.length]).join('');
      const label = typeof body.label === 'string' ? body.label.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 64) : 'stepgate login';
      this.cliLogins.set(device, { device, code, createdAt: now, expiresAt: now + CLI_LOGIN_TTL_MS, client: req.socket.remoteAddress ?? '', label, status: 'pending' });
      return { device, code, url: `${this.url}/connect#code=${code}`, expiresAt: now + CLI_LOGIN_TTL_MS, intervalMs: 1000 };
    });
    route('POST', '/api/cli/poll', false, async ({ body }) => {
      const login = typeof body.device === 'string' ? this.cliLogins.get(body.device) : undefined;
      if (!login || login.expiresAt < this.now()) throw new HttpError(404, 'this login request expired: run stepgate login again', 'expired');
      if (login.status === 'pending') return { status: 'pending' };
      this.cliLogins.delete(login.device); // the credential is handed out once
      return login.status === 'denied' ? { status: 'denied' } : { status: 'approved', ...login.result };
    });
    route('POST', '/api/cli/info', true, async ({ body }) => {
      const login = this.cliLoginByCode(body.code);
      return { code: login.code, label: login.label, client: login.client, createdAt: login.createdAt, expiresAt: login.expiresAt } satisfies CliLoginInfo;
    });
    route('POST', '/api/cli/approve', true, async ({ body, session }) => {
      const login = this.cliLoginByCode(body.code);
      const issued = await this.issueCredential(session!.user, login.label);
      login.status = 'approved';
      login.user = session!.user;
      login.result = issued;
      this.log.info('console.cli_login', { user: session!.user, credential: issued.credential.id });
      return { status: 'approved', credential: issued.credential };
    });
    route('POST', '/api/cli/deny', true, async ({ body }) => {
      const login = this.cliLoginByCode(body.code);
      login.status = 'denied';
      return { status: 'denied' };
    });
  }

  private cliLoginByCode(code: unknown): CliLogin {
    const wanted = typeof code === 'string' ? code.trim().toUpperCase() : '';
    for (const l of this.cliLogins.values()) {
      if (l.code === wanted && l.status === 'pending' && l.expiresAt >= this.now()) return l;
    }
    throw new HttpError(404, 'no stepgate login is waiting with this code (it expires after 10 minutes): run stepgate login again', 'cli_code');
  }

  /** A new random database password for `user`; only its SCRAM verifier is stored (with its expiry). */
  private async issueCredential(user: string, label: string): Promise<IssuedCredential> {
    const found = this.identity.getUser(user);
    if (!found || found.disabled) throw new HttpError(403, 'your stepgate account is disabled', 'disabled');
    if (!this.sso) throw new HttpError(409, 'database credentials come with single sign-on, which is not configured', 'no_sso');
    if (found.verifier !== null) throw new HttpError(409, 'you log in to the database with your stepgate password', 'local_password');
    const ttl = this.options.config.sso?.credentialTtlMs ?? 8 * 60 * 60_000;
    const password = randomBytes(24).toString('base64url');
    const credential = await this.identity.addCredential(user, makeVerifier(password, undefined, Buffer.from(this.identity.credentialSalt(user))), label.slice(0, 64) || 'console', ttl, this.now());
    this.log.info('console.credential_issued', { user, credential: credential.id, expires: credential.expiresAt.toISOString() });
    const c = this.connectInfo ?? { host: '127.0.0.1', port: 6432, sslmode: 'disable' as const };
    const database = 'postgres';
    return {
      credential: credentialView(credential),
      user,
      password,
      host: c.host,
      port: c.port,
      sslmode: c.sslmode,
      psql: `psql "host=${c.host} port=${c.port} user=${user} dbname=${database} sslmode=${c.sslmode}"`,
      pgpass: `${c.host}:${c.port}:*:${user.replace(/[\\:]/g, (ch) => `\\${ch}`)}:${password}`,
    };
  }

  /** GET /sso/start: sends the browser to the IdP (authorization code flow with PKCE, state and nonce). */
  private async ssoStart(req: http.IncomingMessage, res: http.ServerResponse, query: URLSearchParams): Promise<void> {
    if (!this.sso) throw new HttpError(404, 'single sign-on is not configured');
    const returnTo = safeReturn(query.get('return'));
    const fresh = query.get('fresh') === '1';
    let started;
    try {
      started = await this.sso.startSignIn(`${this.url}/sso/callback`, returnTo, fresh);
    } catch (err) {
      return this.ssoFailed(res, err);
    }
    const now = this.now();
    for (const [k, p] of this.ssoPending) if (p.createdAt + SSO_PENDING_TTL_MS < now) this.ssoPending.delete(k);
    if (this.ssoPending.size >= MAX_SSO_PENDING) this.ssoPending.delete(this.ssoPending.keys().next().value!);
    // Bound to this browser: the callback must come with the cookie set here (no login CSRF).
    const binding = randomBytes(16).toString('base64url');
    this.ssoPending.set(started.pending.state, { ...started.pending, createdAt: now, binding });
    void req;
    res.setHeader('set-cookie', `${this.ssoCookieName()}=${binding}; Path=/sso/; HttpOnly; SameSite=Lax; Max-Age=600${this.tls ? '; Secure' : ''}`);
    res.writeHead(302, { location: started.url, 'cache-control': 'no-store' }).end();
  }

  /** GET /sso/callback: the IdP sends the browser back; the person is signed in (their user created or linked). */
  private async ssoCallback(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    if (!this.sso) throw new HttpError(404, 'single sign-on is not configured');
    const state = url.searchParams.get('state') ?? '';
    const pending = this.ssoPending.get(state);
    this.ssoPending.delete(state);
    const clear = `${this.ssoCookieName()}=; Path=/sso/; HttpOnly; SameSite=Lax; Max-Age=0${this.tls ? '; Secure' : ''}`;
    if (url.searchParams.get('error')) {
      return this.ssoFailed(res, new SsoRefused('idp', `the identity provider refused: ${url.searchParams.get('error_description') ?? url.searchParams.get('error')}`), clear);
    }
    if (!pending || pending.createdAt + SSO_PENDING_TTL_MS < this.now()) return this.ssoFailed(res, new SsoRefused('state', 'this sign-in expired or was used already: start again'), clear);
    if (readCookie(req.headers.cookie, this.ssoCookieName()) !== pending.binding) return this.ssoFailed(res, new SsoRefused('binding', 'this sign-in was started in another browser: start again'), clear);
    try {
      const current = new URL(`${this.url}${url.pathname}${url.search}`);
      const identity = await this.sso.finishSignIn(current, pending);
      const existing = this.identity.userBySubject(identity.subject);
      const linked = await this.identity.linkSsoUser(identity.subject, existing?.name ?? identity.name, identity.groups ?? existing?.groups ?? [], identity.email, identity.groups === null ? 0 : identity.issuedAt);
      if (linked.user.disabled) throw new SsoRefused('disabled', 'your stepgate account is disabled');
      const previous = await this.sessions.verify(req.headers.cookie);
      const { token, session } = await this.sessions.issue(linked.user.name, previous ?? undefined, {
        via: 'sso',
        freshAuth: true,
        // When the person signed in at the IdP, on the console's clock (the IdP's auth_time, when it sends one).
        ssoAuthTime: this.now() - Math.max(0, Date.now() - identity.authTime),
        maxMs: this.options.config.sso?.sessionTtlMs,
      });
      res.setHeader('set-cookie', [clear, this.sessions.cookie(token, session)]);
      this.log.info('console.signin', { user: linked.user.name, via: 'sso', created: linked.created, linked: linked.linked, groups: linked.user.groups });
      res.writeHead(302, { location: `${this.url}${pending.returnTo}`, 'cache-control': 'no-store' }).end();
    } catch (err) {
      return this.ssoFailed(res, err, clear);
    }
  }

  private ssoFailed(res: http.ServerResponse, err: unknown, clearCookie?: string): void {
    const message = err instanceof SsoRefused ? err.message : err instanceof Error ? err.message : String(err);
    this.log.info('console.sso_refused', { reason: err instanceof SsoRefused ? err.reason : 'error', message });
    if (clearCookie) res.setHeader('set-cookie', clearCookie);
    res.writeHead(302, { location: `${this.url}/?sso_error=${encodeURIComponent(message.slice(0, 300))}`, 'cache-control': 'no-store' }).end();
  }

  private ssoCookieName(): string {
    return `stepgate_sso_${this.address.port}`;
  }

  private me(session: ConsoleSession | null, userName?: string): MeView {
    const name = session?.user ?? userName!;
    const user = this.identity.getUser(name);
    if (!user || user.disabled) throw new HttpError(401, 'sign in first', 'signin');
    const sso = this.isSsoUser(name);
    return {
      user: user.name,
      groups: user.groups,
      passkeys: this.identity.passkeys(name).map(passkeyView),
      auditor: user.groups.includes(AUDITORS_GROUP),
      recentAuth: session ? this.now() - (sso ? session.ssoAuthTime : session.authTime) < RECENT_AUTH_MS : true,
      expiresAt: session?.expiresAt ?? null,
      consoleUrl: this.url,
      sso,
      email: user.email,
      totp: this.codes.hasTotp(name),
      recoveryCodesLeft: this.identity.recoveryCodesLeft(name),
      // Credentials are for people without a local password (a local password works already).
      credentials: user.verifier === null && this.sso !== null,
    };
  }

  private enrollmentUser(token: unknown): string {
    const user = typeof token === 'string' ? this.identity.enrollmentUser(token) : null;
    if (user && this.sso && this.identity.getUser(user)?.ssoSubject) {
      throw new HttpError(409, 'you sign in with single sign-on: sign in at the console and add your passkey there (enrollment links are for local users)', 'sso_user');
    }
    if (!user) {
      throw new HttpError(
        404,
        'this enrollment link is not valid: it was used already, replaced by a newer one, or it expired (links last 24 hours). Ask your administrator for a new one (stepgate users enroll NAME).',
        'enrollment',
      );
    }
    return user;
  }

  /** Group membership is read now (from the identity store), not when the person signed in. */
  private requireAuditor(session: ConsoleSession): void {
    if (!this.identity.getUser(session.user)?.groups.includes(AUDITORS_GROUP)) {
      throw new HttpError(403, `the audit trail is shown to members of the group "${AUDITORS_GROUP}" only`, 'not_auditor');
    }
  }

  /**
   * Adding or removing a factor needs a recent confirmation: for a user who signs in by SSO a fresh SSO
   * sign-in (so a stolen console cookie cannot enroll an attacker's factor, and the IdP is asked), for a
   * local user a passkey check (signing in counts).
   */
  private requireRecentAuth(session: ConsoleSession): void {
    const now = this.now();
    if (this.isSsoUser(session.user)) {
      if (now - session.ssoAuthTime >= RECENT_AUTH_MS) throw new HttpError(401, 'sign in with single sign-on again first', 'sso_reauth');
      return;
    }
    if (now - session.authTime >= RECENT_AUTH_MS) throw new HttpError(401, 'confirm with your passkey first', 'reauth');
  }

  private isSsoUser(name: string): boolean {
    return this.sso !== null && (this.identity.getUser(name)?.ssoSubject ?? null) !== null;
  }

  /** SSO users sign in at the IdP (so that removing them there takes effect); their passkey is for step-up. */
  private refuseSsoUserPasskeySignIn(user: string): void {
    if (this.isSsoUser(user)) throw new HttpError(403, 'you sign in with single sign-on: use "Sign in with single sign-on"; your passkey approves statements once you are signed in', 'sso_user');
    if (this.identity.getUser(user)?.disabled) throw new HttpError(403, 'your stepgate account is disabled', 'disabled');
  }

  /**
   * A new passkey's public key (COSE, base64url) goes into the audit trail, so that its approvals can be
   * checked from the trail alone (`stepgate audit verify`).
   */
  private async passkeyRecorded(p: Omit<Passkey, 'createdAt' | 'lastUsedAt'>, via: string): Promise<void> {
    const audit = this.options.audit;
    if (!audit?.event) return;
    audit.event('passkey.enrolled', passkeyEnrolledBody(p, via));
    // On disk before the person can approve with it (its approvals are checked against this key).
    await audit.durable().catch((err: unknown) => this.log.error('console.passkey_not_recorded', { user: p.user, credential: p.id, error: (err as Error).message }));
  }

  private async startSession(res: http.ServerResponse, user: string): Promise<void> {
    const { token, session } = await this.sessions.issue(user);
    res.setHeader('set-cookie', this.sessions.cookie(token, session));
  }

  // ───────────────────────────── WebSocket ─────────────────────────────

  private async upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): Promise<void> {
    const refuse = (status: number, text: string): void => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    };
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    if (url.pathname !== '/ws') return refuse(404, 'Not Found');
    if (req.headers.origin !== this.origin) {
      this.log.warn('console.ws_refused', { reason: 'origin', origin: req.headers.origin ?? null });
      return refuse(403, 'Forbidden');
    }
    const session = await this.sessions.verify(req.headers.cookie);
    if (!session) return refuse(401, 'Unauthorized');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.hub.add(ws, session));
  }

  // ───────────────────────────── plumbing ─────────────────────────────

  private loadAssets(): void {
    const require = createRequire(import.meta.url);
    // The package exports only its entry point (script/index.js); the bundle sits beside it.
    const browserPkg = path.dirname(path.dirname(require.resolve('@simplewebauthn/browser')));
    this.assets.set('/static/webauthn.js', {
      type: 'text/javascript; charset=utf-8',
      body: fs.readFileSync(path.join(browserPkg, 'dist', 'bundle', 'index.umd.min.js')),
    });
    // The page's modules (src/console/client, compiled by its own tsconfig), each as /static/NAME.js; page.js
    // and styles.js beside them are this server's (the HTML and the CSS), not the browser's.
    const clientDir = path.join(HERE, 'client');
    if (!fs.existsSync(path.join(clientDir, 'app.js'))) {
      throw new Error(`the console's browser code is not built (${path.join(clientDir, 'app.js')} is missing): run npm run build, or tsc -p src/console/client`);
    }
    for (const file of fs.readdirSync(clientDir)) {
      if (!file.endsWith('.js') || file === 'page.js' || file === 'styles.js') continue;
      const js = fs.readFileSync(path.join(clientDir, file), 'utf8').replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
      this.assets.set(`/static/${file}`, { type: 'text/javascript; charset=utf-8', body: Buffer.from(js) });
    }
    this.assets.set('/static/app.css', { type: 'text/css; charset=utf-8', body: Buffer.from(CONSOLE_CSS) });
  }

  private securityHeaders(res: http.ServerResponse): void {
    if (this.csp) res.setHeader('content-security-policy', this.csp);
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('x-frame-options', 'DENY');
    res.setHeader('referrer-policy', 'no-referrer');
    res.setHeader('cross-origin-opener-policy', 'same-origin');
    res.setHeader('cross-origin-resource-policy', 'same-origin');
    res.setHeader('permissions-policy', 'publickey-credentials-get=(self), publickey-credentials-create=(self), camera=(), microphone=(), geolocation=()');
    if (this.tls) res.setHeader('strict-transport-security', 'max-age=31536000');
  }

  private send(res: http.ServerResponse, status: number, type: string, body: Buffer, cache: string): void {
    res.writeHead(status, { 'content-type': type, 'content-length': body.length, 'cache-control': cache });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  private json(res: http.ServerResponse, status: number, value: unknown): void {
    const body = Buffer.from(JSON.stringify(value));
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
    res.end(body);
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    let status = 500;
    let code = 'internal';
    let message = 'internal error (see the stepgate log)';
    if (err instanceof HttpError) {
      status = err.status;
      code = err.code;
      message = err.message;
    } else if (err instanceof AuditorError) {
      status = err.status;
      code = err.code;
      message = err.message;
    } else if (err instanceof CeremonyError) {
      status = err.status;
      code = 'passkey';
      message = err.message;
    } else {
      this.log.error('console.internal_error', { error: (err as Error)?.stack ?? String(err) });
    }
    if (status === 403 || status === 401) this.log.info('console.refused', { status, code, message });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.json(res, status, { error: message, code });
  }
}

function credentialView(c: Credential): CredentialView {
  return { id: c.id, label: c.label, createdAt: c.createdAt.getTime(), expiresAt: c.expiresAt.getTime(), lastUsedAt: c.lastUsedAt?.getTime() ?? null };
}

/** A path of this console to go back to after signing in (never another site). */
function safeReturn(value: string | null): string {
  if (!value || !/^\/[A-Za-z0-9_\-/]*$/.test(value) || value.startsWith('//') || value.startsWith('/sso/')) return '/';
  return value;
}

function passkeyView(p: Passkey): PasskeyView {
  return {
    id: p.id,
    name: p.name,
    createdAt: p.createdAt.getTime(),
    lastUsedAt: p.lastUsedAt?.getTime() ?? null,
    backedUp: p.backedUp,
    deviceType: p.deviceType,
  };
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, 'request too large');
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch {
    throw new HttpError(400, 'the body must be a JSON object', 'json');
  }
}
