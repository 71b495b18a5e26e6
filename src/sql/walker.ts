/**
 * Walks queries and expressions of a libpg-query parse tree (JSON form): finds the tables read and written,
 * the columns read, the functions and operators used, data-modifying statements nested in WITH clauses,
 * SELECT ... INTO, row locks, and casts that make a result depend on literal values.
 *
 * Every part of the tree is visited: node types with no special meaning are walked field by field, so a
 * function call or a nested statement is found wherever the grammar allows it. Statements other than
 * SELECT/INSERT/UPDATE/DELETE/MERGE met on the way are handed back to the statement classifier.
 *
 * Tree shape: a Node is `{ TypeName: body }` (one key, upper-case first letter); fields whose type is fixed
 * in the protobuf (InsertStmt.relation, SelectStmt.larg, CallStmt.funccall ...) hold the body unwrapped.
 */
import { isMainThread } from 'node:worker_threads';
import type { StatementAnalysis } from './analysis.js';
import { builtinRelationEffects } from './builtin-relations.js';
import { Effects } from './effects.js';
import { builtinOperatorReads, isBuiltinReadOperator, lookupFunction, parseQualifiedName, type FunctionVerdict } from './functions.js';
import { BACKEND_SETTINGS, SUPERUSER_SETTINGS } from './builtin-settings.js';
import { hazardEffects, operatorEffects, relationReadEffects, relationWriteEffects, resolveCall, typeNameEffects } from './hidden.js';

export type AnyNode = Record<string, unknown>;

/** Something in a FROM clause that columns can be qualified with. */
interface Relation {
  alias: string;
  /** The table's name; null for subqueries, functions, CTEs and joins. */
  table: string | null;
}

interface Scope {
  /** Names of WITH queries visible here: an unqualified table reference with such a name is the CTE. */
  ctes: Set<string> | null;
  relations: Relation[];
  /** True while this query's own FROM clause is walked: table references there become relations. */
  inFrom: boolean;
}

/** reg* types: a literal cast to one is looked up in the catalog by its value. */
const REG_TYPES = new Set([
  'regclass', 'regproc', 'regprocedure', 'regoper', 'regoperator', 'regtype', 'regconfig', 'regdictionary',
  'regrole', 'regnamespace', 'regcollation', 'regdatabase',
]);

/** Settings whose value changes how the server reads later SQL text. */
export const PARSING_SETTINGS = new Set(['standard_conforming_strings', 'client_encoding']);

const SELECT_HANDLED = new Set(['withClause', 'larg', 'rarg', 'intoClause', 'fromClause', 'lockingClause']);
const INSERT_HANDLED = new Set(['withClause', 'relation', 'selectStmt']);
const UPDATE_HANDLED = new Set(['withClause', 'relation', 'fromClause']);
const DELETE_HANDLED = new Set(['withClause', 'relation', 'usingClause']);
const MERGE_HANDLED = new Set(['withClause', 'relation', 'sourceRelation']);
const FUNC_HANDLED = new Set(['funcname']);

export type NestedStatementHandler = (type: string, body: AnyNode) => void;

/**
 * Nesting (of walk() calls) beyond which a tree is not analysed here: instead of the walker exhausting the
 * JavaScript stack, the text is handed to the classification worker (offload.ts), whose 8 MiB stack walks
 * about eight times deeper; beyond the worker's limit the statement is `unknown`. Left-deep operator chains
 * (`1+1+...`) are walked iteratively and do not count; a level of subquery costs about six.
 */
export const MAX_WALK_DEPTH = isMainThread ? 2400 : 16000;

/** Thrown when a tree is nested deeper than MAX_WALK_DEPTH; statements.ts turns it into `unknown`. */
export class TooDeepError extends Error {
  constructor() {
    super(`the statement is nested too deeply to analyze (more than ${MAX_WALK_DEPTH} levels)`);
  }
}

