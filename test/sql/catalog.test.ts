/**
 * Classification with a schema catalog (a fake one answering lookups): every path to user code the server
 * takes without the text naming it is found and never read; honest reads stay reads; lookups not answered yet
 * are unknown and reported; recorded answers replay; the cache notices changed answers.
 */
import t from 'tap';
import { ClassificationCache } from '../../src/sql/cache.js';
import { classify, initParser, withParameterTypes } from '../../src/sql/classify.js';
import { lookupKey, recordingContext, replayContext, snapshotContext } from '../../src/sql/replay.js';
import type { ClassifyContext, StatementClass, StatementFlag } from '../../src/sql/types.js';
import {
  builtinFunction,
  domain,
  FakeCatalog,
  nativeFunction,
  operator,
  plpgsqlFunction,
  relation,
  sqlFunction,
  type,
  view,
} from '../helpers/fake-catalog.js';

await initParser();

const locks = sqlFunction('public.locks', 'SELECT pg_catalog.pg_advisory_lock(1)');
const honest = sqlFunction('public.honest', 'SELECT count(*) FROM public.orders WHERE id > $1');
const writer = sqlFunction('public.writer', "INSERT INTO public.log (what) VALUES ('x')", { volatility: 'i' });
const checkedInt = domain('public.checked_int', ['(public.locks() = 1 AND VALUE > 0)']);
const honestInt = domain('public.honest_int', ['(VALUE > 0)']);
const mood = type('public.mood', 'e', { casts: [sqlFunction('public.mood_cast', "SELECT pg_catalog.pg_advisory_lock(3); SELECT 'a'::public.mood")] });
const recWithDomain = type('public.rec_with_domain', 'c', { parts: [checkedInt.oid] });
const recTab = type('public.rec_tab', 'c', { parts: [checkedInt.oid] });

