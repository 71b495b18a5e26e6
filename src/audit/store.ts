/**
 * The audit trail as the proxy sees it (AuditSink): an append-only, hash-chained SQLite store written by a
 * worker thread. This file batches records and keeps the promises of durability; records.ts has their
 * layout, dictionary.ts the repeated JSON, outcome-index.ts where outcomes find their statement,
 * writer-client.ts the worker thread.
 *
 * Hot path: each call appends one small array to an in-memory batch (no I/O, no JSON of the statement,
 * no hashing, no redaction: all of that happens in the worker). A statement's classification and an
 * allow decision are serialised once and reused (they are shared, frozen objects). An outcome that
 * arrives while its statement is still in the open batch is folded into that statement's record.
 * The batch is posted to the worker at most every `flushMs` (50 ms), when it is large, or at once when
 * someone awaits `durable()`.
 *
 * Durability: the worker commits each batch in one transaction with synchronous=FULL (fsync'd) before it
 * acknowledges it. `durable()` resolves when the batch holding everything recorded so far is acknowledged.
 *
 * Failure: if the worker reports a storage error or dies, `healthy` turns false, waiting and later
 * `durable()` calls reject, and the failure is logged. Unacknowledged batches stay in memory (up to
 * `maxPending` records; beyond that records are dropped, which is logged at error once per outage and
 * counted in an `audit.gap` event) and a new worker is started with backoff; once it has written them,
 * `healthy` is true again.
 *
 * One writer per chain: the store holds `DATA/audit.lock` (a kernel lock, see util/owner-lock.ts) from
 * open to close, so a second store on the same trail, in this process or another, is refused before it
 * writes anything (the writer's `last_batch` check stays as a second line of defence).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { OwnerLock } from '../util/owner-lock.js';
import type { HoldOutcome } from '../stepup/types.js';
import type { Logger } from '../log.js';
import { Dictionary } from './dictionary.js';
import { plainPreview } from './recorded.js';
import { Conn, OutcomeIndex } from './outcome-index.js';
import { Rec, RECORD_KINDS, S, type AuditRecord, type OutcomeFields, type PlainHoldOutcome, type PlainPreview, type PlainRedecision, type StatementRecord, type SystemEventKind } from './records.js';
import type { Decision } from '../rules/types.js';
import type { AuditSink, ConnectionFacts, StatementEvent, StatementOutcome } from './types.js';
import type { ToWorker, WorkerInit } from './worker.js';
import { AuditUnavailable, WriterClient, type WriterEvents } from './writer-client.js';

export { AuditUnavailable };

export interface AuditStoreOptions {
  dataDir: string;
  log: Logger;
  /** Record bind parameters (redacted). Default false. */
  bindParameters?: boolean;
  /** Prune events older than this (ms); null keeps everything. */
  retentionMs?: number | null;
  /** Sign a checkpoint after this many events (default 10,000) ... */
  checkpointEvents?: number;
  /** ... or this long after the last one when events were written (default 5 minutes). */
  checkpointMs?: number;
  /** Longest an event waits in memory before it is handed to the writer (default 50 ms). */
  flushMs?: number;
  /** Hand a batch over once it holds this many records (default 2,000). */
  maxBatch?: number;
  /** Records kept in memory while the writer is down before new ones are dropped (default 500,000). */
  maxPending?: number;
  busyTimeoutMs?: number;
  /** First delay before restarting a failed writer (default 1 s), doubling up to maxRestartDelayMs (30 s). */
  restartDelayMs?: number;
  maxRestartDelayMs?: number;
  /** How often retention runs (default 1 hour); the first run is pruneDelayMs (10 s) after start. */
  pruneIntervalMs?: number;
  pruneDelayMs?: number;
}

