/**
 * Client → server: one handler per client message type. Each classifies what the message will run, plans
 * read-only enforcement for it (read-only.ts), has the gate judge it, and forwards it (with stepgate's own
 * statements around it) or refuses it. A handler returns a Promise when the message must wait (a catalog
 * lookup, a step-up); the session holds later messages back until it settles.
 *
 * Decisions happen where the server starts running a statement's code: a simple Query, a Bind (parameter
 * coercion and planning run there, so a refused statement has no effect at all), an Execute of a portal
 * stepgate did not see bound, a FunctionCall. An Execute of a portal decided at its Bind (or DECLAREd by a
 * judged statement) continues what was decided.
 *
 * Refusal must mean exactly what a server error means, and the server must end in the state the client
 * believes. So stepgate never answers in the server's place: it sends the server a message that fails
 * (Execute of a portal that does not exist), and the reply state swaps the server's error for stepgate's at
 * exactly that position of the reply stream. Inside BEGIN the transaction is then aborted; in a pipeline
 * nothing of the implicit transaction is committed; the server skips the rest of the batch up to Sync, and
 * so does stepgate.
 */
import { randomBytes } from 'node:crypto';
import type { AuditSink } from '../audit/types.js';
import * as backend from '../protocol/backend-messages.js';
import { HEAD, PART, TAIL, type FrameKind } from '../protocol/frame-reader.js';
import * as frontend from '../protocol/frontend-messages.js';
import { ClientType } from '../protocol/frontend-messages.js';
import { ProtocolViolation } from '../protocol/payload-reader.js';
import type { Decision } from '../rules/types.js';
import { unknownStatement } from '../sql/analysis.js';
import { withParameterTypes } from '../sql/classify.js';
import type { Grammar } from '../sql/grammar.js';
import { quoteIdent } from '../sql/quote.js';
import type { ClassifyContext, ClassifyResult, StatementInfo } from '../sql/types.js';
import { classifyWithCatalog, type FunctionCatalog } from './catalog/index.js';
import type { Gate, Verdict } from './gate.js';
import { Injector, isReservedName, Style } from './injection.js';
import {
  afterExtendedStatement,
  Injection,
  Mode,
  needsReadWrite,
  planExtended,
  planQuery,
  type Plan,
  type TransactionModel,
  type TransactionState,
} from './read-only.js';
import { Capture, Entry, ReadOnlyCause, type OwnQueryHandlers, type QueryPending, type ReplyState, type ReplyTracker } from './reply-state.js';
import { ESTIMABLE, EstimateSql, planRows, PreviewSql, previewBlocker, ranReport, type PreviewReport } from './preview.js';
import { decodeSql } from './sql-text.js';
import type { Outbound } from './outbound.js';
import type { ProxyMetrics } from '../metrics/registry.js';
import type { SessionServices } from './session.js';
import type { PreparedStatement, StatementRegistry, Undo } from './statement-registry.js';

/** What the frontend uses of the session's services (one definition: session.ts). */
export type FrontendServices = Pick<SessionServices, 'classify' | 'classifyText' | 'audit' | 'log' | 'limits' | 'recordParams' | 'enforceReads'> & {
  /** Counters for operators (catalog errors); absent: nothing counted. */
  metrics?: Pick<ProxyMetrics, 'catalogError'>;
};

/** What the frontend needs from its session. */
export interface FrontendHost {
  readonly connectionId: string;
  readonly closed: boolean;
  /** Server settings that change how SQL text is read, as last reported. */
  readonly parameters: Map<string, string>;
  /** The grammar of the server's PostgreSQL major (undefined: PostgreSQL 18's). */
  readonly grammar: Grammar | undefined;
  readonly toServer: Outbound;
  readonly toClient: Outbound;
  close(reason: string): void;
  /** Client messages received but not processed yet, in order (for look-ahead within a batch). */
  pending(): Iterable<PendingMessage>;
}

/** A client message waiting in the session's inbox: the whole message is buf[start, end). */
export interface PendingMessage {
  type: number;
  buf: Buffer;
  start: number;
  end: number;
}

/** SQL bytes as the server will read them, classified; `invalid` when the server would refuse the bytes. */
interface Classified {
  sql: string;
  result: ClassifyResult;
  invalid: backend.ErrorFields | null;
}

type Handled = Promise<void> | void;

/** A preview that ran (or failed) and waits for the gate's verdict (see preview.ts). */
interface OpenPreview {
  /** Inside the client's transaction (savepoint) rather than stepgate's own BEGIN. */
  inBlock: boolean;
  capture: Capture;
  /** idle_in_transaction_session_timeout before the preview paused it (restored after RELEASE). */
  idleTimeout: string | null;
  report: PreviewReport;
  /** The statements' audit trackers, started when the preview ran. */
  trackers: ReplyTracker[];
}

/** The transaction stepgate opens for a preview in autocommit: read-write, no snapshot yet. */
const PREVIEW_BLOCK: TransactionState = Object.freeze({ kind: 'block', readOnly: false, clientReadOnly: false, snapshot: false, region: false, failed: false });

/** Audit bookkeeping for one statement's reply. */
class StatementTracker implements ReplyTracker {
  private readonly started = performance.now();
  constructor(
    private readonly audit: AuditSink,
    readonly id: number,
    /** Position of the statement in its message. */
    readonly index: number,
  ) {}
  onComplete(tag: string | null): void {
    this.audit.outcome(this.id, this.index, { tag: tag ?? 'PORTAL SUSPENDED', sqlstate: null, message: null, skipped: false, durationMs: this.elapsed() });
  }
  onError(sqlstate: string, message: string, readOnly = false): void {
    this.audit.outcome(this.id, this.index, { tag: null, sqlstate, message, skipped: false, durationMs: this.elapsed(), readOnlyRefused: readOnly });
  }
  onSkipped(): void {
    this.audit.outcome(this.id, this.index, { tag: null, sqlstate: null, message: null, skipped: true, durationMs: this.elapsed() });
  }
  private elapsed(): number {
    return Math.round((performance.now() - this.started) * 1000) / 1000;
  }
}

