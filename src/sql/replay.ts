/**
 * A ClassifyContext that crosses a thread boundary: its properties as plain data, its lookups as recorded
 * answers.
 *
 * The classifier learns about the session only through the context: properties (standardConformingStrings,
 * parameterTypes, grammar), lookup methods (preparedStatement, functionVolatility, shadowedBuiltin, and
 * whatever kinds are added later), and objects with lookup methods (`catalog.lookup`: such a method is named
 * by its path, and the replayed context has an object with it; the object's other properties do not cross).
 * Nothing here knows their names: a snapshot copies every property and lists every method, and
 * a replayed context answers each method call from the answers recorded for exactly that method and those
 * arguments. A call with no recorded answer is listed as missing (and answered `undefined`); a result computed
 * while anything was missing is discarded, the caller asks the real context and runs again. So a context
 * rebuilt from recorded answers reproduces the classification, for any lookup kind whose arguments and
 * answers are structured-cloneable and which answers the same while one text is classified.
 */
import { DEFAULT_GRAMMAR_VERSION, type GrammarVersion } from './grammar.js';
import type { ClassifyContext } from './types.js';

/** A context as data: what a worker needs to rebuild it. */
export interface ContextSnapshot {
  /** Every property that is neither a method nor an object of methods (getters read now), except `grammar`. */
  data: Record<string, unknown>;
  /**
   * Paths of the lookup methods the context has: `preparedStatement`, or `catalog.lookup` for a method of an
   * object (an absent method means something to the classifier).
   */
  methods: string[];
  grammar: GrammarVersion;
}

/** One lookup: method, arguments, and what the context answered. */
export type Lookup = [method: string, args: unknown[], answer: unknown];

export function snapshotContext(ctx: ClassifyContext): ContextSnapshot {
  const data: Record<string, unknown> = {};
  const methods: string[] = [];
  for (const key of contextKeys(ctx)) {
    if (key === 'grammar') continue;
    const value = (ctx as unknown as Record<string, unknown>)[key];
    if (typeof value === 'function') methods.push(key);
    else if (hasMethods(value)) {
      for (const k of contextKeys(value)) if (typeof (value as Record<string, unknown>)[k] === 'function') methods.push(`${key}.${k}`);
    } else if (value !== undefined) data[key] = value;
  }
  return { data, methods, grammar: ctx.grammar?.version ?? DEFAULT_GRAMMAR_VERSION };
}

/**
 * An object (not an array) with methods, such as ClassifyContext.catalog: the classifier calls its methods
 * (its other properties, the object's own state, are not part of the context and do not cross).
 */
function hasMethods(value: unknown): value is object {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  return contextKeys(value).some((k) => typeof (value as Record<string, unknown>)[k] === 'function');
}

/** The function at a method path of the context, with the object to call it on; undefined when absent. */
function methodAt(ctx: ClassifyContext, path: string): { self: unknown; fn: (...a: unknown[]) => unknown } | undefined {
  const dot = path.indexOf('.');
  const self: unknown = dot < 0 ? ctx : (ctx as unknown as Record<string, unknown>)[path.slice(0, dot)];
  if (typeof self !== 'object' || self === null) return undefined;
  const fn = (self as Record<string, unknown>)[dot < 0 ? path : path.slice(dot + 1)];
  return typeof fn === 'function' ? { self, fn: fn as (...a: unknown[]) => unknown } : undefined;
}

/** Sets the function at a method path (creating the object of a dotted path). */
function setMethod(target: Record<string, unknown>, path: string, fn: (...args: unknown[]) => unknown): void {
  const dot = path.indexOf('.');
  if (dot < 0) {
    target[path] = fn;
    return;
  }
  const name = path.slice(0, dot);
  const object = (target[name] ??= {}) as Record<string, unknown>;
  object[path.slice(dot + 1)] = fn;
}

/** Own and inherited property names (a context may be a class instance), up to Object.prototype. */
function contextKeys(ctx: object): string[] {
  const keys = new Set<string>();
  for (let o: object | null = ctx; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const k of Object.getOwnPropertyNames(o)) if (k !== 'constructor') keys.add(k);
  }
  return [...keys];
}

/** The key of one lookup: the method and its arguments. */
export function lookupKey(method: string, args: readonly unknown[]): string {
  return `${method}\u0000${JSON.stringify(args)}`;
}

/** Asks the real context one lookup. */
export function ask(ctx: ClassifyContext, method: string, args: unknown[]): unknown {
  const m = methodAt(ctx, method);
  return m === undefined ? undefined : m.fn.apply(m.self, args);
}

/**
 * A context answering from `answers` (by lookupKey). `used` collects the keys of the answers given, `missing`
 * the lookups that had none.
 */
export function replayContext(
  snapshot: ContextSnapshot,
  answers: ReadonlyMap<string, unknown>,
  extra: Pick<ClassifyContext, 'grammar'>,
): { ctx: ClassifyContext; used: Set<string>; missing: Map<string, [method: string, args: unknown[]]> } {
  const used = new Set<string>();
  const missing = new Map<string, [string, unknown[]]>();
  const ctx: Record<string, unknown> = { ...snapshot.data, ...extra };
  for (const method of snapshot.methods) {
    setMethod(ctx, method, (...args: unknown[]): unknown => {
      const key = lookupKey(method, args);
      if (answers.has(key)) {
        used.add(key);
        return answers.get(key);
      }
      missing.set(key, [method, args]);
      return undefined;
    });
  }
  return { ctx: ctx as unknown as ClassifyContext, used, missing };
}

/**
 * The context with every lookup recorded (in call order, repeats included): what a classification asked and
 * was told. For tests, and for checking later that the answers still hold.
 */
export function recordingContext(ctx: ClassifyContext): { ctx: ClassifyContext; lookups: Lookup[] } {
  const lookups: Lookup[] = [];
  const snapshot = snapshotContext(ctx);
  const recording: Record<string, unknown> = { ...snapshot.data };
  if (ctx.grammar) recording.grammar = ctx.grammar;
  for (const method of snapshot.methods) {
    setMethod(recording, method, (...args: unknown[]): unknown => {
      const answer = ask(ctx, method, args);
      lookups.push([method, args, answer]);
      return answer;
    });
  }
  return { ctx: recording as unknown as ClassifyContext, lookups };
}

/** Whether the context still gives these answers (the same object, or an equal value). */
export function lookupsHold(lookups: readonly Lookup[], ctx: ClassifyContext): boolean {
  for (let i = 0; i < lookups.length; i++) {
    const [method, args, answer] = lookups[i]!;
    if (methodAt(ctx, method) === undefined) return false;
    const now = ask(ctx, method, args);
    if (now !== answer && !sameValue(now, answer)) return false;
  }
  return true;
}

/** Structural equality of plain data (what structured clone preserves). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  }
  return true;
}
