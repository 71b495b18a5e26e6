/**
 * The PostgreSQL command-line clients (libpq) through stepgate: psql, pg_dump, pg_restore and pgbench
 * must give the same output and exit codes as against the server directly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { requirePrograms, run, type RunResult } from '../helpers/run.js';
import { waitForActive } from '../helpers/wait.js';

// CI installs them (postgresql-client 15); a developer machine without them skips this file.
if (!requirePrograms(t, ['psql', 'pg_dump', 'pg_restore', 'pgbench'])) {
  t.end();
  process.exit(process.exitCode ?? 0);
}

const db = await startPostgres(t);
const sg = await startStepgate(t, db);
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-cli-'));
t.teardown(() => fs.rmSync(work, { recursive: true, force: true }));

const direct = await db.client();
t.teardown(() => direct.end());

type Where = 'direct' | 'stepgate';
const envFor = (where: Where, database = 'postgres'): NodeJS.ProcessEnv =>
  // No ~/.psqlrc, and messages in English whatever the machine's locale.
  ({ ...(where === 'direct' ? db.env(database) : sg.env(undefined, database)), PSQLRC: '/dev/null', LC_ALL: 'C', PGAPPNAME: 'cli-test' });

function psql(tt: Parameters<typeof run>[0], where: Where, args: string[], options: { input?: string; database?: string } = {}): Promise<RunResult> {
  return run(tt, 'psql', ['-X', ...args], { env: envFor(where, options.database), input: options.input, cwd: work });
}

/** Runs the same psql command directly and through stepgate; asserts identical output and exit code. */
async function psqlSame(tt: Test, args: string[], options: { input?: string; database?: string } = {}): Promise<RunResult> {
  const a = await psql(tt, 'direct', args, options);
  const b = await psql(tt, 'stepgate', args, options);
  tt.equal(b.code, a.code, `psql ${args.join(' ')}: same exit code (${a.code})`);
  tt.equal(b.stdout, a.stdout, `psql ${args.join(' ')}: same output`);
  tt.equal(b.stderr, a.stderr, `psql ${args.join(' ')}: same errors`);
  return b;
}

await direct.query(`
  CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
  CREATE TYPE point3 AS (x float8, y float8, z float8);
  CREATE DOMAIN positive AS int CHECK (VALUE > 0);
  CREATE SEQUENCE ticket_seq START 1000 INCREMENT 7;
  CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL UNIQUE, feeling mood DEFAULT 'ok', born date, pos point3);
  CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, person int REFERENCES people(id) ON DELETE CASCADE,
                       qty positive NOT NULL, ticket int DEFAULT nextval('ticket_seq'), note text, placed timestamptz DEFAULT '2024-01-01');
  CREATE INDEX orders_person ON orders (person) WHERE qty > 1;
  CREATE VIEW big_orders AS SELECT o.*, p.name FROM orders o JOIN people p ON p.id = o.person WHERE qty >= 10;
  CREATE FUNCTION order_total(p int) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(qty), 0) FROM orders WHERE person = p $$;
  CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END $$;
  CREATE TRIGGER orders_touch BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch();
  COMMENT ON TABLE people IS 'people, with "quotes" and é✓';
  INSERT INTO people (name, feeling, born, pos) SELECT 'person ' || g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, date '2000-01-01' + g, ROW(g, g / 2.0, -g)::point3
    FROM generate_series(1, 300) g;
  INSERT INTO orders (person, qty, note) SELECT 1 + g % 300, 1 + g % 20, CASE WHEN g % 5 = 0 THEN NULL ELSE E'line\\twith tab ' || g END FROM generate_series(1, 2000) g;
`);

t.test('psql -c, -f scripts and describe commands give the same output', async (t) => {
  await psqlSame(t, ['-c', 'SELECT count(*), sum(qty) FROM orders']);
  await psqlSame(t, ['-A', '-t', '-c', 'SELECT name, feeling, pos FROM people ORDER BY id LIMIT 5']);
  await psqlSame(t, ['-c', 'SELECT 1 AS a; SELECT 2 AS b']);
  await psqlSame(t, ['-c', 'SELECT * FROM no_such_table']);
  await psqlSame(t, ['-c', `DO $$ BEGIN RAISE NOTICE 'notice from DO'; END $$`]);
  for (const cmd of ['\\d people', '\\d+ orders', '\\dt', '\\dT+', '\\ds', '\\df order_total', '\\dv', '\\di', '\\dn', '\\dx', '\\l postgres', '\\sf order_total']) {
    await psqlSame(t, ['-c', cmd]);
  }

  const script = path.join(work, 'script.sql');
  fs.writeFileSync(
    script,
    [
      'CREATE TEMP TABLE tmp (a int, b text);',
      "INSERT INTO tmp VALUES (1, 'one'), (2, 'two');",
      'COPY tmp FROM stdin;',
      '3\tthree',
      '4\t\\N',
      '\\.',
      'SELECT * FROM tmp ORDER BY a;',
      'BEGIN;',
      'UPDATE tmp SET b = upper(b) WHERE a < 3;',
      'SAVEPOINT s;',
      'SELECT 1/0;',
      'ROLLBACK TO s;',
      'COMMIT;',
      'SELECT * FROM tmp ORDER BY a;',
      "\\set n 3",
      'SELECT :n * 2 AS six \\gset',
      '\\echo six is :six',
      "SELECT $$multi\nline$$ AS m;",
      '',
    ].join('\n'),
  );
  const r = await psqlSame(t, ['-f', script]);
  t.match(r.stdout, /six is 6/);
  t.match(r.stderr, /division by zero/);
});