export class Frontend {
  /** The portal of the failing Execute that stands for a refused message: a name no client can use. */
  private readonly refusalPortal = Buffer.from(`stepgate_refused_${randomBytes(8).toString('hex')}\0`, 'latin1');
  /** The first statement waited for the catalog's shadowed names (whether or not they could be loaded). */
  private catalogWaited = false;
  /** Injections to send once the client has ended a COPY FROM STDIN. */
  private afterCopy: Injection[] = [];
  /** Injections to send after the Sync that ends the current batch. */
  private afterSync: Injection[] = [];
  /** The preview of the Query being judged, until the gate's verdict ends it. */
  private openPreview: OpenPreview | null = null;

  constructor(
    private readonly host: FrontendHost,
    private readonly services: FrontendServices,
    private readonly replies: ReplyState,
    private readonly registry: StatementRegistry,
    private readonly model: TransactionModel,
    private readonly injector: Injector,
    private readonly gate: Gate,
    private readonly catalog: FunctionCatalog | null,
  ) {}

  /** Processes one client message; a Promise when it must wait. */
  onMessage(type: number, buf: Buffer, start: number, end: number, kind: FrameKind): Handled {
    const replies = this.replies;
    if (kind === HEAD || kind === PART || kind === TAIL) {
      // A large CopyData: relay it as it arrives (unless its batch failed, like any other message).
      if (!replies.skipping) this.host.toServer.queue(buf, start, end);
      return;
    }
    if (replies.skipping && type !== ClientType.Sync && type !== ClientType.Terminate) {
      // The server is skipping messages up to Sync after an error; so do we (no decisions for statements
      // that will not run).
      return;
    }
    switch (type) {
      case ClientType.Query:
        return this.onQuery(buf, start, end);
      case ClientType.Parse:
        return this.onParse(buf, start, end);
      case ClientType.Bind:
        return this.onBind(buf, start, end);
      case ClientType.Execute:
        return this.onExecute(buf, start, end);
      case ClientType.Describe:
        return this.onDescribe(buf, start, end);
      case ClientType.Close:
        return this.onClose(buf, start, end);
      case ClientType.Sync:
        return this.onSync(buf, start, end);
      case ClientType.Flush:
        frontend.expectEmpty(buf, start, end);
        this.host.toServer.queue(buf, start, end);
        return;
      case ClientType.FunctionCall:
        return this.onFunctionCall(buf, start, end);
      case ClientType.CopyData:
        this.host.toServer.queue(buf, start, end);
        return;
      case ClientType.CopyDone:
      case ClientType.CopyFail:
        replies.copyEnded();
        this.host.toServer.queue(buf, start, end);
        if (this.afterCopy.length > 0) {
          const after = this.afterCopy;
          this.afterCopy = [];
          this.inject(after, Style.Synced);
        }
        return;
      case ClientType.Terminate:
        this.host.toServer.queue(buf, start, end);
        this.host.toServer.flush();
        this.host.close('client terminated the session');
        return;
      default:
        throw new ProtocolViolation(`invalid frontend message type ${type}`);
    }
  }

  // ───────────────────────────── simple Query ─────────────────────────────

  private onQuery(buf: Buffer, start: number, end: number): Handled {
    const bytes = frontend.readQuery(buf, start, end);
    const classified = this.classifyBytes(bytes);
    // A large text's classification (in the worker) may outlast the connection: nothing to decide then.
    if (classified instanceof Promise) return classified.then((c) => (this.host.closed ? undefined : this.judgeQuery(buf, start, end, c)));
    return this.judgeQuery(buf, start, end, classified);
  }

  private judgeQuery(buf: Buffer, start: number, end: number, { sql, result, invalid }: Classified): Handled {
    if (invalid) return this.rejectQuery(invalid);
    const classified = result.statements;
    if (classified.length === 0) return this.forwardQuery(buf, start, end, [], null, this.planFor(classified)); // only blanks or comments
    const plan = this.planFor(classified);
    const statements = escalate(classified, plan);
    const verdict = this.gate.judge({
      sql,
      statements,
      params: null,
      refuse: reservedRefusal(statements),
      preview: (auditId) => this.runPreview(buf, start, end, statements, auditId),
    });
    const done = (v: Verdict): Handled => {
      if (this.openPreview !== null) return this.finishPreview(v);
      if (v.kind === 'allow') {
        // After a hold the transaction may have moved on: plan again for the state it is in now.
        return this.forwardQuery(buf, start, end, statements, v.auditId, verdict instanceof Promise ? this.planFor(statements) : plan);
      }
      if (v.kind === 'refuse') return this.rejectQuery(v.error, this.trackers(v.auditId, statements.length));
      if (v.kind === 'skip') for (const t of this.trackers(v.auditId, statements.length)) t.onSkipped();
    };
    return verdict instanceof Promise ? verdict.then(done) : done(verdict);
  }

  // ───────────────────────────── previews (preview.ts) ─────────────────────────────

