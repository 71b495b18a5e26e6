/**
 * False positives are bugs too: on a database with citext, hstore and pg_trgm installed in public (their
 * operators and functions live outside pg_catalog), honest reads must be allowed under reads-only rules and
 * give the same results as directly. Each case runs directly (its expected rows are checked there too) and
 * through stepgate on the same connection, which must answer every one of them.
 *
 * The materialized view mv_evil was filled by a query that calls the volatile evil(): reading it runs nothing
 * (only REFRESH would), so it is an honest read, and pwned must stay empty.
 *
 * All allowed with the right rows: the extensions' operators and functions are C functions that only read,
 * so sharing the symbols =, <, > with pg_catalog makes nothing procedural.
 */
import pg from 'pg';
import t from 'tap';
import { countPwned, report, startLab, type Lab } from './harness.js';

const lab: Lab = await startLab(t, {
  kind: 'honest reads',
  setup: `
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE EXTENSION pg_trgm;
CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, email citext NOT NULL, h hstore NOT NULL);
INSERT INTO people VALUES
  (1, 'Alice', 'Alice@Example.com', 'k=>v, team=>red'),
  (2, 'Bob', 'bob@example.com', 'k=>w, team=>blue'),
  (3, 'Carol', 'carol@example.org', 'team=>red');
CREATE TABLE orders (id int PRIMARY KEY, person_id int NOT NULL REFERENCES people, amount numeric NOT NULL);
INSERT INTO orders VALUES (10, 1, 5.50), (11, 1, 7), (12, 2, 3);
CREATE MATERIALIZED VIEW order_totals AS SELECT person_id, sum(amount) AS total FROM orders GROUP BY person_id;
CREATE MATERIALIZED VIEW mv_evil AS SELECT evil('materialized view filled') AS x;
TRUNCATE pwned;
CREATE VIEW red_team AS SELECT id, name FROM people WHERE h -> 'team' = 'red';
ANALYZE people, orders;
`,
});

/** Every value as the server's text (no client-side type parsing). */
const types = { getTypeParser: () => (value: string) => value } as unknown as pg.CustomTypesConfig;
const direct = new pg.Client({ host: lab.db.socketDir, port: lab.db.port, user: lab.db.user, password: lab.db.password, database: 'postgres', types });
await direct.connect();
t.teardown(() => direct.end());
const through = new pg.Client({ ...lab.sg.pgConfig(), types });
through.on('error', () => {});
await through.connect();
t.teardown(() => through.end().catch(() => {}));

type Query = string | { text: string; values: unknown[]; name?: string };
interface Case {
  name: string;
  /** Run one after the other on the same connection; the rows of the last one are compared. */
  queries: Query[];
  /** Expected rows of the last query; null: any non-empty result. */
  rows: string[][] | null;
  todo?: string;
}


async function rowsOf(c: pg.Client, queries: Query[]): Promise<string[][]> {
  let last: pg.QueryResult | undefined;
  for (const q of queries) last = await c.query(typeof q === 'string' ? { text: q, rowMode: 'array' } : { ...q, rowMode: 'array' });
  return (last?.rows ?? []) as string[][];
}

function honest(c: Case): void {
  t.test(c.name, async (t) => {
    const got = await rowsOf(direct, c.queries);
    if (c.rows) t.same(got, c.rows, 'directly: the expected rows');
    else t.ok(got.length > 0, 'directly: an answer');
    const extra = c.todo ? { todo: c.todo } : {};
    let label: string;
    try {
      const rows = await rowsOf(through, c.queries);
      label = 'allowed, same rows';
      if (c.rows) t.same(rows, c.rows, 'through stepgate: allowed, with the same rows', extra);
      else t.ok(rows.length > 0, 'through stepgate: allowed, with an answer', extra);
    } catch (err) {
      const e = err as { code?: string; message?: string };
      label = `refused: ${e.code ?? ''} ${e.message ?? String(err)}`;
      t.fail(`through stepgate: allowed (got ${label})`, extra);
      await through.query('ROLLBACK').catch(() => {});
    }
    if (c.todo && label.startsWith('allowed')) t.comment(`"${c.name}" is allowed now: remove its todo flag`);
    report({ file: 'honest reads', attack: c.name, direct: true, readOnlyAlone: 'n/a', stepgate: label, todo: c.todo ?? null });
  });
}

