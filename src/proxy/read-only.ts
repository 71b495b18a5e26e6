/**
 * Server-enforced reads: what stepgate lets through as a read runs in PostgreSQL's read-only mode, so a
 * write hidden where classification cannot see it (a view's function, a domain check, an operator ...)
 * fails with 25006 and nothing is committed. Pure: it models the server's transaction and says which
 * statements stepgate must run before a client message; the session sends them (injection.ts).
 *
 * The mechanism, per kind of transaction:
 *  - Autocommit: the upstream session's `default_transaction_read_only` is on (stepgate sets it when the
 *    session starts), so every implicit transaction starts read-only at no cost. A message that needs to
 *    write gets `SET transaction_read_only = off` in front of it, in the same implicit transaction (an
 *    extended-protocol Bind/Execute of a statement stepgate prepared, before the first snapshot).
 *    Statements that run their own transactions (VACUUM, CALL ...) cannot share one: the session default is
 *    turned off around them instead.
 *  - Transaction blocks: a block the client did not ask to be read-only is made read-write at its first
 *    snapshot (so `BEGIN; SELECT; UPDATE` works), and every read inside it runs in a read-only savepoint
 *    region (`SAVEPOINT stepgate_ro; SET transaction_read_only = on`); the region is closed (RELEASE)
 *    before the next write. Leaving a subtransaction restores the parent's mode, so later writes work.
 *  - The default can be changed behind stepgate's back (set_config() in a function a read calls). The
 *    server reports every change (ParameterStatus), before its ReadyForQuery; so the default is trusted only
 *    when no client message is in flight, and otherwise a per-transaction `SET transaction_read_only = on`
 *    goes in front.
 *
 * Where the protocol leaves no room (inside one multi-statement Query, or an implicit transaction that
 * already took its snapshot), a read shares the mode of the writes it arrived with; a read that would run
 * read-write for any other reason is reported as `unenforced` and must be judged as unknown unless it can run
 * no user code at all. A write that arrives after stepgate made its transaction read-only is doomed: the
 * server refuses it (25006) and the session adds a hint.
 *
 * Invariant: for every statement stepgate forwards as needing only read-only mode, either the plan puts the
 * server in read-only mode for it, or the statement is in `unenforced` (or rides with a write of its own
 * message). Errors never make the server more permissive than this model: a failed statement aborts its
 * transaction, and the server skips what follows up to Sync.
 */
import type { StatementInfo } from '../sql/types.js';

/** Classes whose statements change nothing, so they can run in read-only mode. */
const READ_ONLY_CLASSES = new Set(['read', 'session', 'transaction', 'export']);

/**
 * Whether a statement needs read-write mode. Everything that is not a pure read does, and so do row locks
 * (SELECT ... FOR UPDATE fails in read-only mode), SET CONSTRAINTS (it fires deferred triggers) and
 * statements that run their own transactions.
 */
export function needsReadWrite(s: StatementInfo): boolean {
  for (const c of s.classes) if (!READ_ONLY_CLASSES.has(c)) return true;
  if (s.flags.includes('locks')) return true;
  if (s.transaction?.kind === 'constraints') return true;
  return s.ownTransactions === true;
}

/**
 * Whether running the statement could run code other than PostgreSQL's own: any relation (views, row
 * security, triggers), any function or operator, a cast to a type the statement names, any statement stepgate
 * does not fully know. Conservative: false only for statements made of literals and transaction control.
 */
export function mayRunUserCode(s: StatementInfo): boolean {
  if (s.classes.includes('unknown')) return true;
  if (s.tables.length > 0 || s.functions.length > 0) return true;
  if (s.changesReadOnlyDefault) return true;
  if (s.cursor !== undefined && s.cursor.op !== 'close') return true;
  // Utility statements with expressions (EXECUTE, CALL ...) list their functions; what is left is plain.
  return s.flags.includes('dynamic');
}