  /**
   * Runs a held Query inside a transaction stepgate controls and holds its replies back (the server is idle:
   * the gate waited). Leaves `openPreview` set for finishPreview() when there is something to finish.
   */
  private async runPreview(buf: Buffer, start: number, end: number, statements: StatementInfo[], auditId: number): Promise<PreviewReport> {
    const before = this.model.state;
    const blocker = previewBlocker(statements, before);
    if (blocker !== null) {
      const estimatedRows = await this.estimateRows(statements, before);
      return estimatedRows === null ? { status: 'unavailable', reason: blocker } : { status: 'unavailable', reason: blocker, estimatedRows };
    }
    const inBlock = before.kind === 'block';
    if (!inBlock) {
      void this.ownQuery(PreviewSql.beginAutocommit);
      this.model.state = PREVIEW_BLOCK;
    }
    const plan = this.planFor(statements);
    if (plan.after.length > 0) {
      // Not for the statements previewBlocker() lets through; never send a preview the plan cannot bracket.
      if (!inBlock) await this.ownQuery(PreviewSql.rollbackAutocommit);
      return { status: 'unavailable', reason: 'stepgate would have to run statements of its own after it' };
    }
    if (plan.before.length > 0) this.inject(plan.before, Style.QueryText);
    if (inBlock) void this.ownQuery(PreviewSql.beginInBlock);
    let idleTimeout: string | null = null;
    void this.ownQuery(PreviewSql.pauseIdleTimeout, { onRow: (row) => (idleTimeout = row[0] ?? null) });

    const capture = new Capture(this.services.limits.previewMaxBytes);
    const entry = Entry.query([], this.readOnlyCauses(plan, this.model.state, statements), capture);
    this.registry.dropUnnamed();
    for (const s of statements) if (s.changesParsing) entry.changesParsing = true;
    this.replies.expect(entry, true);
    this.host.toServer.queue(buf, start, end);
    this.model.apply(plan);
    const locks: string[] = [];
    await this.ownQuery(PreviewSql.locks, { onRow: (row) => row[0] !== null && locks.push(row[0]) });

    const trackers = this.trackers(auditId, statements.length);
    if (capture.overflowed || capture.error?.code === '25001') {
      await this.ownQuery(inBlock ? PreviewSql.rollbackInBlock : PreviewSql.rollbackAutocommit);
      const reason = capture.overflowed
        ? `its reply is larger than limits.preview_max_size (${this.services.limits.previewMaxBytes} bytes)`
        : capture.error!.message;
      return { status: 'unavailable', reason };
    }
    const report: PreviewReport = capture.error !== null ? { status: 'failed', error: capture.error } : ranReport(capture.tags, locks, capture.notices);
    this.openPreview = { inBlock, capture, idleTimeout, report, trackers };
    return report;
  }

  /** Ends an open preview as the gate decided: commit and relay, or roll back and refuse. */
  private async finishPreview(v: Verdict): Promise<void> {
    const p = this.openPreview!;
    this.openPreview = null;
    if (v.kind === 'abandoned' || this.host.closed) return; // the server rolls back when the connection closes
    const { capture, trackers } = p;
    if (v.kind === 'allow' && p.report.status === 'ran') {
      let failure: backend.ErrorFields | null = null;
      const onError = (e: backend.ErrorFields): void => void (failure ??= e);
      let ended = this.ownQuery(p.inBlock ? PreviewSql.commitInBlock : PreviewSql.commitAutocommit, { onError });
      if (p.inBlock && p.idleTimeout !== null) ended = this.ownQuery(PreviewSql.restoreIdleTimeout(p.idleTimeout), { onError });
      const status = await ended;
      if (this.host.closed) return;
      if (failure !== null) {
        // COMMIT failed (a deferred constraint, a serialization failure): that is the client's answer.
        const error: backend.ErrorFields = failure;
        this.host.toClient.write(backend.errorResponse(error));
        trackers[0]?.onError(error.code, error.message);
        for (let i = 1; i < trackers.length; i++) trackers[i]!.onSkipped();
      } else {
        this.host.toClient.write(capture.replies());
        for (let i = 0; i < trackers.length; i++) trackers[i]!.onComplete(capture.tags[i] ?? '');
      }
      this.host.toClient.write(backend.readyForQuery(status));
      return;
    }
    const status = await this.ownQuery(p.inBlock ? PreviewSql.rollbackInBlock : PreviewSql.rollbackAutocommit);
    if (this.host.closed) return;
    if (v.kind === 'allow' && p.report.status === 'failed') {
      // It failed in the preview: nothing to approve, and the client hears the server's own answer.
      const error = p.report.error;
      if (p.inBlock) return this.rejectQuery(error, this.failedTrackers(trackers, capture.tags.length)); // aborts the block, as the error did
      for (let i = 0; i < capture.tags.length; i++) trackers[i]?.onComplete(capture.tags[i]!);
      trackers[capture.tags.length]?.onError(error.code, error.message);
      for (let i = capture.tags.length + 1; i < trackers.length; i++) trackers[i]!.onSkipped();
      this.host.toClient.write(capture.replies());
      this.host.toClient.write(backend.readyForQuery(status));
      return;
    }
    const error = v.kind === 'refuse' ? v.error : { severity: 'ERROR' as const, code: '42501', message: 'stepgate: the statement was not released' };
    return this.rejectQuery(error, trackers);
  }

  /**
   * The planner's estimate of the rows one statement affects (`EXPLAIN`, without ANALYZE: nothing runs), for
   * rules on `rows` where no preview is possible; null when there is none. Planning may evaluate immutable
   * functions, which PostgreSQL does not check: it runs read-only (its own read-only transaction, or a
   * read-only savepoint in the client's), and stepgate's statements leave the transaction as it was.
   */
  private async estimateRows(statements: readonly StatementInfo[], state: TransactionState): Promise<number | null> {
    const s = statements.length === 1 ? statements[0]! : null;
    // Only a statement read with certainty: its text is sent again behind EXPLAIN, and one the server may read
    // differently (standard_conforming_strings off with a backslash) could end stepgate's read-only
    // transaction and run statements of its own (test/security/estimate.test.ts).
    if (s === null || s.classes.includes('unknown') || !ESTIMABLE.has(s.command) || state.kind === 'implicit' || (state.kind === 'block' && state.failed)) return null;
    const inBlock = state.kind === 'block';
    let plan: string | null = null;
    let failed = false;
    void this.ownQuery(inBlock ? EstimateSql.beginInBlock : EstimateSql.beginAutocommit);
    await this.ownQuery(EstimateSql.explain(s.sql), { onRow: (row) => (plan = row[0] ?? null), onError: () => void (failed = true) });
    await this.ownQuery(inBlock ? PreviewSql.rollbackInBlock : PreviewSql.rollbackAutocommit);
    return failed || plan === null ? null : planRows(plan);
  }

  /** Trackers for a refusal that stands for a failure after `completed` statements had completed. */
  private failedTrackers(trackers: ReplyTracker[], completed: number): ReplyTracker[] {
    for (let i = 0; i < completed && i < trackers.length; i++) trackers[i]!.onSkipped();
    return trackers.slice(completed);
  }

