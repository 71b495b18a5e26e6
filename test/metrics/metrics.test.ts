/**
 * /metrics, /healthz and /readyz of a real stepgate in front of a real PostgreSQL: the numbers move as
 * statements are allowed, held (approved, rejected) and denied and as logins fail; /readyz turns 503 when
 * the audit store fails, while stepgate shuts down, and when the upstream server is stopped, and says why.
 * Holds are approved and rejected through the console's broker (the call the console makes once a passkey
 * assertion has been verified).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import type { AuditStore } from '../../src/audit/store.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, type TestStepgate, rulesDirWith } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

const rulesDir = rulesDirWith(
  t,
  `default: allow
rules:
  - name: no-drops
    match: {command: DROP TABLE}
    action: deny
  - name: ask-for-updates
    match: {command: UPDATE}
    action: step-up
    timeout: 30s
`,
);
const METRICS = 'metrics:\n  listen: 127.0.0.1:0\n';

/** One scrape: `name{labels}` → value, exactly as the text has them. */
async function scrape(sg: TestStepgate): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  if (!/^text\/plain; version=0\.0\.4/.test(res.headers.get('content-type') ?? '')) throw new Error(`content type ${res.headers.get('content-type')}`);
  const values = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

async function ready(sg: TestStepgate): Promise<{ status: number; body: Record<string, any> }> {
  const res = await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

const db = await startPostgres(t);
await db.query('CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)');

t.test('statements, holds, refusals and the classifier are counted; labels stay low-cardinality', async (t) => {
  const sg = await startStepgate(t, db, { rulesDir, configYaml: METRICS });
  // A passkey on record, so holds wait for a person.
  await sg.identity.addPasskey({ id: 'cred-alice', user: ALICE.name, publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });

  const health = await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/healthz`);
  t.equal(health.status, 200, '/healthz');
  const r = await ready(sg);
  t.equal(r.status, 200, '/readyz is 200');
  t.match(r.body, { ready: true, shutting_down: false, audit: { ok: true }, upstream: { ok: true, servers: [{ ok: true }] } });

  const before = await scrape(sg);
  t.equal(before.get('stepgate_statements_total{class="read",decision="allow"}') ?? 0, 0);
  t.equal(before.get('stepgate_holds_waiting'), 0);
  t.equal(before.get('stepgate_connections_refused_total{reason="auth"}'), 0, 'every refusal reason is there from the start');
  t.equal(before.get('stepgate_audit_healthy'), 1);
  t.ok(before.has('process_cpu_user_seconds_total'), 'process metrics are in the registry');

  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  for (let i = 0; i < 3; i++) await c.query('SELECT v FROM t');
  await t.rejects(c.query('DROP TABLE t'), { code: '42501' });

  let after = await scrape(sg);
  t.equal(after.get('stepgate_statements_total{class="read",decision="allow"}'), 3, 'three reads allowed');
  t.equal(after.get('stepgate_statements_total{class="ddl",decision="deny"}'), 1, 'one DROP denied');
  t.equal(after.get('stepgate_connections_open'), 1);
  t.equal(after.get('stepgate_connections_total'), 1);
  t.ok(after.get('stepgate_classification_seconds_count')! >= 4, 'every text classified was timed');
  t.equal(after.get('stepgate_classification_seconds_bucket{le="+Inf"}'), after.get('stepgate_classification_seconds_count'));
  t.ok(after.get('stepgate_classification_seconds_sum')! > 0);

  // Held, then approved.
  const held = c.query('UPDATE t SET v = v + 1 WHERE id = 1');
  const waiting = await waitFor('the hold to show', async () => ((await scrape(sg)).get('stepgate_holds_waiting') === 1 ? true : null));
  t.ok(waiting, 'one hold waiting');
  const first = await waitFor('a challenge', () => sg.broker!.pendingFor(ALICE.name, ALICE.groups!)[0]);
  t.match(await sg.broker!.approve(first.id, ALICE.name, 'cred-alice'), { ok: true, status: 'approved' });
  await held;
  // Held, then rejected.
  const rejected = c.query('UPDATE t SET v = v + 1 WHERE id = 1').catch((e: Error) => e);
  const second = await waitFor('a second challenge', () => sg.broker!.pendingFor(ALICE.name, ALICE.groups!).find((x) => x.id !== first.id));
  t.match(await sg.broker!.reject(second.id, ALICE.name, 'not now'), { ok: true });
  t.match(await rejected, { code: '42501' });

  after = await scrape(sg);
  t.equal(after.get('stepgate_holds_waiting'), 0, 'no hold waits');
  t.equal(after.get('stepgate_hold_outcomes_total{status="approved"}'), 1);
  t.equal(after.get('stepgate_hold_outcomes_total{status="rejected"}'), 1);
  t.equal(after.get('stepgate_statements_total{class="write",decision="step-up"}'), 2);
  t.equal(after.get('stepgate_hold_decision_seconds_count'), 2, 'both decisions timed');
  t.equal(after.get('stepgate_hold_decision_seconds_bucket{le="+Inf"}'), 2);

  // A wrong password.
  const bad = new pg.Client({ ...sg.pgConfig(), password: 'wrong' });
  await t.rejects(bad.connect(), { code: '28P01' });
  await bad.end().catch(() => {});
  after = await scrape(sg);
  t.equal(after.get('stepgate_connections_refused_total{reason="auth"}'), 1, 'one refused login');
  t.equal(after.get('stepgate_connections_total'), 2);

  // Nothing a client sent is a label: not the SQL, not the user name.
  const text = await (await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/metrics`)).text();
  t.notMatch(text, /alice|UPDATE t|SELECT v/, 'no user names or SQL in the metrics');
  const labelled = [...after.keys()].filter((k) => k.startsWith('stepgate_statements_total'));
  t.ok(labelled.every((k) => /^stepgate_statements_total\{class="[a-z]+",decision="(allow|step-up|deny)"\}$/.test(k)), 'class and decision labels only');
  await c.end();
  await waitFor('the connection to close', async () => ((await scrape(sg)).get('stepgate_connections_open') === 0 ? true : null));
});