/** A_Expr kinds whose `name` is the operator they apply (IN uses = or <>, LIKE ~~ ..., NULLIF and DISTINCT =). */
const NAMED_OPERATOR_KINDS = new Set([
  'AEXPR_OP', 'AEXPR_OP_ANY', 'AEXPR_OP_ALL', 'AEXPR_DISTINCT', 'AEXPR_NOT_DISTINCT', 'AEXPR_NULLIF', 'AEXPR_IN',
  'AEXPR_LIKE', 'AEXPR_ILIKE', 'AEXPR_SIMILAR',
]);
/** BETWEEN is two comparisons. */
const BETWEEN_OPERATORS: Record<string, string[]> = {
  AEXPR_BETWEEN: ['>=', '<='],
  AEXPR_BETWEEN_SYM: ['>=', '<='],
  AEXPR_NOT_BETWEEN: ['<', '>'],
  AEXPR_NOT_BETWEEN_SYM: ['<', '>'],
};
const EQUALS: AnyNode[] = [{ String: { sval: '=' } }];

/**
 * Built-ins that build a record of their first argument's type, coercing each field to it (domain checks
 * run): json(b)_populate_record(set), hstore's populate_record (and its operator #=).
 */
const RECORD_POPULATORS = new Set([
  'json_populate_record', 'json_populate_recordset', 'jsonb_populate_record', 'jsonb_populate_recordset',
  'jsonb_populate_record_valid', 'populate_record',
]);

export class QueryWalker {
  private readonly scopes: Scope[] = [];

  private readonly isShadowedFunction: (name: string) => boolean;
  private readonly isShadowedOperator: (symbol: string) => boolean;
  /** Current nesting of walk() (see MAX_WALK_DEPTH). */
  private depth = 0;
  /** The database-wide hazards were applied to this statement (once each is enough). */
  private hazardsApplied = false;
  private userTypeHazardsApplied = false;

  constructor(
    private readonly a: StatementAnalysis,
    private readonly nestedStatement: NestedStatementHandler,
  ) {
    const env = a.env;
    this.isShadowedFunction = (name) => env.isShadowed(name, 'function');
    this.isShadowedOperator = (symbol) => env.isShadowed(symbol, 'operator');
  }

