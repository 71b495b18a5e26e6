/**
 * The things the benchmark compares, all in front of one disposable PostgreSQL: the server itself (TCP),
 * pgbouncer in session mode and pgpool-II (a proxy in C that parses every statement: streaming-replication
 * mode with load balancing on), when installed, a bare Node.js socket relay (the floor for any Node.js
 * proxy), and stepgate as its own process with audit on. The relays reach the server over its Unix
 * socket, as they would on one host.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, type TestPostgres } from '../../test/helpers/postgres.js';
import type { PgbenchTarget } from './pgbench.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface Target extends PgbenchTarget {
  /**
   * stepgate-unenforced: stepgate without server-enforced reads, to measure what they cost; stepgate-shared:
   * stepgate with its state on PostgreSQL (`state:`), to measure what sharing costs.
   */
  name: 'direct' | 'pgbouncer' | 'pgpool' | 'node-pipe' | 'stepgate' | 'stepgate-unenforced' | 'stepgate-shared';
  pid: number | null;
  /** Its work is done by child processes too (pgpool forks one per client): count their CPU. */
  withChildren?: boolean;
  stop(): Promise<void>;
}

function socketUrl(db: TestPostgres, database: string): string {
  return `postgres://postgres:${db.password}@localhost:${db.port}/${database}?host=${encodeURIComponent(db.socketDir)}&sslmode=disable`;
}

export function directTarget(db: TestPostgres, database: string): Target {
  return { name: 'direct', host: '127.0.0.1', port: db.port, user: 'postgres', password: db.password, database, pid: null, stop: async () => {} };
}

export function hasPgbouncer(): boolean {
  return installed('pgbouncer');
}

export function hasPgpool(): boolean {
  return installed('pgpool');
}

