/**
 * The records the proxy thread hands the audit writer (worker thread): compact arrays, one per event, so
 * that recording costs an array and no JSON, hashing or redaction on the proxy thread. Their layout is a
 * tuple type each, shared by store.ts (which builds them) and writer.ts (which turns them into events):
 * the compiler checks both sides.
 *
 * A statement record carries its first outcome inline (filled in place while the record is still in the
 * open batch: no allocation per outcome); further outcomes travel in `more`, or as outcome records once the
 * statement's batch has gone to the writer.
 */

import type { SignedAssertion } from '../stepup/evidence.js';

export const enum Rec {
  Start = 1,
  End = 2,
  Statement = 3,
  Outcome = 4,
  ChallengeCreated = 5,
  ChallengeResolved = 6,
  Preview = 7,
  /** An event of the system session (session 0): logins held at connect, failed factors. */
  System = 8,
}

/**
 * JSON text, or the number of a dictionary entry holding it (repeated classifications and allow decisions
 * travel to the writer once; see dictionary.ts).
 */
export type JsonRef = string | number;

/** index, tag, sqlstate, message, skipped, durationMs, readOnlyRefused (see StatementOutcome). */
export type OutcomeFields = [index: number, tag: string | null, sqlstate: string | null, message: string | null, skipped: boolean, durationMs: number, readOnlyRefused: boolean];

export type StartRecord = [
  kind: Rec.Start,
  session: number,
  sessionSeq: number,
  time: number,
  connection: string,
  user: string,
  database: string,
  application: string,
  client: string,
  tls: boolean,
  serverPid: number,
  /** The database the server was asked for, when it differs from the one the client named (a route). */
  serverDatabase: string | null,
];

export type EndRecord = [kind: Rec.End, session: number, sessionSeq: number, time: number, durationMs: number, bytesIn: number, bytesOut: number, reason: string];

export type StatementRecord = [
  kind: Rec.Statement,
  session: number,
  sessionSeq: number,
  time: number,
  sql: string,
  /** One per statement of the message; a single one unwrapped. */
  classifications: JsonRef | JsonRef[],
  decision: JsonRef,
  params: (string | null)[] | null,
  action: 'allow' | 'step-up' | 'deny',
  /** The first outcome, in place: index -1 until there is one. */
  index: number,
  tag: string | null,
  sqlstate: string | null,
  message: string | null,
  skipped: boolean,
  durationMs: number,
  more: OutcomeFields[] | null,
  readOnlyRefused: boolean,
];

/** Slots of the first outcome in a statement record. */
export const enum S {
  Index = 9,
  Tag = 10,
  Sqlstate = 11,
  Message = 12,
  Skipped = 13,
  DurationMs = 14,
  More = 15,
  ReadOnlyRefused = 16,
}

export type OutcomeRecord = [kind: Rec.Outcome, session: number, sessionSeq: number, time: number, statement: number, ...outcome: OutcomeFields];

export type ChallengeCreatedRecord = [kind: Rec.ChallengeCreated, session: number, sessionSeq: number, time: number, statement: number, challenge: string];

/** A HoldOutcome as plain data (it crosses to the worker thread). */
export interface PlainHoldOutcome {
  status: string;
  approvers?: { user: string; credentialId: string | null; factor: string | null; passkey?: string; signed?: SignedAssertion }[];
  grant?: boolean;
  by?: string;
  reason?: string;
}

export type ChallengeResolvedRecord = [
  kind: Rec.ChallengeResolved,
  session: number,
  sessionSeq: number,
  time: number,
  statement: number,
  challenge: string | null,
  outcome: PlainHoldOutcome,
];

/** A PreviewReport as plain data (see src/proxy/preview.ts). */
export type PlainPreview =
  | { status: 'ran'; tags: string[]; rows: number; locks: string[]; notices: string[] }
  | { status: 'failed'; error: { code: string; message: string } }
  | { status: 'unavailable'; reason: string; estimatedRows?: number };

/** The decision made again with the rows a preview counted (rules on `rows` and `max_rows`). */
export interface PlainRedecision {
  action: string;
  rule: string | null;
  file: string | null;
  reason: string;
  rows: { count: number; estimate: boolean } | null;
}

export type PreviewRecord = [kind: Rec.Preview, session: number, sessionSeq: number, time: number, statement: number, preview: PlainPreview, decision: PlainRedecision | null];

/** The events of the system session (session 0). */
export type SystemEventKind = 'login.held' | 'login.resolved' | 'factor.failed' | 'notify.delivered' | 'notify.failed' | 'passkey.enrolled' | 'passkey.renamed' | 'passkey.removed';

export type SystemRecord = [kind: Rec.System, session: 0, sessionSeq: 0, time: number, event: SystemEventKind, body: Record<string, unknown>];

export type AuditRecord = StartRecord | EndRecord | StatementRecord | OutcomeRecord | ChallengeCreatedRecord | ChallengeResolvedRecord | PreviewRecord | SystemRecord;

/** The event kind each record becomes. */
export const RECORD_KINDS: Record<Rec, string> = {
  [Rec.Start]: 'connection.start',
  [Rec.End]: 'connection.end',
  [Rec.Statement]: 'statement',
  [Rec.Outcome]: 'outcome',
  [Rec.ChallengeCreated]: 'challenge.created',
  [Rec.ChallengeResolved]: 'challenge.resolved',
  [Rec.Preview]: 'preview',
  [Rec.System]: 'system',
};

/** The first outcome of a statement record, as outcome fields (null when it has none yet). */
export function firstOutcome(r: StatementRecord): OutcomeFields | null {
  if (r[S.Index] < 0) return null;
  return [r[S.Index], r[S.Tag], r[S.Sqlstate], r[S.Message], r[S.Skipped], r[S.DurationMs], r[S.ReadOnlyRefused]];
}
