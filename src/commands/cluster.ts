/**
 * `workers: N`: N proxy processes on one listening port (Node's cluster; the primary accepts and hands
 * each connection to a worker in turn), for more than one core per host.
 *
 * Each worker is an instance of its own on the shared state (`state:` is required): instance
 * `NAME-wI`, its own audit chain in `DATA/worker-I/` (one writer per chain), and the same users, held
 * statements and grants as every other worker and host. A statement held by one worker is approved on
 * the console like any other instance's.
 *
 * The primary runs no proxy. It holds the data directory's lock, starts worker 1 (which alone serves
 * the web console: passkey ceremonies are in memory, so they must not be split across processes) and
 * then the others with worker 1's console URL, serves /metrics (prom-client's AggregatorRegistry combines
 * the workers' registries: counts summed, up gauges the least, lags the largest), /healthz and /readyz
 * (ready when every worker is), restarts a worker that dies with backoff, and on SIGTERM/SIGINT stops the
 * workers in order and waits for them.
 *
 * Invariants: a worker that fails before it listens stops the whole cluster with its exit status (a
 * config or startup error would only repeat); a worker that dies later is replaced under the same index,
 * so its instance name and audit chain continue. Messages between primary and workers are the typed
 * ClusterMessage below.
 */
import cluster, { type Worker } from 'node:cluster';
import path from 'node:path';
import { AggregatorRegistry } from 'prom-client';
import type { App } from '../app.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { MetricsServer } from '../metrics/server.js';
import type { ReadyReport } from '../metrics/server.js';
import { instanceId } from '../state/components.js';
import { lockDataDir } from '../util/owner-lock.js';
import type { StopSignals } from './serve.js';

/** Between the primary and its workers (process.send / worker.on('message')). */
export type ClusterMessage =
  | { type: 'stepgate:listening'; consoleUrl: string | null; listen: string }
  /** Stop as `serve` does on a first signal; `now`: as on a second one. */
  | { type: 'stepgate:stop'; now: boolean }
  | { type: 'stepgate:ready?'; id: number }
  | { type: 'stepgate:ready'; id: number; report: ReadyReport | null };

const WORKER_ENV = 'STEPGATE_WORKER';
const CONSOLE_ENV = 'STEPGATE_WORKER_CONSOLE_URL';
const READY_TIMEOUT_MS = 2000;
const RESTART_MAX_MS = 30_000;

/** This process's worker index (1..N), or null for the primary or a plain `serve`. */
export function workerIndex(): number | null {
  if (!cluster.isWorker) return null;
  const i = Number(process.env[WORKER_ENV]);
  return Number.isInteger(i) && i > 0 ? i : null;
}

/** The config a worker runs with: its own instance name, audit chain, and (but for worker 1) no console. */
export function workerConfig(config: Config, index: number): { config: Config; worker: { serveConsole: boolean; consoleUrl: string | null } } {
  const state = config.state!;
  return {
    config: {
      ...config,
      dataDir: path.join(config.dataDir, `worker-${index}`),
      state: { ...state, instance: `${instanceId(state, config.listen.port)}-w${index}` },
    },
    worker: { serveConsole: index === 1, consoleUrl: process.env[CONSOLE_ENV] || null },
  };
}

/**
 * A worker's stop signals come from the primary, not from the terminal or the service manager: Ctrl-C and
 * systemd's SIGTERM reach every process of the group, and a worker that took them itself as well as the
 * primary's request would see "a second signal" and stop at once. A primary gone (its channel closed)
 * counts as a first signal.
 */
export function workerStopSignals(): StopSignals {
  let again: (signal: NodeJS.Signals) => void = () => process.exit(1);
  let resolveFirst!: (signal: NodeJS.Signals) => void;
  let stopped = false;
  const first = new Promise<NodeJS.Signals>((resolve) => (resolveFirst = resolve));
  const ignore = (): void => {};
  const onMessage = (m: ClusterMessage): void => {
    if (m?.type !== 'stepgate:stop') return;
    if (m.now && stopped) again('SIGTERM');
    stopped = true;
    resolveFirst('SIGTERM');
  };
  const onDisconnect = (): void => {
    stopped = true;
    resolveFirst('SIGTERM');
  };
  process.on('SIGINT', ignore);
  process.on('SIGTERM', ignore);
  process.on('message', onMessage);
  process.once('disconnect', onDisconnect);
  return {
    first,
    onAgain: (handler) => (again = handler),
    dispose: () => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', ignore);
      process.off('message', onMessage);
      process.off('disconnect', onDisconnect);
    },
  };
}

/** In a worker, once its app listens: tells the primary, and answers its readiness questions. */
export function reportToPrimary(app: App): void {
  if (app.metrics) {
    // prom-client answers the primary's metric requests from these registries.
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([app.metrics.registry]);
  }
  process.on('message', (m: ClusterMessage) => {
    if (m?.type !== 'stepgate:ready?') return;
    const answer = (report: ReadyReport | null): void => void process.send?.({ type: 'stepgate:ready', id: m.id, report } satisfies ClusterMessage);
    if (!app.readiness) return answer(null);
    app.readiness.check().then(answer, () => answer(null));
  });
  const a = app.proxyAddress;
  process.send?.({ type: 'stepgate:listening', consoleUrl: app.consoleUrl, listen: `${a.address}:${a.port}` } satisfies ClusterMessage);
}

