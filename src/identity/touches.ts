/**
 * `first_access` needs to know which tables a person has touched. The proxy's statement path already tells
 * the audit trail about every statement and how its hold ended, so this sink passes everything on to the
 * real one and, on the way, remembers the tables of each statement that was let through (allowed, or
 * approved after a hold) for its user: a Set lookup per table, and a batched SQLite insert the first
 * time only (SignalRecords.touched). The statement path itself is unchanged.
 */
import type { AuditSink, ConnectionFacts, StatementEvent, StatementOutcome } from '../audit/types.js';
import type { SystemEventKind } from '../audit/records.js';
import type { PreviewReport } from '../proxy/preview.js';
import type { Decision } from '../rules/types.js';
import type { HoldOutcome } from '../stepup/types.js';
import type { SignalRecords } from './signals.js';

/** Held statements whose tables count once approved; bounded (the oldest are forgotten first). */
const MAX_HELD = 10_000;

export class TouchRecordingSink implements AuditSink {
  private readonly connections = new Map<string, { user: string; database: string; refs: WeakSet<object> }>();
  private readonly held = new Map<number, { user: string; database: string; refs: WeakSet<object>; statements: StatementEvent['statements'] }>();

  constructor(
    readonly inner: AuditSink,
    private readonly records: SignalRecords,
  ) {}

  get healthy(): boolean {
    return this.inner.healthy;
  }

  get failure(): string | null {
    return this.inner.failure ?? null;
  }

  connectionStart(facts: ConnectionFacts): void {
    this.connections.set(facts.connectionId, { user: facts.user, database: facts.database, refs: this.records.knownRefs(facts.user, facts.database) });
    this.inner.connectionStart(facts);
  }

  connectionEnd(connectionId: string, stats: { durationMs: number; bytesIn: number; bytesOut: number; reason: string }): void {
    this.connections.delete(connectionId);
    this.inner.connectionEnd(connectionId, stats);
  }

  statement(event: StatementEvent): number {
    const id = this.inner.statement(event);
    const who = this.connections.get(event.connectionId);
    if (who) {
      const action = event.decision.action;
      if (action === 'allow') {
        const statements = event.statements;
        for (let i = 0; i < statements.length; i++) {
          const tables = statements[i]!.tables;
          if (tables.length) this.records.touched(who.user, who.database, tables, who.refs);
        }
      } else if (action === 'step-up') {
        if (this.held.size >= MAX_HELD) this.held.delete(this.held.keys().next().value!);
        this.held.set(id, { ...who, statements: event.statements });
      }
    }
    return id;
  }

  challengeCreated(statementId: number, challengeId: string): void {
    this.inner.challengeCreated(statementId, challengeId);
  }

  challengeResolved(statementId: number, challengeId: string | null, outcome: HoldOutcome): void {
    const held = this.held.get(statementId);
    this.held.delete(statementId);
    if (held && outcome.status === 'approved') {
      for (const s of held.statements) if (s.tables.length) this.records.touched(held.user, held.database, s.tables, held.refs);
    }
    this.inner.challengeResolved(statementId, challengeId, outcome);
  }

  preview(statementId: number, report: PreviewReport, decision: Decision | null): void {
    this.inner.preview(statementId, report, decision);
  }

  outcome(statementId: number, index: number, outcome: StatementOutcome): void {
    this.inner.outcome(statementId, index, outcome);
  }

  event(kind: SystemEventKind, body: Record<string, unknown>): void {
    this.inner.event?.(kind, body);
  }

  durable(): Promise<void> {
    return this.inner.durable();
  }

  async close(): Promise<void> {
    this.records.flush();
    await this.inner.close?.();
  }
}
