/**
 * Decisions in the proxy (real server): a rejection means exactly what a server error means, the
 * connection stays usable, and an Execute is judged by the statement the server will really run — also
 * when pipelined messages fail and are skipped, names are reused, or SQL-level PREPARE is involved.
 * Rules here: deny DELETE and DROP TABLE, allow everything else.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, rulesDirWith } from '../helpers/stepgate.js';
import { m, RawClient, type Msg } from '../helpers/raw-client.js';
import type { Hold, StepUpBroker } from '../../src/stepup/types.js';

const rulesDir = rulesDirWith(
  t,
  `default: allow
rules:
  - name: no-deletes
    match: {command: DELETE}
    action: deny
    message: no deletes in this test
  - name: no-drops
    match: {command: DROP TABLE}
    action: deny
  - name: ask-for-secrets
    match: {tables: [secrets]}
    action: step-up
`,
);

/** Approves every hold at once and counts them. */
class ApproveAll implements StepUpBroker {
  holds = 0;
  hold(): Hold {
    this.holds++;
    return { challengeId: null, url: null, outcome: Promise.resolve({ status: 'approved', approvers: [{ user: 'alice', credentialId: null }], grant: false }), end() {} };
  }
  connectionClosed(): void {}
}
const broker = new ApproveAll();

const db = await startPostgres(t);
await db.query('CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE secrets (v int); INSERT INTO secrets SELECT generate_series(1, 5)');
const sg = await startStepgate(t, db, { rulesDir, stepUp: broker });

async function rows(): Promise<number[]> {
  return (await db.query('SELECT id FROM t ORDER BY id')).rows.map((r) => r.id as number);
}

async function reset(values: number[] = []): Promise<void> {
  await db.query('TRUNCATE t');
  if (values.length) await db.query(`INSERT INTO t VALUES ${values.map((v) => `(${v})`).join(', ')}`);
}

async function raw(tt: { teardown(fn: () => unknown): void }): Promise<RawClient> {
  const c = await RawClient.connect({ host: sg.host, port: sg.port });
  tt.teardown(() => c.destroy());
  await c.login({ user: ALICE.name, password: ALICE.password });
  return c;
}

const types = (msgs: Msg[]): string[] => msgs.map((x) => x.type);
const errors = (msgs: Msg[]): Msg[] => msgs.filter((x) => x.type === 'E');

t.test('deny inside BEGIN: the transaction is aborted and COMMIT rolls back', async (t) => {
  await reset();
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end());
  await c.query('BEGIN');
  await c.query('INSERT INTO t VALUES (1)');
  await t.rejects(c.query('DELETE FROM t'), { code: '42501', message: /denied by rule "no-deletes": no deletes in this test/ });
  await t.rejects(c.query('INSERT INTO t VALUES (2)'), { code: '25P02' }, 'the transaction is aborted, as after a server error');
  const commit = await c.query('COMMIT');
  t.equal(commit.command, 'ROLLBACK');
  t.same(await rows(), [], 'nothing committed');
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the connection is usable');
});

t.test('deny in the middle of a pipeline: nothing of the implicit transaction is committed', async (t) => {
  await reset([5]);
  const c = await raw(t);
  c.send(
    m.parse('', 'INSERT INTO t VALUES (1)'),
    m.bind('', ''),
    m.execute(''),
    m.parse('', 'DELETE FROM t'),
    m.bind('', ''),
    m.execute(''),
    m.parse('', 'INSERT INTO t VALUES (2)'),
    m.bind('', ''),
    m.execute(''),
    m.sync(),
  );
  const replies = await c.untilReady();
  // The DELETE is refused at its Parse (parse analysis can already run its code).
  t.same(types(replies), ['1', '2', 'C', 'E', 'Z'], 'the third statement is skipped after the error');
  t.match(errors(replies)[0], { code: '42501', message: /no-deletes/ });
  t.same(await rows(), [5], 'the first INSERT was rolled back with the implicit transaction');
  t.same(types(await c.query('SELECT 1')), ['T', 'D', 'C', 'Z']);
});

t.test('deny in a multi-statement Query: nothing of it runs', async (t) => {
  await reset([5]);
  const c = await raw(t);
  c.send(m.query('INSERT INTO t VALUES (1); DELETE FROM t WHERE id = 5; INSERT INTO t VALUES (2)'));
  const replies = await c.untilReady();
  t.same(types(replies), ['E', 'Z']);
  t.match(errors(replies)[0], { code: '42501' });
  t.same(await rows(), [5]);
  t.same(types(await c.query('INSERT INTO t VALUES (3)')), ['C', 'Z']);
  t.same(await rows(), [3, 5]);
});

t.test('a statement skipped by the server does not replace the unnamed statement stepgate judges', async (t) => {
  const c = await raw(t);
  const holds = broker.holds;
  c.send(m.parse('', 'SELECT v FROM secrets'), m.bind('', ''), m.execute(''), m.sync());
  t.same(types(await c.untilReady()).filter((x) => x !== 'D'), ['1', '2', 'C', 'Z']);
  t.equal(broker.holds, holds + 1, 'held (at its Parse) and approved');
  // Bind to a statement that does not exist fails; the server skips the Parse that follows.
  c.send(m.bind('', 'no_such_statement'), m.parse('', 'SELECT 1'), m.sync());
  t.same(types(await c.untilReady()), ['E', 'Z']);
  // The unnamed statement is still the secrets query: its Bind must be judged as one.
  c.send(m.bind('', ''), m.execute(''), m.sync());
  const replies = await c.untilReady();
  t.equal(replies.filter((x) => x.type === 'D').length, 5);
  t.equal(broker.holds, holds + 2, 'judged again as the secrets query');
});