const catalog = new FakeCatalog({
  functions: [
    locks,
    honest,
    writer,
    sqlFunction('public.fact', 'SELECT CASE WHEN $1 <= 1 THEN 1 ELSE $1 * public.fact($1 - 1) END'),
    sqlFunction('public.ping', 'SELECT public.pong()'),
    sqlFunction('public.pong', 'SELECT public.ping(), pg_catalog.pg_notify(\'c\', \'x\')'),
    plpgsqlFunction('public.pl_rowtype', 'DECLARE r public.orders%ROWTYPE; BEGIN r.id := 1; RETURN r.id; END'),
    plpgsqlFunction('public.pl_rowtype_domain', 'DECLARE r public.rec_tab%ROWTYPE; BEGIN r.b := 5; RETURN r.a; END'),
    plpgsqlFunction('public.pl_honest', 'DECLARE x int; BEGIN SELECT count(*) INTO x FROM public.orders; RETURN x + 1; END'),
    plpgsqlFunction('public.pl_locks', 'BEGIN PERFORM pg_advisory_lock(42); RETURN 1; END'),
    plpgsqlFunction('public.pl_dynamic', "BEGIN EXECUTE 'DELETE FROM t'; RETURN 1; END"),
    plpgsqlFunction('public.pl_assign', 'DECLARE a int[]; BEGIN a[public.locks()] := 1; RETURN 1; END'),
    plpgsqlFunction('public.pl_domain_var', 'DECLARE d public.checked_int; BEGIN d := 5; RETURN d; END'),
    plpgsqlFunction('public.pl_cursor', 'DECLARE c CURSOR FOR SELECT public.locks(); BEGIN OPEN c; RETURN 1; END'),
    plpgsqlFunction('public.pl_signal', 'BEGIN IF pg_terminate_backend(1) THEN RETURN 1; END IF; RETURN 0; END'),
    sqlFunction('public.atomic_writer', "BEGIN ATOMIC\n INSERT INTO public.log (what) VALUES ('x');\n SELECT 1;\nEND", { atomic: true }),
    sqlFunction('public.atomic_return', 'RETURN 1 + 1', { atomic: true }),
    sqlFunction('public.with_default', 'SELECT $1', { defaults: "pg_catalog.set_config('work_mem', '1MB', false)" }),
    sqlFunction('public.with_domain_param', 'SELECT $1', { types: [checkedInt.oid] }),
    sqlFunction('public.secdef', 'SELECT 1', { securityDefiner: true }),
    sqlFunction('public.sets_role', 'SELECT 1', { config: ['role=admin'] }),
    sqlFunction('public.sets_search_path', 'SELECT 1', { config: ['search_path=public, pg_temp'] }),
    sqlFunction('public.pg_catalog.now', 'SELECT pg_catalog.pg_advisory_lock(1)'),
    sqlFunction('public.files', "SELECT pg_catalog.pg_read_file('/etc/passwd')"),
    sqlFunction('public.remote', "SELECT * FROM public.dblink('x', 'SELECT 1') AS t(a int)"),
    sqlFunction('public.txid', 'SELECT pg_catalog.txid_current()'),
    sqlFunction('public.seed', 'SELECT pg_catalog.setseed(0.5)'),
    sqlFunction('public.big', 'SELECT 1', { definition: null, tooLarge: true }),
    { ...nativeFunction('public.py', 'i'), language: 'plpython3u' },
    nativeFunction('public.citext_eq', 'i'),
    nativeFunction('public.c_volatile', 'v'),
    nativeFunction('public.dblink_exec', 'v'),
    nativeFunction('pg_catalog.pg_file_write', 'v'),
    nativeFunction('public.set_limit', 'v'),
    builtinFunction('now', 's'),
    sqlFunction('pg_catalog.now', 'SELECT pg_catalog.pg_advisory_lock(2)', { oid: 17000 }),
    { ...nativeFunction('public.evil_sum', 'i'), kind: 'a', language: 'internal', aggregate: [sqlFunction('public.evil_sfunc', 'SELECT pg_catalog.pg_advisory_lock(5)')] },
    { ...nativeFunction('public.honest_sum', 'i'), kind: 'a', language: 'internal', aggregate: [builtinFunction('int4pl')] },
    { ...nativeFunction('public.proc_lock', 'v'), kind: 'p', language: 'sql', definition: 'CREATE PROCEDURE public.proc_lock() LANGUAGE sql AS $$SELECT pg_catalog.pg_advisory_lock(11)$$' },
  ],
  relations: [
    relation('public.orders', 'r'),
    relation('public.log', 'r'),
    relation('public.t', 'r'),
    relation('public.mv', 'm'),
    relation('public.seq', 'S'),
    relation('public.parted', 'p'),
    relation('public.with_foreign_partition', 'p', { foreign: ['postgres_fdw'] }),
    relation('public.remote_log', 'f', { foreign: ['postgres_fdw'] }),
    relation('public.server_csv', 'f', { foreign: ['file_fdw'] }),
    relation('public.rls_t', 'r', { rowSecurity: true, policies: ['(public.locks() = 1)', "(owner = CURRENT_USER)"] }),
    relation('public.rls_honest', 'r', { rowSecurity: true, policies: ['(owner = CURRENT_USER)'] }),
    relation('public.generated_v', 'r', { readExpressions: ['public.locks()'] }),
    relation('public.rec_tab', 'r'),
    relation('public.indexed', 'r', { write: { triggers: [], rules: [], expressions: [], types: [], indexes: ['CREATE INDEX i ON public.indexed USING btree (public.locks()) WHERE (id > 0)'] } }),
    relation('public.audited', 'r', {
      write: {
        triggers: [{ fn: plpgsqlFunction('public.audit_trg', "BEGIN INSERT INTO public.log (what) VALUES (TG_OP); PERFORM pg_notify('audit', NEW.id::text); RETURN NEW; END"), definition: 'CREATE TRIGGER a AFTER INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.audit_trg()' }],
        rules: [],
        expressions: [],
        types: [],
      },
    }),
    relation('public.ruled', 'r', { write: { triggers: [], rules: ['CREATE RULE r AS ON INSERT TO public.ruled DO ALSO SELECT public.locks();'], expressions: [], types: [] } }),
    relation('public.defaulted', 'r', { write: { triggers: [], rules: [], expressions: ["nextval('public.s'::regclass)", '(public.locks() > 0)'], types: [checkedInt.oid] } }),
    relation('public.when_trigger', 'r', {
      write: { triggers: [{ fn: plpgsqlFunction('public.noop_trg', 'BEGIN RETURN NEW; END'), definition: 'CREATE TRIGGER w BEFORE UPDATE ON public.when_trigger FOR EACH ROW WHEN ((public.locks() = 1)) EXECUTE FUNCTION public.noop_trg()' }], rules: [], expressions: [], types: [] },
    }),
    relation('public.honest_audited', 'r', {
      write: { triggers: [{ fn: plpgsqlFunction('public.honest_trg', "BEGIN NEW.at := clock_timestamp(); RETURN NEW; END"), definition: 'CREATE TRIGGER h BEFORE INSERT ON public.honest_audited FOR EACH ROW EXECUTE FUNCTION public.honest_trg()' }], rules: [], expressions: ["'x'::text"], types: [] },
    }),
    view('public.honest_view', 'SELECT orders.id, lower(orders.customer) AS c FROM public.orders WHERE orders.id > 0;'),
    view('public.evil_view', 'SELECT public.locks() AS x;'),
    view('public.view_on_view', 'SELECT evil_view.x FROM public.evil_view;'),
    view('public.dblink_view', "SELECT t.a FROM public.dblink('dbname=x', 'SELECT 1') t(a integer);"),
    view('public.writer_view', 'SELECT public.writer() AS w;'),
    relation('public.shadowed', 'r'),
    view('pg_temp_3.shadowed', 'SELECT public.locks() AS x;'),
    view('pg_temp_3.pg_stat_activity', 'SELECT public.locks() AS x;'),
    relation('app.pg_authid', 'r'),
    relation('pg_catalog.pg_authid', 'r'),
    relation('pg_catalog.pg_file_settings', 'v'),
  ],
  operators: [
    operator('public.=', [nativeFunction('public.citext_eq', 'i'), builtinFunction('eqsel', 's')]),
    operator('public.===', [sqlFunction('public.evil_eq', 'SELECT pg_catalog.pg_advisory_lock(9) IS NOT NULL')]),
    operator('public.~~', [nativeFunction('public.citext_like', 'i')]),
    operator('public.#=', [nativeFunction('public.populate_record', 'i')]),
  ],
  types: [checkedInt, honestInt, mood, recWithDomain, recTab, type('public.hstore', 'b'), type('public.citext', 'b', { casts: [nativeFunction('public.citext_from_bool', 'i')] })],
});

