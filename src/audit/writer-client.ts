/**
 * The proxy thread's side of the audit writer: starts the worker thread, posts batches and requests to it,
 * and when the worker dies starts a new one with backoff (1 s doubling to 30 s by default). What the
 * batches mean (which are acknowledged, which to re-send) is the store's (store.ts); this file only knows
 * the thread.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { FromWorker, ToWorker, WorkerInit } from './worker.js';

/** Rejection of `durable()` and requests: the audit trail cannot record right now. */
export class AuditUnavailable extends Error {
  readonly code = 'AUDIT_UNAVAILABLE';
}

export interface WriterEvents {
  /** A worker is ready (`resume`: it replaces one that died). */
  ready(state: Extract<FromWorker, { type: 'ready' }>['state'], kid: string, resume: boolean): void;
  /** The worker committed batch `n`; the chain's last sequence number is `seq`. */
  ack(n: number, seq: number): void;
  /** The worker died (after the first start); a new one is started after `retryInMs`. */
  gone(reason: string, retryInMs: number): void;
}

export interface RestartPolicy {
  firstDelayMs: number;
  maxDelayMs: number;
}

export class WriterClient {
  private worker: Worker | null = null;
  private isReady = false;
  private lastError: string | null = null;
  private started = false;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  private readonly results = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextResult = 1;

  constructor(
    private readonly init: WorkerInit,
    private readonly log: Logger,
    private readonly events: WriterEvents,
    private readonly restart: RestartPolicy,
  ) {
    this.delay = restart.firstDelayMs;
  }

  get ready(): boolean {
    return this.isReady;
  }

  /** The worker thread (tests terminate it to simulate a crash). */
  get thread(): Worker | null {
    return this.worker;
  }

  /** After a write that went through again: the next failure is retried after the first delay again. */
  resetBackoff(): void {
    this.delay = this.restart.firstDelayMs;
  }

  /** Starts the first worker; rejects when it cannot open the trail. */
  start(): Promise<void> {
    return this.spawn(false);
  }

  post(message: ToWorker): void {
    this.worker?.postMessage(message);
  }

  request(message: ToWorker & { id: number }, unavailable: () => Error): Promise<unknown> {
    const worker = this.worker;
    if (!worker || !this.isReady) return Promise.reject(unavailable());
    const id = this.nextResult++;
    return new Promise((resolve, reject) => {
      this.results.set(id, { resolve, reject });
      worker.postMessage({ ...message, id });
    });
  }

  /** Stops: the worker writes what it has, a final checkpoint and `audit.close`, then exits. */
  async stop(reason: () => Error): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const worker = this.worker;
    if (worker && this.isReady) {
      const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
      worker.postMessage({ type: 'close' } satisfies ToWorker);
      const timer = setTimeout(() => void worker.terminate(), 15_000);
      await exited;
      clearTimeout(timer);
    } else if (worker) {
      await worker.terminate();
    }
    this.worker = null;
    this.isReady = false;
    for (const r of this.results.values()) r.reject(reason());
    this.results.clear();
  }

  private spawn(resume: boolean): Promise<void> {
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { ...this.init, resume } satisfies WorkerInit });
    this.worker = worker;
    this.isReady = false;
    this.lastError = null;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve();
      };
      worker.on('message', (m: FromWorker) => {
        if (worker !== this.worker) return;
        if (m.type === 'ready') {
          this.isReady = true;
          this.started = true;
          this.events.ready(m.state, m.kid, resume);
          settle(null);
        } else {
          this.onMessage(m);
        }
      });
      worker.on('error', (err) => {
        this.lastError = `the audit writer crashed: ${err.message}`;
      });
      worker.on('exit', (code) => {
        const reason = this.lastError ?? `the audit writer stopped (exit code ${code})`;
        settle(new Error(reason));
        this.exited(worker, reason);
      });
    });
  }

  private onMessage(m: FromWorker): void {
    switch (m.type) {
      case 'ack':
        this.events.ack(m.n, m.seq);
        return;
      case 'failed':
        this.lastError = m.message;
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
      default:
    }
  }

  private exited(worker: Worker, reason: string): void {
    if (worker !== this.worker) return;
    this.worker = null;
    this.isReady = false;
    for (const r of this.results.values()) r.reject(new AuditUnavailable(reason));
    this.results.clear();
    // A failed first start fails AuditStore.open instead; a stop needs no new worker.
    if (this.stopping || !this.started) return;
    const retryInMs = this.delay;
    this.events.gone(reason, retryInMs);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.spawn(true).catch(() => {}); // failures arrive through exited() again
    }, retryInMs);
    this.restartTimer.unref();
    this.delay = Math.min(this.delay * 2, this.restart.maxDelayMs);
  }
}
