/**
 * What the proxy tells the audit trail. The session calls these on its hot path: implementations must
 * not block (queue and commit in batches), except `durable()` which a session awaits before it answers a
 * held, approved, rejected or denied statement.
 */
import type { Decision } from '../rules/types.js';
import type { StatementInfo } from '../sql/types.js';
import type { HoldOutcome } from '../stepup/types.js';
import type { PlainPreview, SystemEventKind } from './records.js';

export interface ConnectionFacts {
  connectionId: string;
  user: string;
  /** The database the client asked for (what rules match). */
  database: string;
  /** The server's database the session is connected to, when the configuration routes it to another name. */
  serverDatabase?: string;
  application: string;
  clientAddress: string;
  tls: boolean;
  serverPid: number;
}

export interface StatementEvent {
  connectionId: string;
  /** Text with secrets redacted by the sink. */
  sql: string;
  statements: StatementInfo[];
  decision: Decision;
  /** Bind parameters as text where available; only recorded when configured. */
  params: (string | null)[] | null;
}

export interface StatementOutcome {
  /** Command tag (e.g. "DELETE 3"), '' for an empty query, null when the statement failed or was skipped. */
  tag: string | null;
  sqlstate: string | null;
  message: string | null;
  skipped: boolean;
  durationMs: number;
  /** The server refused a write (25006) because stepgate ran the statement read-only: a hidden write stopped. */
  readOnlyRefused?: boolean;
}

export interface AuditSink {
  connectionStart(facts: ConnectionFacts): void;
  connectionEnd(connectionId: string, stats: { durationMs: number; bytesIn: number; bytesOut: number; reason: string }): void;
  /** Returns an id the later events of this statement refer to. */
  statement(event: StatementEvent): number;
  challengeCreated(statementId: number, challengeId: string): void;
  challengeResolved(statementId: number, challengeId: string | null, outcome: HoldOutcome): void;
  /**
   * What a held statement did in its preview (before anyone was asked). `decision`: the decision made again
   * with the rows the preview counted (rules on `rows` and `max_rows`); null when the first one stands.
   */
  preview(statementId: number, report: PlainPreview, decision: Decision | null): void;
  /** `index`: the statement's position in its message. */
  outcome(statementId: number, index: number, outcome: StatementOutcome): void;
  /**
   * An event that belongs to no statement, written to the trail's system session (hash-chained like the
   * others): `login.held`, `login.resolved` (a login held by a rule with `on: connect`), `factor.failed`
   * (a wrong, replayed or rate-limited TOTP or recovery code; never the code), `notify.delivered` and
   * `notify.failed` (a webhook delivery attempt; never its secret). Optional.
   */
  event?(kind: SystemEventKind, body: Record<string, unknown>): void;
  /** Resolves once everything recorded so far is committed; rejects when the store failed. */
  durable(): Promise<void>;
  /** False when the store failed: the session fails closed (see Config.audit.onFailure for the rest). */
  readonly healthy: boolean;
  /** Why `healthy` is false (null when healthy). Optional. */
  readonly failure?: string | null;
  /** Writes what is pending and stops (the app closes the sink it opened). Optional. */
  close?(): Promise<void>;
}

/** Records nothing (rules explain, tests that do not look at the audit trail). */
export class NoAudit implements AuditSink {
  readonly healthy = true;
  private next = 1;
  connectionStart(): void {}
  connectionEnd(): void {}
  statement(): number {
    return this.next++;
  }
  challengeCreated(): void {}
  challengeResolved(): void {}
  preview(): void {}
  outcome(): void {}
  durable(): Promise<void> {
    return Promise.resolve();
  }
}