function ctx(extra: Partial<ClassifyContext> = {}): ClassifyContext {
  return { standardConformingStrings: true, catalog, preparedStatement: () => undefined, ...extra };
}

interface Case {
  sql: string;
  classes: StatementClass[];
  flags?: StatementFlag[];
  /** a substring of one of the reasons */
  reason?: string;
}

/** The assertions used here (tap's test object has them all). */
interface Asserts {
  equal(found: unknown, wanted: unknown, message?: string): boolean;
  same(found: unknown, wanted: unknown, message?: string): boolean;
  ok(value: unknown, message?: string): boolean;
}

function check(tt: Asserts, c: Case, context = ctx()): void {
  const r = classify(c.sql, context);
  tt.equal(r.unresolvedLookups, undefined, `${c.sql}: every lookup answered`);
  const s = r.statements[0]!;
  tt.same(s.classes, [...c.classes].sort(), `${c.sql}: classes (${s.reasons.join('; ')})`);
  if (c.flags !== undefined) tt.same(s.flags.filter((f) => f !== 'multi_statement'), [...c.flags].sort(), `${c.sql}: flags`);
  if (c.reason !== undefined) tt.ok(s.reasons.some((x) => x.includes(c.reason!)), `${c.sql}: a reason mentions "${c.reason}" (${s.reasons.join('; ')})`);
}

