/**
 * Server-enforced reads, end to end against a real PostgreSQL: what stepgate lets through as a read runs in
 * read-only mode, so a write hidden where the classifier cannot see it fails (25006) and nothing is
 * committed; honest work, which writes where the rules allow it, is unaffected; and the client sees what a
 * direct connection shows.
 *
 * To test the server's side on its own, the classifier here misreads on purpose: a statement with the
 * comment /*misread*\/ is classified as a plain read whatever it does. The real classifier's knowledge is
 * tested elsewhere (test/sql, test/security). Rules: allow everything but `unknown` (denied), so that
 * statements stepgate cannot enforce are visible as refusals.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import pg from 'pg';
import type { ClassifyResult, StatementInfo } from '../../src/sql/types.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate } from '../helpers/stepgate.js';
import { m, RawClient, type Msg, type Target } from '../helpers/raw-client.js';
import { readEvents } from '../audit/helpers.js';

const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.writeFileSync(
  path.join(rulesDir, '00-test.yaml'),
  'default: allow\nrules:\n  - name: no-unknown\n    match: {class: unknown}\n    action: deny\n    message: unknown in this test\n',
);

/** Marks the statements it misreads as plain reads. */
function misreading(classify: (sql: string, ctx: never) => ClassifyResult) {
  return (sql: string, ctx: never): ClassifyResult => {
    const result = classify(sql, ctx);
    if (!sql.includes('/*misread*/')) return result;
    const misread = (s: StatementInfo): StatementInfo => ({ ...s, classes: ['read'], flags: [], reasons: [], commands: ['SELECT'] });
    const statements = result.statements.map((s): StatementInfo => {
      if (!s.sql.includes('/*misread*/')) return s;
      const cursor = s.cursor?.statement ? { ...s.cursor, statement: misread(s.cursor.statement) } : s.cursor;
      const classes: StatementInfo['classes'] = [...s.classes.filter((c) => c === 'session' || c === 'transaction'), 'read'];
      return { ...misread(s), classes: classes.sort(), cursor };
    });
    return { ...result, statements };
  };
}

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE pwned (what text);
  CREATE TABLE t (id int PRIMARY KEY, v int);
  CREATE FUNCTION hidden_write(what text) RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO pwned VALUES (what); RETURN 1; END$$;
  CREATE FUNCTION flip_default() RETURNS int LANGUAGE plpgsql AS $$BEGIN PERFORM set_config('default_transaction_read_only', 'off', false); RETURN 1; END$$;
  CREATE TABLE parent (id int PRIMARY KEY);
  CREATE TABLE child (pid int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
  CREATE PROCEDURE two_transactions() LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (100, 0); COMMIT; INSERT INTO t VALUES (101, 0); END$$;
`);
const sg = await startStepgate(t, db, { rulesDir, classify: misreading as never });
const directTarget: Target = { path: `${db.socketDir}/.s.PGSQL.${db.port}` };
const proxyTarget: Target = { host: sg.host, port: sg.port };

async function reset(): Promise<void> {
  await db.query('TRUNCATE pwned, t, child, parent; INSERT INTO t VALUES (1, 10), (2, 20)');
}

async function pwned(): Promise<string[]> {
  return (await db.query('SELECT what FROM pwned ORDER BY what')).rows.map((r) => r.what as string);
}

async function values(): Promise<[number, number][]> {
  return (await db.query('SELECT id, v FROM t ORDER BY id')).rows.map((r) => [r.id as number, r.v as number]);
}

async function raw(tt: Test, where: 'direct' | 'stepgate' = 'stepgate'): Promise<RawClient> {
  const c = await RawClient.connect(where === 'direct' ? directTarget : proxyTarget);
  tt.teardown(() => c.destroy());
  if (where === 'direct') await c.login({ user: db.user, password: db.password });
  else await c.login({ user: ALICE.name, password: ALICE.password });
  return c;
}

const types = (msgs: Msg[]): string[] => msgs.map((x) => x.type);
const codes = (msgs: Msg[]): string[] => msgs.filter((x) => x.type === 'E').map((x) => String(x.code));
const notices = (msgs: Msg[]): string[] => msgs.filter((x) => x.type === 'N').map((x) => String(x.message));
const HIDDEN = "SELECT hidden_write('x') /*misread*/";

t.test('a misread write fails in autocommit, simple and extended, and the client is told why', async (t) => {
  await reset();
  const c = await raw(t);
  const simple = await c.query(HIDDEN);
  t.same(codes(simple), ['25006']);
  t.match(notices(simple)[0], /let through as a read and ran in read-only mode/);
  t.same(types(simple).slice(-2), ['E', 'Z']);
  c.send(m.parse('', HIDDEN), m.bind('', ''), m.execute(''), m.sync());
  const extended = await c.untilReady();
  t.same(codes(extended), ['25006']);
  t.same(await pwned(), []);
  t.same(types(await c.query('SELECT 1')), ['T', 'D', 'C', 'Z'], 'the session goes on');
  // The audit trail tells a stopped hidden write from an ordinary error.
  await sg.app.audit.durable();
  // An outcome is inline in its statement event when it arrived before the statement's batch went to the
  // writer, else an event of its own: both count.
  const events = readEvents(sg.dataDir, "kind IN ('statement', 'outcome')");
  const outcomes = events
    .filter((e) => e.kind === 'statement' && String(e.data.sql).includes('/*misread*/'))
    .flatMap((st) => [
      ...((st.data.outcomes as Record<string, unknown>[] | undefined) ?? []),
      ...events.filter((e) => e.kind === 'outcome' && e.session === st.session && e.data.statement === st.sseq).map((e) => e.data),
    ]);
  t.ok(outcomes.length >= 2 && outcomes.every((o) => o.sqlstate === '25006' && o.read_only_refused === true), 'recorded as a refused hidden write');
});

t.test('honest writes in autocommit are unaffected', async (t) => {
  await reset();
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end());
  await c.query('UPDATE t SET v = v + 1 WHERE id = 1');
  await c.query('INSERT INTO t VALUES ($1, $2)', [3, 30]);
  t.same((await c.query('SELECT v FROM t WHERE id = 1 FOR UPDATE')).rows, [{ v: 11 }], 'SELECT ... FOR UPDATE runs read-write');
  await c.query('INSERT INTO t VALUES (4, 40); SELECT * FROM t');
  t.same(await values(), [[1, 11], [2, 20], [3, 30], [4, 40]]);
});

t.test('transaction blocks: reads run in a read-only region, writes around them commit', async (t) => {
  await reset();
  const c = await raw(t);
  for (const sql of ['BEGIN', 'UPDATE t SET v = v + 1 WHERE id = 1', 'SELECT v FROM t WHERE id = 1', 'UPDATE t SET v = v + 1 WHERE id = 2', 'END']) {
    t.same(codes(await c.query(sql)), [], sql);
  }
  t.same(await values(), [[1, 11], [2, 21]], 'the pgbench tpcb-like shape commits');
  for (const sql of ['BEGIN', 'SELECT * FROM t', 'UPDATE t SET v = 0 WHERE id = 1', 'COMMIT']) t.same(codes(await c.query(sql)), [], sql);
  t.same(await values(), [[1, 0], [2, 21]], 'a read first, then a write: the block was made read-write in time');

  t.same(codes(await c.query('BEGIN')), []);
  t.same(codes(await c.query('UPDATE t SET v = 5 WHERE id = 2')), []);
  const hidden = await c.query(HIDDEN);
  t.same(codes(hidden), ['25006'], 'a misread write after a real write in the same block still fails');
  t.same(types(await c.query('COMMIT')), ['C', 'Z']);
  t.same(await values(), [[1, 0], [2, 21]], 'and the block is rolled back, as after any error');
  t.same(await pwned(), []);
});

t.test('savepoints of the client keep their meaning', async (t) => {
  await reset();
  const c = await raw(t);
  const script = [
    'BEGIN',
    'SAVEPOINT a',
    'UPDATE t SET v = 99 WHERE id = 1',
    'ROLLBACK TO SAVEPOINT a',
    'SELECT * FROM t',
    'SAVEPOINT b',
    HIDDEN,
    'ROLLBACK TO SAVEPOINT b',
    'SELECT * FROM t',
    'RELEASE SAVEPOINT a',
    'UPDATE t SET v = 7 WHERE id = 2',
    'COMMIT',
  ];
  const got: string[][] = [];
  for (const sql of script) got.push(codes(await c.query(sql)));
  t.same(got, [[], [], [], [], [], [], ['25006'], [], [], [], [], []]);
  t.same(await values(), [[1, 10], [2, 7]]);
  t.same(await pwned(), []);
});

t.test("a read-only block the client asked for is the client's: no stepgate notice", async (t) => {
  await reset();
  const c = await raw(t);
  await c.query('BEGIN READ ONLY');
  const refused = await c.query('UPDATE t SET v = 0 WHERE id = 1');
  t.same(codes(refused), ['25006']);
  t.same(notices(refused), [], 'the server refused it as it would directly');
  await c.query('ROLLBACK');
});

t.test('deferred constraints and SET CONSTRAINTS run read-write', async (t) => {
  await reset();
  const c = await raw(t);
  for (const sql of ['BEGIN', 'INSERT INTO child VALUES (1)', 'SELECT * FROM t', 'INSERT INTO parent VALUES (1)', 'SET CONSTRAINTS ALL IMMEDIATE', 'SELECT * FROM child', 'COMMIT']) {
    t.same(codes(await c.query(sql)), [], sql);
  }
  t.equal((await db.query('SELECT count(*)::int AS n FROM child')).rows[0].n, 1);
});

t.test('cursors: FETCH runs the query read-only; WITH HOLD is materialized read-only in autocommit', async (t) => {
  await reset();
  const c = await raw(t);
  await c.query('BEGIN');
  t.same(codes(await c.query(`DECLARE c CURSOR FOR ${HIDDEN}`)), []);
  await c.query('UPDATE t SET v = 1 WHERE id = 1');
  t.same(codes(await c.query('FETCH c')), ['25006'], "the cursor's query runs at FETCH, in a region");
  await c.query('ROLLBACK');
  t.same(codes(await c.query(`DECLARE h CURSOR WITH HOLD FOR ${HIDDEN}`)), ['25006'], 'materialized at the implicit COMMIT, read-only');
  await c.query('BEGIN');
  const declared = await c.query(`DECLARE h2 CURSOR WITH HOLD FOR SELECT * FROM t /*misread*/`);
  t.same(codes(declared), ['42501'], 'inside a block a WITH HOLD cursor would be materialized read-write at COMMIT: not a read');
  await c.query('ROLLBACK');
  t.same(await pwned(), []);
});

t.test('COPY: a misread query copied out fails; COPY FROM STDIN works', async (t) => {
  await reset();
  const c = await raw(t);
  t.same(codes(await c.query(`COPY (${HIDDEN}) TO STDOUT`)), ['25006']);
  c.send(m.query('COPY t FROM STDIN'));
  await c.until((x) => x.type === 'G');
  c.send(m.copyData('5\t50\n'), m.copyDone());
  t.same(types(await c.untilReady()), ['C', 'Z']);
  c.send(m.parse('', 'COPY t FROM STDIN'), m.bind('', ''), m.execute(''), m.sync());
  await c.until((x) => x.type === 'G');
  c.send(m.copyData('6\t60\n'), m.copyDone(), m.sync());
  t.same(types(await c.untilReady()), ['C', 'Z']);
  t.same(await values(), [[1, 10], [2, 20], [5, 50], [6, 60]]);
  t.same(types(await c.query(HIDDEN)).includes('E'), true, 'read-only again afterwards');
  t.same(await pwned(), []);
});

t.test('statements with transactions of their own: CALL with COMMIT inside, VACUUM; read-only again after them', async (t) => {
  await reset();
  const c = await raw(t);
  t.same(codes(await c.query('CALL two_transactions()')), []);
  t.same(await values(), [[1, 10], [2, 20], [100, 0], [101, 0]], 'both transactions of the procedure wrote');
  t.same(codes(await c.query('VACUUM t')), []);
  c.send(m.parse('', 'VACUUM t'), m.bind('', ''), m.execute(''), m.sync());
  t.same(codes(await c.untilReady()), [], 'VACUUM through the extended protocol');
  t.same(codes(await c.query(HIDDEN)), ['25006']);
  t.same(await pwned(), []);
});

t.test("DISCARD ALL and DEALLOCATE ALL drop stepgate's statements too; they come back", async (t) => {
  await reset();
  const c = await raw(t);
  for (const reset of ['DISCARD ALL', 'DEALLOCATE ALL']) {
    t.same(codes(await c.query(reset)), [], reset);
    t.same(codes(await c.query('BEGIN')), []);
    t.same(codes(await c.query(HIDDEN)), ['25006'], `${reset}: a region in a block still works`);
    await c.query('ROLLBACK');
    t.same(codes(await c.query('UPDATE t SET v = v + 1 WHERE id = 1')), [], `${reset}: a write still works`);
    t.same(codes(await c.query(HIDDEN)), ['25006']);
  }
  t.same(await values(), [[1, 12], [2, 20]]);
  t.same(await pwned(), []);
});

t.test("the session default cannot be turned off behind stepgate's back", async (t) => {
  await reset();
  const c = await raw(t);
  // A function that a read calls turns the default off; the next transaction must still be read-only.
  t.same(codes(await c.query('SELECT flip_default() /*misread*/')), []);
  t.same(codes(await c.query(HIDDEN)), ['25006'], 'next message');
  await c.query('SELECT flip_default() /*misread*/');
  // Pipelined: the second Query is sent before the server has answered (and reported) the first.
  c.send(m.query('SELECT flip_default() /*misread*/'), m.query(HIDDEN));
  const both = [...(await c.untilReady()), ...(await c.untilReady())];
  t.same(codes(both), ['25006'], 'pipelined');
  c.send(m.parse('', 'SELECT flip_default() /*misread*/'), m.bind('', ''), m.execute(''), m.sync(), m.parse('', HIDDEN), m.bind('', ''), m.execute(''), m.sync());
  const pipelined = [...(await c.untilReady()), ...(await c.untilReady())];
  t.same(codes(pipelined), ['25006'], 'pipelined extended batches');
  const text = await c.query(`SELECT flip_default() /*misread*/; COMMIT; ${HIDDEN}`);
  t.same(codes(text), ['42501'], 'after a transaction end in the same text it cannot be enforced: refused as unknown');
  t.same(codes(await c.query('SET default_transaction_read_only = off')), []);
  t.same(codes(await c.query(HIDDEN)), ['25006'], "the client's own SET changes its view, not stepgate's");
  t.same(codes(await c.query('RESET ALL')), []);
  t.same(codes(await c.query(HIDDEN)), ['25006']);
  t.same(codes(await c.query('BEGIN READ WRITE')), []);
  t.same(codes(await c.query(HIDDEN)), ['25006'], "a block the client asked to be read-write still runs reads in a region");
  await c.query('ROLLBACK');
  t.same(codes(await c.query(`BEGIN READ WRITE; ${HIDDEN}`)), ['42501'], 'in the same text it cannot be: refused as unknown');
  await c.query('ROLLBACK');
  t.same(await pwned(), []);
});

t.test('what the client sees of default_transaction_read_only matches a direct connection', async (t) => {
  const seen: Record<string, string[]> = {};
  for (const where of ['direct', 'stepgate'] as const) {
    const c = await RawClient.connect(where === 'direct' ? directTarget : proxyTarget);
    t.teardown(() => c.destroy());
    const login = where === 'direct' ? await c.login({ user: db.user, password: db.password }) : await c.login({ user: ALICE.name, password: ALICE.password });
    const report = (msgs: Msg[]): string[] => msgs.filter((x) => x.type === 'S' && x.name === 'default_transaction_read_only').map((x) => String(x.value));
    const list = [...report(login)];
    for (const sql of ['SELECT 1', 'SET default_transaction_read_only = off', 'BEGIN', 'SHOW transaction_read_only', 'COMMIT', 'SET default_transaction_read_only = on', 'SET default_transaction_read_only = off', 'RESET ALL']) {
      list.push(`${sql}: ${report(await c.query(sql)).join(',')}`);
    }
    seen[where] = list;
  }
  t.same(seen.stepgate, seen.direct);
});

t.test("names reserved for stepgate's own statements are refused", async (t) => {
  const c = await raw(t);
  for (const sql of ['PREPARE stepgate_x AS SELECT 1', 'EXECUTE stepgate_0_rw', 'DEALLOCATE stepgate_0_rw', 'BEGIN', 'RELEASE SAVEPOINT stepgate_ro', 'ROLLBACK']) {
    const replies = await c.query(sql);
    if (sql === 'BEGIN' || sql === 'ROLLBACK') continue;
    t.same(codes(replies), ['42939'], sql);
  }
  c.send(m.parse('stepgate_0_rw', 'SELECT 1'), m.sync());
  t.same(codes(await c.untilReady()), ['42939'], 'Parse');
  c.send(m.close('S', 'stepgate_0_rw'), m.sync());
  t.same(codes(await c.untilReady()), ['42939'], 'Close');
  t.same(types(await c.query('SELECT 1')), ['T', 'D', 'C', 'Z']);
});

t.test('stepgate adds no replies: the same exchanges directly and through stepgate', async (t) => {
  const script = async (c: RawClient): Promise<Msg[]> => {
    const out: Msg[] = [];
    for (const sql of ['BEGIN', 'SELECT id FROM t ORDER BY id', 'UPDATE t SET v = v WHERE id = 1', 'SAVEPOINT s', 'SELECT 1', 'ROLLBACK TO s', 'DECLARE k CURSOR FOR SELECT id FROM t ORDER BY id', 'FETCH 1 FROM k', 'COMMIT']) {
      out.push(...(await c.query(sql)));
    }
    c.send(m.parse('', 'SELECT id FROM t WHERE id = $1'), m.bind('', '', ['1']), m.describe('P', ''), m.execute('', 1), m.execute(''), m.sync());
    out.push(...(await c.untilReady()));
    c.send(m.parse('w', 'UPDATE t SET v = v WHERE id = $1'), m.bind('', 'w', ['2']), m.execute(''), m.parse('', 'SELECT count(*) FROM t'), m.bind('', ''), m.execute(''), m.sync());
    out.push(...(await c.untilReady()));
    c.send(m.query('SELECT 1'), m.query('SELECT 2'));
    out.push(...(await c.untilReady()), ...(await c.untilReady()));
    return out;
  };
  await reset();
  const a = await script(await raw(t, 'direct'));
  await reset();
  const b = await script(await raw(t, 'stepgate'));
  t.same(b, a);
});
