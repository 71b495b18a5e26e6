/**
 * Accumulates what is learnt about one statement while its parse tree is walked, and turns it into a
 * StatementInfo. Classes and flags are bit sets so that adding one is cheap on the hot path.
 */
import { catalogKeyString, type CatalogAnswer, type CatalogKey } from './catalog.js';
import type { Effects } from './effects.js';
import type { ClassifyContext, StatementClass, StatementFlag, StatementInfo, TableRef } from './types.js';
import { STATEMENT_CLASSES, STATEMENT_FLAGS } from './types.js';
import type { AnyNode } from './walker.js';

/** Classes and flags are reported sorted alphabetically. */
const SORTED_CLASSES: readonly StatementClass[] = [...STATEMENT_CLASSES].sort();
const SORTED_FLAGS: readonly StatementFlag[] = [...STATEMENT_FLAGS].sort();
const CLASS_BIT = new Map<StatementClass, number>(SORTED_CLASSES.map((c, i) => [c, 1 << i]));
const FLAG_BIT = new Map<StatementFlag, number>(SORTED_FLAGS.map((f, i) => [f, 1 << i]));

/** Generic reasons, for classes a handler added without saying why. */
const CLASS_DESCRIPTION: Record<StatementClass, string> = {
  read: 'a read',
  write: 'a write',
  ddl: 'a schema change',
  export: 'a bulk export',
  import: 'a bulk import',
  privilege: 'a change of privileges or roles',
  admin: 'server administration',
  maintenance: 'maintenance',
  procedural: 'procedural code',
  transaction: 'transaction control',
  session: 'a session command',
  unknown: 'not understood',
};

export function classBit(c: StatementClass): number {
  return CLASS_BIT.get(c)!;
}

/** Answers the context gave while classifying: a cached result is valid only while they still hold. */
export interface ContextDependencies {
  functions: { name: string; answer: 'read' | 'procedural' | undefined }[];
  prepared: { name: string; statement: StatementInfo | undefined }[];
  /** Portals asked about with portalStatement (FETCH/MOVE). */
  portals: { name: string; statement: StatementInfo | undefined }[];
  /** Built-in names checked with shadowedBuiltin (only when the context has it). */
  shadowed: { name: string; kind: 'function' | 'operator'; answer: boolean }[];
  /** Catalog lookups (ClassifyContext.catalog), each key once, with the answer given (undefined: not known yet). */
  catalog?: { key: CatalogKey; answer: unknown }[];
  /** The declared parameter types the classification used (ClassifyContext.parameterTypes). */
  parameterTypes?: readonly number[];
}

/** Hidden code reached through more levels than this is `unknown` (views on views, functions calling functions ...). */
export const MAX_HIDDEN_DEPTH = 24;

/** How a text of hidden code (a view's query, a function body ...) reads: its statements, or why it cannot be read. */
export type HiddenText = { statements: StatementInfo[] } | { error: string };

/**
 * Memoized effects of hidden code (functions, relations, types by OID ...) for one classification. A cycle (a
 * recursive function) adds nothing the code being analysed does not already do, so it contributes no effects;
 * results computed inside a cycle are not memoized until the cycle's first member is complete.
 */
class HiddenMemo {
  private readonly memo = new Map<string, Effects>();
  private readonly stack: { key: string; low: number }[] = [];
  private readonly onStack = new Map<string, number>();

  get depth(): number {
    return this.stack.length;
  }

  run(key: string, compute: () => Effects, tooDeep: () => Effects, empty: () => Effects): Effects {
    const known = this.memo.get(key);
    if (known !== undefined) return known;
    const at = this.onStack.get(key);
    if (at !== undefined) {
      const top = this.stack[this.stack.length - 1]!;
      top.low = Math.min(top.low, at);
      return empty();
    }
    if (this.stack.length >= MAX_HIDDEN_DEPTH) return tooDeep();
    const index = this.stack.length;
    const frame = { key, low: index };
    this.stack.push(frame);
    this.onStack.set(key, index);
    let result: Effects;
    try {
      result = compute();
    } finally {
      this.stack.pop();
      this.onStack.delete(key);
    }
    if (frame.low >= index) this.memo.set(key, result);
    else {
      const parent = this.stack[this.stack.length - 1];
      if (parent) parent.low = Math.min(parent.low, frame.low);
    }
    return result;
  }
}