/** What stepgate sends before (or around) a client message. */
export const enum Injection {
  /** SET transaction_read_only = off: before the transaction's first snapshot. */
  ReadWrite,
  /** SET transaction_read_only = on: always allowed; one-way for the transaction. */
  ReadOnly,
  /** SAVEPOINT stepgate_ro; SET transaction_read_only = on: a read-only region in a read-write block. */
  OpenRegion,
  /** RELEASE SAVEPOINT stepgate_ro: back to the block's read-write mode. */
  CloseRegion,
  /** SET default_transaction_read_only = off, committed on its own (before statements with own transactions). */
  DefaultOff,
  /** SET default_transaction_read_only = on, committed on its own (after them, and when the session starts). */
  DefaultOn,
}

/** The server's transaction as stepgate predicts it after everything forwarded so far. */
export type TransactionState =
  | { kind: 'idle' }
  /** An implicit transaction of extended-protocol messages not yet ended by Sync. */
  | { kind: 'implicit'; readOnly: boolean; snapshot: boolean; wrote: boolean }
  | BlockState;

export interface BlockState {
  kind: 'block';
  /** The top-level transaction's mode. */
  readOnly: boolean;
  /** The client asked for read-only (BEGIN READ ONLY, its own default ...): never turned off by stepgate. */
  clientReadOnly: boolean;
  /** A snapshot was taken: the top-level mode can no longer become read-write. */
  snapshot: boolean;
  /** stepgate's read-only savepoint is open. */
  region: boolean;
  /** A statement failed: everything up to ROLLBACK [TO] fails (no need to inject anything). */
  failed: boolean;
}

/** How one statement will run under a plan. */
export const enum Mode {
  ReadOnly,
  ReadWrite,
}

export interface Plan {
  /** Injections before the message, in order. */
  before: Injection[];
  /** Injections right after the message (and after its COPY data, for COPY FROM STDIN). */
  after: Injection[];
  /** Injections after the Sync that ends the message's batch (extended protocol). */
  afterSync: Injection[];
  /** The mode each statement of the message runs in. */
  modes: Mode[];
  /**
   * Statements that need only read-only mode but will run read-write, not because a write of their own
   * message needs it: judge them as unknown unless they cannot run user code.
   */
  unenforced: number[];
  /** Statements that need read-write but will run read-only (the server will refuse them with 25006). */
  doomed: number[];
  /** The predicted state after the message (applied by commit()). */
  after_state: TransactionState;
}

/** What the planner needs to know about the session besides the transaction. */
export interface PlanContext {
  /**
   * The server's default_transaction_read_only is known to be on for a transaction starting now: stepgate
   * set it, the server has reported nothing else, and no client message that could change it is in flight.
   */
  defaultReadOnly: boolean;
  /** The client's own view of default_transaction_read_only (as a direct connection would have it). */
  clientDefaultReadOnly: boolean;
}

const IDLE: TransactionState = Object.freeze({ kind: 'idle' });

/**
 * Plans one simple Query (or FunctionCall): the statements run in order in one message; an implicit
 * transaction spans them unless they contain transaction control. Nothing can be injected between them.
 */
