/**
 * Attacks: user code that a plain read runs without naming it. Views, aggregates, casts, domains, row-level
 * security, functions that lie about their volatility (PostgreSQL never checks a declared volatility),
 * constant folding at plan time, parameter defaults — and the side effects that PostgreSQL's read-only mode
 * does not stop (COPY TO PROGRAM, dblink, postgres_fdw, pg_terminate_backend, NOTIFY), which only the
 * classifier can.
 *
 * Also here: a role change hidden in a view or a STABLE function (set_config of role or session_authorization),
 * which read-only mode allows too.
 *
 * Not here: triggers and rules (DO ALSO) run only on writes; type input/output functions, TABLESAMPLE
 * methods, text search parsers and collations need C code (a type's I/O functions cannot be SQL or PL/pgSQL:
 * they take cstring); COLLATE names a collation, which runs no user code.
 *
 * Stopped: every attack. The classifier reads views, function bodies (SQL and PL/pgSQL), aggregates' support
 * functions, casts and domains from the server's catalog (42501); what it lets through as a read runs in
 * read-only mode, so a write it could not see fails (25006). The side effects read-only mode allows (COPY TO
 * PROGRAM, dblink, postgres_fdw, pg_terminate_backend, NOTIFY, set_config of role) are the classifier's.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { attack, lookup, m, sqlAttack, startLab, type Lab } from './harness.js';


const lab: Lab = await startLab(t, {
  kind: 'functions',
  setup: (db) => `
CREATE VIEW v_evil2 AS SELECT * FROM v_evil;

-- Aggregates: CREATE AGGREGATE makes the aggregate IMMUTABLE in pg_proc, whatever its functions are.
CREATE FUNCTION evil_sfunc(state int, x int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('aggregate state function'); RETURN state + x; END $$;
CREATE AGGREGATE agg_sfunc(int) (SFUNC = evil_sfunc, STYPE = int, INITCOND = '0');
CREATE FUNCTION evil_final(state int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('aggregate final function'); RETURN state; END $$;
CREATE AGGREGATE agg_final(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0', FINALFUNC = evil_final);
CREATE FUNCTION evil_msfunc(state int, x int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('moving-aggregate function'); RETURN state + x; END $$;
CREATE FUNCTION evil_minvfunc(state int, x int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('moving-aggregate inverse function'); RETURN state - x; END $$;
CREATE AGGREGATE agg_moving(int) (SFUNC = int4pl, STYPE = int, INITCOND = '0',
  MSFUNC = evil_msfunc, MINVFUNC = evil_minvfunc, MSTYPE = int, MINITCOND = '0');

-- Functions that lie about their volatility (PostgreSQL does not check it). A non-volatile PL/pgSQL or SQL
-- function may not run INSERT itself (SPI read-only: 0A000), but it may call a volatile function, whose own
-- SPI is read-write.
CREATE FUNCTION stable_sql() RETURNS int LANGUAGE sql STABLE AS $$ SELECT evil('STABLE sql function') $$;
CREATE FUNCTION immutable_sql() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT evil('IMMUTABLE sql function') $$;
CREATE FUNCTION stable_plpgsql() RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM evil('STABLE plpgsql function'); RETURN 1; END $$;
CREATE FUNCTION stable_dynamic() RETURNS int LANGUAGE plpgsql STABLE AS $$
DECLARE r int; BEGIN EXECUTE 'SELECT evil(''STABLE plpgsql, dynamic SQL'')' INTO r; RETURN r; END $$;
CREATE FUNCTION folded(x int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM evil('IMMUTABLE, folded by the planner'); RETURN x; END $$;
CREATE FUNCTION srf_stable() RETURNS SETOF int LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM evil('STABLE set-returning function'); RETURN NEXT 1; END $$;
CREATE FUNCTION with_default(a int DEFAULT evil('parameter default')) RETURNS int LANGUAGE sql STABLE AS $$ SELECT $1 $$;

-- Casts WITH FUNCTION: explicit, implicit and assignment.
CREATE TYPE c_explicit AS (x int);
CREATE FUNCTION to_c_explicit(int) RETURNS c_explicit LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('explicit cast'); RETURN ROW($1)::c_explicit; END $$;
CREATE CAST (int AS c_explicit) WITH FUNCTION to_c_explicit(int);
CREATE TYPE c_implicit AS (x int);
CREATE FUNCTION to_c_implicit(int) RETURNS c_implicit LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('implicit cast'); RETURN ROW($1)::c_implicit; END $$;
CREATE CAST (int AS c_implicit) WITH FUNCTION to_c_implicit(int) AS IMPLICIT;
CREATE FUNCTION takes_c_implicit(c_implicit) RETURNS int LANGUAGE sql STABLE AS $$ SELECT ($1).x $$;
CREATE TYPE c_assign AS (x int);
CREATE FUNCTION to_c_assign(int) RETURNS c_assign LANGUAGE plpgsql VOLATILE AS $$
BEGIN PERFORM evil('assignment cast'); RETURN ROW($1)::c_assign; END $$;
CREATE CAST (int AS c_assign) WITH FUNCTION to_c_assign(int) AS ASSIGNMENT;
-- A SQL function's result is coerced to its declared type in assignment context.
CREATE FUNCTION returns_c_assign() RETURNS c_assign LANGUAGE sql STABLE AS $$ SELECT 1 $$;

-- A domain whose CHECK writes.
CREATE DOMAIN d_evil AS int CHECK (evil_bool('domain check'));
CREATE TYPE r_dom AS (a d_evil);

-- Row-level security: a view owned by a role without BYPASSRLS applies the table's policies, also when a
-- superuser reads the view.
CREATE TABLE rls_t (id int);
INSERT INTO rls_t VALUES (1), (2);
ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY rls_p ON rls_t USING (evil_bool('row-level security policy'));
CREATE ROLE rls_viewer NOLOGIN;
GRANT SELECT ON rls_t TO rls_viewer;
CREATE VIEW rls_v AS SELECT id FROM rls_t;
ALTER VIEW rls_v OWNER TO rls_viewer;

-- Other things a hidden function changes (read-only mode stops these).
CREATE SEQUENCE s_evil;
CREATE VIEW v_seq AS SELECT nextval('s_evil') AS n;
CREATE TABLE victim_table (id int);
CREATE FUNCTION drop_victim() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN EXECUTE 'DROP TABLE IF EXISTS public.victim_table'; RETURN 1; END $$;
CREATE VIEW v_drop AS SELECT drop_victim() AS x;
CREATE FUNCTION persist_setting() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN EXECUTE 'ALTER ROLE postgres SET work_mem = ''13MB'''; RETURN 1; END $$;
CREATE VIEW v_persist AS SELECT persist_setting() AS x;

-- Side effects that read-only mode does not stop.
CREATE FUNCTION copy_out() RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'cat >> ${db.socketDir}/pwned.txt'); RETURN 1; END $$;
CREATE VIEW v_copy AS SELECT copy_out() AS x;
CREATE EXTENSION dblink;
CREATE FUNCTION dblink_write() RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM dblink_exec('host=${db.socketDir} port=${db.port} user=postgres password=${db.password} dbname=postgres',
  'INSERT INTO public.pwned(what) VALUES (''dblink_exec'')'); RETURN 1; END $$;
CREATE VIEW v_dblink AS SELECT dblink_write() AS x;
CREATE EXTENSION postgres_fdw;
CREATE SERVER self FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '${db.socketDir}', port '${db.port}', dbname 'postgres');
CREATE USER MAPPING FOR postgres SERVER self OPTIONS (user 'postgres', password '${db.password}');
CREATE FOREIGN TABLE ft_evil (x int) SERVER self OPTIONS (schema_name 'public', table_name 'v_evil');
CREATE FUNCTION kill_victims() RETURNS int LANGUAGE sql STABLE AS $$
SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity WHERE application_name = 'stepgate-victim' $$;
CREATE VIEW v_kill AS SELECT kill_victims() AS n;
CREATE ROLE attacker_role NOLOGIN;
CREATE FUNCTION become_role() RETURNS text LANGUAGE sql STABLE AS $$ SELECT set_config('role', 'attacker_role', false) $$;
CREATE VIEW v_become_role AS SELECT become_role() AS r;
CREATE FUNCTION become_session_user() RETURNS text LANGUAGE sql STABLE AS $$ SELECT set_config('session_authorization', 'attacker_role', false) $$;
CREATE FUNCTION notify_out() RETURNS int LANGUAGE sql STABLE AS $$ SELECT 1 FROM pg_notify('pwned_channel', 'from a view') $$;
CREATE VIEW v_notify AS SELECT notify_out() AS x;
`,
});
const domainOid = Number(await lookup(lab, 'd_evil', `SELECT 'd_evil'::regtype::oid`));

// ───────────────────────────── sanity ─────────────────────────────

sqlAttack(lab, 'sanity: calling the volatile function by name', `SELECT evil('called by name')`);

// ───────────────────────────── views ─────────────────────────────

sqlAttack(lab, 'view whose query calls a volatile function', 'SELECT * FROM v_evil');
sqlAttack(lab, 'view on a view', 'SELECT * FROM v_evil2');
sqlAttack(lab, 'view in a subquery whose column is not used (volatile outputs are kept)', 'SELECT count(*) FROM (SELECT * FROM v_evil) s');
sqlAttack(lab, 'view in a CTE', 'WITH w AS (SELECT * FROM v_evil) SELECT * FROM w');
sqlAttack(lab, 'view in LATERAL', 'SELECT g, s.x FROM generate_series(1, 2) g, LATERAL (SELECT x + g AS x FROM v_evil) s');
sqlAttack(lab, 'view through DECLARE CURSOR and FETCH', 'BEGIN; DECLARE c CURSOR FOR SELECT * FROM v_evil; FETCH ALL c; COMMIT');
attack(lab, {
  name: 'view through DECLARE CURSOR and FETCH, as separate messages',
  run: (c) => c.queries('BEGIN', 'DECLARE c CURSOR FOR SELECT * FROM v_evil', 'FETCH 1 FROM c', 'COMMIT'),
});
sqlAttack(lab, 'row-level security policy reached through a view owned by a role without BYPASSRLS', 'SELECT * FROM rls_v', {
});

// ───────────────────────────── aggregates ─────────────────────────────

sqlAttack(lab, 'aggregate whose state function is volatile', 'SELECT agg_sfunc(x) FROM generate_series(1, 3) x');
sqlAttack(lab, 'aggregate whose final function is volatile', 'SELECT agg_final(x) FROM generate_series(1, 3) x');
sqlAttack(lab, 'aggregate used as a window function', 'SELECT agg_sfunc(x) OVER () FROM generate_series(1, 3) x');
sqlAttack(
  lab,
  'moving-aggregate functions (a window frame that moves)',
  'SELECT agg_moving(x) OVER (ORDER BY x ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM generate_series(1, 4) x',
  {},
);

// ───────────────────────────── functions that lie ─────────────────────────────

sqlAttack(lab, 'STABLE sql function calling a volatile one', 'SELECT stable_sql()');
sqlAttack(lab, 'IMMUTABLE sql function calling a volatile one', 'SELECT immutable_sql()');
sqlAttack(lab, 'STABLE plpgsql function calling a volatile one (PERFORM)', 'SELECT stable_plpgsql()');
sqlAttack(lab, 'STABLE plpgsql function with dynamic SQL (EXECUTE of a SELECT that calls a volatile function)', 'SELECT stable_dynamic()', {
  note: 'a non-volatile PL/pgSQL function cannot INSERT itself, not even through EXECUTE (SPI read-only, 0A000); it calls a volatile function instead',
});
sqlAttack(lab, 'IMMUTABLE function folded by the planner (the write happens while planning)', 'SELECT folded(1)');
sqlAttack(lab, 'plain EXPLAIN of an IMMUTABLE call: planning alone runs it', 'EXPLAIN SELECT folded(1)');
sqlAttack(lab, 'set-returning STABLE function in FROM', 'SELECT * FROM srf_stable()');
sqlAttack(lab, 'parameter default that calls a volatile function', 'SELECT with_default()');

// ───────────────────────────── casts ─────────────────────────────

sqlAttack(lab, 'explicit cast WITH FUNCTION (::)', 'SELECT (1::c_explicit).x');
sqlAttack(lab, 'explicit cast WITH FUNCTION (CAST ... AS)', 'SELECT CAST(2 AS c_explicit)');
sqlAttack(lab, 'implicit cast WITH FUNCTION (argument of a STABLE function)', 'SELECT takes_c_implicit(7)');
sqlAttack(lab, 'assignment cast WITH FUNCTION (a SQL function result coerced to its declared type)', 'SELECT returns_c_assign()');

// ───────────────────────────── domains ─────────────────────────────

sqlAttack(lab, 'domain CHECK reached by an explicit cast', 'SELECT 1::d_evil');
sqlAttack(lab, 'domain CHECK reached by array input of a literal (runs during parse analysis)', `SELECT '{1,2}'::d_evil[]`);
sqlAttack(lab, 'domain CHECK run by PREPARE alone (parse analysis of a literal)', `PREPARE pa AS SELECT '{1,2}'::d_evil[]`, {
});
sqlAttack(lab, 'domain CHECK run by plain EXPLAIN (parse analysis of a literal)', `EXPLAIN SELECT '{3}'::d_evil[]`);
sqlAttack(lab, 'domain CHECK reached by the coercion of an EXECUTE parameter', 'PREPARE p_dom(d_evil) AS SELECT $1::int AS v; EXECUTE p_dom(1)', {
});
attack(lab, {
  name: 'domain CHECK reached by a Bind parameter (Parse with the domain type OID)',
  run: (c) => c.send(m.parse('', 'SELECT $1::int AS v', [domainOid]), m.bind('', '', ['1']), m.execute(''), m.sync()),
});
sqlAttack(lab, 'domain CHECK reached by json_populate_record', `SELECT * FROM json_populate_record(null::r_dom, '{"a": 1}')`);
sqlAttack(lab, 'domain CHECK reached by a column definition list (json_to_record)', `SELECT * FROM json_to_record('{"a": 1}') AS x(a d_evil)`, {
});
sqlAttack(lab, 'domain CHECK reached by a row cast to a composite type with a domain column', 'SELECT ROW(1)::r_dom');

// ───────────────────────────── other changes, hidden ─────────────────────────────

sqlAttack(lab, 'view that advances a sequence', 'SELECT * FROM v_seq', {
  probe: async (l) => (await l.admin.query('SELECT last_value::int, is_called FROM s_evil')).rows[0],
  restore: async (l) => void (await l.admin.query(`SELECT setval('s_evil', 1, false)`)),
});
sqlAttack(lab, 'view that drops a table (dynamic DDL)', 'SELECT * FROM v_drop', {
  probe: async (l) => (await l.admin.query(`SELECT to_regclass('public.victim_table') IS NOT NULL AS present`)).rows[0].present,
  restore: async (l) => void (await l.admin.query('CREATE TABLE IF NOT EXISTS victim_table (id int)')),
});
sqlAttack(lab, 'view that persists a role setting (ALTER ROLE ... SET)', 'SELECT * FROM v_persist', {
  probe: async (l) => Number((await l.admin.query('SELECT count(*) AS n FROM pg_db_role_setting')).rows[0].n),
  restore: async (l) => void (await l.admin.query('ALTER ROLE postgres RESET ALL')),
});

// ───────────────────────────── what read-only mode does not stop ─────────────────────────────

const copyFile = path.join(lab.db.socketDir, 'pwned.txt');
sqlAttack(lab, 'view that runs COPY TO PROGRAM (a shell command on the server)', 'SELECT * FROM v_copy', {
  probe: async () => (fs.existsSync(copyFile) ? fs.statSync(copyFile).size : 0),
  restore: async () => fs.rmSync(copyFile, { force: true }),
});
sqlAttack(lab, 'view over a STABLE function that writes through dblink_exec (another session)', 'SELECT * FROM v_dblink', {
});
sqlAttack(lab, 'postgres_fdw foreign table over a remote view that writes', 'SELECT * FROM ft_evil', {
});

/** Polls a value until it shows the attack's effect, or for a second (then it did not happen). */
async function settled<T>(read: () => Promise<T>, effect: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 1000;
  for (;;) {
    const value = await read();
    if (effect(value) || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
}

// pg_terminate_backend: the victim is a direct connection with a known application_name.
const victims: pg.Client[] = [];
t.teardown(async () => {
  for (const v of victims) await v.end().catch(() => {});
});
async function victimsAlive(l: Lab): Promise<number> {
  return Number((await l.admin.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'stepgate-victim'`)).rows[0].n);
}
async function ensureVictim(l: Lab): Promise<void> {
  if ((await victimsAlive(l)) > 0) return;
  const v = new pg.Client({ host: l.db.socketDir, port: l.db.port, user: l.db.user, password: l.db.password, database: 'postgres', application_name: 'stepgate-victim' });
  v.on('error', () => {});
  await v.connect();
  victims.push(v);
}
sqlAttack(lab, 'view that terminates another backend (pg_terminate_backend)', 'SELECT * FROM v_kill', {
  // A terminated backend needs a moment to leave pg_stat_activity.
  probe: (l) => settled(() => victimsAlive(l), (n) => n === 0),
  restore: ensureVictim,
});

// NOTIFY: a listener counts what arrives.
const listener = await lab.db.client();
t.teardown(() => listener.end().catch(() => {}));
let notifications = 0;
listener.on('notification', () => notifications++);
await listener.query('LISTEN pwned_channel');
sqlAttack(lab, 'view that sends a notification (pg_notify)', 'SELECT * FROM v_notify', {
  // Notifications arrive after the sender's commit, asynchronously.
  probe: () => settled(async () => notifications, (n) => n > 0),
  restore: async () => {
    await new Promise((r) => setTimeout(r, 50));
    notifications = 0;
  },
});

// A role change hidden in a view or a STABLE function: SET ROLE and SET SESSION AUTHORIZATION are privilege
// statements when written, and read-only mode allows set_config.
sqlAttack(lab, 'view that changes the session\'s role (set_config(\'role\', ...))', 'SELECT * FROM v_become_role', {
  sessionProbe: 'SELECT current_user',
});
sqlAttack(lab, 'STABLE function that changes the session user (set_config(\'session_authorization\', ...))', 'SELECT become_session_user()', {
  sessionProbe: 'SELECT session_user',
});
