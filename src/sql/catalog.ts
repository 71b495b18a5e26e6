/**
 * What the classifier may ask about a database's schema, and the shape of the answers.
 *
 * The classifier is pure: it never queries anything. A ClassifyContext may carry `catalog`, whose lookups
 * answer synchronously from caches the proxy fills (src/proxy/catalog/). A lookup that has not been answered
 * yet returns undefined: the classifier records it as unresolved (never as a read), the proxy fetches it,
 * and the text is classified again. Every lookup is recorded with its answer (ContextDependencies.catalog)
 * so that a cached classification is re-checked on a hit and a context rebuilt from the recorded answers
 * reproduces the classification (see replay.ts). Answers are plain JSON.
 *
 * Objects with an OID below FirstNormalObjectId (16384) were created by initdb (pg_catalog,
 * information_schema): they are built-ins and are judged by stepgate's own tables. Everything from 16384 on
 * is user-defined, wherever it lives (pg_catalog included).
 */

/** PostgreSQL's FirstNormalObjectId: OIDs below it belong to objects initdb created. */
export const FIRST_NORMAL_OID = 16384;

/** A function (pg_proc row), as the proxy's catalog reports it. */
export interface FunctionFacts {
  oid: number;
  schema: string;
  name: string;
  /** prokind: f function, p procedure, a aggregate, w window function */
  kind: string;
  /** pg_language.lanname */
  language: string;
  /** provolatile: i, s or v */
  volatility: string;
  securityDefiner: boolean;
  /** proconfig: `name=value` entries of the function's SET clauses */
  config: string[];
  /**
   * pg_get_functiondef() (run with search_path = '') for functions and procedures in language sql or plpgsql;
   * null for other languages, aggregates, or a definition too large to fetch (then `tooLarge`).
   */
  definition: string | null;
  tooLarge?: boolean;
  /** pg_get_expr(proargdefaults): the parameter defaults, comma-separated; null without defaults */
  defaults: string | null;
  /**
   * User-defined (OID >= 16384) argument and result types that are domains, composite, range or array types:
   * coercions to them may run domain checks.
   */
  types: number[];
  /** Aggregates: their support functions (transition, final, combine, (de)serial, moving, sort operator). */
  aggregate?: FunctionFacts[];
}

/** A relation (pg_class row). */
export interface RelationFacts {
  oid: number;
  schema: string;
  name: string;
  /** relkind: r table, p partitioned table, v view, m materialized view, f foreign table, S sequence, ... */
  kind: string;
  rowSecurity: boolean;
  /** USING and WITH CHECK expressions of its row-level security policies (pg_get_expr) */
  policies: string[];
  /** pg_get_viewdef() for views */
  query: string | null;
  /** Foreign-data wrappers reached when it is read: its own (foreign table) and its foreign partitions' or children's */
  foreign: string[];
  /** Expressions evaluated when it is read: virtual generated columns (PostgreSQL 18) */
  readExpressions: string[];
  /** What runs when it is written (INSERT, UPDATE, DELETE, MERGE, COPY FROM); absent for built-ins. */
  write?: RelationWriteFacts;
}

export interface RelationWriteFacts {
  /** Enabled user triggers: their functions, and their CREATE TRIGGER texts (for WHEN conditions) */
  triggers: { fn: FunctionFacts; definition: string }[];
  /** Enabled rules other than views' SELECT rules (pg_get_ruledef: CREATE RULE ... DO ...) */
  rules: string[];
  /** Column defaults, generated columns and CHECK constraints (pg_get_expr) */
  expressions: string[];
  /** Domain, composite, range and array column types that are user-defined */
  types: number[];
  /** CREATE INDEX texts (pg_get_indexdef) of indexes with expressions or predicates: evaluated on every write and by ANALYZE, VACUUM FULL, CLUSTER, REINDEX */
  indexes?: string[];
}

/** A type (pg_type row) a value may be coerced to. */
export interface TypeFacts {
  oid: number;
  schema: string;
  name: string;
  /** typtype: b base, c composite, d domain, e enum, p pseudo, r range, m multirange */
  kind: string;
  /** Domain CHECK constraint expressions (pg_get_expr, with VALUE) */
  checks: string[];
  /** User-defined types a coercion to this one coerces to as well: domain base, array element, composite columns, range subtype */
  parts: number[];
  /** Functions of user-defined casts into this type (pg_cast rows with OID >= 16384) */
  casts: FunctionFacts[];
}

