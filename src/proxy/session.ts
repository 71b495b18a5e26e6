/**
 * One client connection after login: the two sockets, the inbox of client messages, the pace of reading,
 * and the end. What happens to each message is elsewhere: frontend.ts (client → server: classify, plan
 * read-only enforcement, judge, forward or refuse), gate.ts (decide, record, hold), backend.ts and
 * reply-state.ts (server → client), read-only.ts (the transaction model), injection.ts (stepgate's own
 * statements).
 *
 * Client messages are framed into the inbox and processed in order; consecutive forwarded messages go out
 * as one slice of the bytes they arrived in. A message whose decision is not known at once (a catalog
 * lookup, a step-up) blocks the ones behind it, which wait in the inbox; reading from the client pauses
 * when the inbox grows. Everything of one chunk is in the inbox before the first of its messages is
 * processed, so a message can look ahead at the rest of its batch.
 *
 * Server bytes are relayed as they arrive; reading from either side pauses while the other side's socket
 * cannot keep up, so no result or COPY stream piles up in memory.
 */
import type { Socket } from 'node:net';
import type { AuditSink } from '../audit/types.js';
import type { Limits } from '../config.js';
import type { Logger } from '../log.js';
import * as backend from '../protocol/backend-messages.js';
import { FrameError, FrameReader, typeSet, type FrameKind } from '../protocol/frame-reader.js';
import { ClientType, FLUSH, TERMINATE } from '../protocol/frontend-messages.js';
import { ProtocolViolation } from '../protocol/payload-reader.js';
import type { RuleSet, Subject } from '../rules/types.js';
import type { Grammar } from '../sql/grammar.js';
import type { ClassifyContext, ClassifyResult } from '../sql/types.js';
import type { Hold, StepUpBroker } from '../stepup/types.js';
import { Backend } from './backend.js';
import type { FunctionCatalog } from './catalog/index.js';
import { Frontend, type PendingMessage } from './frontend.js';
import { Gate } from './gate.js';
import { Injector, Style } from './injection.js';
import { endAndLinger } from './linger.js';
import { Outbound } from './outbound.js';
import { Injection, TransactionModel } from './read-only.js';
import { ReplyState } from './reply-state.js';
import { StatementRegistry } from './statement-registry.js';
import type { ProxyMetrics } from '../metrics/registry.js';

export interface SessionServices {
  classify(sql: string, ctx: ClassifyContext): ClassifyResult;
  /** Classifies client SQL: at once for small texts, a promise for large or deep ones (a worker). Default: classify. */
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
  /** Server-enforced reads; off only to measure what they cost (see app.ts). */
  enforceReads: boolean;
  /** Counters for operators (metrics/registry.ts); absent: nothing counted. */
  metrics?: ProxyMetrics;
}

export interface SessionOptions {
  connectionId: string;
  client: Socket;
  server: Socket;
  /** Client bytes that arrived with or after the startup exchange. */
  clientLeftover: Buffer;
  subject: Omit<Subject, 'now'>;
  /** The client's port and the PostgreSQL backend's pid (shown on approval cards). */
  clientPort?: number | null;
  serverPid?: number | null;
  serverParameters: Map<string, string>;
  /** The grammar of the server's PostgreSQL major (default: PostgreSQL 18's). */
  grammar?: Grammar;
  catalog: FunctionCatalog | null;
  /** Asks the server to cancel what this connection runs (CancelRequest on a fresh connection). */
  cancelUpstream: () => Promise<void>;
  services: SessionServices;
}

/** Client message types delivered in parts: CopyData can be large and needs no inspection. */
const CLIENT_BUFFERED = (() => {
  const set = new Uint8Array(256).fill(1);
  set[ClientType.CopyData] = 0;
  return set;
})();
const CLIENT_RUNS = typeSet('d');

/** Pause reading from the client once this many bytes wait behind a blocked message. */
const INBOX_HIGH_WATER = 1 << 20;

