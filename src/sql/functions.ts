/**
 * What calling a function or using an operator can do.
 *
 * pg_catalog functions come from a table generated from a real server (builtin-functions.ts): IMMUTABLE and
 * STABLE ones only read. Volatile built-ins are curated here (harmless reads, writers, server files and
 * programs, backends and replication, advisory locks, SQL run from a string); any volatile built-in not curated
 * is `procedural`. Every other function is asked of the session's catalog through ClassifyContext; a name the
 * context has not looked up yet is `procedural` and reported as unresolved, so the caller can look it up and
 * classify again.
 */
import { BUILTIN_FUNCTIONS, BUILTIN_OPERATORS } from './builtin-functions.js';
import type { ClassifyContext, StatementClass, StatementFlag } from './types.js';

/** How one function call counts. Verdicts are shared constants: never mutate one. */
export interface FunctionVerdict {
  readonly classes: readonly StatementClass[];
  readonly flags: readonly StatementFlag[];
  /** Why the classes are stronger than `read`; null for plain reads. */
  readonly reason: string | null;
  /**
   * Set when the arguments decide the rest: a sequence name (nextval, setval, currval) or a setting
   * (set_config). The caller inspects the arguments; the result then depends on literals (not shape-safe).
   */
  readonly argumentRule: 'sequence-write' | 'sequence-read' | 'set_config' | null;
  /** The context had not looked this function up yet: classified as procedural meanwhile. */
  readonly unresolved: boolean;
  /** Running it may change how the server reads later SQL (it may SET anything). */
  readonly changesParsing: boolean;
}

function verdict(
  classes: StatementClass[],
  reason: string | null,
  flags: StatementFlag[] = [],
  argumentRule: FunctionVerdict['argumentRule'] = null,
): FunctionVerdict {
  const changesParsing = classes.includes('procedural');
  return Object.freeze({ classes, flags, reason, argumentRule, unresolved: false, changesParsing });
}

const READ = verdict(['read'], null);
const SEQUENCE_WRITE = verdict(['write'], 'advances or sets a sequence', [], 'sequence-write');
const SEQUENCE_READ = verdict(['read'], null, [], 'sequence-read');
const LARGE_OBJECT_WRITE = verdict(['write'], 'writes a large object');
const NOTIFY = verdict(['write'], 'sends a notification', ['notify']);
const SERVER_FILES = verdict(['admin'], 'reads or writes files on the server', ['server_files']);
const SERVER_CONFIG_FILES = verdict(['admin'], 'reads server configuration files', ['server_files']);
const SIGNALS_BACKENDS = verdict(['admin'], 'signals other backends', ['signals_backend']);
const SERVER_CONTROL = verdict(['admin'], 'controls the server (configuration, WAL, backups, recovery)');
const REPLICATION = verdict(['admin'], 'manages replication slots or origins');
const STATISTICS_ADMIN = verdict(['admin'], 'resets or overwrites server statistics');
const CATALOG_ADMIN = verdict(['admin'], 'changes system catalogs directly');
const LEAVES_DATABASE = verdict(['admin'], 'connects to another server', ['network']);
const LEAVES_DATABASE_DYNAMIC = verdict(['admin'], 'runs SQL on another server', ['dynamic', 'network']);
const INDEX_MAINTENANCE = verdict(['maintenance'], 'maintains an index');
const ADVISORY_LOCK = verdict(['read'], 'takes or releases an advisory lock', ['advisory_lock', 'locks']);
const ASSIGNS_XID = verdict(['read'], 'assigns a transaction ID', ['assigns_xid']);
const SETSEED = verdict(['read'], 'sets the random seed of the session', ['setseed']);
const RUNS_SQL_TEXT = verdict(['procedural'], 'runs SQL given as a string', ['dynamic']);
const READS_TABLES_BY_NAME = verdict(['read'], null, ['dynamic']);
const SET_CONFIG = verdict(['session'], 'changes a setting', ['set_config'], 'set_config');
const EXTENSION_SET_CONFIG = verdict(['session'], 'changes a setting', ['set_config']);
const BUILTIN_VOLATILE = verdict(['procedural'], 'calls a volatile built-in function');
const NATIVE_VOLATILE = verdict(['procedural'], 'is a volatile C function');
const CATALOG_VOLATILE = verdict(['procedural'], 'calls a volatile or unknown function');
const UNRESOLVED: FunctionVerdict = Object.freeze({
  ...CATALOG_VOLATILE,
  reason: 'calls a function whose volatility is not known yet',
  unresolved: true,
});

function names(verdict: FunctionVerdict, list: string[]): [string, FunctionVerdict][] {
  return list.map((name) => [name, verdict]);
}

