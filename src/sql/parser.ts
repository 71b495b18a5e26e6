/**
 * Parsing with the default grammar (PostgreSQL 18, for `rules explain`, `rules test` and anything without a
 * server), statement splitting, and the text of a PREPARE's statement. The grammars themselves, one per
 * PostgreSQL major, are in grammar.ts.
 */
import { DEFAULT_GRAMMAR_VERSION, defaultGrammar, loadedGrammar, loadGrammar, plpgsql18, scanner18, type Grammar, type ParseOutcome } from './grammar.js';
import type { AnyNode } from './walker.js';

export type { ParsedStatement, ParseOutcome } from './grammar.js';

let loading: Promise<void> | undefined;

/** Loads the default grammar's WebAssembly module. Call (and await) once before classifying; later calls are free. */
export function initParser(): Promise<void> {
  loading ??= loadGrammar(DEFAULT_GRAMMAR_VERSION).then(() => {});
  return loading;
}

export function isParserReady(): boolean {
  return loadedGrammar(DEFAULT_GRAMMAR_VERSION) !== undefined;
}

/** Parses a text that may hold several statements, with `grammar` (default: PostgreSQL 18). */
export function parseText(sql: string, grammar: Grammar = defaultGrammar()): ParseOutcome {
  return grammar.parse(sql);
}

/** Each statement's own text; throws when the text does not parse. */
export function splitStatements(sql: string, grammar?: Grammar): string[] {
  const parsed = parseText(sql, grammar);
  if (!parsed.ok) throw new Error(`${parsed.message} at offset ${parsed.position}`);
  return parsed.statements.map((s) => s.text);
}

/**
 * The text of the statement inside `PREPARE name [(types)] AS statement`: everything after the first AS at
 * parenthesis depth 0. Uses the scanner, which is slow but PREPARE is rare.
 *
 * The scanner is PostgreSQL 18's whatever the session's grammar (only the 18 package has one). That is exact
 * for every supported major: before the AS come only the name and the parameter types (identifiers, keywords,
 * quoted identifiers, numbers in type modifiers, punctuation, comments), and the 15–18 lexers differ only in
 * numeric literals that 16 added (0x1F, 0o17, 0b101, 1_000), which 15 rejects as "trailing junk": a text
 * another grammar parsed has the same tokens up to the AS. Where the 18 grammar is not loaded (a worker
 * classifying for another major), the whole text stands in: it is only what audit and console show for the
 * prepared statement, its classification comes from the parse tree.
 */
export function preparedQueryText(prepareText: string): string {
  const scanSync = scanner18();
  if (scanSync === undefined) return prepareText;
  const buf = Buffer.from(prepareText, 'utf8');
  let tokens;
  try {
    tokens = scanSync(prepareText).tokens;
  } catch {
    return prepareText;
  }
  let depth = 0;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.text === '(') depth++;
    else if (t.text === ')') depth--;
    else if (depth === 0 && t.keywordName === 'RESERVED_KEYWORD' && t.text.toLowerCase() === 'as' && i + 1 < tokens.length) {
      return buf.toString('utf8', tokens[i + 1]!.start).trimEnd();
    }
  }
  return prepareText;
}

/**
 * Parses a whole CREATE FUNCTION text in language plpgsql (as pg_get_functiondef prints it) with PL/pgSQL's
 * own grammar (the PostgreSQL 18 package's, the only one that has it; loaded by initParser() in every thread
 * that classifies). Added for the classifier (function bodies); never throws: without the grammar, not ok.
 */
export function parsePlpgsql(definition: string): { ok: true; tree: AnyNode } | { ok: false; message: string } {
  const parse = plpgsql18();
  if (parse === undefined) return { ok: false, message: 'the PL/pgSQL grammar is not loaded in this thread' };
  try {
    return { ok: true, tree: parse(definition) as AnyNode };
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Splits a PL/pgSQL assignment (`target := expression`, or `=`) at its operator outside parentheses and
 * brackets; null when there is none (or the scanner is not loaded). Added for the classifier; never throws.
 */
export function assignmentParts(text: string): { target: string; value: string } | null {
  const scanSync = scanner18();
  if (scanSync === undefined) return null;
  let tokens: { start: number; end: number; text: string }[];
  try {
    tokens = scanSync(text).tokens;
  } catch {
    return null;
  }
  const buf = Buffer.from(text, 'utf8');
  let depth = 0;
  for (const t of tokens) {
    if (t.text === '(' || t.text === '[') depth++;
    else if (t.text === ')' || t.text === ']') depth--;
    else if (depth === 0 && (t.text === ':=' || t.text === '=')) {
      return { target: buf.toString('utf8', 0, t.start), value: buf.toString('utf8', t.end) };
    }
  }
  return null;
}
