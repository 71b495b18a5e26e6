/**
 * The audit trail as the proxy sees it (AuditSink): an append-only, hash-chained SQLite store written by a
 * worker thread.
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
 * `maxPending` records; beyond that records are dropped and counted in an `audit.gap` event) and a new
 * worker is started with backoff; once it has written them, `healthy` is true again.
 */
import { randomUUID } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import type { Decision } from '../rules/types.js';
import type { StatementInfo } from '../sql/types.js';
import type { HoldOutcome } from '../stepup/types.js';
import type { Logger } from '../log.js';
import { REC } from './format.js';
import type { AuditSink, ConnectionFacts, StatementEvent, StatementOutcome } from './types.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker.js';

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

/** Rejection of `durable()`: the audit trail cannot record right now. */
export class AuditUnavailable extends Error {
  readonly code = 'AUDIT_UNAVAILABLE';
}

class Conn {
  sseq = 0;
  ended = false;
  constructor(
    readonly id: string,
    readonly no: number,
  ) {}
}

/** A statement whose outcomes are not all recorded yet. Reused once done (no allocation per statement). */
class PendingStatement {
  constructor(
    public id: number,
    public conn: Conn,
    public sseq: number,
    public rec: unknown[],
    public batch: number,
    public remaining: number,
  ) {}
}

interface PostedBatch {
  n: number;
  recs: unknown[][];
  dropped?: Record<string, number>;
  /** Dictionary entries first used in this batch: [id, json, ...]. */
  dict?: (number | string)[];
}

interface Waiter {
  n: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface ClassEntry {
  command: string;
  tables: unknown;
  flags: unknown;
  functions: unknown;
  ref: string | number;
}

const DICTIONARY_LIMIT = 50_000;

const KIND_NAMES: Record<number, string> = {
  [REC.Start]: 'connection.start',
  [REC.End]: 'connection.end',
  [REC.Statement]: 'statement',
  [REC.Outcome]: 'outcome',
  [REC.ChallengeCreated]: 'challenge.created',
  [REC.ChallengeResolved]: 'challenge.resolved',
};

/** Recent statements, by id modulo RING: where their outcomes find them without a map. */
const RING = 1 << 14;
/** Statements still open when pushed out of the ring (long-running, or denied: no outcome comes); bounded. */
const MAX_OPEN_STATEMENTS = 100_000;
const BACKLOG_WARNING = 200_000;

export class AuditStore implements AuditSink {
  private readonly log: Logger;
  private readonly dataDir: string;
  private readonly run = randomUUID();
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxPending: number;
  private readonly recordParams: boolean;
  private readonly init: WorkerInit;

  private worker: Worker | null = null;
  private workerReady = false;
  private isHealthy = false;
  private failureReason: string | null = 'not started';
  private lastWorkerError: string | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private restartDelay: number;
  private closing: Promise<void> | null = null;

  private batch: unknown[][] = [];
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
  private readonly ring: (PendingStatement | undefined)[] = new Array<PendingStatement | undefined>(RING);
  private readonly open = new Map<number, PendingStatement>();
  /** Allow decisions by the default rule, by file (their JSON does not depend on the reason). */
  private readonly defaultAllow = new Map<string | null, string | number>();
  private readonly classCache = new WeakMap<object, ClassEntry>();
  private readonly allowCache = new Map<string, { rule: string | null; file: string | null; ref: string | number }>();
  private readonly dictionary = new Map<number, string>();
  /** Entries not yet sent: [id, json, id, json ...]. */
  private newDefinitions: (number | string)[] = [];
  private readonly healthListeners = new Set<(healthy: boolean, reason: string | null) => void>();
  private readonly results = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextResult = 1;
  private writtenSeq = 0;
  private opened = false;

