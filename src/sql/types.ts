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
  'security_definer', // creates or alters a SECURITY DEFINER function
  'multi_statement', // the message held more than one statement
  'dynamic', // runs SQL the proxy cannot see (EXECUTE of an unknown prepared statement, ...)
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
   * What the server's catalog says about a function that is not a known built-in:
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
   * True when every statement's classification is independent of its literal values, so it may be reused
   * for any statement of the same shape (same tokens apart from constants). False when any literal can
   * change the result (function arguments such as nextval('t'), casts to reg* types, SET values, COPY
   * targets, utility statements ...).
   */
  shapeSafe: boolean;
}
