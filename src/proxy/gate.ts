/**
 * The single path every statement stepgate forwards goes through: decide (rules) → record (audit) →
 * allow, deny, or hold for step-up. Query, Bind, Execute of an unknown portal and FunctionCall all come here.
 *
 * A hold moves through explicit states:
 *
 *   deciding ──► waiting-for-server ──► [previewing] ──► held ──► released (approved)
 *                      │                     │             └───► rejected (rejected, expired, cancelled, audit failed)
 *                      │                     └──► released (it failed in the preview: the client hears the server's error)
 *                      └──► skipped (an earlier message of the batch failed: the server skips it anyway)
 *
 * `previewing` when the rule asks for a preview and the message can have one (preview.ts): the statement
 * runs in a transaction the frontend controls before anyone is asked; the approver sees its result, and the
 * frontend commits or rolls back by the verdict. A rule on `rows` or `max_rows` previews first and decides
 * again with the count (measureRows): then the preview may end in `released` with nobody asked (the count
 * made it an allow) or `rejected` (a deny, or more rows than `max_rows`).
 *
 * and any state ends in `abandoned` when the session closes (the broker withdraws the challenge). Denials
 * and approvals are on disk before the client hears of them; a held statement is on disk before anyone is
 * asked. Without a healthy audit trail, step-up and deny fail closed; allowed statements follow
 * `audit.on_failure`.
 */
import type { ErrorFields } from '../protocol/backend-messages.js';
import type { Decision, RowsFact, Subject } from '../rules/types.js';
import type { StatementInfo } from '../sql/types.js';
import type { Hold, HoldOutcome } from '../stepup/types.js';
import type { ProxyMetrics } from '../metrics/registry.js';
import type { PreviewReport } from './preview.js';
import type { SessionServices } from './session.js';
import { auditUnavailableError, denyError, heldNotice, holdError, maxRowsError } from './refusals.js';

/** What the gate needs from its session. */
export interface GateHost {
  readonly connectionId: string;
  readonly subject: Subject;
  /** Which terminal this is (client port, backend pid, when it connected): shown on the approval card. */
  readonly terminal?: { clientPort: number | null; serverPid: number | null; connectedAt: number };
  /** The session has closed: stop at the next step. */
  readonly closed: boolean;
  /** Resolves when the server has answered everything forwarded so far. */
  serverIdle(): Promise<void>;
  /** The server is skipping the rest of the current batch (an earlier message failed). */
  readonly skipping: boolean;
  /** Sends a NoticeResponse to the client now. */
  notice(fields: ErrorFields): void;
  /** The hold the client's CancelRequest ends (null when none). */
  setHold(hold: Hold | null): void;
}

/** What the gate uses of the session's services (one definition: session.ts). */
export type GateServices = Pick<SessionServices, 'rules' | 'stepUp' | 'audit' | 'log' | 'auditOnFailure'> & {
  /** Counters for operators: decisions by class, holds waiting and their outcomes. Absent: nothing counted. */
  metrics?: ProxyMetrics;
};

/** One message's worth of statements to judge. */
export interface GateRequest {
  /** The text as the server will read it (for the audit trail). */
  sql: string;
  statements: StatementInfo[];
  params: (string | null)[] | null;
  /** Refused whatever the rules say (a name reserved by stepgate ...): the decision recorded, and the error. */
  refuse?: { decision: Decision; error: ErrorFields };
  /**
   * Runs the statements as a preview (simple Query only). A report other than `unavailable` leaves a preview
   * open that the frontend ends by the verdict.
   */
  preview?: (auditId: number) => Promise<PreviewReport>;
}

export type Verdict =
  | { kind: 'allow'; auditId: number; decision: Decision }
  | { kind: 'refuse'; auditId: number; error: ErrorFields; decision: Decision }
  /** The server will skip the message (its batch failed while the gate waited): record it as skipped. */
  | { kind: 'skip'; auditId: number; decision: Decision }
  /** The session closed while the statement waited. */
  | { kind: 'abandoned'; auditId: number; decision: Decision };

/** The rows a preview counted, or the planner's estimate; null when neither is known. */
function countedRows(preview: PreviewReport): RowsFact | null {
  if (preview.status === 'ran') return { count: preview.rows, estimate: false };
  if (preview.status === 'unavailable' && preview.estimatedRows !== undefined) return { count: preview.estimatedRows, estimate: true };
  return null;
}