  /** Walks any part of the tree: a node, an unwrapped struct, or an array of them. */
  walk(value: unknown): void {
    if (value === null || typeof value !== 'object') return;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) this.walk(value[i]);
      return;
    }
    // No try/finally: an exception abandons the whole analysis (and the counter with it).
    if (++this.depth > MAX_WALK_DEPTH) throw new TooDeepError();
    const o = value as AnyNode;
    let first: string | undefined;
    for (const k in o) {
      first = k;
      break;
    }
    if (first !== undefined) {
      const c = first.charCodeAt(0);
      if (c >= 65 && c <= 90) this.visit(first, o[first] as AnyNode);
      else if (typeof o.relname === 'string') this.rangeVar(o);
      else this.walkFields(o);
    }
    this.depth--;
  }

  walkFields(o: AnyNode, skip?: Set<string>): void {
    for (const k in o) {
      if (skip !== undefined && skip.has(k)) continue;
      const v = o[k];
      if (v === null || typeof v !== 'object') continue;
      // An unwrapped TypeName: column definition lists (AS x(a mydomain)), XMLTABLE and JSON_TABLE columns,
      // RETURNING of JSON functions, XMLSERIALIZE ... AS: values are coerced to it.
      if (k === 'typeName') this.coercion(v as AnyNode);
      else this.walk(v);
    }
  }

  /** Walks code the statement defines but does not run now: names are listed, classes are not taken. */
  walkDeferred(value: unknown): void {
    this.a.deferred++;
    try {
      this.walk(value);
    } finally {
      this.a.deferred--;
    }
  }

  private visit(type: string, body: AnyNode): void {
    switch (type) {
      case 'SelectStmt':
        this.selectStmt(body);
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.dml(type, body, true);
        return;
      case 'RangeVar':
        this.rangeVar(body);
        return;
      case 'ColumnRef':
        this.columnRef(body);
        return;
      case 'FuncCall':
        this.funcCall(body);
        return;
      case 'A_Expr':
        this.aExpr(body);
        return;
      case 'SubLink':
        // `x IN (SELECT ...)` is `= ANY` without an operator name.
        if (body.operName) this.operator(body.operName as AnyNode[]);
        else if (body.subLinkType === 'ANY_SUBLINK') this.operator(EQUALS);
        this.walk(body.testexpr);
        this.walk(body.subselect);
        return;
      case 'SortBy':
        if (body.useOp) this.operator(body.useOp as AnyNode[]);
        this.walk(body.node);
        return;
      case 'CaseExpr':
        // CASE x WHEN v compares with =.
        if (body.arg !== undefined) this.operator(EQUALS);
        this.walkFields(body);
        return;
      case 'JoinExpr':
        // JOIN ... USING and NATURAL JOIN compare the common columns with =.
        if (body.usingClause !== undefined || body.isNatural === true) this.operator(EQUALS);
        this.walkFields(body);
        return;
      case 'TypeCast':
        this.typeCast(body);
        return;
      case 'TypeName':
        this.coercion(body);
        return;
      case 'RangeSubselect':
        this.walk(body.subquery);
        this.addRelation((body.alias as AnyNode | undefined)?.aliasname as string | undefined, null);
        return;
      case 'RangeFunction':
        this.walkFields(body);
        this.addRelation((body.alias as AnyNode | undefined)?.aliasname as string | undefined, null);
        return;
      case 'WithClause':
        this.withClause(body);
        return;
      case 'LockingClause':
        // lockedRels name FROM items (aliases), not tables: nothing else to walk.
        this.a.addFlag('locks', 'locks rows (FOR UPDATE/SHARE)');
        return;
      case 'IntoClause':
        this.intoClause(body);
        return;
      // Leaves: constants, names, parameters.
      case 'A_Const':
      case 'String':
      case 'Integer':
      case 'Float':
      case 'Boolean':
      case 'BitString':
      case 'ParamRef':
      case 'A_Star':
      case 'SQLValueFunction':
      case 'RoleSpec':
      case 'Alias':
      case 'CurrentOfExpr':
      case 'SetToDefault':
        return;
      default:
        if (type.endsWith('Stmt')) {
          this.nestedStatement(type, body);
          return;
        }
        this.walkFields(body);
    }
  }

  // ---- queries --------------------------------------------------------------------------------------------

  selectStmt(s: AnyNode): void {
    this.applyHazards();
    const scope = this.pushScope();
    try {
      if (s.withClause) this.withClause(s.withClause as AnyNode);
      if (s.op !== undefined && s.op !== 'SETOP_NONE') {
        if (s.larg) this.selectStmt(s.larg as AnyNode);
        if (s.rarg) this.selectStmt(s.rarg as AnyNode);
      }
      if (s.intoClause) this.intoClause(s.intoClause as AnyNode);
      if (s.fromClause) {
        scope.inFrom = true;
        this.walk(s.fromClause);
        scope.inFrom = false;
      }
      if (s.lockingClause) this.a.addFlag('locks', 'locks rows (FOR UPDATE/SHARE)');
      this.walkFields(s, SELECT_HANDLED);
    } finally {
      this.scopes.pop();
    }
  }

  /**
   * INSERT/UPDATE/DELETE/MERGE. `nested` is true when met inside another statement, which the grammar allows
   * only as a WITH query: a data-modifying CTE.
   */
  dml(type: string, s: AnyNode, nested: boolean): void {
    const verb = type === 'InsertStmt' ? 'INSERT' : type === 'UpdateStmt' ? 'UPDATE' : type === 'DeleteStmt' ? 'DELETE' : 'MERGE';
    const target = s.relation as AnyNode | undefined;
    const targetName = target ? qualifiedName(target) : '?';
    this.a.addClass('write', `${verb} writes ${targetName}`);
    this.a.addCommand(verb);
    this.applyHazards();
    if (target) {
      const schema = (target.schemaname as string | undefined) ?? null;
      // The target is read too (WHERE, RETURNING, a view's query, row-level security policies) ...
      this.relationRead(schema, target.relname as string);
      // ... and writing it runs its triggers, rules, defaults and checks.
      this.relationWrite(schema, target.relname as string);
    }
    if (nested) this.a.addFlag('writing_cte', `data-modifying WITH clause (${verb} ${targetName})`);
    const scope = this.pushScope();
    try {
      if (s.withClause) this.withClause(s.withClause as AnyNode);
      switch (type) {
        case 'InsertStmt':
          // The inserted query cannot see the target table: walk it before the target becomes a relation.
          this.walk(s.selectStmt);
          if (target) this.target(target);
          if (s.onConflictClause && target) scope.relations.push({ alias: 'excluded', table: target.relname as string });
          this.walkFields(s, INSERT_HANDLED);
          break;
        case 'UpdateStmt':
          if (target) this.target(target);
          if (!s.whereClause) this.a.addFlag('no_where', `UPDATE without WHERE changes every row of ${targetName}`);
          scope.inFrom = true;
          this.walk(s.fromClause);
          scope.inFrom = false;
          this.walkFields(s, UPDATE_HANDLED);
          break;
        case 'DeleteStmt':
          if (target) this.target(target);
          if (!s.whereClause) this.a.addFlag('no_where', `DELETE without WHERE removes every row of ${targetName}`);
          scope.inFrom = true;
          this.walk(s.usingClause);
          scope.inFrom = false;
          this.walkFields(s, DELETE_HANDLED);
          break;
        default:
          if (target) this.target(target);
          scope.inFrom = true;
          this.walk(s.sourceRelation);
          scope.inFrom = false;
          this.walkFields(s, MERGE_HANDLED);
      }
    } finally {
      this.scopes.pop();
    }
  }

  /** A table the statement writes: never a CTE (PostgreSQL resolves DML targets to tables only). */
  target(rv: AnyNode, access: 'read' | 'write' = 'write'): void {
    const name = rv.relname as string;
    this.a.addTable((rv.schemaname as string | undefined) ?? null, name, access);
    const scope = this.scopes[this.scopes.length - 1];
    if (scope) scope.relations.push({ alias: ((rv.alias as AnyNode | undefined)?.aliasname as string) ?? name, table: name });
  }

  private intoClause(into: AnyNode): void {
    const rel = into.rel as AnyNode | undefined;
    const name = rel ? qualifiedName(rel) : '?';
    if (rel) this.a.addTable((rel.schemaname as string | undefined) ?? null, rel.relname as string, 'write');
    this.a.addClass('write', `SELECT INTO creates and fills ${name}`);
    this.a.addClass('ddl', `SELECT INTO creates table ${name}`);
    this.a.addFlag('select_into');
  }

  private withClause(w: AnyNode): void {
    const scope = this.scopes[this.scopes.length - 1] ?? this.pushScope();
    const ctes = (w.ctes as AnyNode[] | undefined) ?? [];
    const visible = (scope.ctes ??= new Set());
    if (w.recursive) {
      // WITH RECURSIVE: every query of the list sees every name of the list.
      for (const node of ctes) visible.add(cteOf(node).ctename as string);
      for (const node of ctes) this.walk(cteOf(node).ctequery);
    } else {
      // Plain WITH: a query sees only the names before it (its own name there is a table).
      for (const node of ctes) {
        const cte = cteOf(node);
        this.walk(cte.ctequery);
        visible.add(cte.ctename as string);
      }
    }
  }

  private rangeVar(rv: AnyNode): void {
    const name = rv.relname as string;
    const schema = (rv.schemaname as string | undefined) ?? null;
    const alias = ((rv.alias as AnyNode | undefined)?.aliasname as string | undefined) ?? name;
    if (schema === null && this.isCte(name)) {
      this.addRelation(alias, null);
      return;
    }
    this.a.addTable(schema, name, 'read');
    this.addRelation(alias, name);
    this.relationRead(schema, name);
  }

  /** What reading a relation runs: its view query, policies, foreign servers ... (see hidden.ts). */
  relationRead(schema: string | null, name: string): void {
    const a = this.a;
    if (!a.hiddenCodeRuns) return;
    // Planning a query discloses no data: built-in relations only matter when read.
    const planningOnly = a.deferred > 0;
    const env = a.env;
    if (env.ctx.catalog === undefined) {
      // Without a catalog, an unqualified name is most likely the pg_catalog relation it names.
      const e = planningOnly ? null : schema === null || schema === 'pg_catalog' ? builtinRelationEffects(name) : schema === 'information_schema' ? builtinRelationEffects(name, schema) : null;
      if (e) a.mergeEffects(e, null);
      return;
    }
    const e = relationReadEffects(env, schema, name, planningOnly);
    if (e) a.mergeEffects(e, null);
    this.applyUserTypeHazards();
  }

  /**
   * What writing a relation runs: its triggers, rules, defaults, checks, domain columns, index expressions
   * (see hidden.ts). `indexesOnly`: maintenance that rebuilds or analyses indexes runs only their expressions.
   */
  relationWrite(schema: string | null, name: string, indexesOnly = false): void {
    const a = this.a;
    if (a.deferred > 0 || a.env.ctx.catalog === undefined) return;
    const e = relationWriteEffects(a.env, schema, name, indexesOnly);
    if (e) a.mergeEffects(e, null, 'target');
  }

  /**
   * The database-wide hazards (user code in operator families and implicit casts, see hidden.ts), once per
   * statement that evaluates anything.
   */
  private applyHazards(): void {
    if (this.hazardsApplied || !this.a.hiddenCodeRuns || this.a.env.ctx.catalog === undefined) return;
    this.hazardsApplied = true;
    const e = hazardEffects(this.a.env, false);
    if (e) this.a.mergeEffects(e, null);
  }

  /**
   * The hazards for user-defined types as well, where a value of such a type can appear: a relation's
   * columns, a function that is not a trusted built-in, a coercion to a type that is not one.
   */
  private applyUserTypeHazards(): void {
    if (this.userTypeHazardsApplied || !this.a.hiddenCodeRuns || this.a.env.ctx.catalog === undefined) return;
    this.userTypeHazardsApplied = true;
    this.hazardsApplied = true;
    const e = hazardEffects(this.a.env, true);
    if (e) this.a.mergeEffects(e, null);
  }

  private addRelation(alias: string | undefined, table: string | null): void {
    const scope = this.scopes[this.scopes.length - 1];
    if (scope !== undefined && scope.inFrom && alias !== undefined) scope.relations.push({ alias, table });
  }

  private isCte(name: string): boolean {
    for (let i = this.scopes.length - 1; i >= 0; i--) if (this.scopes[i]!.ctes?.has(name)) return true;
    return false;
  }

  private pushScope(): Scope {
    const scope: Scope = { ctes: null, relations: [], inFrom: false };
    this.scopes.push(scope);
    return scope;
  }

  // ---- columns --------------------------------------------------------------------------------------------

  private columnRef(ref: AnyNode): void {
    const fields = ref.fields as AnyNode[];
    const n = fields.length;
    const column = fieldName(fields[n - 1]!);
    if (n === 1) {
      this.a.addColumn(this.qualifyUnqualified(column));
      // `SELECT u FROM users u` and `row_to_json(u)` read the whole row when no column is named u, which
      // only the server knows: count it as every column of that table, too.
      const wholeRow = this.findRelation(column);
      if (wholeRow !== undefined) this.a.addColumn(`${wholeRow.table ?? column}.*`);
      return;
    }
    const qualifier = fieldName(fields[n - 2]!);
    if (n === 2) {
      const relation = this.findRelation(qualifier);
      if (relation === undefined) this.a.addColumn(`${qualifier}.${column}`);
      else this.a.addColumn(relation.table === null ? column : `${relation.table}.${column}`);
      return;
    }
    // schema.table.column (or catalog.schema.table.column)
    this.a.addColumn(`${qualifier}.${column}`);
  }

  private findRelation(alias: string): Relation | undefined {
    for (let i = this.scopes.length - 1; i >= 0; i--) {
      for (const r of this.scopes[i]!.relations) if (r.alias === alias) return r;
    }
    return undefined;
  }

  /** An unqualified column belongs to a table only when exactly one relation is visible at all. */
  private qualifyUnqualified(column: string): string {
    let only: Relation | undefined;
    let count = 0;
    for (let i = this.scopes.length - 1; i >= 0 && count < 2; i--) {
      const relations = this.scopes[i]!.relations;
      count += relations.length;
      if (relations.length > 0) only = relations[0];
    }
    return count === 1 && only!.table !== null ? `${only!.table}.${column}` : column;
  }

  // ---- functions, operators, casts ------------------------------------------------------------------------

  /** A function call: FuncCall nodes, and CallStmt's unwrapped one. */
  funcCall(f: AnyNode): void {
    const parts = (f.funcname as AnyNode[]).map(fieldName);
    const name = parts[parts.length - 1]!;
    const schema = parts.length >= 2 ? parts[parts.length - 2]! : null;
    // SQL-syntax forms (EXTRACT, SUBSTRING ... FROM, AT TIME ZONE) are written without pg_catalog.
    const shown = schema === null || (schema === 'pg_catalog' && f.funcformat === 'COERCE_SQL_SYNTAX') ? name : `${schema}.${name}`;
    this.a.addFunction(shown);
    if (this.a.deferred === 0) {
      this.applyHazards();
      if (this.a.env.ctx.catalog !== undefined && (schema !== null && schema !== 'pg_catalog' ? true : this.a.env.lookup({ kind: 'names', of: 'function', name }) !== 'trusted')) {
        this.applyUserTypeHazards();
      }
      this.applyFunction(schema, name, shown, f.args as AnyNode[] | undefined);
      const first = (f.args as AnyNode[] | undefined)?.[0];
      if (first !== undefined && RECORD_POPULATORS.has(name)) this.recordTarget(first, `${shown}()`);
    } else if (this.a.planning > 0 && this.a.env.ctx.catalog !== undefined) {
      // Planned, not run: user functions may be evaluated on constants (built-ins do only what they read).
      this.applyHazards();
      const call = resolveCall(this.a.env, schema, name);
      if (call.effects) this.a.mergeEffects(call.effects, null);
    }
    this.walkFields(f, FUNC_HANDLED);
  }

  private applyFunction(schema: string | null, name: string, shown: string, args: AnyNode[] | undefined): void {
    const a = this.a;
    const env = a.env;
    let verdict: FunctionVerdict;
    if (env.ctx.catalog !== undefined) {
      // Every function the name could resolve to (hidden.ts); the built-in's own verdict applies as below.
      const call = resolveCall(env, schema, name);
      if (call.effects) a.mergeEffects(call.effects, null);
      if (call.builtin === null) return;
      verdict = call.builtin;
    } else {
      const found = lookupFunction(schema, name, env.ctx, this.isShadowedFunction);
      if (found.asked) env.dependencies.functions.push(found.asked);
      if (found.verdict.unresolved) env.unresolved.add(found.asked!.name);
      verdict = found.verdict;
    }
    for (const c of verdict.classes) if (c !== 'read') a.addClass(c, `${shown}() ${verdict.reason ?? ''}`.trimEnd());
    for (const flag of verdict.flags) a.addFlag(flag, `${shown}() ${verdict.reason ?? ''}`.trimEnd());
    if (verdict.changesParsing) a.changesParsing = true;
    switch (verdict.argumentRule) {
      case 'sequence-write':
      case 'sequence-read': {
        a.literalDependent();
        const text = args && args.length > 0 ? constantString(args[0]!) : undefined;
        const parts = text === undefined ? null : parseQualifiedName(text);
        const access = verdict.argumentRule === 'sequence-write' ? 'write' : 'read';
        if (parts !== null) a.addTable(parts.length >= 2 ? parts[parts.length - 2]! : null, parts[parts.length - 1]!, access);
        else if (access === 'write') a.addReason(`${shown}() on a sequence not named by a constant`);
        break;
      }
      case 'set_config': {
        a.literalDependent();
        const setting = args && args.length > 0 ? constantString(args[0]!) : undefined;
        const value = args && args.length > 1 ? constantString(args[1]!) : undefined;
        applySetting(a, setting?.toLowerCase(), value === undefined ? undefined : [value], `${shown}()`);
        break;
      }
      default:
    }
  }

  /** Operator expressions in every form; a left-deep chain (`1+1+...`) is walked iteratively. */
  private aExpr(e: AnyNode): void {
    this.applyHazards();
    const rights: unknown[] = [];
    let current: AnyNode = e;
    for (;;) {
      const kind = current.kind as string;
      if (NAMED_OPERATOR_KINDS.has(kind)) {
        this.operator(current.name as AnyNode[]);
        // hstore's record #= hstore is populate_record().
        if (kind === 'AEXPR_OP' && current.lexpr !== undefined && fieldName((current.name as AnyNode[])[(current.name as AnyNode[]).length - 1]!) === '#=') {
          this.recordTarget(current.lexpr as AnyNode, 'operator #=');
        }
      }
      else {
        const between = BETWEEN_OPERATORS[kind];
        if (between !== undefined) for (const op of between) this.operator([{ String: { sval: op } }]);
      }
      rights.push(current.rexpr);
      const left = current.lexpr as AnyNode | undefined;
      const next = left?.A_Expr as AnyNode | undefined;
      if (next === undefined) {
        this.walk(left);
        break;
      }
      current = next;
    }
    for (let i = rights.length - 1; i >= 0; i--) this.walk(rights[i]);
  }

  private operator(nameList: AnyNode[]): void {
    const n = nameList.length;
    const symbol = fieldName(nameList[n - 1]!);
    const schema = n >= 2 ? fieldName(nameList[n - 2]!) : null;
    if (!this.a.hiddenCodeRuns) return;
    const env = this.a.env;
    if (env.ctx.catalog !== undefined) {
      // Every user-defined operator with this symbol (hidden.ts): any effect at all makes it procedural.
      const builtinReads = schema === null || schema === 'pg_catalog' ? builtinOperatorReads(symbol) : false;
      const e = operatorEffects(env, schema, symbol, builtinReads);
      if (e) this.a.mergeEffects(e, null, 'operator');
      return;
    }
    if (this.a.deferred > 0) return;
    if (isBuiltinReadOperator(schema, symbol, this.isShadowedOperator)) return;
    this.a.addClass('procedural', `uses operator ${schema === null ? symbol : `${schema}.${symbol}`}, which is not a built-in and may call any function`);
    this.a.changesParsing = true;
  }

  private typeCast(c: AnyNode): void {
    const typeName = c.typeName as AnyNode | undefined;
    const names = typeName?.names as AnyNode[] | undefined;
    if (names && names.length > 0 && REG_TYPES.has(fieldName(names[names.length - 1]!))) this.a.literalDependent();
    this.applyHazards();
    this.coercion(typeName);
    this.walk(c.arg);
  }

  /**
   * The record argument of a populate_record-like built-in: its type's domain checks run for every field. A
   * cast (`NULL::t`) is a coercion already, and so is ROW() of constants and casts; a whole-row reference
   * (`t`, `t.*`) is the row type of its table; anything else has a type stepgate cannot see.
   */
  private recordTarget(arg: AnyNode, how: string): void {
    const a = this.a;
    if (!a.hiddenCodeRuns || a.env.ctx.catalog === undefined || arg.TypeCast !== undefined) return;
    // ROW(...) of constants and casts: its field types are built-ins or visible casts (walked as coercions).
    const row = arg.RowExpr as AnyNode | undefined;
    if (row !== undefined && ((row.args as AnyNode[] | undefined) ?? []).every((x) => x.A_Const !== undefined || x.TypeCast !== undefined)) return;
    const fields = (arg.ColumnRef as AnyNode | undefined)?.fields as AnyNode[] | undefined;
    const alias = fields === undefined ? undefined : fields.length === 1 ? fieldName(fields[0]!) : fields.length === 2 && fields[1]!.A_Star !== undefined ? fieldName(fields[0]!) : undefined;
    const table = alias === undefined ? undefined : this.findRelation(alias)?.table;
    if (table === undefined || table === null) {
      const e = new Effects();
      e.addClass('unknown', `${how} builds a record of a type stepgate cannot see (the checks of its domains run)`);
      a.mergeEffects(e, null);
      return;
    }
    const e = typeNameEffects(a.env, null, table);
    if (e) a.mergeEffects(e, `${how} on rows of ${table}`);
  }

  /** A value is coerced to this type (a cast, a column definition list ...): domain checks, casts into it. */
  coercion(typeName: AnyNode | undefined): void {
    const a = this.a;
    if (typeName === undefined || !a.hiddenCodeRuns || a.env.ctx.catalog === undefined) return;
    const names = typeName.names as AnyNode[] | undefined;
    if (names === undefined || names.length === 0) return;
    const n = names.length;
    const name = fieldName(names[n - 1]!);
    const schema = n >= 2 ? fieldName(names[n - 2]!) : null;
    const e = typeNameEffects(a.env, schema, name);
    if (e) a.mergeEffects(e, `coercion to ${schema === null ? name : `${schema}.${name}`}`);
    if ((schema !== null && schema !== 'pg_catalog') || a.env.lookup({ kind: 'names', of: 'type', name }) !== 'trusted') this.applyUserTypeHazards();
  }
}

