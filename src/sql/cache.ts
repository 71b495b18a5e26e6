/**
 * A bounded classification cache in front of classify().
 *
 * Two levels:
 *  - exact text (one map per standard_conforming_strings value, since backslashes read differently);
 *  - statement shape (shape.ts): texts that differ only in literal values share a shape-safe result, returned
 *    with each statement's actual text in `sql`.
 *
 * Entries are kept per grammar (the session's PostgreSQL major, ctx.grammar): the same text can read
 * differently in another major.
 *
 * A result depends on the context too: the function volatilities, shadowed built-in names, prepared
 * statements, catalog lookups and declared parameter types it used are stored with it and asked again on
 * every hit; if any answer changed, the entry is classified afresh (so one cache can serve many sessions and
 * databases, and a catalog entry that expired or was invalidated makes its dependants stale). Results with
 * unresolved functions or lookups are not stored (the caller looks them up and classifies again), nor
 * results of texts the thread could not read (stack exhausted), nor texts longer than `maxTextLength`.
 *
 * Results handed out by the cache are frozen (deeply): they are shared between callers. Never mutate one.
 */
import type { ContextDependencies } from './analysis.js';
import { classifyTracked, type TrackedClassification } from './classify.js';
import { DEFAULT_GRAMMAR_VERSION } from './grammar.js';
import { lookupsHold, type Lookup } from './replay.js';
import { buildShapeKey, keyOffsetsToText, sameShape, scanShape, textOffsetsToKey } from './shape.js';
import type { ClassifyContext, ClassifyResult, StatementInfo } from './types.js';

export interface ClassificationCacheOptions {
  /** Most texts kept by exact text (per grammar and standard_conforming_strings value). Default 10,000. */
  maxEntries?: number;
  /** Most shapes kept (per grammar). Default 10,000. */
  maxShapes?: number;
  /**
   * Longest text (UTF-16 units) whose result is kept. Default 64 KiB: together with the entry counts this
   * bounds the memory the cache holds, and longer texts are rarely sent twice.
   */
  maxTextLength?: number;
}

/**
 * What a result computed elsewhere (the classification worker) depends on: every lookup it was answered,
 * with the answer as this thread's context gave it.
 */
export interface RecordedDependencies {
  lookups: readonly Lookup[];
}

type Dependencies = ContextDependencies | RecordedDependencies;

export interface ClassificationCacheStats {
  exactHits: number;
  shapeHits: number;
  misses: number;
  /** Lookups whose entry was found but no longer held for the context. */
  stale: number;
  entries: number;
  shapes: number;
}

/**
 * LRU-ish map: two generations. New entries go to the young one; when it is full it becomes the old one and
 * the previous old one is dropped. A hit in the old generation moves the entry to the young one. Lookups
 * stay O(1) with no per-hit reordering; an entry used at least once per generation is never dropped.
 */
class GenerationalMap<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private readonly generation: number;

  constructor(capacity: number) {
    this.generation = Math.max(1, Math.ceil(capacity / 2));
  }

  get(key: K): V | undefined {
    const v = this.young.get(key);
    if (v !== undefined) return v;
    const o = this.old.get(key);
    if (o !== undefined) {
      this.old.delete(key);
      this.set(key, o);
    }
    return o;
  }

  set(key: K, value: V): void {
    this.young.set(key, value);
    if (this.young.size >= this.generation) {
      this.old = this.young;
      this.young = new Map();
    }
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }
}

interface ExactEntry {
  result: ClassifyResult;
  dependencies: Dependencies;
}

interface ShapeEntry {
  /** The full shape key: entries are found by its hash, then compared with the text. */
  key: string;
  result: ClassifyResult;
  dependencies: Dependencies;
  /** Each statement's [start, end) in key offsets, flattened. */
  keySpans: number[];
}

/** The entries of one grammar. */
class Partition {
  readonly exactOn: GenerationalMap<string, ExactEntry>;
  readonly exactOff: GenerationalMap<string, ExactEntry>;
  /** By hash of the shape key (a collision only costs a miss: the key is compared before use). */
  readonly shapes: GenerationalMap<number, ShapeEntry>;

  constructor(maxEntries: number, maxShapes: number) {
    this.exactOn = new GenerationalMap(maxEntries);
    this.exactOff = new GenerationalMap(maxEntries);
    this.shapes = new GenerationalMap(maxShapes);
  }
}