/** State shared by all statements of one text. */
export class TextEnvironment {
  readonly unresolved = new Set<string>();
  readonly dependencies: ContextDependencies = { functions: [], prepared: [], shadowed: [], portals: [] };
  /** Cursors DECLAREd or CLOSEd earlier in the same text (null: closed): the server runs them in order. */
  readonly localPortals = new Map<string, StatementInfo | null>();
  /** CLOSE ALL earlier in the text: no earlier portal survives. */
  localPortalsClosed = false;
  /** Catalog keys asked that had no answer yet, by key string. */
  readonly unresolvedLookups = new Map<string, CatalogKey>();
  /** Catalog answers given so far, by key string: each key is asked (and recorded) once per text. */
  private readonly answers = new Map<string, unknown>();
  readonly hidden = new HiddenMemo();
  /** > 0 while hidden code is analysed: it must not change the text's own state (its PREPAREs, ...). */
  hiddenLevel = 0;
  /** Effects of the database-wide hazards, computed once per text (see hidden.ts): for built-in types only, and all. */
  hazards?: { builtin: Effects; all: Effects };
  /** PREPAREs and DEALLOCATEs earlier in the same text: the server runs them before later statements. */
  readonly localPrepared = new Map<string, StatementInfo | null>();
  /** DEALLOCATE ALL / DISCARD ALL earlier in the text: no earlier prepared statement survives. */
  localDeallocatedAll = false;
  shapeSafe = true;

  constructor(
    readonly ctx: ClassifyContext,
    /** Classifies a text of hidden code with this environment (set by classify.ts, which owns the parser). */
    readonly analyzeHiddenText: (sql: string) => HiddenText = () => ({ error: 'hidden code cannot be read here' }),
    /** Classifies one parsed statement of hidden code (BEGIN ATOMIC bodies arrive parsed). */
    readonly analyzeHiddenNode: (node: AnyNode) => StatementInfo = () => unknownStatement('', 'hidden code cannot be read here'),
    /** Parses a text holding one statement (a function definition); undefined when it does not parse. */
    readonly parseHiddenStatement: (sql: string) => AnyNode | undefined = () => undefined,
  ) {
    if (ctx.catalog !== undefined) this.dependencies.catalog = [];
    if (ctx.parameterTypes !== undefined) this.dependencies.parameterTypes = ctx.parameterTypes;
  }

  /**
   * Asks the catalog (once per key and text) and records the answer. Undefined when there is no catalog or the
   * answer is not known yet; then the key is reported as unresolved.
   */
  lookup<K extends CatalogKey>(key: K): CatalogAnswer<K> | undefined {
    const catalog = this.ctx.catalog;
    if (catalog === undefined) return undefined;
    const k = catalogKeyString(key);
    if (this.answers.has(k)) return this.answers.get(k) as CatalogAnswer<K> | undefined;
    const answer = catalog.lookup(key);
    this.answers.set(k, answer);
    this.dependencies.catalog!.push({ key, answer });
    if (answer === undefined) this.unresolvedLookups.set(k, key);
    return answer;
  }

  /** Whether an unqualified built-in name may resolve to something else (see ClassifyContext.shadowedBuiltin). */
  isShadowed(name: string, kind: 'function' | 'operator'): boolean {
    const lookup = this.ctx.shadowedBuiltin;
    if (lookup === undefined) return false;
    const answer = lookup.call(this.ctx, name, kind) === true;
    this.dependencies.shadowed.push({ name, kind, answer });
    return answer;
  }

  /** The statement EXECUTE name would run, or undefined when it cannot be known. */
  preparedStatement(name: string): StatementInfo | undefined {
    const local = this.localPrepared.get(name);
    if (local !== undefined) return local ?? undefined;
    if (this.localDeallocatedAll) return undefined;
    const statement = this.ctx.preparedStatement?.(name);
    this.dependencies.prepared.push({ name, statement });
    return statement;
  }

  /** The statement FETCH/MOVE name would run, or undefined when it cannot be known. */
  portalStatement(name: string): StatementInfo | undefined {
    const local = this.localPortals.get(name);
    if (local !== undefined) return local ?? undefined;
    if (this.localPortalsClosed) return undefined;
    const statement = this.ctx.portalStatement?.(name);
    this.dependencies.portals.push({ name, statement });
    return statement;
  }
}

