/**
 * Every instance's audit trail in the shared state database: two stepgates ship their chains (per-instance
 * seq, every event there as written locally); `stepgate audit verify --state` checks both, `sessions` lists
 * both instances' sessions and `replay` replays one of each; the state database out of reach: statements are
 * still answered (the local trail), the shipping lag grows, then it catches up with nothing missing; an edit
 * or a deletion made by a superuser in the shared store is named with its instance and seq; a role with only
 * INSERT and SELECT ships but cannot UPDATE or DELETE, and the triggers refuse even the owner; an instance
 * killed with SIGKILL: verify says its run ended without audit.close, and restarted under the same name it
 * ships the rest.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import pg from 'pg';
import { AuditStore } from '../../src/audit/store.js';
import { openAuditDbForReading } from '../../src/audit/db.js';
import { dataDirPublicKey } from '../../src/audit/keys.js';
import { pinKey, shipRound } from '../../src/audit/ship.js';
import { AUDIT_TABLES } from '../../src/audit/shared-schema.js';
import { createLogger } from '../../src/log.js';
import { startPostgres } from '../helpers/postgres.js';
import { serveSetup, startServe } from '../helpers/serve.js';
import { ALICE, startStepgate, type TestStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { cli, readEvents } from './helpers.js';

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
const stateUrl = db.url('stepgate_state');
/** The test's own connection to the state database (cut, like stepgate's, when it goes out of reach). */
let state = await stateClient();
t.teardown(() => state.end());

async function stateClient(): Promise<pg.Client> {
  const c = await db.client('stepgate_state');
  c.on('error', () => {});
  return c;
}

async function instance(name: string): Promise<TestStepgate> {
  return startStepgate(t, db, { configYaml: `metrics:\n  listen: 127.0.0.1:0\nstate:\n  url: ${JSON.stringify(stateUrl)}\n  instance: ${name}\n  lease: 2s\n` });
}

async function sql(sg: TestStepgate, ...texts: string[]): Promise<void> {
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  try {
    for (const text of texts) await c.query(text);
  } finally {
    await c.end();
  }
}

/** The instance's events in the shared store, in seq order. */
async function shipped(name: string): Promise<{ seq: number; hash: string; kind: string; body: string }[]> {
  const r = await state.query('SELECT seq::int AS seq, hash, kind, body FROM stepgate.audit_events WHERE instance = $1 ORDER BY seq', [name]);
  return r.rows as { seq: number; hash: string; kind: string; body: string }[];
}

/** Waits until everything the local trail holds is in the shared store. */
async function caughtUp(name: string, dataDir: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    `instance ${name} to ship all of ${dataDir}`,
    async () => {
      const local = readEvents(dataDir);
      const there = await shipped(name);
      return local.length > 0 && there.length > 0 && there[there.length - 1]!.seq === local[local.length - 1]!.seq;
    },
    timeoutMs,
  );
}

/** The shared store holds exactly the local trail's events (same seq, hash, body). */
async function sameAsLocal(t: Test, name: string, dataDir: string): Promise<void> {
  const local = readEvents(dataDir).map((e) => ({ seq: e.seq, hash: e.hash, kind: e.kind, body: e.body }));
  t.same(await shipped(name), local, `instance ${name}: the shared store holds every local event, as written (${local.length})`);
}

async function metric(sg: TestStepgate, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${sg.app.metricsAddress!.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.slice(name.length + 1));
}

const a = await instance('a');
const b = await instance('b');