/** Only a simple Query is previewed: its replies end at one ReadyForQuery stepgate can hold back. */
const NO_EXTENDED_PREVIEW: PreviewReport = Object.freeze({
  status: 'unavailable',
  reason: 'previews run for simple-protocol statements, and this one came as Parse/Bind/Execute',
});

export type HoldState = 'deciding' | 'waiting-for-server' | 'previewing' | 'held' | 'released' | 'rejected' | 'skipped' | 'abandoned';

export class Gate {
  /** Where the current hold is (for logs and tests); 'deciding' when none. */
  state: HoldState = 'deciding';

  constructor(
    private readonly host: GateHost,
    private readonly services: GateServices,
  ) {}

  /** Whether the rules let these statements through without asking (nothing recorded). */
  wouldAllow(statements: StatementInfo[]): boolean {
    this.host.subject.now = new Date();
    return this.services.rules().decide(statements, this.host.subject).action === 'allow';
  }

  /** Decides one message. Allowed statements with a healthy audit trail return at once (no Promise). */
  judge(request: GateRequest): Verdict | Promise<Verdict> {
    const host = this.host;
    host.subject.now = new Date();
    const decision = request.refuse?.decision ?? this.services.rules().decide(request.statements, host.subject);
    const auditId = this.services.audit.statement({
      connectionId: host.connectionId,
      sql: request.sql,
      statements: request.statements,
      decision,
      params: request.params,
    });
    this.services.metrics?.statementsDecided(request.statements, decision.action);
    if (decision.action === 'allow') {
      const refusal = this.auditRefusal(request.statements);
      return refusal ? { kind: 'refuse', auditId, error: refusal, decision } : { kind: 'allow', auditId, decision };
    }
    if (decision.measureRows === true) return this.measureRows(request, decision, auditId);
    if (decision.action === 'deny') return this.deny(request, decision, auditId);
    return this.stepUp(request, decision, auditId);
  }

