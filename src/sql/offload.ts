/**
 * Classification that never stalls the event loop: small texts are classified in this thread (through the
 * cache), large ones in a worker thread.
 *
 * Why: parsing costs 0.3 to 3 ms per KB of SQL (measured on the development VM; a 4 MB text of
 * `SELECT 1;` takes about 10 s), and while the main thread parses, every other session waits. Above
 * `threshold` (4 KiB by default: at most a few milliseconds here) a text goes to the worker; the main thread
 * only sends it (in 1 MiB pieces, a yield between them) and receives the result in chunks of a few hundred
 * statements (one chunk per message, the next one asked for only after this one is taken, so no more than
 * ~2 ms of deserialization at a time). Shorter texts with many operators and brackets (more than 256 by
 * default: deep parse trees, which cost far more per byte) go there too.
 *
 * The worker also takes what this thread cannot read: a text too deep for the main thread's stack comes back
 * from the in-thread path with `error.stackExhausted` and is classified again in the worker, whose stack is
 * larger (8 MiB: enough for left-deep expressions of about 60,000 terms, more than PostgreSQL's default
 * max_stack_depth accepts, and small enough that V8's stack limit is reached before the parser's own shadow
 * stack in WebAssembly memory overflows, which would corrupt it: that happens at about 230,000 terms).
 *
 * The classifier consults the session through a synchronous ClassifyContext. The worker gets a snapshot of
 * it and the answers recorded so far (replay.ts); when it needed a lookup nobody had answered, it says so, the
 * answer is asked of the real context here, and the text is classified again (the worker keeps its parse).
 * Once complete, every answer used is checked against the context once more, so the result holds for the
 * context as it is when the result is returned.
 *
 * Results of texts up to the cache's maxTextLength are kept in the cache (with the lookups they used); larger
 * ones are not.
 */
import { Worker } from 'node:worker_threads';
import { unknownStatement } from './analysis.js';
import type { ClassificationCache } from './cache.js';
import { classify } from './classify.js';
import { ask, lookupKey, lookupsHold, snapshotContext, type ContextSnapshot, type Lookup } from './replay.js';
import type { ClassifyContext, ClassifyResult, StatementInfo } from './types.js';
import type { FromWorker, ToWorker } from './worker-protocol.js';

export interface OffloadOptions {
  /**
   * Texts longer than this (UTF-16 units) are classified in the worker, and so are shorter ones with more
   * than threshold/16 operators and opening brackets (deeply nested ones). Default 4096.
   */
  threshold?: number;
  /**
   * Most statements per result message (default 2000), and most distinct classifications (default 200):
   * about a millisecond each here (a classification costs ~4 µs to copy, a statement that shares one ~0.3 µs).
   */
  chunkStatements?: number;
  chunkKinds?: number;
  /** The worker's stack. Default 8 MiB (see above before raising it). */
  stackSizeMb?: number;
  /** The cache for small texts (and for worker results up to its maxTextLength). */
  cache?: ClassificationCache | null;
}

export interface OffloadStats {
  /** Texts classified in this thread. */
  inThread: number;
  /** Texts sent to the worker, and rounds (a round per batch of answers the worker lacked). */
  offloaded: number;
  rounds: number;
  /** Texts retried in the worker because this thread's stack was too small for them. */
  stackRetries: number;
  /** Workers started (a worker retires after a job that grew its memory, or when it fails). */
  workersStarted: number;
}

const PIECE = 1 << 20;
/** Rounds of a job before giving up on a context that keeps changing. */
const MAX_ROUNDS = 16;

interface Job {
  sql: string;
  ctx: ClassifyContext;
  resolve(result: ClassifyResult): void;
}

/** One round in flight: the worker's replies are collected here. */
interface Round {
  id: number;
  onMessage(m: FromWorker): void;
  onGone(reason: string): void;
}

export class OffThreadClassifier {
  readonly threshold: number;
  private readonly chunkStatements: number;
  private readonly chunkKinds: number;
  private readonly stackSizeMb: number;
  private readonly cache: ClassificationCache | null;
  private worker: Worker | null = null;
  /** The text the current worker holds (rounds and later jobs on the same text need not send it again). */
  private workerText: string | null = null;
  private readonly jobs: Job[] = [];
  private running = false;
  private round: Round | null = null;
  private nextId = 1;
  private closed = false;
  private counters: OffloadStats = { inThread: 0, offloaded: 0, rounds: 0, stackRetries: 0, workersStarted: 0 };
  private forgetTimer: NodeJS.Timeout | null = null;

  constructor(options: OffloadOptions = {}) {
    this.threshold = options.threshold ?? 4096;
    this.chunkStatements = options.chunkStatements ?? 2000;
    this.chunkKinds = options.chunkKinds ?? 200;
    this.stackSizeMb = options.stackSizeMb ?? 8;
    this.cache = options.cache ?? null;
  }

