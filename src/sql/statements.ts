/**
 * Classifies one parsed statement: what kind of statement it is decides its base classes; the walker adds
 * what its queries and expressions do. Every statement type the grammar can produce is listed here; a type
 * that is not is `unknown`, never `read`.
 */
import { isMainThread } from 'node:worker_threads';
import { StatementAnalysis, unknownStatement, type TextEnvironment } from './analysis.js';
import { commandTag } from './command-tag.js';
import { hazardEffects, procedureEffects, typeOidEffects } from './hidden.js';
import type { StatementInfo } from './types.js';
import { applySetting, constantString, fieldName, QueryWalker, TooDeepError, type AnyNode } from './walker.js';

/** The statement's type name and body, from `{ TypeName: body }`. */
export function unwrapNode(node: AnyNode): [string, AnyNode] {
  for (const k in node) return [k, node[k] as AnyNode];
  return ['', {}];
}

/**
 * Classifies a top-level statement. `innerText` gives the text of a PREPARE's inner statement (called only
 * for PREPARE).
 */
export function analyzeStatement(
  env: TextEnvironment,
  node: AnyNode,
  sql: string,
  innerText: () => string,
): StatementInfo {
  const [type, body] = unwrapNode(node);
  const a = new StatementAnalysis(env);
  a.command = commandTag(type, body);
  try {
    new StatementClassifier(a, innerText).statement(type, body);
    if (env.hiddenLevel === 0 && env.ctx.parameterTypes !== undefined) parameterCoercions(a, env.ctx.parameterTypes);
  } catch (err) {
    // A tree too deep for the walker (or for the JavaScript stack) is not analysed: never a read, never a crash.
    // In the main thread the whole text is marked too deep (classify.ts), so the worker reads it again with its
    // larger stack; in the worker it is `unknown`.
    if (err instanceof TooDeepError || err instanceof RangeError) {
      if (isMainThread) throw new RangeError(err.message);
      return unknownStatement(sql, err instanceof TooDeepError ? err.message : `the statement is nested too deeply to analyze (${err.message})`, a.command);
    }
    throw err;
  }
  return a.finish(sql);
}

/** Declared parameter types (extended-protocol Parse): Bind coerces each value to its type. */
function parameterCoercions(a: StatementAnalysis, types: readonly number[]): void {
  let userType = false;
  for (let i = 0; i < types.length; i++) {
    const oid = types[i]!;
    if (oid === 0) continue;
    if (oid >= 16384) userType = true;
    a.mergeEffects(typeOidEffects(a.env, oid), `parameter $${i + 1}`);
  }
  // A value of a user-defined type: the database's hazards for such types apply too (see hidden.ts).
  if (userType && a.env.ctx.catalog !== undefined) {
    const e = hazardEffects(a.env, true);
    if (e) a.mergeEffects(e, null);
  }
}

/** Languages whose code can reach the server's files and programs, or that load native code. */
function isUntrustedLanguage(language: string | undefined): boolean {
  if (language === undefined) return false;
  const l = language.toLowerCase();
  return l === 'c' || l === 'internal' || (l.endsWith('u') && l.startsWith('pl'));
}

/** Object types only superusers (or database/cluster owners) manage: changing them is `admin`. */
const CLUSTER_OBJECTS = new Set([
  'OBJECT_DATABASE', 'OBJECT_TABLESPACE', 'OBJECT_EXTENSION', 'OBJECT_FDW', 'OBJECT_FOREIGN_SERVER',
  'OBJECT_LANGUAGE', 'OBJECT_EVENT_TRIGGER', 'OBJECT_ACCESS_METHOD', 'OBJECT_PUBLICATION', 'OBJECT_SUBSCRIPTION',
  'OBJECT_TRANSFORM', 'OBJECT_USER_MAPPING',
]);

/** Object types that are relations: DROP of one lists it as a written table. */
const RELATION_OBJECTS = new Set([
  'OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_SEQUENCE', 'OBJECT_FOREIGN_TABLE', 'OBJECT_INDEX',
]);

/** ALTER TABLE subcommands that change who may see or do what. */
const PRIVILEGE_SUBCOMMANDS = new Set([
  'AT_ChangeOwner', 'AT_EnableRowSecurity', 'AT_DisableRowSecurity', 'AT_ForceRowSecurity', 'AT_NoForceRowSecurity',
]);

