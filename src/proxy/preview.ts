/**
 * Previews: a held statement runs before anyone approves it, inside a transaction stepgate controls, so the
 * approver sees what it really did ("DELETE 9,812") and the rules can judge the real row count. Approval
 * commits what ran and the client receives the reply the server gave; rejection rolls it back.
 *
 *   autocommit:        BEGIN READ WRITE; <statement>            approve: COMMIT      reject: ROLLBACK
 *   in the client's    SAVEPOINT stepgate_preview; <statement>   approve: RELEASE     reject: ROLLBACK TO + RELEASE,
 *   transaction:                                                                       then the refusal aborts the block
 *
 * The client's replies are held back (reply-state.ts Capture) up to a size limit. While the approval waits,
 * the statement's locks stay held (the card lists the tables) and the server's
 * idle_in_transaction_session_timeout is off for this transaction only (it would end the session).
 *
 * A preview is only as good as its rollback. previewBlocker() refuses what a rollback does not undo or what
 * cannot run inside a transaction block, as far as the classification tells; what it cannot tell, the server
 * does: a statement that refuses to run in a block (25001) falls back to a plain hold too.
 *
 * Rules on the rows a statement affects (`rows`, `max_rows`) use the preview's count; where no preview is
 * possible, the planner's estimate (EstimateSql: EXPLAIN without ANALYZE, in a read-only transaction or
 * savepoint) stands in, marked as an estimate.
 *
 * This file is pure (what may be previewed, what the report says); frontend.ts runs the statements.
 */
import type { ErrorFields } from '../protocol/backend-messages.js';
import { rowsFromTag } from '../sql/command-tag.js';
import type { StatementInfo } from '../sql/types.js';
import type { TransactionState } from './read-only.js';

export const PREVIEW_SAVEPOINT = 'stepgate_preview';

/** SQL stepgate runs around a preview (see the header). */
export const PreviewSql = {
  beginAutocommit: 'BEGIN READ WRITE',
  beginInBlock: `SAVEPOINT ${PREVIEW_SAVEPOINT}`,
  /** Returns the old value; `true`: local to the transaction (or undone with the savepoint). */
  pauseIdleTimeout: "SELECT current_setting('idle_in_transaction_session_timeout'), set_config('idle_in_transaction_session_timeout', '0', true)",
  restoreIdleTimeout: (old: string): string => `SELECT set_config('idle_in_transaction_session_timeout', ${quoteLiteral(old)}, true)`,
  /**
   * Tables the transaction holds a write lock on (RowExclusiveLock or stronger: its changed rows are locked
   * too), by name. The share locks of reads and foreign-key checks block no writer and are left out.
   */
  locks:
    'SELECT DISTINCT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation ' +
    "WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.mode NOT IN ('AccessShareLock', 'RowShareLock') " +
    "AND c.relkind IN ('r', 'p', 'm') ORDER BY 1",
  commitAutocommit: 'COMMIT',
  commitInBlock: `RELEASE SAVEPOINT ${PREVIEW_SAVEPOINT}`,
  rollbackAutocommit: 'ROLLBACK',
  rollbackInBlock: `ROLLBACK TO SAVEPOINT ${PREVIEW_SAVEPOINT}; RELEASE SAVEPOINT ${PREVIEW_SAVEPOINT}`,
} as const;

/** SQL for the planner's estimate where no preview is possible (frontend estimateRows()). */
export const EstimateSql = {
  beginAutocommit: 'BEGIN READ ONLY',
  beginInBlock: `SAVEPOINT ${PREVIEW_SAVEPOINT}; SET LOCAL transaction_read_only = on`,
  explain: (statement: string): string => `EXPLAIN (FORMAT JSON) ${statement}`,
} as const;

/** Commands EXPLAIN can plan. */
export const ESTIMABLE: ReadonlySet<string> = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE']);

/**
 * The rows a plan (EXPLAIN's JSON) says the statement affects: a ModifyTable node reports 0 of its own (it
 * returns nothing without RETURNING), so the rows it is fed count; null when the plan cannot be read.
 */
export function planRows(json: string): number | null {
  try {
    const plan = (JSON.parse(json) as { Plan?: PlanNode }[])[0]?.Plan;
    if (plan === undefined) return null;
    const node = plan['Node Type'] === 'ModifyTable' && plan.Plans?.[0] !== undefined ? plan.Plans[0] : plan;
    const rows = node['Plan Rows'];
    return typeof rows === 'number' && Number.isFinite(rows) ? Math.round(rows) : null;
  } catch {
    return null;
  }
}

interface PlanNode {
  'Node Type'?: string;
  'Plan Rows'?: number;
  Plans?: PlanNode[];
}