  /** Sends one simple Query of stepgate's own; resolves with the transaction status after it. */
  private ownQuery(sql: string, handlers: OwnQueryHandlers = {}): Promise<number> {
    return new Promise((resolve) => {
      this.host.toServer.write(
        this.injector.query(sql, {
          ...handlers,
          onDone: (status, failed) => {
            handlers.onDone?.(status, failed);
            resolve(status);
          },
        }),
      );
    });
  }

  private planFor(statements: readonly StatementInfo[]): Plan {
    if (!this.services.enforceReads) return noPlan(this.model.state);
    return planQuery(this.model.state, statements, this.model.context(this.replies.clientIdle));
  }

  private forwardQuery(buf: Buffer, start: number, end: number, statements: StatementInfo[], auditId: number | null, plan: Plan): void {
    const replies = this.replies;
    const before = this.model.state;
    // The server replaces the unnamed statement and portal with the query's own.
    this.registry.dropUnnamed();
    const entry = Entry.query(auditId === null ? [] : this.trackers(auditId, statements.length), this.readOnlyCauses(plan, before, statements));
    this.noteSchemaChanges(statements);
    const copyIn = statements.some(isCopyFromStdin);
    // In front of a Query: in a block, a simple Query of stepgate's own (its failure aborts the block, so the
    // client's statement fails too); otherwise Bind/Execute sharing the implicit transaction, and a Sync
    // after the client's Query in case the server skips it because stepgate's statement failed.
    const guarded = plan.before.length > 0 && !plan.before.includes(Injection.DefaultOff);
    if (plan.before.includes(Injection.DefaultOff)) this.inject(plan.before, Style.Synced);
    else if (guarded && before.kind === 'block') this.inject(plan.before, Style.QueryText);
    else if (guarded) this.inject(plan.before, Style.Extended, copyIn ? () => this.rescueSkippedQuery(entry) : undefined);
    // After stepgate's own statements: DEALLOCATE ALL or DISCARD ALL in the text drops them.
    for (let i = 0; i < statements.length; i++) {
      const s = statements[i]!;
      if (s.changesParsing) entry.changesParsing = true;
      const undo = this.applyStatementEffects(s, auditId);
      if (undo) (entry.statementUndos ??= []).push({ index: i, undo });
    }
    replies.expect(entry, true);
    this.host.toServer.queue(buf, start, end);
    if (guarded && before.kind !== 'block' && !copyIn) {
      this.host.toServer.write(frontend.SYNC);
      replies.expect(Entry.ownSync(entry), true);
    }
    if (plan.after.length > 0) {
      if (copyIn) this.afterCopy.push(...plan.after);
      else this.inject(plan.after, Style.Synced);
    }
    this.model.apply(plan);
  }

  /**
   * stepgate's Bind/Execute before a COPY FROM STDIN Query failed: the server skips the Query until a Sync,
   * and no Sync may follow a COPY Query in advance (the server would ignore it during COPY IN). Send it now.
   */
  private rescueSkippedQuery(entry: QueryPending): void {
    this.host.toServer.write(frontend.SYNC);
    this.replies.expect(Entry.ownSync(entry), true);
    this.host.toServer.flush();
  }

  // ───────────────────────────── extended protocol ─────────────────────────────

  private onParse(buf: Buffer, start: number, end: number): Handled {
    const parse = frontend.readParse(buf, start, end);
    if (isReservedName(parse.name)) return this.rejectExtended(reservedError(parse.name));
    const classified = this.classifyBytes(parse.sql, parse.paramTypes);
    const judge = ({ sql, result, invalid }: Classified): Handled => {
      if (invalid) return this.rejectExtended(invalid);
      const statement: PreparedStatement = { sql, statements: result.statements };
      // Parse analysis can run the statement's code (a literal coerced to a domain runs its CHECK), and a
      // write must be given read-write mode before it: so a statement the rules would not simply allow is
      // judged here, before the server sees it. Allowed ones are judged at each Bind.
      if (statement.statements.length === 0 || this.gate.wouldAllow(statement.statements)) return this.forwardParse(buf, start, end, parse.name, statement);
      const verdict = this.gate.judge({ sql, statements: statement.statements, params: null, refuse: reservedRefusal(statement.statements) });
      const done = (v: Verdict): Handled => {
        if (v.kind === 'allow') return this.forwardParse(buf, start, end, parse.name, { ...statement, approved: v.auditId });
        if (v.kind === 'refuse') return this.rejectExtended(v.error, this.trackers(v.auditId, 1));
        if (v.kind === 'skip') this.trackers(v.auditId, 1)[0]!.onSkipped();
      };
      return verdict instanceof Promise ? verdict.then(done) : done(verdict);
    };
    if (classified instanceof Promise) return classified.then((c) => (this.host.closed ? undefined : judge(c)));
    return judge(classified);
  }

  private forwardParse(buf: Buffer, start: number, end: number, name: string, statement: PreparedStatement): void {
    const single = statement.statements.length === 1 ? statement.statements[0]! : null;
    const plan = this.services.enforceReads
      ? planExtended(this.model.state, { kind: 'parse', statement: single, expectWrite: this.batchWrites(name, statement).write }, this.model.context(this.replies.clientIdle))
      : noPlan(this.model.state);
    this.injectExtended(plan, false);
    const undo = this.registry.defineStatement(name, statement);
    this.replies.expect(Entry.parse('parse', undo));
    this.host.toServer.queue(buf, start, end);
    this.model.apply(plan);
  }

