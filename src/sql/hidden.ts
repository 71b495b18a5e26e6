/**
 * Code a statement runs without naming it, judged from the schema catalog (ClassifyContext.catalog).
 *
 * Trust model:
 * - Built-ins (OID below 16384, created by initdb) and functions in language c or internal (only superusers
 *   create those) do what they declare: stepgate's curated table for what volatility does not say
 *   (functions.ts: files, backends, dblink, advisory locks ...), else their declared volatility.
 * - Functions in sql and plpgsql are read: their bodies are classified with the same classifier, recursively
 *   (BEGIN ATOMIC bodies and PL/pgSQL through pg_get_functiondef). Their declared volatility is not trusted:
 *   PostgreSQL does not check it. Also part of a function: its parameter defaults, coercions to its domain-typed
 *   parameters and result, its SET clauses (role, session_authorization, superuser-only settings) and
 *   SECURITY DEFINER.
 * - Functions in any other language (plpython3u, plperl, ...) cannot be read: `unknown`.
 * - Aggregates are what their support functions are (pg_proc marks every aggregate immutable).
 * - Reading a view runs its query; reading a table with row-level security runs its policies' expressions;
 *   reading a foreign table (or a table with foreign partitions) leaves the database (`admin`, `network`);
 *   materialized views, sequences, plain, partitioned and inherited tables are plain reads.
 * - Coercion to a type runs the checks of the domains it involves (the type itself, a domain's base, array
 *   elements, composite columns) and the functions of user-defined casts into it.
 * - An operator symbol is safe when every user-defined operator with that symbol (any schema) is: its
 *   function, its estimators, its commutator's and negator's functions.
 * - Database-wide hazards (user code the server runs with no syntax naming it), see hazardEffects().
 *
 * Effects are memoized per object for one classification (TextEnvironment.hidden); a recursive function adds
 * nothing new; hidden code nested more than MAX_HIDDEN_DEPTH levels deep is `unknown`. A lookup the catalog
 * has not answered yet makes the code `unknown` (the caller looks it up and classifies again).
 */
import { MAX_HIDDEN_DEPTH, type TextEnvironment } from './analysis.js';
import { builtinRelationEffects } from './builtin-relations.js';
import { SUPERUSER_SETTINGS } from './builtin-settings.js';
import { FIRST_NORMAL_OID, type DatabaseHazards, type FunctionFacts, type OperatorFacts, type RelationFacts, type RelationWriteFacts, type TypeFacts } from './catalog.js';
import { Effects } from './effects.js';
import { leavesDatabase, lookupBuiltin, nativeVerdict, type FunctionVerdict } from './functions.js';
import { parsePlpgsql } from './parser.js';
import { plpgsqlContents } from './plpgsql.js';
import type { AnyNode } from './walker.js';

/** `schema.name` for reasons, quoting what would read differently unquoted (`public."pg_catalog.now"`). */
export function displayName(schema: string | null, name: string): string {
  return schema === null ? ident(name) : `${ident(schema)}.${ident(name)}`;
}

function ident(s: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(s) ? s : `"${s.replace(/"/g, '""')}"`;
}

/** Operators are symbols: never quoted. */
function operatorName(schema: string | null, symbol: string): string {
  return schema === null ? symbol : `${ident(schema)}.${symbol}`;
}

function unknown(reason: string): Effects {
  const e = new Effects();
  e.addClass('unknown', reason);
  e.changesParsing = true;
  return e;
}

/** Effects for a lookup the catalog has not answered (yet). */
export function pending(what: string): Effects {
  return unknown(`${what} is not known yet: it has to be looked up in the server's catalog`);
}

function memo(env: TextEnvironment, key: string, compute: () => Effects): Effects {
  return env.hidden.run(key, compute, () => unknown(`hidden code nested more than ${MAX_HIDDEN_DEPTH} levels deep`), () => new Effects());
}

