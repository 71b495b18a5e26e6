/**
 * The PostgreSQL grammar (libpg-query, PostgreSQL 18) and statement splitting.
 *
 * libpg-query reports statement locations as UTF-8 byte offsets: texts are sliced through a Buffer unless
 * the text is pure ASCII (then bytes and UTF-16 indices coincide).
 */
import { loadModule, parsePlPgSQLSync, parseSync, scanSync } from 'libpg-query';
import type { AnyNode } from './walker.js';

let loading: Promise<void> | undefined;
let ready = false;

/** Loads libpg-query's WebAssembly module. Call (and await) once before classifying; later calls are free. */
export function initParser(): Promise<void> {
  loading ??= loadModule().then(() => {
    ready = true;
  });
  return loading;
}

export function isParserReady(): boolean {
  return ready;
}

function assertReady(): void {
  if (!ready) throw new Error('stepgate sql: initParser() must be awaited before parsing');
}

export interface ParsedStatement {
  /** The statement node, `{ SelectStmt: {...} }`. */
  node: AnyNode;
  /** The statement's own text (without the separating semicolon or trailing white space). */
  text: string;
  /** UTF-16 offsets of `text` in the whole text. */
  start: number;
  end: number;
}

export type ParseOutcome =
  | { ok: true; statements: ParsedStatement[] }
  | { ok: false; message: string; /** UTF-16 offset of the error in the text */ position: number };

interface RawStmt {
  stmt: AnyNode;
  stmt_location?: number;
  stmt_len?: number;
}

/** Parses a text that may hold several statements. Empty texts (only blanks, comments, semicolons) hold none. */
export function parseText(sql: string): ParseOutcome {
  assertReady();
  if (sql.length === 0) return { ok: true, statements: [] };
  let stmts: RawStmt[];
  try {
    stmts = ((parseSync(sql) as unknown as { stmts?: RawStmt[] }).stmts ?? []) as RawStmt[];
  } catch (err) {
    const details = (err as { sqlDetails?: { message?: string; cursorPosition?: number } }).sqlDetails;
    const message = details?.message ?? (err instanceof Error ? err.message : String(err));
    return { ok: false, message, position: codePointsToIndex(sql, details?.cursorPosition ?? 0) };
  }
  const ascii = Buffer.byteLength(sql, 'utf8') === sql.length;
  const statements: ParsedStatement[] = [];
  if (ascii) {
    for (const s of stmts) {
      const start = s.stmt_location ?? 0;
      const end = trimmedEnd(sql, start, s.stmt_len ? start + s.stmt_len : sql.length);
      statements.push({ node: s.stmt, text: sql.slice(start, end), start, end });
    }
    return { ok: true, statements };
  }
  // Walk the byte offsets in order, converting each to a UTF-16 index by decoding the bytes in between.
  const buf = Buffer.from(sql, 'utf8');
  let byte = 0;
  let index = 0;
  const toIndex = (target: number): number => {
    index += buf.toString('utf8', byte, target).length;
    byte = target;
    return index;
  };
  for (const s of stmts) {
    const byteStart = s.stmt_location ?? 0;
    const byteEnd = s.stmt_len ? byteStart + s.stmt_len : buf.length;
    const start = toIndex(byteStart);
    const end = trimmedEnd(sql, start, toIndex(byteEnd));
    statements.push({ node: s.stmt, text: sql.slice(start, end), start, end });
  }
  return { ok: true, statements };
}

/** Each statement's own text; throws when the text does not parse. */
export function splitStatements(sql: string): string[] {
  const parsed = parseText(sql);
  if (!parsed.ok) throw new Error(`${parsed.message} at offset ${parsed.position}`);
  return parsed.statements.map((s) => s.text);
}

/**
 * The text of the statement inside `PREPARE name [(types)] AS statement`: everything after the first AS at
 * parenthesis depth 0. Uses the scanner, which is slow but PREPARE is rare.
 */
export function preparedQueryText(prepareText: string): string {
  assertReady();
  const buf = Buffer.from(prepareText, 'utf8');
  const tokens = scanSync(prepareText).tokens;
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
 * own grammar. Added for the classifier (function bodies); never throws.
 */
export function parsePlpgsql(definition: string): { ok: true; tree: AnyNode } | { ok: false; message: string } {
  assertReady();
  try {
    return { ok: true, tree: parsePlPgSQLSync(definition) as unknown as AnyNode };
  } catch (err) {
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Splits a PL/pgSQL assignment (`target := expression`, or `=`) at its operator outside parentheses and
 * brackets; null when there is none. Added for the classifier; never throws.
 */
export function assignmentParts(text: string): { target: string; value: string } | null {
  assertReady();
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

/** Index just past the last non-blank character of sql[start, end). */
function trimmedEnd(sql: string, start: number, end: number): number {
  while (end > start) {
    const c = sql.charCodeAt(end - 1);
    if (c === 32 || (c >= 9 && c <= 13)) end--;
    else break;
  }
  return end;
}

/** PostgreSQL reports error positions in characters (code points); JavaScript indexes UTF-16 units. */
function codePointsToIndex(sql: string, codePoints: number): number {
  let index = 0;
  for (let n = 0; n < codePoints && index < sql.length; n++) {
    const c = sql.charCodeAt(index);
    index += c >= 0xd800 && c <= 0xdbff && index + 1 < sql.length ? 2 : 1;
  }
  return index;
}