t.test('both instances ship their chains', async (t) => {
  await sql(a, 'SELECT 1 AS on_a', 'SELECT 2 AS on_a');
  await sql(b, 'SELECT 3 AS on_b');
  await caughtUp('a', a.dataDir);
  await caughtUp('b', b.dataDir);
  await sameAsLocal(t, 'a', a.dataDir);
  await sameAsLocal(t, 'b', b.dataDir);
  for (const name of ['a', 'b']) {
    const seqs = (await shipped(name)).map((e) => e.seq);
    t.same(seqs, seqs.map((_, i) => i + 1), `instance ${name}: its own seq, from 1, without a hole`);
  }
  t.ok((await shipped('a')).some((e) => e.kind === 'statement' && e.body.includes('SELECT 2 AS on_a')), "a's statement is there");
  t.notOk((await shipped('b')).some((e) => e.body.includes('on_a')), "a's statements are not in b's chain");
  const keys = (await state.query('SELECT instance, kid FROM stepgate.audit_keys ORDER BY instance')).rows;
  t.same(keys.map((k) => k.instance), ['a', 'b'], 'each instance pinned its key');
  t.equal(await metric(a, 'stepgate_audit_ship_up'), 1, 'stepgate_audit_ship_up is 1');
  t.equal(await metric(a, 'stepgate_audit_ship_lag_events'), 0, 'nothing waits to be shipped');

  const v = await cli(['audit', 'verify', '--state', stateUrl]);
  t.equal(v.code, 0, v.stdout + v.stderr);
  t.match(v.stdout, /OK: instance a: the audit trail is intact\./);
  t.match(v.stdout, /OK: instance b: the audit trail is intact\./);
  t.notMatch(v.stdout + v.stderr, new RegExp(db.password), 'the password is not printed');
});