/** A user-defined operator (OID >= 16384). */
export interface OperatorFacts {
  oid: number;
  schema: string;
  name: string;
  /** Its function, estimators, and its commutator's and negator's functions (the planner may use those instead). */
  functions: FunctionFacts[];
}

/** User code the server may run without any syntax naming it, database-wide. */
export interface DatabaseHazards {
  /** Functions of user-defined operator-family members (pg_amop/pg_amproc rows with OID >= 16384): sorting, grouping, comparing, joining, index scans. */
  opfamilies: { family: string; fn: FunctionFacts; builtinTypes?: boolean }[];
  /** User-defined implicit and assignment casts with a function: applied wherever the types fit. */
  casts: { source: string; target: string; fn: FunctionFacts; builtinTypes?: boolean }[];
  /*
   * builtinTypes: every type the member or cast is for is a built-in (only a superuser can do that). When
   * false (or absent), it runs only where a value of a user-defined type appears.
   */
}

/**
 * Whether objects of one kind with one name may be user-defined: `none` (no such object), `trusted` (only
 * built-ins, or for types: nothing that can run user code on coercion), `lookup` (look them up).
 */
export type NameStatus = 'none' | 'trusted' | 'lookup';

/** One lookup. Schemas and names are passed separately, exactly as the parser gives them; null schema: unqualified. */
export type CatalogKey =
  | { kind: 'names'; of: 'function' | 'operator' | 'type'; name: string }
  | { kind: 'functions'; schema: string | null; name: string }
  | { kind: 'function'; oid: number }
  | { kind: 'relations'; schema: string | null; name: string }
  | { kind: 'operators'; schema: string | null; name: string }
  | { kind: 'types'; schema: string | null; name: string }
  | { kind: 'type'; oid: number }
  | { kind: 'hazards' };

/** The answer to each kind of lookup (undefined: not looked up yet). */
export type CatalogAnswer<K extends CatalogKey> = K extends { kind: 'names' }
  ? NameStatus
  : K extends { kind: 'functions' }
    ? FunctionFacts[]
    : K extends { kind: 'function' }
      ? FunctionFacts | null
      : K extends { kind: 'relations' }
        ? RelationFacts[]
        : K extends { kind: 'operators' }
          ? OperatorFacts[]
          : K extends { kind: 'types' }
            ? TypeFacts[]
            : K extends { kind: 'type' }
              ? TypeFacts | null
              : K extends { kind: 'hazards' }
                ? DatabaseHazards
                : never;

/**
 * Synchronous schema lookups. Unqualified names are answered path-independently: every object of that
 * name in any schema the session's search_path could reach (functions and operators: every schema but the
 * temporary ones; relations and types: every schema, temporary ones included). Schema `pg_temp` means any
 * session's temporary schema.
 *
 * `functions`, `relations`, `types`: every object of the name, built-ins included; `operators`: only
 * user-defined ones (OID >= 16384).
 */
export interface CatalogLookups {
  lookup<K extends CatalogKey>(key: K): CatalogAnswer<K> | undefined;
}

/**
 * The string of each key object seen: a cached classification asks its catalog keys again on every hit
 * (cache.ts), and building and hashing a fresh string each time cost more than the rest of the check.
 * Sound because a key is never changed once made (nothing assigns to a key's fields).
 */
const keyStrings = new WeakMap<CatalogKey, string>();

/** A stable string for a key (for maps and deduplication; never parsed back). */
export function catalogKeyString(key: CatalogKey): string {
  let s = keyStrings.get(key);
  if (s === undefined) {
    s = buildKeyString(key);
    keyStrings.set(key, s);
  }
  return s;
}

function buildKeyString(key: CatalogKey): string {
  switch (key.kind) {
    case 'names':
      return `names\u0000${key.of}\u0000${key.name}`;
    case 'function':
    case 'type':
      return `${key.kind}\u0000${key.oid}`;
    case 'hazards':
      return 'hazards';
    default:
      return `${key.kind}\u0000${key.schema === null ? '\u0001' : key.schema}\u0000${key.name}`;
  }
}