interface PostedBatch {
  n: number;
  recs: AuditRecord[];
  dropped?: Record<string, number>;
  /** Dictionary entries first used in this batch: [id, json, ...]. */
  dict?: (number | string)[];
}

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** Held by the one store that writes `audit.db` (see util/owner-lock.ts). */
export const AUDIT_LOCK_FILE = 'audit.lock';

const BACKLOG_WARNING = 200_000;

export class AuditStore implements AuditSink {
  private readonly log: Logger;
  private readonly dataDir: string;
  private readonly run = randomUUID();
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxPending: number;
  private readonly recordParams: boolean;
  private readonly writer: WriterClient;
  private readonly dictionary = new Dictionary();
  private readonly outcomes = new OutcomeIndex();

  private isHealthy = false;
  private failureReason: string | null = 'not started';
  private closing: Promise<void> | null = null;

  private batch: AuditRecord[] = [];
  private batchNo = 1;
  private flushTimer: NodeJS.Timeout | null = null;
  private flushQueued = false;
  private readonly inflight: PostedBatch[] = [];
  private inflightRecords = 0;
  private dropped: Record<string, number> | null = null;
  private waiters: Waiter[] = [];
  private lastBacklogWarning = 0;

  private readonly conns = new Map<string, Conn>();
  private nextSession = 1;
  private lastId = 0;
  private readonly healthListeners = new Set<(healthy: boolean, reason: string | null) => void>();
  private readonly commitListeners = new Set<(lastSeq: number) => void>();
  private writtenSeq = 0;
  private opened = false;
  /** Held from open to close: no other store writes this chain meanwhile. */
  private lock: OwnerLock | null = null;
  /** Records dropped since the store last wrote (logged once per outage, then recorded as audit.gap). */
  private droppedSinceWrite = 0;
  /** Records dropped since open (for metrics). */
  private droppedTotal = 0;

  private constructor(options: AuditStoreOptions) {
    this.log = options.log;
    this.dataDir = options.dataDir;
    this.flushMs = options.flushMs ?? 50;
    this.maxBatch = options.maxBatch ?? 2000;
    this.maxPending = options.maxPending ?? 500_000;
    this.recordParams = options.bindParameters ?? false;
    const init: WorkerInit = {
      dataDir: options.dataDir,
      run: this.run,
      resume: false,
      bindParameters: this.recordParams,
      retentionMs: options.retentionMs ?? null,
      checkpointEvents: options.checkpointEvents ?? 10_000,
      checkpointMs: options.checkpointMs ?? 5 * 60_000,
      busyTimeoutMs: options.busyTimeoutMs ?? 5000,
      pruneIntervalMs: options.pruneIntervalMs ?? 60 * 60_000,
      pruneDelayMs: options.pruneDelayMs ?? 10_000,
    };
    const events: WriterEvents = {
      ready: (state, kid, resume) => this.writerReady(state, kid, resume),
      ack: (n, seq) => this.acknowledge(n, seq, true),
      gone: (reason, retryInMs) => this.writerGone(reason, retryInMs),
    };
    this.writer = new WriterClient(init, this.log, events, { firstDelayMs: options.restartDelayMs ?? 1000, maxDelayMs: options.maxRestartDelayMs ?? 30_000 });
  }

  /**
   * Opens `DATA/audit.db` (creating it and the signing key on first use). Rejects when it cannot be
   * written, and with OwnerLockHeld when another store (another stepgate) writes this trail: one writer
   * per chain, refused before anything is written.
   */
  static async open(options: AuditStoreOptions): Promise<AuditStore> {
    fs.mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const lock = OwnerLock.acquire(
      path.join(options.dataDir, AUDIT_LOCK_FILE),
      (owner) => `another stepgate${owner ? ` (pid ${owner.pid})` : ''} writes the audit trail in ${options.dataDir} (one writer per audit trail)`,
    );
    const store = new AuditStore(options);
    store.lock = lock;
    try {
      await store.writer.start();
    } catch (err) {
      lock.release();
      throw err;
    }
    return store;
  }