export function verdictEffects(v: FunctionVerdict, shown: string): Effects {
  const e = new Effects();
  const reason = v.reason === null ? undefined : `${shown} ${v.reason}`;
  for (const c of v.classes) e.addClass(c, c === 'read' ? undefined : reason);
  for (const f of v.flags) e.addFlag(f, reason);
  if (v.changesParsing) e.changesParsing = true;
  // Argument rules (sequences, set_config) need the arguments: hidden, they could be anything.
  if (v.argumentRule === 'sequence-write') e.addReason(`${shown} changes a sequence`);
  if (v.argumentRule === 'set_config') {
    e.addClass('privilege', `${shown} changes a setting that is not known (could be role)`);
    e.changesParsing = true;
  }
  return e;
}

/** Parses and classifies a text of hidden code; its statements' effects. */
function textEffects(env: TextEnvironment, sql: string, what: string): Effects {
  env.hiddenLevel++;
  try {
    const read = env.analyzeHiddenText(sql);
    if ('error' in read) return unknown(`${what} cannot be read: ${read.error}`);
    const e = new Effects();
    for (const s of read.statements) e.mergeStatement(s);
    return e;
  } finally {
    env.hiddenLevel--;
  }
}

/** `SELECT expr` for each expression. */
function expressionEffects(env: TextEnvironment, expressions: readonly string[], what: string): Effects {
  const e = new Effects();
  for (const x of expressions) e.merge(textEffects(env, `SELECT ${x}`, what));
  return e;
}

// ---- functions ------------------------------------------------------------------------------------------

/** What calling the function does (memoized by OID). */
export function functionEffects(env: TextEnvironment, f: FunctionFacts): Effects {
  return memo(env, `f${f.oid}`, () => computeFunction(env, f));
}

function computeFunction(env: TextEnvironment, f: FunctionFacts): Effects {
  const shown = `${displayName(f.schema, f.name)}()`;
  if (f.oid < FIRST_NORMAL_OID) return verdictEffects(lookupBuiltin(f.name) ?? nativeVerdict(f.name, f.volatility, true), shown);
  const e = new Effects();
  if (f.kind === 'a') {
    if (f.aggregate === undefined) return unknown(`aggregate ${shown}: its support functions are not known`);
    for (const s of f.aggregate) e.merge(functionEffects(env, s), `aggregate support function ${displayName(s.schema, s.name)}()`);
  } else {
    const language = f.language.toLowerCase();
    if (language === 'c' || language === 'internal') {
      e.merge(verdictEffects(nativeVerdict(f.name, f.volatility, false), shown));
    } else if (f.tooLarge) {
      return unknown(`${shown}: its definition is too large to read`);
    } else if (language === 'sql') {
      e.merge(sqlBodyEffects(env, f, shown));
    } else if (language === 'plpgsql') {
      e.merge(plpgsqlEffects(env, f, shown));
    } else {
      e.addClass('unknown', `${shown} is written in ${f.language}, which stepgate cannot read`);
      e.changesParsing = true;
    }
  }
  if (f.defaults !== null) e.merge(textEffects(env, `SELECT ${f.defaults}`, `the parameter defaults of ${shown}`), 'parameter defaults');
  for (const oid of f.types) e.merge(typeOidEffects(env, oid));
  for (const setting of f.config) {
    const name = setting.slice(0, Math.max(0, setting.indexOf('='))).toLowerCase();
    if (name === 'role' || name === 'session_authorization') e.addClass('privilege', `${shown} runs with SET ${name}`);
    else if (SUPERUSER_SETTINGS.has(name)) e.addClass('admin', `${shown} runs with SET ${name}, a superuser-only setting`);
  }
  if (f.securityDefiner) e.addFlag('security_definer', `${shown} is SECURITY DEFINER: it runs with its owner's privileges`);
  return e;
}

