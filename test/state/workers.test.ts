/**
 * `workers: 2` (Node's cluster) as people run it: `stepgate serve` with shared state. Clients on one port
 * are spread over both workers (each an instance of its own: the holds table names which one holds a
 * statement); statements held by either worker are approved in a real browser on the one console (worker
 * 1's) and run; /metrics sums the workers (up gauges: the least of them) and /readyz reports each; a
 * worker killed with SIGKILL is replaced under the same index and instance name; SIGTERM stops everything
 * in order (exit 0).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import t from 'tap';
import pg from 'pg';
import { approveOnPage, enroll, launchBrowser, newPerson, waitForChallenge } from '../console/browser.js';
import { startPostgres } from '../helpers/postgres.js';
import { serveSetup, startServe, STEPGATE_BIN } from '../helpers/serve.js';
import { rulesDirWith } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

const USER = { name: 'alice', password: 'alice-pw' };

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
await db.query('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)');
const rulesDir = rulesDirWith(t, 'default: allow\nrules:\n  - name: ask-for-deletes\n    match: {command: DELETE}\n    action: step-up\n    timeout: 60s\n');
const setup = await serveSetup(t, db, {
  rulesDir,
  configYaml: `workers: 2\nmetrics:\n  listen: 127.0.0.1:0\nstate:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: gw\n`,
});
const child = await startServe(t, ['--config', setup.configFile]);
const listening = await waitFor('the cluster', () => child.logs.find((l) => l.event === 'cluster.listening'), 30_000);
const consoleUrl = String(listening.console);
const metricsPort = Number(String(child.logs.find((l) => l.event === 'metrics.listening')!.listen).split(':').pop());
const workerPids = (): Map<number, number> => {
  const pids = new Map<number, number>();
  for (const l of child.logs) if (l.event === 'cluster.worker_listening') pids.set(Number(l.worker), Number(l.pid));
  return pids;
};

const added = execFileSync(process.execPath, [STEPGATE_BIN, 'users', 'add', USER.name, '--config', setup.configFile, '--password-stdin', '--console-url', consoleUrl, '--json'], {
  input: USER.password + '\n',
}).toString();
const enrollmentLink = (JSON.parse(added) as { enrollmentLink: string }).enrollmentLink;

async function connect(t: { teardown(fn: () => unknown): void }): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port: child.port, user: USER.name, password: USER.password, database: 'postgres' });
  c.on('error', () => {});
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  return c;
}

t.test('two workers on one port; holds of both approved on the one console', async (t) => {
  t.same([...workerPids().keys()].sort(), [1, 2], 'both workers listen');
  t.equal(new Set(workerPids().values()).size, 2, 'in two processes');
  t.ok(fs.existsSync(`${setup.dataDir}/worker-1/audit.db`) && fs.existsSync(`${setup.dataDir}/worker-2/audit.db`), 'each worker writes its own audit chain');

  const browser = await launchBrowser(t);
  const alice = await newPerson(browser, USER.name);
  await enroll(alice, enrollmentLink);

  // Connections alternate between the workers: four are enough to land on both.
  const clients = await Promise.all([0, 1, 2, 3].map(() => connect(t)));
  const deletes = clients.map((c, i) => c.query(`DELETE FROM t WHERE id = ${i + 1}`));
  const holds = await waitFor('four holds', async () => {
    const r = await db.query(`SELECT id, instance FROM stepgate.holds WHERE status = 'pending'`, 'stepgate_state');
    return r.rows.length === 4 ? (r.rows as { id: string; instance: string }[]) : null;
  });
  t.same([...new Set(holds.map((h) => h.instance))].sort(), ['gw-w1', 'gw-w2'], 'held by both workers');
  for (const h of holds) {
    await waitForChallenge(alice.page, h.id);
    t.equal(await approveOnPage(alice.page, h.id), 'approved', `${h.instance}'s statement approved on the console`);
  }
  t.same((await Promise.all(deletes)).map((r) => r.rowCount), [1, 1, 1, 1], 'every DELETE ran');
  t.same(alice.errors, [], 'no errors in the page');

  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const value = (name: string): number => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1]);
  t.equal(value('stepgate_connections_open'), 4, '/metrics sums the workers: 4 connections open');
  // "Up" gauges take the least of the workers (summed, two healthy workers would read 2).
  t.equal(value('stepgate_state_up'), 1, 'stepgate_state_up is the least of the workers, not their sum');
  t.equal(value('stepgate_audit_healthy'), 1, 'stepgate_audit_healthy too');
  const ready = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
  t.equal(ready.status, 200);
  const body = (await ready.json()) as { ready: boolean; workers: { worker: number; ready: boolean }[] };
  t.match(body, { ready: true, workers: [{ worker: 1, ready: true }, { worker: 2, ready: true }] }, '/readyz reports each worker');
});

t.test('a worker killed with SIGKILL is replaced under its index', async (t) => {
  const before = workerPids().get(2)!;
  process.kill(before, 'SIGKILL');
  await waitFor('worker 2 replaced', () => child.logs.some((l) => l.event === 'cluster.worker_listening' && Number(l.worker) === 2 && Number(l.pid) !== before), 30_000);
  t.ok(child.logs.some((l) => l.event === 'cluster.worker_died' && Number(l.worker) === 2), 'the primary said so');
  const e = await connect(t);
  t.equal((await e.query('SELECT 1 AS one')).rows[0].one, 1, 'new connections are served');
  const instances = await db.query(`SELECT id FROM stepgate.instances ORDER BY id`, 'stepgate_state');
  t.same(instances.rows.map((r) => r.id), ['gw-w1', 'gw-w2'], 'the same instance names (the replacement continues worker 2)');
});

t.test('SIGTERM stops every worker in order and the primary exits 0', async (t) => {
  child.process.kill('SIGTERM');
  t.match(await child.exited, { code: 0 });
  t.equal(child.logs.filter((l) => l.event === 'stepgate.stopped').length, 2, 'both workers stopped in order');
  t.ok(child.logs.some((l) => l.event === 'cluster.stopped'));
});
