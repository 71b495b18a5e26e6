/**
 * classify(): parses a text (one query message, possibly several statements) and classifies each statement.
 *
 * Fails closed: a text that does not parse, or that PostgreSQL may read differently from libpg-query
 * (standard_conforming_strings off with backslashes, a NUL, broken UTF-16), gives `unknown` statements.
 */
import { TextEnvironment, unknownStatement, type ContextDependencies, type HiddenText } from './analysis.js';
import { defaultGrammar } from './grammar.js';
import { preparedQueryText } from './parser.js';
import { analyzeStatement } from './statements.js';
import type { ParsedStatement } from './grammar.js';
import type { ClassifyContext, ClassifyResult, StatementInfo } from './types.js';
import type { AnyNode } from './walker.js';

export { initParser, splitStatements } from './parser.js';

/**
 * Classifies every statement of `sql` for a session described by `ctx`, with the session's grammar
 * (`ctx.grammar`, default PostgreSQL 18). Pure: no I/O. Never throws: a text this thread cannot read (too deep
 * for its stack) is `unknown`, with `error.stackExhausted` set.
 */
export function classify(sql: string, ctx: ClassifyContext): ClassifyResult {
  return classifyTracked(sql, ctx).result;
}

export interface TrackedClassification {
  result: ClassifyResult;
  /** What the context answered: the result holds only while the context still answers the same. */
  dependencies: ContextDependencies;
  /** Each statement's [start, end) UTF-16 offsets in the text, flattened. */
  spans: number[];
}

const NO_DEPENDENCIES: ContextDependencies = Object.freeze({ functions: [], prepared: [], shadowed: [], portals: [] }) as ContextDependencies;

/** classify(), plus the context answers the result depends on (for the cache). Never throws. */
export function classifyTracked(sql: string, ctx: ClassifyContext): TrackedClassification {
  try {
    return classifyUnguarded(sql, ctx);
  } catch (err) {
    // A bug or an exhausted stack must not take the connection down, nor read as anything but unknown.
    const reason = `stepgate could not analyze the text: ${err instanceof Error ? err.message : String(err)}`;
    return { result: failure(sql, reason, 0), dependencies: { functions: [], prepared: [], shadowed: [], portals: [] }, spans: [0, sql.length] };
  }
}

function classifyUnguarded(sql: string, ctx: ClassifyContext): TrackedClassification {
  const unreadable = unreadableText(sql);
  if (unreadable !== null) return { result: failure(sql, unreadable, 0), dependencies: NO_DEPENDENCIES, spans: [0, sql.length] };

  const parsed = (ctx.grammar ?? defaultGrammar()).parse(sql);
  if (!parsed.ok) {
    const result = parsed.stackExhausted
      ? failure(sql, parsed.message, 0, true)
      : failure(sql, `does not parse: ${parsed.message}`, parsed.position);
    return { result, dependencies: NO_DEPENDENCIES, spans: [0, sql.length] };
  }
  try {
    return analyzeText(sql, ctx, parsed.statements);
  } catch (err) {
    // A parse tree too deep for this thread's stack (the walker recurses): a thread with a larger one may
    // read it. Anything else is a bug, and a bug must not read as a read, nor end the session.
    const result =
      err instanceof RangeError
        ? failure(sql, 'the statement nests too deeply to be classified on this thread', 0, true)
        : failure(sql, `stepgate could not classify this text: ${err instanceof Error ? err.message : String(err)}`, 0);
    return { result, dependencies: NO_DEPENDENCIES, spans: [0, sql.length] };
  }
}

