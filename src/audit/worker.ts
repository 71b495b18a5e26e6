/**
 * The audit worker thread: owns the AuditWriter. Receives batches from the proxy thread, writes each in
 * one fsync'd transaction and acknowledges it; signs checkpoints on a timer and every N events; prunes by
 * retention. On any storage failure it reports and exits: the proxy thread marks the audit trail
 * unhealthy and starts a new worker later, re-sending what was not acknowledged.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AuditWriter, PruneRefused, type Batch, type WriterOptions } from './writer.js';

export interface WorkerInit extends WriterOptions {
  checkpointMs: number;
  pruneIntervalMs: number;
  /** Delay before the first retention run after start. */
  pruneDelayMs: number;
}

export type ToWorker =
  | ({ type: 'batch' } & Batch)
  | { type: 'checkpoint'; id: number; reason: string }
  | { type: 'prune'; id: number; now?: number; chunk?: number }
  | { type: 'dict'; entries: (number | string)[] }
  | { type: 'close' };

export type FromWorker =
  | { type: 'ready'; state: ReturnType<AuditWriter['state']>; kid: string }
  | { type: 'ack'; n: number; seq: number }
  | { type: 'failed'; message: string; code: string | null }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; event: string; fields: Record<string, unknown> }
  | { type: 'checkpoint'; id: number; seq: number; hash: string; jws: string; reason: string }
  | { type: 'result'; id: number; value?: unknown; error?: string }
  | { type: 'closed' };

const port = parentPort;
if (!port) throw new Error('audit/worker.js runs as a worker thread');
const init = workerData as WorkerInit;

let writer: AuditWriter | null = null;
let failed = false;
const timers: NodeJS.Timeout[] = [];

function post(message: FromWorker): void {
  port!.postMessage(message);
}

function log(level: 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown>): void {
  post({ type: 'log', level, event, fields });
}

function fail(err: unknown): void {
  if (failed) return;
  failed = true;
  for (const t of timers) clearInterval(t);
  writer?.abandon();
  const e = err as NodeJS.ErrnoException;
  post({ type: 'failed', message: e?.message ?? String(err), code: typeof e?.code === 'string' ? e.code : null });
  port!.close();
}

function checkpoint(reason: string, force = false): Promise<unknown> {
  if (!writer || failed) return Promise.resolve(null);
  return writer.checkpoint(reason, force).then(
    (cp) => {
      if (cp) post({ type: 'checkpoint', ...cp, reason });
      return cp;
    },
    (err: unknown) => {
      fail(err);
      throw err;
    },
  );
}

async function prune(now?: number, chunk?: number): Promise<unknown> {
  if (!writer || failed) return null;
  try {
    const result = await writer.prune(now, chunk);
    if (result.pruned > 0) log('info', 'audit.pruned', { events: result.pruned, through_seq: result.throughSeq, retention_ms: init.retentionMs });
    return result;
  } catch (err) {
    if (err instanceof PruneRefused) {
      log('error', 'audit.prune_refused', { error: err.message });
      throw err;
    }
    fail(err);
    throw err;
  }
}

function onMessage(message: ToWorker): void {
  if (failed || !writer) return;
  switch (message.type) {
    case 'batch': {
      let seq: number;
      try {
        seq = writer.writeBatch(message).seq;
      } catch (err) {
        fail(err);
        return;
      }
      post({ type: 'ack', n: message.n, seq });
      if (writer.eventsSinceCheckpoint >= init.checkpointEvents) void checkpoint('events').catch(() => {});
      return;
    }
    case 'dict':
      writer.define(message.entries);
      return;
    case 'checkpoint':
      checkpoint(message.reason, true).then(
        (value) => post({ type: 'result', id: message.id, value }),
        (err: Error) => post({ type: 'result', id: message.id, error: err.message }),
      );
      return;
    case 'prune':
      prune(message.now, message.chunk).then(
        (value) => post({ type: 'result', id: message.id, value }),
        (err: Error) => post({ type: 'result', id: message.id, error: err.message }),
      );
      return;
    case 'close': {
      for (const t of timers) clearInterval(t);
      const w = writer;
      writer = null;
      w.close().then(
        () => {
          post({ type: 'closed' });
          port!.close();
        },
        (err: unknown) => {
          writer = w;
          fail(err);
        },
      );
      return;
    }
  }
}

async function main(): Promise<void> {
  try {
    writer = await AuditWriter.open(init);
  } catch (err) {
    fail(err);
    return;
  }
  post({ type: 'ready', state: writer.state(), kid: writer.keyId });
  port!.on('message', onMessage);
  timers.push(
    setInterval(() => {
      if (writer && writer.eventsSinceCheckpoint > 0) void checkpoint('interval').catch(() => {});
    }, init.checkpointMs),
  );
  // Writes go to the file we opened; if someone removes or replaces it, say so instead of writing into the void.
  timers.push(
    setInterval(() => {
      try {
        writer?.checkFile();
      } catch (err) {
        fail(err);
      }
    }, 1000),
  );
  if (init.retentionMs !== null) {
    const first = setTimeout(() => {
      void prune().catch(() => {});
      timers.push(setInterval(() => void prune().catch(() => {}), init.pruneIntervalMs));
    }, init.pruneDelayMs);
    timers.push(first);
  }
}

void main();
