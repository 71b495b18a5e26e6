/**
 * classify(): a table of real SQL and what each statement must be classified as. Classes and flags are compared
 * exactly (flags without multi_statement); tables, functions and columns exactly when given.
 */
import t from 'tap';
import { classify, initParser } from '../../src/sql/classify.js';
import type { ClassifyContext, StatementClass, StatementFlag, StatementInfo } from '../../src/sql/types.js';

await initParser();

const VOLATILITY: Record<string, 'read' | 'procedural'> = {
  myread: 'read',
  'app.lookup': 'read',
  audit_write: 'procedural',
};

function context(extra: Partial<ClassifyContext> = {}): ClassifyContext {
  return {
    standardConformingStrings: true,
    functionVolatility: (name) => VOLATILITY[name],
    preparedStatement: () => undefined,
    ...extra,
  };
}

interface Case {
  sql: string;
  command?: string;
  classes: StatementClass[];
  flags?: StatementFlag[];
  /** `schema.name:access` or `name:access` */
  tables?: string[];
  functions?: string[];
  columns?: string[];
  changesParsing?: boolean;
  shapeSafe?: boolean;
  unresolved?: string[];
}

function tableList(s: StatementInfo): string[] {
  return s.tables.map((x) => `${x.schema === null ? '' : `${x.schema}.`}${x.name}:${x.access}`).sort();
}

/** The assertions used here (tap's test object has them all). */
interface Asserts {
  equal(found: unknown, wanted: unknown, message?: string): boolean;
  same(found: unknown, wanted: unknown, message?: string): boolean;
  ok(value: unknown, message?: string): boolean;
}

function check(tt: Asserts, c: Case, ctx: ClassifyContext = context()): void {
  const r = classify(c.sql, ctx);
  tt.equal(r.error, undefined, `${c.sql}: parses`);
  tt.equal(r.statements.length, 1, `${c.sql}: one statement`);
  const s = r.statements[0]!;
  const name = c.sql.length > 70 ? `${c.sql.slice(0, 67)}...` : c.sql;
  if (c.command !== undefined) tt.equal(s.command, c.command, `${name}: command`);
  tt.same(s.classes, [...c.classes].sort(), `${name}: classes`);
  if (c.flags !== undefined) tt.same(s.flags.filter((f) => f !== 'multi_statement'), [...c.flags].sort(), `${name}: flags`);
  if (c.tables !== undefined) tt.same(tableList(s), [...c.tables].sort(), `${name}: tables`);
  if (c.functions !== undefined) tt.same([...s.functions].sort(), [...c.functions].sort(), `${name}: functions`);
  if (c.columns !== undefined) tt.same([...s.columns].sort(), [...c.columns].sort(), `${name}: columns`);
  if (c.changesParsing !== undefined) tt.equal(s.changesParsing, c.changesParsing, `${name}: changesParsing`);
  if (c.shapeSafe !== undefined) tt.equal(r.shapeSafe, c.shapeSafe, `${name}: shapeSafe`);
  if (c.unresolved !== undefined) tt.same(r.unresolvedFunctions, c.unresolved, `${name}: unresolved`);
  const stronger = s.classes.filter((x) => x !== 'read');
  if (stronger.length > 0) tt.ok(s.reasons.length > 0, `${name}: reasons explain ${stronger.join(', ')}`);
  tt.equal(s.sql, c.sql, `${name}: statement text`);
}