  private onBind(buf: Buffer, start: number, end: number): Handled {
    const bind = frontend.readBind(buf, start, end);
    if (isReservedName(bind.portal)) return this.rejectExtended(reservedError(bind.portal));
    if (isReservedName(bind.statement)) return this.rejectExtended(reservedError(bind.statement));
    const statement = this.registry.statement(bind.statement) ?? {
      sql: '',
      statements: [unknownStatement('', `Bind to prepared statement "${bind.statement}", which stepgate does not know`)],
    };
    const params = this.services.recordParams ? bind.params : null;
    if (statement.statements.length === 0) {
      // The empty query: nothing runs, nothing to decide.
      this.forwardBind(buf, start, end, bind.portal, statement, params, null, null);
      return;
    }
    const plan = this.planRun(statement);
    if (statement.approved !== undefined) {
      // Approved at its Parse, for one execution: this Bind.
      const auditId = statement.approved;
      delete statement.approved;
      return this.forwardBind(buf, start, end, bind.portal, statement, params, auditId, plan);
    }
    const statements = escalate(statement.statements, plan);
    const judged: PreparedStatement = statements === statement.statements ? statement : { sql: statement.sql, statements };
    const verdict = this.gate.judge({
      sql: statement.sql,
      statements,
      params: params ? params.map((p) => (p === null ? null : p.toString('utf8'))) : null,
      refuse: reservedRefusal(statements),
    });
    const done = (v: Verdict): Handled => {
      if (v.kind === 'allow') {
        return this.forwardBind(buf, start, end, bind.portal, judged, params, v.auditId, verdict instanceof Promise ? this.planRun(judged) : plan);
      }
      if (v.kind === 'refuse') return this.rejectExtended(v.error, this.trackers(v.auditId, 1));
      if (v.kind === 'skip') this.trackers(v.auditId, 1)[0]!.onSkipped();
    };
    return verdict instanceof Promise ? verdict.then(done) : done(verdict);
  }

  private forwardBind(
    buf: Buffer,
    start: number,
    end: number,
    portal: string,
    statement: PreparedStatement,
    params: (Buffer | null)[] | null,
    auditId: number | null,
    plan: Plan | null,
  ): void {
    if (plan) this.injectExtended(plan, portal === '');
    const undo = this.registry.bindPortal(portal, { statement, batch: this.replies.batch, params, decided: auditId, hold: false });
    this.replies.expect(Entry.parse('bind', undo));
    this.host.toServer.queue(buf, start, end);
    if (plan) this.model.apply(plan);
  }

  private onExecute(buf: Buffer, start: number, end: number): Handled {
    const execute = frontend.readExecute(buf, start, end);
    if (isReservedName(execute.portal)) return this.rejectExtended(reservedError(execute.portal));
    const portal = this.registry.portal(execute.portal);
    if (portal === undefined) {
      // Not bound through stepgate (or dropped): unknown, decided here.
      const statement: PreparedStatement = {
        sql: '',
        statements: [unknownStatement('', `Execute of portal "${execute.portal}", which stepgate does not know`)],
      };
      const plan = this.planRun(statement);
      const verdict = this.gate.judge({ sql: '', statements: statement.statements, params: null });
      const done = (v: Verdict): Handled => {
        if (v.kind === 'allow') return this.forwardExecute(buf, start, end, statement, v.auditId, verdict instanceof Promise ? this.planRun(statement) : plan);
        if (v.kind === 'refuse') return this.rejectExtended(v.error, this.trackers(v.auditId, 1));
        if (v.kind === 'skip') this.trackers(v.auditId, 1)[0]!.onSkipped();
      };
      return verdict instanceof Promise ? verdict.then(done) : done(verdict);
    }
    if (portal.statement.statements.length === 0) return this.forwardExecute(buf, start, end, portal.statement, null, null);
    // Decided when it was bound (or declared); an Execute with a row limit leaves it suspended and the next
    // Execute continues the same statement.
    return this.forwardExecute(buf, start, end, portal.statement, portal.decided, this.planRun(portal.statement));
  }

  private forwardExecute(buf: Buffer, start: number, end: number, statement: PreparedStatement, auditId: number | null, plan: Plan | null): void {
    const before = this.model.state;
    if (plan) this.injectExtended(plan, false);
    const s = statement.statements.length === 1 ? statement.statements[0]! : null;
    this.replies.expect(
      Entry.execute(
        auditId === null ? null : new StatementTracker(this.services.audit, auditId, 0),
        plan && s ? (this.readOnlyCauses(plan, before, [s])?.[0] ?? ReadOnlyCause.None) : ReadOnlyCause.None,
      ),
    );
    if (s?.changesParsing) this.replies.noteParsingChange();
    this.host.toServer.queue(buf, start, end);
    if (plan) this.model.apply(plan);
    if (s) {
      this.noteSchemaChanges([s]);
      // What the statement does to the transaction and the names the server holds, as for a Query.
      this.applyStatementEffects(s, auditId);
      this.model.state = afterExtendedStatement(this.model.state, s, this.model.clientDefaultReadOnly);
    }
  }

  private onDescribe(buf: Buffer, start: number, end: number): Handled {
    const target = frontend.readTarget(buf, start, end);
    if (isReservedName(target.name)) return this.rejectExtended(reservedError(target.name));
    this.replies.expect(Entry.describe(target.kind === 'S'));
    this.host.toServer.queue(buf, start, end);
  }

  private onClose(buf: Buffer, start: number, end: number): Handled {
    const target = frontend.readTarget(buf, start, end);
    if (isReservedName(target.name)) return this.rejectExtended(reservedError(target.name));
    const undo = target.kind === 'S' ? this.registry.closeStatement(target.name) : this.registry.closePortal(target.name);
    this.replies.expect(Entry.parse('close', undo));
    this.host.toServer.queue(buf, start, end);
  }

  private onSync(buf: Buffer, start: number, end: number): void {
    frontend.expectEmpty(buf, start, end);
    const replies = this.replies;
    if (replies.syncIgnored) {
      // Ignored by the server during COPY IN: no reply to wait for.
      this.host.toServer.queue(buf, start, end);
      return;
    }
    replies.expect(Entry.sync(), true);
    this.host.toServer.queue(buf, start, end);
    this.model.apply(planExtended(this.model.state, { kind: 'sync' }, this.model.context(replies.clientIdle)));
    if (this.afterSync.length > 0) {
      const after = this.afterSync;
      this.afterSync = [];
      this.inject(after, Style.Synced);
    }
  }

  /** Plans a Bind or Execute of a prepared statement. */
  private planRun(statement: PreparedStatement): Plan {
    if (!this.services.enforceReads) return noPlan(this.model.state);
    const single = statement.statements.length === 1 ? statement.statements[0]! : null;
    const state = this.model.state;
    const scan = this.batchWrites(null, null);
    const laterWrite = scan.syncSeen ? scan.write : scan.write ? true : null;
    return planExtended(state, { kind: 'run', statement: single, expectWrite: scan.write, laterWrite }, this.model.context(this.replies.clientIdle));
  }