/**
 * Classes for changing a setting (SET, set_config). `setting` undefined: not a constant, could be anything.
 * `values` are the new value's constant parts when known.
 */
export function applySetting(a: StatementAnalysis, setting: string | undefined, values: string[] | undefined, how: string): void {
  if (setting === undefined) {
    a.addClass('privilege', `${how} changes a setting that is not a constant (could be role)`);
    a.changesParsing = true;
    a.changesReadOnlyDefault = true;
    return;
  }
  if (setting === 'default_transaction_read_only') a.changesReadOnlyDefault = true;
  if (setting === 'role' || setting === 'session_authorization') {
    a.addClass('privilege', `${how} changes ${setting}`);
    return;
  }
  a.addClass('session');
  if (PARSING_SETTINGS.has(setting)) a.changesParsing = true;
  if (SUPERUSER_SETTINGS.has(setting)) a.addClass('admin', `${how} changes ${setting}, a superuser-only setting`);
  if (BACKEND_SETTINGS.has(setting)) a.addClass('admin', `${how} changes ${setting}, which only a new connection can set (server logging and diagnostics)`);
  if (setting === 'search_path' && !catalogStaysFirst(values)) {
    a.addClass('privilege', `${how} puts a schema before pg_catalog in search_path: unqualified built-in names may then run other functions`);
  }
}

