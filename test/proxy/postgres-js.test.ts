/**
 * postgres.js through stepgate: it pipelines aggressively (many queries in flight on one connection),
 * prepares statements with Parse/Describe/Bind/Execute, and streams large results with cursors
 * (Execute with a row limit, PortalSuspended).
 */
import t from 'tap';
import postgres from 'postgres';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';

const db = await startPostgres(t);
const sg = await startStepgate(t, db);

function connect(tt: { teardown(fn: () => unknown): void }, options: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
  const { host, port, user, password, database } = sg.pgConfig();
  const sql = postgres({ host, port, user, password, database, max: 1, onnotice: () => {}, ...options });
  tt.teardown(() => sql.end({ timeout: 5 }));
  return sql;
}

await db.query(`CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL DEFAULT 0)`);
await db.query(`INSERT INTO accounts SELECT g, 'owner ' || g, g * 10 FROM generate_series(1, 100) g`);

t.test('many queries in parallel on one connection are pipelined and answered in order', async (t) => {
  const sql = connect(t);
  const n = 500;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      i % 50 === 25
        ? sql`SELECT ${i}::int / 0 AS boom`.then(
            () => 'no error',
            (e: postgres.PostgresError) => e.code,
          )
        : sql`SELECT ${i}::int AS i, ${'v' + i}::text AS v`.then((rows) => rows[0]),
    ),
  );
  for (let i = 0; i < n; i++) {
    if (i % 50 === 25) t.equal(results[i], '22012', `query ${i} failed on its own`);
    else if ((results[i] as postgres.Row)?.i !== i || (results[i] as postgres.Row)?.v !== `v${i}`) t.fail(`query ${i} got ${JSON.stringify(results[i])}`);
  }
  t.pass(`${n} pipelined queries answered in order`);
  const [{ count }] = await sql`SELECT count(*)::int AS count FROM accounts`;
  t.equal(count, 100);
});

t.test('pipelined queries calling functions stepgate has to look up keep their order', async (t) => {
  await db.query(`CREATE FUNCTION pjs_double(x int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT x * 2 $$`);
  await db.query(`CREATE FUNCTION pjs_label(x int) RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'n' || x $$`);
  const sql = connect(t);
  const results = await Promise.all(
    Array.from({ length: 300 }, (_, i) =>
      i % 3 === 0
        ? sql`SELECT pjs_double(${i}::int) AS v`.then((r) => r[0].v as unknown)
        : i % 3 === 1
          ? sql`SELECT pjs_label(${i}::int) AS v`.then((r) => r[0].v as unknown)
          : sql`SELECT pjs_double(${i}::int / 0) AS v`.then(
              () => 'no error',
              (e: postgres.PostgresError) => e.code,
            ),
    ),
  );
  const expected = Array.from({ length: 300 }, (_, i) => (i % 3 === 0 ? i * 2 : i % 3 === 1 ? `n${i}` : '22012'));
  t.same(results, expected, '300 pipelined queries, answered in order');
});

t.test('prepared statements (prepare: true) are parsed once and reused', async (t) => {
  const sql = connect(t, { prepare: true });
  for (let i = 1; i <= 20; i++) {
    const [row] = await sql`SELECT id, owner, balance FROM accounts WHERE id = ${i}`;
    t.equal(row.owner, `owner ${i}`);
  }
  const prepared = await sql`SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%FROM accounts WHERE id%' AND statement NOT LIKE '%pg_prepared_statements%'`;
  t.equal(prepared.length, 1, 'one server-side prepared statement for twenty executions');
  // Unprepared mode uses the unnamed statement each time.
  const unprepared = connect(t, { prepare: false });
  const rows = await Promise.all([1, 2, 3].map((i) => unprepared`SELECT owner FROM accounts WHERE id = ${i}`));
  t.same(rows.map((r) => r[0].owner), ['owner 1', 'owner 2', 'owner 3']);
  // stepgate's own prepared statements (read-only enforcement) are named stepgate_*.
  t.equal((await unprepared`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name NOT LIKE 'stepgate\\_%'`)[0].n, 0);
});