/** The body of a function in language sql: BEGIN ATOMIC (parsed with the definition) or its source text. */
function sqlBodyEffects(env: TextEnvironment, f: FunctionFacts, shown: string): Effects {
  if (f.definition === null) return unknown(`${shown}: its definition is not known`);
  const create = env.parseHiddenStatement(f.definition)?.CreateFunctionStmt as AnyNode | undefined;
  if (create === undefined) return unknown(`${shown}: its definition cannot be read`);
  const body = create.sql_body as AnyNode | undefined;
  const e = new Effects();
  if (body !== undefined) {
    env.hiddenLevel++;
    try {
      for (const node of atomicStatements(body)) e.mergeStatement(env.analyzeHiddenNode(node));
    } finally {
      env.hiddenLevel--;
    }
    return e;
  }
  const as = ((create.options as AnyNode[] | undefined) ?? [])
    .map((o) => o.DefElem as AnyNode | undefined)
    .find((d) => d?.defname === 'as');
  const items = ((as?.arg as AnyNode | undefined)?.List as AnyNode | undefined)?.items as AnyNode[] | undefined;
  const source = (items?.[0]?.String as AnyNode | undefined)?.sval;
  if (typeof source !== 'string') return unknown(`${shown}: its body cannot be found in its definition`);
  const misread = misreadBody(env, source, shown);
  if (misread) return misread;
  return textEffects(env, source, `the body of ${shown}`);
}

/** Statements of a BEGIN ATOMIC body (`List` of a `List` of statements) or a single RETURN. */
function atomicStatements(body: AnyNode): AnyNode[] {
  if (body.ReturnStmt !== undefined) return [body];
  const outer = ((body.List as AnyNode | undefined)?.items as AnyNode[] | undefined) ?? [];
  const out: AnyNode[] = [];
  for (const item of outer) {
    const inner = (item.List as AnyNode | undefined)?.items as AnyNode[] | undefined;
    if (inner !== undefined) out.push(...inner);
    else out.push(item);
  }
  return out;
}

/**
 * A function body in text form is parsed when the function runs, with the caller's standard_conforming_strings:
 * with it off, a backslash may make the server read the body differently from stepgate.
 */
function misreadBody(env: TextEnvironment, body: string, shown: string): Effects | null {
  if (env.ctx.standardConformingStrings !== false || !body.includes('\\')) return null;
  return unknown(`${shown}: standard_conforming_strings is off and its body has a backslash: the server may read it differently`);
}

function plpgsqlEffects(env: TextEnvironment, f: FunctionFacts, shown: string): Effects {
  if (f.definition === null) return unknown(`${shown}: its definition is not known`);
  const misread = misreadBody(env, f.definition, shown);
  if (misread) return misread;
  let parsed = parsePlpgsql(f.definition);
  // Without a catalog, PL/pgSQL's parser does not know the fields of `t%ROWTYPE` variables: read them as
  // `record` (which allows any field), keeping their declared types for the coercions.
  const rowTypes: string[] = [];
  if (!parsed.ok && parsed.message.includes('is not a known variable')) {
    const retyped = f.definition.replace(/([A-Za-z_"][\w."$]*)\s*%\s*rowtype\b/gi, (_, t: string) => {
      rowTypes.push(`${t}%rowtype`);
      return 'record';
    });
    parsed = parsePlpgsql(retyped);
  }
  if (!parsed.ok) return unknown(`${shown}: its PL/pgSQL cannot be read: ${parsed.message}`);
  const contents = plpgsqlContents(parsed.tree);
  const e = new Effects();
  for (const text of contents.texts) e.merge(textEffects(env, text, `a statement of ${shown}`));
  for (const t of [...contents.types, ...rowTypes]) e.merge(declaredTypeEffects(env, t, shown));
  for (const d of contents.dynamic) {
    e.addClass('procedural', `${shown}: ${d}`);
    e.addFlag('dynamic');
    e.changesParsing = true;
  }
  if (contents.transactionControl) e.addClass('transaction', `${shown} commits or rolls back the transaction`);
  for (const err of contents.errors) e.addClass('unknown', `${shown}: ${err}`);
  return e;
}

/** A PL/pgSQL variable's declared type: assigning to it coerces to that type. */
function declaredTypeEffects(env: TextEnvironment, typname: string, shown: string): Effects {
  // `t.col%TYPE` and `t%ROWTYPE`: the type of a table's column or row; the row type covers both.
  const percent = typname.indexOf('%');
  let text = typname;
  if (percent >= 0) {
    const base = typname.slice(0, percent);
    const lastDot = typname.slice(percent).toLowerCase().startsWith('%type') ? base.lastIndexOf('.') : -1;
    text = lastDot > 0 ? base.slice(0, lastDot) : base;
  }
  return textEffects(env, `SELECT NULL::${text}`, `a variable type of ${shown}`);
}

