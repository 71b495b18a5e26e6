/**
 * The audit trail's on-disk format: event kinds, the canonical form each event is hashed in, and the
 * JSON bodies. Shared by the writer (worker thread), `stepgate audit verify`, replay and export, so the
 * rules for what a hash covers live in one place. See docs/audit.md for the field reference.
 *
 * Hash chain: every event stores
 *
 *     hash = hex(SHA-256(prev_hash + "\n" + seq + "\t" + session_no + "\t" + session_seq + "\t" + time + "\t" + kind + "\t" + body))
 *
 * where prev_hash is the previous event's hash (64 zeros before the first event, or the hash a signed
 * retention checkpoint vouches for after pruning), `time` is integer Unix milliseconds and `body` the
 * stored JSON text, byte for byte. Nothing is re-serialised when verifying.
 */
import crypto from 'node:crypto';

export const FORMAT_VERSION = 1;

/** 64 zeros: the "previous hash" of the very first event. */
export const GENESIS_HASH = '0'.repeat(64);

/** Session number 0 holds the audit trail's own events (opened, closed, pruned, gaps, keys). */
export const SYSTEM_SESSION = 0;

export const EVENT_KINDS = [
  'connection.start',
  'connection.end',
  'statement',
  'outcome',
  'challenge.created',
  'challenge.resolved',
  'preview',
  'audit.open',
  'audit.close',
  'audit.key',
  'audit.gap',
  'audit.pruned',
  'login.held',
  'login.resolved',
  'factor.failed',
  'notify.delivered',
  'notify.failed',
  'passkey.enrolled',
  'passkey.renamed',
  'passkey.removed',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

export function canonical(seq: number, session: number, sessionSeq: number, time: number, kind: string, body: string): string {
  return `${seq}\t${session}\t${sessionSeq}\t${time}\t${kind}\t${body}`;
}

const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

/** hex SHA-256 of a UTF-8 string. */
export function sha256hex(text: string): string {
  return oneShot ? oneShot('sha256', text, 'hex') : crypto.createHash('sha256').update(text).digest('hex');
}

export function chainHash(prevHash: string, canonicalText: string): string {
  return sha256hex(prevHash + '\n' + canonicalText);
}

export function eventHash(prevHash: string, e: { seq: number; session: number; sseq: number; time: number; kind: string; body: string }): string {
  return chainHash(prevHash, canonical(e.seq, e.session, e.sseq, e.time, e.kind, e.body));
}


/**
 * One statement's outcome as stored inside a statement event (`outcomes`) or as an `outcome` event.
 * To keep the trail small, fields that would be null or false are left out.
 */
export interface OutcomeBody {
  index: number;
  /** Command tag ("DELETE 3"); absent when the statement failed or was skipped; "" for an empty query. */
  tag?: string;
  /** Rows from the tag; absent when the tag has no count. */
  rows?: number;
  /** On error. */
  sqlstate?: string;
  message?: string;
  /** Not run: an earlier statement of its message failed (or its batch was skipped). */
  skipped?: true;
  /** The server refused a write (25006) because stepgate ran the statement read-only: a hidden write stopped. */
  read_only_refused?: true;
  duration_ms: number;
}

export interface StatementClassBody {
  command: string;
  classes: string[];
  tables: { schema: string | null; name: string; access: 'read' | 'write' }[];
  /** Absent when empty. */
  flags?: string[];
  /** Absent when empty. */
  functions?: string[];
}

export interface DecisionBody {
  action: 'allow' | 'step-up' | 'deny';
  rule: string | null;
  file: string | null;
  /** Why (which statement and match keys); absent for an allow by the file's default, where it says nothing more. */
  reason?: string;
  message?: string;
  statement_index?: number;
  timeout_ms?: number;
  grant_ms?: number;
  grant_scope?: 'connection' | 'user';
  approvers?: { groups: string[]; count: number };
  step_ups?: { rule: string | null; file: string | null; statement_index: number; approvers?: { groups: string[]; count: number } }[];
}

/** The JSON body of each kind of event, as stored (field order as written by the writer). */
export interface Bodies {
  'connection.start': {
    connection: string;
    user: string;
    database: string;
    application: string;
    client: string;
    tls: boolean;
    server_pid: number;
  };
  'connection.end': { duration_ms: number; bytes_in: number; bytes_out: number; reason: string };
  statement: {
    sql: string;
    /** Present only when bind parameters are recorded (audit.bind_parameters), redacted. */
    params?: (string | null)[] | null;
    statements: StatementClassBody[];
    decision: DecisionBody;
    /** Outcomes known when the event was written (most allowed statements); later ones are `outcome` events. */
    outcomes: OutcomeBody[];
  };
  outcome: OutcomeBody & { statement: number };
  'challenge.created': { statement: number; challenge: string };
  'challenge.resolved': {
    statement: number;
    challenge: string | null;
    status: 'approved' | 'rejected' | 'expired' | 'cancelled' | 'withdrawn' | 'shutdown' | 'unavailable';
    approvers?: { user: string; credential: string | null }[];
    grant?: boolean;
    by?: string;
    reason?: string;
  };
  /** What a held statement did when it ran before the approval (see src/proxy/preview.ts). */
  preview: {
    statement: number;
    status: 'ran' | 'failed' | 'unavailable';
    /** ran: each statement's command tag, the rows they affected added up, tables locked while it waited, notices. */
    tags?: string[];
    rows?: number;
    locks?: string[];
    notices?: string[];
    /** failed: the server's error (redacted like outcome messages). */
    sqlstate?: string;
    message?: string;
    /** unavailable: why there was no faithful preview, and the planner's estimate when one was asked for. */
    reason?: string;
    estimated_rows?: number;
  };
  'audit.open': {
    format: number;
    /** This run's id (absent in trails written before it was recorded; the next run's previous_run names it). */
    run?: string;
    stepgate_pid: number;
    /** The process's start time (/proc/PID/stat), so a later reader can tell whether that stepgate still runs. */
    stepgate_start?: string | null;
    host: string;
    previous_run: string | null;
    clean_shutdown: boolean | null;
    open_sessions: string[];
  };
  'audit.close': { events: number; run?: string };
  'audit.key': { kid: string; jwk: Record<string, unknown>; note: string };
  'audit.gap': { dropped: number; by_kind: Record<string, number>; reason: string };
  'audit.pruned': { through_seq: number; through_time: number; checkpoint: number; retention_ms: number; events: number };
}

/** A statement's outcome as stored in `statement` events (`outcomes`) and `outcome` events. */
export interface OutcomeData {
  index: number;
  tag?: string | null;
  rows?: number | null;
  sqlstate?: string | null;
  message?: string | null;
  skipped?: boolean;
  read_only_refused?: boolean;
  duration_ms: number;
}

/** A stored event row. */
export interface EventRow {
  seq: number;
  session: number;
  sseq: number;
  time: number;
  kind: string;
  body: string;
  hash: string;
}

/** A stored checkpoint row. */
export interface CheckpointRow {
  id: number;
  seq: number;
  hash: string;
  time: number;
  jws: string;
}

/** What a checkpoint signs (the JWS payload). */
export interface CheckpointPayload {
  typ: 'stepgate-audit-checkpoint';
  v: number;
  /** Checkpoint number in this audit database. */
  id: number;
  /** The chain head: the last event's global sequence number and hash. */
  seq: number;
  hash: string;
  /** When it was signed (ISO 8601). */
  time: string;
  /** Why: interval, events, shutdown, retention, manual. */
  reason: string;
  /** The first event still stored when it was signed (after retention pruning). */
  first_seq: number;
}

export const CHECKPOINT_TYPE = 'stepgate-audit-checkpoint';

/** ISO time with milliseconds. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}