/** Parses an option value the way PostgreSQL's defGetBoolean does; anything unclear counts as true. */
function defElemIsTrue(defElem: AnyNode): boolean {
  const arg = defElem.arg as AnyNode | undefined;
  if (arg === undefined) return true;
  if (arg.Boolean !== undefined) return (arg.Boolean as AnyNode).boolval === true;
  if (arg.Integer !== undefined) return ((arg.Integer as AnyNode).ival ?? 0) !== 0;
  const s = (arg.String as AnyNode | undefined)?.sval;
  if (typeof s === 'string') {
    const v = s.toLowerCase();
    if (v === '0' || v === 'off' || v === 'of' || v === 'n' || v === 'no') return false;
    if (v.length > 0 && 'false'.startsWith(v)) return false;
  }
  return true;
}

function defElems(list: unknown): AnyNode[] {
  if (!Array.isArray(list)) return [];
  const out: AnyNode[] = [];
  for (const n of list) {
    const d = (n as AnyNode).DefElem as AnyNode | undefined;
    if (d !== undefined) out.push(d);
  }
  return out;
}

/** PostgreSQL's CURSOR_OPT_HOLD (parsenodes.h). */
const CURSOR_OPT_HOLD = 0x0020;

/** The `transaction_read_only` option of BEGIN/SET TRANSACTION: true, false, or null when not given. */
function readOnlyOption(options: unknown): boolean | null {
  for (const d of defElems(options)) {
    if (d.defname === 'transaction_read_only') return d.arg === undefined ? true : constantBoolean(d.arg as AnyNode);
  }
  return null;
}

/** A constant's truth as the server would parse a boolean setting; null when it is not a constant. */
function constantBoolean(node: AnyNode): boolean | null {
  const k = node.A_Const as AnyNode | undefined;
  if (k === undefined) return null;
  if (k.ival !== undefined) return ((k.ival as AnyNode).ival ?? 0) !== 0;
  if (k.boolval !== undefined) return (k.boolval as AnyNode).boolval === true;
  const text = (k.sval as AnyNode | undefined)?.sval;
  if (typeof text === 'string') {
    const v = text.toLowerCase();
    if (v === 'on' || v === 'true' || v === 'yes' || v === '1' || v === 't' || v === 'y') return true;
    if (v === 'off' || v === 'false' || v === 'no' || v === '0' || v === 'f' || v === 'n') return false;
  }
  return null;
}

/** Statements that cannot run in a transaction block or pipeline, or start transactions of their own. */
function runsOwnTransactions(type: string, s: AnyNode): boolean {
  switch (type) {
    case 'ClusterStmt':
      return s.relation === undefined; // CLUSTER of every table commits table by table
    case 'ReindexStmt':
      return defElems(s.params).some((d) => d.defname === 'concurrently' && defElemIsTrue(d)) || (s.kind !== 'REINDEX_OBJECT_INDEX' && s.kind !== 'REINDEX_OBJECT_TABLE');
    case 'CreatedbStmt':
    case 'DropdbStmt':
    case 'CreateTableSpaceStmt':
    case 'DropTableSpaceStmt':
    case 'CreateSubscriptionStmt':
    case 'AlterSubscriptionStmt':
    case 'DropSubscriptionStmt':
      return true;
    case 'AlterDatabaseStmt':
      return defElems(s.options).some((d) => d.defname === 'tablespace');
    default:
      return false;
  }
}

function defElemString(d: AnyNode): string | undefined {
  const arg = d.arg as AnyNode | undefined;
  if (arg === undefined) return undefined;
  const s = (arg.String as AnyNode | undefined)?.sval;
  return typeof s === 'string' ? s : undefined;
}

class StatementClassifier {
  readonly w: QueryWalker;

  constructor(
    private readonly a: StatementAnalysis,
    private readonly innerText: () => string,
  ) {
    this.w = new QueryWalker(a, (type, body) => this.statement(type, body));
  }

