/**
 * Attacks: names that the server resolves differently from stepgate. A function whose name contains a dot,
 * overloads placed in pg_catalog (never in the list of shadowed names), search_path, temporary objects (the
 * catalog stepgate asks runs on another connection and cannot see them; pg_temp is searched before pg_catalog
 * for relations and types), and the SQL/JSON names that the PostgreSQL 18 grammar of libpg-query reads as
 * syntax while a PostgreSQL 15 server resolves them through search_path.
 *
 * Temporary objects live and die with the session, so the attacker creates them on the same connection: this
 * file's rules are reads-only plus a step-up (approved at once by the test's broker) for creating views,
 * functions and domains, standing for the approval the creation needed.
 *
 * Stopped: every attack (42501 where the classifier sees the object, 25006 where read-only mode stops it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { Hold, StepUpBroker } from '../../src/stepup/types.js';
import { attack, functionCall, lookup, READS_ONLY_RULES, sqlAttack, startLab, stepsAttack, type Lab } from './harness.js';

/** Approves every hold at once: the attacker's objects were approved earlier. */
class ApproveAll implements StepUpBroker {
  hold(): Hold {
    return { challengeId: null, url: null, outcome: Promise.resolve({ status: 'approved', approvers: [{ user: 'dba', credentialId: null }], grant: false }), end() {} };
  }
  connectionClosed(): void {}
}

const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-security-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.copyFileSync(path.join(READS_ONLY_RULES, '00-reads-only.yaml'), path.join(rulesDir, '00-reads-only.yaml'));
fs.writeFileSync(
  path.join(rulesDir, '10-approved-creation.yaml'),
  `rules:
  - name: approved-creation
    description: Stands for the approval the attacker's temporary objects needed (names.test.ts).
    match: {command: [CREATE VIEW, CREATE FUNCTION, CREATE DOMAIN]}
    action: step-up
`,
);

const evilFn = (signature: string, returns: string, body: string): string =>
  `CREATE FUNCTION ${signature} RETURNS ${returns} LANGUAGE plpgsql VOLATILE AS $$ BEGIN PERFORM public.evil('${signature.replace(/'/g, "''")}'); RETURN ${body}; END $$;`;

const lab: Lab = await startLab(t, {
  kind: 'names',
  stepgate: { rulesDir, stepUp: new ApproveAll() },
  setup: `
${evilFn('public."pg_catalog.now"()', 'timestamptz', 'pg_catalog.now()')}
${evilFn('pg_catalog.lower(int)', 'text', '$1::pg_catalog.text')}
${evilFn('public.length(int)', 'int', '$1')}
${evilFn('public.upper(text)', 'text', '$1')}
${evilFn('public.text_plus(a text, b text)', 'text', 'a || b')}
CREATE OPERATOR pg_catalog.+ (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_plus);
CREATE FUNCTION public.fc_stable() RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN PERFORM public.evil('STABLE wrapper by FunctionCall'); RETURN 1; END $$;

CREATE SCHEMA attacker;
CREATE TABLE public.orders (id int);
CREATE VIEW attacker.orders AS SELECT public.evil('attacker.orders, a view found through search_path') AS id;

-- Names that PostgreSQL 16-18 made SQL/JSON syntax; a PostgreSQL 15 server resolves them as functions.
${evilFn('public.json_array(a int, b int)', 'int', 'a + b')}
${evilFn('public.json_array()', 'int', '0')}
${evilFn('public.json_object(k text, v int)', 'int', 'v')}
${evilFn('public.json_object()', 'int', '0')}
${evilFn('public.json(x text)', 'text', 'x')}
${evilFn('public.merge_action()', 'text', "'INSERT'")}
${evilFn('public.json_scalar(x int)', 'text', 'x::text')}
${evilFn('public.json_serialize(x text)', 'text', 'x')}
${evilFn('public.json_arrayagg(x int)', 'text', 'x::text')}
${evilFn('public.json_exists(j jsonb, p text)', 'boolean', 'true')}
${evilFn('public.json_value(j jsonb, p text)', 'text', 'p')}
${evilFn('public.json_query(j jsonb, p text)', 'text', 'p')}
`,
});
const lowerIntOid = Number(await lookup(lab, 'lower(int)', `SELECT 'pg_catalog.lower(int)'::regprocedure::oid`));
const stableOid = Number(await lookup(lab, 'fc_stable()', `SELECT 'public.fc_stable()'::regprocedure::oid`));


// ───────────────────────────── dots and pg_catalog ─────────────────────────────