t.test('psql ON_ERROR_STOP stops at the first error; without it the script goes on', async (t) => {
  await direct.query('CREATE TABLE IF NOT EXISTS stop_marks (mark text)');
  const script = path.join(work, 'stop.sql');
  fs.writeFileSync(script, "INSERT INTO stop_marks VALUES ('before');\nSELECT * FROM missing_relation;\nINSERT INTO stop_marks VALUES ('after');\n");
  for (const where of ['direct', 'stepgate'] as const) {
    await direct.query('TRUNCATE stop_marks');
    const stopped = await psql(t, where, ['-v', 'ON_ERROR_STOP=1', '-f', script]);
    t.equal(stopped.code, 3, `${where}: psql exits 3 on the error`);
    t.match(stopped.stderr, /psql:.*stop\.sql:2: ERROR:  relation "missing_relation" does not exist/);
    t.same((await direct.query('SELECT mark FROM stop_marks')).rows.map((r) => r.mark), ['before'], `${where}: nothing after the error ran`);

    await direct.query('TRUNCATE stop_marks');
    const goOn = await psql(t, where, ['-f', script]);
    t.equal(goOn.code, 0, `${where}: exit 0 without ON_ERROR_STOP`);
    t.same((await direct.query('SELECT mark FROM stop_marks ORDER BY mark')).rows.map((r) => r.mark), ['after', 'before']);

    // With --single-transaction the whole script is rolled back.
    await direct.query('TRUNCATE stop_marks');
    const single = await psql(t, where, ['-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', script]);
    t.equal(single.code, 3);
    t.equal((await direct.query('SELECT count(*)::int AS n FROM stop_marks')).rows[0].n, 0, `${where}: single transaction rolled back`);
  }
});