// ---- function calls -------------------------------------------------------------------------------------

export interface CallResolution {
  /** The built-in's verdict when the call may be the built-in (then its argument rules apply too). */
  builtin: FunctionVerdict | null;
  /** What the other candidates do (null: nothing). */
  effects: Effects | null;
}

/**
 * A call of `schema.name(...)` (schema null: unqualified) with a catalog: every function it could resolve to,
 * whatever the search_path (unqualified: any schema but the temporary ones).
 */
export function resolveCall(env: TextEnvironment, schema: string | null, name: string): CallResolution {
  const shown = `${displayName(schema, name)}()`;
  // dblink and postgres_fdw functions, in whatever schema the extension was installed.
  const remote = leavesDatabase(name);
  if (remote) return { builtin: remote, effects: null };
  const maybeBuiltin = schema === null || schema === 'pg_catalog';
  const status = env.lookup({ kind: 'names', of: 'function', name });
  if (status === undefined) return { builtin: null, effects: pending(`function ${shown}`) };
  if (maybeBuiltin && status === 'trusted') {
    const b = lookupBuiltin(name);
    if (b) return { builtin: b, effects: null };
  }
  if (status === 'none') return { builtin: null, effects: unknown(`${shown} is not in the server's catalog (it may be created in this transaction)`) };
  const candidates = env.lookup({ kind: 'functions', schema, name });
  if (candidates === undefined) return { builtin: null, effects: pending(`function ${shown}`) };
  if (candidates.length === 0) return { builtin: null, effects: unknown(`${shown} is not in the server's catalog (it may be created in this transaction)`) };
  let builtin: FunctionVerdict | null = null;
  const e = new Effects();
  for (const c of candidates) {
    if (c.oid < FIRST_NORMAL_OID) {
      const b = lookupBuiltin(c.name);
      if (b) builtin = b;
      else e.merge(verdictEffects(nativeVerdict(c.name, c.volatility, true), `${displayName(c.schema, c.name)}()`));
    } else {
      e.merge(functionEffects(env, c), `${displayName(c.schema, c.name)}()`);
    }
  }
  return { builtin, effects: e.empty ? null : e };
}

/** CALL of a procedure: its candidates' bodies (the CALL itself is procedural anyway). */
export function procedureEffects(env: TextEnvironment, schema: string | null, name: string): Effects {
  const shown = `${displayName(schema, name)}()`;
  const candidates = env.lookup({ kind: 'functions', schema, name });
  if (candidates === undefined) return pending(`procedure ${shown}`);
  const e = new Effects();
  for (const c of candidates) if (c.kind === 'p') e.merge(functionEffects(env, c), `${displayName(c.schema, c.name)}()`);
  return e;
}

// ---- relations ------------------------------------------------------------------------------------------

/**
 * What reading `schema.name` runs (schema null: any relation of that name, temporary ones included).
 * `planning`: only planned (plain EXPLAIN): built-in relations disclose nothing then.
 */
export function relationReadEffects(env: TextEnvironment, schema: string | null, name: string, planning = false): Effects | null {
  const shown = displayName(schema, name);
  const candidates = env.lookup({ kind: 'relations', schema, name });
  if (candidates === undefined) return pending(`relation ${shown}`);
  if (candidates.length === 0) return unknown(`relation ${shown} is not in the server's catalog (it may be created in this transaction)`);
  const e = new Effects();
  for (const r of candidates) if (!planning || r.oid >= FIRST_NORMAL_OID) e.merge(relationEffects(env, r));
  return e.empty ? null : e;
}

/**
 * What writing `schema.name` runs: triggers, rules, column defaults and checks, domain-typed columns, index
 * expressions and predicates (also what ANALYZE, VACUUM FULL, CLUSTER and REINDEX of it run).
 */