  /** Sends a plan's injections before an extended-protocol message; `bindsUnnamedPortal`: it is a Bind of ''. */
  private injectExtended(plan: Plan, bindsUnnamedPortal: boolean): void {
    if (plan.before.length > 0) {
      const style = plan.before.includes(Injection.DefaultOff) ? Style.Synced : Style.Extended;
      // stepgate's statements use the unnamed portal only when the client's will be replaced anyway.
      const keepUnnamedPortal = !bindsUnnamedPortal && this.registry.portal('') !== undefined;
      this.inject(plan.before, style, undefined, keepUnnamedPortal);
    }
    if (plan.afterSync.length > 0) this.afterSync.push(...plan.afterSync);
  }

  private inject(injections: Injection[], style: Style, onError?: () => void, keepUnnamedPortal = this.registry.portal('') !== undefined): void {
    this.host.toServer.write(this.injector.encode(injections, style, { keepUnnamedPortal, onError }));
  }

  /**
   * Look-ahead over the messages of this batch already received: whether one runs a statement that needs
   * read-write mode, and whether the batch's Sync is among them. `defining`: a Parse being processed (its
   * name and statement), which later Binds in the batch may use.
   */
  private batchWrites(defining: string | null, statement: PreparedStatement | null): { write: boolean; syncSeen: boolean } {
    const parsed = new Map<string, StatementInfo[] | null>();
    if (defining !== null && statement !== null) parsed.set(defining, statement.statements);
    let write = false;
    for (const item of this.host.pending()) {
      const type = item.type;
      if (type === ClientType.Sync) return { write, syncSeen: true };
      if (type === ClientType.Query) return { write, syncSeen: true }; // ends the implicit transaction
      if (type === ClientType.Parse) {
        const p = frontend.readParse(item.buf, item.start, item.end);
        const text = this.decode(p.sql);
        parsed.set(p.name, text.ok ? this.services.classify(text.text, this.classifyCtx).statements : null);
      } else if (type === ClientType.Bind) {
        const b = frontend.readBind(item.buf, item.start, item.end);
        const statements = parsed.has(b.statement) ? parsed.get(b.statement) : (this.registry.statement(b.statement)?.statements ?? null);
        if (statements === null || statements === undefined || statements.some(needsReadWrite)) write = true;
      }
    }
    return { write, syncSeen: false };
  }

  // ───────────────────────────── FunctionCall ─────────────────────────────

  private onFunctionCall(buf: Buffer, start: number, end: number): Promise<void> {
    const call = frontend.readFunctionCall(buf, start, end);
    const describe = this.catalog
      ? this.catalog.describeOid(call.oid).catch((err: Error) => {
          this.catalogFailed('catalog.lookup_failed', { connection: this.host.connectionId, error: err.message });
          return null;
        })
      : Promise.resolve(null);
    return describe.then(async (fn) => {
      let statements: StatementInfo[];
      let sql: string;
      if (fn) {
        // Judge it as the equivalent SELECT, so built-in knowledge and rules on functions apply.
        const text = `SELECT ${quoteIdent(fn.schema)}.${quoteIdent(fn.name)}(${call.args.map((_, i) => `$${i + 1}`).join(', ')})`;
        sql = text;
        // With the schema catalog, what the function runs is looked up (level by level) before deciding.
        const first = this.services.classify(text, this.classifyCtx);
        const result =
          this.catalog && first.unresolvedLookups
            ? await classifyWithCatalog(this.catalog, () => this.services.classify(text, this.classifyCtx), first, (err) =>
                this.catalogFailed('catalog.lookup_failed', { connection: this.host.connectionId, error: err.message }),
              )
            : first;
        statements = result.statements.map((s) => ({ ...s, command: 'FUNCTION CALL' }));
      } else {
        sql = `-- FunctionCall of function OID ${call.oid}`;
        statements = [unknownStatement(sql, `FunctionCall of function OID ${call.oid}, which stepgate could not look up`)];
      }
      const plan = this.planFor(statements);
      statements = escalate(statements, plan);
      const verdict = this.gate.judge({ sql, statements, params: null });
      const done = (v: Verdict): Handled => {
        if (v.kind === 'allow') return this.forwardFunctionCall(buf, start, end, statements, v.auditId, verdict instanceof Promise ? this.planFor(statements) : plan);
        if (v.kind === 'refuse') return this.rejectQuery(v.error, this.trackers(v.auditId, 1));
        if (v.kind === 'skip') this.trackers(v.auditId, 1)[0]!.onSkipped();
      };
      return verdict instanceof Promise ? verdict.then(done) : done(verdict);
    });
  }

  private forwardFunctionCall(buf: Buffer, start: number, end: number, statements: StatementInfo[], auditId: number, plan: Plan): void {
    const replies = this.replies;
    const before = this.model.state;
    const entry = Entry.functionCall(new StatementTracker(this.services.audit, auditId, 0), this.readOnlyCauses(plan, before, statements)?.[0] ?? ReadOnlyCause.None);
    const guarded = plan.before.length > 0;
    // Bind/Execute in front (a simple Query would drop the client's unnamed statement), and a Sync after it
    // in case the server skips it because stepgate's statement failed.
    if (guarded) this.inject(plan.before, plan.before.includes(Injection.DefaultOff) ? Style.Synced : Style.Extended);
    replies.expect(entry, true);
    this.host.toServer.queue(buf, start, end);
    if (guarded && !plan.before.includes(Injection.DefaultOff)) {
      this.host.toServer.write(frontend.SYNC);
      replies.expect(Entry.ownSync(entry), true);
    }
    if (plan.after.length > 0) this.inject(plan.after, Style.Synced);
    this.model.apply(plan);
  }

  // ───────────────────────────── refusals ─────────────────────────────