  // ───────────────────────────── AuditSink ─────────────────────────────

  get healthy(): boolean {
    return this.isHealthy;
  }

  /** Why the store is unhealthy (null when healthy). */
  get failure(): string | null {
    return this.isHealthy ? null : this.failureReason;
  }

  /** Called on every change of `healthy`; returns an unsubscribe function. */
  onHealthChange(listener: (healthy: boolean, reason: string | null) => void): () => void {
    this.healthListeners.add(listener);
    return () => this.healthListeners.delete(listener);
  }

  /**
   * Called each time the writer has committed a batch, with the chain's last sequence number; returns an
   * unsubscribe function. For readers of audit.db in this process (an open reader sees the new events
   * from then on) that wait for something to be recorded: they re-read on a commit instead of polling.
   */
  onCommit(listener: (lastSeq: number) => void): () => void {
    this.commitListeners.add(listener);
    return () => this.commitListeners.delete(listener);
  }

  connectionStart(facts: ConnectionFacts): void {
    const conn = this.conn(facts.connectionId);
    const serverDatabase = facts.serverDatabase !== undefined && facts.serverDatabase !== facts.database ? facts.serverDatabase : null;
    this.push([Rec.Start, conn.no, ++conn.sseq, Date.now(), facts.connectionId, facts.user, facts.database, facts.application, facts.clientAddress, facts.tls, facts.serverPid, serverDatabase]);
  }

  connectionEnd(connectionId: string, stats: { durationMs: number; bytesIn: number; bytesOut: number; reason: string }): void {
    const conn = this.conn(connectionId);
    this.push([Rec.End, conn.no, ++conn.sseq, Date.now(), stats.durationMs, stats.bytesIn, stats.bytesOut, stats.reason]);
    conn.ended = true;
    this.conns.delete(connectionId);
  }

  statement(event: StatementEvent): number {
    const conn = this.conn(event.connectionId);
    const id = ++this.lastId;
    const sseq = ++conn.sseq;
    const statements = event.statements;
    const dictionary = this.dictionary;
    const classifications = statements.length === 1 ? dictionary.classification(statements[0]!) : statements.map((s) => dictionary.classification(s));
    const decision = event.decision;
    const rec: StatementRecord = [
      Rec.Statement,
      conn.no,
      sseq,
      Date.now(),
      event.sql,
      classifications,
      dictionary.decision(decision),
      this.recordParams ? event.params : null,
      decision.action,
      -1,
      null,
      null,
      null,
      false,
      0,
      null,
      false,
    ];
    if (this.push(rec)) this.outcomes.add(id, conn, sseq, rec, this.batchNo, statements.length > 0 ? statements.length : 1);
    return id;
  }

  outcome(statementId: number, index: number, outcome: StatementOutcome): void {
    const p = this.outcomes.find(statementId);
    if (p === undefined) return;
    const readOnlyRefused = outcome.readOnlyRefused === true;
    if (p.batch === this.batchNo) {
      // Its record is still in the open batch: the outcome goes into it.
      const rec = p.rec;
      if (rec[S.Index] === -1) {
        rec[S.Index] = index;
        rec[S.Tag] = outcome.tag;
        rec[S.Sqlstate] = outcome.sqlstate;
        rec[S.Message] = outcome.message;
        rec[S.Skipped] = outcome.skipped;
        rec[S.DurationMs] = outcome.durationMs;
        rec[S.ReadOnlyRefused] = readOnlyRefused;
      } else {
        const o: OutcomeFields = [index, outcome.tag, outcome.sqlstate, outcome.message, outcome.skipped, outcome.durationMs, readOnlyRefused];
        const more = rec[S.More];
        if (more === null) rec[S.More] = [o];
        else more.push(o);
      }
    } else {
      const conn = p.conn;
      this.push([Rec.Outcome, conn.no, ++conn.sseq, Date.now(), p.sseq, index, outcome.tag, outcome.sqlstate, outcome.message, outcome.skipped, outcome.durationMs, readOnlyRefused]);
    }
    this.outcomes.done(p);
  }

