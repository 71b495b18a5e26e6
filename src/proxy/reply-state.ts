/**
 * The replies the server still owes, and what to do with each server message: relay it, swallow it, or
 * replace it. Pure bookkeeping (no sockets): the session feeds it the messages it forwards (client
 * messages and stepgate's own) and every server message that the session reads; it answers with an action.
 *
 * Invariants:
 *  - Entries are in the order the server receives the messages; every entry is completed by exactly one
 *    server reply (or is skipped: the server skips the rest of a batch after an error, up to Sync).
 *  - Replies to stepgate's own messages never reach the client, except an error that stands in for the
 *    client's next message (`passThrough`: the server then skips that message as it would have failed it).
 *  - `batch` counts the Syncs (and simple Queries, which end a batch) forwarded so far: the server skips
 *    within one batch only.
 *
 * The server's extended-protocol rules this follows: after an error the server discards messages up to
 * Sync (simple Queries included); a Query or Sync ends with ReadyForQuery; the server ignores Sync while in
 * COPY IN (libpq sends one right after the Execute of a COPY), so such a Sync gets no ReadyForQuery.
 */
import type { ErrorFields } from '../protocol/backend-messages.js';
import { ServerType } from '../protocol/backend-messages.js';
import type { Undo } from './statement-registry.js';

/** Statement-level bookkeeping for the audit trail; opaque to the queue. */
export interface ReplyTracker {
  /** CommandComplete (tag), EmptyQueryResponse (tag ''), PortalSuspended (tag null). */
  onComplete(tag: string | null): void;
  /** `readOnly`: the server refused a write because stepgate ran the statement read-only. */
  onError(sqlstate: string, message: string, readOnly?: boolean): void;
  /** The server skipped the statement (an earlier message of its pipeline failed). */
  onSkipped(): void;
}

/** Why a read-only refusal (25006) happened, for the hint stepgate adds. */
export const enum ReadOnlyCause {
  /** Not stepgate's doing (the client's own READ ONLY transaction), or not read-only at all. */
  None,
  /** stepgate ran the statement read-only because it was let through as a read. */
  EnforcedRead,
  /** A write in a transaction stepgate had already made read-only (it could not know a write would come). */
  DoomedWrite,
}

/** The outcome of a statement whose reply never came: the connection closed first. */
const UNANSWERED = { code: '08006', message: 'the connection closed before the server answered; whether the statement ran is not known' } as const;

interface Common {
  /** Sync count when forwarded: an error skips the rest of its batch. */
  batch: number;
  /**
   * CopyDone/CopyFail messages the client had sent when this message was forwarded: tells which Syncs were
   * sent during a COPY IN (the server ignores those).
   */
  copyEnds: number;
  /** The message's statements may change how later SQL is read (see StatementInfo.changesParsing). */
  changesParsing: boolean;
}

export type ParsePending = Common & { kind: 'parse' | 'bind' | 'close'; undo: Undo | null };
export type DescribeStatementPending = Common & { kind: 'describe-statement'; sawParameters: boolean };
export type DescribePortalPending = Common & { kind: 'describe-portal' };
export type ExecutePending = Common & { kind: 'execute'; tracker: ReplyTracker | null; readOnlyCause: ReadOnlyCause };
export type FunctionCallPending = Common & { kind: 'function-call'; tracker: ReplyTracker | null; readOnlyCause: ReadOnlyCause; skipped: boolean };
export type SyncPending = Common & { kind: 'sync' };
export type QueryPending = Common & {
  kind: 'query';
  trackers: ReplyTracker[];
  /** Undos by statement index (PREPARE, DEALLOCATE, DECLARE ...), applied for statements that did not run. */
  statementUndos: { index: number; undo: Undo }[] | null;
  /** Statements answered so far (CommandComplete or EmptyQueryResponse). */
  answered: number;
  readOnlyCauses: ReadOnlyCause[] | null;
  skipped: boolean;
  /** Replies held back instead of relayed, up to and including the ReadyForQuery (a preview: see preview.ts). */
  capture: Capture | null;
};

