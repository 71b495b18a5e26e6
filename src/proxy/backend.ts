/**
 * Server → client: relays the server's bytes as they arrive, in large writes. Only what the proxy must
 * know is read (reply-state.ts decides per message: relay, swallow or replace); rows and COPY data are
 * relayed without being looked at beyond their lengths. One function per message type that needs more:
 * ReadyForQuery, ErrorResponse, ParameterStatus.
 *
 * The server's types the frame reader must deliver whole are exactly those read here or by the reply
 * state (BUFFERED_TYPES below); all others may arrive in parts and are relayed (or, while stepgate's own
 * message is answered, dropped) part by part.
 */
import * as backend from '../protocol/backend-messages.js';
import { ServerType } from '../protocol/backend-messages.js';
import { FrameReader, HEAD, PART, TAIL, type FrameKind } from '../protocol/frame-reader.js';
import type { Subject } from '../rules/types.js';
import type { Outbound } from './outbound.js';
import type { TransactionModel } from './read-only.js';
import { Action, errorFromFields, ReadOnlyCause, type Capture, type ReplyObserver, type ReplyState, type ServerMessage } from './reply-state.js';
import type { StatementRegistry } from './statement-registry.js';

/** Server message types whose content the proxy reads (delivered whole by the frame reader). */
const READ_TYPES: readonly ServerType[] = [
  ServerType.ReadyForQuery,
  ServerType.ErrorResponse,
  ServerType.ParameterStatus,
  ServerType.CommandComplete,
  ServerType.EmptyQueryResponse,
  ServerType.PortalSuspended,
  ServerType.ParseComplete,
  ServerType.BindComplete,
  ServerType.CloseComplete,
  ServerType.ParameterDescription,
  ServerType.RowDescription,
  ServerType.NoData,
  ServerType.FunctionCallResponse,
  ServerType.CopyInResponse,
  ServerType.CopyOutResponse,
  ServerType.CopyBothResponse,
  ServerType.CopyDone,
  ServerType.NoticeResponse,
  ServerType.NotificationResponse,
  ServerType.NegotiateProtocolVersion,
  ServerType.BackendKeyData,
];
const BUFFERED_TYPES = (() => {
  const set = new Uint8Array(256);
  for (const t of READ_TYPES) set[t] = 1;
  return set;
})();
/** Rows and COPY data are only relayed: a run of them that arrived together is one frame. */
const RUN_TYPES = (() => {
  const set = new Uint8Array(256);
  set[ServerType.DataRow] = 1;
  set[ServerType.CopyData] = 1;
  return set;
})();

/** What the backend needs from its session. */
export interface BackendHost {
  readonly toClient: Outbound;
  readonly subject: Subject;
  /** Server settings as last reported (the session and the classifier read them). */
  readonly parameters: Map<string, string>;
  /** The server answered everything forwarded so far. */
  onServerIdle(): void;
  /** The server sent something the proxy cannot read: the session ends. */
  serverGone(reason: string): void;
}

export class Backend implements ReplyObserver {
  private readonly frames = new FrameReader({ maxLength: 0x7fffffff, buffered: BUFFERED_TYPES, runs: RUN_TYPES });
  /** The server's own last word (a FATAL ErrorResponse) before it closes, for the log; null until then. */
  fatal: string | null = null;
  bytes = 0;
  /** The message being dispatched (read lazily by the reply state). */
  private readonly message = new MessageView();
  /** Dropping the parts of a large message that answers stepgate's own statement. */
  private droppingParts = false;
  /** Keeping the parts of a large message that answers a previewed Query. */
  private capturingParts: Capture | null = null;
  /** Set by the session once the reply state exists (they refer to each other). */
  replies!: ReplyState;
  /**
   * A statement that may change the schema (ddl, privilege, admin) was forwarded: the catalog's answers may be
   * stale. Invalidated at every ReadyForQuery until the transaction has ended (a change inside BEGIN is seen by
   * the catalog's own connection only after COMMIT).
   */
  private schemaMayChange = false;

  constructor(
    private readonly host: BackendHost,
    private readonly model: TransactionModel,
    private readonly registry: StatementRegistry,
    private readonly catalog: { invalidate(): void } | null,
  ) {}

  /** See schemaMayChange. */
  noteSchemaChange(): void {
    this.schemaMayChange = true;
  }

  readonly onServerData = (chunk: Buffer): void => {
    this.bytes += chunk.length;
    try {
      this.frames.read(chunk, this.onFrame);
    } catch (err) {
      this.host.serverGone(`the server sent an invalid message: ${(err as Error).message}`);
      return;
    }
    this.host.toClient.flush();
    if (this.replies.idle) this.host.onServerIdle();
  };