export function planQuery(state: TransactionState, statements: readonly StatementInfo[], ctx: PlanContext): Plan {
  const plan: Plan = { before: [], after: [], afterSync: [], modes: [], unenforced: [], doomed: [], after_state: state };
  if (statements.length === 0) return plan;
  const writes = statements.map(needsReadWrite);
  const anyWrite = writes.includes(true);
  const userCode = statements.some(mayRunUserCode);
  const own = statements.some((s) => s.ownTransactions === true);

  // The mode the message starts in, and what to inject to get it.
  let tx: TransactionState;
  let defaultTrusted = ctx.defaultReadOnly;
  if (state.kind === 'idle') {
    if (own && anyWrite) {
      // VACUUM, CALL ...: they refuse to share an implicit transaction with an injected statement, and may
      // start transactions of their own; the default is off around them.
      plan.before.push(Injection.DefaultOff);
      plan.after.push(Injection.DefaultOn);
      defaultTrusted = false;
      tx = { kind: 'implicit', readOnly: false, snapshot: false, wrote: true };
    } else if (anyWrite || opensBlockWithSavepoint(statements)) {
      // A block with a savepoint in the same text cannot be made read-write later (not inside a savepoint).
      plan.before.push(Injection.ReadWrite);
      tx = { kind: 'implicit', readOnly: false, snapshot: false, wrote: anyWrite };
    } else {
      // Statements that can run no user code (BEGIN, SET, SELECT 1 ...) cannot write: no guard for them.
      // Their transaction is then read-only, or read-write if the default was changed; taking it as
      // read-only is safe either way (a block it opens is made read-write at its first snapshot).
      if (!ctx.defaultReadOnly && userCode) plan.before.push(Injection.ReadOnly);
      tx = { kind: 'implicit', readOnly: true, snapshot: false, wrote: false };
    }
  } else if (state.kind === 'implicit') {
    // A Query after unsynced extended messages continues their implicit transaction (and ends it).
    tx = { ...state };
    if (anyWrite && tx.readOnly && !tx.snapshot) {
      plan.before.push(Injection.ReadWrite);
      tx.readOnly = false;
    } else if (!anyWrite && userCode && !tx.readOnly && !tx.wrote) {
      plan.before.push(Injection.ReadOnly);
      tx.readOnly = true;
    }
  } else {
    tx = { ...state };
    if (!tx.failed) enterBlockUnit(tx, plan, unitNeed(statements, writes), statements.some((s) => s.snapshotFree !== true), statements.some(isSavepoint));
  }
  const failedBlock = state.kind === 'block' && state.failed;

  // Walk the statements as the server will run them.
  let userCodeSoFar = false;
  let current: TransactionState = tx;
  for (let i = 0; i < statements.length; i++) {
    const s = statements[i]!;
    const write = writes[i]!;
    if (current.kind === 'idle') {
      // A new transaction started inside the message (after COMMIT ...): its mode is the session default,
      // which an earlier statement of the message may have changed, even through a function it ran.
      current = { kind: 'implicit', readOnly: defaultTrusted && !userCodeSoFar, snapshot: false, wrote: false };
    }
    const runsReadOnly = currentReadOnly(current);
    plan.modes.push(runsReadOnly ? Mode.ReadOnly : Mode.ReadWrite);
    if (!failedBlock) {
      if (write && runsReadOnly && !clientReadOnly(current, ctx)) plan.doomed.push(i);
      if (!write && mayRunUserCode(s) && ((!runsReadOnly && !anyWrite) || materializedReadWrite(s, current))) plan.unenforced.push(i);
    }
    if (s.snapshotFree !== true) markSnapshot(current);
    if (write && current.kind === 'implicit') current = { ...current, wrote: true };
    if (mayRunUserCode(s)) userCodeSoFar = true;
    if (s.changesReadOnlyDefault) defaultTrusted = false;
    if (s.transaction) current = applyTransaction(current, s, ctx.clientDefaultReadOnly);
  }
  // A simple Query ends its implicit transaction; a block it opened stays open.
  plan.after_state = current.kind === 'implicit' ? IDLE : current;
  return plan;
}

/**
 * Where a unit of a transaction block runs: 'read' in a read-only region, 'write' and 'top' at the top
 * level, 'none' wherever the block is (it runs no user code and needs no particular place).
 */
function unitNeed(statements: readonly StatementInfo[], writes: readonly boolean[]): 'read' | 'write' | 'top' | 'none' {
  if (writes.includes(true)) return 'write';
  if (statements.some(blockControlOutsideRegion)) return 'top';
  return statements.some(mayRunUserCode) ? 'read' : 'none';
}

/** The extended-protocol messages stepgate plans for. */
export type ExtendedUnit =
  /** Parse of a statement (it takes a snapshot unless snapshot-free); `expectWrite`: a write follows in this batch. */
  | { kind: 'parse'; statement: StatementInfo | null; expectWrite: boolean }
  /** Bind or Execute of a portal whose statement is known (null: unknown to stepgate). */
  | { kind: 'run'; statement: StatementInfo | null; expectWrite: boolean; laterWrite: boolean | null }
  | { kind: 'sync' };

/**
 * Plans one extended-protocol message. Parse only matters at a transaction's start (it takes the first
 * snapshot); Bind and Execute run the statement's code (parameter coercion, planning, execution), so the
 * mode is set before them. `expectWrite`: a write is known to follow in the same batch (look-ahead over the
 * messages already received); `laterWrite` for a read after a write: whether one may still follow (null: the
 * batch's Sync has not arrived, so it cannot be known).
 */