export function relationWriteEffects(env: TextEnvironment, schema: string | null, name: string, indexesOnly = false): Effects | null {
  const candidates = env.lookup({ kind: 'relations', schema, name });
  if (candidates === undefined) return pending(`relation ${displayName(schema, name)}`);
  const e = new Effects();
  for (const r of candidates) {
    if (r.write !== undefined) e.merge(memo(env, `${indexesOnly ? 'i' : 'w'}${r.oid}`, () => computeWrite(env, r, indexesOnly)));
  }
  return e.empty ? null : e;
}

function computeWrite(env: TextEnvironment, r: RelationFacts, indexesOnly: boolean): Effects {
  const shown = displayName(r.schema, r.name);
  const w = r.write!;
  const e = new Effects();
  if (!indexesOnly) writeTimeEffects(env, w, shown, e);
  for (const index of w.indexes ?? []) {
    const stmt = env.parseHiddenStatement(index)?.IndexStmt as AnyNode | undefined;
    if (stmt === undefined) {
      e.addClass('unknown', `an index of ${shown} cannot be read`);
      continue;
    }
    const x = new Effects();
    for (const p of (stmt.indexParams as AnyNode[] | undefined) ?? []) {
      const expr = ((p.IndexElem as AnyNode | undefined) ?? p).expr as AnyNode | undefined;
      if (expr !== undefined) x.merge(expressionNodeEffects(env, expr));
    }
    if (stmt.whereClause !== undefined) x.merge(expressionNodeEffects(env, stmt.whereClause as AnyNode));
    e.merge(x, `index expression on ${shown}`);
  }
  return e;
}

/** Triggers, rules, defaults, checks and domain columns: what writing rows runs. */
function writeTimeEffects(env: TextEnvironment, w: RelationWriteFacts, shown: string, e: Effects): void {
  for (const { fn, definition } of w.triggers) {
    e.merge(functionEffects(env, fn), `trigger on ${shown} (${displayName(fn.schema, fn.name)}())`);
    const when = (env.parseHiddenStatement(definition)?.CreateTrigStmt as AnyNode | undefined)?.whenClause as AnyNode | undefined;
    if (when !== undefined) e.merge(expressionNodeEffects(env, when), `WHEN condition of a trigger on ${shown}`);
  }
  for (const rule of w.rules) {
    const stmt = env.parseHiddenStatement(rule)?.RuleStmt as AnyNode | undefined;
    if (stmt === undefined) {
      e.addClass('unknown', `a rule on ${shown} cannot be read`);
      continue;
    }
    const r2 = new Effects();
    env.hiddenLevel++;
    try {
      for (const action of (stmt.actions as AnyNode[] | undefined) ?? []) r2.mergeStatement(env.analyzeHiddenNode(action));
    } finally {
      env.hiddenLevel--;
    }
    if (stmt.whereClause !== undefined) r2.merge(expressionNodeEffects(env, stmt.whereClause as AnyNode));
    e.merge(r2, `rule on ${shown}`);
  }
  if (w.expressions.length > 0) e.merge(expressionEffects(env, w.expressions, `a default or check of ${shown}`), `default or check of ${shown}`);
  for (const oid of w.types) e.merge(typeOidEffects(env, oid), `a column of ${shown}`);
}

/** An expression node (a trigger's WHEN, a rule's WHERE) as `SELECT expr`. */
function expressionNodeEffects(env: TextEnvironment, expr: AnyNode): Effects {
  env.hiddenLevel++;
  try {
    const e = new Effects();
    e.mergeStatement(env.analyzeHiddenNode({ SelectStmt: { targetList: [{ ResTarget: { val: expr } }] } }));
    return e;
  } finally {
    env.hiddenLevel--;
  }
}

function relationEffects(env: TextEnvironment, r: RelationFacts): Effects {
  return memo(env, `r${r.oid}`, () => computeRelation(env, r));
}

