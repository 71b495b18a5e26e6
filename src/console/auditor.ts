/**
 * The console's auditor view, server side: members of the group `auditors` browse the audit trail
 * (every user's sessions, read-only) and check the hash chain.
 *
 * - Reads DATA/audit.db through a connection of its own, opened for reading (`query_only`, like the
 *   `stepgate audit` commands), beside the audit worker that writes it (WAL: readers and the writer do
 *   not block each other). Every request is bounded (browse.ts): a page of sessions examines at most
 *   2,000 rows, a page of a timeline reads at most 1,000 events, all through indexes.
 * - Verification walks the whole chain (a SHA-256 per event, seconds on a big trail): it runs in a worker
 *   thread of its own (audit/verify-worker.ts) with its own connection and snapshot, never on the proxy's
 *   event loop. One run at a time; "verify now" while one runs joins it. The last result is kept in memory.
 *
 * With `state:` (`shared`), every instance's trail, from the shared store (audit/shared-schema.ts):
 * - The sessions list and a timeline query PostgreSQL directly (audit/shared-browse.ts), with the same
 *   bounds and the same page and transcript shapes as browse.ts; rows name their instance, and a timeline
 *   is read from the instance that recorded the session.
 * - Verification runs in the same worker thread, which verifies each instance's chain as `stepgate audit
 *   verify --state` does (a snapshot copy per instance, checked with its pinned key): reading every row
 *   is the point there, and the copy lets the one verifier of audit.db run unchanged. Results per instance.
 * - Lag is said, not hidden: events an instance committed locally but did not ship yet are not in the
 *   shared store. For this console's own instance the shipper knows how many (shown, and counted as not
 *   verified by a run); for the others this instance cannot know, and the answer says so (their head is
 *   "last shipped", not "last written").
 * - Without `state:` everything is as above, on DATA/audit.db: the shared paths are separate branches.
 */
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { AuditDbMissing, openAuditDbForReading } from '../audit/db.js';
import { BrowseError, chainHead, latestCheckpoint, MAX_SCAN, sessionsPage, timelinePage, type CheckpointView, type TimelineStep } from '../audit/browse.js';
import { findSession, parseTime, SessionLookupError, shortId, type SessionFilter, type SessionRow } from '../audit/read.js';
import { findSharedSession, sharedHeads, sharedSessionsPage, sharedTimelinePage, type Queryable, type SharedSessionRow } from '../audit/shared-browse.js';
import type { ShipStats } from '../audit/shipper.js';
import type { Problem, VerifyReport } from '../audit/verify.js';
import type { FromVerifyWorker, InstanceVerification, VerifyWorkerInit } from '../audit/verify-worker.js';
import type { Logger } from '../log.js';
import type { AuditInstanceView, AuditSessionView, AuditSessionsReply, AuditTimelineReply, SharedVerificationView, VerificationReply, VerificationRunView } from './protocol.js';

/** The shared store, when stepgate runs with `state:`. */
export interface AuditorShared {
  /** Queries (the state database's pool). */
  db: Queryable;
  /** For the verification thread's own connection. */
  url: string;
  /** This instance's name there. */
  instance: string;
  /** This instance's shipper (null until it runs). */
  shipping(): ShipStats | null;
}

/** Members of this group see the auditor view. */
export const AUDITORS_GROUP = 'auditors';

const SESSIONS_DEFAULT = 50;
const SESSIONS_MAX = 200;
const TIMELINE_DEFAULT = 200;
const TIMELINE_MAX = 1000;
/** Problems kept from a verification report (the first one is the first break). */
const PROBLEMS_SHOWN = 20;

export class AuditorError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code = 'audit',
  ) {
    super(message);
  }
}

interface VerificationResult {
  startedAt: number;
  finishedAt: number;
  by: string;
  report: VerifyReport | null;
  /** With `shared`: each instance's. */
  instances: InstanceVerification[] | null;
  /** With `shared`: this instance's local head when the run finished (what it had committed). */
  localHead: number | null;
  error: string | null;
}

export class AuditorService {
  private db: Database.Database | null = null;
  private running: { startedAt: number; by: string; worker: Worker; done: Promise<void> } | null = null;
  private last: VerificationResult | null = null;
  private closed = false;