  /** Classifies a statement node into the analysis. Also used for statements inside statements. */
  statement(type: string, s: AnyNode): void {
    const a = this.a;
    const w = this.w;
    switch (type) {
      // ---- queries --------------------------------------------------------------------------------------
      case 'SelectStmt':
        a.addClass('read');
        w.selectStmt(s);
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        w.dml(type, s, false);
        return;
    }
    // Everything else is a utility statement: literals (names, options, file names) can change its meaning.
    a.literalDependent();
    switch (type) {
      case 'ExplainStmt':
        return this.explain(s);
      case 'PrepareStmt':
        return this.prepare(s);
      case 'ExecuteStmt':
        return this.execute(s);
      case 'DeallocateStmt': {
        a.addClass('session');
        const name = (s.name as string | undefined) ?? null;
        a.deallocate = { name };
        if (a.env.hiddenLevel > 0) return; // inside a function body: not this text's own statements
        if (name === null) this.forgetAllPrepared();
        else a.env.localPrepared.set(name, null);
        return;
      }
      case 'DeclareCursorStmt':
        return this.declareCursor(s);
      case 'FetchStmt':
        return this.fetch(s);
      case 'ClosePortalStmt': {
        a.addClass('session');
        const name = (s.portalname as string | undefined) ?? null;
        a.cursor = { op: 'close', name };
        if (name === null) {
          a.env.localPortals.clear();
          a.env.localPortalsClosed = true;
        } else {
          a.env.localPortals.set(name, null);
        }
        return;
      }
      case 'ListenStmt':
      case 'UnlistenStmt':
      case 'VariableShowStmt':
        a.addClass('session');
        a.snapshotFree = true;
        return;
      case 'DiscardStmt':
        a.addClass('session');
        a.changesParsing = true;
        if (s.target === 'DISCARD_ALL') {
          // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and RESET ROLE: the same power as RESET ROLE.
          a.addClass('privilege', 'DISCARD ALL resets the role to the session user');
          a.deallocate = { name: null };
          // It also runs RESET ALL and cannot run inside a transaction block.
          a.changesReadOnlyDefault = true;
          a.ownTransactions = true;
          if (a.env.hiddenLevel === 0) {
            this.forgetAllPrepared();
            a.env.localPortals.clear();
            a.env.localPortalsClosed = true;
          }
        }
        return;
      case 'VariableSetStmt':
        a.snapshotFree = true;
        return this.variableSet(s, a.command);
      case 'TransactionStmt':
        a.snapshotFree = true;
        return this.transaction(s);
      case 'ConstraintsSetStmt':
        a.addClass('transaction');
        a.snapshotFree = true;
        a.transaction = { kind: 'constraints' };
        return;
      case 'NotifyStmt':
        a.addClass('write', 'NOTIFY sends a notification');
        a.snapshotFree = true;
        a.addFlag('notify');
        return;
      case 'LockStmt':
        a.snapshotFree = true;
        a.addClass('write', 'LOCK TABLE takes table locks');
        a.addFlag('locks');
        for (const rv of (s.relations as AnyNode[] | undefined) ?? []) w.target((rv.RangeVar as AnyNode) ?? rv);
        return;
      case 'TruncateStmt':
        a.addClass('write', 'TRUNCATE removes every row');
        for (const rv of (s.relations as AnyNode[] | undefined) ?? []) {
          const rel = (rv.RangeVar as AnyNode) ?? rv;
          w.target(rel);
          // ON TRUNCATE triggers (and what else writing the table runs).
          w.relationWrite((rel.schemaname as string | undefined) ?? null, rel.relname as string);
        }
        return;
      case 'CopyStmt':
        return this.copy(s);
      case 'DoStmt':
        return this.doBlock(s);
      case 'CallStmt':
        return this.call(s);

      // ---- privileges -----------------------------------------------------------------------------------
      case 'GrantStmt':
        a.addClass('privilege', `${s.is_grant ? 'GRANT' : 'REVOKE'} changes privileges`);
        if (s.objtype === 'OBJECT_TABLE' && s.targtype === 'ACL_TARGET_OBJECT') {
          for (const rv of (s.objects as AnyNode[] | undefined) ?? []) if (rv.RangeVar) w.target(rv.RangeVar as AnyNode);
        }
        return;
      case 'GrantRoleStmt':
        a.addClass('privilege', `${s.is_grant ? 'GRANT' : 'REVOKE'} changes role membership`);
        return;
      case 'AlterDefaultPrivilegesStmt':
        a.addClass('privilege', 'ALTER DEFAULT PRIVILEGES changes privileges of future objects');
        return;
      case 'CreateRoleStmt':
      case 'AlterRoleStmt':
      case 'AlterRoleSetStmt':
      case 'DropRoleStmt':
        a.addClass('privilege', `${a.command} manages roles`);
        return;
      case 'ReassignOwnedStmt':
        a.addClass('privilege', 'REASSIGN OWNED changes owners');
        return;
      case 'DropOwnedStmt':
        a.addClass('privilege', 'DROP OWNED drops objects and revokes privileges');
        a.addClass('ddl');
        return;
      case 'AlterOwnerStmt':
        a.addClass('ddl');
        a.addClass('privilege', 'OWNER TO changes an owner');
        if (CLUSTER_OBJECTS.has(s.objectType as string)) a.addClass('admin', `${a.command} changes a server-wide object`);
        if (s.relation) w.target(s.relation as AnyNode);
        return;
      case 'CreatePolicyStmt':
      case 'AlterPolicyStmt':
        a.addClass('ddl');
        a.addClass('privilege', `${a.command} changes row-level security`);
        if (s.table) w.target(s.table as AnyNode);
        w.walkDeferred(s.qual);
        w.walkDeferred(s.with_check);
        return;

      // ---- server administration -------------------------------------------------------------------------
      case 'AlterSystemStmt':
        a.ownTransactions = true;
        a.addClass('admin', 'ALTER SYSTEM changes the server configuration');
        return;
      case 'LoadStmt':
        a.addClass('admin', 'LOAD loads a shared library into the server');
        return;
      case 'CreateExtensionStmt':
      case 'AlterExtensionStmt':
      case 'AlterExtensionContentsStmt':
      case 'CreatedbStmt':
      case 'AlterDatabaseStmt':
      case 'AlterDatabaseSetStmt':
      case 'AlterDatabaseRefreshCollStmt':
      case 'DropdbStmt':
      case 'CreateTableSpaceStmt':
      case 'DropTableSpaceStmt':
      case 'AlterTableSpaceOptionsStmt':
      case 'AlterTableMoveAllStmt':
      case 'CreatePublicationStmt':
      case 'AlterPublicationStmt':
      case 'CreateSubscriptionStmt':
      case 'AlterSubscriptionStmt':
      case 'DropSubscriptionStmt':
      case 'CreateFdwStmt':
      case 'AlterFdwStmt':
      case 'CreateForeignServerStmt':
      case 'AlterForeignServerStmt':
      case 'CreateUserMappingStmt':
      case 'AlterUserMappingStmt':
      case 'DropUserMappingStmt':
      case 'CreatePLangStmt':
      case 'CreateAmStmt':
      case 'CreateEventTrigStmt':
      case 'AlterEventTrigStmt':
        a.addClass('admin', `${a.command} changes the server, not just this database's schema`);
        a.addClass('ddl');
        if (runsOwnTransactions(type, s)) a.ownTransactions = true;
        if (type === 'CreatePublicationStmt' || type === 'AlterPublicationStmt') w.walk(s.pubobjects);
        return;
      case 'ImportForeignSchemaStmt':
        a.addClass('ddl');
        a.addClass('admin', 'IMPORT FOREIGN SCHEMA reads another server');
        return;

      // ---- maintenance ---------------------------------------------------------------------------------
      case 'VacuumStmt':
        // VACUUM cannot run in a transaction block; ANALYZE can (and then runs in the caller's transaction).
        if (s.is_vacuumcmd) a.ownTransactions = true;
        a.addClass('maintenance', `${a.command} is table maintenance`);
        for (const r of (s.rels as AnyNode[] | undefined) ?? []) {
          const rel = ((r.VacuumRelation as AnyNode | undefined) ?? r).relation as AnyNode | undefined;
          if (rel) w.target(rel, s.is_vacuumcmd ? 'write' : 'read');
          // ANALYZE and VACUUM FULL evaluate index expressions (with the rest of what writing the table runs).
          if (rel) w.relationWrite((rel.schemaname as string | undefined) ?? null, rel.relname as string, true);
        }
        return;
      case 'ClusterStmt':
      case 'ReindexStmt':
        if (runsOwnTransactions(type, s)) a.ownTransactions = true;
        a.addClass('maintenance', `${a.command} is table maintenance`);
        if (s.relation) {
          w.target(s.relation as AnyNode);
          // Rebuilding indexes evaluates their expressions.
          if (type === 'ClusterStmt' || s.kind === 'REINDEX_OBJECT_TABLE') {
            const rel = s.relation as AnyNode;
            w.relationWrite((rel.schemaname as string | undefined) ?? null, rel.relname as string, true);
          }
        }
        return;
      case 'CheckPointStmt':
        a.snapshotFree = true;
        a.addClass('maintenance', 'CHECKPOINT');
        return;
      case 'RefreshMatViewStmt':
        a.addClass('maintenance', 'REFRESH MATERIALIZED VIEW');
        a.addClass('write', 'REFRESH MATERIALIZED VIEW rewrites the view and runs its query');
        if (s.relation) w.target(s.relation as AnyNode);
        return;

      // ---- schema changes ------------------------------------------------------------------------------
      case 'CreateFunctionStmt':
        return this.createFunction(s);
      case 'AlterFunctionStmt':
        a.addClass('ddl');
        this.functionOptions(defElems(s.actions));
        return;
      case 'CreateTableAsStmt':
        return this.createTableAs(s);
      case 'ViewStmt':
        a.addClass('ddl');
        if (s.view) w.target(s.view as AnyNode);
        w.walkDeferred(s.query);
        return;
      case 'RuleStmt':
        a.addClass('ddl');
        if (s.relation) w.target(s.relation as AnyNode);
        w.walkDeferred(s.whereClause);
        w.walkDeferred(s.actions);
        return;
      case 'CreateTrigStmt':
        a.addClass('ddl');
        if (s.relation) w.target(s.relation as AnyNode);
        w.walkDeferred(s.whenClause);
        return;
      case 'CreateStmt':
        a.addClass('ddl');
        this.createTable(s);
        return;
      case 'CreateForeignTableStmt':
        a.addClass('ddl');
        if (s.base) this.createTable(s.base as AnyNode);
        return;
      case 'CreateDomainStmt':
        a.addClass('ddl');
        w.walkDeferred(s.constraints);
        return;
      case 'AlterTableStmt':
        a.addClass('ddl');
        if (s.relation) w.target(s.relation as AnyNode);
        for (const c of (s.cmds as AnyNode[] | undefined) ?? []) {
          const cmd = (c.AlterTableCmd as AnyNode | undefined) ?? c;
          if (PRIVILEGE_SUBCOMMANDS.has(cmd.subtype as string)) a.addClass('privilege', `${a.command} changes the owner or row-level security`);
        }
        // Defaults, USING expressions and constraints run now against existing rows.
        w.walk(s.cmds);
        return;
      case 'AlterSeqStmt':
        a.addClass('ddl');
        if (s.sequence) w.target(s.sequence as AnyNode);
        if (defElems(s.options).some((d) => d.defname === 'restart')) a.addClass('write', 'ALTER SEQUENCE RESTART changes the sequence value');
        return;
      case 'CreateSeqStmt':
        a.addClass('ddl');
        if (s.sequence) w.target(s.sequence as AnyNode);
        return;
      case 'IndexStmt':
      case 'CreateStatsStmt':
        if (s.concurrent) a.ownTransactions = true;
        a.addClass('ddl');
        if (s.relation) w.target(s.relation as AnyNode);
        w.walkFields(s);
        return;
      case 'DropStmt':
        return this.drop(s);
      case 'RenameStmt':
      case 'AlterObjectSchemaStmt':
      case 'AlterObjectDependsStmt': {
        a.addClass('ddl');
        const objtype = (type === 'RenameStmt' ? s.renameType : s.objectType) as string;
        if (objtype === 'OBJECT_ROLE') a.addClass('privilege', 'renames a role');
        if (CLUSTER_OBJECTS.has(objtype)) a.addClass('admin', `${a.command} changes a server-wide object`);
        if (s.relation) w.target(s.relation as AnyNode);
        return;
      }
      case 'CreateSchemaStmt':
        a.addClass('ddl');
        if (s.authrole) a.addClass('privilege', 'CREATE SCHEMA AUTHORIZATION creates a schema owned by another role');
        // Schema elements (CREATE TABLE, VIEW, INDEX, SEQUENCE, TRIGGER, GRANT) run as part of it.
        for (const e of (s.schemaElts as AnyNode[] | undefined) ?? []) {
          const [t, b] = unwrapNode(e);
          this.statement(t, b);
        }
        return;
      case 'CommentStmt':
      case 'SecLabelStmt':
      case 'DefineStmt':
      case 'CompositeTypeStmt':
      case 'CreateEnumStmt':
      case 'CreateRangeStmt':
      case 'AlterEnumStmt':
      case 'AlterDomainStmt':
      case 'AlterTypeStmt':
      case 'AlterOperatorStmt':
      case 'CreateOpClassStmt':
      case 'CreateOpFamilyStmt':
      case 'AlterOpFamilyStmt':
      case 'CreateConversionStmt':
      case 'CreateCastStmt':
      case 'CreateTransformStmt':
      case 'AlterTSDictionaryStmt':
      case 'AlterTSConfigurationStmt':
      case 'AlterStatsStmt':
      case 'AlterCollationStmt':
      case 'ReplicaIdentityStmt':
        a.addClass('ddl');
        if (type === 'AlterDomainStmt') w.walk(s.def); // ADD CONSTRAINT checks existing values now
        return;
      case 'ReturnStmt':
        // Only inside a function body (deferred, or its BEGIN ATOMIC body read as hidden code): its expression.
        if (a.env.hiddenLevel > 0) a.addClass('read');
        else a.addClass('unknown', 'RETURN outside a function body');
        w.walk(s.returnval);
        return;
      default:
        a.addClass('unknown', `unrecognised statement type ${type}`);
    }
  }