  /**
   * Classifies `sql`: at once (a result) when the text is small or cached, else in the worker (a promise).
   * Never rejects: a failure of the worker makes the text `unknown`.
   */
  classify(sql: string, ctx: ClassifyContext): ClassifyResult | Promise<ClassifyResult> {
    const cache = this.cache;
    const hit = cache?.lookup(sql, ctx);
    if (hit !== undefined) return hit;
    if (sql.length > this.threshold || nested(sql, this.threshold >> 4)) return this.offload(sql, ctx);
    this.counters.inThread++;
    const result = cache ? cache.classifyMissed(sql, ctx) : classify(sql, ctx);
    if (!result.error?.stackExhausted) return result;
    this.counters.stackRetries++;
    return this.offload(sql, ctx);
  }

  /** classify(), always as a promise. */
  classifyAsync(sql: string, ctx: ClassifyContext): Promise<ClassifyResult> {
    const r = this.classify(sql, ctx);
    return r instanceof Promise ? r : Promise.resolve(r);
  }

  stats(): OffloadStats {
    return { ...this.counters };
  }

  /** Ends the worker. Texts waiting for it, and any offloaded later, are `unknown`. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.forgetTimer) clearTimeout(this.forgetTimer);
    const worker = this.worker;
    this.worker = null;
    this.round?.onGone('stepgate is shutting down');
    for (const job of this.jobs.splice(0)) job.resolve(failed(job.sql, 'stepgate is shutting down'));
    if (worker) await worker.terminate();
  }

  private offload(sql: string, ctx: ClassifyContext): Promise<ClassifyResult> {
    if (this.closed) return Promise.resolve(failed(sql, 'the classification worker is closed'));
    this.counters.offloaded++;
    return new Promise((resolve) => {
      this.jobs.push({ sql, ctx, resolve });
      if (!this.running) void this.runJobs();
    });
  }

  private async runJobs(): Promise<void> {
    this.running = true;
    if (this.forgetTimer) {
      clearTimeout(this.forgetTimer);
      this.forgetTimer = null;
    }
    this.worker?.ref();
    try {
      for (let job = this.jobs.shift(); job; job = this.jobs.shift()) {
        let result: ClassifyResult;
        try {
          result = await this.runJob(job.sql, job.ctx);
        } catch (err) {
          result = failed(job.sql, `classification in the worker failed: ${(err as Error).message}`);
        }
        job.resolve(result);
      }
    } finally {
      this.running = false;
      this.worker?.unref();
      // An idle worker need not hold on to the last text (and its parse).
      if (this.worker && this.workerText !== null) {
        this.forgetTimer = setTimeout(() => {
          this.forgetTimer = null;
          if (!this.running && this.worker) {
            this.worker.postMessage({ type: 'forget' } satisfies ToWorker);
            this.workerText = null;
          }
        }, 10_000);
        this.forgetTimer.unref();
      }
    }
  }

  private async runJob(sql: string, ctx: ClassifyContext): Promise<ClassifyResult> {
    const snapshot = snapshotContext(ctx);
    const answers = new Map<string, Lookup>();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      this.counters.rounds++;
      const reply = await this.runRound(sql, snapshot, answers);
      if (reply.kind === 'missing') {
        for (const [method, args] of reply.lookups) answers.set(lookupKey(method, args), [method, args, ask(ctx, method, args)]);
        continue;
      }
      if (reply.kind === 'failed') return failed(sql, `classification in the worker failed: ${reply.message}`);
      // Every answer used must still hold, and the context's properties be what the worker was given.
      const used: Lookup[] = [];
      for (const key of reply.used) used.push(answers.get(key)!);
      const now = snapshotContext(ctx);
      if (!lookupsHold(used, ctx) || !sameSnapshot(snapshot, now)) {
        for (const [key, [method, args]] of answers) answers.set(key, [method, args, ask(ctx, method, args)]);
        Object.assign(snapshot, now);
        continue;
      }
      const result = reply.result;
      if (this.cache !== null && sql.length <= this.cache.maxTextLength) {
        this.cache.store(sql, ctx, { result, dependencies: { lookups: used }, spans: reply.spans });
      }
      return result;
    }
    return failed(sql, 'the session changed while the text was classified, again and again');
  }

  private spawn(): Worker {
    const worker = new Worker(new URL('./classify-worker.js', import.meta.url), {
      resourceLimits: { stackSizeMb: this.stackSizeMb },
    });
    this.counters.workersStarted++;
    worker.on('message', (m: FromWorker) => {
      if (this.worker === worker) this.round?.onMessage(m);
    });
    const gone = (reason: string): void => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.workerText = null;
      this.round?.onGone(reason);
    };
    worker.on('error', (err) => gone(`the classification worker failed: ${err.message}`));
    worker.on('exit', (code) => gone(`the classification worker exited (code ${code})`));
    this.worker = worker;
    this.workerText = null;
    return worker;
  }

  /** Sends one round and collects the worker's answer to it. */
  private async runRound(
    sql: string,
    snapshot: ContextSnapshot,
    answers: Map<string, Lookup>,
  ): Promise<
    | { kind: 'missing'; lookups: [string, unknown[]][] }
    | { kind: 'failed'; message: string }
    | { kind: 'done'; result: ClassifyResult; used: string[]; spans: number[] }
  > {
    const worker = this.worker ?? this.spawn();
    worker.ref();
    const id = this.nextId++;
    const statements: StatementInfo[] = [];
    const spans: number[] = [];
    /** The round's distinct classifications (shared, frozen: many statements may point at one). */
    const kinds: Omit<StatementInfo, 'sql'>[] = [];
    const answered: [string, unknown][] = [];
    for (const [key, [, , answer]] of answers) answered.push([key, answer]);

    const done = new Promise<Awaited<ReturnType<OffThreadClassifier['runRound']>>>((resolve) => {
      this.round = {
        id,
        onGone: (reason) => resolve({ kind: 'failed', message: reason }),
        onMessage: (m) => {
          if (m.id !== id) return;
          switch (m.type) {
            case 'missing':
              resolve({ kind: 'missing', lookups: m.lookups });
              return;
            case 'failed':
              resolve({ kind: 'failed', message: m.message });
              return;
            case 'chunk': {
              for (const k of m.kinds) kinds.push(deepFreeze(k));
              const refs = m.refs;
              const sp = m.spans;
              for (let i = 0; i < refs.length; i++) {
                const k = kinds[refs[i]!]!;
                const start = sp[2 * i]!;
                const end = sp[2 * i + 1]!;
                // Every field the classification has (the read-only planner reads transaction, cursor ... too).
                const info: StatementInfo = { sql: sql.slice(start, end), ...k };
                statements.push(info);
                spans.push(start, end);
              }
              if (m.last === null) {
                worker.postMessage({ type: 'next', id } satisfies ToWorker);
                return;
              }
              const last = m.last;
              if (last.retiring) {
                // It exits after this message: the next job starts a fresh one.
                this.worker = null;
                this.workerText = null;
              }
              const result: ClassifyResult = { statements, unresolvedFunctions: last.unresolvedFunctions, shapeSafe: last.shapeSafe };
              if (last.unresolvedLookups) result.unresolvedLookups = last.unresolvedLookups;
              if (last.error) result.error = last.error;
              resolve({ kind: 'done', result, used: last.used, spans });
            }
          }
        },
      };
    });

    let piece: string | null = sql;
    if (this.workerText !== null && this.workerText === sql) {
      piece = null;
    } else if (sql.length > PIECE) {
      // Large texts travel in pieces, with a turn of the event loop between them (each costs ~0.3 ms here).
      for (let at = 0; at + PIECE < sql.length; at += PIECE) {
        worker.postMessage({ type: 'text', id, piece: sql.slice(at, at + PIECE) } satisfies ToWorker);
        await new Promise((resolve) => setImmediate(resolve));
        if (this.worker !== worker) break;
      }
      piece = sql.slice(Math.floor((sql.length - 1) / PIECE) * PIECE);
    }
    if (this.worker === worker) {
      worker.postMessage({ type: 'classify', id, piece, snapshot, answers: answered, chunkStatements: this.chunkStatements, chunkKinds: this.chunkKinds } satisfies ToWorker);
      this.workerText = sql;
    }
    try {
      return await done;
    } finally {
      this.round = null;
    }
  }
}

