/**
 * The replies the server still owes, in the order the proxy forwarded the messages that asked for them.
 * The session uses it to know which message an ErrorResponse belongs to (and so which optimistic
 * registry changes to undo and which pipelined messages the server skipped), to swallow the errors of the
 * failing messages it injects itself, and to attribute outcomes to statements for the audit trail.
 */
import type { Undo } from './statement-registry.js';

export const enum ReplyKind {
  Parse,
  Bind,
  DescribeStatement,
  DescribePortal,
  Execute,
  Close,
  Sync,
  Query,
  FunctionCall,
  /** A message stepgate sent to make the server fail the way a rejected statement would. */
  InjectedError,
}

/** Statement-level bookkeeping for the audit trail; opaque to the queue. */
export interface ReplyTracker {
  /** CommandComplete (tag), EmptyQueryResponse (tag ''), PortalSuspended (tag null). */
  onComplete(tag: string | null): void;
  onError(sqlstate: string, message: string): void;
  /** The server skipped the statement (an earlier message of its pipeline failed). */
  onSkipped(): void;
}

export interface PendingReply {
  kind: ReplyKind;
  /** Sync count when forwarded: an error skips the rest of its batch. */
  batch: number;
  /** Undo for the registry change the message made (Parse, Bind, Close). */
  undo: Undo | null;
  /** Query: undos by statement index (PREPARE, DEALLOCATE ...), applied for statements that did not run. */
  statementUndos: { index: number; undo: Undo }[] | null;
  /** Query: statements answered so far (CommandComplete or EmptyQueryResponse). */
  answered: number;
  /** DescribeStatement: ParameterDescription seen, RowDescription/NoData still to come. */
  sawParameters: boolean;
  /** InjectedError: the ErrorResponse to send instead of the server's, and its fields (for the audit trail). */
  replacement: Buffer | null;
  replacementError: { code: string; message: string } | null;
  /** Query: one tracker per statement; Execute/FunctionCall: one. */
  trackers: ReplyTracker[] | null;
  /** Set when the message's statements may change how later SQL is read (see StatementInfo.changesParsing). */
  changesParsing: boolean;
  /**
   * CopyDone/CopyFail messages the client had sent when this message was forwarded: tells which Syncs were
   * sent during a COPY IN (the server ignores those).
   */
  copyEnds: number;
}

export function reply(kind: ReplyKind, batch: number): PendingReply {
  return {
    kind,
    batch,
    undo: null,
    statementUndos: null,
    answered: 0,
    sawParameters: false,
    replacement: null,
    replacementError: null,
    trackers: null,
    changesParsing: false,
    copyEnds: 0,
  };
}

/** A FIFO with O(1) push and shift. */
export class ReplyQueue {
  private items: (PendingReply | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(r: PendingReply): void {
    this.items.push(r);
  }

  peek(): PendingReply | undefined {
    return this.items[this.head];
  }

  at(i: number): PendingReply | undefined {
    return this.items[this.head + i];
  }

  /** Removes the reply at position i (0 = head); rare (COPY IN), so a splice is fine. */
  removeAt(i: number): PendingReply | undefined {
    if (i < 0 || i >= this.length) return undefined;
    return this.items.splice(this.head + i, 1)[0];
  }

  shift(): PendingReply | undefined {
    const r = this.items[this.head];
    if (r === undefined) return undefined;
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return r;
  }

  clear(): PendingReply[] {
    const rest = this.items.slice(this.head) as PendingReply[];
    this.items = [];
    this.head = 0;
    return rest;
  }
}
