/**
 * `verifyAudit` in a thread of its own (the console's "verify now"): walking a big trail takes seconds
 * of CPU (a SHA-256 per event), which must not stall the proxy's event loop. Opens DATA/audit.db for
 * reading with its own connection (a consistent snapshot while stepgate writes), checks it with the data
 * directory's public key, posts the report and exits. Started by the console's AuditorService (src/console/auditor.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openAuditDbForReading } from './db.js';
import { dataDirPublicKey } from './keys.js';
import { verifyAudit, type VerifyReport } from './verify.js';

export interface VerifyWorkerInit {
  dataDir: string;
}

export type FromVerifyWorker = { type: 'report'; report: VerifyReport } | { type: 'error'; message: string };

const port = parentPort;
if (!port) throw new Error('audit/verify-worker.js runs as a worker thread');
const { dataDir } = workerData as VerifyWorkerInit;

async function run(): Promise<FromVerifyWorker> {
  const db = openAuditDbForReading(dataDir);
  try {
    const key = await dataDirPublicKey(dataDir);
    return { type: 'report', report: await verifyAudit(db, key) };
  } finally {
    db.close();
  }
}

run().then(
  (message) => port.postMessage(message),
  (err: unknown) => port.postMessage({ type: 'error', message: (err as Error)?.message ?? String(err) } satisfies FromVerifyWorker),
);