/**
 * pg_catalog is searched first unless search_path lists it explicitly after another schema. `values` are the
 * list's entries as given (one entry may hold a comma-separated list, as set_config's value does).
 */
function catalogStaysFirst(values: string[] | undefined): boolean {
  if (values === undefined) return false;
  const schemas: string[] = [];
  for (const v of values) for (const part of v.split(',')) schemas.push(part.trim());
  const at = schemas.findIndex((s) => s.replace(/^"|"$/g, '').toLowerCase() === 'pg_catalog');
  return at <= 0;
}

function cteOf(node: AnyNode): AnyNode {
  return (node.CommonTableExpr as AnyNode | undefined) ?? node;
}

/** The text of a String node (or `*` for A_Star) in a name list. */
export function fieldName(node: AnyNode): string {
  const s = node.String as AnyNode | undefined;
  if (s !== undefined) return (s.sval as string | undefined) ?? '';
  if (node.A_Star !== undefined) return '*';
  return (node.sval as string | undefined) ?? '';
}

export function qualifiedName(rv: AnyNode): string {
  return rv.schemaname ? `${rv.schemaname as string}.${rv.relname as string}` : (rv.relname as string);
}

/** The value of a string constant, also through casts ('s'::regclass, 's'::text); undefined otherwise. */
export function constantString(node: AnyNode): string | undefined {
  const cast = node.TypeCast as AnyNode | undefined;
  if (cast !== undefined) return constantString(cast.arg as AnyNode);
  const k = node.A_Const as AnyNode | undefined;
  if (k === undefined) return undefined;
  const s = k.sval as AnyNode | undefined;
  if (s === undefined) return undefined;
  return (s.sval as string | undefined) ?? '';
}