  private readonly onFrame = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind): void => {
    const toClient = this.host.toClient;
    if (kind === HEAD || kind === PART || kind === TAIL) {
      if (kind === HEAD) {
        this.droppingParts = this.replies.swallowing;
        this.capturingParts = this.replies.capturing;
      }
      if (this.capturingParts !== null) this.capturingParts.add(buf, start, end);
      else if (!this.droppingParts) toClient.queue(buf, start, end);
      if (kind === TAIL) {
        this.droppingParts = false;
        this.capturingParts = null;
      }
      return;
    }
    this.message.set(type, buf, start, end);
    if (type === ServerType.ErrorResponse) this.noteFatal();
    else if (type === ServerType.ParameterStatus && !this.onParameterStatus(buf, start, end)) return;
    switch (this.replies.onServerMessage(this.message)) {
      case Action.Forward:
        if (this.replies.readOnlyRefusal !== ReadOnlyCause.None) {
          toClient.write(backend.noticeResponse(readOnlyNotice(this.replies.readOnlyRefusal)));
          this.replies.readOnlyRefusal = ReadOnlyCause.None;
        }
        toClient.queue(buf, start, end);
        return;
      case Action.Capture:
        this.replies.captureTo!.add(buf, start, end);
        this.replies.captureTo = null;
        return;
      case Action.Replace: {
        const r = this.replies.replacement!;
        this.replies.replacement = null;
        toClient.queue(r, 0, r.length);
        return;
      }
      default:
    }
  };

  // ───────────────────────────── what the reply state reports ─────────────────────────────

  onReadyForQuery(status: number, drained: boolean, batch: number): void {
    // The schema may have changed (see schemaMayChange): the catalog forgets what it learnt.
    if (this.schemaMayChange) {
      this.catalog?.invalidate();
      if (status === backend.TransactionStatus.Idle) this.schemaMayChange = false;
    }
    // Portals end with their transaction.
    if (status === backend.TransactionStatus.Idle) this.registry.endPortalsUpTo(batch);
    this.model.onReadyForQuery(status, drained);
  }

  onReadOnlyRefusal(): void {}

  // ───────────────────────────── per type ─────────────────────────────

  /**
   * Tracks the settings the proxy reads. default_transaction_read_only is stepgate's to keep on: the
   * client sees the value a direct connection would report (its own changes), never stepgate's. Returns
   * false when the message is not for the client.
   */
  private onParameterStatus(buf: Buffer, start: number, end: number): boolean {
    const nul = buf.indexOf(0, start + 5);
    if (nul === -1 || nul >= end) return true;
    const name = buf.toString('utf8', start + 5, nul);
    const value = buf.toString('utf8', nul + 1, end - 1);
    this.host.parameters.set(name, value);
    if (name === 'application_name') this.host.subject.application = value;
    if (name !== 'default_transaction_read_only') return true;
    const readOnly = value === 'on';
    this.model.onServerDefault(readOnly);
    // A report within the answer to stepgate's own statement is stepgate's change.
    if (this.replies.swallowing) return false;
    if (readOnly === this.model.clientDefaultReadOnly) return false;
    this.model.clientDefaultReadOnly = readOnly;
    return true;
  }

  /** A FATAL/PANIC from the server (pg_terminate_backend, shutdown ...) is followed by its close. */
  private noteFatal(): void {
    const error = this.message.error();
    if (error.severity === 'FATAL' || error.severity === 'PANIC') this.fatal = `${error.code} ${error.message}`.trim();
  }
}

/** The server message being dispatched, decoded on demand. */
class MessageView implements ServerMessage {
  type = 0;
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;
  private end = 0;
  private decodedError: backend.ErrorFields | null = null;

  set(type: number, buf: Buffer, start: number, end: number): void {
    this.type = type;
    this.buf = buf;
    this.start = start;
    this.end = end;
    this.decodedError = null;
  }

  status(): number {
    return this.buf[this.start + 5]!;
  }

  tag(): string {
    return backend.readCommandTag(this.buf, this.start, this.end);
  }

  rows(): (string | null)[][] {
    return backend.readDataRows(this.buf, this.start, this.end);
  }

  error(): backend.ErrorFields {
    this.decodedError ??= errorFromFields(backend.readErrorFields(this.buf, this.start, this.end));
    return this.decodedError;
  }
}

/** The notice that tells the client why the server refused a write (sent just before the error). */
export function readOnlyNotice(cause: ReadOnlyCause): backend.ErrorFields {
  if (cause === ReadOnlyCause.DoomedWrite) {
    return {
      severity: 'NOTICE',
      code: '01000',
      message: 'stepgate: this transaction runs read-only: stepgate started it for reads before this write arrived',
      detail: 'stepgate runs what it lets through as a read in read-only mode; a transaction cannot become read-write once it has read.',
      hint: 'Send Sync (end the implicit transaction) before writing, or use BEGIN ... COMMIT.',
    };
  }
  return {
    severity: 'NOTICE',
    code: '01000',
    message: 'stepgate: this statement was let through as a read and ran in read-only mode, so the server refused the write it attempted',
    detail: 'A function, view, operator, cast or domain check it uses writes, and stepgate could not see that.',
    hint: 'If it is meant to write, ask your DBA: stepgate must know what it does before it can let it write.',
  };
}
