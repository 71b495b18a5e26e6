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
import { cleanPasskeyName, type IdentityStore, type Passkey } from '../identity/store.js';
import type { Logger } from '../log.js';
import type { ConsoleBroker } from '../stepup/broker.js';
import { AUDITORS_GROUP, AuditorError, AuditorService } from './auditor.js';
import { pageHtml } from './client/page.js';
import { CONSOLE_CSS } from './client/styles.js';
import { Hub } from './hub.js';
import { RECENT_AUTH_MS, SessionManager, type ConsoleSession } from './sessions.js';
import { consoleIdentity, deriveConsoleUrl, webauthnProblem } from './url.js';
import { Ceremonies, CeremonyError } from './webauthn.js';

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
  config: Pick<Config, 'console' | 'consoleUrl' | 'tls' | 'dataDir'>;
  identity: IdentityStore;
  broker: ConsoleBroker;
  log: Logger;
}

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
    this.auditor = new AuditorService(options.config.dataDir, options.log);
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
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as net.AddressInfo;
    this.url = deriveConsoleUrl({ host, port: address.port, tls: this.tls, consoleUrl: this.options.config.consoleUrl });
    const { origin, rpId, secure } = consoleIdentity(this.url);
    this.origin = origin;
    this.canonicalHost = new URL(this.url).host;
    this.sessions = new SessionManager(this.identity, origin, secure, address.port);
    this.ceremonies = new Ceremonies(this.identity, origin, rpId);
    this.hub = new Hub(this.broker, this.log, (sid, user) => !this.sessions.isRevoked(sid) && this.identity.getUser(user) !== null);
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
    if (p === '/' || p === '/enroll' || p === '/audit' || /^\/(c|audit)\/[A-Za-z0-9_-]{1,64}$/.test(p)) {
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
    if (route.auth && !session) throw new HttpError(401, 'sign in with your passkey', 'signin');
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
      if (Date.now() - s.signedInAt >= 12 * 60 * 60_000) throw new HttpError(401, 'your sign-in is too old: sign in again', 'signin');
      const { token, session: next } = await this.sessions.issue(s.user, s, false);
      res.setHeader('set-cookie', this.sessions.cookie(token, next));
      this.hub.extend(next.sid, next.expiresAt);
      return { expiresAt: next.expiresAt };
    });

    route('POST', '/api/signout', false, async ({ res, session }) => {
      if (session) {
        this.sessions.revoke(session);
        this.hub.endSession(session.sid);
      }
      res.setHeader('set-cookie', this.sessions.clearCookie());
      return {};
    });

    // Sign-in with a discoverable passkey.
    route('POST', '/api/signin/options', false, async () => this.ceremonies.assertionOptions({ purpose: 'signin', user: null, sid: null }));
    route('POST', '/api/signin/verify', false, async ({ res, body }) => {
      const ceremony = this.ceremonies.take(body.response, 'signin');
      const passkey = await this.ceremonies.verifyAssertion(ceremony, body.response);
      await this.startSession(res, passkey.user);
      this.log.info('console.signin', { user: passkey.user, credential: passkey.id });
      return this.me(null, passkey.user);
    });

    // Re-check with a passkey (before adding or removing passkeys).
    route('POST', '/api/reauth/options', true, async ({ session }) =>
      this.ceremonies.assertionOptions({ purpose: 'reauth', user: session!.user, sid: session!.sid }),
    );
    route('POST', '/api/reauth/verify', true, async ({ res, body, session }) => {
      const ceremony = this.ceremonies.take(body.response, 'reauth');
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
      return { user, passkeys: this.identity.passkeyCount(user) };
    });
    route('POST', '/api/enroll/options', false, async ({ body }) => {
      const user = this.enrollmentUser(body.token);
      return this.ceremonies.registrationOptions(user, { purpose: 'enroll', token: String(body.token), sid: null });
    });
    route('POST', '/api/enroll/verify', false, async ({ res, body }) => {
      const ceremony = this.ceremonies.take(body.response, 'enroll');
      if (ceremony.token !== body.token) throw new HttpError(400, 'this passkey response was made for another enrollment link');
      const name = cleanPasskeyName(body.name ?? 'Passkey');
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      const passkey = await this.ceremonies.verifyRegistration(ceremony, body.response, name);
      try {
        this.identity.enrollPasskey(String(body.token), passkey);
      } catch (err) {
        throw new HttpError(409, (err as Error).message, 'enrollment');
      }
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
      const ceremony = this.ceremonies.take(body.response, 'add-passkey');
      if (ceremony.sid !== session!.sid || ceremony.user !== session!.user) throw new HttpError(403, 'this passkey response belongs to another session');
      const name = cleanPasskeyName(body.name ?? 'Passkey');
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      const passkey = await this.ceremonies.verifyRegistration(ceremony, body.response, name);
      try {
        this.identity.addPasskey(passkey);
      } catch (err) {
        throw new HttpError(409, (err as Error).message);
      }
      this.log.info('console.passkey_added', { user: passkey.user, credential: passkey.id });
      return this.me(session!);
    });
    route('POST', `/api/passkeys/${ID}/rename`, true, async ({ params, body, session }) => {
      const name = cleanPasskeyName(body.name);
      if (!name) throw new HttpError(400, 'give the passkey a name of 1 to 64 characters');
      if (!this.identity.renamePasskey(session!.user, params[0]!, name)) throw new HttpError(404, 'no such passkey');
      return this.me(session!);
    });
    route('DELETE', `/api/passkeys/${ID}`, true, async ({ params, session }) => {
      this.requireRecentAuth(session!);
      const user = session!.user;
      if (!this.identity.passkeys(user).some((p) => p.id === params[0])) throw new HttpError(404, 'no such passkey');
      if (this.identity.passkeyCount(user) <= 1) {
        throw new HttpError(409, 'this is your only passkey: add another one before removing it (without one you could not sign in or approve anything)', 'last_passkey');
      }
      this.identity.removePasskey(user, params[0]!);
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
      };
    });
    route('POST', `/api/challenges/${ID}/options`, true, async ({ params, session }) => {
      const check = this.broker.mayApprove(params[0]!, session!.user);
      if (!check.ok) throw new HttpError(check.status, check.error, 'refused');
      const ttl = Math.min(3 * 60_000, Math.max(5_000, check.challenge.expiresAt - Date.now() + 5_000));
      return this.ceremonies.assertionOptions({ purpose: 'approve', user: session!.user, challengeId: params[0]!, sid: session!.sid }, ttl);
    });
    route('POST', `/api/challenges/${ID}/approve`, true, async ({ params, body, session }) => {
      const user = session!.user;
      const ceremony = this.ceremonies.take(body.response, 'approve');
      if (ceremony.challengeId !== params[0]) throw new HttpError(403, 'this passkey response was made for another statement', 'wrong_challenge');
      if (ceremony.user !== user || ceremony.sid !== session!.sid) throw new HttpError(403, 'this passkey response belongs to another session', 'wrong_session');
      const passkey = await this.ceremonies.verifyAssertion(ceremony, body.response);
      const result = this.broker.approve(params[0]!, user, passkey.id);
      if (!result.ok) throw new HttpError(result.status, result.error, 'refused');
      return { status: result.status, remaining: result.remaining };
    });
    route('POST', `/api/challenges/${ID}/reject`, true, async ({ params, body, session }) => {
      const result = this.broker.reject(params[0]!, session!.user, typeof body.reason === 'string' ? body.reason : '');
      if (!result.ok) throw new HttpError(result.status, result.error, 'refused');
      return { status: 'rejected' };
    });

    // Grants.
    route('GET', '/api/grants', true, async ({ session }) => ({ now: Date.now(), grants: this.broker.grantsFor(session!.user) }));
    route('DELETE', `/api/grants/${ID}`, true, async ({ params, session }) => {
      if (!this.broker.revokeGrant(params[0]!, session!.user)) throw new HttpError(404, 'no such grant');
      return { grants: this.broker.grantsFor(session!.user) };
    });

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

  private me(session: ConsoleSession | null, userName?: string): Record<string, unknown> {
    const name = session?.user ?? userName!;
    const user = this.identity.getUser(name);
    if (!user) throw new HttpError(401, 'sign in with your passkey', 'signin');
    return {
      user: user.name,
      groups: user.groups,
      passkeys: this.identity.passkeys(name).map(passkeyView),
      auditor: user.groups.includes(AUDITORS_GROUP),
      recentAuth: session ? Date.now() - session.authTime < RECENT_AUTH_MS : true,
      expiresAt: session?.expiresAt ?? null,
      consoleUrl: this.url,
    };
  }

  private enrollmentUser(token: unknown): string {
    const user = typeof token === 'string' ? this.identity.enrollmentUser(token) : null;
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

  private requireRecentAuth(session: ConsoleSession): void {
    if (Date.now() - session.authTime >= RECENT_AUTH_MS) throw new HttpError(401, 'confirm with your passkey first', 'reauth');
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
    const app = fs.readFileSync(path.join(HERE, 'client', 'app.js'), 'utf8').replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
    this.assets.set('/static/app.js', { type: 'text/javascript; charset=utf-8', body: Buffer.from(app) });
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

function passkeyView(p: Passkey): Record<string, unknown> {
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
