/**
 * `stepgate demo` as people run it (a child process, its data directory in a temporary directory, ports 0;
 * never the repository's ./.stepgate): psql works through it as the non-superuser shop_app, with TLS
 * (sslmode=require and verify-full against the certificate it made), the README's walkthrough holds, a
 * second demo on the same data directory refuses, Ctrl-C stops everything ("Stopped.", exit 0, no
 * postgres left), a postmaster is cleaned up only when its stepgate is gone, and --reset restores the
 * sample data without losing a passkey.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { cleanUpStalePostmaster } from '../../src/demo/embedded-postgres.js';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { pidExists } from '../../src/util/process-identity.js';
import { requirePrograms, run } from '../helpers/run.js';
import { STEPGATE_BIN } from '../helpers/serve.js';
import { waitFor } from '../helpers/wait.js';

interface Demo {
  process: ChildProcess;
  port: number;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startDemo(t: { teardown(fn: () => unknown): void }, dataDir: string, extra: string[] = []): Promise<Demo> {
  const child = spawn(process.execPath, [STEPGATE_BIN, 'demo', '--data', dataDir, '--listen', '127.0.0.1:0', '--console', '127.0.0.1:0', ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await waitFor(
    'the demo to print how to connect',
    () => {
      if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}: ${out}${err}`);
      const m = /Connect: {3}psql "postgres:\/\/demo:demo@127\.0\.0\.1:(\d+)\/shop"/.exec(out);
      return m ? Number(m[1]) : null;
    },
    120_000,
    50,
  );
  return { process: child, port, stdout: () => out, stderr: () => err, exited };
}

/** Processes whose command line mentions `dir` (a postgres left behind would). */
function processesUsing(dir: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').join(' ').includes(dir)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

// Four demo starts (one creates a cluster): more than the default 120 s on a busy machine.
t.setTimeout(600_000);

if (requirePrograms(t, ['psql'])) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-demo-test-'));
  // Reachable by the "postgres" user, so the cluster stays inside the data directory (see clusterRoot).
  fs.chmodSync(root, 0o755);
  const dataDir = path.join(root, 'data');
  const clusterDir = path.join(dataDir, 'demo', 'postgres');
  const certFile = path.join(dataDir, 'demo', 'server.crt');
  t.teardown(() => {
    // Whatever happened: no server left on the cluster.
    for (const pid of processesUsing(clusterDir)) if (pidExists(pid)) process.kill(pid, 'SIGQUIT');
    fs.rmSync(root, { recursive: true, force: true });
  });

  const psql = (tt: { teardown(fn: () => unknown): void }, url: string, sql: string) =>
    run(tt, 'psql', ['-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', url, '-c', sql], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, timeoutMs: 30_000 });

  t.test('the demo: a non-superuser upstream role, TLS, one owner, an orderly stop', async (t) => {
    const demo = await startDemo(t, dataDir);
    const url = `postgres://demo:demo@127.0.0.1:${demo.port}/shop`;
    t.match(demo.stdout(), `With TLS:  psql "${url}?sslmode=require"`);
    t.match(demo.stdout(), `sslrootcert=${certFile}`, 'prints where the certificate is, for verify-full');
    t.ok(fs.existsSync(certFile) && (fs.statSync(path.join(dataDir, 'demo', 'server.key')).mode & 0o077) === 0, 'certificate made, key private');

    const who = await psql(t, url, 'SELECT current_user, session_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_setting($$is_superuser$$)');
    t.equal(who.code, 0, who.stderr);
    t.equal(who.stdout.trim(), 'shop_app|shop_app|f|off', 'current_user is shop_app, not a superuser (psql shows shop=>)');

    const tls = await psql(t, `${url}?sslmode=require`, 'SELECT count(*) FROM customers');
    t.equal(tls.code, 0, tls.stderr);
    t.equal(tls.stdout.trim(), '2000', 'sslmode=require works');
    const conninfo = await run(t, 'psql', ['-X', `${url}?sslmode=require`, '-c', '\\conninfo'], { env: process.env });
    t.match(conninfo.stdout, /SSL connection \(protocol: TLSv1\.[23]/, 'psql reports an SSL connection');
    for (const host of ['localhost', '127.0.0.1']) {
      const full = await psql(t, `postgres://demo:demo@${host}:${demo.port}/shop?sslmode=verify-full&sslrootcert=${certFile}`, 'SELECT 1');
      t.equal(full.code, 0, `verify-full against ${host}: ${full.stderr}`);
    }

    // The README's walkthrough: a read, the denied DROP DATABASE; the held DELETE is in test/console.
    t.match((await psql(t, url, 'SELECT name, country FROM customers LIMIT 3')).stdout.trim().split('\n').length, 3);
    const drop = await psql(t, url, 'DROP DATABASE shop');
    t.match(drop.stderr, 'ERROR:  stepgate: statement denied by rule "deny-drop-database"');
    // The role's privileges are what the sample needs, and the server enforces them.
    t.equal((await psql(t, url, 'DELETE FROM orders WHERE id = 1')).stdout.trim(), 'DELETE 1', 'rows of orders may be deleted');
    t.equal((await psql(t, url, "UPDATE customers SET country = 'DE' WHERE id = 1")).stdout.trim(), 'UPDATE 1', 'customers may be updated');
    t.match((await psql(t, url, "INSERT INTO products (name, price_cents) VALUES ('x', 1)")).stderr, 'ERROR:  permission denied for table products', 'products are read-only');

    // A second demo on the same data directory refuses before touching anything; the first goes on.
    const second = await run(t, process.execPath, [STEPGATE_BIN, 'demo', '--data', dataDir, '--listen', '127.0.0.1:0', '--console', '127.0.0.1:0'], { env: process.env, timeoutMs: 30_000 });
    t.equal(second.code, 1);
    t.equal(second.stderr, `stepgate demo: another stepgate (pid ${demo.process.pid}) is using ${dataDir}\n`);
    t.notMatch(second.stdout, 'Starting PostgreSQL', 'it did not start a server (nor stop ours)');
    t.equal((await psql(t, url, 'SELECT 1')).stdout.trim(), '1', 'the first demo still answers');

    // Its postmaster belongs to a live stepgate: never cleaned up as stale.
    const postmaster = Number(fs.readFileSync(path.join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    await t.rejects(cleanUpStalePostmaster(clusterDir, path.join(dataDir, 'demo', 'postgres.owner'), dataDir), {
      message: `another stepgate (pid ${demo.process.pid}) is using ${dataDir}`,
    });
    t.ok(pidExists(postmaster), 'the live demo\'s PostgreSQL is untouched');

    // Ctrl-C: in order, "Stopped.", exit 0, no server left.
    demo.process.kill('SIGINT');
    t.same(await demo.exited, { code: 0, signal: null });
    t.match(demo.stdout(), /\nStopping \.\.\. .*\nStopped\.\n$/);
    t.notOk(pidExists(postmaster), 'PostgreSQL stopped');
    t.same(processesUsing(clusterDir), [], 'no process left on the cluster');
    t.equal(demo.stderr(), '', 'nothing went wrong on the way');
  });

  t.test('a demo killed with SIGKILL leaves its PostgreSQL; the next demo cleans it up', async (t) => {
    const demo = await startDemo(t, dataDir);
    const postmaster = Number(fs.readFileSync(path.join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    demo.process.kill('SIGKILL');
    await demo.exited;
    t.ok(pidExists(postmaster), 'the postmaster outlives the killed demo (it has a session of its own)');
    const next = await startDemo(t, dataDir);
    t.notOk(pidExists(postmaster), 'the stale postmaster was stopped');
    t.equal((await psql(t, `postgres://demo:demo@127.0.0.1:${next.port}/shop`, 'SELECT current_user')).stdout.trim(), 'shop_app');
    next.process.kill('SIGTERM');
    t.match(await next.exited, { code: 0 });
    t.same(processesUsing(clusterDir), []);
  });

  t.test('demo --reset restores the sample data and keeps the passkeys', async (t) => {
    const identity = new SqliteIdentityStore(dataDir);
    await identity.addPasskey({ id: 'cred-demo', user: 'demo', publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'test key', deviceType: null, backedUp: false });
    identity.close();
    const first = await startDemo(t, dataDir);
    const url = `postgres://demo:demo@127.0.0.1:${first.port}/shop`;
    t.equal((await psql(t, url, 'SELECT count(*) FROM orders')).stdout.trim(), '9999', 'the row deleted in the first test is gone');
    t.match(first.stdout(), 'The demo user has a passkey.');
    first.process.kill('SIGINT');
    await first.exited;

    const reset = await startDemo(t, dataDir, ['--reset']);
    t.match(reset.stdout(), 'Restored the sample database "shop" (users and passkeys are unchanged).');
    t.match(reset.stdout(), 'The demo user has a passkey.', 'the passkey survived the reset');
    const resetUrl = `postgres://demo:demo@127.0.0.1:${reset.port}/shop`;
    t.equal((await psql(t, resetUrl, 'SELECT count(*) FROM orders')).stdout.trim(), '10000', 'the sample data is back');
    t.equal((await psql(t, resetUrl, 'SELECT current_user')).stdout.trim(), 'shop_app', 'with the role\'s privileges');
    const check = new SqliteIdentityStore(dataDir);
    t.equal(check.passkeyCount('demo'), 1);
    check.close();
    reset.process.kill('SIGINT');
    t.match(await reset.exited, { code: 0 });
  });
}