/** What a preview found, for the approver, the rules and the audit trail. */
export type PreviewReport =
  | {
      status: 'ran';
      /** Each statement's command tag as the server sent it. */
      tags: string[];
      /** Rows the statements affected (or returned), added up. */
      rows: number;
      /** Tables locked against writers while the approval waits. */
      locks: string[];
      notices: string[];
    }
  /** The statement failed: nothing to approve; the client gets the server's error. */
  | { status: 'failed'; error: ErrorFields }
  /** No faithful preview: a plain hold (or the planner's estimate, `estimatedRows`, for row rules). */
  | { status: 'unavailable'; reason: string; estimatedRows?: number };

/** Functions whose effects a rollback does not undo. */
const IRREVERSIBLE_FUNCTIONS = new Set(['nextval', 'setval', 'pg_notify', 'lo_export', 'pg_file_write', 'pg_reload_conf', 'pg_rotate_logfile', 'pg_switch_wal']);

/** Flags of effects a rollback does not undo. */
const IRREVERSIBLE_FLAGS: Partial<Record<StatementInfo['flags'][number], string>> = {
  network: 'it reaches outside the database (dblink, a foreign table), which a rollback does not undo',
  advisory_lock: 'it takes or releases advisory locks, which outlive a rollback',
  signals_backend: 'it signals other backends, which a rollback does not undo',
  copy_program: 'it runs a program on the server',
  copy_file: 'it writes or reads files on the server',
  server_files: 'it reads or writes files on the server',
  setseed: 'it sets the random seed, which a rollback does not restore',
  dynamic: 'it runs SQL stepgate cannot see',
};

/**
 * Why the statements of one simple Query cannot be previewed faithfully in this transaction state, or null
 * when they can.
 */
export function previewBlocker(statements: readonly StatementInfo[], state: TransactionState): string | null {
  if (statements.length === 0) return 'there is no statement';
  if (state.kind === 'implicit') return 'it arrived in a pipeline of extended-protocol messages';
  if (state.kind === 'block' && state.failed) return 'the transaction is aborted (the statement fails anyway)';
  for (const s of statements) {
    if (s.transaction !== undefined) return 'the text controls its own transaction';
    if (s.ownTransactions === true) return `${s.command} cannot run inside a transaction block`;
    if (s.classes.includes('unknown')) return 'stepgate cannot read all of it';
    // ACCESS EXCLUSIVE until the approval: every reader of the tables would wait for a person.
    if (s.commands.includes('TRUNCATE TABLE')) return 'TRUNCATE would lock out every reader of its tables while the approval waits';
    if (!s.classes.every((c) => c === 'read' || c === 'write' || c === 'export')) {
      return `only data changes are previewed (${s.command} would hold its locks while the approval waits)`;
    }
    if (s.cursor !== undefined) return 'it works with cursors';
    if (s.command === 'COPY' && !s.classes.includes('export')) return 'COPY FROM STDIN needs the client\'s data';
    if (s.command === 'LISTEN' || s.command === 'UNLISTEN') return `${s.command} changes the session`;
    for (const flag of s.flags) {
      const why = IRREVERSIBLE_FLAGS[flag];
      if (why !== undefined) return why;
    }
    for (const f of s.functions) {
      const name = f.slice(f.lastIndexOf('.') + 1);
      if (IRREVERSIBLE_FUNCTIONS.has(name)) return `${name}() has effects a rollback does not undo`;
    }
  }
  return null;
}

/** A preview that ran, from what the server answered; `capture` fields as in reply-state.ts Capture. */
export function ranReport(tags: readonly string[], locks: string[], notices: string[]): PreviewReport & { status: 'ran' } {
  let rows = 0;
  for (const tag of tags) rows += rowsFromTag(tag) ?? 0;
  return { status: 'ran', tags: [...tags], rows, locks, notices };
}

/** A plain-text summary for the card and the notice: "DELETE 9,812 rows (locks orders)". */
export function describePreview(report: PreviewReport): string {
  switch (report.status) {
    case 'ran': {
      const tags = report.tags.map((t) => t.replace(/\d+$/, (n) => Number(n).toLocaleString('en'))).join('; ');
      return `preview: ${tags}${report.locks.length > 0 ? ` (locks ${report.locks.join(', ')} while waiting)` : ''}`;
    }
    case 'failed':
      return `preview: failed with ${report.error.code} ${report.error.message}`;
    case 'unavailable':
      return `no preview: ${report.reason}${report.estimatedRows !== undefined ? ` (the planner estimates ${report.estimatedRows.toLocaleString('en')} rows)` : ''}`;
  }
}

function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