  /** The query of EXPLAIN ANALYZE, COPY, DECLARE, CREATE TABLE AS, PREPARE: it runs (or will) as a statement. */
  private query(node: AnyNode | undefined): void {
    if (node === undefined) return;
    const [type, body] = unwrapNode(node);
    this.a.addCommand(commandTag(type, body));
    this.statement(type, body);
  }

  private explain(s: AnyNode): void {
    const analyze = defElems(s.options).some((d) => d.defname === 'analyze' && defElemIsTrue(d));
    if (analyze) {
      this.a.addFlag('explain_analyze', 'EXPLAIN ANALYZE runs the statement');
      this.query(s.query as AnyNode);
      return;
    }
    // Plain EXPLAIN only plans: the statement's names are listed, its effects are not taken. Planning may run
    // hidden code (user functions on constants, views, policies): with a catalog, that counts.
    this.a.addClass('read');
    this.a.planning++;
    try {
      this.w.walkDeferred(s.query);
    } finally {
      this.a.planning--;
    }
    // ... except EXPLAIN EXECUTE, which evaluates the parameters to plan with them.
    const execute = (s.query as AnyNode | undefined)?.ExecuteStmt as AnyNode | undefined;
    if (execute !== undefined) this.w.walk(execute.params);
  }

  private prepare(s: AnyNode): void {
    const a = this.a;
    a.addClass('session');
    const name = s.name as string;
    const [type, body] = unwrapNode(s.query as AnyNode);
    const inner = new StatementAnalysis(a.env);
    inner.command = commandTag(type, body);
    const innerClassifier = new StatementClassifier(inner, this.innerText);
    innerClassifier.statement(type, body);
    // PREPARE p(mydomain) AS ...: EXECUTE p('x') coerces its parameters to the declared types.
    for (const t of (s.argtypes as AnyNode[] | undefined) ?? []) innerClassifier.w.coercion((t.TypeName as AnyNode | undefined) ?? t);
    const statement = inner.finish(this.innerText());
    a.prepare = { name, statement };
    if (a.env.hiddenLevel === 0) a.env.localPrepared.set(name, statement);
  }