const HONEST_READS: Case[] = [
  { sql: 'SELECT * FROM orders WHERE id = 1', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM public.orders o JOIN log l USING (id) NATURAL JOIN t', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM honest_view', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM mv, seq, parted', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM rls_honest', classes: ['read'], flags: [] },
  { sql: 'SELECT honest(1), fact(5), pl_honest()', classes: ['read'], flags: [] },
  // PL/pgSQL's parser does not know the fields of t%ROWTYPE without a catalog: read as record.
  { sql: 'SELECT pl_rowtype()', classes: ['read'], flags: [] },
  { sql: 'SELECT atomic_return()', classes: ['read'], flags: [] },
  { sql: 'SELECT honest_sum(id) FROM orders', classes: ['read'], flags: [] },
  // citext's = and ~~ are C functions that only read; citext's casts too.
  { sql: "SELECT * FROM orders WHERE email = 'x' AND email LIKE 'a%' AND email IN ('a', 'b') AND email NOT IN ('c')", classes: ['read'], flags: [] },
  { sql: "SELECT 'x'::citext, 1::honest_int, NULL::text", classes: ['read'], flags: [] },
  { sql: 'SELECT clock_timestamp(), pg_catalog.lower(x), count(*) FROM t GROUP BY x ORDER BY 1', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM app.pg_authid', classes: ['read'], flags: [] },
  { sql: 'SELECT c_volatile()', classes: ['procedural', 'read'], reason: 'volatile C function' },
];

const HIDDEN: Case[] = [
  // Functions: bodies are read, declared volatility is not trusted.
  { sql: 'SELECT locks()', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'public.locks(): pg_catalog.pg_advisory_lock()' },
  { sql: 'SELECT writer()', classes: ['procedural', 'read', 'write'], reason: 'INSERT writes public.log' },
  { sql: 'UPDATE t SET a = writer() WHERE id = 1', classes: ['procedural', 'write'] },
  { sql: 'SELECT ping()', classes: ['procedural', 'read', 'write'], flags: ['notify'], reason: 'pg_notify' },
  { sql: 'SELECT pl_locks()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT pl_dynamic()', classes: ['procedural', 'read'], flags: ['dynamic'], reason: 'EXECUTE runs SQL built at run time' },
  { sql: 'SELECT pl_assign()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT pl_domain_var()', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'domain public.checked_int' },
  { sql: 'SELECT pl_rowtype_domain()', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'domain public.checked_int' },
  { sql: 'SELECT pl_cursor()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT pl_signal()', classes: ['admin', 'read'], flags: ['signals_backend'] },
  { sql: 'SELECT atomic_writer()', classes: ['procedural', 'read', 'write'] },
  { sql: 'SELECT with_default()', classes: ['read', 'session'], flags: ['set_config'], reason: 'parameter defaults' },
  { sql: 'SELECT with_domain_param(1)', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT secdef()', classes: ['read'], flags: ['security_definer'], reason: 'SECURITY DEFINER' },
  { sql: 'SELECT sets_role()', classes: ['privilege', 'read'], reason: 'SET role' },
  { sql: 'SELECT sets_search_path()', classes: ['read'], flags: [] },
  { sql: 'SELECT files()', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT remote()', classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: 'SELECT txid(), seed()', classes: ['read'], flags: ['assigns_xid', 'setseed'] },
  { sql: 'SELECT big()', classes: ['read', 'unknown'], reason: 'too large' },
  { sql: 'SELECT py()', classes: ['read', 'unknown'], reason: 'plpython3u' },
  { sql: "SELECT dblink_exec('x', 'DROP TABLE t')", classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: "SELECT pg_file_write('f', 'x', false)", classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT set_limit(0.5)', classes: ['read', 'session'], flags: ['set_config'] },
  // A name with a dot is one name; a function in pg_catalog with an OID from 16384 is user-defined.
  { sql: 'SELECT public."pg_catalog.now"()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT now()', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'pg_catalog.now()' },
  { sql: 'SELECT pg_catalog.now()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  // Aggregates are their support functions.
  { sql: 'SELECT evil_sum(id) FROM orders', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'aggregate support function' },
  // Relations.
  { sql: 'SELECT * FROM evil_view', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'view public.evil_view' },
  { sql: 'SELECT * FROM view_on_view', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'view public.view_on_view: view public.evil_view' },
  { sql: 'SELECT * FROM dblink_view', classes: ['admin', 'read'], flags: ['dynamic', 'network'] },
  { sql: 'SELECT * FROM writer_view', classes: ['procedural', 'read', 'write'] },
  { sql: 'SELECT * FROM rls_t', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'row-level security policy on public.rls_t' },
  { sql: 'DELETE FROM rls_t WHERE id = 1', classes: ['write'], flags: ['advisory_lock', 'locks'] },
  { sql: 'COPY rls_t TO STDOUT', classes: ['export'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT * FROM remote_log', classes: ['admin', 'read'], flags: ['network'], reason: 'leaves the database' },
  { sql: 'SELECT * FROM server_csv', classes: ['admin', 'read'], flags: ['server_files'] },
  { sql: 'SELECT * FROM with_foreign_partition', classes: ['admin', 'read'], flags: ['network'] },
  { sql: 'SELECT * FROM generated_v', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  // A temporary view shadows every other relation of its name, pg_catalog's included.
  { sql: 'SELECT * FROM shadowed', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT * FROM pg_stat_activity', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT * FROM pg_temp.shadowed', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT * FROM public.shadowed', classes: ['read'], flags: [] },
  { sql: 'SELECT * FROM pg_authid', classes: ['admin', 'read'], flags: ['secrets'] },
  { sql: 'SELECT * FROM pg_file_settings', classes: ['admin', 'read'], flags: ['server_files'] },
  // Operators: every user-defined one with the symbol, in every syntactic form.
  { sql: 'SELECT 1 === 2', classes: ['procedural', 'read'], flags: ['advisory_lock', 'locks'], reason: 'operator public.===' },
  { sql: 'SELECT 1 OPERATOR(public.===) 2', classes: ['procedural', 'read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT * FROM t WHERE a === ANY (SELECT 1)', classes: ['procedural', 'read'] },
  { sql: 'SELECT * FROM t ORDER BY a USING ===', classes: ['procedural', 'read'] },
  { sql: 'SELECT 1 OPERATOR(app.+) 2', classes: ['read', 'unknown'], reason: 'not in the server' },
  // Casts and domains.
  { sql: 'SELECT 1::checked_int', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'coercion to checked_int' },
  { sql: 'SELECT CAST(1 AS public.checked_int)', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT ARRAY[1]::checked_int[]', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT 1::mood', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'cast to public.mood' },
  { sql: 'SELECT ARRAY[1]::mood[]', classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'cast to public.mood' },
  { sql: 'SELECT ROW(1, 2)::rec_with_domain', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: "SELECT * FROM json_populate_record(NULL::rec_with_domain, '{}')", classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: "SELECT * FROM json_to_record('{}') AS x(a checked_int)", classes: ['read'], flags: ['advisory_lock', 'locks'] },
  // populate_record and friends coerce every field to the record's type, named by a whole-row reference too.
  { sql: "SELECT jsonb_populate_record(t, '{}') FROM rec_tab t", classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'on rows of rec_tab' },
  { sql: "SELECT jsonb_populate_recordset(t.*, '[]') FROM rec_tab t", classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: "SELECT t #= 'b=>5'::hstore FROM rec_tab t", classes: ['read'], flags: ['advisory_lock', 'locks'], reason: 'operator #=' },
  { sql: "SELECT json_populate_record($1, '{}')", classes: ['read', 'unknown'], reason: 'a type stepgate cannot see' },
  { sql: "SELECT json_populate_record(NULL::orders, '{}')", classes: ['read'], flags: [] },
  { sql: "SELECT json_populate_record(NULL::nosuch, '{}')", classes: ['read', 'unknown'], reason: 'type nosuch is not in the server' },
  { sql: "SELECT * FROM XMLTABLE('/r' PASSING '<r/>' COLUMNS a checked_int PATH 'a')", classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: "SELECT JSON_VALUE('1', '$' RETURNING checked_int)", classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'SELECT 1::nosuchtype', classes: ['read', 'unknown'], reason: 'type nosuchtype is not in the server' },
  // Writing a table runs its triggers, rules, defaults and checks: the statement is a write already.
  { sql: 'INSERT INTO audited VALUES (1)', classes: ['write'], flags: ['notify'], reason: 'trigger on public.audited' },
  { sql: 'INSERT INTO ruled VALUES (1)', classes: ['write'], flags: ['advisory_lock', 'locks'], reason: 'rule on public.ruled' },
  { sql: 'INSERT INTO defaulted DEFAULT VALUES', classes: ['write'], flags: ['advisory_lock', 'locks'], reason: 'default or check of public.defaulted' },
  { sql: 'UPDATE when_trigger SET a = 1 WHERE id = 2', classes: ['write'], flags: ['advisory_lock', 'locks'], reason: 'WHEN condition' },
  { sql: 'COPY audited FROM STDIN', classes: ['import', 'write'], flags: ['notify'] },
  { sql: 'INSERT INTO honest_audited VALUES (1)', classes: ['write'], flags: [] },
  { sql: 'INSERT INTO indexed VALUES (1)', classes: ['write'], flags: ['advisory_lock', 'locks'], reason: 'index expression on public.indexed' },
  { sql: 'TRUNCATE audited', classes: ['write'], flags: ['notify'] },
  // Maintenance that analyses or rebuilds indexes evaluates their expressions (not triggers).
  { sql: 'ANALYZE indexed', classes: ['maintenance'], flags: ['advisory_lock', 'locks'] },
  { sql: 'REINDEX TABLE indexed', classes: ['maintenance'], flags: ['advisory_lock', 'locks'] },
  { sql: 'VACUUM audited', classes: ['maintenance'], flags: [] },
  // Planning runs hidden code too (user functions on constants, views, policies); the statement itself does not run.
  { sql: 'EXPLAIN SELECT locks()', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'EXPLAIN SELECT * FROM evil_view', classes: ['read'], flags: ['advisory_lock', 'locks'] },
  { sql: 'EXPLAIN DELETE FROM audited', classes: ['read'], flags: [] },
  { sql: 'EXPLAIN SELECT * FROM pg_authid', classes: ['read'], flags: [] },
  { sql: 'EXPLAIN SELECT writer()', classes: ['procedural', 'read', 'write'] },
  // Procedures carry their bodies' flags.
  { sql: 'CALL proc_lock()', classes: ['procedural'], flags: ['advisory_lock', 'locks'] },
  // Unknown to the catalog: never a read.
  { sql: 'SELECT nosuch()', classes: ['read', 'unknown'], reason: 'not in the server' },
  { sql: 'SELECT * FROM nosuch', classes: ['read', 'unknown'], reason: 'may be created in this transaction' },
];

t.test('honest reads stay reads', async (tt) => {
  for (const c of HONEST_READS) check(tt as unknown as Asserts, c);
});

t.test('every path to user code is found', async (tt) => {
  for (const c of HIDDEN) check(tt as unknown as Asserts, c);
});

t.test('hidden effects are not counted for code that is only defined', async (tt) => {
  check(tt as unknown as Asserts, { sql: 'CREATE VIEW v2 AS SELECT locks(), * FROM evil_view', classes: ['ddl'], flags: [] });
  check(tt as unknown as Asserts, { sql: 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$SELECT locks()$$', classes: ['ddl'], flags: [] });
});

t.test('PREPARE with declared types coerces at EXECUTE; Parse can declare types too', async (tt) => {
  const r = classify('PREPARE p(checked_int) AS SELECT $1', ctx());
  tt.same(r.statements[0]!.classes, ['session'], 'PREPARE itself runs nothing');
  const prepared = r.statements[0]!.prepare!.statement;
  tt.same(prepared.flags, ['advisory_lock', 'locks'], 'the prepared statement carries the checks');
  const exec = classify("EXECUTE p('5')", ctx({ preparedStatement: (name) => (name === 'p' ? prepared : undefined) })).statements[0]!;
  tt.same(exec.flags, ['advisory_lock', 'locks']);

  const parse = classify('SELECT $1', withParameterTypes(ctx(), [checkedInt.oid])).statements[0]!;
  tt.same(parse.flags, ['advisory_lock', 'locks'], 'a Parse with a domain-typed parameter');
  tt.ok(parse.reasons.some((x) => x.startsWith('parameter $1')));
  tt.same(classify('SELECT $1', withParameterTypes(ctx(), [0, 23])).statements[0]!.flags, [], 'unspecified and built-in types');
  tt.equal(withParameterTypes(ctx(), [0, 0]).parameterTypes, undefined, 'all unspecified: the same context');
});

t.test('database-wide hazards: unsafe operator-family members and implicit casts', async (tt) => {
  const evilCmp = sqlFunction('public.evil_cmp', 'SELECT pg_catalog.pg_advisory_lock(99)::text::int');
  const hazardous = new FakeCatalog({
    relations: [relation('public.t', 'r')],
    hazards: { opfamilies: [{ family: 'public.evil_ops (btree)', fn: evilCmp }, { family: 'public.citext_ops (btree)', fn: nativeFunction('public.citext_cmp', 'i') }], casts: [] },
  });
  const h = ctx({ catalog: hazardous });
  for (const sql of ['SELECT a FROM t ORDER BY a', 'DELETE FROM t WHERE a = 1', 'SELECT t.* FROM t']) {
    const s = classify(sql, h).statements[0]!;
    tt.ok(s.classes.includes('unknown'), `${sql}: unknown`);
    tt.ok(s.reasons.some((x) => x.includes('operator family public.evil_ops')), `${sql}: names the family`);
  }
  for (const sql of ['SELECT 1', 'VALUES (1)', "SELECT 'a' || 'b' ORDER BY 1"]) {
    tt.same(classify(sql, h).statements[0]!.classes, ['read'], `${sql}: no value of a user-defined type can appear, so a family for one cannot run`);
  }
  const builtinFamily = new FakeCatalog({ hazards: { opfamilies: [{ family: 'public.evil_int_ops (btree)', fn: evilCmp, builtinTypes: true }], casts: [] } });
  tt.ok(classify('SELECT 1', ctx({ catalog: builtinFamily })).statements[0]!.classes.includes('unknown'), 'a member for built-in types can run for any statement');
  tt.same(classify('SHOW work_mem', h).statements[0]!.classes, ['session'], 'statements that evaluate nothing are not affected');
  const safe = new FakeCatalog({ relations: [relation('public.t', 'r')], hazards: { opfamilies: [{ family: 'public.citext_ops (btree)', fn: nativeFunction('public.citext_cmp', 'i') }], casts: [] } });
  tt.same(classify('SELECT a FROM t ORDER BY a', ctx({ catalog: safe })).statements[0]!.classes, ['read'], 'C members that only read are safe');

  const casts = new FakeCatalog({ types: [], hazards: { opfamilies: [], casts: [{ source: 'text', target: 'mood', fn: evilCmp }] } });
  tt.same(classify("SELECT 'x'", ctx({ catalog: casts })).statements[0]!.classes, ['read'], 'a cast into a user-defined type runs only where one appears');
  const c = classify("SELECT 'x'::public.mood", ctx({ catalog: casts })).statements[0]!;
  tt.ok(c.classes.includes('unknown'));
  tt.ok(c.reasons.some((x) => x.includes('implicit cast from text to mood')));
});

t.test('function bodies are parsed with the caller\'s standard_conforming_strings', async (tt) => {
  const c = new FakeCatalog({ functions: [sqlFunction('public.bs', "SELECT 'a\\' AS x")] });
  tt.same(classify('SELECT bs()', ctx({ catalog: c })).statements[0]!.classes, ['read'], 'on: a backslash is a character');
  const off = classify('SELECT bs()', ctx({ catalog: c, standardConformingStrings: false })).statements[0]!;
  tt.same(off.classes, ['read', 'unknown'], 'off: the server may read the body differently');
  tt.ok(off.reasons.some((x) => x.includes('standard_conforming_strings')));
});

t.test('lookups not answered yet are unknown and reported', async (tt) => {
  const pending = new FakeCatalog({ relations: [relation('public.t', 'r')] });
  pending.unknownKinds.add('relations');
  const r = classify('SELECT * FROM t', ctx({ catalog: pending }));
  tt.same(r.statements[0]!.classes, ['read', 'unknown']);
  tt.same(r.unresolvedLookups, [{ kind: 'relations', schema: null, name: 't' }]);
  pending.unknownKinds.clear();
  tt.same(classify('SELECT * FROM t', ctx({ catalog: pending })).statements[0]!.classes, ['read']);

  const names = new FakeCatalog();
  names.unknownKinds.add('names');
  const f = classify('SELECT lower(x) FROM t', ctx({ catalog: names }));
  tt.ok(f.statements[0]!.classes.includes('unknown'), 'until the name lists are loaded nothing is trusted');
  tt.ok(f.unresolvedLookups?.some((k) => k.kind === 'names'));
});

t.test('recursion: cycles add nothing; too deep is unknown', async (tt) => {
  check(tt as unknown as Asserts, { sql: 'SELECT fact(3)', classes: ['read'], flags: [] });
  check(tt as unknown as Asserts, { sql: 'SELECT pong()', classes: ['procedural', 'read', 'write'], flags: ['notify'] });
  const deep = new FakeCatalog({ relations: [relation('public.base', 'r')] });
  for (let i = 0; i < 40; i++) deep.relations.push(view(`public.v${i}`, i === 0 ? 'SELECT * FROM public.base;' : `SELECT * FROM public.v${i - 1};`));
  tt.same(classify('SELECT * FROM v10', ctx({ catalog: deep })).statements[0]!.classes, ['read'], '10 levels of views');
  const s = classify('SELECT * FROM v39', ctx({ catalog: deep })).statements[0]!;
  tt.same(s.classes, ['read', 'unknown'], '40 levels');
  tt.ok(s.reasons.some((x) => x.includes('levels deep')));
});

t.test('recorded answers replay to the same classification (as in the classification worker)', async (tt) => {
  /** Classifies through a recording context, then again from a structured clone of the snapshot and answers. */
  const replay = (sql: string, live: ClassifyContext): { direct: unknown; replayed: unknown; missing: number } => {
    const recorder = recordingContext(live);
    const direct = classify(sql, recorder.ctx).statements;
    const answers = new Map(recorder.lookups.map(([method, args, answer]) => [lookupKey(method, args), answer] as const));
    const { ctx: replayCtx, missing } = replayContext(structuredClone(snapshotContext(live)), structuredClone(answers), {});
    return { direct, replayed: classify(sql, replayCtx).statements, missing: missing.size };
  };
  for (const c of [...HONEST_READS, ...HIDDEN]) {
    const r = replay(c.sql, ctx());
    tt.same(r.replayed, r.direct, `${c.sql}: replayed`);
    tt.equal(r.missing, 0, `${c.sql}: every lookup was recorded`);
  }
  const typed = replay('SELECT $1', withParameterTypes(ctx(), [checkedInt.oid]));
  tt.same(typed.replayed, typed.direct, 'parameter types');
  tt.ok((typed.direct as { functions: unknown[]; classes: string[] }[])[0]!.classes.length > 0);
});

t.test('the cache re-checks catalog answers', async (tt) => {
  const live = new FakeCatalog({ functions: [sqlFunction('public.f', 'SELECT 1')], relations: [relation('public.t', 'r')] });
  const c = ctx({ catalog: live });
  const cache = new ClassificationCache();
  tt.same(cache.classify('SELECT f() FROM t', c).statements[0]!.classes, ['read']);
  tt.same(cache.classify('SELECT f() FROM t', c).statements[0]!.classes, ['read']);
  tt.equal(cache.stats().exactHits, 1);
  // CREATE OR REPLACE FUNCTION: the same name, an evil body.
  live.functions = [sqlFunction('public.f', 'SELECT pg_catalog.pg_advisory_lock(1)')];
  live.changed();
  tt.same(cache.classify('SELECT f() FROM t', c).statements[0]!.flags, ['advisory_lock', 'locks'], 'the new body is seen');
  // An equal answer in a new object (a refresh) still holds.
  const stale = cache.stats().stale;
  live.changed();
  cache.classify('SELECT f() FROM t', c);
  tt.equal(cache.stats().stale, stale, 'a refresh with the same content is not stale');
  // A result classified without a catalog is not reused with one.
  const plain = new ClassificationCache();
  plain.classify('SELECT * FROM t', { standardConformingStrings: true });
  plain.classify('SELECT * FROM t', c);
  tt.ok(plain.stats().stale >= 1);
  tt.equal(plain.stats().exactHits, 0);
  // Unresolved results are not stored.
  live.unknownKinds.add('relations');
  live.changed();
  const pendingCache = new ClassificationCache();
  pendingCache.classify('SELECT * FROM t', c);
  tt.equal(pendingCache.stats().entries, 0);
});

t.test('deep trees never throw', async (tt) => {
  for (const sql of [
    `SELECT ${Array(3000).fill('1').join('+')}`,
    `SELECT ${'(SELECT '.repeat(1000)}1${')'.repeat(1000)}`,
    `SELECT ${'('.repeat(5000)}1${')'.repeat(5000)}`,
    `SELECT ${Array(3000).fill("'a'").join(' || ')}`,
  ]) {
    const r = classify(sql, ctx());
    const s = r.statements[0]!;
    tt.ok(s.classes.length > 0, `${sql.slice(0, 30)}...: ${s.classes.join(',')} (${s.reasons[0] ?? ''})`);
    if (s.classes.includes('unknown')) tt.ok(s.reasons.length > 0, 'with a reason');
  }
  tt.same(classify(`SELECT ${Array(3000).fill('1').join('+')}`, ctx()).statements[0]!.classes, ['read'], 'a long operator chain is walked iteratively');
});