  constructor(
    private readonly dataDir: string,
    private readonly log: Logger,
    private readonly shared: AuditorShared | null = null,
  ) {}

  // ───────────────────────────── sessions ─────────────────────────────

  async sessions(query: URLSearchParams): Promise<AuditSessionsReply & { now: number }> {
    const filter: SessionFilter = {};
    const user = text(query, 'user', 200);
    if (user) filter.user = user;
    const since = time(query, 'since');
    if (since !== undefined) filter.since = since;
    const until = time(query, 'until');
    if (until !== undefined) filter.until = until;
    const limit = integer(query, 'limit', SESSIONS_DEFAULT, 1, SESSIONS_MAX);
    const cursor = text(query, 'cursor', 100) || null;
    try {
      if (this.shared) {
        this.notClosed();
        const page = await sharedSessionsPage(this.shared.db, filter, cursor, limit, MAX_SCAN);
        return { now: Date.now(), sessions: page.sessions.map(sessionView), next: page.next, shared: true };
      }
      const page = sessionsPage(this.open(), filter, cursor, limit);
      return { now: Date.now(), sessions: page.sessions.map(sessionView), next: page.next, shared: false };
    } catch (err) {
      if (err instanceof BrowseError) throw new AuditorError(400, err.message, 'bad_cursor');
      throw err;
    }
  }

  /**
   * One session and a page of its timeline. `id`: a session id, a unique prefix of it, or #NUMBER; with
   * `shared`, `instance` names whose trail (needed for #NUMBER: numbers are per instance).
   */
  async timeline(id: string, query: URLSearchParams): Promise<AuditTimelineReply & { steps: TimelineStep[] }> {
    try {
      if (this.shared) {
        this.notClosed();
        const instance = text(query, 'instance', 200) || null;
        const session = await findSharedSession(this.shared.db, id, instance);
        const { after, limit } = this.timelinePaging(query);
        const page = await sharedTimelinePage(this.shared.db, session, after, limit);
        return { session: sessionView(session), steps: page.steps, next: page.next };
      }
      const db = this.open();
      const session = findSession(db, id);
      const { after, limit } = this.timelinePaging(query);
      const page = timelinePage(db, session, after, limit);
      return { session: sessionView(session), steps: page.steps, next: page.next };
    } catch (err) {
      if (err instanceof SessionLookupError) throw new AuditorError(/^no session/.test(err.message) ? 404 : 400, err.message, 'session');
      throw err;
    }
  }

  private timelinePaging(query: URLSearchParams): { after: number | null; limit: number } {
    const afterText = query.get('after');
    let after: number | null = null;
    if (afterText !== null && afterText !== '') {
      if (!/^\d{1,15}$/.test(afterText)) throw new AuditorError(400, '"after" must be an event number', 'bad_request');
      after = Number(afterText);
    }
    return { after, limit: integer(query, 'limit', TIMELINE_DEFAULT, 1, TIMELINE_MAX) };
  }

  // ───────────────────────────── verification ─────────────────────────────

  /** Where verification stands: the last result, a run in progress, and the chain's head and latest checkpoint now. */
  async verification(): Promise<VerificationReply & { now: number }> {
    if (this.shared) return this.sharedVerification(this.shared);
    let checkpoint: CheckpointView | null = null;
    let head: { seq: number; time: number } | null = null;
    try {
      const db = this.open();
      checkpoint = latestCheckpoint(db);
      head = chainHead(db);
    } catch (err) {
      if (!(err instanceof AuditorError)) throw err;
    }
    const last = this.last;
    const state = this.running ? 'running' : !last ? 'never' : stateOf(last);
    return {
      now: Date.now(),
      state,
      running: this.running ? { startedAt: this.running.startedAt, by: this.running.by } : null,
      last: last ? resultView(last) : null,
      checkpoint,
      head,
      shared: null,
    };
  }

