/**
 * Classification through the real catalog of a real PostgreSQL with citext, hstore, pg_trgm, dblink and
 * postgres_fdw installed: every path to user code the server takes without the text naming it is not a read
 * (and the server really runs it: the hidden advisory lock is taken, in a READ ONLY transaction); honest
 * reads of that database stay reads; the cache is invalidated when the schema changes. Then through the
 * proxy: honest reads pass, hidden ones are refused, and a replaced function body is seen at once.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { classifyWithCatalog, ServerSchemaCatalog } from '../../src/proxy/catalog/index.js';
import { parseUpstreamUrl } from '../../src/proxy/upstream.js';
import { classify, initParser, withParameterTypes } from '../../src/sql/classify.js';
import type { ClassifyContext, ClassifyResult, StatementClass, StatementFlag } from '../../src/sql/types.js';
import { startPostgres } from '../helpers/postgres.js';
import { m, RawClient } from '../helpers/raw-client.js';
import { ALICE, startStepgate } from '../helpers/stepgate.js';

await initParser();

const db = await startPostgres(t);
await db.query(`
  CREATE EXTENSION citext; CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm; CREATE EXTENSION dblink; CREATE EXTENSION postgres_fdw;
  CREATE TABLE orders (id int PRIMARY KEY, customer text, email citext, attrs hstore, total numeric);
  INSERT INTO orders VALUES (1, 'Ann', 'Ann@Example.com', 'a=>1', 10), (2, 'Bob', 'bob@example.com', 'b=>2', 20);
  CREATE INDEX ON orders USING gin (customer gin_trgm_ops);
  CREATE TABLE log (at timestamptz DEFAULT now(), what text);
  CREATE VIEW honest_view AS SELECT id, lower(customer) AS c, email FROM orders WHERE total > 0 ORDER BY email;
  CREATE FUNCTION total_orders() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT count(*) FROM public.orders';
  CREATE FUNCTION fact(n int) RETURNS bigint LANGUAGE sql AS 'SELECT CASE WHEN n <= 1 THEN 1 ELSE n * public.fact(n - 1) END';
  CREATE FUNCTION honest_pl(a int) RETURNS int LANGUAGE plpgsql AS $$ DECLARE x int; BEGIN SELECT count(*) INTO x FROM orders WHERE id = a; RETURN x + 1; END $$;
  CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM orders;
  CREATE TABLE parted (id int, k text) PARTITION BY LIST (k);
  CREATE TABLE parted_a PARTITION OF parted FOR VALUES IN ('a');

  -- Hidden paths. Every one takes advisory lock 42 (or writes), which READ ONLY does not prevent.
  CREATE FUNCTION locks() RETURNS int IMMUTABLE LANGUAGE sql AS $$ SELECT CASE WHEN pg_catalog.pg_advisory_lock(42)::text = '' THEN 1 ELSE 1 END $$;
  CREATE FUNCTION locks_pl() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_lock(42); RETURN 1; END $$;
  CREATE FUNCTION lying_stable() RETURNS int STABLE LANGUAGE sql AS $$ INSERT INTO public.log (what) VALUES ('x'); SELECT 1 $$;
  CREATE FUNCTION atomic_locks() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT public.locks(); END;
  CREATE FUNCTION dyn_pl() RETURNS int STABLE LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'SELECT 1'; RETURN 1; END $$;
  CREATE FUNCTION with_default(a int DEFAULT public.locks()) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1';
  CREATE FUNCTION "pg_catalog.now"() RETURNS int LANGUAGE sql AS 'SELECT public.locks()';
  CREATE VIEW evil_view AS SELECT public.locks() AS x;
  CREATE VIEW view_on_view AS SELECT * FROM evil_view;
  CREATE VIEW dblink_view AS SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int);
  CREATE DOMAIN checked_int AS int CHECK (public.locks() = 1 AND VALUE > 0);
  CREATE DOMAIN honest_int AS int CHECK (VALUE > 0);
  CREATE TYPE rec_with_domain AS (a int, b checked_int);
  CREATE TABLE rec_tab (a int, b checked_int);
  INSERT INTO rec_tab VALUES (1, NULL);
  CREATE FUNCTION with_domain_param(d checked_int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT 1';
  CREATE TABLE rls_t (id int, owner text);
  ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
  CREATE POLICY p ON rls_t USING (public.locks() = 1);
  CREATE FUNCTION evil_eq(int, int) RETURNS boolean LANGUAGE sql AS 'SELECT public.locks() = 1 AND $1 = $2';
  CREATE OPERATOR === (leftarg = int, rightarg = int, function = evil_eq);
  CREATE TYPE mood AS ENUM ('a');
  CREATE FUNCTION evil_cast(int) RETURNS mood LANGUAGE sql AS $$ SELECT CASE WHEN public.locks() = 1 THEN 'a'::public.mood END $$;
  CREATE CAST (int AS mood) WITH FUNCTION evil_cast(int);
  CREATE FUNCTION evil_sfunc(int, int) RETURNS int LANGUAGE sql AS 'SELECT public.locks() * 0 + coalesce($1, 0) + $2';
  CREATE AGGREGATE evil_sum(int) (sfunc = evil_sfunc, stype = int);
  CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'postgres');
  CREATE USER MAPPING FOR postgres SERVER loop OPTIONS (user 'postgres', password '${db.password}');
  CREATE FOREIGN TABLE remote_log (at timestamptz, what text) SERVER loop OPTIONS (table_name 'log');
  CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('audit', NEW.what); RETURN NEW; END $$;
  CREATE TABLE audited (what text);
  CREATE TRIGGER a BEFORE INSERT ON audited FOR EACH ROW EXECUTE FUNCTION audit();
  CREATE FUNCTION replaced() RETURNS int LANGUAGE sql AS 'SELECT 1';
  CREATE TABLE indexed (id int);
  CREATE INDEX ON indexed ((id + public.locks()));
`);

const target = parseUpstreamUrl(db.url());
const catalog = new ServerSchemaCatalog(target, 'postgres', 10_000);
t.teardown(() => catalog.close());
const ctx: ClassifyContext = { standardConformingStrings: true, catalog: catalog.lookups, preparedStatement: () => undefined };

async function classified(sql: string, context = ctx): Promise<ClassifyResult> {
  const first = classify(sql, context);
  return classifyWithCatalog(catalog, () => classify(sql, context), first, (err) => {
    throw err;
  });
}

/** Runs `sql` on the server in a READ ONLY transaction: whether it took advisory lock 42. */
async function takesLock(sql: string, params: unknown[] = []): Promise<boolean> {
  const c = await db.client();
  try {
    await c.query('BEGIN READ ONLY');
    await c.query('SAVEPOINT s');
    // Session-level advisory locks survive the rollback of a statement that failed afterwards.
    await c.query(sql, params).catch(() => c.query('ROLLBACK TO SAVEPOINT s'));
    const r = await c.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND pid = pg_backend_pid()`);
    await c.query('ROLLBACK').catch(() => undefined);
    await c.query('SELECT pg_advisory_unlock_all()');
    return r.rows[0].n > 0;
  } finally {
    await c.end();
  }
}

interface Case {
  sql: string;
  classes: StatementClass[];
  flags?: StatementFlag[];
  /** The server takes the hidden advisory lock in READ ONLY mode (checked against the server). */
  locks?: boolean;
}

const HONEST: string[] = [
  "SELECT * FROM orders WHERE email = 'ann@example.com' ORDER BY email",
  "SELECT * FROM orders WHERE email LIKE 'a%' AND email IN ('a', 'b') AND email NOT IN ('c') AND email BETWEEN 'a' AND 'z' AND email IS DISTINCT FROM 'q' AND NULLIF(email, 'x') IS NULL",
  "SELECT attrs -> 'a', attrs ? 'a', attrs @> 'a=>1'::hstore, akeys(attrs), attrs::jsonb FROM orders",
  "SELECT customer % 'Anne', similarity(customer, 'Anne'), word_similarity('An', customer) FROM orders WHERE customer % 'An' ORDER BY customer <-> 'An'",
  'SELECT DISTINCT email FROM orders GROUP BY email HAVING count(*) > 0 UNION SELECT email FROM orders',
  "SELECT regexp_replace(email, 'a', 'b'), strpos(email, 'x'), lower(email), split_part(email, '@', 2) FROM orders",
  'SELECT * FROM orders a JOIN orders b USING (id) NATURAL JOIN log',
  "SELECT CASE email WHEN 'x' THEN 1 END, max(email), min(email), 'x'::citext, 1::honest_int FROM orders",
  `SELECT jsonb_populate_record(NULL::orders, '{"id": 1}'), jsonb_populate_record(o, '{}') FROM orders o`,
  'SELECT count(*) OVER (PARTITION BY email ORDER BY total) FROM orders',
  "SELECT id FROM orders WHERE email = ANY (ARRAY['a', 'b']::citext[]) AND (id, email) = (1, 'x'::citext)",
  'SELECT * FROM honest_view, mv, parted, parted_a',
  'SELECT total_orders(), fact(5), honest_pl(1)',
  'SELECT * FROM information_schema.tables t JOIN information_schema.columns c USING (table_schema, table_name)',
  'SELECT * FROM pg_stat_activity, pg_class, pg_settings, pg_roles',
  // What psql's \\d orders runs.
  "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3",
  "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'orders'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
  'EXPLAIN SELECT * FROM honest_view',
  "INSERT INTO orders VALUES (3, 'Cy', 'cy@example.com', 'c=>3', 1)",
];

const HIDDEN: Case[] = [
  { sql: 'SELECT locks_pl()', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT lying_stable()', classes: ['procedural', 'read', 'write'] },
  { sql: 'SELECT atomic_locks()', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT dyn_pl()', classes: ['procedural', 'read'], flags: ['dynamic'] },
  { sql: 'SELECT with_default()', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT public."pg_catalog.now"()', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM evil_view', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM view_on_view', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM dblink_view', classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: 'SELECT 1::checked_int', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT ROW(1, 2)::rec_with_domain', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: `SELECT * FROM json_populate_record(NULL::rec_with_domain, '{"a": 1, "b": 2}')`, classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: `SELECT * FROM json_to_record('{"a": 1}') AS x(a checked_int)`, classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT with_domain_param(1)', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: `SELECT jsonb_populate_record(t, '{"b": 5}') FROM rec_tab t`, classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: `SELECT t #= 'b=>5'::hstore FROM rec_tab t`, classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM rls_t', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT 1 === 2', classes: ['procedural', 'read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT 1::mood', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT evil_sum(id) FROM orders', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM remote_log', classes: ['admin', 'read'], flags: ['network'] },
  { sql: "INSERT INTO audited VALUES ('x')", classes: ['write'], flags: ['notify'] },
  { sql: 'INSERT INTO indexed VALUES (1)', classes: ['write'], flags: ['advisory_lock', 'locks'] },
  { sql: 'ANALYZE indexed', classes: ['maintenance'], flags: ['advisory_lock', 'locks'] },
  { sql: 'EXPLAIN SELECT * FROM evil_view', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'EXPLAIN SELECT locks()', classes: ['read'], flags: ['advisory_lock', 'locks'], locks: true },
  { sql: 'SELECT * FROM pg_authid', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT * FROM pg_file_settings', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT nosuch()', classes: ['read', 'unknown'] },
  { sql: 'SELECT * FROM nosuch', classes: ['read', 'unknown'] },
];

t.test('honest reads of a database with citext, hstore and pg_trgm are reads', async (t) => {
  for (const sql of HONEST) {
    const r = await classified(sql);
    const s = r.statements[0]!;
    t.equal(r.unresolvedLookups, undefined, `${sql.slice(0, 60)}: every lookup answered`);
    t.notOk(s.classes.some((c) => c !== 'read' && c !== 'write'), `${sql.slice(0, 80)}: ${s.classes.join(',')} (${s.reasons.join('; ')})`);
    t.same(s.flags, [], `${sql.slice(0, 60)}: no flags`);
  }
});

t.test('every path to user code is found, and the server does run it in READ ONLY mode', async (t) => {
  for (const c of HIDDEN) {
    const r = await classified(c.sql);
    const s = r.statements[0]!;
    t.same(s.classes, c.classes, `${c.sql}: classes (${s.reasons.join('; ')})`);
    if (c.flags) t.same(s.flags, c.flags, `${c.sql}: flags`);
    if (c.locks) t.ok(await takesLock(c.sql), `${c.sql}: the server took the hidden advisory lock in READ ONLY mode`);
  }
  // Declared parameter types (PREPARE, or an extended-protocol Parse): the domain's check runs at EXECUTE/Bind.
  const prepare = await classified('PREPARE p(checked_int) AS SELECT $1');
  t.same(prepare.statements[0]!.prepare?.statement.flags, ['advisory_lock', 'locks'], 'PREPARE p(checked_int)');
  const typeOid = (await db.query(`SELECT 'checked_int'::regtype::oid::int AS oid`)).rows[0].oid as number;
  const parse = await classified('SELECT $1', withParameterTypes(ctx, [typeOid]));
  t.same(parse.statements[0]!.flags, ['advisory_lock', 'locks'], 'Parse with a checked_int parameter');
  const c = await db.client();
  try {
    await c.query('BEGIN READ ONLY');
    await c.query('PREPARE p(checked_int) AS SELECT $1');
    await c.query("EXECUTE p('5')");
    const n = (await c.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 42 AND pid = pg_backend_pid()`)).rows[0].n;
    t.equal(n, 1, 'the server runs the check at EXECUTE');
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
});

t.test('hidden code is printed schema-qualified (search_path is empty on the catalog connection)', async (t) => {
  const rels = catalog.lookups.lookup({ kind: 'relations', schema: null, name: 'honest_view' });
  t.match(rels?.[0]?.query, /FROM public\.orders/);
});

t.test('invalidate(): a replaced function body is seen at once', async (t) => {
  t.same((await classified('SELECT replaced()')).statements[0]!.flags, []);
  await db.query(`CREATE OR REPLACE FUNCTION replaced() RETURNS int LANGUAGE sql AS 'SELECT public.locks()'`);
  t.same((await classified('SELECT replaced()')).statements[0]!.flags, [], 'cached for the TTL');
  catalog.invalidate();
  t.same((await classified('SELECT replaced()')).statements[0]!.flags, ['advisory_lock', 'locks'], 'after invalidate()');
});

t.test('database-wide hazards: a SQL function in an operator class makes every query unknown', async (t) => {
  await db.query(`
    CREATE DATABASE hz;
  `);
  await db.query(
    `CREATE FUNCTION evil_cmp(int, int) RETURNS int LANGUAGE sql AS 'SELECT pg_catalog.pg_advisory_lock(42)::text::int * 0 + pg_catalog.btint4cmp($1, $2)';
     CREATE OPERATOR CLASS evil_ops FOR TYPE int USING btree AS OPERATOR 1 <, OPERATOR 3 =, FUNCTION 1 evil_cmp(int, int);
     CREATE TABLE t (a int);`,
    'hz',
  );
  const hz = new ServerSchemaCatalog(target, 'hz', 10_000);
  t.teardown(() => hz.close());
  const hctx: ClassifyContext = { standardConformingStrings: true, catalog: hz.lookups };
  const first = classify('SELECT a FROM t ORDER BY a', hctx);
  const r = await classifyWithCatalog(hz, () => classify('SELECT a FROM t ORDER BY a', hctx), first, () => {});
  t.ok(r.statements[0]!.classes.includes('unknown'));
  t.ok(r.statements[0]!.reasons.some((x) => x.includes('operator family public.evil_ops')), r.statements[0]!.reasons.join('; '));
});

t.test('through the proxy', async (t) => {
  const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
  t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
  fs.writeFileSync(
    path.join(rulesDir, '00-test.yaml'),
    `default: allow
rules:
  - name: deny-hidden
    match: {flags: [advisory_lock, network, notify, secrets, server_files, dynamic]}
    action: deny
  - name: deny-unclear
    match: {class: [unknown, procedural, admin]}
    action: deny
`,
  );
  const sg = await startStepgate(t, db, { rulesDir });
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  t.teardown(() => client.end());

  const r = await client.query(`SELECT id FROM orders WHERE email = 'ANN@example.com' AND attrs ? 'a' AND customer % 'Ann' ORDER BY email`);
  t.same(r.rows, [{ id: 1 }], 'an honest read on citext, hstore and pg_trgm runs');
  t.equal((await client.query('SELECT count(*)::int AS n FROM honest_view')).rows[0].n, 2);
  await t.rejects(client.query('SELECT * FROM evil_view'), { code: '42501', message: /deny-hidden/ });
  await t.rejects(client.query('SELECT * FROM dblink_view'), { code: '42501' });

  // A replaced body is seen by the next statement: the session invalidates the catalog after DDL.
  await db.query(`CREATE OR REPLACE FUNCTION replaced() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
  t.equal((await client.query('SELECT replaced() AS v')).rows[0].v, 1);
  await client.query(`BEGIN`);
  await client.query(`CREATE OR REPLACE FUNCTION replaced() RETURNS int LANGUAGE sql AS 'SELECT public.locks()'`);
  await client.query(`COMMIT`);
  await t.rejects(client.query('SELECT replaced()'), { code: '42501', message: /deny-hidden/ }, 'the new body, right after COMMIT');

  // An extended-protocol Parse that declares a domain-typed parameter.
  const typeOid = (await db.query(`SELECT 'checked_int'::regtype::oid::int AS oid`)).rows[0].oid as number;
  const raw = await RawClient.connect({ host: sg.host, port: sg.port });
  t.teardown(() => raw.destroy());
  await raw.login({ user: ALICE.name, password: ALICE.password });
  raw.send(Buffer.concat([m.parse('', 'SELECT $1', [typeOid]), m.bind('', '', ['5']), m.execute(), m.sync()]));
  const replies = await raw.untilReady();
  // (The session judges at Execute; the Bind before it already ran the check: see the report to the session.)
  t.match(replies.find((x) => x.type === 'E'), { code: '42501' }, `refused: binding runs the domain check (${JSON.stringify(replies)})`);
});