const READS: Case[] = [
  {
    sql: 'SELECT c.id, name FROM customers c WHERE c.id = 1',
    command: 'SELECT',
    classes: ['read'],
    flags: [],
    tables: ['customers:read'],
    columns: ['customers.id', 'customers.name'],
    shapeSafe: true,
  },
  { sql: 'SELECT * FROM public.accounts a', classes: ['read'], tables: ['public.accounts:read'], columns: ['accounts.*'] },
  // A whole-row reference reads every column (when no column is named like the alias).
  { sql: 'SELECT u FROM users u', classes: ['read'], tables: ['users:read'], columns: ['users.u', 'users.*'] },
  { sql: 'SELECT row_to_json(u) FROM users u', classes: ['read'], tables: ['users:read'], columns: ['users.u', 'users.*'] },
  { sql: 'VALUES (1), (2)', command: 'SELECT', classes: ['read'], tables: [] },
  { sql: 'TABLE t', command: 'SELECT', classes: ['read'], tables: ['t:read'] },
  { sql: 'SELECT a.x FROM a JOIN b ON a.id = b.id WHERE a.z IN (SELECT z FROM c)', classes: ['read'], tables: ['a:read', 'b:read', 'c:read'] },
  { sql: 'WITH x AS (SELECT 1) SELECT * FROM x', classes: ['read'], tables: [] },
  // A CTE's own name inside a plain WITH is the table, not the CTE.
  { sql: 'WITH t AS (SELECT * FROM t) SELECT * FROM t', classes: ['read'], tables: ['t:read'] },
  { sql: 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r', classes: ['read'], tables: [] },
  { sql: 'SELECT now(), random(), clock_timestamp(), gen_random_uuid(), txid_current(), pg_sleep(0)', classes: ['read'], shapeSafe: true },
  { sql: "SELECT extract(year FROM now()), lower('X')", classes: ['read'], functions: ['extract', 'now', 'lower'] },
  { sql: 'SELECT pg_catalog.now()', classes: ['read'], functions: ['pg_catalog.now'] },
  { sql: 'SELECT myread(1), app.lookup(2)', classes: ['read'], functions: ['myread', 'app.lookup'], unresolved: [] },
  { sql: 'EXPLAIN SELECT * FROM t', command: 'EXPLAIN', classes: ['read'], flags: [] },
  // Plain EXPLAIN plans only: the DELETE does not run.
  { sql: 'EXPLAIN DELETE FROM t', command: 'EXPLAIN', classes: ['read'], flags: [], tables: ['t:read'] },
  { sql: 'EXPLAIN (ANALYZE false) DELETE FROM t', classes: ['read'], flags: [] },
  { sql: 'EXPLAIN (ANALYZE 0) DELETE FROM t', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM t FOR UPDATE', classes: ['read'], flags: ['locks'] },
  { sql: 'SELECT * FROM t FOR SHARE SKIP LOCKED', classes: ['read'], flags: ['locks'] },
  { sql: 'SELECT pg_advisory_lock(42)', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT pg_try_advisory_xact_lock(1, 2)', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT txid_current(), pg_current_xact_id()', classes: ['read'], flags: ['assigns_xid'] },
  { sql: 'SELECT txid_current_if_assigned()', classes: ['read'], flags: [] },
  { sql: 'SELECT setseed(0.5)', classes: ['read'], flags: ['setseed'] },
  { sql: "SELECT 'customers'::regclass", classes: ['read'], shapeSafe: false },
  { sql: 'SELECT 1 OPERATOR(pg_catalog.+) 2', classes: ['read'] },
  { sql: "SELECT * FROM t WHERE a ~~ 'x%' AND b @> ARRAY[1]", classes: ['read'] },
  { sql: 'SELECT currval(\'s\')', classes: ['read'], tables: ['s:read'], shapeSafe: false },
  { sql: 'SELECT table_to_xml(\'t\'::regclass, true, false, \'\')', classes: ['read'], flags: ['dynamic'] },
];

const WRITES: Case[] = [
  { sql: "INSERT INTO t (a) VALUES (1)", command: 'INSERT', classes: ['write'], tables: ['t:write'], shapeSafe: true },
  {
    sql: 'INSERT INTO t (id, x) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET x = excluded.x',
    classes: ['write'],
    tables: ['t:write'],
  },
  { sql: 'INSERT INTO t SELECT * FROM s', classes: ['write'], tables: ['t:write', 's:read'] },
  { sql: 'UPDATE t SET a = 1 WHERE id = 2', command: 'UPDATE', classes: ['write'], flags: [], tables: ['t:write'] },
  { sql: 'UPDATE t SET a = 1', classes: ['write'], flags: ['no_where'] },
  { sql: 'UPDATE t SET x = o.x FROM o WHERE o.id = t.id', classes: ['write'], tables: ['t:write', 'o:read'], columns: ['o.x', 'o.id', 't.id'] },
  { sql: 'DELETE FROM t', command: 'DELETE', classes: ['write'], flags: ['no_where'], tables: ['t:write'] },
  { sql: 'DELETE FROM t WHERE CURRENT OF c', classes: ['write'], flags: [] },
  { sql: 'DELETE FROM t USING o WHERE o.id = t.id', classes: ['write'], tables: ['t:write', 'o:read'] },
  {
    sql: 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET x = s.x WHEN NOT MATCHED THEN INSERT VALUES (s.id)',
    command: 'MERGE',
    classes: ['write'],
    tables: ['t:write', 's:read'],
  },
  { sql: 'TRUNCATE a, b', command: 'TRUNCATE TABLE', classes: ['write'], tables: ['a:write', 'b:write'] },
  { sql: 'LOCK TABLE t IN EXCLUSIVE MODE', command: 'LOCK TABLE', classes: ['write'], flags: ['locks'], tables: ['t:write'] },
  { sql: "NOTIFY channel, 'payload'", command: 'NOTIFY', classes: ['write'], flags: ['notify'] },
  { sql: "SELECT pg_notify('c', 'x')", classes: ['read', 'write'], flags: ['notify'] },
  { sql: "SELECT nextval('s')", classes: ['read', 'write'], tables: ['s:write'], shapeSafe: false },
  { sql: "SELECT nextval('public.\"Seq\"'::regclass)", classes: ['read', 'write'], tables: ['public.Seq:write'] },
  { sql: "SELECT setval('s', 10)", classes: ['read', 'write'], tables: ['s:write'] },
  { sql: 'SELECT lo_unlink(1234)', classes: ['read', 'write'] },
  { sql: "SELECT lo_from_bytea(0, 'x')", classes: ['read', 'write'] },
  // Data-modifying CTEs, however deep.
  {
    sql: 'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d',
    command: 'SELECT',
    classes: ['read', 'write'],
    flags: ['no_where', 'writing_cte'],
    tables: ['t:write'],
  },
  {
    sql: 'SELECT * FROM (WITH u AS (UPDATE t SET a = 1 WHERE b = 2 RETURNING *) SELECT * FROM u) s',
    classes: ['read', 'write'],
    flags: ['writing_cte'],
    tables: ['t:write'],
  },
  {
    sql: 'SELECT 1 WHERE EXISTS (WITH i AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT * FROM i)',
    classes: ['read', 'write'],
    flags: ['writing_cte'],
  },
  {
    sql: 'INSERT INTO a SELECT * FROM (WITH x AS (UPDATE b SET y = 1 WHERE z RETURNING *) SELECT * FROM x) q',
    command: 'INSERT',
    classes: ['write'],
    flags: ['writing_cte'],
    tables: ['a:write', 'b:write'],
  },
  {
    sql: 'WITH a AS (WITH b AS (DELETE FROM deep WHERE id = 1 RETURNING id) SELECT id FROM b) SELECT * FROM a',
    classes: ['read', 'write'],
    flags: ['writing_cte'],
    tables: ['deep:write'],
  },
  // A DML target is always a table, even when a CTE has its name.
  { sql: 'WITH customers AS (SELECT 1) DELETE FROM customers WHERE true', classes: ['write'], tables: ['customers:write'] },
  {
    sql: 'SELECT * INTO t FROM x',
    command: 'SELECT INTO',
    classes: ['ddl', 'read', 'write'],
    flags: ['select_into'],
    tables: ['t:write', 'x:read'],
  },
  {
    sql: 'CREATE TABLE t AS SELECT * FROM x',
    command: 'CREATE TABLE AS',
    classes: ['ddl', 'read', 'write'],
    flags: ['select_into'],
    tables: ['t:write', 'x:read'],
  },
  { sql: 'CREATE TABLE t AS SELECT 1 WITH NO DATA', classes: ['ddl'], flags: ['select_into'] },
  { sql: 'CREATE MATERIALIZED VIEW mv AS SELECT * FROM x', command: 'CREATE MATERIALIZED VIEW', classes: ['ddl', 'read', 'write'] },
  {
    sql: 'EXPLAIN ANALYZE WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d',
    command: 'EXPLAIN',
    classes: ['read', 'write'],
    flags: ['explain_analyze', 'writing_cte'],
    tables: ['t:write'],
  },
  { sql: 'EXPLAIN ANALYZE DELETE FROM t WHERE id = 1', classes: ['write'], flags: ['explain_analyze'] },
  { sql: 'EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1', classes: ['write'], flags: ['explain_analyze', 'no_where'] },
  { sql: 'EXPLAIN ANALYSE SELECT 1', classes: ['read'], flags: ['explain_analyze'] },
  { sql: "EXPLAIN (ANALYZE 'on') INSERT INTO t VALUES (1)", classes: ['write'], flags: ['explain_analyze'] },
];

const DDL: Case[] = [
  { sql: 'CREATE TABLE t (id int PRIMARY KEY, x text DEFAULT nextval(\'s\'))', command: 'CREATE TABLE', classes: ['ddl'], tables: ['t:write'] },
  { sql: 'ALTER TABLE t ADD COLUMN c int', command: 'ALTER TABLE', classes: ['ddl'], tables: ['t:write'] },
  { sql: 'ALTER TABLE t ADD COLUMN c int DEFAULT audit_write()', classes: ['ddl', 'procedural'] },
  { sql: 'DROP TABLE s.t, u', command: 'DROP TABLE', classes: ['ddl'], tables: ['s.t:write', 'u:write'] },
  { sql: 'CREATE INDEX i ON t (lower(x))', command: 'CREATE INDEX', classes: ['ddl'], tables: ['t:write'] },
  { sql: 'CREATE VIEW v AS SELECT * FROM t WHERE audit_write() > 0', command: 'CREATE VIEW', classes: ['ddl'], tables: ['v:write', 't:read'] },
  { sql: 'CREATE SEQUENCE s', command: 'CREATE SEQUENCE', classes: ['ddl'] },
  { sql: 'ALTER SEQUENCE s RESTART WITH 1', command: 'ALTER SEQUENCE', classes: ['ddl', 'write'] },
  { sql: 'CREATE TYPE mood AS ENUM (\'sad\', \'ok\')', command: 'CREATE TYPE', classes: ['ddl'] },
  { sql: 'CREATE DOMAIN d AS int CHECK (VALUE > 0)', command: 'CREATE DOMAIN', classes: ['ddl'] },
  { sql: 'CREATE SCHEMA s', command: 'CREATE SCHEMA', classes: ['ddl'] },
  { sql: 'CREATE SCHEMA s CREATE TABLE t (a int) GRANT SELECT ON t TO bob', classes: ['ddl', 'privilege'] },
  { sql: 'CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM u', command: 'CREATE RULE', classes: ['ddl'] },
  {
    sql: 'CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()',
    command: 'CREATE TRIGGER',
    classes: ['ddl'],
    tables: ['t:write'],
  },
  { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'", command: 'CREATE FUNCTION', classes: ['ddl'], flags: [] },
  {
    sql: 'CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t; SELECT 1; END',
    classes: ['ddl'],
    flags: [],
  },
  {
    sql: "CREATE FUNCTION f() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'select 1'",
    classes: ['ddl', 'privilege'],
    flags: ['security_definer'],
  },
  { sql: 'ALTER FUNCTION f() SECURITY DEFINER', command: 'ALTER FUNCTION', classes: ['ddl', 'privilege'], flags: ['security_definer'] },
  { sql: 'ALTER FUNCTION f() SECURITY INVOKER', classes: ['ddl'], flags: [] },
  { sql: "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN END $$", command: 'CREATE PROCEDURE', classes: ['ddl'] },
  { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u AS 'return 1'", classes: ['admin', 'ddl'] },
  { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'lib', 'sym'", classes: ['admin', 'ddl'] },
  { sql: "COMMENT ON TABLE t IS 'x'", command: 'COMMENT', classes: ['ddl'] },
  { sql: "SECURITY LABEL ON TABLE t IS 'x'", command: 'SECURITY LABEL', classes: ['ddl'] },
  { sql: 'ALTER TABLE t RENAME TO u', command: 'ALTER TABLE', classes: ['ddl'] },
  { sql: 'ALTER TABLE t RENAME COLUMN a TO b', command: 'ALTER TABLE', classes: ['ddl'] },
  { sql: 'ALTER VIEW v RENAME COLUMN a TO b', command: 'ALTER VIEW', classes: ['ddl'] },
  { sql: 'ALTER TABLE t SET SCHEMA s', command: 'ALTER TABLE', classes: ['ddl'] },
  { sql: 'CREATE POLICY p ON t USING (owner = current_user)', command: 'CREATE POLICY', classes: ['ddl', 'privilege'] },
  { sql: 'ALTER TABLE t ENABLE ROW LEVEL SECURITY', classes: ['ddl', 'privilege'] },
  { sql: 'DROP POLICY p ON t', command: 'DROP POLICY', classes: ['ddl', 'privilege'] },
  { sql: 'CREATE STATISTICS st ON a, b FROM t', command: 'CREATE STATISTICS', classes: ['ddl'] },
  { sql: 'CREATE AGGREGATE a (int) (sfunc = int4pl, stype = int)', command: 'CREATE AGGREGATE', classes: ['ddl'] },
  { sql: 'CREATE OPERATOR === (leftarg = int, rightarg = int, function = int4eq)', command: 'CREATE OPERATOR', classes: ['ddl'] },
  { sql: 'CREATE FOREIGN TABLE ft (a int) SERVER s', command: 'CREATE FOREIGN TABLE', classes: ['ddl'] },
  { sql: 'IMPORT FOREIGN SCHEMA r FROM SERVER s INTO l', command: 'IMPORT FOREIGN SCHEMA', classes: ['admin', 'ddl'] },
];

const PRIVILEGE: Case[] = [
  { sql: 'GRANT SELECT ON customers TO bob', command: 'GRANT', classes: ['privilege'], tables: ['customers:write'] },
  { sql: 'REVOKE ALL ON SCHEMA s FROM bob', command: 'REVOKE', classes: ['privilege'] },
  { sql: 'GRANT admin TO bob', command: 'GRANT ROLE', classes: ['privilege'] },
  { sql: 'REVOKE admin FROM bob', command: 'REVOKE ROLE', classes: ['privilege'] },
  { sql: 'CREATE ROLE r LOGIN SUPERUSER', command: 'CREATE ROLE', classes: ['privilege'] },
  { sql: 'CREATE USER u', command: 'CREATE ROLE', classes: ['privilege'] },
  { sql: 'CREATE GROUP g', command: 'CREATE ROLE', classes: ['privilege'] },
  { sql: "ALTER USER u PASSWORD 'x'", command: 'ALTER ROLE', classes: ['privilege'] },
  { sql: 'ALTER ROLE r SET work_mem = 1', command: 'ALTER ROLE', classes: ['privilege'] },
  { sql: 'ALTER GROUP g ADD USER u', classes: ['privilege'] },
  { sql: 'DROP ROLE r', command: 'DROP ROLE', classes: ['privilege'] },
  { sql: 'DROP USER u', command: 'DROP ROLE', classes: ['privilege'] },
  { sql: 'ALTER ROLE r RENAME TO s', command: 'ALTER ROLE', classes: ['ddl', 'privilege'] },
  { sql: 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob', command: 'ALTER DEFAULT PRIVILEGES', classes: ['privilege'] },
  { sql: 'SET ROLE admin', command: 'SET', classes: ['privilege'] },
  { sql: 'SET LOCAL ROLE admin', command: 'SET', classes: ['privilege'] },
  { sql: 'SET SESSION AUTHORIZATION bob', command: 'SET', classes: ['privilege'] },
  { sql: 'RESET ROLE', command: 'RESET', classes: ['privilege'] },
  { sql: 'RESET SESSION AUTHORIZATION', command: 'RESET', classes: ['privilege'] },
  { sql: 'ALTER TABLE t OWNER TO bob', command: 'ALTER TABLE', classes: ['ddl', 'privilege'] },
  { sql: 'ALTER FUNCTION f() OWNER TO bob', command: 'ALTER FUNCTION', classes: ['ddl', 'privilege'] },
  { sql: 'ALTER SCHEMA s OWNER TO bob', command: 'ALTER SCHEMA', classes: ['ddl', 'privilege'] },
  { sql: 'REASSIGN OWNED BY a TO b', command: 'REASSIGN OWNED', classes: ['privilege'] },
  { sql: 'DROP OWNED BY a', command: 'DROP OWNED', classes: ['ddl', 'privilege'] },
  { sql: "SELECT set_config('role', 'admin', false)", classes: ['privilege', 'read', 'session'], shapeSafe: false },
  { sql: "SELECT set_config('session_authorization', 'bob', false)", classes: ['privilege', 'read', 'session'] },
  { sql: 'SELECT set_config(name, value, false) FROM settings', classes: ['privilege', 'read', 'session'], changesParsing: true },
  { sql: "SELECT set_config('work_mem', '1MB', false)", classes: ['read', 'session'], flags: ['set_config'], changesParsing: false },
  { sql: "SELECT set_config('standard_conforming_strings', 'off', false)", classes: ['read', 'session'], changesParsing: true },
  // Puts another schema before pg_catalog: unqualified built-in names could run other functions.
  { sql: 'SET search_path = evil, pg_catalog', classes: ['privilege', 'session'] },
  { sql: 'SET search_path = pg_catalog, app', classes: ['session'] },
  { sql: 'SET search_path TO app, public', classes: ['session'] },
  { sql: "SELECT set_config('search_path', 'evil, pg_catalog', false)", classes: ['privilege', 'read', 'session'] },
  // DISCARD ALL includes RESET ROLE and SET SESSION AUTHORIZATION DEFAULT.
  { sql: 'DISCARD ALL', command: 'DISCARD ALL', classes: ['privilege', 'session'], changesParsing: true },
];

const ADMIN: Case[] = [
  { sql: "ALTER SYSTEM SET work_mem = '1MB'", command: 'ALTER SYSTEM', classes: ['admin'] },
  { sql: 'ALTER SYSTEM RESET ALL', command: 'ALTER SYSTEM', classes: ['admin'] },
  { sql: 'CREATE DATABASE d', command: 'CREATE DATABASE', classes: ['admin', 'ddl'] },
  { sql: 'ALTER DATABASE d SET work_mem = 1', command: 'ALTER DATABASE', classes: ['admin', 'ddl'] },
  { sql: 'ALTER DATABASE d RENAME TO e', command: 'ALTER DATABASE', classes: ['admin', 'ddl'] },
  { sql: 'DROP DATABASE d', command: 'DROP DATABASE', classes: ['admin', 'ddl'] },
  { sql: 'CREATE EXTENSION pgcrypto', command: 'CREATE EXTENSION', classes: ['admin', 'ddl'] },
  { sql: 'ALTER EXTENSION pgcrypto UPDATE', command: 'ALTER EXTENSION', classes: ['admin', 'ddl'] },
  { sql: 'DROP EXTENSION pgcrypto', command: 'DROP EXTENSION', classes: ['admin', 'ddl'] },
  { sql: "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p", command: 'CREATE SUBSCRIPTION', classes: ['admin', 'ddl'] },
  { sql: 'ALTER SUBSCRIPTION s DISABLE', command: 'ALTER SUBSCRIPTION', classes: ['admin', 'ddl'] },
  { sql: 'DROP SUBSCRIPTION s', command: 'DROP SUBSCRIPTION', classes: ['admin', 'ddl'] },
  { sql: 'CREATE PUBLICATION p FOR TABLE t', command: 'CREATE PUBLICATION', classes: ['admin', 'ddl'] },
  { sql: 'ALTER PUBLICATION p ADD TABLE u', command: 'ALTER PUBLICATION', classes: ['admin', 'ddl'] },
  { sql: "LOAD 'auto_explain'", command: 'LOAD', classes: ['admin'] },
  { sql: "CREATE TABLESPACE ts LOCATION '/data'", command: 'CREATE TABLESPACE', classes: ['admin', 'ddl'] },
  { sql: 'ALTER TABLESPACE ts SET (random_page_cost = 1)', command: 'ALTER TABLESPACE', classes: ['admin', 'ddl'] },
  { sql: 'DROP TABLESPACE ts', command: 'DROP TABLESPACE', classes: ['admin', 'ddl'] },
  { sql: 'CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw', command: 'CREATE SERVER', classes: ['admin', 'ddl'] },
  { sql: "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'x', password 'y')", command: 'CREATE USER MAPPING', classes: ['admin', 'ddl'] },
  { sql: 'CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()', command: 'CREATE EVENT TRIGGER', classes: ['admin', 'ddl'] },
  // Without HANDLER, the grammar turns CREATE LANGUAGE into CREATE EXTENSION.
  { sql: 'CREATE LANGUAGE plperl', command: 'CREATE EXTENSION', classes: ['admin', 'ddl'] },
  { sql: 'CREATE LANGUAGE plsample HANDLER plsample_call_handler', command: 'CREATE LANGUAGE', classes: ['admin', 'ddl'] },
  { sql: "SELECT pg_read_file('/etc/passwd')", classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT * FROM pg_hba_file_rules()', classes: ['admin', 'read'], flags: ['server_files'] },
  // The config-file views return what their functions return; credentials are admin and `secrets`.
  { sql: 'SELECT * FROM pg_file_settings', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT * FROM pg_catalog.pg_hba_file_rules', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT * FROM pg_ident_file_mappings', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT rolname, rolpassword FROM pg_authid', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT * FROM pg_shadow', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT umoptions FROM pg_catalog.pg_user_mapping', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT * FROM pg_user_mappings', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT stavalues1 FROM pg_statistic', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT data FROM pg_largeobject', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT count(*) FROM (SELECT 1 FROM pg_authid) a', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'COPY (SELECT * FROM pg_shadow) TO STDOUT', classes: ['admin', 'export', 'read'], flags: ['secrets'] },
  // Other catalogs are plain reads; a schema other than pg_catalog is not the catalog. pg_stats shows sample
  // values of every column the user may read, past any rule on the tables: a secret like pg_statistic.
  { sql: 'SELECT * FROM pg_roles, pg_user', classes: ['read'], flags: [] },
  { sql: 'SELECT most_common_vals FROM pg_stats', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT * FROM app.pg_authid', classes: ['read'], flags: [] },
  { sql: "SELECT pg_read_binary_file('x')", classes: ['admin', 'read'] },
  { sql: "SELECT * FROM pg_ls_dir('.')", classes: ['admin', 'read'] },
  { sql: "SELECT pg_stat_file('x')", classes: ['admin', 'read'] },
  { sql: "SELECT lo_import('/etc/passwd')", classes: ['admin', 'read'] },
  { sql: "SELECT lo_export(1, '/tmp/x')", classes: ['admin', 'read'] },
  { sql: 'SELECT pg_terminate_backend(pid) FROM pg_stat_activity', classes: ['admin', 'read'], flags: ['signals_backend'] },
  { sql: 'SELECT pg_cancel_backend(1)', classes: ['admin', 'read'], flags: ['signals_backend'] },
  { sql: 'SELECT pg_signal_backend(1, 15)', classes: ['admin', 'read'], flags: ['signals_backend'] },
  { sql: 'SELECT pg_reload_conf()', classes: ['admin', 'read'] },
  { sql: 'SELECT pg_promote()', classes: ['admin', 'read'] },
  { sql: "SELECT pg_create_logical_replication_slot('s', 'pgoutput')", classes: ['admin', 'read'] },
  { sql: "SELECT pg_drop_replication_slot('s')", classes: ['admin', 'read'] },
  { sql: 'SELECT pg_switch_wal()', classes: ['admin', 'read'] },
  { sql: "SELECT pg_backup_start('l')", classes: ['admin', 'read'] },
  { sql: 'SELECT pg_backup_stop()', classes: ['admin', 'read'] },
  { sql: 'SELECT pg_log_backend_memory_contexts(1)', classes: ['admin', 'read'] },
  { sql: "SELECT dblink_connect('host=x')", classes: ['admin', 'read'] },
  { sql: "SELECT * FROM public.dblink('c', 'DELETE FROM x') AS r(a int)", classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: "SELECT dblink_exec('c', 'DROP TABLE x')", classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: "SELECT dblink_connect('host=x')", classes: ['admin', 'read'], flags: ['network'] },
  { sql: 'SELECT postgres_fdw_disconnect_all()', classes: ['admin', 'read'], flags: ['network'] },
  { sql: 'SET session_replication_role = replica', classes: ['admin', 'session'] },
  { sql: "COMMIT PREPARED 'x'", command: 'COMMIT PREPARED', classes: ['admin', 'transaction'] },
  { sql: "ROLLBACK PREPARED 'x'", command: 'ROLLBACK PREPARED', classes: ['admin', 'transaction'] },
];

const EXPORT_IMPORT: Case[] = [
  { sql: 'COPY t TO STDOUT', command: 'COPY', classes: ['export'], flags: [], tables: ['t:read'] },
  { sql: 'COPY t (a, b) TO STDOUT WITH (FORMAT csv)', classes: ['export'], columns: ['t.a', 't.b'] },
  { sql: 'COPY t FROM STDIN', command: 'COPY', classes: ['import', 'write'], flags: [], tables: ['t:write'] },
  { sql: 'COPY (SELECT * FROM t) TO STDOUT', classes: ['export', 'read'], tables: ['t:read'] },
  { sql: 'COPY (DELETE FROM t RETURNING *) TO STDOUT', classes: ['export', 'write'], flags: ['no_where'], tables: ['t:write'] },
  { sql: "COPY t TO PROGRAM 'gzip > /tmp/x'", classes: ['admin', 'export'], flags: ['copy_program'] },
  { sql: "COPY t FROM PROGRAM 'curl http://x'", classes: ['admin', 'import', 'write'], flags: ['copy_program'] },
  { sql: "COPY t TO '/tmp/t.csv'", classes: ['admin', 'export'], flags: ['copy_file', 'server_files'] },
  { sql: "COPY t FROM '/tmp/t.csv'", classes: ['admin', 'import', 'write'], flags: ['copy_file', 'server_files'] },
  { sql: 'COPY t FROM STDIN WHERE audit_write() > 0', classes: ['import', 'procedural', 'write'] },
];

const MAINTENANCE: Case[] = [
  { sql: 'VACUUM', command: 'VACUUM', classes: ['maintenance'] },
  { sql: 'VACUUM FULL t', command: 'VACUUM', classes: ['maintenance'], tables: ['t:write'] },
  { sql: 'ANALYZE t', command: 'ANALYZE', classes: ['maintenance'], tables: ['t:read'] },
  { sql: 'VACUUM (ANALYZE) t', command: 'VACUUM', classes: ['maintenance'] },
  { sql: 'REINDEX TABLE t', command: 'REINDEX', classes: ['maintenance'] },
  { sql: 'REINDEX DATABASE d', command: 'REINDEX', classes: ['maintenance'] },
  { sql: 'CLUSTER t USING i', command: 'CLUSTER', classes: ['maintenance'] },
  { sql: 'CHECKPOINT', command: 'CHECKPOINT', classes: ['maintenance'] },
  { sql: 'REFRESH MATERIALIZED VIEW CONCURRENTLY mv', command: 'REFRESH MATERIALIZED VIEW', classes: ['maintenance', 'write'], tables: ['mv:write'] },
  { sql: "SELECT brin_summarize_new_values('i')", classes: ['maintenance', 'read'] },
];

const PROCEDURAL: Case[] = [
  { sql: 'DO $$ BEGIN DELETE FROM t; END $$', command: 'DO', classes: ['procedural'], flags: ['dynamic'], changesParsing: true },
  { sql: "DO LANGUAGE plpython3u 'import os'", classes: ['admin', 'procedural'], flags: ['dynamic'] },
  { sql: 'CALL p(1)', command: 'CALL', classes: ['procedural'], functions: ['p'], changesParsing: true },
  { sql: "CALL p(nextval('s'))", classes: ['procedural', 'write'], tables: ['s:write'] },
  { sql: 'SELECT audit_write()', classes: ['procedural', 'read'], changesParsing: true, unresolved: [] },
  { sql: 'SELECT unknown_fn(1)', classes: ['procedural', 'read'], unresolved: ['unknown_fn'] },
  { sql: 'SELECT public.unknown_fn(1)', classes: ['procedural', 'read'], unresolved: ['public.unknown_fn'] },
  { sql: 'SELECT pg_catalog.not_a_builtin()', classes: ['procedural', 'read'], unresolved: ['pg_catalog.not_a_builtin'] },
  { sql: 'UPDATE t SET a = audit_write() WHERE id = 1', classes: ['procedural', 'write'] },
  { sql: "SELECT query_to_xml('DELETE FROM t', true, false, '')", classes: ['procedural', 'read'], flags: ['dynamic'] },
  { sql: 'SELECT 1 ==> 2', classes: ['procedural', 'read'] },
  { sql: 'SELECT 1 OPERATOR(app.+) 2', classes: ['procedural', 'read'] },
  { sql: 'SELECT * FROM t ORDER BY a USING <<<', classes: ['procedural', 'read'] },
  { sql: 'SELECT x FROM t WHERE x <<< ANY (SELECT y FROM u)', classes: ['procedural', 'read'] },
];

const TRANSACTION: Case[] = [
  { sql: 'BEGIN', command: 'BEGIN', classes: ['transaction'], changesParsing: false },
  { sql: 'BEGIN ISOLATION LEVEL SERIALIZABLE', command: 'BEGIN', classes: ['transaction'] },
  { sql: 'START TRANSACTION READ ONLY', command: 'START TRANSACTION', classes: ['transaction'] },
  { sql: 'COMMIT', command: 'COMMIT', classes: ['transaction'], changesParsing: true },
  { sql: 'END', command: 'COMMIT', classes: ['transaction'], changesParsing: true },
  { sql: 'COMMIT AND CHAIN', command: 'COMMIT', classes: ['transaction'] },
  { sql: 'ROLLBACK', command: 'ROLLBACK', classes: ['transaction'], changesParsing: true },
  { sql: 'ABORT', command: 'ROLLBACK', classes: ['transaction'], changesParsing: true },
  { sql: 'SAVEPOINT a', command: 'SAVEPOINT', classes: ['transaction'], changesParsing: false },
  { sql: 'RELEASE SAVEPOINT a', command: 'RELEASE', classes: ['transaction'] },
  { sql: 'ROLLBACK TO SAVEPOINT a', command: 'ROLLBACK', classes: ['transaction'], changesParsing: true },
  // Keeps its locks and changes past the end of the session.
  { sql: "PREPARE TRANSACTION 'x'", command: 'PREPARE TRANSACTION', classes: ['admin', 'transaction'], changesParsing: true },
  { sql: 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ', command: 'SET', classes: ['transaction'] },
  { sql: 'SET CONSTRAINTS ALL DEFERRED', command: 'SET CONSTRAINTS', classes: ['transaction'] },
];

const SESSION: Case[] = [
  { sql: "SET work_mem = '64MB'", command: 'SET', classes: ['session'], changesParsing: false, shapeSafe: false },
  { sql: "SET TIME ZONE 'UTC'", command: 'SET', classes: ['session'] },
  { sql: 'SHOW work_mem', command: 'SHOW', classes: ['session'] },
  { sql: 'SHOW ALL', command: 'SHOW', classes: ['session'] },
  { sql: 'RESET work_mem', command: 'RESET', classes: ['session'] },
  { sql: 'RESET ALL', command: 'RESET', classes: ['session'], changesParsing: true },
  { sql: 'SET standard_conforming_strings = off', classes: ['session'], changesParsing: true },
  { sql: 'RESET standard_conforming_strings', classes: ['session'], changesParsing: true },
  { sql: "SET client_encoding = 'LATIN1'", classes: ['session'], changesParsing: true },
  { sql: "SET NAMES 'LATIN1'", classes: ['session'], changesParsing: true },
  { sql: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY', classes: ['session'] },
  { sql: 'LISTEN c', command: 'LISTEN', classes: ['session'] },
  { sql: 'UNLISTEN *', command: 'UNLISTEN', classes: ['session'] },
  { sql: 'DISCARD PLANS', command: 'DISCARD PLANS', classes: ['session'], changesParsing: true },
  { sql: 'DISCARD TEMP', command: 'DISCARD TEMP', classes: ['session'] },
  { sql: 'DEALLOCATE p', command: 'DEALLOCATE', classes: ['session'] },
  { sql: 'DEALLOCATE ALL', command: 'DEALLOCATE ALL', classes: ['session'] },
  { sql: 'DECLARE c CURSOR FOR SELECT * FROM t', command: 'DECLARE CURSOR', classes: ['read', 'session'], tables: ['t:read'] },
  { sql: 'DECLARE c CURSOR FOR SELECT audit_write() FROM t', classes: ['procedural', 'read', 'session'] },
  { sql: 'DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE', classes: ['read', 'session'], flags: ['locks'] },
  { sql: 'FETCH 10 FROM c', command: 'FETCH', classes: ['session'] },
  { sql: 'MOVE c', command: 'MOVE', classes: ['session'] },
  { sql: 'CLOSE c', command: 'CLOSE CURSOR', classes: ['session'] },
  { sql: 'CLOSE ALL', command: 'CLOSE CURSOR ALL', classes: ['session'] },
  { sql: 'PREPARE p AS SELECT 1', command: 'PREPARE', classes: ['session'] },
];

const TABLES = { READS, WRITES, DDL, PRIVILEGE, ADMIN, EXPORT_IMPORT, MAINTENANCE, PROCEDURAL, TRANSACTION, SESSION };

for (const [name, cases] of Object.entries(TABLES)) {
  t.test(name, async (tt) => {
    for (const c of cases) check(tt as unknown as Asserts, c);
  });
}

t.test('every class is covered by the tables', async (tt) => {
  const seen = new Set<string>();
  for (const cases of Object.values(TABLES)) for (const c of cases) for (const k of c.classes) seen.add(k);
  for (const k of ['read', 'write', 'ddl', 'export', 'import', 'privilege', 'admin', 'maintenance', 'procedural', 'transaction', 'session']) {
    tt.ok(seen.has(k), `class ${k}`);
  }
});

t.test('PREPARE classifies the inner statement and returns it', async (tt) => {
  const r = classify('PREPARE del (int) AS DELETE FROM t WHERE id = $1', context());
  const s = r.statements[0]!;
  tt.same(s.classes, ['session']);
  tt.equal(s.prepare?.name, 'del');
  tt.same(s.prepare?.statement.classes, ['write']);
  tt.equal(s.prepare?.statement.command, 'DELETE');
  tt.equal(s.prepare?.statement.sql, 'DELETE FROM t WHERE id = $1');
  tt.same(s.prepare?.statement.tables, [{ schema: null, name: 't', access: 'write' }]);

  const quoted = classify('PREPARE "MyPlan" AS SELECT \'é\' AS x', context()).statements[0]!;
  tt.equal(quoted.prepare?.name, 'MyPlan', 'quoted names keep their case');
  tt.equal(quoted.prepare?.statement.sql, "SELECT 'é' AS x", 'inner text with multibyte characters');
});

t.test('EXECUTE uses the context, or is unknown and dynamic', async (tt) => {
  const prepared = classify('PREPARE del AS DELETE FROM t', context()).statements[0]!.prepare!.statement;
  const ctx = context({ preparedStatement: (name) => (name === 'del' ? prepared : undefined) });
  const known = classify('EXECUTE del', ctx).statements[0]!;
  tt.equal(known.command, 'EXECUTE');
  tt.same(known.classes, ['write']);
  tt.same(known.flags, ['no_where']);
  tt.same(known.tables, [{ schema: null, name: 't', access: 'write' }]);

  const unknown = classify('EXECUTE nope', ctx).statements[0]!;
  tt.same(unknown.classes, ['unknown']);
  tt.ok(unknown.flags.includes('dynamic'));

  const noLookup = classify('EXECUTE del', { standardConformingStrings: true }).statements[0]!;
  tt.same(noLookup.classes, ['unknown'], 'no preparedStatement in the context');

  const params = classify("EXECUTE del(nextval('s'))", ctx).statements[0]!;
  tt.same(params.classes, ['write'], 'parameters are classified too');
  tt.ok(params.tables.some((x) => x.name === 's' && x.access === 'write'));
});

t.test('PREPARE then EXECUTE in the same text', async (tt) => {
  const r = classify('PREPARE p AS DELETE FROM t; EXECUTE p', context());
  tt.same(r.statements[1]!.classes, ['write'], 'EXECUTE sees the PREPARE before it');
  const gone = classify('PREPARE p AS SELECT 1; DEALLOCATE p; EXECUTE p', context());
  tt.same(gone.statements[2]!.classes, ['unknown'], 'DEALLOCATE forgets it');
  const all = classify('DEALLOCATE ALL; EXECUTE q', context({ preparedStatement: () => classify('SELECT 1', context()).statements[0] }));
  tt.same(all.statements[1]!.classes, ['unknown'], 'DEALLOCATE ALL forgets the session\'s too');
});

t.test('DEALLOCATE and DISCARD ALL report what they forget', async (tt) => {
  tt.same(classify('DEALLOCATE p', context()).statements[0]!.deallocate, { name: 'p' });
  tt.same(classify('DEALLOCATE PREPARE p', context()).statements[0]!.deallocate, { name: 'p' });
  tt.same(classify('DEALLOCATE ALL', context()).statements[0]!.deallocate, { name: null });
  tt.same(classify('DISCARD ALL', context()).statements[0]!.deallocate, { name: null });
  tt.equal(classify('DISCARD PLANS', context()).statements[0]!.deallocate, undefined);
});

t.test('texts that do not parse are unknown', async (tt) => {
  for (const sql of [
    'SELEC 1',
    'SELECT (',
    "SELECT 'unterminated",
    'IDENTIFY_SYSTEM',
    'START_REPLICATION SLOT s LOGICAL 0/0',
    'BASE_BACKUP',
    'CREATE_REPLICATION_SLOT s LOGICAL pgoutput',
    'TIMELINE_HISTORY 1',
    'SELECT 1; SELEC 2',
  ]) {
    const r = classify(sql, context());
    tt.ok(r.error, `${sql}: error`);
    tt.equal(r.statements.length, 1, `${sql}: one statement`);
    tt.equal(r.statements[0]!.command, 'UNKNOWN');
    tt.same(r.statements[0]!.classes, ['unknown']);
    tt.equal(r.statements[0]!.sql, sql);
    tt.equal(r.shapeSafe, false);
  }
  const r = classify("SELECT 'é' FROM", context());
  tt.equal(r.error?.position, 15, 'error position in characters of the text');
});

t.test('texts libpg-query cannot read as the server would are unknown', async (tt) => {
  tt.same(classify('SELECT 1\u0000; DROP TABLE t', context()).statements[0]!.classes, ['unknown'], 'NUL');
  tt.same(classify('SELECT \'\ud800\'', context()).statements[0]!.classes, ['unknown'], 'lone surrogate');
});

t.test('empty texts hold no statements', async (tt) => {
  for (const sql of ['', '   ', ';', '-- just a comment', '/* c */ ;;']) {
    const r = classify(sql, context());
    tt.same(r.statements, [], JSON.stringify(sql));
    tt.equal(r.error, undefined);
  }
});

t.test('multi-statement texts', async (tt) => {
  const r = classify("SELECT 1; UPDATE t SET a = 'x;y' WHERE id = 2;\n  /* c */ DELETE FROM u WHERE true ;", context());
  tt.equal(r.statements.length, 3);
  tt.same(r.statements.map((s) => s.sql), ['SELECT 1', "UPDATE t SET a = 'x;y' WHERE id = 2", 'DELETE FROM u WHERE true']);
  tt.same(r.statements.map((s) => s.command), ['SELECT', 'UPDATE', 'DELETE']);
  for (const s of r.statements) tt.ok(s.flags.includes('multi_statement'), `${s.sql}: multi_statement`);
  tt.notOk(classify('SELECT 1;', context()).statements[0]!.flags.includes('multi_statement'), 'one statement and a semicolon');
});

t.test('unicode identifiers and multibyte text before a statement boundary', async (tt) => {
  const sql = "SELECT 'héllo wörld ✓ 𝄞'; DELETE FROM \"ünïcødé\" WHERE näme = '日本語'; SELECT ✓ FROM \"𝄞\"";
  const r = classify(sql, context());
  tt.equal(r.error, undefined);
  tt.same(r.statements.map((s) => s.sql), [
    "SELECT 'héllo wörld ✓ 𝄞'",
    "DELETE FROM \"ünïcødé\" WHERE näme = '日本語'",
    'SELECT ✓ FROM "𝄞"',
  ]);
  tt.same(r.statements[1]!.tables, [{ schema: null, name: 'ünïcødé', access: 'write' }]);
  tt.same(r.statements[1]!.columns, ['ünïcødé.näme']);
  tt.same(r.statements[2]!.tables, [{ schema: null, name: '𝄞', access: 'read' }]);
});

t.test('standard_conforming_strings off with backslashes: every statement unknown', async (tt) => {
  const off = context({ standardConformingStrings: false });
  const r = classify("SELECT 'a\\'; DELETE FROM t WHERE x = 1 --'", off);
  tt.ok(r.statements.length >= 1);
  for (const s of r.statements) tt.same(s.classes, ['unknown'], s.sql);
  tt.equal(r.shapeSafe, false);
  const plain = classify('SELECT 1; SELECT 2', off);
  tt.same(plain.statements.map((s) => s.classes), [['read'], ['read']], 'no backslash: read as usual');
  const on = classify("SELECT 'a\\'", context());
  tt.same(on.statements[0]!.classes, ['read'], 'standard_conforming_strings on: a backslash is just a character');
});

t.test('a statement that may change parsing makes later statements with backslashes unknown', async (tt) => {
  const r = classify("SET standard_conforming_strings = off; SELECT 'a\\'; SELECT 2", context());
  tt.same(r.statements.map((s) => s.classes), [['session'], ['unknown'], ['read']]);
  const fn = classify("SELECT set_config('standard_conforming_strings', 'off', false); SELECT 'x\\'", context());
  tt.same(fn.statements[1]!.classes, ['unknown'], 'set_config too');
  const before = classify("SELECT 'a\\'; SET standard_conforming_strings = off", context());
  tt.same(before.statements[0]!.classes, ['read'], 'statements before it are not affected');
  const prepared = classify("SET standard_conforming_strings = off; PREPARE q AS SELECT 'a\\'; EXECUTE q", context());
  tt.same(prepared.statements[1]!.prepare?.statement.classes, ['unknown'], 'the prepared statement is unknown too');
  tt.same(prepared.statements[2]!.classes, ['unknown'], 'and so is its EXECUTE');
  const proc = classify("CALL p(); SELECT E'\\\\'", context());
  tt.same(proc.statements[1]!.classes, ['unknown'], 'procedures may SET anything');
});

t.test('classification is deterministic', async (tt) => {
  const a = classify('SELECT * FROM t WHERE id = 1', context());
  const b = classify('SELECT * FROM t WHERE id = 1', context());
  tt.same(a, b);
});

t.test('EXPLAIN EXECUTE evaluates its parameters', async (tt) => {
  const s = classify("EXPLAIN EXECUTE p(nextval('s'))", context()).statements[0]!;
  tt.same(s.classes, ['read', 'write']);
  tt.same(classify('EXPLAIN EXECUTE p(1)', context()).statements[0]!.classes, ['read']);
});

t.test('built-in names another schema also defines are not trusted', async (tt) => {
  const shadowed = new Set(['function:now', 'operator:+']);
  const ctx = context({
    shadowedBuiltin: (name, kind) => shadowed.has(`${kind}:${name}`),
    functionVolatility: (name) => (name === 'now' ? 'procedural' : undefined),
  });
  tt.same(classify('SELECT now(1)', ctx).statements[0]!.classes, ['procedural', 'read'], 'asked of the catalog');
  tt.same(classify('SELECT pg_catalog.now()', ctx).statements[0]!.classes, ['read'], 'qualified: the built-in');
  tt.same(classify('SELECT lower(x) FROM t', ctx).statements[0]!.classes, ['read'], 'not shadowed');
  tt.same(classify('SELECT 1 + 2', ctx).statements[0]!.classes, ['procedural', 'read'], 'operator');
  tt.same(classify('SELECT 1 OPERATOR(pg_catalog.+) 2', ctx).statements[0]!.classes, ['read']);
  const unresolved = classify('SELECT now(1)', context({ shadowedBuiltin: () => true, functionVolatility: () => undefined }));
  tt.same(unresolved.unresolvedFunctions, ['now']);
});