const cases: Case[] = [
  { name: 'WHERE id = 1', queries: ['SELECT id, name FROM people WHERE id = 1'], rows: [['1', 'Alice']] },
  { name: "WHERE email = 'x'::citext", queries: [`SELECT name FROM people WHERE email = 'ALICE@example.COM'::citext`], rows: [['Alice']] },
  { name: 'WHERE citext_column = untyped literal', queries: [`SELECT name FROM people WHERE email = 'bob@EXAMPLE.com'`], rows: [['Bob']] },
  { name: "WHERE h -> 'k' = 'v' (hstore)", queries: [`SELECT name FROM people WHERE h -> 'k' = 'v'`], rows: [['Alice']] },
  { name: "WHERE h ? 'k' (hstore)", queries: [`SELECT name FROM people WHERE h ? 'k' ORDER BY id`], rows: [['Alice'], ['Bob']] },
  { name: 'WHERE h @> hstore', queries: [`SELECT name FROM people WHERE h @> 'team=>red' ORDER BY id`], rows: [['Alice'], ['Carol']] },
  { name: 'ORDER BY name', queries: ['SELECT name FROM people ORDER BY name'], rows: [['Alice'], ['Bob'], ['Carol']] },
  { name: 'ORDER BY a citext column', queries: ['SELECT email FROM people ORDER BY email'], rows: [['Alice@Example.com'], ['bob@example.com'], ['carol@example.org']] },
  { name: 'GROUP BY', queries: [`SELECT h -> 'team', count(*) FROM people GROUP BY 1 ORDER BY 1`], rows: [['blue', '1'], ['red', '2']] },
  { name: 'DISTINCT', queries: [`SELECT DISTINCT h -> 'team' FROM people ORDER BY 1`], rows: [['blue'], ['red']] },
  { name: 'DISTINCT on a citext column', queries: ['SELECT count(DISTINCT email) FROM people'], rows: [['3']] },
  { name: 'LIKE', queries: [`SELECT name FROM people WHERE name LIKE 'A%'`], rows: [['Alice']] },
  { name: 'ILIKE on citext', queries: [`SELECT name FROM people WHERE email ILIKE '%EXAMPLE.COM' ORDER BY id`], rows: [['Alice'], ['Bob']] },
  { name: "similarity(name, 'x') > 0.3 (pg_trgm)", queries: [`SELECT name FROM people WHERE similarity(name, 'Alic') > 0.3`], rows: [['Alice']] },
  { name: "name % 'x' (pg_trgm operator)", queries: [`SELECT name FROM people WHERE name % 'Alic'`], rows: [['Alice']] },
  { name: 'join', queries: ['SELECT p.name, o.amount FROM people p JOIN orders o ON o.person_id = p.id ORDER BY o.id'], rows: [['Alice', '5.50'], ['Alice', '7'], ['Bob', '3']] },
  { name: 'IN (list)', queries: ['SELECT name FROM people WHERE id IN (1, 3) ORDER BY id'], rows: [['Alice'], ['Carol']] },
  { name: 'IN on citext', queries: [`SELECT name FROM people WHERE email IN ('alice@example.com', 'BOB@example.com') ORDER BY id`], rows: [['Alice'], ['Bob']] },
  { name: 'BETWEEN', queries: ['SELECT name FROM people WHERE id BETWEEN 2 AND 3 ORDER BY id'], rows: [['Bob'], ['Carol']] },
  { name: 'EXISTS (correlated subquery)', queries: ['SELECT id FROM people p WHERE EXISTS (SELECT 1 FROM orders o WHERE o.person_id = p.id) ORDER BY id'], rows: [['1'], ['2']] },
  { name: 'count(*)', queries: ['SELECT count(*) FROM people'], rows: [['3']] },
  { name: 'now()', queries: ['SELECT now() IS NOT NULL'], rows: [['t']] },
  { name: 'built-in functions on text and citext', queries: ['SELECT upper(name), length(name), lower(email::text) FROM people WHERE id = 2'], rows: [['BOB', '3', 'bob@example.com']] },
  { name: 'an hstore function', queries: ['SELECT akeys(h) FROM people WHERE id = 3'], rows: [['{team}']] },
  { name: 'reading a materialized view', queries: ['SELECT person_id, total FROM order_totals ORDER BY person_id'], rows: [['1', '12.50'], ['2', '3']] },
  { name: 'a plain view over a table', queries: ['SELECT id, name FROM red_team ORDER BY id'], rows: [['1', 'Alice'], ['3', 'Carol']] },
  { name: 'EXPLAIN SELECT', queries: ['EXPLAIN SELECT * FROM people WHERE id = 1'], rows: null },
  {
    name: 'DECLARE and FETCH of a plain query',
    queries: ['BEGIN', 'DECLARE c CURSOR FOR SELECT name FROM people ORDER BY id', 'FETCH 2 FROM c', 'COMMIT'],
    rows: [],
  },
  { name: 'FETCH inside the transaction', queries: ['BEGIN', 'DECLARE c CURSOR FOR SELECT name FROM people ORDER BY id', 'FETCH 2 FROM c'], rows: [['Alice'], ['Bob']] },
  { name: 'BEGIN; SELECT; COMMIT', queries: ['BEGIN', 'SELECT count(*) FROM orders', 'COMMIT'], rows: [] },
  { name: 'SELECT inside BEGIN', queries: ['BEGIN', 'SELECT count(*) FROM orders'], rows: [['3']] },
  { name: 'unnamed prepared statement with a parameter', queries: [{ text: 'SELECT name FROM people WHERE id = $1', values: [2] }], rows: [['Bob']] },
  { name: 'named prepared statement with a citext parameter', queries: [{ name: 'by_email', text: 'SELECT name FROM people WHERE email = $1', values: ['CAROL@example.org'] }], rows: [['Carol']] },
];

for (const c of cases) {
  honest(c);
  // Cases that end inside a transaction: end it on both connections.
  if (!c.queries.includes('COMMIT') && c.queries.includes('BEGIN')) {
    t.test(`(end the transaction of "${c.name}")`, async () => {
      await direct.query('ROLLBACK');
      await through.query('ROLLBACK').catch(() => {});
    });
  }
}

t.test('reading a materialized view whose query calls a volatile function runs nothing', async (t) => {
  t.same(await rowsOf(direct, ['SELECT x FROM mv_evil']), [['1']], 'directly: the stored row');
  t.equal(await countPwned(lab), 0, 'directly: nothing ran');
  let label: string;
  try {
    t.same(await rowsOf(through, ['SELECT x FROM mv_evil']), [['1']], 'through stepgate: allowed, the stored row');
    label = 'allowed, same rows';
  } catch (err) {
    label = `refused: ${String(err)}`;
    t.fail(`through stepgate: allowed (got ${label})`);
  }
  t.equal(await countPwned(lab), 0, 'through stepgate: nothing ran');
  report({ file: 'honest reads', attack: 'reading a materialized view whose query calls a volatile function', direct: true, readOnlyAlone: 'n/a', stepgate: label, todo: null });
});