const NO_FUNCTIONS: readonly string[] = Object.freeze([]);

export class ClassificationCache {
  /** By grammar version (few: the majors of the servers in use). */
  private readonly partitions = new Map<number, Partition>();
  private readonly maxEntries: number;
  private readonly maxShapes: number;
  readonly maxTextLength: number;
  /** Scratch buffers reused between lookups (the cache is not re-entrant; JavaScript is single-threaded). */
  private readonly literals: number[] = [];
  private readonly offsets: number[] = [];
  /** Set by the last lookup(): the text's shape hash (-1 when it has none), for store(). */
  private lastHash = -1;
  private counters = { exactHits: 0, shapeHits: 0, misses: 0, stale: 0 };

  constructor(options: ClassificationCacheOptions = {}) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.maxShapes = options.maxShapes ?? 10_000;
    this.maxTextLength = options.maxTextLength ?? 64 * 1024;
  }

  private partition(ctx: ClassifyContext): Partition {
    const version = ctx.grammar?.version ?? DEFAULT_GRAMMAR_VERSION;
    let p = this.partitions.get(version);
    if (p === undefined) {
      p = new Partition(this.maxEntries, this.maxShapes);
      this.partitions.set(version, p);
    }
    return p;
  }

  /** classify(sql, ctx), from the cache when possible. The result is frozen (unless it was not kept). */
  classify(sql: string, ctx: ClassifyContext): ClassifyResult {
    if (sql.length > this.maxTextLength) {
      this.counters.misses++;
      return classifyTracked(sql, ctx).result;
    }
    const hit = this.lookup(sql, ctx);
    if (hit !== undefined) return hit;
    return this.classifyMissed(sql, ctx);
  }

  /**
   * Classifies and keeps `sql` right after lookup() missed it for the same context (the lookup's scan of
   * the text is reused): for callers that choose where to classify after a miss.
   */
  classifyMissed(sql: string, ctx: ClassifyContext): ClassifyResult {
    const tracked = classifyTracked(sql, ctx);
    if (sql.length <= this.maxTextLength) this.keep(sql, ctx, tracked, this.lastHash);
    return tracked.result;
  }

  /**
   * The cached result for `sql` in this context, or undefined (counted as a miss; store() may follow). For
   * texts classified elsewhere.
   */
  lookup(sql: string, ctx: ClassifyContext): ClassifyResult | undefined {
    this.lastHash = -1;
    if (sql.length > this.maxTextLength) {
      this.counters.misses++;
      return undefined;
    }
    const partition = this.partition(ctx);
    const exact = ctx.standardConformingStrings === false ? partition.exactOff : partition.exactOn;
    const entry = exact.get(sql);
    if (entry !== undefined) {
      if (dependenciesHold(entry.dependencies, ctx)) {
        this.counters.exactHits++;
        return entry.result;
      }
      this.counters.stale++;
    }

    const literals = this.literals;
    literals.length = 0;
    // Shapes never contain a backslash, so standard_conforming_strings cannot change their reading.
    const hash = scanShape(sql, literals);
    this.lastHash = hash;
    if (hash >= 0) {
      const shape = partition.shapes.get(hash);
      if (shape !== undefined && sameShape(sql, literals, shape.key)) {
        if (dependenciesHold(shape.dependencies, ctx)) {
          this.counters.shapeHits++;
          // Not added to the exact-text map: inserting costs more than the next shape hit would.
          return this.rebind(shape, sql, literals);
        }
        this.counters.stale++;
      }
    }
    this.counters.misses++;
    return undefined;
  }

  /**
   * Keeps a result classified elsewhere (the worker) for `sql` in this context. `dependencies`: every lookup
   * it was answered, as this thread's context answered it. The result is frozen.
   */
  store(sql: string, ctx: ClassifyContext, tracked: { result: ClassifyResult; dependencies: RecordedDependencies; spans: number[] }): void {
    if (sql.length > this.maxTextLength) return;
    const literals = this.literals;
    literals.length = 0;
    this.keep(sql, ctx, tracked, scanShape(sql, literals));
  }

  /** Stores a fresh result; `literals` holds the text's literal offsets when hash >= 0. */
  private keep(sql: string, ctx: ClassifyContext, tracked: Pick<TrackedClassification, 'result' | 'spans'> & { dependencies: Dependencies }, hash: number): void {
    const result = tracked.result;
    if (result.unresolvedFunctions.length > 0 || result.unresolvedLookups !== undefined || result.error?.stackExhausted) return;
    deepFreeze(result);
    const partition = this.partition(ctx);
    const exact = ctx.standardConformingStrings === false ? partition.exactOff : partition.exactOn;
    exact.set(sql, { result, dependencies: tracked.dependencies });
    if (hash >= 0 && result.shapeSafe) {
      const literals = this.literals;
      const keySpans: number[] = [];
      textOffsetsToKey(tracked.spans, literals, keySpans);
      partition.shapes.set(hash, { key: buildShapeKey(sql, literals), result, dependencies: tracked.dependencies, keySpans });
    }
  }

  stats(): ClassificationCacheStats {
    let entries = 0;
    let shapes = 0;
    for (const p of this.partitions.values()) {
      entries += p.exactOn.size + p.exactOff.size;
      shapes += p.shapes.size;
    }
    return { ...this.counters, entries, shapes };
  }

  clear(): void {
    this.partitions.clear();
    this.counters = { exactHits: 0, shapeHits: 0, misses: 0, stale: 0 };
  }

  /** The shape's result with each statement's text taken from `sql`. */
  private rebind(shape: ShapeEntry, sql: string, literals: number[]): ClassifyResult {
    const offsets = this.offsets;
    offsets.length = 0;
    keyOffsetsToText(shape.keySpans, literals, offsets);
    const source = shape.result.statements;
    const statements: StatementInfo[] = new Array(source.length);
    for (let i = 0; i < source.length; i++) {
      const s = source[i]!;
      // Shape-safe statements are never PREPARE or DEALLOCATE (utility statements are not shape-safe).
      statements[i] = Object.freeze({
        sql: sql.slice(offsets[2 * i], offsets[2 * i + 1]),
        command: s.command,
        commands: s.commands,
        classes: s.classes,
        tables: s.tables,
        columns: s.columns,
        functions: s.functions,
        flags: s.flags,
        reasons: s.reasons,
        changesParsing: s.changesParsing,
      });
    }
    return Object.freeze({
      statements: Object.freeze(statements) as StatementInfo[],
      unresolvedFunctions: NO_FUNCTIONS as string[],
      shapeSafe: true,
    });
  }
}

