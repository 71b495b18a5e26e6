/**
 * One client connection after login: relays messages between the client and its server connection,
 * classifies and decides every statement on the way, and holds, rejects or releases it.
 *
 * Client → server: messages are framed, judged and forwarded in order. Consecutive forwarded messages are
 * written as one slice of the bytes they arrived in (no re-encoding). A message whose decision is not known
 * at once (a catalog lookup, a step-up) blocks the ones behind it, which wait in the inbox; reading from the
 * client pauses when the inbox grows.
 *
 * Server → client: bytes are relayed as they arrive. Only what the proxy must know is read: which reply
 * completes which forwarded message (pending-replies), ReadyForQuery status, ParameterStatus, command
 * tags and errors for the audit trail.
 *
 * Rejection (deny, step-up refused, timed out or cancelled) must mean exactly what a server error means,
 * and the server must end in the state the client believes. So stepgate never answers in the server's
 * place: it sends the server a message that fails (Execute of a portal that does not exist), swallows
 * the server's error for it and sends its own instead, at exactly that position of the reply stream.
 * Inside BEGIN the transaction is then aborted; in a pipeline nothing of the implicit transaction is
 * committed; the server skips the rest of the batch up to Sync, and so does stepgate.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { AuditSink } from '../audit/types.js';
import type { Limits } from '../config.js';
import type { Logger } from '../log.js';
import * as backend from '../protocol/backend-messages.js';
import { FrameError, FrameReader, HEAD, PART, TAIL, typeSet, WHOLE, type FrameKind } from '../protocol/frame-reader.js';
import * as frontend from '../protocol/frontend-messages.js';
import { ClientType } from '../protocol/frontend-messages.js';
import { ProtocolViolation } from '../protocol/payload-reader.js';
import type { Decision, RuleSet, Subject } from '../rules/types.js';
import type { Grammar } from '../sql/grammar.js';
import type { ClassifyContext, ClassifyResult, StatementInfo } from '../sql/types.js';
import type { Hold, HoldOutcome, StepUpBroker } from '../stepup/types.js';
import type { FunctionCatalog } from './catalog.js';
import { unknownStatement } from '../sql/analysis.js';
import { quoteIdent } from '../sql/quote.js';
import { endAndLinger } from './linger.js';
import { Outbound } from './outbound.js';
import { ReplyKind, ReplyQueue, reply, type PendingReply, type ReplyTracker } from './pending-replies.js';
import { auditUnavailableError, denyError, heldNotice, holdError } from './refusals.js';
import { decodeSql } from './sql-text.js';
import { StatementRegistry, type PreparedStatement } from './statement-registry.js';

export interface SessionServices {
  classify(sql: string, ctx: ClassifyContext): ClassifyResult;
  /** [parser] Classifies client SQL: at once for small texts, a promise for large ones (worker). Default: classify. */
  classifyText?(sql: string, ctx: ClassifyContext): ClassifyResult | Promise<ClassifyResult>;
  rules(): RuleSet;
  stepUp: StepUpBroker;
  audit: AuditSink;
  log: Logger;
  limits: Limits;
  /** Record Bind parameters in the audit trail (off by default: they may hold personal data). */
  recordParams: boolean;
  /** What to do with allowed statements while the audit store is failing (step-up and deny always fail closed). */
  auditOnFailure: 'close' | 'allow_reads';
}

export interface SessionOptions {
  connectionId: string;
  client: Socket;
  server: Socket;
  /** Client bytes that arrived with or after the startup exchange. */
  clientLeftover: Buffer;
  subject: Omit<Subject, 'now'>;
  serverParameters: Map<string, string>;
  /** [parser] The grammar of the server's PostgreSQL major (default: PostgreSQL 18's). */
  grammar?: Grammar;
  catalog: FunctionCatalog | null;
  /** Asks the server to cancel what this connection runs (CancelRequest on a fresh connection). */
  cancelUpstream: () => Promise<void>;
  services: SessionServices;
}

/** Server message types whose content the session reads; all others are relayed in parts as they arrive. */
const SERVER_BUFFERED = typeSet('ZESCIs123tnVGHWcKv');
/** Rows and COPY data are only relayed: a run of them that arrived together is one frame. */
const SERVER_RUNS = typeSet('Dd');
const CLIENT_RUNS = typeSet('d');
/** Client message types delivered in parts: CopyData can be large and needs no inspection. */
const CLIENT_BUFFERED = (() => {
  const set = new Uint8Array(256).fill(1);
  set[ClientType.CopyData] = 0;
  return set;
})();

/** Pause reading from the client once this many bytes wait behind a blocked message. */
const INBOX_HIGH_WATER = 1 << 20;

const Z = 0x5a, E = 0x45, C = 0x43, I = 0x49, S = 0x53, PORTAL_SUSPENDED = 0x73;
const PARSE_COMPLETE = 0x31, BIND_COMPLETE = 0x32, CLOSE_COMPLETE = 0x33;
const PARAMETER_DESCRIPTION = 0x74, ROW_DESCRIPTION = 0x54, NO_DATA = 0x6e, FUNCTION_CALL_RESPONSE = 0x56, COPY_IN_RESPONSE = 0x47;

/** SQL bytes as the server will read them, classified; `invalid` when the server would refuse the bytes. */
interface Classified {
  sql: string;
  result: ClassifyResult;
  invalid: backend.ErrorFields | null;
}

interface InboxItem {
  type: number;
  bytes: Buffer;
  kind: FrameKind;
}