  /** Every instance's chain head and latest checkpoint now, with its part of the last run. */
  private async sharedVerification(shared: AuditorShared): Promise<VerificationReply & { now: number }> {
    this.notClosed();
    const heads = await sharedHeads(shared.db);
    const last = this.last;
    const results = new Map((last?.instances ?? []).map((i) => [i.instance, i]));
    const ship = shared.shipping();
    const instances: AuditInstanceView[] = heads.map((h) => {
      const self = h.instance === shared.instance;
      const r = results.get(h.instance);
      const lastSeq = r?.report?.lastSeq ?? null;
      return {
        instance: h.instance,
        head: h.head,
        checkpoint: h.checkpoint,
        pinnedKid: h.pinnedKid,
        unshipped: self && ship ? { events: ship.behindEvents, seconds: Math.round(ship.behindSeconds), state: ship.state, error: ship.error } : null,
        last: r && last ? resultView({ ...last, report: r.report, error: r.error }) : null,
        unverified: self && r?.report && last?.localHead !== null && last?.localHead !== undefined ? Math.max(0, last.localHead - (lastSeq ?? 0)) : null,
      };
    });
    // An instance the last run checked but the store no longer lists cannot happen (INSERT-only); one
    // that first shipped after the run has `last` null.
    const view: SharedVerificationView = {
      self: shared.instance,
      last: last ? { startedAt: last.startedAt, finishedAt: last.finishedAt, durationMs: last.finishedAt - last.startedAt, by: last.by, ok: sharedOk(last), error: last.error } : null,
      instances,
    };
    return {
      now: Date.now(),
      state: this.running ? 'running' : !last ? 'never' : stateOf(last),
      running: this.running ? { startedAt: this.running.startedAt, by: this.running.by } : null,
      last: null,
      checkpoint: null,
      head: null,
      shared: view,
    };
  }

  /** Starts a verification unless one is running; returns the status. */
  async verify(by: string): Promise<VerificationReply & { now: number }> {
    if (this.closed) throw new AuditorError(503, 'the console is shutting down', 'closing');
    if (!this.running) this.start(by);
    return this.verification();
  }

  /** Resolves when the current run (if any) has finished. For tests and shutdown. */
  async settled(): Promise<void> {
    await this.running?.done;
  }

  async close(): Promise<void> {
    this.closed = true;
    const run = this.running;
    if (run) {
      await run.worker.terminate().catch(() => {});
      await run.done;
    }
    this.db?.close();
    this.db = null;
  }

  private start(by: string): void {
    const startedAt = Date.now();
    const init: VerifyWorkerInit = { dataDir: this.dataDir, ...(this.shared ? { shared: { url: this.shared.url, instance: this.shared.instance } } : {}) };
    const worker = new Worker(new URL('../audit/verify-worker.js', import.meta.url), { workerData: init });
    worker.unref();
    this.log.info('audit.verify_started', { user: by });
    const done = new Promise<void>((resolve) => {
      let finished = false;
      const finish = (report: VerifyReport | null, error: string | null, instances: InstanceVerification[] | null = null): void => {
        if (finished) return;
        finished = true;
        this.running = null;
        const ship = this.shared?.shipping() ?? null;
        this.last = { startedAt, finishedAt: Date.now(), by, report, instances, localHead: ship ? ship.shippedSeq + ship.behindEvents : null, error };
        if (instances !== null) {
          for (const i of instances) {
            if (i.error !== null) this.log.warn('audit.verify_error', { user: by, instance: i.instance, error: i.error });
            else if (i.report!.ok) this.log.info('audit.verified', { user: by, instance: i.instance, events: i.report!.events, last_seq: i.report!.lastSeq, unsealed: i.report!.unsealed });
            else this.log.error('audit.verify_failed', { user: by, instance: i.instance, problem: i.report!.problems.find((p) => p.severity === 'error')?.message ?? null, problems: i.report!.problems.length });
          }
        } else if (error !== null) this.log.warn('audit.verify_error', { user: by, error });
        else if (report!.ok) this.log.info('audit.verified', { user: by, events: report!.events, last_seq: report!.lastSeq, unsealed: report!.unsealed, ms: Date.now() - startedAt });
        else this.log.error('audit.verify_failed', { user: by, problem: report!.problems.find((p) => p.severity === 'error')?.message ?? null, problems: report!.problems.length });
        resolve();
      };
      worker.once('message', (m: FromVerifyWorker) => {
        if (m.type === 'report') finish(m.report, null);
        else if (m.type === 'shared') finish(null, null, m.instances);
        else finish(null, m.message);
      });
      worker.once('error', (err) => finish(null, err.message));
      worker.once('exit', (code) => finish(null, this.closed ? 'stopped: the console closed' : `the verification thread exited (${code}) without a result`));
    });
    this.running = { startedAt, by, worker, done };
  }

