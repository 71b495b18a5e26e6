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
 */
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { AuditDbMissing, openAuditDbForReading } from '../audit/db.js';
import { BrowseError, chainHead, latestCheckpoint, sessionsPage, timelinePage, type CheckpointView, type TimelineStep } from '../audit/browse.js';
import { findSession, parseTime, SessionLookupError, shortId, type SessionFilter, type SessionRow } from '../audit/read.js';
import type { Problem, VerifyReport } from '../audit/verify.js';
import type { FromVerifyWorker, VerifyWorkerInit } from '../audit/verify-worker.js';
import type { Logger } from '../log.js';
import type { AuditSessionView, AuditSessionsReply, AuditTimelineReply, VerificationReply, VerificationRunView } from './protocol.js';

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
  ) {}

  // ───────────────────────────── sessions ─────────────────────────────

  sessions(query: URLSearchParams): AuditSessionsReply & { now: number } {
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
      const page = sessionsPage(this.open(), filter, cursor, limit);
      return { now: Date.now(), sessions: page.sessions.map(sessionView), next: page.next };
    } catch (err) {
      if (err instanceof BrowseError) throw new AuditorError(400, err.message, 'bad_cursor');
      throw err;
    }
  }

  /** One session and a page of its timeline. `id`: a session id, a unique prefix of it, or #NUMBER. */
  timeline(id: string, query: URLSearchParams): AuditTimelineReply & { steps: TimelineStep[] } {
    const db = this.open();
    let session: SessionRow;
    try {
      session = findSession(db, id);
    } catch (err) {
      if (err instanceof SessionLookupError) throw new AuditorError(/^no session/.test(err.message) ? 404 : 400, err.message, 'session');
      throw err;
    }
    const afterText = query.get('after');
    let after: number | null = null;
    if (afterText !== null && afterText !== '') {
      if (!/^\d{1,15}$/.test(afterText)) throw new AuditorError(400, '"after" must be an event number', 'bad_request');
      after = Number(afterText);
    }
    const limit = integer(query, 'limit', TIMELINE_DEFAULT, 1, TIMELINE_MAX);
    const page = timelinePage(db, session, after, limit);
    return { session: sessionView(session), steps: page.steps, next: page.next };
  }

  // ───────────────────────────── verification ─────────────────────────────

  /** Where verification stands: the last result, a run in progress, and the chain's head and latest checkpoint now. */
  verification(): VerificationReply & { now: number } {
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
    const state = this.running ? 'running' : !last ? 'never' : last.error !== null ? 'error' : last.report!.ok ? 'verified' : 'broken';
    return {
      now: Date.now(),
      state,
      running: this.running ? { startedAt: this.running.startedAt, by: this.running.by } : null,
      last: last ? resultView(last) : null,
      checkpoint,
      head,
    };
  }

  /** Starts a verification unless one is running; returns the status. */
  verify(by: string): VerificationReply & { now: number } {
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
    const worker = new Worker(new URL('../audit/verify-worker.js', import.meta.url), { workerData: { dataDir: this.dataDir } satisfies VerifyWorkerInit });
    worker.unref();
    this.log.info('audit.verify_started', { user: by });
    const done = new Promise<void>((resolve) => {
      let finished = false;
      const finish = (report: VerifyReport | null, error: string | null): void => {
        if (finished) return;
        finished = true;
        this.running = null;
        this.last = { startedAt, finishedAt: Date.now(), by, report, error };
        if (error !== null) this.log.warn('audit.verify_error', { user: by, error });
        else if (report!.ok) this.log.info('audit.verified', { user: by, events: report!.events, last_seq: report!.lastSeq, unsealed: report!.unsealed, ms: Date.now() - startedAt });
        else this.log.error('audit.verify_failed', { user: by, problem: report!.problems.find((p) => p.severity === 'error')?.message ?? null, problems: report!.problems.length });
        resolve();
      };
      worker.once('message', (m: FromVerifyWorker) => {
        if (m.type === 'report') finish(m.report, null);
        else finish(null, m.message);
      });
      worker.once('error', (err) => finish(null, err.message));
      worker.once('exit', (code) => finish(null, this.closed ? 'stopped: the console closed' : `the verification thread exited (${code}) without a result`));
    });
    this.running = { startedAt, by, worker, done };
  }

  private open(): Database.Database {
    if (this.closed) throw new AuditorError(503, 'the console is shutting down', 'closing');
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

function resultView(r: VerificationResult): VerificationRunView {
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

function sessionView(r: SessionRow): AuditSessionView & { durationMs: number | null; bytesIn: number | null; bytesOut: number | null } {
  return {
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