/**
 * Whether a (short) text holds more than `limit` operator characters and opening brackets: the parse tree
 * of `1+1+...+1` or of nested subselects is as deep as they are many, and deep trees cost the parser far more
 * per byte (a 4 KiB sum of 2,000 terms takes ~15 ms here, against 0.5 to 2 ms for 4 KiB of ordinary SQL).
 * Such texts go to the worker even when short. Literals and comments are counted too: a rough bound, cheap
 * (a few microseconds), and only a texts's first classification pays it.
 */
function nested(sql: string, limit: number): boolean {
  let n = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql.charCodeAt(i);
    // ( [ + - * / % ^ < > = ~ ! @ # & | ` ?
    if (c < 128 && OPERATOR[c] === 1 && ++n > limit) return true;
  }
  return false;
}

const OPERATOR = (() => {
  const table = new Uint8Array(128);
  for (const ch of '([+-*/%^<>=~!@#&|`?') table[ch.charCodeAt(0)] = 1;
  return table;
})();

function sameSnapshot(a: ContextSnapshot, b: ContextSnapshot): boolean {
  if (a.grammar !== b.grammar || a.methods.length !== b.methods.length) return false;
  for (let i = 0; i < a.methods.length; i++) if (a.methods[i] !== b.methods[i]) return false;
  const ka = Object.keys(a.data);
  if (ka.length !== Object.keys(b.data).length) return false;
  for (const k of ka) if (a.data[k] !== b.data[k]) return false;
  return true;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const k of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[k]);
  }
  return value;
}

function failed(sql: string, reason: string): ClassifyResult {
  return { statements: [unknownStatement(sql, reason)], error: { message: reason, position: 0 }, unresolvedFunctions: [], shapeSafe: false };
}

let shared: OffThreadClassifier | null = null;

/**
 * Classifies `sql` without stalling the event loop (a worker for large texts), without a cache. Resolves with
 * what classify() would return; never rejects.
 */
export function classifyAsync(sql: string, ctx: ClassifyContext): Promise<ClassifyResult> {
  shared ??= new OffThreadClassifier();
  return shared.classifyAsync(sql, ctx);
}