  /** Rejects a simple Query or FunctionCall: the server fails an injected Execute, then Syncs. */
  private rejectQuery(error: backend.ErrorFields, trackers: ReplyTracker[] | null = null): Handled {
    // After extended-protocol messages not yet synced, an earlier one may fail: the server then skips
    // everything up to the client's Sync, this message included, and an injected Sync would end that
    // skipping early (the client would get a ReadyForQuery the server never sent). Wait for its answers.
    if (!this.replies.lastEndsBatch && !this.replies.idle) {
      return this.serverIdle().then(() => {
        if (!this.host.closed) return this.rejectQuery(error, trackers);
      });
    }
    if (this.replies.skipping) {
      if (trackers) for (const tracker of trackers) tracker.onSkipped();
      return;
    }
    this.injectFailure(error, trackers);
    this.host.toServer.write(frontend.SYNC);
    this.replies.expect(Entry.sync(), true);
  }

  /** Rejects an extended-protocol message: the server fails an injected Execute and skips the batch up to Sync, like us. */
  private rejectExtended(error: backend.ErrorFields, trackers: ReplyTracker[] | null = null): void {
    this.injectFailure(error, trackers);
    this.host.toServer.write(frontend.FLUSH);
  }

  /**
   * `trackers`: the rejected statements' outcomes for the audit trail (the first gets the error, the rest
   * are skipped), recorded when the server's failure arrives in their place.
   */
  private injectFailure(error: backend.ErrorFields, trackers: ReplyTracker[] | null): void {
    this.replies.expect(Entry.refusal(backend.errorResponse(error), error, trackers));
    this.host.toServer.write(frontend.encodeExecute(this.refusalPortal.toString('latin1', 0, this.refusalPortal.length - 1)));
  }

  /** Resolves when the server has answered every message forwarded so far (set by the session). */
  serverIdle: () => Promise<void> = () => Promise.resolve();

  // ───────────────────────────── classification ─────────────────────────────

  /** The classifier's view of this session: one object, read anew at each use (no allocation per statement). */
  readonly classifyCtx: ClassifyContext = ((f: Frontend): ClassifyContext => ({
    get grammar(): Grammar | undefined {
      return f.host.grammar;
    },
    get standardConformingStrings(): boolean {
      return !f.replies.parsingUncertain && f.host.parameters.get('standard_conforming_strings') !== 'off';
    },
    preparedStatement: (name) => {
      const s = f.registry.statement(name);
      return s && s.statements.length === 1 ? s.statements[0] : undefined;
    },
    portalStatement: (name) => {
      const p = f.registry.portal(name);
      return p && p.statement.statements.length === 1 ? p.statement.statements[0] : undefined;
    },
    // The database's schema catalog (src/proxy/catalog/): functions, views, operators, types it reaches.
    get catalog() {
      return f.catalog?.lookups;
    },
  }))(this);

  /**
   * Classifies SQL bytes as the server will read them. Asks the server's catalog about what the classifier
   * needs to know (functions, relations, operators, types), once per name and database until it expires.
   * `paramTypes`: the parameter type OIDs a Parse declares (domain checks run at Bind).
   */
  private classifyBytes(bytes: Buffer, paramTypes?: number[]): Classified | Promise<Classified> {
    const catalog = this.catalog;
    if (catalog && !catalog.loaded && !this.catalogWaited) {
      // The first statement of a database waits for the list of names that may be user-defined.
      this.catalogWaited = true;
      return catalog
        .ready()
        .catch((err: Error) => this.catalogFailed('catalog.unavailable', { connection: this.host.connectionId, error: err.message }))
        .then(() => this.classifyBytes(bytes, paramTypes));
    }
    // Refreshes in the background once a minute.
    catalog?.refreshIfStale();
    const decoded = this.decode(bytes);
    if (!decoded.ok) {
      const sql = bytes.toString('latin1');
      const result: ClassifyResult = {
        statements: [unknownStatement(sql, decoded.message)],
        unresolvedFunctions: [],
        shapeSafe: false,
        error: { message: decoded.message, position: 0 },
      };
      // Bytes the server would refuse as well get its error, not a step-up.
      return { sql, result, invalid: decoded.unreadable ? null : { severity: 'ERROR', code: decoded.sqlstate, message: decoded.message } };
    }
    const sql = decoded.text;
    const ctx = paramTypes && paramTypes.length > 0 ? withParameterTypes(this.classifyCtx, paramTypes) : this.classifyCtx;
    // Large or deep texts are classified in a worker: a promise.
    const classifyText = this.services.classifyText ?? this.services.classify;
    const withCatalog = (result: ClassifyResult): Classified | Promise<Classified> => {
      if (!result.unresolvedLookups || !catalog) return { sql, result, invalid: null };
      // Look up what the classifier asked for and classify again, level by level of hidden code.
      return classifyWithCatalog(catalog, () => classifyText(sql, ctx), result, (err) =>
        this.catalogFailed('catalog.lookup_failed', { connection: this.host.connectionId, error: err.message }),
      ).then((r) => ({ sql, result: r, invalid: null }));
    };
    const first = classifyText(sql, ctx);
    return first instanceof Promise ? first.then(withCatalog) : withCatalog(first);
  }

  /**
   * A statement that may change the schema (ddl, privilege, admin) is forwarded: the catalog's answers may
   * be stale once it has run (the backend invalidates them at ReadyForQuery).
   */
  private noteSchemaChanges(statements: readonly StatementInfo[]): void {
    if (this.catalog && statements.some((s) => s.classes.some((c) => c === 'ddl' || c === 'privilege' || c === 'admin'))) this.schemaMayChange();
  }

  /** A read of the schema catalog failed: logged and counted (the classifier then knows less). */
  private catalogFailed(event: 'catalog.lookup_failed' | 'catalog.unavailable', fields: Record<string, unknown>): void {
    this.services.metrics?.catalogError();
    this.services.log.warn(event, fields);
  }

  /** Set by the session: tells the backend that the schema may change. */
  schemaMayChange: () => void = () => {};

  /** SQL bytes as the server will decode them. */
  private decode(bytes: Buffer): ReturnType<typeof decodeSql> {
    const parameters = this.host.parameters;
    return decodeSql(bytes, {
      clientEncoding: parameters.get('client_encoding') ?? 'UTF8',
      serverEncoding: parameters.get('server_encoding') ?? 'UTF8',
      // An encoding change may be in flight: only plain ASCII reads the same in every encoding.
      asciiOnly: this.replies.parsingUncertain,
    });
  }