  private execute(s: AnyNode): void {
    const a = this.a;
    const name = s.name as string;
    if (a.deferred === 0) a.executes = name;
    // Inside hidden code (a function body) EXECUTE names whatever the session has prepared when it runs.
    const prepared = a.deferred > 0 || a.env.hiddenLevel > 0 ? undefined : a.env.preparedStatement(name);
    if (prepared === undefined) {
      if (a.deferred === 0) {
        a.addClass('unknown', `EXECUTE ${name}: the prepared statement is not known`);
        a.addFlag('dynamic');
        a.changesParsing = true;
      }
    } else {
      a.mergeStatement(prepared);
      a.addReason(`EXECUTE runs prepared statement ${name}`);
    }
    this.w.walk(s.params);
  }

  private forgetAllPrepared(): void {
    this.a.env.localPrepared.clear();
    this.a.env.localDeallocatedAll = true;
  }

  private variableSet(s: AnyNode, how: string): void {
    const a = this.a;
    const kind = s.kind as string;
    const name = ((s.name as string | undefined) ?? '').toLowerCase();
    if (kind === 'VAR_RESET_ALL') {
      // RESET ALL leaves role and session_authorization alone (GUC_NO_RESET_ALL).
      a.addClass('session');
      a.changesParsing = true;
      a.changesReadOnlyDefault = true;
      return;
    }
    if (kind === 'VAR_SET_MULTI') {
      // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...
      a.addClass(name === 'transaction' ? 'transaction' : 'session');
      const readOnly = readOnlyOption(s.args);
      if (name === 'transaction') {
        if (readOnly !== null) a.transaction = { kind: 'set-mode', readOnly };
      } else if (readOnly !== null) {
        a.changesReadOnlyDefault = true;
      }
      return;
    }
    if (name === 'transaction_read_only') {
      const value = (s.args as AnyNode[] | undefined)?.[0];
      a.transaction = { kind: 'set-mode', readOnly: kind === 'VAR_SET_VALUE' && value !== undefined ? constantBoolean(value) : null };
    } else if (name === 'default_transaction_read_only') {
      a.changesReadOnlyDefault = true; // SET, RESET, SET ... TO DEFAULT, SET ... FROM CURRENT
    }
    const values: string[] = [];
    let allConstant = true;
    for (const arg of (s.args as AnyNode[] | undefined) ?? []) {
      const v = constantString(arg);
      if (v === undefined) allConstant = false;
      else values.push(v);
    }
    applySetting(a, name, allConstant ? values : undefined, `${how} ${name}`);
  }