  challengeCreated(statementId: number, challengeId: string): void {
    const p = this.outcomes.find(statementId);
    if (p === undefined) {
      this.log.warn('audit.unknown_statement', { statement: statementId, event: 'challenge.created', challenge: challengeId });
      return;
    }
    this.push([Rec.ChallengeCreated, p.conn.no, ++p.conn.sseq, Date.now(), p.sseq, challengeId]);
  }

  preview(statementId: number, report: PlainPreview, decision: Decision | null): void {
    const p = this.outcomes.find(statementId);
    if (p === undefined) {
      this.log.warn('audit.unknown_statement', { statement: statementId, event: 'preview', status: report.status });
      return;
    }
    // Copied to plain data (it crosses to the worker thread).
    const plain = plainPreview(report);
    const redecided: PlainRedecision | null =
      decision === null ? null : { action: decision.action, rule: decision.rule, file: decision.file, reason: decision.reason, rows: decision.rows ?? null };
    this.push([Rec.Preview, p.conn.no, ++p.conn.sseq, Date.now(), p.sseq, plain, redecided]);
  }

  challengeResolved(statementId: number, challengeId: string | null, outcome: HoldOutcome): void {
    const p = this.outcomes.find(statementId);
    if (p === undefined) {
      this.log.warn('audit.unknown_statement', { statement: statementId, event: 'challenge.resolved', status: outcome.status });
      return;
    }
    this.push([Rec.ChallengeResolved, p.conn.no, ++p.conn.sseq, Date.now(), p.sseq, challengeId, plainOutcome(outcome)]);
  }

  event(kind: SystemEventKind, body: Record<string, unknown>): void {
    this.push([Rec.System, 0, 0, Date.now(), kind, body]);
  }

