import type { CatalogKey, CatalogLookups } from './catalog.js';

/**
 * What stepgate knows about a statement: the contract between `sql/` (which produces it),
 * `rules/` (which decides on it), the proxy, the console and the audit trail.
 */
import type { Grammar } from './grammar.js';

/** What a statement can do. A statement may have several; the strongest decides. */
export const STATEMENT_CLASSES = [
  'read', // reads data, changes nothing
  'write', // INSERT/UPDATE/DELETE/MERGE/TRUNCATE, nextval, large-object writes, NOTIFY ...
  'ddl', // CREATE/ALTER/DROP of schema objects, COMMENT, SECURITY LABEL ...
  'export', // data leaving in bulk: COPY ... TO
  'import', // COPY ... FROM
  'privilege', // GRANT/REVOKE, roles, SET ROLE, SET SESSION AUTHORIZATION, SECURITY DEFINER ...
  'admin', // ALTER SYSTEM, server files and programs, backends, replication, extensions, databases ...
  'maintenance', // VACUUM, ANALYZE, REINDEX, CLUSTER, CHECKPOINT ...
  'procedural', // DO, CALL, functions that may have side effects
  'transaction', // BEGIN, COMMIT, ROLLBACK, SAVEPOINT ...
  'session', // ordinary SET/SHOW/RESET, LISTEN, DISCARD, PREPARE/DEALLOCATE ...
  'unknown', // could not be read with certainty: never treated as a read
] as const;
export type StatementClass = (typeof STATEMENT_CLASSES)[number];

export const STATEMENT_FLAGS = [
  'no_where', // UPDATE or DELETE without a WHERE clause (or WHERE CURRENT OF is absent too)
  'locks', // SELECT ... FOR UPDATE/SHARE, LOCK TABLE
  'select_into', // SELECT ... INTO / CREATE TABLE AS
  'explain_analyze', // EXPLAIN ANALYZE: the inner statement runs
  'writing_cte', // a data-modifying WITH clause
  'copy_program', // COPY ... PROGRAM: runs a program on the server
  'copy_file', // COPY to or from a file on the server
  'security_definer', // creates or alters a SECURITY DEFINER function (or, with a catalog, calls one)
  'multi_statement', // the message held more than one statement
  'dynamic', // runs SQL the proxy cannot see (EXECUTE of an unknown prepared statement, ...)
  // What PostgreSQL's read-only mode still allows (reads run in it), found wherever the call hides:
  'advisory_lock', // takes or releases an advisory lock (pg_advisory_*)
  'signals_backend', // cancels, terminates or signals another backend
  'set_config', // changes a setting through set_config()
  'notify', // sends a notification (NOTIFY, pg_notify)
  'network', // leaves the database: dblink, postgres_fdw, foreign tables
  'assigns_xid', // assigns a transaction ID (txid_current, pg_current_xact_id)
  'setseed', // sets the session's random seed
  'server_files', // reads, lists or writes files on the server (pg_read_file, lo_import, COPY files, config-file views)
  'secrets', // reads credentials or raw data only superusers see (pg_authid, pg_shadow, user mappings, pg_statistic, pg_largeobject)
] as const;
export type StatementFlag = (typeof STATEMENT_FLAGS)[number];

export interface TableRef {
  /** Schema as written; null when the name is unqualified (it resolves through search_path). */
  schema: string | null;
  name: string;
  access: 'read' | 'write';
}