/** Client frames not processed yet: parallel arrays, no object per message. */
class Inbox {
  private types: number[] = [];
  private bufs: Buffer[] = [];
  private starts: number[] = [];
  private ends: number[] = [];
  private kinds: FrameKind[] = [];
  private head = 0;
  bytes = 0;

  get length(): number {
    return this.types.length - this.head;
  }

  push(type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void {
    this.types.push(type);
    this.bufs.push(buf);
    this.starts.push(start);
    this.ends.push(end);
    this.kinds.push(kind);
    this.bytes += end - start;
  }

  /** Removes the first frame, handing it to `run`. */
  shift(run: (type: number, buf: Buffer, start: number, end: number, kind: FrameKind) => Promise<void> | void): Promise<void> | void {
    const i = this.head++;
    const type = this.types[i]!;
    const buf = this.bufs[i]!;
    const start = this.starts[i]!;
    const end = this.ends[i]!;
    const kind = this.kinds[i]!;
    this.bytes -= end - start;
    if (this.head === this.types.length) this.clear();
    else (this.bufs as (Buffer | undefined)[])[i] = undefined;
    return run(type, buf, start, end, kind);
  }

  /** The frames still waiting, whole ones only. */
  *waiting(): Iterable<PendingMessage> {
    for (let i = this.head; i < this.types.length; i++) {
      if (this.kinds[i] === 0) yield { type: this.types[i]!, buf: this.bufs[i]!, start: this.starts[i]!, end: this.ends[i]! };
    }
  }

  clear(): void {
    this.types = [];
    this.bufs = [];
    this.starts = [];
    this.ends = [];
    this.kinds = [];
    this.head = 0;
    this.bytes = 0;
  }
}

export class Session {
  readonly connectionId: string;
  /** Who runs this session's statements; `now` is set for each decision. */
  readonly subject: Subject;
  /** Server settings that change how SQL text is read, as last reported. */
  readonly parameters: Map<string, string>;
  /** The grammar the session's SQL is read with (its server's major). */
  readonly grammar: Grammar | undefined;
  readonly toServer: Outbound;
  readonly toClient: Outbound;
  readonly terminal: { clientPort: number | null; serverPid: number | null; connectedAt: number };

  private readonly client: Socket;
  private readonly server: Socket;
  private readonly services: SessionServices;
  private readonly cancelUpstream: () => Promise<void>;
  private readonly clientFrames: FrameReader;
  private readonly frontend: Frontend;
  private readonly backend: Backend;
  private readonly replies: ReplyState;
  private readonly inbox = new Inbox();
  /** A message is waiting for something (catalog lookup, step-up): later messages wait in the inbox. */
  private blocked = false;
  private hold: Hold | null = null;
  private idleWaiters: (() => void)[] = [];