  private constructor(options: AuditStoreOptions) {
    this.log = options.log;
    this.dataDir = options.dataDir;
    this.flushMs = options.flushMs ?? 50;
    this.maxBatch = options.maxBatch ?? 2000;
    this.maxPending = options.maxPending ?? 500_000;
    this.recordParams = options.bindParameters ?? false;
    this.restartDelay = options.restartDelayMs ?? 1000;
    this.init = {
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
    this.baseRestartDelay = this.restartDelay;
    this.maxRestartDelay = options.maxRestartDelayMs ?? 30_000;
  }
  private readonly baseRestartDelay: number;
  private readonly maxRestartDelay: number;

  /** Opens `DATA/audit.db` (creating it and the signing key on first use). Rejects when it cannot be written. */
  static async open(options: AuditStoreOptions): Promise<AuditStore> {
    const store = new AuditStore(options);
    await store.spawn(false);
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

  connectionStart(facts: ConnectionFacts): void {
    const conn = this.conn(facts.connectionId);
    const serverDatabase = facts.serverDatabase !== undefined && facts.serverDatabase !== facts.database ? facts.serverDatabase : null;
    this.push([REC.Start, conn.no, ++conn.sseq, Date.now(), facts.connectionId, facts.user, facts.database, facts.application, facts.clientAddress, facts.tls, facts.serverPid, serverDatabase]);
  }

  connectionEnd(connectionId: string, stats: { durationMs: number; bytesIn: number; bytesOut: number; reason: string }): void {
    const conn = this.conn(connectionId);
    this.push([REC.End, conn.no, ++conn.sseq, Date.now(), stats.durationMs, stats.bytesIn, stats.bytesOut, stats.reason]);
    conn.ended = true;
    this.conns.delete(connectionId);
  }

  statement(event: StatementEvent): number {
    const conn = this.conn(event.connectionId);
    const id = ++this.lastId;
    const sseq = ++conn.sseq;
    const statements = event.statements;
    const cls = statements.length === 1 ? this.classJson(statements[0]!) : statements.map((s) => this.classJson(s));
    const decision = event.decision;
    // Layout: see STATEMENT_SLOTS in writer.ts. Slots 9-14 take the first outcome, 15 any further ones.
    const rec = [
      REC.Statement,
      conn.no,
      sseq,
      Date.now(),
      event.sql,
      cls,
      decision.action === 'allow' ? this.allowRef(decision) : decisionJson(decision),
      this.recordParams ? event.params : null,
      decision.action,
      -1,
      null,
      null,
      null,
      false,
      0,
      null,
    ];
    if (this.push(rec)) {
      const slot = id & (RING - 1);
      const old = this.ring[slot];
      const remaining = statements.length > 0 ? statements.length : 1;
      if (old === undefined) {
        this.ring[slot] = new PendingStatement(id, conn, sseq, rec, this.batchNo, remaining);
      } else {
        if (old.remaining > 0 && !old.conn.ended) {
          // Still waiting for its outcome: keep it in the map and give the slot a fresh entry.
          if (this.open.size >= MAX_OPEN_STATEMENTS) this.trimOpen();
          this.open.set(old.id, old);
          this.ring[slot] = new PendingStatement(id, conn, sseq, rec, this.batchNo, remaining);
        } else {
          old.id = id;
          old.conn = conn;
          old.sseq = sseq;
          old.rec = rec;
          old.batch = this.batchNo;
          old.remaining = remaining;
        }
      }
    }
    return id;
  }

  private pending(statementId: number): PendingStatement | undefined {
    const p = this.ring[statementId & (RING - 1)];
    if (p !== undefined && p.id === statementId) return p.remaining > 0 ? p : undefined;
    return this.open.get(statementId);
  }

  outcome(statementId: number, index: number, outcome: StatementOutcome): void {
    const p = this.pending(statementId);
    if (p === undefined) return;
    if (p.batch === this.batchNo) {
      const rec = p.rec;
      if (rec[9] === -1) {
        rec[9] = index;
        rec[10] = outcome.tag;
        rec[11] = outcome.sqlstate;
        rec[12] = outcome.message;
        rec[13] = outcome.skipped;
        rec[14] = outcome.durationMs;
      } else {
        const o = [index, outcome.tag, outcome.sqlstate, outcome.message, outcome.skipped, outcome.durationMs];
        const more = rec[15] as unknown[] | null;
        if (more === null) rec[15] = [o];
        else more.push(o);
      }
    } else {
      const conn = p.conn;
      this.push([REC.Outcome, conn.no, ++conn.sseq, Date.now(), p.sseq, index, outcome.tag, outcome.sqlstate, outcome.message, outcome.skipped, outcome.durationMs]);
    }
    if (--p.remaining <= 0 && this.open.size > 0) this.open.delete(statementId);
  }

  challengeCreated(statementId: number, challengeId: string): void {
    const p = this.pending(statementId);
    if (p === undefined) {
      this.log.warn('audit.unknown_statement', { statement: statementId, event: 'challenge.created', challenge: challengeId });
      return;
    }
    this.push([REC.ChallengeCreated, p.conn.no, ++p.conn.sseq, Date.now(), p.sseq, challengeId]);
  }

  challengeResolved(statementId: number, challengeId: string | null, outcome: HoldOutcome): void {
    const p = this.pending(statementId);
    if (p === undefined) {
      this.log.warn('audit.unknown_statement', { statement: statementId, event: 'challenge.resolved', status: outcome.status });
      return;
    }
    this.push([REC.ChallengeResolved, p.conn.no, ++p.conn.sseq, Date.now(), p.sseq, challengeId, plainOutcome(outcome)]);
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
    if (this.newDefinitions.length > 0) {
      b.dict = this.newDefinitions;
      this.newDefinitions = [];
    }
    if (this.dropped !== null) {
      b.dropped = this.dropped;
      this.dropped = null;
    }
    this.batchNo++;
    this.batch = [];
    this.inflight.push(b);
    this.inflightRecords += b.recs.length;
    if (this.workerReady) this.post(b);
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
    return (await this.request({ type: 'checkpoint', id: 0, reason: 'manual' })) as { id: number; seq: number; hash: string; jws: string } | null;
  }

  /** Runs retention now (as of `now`). */
  async prune(now?: number, chunk?: number): Promise<{ pruned: number; throughSeq: number | null }> {
    await this.durable();
    return (await this.request({ type: 'prune', id: 0, now, chunk })) as { pruned: number; throughSeq: number | null };
  }

  /** Last global sequence number the writer acknowledged. */
  get lastWrittenSeq(): number {
    return this.writtenSeq;
  }

  /** The worker thread (tests terminate it to simulate a crash). */
  get workerThread(): Worker | null {
    return this.worker;
  }

  /** Writes what is pending, a final signed checkpoint and `audit.close`, and stops the worker. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.flush();
    const worker = this.worker;
    if (worker && this.workerReady) {
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.postMessage({ type: 'close' } satisfies ToWorker);
      const timer = setTimeout(() => void worker.terminate(), 15_000);
      await exited;
      clearTimeout(timer);
    } else if (worker) {
      await worker.terminate();
    }
    this.worker = null;
    this.workerReady = false;
    const lost = this.inflight.reduce((sum, b) => sum + b.recs.length, 0);
    if (lost > 0) this.log.error('audit.lost_on_close', { events: lost, data: this.dataDir, reason: this.failureReason });
    this.setHealthy(false, 'closed');
    for (const w of this.waiters) w.reject(this.unavailable());
    this.waiters = [];
    for (const r of this.results.values()) r.reject(this.unavailable());
    this.results.clear();
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
  private push(rec: unknown[]): boolean {
    if (this.closing !== null) return false;
    if (!this.isHealthy && this.inflightRecords + this.batch.length >= this.maxPending) {
      const kind = KIND_NAMES[rec[0] as number] ?? 'unknown';
      this.dropped ??= {};
      this.dropped[kind] = (this.dropped[kind] ?? 0) + 1;
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
    if (this.open.size > 1000) this.sweepOpen();
  };

  /** Statements of closed connections never get their outcome (denied, or the connection went away). */
  private sweepOpen(): void {
    for (const [id, p] of this.open) if (p.conn.ended) this.open.delete(id);
  }

  private trimOpen(): void {
    this.sweepOpen();
    let excess = this.open.size - MAX_OPEN_STATEMENTS / 2;
    for (const id of this.open.keys()) {
      if (excess-- <= 0) break;
      this.open.delete(id);
    }
  }

  /** The statement's classification as JSON, or the number of a dictionary entry holding it. */
  private classJson(s: StatementInfo): string | number {
    const key = s.classes as unknown as object;
    const hit = this.classCache.get(key);
    if (hit !== undefined && hit.tables === s.tables && hit.flags === s.flags && hit.command === s.command && hit.functions === s.functions) return hit.ref;
    const json = JSON.stringify({
      command: s.command,
      classes: s.classes,
      tables: s.tables.map((t) => ({ schema: t.schema, name: t.name, access: t.access })),
      ...(s.flags.length > 0 ? { flags: s.flags } : {}),
      ...(s.functions.length > 0 ? { functions: s.functions } : {}),
    });
    // Only frozen (cached, shared) classifications are remembered: they cannot change under us.
    if (!Object.isFrozen(key) || !Object.isFrozen(s.tables)) return json;
    const ref = this.define(json);
    this.classCache.set(key, { command: s.command, tables: s.tables, flags: s.flags, functions: s.functions, ref });
    return ref;
  }

  private allowRef(d: Decision): string | number {
    if (d.rule === null) {
      const ref = this.defaultAllow.get(d.file);
      if (ref !== undefined) return ref;
      const made = this.define(decisionJson(d));
      if (this.defaultAllow.size < 100) this.defaultAllow.set(d.file, made);
      return made;
    }
    const hit = this.allowCache.get(d.reason);
    if (hit !== undefined && hit.rule === d.rule && hit.file === d.file) return hit.ref;
    const ref = this.define(decisionJson(d));
    if (this.allowCache.size >= 10_000) this.allowCache.clear();
    this.allowCache.set(d.reason, { rule: d.rule, file: d.file, ref });
    return ref;
  }

  /**
   * Repeated JSON (classifications, allow decisions) travels to the writer once, as a dictionary entry;
   * records carry its number. Past DICTIONARY_LIMIT entries, JSON travels inline.
   */
  private define(json: string): string | number {
    if (this.dictionary.size >= DICTIONARY_LIMIT) return json;
    const id = this.dictionary.size + 1;
    this.dictionary.set(id, json);
    this.newDefinitions.push(id, json);
    return id;
  }

  private post(b: PostedBatch): void {
    const message: ToWorker = { type: 'batch', n: b.n, recs: b.recs, ...(b.dropped ? { dropped: b.dropped } : {}), ...(b.dict ? { dict: b.dict } : {}) };
    this.worker?.postMessage(message);
  }

  private request(message: ToWorker & { id: number }): Promise<unknown> {
    if (!this.worker || !this.workerReady) return Promise.reject(this.unavailable());
    const id = this.nextResult++;
    return new Promise((resolve, reject) => {
      this.results.set(id, { resolve, reject });
      this.worker!.postMessage({ ...message, id });
    });
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

  private spawn(resume: boolean): Promise<void> {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ...this.init, resume } satisfies WorkerInit });
    this.worker = worker;
    this.workerReady = false;
    this.lastWorkerError = null;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve();
      };
      worker.on('message', (m: FromWorker) => this.onWorkerMessage(worker, m, resume, settle));
      worker.on('error', (err) => {
        this.lastWorkerError = `the audit writer crashed: ${err.message}`;
      });
      worker.on('exit', (code) => {
        const reason = this.lastWorkerError ?? `the audit writer stopped (exit code ${code})`;
        settle(new Error(reason));
        this.workerGone(worker, reason);
      });
    });
  }

  private onWorkerMessage(worker: Worker, m: FromWorker, resume: boolean, settle: (err: Error | null) => void): void {
    if (worker !== this.worker) return;
    switch (m.type) {
      case 'ready': {
        this.workerReady = true;
        this.nextSession = Math.max(this.nextSession, m.state.nextSession);
        this.writtenSeq = m.state.lastSeq;
        if (!resume) {
          this.opened = true;
          this.setHealthy(true, null);
          settle(null);
          this.log.info('audit.opened', { data: this.dataDir, last_seq: m.state.lastSeq, key: m.kid });
          return;
        }
        // Resumed after a failure: drop what the previous writer committed, re-send the rest, then probe.
        const [run, n] = (m.state.lastBatch ?? '').split(':');
        if (run === this.run) this.acknowledge(Number(n), m.state.lastSeq, false);
        // The new writer knows no dictionary entries yet.
        worker.postMessage({ type: 'dict', entries: [...this.dictionary].flat() } satisfies ToWorker);
        for (const b of this.inflight) this.post(b);
        if (this.batch.length > 0 || this.dropped !== null) this.flush();
        if (this.inflight.length === 0) {
          // Nothing to write: an empty batch proves the database takes writes again.
          this.batch = [];
          const probe: PostedBatch = { n: this.batchNo++, recs: [] };
          this.inflight.push(probe);
          this.post(probe);
        }
        settle(null);
        return;
      }
      case 'ack':
        this.acknowledge(m.n, m.seq, true);
        return;
      case 'failed':
        this.lastWorkerError = m.message;
        return;
      case 'log':
        this.log[m.level](m.event, m.fields);
        return;
      case 'checkpoint':
        // Also in the log, so a copy of every signed chain head leaves the machine with the logs.
        this.log.info('audit.checkpoint', { id: m.id, seq: m.seq, hash: m.hash, reason: m.reason, jws: m.jws });
        return;
      case 'result': {
        const r = this.results.get(m.id);
        if (!r) return;
        this.results.delete(m.id);
        if (m.error !== undefined) r.reject(new Error(m.error));
        else r.resolve(m.value ?? null);
        return;
      }
      case 'closed':
        return;
    }
  }

  private acknowledge(n: number, seq: number, fromWrite: boolean): void {
    this.writtenSeq = Math.max(this.writtenSeq, seq);
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
      this.restartDelay = this.baseRestartDelay;
      this.log.warn('audit.recovered', { data: this.dataDir, last_seq: seq, note: 'the audit trail records again' });
      this.setHealthy(true, null);
    }
  }

  private workerGone(worker: Worker, reason: string): void {
    if (worker !== this.worker) return;
    this.worker = null;
    this.workerReady = false;
    for (const r of this.results.values()) r.reject(new AuditUnavailable(reason));
    this.results.clear();
    if (this.closing !== null || !this.opened) return; // a failed first open fails AuditStore.open instead
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
      this.log.warn('audit.retry_failed', { data: this.dataDir, error: reason, retry_in_ms: this.restartDelay });
    }
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.closing !== null) return;
      this.spawn(true).catch(() => {}); // failures arrive through workerGone again
    }, this.restartDelay);
    this.restartTimer.unref();
    this.restartDelay = Math.min(this.restartDelay * 2, this.maxRestartDelay);
  }
}