  private transaction(s: AnyNode): void {
    const a = this.a;
    a.addClass('transaction');
    const chain = s.chain === true;
    const savepoint = s.savepoint_name as string | undefined;
    switch (s.kind) {
      case 'TRANS_STMT_BEGIN':
      case 'TRANS_STMT_START':
        a.transaction = { kind: 'begin', readOnly: readOnlyOption(s.options) };
        return;
      case 'TRANS_STMT_COMMIT_PREPARED':
      case 'TRANS_STMT_ROLLBACK_PREPARED':
        a.addClass('admin', `${a.command} finishes a prepared transaction (possibly another session's)`);
        a.transaction = { kind: s.kind === 'TRANS_STMT_COMMIT_PREPARED' ? 'commit-prepared' : 'rollback-prepared' };
        a.ownTransactions = true;
        return;
      case 'TRANS_STMT_SAVEPOINT':
        a.transaction = { kind: 'savepoint', savepoint };
        return;
      case 'TRANS_STMT_RELEASE':
        a.transaction = { kind: 'release', savepoint };
        return;
      case 'TRANS_STMT_PREPARE':
        // Not plain transaction control: the prepared transaction keeps its locks and changes after the session
        // ends (blocking others and VACUUM) until someone runs COMMIT/ROLLBACK PREPARED, itself admin.
        a.addClass('admin', 'PREPARE TRANSACTION keeps the transaction, its locks and changes, past the end of the session');
        a.changesParsing = true;
        return;
      case 'TRANS_STMT_COMMIT':
      case 'TRANS_STMT_ROLLBACK':
      case 'TRANS_STMT_ROLLBACK_TO':
        // Ending a transaction reverts SET LOCAL and rolled-back SETs.
        a.changesParsing = true;
        a.transaction =
          s.kind === 'TRANS_STMT_COMMIT'
            ? { kind: 'commit', chain }
            : s.kind === 'TRANS_STMT_ROLLBACK'
              ? { kind: 'rollback', chain }
              : s.kind === 'TRANS_STMT_ROLLBACK_TO'
                ? { kind: 'rollback-to', savepoint }
                : { kind: 'prepare' };
        return;
      default:
    }
  }

