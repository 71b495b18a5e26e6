/**
 * `verifyAudit` in a thread of its own (the console's "verify now"): walking a big trail takes seconds
 * of CPU (a SHA-256 per event), which must not stall the proxy's event loop. Started by the console's
 * AuditorService (src/console/auditor.ts); posts the report(s) and exits.
 *
 * - Without `state:`: opens DATA/audit.db for reading with its own connection (a consistent snapshot while
 *   stepgate writes) and checks it with the data directory's public key.
 * - With `state:` (`shared`): every instance's chain in the shared store, one after the other, exactly as
 *   `stepgate audit verify --state` does (shared-read.ts verifyShared: each instance copied in one
 *   snapshot into a private temporary audit.db, checked with its pinned key). Its own PostgreSQL
 *   connection, not the proxy's pool. One instance failing to copy does not stop the others.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pg from 'pg';
import { openAuditDbForReading } from './db.js';
import { dataDirPublicKey } from './keys.js';
import { sharedInstances, verifyShared } from './shared-read.js';
import { verifyAudit, type VerifyReport } from './verify.js';

export interface VerifyWorkerInit {
  dataDir: string;
  /** The shared store to verify instead of DATA/audit.db. */
  shared?: { url: string; instance: string };
}

/** One instance's result: its report, or why it could not be verified. */
export interface InstanceVerification {
  instance: string;
  report: VerifyReport | null;
  error: string | null;
}

export type FromVerifyWorker = { type: 'report'; report: VerifyReport } | { type: 'shared'; instances: InstanceVerification[] } | { type: 'error'; message: string };

const port = parentPort;
if (!port) throw new Error('audit/verify-worker.js runs as a worker thread');
const { dataDir, shared } = workerData as VerifyWorkerInit;

async function local(): Promise<FromVerifyWorker> {
  const db = openAuditDbForReading(dataDir);
  try {
    const key = await dataDirPublicKey(dataDir);
    return { type: 'report', report: await verifyAudit(db, key) };
  } finally {
    db.close();
  }
}

async function everyInstance(url: string, self: string): Promise<FromVerifyWorker> {
  const client = new pg.Client({ connectionString: url, application_name: `stepgate ${self} audit verify`, connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  await client.connect();
  try {
    const instances: InstanceVerification[] = [];
    for (const i of await sharedInstances(client)) {
      try {
        const report = await verifyShared(client, i);
        instances.push({ instance: i.instance, report, error: report === null ? 'its events have no pinned key to check its checkpoints with' : null });
      } catch (err) {
        instances.push({ instance: i.instance, report: null, error: (err as Error)?.message ?? String(err) });
      }
    }
    return { type: 'shared', instances };
  } finally {
    await client.end().catch(() => {});
  }
}

(shared ? everyInstance(shared.url, shared.instance) : local()).then(
  (message) => port.postMessage(message),
  (err: unknown) => port.postMessage({ type: 'error', message: (err as Error)?.message ?? String(err) } satisfies FromVerifyWorker),
);