  private closedFlag = false;
  private readonly startedAt = Date.now();
  bytesIn = 0;
  private closeReason = 'client closed the connection';
  private readonly onClosed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(options: SessionOptions) {
    this.connectionId = options.connectionId;
    this.client = options.client;
    this.server = options.server;
    this.services = options.services;
    this.subject = { ...options.subject, now: new Date() };
    this.terminal = { clientPort: options.clientPort ?? null, serverPid: options.serverPid ?? null, connectedAt: this.startedAt };
    this.cancelUpstream = options.cancelUpstream;
    this.parameters = new Map(options.serverParameters);
    this.grammar = options.grammar;
    // CopyData streams: bound like on the server (PQ_LARGE_MESSAGE_LIMIT, 1 GB), not by max_message_size.
    this.clientFrames = new FrameReader({ maxLength: options.services.limits.maxMessageBytes, maxStreamedLength: 0x3fffffff, buffered: CLIENT_BUFFERED, runs: CLIENT_RUNS });
    this.onClosed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.toServer = new Outbound(this.server, () => this.updateReading());
    this.toClient = new Outbound(this.client, () => this.updateReading());

    // The client sees the default a direct connection reports; the server's becomes stepgate's (on).
    const model = new TransactionModel(this.parameters.get('default_transaction_read_only') === 'on');
    const registry = new StatementRegistry();
    this.backend = new Backend(this, model, registry, options.catalog);
    this.replies = new ReplyState(this.backend);
    this.backend.replies = this.replies;
    const injector = new Injector(this.replies);
    const gate = new Gate(this, this.services);
    this.frontend = new Frontend(this, this.services, this.replies, registry, model, injector, gate, options.catalog);
    this.frontend.serverIdle = () => this.serverIdle();
    this.frontend.schemaMayChange = () => this.backend.noteSchemaChange();

    this.client.on('data', this.onClientData);
    this.client.on('close', () => this.close(this.closeReason));
    this.client.on('error', (err) => {
      this.closeReason = `client connection error: ${err.message}`;
      this.close(this.closeReason);
    });
    this.server.on('data', this.backend.onServerData);
    this.server.on('close', () => this.serverGone('the server closed the connection unexpectedly'));
    this.server.on('error', (err) => this.serverGone(`the connection to the server failed: ${err.message}`));
    // Before any client message: stepgate's statements are prepared and the session default is made
    // read-only, so that every implicit transaction starts read-only.
    if (this.services.enforceReads) {
      this.toServer.write(injector.encode([Injection.DefaultOn], Style.Synced, { keepUnnamedPortal: false }));
      model.serverDefaultReadOnly = true;
    }
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

  get closed(): boolean {
    return this.closedFlag;
  }

  get bytesOut(): number {
    return this.backend.bytes;
  }

  /** Nothing in flight: no reply pending from the server, nothing held or waiting (shutdown can end it now). */
  get idle(): boolean {
    return this.replies.idle && this.hold === null && !this.blocked && this.inbox.length === 0;
  }

  /** Resolves when the session is idle (at once if it is) or closed. */
  whenIdle(): Promise<void> {
    if (this.idle || this.closedFlag) return Promise.resolve();
    return new Promise((resolve) => this.becameIdle.push(resolve));
  }

  private becameIdle: (() => void)[] = [];

  /** Called where the session may have become idle: a reply, the end of a wait, a hold's end. */
  private checkIdle(): void {
    if (this.becameIdle.length === 0 || !(this.idle || this.closedFlag)) return;
    const waiters = this.becameIdle;
    this.becameIdle = [];
    for (const w of waiters) w();
  }

  /**
   * stepgate is shutting down: a held statement ends (outcome `shutdown`), the client hears it as from
   * PostgreSQL (FATAL 57P01) and both connections close (the server rolls back an open transaction).
   */
  shutdown(): void {
    if (this.closedFlag) return;
    this.hold?.end('shutdown');
    this.closeReason = 'stepgate shut down';
    this.toClient.flush();
    this.toClient.write(backend.errorResponse({ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' }));
    this.close(this.closeReason);
  }

  /** The server skips the rest of the current batch. */
  get skipping(): boolean {
    return this.replies.skipping;
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

  // ───────────────────────────── for the gate and the frontend ─────────────────────────────

  setHold(hold: Hold | null): void {
    this.hold = hold;
    if (hold === null) queueMicrotask(() => this.checkIdle());
  }

  notice(fields: backend.ErrorFields): void {
    this.toClient.write(backend.noticeResponse(fields));
  }

  pending(): Iterable<PendingMessage> {
    return this.inbox.waiting();
  }

  /** Resolves when the server has answered every message forwarded so far. */
  serverIdle(): Promise<void> {
    if (this.replies.idle) return Promise.resolve();
    // In a pipeline the server may hold its replies until Sync or Flush.
    if (!this.replies.lastEndsBatch) this.toServer.write(FLUSH);
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  onServerIdle(): void {
    if (this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    this.checkIdle();
  }

  // ───────────────────────────── client → server ─────────────────────────────

  private readonly onClientData = (chunk: Buffer): void => {
    // After a protocol violation the client may still be sending: its bytes are discarded while the
    // connection closes (the frame reader cannot continue after an error anyway).
    if (this.closedFlag) return;
    this.bytesIn += chunk.length;
    try {
      this.clientFrames.read(chunk, this.onClientFrame);
    } catch (err) {
      // Frames before the bad one are processed first (the server would have answered them).
      this.drainInbox();
      this.protocolFailure(err);
      return;
    }
    this.drainInbox();
  };

  private readonly onClientFrame = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void => {
    // Views, not copies: chunks from the socket and the reader's joined buffers are never reused.
    this.inbox.push(type, buf, start, end, kind);
  };

  private readonly run = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind): Promise<void> | void => {
    let waiting: Promise<void> | void;
    try {
      waiting = this.frontend.onMessage(type, buf, start, end, kind);
    } catch (err) {
      this.protocolFailure(err);
      return;
    }
    if (waiting) {
      this.blocked = true;
      this.toServer.flush();
      return waiting.then(
        () => {
          this.blocked = false;
          this.drainInbox();
        },
        (err: unknown) => this.internalFailure(err),
      );
    }
  };

  private drainInbox(): void {
    while (!this.blocked && !this.closedFlag && this.inbox.length > 0) this.inbox.shift(this.run);
    this.toServer.flush();
    this.updateReading();
    this.checkIdle();
  }

  // ───────────────────────────── reading pace ─────────────────────────────

  /** Reads from a side only while the other side keeps up (never whole results in memory). */
  private updateReading(): void {
    if (this.closedFlag) return;
    const pauseClient = this.toServer.blocked || this.inbox.bytes > INBOX_HIGH_WATER;
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
    if (this.closedFlag) return;
    if (err instanceof ProtocolViolation || err instanceof FrameError) {
      this.closeReason = `protocol violation: ${err.message}`;
      this.toClient.write(backend.errorResponse({ severity: 'FATAL', code: '08P01', message: err.message }));
      this.close(this.closeReason);
      return;
    }
    this.internalFailure(err);
  }

  private internalFailure(err: unknown): void {
    if (this.closedFlag) return;
    this.services.log.error('session.internal_error', { connection: this.connectionId, error: (err as Error)?.stack ?? String(err) });
    this.closeReason = `internal error: ${(err as Error)?.message ?? String(err)}`;
    this.toClient.write(
      backend.errorResponse({ severity: 'FATAL', code: 'XX000', message: 'stepgate: internal error; the connection is closed (see the stepgate log)' }),
    );
    this.close(this.closeReason);
  }

  serverGone(reason: string): void {
    if (this.closedFlag) return;
    if (this.backend.fatal !== null) {
      // The client has the server's own FATAL already (relayed): like PostgreSQL, nothing follows it.
      this.close(`the server ended the connection: ${this.backend.fatal}`);
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
    if (this.closedFlag) return;
    this.toClient.flush();
    this.closedFlag = true;
    this.closeReason = reason;
    this.hold?.end('withdrawn');
    this.services.stepUp.connectionClosed(this.connectionId);
    for (const w of this.idleWaiters) w();
    this.idleWaiters = [];
    this.inbox.clear();
    this.checkIdle();
    if (!this.server.destroyed) this.server.end(TERMINATE);
    this.server.destroySoon();
    // Not destroySoon(): a client still sending would get RST and could lose the last error (see linger.ts).
    endAndLinger(this.client);
    let open = 2;
    const done = (): void => {
      if (--open > 0) return;
      // The server's last replies have been read (they may still arrive after close() began): what is still
      // pending never got one. Recorded before the session's end.
      this.replies.connectionClosed();
      this.resolveClosed();
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