  private declareCursor(s: AnyNode): void {
    const a = this.a;
    a.addClass('session');
    const name = s.portalname as string;
    const inner = new StatementAnalysis(a.env);
    const [type, body] = unwrapNode(s.query as AnyNode);
    inner.command = commandTag(type, body);
    new StatementClassifier(inner, this.innerText).statement(type, body);
    const statement = inner.finish('');
    // The query runs as the cursor is fetched from (and, WITH HOLD, to its end at COMMIT).
    a.addCommand(statement.command);
    a.mergeStatement(statement);
    a.cursor = { op: 'declare', name, hold: ((s.options as number | undefined) ?? 0) & CURSOR_OPT_HOLD ? true : false, statement };
    a.env.localPortals.set(name, statement);
  }

  /** FETCH and MOVE run the portal's query for the rows they fetch or skip. */
  private fetch(s: AnyNode): void {
    const a = this.a;
    a.addClass('session');
    const name = s.portalname as string;
    if (a.env.ctx.portalStatement === undefined) {
      // No session (rules explain, rules test): nothing to look the portal up in.
      a.cursor = { op: 'fetch', name };
      return;
    }
    const statement = a.env.portalStatement(name);
    if (statement === undefined) {
      a.addClass('unknown', `${s.ismove ? 'MOVE' : 'FETCH'} ${name}: the cursor is not known`);
      a.cursor = { op: 'fetch', name };
      return;
    }
    a.mergeStatement(statement);
    a.addReason(`${s.ismove ? 'MOVE' : 'FETCH'} runs the query of cursor ${name}`);
    a.cursor = { op: 'fetch', name, statement };
  }

  private copy(s: AnyNode): void {
    const a = this.a;
    const w = this.w;
    const rel = s.relation as AnyNode | undefined;
    if (s.is_from) {
      a.addClass('import', 'COPY FROM loads data');
      a.addClass('write', 'COPY FROM inserts rows');
      if (rel) w.target(rel, 'write');
      if (rel) w.relationWrite((rel.schemaname as string | undefined) ?? null, rel.relname as string);
    } else {
      a.addClass('export', 'COPY TO sends data out in bulk');
      if (rel) w.target(rel, 'read');
      // COPY table TO applies the table's row-level security (views and foreign tables cannot be copied).
      if (rel) w.relationRead((rel.schemaname as string | undefined) ?? null, rel.relname as string);
      if (rel) {
        for (const c of (s.attlist as AnyNode[] | undefined) ?? []) a.addColumn(`${rel.relname as string}.${fieldName(c)}`);
        if (s.attlist === undefined) a.addColumn(`${rel.relname as string}.*`);
      }
    }
    if (s.query) this.query(s.query as AnyNode);
    if (s.filename !== undefined) {
      if (s.is_program) {
        a.addClass('admin', 'COPY PROGRAM runs a program on the server');
        a.addFlag('copy_program');
      } else {
        a.addClass('admin', 'COPY to or from a file on the server');
        a.addFlag('copy_file');
        a.addFlag('server_files');
      }
    }
    w.walk(s.whereClause);
  }