/** A client message that the server answers. */
export type ClientPending = ParsePending | DescribeStatementPending | DescribePortalPending | ExecutePending | FunctionCallPending | SyncPending | QueryPending;

/** A failing Execute that stands for a refused client message: its error is replaced by stepgate's. */
export type RefusalPending = Common & { kind: 'refusal'; replacement: Buffer; error: ErrorFields; trackers: ReplyTracker[] | null };
/**
 * An injected Bind, Execute, Close or Parse (extended protocol). `passThrough`: an error is relayed to the
 * client as the answer to its next message, which the server skips (it would have failed the same way:
 * the transaction is aborted). Otherwise the error is swallowed.
 */
export type OwnMessagePending = Common & { kind: 'own-message'; completes: ServerType; passThrough: boolean; onError: ((fields: ErrorFields) => void) | null };
/**
 * An injected simple Query: everything up to its ReadyForQuery is swallowed. `onRow` hears its rows, `onDone`
 * its ReadyForQuery (the transaction status after it) and whether it failed.
 */
export type OwnQueryPending = Common & {
  kind: 'own-query';
  onError: ((fields: ErrorFields) => void) | null;
  failed: boolean;
  onRow: ((row: (string | null)[]) => void) | null;
  onDone: ((status: number, failed: boolean) => void) | null;
};

/** Handlers of an injected simple Query (see OwnQueryPending). */
export interface OwnQueryHandlers {
  onError?: (fields: ErrorFields) => void;
  onRow?: (row: (string | null)[]) => void;
  onDone?: (status: number, failed: boolean) => void;
}
/**
 * An injected Sync. `standsInFor`: a client Query or FunctionCall that an injected message before it may
 * have made the server skip; when it was skipped, this Sync's ReadyForQuery is the client's.
 */
export type OwnSyncPending = Common & { kind: 'own-sync'; standsInFor: QueryPending | FunctionCallPending | null };

/** A message stepgate sends on its own. Its replies are swallowed. */
export type OwnPending = RefusalPending | OwnMessagePending | OwnQueryPending | OwnSyncPending;

/**
 * Entry constructors. Each kind is one object literal with its fields in one order, so each kind has one
 * hidden class: built by object spread instead, an entry cost more CPU than the rest of a statement's
 * bookkeeping together. `batch` and `copyEnds` are stamped by ReplyState.expect() when the message goes out.
 */
export const Entry = {
  parse: (kind: 'parse' | 'bind' | 'close', undo: Undo | null): ParsePending => ({ kind, batch: 0, copyEnds: 0, changesParsing: false, undo }),
  describe: (statement: boolean): DescribeStatementPending | DescribePortalPending =>
    statement
      ? { kind: 'describe-statement', batch: 0, copyEnds: 0, changesParsing: false, sawParameters: false }
      : { kind: 'describe-portal', batch: 0, copyEnds: 0, changesParsing: false },
  execute: (tracker: ReplyTracker | null, readOnlyCause: ReadOnlyCause): ExecutePending => ({
    kind: 'execute',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    tracker,
    readOnlyCause,
  }),
  functionCall: (tracker: ReplyTracker | null, readOnlyCause: ReadOnlyCause): FunctionCallPending => ({
    kind: 'function-call',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    tracker,
    readOnlyCause,
    skipped: false,
  }),
  sync: (): SyncPending => ({ kind: 'sync', batch: 0, copyEnds: 0, changesParsing: false }),
  query: (trackers: ReplyTracker[], readOnlyCauses: ReadOnlyCause[] | null, capture: Capture | null = null): QueryPending => ({
    kind: 'query',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    trackers,
    statementUndos: null,
    answered: 0,
    readOnlyCauses,
    skipped: false,
    capture,
  }),
  refusal: (replacement: Buffer, error: ErrorFields, trackers: ReplyTracker[] | null): RefusalPending => ({
    kind: 'refusal',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    replacement,
    error,
    trackers,
  }),
  ownMessage: (completes: ServerType, passThrough: boolean, onError: ((fields: ErrorFields) => void) | null): OwnMessagePending => ({
    kind: 'own-message',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    completes,
    passThrough,
    onError,
  }),
  ownQuery: (handlers: OwnQueryHandlers): OwnQueryPending => ({
    kind: 'own-query',
    batch: 0,
    copyEnds: 0,
    changesParsing: false,
    onError: handlers.onError ?? null,
    failed: false,
    onRow: handlers.onRow ?? null,
    onDone: handlers.onDone ?? null,
  }),
  ownSync: (standsInFor: QueryPending | FunctionCallPending | null): OwnSyncPending => ({ kind: 'own-sync', batch: 0, copyEnds: 0, changesParsing: false, standsInFor }),
};