export interface StatementInfo {
  /** This statement's own text, as the server will read it. */
  sql: string;
  /** Upper-case command as PostgreSQL names it in its command tag: SELECT, DELETE, CREATE TABLE ... */
  command: string;
  /**
   * Every command the statement runs, `command` included, sorted: a data-modifying WITH adds its
   * DELETE/UPDATE/INSERT/MERGE, EXPLAIN ANALYZE and COPY (query) their query's command, EXECUTE the prepared
   * statement's. Rules match `command` against these, so `WITH d AS (DELETE ...) SELECT` is a DELETE too.
   */
  commands: string[];
  /** Sorted, without duplicates; never empty. */
  classes: StatementClass[];
  tables: TableRef[];
  /** Columns read where they can be determined, as `table.column` (or `column` when the table is ambiguous). */
  columns: string[];
  /** Functions called, lower-case, schema-qualified only when written so. */
  functions: string[];
  flags: StatementFlag[];
  /** Human-readable reasons for classes stronger than `read` (for `rules explain` and the console). */
  reasons: string[];
  /**
   * True when running this statement may change how the server reads later SQL text
   * (standard_conforming_strings, client_encoding): SET/RESET of them or of ALL, set_config, functions
   * and procedures, DISCARD, and transaction ends (which revert SET LOCAL and rolled-back SETs).
   * The proxy treats those settings as uncertain until the server has answered.
   */
  changesParsing: boolean;
  /** For `PREPARE name AS stmt`: the name (lower-case unless quoted) and the inner statement's classification. */
  prepare?: { name: string; statement: StatementInfo };
  /** For `DEALLOCATE name` / `DEALLOCATE ALL` (name null), and DISCARD ALL (name null). */
  deallocate?: { name: string | null };
  /** For `EXECUTE name`: the prepared statement's name. */
  executes?: string;
  /** What a transaction-control statement does (BEGIN, COMMIT, SAVEPOINT, SET TRANSACTION READ ONLY ...). */
  transaction?: TransactionEffect;
  /** DECLARE, FETCH/MOVE and CLOSE: the portal (SQL cursor) they create, run or drop. */
  cursor?: CursorEffect;
  /**
   * True when running the statement takes no snapshot (PostgreSQL's PlannedStmtRequiresSnapshot and
   * analyze_requires_snapshot are false: transaction control, SET, SHOW, LOCK, LISTEN, NOTIFY ...). Until a
   * transaction's first snapshot its read-only mode can still be turned off.
   */
  snapshotFree?: boolean;
  /**
   * True when the statement cannot run inside a transaction block or pipeline, or starts transactions of its
   * own (VACUUM, CREATE INDEX CONCURRENTLY, CREATE DATABASE, DISCARD ALL, CALL, DO ...).
   */
  ownTransactions?: boolean;
  /**
   * True when the statement may change the session's default_transaction_read_only (SET or RESET of it,
   * RESET ALL, DISCARD ALL, SET SESSION CHARACTERISTICS AS TRANSACTION ..., set_config() of it or of a
   * name that is not a constant).
   */
  changesReadOnlyDefault?: boolean;
}

/** The transaction-control part of a statement, as the server will apply it. */
export interface TransactionEffect {
  kind:
    | 'begin' // BEGIN, START TRANSACTION
    | 'commit' // COMMIT, END (and COMMIT AND CHAIN: `chain`)
    | 'rollback' // ROLLBACK, ABORT
    | 'savepoint'
    | 'release'
    | 'rollback-to'
    | 'prepare' // PREPARE TRANSACTION
    | 'commit-prepared'
    | 'rollback-prepared'
    | 'set-mode' // SET TRANSACTION READ ONLY/WRITE, SET [LOCAL] transaction_read_only: this transaction's mode
    | 'constraints'; // SET CONSTRAINTS: fires deferred triggers when they become immediate
  /** COMMIT/ROLLBACK AND CHAIN: a new transaction with the same characteristics starts at once. */
  chain?: boolean;
  /** begin/set-mode: read only asked for (true), read write (false), not said or not a constant (null). */
  readOnly?: boolean | null;
  /** savepoint/release/rollback-to: the savepoint's name. */
  savepoint?: string;
}

/** DECLARE name CURSOR, FETCH/MOVE name, CLOSE name | ALL. */
export interface CursorEffect {
  op: 'declare' | 'fetch' | 'close';
  /** Null for CLOSE ALL. */
  name: string | null;
  /** declare: WITH HOLD (the query runs to completion at COMMIT). */
  hold?: boolean;
  /** declare: the cursor's query, as classified; fetch: the portal's statement when the context knew it. */
  statement?: StatementInfo;
}