t.test('a result of 200k rows streamed with a cursor', async (t) => {
  const sql = connect(t);
  let rows = 0;
  let batches = 0;
  let sum = 0n;
  for await (const batch of sql`SELECT g AS n, md5(g::text) AS h FROM generate_series(1, 200000) g`.cursor(5000)) {
    batches++;
    rows += batch.length;
    for (const r of batch) sum += BigInt(r.n as number);
  }
  t.equal(rows, 200_000);
  t.equal(batches, 40, 'delivered in 40 portal-suspended batches');
  t.equal(sum, (200_000n * 200_001n) / 2n);

  // Breaking out of a cursor early closes the portal; the connection goes on.
  let seen = 0;
  for await (const batch of sql`SELECT g FROM generate_series(1, 100000) g`.cursor(1000)) {
    seen += batch.length;
    if (seen >= 3000) break;
  }
  t.equal(seen, 3000);
  t.equal((await sql`SELECT 1 AS ok`)[0].ok, 1);

  // The whole result at once, and row by row with forEach.
  const all = await sql`SELECT g FROM generate_series(1, 150000) g`;
  t.equal(all.length, 150_000);
  let each = 0;
  await sql`SELECT g FROM generate_series(1, 120000) g`.forEach(() => {
    each++;
  });
  t.equal(each, 120_000);
});

t.test('sql.cursor with a callback and in a transaction', async (t) => {
  const sql = connect(t);
  const seen: number[] = [];
  await sql`SELECT id FROM accounts ORDER BY id`.cursor(7, (rows) => {
    seen.push(...rows.map((r) => r.id as number));
  });
  t.same(seen, Array.from({ length: 100 }, (_, i) => i + 1));
  const inTx = await sql.begin(async (tx) => {
    const got: number[] = [];
    for await (const rows of tx`SELECT id FROM accounts WHERE id <= 30 ORDER BY id`.cursor(10)) got.push(rows.length);
    return got;
  });
  t.same(inTx, [10, 10, 10]);
});

t.test('transactions with sql.begin: commit, rollback on error, savepoints', async (t) => {
  const sql = connect(t);
  await sql.begin(async (tx) => {
    await tx`UPDATE accounts SET balance = balance - 5 WHERE id = 1`;
    await tx`UPDATE accounts SET balance = balance + 5 WHERE id = 2`;
  });
  const [a, b] = await sql`SELECT balance FROM accounts WHERE id IN (1, 2) ORDER BY id`;
  t.same([a.balance, b.balance], ['5', '25']);

  const err = await sql
    .begin(async (tx) => {
      await tx`UPDATE accounts SET balance = 0 WHERE id = 3`;
      await tx`SELECT 1/0`;
    })
    .catch((e: postgres.PostgresError) => e);
  t.match(err, { code: '22012' });
  t.equal((await sql`SELECT balance FROM accounts WHERE id = 3`)[0].balance, '30', 'rolled back');

  await sql.begin(async (tx) => {
    await tx`UPDATE accounts SET owner = 'kept' WHERE id = 4`;
    await tx
      .savepoint(async (sp) => {
        await sp`UPDATE accounts SET owner = 'discarded' WHERE id = 5`;
        throw new Error('undo the savepoint');
      })
      .catch(() => {});
    await tx`UPDATE accounts SET owner = 'also kept' WHERE id = 6`;
  });
  const owners = await sql`SELECT id, owner FROM accounts WHERE id IN (4, 5, 6) ORDER BY id`;
  t.same(owners.map((r) => r.owner), ['kept', 'owner 5', 'also kept']);

  // Pipelined statements inside one transaction (sql.begin with an array).
  const [x, y] = await sql.begin((tx) => [tx`SELECT 1 AS x`, tx`SELECT 2 AS y`]);
  t.same([x[0].x, y[0].y], [1, 2]);
});

t.test('types, arrays, json and errors survive the round trip', async (t) => {
  const sql = connect(t);
  const [row] = await sql`SELECT ${sql.json({ a: [1, 'two'] })}::jsonb AS j, ${'{1,2,3}'}::int[] AS arr, ${new Date('2024-01-02T03:04:05Z')}::timestamptz AS ts, ${Buffer.from([0, 1, 255])}::bytea AS b`;
  t.same(row.j, { a: [1, 'two'] });
  t.same(row.arr, [1, 2, 3]);
  t.equal((row.ts as Date).toISOString(), '2024-01-02T03:04:05.000Z');
  t.same(row.b, Buffer.from([0, 1, 255]));
  const err = await sql`SELECT * FROM missing_table`.catch((e: postgres.PostgresError) => e);
  t.match(err, { code: '42P01', position: '15' });
  // A dynamic multi-row insert and a returning clause.
  const inserted = await sql`INSERT INTO accounts ${sql([{ id: 1001, owner: 'x' }, { id: 1002, owner: 'y' }])} RETURNING id`;
  t.same(inserted.map((r) => r.id), [1001, 1002]);
  // Simple protocol (unsafe without parameters) with several statements.
  const multi = await sql.unsafe('SELECT 1 AS a; SELECT 2 AS b');
  t.equal(multi.length, 2);
});
