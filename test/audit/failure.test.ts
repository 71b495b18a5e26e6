/**
 * The store failing: locked database, writer thread terminated, data directory removed. `healthy` turns
 * false, `durable()` rejects, the failure is logged; when the cause goes away the store recovers without
 * losing events, and the chain verifies.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { AuditStore } from '../../src/audit/store.js';
import type { Decision } from '../../src/rules/types.js';
import type { StatementInfo } from '../../src/sql/types.js';
import { createLogger } from '../../src/log.js';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { cli, openDb, readEvents, writeRules } from './helpers.js';

const SELECT: StatementInfo = Object.freeze({
  sql: 'SELECT 1',
  command: 'SELECT',
  commands: ['SELECT'],
  classes: Object.freeze(['read']) as StatementInfo['classes'],
  tables: Object.freeze([]) as unknown as StatementInfo['tables'],
  columns: [],
  functions: Object.freeze([]) as unknown as string[],
  flags: Object.freeze([]) as unknown as StatementInfo['flags'],
  reasons: [],
  changesParsing: false,
});
const ALLOW: Decision = { action: 'allow', rule: null, file: 'x.yaml', message: '', reason: 'no rule matched', grantMs: 0, grantScope: 'connection', timeoutMs: 0, statementIndex: 0 };

async function openStore(t: { teardown(fn: () => unknown): void }, extra: Partial<Parameters<typeof AuditStore.open>[0]> = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-fail-'));
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) });
  const store = await AuditStore.open({ dataDir, log, busyTimeoutMs: 50, restartDelayMs: 100, maxRestartDelayMs: 200, ...extra });
  t.teardown(async () => {
    await store.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  store.connectionStart({ connectionId: 'conn-1', user: 'alice', database: 'db', application: 'test', clientAddress: '127.0.0.1', tls: false, serverPid: 1 });
  return { store, dataDir, logs };
}

function statement(store: AuditStore, sql: string): number {
  const id = store.statement({ connectionId: 'conn-1', sql, statements: [SELECT], decision: ALLOW, params: null });
  store.outcome(id, 0, { tag: 'SELECT 1', sqlstate: null, message: null, skipped: false, durationMs: 0.1 });
  return id;
}

t.test('a locked database: unhealthy, durable() rejects; recovers without losing events', async (t) => {
  const { store, dataDir, logs } = await openStore(t);
  statement(store, 'SELECT 1 AS before_lock');
  await store.durable();
  t.ok(store.healthy);
  const health: boolean[] = [];
  store.onHealthChange((h) => health.push(h));

  const locker = openDb(dataDir);
  locker.prepare('BEGIN IMMEDIATE').run();
  statement(store, 'SELECT 1 AS during_lock');
  await t.rejects(store.durable(), { code: 'AUDIT_UNAVAILABLE', message: /audit trail is unavailable: .*(locked|busy)/i });
  t.notOk(store.healthy);
  t.match(store.failure, /locked|busy/i);
  await t.rejects(store.durable(), { code: 'AUDIT_UNAVAILABLE' }, 'rejects at once while unhealthy');
  t.ok(logs.some((l) => l.event === 'audit.failed' && l.level === 'error'), 'logged loudly');
  statement(store, 'SELECT 1 AS still_locked');

  locker.prepare('COMMIT').run();
  locker.close();
  await waitFor('recovery', () => store.healthy, 30_000);
  await store.durable();
  t.same(health, [false, true]);
  t.ok(logs.some((l) => l.event === 'audit.recovered'));
  const sqls = readEvents(dataDir, "kind = 'statement'").map((e) => e.data.sql);
  t.same(sqls, ['SELECT 1 AS before_lock', 'SELECT 1 AS during_lock', 'SELECT 1 AS still_locked'], 'nothing lost');
  await store.close();
  const v = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(v.code, 0, v.stdout);
});

t.test('past maxPending, events are counted, not kept, and the gap is recorded', async (t) => {
  const { store, dataDir, logs } = await openStore(t, { maxPending: 5 });
  await store.durable();
  const locker = openDb(dataDir);
  locker.prepare('BEGIN IMMEDIATE').run();
  statement(store, 'SELECT 0');
  await t.rejects(store.durable());
  for (let i = 1; i <= 10; i++) statement(store, `SELECT ${i}`);
  locker.prepare('COMMIT').run();
  locker.close();
  await waitFor('recovery', () => store.healthy, 30_000);
  await store.durable();
  const gap = readEvents(dataDir, "kind = 'audit.gap'");
  t.equal(gap.length, 1);
  t.match(gap[0]!.data, { dropped: Number, by_kind: { statement: Number } });
  const kept = readEvents(dataDir, "kind = 'statement'").length;
  t.equal(kept + gap[0]!.data.dropped, 11, 'every statement is either written or counted');
  t.equal(logs.filter((l) => l.event === 'audit.dropping' && l.level === 'error').length, 1, 'dropping is logged at error, once for the outage');
  await store.close();
  const v = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(v.code, 3, 'intact, with a warning');
  t.match(v.stdout, `\ndropped:      ${gap[0]!.data.dropped} event(s) the store could not keep (see audit.gap)\n`);
  t.match(v.stdout, new RegExp(`\\nWARNING: the audit store had to drop ${gap[0]!.data.dropped} event\\(s\\) while it could not write \\(audit.gap, event ${gap[0]!.seq} at `));
});

t.test('the writer thread dies: unhealthy, then a new one takes over', async (t) => {
  const { store, dataDir, logs } = await openStore(t);
  statement(store, 'SELECT 1 AS a');
  await store.durable();
  const waiting = store.durable(); // nothing pending: resolves
  await waiting;
  statement(store, 'SELECT 1 AS b');
  const pending = store.durable();
  await store.workerThread!.terminate();
  await t.rejects(pending, { code: 'AUDIT_UNAVAILABLE' });
  t.notOk(store.healthy);
  t.ok(logs.some((l) => l.event === 'audit.failed'));
  await waitFor('recovery', () => store.healthy, 30_000);
  statement(store, 'SELECT 1 AS c');
  await store.durable();
  const sqls = readEvents(dataDir, "kind = 'statement'").map((e) => e.data.sql);
  t.same(sqls, ['SELECT 1 AS a', 'SELECT 1 AS b', 'SELECT 1 AS c'], 'the batch the dead writer had is written by the next one');
  await store.close();
  t.equal((await cli(['audit', 'verify', '--data', dataDir])).code, 0);
});

t.test('the data directory vanishes: unhealthy, and it stays so (no new chain behind our back)', async (t) => {
  const { store, dataDir, logs } = await openStore(t, { restartDelayMs: 50 });
  statement(store, 'SELECT 1');
  await store.durable();
  fs.rmSync(dataDir, { recursive: true, force: true });
  statement(store, 'SELECT 2');
  await t.rejects(store.durable(), { code: 'AUDIT_UNAVAILABLE', message: /is gone/ });
  t.notOk(store.healthy);
  await waitFor('a failed restart', () => logs.some((l) => l.event === 'audit.retry_failed'), 60_000);
  t.notOk(store.healthy, 'does not start a fresh database');
  t.notOk(fs.existsSync(path.join(dataDir, 'audit.db')));
});

t.test('the database replaced by another file is refused', async (t) => {
  const { store, dataDir, logs } = await openStore(t, { restartDelayMs: 50 });
  statement(store, 'SELECT 1');
  await store.durable();
  const other = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-other-'));
  t.teardown(() => fs.rmSync(other, { recursive: true, force: true }));
  const decoy = await AuditStore.open({ dataDir: other, log: createLogger({ write: () => {} }) });
  await decoy.close();
  const decoyRun = readEvents(other, "kind = 'audit.open'")[0]!.data.run as string;
  fs.copyFileSync(path.join(other, 'audit.db'), path.join(dataDir, 'audit.db.new'));
  fs.renameSync(path.join(dataDir, 'audit.db.new'), path.join(dataDir, 'audit.db'));
  await waitFor('failure', () => !store.healthy, 5000);
  t.match(store.failure, /replaced/);
  // Something to write, so the store restarts its writer (no sleep: it logs each restart's outcome).
  statement(store, 'SELECT 2');
  await t.rejects(store.durable(), { code: 'AUDIT_UNAVAILABLE' });
  const refused = () => logs.filter((l) => l.event === 'audit.retry_failed').length;
  await waitFor('the restarted writer to settle', () => store.healthy || refused() >= 2, 10_000);
  // Either the restart refused the other run's file, or SQLite rebuilt this run's pages from the write-ahead
  // log left beside it (the file was swapped under an open WAL): never is this run written into the other's chain.
  const events = readEvents(dataDir);
  const runs = events.filter((e) => e.kind === 'audit.open').map((e) => e.data.run as string);
  t.notOk(runs.includes(decoyRun) && events.some((e) => e.data.sql === 'SELECT 2'), 'a database of another run is not written to');
  if (!store.healthy) t.equal(runs.length, 1, 'the other run\'s file is left as it was');
});

t.test('through stepgate: with the store down, a denied statement is not answered as if recorded', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { rulesDir: writeRules(t) });
  const store = sg.app.audit as AuditStore;
  const client = new pg.Client(sg.pgConfig());
  client.on('error', () => {});
  await client.connect();
  await client.query('SELECT 1');
  await store.workerThread!.terminate();
  await waitFor('unhealthy', () => !store.healthy);
  // The deny needs a durable record first: the session fails closed (the lead wires how exactly).
  const err = await client.query('DROP TABLE t').then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  t.ok(err, 'the statement fails');
  t.not(err?.message, undefined);
  t.ok(sg.logs.some((l) => l.event === 'audit.unavailable' || l.event === 'audit.failed'));
  void client.end().catch(() => {});
  await waitFor('recovery', () => store.healthy, 30_000);
});

t.test('a second store on the same trail is refused before it writes anything; the first goes on', async (t) => {
  const { store, dataDir } = await openStore(t, { restartDelayMs: 50 });
  statement(store, 'SELECT 1 AS first');
  await store.durable();
  const before = readEvents(dataDir).length;
  await t.rejects(AuditStore.open({ dataDir, log: createLogger({ write: () => {} }) }), {
    code: 'LOCK_HELD',
    message: `another stepgate (pid ${process.pid}) writes the audit trail in ${dataDir} (one writer per audit trail)`,
  });
  t.equal(readEvents(dataDir).length, before, 'the refused store wrote nothing (no audit.open)');
  statement(store, 'SELECT 1 AS first_again');
  await store.durable();
  t.ok(store.healthy, 'the first store keeps writing');
  t.ok(readEvents(dataDir, "kind = 'statement'").some((e) => e.data.sql === 'SELECT 1 AS first_again'));
  t.equal((await cli(['audit', 'verify', '--data', dataDir])).code, 0, 'the chain is intact');
  await store.close();
  const next = await AuditStore.open({ dataDir, log: createLogger({ write: () => {} }) });
  t.ok(next.healthy, 'once the first store closed, the trail can be opened again');
  await next.close();
});