  durable(): Promise<void> {
    if (!this.isHealthy) return Promise.reject(this.unavailable());
    let n: number;
    if (this.batch.length > 0 || this.dropped !== null) {
      n = this.batchNo;
      if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(() => {
          this.flushQueued = false;
          this.flush();
        });
      }
    } else if (this.inflight.length > 0) {
      n = this.inflight[this.inflight.length - 1]!.n;
    } else {
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.waiters.push({ n, resolve, reject }));
  }

  // ───────────────────────────── lifecycle and tools ─────────────────────────────

  /** Hands the open batch to the writer now. */
  flush(): void {
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.batch.length === 0 && this.dropped === null) return;
    const b: PostedBatch = { n: this.batchNo, recs: this.batch };
    const fresh = this.dictionary.takeFresh();
    if (fresh !== null) b.dict = fresh;
    if (this.dropped !== null) {
      b.dropped = this.dropped;
      this.dropped = null;
    }
    this.batchNo++;
    this.batch = [];
    this.inflight.push(b);
    this.inflightRecords += b.recs.length;
    if (this.writer.ready) this.post(b);
    if (this.inflightRecords > BACKLOG_WARNING && Date.now() - this.lastBacklogWarning > 60_000) {
      this.lastBacklogWarning = Date.now();
      this.log.warn('audit.backlog', { records: this.inflightRecords, note: 'the audit writer falls behind; events wait in memory' });
    }
  }

  /** Resolves when everything recorded so far is committed (or rejects when the store is failing). */
  async sync(): Promise<void> {
    return this.durable();
  }

  /** Signs a checkpoint of the current head now; resolves with it (null when there is nothing new). */
  async checkpoint(): Promise<{ id: number; seq: number; hash: string; jws: string } | null> {
    await this.durable();
    return (await this.writer.request({ type: 'checkpoint', id: 0, reason: 'manual' }, () => this.unavailable())) as { id: number; seq: number; hash: string; jws: string } | null;
  }

  /** Runs retention now (as of `now`). */
  async prune(now?: number, chunk?: number): Promise<{ pruned: number; throughSeq: number | null }> {
    await this.durable();
    return (await this.writer.request({ type: 'prune', id: 0, now, chunk }, () => this.unavailable())) as { pruned: number; throughSeq: number | null };
  }

  /**
   * For metrics, read at scrape time (nothing is tracked for it on the hot path): records waiting in
   * memory, when the oldest of them was recorded (every record's fourth field is its time), records
   * dropped since open.
   */
  stats(): { queued: number; oldestQueuedAt: number | null; dropped: number } {
    let oldest: number | null = null;
    for (const b of this.inflight) {
      if (b.recs.length > 0) {
        oldest = b.recs[0]![3] as number;
        break;
      }
    }
    if (oldest === null && this.batch.length > 0) oldest = this.batch[0]![3] as number;
    return { queued: this.inflightRecords + this.batch.length, oldestQueuedAt: oldest, dropped: this.droppedTotal };
  }

  /** Last global sequence number the writer acknowledged. */
  get lastWrittenSeq(): number {
    return this.writtenSeq;
  }

  /** The worker thread (tests terminate it to simulate a crash). */
  get workerThread(): Worker | null {
    return this.writer.thread;
  }

  /** Writes what is pending, a final signed checkpoint and `audit.close`, and stops the worker. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.flush();
    await this.writer.stop(() => this.unavailable());
    const lost = this.inflight.reduce((sum, b) => sum + b.recs.length, 0) + this.droppedSinceWrite;
    if (lost > 0) this.log.error('audit.lost_on_close', { events: lost, data: this.dataDir, reason: this.failureReason });
    this.lock?.release();
    this.lock = null;
    this.setHealthy(false, 'closed');
    for (const w of this.waiters) w.reject(this.unavailable());
    this.waiters = [];
  }

  // ───────────────────────────── internals ─────────────────────────────

  private conn(connectionId: string): Conn {
    let conn = this.conns.get(connectionId);
    if (conn === undefined) {
      conn = new Conn(connectionId, this.nextSession++);
      this.conns.set(connectionId, conn);
    }
    return conn;
  }

  /** Appends a record to the open batch; false when it had to be dropped. */
  private push(rec: AuditRecord): boolean {
    if (this.closing !== null) return false;
    if (!this.isHealthy && this.inflightRecords + this.batch.length >= this.maxPending) {
      const kind = RECORD_KINDS[rec[0]] ?? 'unknown';
      this.dropped ??= {};
      this.dropped[kind] = (this.dropped[kind] ?? 0) + 1;
      this.droppedTotal++;
      if (this.droppedSinceWrite++ === 0) {
        // Never in silence: once per outage here, and as an audit.gap event (with the count) once the store writes again.
        this.log.error('audit.dropping', {
          data: this.dataDir,
          kept: this.maxPending,
          reason: this.failureReason,
          note: 'the audit store is down and the memory buffer is full: new events are counted, not kept (recorded as audit.gap when it recovers)',
        });
      }
      return false;
    }
    const b = this.batch;
    b.push(rec);
    if (b.length === 1) {
      if (this.flushTimer === null) this.flushTimer = setTimeout(this.onFlushTimer, this.flushMs);
    } else if (b.length >= this.maxBatch) {
      this.flush();
    }
    return true;
  }

  private readonly onFlushTimer = (): void => {
    this.flushTimer = null;
    this.flush();
    this.outcomes.sweep();
  };

  private post(b: PostedBatch): void {
    const message: ToWorker = { type: 'batch', n: b.n, recs: b.recs, ...(b.dropped ? { dropped: b.dropped } : {}), ...(b.dict ? { dict: b.dict } : {}) };
    this.writer.post(message);
  }

  private unavailable(): AuditUnavailable {
    return new AuditUnavailable(`the audit trail is unavailable: ${this.failureReason ?? 'unknown failure'}`);
  }

  private setHealthy(healthy: boolean, reason: string | null): void {
    const changed = healthy !== this.isHealthy;
    this.isHealthy = healthy;
    this.failureReason = healthy ? null : reason;
    if (changed) for (const l of this.healthListeners) l(healthy, this.failureReason);
  }

  private writerReady(state: { nextSession: number; lastSeq: number; lastBatch: string | null }, kid: string, resume: boolean): void {
    this.nextSession = Math.max(this.nextSession, state.nextSession);
    this.writtenSeq = state.lastSeq;
    if (!resume) {
      this.opened = true;
      this.setHealthy(true, null);
      this.log.info('audit.opened', { data: this.dataDir, last_seq: state.lastSeq, key: kid });
      return;
    }
    // Resumed after a failure: drop what the previous writer committed, re-send the rest, then probe.
    const [run, n] = (state.lastBatch ?? '').split(':');
    if (run === this.run) this.acknowledge(Number(n), state.lastSeq, false);
    // The new writer knows no dictionary entries yet.
    this.writer.post({ type: 'dict', entries: this.dictionary.all() });
    for (const b of this.inflight) this.post(b);
    if (this.batch.length > 0 || this.dropped !== null) this.flush();
    if (this.inflight.length === 0) {
      // Nothing to write: an empty batch proves the database takes writes again.
      const probe: PostedBatch = { n: this.batchNo++, recs: [] };
      this.inflight.push(probe);
      this.post(probe);
    }
  }

  private acknowledge(n: number, seq: number, fromWrite: boolean): void {
    this.writtenSeq = Math.max(this.writtenSeq, seq);
    // The batch that carried the drop count (audit.gap) is on disk once everything posted before now is.
    if (this.dropped === null && this.inflight.every((b) => b.n <= n)) this.droppedSinceWrite = 0;
    while (this.inflight.length > 0 && this.inflight[0]!.n <= n) this.inflightRecords -= this.inflight.shift()!.recs.length;
    if (this.waiters.length > 0) {
      const still: Waiter[] = [];
      for (const w of this.waiters) {
        if (w.n <= n) w.resolve();
        else still.push(w);
      }
      this.waiters = still;
    }
    if (fromWrite && !this.isHealthy && this.closing === null) {
      this.writer.resetBackoff();
      this.log.warn('audit.recovered', { data: this.dataDir, last_seq: seq, note: 'the audit trail records again' });
      this.setHealthy(true, null);
    }
    for (const l of this.commitListeners) l(this.writtenSeq);
  }

  private writerGone(reason: string, retryInMs: number): void {
    if (this.closing !== null || !this.opened) return;
    const wasHealthy = this.isHealthy;
    this.setHealthy(false, reason);
    for (const w of this.waiters) w.reject(this.unavailable());
    this.waiters = [];
    if (wasHealthy) {
      this.log.error('audit.failed', {
        data: this.dataDir,
        error: reason,
        note: 'statements that need the audit trail are refused until it records again; stepgate retries',
      });
    } else {
      this.log.warn('audit.retry_failed', { data: this.dataDir, error: reason, retry_in_ms: retryInMs });
    }
  }
}

/** A HoldOutcome as plain data (it crosses to the worker thread). */
function plainOutcome(o: HoldOutcome): PlainHoldOutcome {
  switch (o.status) {
    case 'approved':
      return {
        status: o.status,
        approvers: o.approvers.map((a) => ({
          user: a.user,
          credentialId: a.credentialId,
          factor: a.factor ?? null,
          ...(a.signed ? { passkey: a.passkey, signed: { ...a.signed } } : {}),
        })),
        grant: o.grant,
      };
    case 'rejected':
      return { status: o.status, by: o.by, reason: o.reason };
    case 'unavailable':
      return { status: o.status, reason: o.reason };
    default:
      return { status: o.status };
  }
}