  private doBlock(s: AnyNode): void {
    const a = this.a;
    a.ownTransactions = true; // a DO block may COMMIT and start new transactions
    a.addClass('procedural', 'DO runs procedural code');
    a.addFlag('dynamic', 'DO runs code the proxy cannot see');
    a.changesParsing = true;
    const language = defElems(s.args).find((d) => d.defname === 'language');
    const name = language ? defElemString(language) : undefined;
    if (isUntrustedLanguage(name)) a.addClass('admin', `DO in untrusted language ${name}`);
  }

  private call(s: AnyNode): void {
    const a = this.a;
    const f = s.funccall as AnyNode | undefined;
    a.ownTransactions = true; // a procedure may COMMIT and start new transactions
    a.addClass('procedural', 'CALL runs a procedure');
    a.changesParsing = true;
    if (f === undefined) return;
    const parts = ((f.funcname as AnyNode[] | undefined) ?? []).map(fieldName);
    a.addFunction(parts.join('.'));
    // With a catalog, what the procedure's body does travels with the CALL (its flags, its classes).
    if (a.deferred === 0 && a.env.ctx.catalog !== undefined && parts.length > 0) {
      const name = parts[parts.length - 1]!;
      const schema = parts.length >= 2 ? parts[parts.length - 2]! : null;
      a.mergeEffects(procedureEffects(a.env, schema, name), null);
    }
    // The arguments are ordinary expressions.
    this.w.walk(f.args);
  }

  private createFunction(s: AnyNode): void {
    const a = this.a;
    a.addClass('ddl');
    const options = defElems(s.options);
    this.functionOptions(options);
    const language = options.find((d) => d.defname === 'language');
    const name = language ? defElemString(language) : undefined;
    if (isUntrustedLanguage(name)) a.addClass('admin', `${a.command} in language ${name}, which can reach the server itself`);
    // The body and the parameter defaults run later, when the function is called.
    this.w.walkDeferred(s.parameters);
    this.w.walkDeferred(s.sql_body);
  }

  /** CREATE/ALTER FUNCTION options: SECURITY DEFINER, and SET clauses attached to the function. */
  private functionOptions(options: AnyNode[]): void {
    const a = this.a;
    for (const d of options) {
      if (d.defname === 'security' && defElemIsTrue(d)) {
        a.addClass('privilege', 'SECURITY DEFINER: the function runs with its owner\'s privileges');
        a.addFlag('security_definer');
      } else if (d.defname === 'set') {
        const set = (d.arg as AnyNode | undefined)?.VariableSetStmt as AnyNode | undefined;
        const name = ((set?.name as string | undefined) ?? '').toLowerCase();
        if (name === 'role' || name === 'session_authorization') a.addClass('privilege', `the function sets ${name}`);
      }
    }
  }

  private createTableAs(s: AnyNode): void {
    const a = this.a;
    const into = s.into as AnyNode | undefined;
    const rel = into?.rel as AnyNode | undefined;
    const matview = s.objtype === 'OBJECT_MATVIEW';
    const noData = into?.skipData === true;
    a.addClass('ddl', matview ? 'creates a materialized view' : 'creates a table');
    if (!matview) a.addFlag('select_into');
    if (rel) this.w.target(rel, 'write');
    if (noData) {
      this.w.walkDeferred(s.query);
      return;
    }
    a.addClass('write', matview ? 'fills the materialized view' : 'fills the new table');
    this.query(s.query as AnyNode);
  }

  private createTable(s: AnyNode): void {
    const w = this.w;
    if (s.relation) w.target(s.relation as AnyNode);
    // Column defaults and constraints of a new table run later, on its rows; LIKE sources are read.
    w.walkDeferred(s.tableElts);
    w.walk(s.inhRelations);
    // Partition bounds are evaluated now.
    w.walk(s.partbound);
  }

  private drop(s: AnyNode): void {
    const a = this.a;
    const removeType = s.removeType as string;
    if (s.concurrent) a.ownTransactions = true; // DROP INDEX CONCURRENTLY
    a.addClass('ddl', `${a.command}`);
    if (CLUSTER_OBJECTS.has(removeType)) a.addClass('admin', `${a.command} changes a server-wide object`);
    if (removeType === 'OBJECT_POLICY') a.addClass('privilege', 'DROP POLICY changes row-level security');
    if (RELATION_OBJECTS.has(removeType)) {
      for (const o of (s.objects as AnyNode[] | undefined) ?? []) {
        const items = ((o.List as AnyNode | undefined)?.items as AnyNode[] | undefined) ?? [];
        const parts = items.map(fieldName);
        if (parts.length === 0) continue;
        a.addTable(parts.length >= 2 ? parts[parts.length - 2]! : null, parts[parts.length - 1]!, 'write');
      }
    }
  }
}