export class StatementAnalysis {
  command = 'UNKNOWN';
  private classMask = 0;
  /** Classes added with a reason; the others get a generic one in finish(). */
  private explainedMask = 0;
  private flagMask = 0;
  private readonly tables = new Map<string, TableRef>();
  private readonly columns = new Set<string>();
  private readonly commands = new Set<string>();
  private readonly functions = new Set<string>();
  private readonly reasons: string[] = [];
  changesParsing = false;
  prepare?: StatementInfo['prepare'];
  deallocate?: StatementInfo['deallocate'];
  transaction?: StatementInfo['transaction'];
  cursor?: StatementInfo['cursor'];
  executes?: string;
  snapshotFree = false;
  ownTransactions = false;
  changesReadOnlyDefault = false;
  /**
   * > 0 while walking code that this statement defines but does not run (a view's query, a function body,
   * a rule's actions, a policy's expression): tables and functions are listed, classes and flags are not.
   */
  deferred = 0;
  /**
   * > 0 while walking a query that is planned but not run (plain EXPLAIN, inside `deferred`): the planner
   * evaluates functions on constants, expands views and policies, and may ask foreign servers, so hidden code
   * (user functions, views, casts, domains, operators) counts; the statement's own effects do not.
   */
  planning = 0;

  constructor(readonly env: TextEnvironment) {}

  addClass(c: StatementClass, reason?: string): void {
    if (this.deferred > 0) return;
    const bit = CLASS_BIT.get(c)!;
    this.classMask |= bit;
    if (reason !== undefined) {
      this.explainedMask |= bit;
      this.addReason(reason);
    }
  }

  hasClass(c: StatementClass): boolean {
    return (this.classMask & CLASS_BIT.get(c)!) !== 0;
  }

  addFlag(f: StatementFlag, reason?: string): void {
    if (this.deferred > 0) return;
    this.flagMask |= FLAG_BIT.get(f)!;
    if (reason !== undefined) this.addReason(reason);
  }

  hasFlag(f: StatementFlag): boolean {
    return (this.flagMask & FLAG_BIT.get(f)!) !== 0;
  }

  addReason(reason: string): void {
    if (this.deferred > 0) return;
    if (!this.reasons.includes(reason)) this.reasons.push(reason);
  }

  /** A table the statement touches; write wins over read. Deferred code only ever reads. */
  addTable(schema: string | null, name: string, access: 'read' | 'write'): void {
    if (this.deferred > 0) access = 'read';
    const key = schema === null ? name : `${schema}\u0000${name}`;
    const known = this.tables.get(key);
    if (known === undefined) this.tables.set(key, { schema, name, access });
    else if (access === 'write' && known.access === 'read') known.access = 'write';
  }

  /** A command the statement runs besides its own (see StatementInfo.commands). */
  addCommand(command: string): void {
    if (this.deferred > 0) return;
    this.commands.add(command);
  }

  addColumn(column: string): void {
    this.columns.add(column);
  }

  addFunction(name: string): void {
    this.functions.add(name);
  }

  /** True while hidden code counts: the statement runs it, or plans it (plain EXPLAIN, see `planning`). */
  get hiddenCodeRuns(): boolean {
    return this.deferred === 0 || this.planning > 0;
  }

