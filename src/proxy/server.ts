/**
 * The listener: accepts client connections, negotiates TLS, reads the startup packet, authenticates the
 * client against stepgate's users, opens the server connection, and hands both to a Session.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config.js';
import { routeDatabase } from '../config.js';
import type { SignalRecords } from '../identity/signals.js';
import type { SsoProvider } from '../identity/sso.js';
import type { IdentityStore } from '../identity/store.js';
import type { ProxyMetrics, RefusalReason } from '../metrics/registry.js';
import * as backend from '../protocol/backend-messages.js';
import { ProtocolViolation } from '../protocol/payload-reader.js';
import { PROTOCOL_3_0, type StartupPacket } from '../protocol/startup-messages.js';
import { normalizeClientAddress } from '../rules/client.js';
import type { RuleSet, Subject } from '../rules/types.js';
import { GRAMMAR_VERSIONS, loadGrammar, serverGrammar, type Grammar } from '../sql/grammar.js';
import { CancelKeys } from './cancel-keys.js';
import { ServerSchemaCatalog, type FunctionCatalog } from './catalog/index.js';
import { AuthFailed, authenticateClient } from './client-auth.js';
import { gateLogin, LoginRefused } from './connect-gate.js';
import { HandshakeClosed, HandshakeReader } from './handshake-reader.js';
import { endAndLinger } from './linger.js';
import { Session, type SessionServices } from './session.js';
import { finalSetting, parseBool, readStartup, settingAsSql, StartupSettingsError, upstreamParameters, type StartupRequest } from './startup-settings.js';
import { connectUpstream, sendUpstreamCancel, UpstreamError, type UpstreamConnection, type UpstreamTarget } from './upstream.js';

/**
 * What the listener needs: the sessions' services (session.ts, the one definition) with defaults for the
 * optional settings, and what login needs besides.
 */
export interface ProxyServices
  extends Omit<SessionServices, 'limits' | 'recordParams' | 'auditOnFailure' | 'enforceReads'>,
    Partial<Pick<SessionServices, 'recordParams' | 'auditOnFailure' | 'enforceReads'>> {
  identity: IdentityStore;
  /** Single sign-on: tokens as passwords, issued credentials (see client-auth.ts). */
  sso?: SsoProvider | null;
  /** Where people connect from, their failed logins and the tables they touched: risk signals. */
  signals?: SignalRecords | null;
  /** Counters for operators (metrics/registry.ts); absent: nothing counted. */
  metrics?: ProxyMetrics;
}

/** A failure during startup that the client hears about as a FATAL ErrorResponse. */
class StartupRefused extends Error {
  constructor(
    message: string,
    readonly sqlstate: string,
    readonly extra: { detail?: string; hint?: string } = {},
  ) {
    super(message);
  }
}

class TlsHandshakeFailed extends HandshakeClosed {}

/** The metrics label of a refusal (a fixed set; the message itself goes to the log only). */
function refusalReason(err: StartupRefused | AuthFailed | UpstreamError | LoginRefused): RefusalReason {
  if (err instanceof AuthFailed) return 'auth';
  if (err instanceof UpstreamError) return 'upstream';
  if (err instanceof LoginRefused) return 'policy';
  switch (err.sqlstate) {
    case '53300':
      return 'too_many_clients';
    case '57P03':
      return 'shutting_down';
    case '42501':
      return 'policy';
    case '3D000':
      return 'unknown_database';
    case '28000':
      // Refused for want of TLS, or a startup packet without a user name.
      return err.extra.hint?.includes('sslmode') ? 'tls_required' : 'protocol';
    default:
      return 'protocol';
  }
}

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);
const GRAMMAR_RANGE = `${GRAMMAR_VERSIONS[0]} to ${GRAMMAR_VERSIONS[GRAMMAR_VERSIONS.length - 1]}`;

export class ProxyServer {
  private readonly server: net.Server;
  /** Each session with how to cancel what its server backend runs (shutdown cancels what still runs at the deadline). */
  private readonly sessions = new Map<Session, { cancelServer: () => Promise<void> }>();
  private readonly sockets = new Set<net.Socket>();
  private readonly cancelKeys = new CancelKeys();
  private readonly catalogs = new Map<string, FunctionCatalog>();
  private readonly secureContext: tls.SecureContext | null;
  private closing = false;