const FLUSH = Buffer.from([0x48, 0, 0, 0, 4]);
const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);
const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/** Audit bookkeeping for one statement's reply. */
class StatementTracker implements ReplyTracker {
  private readonly started = performance.now();
  constructor(
    private readonly audit: AuditSink,
    readonly id: number,
    /** Position of the statement in its message. */
    readonly index: number,
  ) {}
  onComplete(tag: string | null): void {
    this.audit.outcome(this.id, this.index, { tag: tag ?? 'PORTAL SUSPENDED', sqlstate: null, message: null, skipped: false, durationMs: this.elapsed() });
  }
  onError(sqlstate: string, message: string): void {
    this.audit.outcome(this.id, this.index, { tag: null, sqlstate, message, skipped: false, durationMs: this.elapsed() });
  }
  onSkipped(): void {
    this.audit.outcome(this.id, this.index, { tag: null, sqlstate: null, message: null, skipped: true, durationMs: this.elapsed() });
  }
  private elapsed(): number {
    return Math.round((performance.now() - this.started) * 1000) / 1000;
  }
}

export class Session {
  readonly connectionId: string;
  private readonly client: Socket;
  private readonly server: Socket;
  private readonly services: SessionServices;
  /** Who runs this session's statements; `now` is set for each decision. */
  private readonly subject: Subject;
  private readonly catalog: FunctionCatalog | null;
  private readonly cancelUpstream: () => Promise<void>;
  /** [parser] The server's grammar, for classifyCtx. */
  private readonly grammar: Grammar | undefined;

  private readonly clientFrames: FrameReader;
  private readonly serverFrames = new FrameReader({ maxLength: 0x7fffffff, buffered: SERVER_BUFFERED, runs: SERVER_RUNS });
  private readonly registry = new StatementRegistry();
  private readonly pending = new ReplyQueue();
  private readonly rejectPortal = Buffer.from(`stepgate_rejected_${randomBytes(8).toString('hex')}\0`, 'latin1');

  /** Server settings that change how SQL text is read, as last reported. */
  private readonly parameters: Map<string, string>;
  /** Sync count: messages between two Syncs form a batch that fails as a whole. */
  private batch = 0;
  /** The server skips the rest of this batch after an error (and so does the proxy). */
  private failedBatch = -1;
  /**
   * Statements that may change how SQL is read (SET standard_conforming_strings ...) take effect before the
   * server reports them at the next ReadyForQuery. Until then the proxy reads pipelined text as if either
   * setting could apply (no backslashes, ASCII only). Counts pending replies that carry such a change.
   */
  private uncertainReplies = 0;
  /** An Execute with such a change was forwarded; the Sync that ends its batch will carry it. */
  private parsingChangeUnsynced = false;
  private lastForwardedEndsBatch = true;
  /**
   * COPY FROM STDIN: the server ignores Sync and Flush while it reads copy data (libpq sends a Sync right
   * after the Execute of a COPY), so such a Sync gets no ReadyForQuery. `copyEnds` counts the client's
   * CopyDone/CopyFail; `copyIn` is set while the server is known to be in COPY IN and the client has not
   * ended it yet.
   */
  private copyEnds = 0;
  private copyIn = false;

  /** The first statement waited for the catalog's shadowed names (whether or not they could be loaded). */
  private catalogWaited = false;
  /** A message waiting for something (catalog lookup, step-up): later messages wait in the inbox. */
  private blocked = false;
  private readonly inbox: InboxItem[] = [];
  private inboxBytes = 0;
  private hold: Hold | null = null;
  private idleWaiters: (() => void)[] = [];

  /** Bytes on their way to each side: consecutive slices of one chunk go out as one write. */
  private readonly toServer: Outbound;
  private readonly toClient: Outbound;

  /** The server's own last word (a FATAL ErrorResponse) before it closes, for the log; null until then. */
  private serverFatal: string | null = null;
  private closed = false;
  private readonly startedAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  private closeReason = 'client closed the connection';
  private readonly onClosed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(options: SessionOptions) {
    this.connectionId = options.connectionId;
    this.client = options.client;
    this.server = options.server;
    this.services = options.services;
    this.subject = { ...options.subject, now: new Date() };
    this.catalog = options.catalog;
    this.grammar = options.grammar;
    this.cancelUpstream = options.cancelUpstream;
    this.parameters = new Map(options.serverParameters);
    // CopyData streams: bound like on the server (PQ_LARGE_MESSAGE_LIMIT, 1 GB), not by max_message_size.
    this.clientFrames = new FrameReader({ maxLength: options.services.limits.maxMessageBytes, maxStreamedLength: 0x3fffffff, buffered: CLIENT_BUFFERED, runs: CLIENT_RUNS });
    this.onClosed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.toServer = new Outbound(this.server, () => this.updateReading());
    this.toClient = new Outbound(this.client, () => this.updateReading());

    this.client.on('data', this.onClientData);
    this.client.on('close', () => this.close(this.closeReason));
    this.client.on('error', (err) => {
      this.closeReason = `client connection error: ${err.message}`;
      this.close(this.closeReason);
    });
    this.server.on('data', this.onServerData);
    this.server.on('close', () => this.serverGone('the server closed the connection unexpectedly'));
    this.server.on('error', (err) => this.serverGone(`the connection to the server failed: ${err.message}`));
    this.client.resume();
    this.server.resume();
    if (this.client.destroyed) {
      // The client went away while stepgate logged in upstream (or the startup timeout fired meanwhile): its
      // 'close' event is already past, so without this the session, and its server backend, would never
      // be closed.
      this.close('client closed the connection during login');
      return;
    }
    if (options.clientLeftover.length > 0) this.onClientData(options.clientLeftover);
  }