t.test('/readyz: 503 while the audit store is down (and 200 once it records again), and while shutting down', async (t) => {
  const sg = await startStepgate(t, db, { rulesDir, configYaml: METRICS });
  t.equal((await ready(sg)).status, 200);
  const store = sg.app.audit as AuditStore;
  // The writer thread dies: the store is unhealthy until a new writer (restarted after a second) has written.
  await store.workerThread!.terminate();
  const down = await waitFor('/readyz to fail', async () => {
    const r = await ready(sg);
    return r.status === 503 ? r : null;
  });
  t.match(down.body, { ready: false, audit: { ok: false, error: /audit store failed/ }, upstream: { ok: true } }, 'names the audit store');
  const back = await waitFor('/readyz to recover', async () => ((await ready(sg)).status === 200 ? true : null), 15_000);
  t.ok(back, 'ready again once the audit trail records');

  // Shutting down: not ready from the first moment of close, while sessions drain.
  await sg.identity.addPasskey({ id: 'cred-alice', user: ALICE.name, publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });
  const c = new pg.Client(sg.pgConfig());
  c.on('error', () => {});
  await c.connect();
  const held = c.query('UPDATE t SET v = v + 1 WHERE id = 1').catch((e: Error) => e);
  await waitFor('a challenge', () => sg.broker!.pendingFor(ALICE.name, ALICE.groups!)[0]);
  let endGrace!: () => void;
  const closed = sg.app.close({ deadline: new Promise<void>((resolve) => (endGrace = resolve)) });
  const r = await ready(sg);
  t.equal(r.status, 503, '503 while draining');
  t.match(r.body, { ready: false, shutting_down: true });
  endGrace();
  await closed;
  t.match(await held, { code: '57P01' });
  await c.end().catch(() => {});
});

t.test('/readyz: 503 naming the server when the upstream PostgreSQL is stopped; failed upstream connects are counted', async (t) => {
  const other = await startPostgres(t, { tcp: true });
  const sg = await startStepgate(t, other, { rulesDir, configYaml: METRICS });
  t.equal((await ready(sg)).status, 200);
  await other.stop();
  const down = await waitFor('/readyz to fail', async () => {
    const r = await ready(sg);
    return r.status === 503 ? r : null;
  });
  t.match(down.body, { ready: false, audit: { ok: true }, upstream: { ok: false, servers: [{ server: new RegExp(`127\\.0\\.0\\.1:${other.port}`), ok: false, error: /could not connect/ }] } });
  t.notMatch(JSON.stringify(down.body), /pg-test-password/, 'no password in the report');
  t.match(sg.logs.find((l) => l.event === 'readiness.not_ready'), { level: 'warn', failed: [/could not connect/] }, 'the log says why');
  t.notMatch(JSON.stringify(sg.logs.filter((l) => String(l.event).startsWith('readiness.'))), /pg-test-password/);
  const c = new pg.Client(sg.pgConfig());
  await t.rejects(c.connect());
  await c.end().catch(() => {});
  const m = await scrape(sg);
  t.equal(m.get('stepgate_upstream_connect_failures_total'), 1);
  t.equal(m.get('stepgate_connections_refused_total{reason="upstream"}'), 1);
});

t.test('two apps in one process keep their own registries', async (t) => {
  const one = await startStepgate(t, db, { rulesDir, configYaml: METRICS });
  const two = await startStepgate(t, db, { rulesDir, configYaml: METRICS });
  const c = new pg.Client(one.pgConfig());
  await c.connect();
  await c.query('SELECT 1');
  await c.end();
  t.equal((await scrape(one)).get('stepgate_statements_total{class="read",decision="allow"}'), 1);
  t.equal((await scrape(two)).get('stepgate_statements_total{class="read",decision="allow"}') ?? 0, 0, 'the other app counted nothing');
  t.equal((await scrape(two)).get('stepgate_connections_total'), 0);
});

t.test('the config: metrics.listen must be HOST:PORT, and metrics are off without it', async (t) => {
  const { loadConfig, ConfigError } = await import('../../src/config.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'stepgate.yaml');
  fs.writeFileSync(file, 'upstream: postgres://u@127.0.0.1:5432/db\nmetrics:\n  listen: nowhere\n  port: 3\n');
  try {
    loadConfig({ config: file });
    t.fail('accepted');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.match((err as Error).message, new RegExp(`${file}:3:11: metrics.listen: "nowhere" is not HOST:PORT`));
    t.match((err as Error).message, /unknown key metrics.port/);
  }
  fs.writeFileSync(file, 'upstream: postgres://u@127.0.0.1:5432/db\n');
  t.equal(loadConfig({ config: file }).metrics, null);
  const sg = await startStepgate(t, db, { rulesDir });
  t.equal(sg.app.metrics, null);
  t.equal(sg.app.metricsAddress, null);
});