  private notClosed(): void {
    if (this.closed) throw new AuditorError(503, 'the console is shutting down', 'closing');
  }

  private open(): Database.Database {
    this.notClosed();
    if (this.db) return this.db;
    try {
      this.db = openAuditDbForReading(this.dataDir);
    } catch (err) {
      if (err instanceof AuditDbMissing) throw new AuditorError(404, err.message, 'no_audit');
      throw err;
    }
    return this.db;
  }
}

/** A run's outcome: over every instance with `shared` (a break anywhere outweighs one that could not be checked). */
function stateOf(r: VerificationResult): 'verified' | 'broken' | 'error' {
  if (r.error !== null) return 'error';
  if (r.instances !== null) {
    if (r.instances.some((i) => i.report !== null && !i.report.ok)) return 'broken';
    return r.instances.some((i) => i.error !== null) ? 'error' : 'verified';
  }
  return r.report!.ok ? 'verified' : 'broken';
}

function sharedOk(r: VerificationResult): boolean {
  return stateOf(r) === 'verified';
}

function resultView(r: Pick<VerificationResult, 'startedAt' | 'finishedAt' | 'by' | 'report' | 'error'>): VerificationRunView {
  const base = { startedAt: r.startedAt, finishedAt: r.finishedAt, durationMs: r.finishedAt - r.startedAt, by: r.by };
  if (!r.report) return { ...base, ok: false, error: r.error ?? 'the verification did not finish' };
  const p = r.report;
  const errors = p.problems.filter((x) => x.severity === 'error');
  return {
    ...base,
    ok: p.ok,
    error: null,
    events: p.events,
    firstSeq: p.firstSeq,
    lastSeq: p.lastSeq,
    firstTime: p.firstTime,
    lastTime: p.lastTime,
    sessions: p.sessions,
    anchor: p.anchor,
    checkpoints: p.checkpoints,
    unsealed: p.unsealed,
    approvals: p.approvals,
    key: { kid: p.key.kid },
    firstProblem: errors[0] ?? null,
    problems: [...errors, ...p.problems.filter((x) => x.severity === 'warning')].slice(0, PROBLEMS_SHOWN).map((x: Problem) => ({ seq: x.seq, severity: x.severity, message: x.message })),
    moreProblems: Math.max(0, p.problems.length - PROBLEMS_SHOWN),
  };
}

function sessionView(r: SessionRow | SharedSessionRow): AuditSessionView & { durationMs: number | null; bytesIn: number | null; bytesOut: number | null } {
  return {
    ...('instance' in r ? { instance: r.instance } : {}),
    id: r.connection,
    short: shortId(r.connection, r.session),
    no: r.session,
    user: r.user,
    database: r.database,
    clientAddress: r.client,
    application: r.application,
    tls: r.tls === null ? null : r.tls === 1,
    serverPid: r.server_pid,
    start: r.start_time,
    end: r.end_time,
    endReason: r.end_reason,
    durationMs: r.duration_ms,
    bytesIn: r.bytes_in,
    bytesOut: r.bytes_out,
    statements: r.statements,
    denied: r.denied,
    held: r.held,
  };
}

function text(query: URLSearchParams, name: string, max: number): string {
  const v = (query.get(name) ?? '').trim();
  if (v.length > max) throw new AuditorError(400, `"${name}" is too long`, 'bad_request');
  return v;
}

function time(query: URLSearchParams, name: 'since' | 'until'): number | undefined {
  const v = text(query, name, 64);
  if (!v) return undefined;
  const t = parseTime(v);
  if (t === null) throw new AuditorError(400, `${name} "${v}" is not a time: use ISO 8601 (2025-11-24T10:00:00Z) or a time ago (30m, 2h, 7d)`, 'bad_time');
  return t;
}

function integer(query: URLSearchParams, name: string, fallback: number, min: number, max: number): number {
  const v = query.get(name);
  if (v === null || v === '') return fallback;
  if (!/^\d{1,9}$/.test(v)) throw new AuditorError(400, `"${name}" must be a number`, 'bad_request');
  return Math.min(max, Math.max(min, Number(v)));
}