t.test('a named statement cannot be redefined behind stepgate\'s back', async (t) => {
  const c = await raw(t);
  const holds = broker.holds;
  c.send(m.parse('s', 'SELECT v FROM secrets'), m.sync());
  t.same(types(await c.untilReady()), ['1', 'Z']);
  c.send(m.parse('s', 'SELECT 1'), m.sync());
  const dup = await c.untilReady();
  t.match(errors(dup)[0], { code: '42P05' }, 'the server refuses the duplicate and keeps the secrets query');
  c.send(m.bind('p', 's'), m.execute('p'), m.sync());
  t.equal((await c.untilReady()).filter((x) => x.type === 'D').length, 5, 'its first Bind uses the approval given at its Parse');
  c.send(m.bind('p2', 's'), m.execute('p2'), m.sync());
  t.equal((await c.untilReady()).filter((x) => x.type === 'D').length, 5);
  t.equal(broker.holds, holds + 2, 'a later Bind is judged again, as the secrets query');
});

t.test('a named portal cannot be rebound behind stepgate\'s back', async (t) => {
  const c = await raw(t);
  c.send(m.query('BEGIN'));
  await c.untilReady();
  const holds = broker.holds;
  c.send(m.parse('s', 'SELECT v FROM secrets'), m.parse('q', 'SELECT 1'), m.bind('p', 's'), m.sync());
  t.same(types(await c.untilReady()), ['1', '1', '2', 'Z']);
  t.equal(broker.holds, holds + 1, 'the Bind of the secrets query was held for step-up (and approved)');
  await c.query('SAVEPOINT a');
  c.send(m.bind('p', 'q'), m.sync());
  t.match(errors(await c.untilReady())[0], { code: '42P03' }, 'the portal exists: the server keeps the secrets portal');
  // The portal was created before the savepoint: it survives the rollback to it.
  t.same(types(await c.query('ROLLBACK TO SAVEPOINT a')), ['C', 'Z']);
  // FETCH runs the portal's statement, which must still be the secrets query for stepgate too.
  const fetched = await c.query('FETCH ALL FROM p');
  t.equal(fetched.filter((x) => x.type === 'D').length, 5);
  t.equal(broker.holds, holds + 2, 'FETCH from the portal is judged as the secrets query');
  c.send(m.query('ROLLBACK'));
  await c.untilReady();
});

t.test('SQL-level PREPARE and EXECUTE share the namespace of protocol statements', async (t) => {
  await reset([1]);
  const c = await raw(t);
  c.send(m.query('PREPARE x AS SELECT 1'));
  await c.untilReady();
  c.send(m.query('DEALLOCATE x; PREPARE x AS DELETE FROM t'));
  t.same(errors(await c.untilReady()), []);
  c.send(m.query('EXECUTE x'));
  t.match(errors(await c.untilReady())[0], { code: '42501', message: /no-deletes/ });
  // The same statement through the extended protocol.
  c.send(m.bind('', 'x'), m.execute(''), m.sync());
  t.match(errors(await c.untilReady())[0], { code: '42501' });
  // A PREPARE that did not run (its Query failed before it) defines nothing.
  c.send(m.query('SELECT 1/0; PREPARE y AS SELECT 1'));
  t.match(errors(await c.untilReady())[0], { code: '22012' });
  c.send(m.query('EXECUTE y'));
  const unknown = errors(await c.untilReady())[0];
  t.match(unknown, { code: '26000' }, 'the server does not know y either');
  t.same(await rows(), [1]);
});

t.test('rule edits take effect for new statements without a restart', async (t) => {
  await reset([1, 2]);
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end());
  t.equal((await c.query('UPDATE t SET id = id + 10 WHERE id = 1')).rowCount, 1);
  const reloaded = new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (sg.logs.some((l) => l.event === 'rules.reloaded')) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
  fs.writeFileSync(path.join(rulesDir, '10-updates.yaml'), 'rules:\n  - name: no-updates\n    match: {command: UPDATE}\n    action: deny\n');
  t.teardown(() => fs.rmSync(path.join(rulesDir, '10-updates.yaml'), { force: true }));
  await reloaded;
  await t.rejects(c.query('UPDATE t SET id = id + 10 WHERE id = 2'), { code: '42501', message: /no-updates/ });
  t.same(await rows(), [2, 11]);
});

t.test('a suspended portal continues without a new decision', async (t) => {
  const c = await raw(t);
  c.send(m.query('BEGIN'));
  await c.untilReady();
  const before = broker.holds;
  c.send(m.parse('', 'SELECT v FROM secrets ORDER BY v'), m.bind('cur', ''), m.execute('cur', 2), m.sync());
  t.same(types(await c.untilReady()), ['1', '2', 'D', 'D', 's', 'Z'], 'two rows, then PortalSuspended');
  t.equal(broker.holds, before + 1, 'the first Execute was held and approved');
  c.send(m.execute('cur', 2), m.sync(), m.execute('cur', 0), m.sync());
  t.same(types(await c.untilReady()), ['D', 'D', 's', 'Z']);
  t.same(types(await c.untilReady()), ['D', 'C', 'Z']);
  t.equal(broker.holds, before + 1, 'fetching more rows of the same portal asks nobody again');
  // A new portal of the same statement is a new execution: decided again.
  c.send(m.bind('cur2', ''), m.execute('cur2', 1), m.sync());
  await c.untilReady();
  t.equal(broker.holds, before + 2);
  c.send(m.query('COMMIT'));
  await c.untilReady();
});