  constructor(
    private readonly config: Config,
    private readonly services: ProxyServices,
  ) {
    this.secureContext = config.tls
      ? tls.createSecureContext({ cert: fs.readFileSync(config.tls.cert), key: fs.readFileSync(config.tls.key) })
      : null;
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.maxConnections = config.limits.maxConnections * 2; // hard stop; a polite FATAL below that
  }

  async listen(): Promise<net.AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.listen.port, this.config.listen.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as net.AddressInfo;
  }

  get address(): net.AddressInfo {
    return this.server.address() as net.AddressInfo;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /** Shuts down without waiting for running statements: every client gets FATAL 57P01 now. */
  async close(): Promise<void> {
    await this.shutdown({ timeoutMs: 0 });
  }

  /**
   * Shuts down as PostgreSQL does (fast mode with a grace period). From now on new connections get
   * FATAL 57P03 (the database system is shutting down). A session with nothing in flight is ended at
   * once; one with a running statement (or a held one) gets until the deadline to finish it and is ended
   * as soon as its last reply has been relayed. Ending a session sends its client FATAL 57P01
   * (terminating connection due to administrator command), ends a hold with the outcome `shutdown` and
   * closes both connections; a statement still running at the deadline is also cancelled on the server
   * (its transaction rolls back, as in PostgreSQL's fast shutdown). Resolves when every connection is closed.
   *
   * `deadline`: resolves when the grace period is over (tests pass their own); default `timeoutMs`
   * (limits.shutdown_timeout) from now.
   */
  async shutdown(options: { timeoutMs?: number; deadline?: Promise<unknown> } = {}): Promise<{ finished: number; terminated: number }> {
    this.shuttingDown ??= this.doShutdown(options);
    return this.shuttingDown;
  }

  private shuttingDown: Promise<{ finished: number; terminated: number }> | null = null;

  private async doShutdown(options: { timeoutMs?: number; deadline?: Promise<unknown> }): Promise<{ finished: number; terminated: number }> {
    this.closing = true;
    const log = this.services.log;
    const timeoutMs = options.timeoutMs ?? this.config.limits.shutdownTimeoutMs;
    let finished = 0;
    let terminated = 0;
    const busy = new Set<Session>();
    const cancels: Promise<void>[] = [];
    const end = (session: Session, inTime: boolean): void => {
      busy.delete(session);
      if (inTime) finished++;
      else terminated++;
      session.shutdown();
      if (!inTime) {
        // The client has its FATAL; the statement still running on the server is cancelled, so that its
        // transaction rolls back instead of committing after the client was told the connection ended
        // (a backend busy in a statement does not notice that its connection closed).
        const cancel = this.sessions.get(session)?.cancelServer;
        if (cancel) cancels.push(cancel().catch((err: Error) => log.warn('shutdown.cancel_failed', { connection: session.connectionId, error: err.message })));
      }
    };
    for (const session of this.sessions.keys()) {
      if (session.idle) {
        session.shutdown();
        continue;
      }
      busy.add(session);
      void session.whenIdle().then(() => {
        if (busy.has(session)) end(session, true);
      });
    }
    if (busy.size > 0) {
      log.info('stepgate.draining', { sessions: busy.size, timeout_ms: timeoutMs });
      let timer: NodeJS.Timeout | null = null;
      const deadline = options.deadline ?? (timeoutMs > 0 ? new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))) : Promise.resolve());
      const allDone = Promise.all([...busy.keys()].map((s) => s.finished));
      await Promise.race([deadline, allDone]);
      if (timer) clearTimeout(timer);
      for (const session of [...busy.keys()]) end(session, false);
    }
    await Promise.all(cancels);
    await Promise.all([...this.sessions.keys()].map((s) => s.finished));
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    for (const catalog of this.catalogs.values()) catalog.close();
    await closed;
    return { finished, terminated };
  }

  private accept(socket: net.Socket): void {
    const keepAliveMs = this.config.limits.tcpKeepaliveMs;
    if (keepAliveMs > 0) socket.setKeepAlive(true, keepAliveMs);
    this.sockets.add(socket);
    const metrics = this.services.metrics;
    metrics?.connectionOpened();
    socket.on('close', () => {
      this.sockets.delete(socket);
      metrics?.connectionClosed();
    });
    socket.on('error', () => {});
    this.handshake(socket).catch((err: unknown) => {
      this.services.log.error('connection.internal_error', { error: (err as Error)?.stack ?? String(err) });
      socket.destroy();
    });
  }

  private async handshake(rawSocket: net.Socket): Promise<void> {
    const connectionId = randomUUID();
    // "::ffff:127.0.0.1" → "127.0.0.1": rules, logs and the audit trail see one form of an IPv4 address.
    const remote = rawSocket.remoteAddress ?? '';
    const clientAddress = normalizeClientAddress(remote)?.address ?? remote;
    let socket: net.Socket = rawSocket;
    let secure = false;
    const reader = new HandshakeReader(socket);
    const limits = this.config.limits;
    const timer = setTimeout(() => {
      this.services.log.info('connection.refused', { connection: connectionId, client: clientAddress, reason: 'startup timeout' });
      this.services.metrics?.connectionRefused('startup_timeout');
      socket.destroy();
    }, limits.startupTimeoutMs);
    const refuse = (err: StartupRefused | AuthFailed | UpstreamError | LoginRefused): void => {
      const fields: backend.ErrorFields =
        err instanceof UpstreamError && err.fields
          ? { severity: 'FATAL', code: err.fields.code ?? err.sqlstate, message: err.fields.message, detail: err.fields.detail, hint: err.fields.hint }
          : { severity: 'FATAL', code: err.sqlstate, message: err.message, ...(err instanceof UpstreamError ? {} : err.extra) };
      endAndLinger(socket, backend.errorResponse(fields));
    };

    try {
      // PostgreSQL answers "too many clients" only after reading the startup packet; so do we.
      const tooMany = this.sockets.size > limits.maxConnections;

      const packet = await this.negotiate(socket, reader, (tlsSocket) => {
        // From here on every answer, errors included, goes through TLS.
        socket = tlsSocket;
        secure = true;
      });
      if (packet.kind === 'cancel') {
        // Close the cancel connection only once the cancel has reached the server (see Session.cancel);
        // the startup timer still bounds the wait.
        await this.cancelKeys.find(packet.processId, packet.secretKey)?.cancel();
        clearTimeout(timer);
        endAndLinger(socket);
        return;
      }
      if (packet.major !== 3) {
        throw new StartupRefused(`unsupported frontend protocol ${packet.major}.${packet.minor}: server supports 3.0 to 3.0`, '0A000');
      }
      if (packet.minor > 0 || packet.protocolOptions.length > 0) {
        // Protocol 3.2 (PostgreSQL 18) and _pq_ extensions: we speak 3.0, as a server of version 17 would.
        socket.write(backend.negotiateProtocolVersion(PROTOCOL_3_0, packet.protocolOptions));
      }
      // Like the postmaster during shutdown: after the startup packet (and TLS), so clients read it as an error.
      if (this.closing) throw new StartupRefused('the database system is shutting down', '57P03');
      if (tooMany) throw new StartupRefused('sorry, too many clients already', '53300');
      if (this.config.requireTls && !secure) {
        throw new StartupRefused('stepgate requires an encrypted connection', '28000', {
          hint: 'Connect with sslmode=require (or verify-full).',
        });
      }
      // As the server reads the packet (startup-settings.ts); what it refuses is reported after authentication,
      // as the server reports errors in `options`.
      let startup: StartupRequest | StartupSettingsError;
      try {
        startup = readStartup(packet.parameters);
      } catch (err) {
        if (!(err instanceof StartupSettingsError)) throw err;
        startup = err;
      }
      const userName = packet.params.get('user');
      if (!userName) throw new StartupRefused('no PostgreSQL user name specified in startup packet', '28000');
      const replication = packet.params.get('replication');
      if (replication !== undefined) {
        // As ProcessStartupPacket: "database" or a true boolean asks for a walsender; anything else is invalid.
        const walsender = replication === 'database' ? true : parseBool(replication);
        if (walsender === null) {
          throw new StartupRefused(`invalid value for parameter "replication": "${replication}"`, '22023', {
            hint: 'Valid values are: "false", 0, "true", 1, "database".',
          });
        }
        if (walsender) {
          throw new StartupRefused('stepgate does not relay replication connections', '0A000', {
            hint: 'Connect replication clients to the server directly.',
          });
        }
      }
      const database = packet.params.get('database') || userName;
      const application = startup instanceof StartupSettingsError ? '' : (finalSetting(startup.settings, 'application_name') ?? '');

      let login;
      try {
        login = await authenticateClient(socket, reader, userName, {
          method: this.config.auth,
          store: this.services.identity,
          secure,
          sso: this.services.sso ?? null,
        });
      } catch (err) {
        if (err instanceof AuthFailed) {
          // The reason is for the log only (never the password or token); the client sees the generic message.
          this.services.log.info('connection.auth_failed', { connection: connectionId, user: userName, client: clientAddress, reason: err.reason });
          if (err.knownUser) this.services.signals?.recordFailure(err.knownUser);
          // Slow down guessing; the answer looks the same for every failure.
          await new Promise((r) => setTimeout(r, limits.authFailureDelayMs));
        }
        throw err;
      }
      const user = login.user;
      if (login.via !== 'password' && login.via !== 'trust') {
        this.services.log.info('connection.auth', { connection: connectionId, user: user.name, via: login.via, ...(login.credentialId ? { credential: login.credentialId } : {}) });
      }

      // Risk signals, computed once for this connection: where this person connected from before, their
      // recent failed logins, and (lazily, per table) what they have touched.
      const signals = this.services.signals?.atLogin(user.name, clientAddress, application);
      const subject: Omit<Subject, 'now'> = { user: user.name, groups: user.groups, database, application, clientAddress, tls: secure, ...(signals ? { signals } : {}) };
      if (startup instanceof StartupSettingsError) {
        throw new StartupRefused(startup.message, startup.sqlstate, startup.hint ? { hint: startup.hint } : {});
      }
      const settings = this.judgeStartupSettings(startup.settings, { ...subject, now: new Date() });

      const route = routeDatabase(this.config, database);
      if (!route) throw new StartupRefused(`database "${database}" is not configured in stepgate`, '3D000');
      if (this.closing) throw new StartupRefused('the database system is shutting down', '57P03');
      socket.write(backend.authenticationOk());
      // Rules with `on: connect` may hold the login until the person approves it (its own timeout, not the startup timer's).
      clearTimeout(timer);
      await gateLogin(connectionId, socket, { ...subject, now: new Date() }, this.services);
      if (this.closing) throw new StartupRefused('the database system is shutting down', '57P03');
      this.services.signals?.recordLogin(user.name, clientAddress, application);
      // Only what was judged goes upstream, rebuilt: the database, then each setting as a parameter of its own.
      const upstream = await connectUpstream(route.target, upstreamParameters(route.database, settings), limits.upstreamConnectTimeoutMs, limits.tcpKeepaliveMs);
      const grammar = await this.grammarFor(upstream);

      await this.relay({ connectionId, socket, reader, subject, route, upstream, grammar });
    } catch (err) {
      clearTimeout(timer);
      const metrics = this.services.metrics;
      if (err instanceof LoginRefused && err.gone) {
        this.services.log.info('connection.refused', { connection: connectionId, client: clientAddress, reason: 'the client went away while its login was held' });
        metrics?.connectionRefused('client_gone');
        socket.destroy();
      } else if (err instanceof StartupRefused || err instanceof AuthFailed || err instanceof UpstreamError || err instanceof LoginRefused) {
        if (!(err instanceof AuthFailed)) {
          this.services.log.info('connection.refused', { connection: connectionId, client: clientAddress, reason: err.message });
        }
        if (metrics) {
          if (err instanceof UpstreamError) metrics.upstreamConnectFailed();
          metrics.connectionRefused(refusalReason(err));
        }
        refuse(err);
      } else if (err instanceof ProtocolViolation) {
        this.services.log.info('connection.refused', { connection: connectionId, client: clientAddress, reason: `protocol violation: ${err.message}` });
        metrics?.connectionRefused('protocol');
        endAndLinger(socket, backend.errorResponse({ severity: 'FATAL', code: '08P01', message: err.message }));
      } else if (err instanceof HandshakeClosed || (err as NodeJS.ErrnoException)?.code === 'ECONNRESET') {
        if (err instanceof TlsHandshakeFailed) {
          this.services.log.info('connection.refused', { connection: connectionId, client: clientAddress, reason: err.message });
          metrics?.connectionRefused('tls_handshake');
        }
        socket.destroy();
      } else {
        throw err;
      }
    }
  }

  /** Logged in on both sides: greets the client with the server's settings and relays until either side ends. */
  private async relay(c: {
    connectionId: string;
    socket: net.Socket;
    reader: HandshakeReader;
    subject: Omit<Subject, 'now'>;
    route: { target: UpstreamTarget; database: string };
    upstream: UpstreamConnection;
    grammar: Grammar;
  }): Promise<void> {
    const { connectionId, socket, subject, route, upstream, grammar } = c;
    const limits = this.config.limits;
    const { processId, secretKey } = this.cancelKeys.issue({ cancel: () => session.cancel() });
    const cancelServer = (): Promise<void> => sendUpstreamCancel(route.target, upstream.processId, upstream.secretKey, limits.upstreamConnectTimeoutMs);
    const leftover = c.reader.detach();
    socket.pause();
    const hello: Buffer[] = [];
    for (const [name, value] of upstream.parameters) hello.push(backend.parameterStatus(name, value));
    hello.push(backend.backendKeyData(processId, secretKey), backend.readyForQuery(0x49));
    socket.write(Buffer.concat(hello));

    // Recorded before the session exists: pipelined bytes that came with the login are classified (and
    // audited) as soon as it does.
    const facts = {
      connection: connectionId,
      user: subject.user,
      database: subject.database,
      // The server's database (another name when the configuration routes it).
      server_database: route.database,
      client: subject.clientAddress,
      application: subject.application,
      tls: subject.tls,
      server_pid: upstream.processId,
      // The PostgreSQL grammar stepgate reads this session's SQL with (the server's major).
      grammar: grammar.version,
    };
    this.services.log.info('connection.start', facts);
    this.services.audit.connectionStart({
      connectionId,
      user: subject.user,
      database: subject.database,
      serverDatabase: route.database,
      application: subject.application,
      clientAddress: subject.clientAddress,
      tls: subject.tls,
      serverPid: upstream.processId,
    });
    const session: Session = new Session({
      connectionId,
      client: socket,
      server: upstream.socket,
      clientLeftover: leftover,
      subject,
      clientPort: socket.remotePort ?? null,
      serverPid: upstream.processId,
      serverParameters: upstream.parameters,
      grammar,
      catalog: this.catalogFor(route.target, route.database),
      cancelUpstream: cancelServer,
      services: {
        classify: this.services.classify,
        classifyText: this.services.classifyText ?? this.services.classify,
        rules: this.services.rules,
        stepUp: this.services.stepUp,
        audit: this.services.audit,
        log: this.services.log,
        limits,
        recordParams: this.services.recordParams ?? false,
        auditOnFailure: this.services.auditOnFailure ?? 'close',
        enforceReads: this.services.enforceReads ?? true,
        metrics: this.services.metrics,
      },
    });
    this.sessions.set(session, { cancelServer });
    if (this.closing) session.shutdown(); // shutdown began while this connection logged in
    await session.finished;
    this.sessions.delete(session);
    this.cancelKeys.release(processId);
    const end = { duration_ms: session.durationMs, bytes_in: session.bytesIn, bytes_out: session.bytesOut, reason: session.reason };
    this.services.log.info('connection.end', { ...facts, ...end });
    this.services.audit.connectionEnd(connectionId, { durationMs: end.duration_ms, bytesIn: end.bytes_in, bytesOut: end.bytes_out, reason: end.reason });
  }

  /**
   * The untyped start of a connection: SSLRequest (TLS with our certificate, or N), GSSENCRequest (N),
   * then a CancelRequest or a StartupMessage.
   */
  private async negotiate(
    socket: net.Socket,
    reader: HandshakeReader,
    onSecure: (tlsSocket: tls.TLSSocket) => void,
  ): Promise<Exclude<StartupPacket, { kind: 'ssl' | 'gssenc' }>> {
    let secure = false;
    for (;;) {
      const packet = await reader.startupPacket();
      if (packet.kind === 'ssl') {
        if (reader.pending > 0) {
          // Bytes sent before the TLS handshake could be injected by a machine in the middle (CVE-2021-23222).
          throw new ProtocolViolation('received unencrypted data after SSL request');
        }
        if (!this.secureContext || secure) {
          socket.write('N');
          continue;
        }
        socket.write('S');
        const tlsSocket = new tls.TLSSocket(socket, { isServer: true, secureContext: this.secureContext });
        // Always listening: a failed handshake can emit more than one error (an alert, then a reset),
        // and an 'error' without a listener would bring the whole process down.
        tlsSocket.on('error', () => {});
        await new Promise<void>((resolve, reject) => {
          tlsSocket.once('secure', resolve);
          // A client that cannot or will not complete the handshake (plain text after SSLRequest, an
          // unknown CA, a scanner) is the client's failure, not an internal error.
          tlsSocket.once('error', (err) => reject(new TlsHandshakeFailed(`TLS handshake failed: ${err.message}`)));
          tlsSocket.once('close', () => reject(new HandshakeClosed('client closed the connection during the TLS handshake')));
        });
        reader.replaceSocket(tlsSocket);
        socket = tlsSocket;
        secure = true;
        onSecure(tlsSocket);
      } else if (packet.kind === 'gssenc') {
        if (reader.pending > 0) throw new ProtocolViolation('received unencrypted data after GSSAPI encryption request');
        socket.write('N');
      } else {
        return packet;
      }
    }
  }

  /**
   * The grammar of the server's PostgreSQL major (from server_version_num or server_version, as it reported
   * them at login). A server stepgate has no grammar for is refused: its SQL could read differently.
   */
  private async grammarFor(upstream: UpstreamConnection): Promise<Grammar> {
    const chosen = serverGrammar(upstream.parameters.get('server_version'), upstream.parameters.get('server_version_num'));
    try {
      if (!chosen.ok) {
        throw new StartupRefused(`stepgate: ${chosen.message}`, '0A000', {
          hint: `Connect through stepgate to a server of PostgreSQL ${GRAMMAR_RANGE}, or to this one directly.`,
        });
      }
      return await loadGrammar(chosen.version).catch((err: Error) => {
        throw new StartupRefused(`stepgate: cannot load the PostgreSQL ${chosen.version} grammar: ${err.message}`, 'XX000');
      });
    } catch (err) {
      if (!upstream.socket.destroyed) upstream.socket.end(TERMINATE);
      throw err;
    }
  }

  /**
   * Startup settings become the SET statements they amount to and go through the rules: only what the
   * rules allow outright is relayed (there is nobody to ask for step-up before the session exists).
   */
  private judgeStartupSettings(settings: [string, string][], subject: Parameters<RuleSet['decide']>[1]): [string, string][] {
    const rules = this.services.rules();
    for (const [name, value] of settings) {
      const sql = settingAsSql(name, value);
      const { statements } = this.services.classify(sql, { standardConformingStrings: true });
      const decision = rules.decide(statements, subject);
      if (decision.action !== 'allow') {
        throw new StartupRefused(`startup parameter "${name}" is not allowed through stepgate (rule "${decision.rule ?? 'default'}": ${decision.action})`, '42501', {
          hint: `Run ${sql} after connecting, where the rules can ask for approval.`,
        });
      }
    }
    return settings;
  }

  private catalogFor(target: UpstreamTarget, database: string): FunctionCatalog {
    const key = `${target.display}\0${database}`;
    let catalog = this.catalogs.get(key);
    if (!catalog) {
      catalog = new ServerSchemaCatalog(target, database, this.config.limits.upstreamConnectTimeoutMs);
      this.catalogs.set(key, catalog);
    }
    return catalog;
  }
}
