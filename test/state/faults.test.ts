/**
 * The shared state database out of reach (its database refusing connections, every session cut): step-up
 * fails closed at once while reads go on, /readyz says 503 and why, `stepgate_state_up` is 0 and the errors
 * are counted; stepgate retries with backoff and, once the database takes connections again, reconnects,
 * says so, and holds statements again.
 */
import t from 'tap';
import pg from 'pg';
import { freePort, startPostgres } from '../helpers/postgres.js';
import { serveSetup, startServe } from '../helpers/serve.js';
import { ALICE, rulesDirWith, startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

const rulesDir = rulesDirWith(
  t,
  `default: allow
rules:
  - name: ask-for-deletes
    match: {command: DELETE}
    action: step-up
    timeout: 30s
`,
);

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
await db.query('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)');

const sg = await startStepgate(t, db, {
  rulesDir,
  configYaml: `metrics:\n  listen: 127.0.0.1:0\nstate:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: solo\n  lease: 2s\n`,
});
await sg.identity.addPasskey({ id: 'cred-alice', user: ALICE.name, publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });

async function metric(name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

async function ready(): Promise<{ status: number; body: Record<string, any> }> {
  const res = await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

t.test('unreachable, then back', async (t) => {
  t.equal(await metric('stepgate_state_up'), 1, 'up');
  t.match(await ready(), { status: 200, body: { ready: true, state: { ok: true } } });
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));

  // The state database stops taking connections, and every session it had is cut.
  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS false');
  await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'stepgate_state'`);
  await waitFor('stepgate to notice', () => sg.logs.some((l) => l.event === 'state.disconnected'));
  t.equal(await metric('stepgate_state_up'), 0, 'stepgate_state_up is 0');
  t.ok((await metric('stepgate_state_errors_total'))! >= 1, 'the failure is counted');
  const r = await ready();
  t.equal(r.status, 503, '/readyz: not ready');
  t.match(r.body, { ready: false, state: { ok: false, error: /shared state database is unreachable/ } });

  // Step-up fails closed, at once (nobody could approve, and a revocation could be missed).
  const started = performance.now();
  await t.rejects(c.query('DELETE FROM t WHERE id = 1'), { code: '42501' }, 'the DELETE is refused');
  t.ok(performance.now() - started < 2000, 'without waiting for a timeout');
  t.equal((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n, 10, 'reads go on, and nothing was deleted');
  // Retried with backoff while it is down (several attempts, all failing).
  await waitFor('a second failed attempt', async () => ((await metric('stepgate_state_errors_total'))! >= 2 ? true : null));

  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS true');
  await waitFor('stepgate to reconnect', () => sg.logs.some((l) => l.event === 'state.reconnected'), 20_000);
  t.equal(await metric('stepgate_state_up'), 1, 'up again');
  t.match(await ready(), { status: 200, body: { ready: true, state: { ok: true } } });
  const held = c.query('DELETE FROM t WHERE id = 1').catch((e: Error) => e);
  const challenge = await waitFor('a hold again', () => sg.broker!.pendingFor(ALICE.name, [])[0]);
  t.same(await sg.broker!.reject(challenge.id, ALICE.name, 'back'), { ok: true });
  t.match(await held, { code: '42501' });
  const logged = JSON.stringify(sg.logs.filter((l) => String(l.event).startsWith('state.')));
  t.notMatch(logged, new RegExp(db.password), 'no password in the state log lines');
});

t.test('a state database out of reach at start: serve exits 1 naming it (without its password), and does not hang', async (t) => {
  const closed = `postgres://stepgate:hunter2-secret@127.0.0.1:${await freePort()}/stepgate_state`;
  const setup = await serveSetup(t, db, { configYaml: `state: ${JSON.stringify(closed)}\n` });
  const err = await startServe(t, ['--config', setup.configFile]).then(
    () => null,
    (e: Error) => e.message,
  );
  t.match(err, /exited with 1: .*cannot use the state database postgres:\/\/stepgate:\*\*\*@127\.0\.0\.1:\d+\/stepgate_state/s, 'exit status 1, naming the database');
  t.notMatch(err, /hunter2/, 'never the password');
});
