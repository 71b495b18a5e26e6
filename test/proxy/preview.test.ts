/**
 * Previews (src/proxy/preview.ts), real server: a held statement runs uncommitted before anyone approves;
 * the approver's request carries what it did; approval commits and the client gets the server's own reply,
 * rejection rolls back with the transaction in the state a server error leaves. Fallbacks say why.
 * The broker is scripted: each hold waits until the test decides it.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, rulesDirWith } from '../helpers/stepgate.js';
import type { Hold, HoldOutcome, HoldRequest, StepUpBroker } from '../../src/stepup/types.js';
import type { PreviewReport } from '../../src/proxy/preview.js';

const rulesDir = rulesDirWith(
  t,
  `default: allow
rules:
  - name: preview-changes
    match: {tables: [orders, lines], command: [DELETE, UPDATE, TRUNCATE TABLE]}
    action: step-up
    preview: true
  - name: preview-sequences
    match: {functions: [nextval]}
    action: step-up
    preview: true
  - name: plain-hold
    match: {tables: [audit_log], class: [write]}
    action: step-up
`,
);

/** Holds until the test calls decide(). */
class ScriptedBroker implements StepUpBroker {
  requests: HoldRequest[] = [];
  private waiting: ((outcome: HoldOutcome) => void)[] = [];
  private arrived: (() => void)[] = [];

  hold(request: HoldRequest): Hold {
    this.requests.push(request);
    const outcome = new Promise<HoldOutcome>((resolve) => this.waiting.push(resolve));
    for (const a of this.arrived.splice(0)) a();
    return { challengeId: `c${this.requests.length}`, url: 'http://localhost/c', outcome, end: (status) => this.decide(status === 'cancelled' ? { status } : { status: 'withdrawn' }) };
  }
  connectionClosed(): void {}

  /** Resolves with the request once a hold has arrived (at once if one waits). */
  async next(): Promise<HoldRequest> {
    if (this.waiting.length === 0) await new Promise<void>((resolve) => this.arrived.push(resolve));
    return this.requests[this.requests.length - 1]!;
  }
  decide(outcome: HoldOutcome): void {
    this.waiting.shift()?.(outcome);
  }
  approve(): void {
    this.decide({ status: 'approved', approvers: [{ user: 'bob', credentialId: null }], grant: false });
  }
  reject(): void {
    this.decide({ status: 'rejected', by: 'bob', reason: 'not today' });
  }
}

const broker = new ScriptedBroker();
const db = await startPostgres(t);
await db.query(`
  CREATE TABLE orders (id int PRIMARY KEY, status text);
  CREATE TABLE lines (order_id int REFERENCES orders ON DELETE RESTRICT, n int);
  CREATE TABLE audit_log (v int);
  CREATE TABLE deferred_parent (id int PRIMARY KEY);
  CREATE TABLE deferred_child (parent int REFERENCES deferred_parent DEFERRABLE INITIALLY DEFERRED);
  GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
`);
const sg = await startStepgate(t, db, { rulesDir, stepUp: broker });

async function reset(): Promise<void> {
  await db.query("TRUNCATE lines, orders; INSERT INTO orders SELECT g, CASE WHEN g <= 7 THEN 'stale' ELSE 'open' END FROM generate_series(1, 50) g; INSERT INTO lines VALUES (50, 1)");
}
const count = async (where = 'true'): Promise<number> => Number((await db.query(`SELECT count(*) AS n FROM orders WHERE ${where}`)).rows[0].n);

async function client(tt: { teardown(fn: () => unknown): void }): Promise<pg.Client> {
  const c = new pg.Client(sg.pgConfig(ALICE));
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  return c;
}

t.test('autocommit DELETE: the approver sees the real count before anything is committed; approval commits', async (t) => {
  await reset();
  const c = await client(t);
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(`${n.message} | ${n.detail ?? ''}`));
  const running = c.query("DELETE FROM orders WHERE status = 'stale'");
  const request = await broker.next();
  t.same(request.preview, { status: 'ran', tags: ['DELETE 7'], rows: 7, locks: ['orders'], notices: [] } satisfies PreviewReport);
  t.equal(await count(), 50, 'nothing is committed while the approval waits');
  broker.approve();
  const result = await running;
  t.equal(result.command, 'DELETE');
  t.equal(result.rowCount, 7, 'the client gets the reply the server gave');
  t.equal(await count(), 43, 'committed');
  t.match(notices.join('\n'), /preview: DELETE 7 \(locks orders while waiting\); nothing is committed before the approval/);
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the connection goes on');
});

t.test('autocommit UPDATE rejected: rolled back, 42501, the connection stays usable', async (t) => {
  await reset();
  const c = await client(t);
  const running = c.query("UPDATE orders SET status = 'closed' WHERE id <= 20").catch((e: pg.DatabaseError) => e);
  const request = await broker.next();
  t.equal(request.preview?.status === 'ran' && request.preview.rows, 20);
  broker.reject();
  const error = (await running) as pg.DatabaseError;
  t.equal(error.code, '42501');
  t.match(error.message, /rejected/);
  t.equal(await count("status = 'closed'"), 0, 'nothing changed');
  t.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 50, 'usable, and not in a transaction');
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const state = await db.query(`SELECT state FROM pg_stat_activity WHERE pid = ${pid}`);
  t.equal(state.rows[0].state, 'idle', 'no transaction left open on the server');
});