export type Pending = ClientPending | OwnPending;

/**
 * The replies to a client Query that stepgate holds back (copied: the socket's chunks are not kept), with
 * what it learns from them: each statement's command tag, the error that ended it, the final transaction
 * status. Past `limit` bytes nothing more is kept and `overflowed` is set (the replies cannot be relayed
 * later; the caller falls back to running the statement again).
 */
export class Capture {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  overflowed = false;
  /** Command tags of the statements that completed, in order ('' for an empty query). */
  readonly tags: string[] = [];
  error: ErrorFields | null = null;
  /** Messages of notices the statements raised. */
  readonly notices: string[] = [];
  /** The ReadyForQuery status that ended the replies (0 until then). */
  status = 0;

  constructor(private readonly limit: number) {}

  add(buf: Buffer, start: number, end: number): void {
    if (this.overflowed) return;
    if (this.bytes + (end - start) > this.limit) {
      this.overflowed = true;
      this.chunks.length = 0;
      return;
    }
    const copy = Buffer.allocUnsafe(end - start);
    buf.copy(copy, 0, start, end);
    this.chunks.push(copy);
    this.bytes += copy.length;
  }

  /** The replies without their final ReadyForQuery (which the caller sends with the status as it ends up). */
  replies(): Buffer {
    const all = Buffer.concat(this.chunks);
    return all.subarray(0, Math.max(0, all.length - READY_FOR_QUERY_LENGTH));
  }
}

/** A ReadyForQuery message: type, length 5, status. */
const READY_FOR_QUERY_LENGTH = 6;

/** What the session does with a server message. */
export const enum Action {
  Forward,
  Swallow,
  /** Send `ReplyState.replacement` instead. */
  Replace,
  /** Keep it in `ReplyState.capturing` (held back for a preview). */
  Capture,
}

/** What the session learns from the server's replies (for the transaction model and the audit). */
export interface ReplyObserver {
  /**
   * A ReadyForQuery (relayed to the client or not). `drained`: nothing else is pending. `batch`: the batch
   * of the message it answers (portals bound up to it end with an idle status).
   */
  onReadyForQuery(status: number, drained: boolean, batch: number): void;
  /** The server failed a client statement with 25006 while stepgate enforced read-only. */
  onReadOnlyRefusal(cause: ReadOnlyCause): void;
}

/** The parts of a server message the state machine reads (the session decodes them lazily). */
export interface ServerMessage {
  type: number;
  /** ReadyForQuery: the transaction status byte. */
  status(): number;
  /** CommandComplete: the tag. */
  tag(): string;
  /** DataRow (one or a run of them): the columns. */
  rows(): (string | null)[][];
  /** ErrorResponse: the fields. */
  error(): ErrorFields;
}

export function errorFromFields(fields: Map<string, string>): ErrorFields {
  const severity = (fields.get('V') ?? fields.get('S') ?? 'ERROR') as ErrorFields['severity'];
  const position = fields.get('P');
  return {
    severity,
    code: fields.get('C') ?? 'XX000',
    message: fields.get('M') ?? '',
    detail: fields.get('D'),
    hint: fields.get('H'),
    position: position === undefined ? undefined : Number(position),
  };
}