function dependenciesHold(deps: Dependencies, ctx: ClassifyContext): boolean {
  if ('lookups' in deps) return lookupsHold(deps.lookups, ctx);
  const functions = deps.functions;
  for (let i = 0; i < functions.length; i++) {
    const f = functions[i]!;
    if (ctx.functionVolatility?.(f.name) !== f.answer) return false;
  }
  const shadowed = deps.shadowed;
  for (let i = 0; i < shadowed.length; i++) {
    const s = shadowed[i]!;
    if ((ctx.shadowedBuiltin?.(s.name, s.kind) === true) !== s.answer) return false;
  }
  const prepared = deps.prepared;
  for (let i = 0; i < prepared.length; i++) {
    const p = prepared[i]!;
    if (ctx.preparedStatement?.(p.name) !== p.statement) return false;
  }
  const portals = deps.portals;
  for (let i = 0; i < portals.length; i++) {
    const p = portals[i]!;
    if (ctx.portalStatement?.(p.name) !== p.statement) return false;
  }
  if (!sameTypes(deps.parameterTypes, ctx.parameterTypes)) return false;
  const catalog = deps.catalog;
  if (catalog !== undefined) {
    const lookups = ctx.catalog;
    if (lookups === undefined) return false;
    for (let i = 0; i < catalog.length; i++) {
      const d = catalog[i]!;
      const answer = lookups.lookup(d.key);
      if (answer === d.answer) continue;
      // The catalog refreshed an entry (or the answers were replayed from JSON): equal content still holds, and
      // remembering the live object makes the next check an identity check again.
      if (answer === undefined || !sameJson(answer, d.answer)) return false;
      d.answer = answer;
    }
  } else if (ctx.catalog !== undefined) {
    return false; // classified without a catalog: its tables were never looked up
  }
  return true;
}

function sameTypes(a: readonly number[] | undefined, b: readonly number[] | undefined): boolean {
  if (a === b) return true;
  const x = a ?? [];
  const y = b ?? [];
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Structural equality of JSON values (catalog answers). */
function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  for (const k of ka) if (!sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  return true;
}

function deepFreeze(value: unknown): void {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const k of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[k]);
}