  /**
   * A rule looks at the rows the message affects (`rows`, `max_rows`): count them with a preview (or the
   * planner's estimate where none is possible), then decide again with the count. The first decision was made
   * with the rows unknown, which matches only rules that deny or ask, so the count can only make it milder.
   */
  private async measureRows(request: GateRequest, first: Decision, auditId: number): Promise<Verdict> {
    const host = this.host;
    const audit = this.services.audit;
    this.state = 'waiting-for-server';
    await host.serverIdle();
    if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision: first });
    if (host.skipping) return this.end('skipped', { kind: 'skip', auditId, decision: first });
    if (!audit.healthy) return this.end('rejected', { kind: 'refuse', auditId, decision: first, error: auditUnavailableError(audit.failure) });
    this.state = 'previewing';
    const preview = request.preview === undefined ? NO_EXTENDED_PREVIEW : await request.preview(auditId);
    if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision: first });
    if (preview.status === 'failed') {
      audit.preview(auditId, preview, null);
      return this.end('released', { kind: 'allow', auditId, decision: first });
    }
    const rows = countedRows(preview);
    host.subject.now = new Date();
    const decision = this.services.rules().decide(request.statements, host.subject, rows);
    audit.preview(auditId, preview, decision);
    if (decision.action === 'allow') return this.end('released', { kind: 'allow', auditId, decision });
    if (decision.action === 'deny') return this.deny(request, decision, auditId);
    if (decision.maxRows !== undefined && rows !== null && !rows.estimate && rows.count > decision.maxRows) {
      return this.deny(request, decision, auditId, maxRowsError(decision, rows.count));
    }
    return this.stepUp(request, decision, auditId, preview);
  }

  private async deny(request: GateRequest, decision: Decision, auditId: number, error?: ErrorFields): Promise<Verdict> {
    // Refused either way; the record of it should be on disk first.
    await this.durable();
    if (this.host.closed) return { kind: 'abandoned', auditId, decision };
    return { kind: 'refuse', auditId, error: error ?? request.refuse?.error ?? denyError(decision, request.statements), decision };
  }

  /** `measured`: the preview measureRows() ran (the server was idle then, and nothing has been sent since). */
  private async stepUp(request: GateRequest, decision: Decision, auditId: number, measured?: PreviewReport): Promise<Verdict> {
    const host = this.host;
    const audit = this.services.audit;
    try {
      // First let the server answer what came before. If an earlier message of this batch failed, the
      // server will skip this statement, so nobody needs to be asked.
      this.state = 'waiting-for-server';
      if (measured === undefined) await host.serverIdle();
      if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision });
      if (host.skipping) return this.end('skipped', { kind: 'skip', auditId, decision });
      // Without an audit trail nobody can later prove who approved what: fail closed.
      if (!audit.healthy) return this.end('rejected', { kind: 'refuse', auditId, decision, error: auditUnavailableError(audit.failure) });

      let preview: PreviewReport | null = measured ?? null;
      if (measured === undefined && decision.preview === true) {
        this.state = 'previewing';
        preview = request.preview === undefined ? NO_EXTENDED_PREVIEW : await request.preview(auditId);
        if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision });
        audit.preview(auditId, preview, null);
        // Nothing changed and nothing to approve: the client gets the server's own error.
        if (preview.status === 'failed') return this.end('released', { kind: 'allow', auditId, decision });
      }

      const hold = this.services.stepUp.hold({
        connectionId: host.connectionId,
        user: host.subject.user,
        groups: host.subject.groups,
        database: host.subject.database,
        application: host.subject.application,
        clientAddress: host.subject.clientAddress,
        ...host.terminal,
        statements: request.statements,
        sql: request.sql,
        params: request.params,
        decision,
        preview,
      });
      const metrics = this.services.metrics;
      let waitingSince = -1;
      if (hold.challengeId) {
        host.setHold(hold);
        audit.challengeCreated(auditId, hold.challengeId);
        // The held statement is on disk before anyone is asked (it survives a crash during the hold).
        if (!(await this.durable())) {
          hold.end('withdrawn');
          if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision });
          return this.end('rejected', { kind: 'refuse', auditId, decision, error: auditUnavailableError(audit.failure) });
        }
        if (host.closed) return this.end('abandoned', { kind: 'abandoned', auditId, decision });
        this.state = 'held';
        host.notice(heldNotice(request.statements, decision, hold.url, preview));
        if (metrics) waitingSince = metrics.holdWaiting();
      }
      let outcome: HoldOutcome | null = null;
      try {
        outcome = await hold.outcome;
      } finally {
        host.setHold(null);
        if (waitingSince >= 0) metrics!.holdEnded(waitingSince, outcome);
      }
      metrics?.holdOutcome(hold.challengeId === null && outcome.status === 'approved' ? 'granted' : outcome.status);
      audit.challengeResolved(auditId, hold.challengeId, outcome);
      // An approval is released only once it is on record.
      const recorded = await this.durable();
      if (host.closed || outcome.status === 'withdrawn') return this.end('abandoned', { kind: 'abandoned', auditId, decision });
      if (!recorded) return this.end('rejected', { kind: 'refuse', auditId, decision, error: auditUnavailableError(audit.failure) });
      if (outcome.status === 'approved') return this.end('released', { kind: 'allow', auditId, decision });
      return this.end('rejected', { kind: 'refuse', auditId, decision, error: holdError(outcome, decision) });
    } catch (err) {
      this.state = 'deciding';
      throw err;
    }
  }

  private end(state: HoldState, verdict: Verdict): Verdict {
    this.state = state;
    return verdict;
  }

  /** Waits until the audit trail has committed; false (and a loud log line) when it cannot. */
  private async durable(): Promise<boolean> {
    try {
      await this.services.audit.durable();
      return true;
    } catch (err) {
      this.services.log.error('audit.unavailable', { connection: this.host.connectionId, error: (err as Error).message });
      return false;
    }
  }

  /**
   * With the audit store failed, `audit.on_failure` decides for statements the rules allow: `close`
   * refuses them all, `allow_reads` lets through what changes nothing (reads, transaction control,
   * ordinary settings).
   */
  private auditRefusal(statements: StatementInfo[]): ErrorFields | null {
    const audit = this.services.audit;
    if (audit.healthy) return null;
    const harmless = (s: StatementInfo): boolean => s.classes.every((c) => c === 'read' || c === 'transaction' || c === 'session');
    if (this.services.auditOnFailure === 'allow_reads' && statements.every(harmless)) return null;
    return auditUnavailableError(audit.failure);
  }
}