export function planExtended(state: TransactionState, unit: ExtendedUnit, ctx: PlanContext): Plan {
  const plan: Plan = { before: [], after: [], afterSync: [], modes: [], unenforced: [], doomed: [], after_state: state };
  if (unit.kind === 'sync') {
    plan.after_state = state.kind === 'implicit' ? IDLE : state;
    return plan;
  }
  const statement = unit.statement;
  const write = statement === null ? true : needsReadWrite(statement);
  const snapshotFree = statement?.snapshotFree === true;

  if (state.kind === 'idle' && statement?.ownTransactions === true && write) {
    // VACUUM, CALL ... through the extended protocol: the default is off until the batch's Sync.
    plan.before.push(Injection.DefaultOff);
    plan.afterSync.push(Injection.DefaultOn);
    plan.after_state = { kind: 'implicit', readOnly: false, snapshot: !snapshotFree, wrote: unit.kind === 'run' };
    if (unit.kind === 'run') plan.modes.push(Mode.ReadWrite);
    return plan;
  }

  if (unit.kind === 'parse') {
    // Parse analysis runs no user code worth a region, but a snapshot-taking Parse starts the transaction's
    // first snapshot: the moment to choose its mode.
    if (snapshotFree) return plan;
    const wantWrite = write || unit.expectWrite;
    if (state.kind === 'idle') {
      if (wantWrite) {
        plan.before.push(Injection.ReadWrite);
        plan.after_state = { kind: 'implicit', readOnly: false, snapshot: true, wrote: false };
      } else {
        if (!ctx.defaultReadOnly) plan.before.push(Injection.ReadOnly);
        plan.after_state = { kind: 'implicit', readOnly: true, snapshot: true, wrote: false };
      }
    } else if (state.kind === 'implicit') {
      const tx = { ...state };
      if (wantWrite && tx.readOnly && !tx.snapshot) {
        plan.before.push(Injection.ReadWrite);
        tx.readOnly = false;
      }
      tx.snapshot = true;
      plan.after_state = tx;
    } else if (!state.failed) {
      const tx = { ...state };
      if (!tx.snapshot && tx.readOnly && !tx.clientReadOnly) {
        plan.before.push(Injection.ReadWrite);
        tx.readOnly = false;
      }
      tx.snapshot = true;
      plan.after_state = tx;
    }
    return plan;
  }

  // Bind or Execute: the statement's code runs now.
  let runsReadOnly: boolean;
  if (state.kind === 'idle') {
    if (write || unit.expectWrite) {
      plan.before.push(Injection.ReadWrite);
      plan.after_state = { kind: 'implicit', readOnly: false, snapshot: !snapshotFree, wrote: write };
      runsReadOnly = false;
    } else {
      // As in planQuery: without user code no guard is needed, and read-only is the safe assumption.
      if (!ctx.defaultReadOnly && (statement === null || mayRunUserCode(statement))) plan.before.push(Injection.ReadOnly);
      runsReadOnly = true;
      plan.after_state = { kind: 'implicit', readOnly: true, snapshot: !snapshotFree, wrote: false };
    }
  } else if (state.kind === 'implicit') {
    const tx = { ...state };
    if (statement !== null && !write && !mayRunUserCode(statement)) {
      // Runs no user code: wherever it is.
    } else if (write) {
      if (tx.readOnly && !tx.snapshot) {
        plan.before.push(Injection.ReadWrite);
        tx.readOnly = false;
      }
      tx.wrote = true;
    } else if (!tx.readOnly && unit.laterWrite === false) {
      // The last write of the batch has run: the rest of the transaction can be read-only.
      plan.before.push(Injection.ReadOnly);
      tx.readOnly = true;
    }
    if (!snapshotFree) tx.snapshot = true;
    runsReadOnly = tx.readOnly;
    plan.after_state = tx;
    if (!write && !runsReadOnly && !tx.wrote && !unit.expectWrite && statement !== null && mayRunUserCode(statement)) plan.unenforced.push(0);
  } else {
    const tx = { ...state };
    if (!tx.failed) enterBlockUnit(tx, plan, statement === null ? 'write' : unitNeed([statement], [write]), !snapshotFree, statement !== null && isSavepoint(statement));
    runsReadOnly = tx.readOnly || tx.region;
    plan.after_state = tx;
    if (!tx.failed && statement !== null && !write && mayRunUserCode(statement) && materializedReadWrite(statement, tx)) plan.unenforced.push(0);
  }
  plan.modes.push(runsReadOnly ? Mode.ReadOnly : Mode.ReadWrite);
  if (write && runsReadOnly && !clientReadOnly(plan.after_state, ctx)) plan.doomed.push(0);
  return plan;
}