function computeRelation(env: TextEnvironment, r: RelationFacts): Effects {
  const shown = displayName(r.schema, r.name);
  if (r.oid < FIRST_NORMAL_OID) return (r.schema === 'pg_catalog' || r.schema === 'information_schema' ? builtinRelationEffects(r.name, r.schema) : null) ?? new Effects();
  const e = new Effects();
  if (r.kind === 'v') {
    if (r.query === null) return unknown(`view ${shown}: its query is not known`);
    e.merge(textEffects(env, r.query, `view ${shown}`), `view ${shown}`);
  }
  for (const fdw of r.foreign) {
    const what = r.kind === 'f' ? `foreign table ${shown}` : `${shown} has foreign partitions or children`;
    if (fdw === 'file_fdw') {
      e.addClass('admin', `${what}: reading it reads files on the server (${fdw})`);
      e.addFlag('server_files');
    } else {
      e.addClass('admin', `${what}: reading it leaves the database (${fdw})`);
      e.addFlag('network');
    }
  }
  if (r.kind === 'f' && r.foreign.length === 0) {
    e.addClass('admin', `foreign table ${shown}: reading it leaves the database`);
    e.addFlag('network');
  }
  if (r.rowSecurity && r.policies.length > 0) {
    e.merge(expressionEffects(env, r.policies, `a row-level security policy of ${shown}`), `row-level security policy on ${shown}`);
  }
  if (r.readExpressions.length > 0) e.merge(expressionEffects(env, r.readExpressions, `a generated column of ${shown}`), `generated column of ${shown}`);
  return e;
}

// ---- types ----------------------------------------------------------------------------------------------

/** What coercing a value to the type named `schema.name` runs (domain checks, user-defined casts into it). */
export function typeNameEffects(env: TextEnvironment, schema: string | null, name: string): Effects | null {
  const shown = displayName(schema, name);
  const status = env.lookup({ kind: 'names', of: 'type', name });
  if (status === undefined) return pending(`type ${shown}`);
  if (status === 'trusted') return null;
  if (status === 'none') return unknown(`type ${shown} is not in the server's catalog (it may be created in this transaction)`);
  const candidates = env.lookup({ kind: 'types', schema, name });
  if (candidates === undefined) return pending(`type ${shown}`);
  if (candidates.length === 0) return unknown(`type ${shown} is not in the server's catalog (it may be created in this transaction)`);
  const e = new Effects();
  for (const t of candidates) e.merge(typeEffects(env, t));
  return e.empty ? null : e;
}

/** What coercing to the type with this OID runs. */
export function typeOidEffects(env: TextEnvironment, oid: number): Effects {
  if (oid < FIRST_NORMAL_OID) return new Effects();
  const t = env.lookup({ kind: 'type', oid });
  if (t === undefined) return pending(`type ${oid}`);
  if (t === null) return new Effects(); // dropped meanwhile: nothing of it can run
  return typeEffects(env, t);
}

function typeEffects(env: TextEnvironment, t: TypeFacts): Effects {
  return memo(env, `t${t.oid}`, () => computeType(env, t));
}

function computeType(env: TextEnvironment, t: TypeFacts): Effects {
  const shown = displayName(t.schema, t.name);
  const e = new Effects();
  if (t.oid < FIRST_NORMAL_OID && t.casts.length === 0) return e;
  if (t.checks.length > 0) e.merge(expressionEffects(env, t.checks, `a check of domain ${shown}`), `check of domain ${shown}`);
  for (const part of t.parts) e.merge(typeOidEffects(env, part));
  for (const fn of t.casts) e.merge(functionEffects(env, fn), `cast to ${shown} (${displayName(fn.schema, fn.name)}())`);
  return e;
}

// ---- operators ------------------------------------------------------------------------------------------

/**
 * What using operator `symbol` may run: the union over every user-defined operator with that symbol (any
 * schema but the temporary ones when unqualified). Null when only built-ins have the symbol.
 */
export function operatorEffects(env: TextEnvironment, schema: string | null, symbol: string, builtinReads: boolean): Effects | null {
  const shown = operatorName(schema, symbol);
  let ops: OperatorFacts[] | undefined;
  if (schema !== null && schema !== 'pg_catalog') {
    ops = env.lookup({ kind: 'operators', schema, name: symbol });
    if (ops === undefined) return pending(`operator ${shown}`);
    if (ops.length === 0) return unknown(`operator ${shown} is not in the server's catalog`);
  } else {
    const status = env.lookup({ kind: 'names', of: 'operator', name: symbol });
    if (status === undefined) return pending(`operator ${shown}`);
    if (status === 'none') return unknown(`operator ${shown} is not in the server's catalog`);
    if (status === 'trusted') return builtinReads ? null : unknown(`operator ${shown} is a built-in that is not known to only read`);
    ops = env.lookup({ kind: 'operators', schema, name: symbol });
    if (ops === undefined) return pending(`operator ${shown}`);
  }
  const e = new Effects();
  for (const op of ops) {
    for (const fn of op.functions) e.merge(functionEffects(env, fn), `operator ${operatorName(op.schema, op.name)} (${displayName(fn.schema, fn.name)}())`);
  }
  return e.empty ? null : e;
}

