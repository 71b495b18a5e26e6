/**
 * Rules on the rows a statement really affects (`rows`, `max_rows`), real server: the statement is previewed
 * (run uncommitted) to count them and decided again with the count. A small change runs with nobody asked,
 * a large one is held with its count on the request, one over `max_rows` is rolled back and denied. Where no
 * preview is possible the planner's estimate stands in (marked as one); where neither is, the rows are
 * unknown and only rules that ask or deny match.
 */
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, rulesDirWith } from '../helpers/stepgate.js';
import type { Hold, HoldOutcome, HoldRequest, StepUpBroker } from '../../src/stepup/types.js';

const rulesDir = rulesDirWith(
  t,
  `default: allow
rules:
  - name: big-updates
    match: {command: [UPDATE], tables: [orders], rows: ">10"}
    action: step-up
  - name: mass-delete
    match: {command: [DELETE], tables: [orders]}
    action: step-up
    max_rows: 20
`,
);

/** Approves every hold at once, and remembers the requests. */
class ApprovingBroker implements StepUpBroker {
  requests: HoldRequest[] = [];
  hold(request: HoldRequest): Hold {
    this.requests.push(request);
    const outcome: Promise<HoldOutcome> = Promise.resolve({ status: 'approved', approvers: [{ user: 'bob', credentialId: null }], grant: false });
    return { challengeId: `c${this.requests.length}`, url: 'http://localhost/c', outcome, end: () => {} };
  }
  connectionClosed(): void {}
}

const broker = new ApprovingBroker();
const db = await startPostgres(t);
await db.query(`
  CREATE TABLE orders (id int PRIMARY KEY, status text);
  CREATE SEQUENCE s;
  GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC;
  GRANT ALL ON SEQUENCE s TO PUBLIC;
`);
const sg = await startStepgate(t, db, { rulesDir, stepUp: broker });

async function reset(): Promise<void> {
  await db.query("TRUNCATE orders; INSERT INTO orders SELECT g, 'open' FROM generate_series(1, 50) g; ANALYZE orders");
  broker.requests = [];
}
const count = async (where: string): Promise<number> => Number((await db.query(`SELECT count(*) AS n FROM orders WHERE ${where}`)).rows[0].n);

async function client(tt: { teardown(fn: () => unknown): void }): Promise<pg.Client> {
  const c = new pg.Client(sg.pgConfig(ALICE));
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  return c;
}

t.test('rows: a small UPDATE runs with nobody asked, a large one is held with its real count', async (t) => {
  await reset();
  const c = await client(t);
  const small = await c.query("UPDATE orders SET status = 'small' WHERE id <= 5");
  t.equal(small.rowCount, 5, 'the client gets the reply the preview produced');
  t.equal(broker.requests.length, 0, 'nobody was asked: 5 rows is not more than 10');
  t.equal(await count("status = 'small'"), 5, 'committed');

  const large = await c.query("UPDATE orders SET status = 'large' WHERE id > 20");
  t.equal(large.rowCount, 30);
  t.equal(broker.requests.length, 1, 'held: 30 rows');
  const request = broker.requests[0]!;
  t.equal(request.decision.rule, 'big-updates');
  t.same(request.decision.rows, { count: 30, estimate: false });
  t.match(request.preview, { status: 'ran', tags: ['UPDATE 30'], rows: 30 });
  t.equal(await count("status = 'large'"), 30, 'committed after the approval');
});

t.test('rows inside a transaction: counted under a savepoint, the transaction goes on', async (t) => {
  await reset();
  const c = await client(t);
  await c.query('BEGIN');
  t.equal((await c.query("UPDATE orders SET status = 'in-tx' WHERE id <= 3")).rowCount, 3);
  t.equal(broker.requests.length, 0);
  t.equal((await c.query("SELECT count(*)::int AS n FROM orders WHERE status = 'in-tx'")).rows[0].n, 3, 'the transaction sees its change');
  await c.query('ROLLBACK');
  t.equal(await count("status = 'in-tx'"), 0, 'rolled back with the transaction');
});

t.test('max_rows: a DELETE of more rows is rolled back and denied without asking; a smaller one is held', async (t) => {
  await reset();
  const c = await client(t);
  await t.rejects(c.query('DELETE FROM orders WHERE id > 25'), { code: '42501', message: /affects 25 rows, more than max_rows 20/ });
  t.equal(broker.requests.length, 0, 'nobody was asked');
  t.equal(await count('true'), 50, 'nothing deleted');
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the connection goes on');

  t.equal((await c.query('DELETE FROM orders WHERE id > 45')).rowCount, 5);
  t.equal(broker.requests.length, 1, '5 rows: held (the rule asks), with the count');
  t.match(broker.requests[0]!.preview, { status: 'ran', rows: 5 });
  t.equal(await count('true'), 45);
});

t.test("no preview possible: the planner's estimate stands in; without one the rule asks", async (t) => {
  await reset();
  const c = await client(t);
  // nextval() is not undone by a rollback: no preview. EXPLAIN estimates one row for the primary key.
  t.equal((await c.query("UPDATE orders SET status = 'seq' || nextval('s') WHERE id = 3")).rowCount, 1);
  t.equal(broker.requests.length, 0, 'estimated 1 row: not more than 10');
  t.equal(Number((await db.query("SELECT last_value FROM s")).rows[0].last_value), 1, 'the estimate did not call nextval(); the statement did, once');

  await c.query("UPDATE orders SET status = 'seq' || nextval('s') WHERE id > 20");
  t.equal(broker.requests.length, 1, 'estimated more than 10 rows: held');
  const request = broker.requests[0]!;
  t.match(request.preview, { status: 'unavailable', reason: /nextval/ });
  t.ok(request.decision.rows?.estimate, 'the count is marked as an estimate');
  t.ok((request.decision.rows?.count ?? 0) > 10);

  // Extended protocol: no preview and no estimate: unknown rows match the step-up rule.
  broker.requests = [];
  await c.query("UPDATE orders SET status = $1 WHERE id = 1", ['param']);
  t.equal(broker.requests.length, 1, 'unknown rows: the rule asks');
  t.equal(broker.requests[0]!.decision.rows, null);
});

t.test('the count and the decision made with it are in the audit trail', async (t) => {
  await sg.app.audit.durable();
  const { openAuditDbForReading } = await import('../../src/audit/db.js');
  const adb = openAuditDbForReading(sg.dataDir);
  t.teardown(() => adb.close());
  const bodies = (adb.prepare("SELECT body FROM events WHERE kind = 'preview' ORDER BY seq").all() as { body: string }[]).map(
    (p) => JSON.parse(p.body) as { status: string; rows?: number; decision?: { action: string; rule: string | null; rows: number | null; estimate?: boolean } },
  );
  t.ok(bodies.some((b) => b.rows === 5 && b.decision?.action === 'allow' && b.decision.rule === null), 'a small UPDATE: allowed by the default once counted');
  t.ok(bodies.some((b) => b.rows === 30 && b.decision?.action === 'step-up' && b.decision.rule === 'big-updates'), 'a large one: held');
  t.ok(bodies.some((b) => b.rows === 25 && b.decision?.action === 'step-up' && b.decision.rule === 'mass-delete'), 'over max_rows: recorded before the denial');
  t.ok(bodies.some((b) => b.status === 'unavailable' && b.decision?.estimate === true), 'an estimate');
});