export interface Classification {
  statements: StatementInfo[];
  /** Set when the text could not be parsed; statements then holds one `unknown` entry. */
  error?: {
    message: string;
    position: number;
    /**
     * The text nests too deeply for the stack of the thread that read it: a thread with a larger stack (the
     * classification worker) may read it. Such results are never cached.
     */
    stackExhausted?: true;
  };
}

/**
 * What the classifier needs to know about the session it classifies for. Pure data and lookups: no I/O.
 *
 * Lookups (the methods) must be deterministic for the duration of one classification and take and return
 * structured-cloneable values: large texts are classified in a worker thread with a context rebuilt from
 * recorded answers (replay.ts), which calls nothing but these methods and reads nothing but these properties.
 */
export interface ClassifyContext {
  /**
   * The database's schema catalog (src/sql/catalog.ts): functions, relations, operators, types and the
   * database-wide hazards, answered from the proxy's caches. When present, it replaces functionVolatility and
   * shadowedBuiltin. Absent (`rules explain`, tests): built-ins are judged by stepgate's tables, other
   * functions and operators stay procedural, tables are plain reads.
   */
  catalog?: CatalogLookups;
  /**
   * Parameter types declared for the text being classified (an extended-protocol Parse; 0 = unspecified).
   * Binding a value to a domain-typed parameter runs the domain's checks. See withParameterTypes().
   */
  parameterTypes?: readonly number[];
  /**
   * The grammar of the session's server (its PostgreSQL major). Absent: PostgreSQL 18's, for classifying
   * without a server (`rules explain`, `rules test`).
   */
  grammar?: Grammar;
  /**
   * The session's standard_conforming_strings. When off, backslashes in '...' literals escape, which
   * libpg-query (always on) would read differently: the classifier then fails closed on any backslash.
   */
  standardConformingStrings: boolean;
  /** SQL-level prepared statements of the session (PREPARE name AS ...), for EXECUTE name. */
  preparedStatement?(name: string): StatementInfo | undefined;
  /**
   * The statement behind a portal of the session (a SQL cursor, or a portal created by a Bind message: they
   * share one namespace), for FETCH/MOVE name. Undefined when it is not known.
   */
  portalStatement?(name: string): StatementInfo | undefined;
  /**
   * Legacy, used only without `catalog`. What the server's catalog says about a function that is not a known built-in:
   * 'read' (STABLE or IMMUTABLE everywhere it exists), 'procedural' (VOLATILE somewhere, or unknown to the
   * server), or undefined when it has not been looked up yet. Names are lower-case, as written (qualified or not).
   */
  functionVolatility?(name: string): 'read' | 'procedural' | undefined;
  /**
   * Added by sql/: whether a schema other than pg_catalog also defines a function (kind 'function') or an
   * operator (kind 'operator') with this built-in name, e.g. public.now(integer). An unqualified call could
   * then resolve to it (another overload, or search_path order), so it is not trusted to be the built-in:
   * a function is asked of functionVolatility instead, an operator counts as procedural. Absent: the
   * built-in table is trusted for every unqualified name.
   */
  shadowedBuiltin?(name: string, kind: 'function' | 'operator'): boolean;
}

export interface ClassifyResult extends Classification {
  /**
   * Functions whose volatility the context did not know (not built in, not looked up yet). They were
   * classified as `procedural`; the caller may look them up in the server's catalog and classify again.
   */
  unresolvedFunctions: string[];
  /**
   * Catalog lookups the context could not answer yet (not looked up, or expired). Whatever depended on them was
   * classified `unknown`; the caller looks them up (src/proxy/catalog/) and classifies again. Absent: none.
   */
  unresolvedLookups?: CatalogKey[];
  /**
   * True when every statement's classification is independent of its literal values, so it may be reused
   * for any statement of the same shape (same tokens apart from constants). False when any literal can
   * change the result (function arguments such as nextval('t'), casts to reg* types, SET values, COPY
   * targets, utility statements ...).
   */
  shapeSafe: boolean;
}