// ---- database-wide hazards ------------------------------------------------------------------------------

/**
 * User code the server may run for any query without syntax naming it, computed once per text:
 *
 * - Operator-class and operator-family members added by users (pg_amop/pg_amproc rows with OID >= 16384;
 *   CREATE OPERATOR CLASS needs a superuser, but the functions it names may be in sql or plpgsql): they run
 *   whenever a value of their type is sorted, grouped, made DISTINCT, compared by a set operation, a window,
 *   min/max, array or record comparison, a merge or hash join or an index scan, none of which the text shows
 *   with certainty without expression types.
 * - User-defined implicit and assignment casts with a function: the parser inserts them wherever an argument,
 *   operand or assigned value has the source type and the target type is wanted.
 *
 * Rule: when any of these functions is not a plain read, every statement that evaluates an expression or
 * reads a relation (every SELECT, INSERT, UPDATE, DELETE, MERGE and VALUES, CALL arguments, EXECUTE
 * parameters) is `unknown` with a reason naming the operator family or cast. On a database without such
 * members (or where all of them are C functions that only read, such as citext's, hstore's and pg_trgm's)
 * nothing changes.
 */
export function hazardEffects(env: TextEnvironment, userTypes: boolean): Effects | null {
  let both = env.hazards;
  if (both === undefined) {
    const h = env.lookup({ kind: 'hazards' });
    if (h === undefined) both = { builtin: pending('the operator families and implicit casts of the database'), all: pending('the operator families and implicit casts of the database') };
    else {
      const known = HAZARDS.get(h);
      if (known !== undefined) both = known;
      else {
        // Hidden code analysed for the hazards asks for the hazards too: it gets nothing (the statement has them).
        env.hazards = { builtin: new Effects(), all: new Effects() };
        const before = env.dependencies.catalog?.length ?? 0;
        both = { builtin: computeHazards(env, h, false), all: computeHazards(env, h, true) };
        // Reused for later texts while the catalog gives the same answer, if nothing else was looked up for it.
        if ((env.dependencies.catalog?.length ?? 0) === before) HAZARDS.set(h, both);
      }
    }
    env.hazards = both;
  }
  const e = userTypes ? both.all : both.builtin;
  return e.empty ? null : e;
}

/**
 * Hazard effects by answer object: computing them walks every operator-family member (dozens, usually C).
 * `builtin`: members and casts for built-in types only (they can run for any value); `all`: every one (for a
 * statement where a value of a user-defined type can appear).
 */
const HAZARDS = new WeakMap<DatabaseHazards, { builtin: Effects; all: Effects }>();

function computeHazards(env: TextEnvironment, h: DatabaseHazards, userTypes: boolean): Effects {
  const e = new Effects();
  for (const { family, fn, builtinTypes } of h.opfamilies) {
    if (!userTypes && builtinTypes !== true) continue;
    const f = functionEffects(env, fn);
    if (!f.empty) {
      e.merge(f, `operator family ${family} (${displayName(fn.schema, fn.name)}()), used when values are sorted, grouped or compared`);
    }
  }
  for (const { source, target, fn, builtinTypes } of h.casts) {
    if (!userTypes && builtinTypes !== true) continue;
    const f = functionEffects(env, fn);
    if (!f.empty) e.merge(f, `implicit cast from ${source} to ${target} (${displayName(fn.schema, fn.name)}()), applied wherever the types fit`);
  }
  if (!e.empty) e.addClass('unknown', 'user code in operator families or implicit casts may run for this statement without showing in it');
  return e;
}