  /**
   * Adds what hidden code this statement runs does (see effects.ts). `via` says how it is reached
   * (`view public.v`, `operator =`); it prefixes the reasons. How:
   * - `hidden` (functions, views, casts, domains): hidden code that changes anything makes the statement
   *   `procedural` as well: what it writes is not listed in `tables`, so rules cannot judge it;
   * - `operator`: any effect at all makes it procedural (nothing in the text shows that code runs);
   * - `target`: what writing a table runs (triggers, rules, defaults): the statement is a write already.
   */
  mergeEffects(e: Effects, via: string | null, how: 'hidden' | 'operator' | 'target' = 'hidden'): void {
    if (!this.hiddenCodeRuns || e.empty) return;
    // While planning (inside a deferred walk), hidden code still counts.
    const deferred = this.deferred;
    this.deferred = 0;
    try {
      const prefix = via === null ? '' : `${via}: `;
      const first = e.reasons.length > 0 ? prefix + e.reasons[0]! : `${via ?? 'hidden code'} runs code that is ${[...e.classes].join(', ') || 'flagged'}`;
      for (const c of e.classes) this.addClass(c, first);
      for (const f of e.flags) this.addFlag(f);
      for (const r of e.reasons) this.addReason(prefix + r);
      if (e.changesParsing) this.changesParsing = true;
      let changes = how === 'operator';
      // Classes the shipped rules may allow (a write with WHERE, maintenance, import): hidden, they need asking.
      if (how === 'hidden') for (const c of e.classes) if (c === 'write' || c === 'maintenance' || c === 'import' || c === 'export') changes = true;
      if (changes && !e.classes.has('unknown')) {
        this.addClass('procedural', how === 'operator' ? `${first} (an operator runs code the statement does not show)` : `${first} (hidden in code the statement runs: its tables are not listed)`);
      }
    } finally {
      this.deferred = deferred;
    }
  }

  /** The classification depends on literal values: it must not be reused for other statements of this shape. */
  literalDependent(): void {
    this.env.shapeSafe = false;
  }

  /** Merges another statement's findings (EXECUTE of a prepared statement, the query of a COPY ...). */
  mergeStatement(info: StatementInfo): void {
    for (const c of info.classes) this.addClass(c);
    for (const c of info.commands) this.addCommand(c);
    for (const f of info.flags) if (f !== 'multi_statement') this.addFlag(f);
    for (const t of info.tables) this.addTable(t.schema, t.name, t.access);
    for (const c of info.columns) this.addColumn(c);
    for (const f of info.functions) this.addFunction(f);
    for (const r of info.reasons) this.addReason(r);
    if (info.changesParsing) this.changesParsing = true;
    if (info.ownTransactions) this.ownTransactions = true;
    if (info.changesReadOnlyDefault) this.changesReadOnlyDefault = true;
  }

  finish(sql: string): StatementInfo {
    const classes: StatementClass[] = [];
    for (let i = 0; i < SORTED_CLASSES.length; i++) if (this.classMask & (1 << i)) classes.push(SORTED_CLASSES[i]!);
    if (classes.length === 0) {
      // Every statement handler adds a class; reaching this is a bug, and a bug must not read as `read`.
      classes.push('unknown');
      this.reasons.push('no class was determined');
    }
    const unexplained = this.classMask & ~this.explainedMask & ~CLASS_BIT.get('read')!;
    if (unexplained !== 0) {
      for (let i = 0; i < SORTED_CLASSES.length; i++) {
        if (unexplained & (1 << i)) this.reasons.push(`${this.command} is ${CLASS_DESCRIPTION[SORTED_CLASSES[i]!]}`);
      }
    }
    const flags: StatementFlag[] = [];
    for (let i = 0; i < SORTED_FLAGS.length; i++) if (this.flagMask & (1 << i)) flags.push(SORTED_FLAGS[i]!);
    this.commands.add(this.command);
    const info: StatementInfo = {
      sql,
      command: this.command,
      commands: [...this.commands].sort(),
      classes,
      tables: [...this.tables.values()],
      columns: [...this.columns],
      functions: [...this.functions],
      flags,
      reasons: this.reasons,
      changesParsing: this.changesParsing,
    };
    if (this.prepare) info.prepare = this.prepare;
    if (this.deallocate) info.deallocate = this.deallocate;
    if (this.executes !== undefined) info.executes = this.executes;
    if (this.transaction) info.transaction = this.transaction;
    if (this.cursor) info.cursor = this.cursor;
    if (this.snapshotFree) info.snapshotFree = true;
    if (this.ownTransactions) info.ownTransactions = true;
    if (this.changesReadOnlyDefault) info.changesReadOnlyDefault = true;
    return info;
  }
}

/** A StatementInfo for text that cannot be read with certainty. */
export function unknownStatement(sql: string, reason: string, command = 'UNKNOWN'): StatementInfo {
  return {
    sql,
    command,
    commands: [command],
    classes: ['unknown'],
    tables: [],
    columns: [],
    functions: [],
    flags: [],
    reasons: [reason],
    changesParsing: true,
  };
}
