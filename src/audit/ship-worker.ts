/**
 * The audit shipper thread: copies this instance's trail from `DATA/audit.db` to the shared store
 * (ship.ts), so the statement path never waits on PostgreSQL: it waits on the local fsync only, and what
 * the trail acknowledged is on disk whether or not the shared store is reachable.
 *
 * A round runs after each commit the proxy thread tells it about (several coalesce into one round), on a
 * slow tick (checkpoints are signed between commits), and once more when told to stop. A failed round
 * closes the connection and is retried with capped exponential backoff and jitter; the first failure of an
 * outage is logged at error, the recovery once. A ShipConflict stops shipping for good (logged at error):
 * it will not go away by retrying, and shipping on top of a chain that is not ours would bury the evidence.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import type Database from 'better-sqlite3';
import { openAuditDbForReading } from './db.js';
import { dataDirPublicKey } from './keys.js';
import { localHead, pinKey, ShipConflict, shipRound, type LocalHead } from './ship.js';

export interface ShipWorkerInit {
  dataDir: string;
  url: string;
  instance: string;
  /** How often to look for checkpoints signed since the last round (ms). */
  tickMs: number;
  backoff: { initialMs: number; maxMs: number };
}

export type ToShipper = { type: 'commit' } | { type: 'stop'; timeoutMs: number };

export type ShipperState = 'shipping' | 'retrying' | 'conflict' | 'stopped';

export type FromShipper =
  | { type: 'progress'; shipped: number; state: ShipperState; error: string | null }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; event: string; fields: Record<string, unknown> }
  | { type: 'stopped'; shipped: number; head: number };

const port = parentPort;
if (!port) throw new Error('audit/ship-worker.js runs as a worker thread');
const init = workerData as ShipWorkerInit;

let local: Database.Database | null = null;
let client: pg.Client | null = null;
let shipped = 0;
/** The local head the shared store is known to have (nothing to do while the trail's head is this). */
let synced: LocalHead | null = null;
let wanted = true;
let running: Promise<void> | null = null;
let attempt = 0;
let retryTimer: NodeJS.Timeout | null = null;
let conflict: string | null = null;
let stopping = false;
let outage: { since: number; error: string } | null = null;

function post(m: FromShipper): void {
  port!.postMessage(m);
}

function log(level: 'info' | 'warn' | 'error', event: string, fields: Record<string, unknown>): void {
  post({ type: 'log', level, event, fields });
}

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({
    connectionString: init.url,
    application_name: `stepgate ${init.instance} audit shipper`,
    connectionTimeoutMillis: 5_000,
    // A server that vanished without closing the connection: the round fails and is retried, not stuck.
    keepAlive: true,
    query_timeout: 30_000,
  });
  // A connection that dies between rounds is dropped here; the next round connects again.
  c.on('error', () => {
    if (client === c) client = null;
  });
  await c.connect();
  try {
    await pinKey(c, init.instance, await dataDirPublicKey(init.dataDir));
  } catch (err) {
    await c.end().catch(() => {});
    throw err;
  }
  return c;
}

/** Runs rounds until nothing is wanted; one at a time. */
function kick(): Promise<void> {
  running ??= rounds().finally(() => {
    running = null;
  });
  return running;
}

async function rounds(): Promise<void> {
  while (wanted && conflict === null) {
    wanted = false;
    try {
      const head = localHead(local!);
      if (synced !== null && head.seq === synced.seq && head.checkpoint === synced.checkpoint) {
        post({ type: 'progress', shipped, state: 'shipping', error: null });
        continue;
      }
      client ??= await connect();
      const r = await shipRound(local!, client, init.instance);
      shipped = r.shipped;
      synced = r.head;
      if (r.lost) {
        log('error', 'audit.ship_lost', {
          instance: init.instance,
          from_seq: r.lost.from,
          to_seq: r.lost.to,
          note: 'retention pruned these events from the local trail before they reached the shared store: audit verify there reports them missing',
        });
      }
      if (outage) {
        log('info', 'audit.ship_resumed', { instance: init.instance, shipped_seq: shipped, down_ms: Date.now() - outage.since });
        outage = null;
      }
      attempt = 0;
      post({ type: 'progress', shipped, state: 'shipping', error: null });
    } catch (err) {
      failed(err as Error);
      return;
    }
  }
}

function failed(err: Error): void {
  const c = client;
  client = null;
  void c?.end().catch(() => {});
  if (err instanceof ShipConflict) {
    conflict = err.message;
    log('error', 'audit.ship_conflict', { instance: init.instance, error: err.message, note: 'shipping stopped; the local trail keeps recording (audit verify on the shared store to see what differs)' });
    post({ type: 'progress', shipped, state: 'conflict', error: err.message });
    return;
  }
  if (outage === null) {
    outage = { since: Date.now(), error: err.message };
    log('error', 'audit.ship_failed', {
      instance: init.instance,
      shipped_seq: shipped,
      error: err.message,
      note: 'the audit trail is kept in the local data directory and shipped when the state database is back; retrying with backoff',
    });
  }
  post({ type: 'progress', shipped, state: 'retrying', error: err.message });
  if (stopping) return;
  const wait = Math.min(init.backoff.maxMs, init.backoff.initialMs * 2 ** attempt++) * (0.5 + Math.random() / 2);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    wanted = true;
    void kick();
  }, wait);
}

async function stop(timeoutMs: number): Promise<void> {
  stopping = true;
  clearInterval(tick);
  if (retryTimer) clearTimeout(retryTimer);
  const last = async (): Promise<void> => {
    await running;
    wanted = true;
    await kick();
  };
  await Promise.race([last(), new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
  const head = localHead(local!).seq;
  post({ type: 'stopped', shipped, head });
  await client?.end().catch(() => {});
  local!.close();
  port!.close();
}

port.on('message', (m: ToShipper) => {
  if (m.type === 'commit') {
    wanted = true;
    if (retryTimer === null && !stopping) void kick();
  } else {
    void stop(m.timeoutMs);
  }
});

const tick = setInterval(() => {
  wanted = true;
  if (retryTimer === null && !stopping) void kick();
}, init.tickMs);

try {
  local = openAuditDbForReading(init.dataDir);
  void kick();
} catch (err) {
  log('error', 'audit.ship_failed', { instance: init.instance, error: (err as Error).message, note: 'cannot read the local audit trail; nothing is shipped' });
  clearInterval(tick);
  post({ type: 'progress', shipped, state: 'stopped', error: (err as Error).message });
  port.close();
}