function installed(program: string): boolean {
  try {
    execFileSync(program, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The server's unprivileged user, for programs that refuse to run as root. */
function unprivileged(): { uid: number; gid: number } | Record<string, never> {
  if (process.getuid?.() !== 0) return {};
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  };
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

/** Waits until `port` accepts connections, or the child exits. */
async function waitForPort(child: ChildProcess, port: number, what: string, output: () => string): Promise<void> {
  const net = await import('node:net');
  // Generous: on a loaded 2-core machine a process that loads WebAssembly grammars can take long to start.
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with status ${child.exitCode}:\n${output()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not start listening on port ${port}:\n${output()}`);
}

export async function startPgbouncer(db: TestPostgres, database: string, maxClients: number): Promise<Target> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-bench-pgbouncer-'));
  fs.chmodSync(dir, 0o777);
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'userlist.txt'), `"postgres" "${db.password}"\n`);
  fs.writeFileSync(
    path.join(dir, 'pgbouncer.ini'),
    `[databases]
${database} = host=${db.socketDir} port=${db.port} dbname=${database} user=postgres password=${db.password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${dir}/userlist.txt
pool_mode = session
max_client_conn = ${maxClients + 100}
default_pool_size = ${maxClients + 10}
ignore_startup_parameters = extra_float_digits
logfile = ${dir}/pgbouncer.log
pidfile = ${dir}/pgbouncer.pid
`,
  );
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  // pgbouncer refuses to run as root: run it as the server's own unprivileged user.
  const child = spawn('pgbouncer', [path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'], ...unprivileged() });
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  await waitForPort(child, port, 'pgbouncer', () => output + (fs.existsSync(`${dir}/pgbouncer.log`) ? fs.readFileSync(`${dir}/pgbouncer.log`, 'utf8') : ''));
  return {
    name: 'pgbouncer',
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password: db.password,
    database,
    pid: child.pid ?? null,
    async stop() {
      await stopChild(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * pgpool-II in streaming-replication mode with load balancing on, one backend (the primary): it parses
 * every statement to decide where it may go, as stepgate does.
 */
export async function startPgpool(db: TestPostgres, database: string, maxClients: number): Promise<Target> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-bench-pgpool-'));
  fs.chmodSync(dir, 0o777);
  const port = await freePort();
  const pcpPort = await freePort();
  fs.writeFileSync(
    path.join(dir, 'pgpool.conf'),
    `backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = ${port}
unix_socket_directories = '${dir}'
pcp_listen_addresses = ''
pcp_port = ${pcpPort}
pcp_socket_dir = '${dir}'
backend_hostname0 = '${db.socketDir}'
backend_port0 = ${db.port}
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY'
num_init_children = ${maxClients + 10}
max_pool = 1
enable_pool_hba = off
load_balance_mode = on
sr_check_period = 0
sr_check_user = 'postgres'
health_check_period = 0
failover_on_backend_error = off
pid_file_name = '${dir}/pgpool.pid'
logdir = '${dir}'
use_watchdog = off
memory_cache_enabled = off
`,
  );
  fs.writeFileSync(path.join(dir, 'pcp.conf'), '');
  fs.writeFileSync(path.join(dir, 'pool_hba.conf'), '');
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644);
  const child = spawn('pgpool', ['-n', '-f', path.join(dir, 'pgpool.conf'), '-F', path.join(dir, 'pcp.conf'), '-a', path.join(dir, 'pool_hba.conf')], {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...unprivileged(),
  });
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  await waitForPort(child, port, 'pgpool', () => output);
  return {
    name: 'pgpool',
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password: db.password,
    database,
    pid: child.pid ?? null,
    withChildren: true,
    async stop() {
      // SIGINT is pgpool's fast shutdown (SIGTERM waits for clients); it stops its children too.
      await stopChild(child, 'SIGINT');
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** bench/node-pipe.ts as its own process: Node's socket I/O and nothing else. */
export async function startNodePipe(db: TestPostgres, database: string): Promise<Target> {
  const port = await freePort();
  const args = [path.join(REPO_ROOT, 'dist/bench/node-pipe.js'), String(port), path.join(db.socketDir, `.s.PGSQL.${db.port}`)];
  return startNodeTarget('node-pipe', args, port, { user: 'postgres', password: db.password, database }, null);
}

export async function startStepgateProcess(db: TestPostgres, database: string, rulesDir: string, options: { enforceReads?: boolean; stateDatabase?: string } = {}): Promise<Target> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-bench-'));
  const port = await freePort();
  const user = { name: 'bench', password: 'bench-password' };
  const configFile = path.join(dir, 'stepgate.yaml');
  fs.writeFileSync(
    configFile,
    `listen: 127.0.0.1:${port}\nupstream: ${JSON.stringify(socketUrl(db, database))}\ndata: ${JSON.stringify(dir)}\nrules: ${JSON.stringify(rulesDir)}\nconsole: 127.0.0.1:0\nlimits:\n  max_connections: 5000\n` +
      (options.stateDatabase ? `state: ${JSON.stringify(socketUrl(db, options.stateDatabase))}\n` : ''),
  );
  // Through the config: into the shared store when it has state:, else into the data directory.
  execFileSync(process.execPath, [path.join(REPO_ROOT, 'bin/stepgate.js'), 'users', 'add', user.name, '--password-stdin', '--config', configFile], {
    input: user.password + '\n',
    stdio: ['pipe', 'ignore', 'inherit'],
  });
  // STEPGATE_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the stepgate process.
  const nodeArgs = (process.env.STEPGATE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const args = [...nodeArgs, path.join(REPO_ROOT, 'bin/stepgate.js'), 'serve', '--config', configFile, '--log-level', 'warn'];
  const unenforced = options.enforceReads === false;
  const name = unenforced ? 'stepgate-unenforced' : options.stateDatabase ? 'stepgate-shared' : 'stepgate';
  return startNodeTarget(name, args, port, { user: user.name, password: user.password, database }, dir, unenforced ? { STEPGATE_UNSAFE_NO_READ_ONLY: '1' } : {});
}

/** Runs `node args` until it listens on `port`; stopping it also removes `dir`. */
async function startNodeTarget(
  name: Target['name'],
  args: string[],
  port: number,
  login: Pick<Target, 'user' | 'password' | 'database'>,
  dir: string | null,
  env: Record<string, string> = {},
): Promise<Target> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let output = '';
  child.stderr?.on('data', (d) => (output += d));
  try {
    await waitForPort(child, port, name, () => output);
  } catch (err) {
    await stopChild(child);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    name,
    host: '127.0.0.1',
    port,
    ...login,
    pid: child.pid ?? null,
    async stop() {
      await stopChild(child);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * CPU time (user + system, all threads) a target's process has used so far, in seconds; with its child
 * processes for targets that fork (their live children's counters, read from /proc).
 */
export function cpuSeconds(target: Target): number | null {
  if (target.pid === null) return null;
  const tick = 100; // USER_HZ on Linux
  const read = (pid: number): { ppid: number; cpu: number } | null => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Fields after the command (which may contain spaces) start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / tick };
    } catch {
      return null;
    }
  };
  const own = read(target.pid);
  if (own === null) return null;
  let total = own.cpu;
  if (target.withChildren) {
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const p = read(Number(entry));
      if (p !== null && p.ppid === target.pid) total += p.cpu;
    }
  }
  return total;
}

/** Resident memory of a process in KiB (Linux). */
export function rssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) : NaN;
}