function decisionJson(d: Decision): string {
  if (d.action === 'allow') {
    // An allow by the default says nothing its rule and file do not: the trail stays smaller without it.
    return JSON.stringify(d.rule === null ? { action: d.action, rule: null, file: d.file } : { action: d.action, rule: d.rule, file: d.file, reason: d.reason });
  }
  return JSON.stringify({
    action: d.action,
    rule: d.rule,
    file: d.file,
    reason: d.reason,
    message: d.message,
    statement_index: d.statementIndex,
    ...(d.action === 'step-up'
      ? {
          timeout_ms: d.timeoutMs,
          grant_ms: d.grantMs,
          grant_scope: d.grantScope,
          ...(d.approvers ? { approvers: { groups: [...d.approvers.groups], count: d.approvers.count } } : {}),
          ...(d.stepUps
            ? {
                step_ups: d.stepUps.map((s) => ({
                  rule: s.rule,
                  file: s.file,
                  statement_index: s.statementIndex,
                  ...(s.approvers ? { approvers: { groups: [...s.approvers.groups], count: s.approvers.count } } : {}),
                })),
              }
            : {}),
        }
      : {}),
  });
}

/** A HoldOutcome as plain data (it crosses to the worker thread). */
function plainOutcome(o: HoldOutcome): Record<string, unknown> {
  switch (o.status) {
    case 'approved':
      return { status: o.status, approvers: o.approvers.map((a) => ({ user: a.user, credentialId: a.credentialId })), grant: o.grant };
    case 'rejected':
      return { status: o.status, by: o.by, reason: o.reason };
    case 'unavailable':
      return { status: o.status, reason: o.reason };
    default:
      return { status: o.status };
  }
}
