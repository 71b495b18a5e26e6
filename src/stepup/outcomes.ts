/**
 * What an approved statement did, for the console's "Recently decided": a pass-through audit sink that
 * hands the outcome of every held statement (command tag, error, skipped) to the broker as the audit trail
 * records it. The same record the trail keeps is what approvers see, so the two cannot disagree, and the
 * proxy needs no second path for it.
 *
 * Invariants: every call reaches the inner sink unchanged and first (the trail never depends on the
 * console); only statements the rules held are tracked, at most MAX_TRACKED at a time, and each is
 * forgotten once all its outcomes arrived, its hold ended without approval, or its connection closed.
 */
import type { AuditSink, ConnectionFacts, StatementEvent, StatementOutcome } from '../audit/types.js';
import type { PlainPreview } from '../audit/records.js';
import type { Decision } from '../rules/types.js';
import type { HoldOutcome } from './types.js';

const MAX_TRACKED = 2000;

/** What the broker takes (ConsoleBroker.outcome). */
export interface OutcomeListener {
  outcome(challengeId: string, index: number, outcome: StatementOutcome): void;
}

interface Tracked {
  connectionId: string;
  challengeId: string | null;
  /** Statements in the message; outcomes still to come. */
  left: number;
}

export class OutcomeTap implements AuditSink {
  private readonly held = new Map<number, Tracked>();

  constructor(
    readonly inner: AuditSink,
    private readonly listener: OutcomeListener,
  ) {}

  get healthy(): boolean {
    return this.inner.healthy;
  }

  get failure(): string | null {
    return this.inner.failure ?? null;
  }

  connectionStart(facts: ConnectionFacts): void {
    this.inner.connectionStart(facts);
  }

  connectionEnd(connectionId: string, stats: { durationMs: number; bytesIn: number; bytesOut: number; reason: string }): void {
    this.inner.connectionEnd(connectionId, stats);
    for (const [id, t] of this.held) if (t.connectionId === connectionId) this.held.delete(id);
  }

  statement(event: StatementEvent): number {
    const id = this.inner.statement(event);
    if (event.decision.action === 'step-up') {
      if (this.held.size >= MAX_TRACKED) this.held.delete(this.held.keys().next().value!);
      this.held.set(id, { connectionId: event.connectionId, challengeId: null, left: Math.max(1, event.statements.length) });
    }
    return id;
  }

  challengeCreated(statementId: number, challengeId: string): void {
    this.inner.challengeCreated(statementId, challengeId);
    const t = this.held.get(statementId);
    if (t) t.challengeId = challengeId;
  }

  challengeResolved(statementId: number, challengeId: string | null, outcome: HoldOutcome): void {
    this.inner.challengeResolved(statementId, challengeId, outcome);
    // Only an approval that went through the console has a "Recently decided" entry to complete.
    if (outcome.status !== 'approved' || challengeId === null) this.held.delete(statementId);
  }

  preview(statementId: number, report: PlainPreview, decision: Decision | null): void {
    this.inner.preview(statementId, report, decision);
  }

  outcome(statementId: number, index: number, outcome: StatementOutcome): void {
    this.inner.outcome(statementId, index, outcome);
    const t = this.held.get(statementId);
    if (!t) return;
    if (--t.left <= 0) this.held.delete(statementId);
    if (t.challengeId === null) return;
    try {
      this.listener.outcome(t.challengeId, index, outcome);
    } catch {
      // The console's view is a convenience; the trail has the record.
    }
  }

  event(kind: 'login.held' | 'login.resolved' | 'factor.failed', body: Record<string, unknown>): void {
    this.inner.event?.(kind, body);
  }

  durable(): Promise<void> {
    return this.inner.durable();
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}