/**
 * The state after a Bind/Execute's statement has run, for transaction control sent through the extended
 * protocol (Execute of BEGIN, COMMIT ...).
 */
export function afterExtendedStatement(state: TransactionState, statement: StatementInfo | null, clientDefaultReadOnly: boolean): TransactionState {
  if (statement?.transaction === undefined) return state;
  const after = applyTransaction(state, statement, clientDefaultReadOnly);
  // COMMIT/ROLLBACK through Execute end the implicit block; the next message starts a new transaction.
  return after;
}

/** Sets the block's mode for a unit: 'read' runs in a region, 'write' and 'top' at the top level. */
function enterBlockUnit(tx: BlockState, plan: Plan, need: 'read' | 'write' | 'top' | 'none', takesSnapshot: boolean, savepoint: boolean): void {
  // A block becomes read-write at its first snapshot (unless the client asked for read-only): reads are
  // then confined to regions, and a later write can still run. A client savepoint is the last chance too:
  // the mode cannot be turned read-write inside a savepoint.
  if (!tx.snapshot && tx.readOnly && !tx.clientReadOnly && (takesSnapshot || savepoint)) {
    if (tx.region) {
      plan.before.push(Injection.CloseRegion);
      tx.region = false;
    }
    plan.before.push(Injection.ReadWrite);
    tx.readOnly = false;
  }
  if (need === 'read') {
    if (!tx.readOnly && !tx.region) {
      plan.before.push(Injection.OpenRegion);
      tx.region = true;
    }
  } else if (need !== 'none' && tx.region) {
    plan.before.push(Injection.CloseRegion);
    tx.region = false;
  }
  if (takesSnapshot) tx.snapshot = true;
}

/**
 * Statements that must run at the block's top level even though they write nothing: a client SAVEPOINT
 * (nested in stepgate's region, stepgate's RELEASE would destroy it) and changes of the transaction's mode
 * (inside a region they would apply to the region only, or fail).
 */
function blockControlOutsideRegion(s: StatementInfo): boolean {
  const kind = s.transaction?.kind;
  return kind === 'savepoint' || kind === 'set-mode';
}

function isSavepoint(s: StatementInfo): boolean {
  return s.transaction?.kind === 'savepoint';
}

/** BEGIN followed by a SAVEPOINT in one text. */
function opensBlockWithSavepoint(statements: readonly StatementInfo[]): boolean {
  const begin = statements.findIndex((s) => s.transaction?.kind === 'begin');
  return begin >= 0 && statements.slice(begin + 1).some(isSavepoint);
}

/** The client chose read-only for this transaction (so a refused write is the client's own doing). */
function clientReadOnly(tx: TransactionState, ctx: PlanContext): boolean {
  return tx.kind === 'block' ? tx.clientReadOnly : ctx.clientDefaultReadOnly;
}

/**
 * DECLARE ... WITH HOLD in a read-write transaction block: its query runs to the end at COMMIT, after
 * stepgate's region has ended (savepoints are released first), so in read-write mode.
 */
function materializedReadWrite(s: StatementInfo, tx: TransactionState): boolean {
  return s.cursor?.op === 'declare' && s.cursor.hold === true && tx.kind === 'block' && !tx.readOnly;
}

function currentReadOnly(tx: TransactionState): boolean {
  if (tx.kind === 'idle') return false;
  if (tx.kind === 'implicit') return tx.readOnly;
  return tx.readOnly || tx.region;
}

function markSnapshot(tx: TransactionState): void {
  if (tx.kind !== 'idle') tx.snapshot = true;
}