/**
 * Built-ins whose catalog volatility does not say what they do. Applies to unqualified and
 * pg_catalog-qualified names, whether or not the generating server knew them (newer versions' names are here
 * too).
 */
const CURATED_BUILTINS: ReadonlyMap<string, FunctionVerdict> = new Map([
  // Volatile only because their result changes: they read nothing they should not and change nothing.
  ...names(READ, [
    'random', 'random_normal', 'clock_timestamp', 'timeofday', 'statement_timestamp',
    'pg_sleep', 'pg_sleep_for', 'pg_sleep_until', 'gen_random_uuid', 'uuidv4', 'uuidv7',
    'txid_current_if_assigned', 'txid_status', 'pg_current_xact_id_if_assigned', 'pg_xact_status', 'pg_xact_commit_timestamp',
    'pg_xact_commit_timestamp_origin', 'pg_last_committed_xact', 'current_query', 'currtid2', 'amvalidate',
    'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked',
    'pg_collation_actual_version', 'pg_database_collation_actual_version', 'pg_control_checkpoint',
    'pg_control_init', 'pg_control_recovery', 'pg_control_system', 'pg_current_logfile',
    'pg_current_wal_flush_lsn', 'pg_current_wal_insert_lsn', 'pg_current_wal_lsn', 'pg_last_wal_receive_lsn',
    'pg_last_wal_replay_lsn', 'pg_last_xact_replay_timestamp', 'pg_is_in_recovery', 'pg_is_wal_replay_paused',
    'pg_get_wal_replay_pause_state', 'pg_get_wal_resource_managers', 'pg_get_wal_summarizer_state',
    'pg_available_wal_summaries', 'pg_wal_summary_contents', 'pg_database_size', 'pg_relation_size',
    'pg_table_size', 'pg_indexes_size', 'pg_total_relation_size', 'pg_tablespace_size', 'pg_export_snapshot',
    'pg_get_backend_memory_contexts', 'pg_get_multixact_members', 'pg_get_shmem_allocations',
    'pg_get_shmem_allocations_numa', 'pg_numa_available', 'pg_jit_available', 'pg_lock_status',
    'pg_notification_queue_usage', 'pg_partition_ancestors', 'pg_partition_tree', 'pg_prepared_xact',
    'pg_replication_origin_progress', 'pg_replication_origin_session_is_setup',
    'pg_replication_origin_session_progress', 'pg_show_replication_origin_status', 'pg_sequence_last_value',
    'pg_stat_clear_snapshot', 'pg_stat_force_next_flush', 'pg_stat_have_stats', 'pg_stat_get_recovery_prefetch',
    'lo_open', 'lo_close', 'loread', 'lo_get', 'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64',
    'cursor_to_xml', 'cursor_to_xmlschema', 'pg_get_acl', 'pg_get_loaded_modules',
    // Extensions' volatile C functions that only read (pg_stat_statements, pg_buffercache).
    'pg_stat_statements', 'pg_stat_statements_info', 'pg_buffercache_pages', 'pg_buffercache_summary',
    'pg_buffercache_usage_counts',
  ]),
  ...names(ASSIGNS_XID, ['txid_current', 'pg_current_xact_id']),
  ...names(SETSEED, ['setseed']),
  // pg_trgm's set_limit() sets pg_trgm.similarity_threshold.
  ...names(EXTENSION_SET_CONFIG, ['set_limit']),
  ...names(SEQUENCE_WRITE, ['nextval', 'setval']),
  ...names(SEQUENCE_READ, ['currval']),
  ...names(READ, ['lastval']),
  ...names(LARGE_OBJECT_WRITE, [
    'lo_creat', 'lo_create', 'lo_from_bytea', 'lo_put', 'lo_truncate', 'lo_truncate64', 'lo_unlink', 'lowrite',
  ]),
  ...names(NOTIFY, ['pg_notify']),
  ...names(SERVER_FILES, [
    'pg_read_file', 'pg_read_file_old', 'pg_read_binary_file', 'pg_ls_dir', 'pg_stat_file', 'pg_ls_logdir',
    'pg_ls_waldir', 'pg_ls_tmpdir', 'pg_ls_archive_statusdir', 'pg_ls_logicalsnapdir', 'pg_ls_logicalmapdir',
    'pg_ls_replslotdir', 'pg_ls_summariesdir', 'lo_import', 'lo_export',
    // adminpack installs these into pg_catalog
    'pg_file_write', 'pg_file_rename', 'pg_file_unlink', 'pg_file_sync', 'pg_logdir_ls', 'pg_file_read',
    'pg_file_length',
  ]),
  ...names(SERVER_CONFIG_FILES, ['pg_hba_file_rules', 'pg_ident_file_mappings', 'pg_show_all_file_settings']),
  ...names(SIGNALS_BACKENDS, [
    'pg_terminate_backend', 'pg_cancel_backend', 'pg_log_backend_memory_contexts', 'pg_signal_backend',
  ]),
  ...names(SERVER_CONTROL, [
    'pg_reload_conf', 'pg_rotate_logfile', 'pg_rotate_logfile_old', 'pg_promote', 'pg_switch_wal',
    'pg_switch_xlog', 'pg_backup_start', 'pg_backup_stop', 'pg_start_backup', 'pg_stop_backup',
    'pg_create_restore_point', 'pg_wal_replay_pause', 'pg_wal_replay_resume', 'pg_xlog_replay_pause',
    'pg_xlog_replay_resume', 'pg_log_standby_snapshot', 'pg_logical_emit_message',
  ]),
  ...names(REPLICATION, [
    'pg_create_physical_replication_slot', 'pg_create_logical_replication_slot', 'pg_drop_replication_slot',
    'pg_copy_physical_replication_slot', 'pg_copy_logical_replication_slot', 'pg_replication_slot_advance',
    'pg_logical_slot_get_changes', 'pg_logical_slot_get_binary_changes', 'pg_logical_slot_peek_changes',
    'pg_logical_slot_peek_binary_changes', 'pg_sync_replication_slots', 'pg_replication_origin_create',
    'pg_replication_origin_drop', 'pg_replication_origin_advance', 'pg_replication_origin_session_setup',
    'pg_replication_origin_session_reset', 'pg_replication_origin_xact_setup', 'pg_replication_origin_xact_reset',
  ]),
  ...names(STATISTICS_ADMIN, [
    'pg_stat_reset', 'pg_stat_reset_shared', 'pg_stat_reset_single_table_counters',
    'pg_stat_reset_single_function_counters', 'pg_stat_reset_slru', 'pg_stat_reset_replication_slot',
    'pg_stat_reset_subscription_stats', 'pg_stat_reset_backend_stats', 'pg_restore_relation_stats',
    'pg_restore_attribute_stats', 'pg_clear_relation_stats', 'pg_clear_attribute_stats',
    'pg_set_relation_stats', 'pg_set_attribute_stats', 'pg_stat_statements_reset',
  ]),
  ...names(CATALOG_ADMIN, [
    'pg_nextoid', 'pg_stop_making_pinned_objects', 'pg_import_system_collations', 'pg_extension_config_dump',
  ]),
  ...names(INDEX_MAINTENANCE, [
    'brin_summarize_new_values', 'brin_summarize_range', 'brin_desummarize_range', 'gin_clean_pending_list',
  ]),
  ...names(ADVISORY_LOCK, [
    'pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_advisory_unlock', 'pg_advisory_unlock_all',
    'pg_advisory_unlock_shared', 'pg_advisory_xact_lock', 'pg_advisory_xact_lock_shared', 'pg_try_advisory_lock',
    'pg_try_advisory_lock_shared', 'pg_try_advisory_xact_lock', 'pg_try_advisory_xact_lock_shared',
  ]),
  // These run a query given as text: whatever it calls runs too, and the proxy never sees it.
  ...names(RUNS_SQL_TEXT, ['query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat', 'ts_rewrite']),
  // These read whole tables, schemas or the database named by an argument: tables the proxy cannot list.
  ...names(READS_TABLES_BY_NAME, [
    'table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema', 'schema_to_xml', 'schema_to_xmlschema',
    'schema_to_xml_and_xmlschema', 'database_to_xml', 'database_to_xmlschema', 'database_to_xml_and_xmlschema',
  ]),
  ...names(SET_CONFIG, ['set_config']),
]);