/** A FIFO with O(1) push and shift. */
class Queue<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  at(i: number): T | undefined {
    return this.items[this.head + i];
  }

  /** Removes the entry at position i (0 = head); rare (COPY IN), so a splice is fine. */
  removeAt(i: number): T | undefined {
    if (i < 0 || i >= this.length) return undefined;
    return this.items.splice(this.head + i, 1)[0];
  }

  shift(): T | undefined {
    const item = this.items[this.head];
    if (item === undefined) return undefined;
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

export class ReplyState {
  private readonly queue = new Queue<Pending>();
  /** Sync count: messages between two Syncs form a batch that fails as a whole. */
  batch = 0;
  /** The server skips the rest of this batch after an error (and so does the proxy). */
  private failedBatch = -1;
  /** Client messages (not stepgate's own) still unanswered. */
  private clientPendingCount = 0;
  /**
   * Statements that may change how SQL is read (SET standard_conforming_strings ...) take effect before the
   * server reports them at the next ReadyForQuery. Counts pending replies that carry such a change.
   */
  private uncertainReplies = 0;
  /** An Execute with such a change was forwarded; the Sync that ends its batch will carry it. */
  private parsingChangeUnsynced = false;
  /** The last message forwarded ends a batch (Sync, Query, FunctionCall): nothing is held back for Flush. */
  lastEndsBatch = true;
  /** CopyDone/CopyFail messages the client has sent. */
  private copyEnds = 0;
  /** The server is in COPY IN for a client message and the client has not ended it yet. */
  copyIn = false;
  /** Set with Action.Replace. */
  replacement: Buffer | null = null;
  /** Set with Action.Capture: where the message goes. */
  captureTo: Capture | null = null;
  /** Set when a NoticeResponse must go to the client before the current message (a read-only hint). */
  readOnlyRefusal: ReadOnlyCause = ReadOnlyCause.None;

  constructor(private readonly observer: ReplyObserver) {}

  // ───────────────────────────── forwarded messages ─────────────────────────────

  /** The server is skipping messages up to Sync after an error in the current batch. */
  get skipping(): boolean {
    return this.failedBatch === this.batch;
  }

  /** Nothing is pending. */
  get idle(): boolean {
    return this.queue.length === 0;
  }

  /** The message being answered is stepgate's own: whatever arrives for it is swallowed. */
  get swallowing(): boolean {
    const head = this.queue.peek();
    return head !== undefined && !isClient(head);
  }

  /** The Capture the current replies go to (the head is a previewed Query), or null. */
  get capturing(): Capture | null {
    const head = this.queue.peek();
    return head !== undefined && head.kind === 'query' ? head.capture : null;
  }

  /** No client message is unanswered (stepgate's own may be). */
  get clientIdle(): boolean {
    return this.clientPendingCount === 0;
  }

  /** SQL may be read differently by the server than by the proxy until pending replies arrive. */
  get parsingUncertain(): boolean {
    return this.parsingChangeUnsynced || this.uncertainReplies > 0;
  }

  /** Records a message being forwarded that the server answers (see Entry). `endsBatch`: Sync, Query, FunctionCall. */
  expect(entry: Pending, endsBatch = false): void {
    entry.batch = this.batch;
    entry.copyEnds = this.copyEnds;
    if (endsBatch && this.parsingChangeUnsynced && (entry.kind === 'sync' || entry.kind === 'own-sync' || entry.kind === 'query')) {
      entry.changesParsing = true;
      this.parsingChangeUnsynced = false;
    }
    if (entry.changesParsing) this.uncertainReplies++;
    if (isClient(entry)) this.clientPendingCount++;
    this.queue.push(entry);
    this.lastEndsBatch = endsBatch;
    if (endsBatch) this.batch++;
  }

  /** An Execute whose statement changes how SQL is read: the Sync that ends its batch carries the change. */
  noteParsingChange(): void {
    this.parsingChangeUnsynced = true;
  }

  /** A Sync the client sent while the server reads COPY data: the server ignores it. */
  get syncIgnored(): boolean {
    return this.copyIn;
  }

  /** The client sent CopyDone or CopyFail. */
  copyEnded(): void {
    this.copyEnds++;
    this.copyIn = false;
  }

  // ───────────────────────────── server messages ─────────────────────────────

  /** Decides what happens to one whole server message. */
  onServerMessage(m: ServerMessage): Action {
    const head = this.queue.peek();
    const action = this.route(m, head);
    if (action !== Action.Forward || head === undefined || head.kind !== 'query' || head.capture === null) return action;
    // Asynchronous messages are not part of the reply.
    if (m.type === ServerType.NotificationResponse || m.type === ServerType.ParameterStatus) return action;
    noteCaptured(head.capture, m);
    this.captureTo = head.capture;
    return Action.Capture;
  }

  private route(m: ServerMessage, head: Pending | undefined): Action {
    switch (m.type) {
      case ServerType.ReadyForQuery:
        return this.onReadyForQuery(m.status());
      case ServerType.ErrorResponse:
        // An error ends COPY IN on the server's side; from here the server honours Sync again.
        this.copyIn = false;
        return head === undefined ? Action.Forward : this.onError(head, m.error());
      case ServerType.CommandComplete:
      case ServerType.EmptyQueryResponse:
        if (head === undefined) return Action.Forward;
        if (head.kind === 'query') {
          head.trackers[head.answered]?.onComplete(m.type === ServerType.CommandComplete ? m.tag() : '');
          head.answered++;
          return Action.Forward;
        }
        if (head.kind === 'execute') {
          this.shift();
          head.tracker?.onComplete(m.type === ServerType.CommandComplete ? m.tag() : '');
          return Action.Forward;
        }
        return this.ownReply(head, m.type);
      case ServerType.PortalSuspended:
        if (head?.kind === 'execute') {
          this.shift();
          head.tracker?.onComplete(null);
          return Action.Forward;
        }
        return head === undefined ? Action.Forward : this.ownReply(head, m.type);
      case ServerType.ParseComplete:
      case ServerType.BindComplete:
      case ServerType.CloseComplete:
        if (head === undefined) return Action.Forward;
        if (head.kind === 'own-message') return this.ownReply(head, m.type);
        this.shift();
        return Action.Forward;
      case ServerType.ParameterDescription:
        if (head?.kind === 'describe-statement') head.sawParameters = true;
        return Action.Forward;
      case ServerType.RowDescription:
      case ServerType.NoData:
        if (head?.kind === 'describe-portal' || (head?.kind === 'describe-statement' && head.sawParameters)) {
          this.shift();
          return Action.Forward;
        }
        return head === undefined ? Action.Forward : this.ownReply(head, m.type);
      case ServerType.FunctionCallResponse:
        if (head?.kind === 'function-call') head.tracker?.onComplete('FUNCTION CALL');
        return Action.Forward;
      case ServerType.CopyInResponse:
        if (head !== undefined) this.onCopyIn(head);
        return Action.Forward;
      // Asynchronous messages belong to the client whatever is pending; ParameterStatus is filtered by the
      // session (default_transaction_read_only).
      case ServerType.NotificationResponse:
      case ServerType.ParameterStatus:
        return Action.Forward;
      default:
        if (head?.kind === 'own-query' && head.onRow !== null && m.type === ServerType.DataRow) for (const row of m.rows()) head.onRow(row);
        // Rows, notices, COPY data: the client's unless stepgate's own message is being answered.
        return head !== undefined && !isClient(head) ? Action.Swallow : Action.Forward;
    }
  }

  /** A reply while stepgate's own message is at the head: swallowed; completes it when it is its last. */
  private ownReply(head: Pending, type: number): Action {
    if (head.kind === 'own-message' && head.completes === type) this.shift();
    return isClient(head) ? Action.Forward : Action.Swallow;
  }

  private onReadyForQuery(status: number): Action {
    // Everything before the message that asked for this ReadyForQuery was answered or skipped.
    let action = Action.Forward;
    let batch = this.batch;
    let done: OwnQueryPending | null = null;
    for (let r = this.shift(); r; r = this.shift()) {
      batch = r.batch;
      if (r.kind === 'sync' || r.kind === 'query' || r.kind === 'function-call') break;
      if (r.kind === 'own-query') {
        action = Action.Swallow;
        done = r;
        break;
      }
      if (r.kind === 'own-sync') {
        // It stands in for the client's ReadyForQuery only when the client's message was skipped.
        action = r.standsInFor !== null && r.standsInFor.skipped ? Action.Forward : Action.Swallow;
        break;
      }
      this.skipped(r);
    }
    this.observer.onReadyForQuery(status, this.queue.length === 0, batch);
    // Last: the handler may send the next statement of stepgate's own at once.
    done?.onDone?.(status, done.failed);
    return action;
  }

  private onError(head: Pending, error: ErrorFields): Action {
    switch (head.kind) {
      case 'query': {
        // Statements from the failing one on did not run.
        const cause = head.readOnlyCauses?.[head.answered] ?? ReadOnlyCause.None;
        head.trackers[head.answered]?.onError(error.code, error.message, error.code === '25006' && cause !== ReadOnlyCause.None);
        for (let i = head.answered + 1; i < head.trackers.length; i++) head.trackers[i]!.onSkipped();
        const undos = head.statementUndos?.filter((u) => u.index >= head.answered) ?? [];
        for (let i = undos.length - 1; i >= 0; i--) undos[i]!.undo();
        if (error.code === '25006') this.noteReadOnly(cause);
        head.answered = head.trackers.length;
        return Action.Forward;
      }
      case 'function-call':
        head.tracker?.onError(error.code, error.message, error.code === '25006' && head.readOnlyCause !== ReadOnlyCause.None);
        if (error.code === '25006') this.noteReadOnly(head.readOnlyCause);
        return Action.Forward;
      case 'sync':
        return Action.Forward; // e.g. a deferred constraint failing at the implicit COMMIT
      case 'own-sync':
        return Action.Swallow;
      case 'own-query':
        head.failed = true;
        head.onError?.(error);
        return Action.Swallow;
      case 'refusal': {
        this.shift();
        if (head.trackers) {
          head.trackers[0]?.onError(head.error.code, head.error.message);
          for (let i = 1; i < head.trackers.length; i++) head.trackers[i]!.onSkipped();
        }
        this.failBatch(head.batch);
        this.replacement = head.replacement;
        return Action.Replace;
      }
      case 'own-message': {
        this.shift();
        head.onError?.(error);
        this.failBatch(head.batch, head.passThrough ? error : null);
        return head.passThrough ? Action.Forward : Action.Swallow;
      }
      default: {
        this.shift();
        if (head.kind === 'execute') {
          head.tracker?.onError(error.code, error.message, error.code === '25006' && head.readOnlyCause !== ReadOnlyCause.None);
          if (error.code === '25006') this.noteReadOnly(head.readOnlyCause);
        }
        // Later messages of the batch are undone first: changes are undone in the reverse of their order.
        this.failBatch(head.batch);
        if (head.kind === 'parse' || head.kind === 'bind' || head.kind === 'close') head.undo?.();
        return Action.Forward;
      }
    }
  }

  private noteReadOnly(cause: ReadOnlyCause): void {
    if (cause === ReadOnlyCause.None) return;
    this.readOnlyRefusal = cause;
    this.observer.onReadOnlyRefusal(cause);
  }

  /**
   * An extended-protocol error: the server skips the rest of the batch, so its messages had no effect.
   * `standIn`: an error of stepgate's own message relayed to the client: the first client message skipped
   * is the one the client will take it for (its audit outcome is that error).
   */
  private failBatch(batch: number, standIn: ErrorFields | null = null): void {
    this.failedBatch = Math.max(this.failedBatch, batch);
    const skippedNow: Pending[] = [];
    for (let r = this.queue.peek(); r && r.batch === batch && r.kind !== 'sync' && r.kind !== 'own-sync'; r = this.queue.peek()) {
      skippedNow.push(this.shift()!);
    }
    // The first client statement skipped is the one the client takes a relayed error of stepgate's own for.
    let standInFor: ReplyTracker | null = null;
    if (standIn !== null) {
      for (const r of skippedNow) {
        standInFor = firstTracker(r);
        if (standInFor !== null) break;
      }
    }
    for (let i = skippedNow.length - 1; i >= 0; i--) this.skipped(skippedNow[i]!, standInFor);
    if (standInFor !== null) standInFor.onError(standIn!.code, standIn!.message);
  }

  /** Undoes what a skipped message would have done and records it as skipped (but for `except`). */
  /**
   * The connection closed with replies outstanding: the statements they were for get an outcome that says
   * so (08006; the server may or may not have run them), a refusal its error (the client was refused either
   * way). Nothing is pending afterwards.
   */
  connectionClosed(): void {
    for (let r = this.shift(); r; r = this.shift()) {
      switch (r.kind) {
        case 'query':
          for (let i = r.answered; i < r.trackers.length; i++) r.trackers[i]!.onError(UNANSWERED.code, UNANSWERED.message);
          break;
        case 'execute':
        case 'function-call':
          r.tracker?.onError(UNANSWERED.code, UNANSWERED.message);
          break;
        case 'refusal':
          if (r.trackers !== null) {
            r.trackers[0]?.onError(r.error.code, r.error.message);
            for (let i = 1; i < r.trackers.length; i++) r.trackers[i]!.onSkipped();
          }
          break;
        default:
      }
    }
  }

  private skipped(r: Pending, except: ReplyTracker | null = null): void {
    const skip = (t: ReplyTracker | null): void => {
      if (t !== null && t !== except) t.onSkipped();
    };
    switch (r.kind) {
      case 'parse':
      case 'bind':
      case 'close':
        r.undo?.();
        return;
      case 'execute':
        skip(r.tracker);
        return;
      case 'function-call':
        skip(r.tracker);
        r.skipped = true;
        return;
      case 'query':
        if (r.statementUndos) for (let i = r.statementUndos.length - 1; i >= 0; i--) r.statementUndos[i]!.undo();
        for (const t of r.trackers.slice(r.answered)) skip(t);
        r.skipped = true;
        return;
      case 'refusal':
        if (r.trackers) for (const t of r.trackers) skip(t);
        return;
      default:
    }
  }

  /**
   * The server entered COPY IN for `head` (an Execute or Query). Syncs the client sent after that message
   * and before ending the copy are ignored by the server: they get no ReadyForQuery, so they must not
   * stay in the queue (every later reply would be matched to the wrong message). Syncs the client sends
   * from now until CopyDone/CopyFail are not queued at all (see ReplyState.syncIgnored).
   */
  private onCopyIn(head: Pending): void {
    for (let next = this.queue.at(1); next && next.kind === 'sync' && next.copyEnds === head.copyEnds; next = this.queue.at(1)) {
      this.queue.removeAt(1);
      this.clientPendingCount--;
      if (next.changesParsing) {
        // Its parsing change travels with the next Sync instead.
        this.uncertainReplies--;
        this.parsingChangeUnsynced = true;
      }
    }
    this.copyIn = this.copyEnds === head.copyEnds;
  }

  private shift(): Pending | undefined {
    const r = this.queue.shift();
    if (r === undefined) return undefined;
    if (r.changesParsing) this.uncertainReplies--;
    if (isClient(r)) this.clientPendingCount--;
    return r;
  }
}

/** What a previewed Query's reply tells (see Capture). */
function noteCaptured(capture: Capture, m: ServerMessage): void {
  switch (m.type) {
    case ServerType.CommandComplete:
      capture.tags.push(m.tag());
      return;
    case ServerType.EmptyQueryResponse:
      capture.tags.push('');
      return;
    case ServerType.ErrorResponse:
      capture.error = m.error();
      return;
    case ServerType.NoticeResponse:
      capture.notices.push(m.error().message);
      return;
    case ServerType.ReadyForQuery:
      capture.status = m.status();
      return;
    default:
  }
}

function isClient(r: Pending): r is ClientPending {
  switch (r.kind) {
    case 'refusal':
    case 'own-message':
    case 'own-query':
    case 'own-sync':
      return false;
    default:
      return true;
  }
}

function firstTracker(r: Pending): ReplyTracker | null {
  if (r.kind === 'execute' || r.kind === 'function-call') return r.tracker;
  if (r.kind === 'query') return r.trackers[0] ?? null;
  return null;
}