  /** Resolves when both connections are closed. */
  get finished(): Promise<void> {
    return this.onClosed;
  }


  /**
   * CancelRequest from the client: ends a hold, or asks the server to cancel. Resolves once the server has
   * taken the cancel request (closed the cancel connection), so the caller can close the client's cancel
   * connection only then, as PostgreSQL does: libpq's PQcancel waits for that close, and a client that
   * sends its next query afterwards must not have that query hit by a cancel still on its way.
   */
  cancel(): Promise<void> {
    if (this.hold) {
      this.hold.end('cancelled');
      return Promise.resolve();
    }
    return this.cancelUpstream().catch((err: Error) => this.services.log.warn('cancel.failed', { connection: this.connectionId, error: err.message }));
  }

  // ───────────────────────────── client → server ─────────────────────────────

  private readonly onClientData = (chunk: Buffer): void => {
    // After a protocol violation the client may still be sending: its bytes are discarded while the
    // connection closes (the frame reader cannot continue after an error anyway).
    if (this.closed) return;
    this.bytesIn += chunk.length;
    try {
      this.clientFrames.read(chunk, this.onClientFrame);
    } catch (err) {
      this.protocolFailure(err);
      return;
    }
    this.toServer.flush();
  };

  private readonly onClientFrame = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void => {
    if (this.closed) return;
    if (this.blocked || this.inbox.length > 0) {
      // A view, not a copy: chunks from the socket and the reader's joined buffers are never reused.
      const bytes = buf.subarray(start, end);
      this.inbox.push({ type, bytes, kind });
      this.inboxBytes += bytes.length;
      if (this.inboxBytes > INBOX_HIGH_WATER) this.updateReading();
      return;
    }
    this.run(type, buf, start, end, kind);
  };