/** Extension functions that leave the database, recognised in any schema (they usually live in public). */
export function leavesDatabase(name: string): FunctionVerdict | undefined {
  if (name.startsWith('dblink')) {
    switch (name) {
      case 'dblink':
      case 'dblink_exec':
      case 'dblink_send_query':
      case 'dblink_open':
        return LEAVES_DATABASE_DYNAMIC;
      default:
        return LEAVES_DATABASE;
    }
  }
  if (name.startsWith('postgres_fdw_')) return LEAVES_DATABASE;
  return undefined;
}

/** The result of asking the context, for the cache to check that the same answer still holds. */
export interface FunctionLookup {
  verdict: FunctionVerdict;
  /** Set when the context was asked: the qualified name and its answer. */
  asked?: { name: string; answer: 'read' | 'procedural' | undefined };
}

/**
 * How a call to `schema.name(...)` counts (schema null when unqualified). Names as the parser gives them
 * (unquoted identifiers are already lower-case).
 */
export function lookupFunction(
  schema: string | null,
  name: string,
  ctx: ClassifyContext,
  isShadowed: (name: string) => boolean,
): FunctionLookup {
  const remote = leavesDatabase(name);
  if (remote) return { verdict: remote };
  // An unqualified name may resolve to a function of the same name in another schema: then ask the catalog.
  if (schema === 'pg_catalog' || (schema === null && !isShadowed(name))) {
    const curated = CURATED_BUILTINS.get(name);
    if (curated) return { verdict: curated };
    const volatility = BUILTIN_FUNCTIONS.get(name);
    if (volatility === 'immutable' || volatility === 'stable') return { verdict: READ };
    if (volatility === 'volatile') return { verdict: BUILTIN_VOLATILE };
  }
  const qualified = schema === null ? name : `${schema}.${name}`;
  const answer = ctx.functionVolatility?.(qualified);
  const asked = { name: qualified, answer };
  if (answer === 'read') return { verdict: READ, asked };
  if (answer === 'procedural') return { verdict: CATALOG_VOLATILE, asked };
  return { verdict: UNRESOLVED, asked };
}