t.test('psql \\copy both ways', async (t) => {
  await direct.query('CREATE TABLE copy_back (LIKE orders)');
  const outDirect = path.join(work, 'orders-direct.csv');
  const outProxy = path.join(work, 'orders-proxy.csv');
  const select = 'SELECT id, person, qty, ticket, note, placed FROM orders ORDER BY id';
  let r = await psql(t, 'direct', ['-c', `\\copy (${select}) TO '${outDirect}' CSV HEADER`]);
  t.equal(r.code, 0, r.stderr);
  r = await psql(t, 'stepgate', ['-c', `\\copy (${select}) TO '${outProxy}' CSV HEADER`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'COPY 2000\n');
  t.ok(fs.readFileSync(outProxy).equals(fs.readFileSync(outDirect)), '\\copy TO output is identical');

  r = await psql(t, 'stepgate', ['-c', `\\copy copy_back FROM '${outProxy}' CSV HEADER`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'COPY 2000\n');
  const diff = await direct.query(`SELECT count(*)::int AS n FROM (SELECT id, person, qty, ticket, note, placed FROM orders EXCEPT SELECT id, person, qty, ticket, note, placed FROM copy_back) d`);
  t.equal(diff.rows[0].n, 0, 'every row came back');

  // \copy from stdin with bad data: the same error and nothing loaded.
  const bad = '1,1,1,1,x,2024-01-01\nnot-a-number,1,1,1,x,2024-01-01\n';
  const a = await psql(t, 'direct', ['-c', '\\copy copy_back FROM STDIN CSV'], { input: bad });
  const b = await psql(t, 'stepgate', ['-c', '\\copy copy_back FROM STDIN CSV'], { input: bad });
  t.equal(b.code, a.code);
  t.equal(b.stderr, a.stderr);
  t.match(b.stderr, /invalid input syntax for type bigint/);
});

/** pg_dump output without what legitimately differs between two runs (PostgreSQL 15.14+ random \restrict keys). */
function normalizeDump(text: string): string {
  return text
    .split('\n')
    .filter((line) => !/^\\(un)?restrict /.test(line))
    .join('\n');
}

t.test('pg_dump through stepgate equals the direct dump', async (t) => {
  const a = await run(t, 'pg_dump', ['--no-sync'], { env: envFor('direct') });
  const b = await run(t, 'pg_dump', ['--no-sync'], { env: envFor('stepgate') });
  t.equal(a.code, 0, a.stderr);
  t.equal(b.code, 0, b.stderr);
  t.equal(b.stderr, '');
  t.ok(b.stdout.includes('CREATE TYPE public.mood AS ENUM'), 'the dump has the types');
  t.ok(b.stdout.includes('COPY public.orders'), 'and the data');
  t.equal(normalizeDump(b.stdout), normalizeDump(a.stdout), 'identical plain dumps');

  // Custom format (binary, compressed): compare what it restores to.
  const fa = path.join(work, 'direct.dump');
  const fb = path.join(work, 'proxy.dump');
  t.equal((await run(t, 'pg_dump', ['-Fc', '-f', fa], { env: envFor('direct') })).code, 0);
  t.equal((await run(t, 'pg_dump', ['-Fc', '-f', fb], { env: envFor('stepgate') })).code, 0);
  const la = await run(t, 'pg_restore', ['-f', '-', fa], { env: envFor('direct') });
  const lb = await run(t, 'pg_restore', ['-f', '-', fb], { env: envFor('direct') });
  t.equal(normalizeDump(lb.stdout), normalizeDump(la.stdout), 'identical custom-format dumps');
});

t.test('pg_restore of a custom-format dump through stepgate into a fresh database', async (t) => {
  const dump = path.join(work, 'for-restore.dump');
  t.equal((await run(t, 'pg_dump', ['-Fc', '-f', dump], { env: envFor('direct') })).code, 0);
  await direct.query('CREATE DATABASE restored');
  t.teardown(() => direct.query('DROP DATABASE IF EXISTS restored WITH (FORCE)'));
  const r = await run(t, 'pg_restore', ['--exit-on-error', '-d', 'restored', dump], { env: envFor('stepgate', 'restored') });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  // Parallel restore opens several connections through stepgate.
  await direct.query('CREATE DATABASE restored_parallel');
  t.teardown(() => direct.query('DROP DATABASE IF EXISTS restored_parallel WITH (FORCE)'));
  const p = await run(t, 'pg_restore', ['--exit-on-error', '-j', '3', '-d', 'restored_parallel', dump], { env: envFor('stepgate', 'restored_parallel') });
  t.equal(p.code, 0, p.stderr);

  const original = normalizeDump((await run(t, 'pg_dump', [], { env: envFor('direct') })).stdout);
  t.equal(normalizeDump((await run(t, 'pg_dump', [], { env: envFor('direct', 'restored') })).stdout), original, 'the restored database dumps the same');
  t.equal(normalizeDump((await run(t, 'pg_dump', [], { env: envFor('direct', 'restored_parallel') })).stdout), original, 'so does the parallel restore');
});

t.test('pgbench: initialise, then select-only and tpcb-like in simple, extended and prepared modes', async (t) => {
  await direct.query('CREATE DATABASE bench');
  t.teardown(() => direct.query('DROP DATABASE IF EXISTS bench WITH (FORCE)'));
  const env = envFor('stepgate', 'bench');
  const init = await run(t, 'pgbench', ['-i', '-s', '1', '-q'], { env, timeoutMs: 60_000 });
  t.equal(init.code, 0, init.stderr);
  t.match(init.stderr, /done in/);
  const accounts = await db.query('SELECT count(*)::int AS n FROM pgbench_accounts', 'bench');
  t.equal(accounts.rows[0].n, 100_000, 'pgbench -i loaded 100k accounts (COPY through stepgate)');

  for (const mode of ['simple', 'extended', 'prepared']) {
    for (const script of [['-S'], ['-b', 'tpcb-like']]) {
      const r = await run(t, 'pgbench', [...script, '-M', mode, '-c', '4', '-j', '2', '-T', '2', '-n'], { env, timeoutMs: 30_000 });
      const label = `pgbench ${script.join(' ')} -M ${mode}`;
      t.equal(r.code, 0, `${label}: ${r.stderr}`);
      const done = /number of transactions actually processed: (\d+)/.exec(r.stdout);
      const failed = /number of failed transactions: (\d+)/.exec(r.stdout);
      t.ok(done && Number(done[1]) > 0, `${label}: ${done?.[1]} transactions`);
      t.ok(failed, `${label}: reports failed transactions`);
      t.equal(failed?.[1], '0', `${label}: 0 failed transactions`);
    }
  }
});

t.test('psql: SIGINT cancels the running query through stepgate', async (t) => {
  let child: import('node:child_process').ChildProcess | null = null;
  const started = Date.now();
  const result = run(t, 'psql', ['-X', '-c', 'select pg_sleep(30) /* psql-sigint */'], {
    env: { ...envFor('stepgate') },
    onSpawn: (c) => (child = c),
    timeoutMs: 20_000,
  });
  await waitForActive(direct, '%pg_sleep(30) /* psql-sigint */%');
  (child as unknown as import('node:child_process').ChildProcess).kill('SIGINT');
  const r = await result;
  const elapsed = Date.now() - started;
  t.equal(r.code, 1, 'psql exits 1');
  t.match(r.stderr, /ERROR:  canceling statement due to user request/);
  t.ok(elapsed < 10_000, `cancelled after ${elapsed} ms`);
  // And the server backend is idle again (not still sleeping).
  const still = await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%psql-sigint%' AND state = 'active' AND pid <> pg_backend_pid()`);
  t.equal(still.rows[0].n, 0);
});