  /** Processes one client message; a message that must wait blocks the inbox until it is done. */
  private run(type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void {
    let waiting: Promise<void> | void;
    try {
      waiting = this.process(type, buf, start, end, kind);
    } catch (err) {
      this.protocolFailure(err);
      return;
    }
    if (waiting) {
      this.blocked = true;
      this.toServer.flush();
      waiting.then(
        () => {
          this.blocked = false;
          this.drainInbox();
        },
        (err: unknown) => this.internalFailure(err),
      );
    }
  }

  private drainInbox(): void {
    while (!this.blocked && !this.closed && this.inbox.length > 0) {
      const item = this.inbox.shift() as InboxItem;
      this.inboxBytes -= item.bytes.length;
      this.run(item.type, item.bytes, 0, item.bytes.length, item.kind);
    }
    this.toServer.flush();
    this.updateReading();
  }

  private process(type: number, buf: Buffer, start: number, end: number, kind: FrameKind): Promise<void> | void {
    if (kind === HEAD || kind === PART || kind === TAIL) {
      // A large CopyData: relay it as it arrives (unless its batch failed, like any other message).
      if (this.failedBatch !== this.batch) this.toServer.queue(buf, start, end);
      return;
    }
    if (this.failedBatch === this.batch && type !== ClientType.Sync && type !== ClientType.Terminate) {
      // The server is skipping messages up to Sync after an error; so do we (no decisions for statements
      // that will not run).
      return;
    }
    switch (type) {
      case ClientType.Query:
        return this.onQuery(buf, start, end);
      case ClientType.Parse:
        return this.onParse(buf, start, end);
      case ClientType.Bind:
        return this.onBind(buf, start, end);
      case ClientType.Execute:
        return this.onExecute(buf, start, end);
      case ClientType.Describe: {
        const target = frontend.readTarget(buf, start, end);
        this.expect(reply(target.kind === 'S' ? ReplyKind.DescribeStatement : ReplyKind.DescribePortal, this.batch));
        this.toServer.queue(buf, start, end);
        return;
      }
      case ClientType.Close: {
        const target = frontend.readTarget(buf, start, end);
        const r = reply(ReplyKind.Close, this.batch);
        r.undo = target.kind === 'S' ? this.registry.closeStatement(target.name) : this.registry.closePortal(target.name);
        this.expect(r);
        this.toServer.queue(buf, start, end);
        return;
      }
      case ClientType.Sync:
        frontend.expectEmpty(buf, start, end);
        if (this.copyIn) {
          // Ignored by the server during COPY IN: no reply to wait for.
          this.toServer.queue(buf, start, end);
          return;
        }
        this.expect(reply(ReplyKind.Sync, this.batch), true);
        this.batch++;
        this.toServer.queue(buf, start, end);
        return;
      case ClientType.Flush:
        frontend.expectEmpty(buf, start, end);
        this.toServer.queue(buf, start, end);
        return;
      case ClientType.FunctionCall:
        return this.onFunctionCall(buf, start, end);
      case ClientType.CopyData:
        this.toServer.queue(buf, start, end);
        return;
      case ClientType.CopyDone:
      case ClientType.CopyFail:
        this.copyEnds++;
        this.copyIn = false;
        this.toServer.queue(buf, start, end);
        return;
      case ClientType.Terminate:
        this.closeReason = 'client terminated the session';
        this.toServer.queue(buf, start, end);
        this.toServer.flush();
        this.close(this.closeReason);
        return;
      default:
        throw new ProtocolViolation(`invalid frontend message type ${type}`);
    }
  }

  private expect(r: PendingReply, endsBatch = false): void {
    if (endsBatch && this.parsingChangeUnsynced) {
      r.changesParsing = true;
      this.parsingChangeUnsynced = false;
    }
    if (r.changesParsing) this.uncertainReplies++;
    r.copyEnds = this.copyEnds;
    this.pending.push(r);
    this.lastForwardedEndsBatch = endsBatch;
  }

  /** Removes the reply at the head of the queue. */
  private shiftReply(): PendingReply | undefined {
    const r = this.pending.shift();
    if (r?.changesParsing) this.uncertainReplies--;
    return r;
  }

  private get parsingUncertain(): boolean {
    return this.parsingChangeUnsynced || this.uncertainReplies > 0;
  }

  /** The classifier's view of this session: one object, read anew at each use (no allocation per statement). */
  private readonly classifyCtx: ClassifyContext = ((session: Session): ClassifyContext => ({
    // [parser] the server's grammar
    get grammar(): Grammar | undefined {
      return session.grammar;
    },
    get standardConformingStrings(): boolean {
      return !session.parsingUncertain && session.parameters.get('standard_conforming_strings') !== 'off';
    },
    preparedStatement: (name) => {
      const s = session.registry.statement(name);
      return s && s.statements.length === 1 ? s.statements[0] : undefined;
    },
    functionVolatility: (name) => session.catalog?.volatility(name),
    shadowedBuiltin: (name, kind) => session.catalog?.shadowedBuiltin(name, kind) ?? false,
  }))(this);

  /**
   * Classifies SQL bytes as the server will read them. Asks the server's catalog about functions the
   * classifier does not know, once per function and database.
   */
  private classifyBytes(bytes: Buffer): Classified | Promise<Classified> {
    const catalog = this.catalog;
    if (catalog && !catalog.loaded && !this.catalogWaited) {
      // The first statement of a database waits for the list of names that shadow built-ins.
      this.catalogWaited = true;
      return catalog
        .ready()
        .catch((err: Error) => this.services.log.warn('catalog.unavailable', { connection: this.connectionId, error: err.message }))
        .then(() => this.classifyBytes(bytes));
    }
    // Refreshes in the background once a minute.
    catalog?.refreshIfStale();
    const decoded = decodeSql(bytes, {
      clientEncoding: this.parameters.get('client_encoding') ?? 'UTF8',
      serverEncoding: this.parameters.get('server_encoding') ?? 'UTF8',
      // An encoding change may be in flight: only plain ASCII reads the same in every encoding.
      asciiOnly: this.parsingUncertain,
    });
    if (!decoded.ok) {
      const sql = bytes.toString('latin1');
      const result: ClassifyResult = {
        statements: [unknownStatement(sql, decoded.message)],
        unresolvedFunctions: [],
        shapeSafe: false,
        error: { message: decoded.message, position: 0 },
      };
      // Bytes the server would refuse as well get its error, not a step-up.
      return { sql, result, invalid: decoded.unreadable ? null : { severity: 'ERROR', code: decoded.sqlstate, message: decoded.message } };
    }
    const sql = decoded.text;
    // [parser] classifyText: large texts are classified in a worker (a promise).
    const classifyText = this.services.classifyText ?? this.services.classify;
    const withCatalog = (result: ClassifyResult): Classified | Promise<Classified> => {
      if (result.unresolvedFunctions.length === 0 || !catalog) return { sql, result, invalid: null };
      return catalog.lookup(result.unresolvedFunctions).then(
        async () => ({ sql, result: await classifyText(sql, this.classifyCtx), invalid: null }),
        (err: Error) => {
          this.services.log.warn('catalog.lookup_failed', { connection: this.connectionId, error: err.message });
          return { sql, result, invalid: null };
        },
      );
    };
    const first = classifyText(sql, this.classifyCtx);
    return first instanceof Promise ? first.then(withCatalog) : withCatalog(first);
  }

  /** One outcome tracker per statement of a message, for the audit trail. */
  private trackers(auditId: number, count: number): ReplyTracker[] {
    const list: ReplyTracker[] = [];
    for (let i = 0; i < count; i++) list.push(new StatementTracker(this.services.audit, auditId, i));
    return list;
  }

  private decide(statements: StatementInfo[]): Decision {
    this.subject.now = new Date();
    return this.services.rules().decide(statements, this.subject);
  }

  private onQuery(buf: Buffer, start: number, end: number): Promise<void> | void {
    const bytes = frontend.readQuery(buf, start, end);
    const classified = this.classifyBytes(bytes);
    // [parser] a large text's classification may outlast the connection: nothing to decide then.
    if (classified instanceof Promise) return classified.then((c) => (this.closed ? undefined : this.decideQuery(buf, start, end, c)));
    return this.decideQuery(buf, start, end, classified);
  }

  private decideQuery(buf: Buffer, start: number, end: number, { sql, result, invalid }: Classified): Promise<void> | void {
    if (invalid) return this.rejectQuery(invalid);
    const statements = result.statements;
    if (statements.length === 0) return this.forwardQuery(buf, start, end, statements, 0); // only whitespace or comments
    const decision = this.decide(statements);
    const auditId = this.services.audit.statement({ connectionId: this.connectionId, sql, statements, decision, params: null });
    const release = (): void => this.forwardQuery(buf, start, end, statements, auditId);
    if (decision.action === 'allow') {
      const refusal = this.auditRefusal(statements);
      return refusal ? this.rejectQuery(refusal, this.trackers(auditId, statements.length)) : release();
    }
    return this.enforce(statements, decision, auditId, release, (error) => this.rejectQuery(error, this.trackers(auditId, statements.length)));
  }

  private forwardQuery(buf: Buffer, start: number, end: number, statements: StatementInfo[], auditId: number): void {
    const r = reply(ReplyKind.Query, this.batch);
    // The server replaces the unnamed statement and portal with the query's own.
    this.registry.dropUnnamed();
    let changesParsing = false;
    for (let i = 0; i < statements.length; i++) {
      const s = statements[i];
      if (s.changesParsing) changesParsing = true;
      const undo = this.applyStatementEffects(s);
      if (undo) (r.statementUndos ??= []).push({ index: i, undo });
    }
    r.trackers = this.trackers(auditId, statements.length);
    r.changesParsing = changesParsing;
    this.expect(r, true);
    this.batch++;
    this.toServer.queue(buf, start, end);
  }

  /** SQL-level PREPARE / DEALLOCATE / DISCARD change the statements the server holds. */
  private applyStatementEffects(s: StatementInfo): (() => void) | null {
    if (s.prepare) {
      return this.registry.defineStatement(s.prepare.name, { statements: [s.prepare.statement], sql: s.prepare.statement.sql });
    }
    if (s.deallocate) {
      if (s.deallocate.name !== null) return this.registry.closeStatement(s.deallocate.name);
      const undoStatements = this.registry.dropAllStatements(false);
      if (s.command !== 'DISCARD ALL') return undoStatements;
      const undoPortals = this.registry.dropAllPortals();
      return () => {
        undoPortals();
        undoStatements();
      };
    }
    return null;
  }

  private onParse(buf: Buffer, start: number, end: number): Promise<void> | void {
    const parse = frontend.readParse(buf, start, end);
    const classified = this.classifyBytes(parse.sql);
    const define = ({ sql, result, invalid }: Classified): void => {
      if (invalid) return this.rejectExtended(invalid);
      const statement: PreparedStatement = { sql, statements: result.statements };
      const r = reply(ReplyKind.Parse, this.batch);
      r.undo = this.registry.defineStatement(parse.name, statement);
      this.expect(r);
      this.toServer.queue(buf, start, end);
    };
    if (classified instanceof Promise) return classified.then((c) => (this.closed ? undefined : define(c))); // [parser] as in onQuery
    define(classified);
  }

  private onBind(buf: Buffer, start: number, end: number): void {
    const bind = frontend.readBind(buf, start, end);
    const statement = this.registry.statement(bind.statement) ?? {
      sql: '',
      statements: [unknownStatement('', `Bind to prepared statement "${bind.statement}", which stepgate does not know`)],
    };
    const r = reply(ReplyKind.Bind, this.batch);
    r.undo = this.registry.bindPortal(bind.portal, {
      statement,
      batch: this.batch,
      params: this.services.recordParams ? bind.params : null,
    });
    this.expect(r);
    this.toServer.queue(buf, start, end);
  }

  private onExecute(buf: Buffer, start: number, end: number): Promise<void> | void {
    const execute = frontend.readExecute(buf, start, end);
    const portal = this.registry.portal(execute.portal);
    const statement = portal?.statement ?? {
      sql: '',
      statements: [unknownStatement('', `Execute of portal "${execute.portal}", which stepgate does not know`)],
    };
    const statements = statement.statements;
    const release = (auditId: number | null): void => {
      const r = reply(ReplyKind.Execute, this.batch);
      if (auditId !== null) r.trackers = [new StatementTracker(this.services.audit, auditId, 0)];
      this.expect(r);
      if (statements.some((s) => s.changesParsing)) this.parsingChangeUnsynced = true;
      if (portal) portal.releasedAs = auditId;
      this.toServer.queue(buf, start, end);
    };
    if (statements.length === 0) return release(null); // empty query
    // An Execute with a row limit leaves the portal suspended; the next Execute continues the same
    // statement, which was decided (and approved, if it had to be) the first time.
    if (portal && portal.releasedAs !== undefined) return release(portal.releasedAs);
    const decision = this.decide(statements);
    const params = portal?.params ? portal.params.map((p) => (p === null ? null : p.toString('utf8'))) : null;
    const auditId = this.services.audit.statement({ connectionId: this.connectionId, sql: statement.sql, statements, decision, params });
    if (decision.action === 'allow') {
      const refusal = this.auditRefusal(statements);
      return refusal ? this.rejectExtended(refusal, this.trackers(auditId, 1)) : release(auditId);
    }
    return this.enforce(statements, decision, auditId, () => release(auditId), (error) => this.rejectExtended(error, this.trackers(auditId, 1)));
  }

  private onFunctionCall(buf: Buffer, start: number, end: number): Promise<void> {
    const call = frontend.readFunctionCall(buf, start, end);
    const describe = this.catalog
      ? this.catalog.describeOid(call.oid).catch((err: Error) => {
          this.services.log.warn('catalog.lookup_failed', { connection: this.connectionId, error: err.message });
          return null;
        })
      : Promise.resolve(null);
    return describe.then((fn) => {
      let statements: StatementInfo[];
      let sql: string;
      if (fn) {
        // Judge it as the equivalent SELECT, so built-in knowledge and rules on functions apply.
        sql = `SELECT ${quoteIdent(fn.schema)}.${quoteIdent(fn.name)}(${call.args.map((_, i) => `$${i + 1}`).join(', ')})`;
        statements = this.services.classify(sql, this.classifyCtx).statements.map((s) => ({ ...s, command: 'FUNCTION CALL' }));
      } else {
        sql = `-- FunctionCall of function OID ${call.oid}`;
        statements = [unknownStatement(sql, `FunctionCall of function OID ${call.oid}, which stepgate could not look up`)];
      }
      const decision = this.decide(statements);
      const auditId = this.services.audit.statement({ connectionId: this.connectionId, sql, statements, decision, params: null });
      const release = (): void => {
        const r = reply(ReplyKind.FunctionCall, this.batch);
        r.trackers = [new StatementTracker(this.services.audit, auditId, 0)];
        this.expect(r, true);
        this.batch++;
        this.toServer.queue(buf, start, end);
      };
      if (decision.action === 'allow') {
        const refusal = this.auditRefusal(statements);
        return refusal ? this.rejectQuery(refusal, this.trackers(auditId, 1)) : release();
      }
      return this.enforce(statements, decision, auditId, release, (error) => this.rejectQuery(error, this.trackers(auditId, 1)));
    });
  }

  /**
   * Applies a deny or step-up decision: records it durably, then rejects, or holds until a person
   * decides. `release` forwards the message unchanged; `reject` answers it with an error.
   */
  private async enforce(
    statements: StatementInfo[],
    decision: Decision,
    auditId: number,
    release: () => void,
    reject: (error: backend.ErrorFields) => Promise<void> | void,
  ): Promise<void> {
    this.toServer.flush();
    if (decision.action === 'deny') {
      // Refused either way; the record of it should be on disk first.
      await this.durable();
      if (this.closed) return;
      return reject(denyError(decision, statements));
    }
    // Step-up: first let the server answer what came before. If an earlier message of this batch failed,
    // the server will skip this statement, so nobody needs to be asked.
    await this.serverIdle();
    if (this.closed) return;
    if (this.failedBatch === this.batch) {
      for (const tracker of this.trackers(auditId, Math.max(1, statements.length))) tracker.onSkipped();
      return;
    }
    // Without an audit trail nobody can later prove who approved what: fail closed.
    if (!this.services.audit.healthy) {
      return reject(auditUnavailableError(this.services.audit.failure));
    }
    const hold = this.services.stepUp.hold({
      connectionId: this.connectionId,
      user: this.subject.user,
      groups: this.subject.groups,
      database: this.subject.database,
      application: this.subject.application,
      clientAddress: this.subject.clientAddress,
      statements,
      decision,
    });
    if (hold.challengeId) {
      this.hold = hold;
      this.services.audit.challengeCreated(auditId, hold.challengeId);
      // The held statement is on disk before anyone is asked (it survives a crash during the hold).
      if (!(await this.durable())) {
        hold.end('withdrawn');
        this.hold = null;
        if (!this.closed) return reject(auditUnavailableError(this.services.audit.failure));
        return;
      }
      if (this.closed) return; // the hold was withdrawn by close()
      this.toClient.write(backend.noticeResponse(heldNotice(statements, decision, hold.url)));
    }
    let outcome: HoldOutcome;
    try {
      outcome = await hold.outcome;
    } finally {
      this.hold = null;
    }
    this.services.audit.challengeResolved(auditId, hold.challengeId, outcome);
    // An approval is released only once it is on record.
    const recorded = await this.durable();
    if (this.closed || outcome.status === 'withdrawn') return;
    if (!recorded) {
      return reject(auditUnavailableError(this.services.audit.failure));
    }
    if (outcome.status === 'approved') {
      release();
      return;
    }
    return reject(holdError(outcome, decision));
  }

  /** Waits until the audit trail has committed; false (and a loud log line) when it cannot. */
  private async durable(): Promise<boolean> {
    try {
      await this.services.audit.durable();
      return true;
    } catch (err) {
      this.services.log.error('audit.unavailable', { connection: this.connectionId, error: (err as Error).message });
      return false;
    }
  }

  /**
   * With the audit store failed, `audit.on_failure` decides for statements the rules allow: `close`
   * refuses them all, `allow_reads` lets through what changes nothing (reads, transaction control,
   * ordinary settings).
   */
  private auditRefusal(statements: StatementInfo[]): backend.ErrorFields | null {
    const audit = this.services.audit;
    if (audit.healthy) return null;
    const harmless = (s: StatementInfo): boolean => s.classes.every((c) => c === 'read' || c === 'transaction' || c === 'session');
    if (this.services.auditOnFailure === 'allow_reads' && statements.every(harmless)) return null;
    return auditUnavailableError(audit.failure);
  }

  /** Resolves when the server has answered every message forwarded so far. */
  private serverIdle(): Promise<void> {
    if (this.pending.length === 0) return Promise.resolve();
    // In a pipeline the server may hold its replies until Sync or Flush.
    if (!this.lastForwardedEndsBatch) this.toServer.write(FLUSH);
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Rejects a simple Query or FunctionCall: the server fails an injected Execute, then Syncs. */
  private rejectQuery(error: backend.ErrorFields, trackers: ReplyTracker[] | null = null): Promise<void> | void {
    // After extended-protocol messages not yet synced, an earlier one may fail: the server then skips
    // everything up to the client's Sync, this message included, and an injected Sync would end that
    // skipping early (the client would get a ReadyForQuery the server never sent). Wait for its answers.
    if (!this.lastForwardedEndsBatch && this.pending.length > 0) {
      return this.serverIdle().then(() => {
        if (!this.closed) this.rejectQuery(error, trackers);
      });
    }
    if (this.failedBatch === this.batch) {
      if (trackers) for (const tracker of trackers) tracker.onSkipped();
      return;
    }
    this.injectFailure(error, trackers);
    this.toServer.write(SYNC);
    this.expect(reply(ReplyKind.Sync, this.batch), true);
    this.batch++;
  }

  /** Rejects an Execute: the server fails an injected Execute and skips the batch up to Sync, like us. */
  private rejectExtended(error: backend.ErrorFields, trackers: ReplyTracker[] | null = null): void {
    this.injectFailure(error, trackers);
    this.toServer.write(FLUSH);
    this.failedBatch = this.batch;
  }

  /**
   * `trackers`: the rejected statements' outcomes for the audit trail (the first gets the error, the rest
   * are skipped), recorded when the server's failure arrives in their place.
   */
  private injectFailure(error: backend.ErrorFields, trackers: ReplyTracker[] | null): void {
    const r = reply(ReplyKind.InjectedError, this.batch);
    r.replacement = backend.errorResponse(error);
    r.replacementError = error;
    r.trackers = trackers;
    this.expect(r);
    const body = Buffer.concat([this.rejectPortal, Buffer.from([0, 0, 0, 0])]);
    const execute = Buffer.allocUnsafe(5 + body.length);
    execute[0] = ClientType.Execute;
    execute.writeInt32BE(4 + body.length, 1);
    body.copy(execute, 5);
    this.toServer.write(execute);
  }

  // ───────────────────────────── server → client ─────────────────────────────

  private readonly onServerData = (chunk: Buffer): void => {
    this.bytesOut += chunk.length;
    try {
      this.serverFrames.read(chunk, this.onServerFrame);
    } catch (err) {
      this.serverGone(`the server sent an invalid message: ${(err as Error).message}`);
      return;
    }
    this.toClient.flush();
    if (this.pending.length === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  };

  private readonly onServerFrame = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void => {
    if (kind === HEAD || kind === PART) {
      this.toClient.queue(buf, start, end);
      return;
    }
    const whole = kind === WHOLE;
    const head = this.pending.peek();
    switch (type) {
      case Z:
        this.onReadyForQuery(buf[start + 5]);
        break;
      case E:
        // An error ends COPY IN on the server's side; from here the server honours Sync again.
        this.copyIn = false;
        if (whole) this.noteFatal(buf, start, end);
        if (this.onServerError(buf, start, end)) return; // swallowed
        break;
      case C:
      case I:
        if (head?.kind === ReplyKind.Query) {
          head.trackers?.[head.answered]?.onComplete(type === C ? backend.readCommandTag(buf, start, end) : '');
          head.answered++;
        } else if (head?.kind === ReplyKind.Execute) {
          this.shiftReply();
          head.trackers?.[0]?.onComplete(type === C ? backend.readCommandTag(buf, start, end) : '');
        }
        break;
      case PORTAL_SUSPENDED:
        if (head?.kind === ReplyKind.Execute) {
          this.shiftReply();
          head.trackers?.[0]?.onComplete(null);
        }
        break;
      case PARSE_COMPLETE:
      case BIND_COMPLETE:
      case CLOSE_COMPLETE:
        this.shiftReply();
        break;
      case PARAMETER_DESCRIPTION:
        if (head?.kind === ReplyKind.DescribeStatement) head.sawParameters = true;
        break;
      case ROW_DESCRIPTION:
      case NO_DATA:
        if (head?.kind === ReplyKind.DescribePortal || (head?.kind === ReplyKind.DescribeStatement && head.sawParameters)) {
          this.shiftReply();
        }
        break;
      case FUNCTION_CALL_RESPONSE:
        if (head?.kind === ReplyKind.FunctionCall) head.trackers?.[0]?.onComplete('FUNCTION CALL');
        break;
      case S:
        if (whole) this.onParameterStatus(buf, start, end);
        break;
      case COPY_IN_RESPONSE:
        if (head) this.onCopyIn(head);
        break;
    }
    this.toClient.queue(buf, start, end);
  };

  /**
   * The server entered COPY IN for `head` (an Execute or Query). Syncs the client sent after that message
   * and before ending the copy are ignored by the server: they get no ReadyForQuery, so they must not
   * stay in the queue (every later reply would be matched to the wrong message). Syncs the client sends
   * from now until CopyDone/CopyFail are not queued at all (see process()).
   */
  private onCopyIn(head: PendingReply): void {
    for (let next = this.pending.at(1); next && next.kind === ReplyKind.Sync && next.copyEnds === head.copyEnds; next = this.pending.at(1)) {
      this.pending.removeAt(1);
      if (next.changesParsing) {
        // Its parsing change travels with the next Sync instead.
        this.uncertainReplies--;
        this.parsingChangeUnsynced = true;
      }
    }
    this.copyIn = this.copyEnds === head.copyEnds;
  }

  private onReadyForQuery(status: number): void {
    // Everything before the message that asked for this ReadyForQuery was answered or skipped.
    for (let r = this.shiftReply(); r; r = this.shiftReply()) {
      if (r.kind === ReplyKind.Sync || r.kind === ReplyKind.Query || r.kind === ReplyKind.FunctionCall) {
        if (status === 0x49 /* idle */) this.registry.endPortalsUpTo(r.batch);
        return;
      }
      this.skipped(r);
    }
  }

  /** Returns true when the error was stepgate's own injected failure and has been replaced. */
  private onServerError(buf: Buffer, start: number, end: number): boolean {
    const head = this.pending.peek();
    if (!head) return false; // not tied to a message (FATAL at shutdown, ...)
    const fields = backend.readErrorFields(buf, start, end);
    const sqlstate = fields.get('C') ?? 'XX000';
    const message = fields.get('M') ?? '';
    switch (head.kind) {
      case ReplyKind.Query: {
        // Statements from the failing one on did not run.
        head.trackers?.[head.answered]?.onError(sqlstate, message);
        for (let i = head.answered + 1; i < (head.trackers?.length ?? 0); i++) head.trackers?.[i]?.onSkipped();
        const undos = head.statementUndos?.filter((u) => u.index >= head.answered) ?? [];
        for (let i = undos.length - 1; i >= 0; i--) undos[i].undo();
        head.answered = head.trackers?.length ?? head.answered;
        return false;
      }
      case ReplyKind.FunctionCall:
        head.trackers?.[0]?.onError(sqlstate, message);
        return false;
      case ReplyKind.Sync:
        return false; // e.g. a deferred constraint failing at the implicit COMMIT
      case ReplyKind.InjectedError:
        this.shiftReply();
        if (head.trackers) {
          head.trackers[0]?.onError(head.replacementError?.code ?? '42501', head.replacementError?.message ?? '');
          for (let i = 1; i < head.trackers.length; i++) head.trackers[i].onSkipped();
        }
        this.failBatch(head.batch);
        this.toClient.queue(head.replacement as Buffer, 0, (head.replacement as Buffer).length);
        return true;
      default:
        this.shiftReply();
        head.undo?.();
        head.trackers?.[0]?.onError(sqlstate, message);
        this.failBatch(head.batch);
        return false;
    }
  }

  /** An extended-protocol error: the server skips the rest of the batch, so its messages had no effect. */
  private failBatch(batch: number): void {
    this.failedBatch = Math.max(this.failedBatch, batch);
    const skippedNow: PendingReply[] = [];
    for (let r = this.pending.peek(); r && r.batch === batch && r.kind !== ReplyKind.Sync; r = this.pending.peek()) {
      skippedNow.push(this.shiftReply() as PendingReply);
    }
    for (let i = skippedNow.length - 1; i >= 0; i--) this.skipped(skippedNow[i]);
  }

  private skipped(r: PendingReply): void {
    r.undo?.();
    if (r.statementUndos) for (let i = r.statementUndos.length - 1; i >= 0; i--) r.statementUndos[i].undo();
    if (r.trackers) for (const t of r.trackers.slice(r.answered)) t.onSkipped();
  }

  private onParameterStatus(buf: Buffer, start: number, end: number): void {
    const nul = buf.indexOf(0, start + 5);
    if (nul === -1 || nul >= end) return;
    const name = buf.toString('utf8', start + 5, nul);
    const value = buf.toString('utf8', nul + 1, end - 1);
    this.parameters.set(name, value);
    if (name === 'application_name') this.subject.application = value;
  }

  // ───────────────────────────── reading pace ─────────────────────────────

  /** Reads from a side only while the other side keeps up (never whole results in memory). */
  private updateReading(): void {
    if (this.closed) return;
    const pauseClient = this.toServer.blocked || this.inboxBytes > INBOX_HIGH_WATER;
    if (pauseClient !== this.client.isPaused()) {
      if (pauseClient) this.client.pause();
      else this.client.resume();
    }
    if (this.toClient.blocked !== this.server.isPaused()) {
      if (this.toClient.blocked) this.server.pause();
      else this.server.resume();
    }
  }

  // ───────────────────────────── endings ─────────────────────────────

  private protocolFailure(err: unknown): void {
    if (err instanceof ProtocolViolation || err instanceof FrameError) {
      this.closeReason = `protocol violation: ${err.message}`;
      this.toClient.write(backend.errorResponse({ severity: 'FATAL', code: '08P01', message: err.message }));
      this.close(this.closeReason);
      return;
    }
    this.internalFailure(err);
  }

  private internalFailure(err: unknown): void {
    this.services.log.error('session.internal_error', { connection: this.connectionId, error: (err as Error)?.stack ?? String(err) });
    this.closeReason = `internal error: ${(err as Error)?.message ?? String(err)}`;
    this.toClient.write(
      backend.errorResponse({ severity: 'FATAL', code: 'XX000', message: 'stepgate: internal error; the connection is closed (see the stepgate log)' }),
    );
    this.close(this.closeReason);
  }

  /** A FATAL/PANIC from the server (pg_terminate_backend, shutdown ...) is followed by its close. */
  private noteFatal(buf: Buffer, start: number, end: number): void {
    const fields = backend.readErrorFields(buf, start, end);
    const severity = fields.get('V') ?? fields.get('S');
    if (severity === 'FATAL' || severity === 'PANIC') this.serverFatal = `${fields.get('C') ?? ''} ${fields.get('M') ?? ''}`.trim();
  }

  private serverGone(reason: string): void {
    if (this.closed) return;
    if (this.serverFatal !== null) {
      // The client has the server's own FATAL already (relayed): like PostgreSQL, nothing follows it.
      this.close(`the server ended the connection: ${this.serverFatal}`);
      return;
    }
    this.closeReason = reason;
    this.toClient.flush();
    this.toClient.write(
      backend.errorResponse({
        severity: 'FATAL',
        code: '08006',
        message: `stepgate: ${reason}`,
        detail: 'The connection to the database server was lost; any open transaction was rolled back by the server.',
      }),
    );
    this.close(reason);
  }

  /** Closes both sides once; withdraws a held statement. */
  close(reason: string): void {
    if (this.closed) return;
    this.toClient.flush();
    this.closed = true;
    this.closeReason = reason;
    this.hold?.end('withdrawn');
    this.services.stepUp.connectionClosed(this.connectionId);
    for (const w of this.idleWaiters) w();
    this.idleWaiters = [];
    this.inbox.length = 0;
    if (!this.server.destroyed) this.server.end(TERMINATE);
    this.server.destroySoon();
    // Not destroySoon(): a client still sending would get RST and could lose the last error (see linger.ts).
    endAndLinger(this.client);
    let open = 2;
    const done = (): void => {
      if (--open === 0) this.resolveClosed();
    };
    if (this.server.closed) done();
    else this.server.once('close', done);
    if (this.client.closed) done();
    else this.client.once('close', done);
  }

  get durationMs(): number {
    return Date.now() - this.startedAt;
  }

  get reason(): string {
    return this.closeReason;
  }
}