function analyzeText(sql: string, ctx: ClassifyContext, parsedStatements: ParsedStatement[]): TrackedClassification {
  const env = newEnvironment(ctx);
  const statements: StatementInfo[] = [];
  const spans: number[] = [];
  const backslashMisread = ctx.standardConformingStrings === false && sql.includes('\\');
  let parsingMayHaveChanged = false;
  for (const p of parsedStatements) {
    let info = analyzeStatement(env, p.node, p.text, () => preparedQueryText(p.text));
    if (backslashMisread) {
      info = unknownAfterAll(info, 'standard_conforming_strings is off and the text has a backslash: the server may read it differently');
    } else if (parsingMayHaveChanged && p.text.includes('\\')) {
      info = unknownAfterAll(info, 'an earlier statement in the same text may change standard_conforming_strings, and this one has a backslash');
    }
    // A later EXECUTE in the same text must see the prepared statement as it is reported.
    if (info.prepare) env.localPrepared.set(info.prepare.name, info.prepare.statement);
    if (info.changesParsing) parsingMayHaveChanged = true;
    statements.push(info);
    spans.push(p.start, p.end);
  }
  if (statements.length > 1) {
    for (const s of statements) s.flags = withFlag(s.flags, 'multi_statement');
  }
  const shapeSafe = env.shapeSafe && !backslashMisread && statements.every((s) => !s.classes.includes('unknown'));
  const result: ClassifyResult = { statements, unresolvedFunctions: [...env.unresolved], shapeSafe };
  if (env.unresolvedLookups.size > 0) result.unresolvedLookups = [...env.unresolvedLookups.values()];
  return { result, dependencies: env.dependencies, spans };
}

/**
 * The context for classifying an extended-protocol Parse that declares parameter types (type OIDs, 0 for
 * unspecified): binding a value to a domain-typed parameter runs the domain's checks, which the statement then
 * carries. The returned context reads everything else from `ctx` (getters included).
 */
export function withParameterTypes(ctx: ClassifyContext, types: readonly number[]): ClassifyContext {
  if (!types.some((t) => t !== 0)) return ctx;
  const derived = Object.create(ctx) as ClassifyContext;
  Object.defineProperty(derived, 'parameterTypes', { value: Object.freeze([...types]), enumerable: true });
  return derived;
}

/**
 * An environment whose hidden code (view queries, function bodies, checks, see hidden.ts) is classified with
 * the same classifier and the same lookups. Hidden texts never throw and never change the text's own state.
 */
function newEnvironment(ctx: ClassifyContext): TextEnvironment {
  // Hidden texts come from the session's server: its grammar reads them.
  const grammar = ctx.grammar ?? defaultGrammar();
  const parseText = (sql: string): ReturnType<typeof grammar.parse> => grammar.parse(sql);
  const env: TextEnvironment = new TextEnvironment(
    ctx,
    (sql: string): HiddenText => {
      const parsed = parseText(sql);
      if (!parsed.ok) return { error: parsed.message };
      return { statements: parsed.statements.map((p) => analyzeStatement(env, p.node, p.text, () => '')) };
    },
    (node: AnyNode): StatementInfo => analyzeStatement(env, node, '', () => ''),
    (sql: string): AnyNode | undefined => {
      const parsed = parseText(sql);
      return parsed.ok && parsed.statements.length === 1 ? parsed.statements[0]!.node : undefined;
    },
  );
  return env;
}

/** Why libpg-query cannot be trusted to read this text as the server would, or null. */
function unreadableText(sql: string): string | null {
  // The wire protocol cannot carry NUL, and libpg-query would stop reading at one.
  if (sql.includes('\u0000')) return 'the text contains a NUL character';
  // Lone surrogates have no UTF-8 form: byte offsets and the server's reading would not match.
  if (LONE_SURROGATE.test(sql)) return 'the text is not valid Unicode';
  return null;
}

const LONE_SURROGATE = /\p{Surrogate}/u;

function failure(sql: string, reason: string, position: number, stackExhausted = false): ClassifyResult {
  return {
    statements: [unknownStatement(sql, reason)],
    error: stackExhausted ? { message: reason, position, stackExhausted } : { message: reason, position },
    unresolvedFunctions: [],
    shapeSafe: false,
  };
}

/** The statement as parsed, but `unknown`: its reading may be wrong, so its classes are worthless. */
function unknownAfterAll(info: StatementInfo, reason: string): StatementInfo {
  const unknown: StatementInfo = { ...info, classes: ['unknown'], reasons: [...info.reasons, reason], changesParsing: true };
  // A PREPARE read wrongly would hand its wrong reading to every later EXECUTE.
  if (info.prepare) unknown.prepare = { name: info.prepare.name, statement: unknownAfterAll(info.prepare.statement, reason) };
  return unknown;
}

function withFlag(flags: StatementInfo['flags'], flag: StatementInfo['flags'][number]): StatementInfo['flags'] {
  if (flags.includes(flag)) return flags;
  return [...flags, flag].sort();
}