interface Slot {
  index: number;
  worker: Worker | null;
  listening: boolean;
  restarts: number;
}

/** The primary of `workers: N`: returns the exit status once every worker has stopped. */
export async function runPrimary(config: Config, log: Logger, signals: StopSignals): Promise<number> {
  const lock = lockDataDir(config.dataDir);
  const slots: Slot[] = Array.from({ length: config.workers }, (_, i) => ({ index: i + 1, worker: null, listening: false, restarts: 0 }));
  let consoleUrl: string | null = null;
  let stopping = false;
  let failure: number | null = null;
  let askId = 0;
  const exits = new Set<Promise<void>>();
  let wakeFailure: () => void = () => {};
  const failed = new Promise<void>((resolve) => (wakeFailure = resolve));

  const fork = (slot: Slot): Promise<void> => {
    const w = cluster.fork({ [WORKER_ENV]: String(slot.index), [CONSOLE_ENV]: consoleUrl ?? '' });
    slot.worker = w;
    slot.listening = false;
    let listened!: () => void;
    const up = new Promise<void>((resolve) => (listened = resolve));
    w.on('message', (m: ClusterMessage) => {
      if (m?.type !== 'stepgate:listening') return;
      slot.listening = true;
      slot.restarts = 0;
      if (slot.index === 1) consoleUrl = m.consoleUrl;
      log.info('cluster.worker_listening', { worker: slot.index, pid: w.process.pid, listen: m.listen });
      listened();
    });
    const exit = new Promise<void>((resolve) =>
      w.once('exit', (code, signal) => {
        exits.delete(exit);
        const wasListening = slot.listening;
        slot.worker = null;
        slot.listening = false;
        resolve();
        if (stopping) return;
        if (!wasListening) {
          // It never served: a config or startup error, which a restart would only repeat.
          log.error('cluster.worker_failed', { worker: slot.index, code, signal, note: 'stopping every worker' });
          failure = code && code > 0 ? code : 1;
          wakeFailure();
          listened();
          return;
        }
        const wait = Math.min(RESTART_MAX_MS, 1000 * 2 ** slot.restarts++);
        log.error('cluster.worker_died', { worker: slot.index, code, signal, restart_in_ms: wait });
        setTimeout(() => {
          if (!stopping) void fork(slot);
        }, wait).unref();
      }),
    );
    exits.add(exit);
    return up;
  };

  // Worker 1 first: the console's URL (its port may be chosen at start) goes to the others.
  await Promise.race([fork(slots[0]!), failed]);
  if (failure === null) await Promise.race([Promise.all(slots.slice(1).map(fork)), failed]);

  let metricsServer: MetricsServer | null = null;
  if (failure === null && config.metrics) {
    const aggregator = new AggregatorRegistry();
    const readiness = {
      check: async (): Promise<{ ready: boolean; shutting_down: boolean; workers: { worker: number; pid: number | null; ready: boolean; report: ReadyReport | null }[] }> => {
        const workers = await Promise.all(slots.map((s) => askReady(s, ++askId)));
        return { ready: !stopping && workers.every((w) => w.ready), shutting_down: stopping, workers };
      },
    };
    metricsServer = new MetricsServer(
      config.metrics.listen,
      { scrape: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }) },
      readiness,
      log,
    );
    const a = await metricsServer.listen();
    log.info('metrics.listening', { listen: `${a.address}:${a.port}`, paths: ['/metrics', '/healthz', '/readyz'], workers: config.workers });
  }
  if (failure === null) log.info('cluster.listening', { workers: config.workers, console: consoleUrl });

  await Promise.race([signals.first, failed]);
  stopping = true;
  signals.onAgain(() => {
    log.warn('cluster.stopping_now', { note: 'second signal: workers stop at once' });
    for (const s of slots) s.worker?.send({ type: 'stepgate:stop', now: true } satisfies ClusterMessage);
  });
  // Each worker stops as `serve` does (57P01 to its clients, held statements recorded as shutdown).
  for (const s of slots) s.worker?.send({ type: 'stepgate:stop', now: false } satisfies ClusterMessage);
  await Promise.all([...exits]);
  await metricsServer?.close();
  lock.release();
  log.info('cluster.stopped', {});
  return failure ?? 0;
}

function askReady(slot: Slot, id: number): Promise<{ worker: number; pid: number | null; ready: boolean; report: ReadyReport | null }> {
  const w = slot.worker;
  const base = { worker: slot.index, pid: w?.process.pid ?? null };
  if (!w || !slot.listening) return Promise.resolve({ ...base, ready: false, report: null });
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(null), READY_TIMEOUT_MS);
    const onMessage = (m: ClusterMessage): void => {
      if (m?.type === 'stepgate:ready' && m.id === id) done(m.report);
    };
    const done = (report: ReadyReport | null): void => {
      clearTimeout(timer);
      w.off('message', onMessage);
      resolve({ ...base, ready: report?.ready === true, report });
    };
    w.on('message', onMessage);
    w.send({ type: 'stepgate:ready?', id } satisfies ClusterMessage);
  });
}