/** The transaction after a transaction-control statement, as PostgreSQL applies it. */
function applyTransaction(tx: TransactionState, s: StatementInfo, clientDefaultReadOnly: boolean): TransactionState {
  const t = s.transaction!;
  switch (t.kind) {
    case 'begin': {
      if (tx.kind === 'block') return tx; // WARNING: there is already a transaction in progress
      const readOnly = tx.kind === 'implicit' ? tx.readOnly : true;
      const snapshot = tx.kind === 'implicit' ? tx.snapshot : false;
      const block: BlockState = { kind: 'block', readOnly, clientReadOnly: clientDefaultReadOnly, snapshot, region: false, failed: false };
      return applyMode(block, t.readOnly ?? null);
    }
    case 'set-mode':
      if (tx.kind === 'block') return applyMode({ ...tx }, t.readOnly ?? null);
      if (tx.kind === 'implicit' && t.readOnly === true) return { ...tx, readOnly: true };
      if (tx.kind === 'implicit' && t.readOnly === false && !tx.snapshot) return { ...tx, readOnly: false };
      return tx;
    case 'commit':
    case 'rollback':
      if (t.chain && tx.kind === 'block') {
        // The chained transaction keeps the characteristics; stepgate's region does not survive the end.
        return { ...tx, snapshot: false, region: false, failed: false };
      }
      return IDLE;
    case 'prepare':
      return IDLE;
    case 'rollback-to':
    case 'release':
      // Client savepoints are never created inside stepgate's region, so rolling back to or releasing one
      // ends the region too.
      return tx.kind === 'block' ? { ...tx, region: false, failed: false } : tx;
    default:
      return tx;
  }
}

/** BEGIN READ ONLY / READ WRITE, SET TRANSACTION ... applied to a block. */
function applyMode(block: BlockState, readOnly: boolean | null): BlockState {
  if (readOnly === true) return { ...block, readOnly: true, clientReadOnly: true };
  if (readOnly === false) {
    // Allowed only before the first snapshot (and never inside a read-only region).
    if (!block.snapshot && !block.region) return { ...block, readOnly: false, clientReadOnly: false };
    return block;
  }
  return block;
}

/**
 * The transaction model of one session: the predicted state after everything forwarded, corrected at every
 * ReadyForQuery that leaves nothing pending (the server's own word), and the session default as the server
 * last reported it.
 */
export class TransactionModel {
  state: TransactionState = IDLE;
  /** The server's default_transaction_read_only: true once stepgate set it (or the server reported on). */
  serverDefaultReadOnly = false;
  /** The client's view of it, as a direct connection would report it. */
  clientDefaultReadOnly: boolean;

  constructor(clientDefaultReadOnly: boolean) {
    this.clientDefaultReadOnly = clientDefaultReadOnly;
  }

  /** `clientIdle`: no client message is in flight (one could change the default behind stepgate's back). */
  context(clientIdle: boolean): PlanContext {
    return { defaultReadOnly: this.serverDefaultReadOnly && clientIdle, clientDefaultReadOnly: this.clientDefaultReadOnly };
  }

  /** The plan's message was forwarded. */
  apply(plan: Plan): void {
    this.state = plan.after_state;
    for (const list of [plan.before, plan.after, plan.afterSync]) {
      for (const i of list) {
        if (i === Injection.DefaultOff) this.serverDefaultReadOnly = false;
        else if (i === Injection.DefaultOn) this.serverDefaultReadOnly = true;
      }
    }
  }

  /** A ReadyForQuery arrived; `drained`: it answers the last message forwarded. */
  onReadyForQuery(status: number, drained: boolean): void {
    if (!drained) return;
    const s = this.state;
    switch (status) {
      case 0x49: // idle
        this.state = IDLE;
        return;
      case 0x54: // in a block
        if (s.kind === 'block') {
          if (s.failed) this.state = { ...s, failed: false };
        } else {
          // stepgate did not see the block begin (a statement it could not read): take the safe reading, a
          // read-write top level that needs regions for reads.
          this.state = { kind: 'block', readOnly: false, clientReadOnly: false, snapshot: true, region: false, failed: false };
        }
        return;
      case 0x45: // failed block
        this.state = s.kind === 'block' ? { ...s, failed: true } : { kind: 'block', readOnly: false, clientReadOnly: false, snapshot: true, region: false, failed: true };
        return;
      default:
    }
  }

  /** The server reported default_transaction_read_only. */
  onServerDefault(readOnly: boolean): void {
    this.serverDefaultReadOnly = readOnly;
  }
}
