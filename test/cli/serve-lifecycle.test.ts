/**
 * `stepgate serve` as a process, through its life: a second instance on the same data directory refuses
 * before touching anything while the first goes on; SIGTERM shuts down like PostgreSQL (a short statement
 * completes, a long one and a held one get FATAL 57P01, the hold is recorded as `shutdown`, exit 0,
 * nothing left running); a second signal stops at once.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { run } from '../helpers/run.js';
import { serveSetup, startServe, STEPGATE_BIN } from '../helpers/serve.js';
import { backendsRunning, waitFor, waitForActive } from '../helpers/wait.js';
import { cli, readEvents } from '../audit/helpers.js';

const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.writeFileSync(path.join(rulesDir, '00-test.yaml'), 'default: allow\nrules:\n  - name: ask-for-secrets\n    match: {tables: [secrets]}\n    action: step-up\n');

const db = await startPostgres(t);
await db.query('CREATE TABLE secrets (v int); INSERT INTO secrets VALUES (1)');
const admin = await db.client();
t.teardown(() => admin.end());

async function connect(port: number, application: string): Promise<{ client: pg.Client; errors: (Error & { code?: string })[] }> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-pw', database: 'postgres', application_name: application });
  const errors: (Error & { code?: string })[] = [];
  client.on('error', (e) => errors.push(e));
  await client.connect();
  return { client, errors };
}

const failure = (p: Promise<unknown>): Promise<(Error & { code?: string; severity?: string }) | null> =>
  p.then(
    () => null,
    (e: Error & { code?: string }) => e,
  );

t.test('a second stepgate on the same data directory refuses at once; the first keeps working', async (t) => {
  const setup = await serveSetup(t, db, { rulesDir });
  const first = await startServe(t, ['--config', setup.configFile]);
  const c = await connect(first.port, 'first');
  t.teardown(() => c.client.end().catch(() => {}));
  await c.client.query('SELECT 1');
  const files = fs.readdirSync(setup.dataDir).sort();

  const second = await run(t, process.execPath, [STEPGATE_BIN, 'serve', '--config', setup.configFile], { env: process.env, timeoutMs: 20_000 });
  t.equal(second.code, 1, 'exit status 1');
  t.equal(second.stderr, `stepgate: another stepgate (pid ${first.process.pid}) is using ${setup.dataDir}\n`);
  t.same(fs.readdirSync(setup.dataDir).sort(), files, 'no file was created or removed');
  t.same(
    readEvents(setup.dataDir, "kind = 'audit.open'").map((e) => e.data.stepgate_pid),
    [first.process.pid],
    'nothing was written to the audit trail (only the first one opened it)',
  );

  t.same((await c.client.query('SELECT 2 AS two')).rows, [{ two: 2 }], 'the first stepgate still answers');
  const again = await connect(first.port, 'after');
  t.same((await again.client.query('SELECT 3 AS three')).rows, [{ three: 3 }], 'and takes new connections');
  await again.client.end();
  const live = await cli(['audit', 'verify', '--data', setup.dataDir]);
  t.equal(live.code, 0, `its audit trail verifies while it runs: ${live.stdout}`);
  t.match(live.stdout, `1 running: `);

  first.process.kill('SIGTERM');
  t.match(await first.exited, { code: 0 });
  const after = await cli(['audit', 'verify', '--data', setup.dataDir]);
  t.equal(after.code, 0, after.stdout);
  t.match(after.stdout, 'runs:         1 (1 closed cleanly)');
});

t.test('SIGTERM: a short statement completes; a long one and a held one get FATAL 57P01; exit 0, nothing left', async (t) => {
  const setup = await serveSetup(t, db, { rulesDir, configYaml: 'limits:\n  shutdown_timeout: 2s\n' });
  const child = await startServe(t, ['--config', setup.configFile]);
  const short = await connect(child.port, 'short');
  const long = await connect(child.port, 'long');
  const held = await connect(child.port, 'held');
  const notice = new Promise<void>((resolve) => held.client.on('notice', (n) => /held for step-up/.test(n.message ?? '') && resolve()));
  const heldQuery = failure(held.client.query('SELECT v FROM secrets'));
  await notice;
  const longQuery = failure(long.client.query('SELECT pg_sleep(60)'));
  await waitForActive(admin, 'SELECT pg_sleep(60)%');
  const shortQuery = short.client.query('SELECT pg_sleep(0.5) AS slept');
  await waitForActive(admin, 'SELECT pg_sleep(0.5)%');

  const stoppedAt = Date.now();
  child.process.kill('SIGTERM');
  t.same((await shortQuery).rows, [{ slept: '' }], 'the statement shorter than the drain completes');
  const longError = await longQuery;
  const heldError = await heldQuery;
  t.match(longError, { code: '57P01', severity: 'FATAL', message: 'terminating connection due to administrator command' }, 'the long statement: 57P01');
  t.match(heldError, { code: '57P01', severity: 'FATAL' }, 'the held statement: 57P01');
  t.ok(Date.now() - stoppedAt >= 1900, 'after the 2 s drain');
  const exit = await child.exited;
  t.same(exit, { code: 0, signal: null }, 'exit status 0');
  await waitFor('short client told', () => short.errors.some((e) => e.code === '57P01'));

  t.same(await backendsRunning(admin, 'SELECT pg_sleep(60)%'), [], 'the long statement was cancelled on the server');
  t.ok(child.logs.some((l) => l.event === 'stepgate.stopped'), 'logs stepgate.stopped');
  const events = readEvents(setup.dataDir);
  const statement = events.find((e) => e.kind === 'statement' && e.data.sql === 'SELECT v FROM secrets')!;
  t.match(events.find((e) => e.kind === 'challenge.resolved' && e.session === statement.session), { data: { status: 'shutdown' } }, 'the hold is recorded as ended by the shutdown');
  t.equal(events.at(-1)!.kind, 'audit.close');
  const v = await cli(['audit', 'verify', '--data', setup.dataDir]);
  t.equal(v.code, 0, v.stdout);
  const replay = await cli(['audit', 'replay', `#${statement.session}`, '--instant', '--data', setup.dataDir]);
  t.match(replay.stdout, 'ended: stepgate shut down while it waited (not run; the client got FATAL 57P01)');
  for (const c of [short, long, held]) void c.client.end().catch(() => {});
});

t.test('a second signal stops at once', async (t) => {
  const setup = await serveSetup(t, db, { rulesDir, configYaml: 'limits:\n  shutdown_timeout: 60s\n' });
  const child = await startServe(t, ['--config', setup.configFile]);
  const long = await connect(child.port, 'long');
  const longQuery = failure(long.client.query('SELECT pg_sleep(60)'));
  await waitForActive(admin, 'SELECT pg_sleep(60)%');
  child.process.kill('SIGTERM');
  await waitFor('draining', () => child.logs.some((l) => l.event === 'stepgate.draining'));
  const at = Date.now();
  child.process.kill('SIGINT');
  const exit = await child.exited;
  t.equal(exit.code, 1, 'exit status 1');
  t.ok(Date.now() - at < 30_000, 'at once, not after the 60 s drain');
  t.ok(child.logs.some((l) => l.event === 'stepgate.stopping_now'));
  t.ok(await longQuery, 'the client lost its connection');
  // The server backend is left to PostgreSQL (it ends when its statement does); cancel it here.
  await admin.query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND pid <> pg_backend_pid()");
  void long.client.end().catch(() => {});
});