t.test('inside BEGIN: approval keeps the transaction going; rejection aborts it as a server error would', async (t) => {
  await reset();
  const c = await client(t);
  await c.query('BEGIN');
  await c.query("INSERT INTO orders VALUES (100, 'new')");
  let running = c.query('DELETE FROM orders WHERE id > 45 AND id < 50');
  let request = await broker.next();
  t.same(request.preview?.status === 'ran' && request.preview.tags, ['DELETE 4']);
  broker.approve();
  t.equal((await running).rowCount, 4);
  t.equal((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 47, 'the transaction sees its own changes');
  running = c.query('DELETE FROM orders WHERE id <= 10');
  request = await broker.next();
  broker.reject();
  await t.rejects(running, { code: '42501' });
  await t.rejects(c.query('SELECT 1'), { code: '25P02' }, 'the transaction is aborted');
  t.equal((await c.query('ROLLBACK')).command, 'ROLLBACK');
  t.equal(await count(), 50, 'nothing committed');

  await c.query('BEGIN');
  running = c.query("UPDATE orders SET status = 'x' WHERE id = 1");
  await broker.next();
  broker.approve();
  await running;
  await c.query('COMMIT');
  t.equal(await count("status = 'x'"), 1, 'committed with the transaction');
});

t.test('a statement that fails in its preview: nobody is asked, the client gets the server error', async (t) => {
  await reset();
  const c = await client(t);
  const asked = broker.requests.length;
  await t.rejects(c.query('DELETE FROM orders WHERE id = 50'), { code: '23503' }, 'the foreign key refuses');
  t.equal(broker.requests.length, asked, 'no hold');
  t.equal(await count(), 50);
  await c.query('BEGIN');
  await t.rejects(c.query('DELETE FROM orders WHERE id = 50'), { code: '23503' });
  await t.rejects(c.query('SELECT 1'), { code: '25P02' }, 'in a block the failure aborts it, as on the server');
  await c.query('ROLLBACK');
});

t.test('COMMIT failing after the approval (a deferred constraint): the client gets that error', async (t) => {
  await db.query('TRUNCATE deferred_child, deferred_parent');
  fs.writeFileSync(path.join(rulesDir, '01-deferred.yaml'), 'rules:\n  - name: deferred\n    match: {tables: [deferred_child]}\n    action: step-up\n    preview: true\n');
  t.equal(await sg.app.rules.reload(), 'reloaded');
  const c = await client(t);
  const running = c.query('INSERT INTO deferred_child VALUES (1)').catch((e: pg.DatabaseError) => e);
  const request = await broker.next();
  t.equal(request.preview?.status, 'ran', 'the preview ran (the check is deferred to COMMIT)');
  broker.approve();
  t.equal(((await running) as pg.DatabaseError).code, '23503');
  t.equal(Number((await db.query('SELECT count(*) AS n FROM deferred_child')).rows[0].n), 0);
  fs.rmSync(path.join(rulesDir, '01-deferred.yaml'));
  await sg.app.rules.reload();
});

t.test('no faithful preview: a plain hold that says why, and the statement runs on approval', async (t) => {
  await reset();
  const c = await client(t);
  const cases: [string, RegExp][] = [
    ["DELETE FROM orders WHERE id = 1; COMMIT", /controls its own transaction/],
    ["SELECT nextval('s'), * FROM orders WHERE id = 2", /nextval\(\) has effects a rollback does not undo/],
    ['TRUNCATE orders, lines', /lock out every reader/],
  ];
  await db.query('CREATE SEQUENCE IF NOT EXISTS s; GRANT ALL ON SEQUENCE s TO PUBLIC');
  for (const [sql, reason] of cases) {
    const running = c.query(sql).catch((e: Error) => e);
    const request = await broker.next();
    t.equal(request.preview?.status, 'unavailable', sql);
    t.match(request.preview?.status === 'unavailable' ? request.preview.reason : '', reason);
    broker.approve();
    t.notOk((await running) instanceof Error, `${sql} ran after the approval`);
  }
  t.equal(await count(), 0, 'TRUNCATE ran once approved');

  // Extended protocol (parameters): held without a preview.
  await reset();
  const running = c.query('DELETE FROM orders WHERE id = $1', [3]);
  const request = await broker.next();
  t.match(request.preview?.status === 'unavailable' ? request.preview.reason : '', /simple-protocol/);
  broker.approve();
  t.equal((await running).rowCount, 1);
});

t.test('a reply larger than limits.preview_max_size: rolled back, held plainly, run again on approval', async (t) => {
  await reset();
  const previous = sg.config.limits.previewMaxBytes;
  sg.config.limits.previewMaxBytes = 200;
  t.teardown(() => void (sg.config.limits.previewMaxBytes = previous));
  const c = await client(t);
  const running = c.query('DELETE FROM orders WHERE id < 40 RETURNING *');
  const request = await broker.next();
  t.match(request.preview?.status === 'unavailable' ? request.preview.reason : '', /larger than limits\.preview_max_size/);
  t.equal(await count(), 50, 'the preview was rolled back');
  broker.approve();
  t.equal((await running).rows.length, 39, 'the client gets the full reply of the real run');
  t.equal(await count(), 11);
});

t.test('the preview is in the audit trail with the statement, the approval and the outcome', async (t) => {
  await sg.app.audit.durable();
  const { openAuditDbForReading } = await import('../../src/audit/db.js');
  const adb = openAuditDbForReading(sg.dataDir);
  t.teardown(() => adb.close());
  const previews = adb.prepare("SELECT body FROM events WHERE kind = 'preview' ORDER BY seq").all() as { body: string }[];
  const bodies = previews.map((p) => JSON.parse(p.body) as Record<string, unknown>);
  t.ok(bodies.some((b) => b.status === 'ran' && (b.tags as string[])[0] === 'DELETE 7' && b.rows === 7), 'the DELETE preview');
  t.ok(bodies.some((b) => b.status === 'failed' && b.sqlstate === '23503'), 'the failed one');
  t.ok(bodies.some((b) => b.status === 'unavailable' && /simple-protocol/.test(String(b.reason))), 'a fallback');
});