/**
 * The verdict for a built-in function by name (curated, or by the generated table's volatility); undefined when
 * stepgate's tables do not know the name (a newer server's built-in: look it up).
 */
export function lookupBuiltin(name: string): FunctionVerdict | undefined {
  const remote = leavesDatabase(name);
  if (remote) return remote;
  const curated = CURATED_BUILTINS.get(name);
  if (curated) return curated;
  const volatility = BUILTIN_FUNCTIONS.get(name);
  if (volatility === 'immutable' || volatility === 'stable') return READ;
  if (volatility === 'volatile') return BUILTIN_VOLATILE;
  return undefined;
}

/**
 * The verdict for a function whose code stepgate trusts to be what it declares: a built-in (OID below 16384)
 * or a function in language c or internal (only superusers create those). Curated names first (dblink,
 * adminpack, ...), then the declared volatility (`i`, `s`, `v`).
 */
export function nativeVerdict(name: string, volatility: string, builtin: boolean): FunctionVerdict {
  const known = leavesDatabase(name) ?? CURATED_BUILTINS.get(name);
  if (known) return known;
  if (volatility === 'i' || volatility === 's') return READ;
  return builtin ? BUILTIN_VOLATILE : NATIVE_VOLATILE;
}

/**
 * Whether an operator (as written: optional schema, then the symbol) is a built-in whose functions only read.
 * Operators are functions in disguise: a user-defined one may call anything, and the context cannot look
 * operators up, so any other operator (or a built-in symbol another schema also defines) counts as
 * procedural.
 */
export function isBuiltinReadOperator(schema: string | null, symbol: string, isShadowed: (symbol: string) => boolean): boolean {
  if (schema !== null && schema !== 'pg_catalog') return false;
  if (schema === null && isShadowed(symbol)) return false;
  const volatility = BUILTIN_OPERATORS.get(symbol);
  return volatility === 'immutable' || volatility === 'stable';
}

/**
 * Whether a built-in operator symbol's functions only read (immutable or stable). A symbol the generated table
 * does not know is a newer server's built-in (the catalog said only built-ins have it): trusted as a read.
 */
export function builtinOperatorReads(symbol: string): boolean {
  const volatility = BUILTIN_OPERATORS.get(symbol);
  return volatility !== 'volatile';
}

/**
 * Splits a qualified name given as text the way PostgreSQL's regclass input does: dot-separated, double
 * quotes keep case and may contain dots, unquoted parts are lower-cased. Null when it is not a plain name.
 */
export function parseQualifiedName(text: string): string[] | null {
  const parts: string[] = [];
  let i = 0;
  const n = text.length;
  const skipSpace = () => {
    while (i < n && isSpace(text.charCodeAt(i))) i++;
  };
  for (;;) {
    skipSpace();
    if (i >= n) return null;
    let part = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= n) return null;
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += text[i++];
      }
      if (part === '') return null;
    } else {
      const start = i;
      while (i < n && text[i] !== '.' && text[i] !== '"' && !isSpace(text.charCodeAt(i))) i++;
      if (i === start) return null;
      part = asciiLower(text.slice(start, i));
    }
    parts.push(part);
    skipSpace();
    if (i >= n) break;
    if (text[i] !== '.') return null;
    i++;
  }
  return parts.length <= 3 ? parts : null;
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/** PostgreSQL folds only ASCII letters of unquoted identifiers in UTF-8 databases. */
function asciiLower(s: string): string {
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}