t.test('sessions and replay across instances', async (t) => {
  const s = await cli(['audit', 'sessions', '--state', stateUrl, '--json']);
  t.equal(s.code, 0, s.stderr);
  const sessions = JSON.parse(s.stdout) as { instance: string; id: string; statements: number }[];
  const ofA = sessions.filter((x) => x.instance === 'a');
  const ofB = sessions.filter((x) => x.instance === 'b');
  t.ok(ofA.length >= 1 && ofB.length >= 1, 'sessions of both instances');
  const table = await cli(['audit', 'sessions', '--state', stateUrl]);
  t.match(table.stdout, /^INSTANCE +SESSION +USER/, 'an INSTANCE column');

  const sessionA = ofA.find((x) => x.statements === 2)!;
  const ra = await cli(['audit', 'replay', `a/${sessionA.id}`, '--instant', '--state', stateUrl]);
  t.equal(ra.code, 0, ra.stderr);
  t.match(ra.stdout, /SELECT 2 AS on_a/, "replay of a's session (INSTANCE/ID)");
  const sessionB = ofB.find((x) => x.statements === 1)!;
  const rb = await cli(['audit', 'replay', sessionB.id.slice(0, 8), '--instant', '--state', stateUrl]);
  t.equal(rb.code, 0, rb.stderr);
  t.match(rb.stdout, /SELECT 3 AS on_b/, "replay of b's session by its id's prefix, found in b's trail");
  const byNumber = await cli(['audit', 'replay', '#1', '--instant', '--state', stateUrl]);
  t.equal(byNumber.code, 2, 'a bare session number is ambiguous across instances');
  t.match(byNumber.stderr, /INSTANCE\/#1/);

  const ex = await cli(['audit', 'export', '--state', stateUrl, '--session', `b/${sessionB.id}`]);
  t.equal(ex.code, 0, ex.stderr);
  const records = ex.stdout.trim().split('\n').map((l) => JSON.parse(l) as { instance: string; kind: string });
  t.ok(records.length > 0 && records.every((r) => r.instance === 'b'), 'export names the instance of each record');
});

t.test('the state database out of reach: statements answered, lag grows, then caught up', async (t) => {
  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS false');
  await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'stepgate_state' AND pid <> pg_backend_pid()`);
  const c = new pg.Client(a.pgConfig());
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  for (let i = 0; i < 5; i++) t.equal((await c.query(`SELECT ${i} AS during_outage`)).rows[0].during_outage, i, `statement ${i} answered`);
  await waitFor('a failed shipment', () => a.logs.some((l) => l.event === 'audit.ship_failed'));
  await waitFor('the lag to show', async () => (await metric(a, 'stepgate_audit_ship_lag_events')) > 0);
  t.equal(await metric(a, 'stepgate_audit_ship_up'), 0, 'stepgate_audit_ship_up is 0 while it retries');
  const ready = (await (await fetch(`http://127.0.0.1:${a.app.metricsAddress!.port}/readyz`)).json()) as { audit_shipping: { state: string; behind_events: number } };
  t.match(ready.audit_shipping, { state: 'retrying' }, '/readyz says so');
  t.ok(ready.audit_shipping.behind_events > 0, '/readyz: events behind');

  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS true');
  // The test's own connection to the state database was cut too.
  await state.end().catch(() => {});
  state = await stateClient();
  await waitFor('shipping to resume', () => a.logs.some((l) => l.event === 'audit.ship_resumed'), 30_000);
  await caughtUp('a', a.dataDir);
  await sameAsLocal(t, 'a', a.dataDir);
  t.ok((await shipped('a')).some((e) => e.body.includes('SELECT 4 AS during_outage')), 'the statements of the outage are there');
  await waitFor('no lag', async () => (await metric(a, 'stepgate_audit_ship_lag_events')) === 0);
  const logged = JSON.stringify(a.logs.filter((l) => String(l.event).startsWith('audit.ship')));
  t.notMatch(logged, new RegExp(db.password), 'no password in the shipper log lines');
});

t.test('an edit or a deletion in the shared store is named with instance and seq', async (t) => {
  const row = (await shipped('a')).find((e) => e.kind === 'statement' && e.body.includes('SELECT 1 AS on_a'))!;
  await state.query('ALTER TABLE stepgate.audit_events DISABLE TRIGGER audit_events_no_change');
  await state.query(`UPDATE stepgate.audit_events SET body = replace(body, 'SELECT 1', 'SELECT 7') WHERE instance = 'a' AND seq = $1`, [row.seq]);
  const v = await cli(['audit', 'verify', '--state', stateUrl]);
  t.equal(v.code, 1, 'verify fails');
  t.match(v.stdout, new RegExp(`FAILED: instance a: event ${row.seq} \\(statement, session \\d+ #\\d+, [^)]+\\) was altered`));
  t.match(v.stdout, /OK: instance b: the audit trail is intact\./, 'b is still intact');
  await state.query(`UPDATE stepgate.audit_events SET body = $2 WHERE instance = 'a' AND seq = $1`, [row.seq, row.body]);

  const second = (await shipped('b'))[1]!;
  await state.query(`DELETE FROM stepgate.audit_events WHERE instance = 'b' AND seq = $1`, [second.seq]);
  const v2 = await cli(['audit', 'verify', '--state', stateUrl, '--instance', 'b']);
  t.equal(v2.code, 1);
  t.match(v2.stdout, new RegExp(`FAILED: instance b: event ${second.seq} is missing \\(deleted\\)`));
  t.notMatch(v2.stdout, /instance a/, '--instance b checks b alone');
  const restore = readEvents(b.dataDir).find((e) => e.seq === second.seq)!;
  await state.query('INSERT INTO stepgate.audit_events VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', ['b', restore.seq, restore.session, restore.sseq, restore.time, restore.kind, restore.body, restore.hash]);
  await state.query('ALTER TABLE stepgate.audit_events ENABLE TRIGGER audit_events_no_change');
  t.equal((await cli(['audit', 'verify', '--state', stateUrl])).code, 0, 'intact again once restored');
});

t.test('append-only: the triggers refuse the owner, an INSERT and SELECT role cannot UPDATE or DELETE but ships', async (t) => {
  for (const change of [`UPDATE stepgate.audit_events SET body = body WHERE instance = 'a'`, `DELETE FROM stepgate.audit_events WHERE instance = 'a'`, 'TRUNCATE stepgate.audit_sessions']) {
    await t.rejects(state.query(change), { code: '42501', message: /append-only/ }, `refused even to the owner: ${change.split(' ')[0]}`);
  }
  await db.query(`CREATE ROLE shipper LOGIN PASSWORD 'shipper-pw'`);
  await db.query(`GRANT USAGE ON SCHEMA stepgate TO shipper; GRANT SELECT, INSERT ON ${AUDIT_TABLES.map((x) => `stepgate.${x}`).join(', ')} TO shipper`, 'stepgate_state');
  const role = new pg.Client({ host: db.socketDir, port: db.port, user: 'shipper', password: 'shipper-pw', database: 'stepgate_state' });
  await role.connect();
  t.teardown(() => role.end());
  await t.rejects(role.query(`UPDATE stepgate.audit_events SET body = '{}' WHERE instance = 'a'`), { code: '42501', message: /permission denied/ }, 'UPDATE refused by the server');
  await t.rejects(role.query(`DELETE FROM stepgate.audit_events WHERE instance = 'a'`), { code: '42501', message: /permission denied/ }, 'DELETE refused by the server');

  // A trail shipped with that role alone.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-ship-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const store = await AuditStore.open({ dataDir, log: createLogger({ level: 'error', write: () => {} }) });
  store.event('notify.failed', { webhook: 'test', note: 'a system event to ship' });
  await store.close();
  const local = openAuditDbForReading(dataDir);
  t.teardown(() => local.close());
  await pinKey(role, 'c', await dataDirPublicKey(dataDir));
  const r = await shipRound(local, role, 'c');
  t.ok(r.events >= 3 && r.checkpoints >= 1, `shipped ${r.events} events and ${r.checkpoints} checkpoint(s)`);
  t.same(await shipRound(local, role, 'c'), { ...r, events: 0, checkpoints: 0 }, 'a second round finds nothing to ship');
  await sameAsLocal(t, 'c', dataDir);
  const v = await cli(['audit', 'verify', '--state', stateUrl, '--instance', 'c']);
  t.equal(v.code, 0, v.stdout);
  t.match(v.stdout, /checkpoints: +\d+, all signatures valid/, "its checkpoints verify with its pinned key");
});

t.test('killed with SIGKILL: verify reports the run, a restart under the same name ships the rest', async (t) => {
  const setup = await serveSetup(t, db, { configYaml: `state:\n  url: ${JSON.stringify(stateUrl)}\n  instance: k\n  lease: 2s\n` });
  const child = await startServe(t, ['--config', setup.configFile]);
  const c = new pg.Client({ host: '127.0.0.1', port: child.port, user: ALICE.name, password: ALICE.password, database: 'postgres' });
  c.on('error', () => {}); // cut by the kill
  await c.connect();
  await c.query('SELECT 10 AS shipped_before_kill');
  await caughtUp('k', setup.dataDir);
  // Out of reach while it records: the next statement is in its local trail only when it is killed.
  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS false');
  await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'stepgate_state' AND pid <> pg_backend_pid()`);
  await c.query('SELECT 11 AS unshipped_at_kill');
  await waitFor('the statement in the local trail', () => readEvents(setup.dataDir).some((e) => e.body.includes('unshipped_at_kill')));
  child.process.kill('SIGKILL');
  t.match(await child.exited, { signal: 'SIGKILL' });
  void c.end().catch(() => {});
  await db.query('ALTER DATABASE stepgate_state ALLOW_CONNECTIONS true');
  state = await stateClient();
  t.notOk((await shipped('k')).some((e) => e.body.includes('unshipped_at_kill')), 'not shipped before the kill');
  const v = await cli(['audit', 'verify', '--state', stateUrl, '--instance', 'k']);
  t.equal(v.code, 3, v.stdout);
  t.match(v.stdout, new RegExp(`WARNING: instance k: run [0-9a-f-]+ \\(stepgate pid ${child.process.pid} on [^)]+\\) ended without audit.close and its process \\(pid ${child.process.pid}\\) is gone`));

  const again = await startServe(t, ['--config', setup.configFile]);
  const c2 = new pg.Client({ host: '127.0.0.1', port: again.port, user: ALICE.name, password: ALICE.password, database: 'postgres' });
  await c2.connect();
  await c2.query('SELECT 12 AS after_restart');
  await c2.end();
  again.process.kill('SIGTERM');
  t.match(await again.exited, { code: 0 });
  await sameAsLocal(t, 'k', setup.dataDir);
  t.ok((await shipped('k')).some((e) => e.body.includes('unshipped_at_kill')), 'the restarted instance shipped what the killed one could not');
  const kinds = (await shipped('k')).map((e) => e.kind);
  t.equal(kinds.filter((k) => k === 'audit.open').length, 2, 'both runs are there');
  t.equal(kinds[kinds.length - 1], 'audit.close', 'the clean shutdown shipped its audit.close');
  const v2 = await cli(['audit', 'verify', '--state', stateUrl, '--instance', 'k']);
  t.equal(v2.code, 3, 'still a warning: the first run never closed');
  t.match(v2.stdout, /runs: +2 \(1 closed cleanly, 1 without audit\.close\)/);
});