sqlAttack(lab, 'function whose name contains a dot: "pg_catalog.now"()', 'SELECT "pg_catalog.now"()');
sqlAttack(lab, 'function whose name contains a dot, schema-qualified: public."pg_catalog.now"()', 'SELECT public."pg_catalog.now"()');
sqlAttack(lab, 'volatile overload placed in pg_catalog: lower(int)', 'SELECT lower(42)');
sqlAttack(lab, 'volatile overload placed in pg_catalog, qualified: pg_catalog.lower(int)', 'SELECT pg_catalog.lower(42)');
attack(lab, {
  name: 'volatile overload placed in pg_catalog, by FunctionCall (OID)',
  run: (c) => c.send(functionCall(lowerIntOid, ['42'])),
});
// A FunctionCall is judged as SELECT schema.name(...); a name the catalog cache does not know yet is
// procedural, and FunctionCall does not wait for a lookup. So it is refused only while nobody has taught the
// cache the function's (declared) volatility, which the next attack does. Keep this one first.
attack(lab, {
  name: 'FunctionCall of a STABLE function that calls a volatile one (its volatility not looked up yet)',
  run: (c) => c.send(functionCall(stableOid, [])),
});
attack(lab, {
  name: 'FunctionCall of a STABLE function that calls a volatile one, after a harmless query made stepgate look it up',
  run: async (c) => {
    await c.query('SELECT public.fc_stable() WHERE false');
    await c.send(functionCall(stableOid, []));
  },
});
sqlAttack(lab, 'operator overload placed in pg_catalog: text + text', `SELECT 'a'::text + 'b'::text`);
sqlAttack(lab, 'operator overload placed in pg_catalog, OPERATOR(pg_catalog.+)', `SELECT 'a'::text OPERATOR(pg_catalog.+) 'b'::text`);
sqlAttack(lab, 'overload in public with a better-matching argument type: length(int)', 'SELECT length(42)');

// ───────────────────────────── search_path ─────────────────────────────

sqlAttack(lab, 'SET search_path putting public before pg_catalog, then a shadowed built-in', 'SET search_path = public, pg_catalog; SELECT upper(\'a\')');
stepsAttack(lab, 'SET search_path to a schema with a same-named view', ['SET search_path = attacker', 'SELECT * FROM orders'], {
});

// ───────────────────────────── temporary objects ─────────────────────────────

stepsAttack(
  lab,
  'temporary view shadowing a pg_catalog view (pg_temp comes first for relations)',
  [`CREATE TEMP VIEW pg_roles AS SELECT public.evil('temporary view pg_roles') AS rolname`, 'SELECT rolname FROM pg_roles'],
  {},
);
stepsAttack(
  lab,
  'temporary domain shadowing a built-in type name (pg_temp comes first for types): \'x\'::text',
  [`CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (public.evil_bool('temporary domain text'))`, `SELECT 'x'::text`],
  {},
);
stepsAttack(
  lab,
  'temporary STABLE function, qualified with pg_temp',
  [`CREATE FUNCTION pg_temp.tfn() RETURNS int LANGUAGE sql STABLE AS $$ SELECT public.evil('temporary function') $$`, 'SELECT pg_temp.tfn()'],
);

// ───────────────────────────── SQL/JSON names of newer grammars ─────────────────────────────

sqlAttack(lab, 'json_array(1, 2): JSON_ARRAY constructor in the grammar, public.json_array(int, int) on the server', 'SELECT json_array(1, 2)');
sqlAttack(lab, 'JSON_ARRAY() without arguments', 'SELECT JSON_ARRAY()');
sqlAttack(lab, 'json_object(\'k\', 1): pg_catalog.json_object in the grammar, public.json_object(text, int) on the server', `SELECT json_object('k', 1)`);
sqlAttack(lab, 'JSON_OBJECT() without arguments', 'SELECT JSON_OBJECT()');
sqlAttack(lab, 'json(\'x\'::text)', `SELECT json('x'::text)`, {
  note: "json('x') with an untyped literal is a function-style cast to the type json on the server: the argument must be typed to reach public.json(text)",
});
sqlAttack(lab, 'merge_action() outside MERGE', 'SELECT merge_action()');
sqlAttack(lab, 'json_scalar(1)', 'SELECT json_scalar(1)');
sqlAttack(lab, 'json_serialize(\'x\')', `SELECT json_serialize('x')`);
sqlAttack(lab, 'json_arrayagg(x): an aggregate in the grammar, a plain function per row on the server', 'SELECT json_arrayagg(x) FROM generate_series(1, 2) x', {
});
sqlAttack(lab, 'json_exists(jsonb, path)', `SELECT json_exists('{}'::jsonb, '$.a')`);
sqlAttack(lab, 'json_value(jsonb, path)', `SELECT json_value('{}'::jsonb, '$.a')`);
sqlAttack(lab, 'json_query(jsonb, path)', `SELECT json_query('{}'::jsonb, '$.a')`);