  /** One outcome tracker per statement of a message, for the audit trail. */
  private trackers(auditId: number, count: number): ReplyTracker[] {
    const list: ReplyTracker[] = [];
    for (let i = 0; i < count; i++) list.push(new StatementTracker(this.services.audit, auditId, i));
    return list;
  }

  /**
   * Why a statement may get 25006 from the server: stepgate ran it read-only although the client did not ask
   * for read-only (a read that hides a write), or it is a write in a transaction stepgate made read-only.
   */
  private readOnlyCauses(plan: Plan, before: TransactionState, statements: readonly StatementInfo[]): ReadOnlyCause[] | null {
    if (plan.modes.length === 0) return null;
    const clientWantsReadOnly = before.kind === 'block' ? before.clientReadOnly : this.model.clientDefaultReadOnly;
    if (clientWantsReadOnly && plan.doomed.length === 0) return null;
    return statements.map((_, i) =>
      plan.doomed.includes(i) ? ReadOnlyCause.DoomedWrite : plan.modes[i] === Mode.ReadOnly && !clientWantsReadOnly ? ReadOnlyCause.EnforcedRead : ReadOnlyCause.None,
    );
  }

  /**
   * What a statement does to the names the server holds (SQL-level PREPARE, DEALLOCATE, DISCARD, DECLARE,
   * CLOSE, savepoints), applied as it is forwarded; the undo restores it when the statement does not run.
   */
  private applyStatementEffects(s: StatementInfo, auditId: number | null): Undo | null {
    const registry = this.registry;
    const undos: Undo[] = [];
    if (s.prepare) undos.push(registry.defineStatement(s.prepare.name, { statements: [s.prepare.statement], sql: s.prepare.statement.sql }));
    if (s.deallocate) {
      if (s.deallocate.name !== null) {
        const undo = registry.closeStatement(s.deallocate.name);
        if (undo) undos.push(undo);
      } else {
        // DEALLOCATE ALL and DISCARD ALL drop stepgate's own prepared statements too.
        this.injector.forgetPrepared();
        undos.push(registry.dropAllStatements(false));
        if (s.command === 'DISCARD ALL') undos.push(registry.dropAllPortals());
      }
    }
    const cursor = s.cursor;
    if (cursor?.op === 'declare' && cursor.name !== null && cursor.statement) {
      undos.push(
        registry.bindPortal(cursor.name, {
          statement: { statements: [cursor.statement], sql: s.sql },
          batch: this.replies.batch,
          params: null,
          decided: auditId,
          hold: cursor.hold === true,
        }),
      );
    } else if (cursor?.op === 'close') {
      const undo = cursor.name === null ? registry.dropAllPortals() : registry.closePortal(cursor.name);
      if (undo) undos.push(undo);
    }
    const t = s.transaction;
    if (t?.kind === 'savepoint' && t.savepoint !== undefined) undos.push(registry.savepoint(t.savepoint));
    else if (t?.kind === 'release' && t.savepoint !== undefined) undos.push(registry.release(t.savepoint));
    else if (t?.kind === 'rollback-to' && t.savepoint !== undefined) undos.push(registry.rollbackTo(t.savepoint));
    if (undos.length === 0) return null;
    if (undos.length === 1) return undos[0]!;
    return () => {
      for (let i = undos.length - 1; i >= 0; i--) undos[i]!();
    };
  }
}

/** Nothing to send, nothing changes: read-only enforcement is off. */
function noPlan(state: TransactionState): Plan {
  return { before: [], after: [], afterSync: [], modes: [], unenforced: [], doomed: [], after_state: state };
}

/** COPY ... FROM STDIN: the server will read copy data from the client. */
function isCopyFromStdin(s: StatementInfo): boolean {
  return s.command === 'COPY' && s.classes.includes('import') && !s.flags.includes('copy_file') && !s.flags.includes('copy_program');
}

/**
 * Statements that need only read-only mode but would run read-write where stepgate cannot enforce it are
 * judged as unknown (a read that the server does not check must not pass as a read).
 */
function escalate(statements: StatementInfo[], plan: Plan): StatementInfo[] {
  if (plan.unenforced.length === 0) return statements;
  return statements.map((s, i) =>
    plan.unenforced.includes(i)
      ? {
          ...s,
          classes: s.classes.includes('unknown') ? s.classes : [...s.classes, 'unknown'].sort() as StatementInfo['classes'],
          reasons: [
            ...s.reasons,
            'it would run in read-write mode (after a change of the transaction mode, a savepoint or a transaction end in the same message), where stepgate cannot make the server enforce that it only reads',
          ],
        }
      : s,
  );
}

/** Names starting with stepgate_ belong to stepgate's own statements, portals and savepoint: refused. */
function reservedRefusal(statements: readonly StatementInfo[]): { decision: Decision; error: backend.ErrorFields } | undefined {
  for (let i = 0; i < statements.length; i++) {
    const name = reservedNameIn(statements[i]!);
    if (name !== null) {
      const error = reservedError(name);
      return {
        error,
        decision: {
          action: 'deny',
          rule: null,
          file: null,
          message: error.message,
          reason: `statement ${i + 1} uses the name "${name}", which is reserved for stepgate's own statements`,
          grantMs: 0,
          grantScope: 'connection',
          timeoutMs: 0,
          statementIndex: i,
        },
      };
    }
  }
  return undefined;
}

function reservedNameIn(s: StatementInfo): string | null {
  const names = [s.prepare?.name, s.deallocate?.name, s.cursor?.name, s.transaction?.savepoint, s.executes];
  for (const n of names) if (n && isReservedName(n)) return n;
  return null;
}

function reservedError(name: string): backend.ErrorFields {
  return {
    severity: 'ERROR',
    code: '42939',
    message: `stepgate: the name "${name}" is reserved by stepgate`,
    hint: 'Names starting with stepgate_ are used by stepgate itself; choose another name.',
  };
}
