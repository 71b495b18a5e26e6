/**
 * The proxy thread's side of the audit shipper (ship-worker.ts): starts the thread, tells it about each
 * commit of the local trail, relays its log lines, and knows how far behind it is, for metrics and /readyz.
 *
 * Lag is measured without touching the statement path: the store's commit notices (already there for
 * readers) are kept as (last seq, when) marks, coalesced so the list stays short; the oldest mark after
 * what the shared store has is when the oldest unshipped event was committed.
 *
 * Shipping lagging or failing never makes stepgate refuse statements or report not ready: the local trail
 * is durable and is shipped later. Only the shared store's readers see less meanwhile.
 */
import { Worker } from 'node:worker_threads';
import type { Logger } from '../log.js';
import type { AuditStore } from './store.js';
import type { FromShipper, ShipperState, ShipWorkerInit, ToShipper } from './ship-worker.js';

export interface ShipperOptions {
  dataDir: string;
  url: string;
  instance: string;
  store: AuditStore;
  log: Logger;
  tickMs?: number;
  backoff?: { initialMs: number; maxMs: number };
}

export interface ShipStats {
  state: ShipperState;
  /** The instance's last seq in the shared store. */
  shippedSeq: number;
  /** Events committed locally and not yet in the shared store. */
  behindEvents: number;
  /** Age of the oldest of them (s); 0 when none. */
  behindSeconds: number;
  error: string | null;
}

/** Commit marks kept at most; beyond, the newest mark absorbs new commits (the lag is then over-, never under-stated). */
const MAX_MARKS = 1000;

export class AuditShipper {
  private readonly worker: Worker;
  private readonly marks: { seq: number; at: number }[] = [];
  private shipped = 0;
  private state: ShipperState = 'shipping';
  private error: string | null = null;
  private poked = false;
  private readonly unsubscribe: () => void;
  private closing: Promise<void> | null = null;
  private stopped: ((m: { shipped: number; head: number }) => void) | null = null;
  private exited = false;

  constructor(private readonly options: ShipperOptions) {
    const init: ShipWorkerInit = {
      dataDir: options.dataDir,
      url: options.url,
      instance: options.instance,
      tickMs: options.tickMs ?? 1000,
      backoff: options.backoff ?? { initialMs: 200, maxMs: 10_000 },
    };
    this.worker = new Worker(new URL('./ship-worker.js', import.meta.url), { workerData: init });
    this.worker.on('message', (m: FromShipper) => this.onMessage(m));
    this.worker.once('exit', () => {
      this.exited = true;
      this.stopped?.({ shipped: this.shipped, head: this.shipped });
    });
    this.worker.on('error', (err) => {
      this.state = 'stopped';
      this.error = err.message;
      options.log.error('audit.ship_failed', { instance: options.instance, error: err.stack ?? err.message, note: 'the shipper thread died: nothing more is shipped until stepgate restarts' });
    });
    this.unsubscribe = options.store.onCommit((seq) => this.committed(seq));
    if (options.store.lastWrittenSeq > 0) this.committed(options.store.lastWrittenSeq);
  }

  stats(): ShipStats {
    const written = this.options.store.lastWrittenSeq;
    const oldest = this.marks[0];
    return {
      state: this.state,
      shippedSeq: this.shipped,
      behindEvents: Math.max(0, written - this.shipped),
      behindSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest.at) / 1000),
      error: this.error,
    };
  }

  /**
   * After the store closed (its audit.close and final checkpoint are on disk): one last round, for at most
   * `timeoutMs`. What it could not ship stays in the local trail and is shipped at the next start.
   */
  close(timeoutMs = 5_000): Promise<void> {
    this.closing ??= this.doClose(timeoutMs);
    return this.closing;
  }

  private async doClose(timeoutMs: number): Promise<void> {
    this.unsubscribe();
    // Resolved by the worker's answer, or by its exit (a dead worker answers nothing; what it shipped is known).
    const done = new Promise<{ shipped: number; head: number }>((resolve) => {
      this.stopped = resolve;
      if (this.exited) resolve({ shipped: this.shipped, head: this.shipped });
    });
    this.worker.postMessage({ type: 'stop', timeoutMs } satisfies ToShipper);
    const result = await done;
    await this.worker.terminate();
    if (result.shipped < result.head) {
      this.options.log.warn('audit.ship_incomplete', {
        instance: this.options.instance,
        shipped_seq: result.shipped,
        last_seq: result.head,
        note: 'the rest is in the local audit trail and is shipped when this instance starts again',
      });
    }
  }

  private committed(seq: number): void {
    if (seq <= this.shipped) return;
    const last = this.marks[this.marks.length - 1];
    if (last !== undefined && this.marks.length >= MAX_MARKS) last.seq = seq;
    else this.marks.push({ seq, at: Date.now() });
    this.poke();
  }

  /** Asks for a round (one notice at a time: the worker answers each round with progress). */
  private poke(): void {
    if (this.poked) return;
    this.poked = true;
    this.worker.postMessage({ type: 'commit' } satisfies ToShipper);
  }

  private onMessage(m: FromShipper): void {
    switch (m.type) {
      case 'progress':
        this.poked = false;
        this.shipped = m.shipped;
        this.state = m.state;
        this.error = m.error;
        while (this.marks.length > 0 && this.marks[0]!.seq <= m.shipped) this.marks.shift();
        // Commits after the round's snapshot: another round follows.
        if (this.marks.length > 0 && m.state === 'shipping') this.poke();
        return;
      case 'log':
        this.options.log[m.level](m.event, m.fields);
        return;
      case 'stopped':
        this.stopped?.({ shipped: m.shipped, head: m.head });
        return;
    }
  }
}
