/**
 * Statement shapes: a text with its literal values (numbers and standard '...' strings) replaced by
 * placeholders. Two texts with the same key have the same tokens apart from the values of those literals,
 * hence the same parse tree apart from constant values.
 *
 * That holds only where this scanner reads the text exactly as PostgreSQL's lexer does, so it refuses (returns
 * null for) everything it does not read with certainty:
 *  - any character outside printable ASCII, tab, newline, carriage return and form feed (the placeholders are
 *    control characters, so they can never be confused with the text kept around them);
 *  - any backslash (its meaning depends on standard_conforming_strings);
 *  - dollar quoting, and a `$` that is not a parameter ($1);
 *  - prefixed strings and identifiers (E'', B'', X'', N'', U&'', U&""), and any identifier directly followed
 *    by a quote (typed literals like date'...' are read fine by the server, but are rare enough to refuse);
 *  - numbers directly followed by an identifier character or a dot (PostgreSQL 16+ reads 0x1F, 1_000, 1e as
 *    other things or errors), and exponents without digits;
 *  - nested or unterminated comments, unterminated strings and quoted identifiers;
 *  - the word FLOAT: FLOAT(p) picks real or double precision by the value of p;
 *  - any statement that does not start with SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES, TABLE or a
 *    parenthesis: in utility statements literals are names, options and file names (parse tree content, not
 *    constants), and their classification is never shape-safe anyway.
 * Numbers inside [...] are kept as they are (array bounds in types are not constants in the parse tree).
 * Integers that fit int32 and other numbers get different placeholders, because some grammar rules accept
 * only the former.
 *
 * For speed, lookups do not build the key: scanShape() returns a hash of it, and sameShape() compares a stored
 * key with a text. The key string itself is built only to store a new shape.
 */

/** Placeholder character codes (control characters: never kept from a text, which may not contain them). */
const INT_PLACEHOLDER = 1;
const NUMBER_PLACEHOLDER = 2;
const STRING_PLACEHOLDER = 3;
/** Every placeholder is one character: key offsets and text offsets differ by (literal length - 1). */
export const PLACEHOLDER_LENGTH = 1;
/** Entries per literal in a `literals` array: start, end (in the text), placeholder character code. */
export const LITERAL_STRIDE = 3;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a over s[start, end), continuing from `h`. */
function hashRange(h: number, s: string, start: number, end: number): number {
  for (let i = start; i < end; i++) h = Math.imul(h ^ s.charCodeAt(i), FNV_PRIME);
  return h;
}

const enum Ch {
  Tab = 9,
  Newline = 10,
  FormFeed = 12,
  Return = 13,
  Quote = 39, // '
  DoubleQuote = 34, // "
  Dollar = 36,
  Ampersand = 38,
  Star = 42,
  Minus = 45,
  Dot = 46,
  Slash = 47,
  Zero = 48,
  Nine = 57,
  BracketOpen = 91,
  Backslash = 92,
  BracketClose = 93,
  Underscore = 95,
}

function isDigit(c: number): boolean {
  return c >= Ch.Zero && c <= Ch.Nine;
}

function isIdentStart(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === Ch.Underscore;
}

function isIdentChar(c: number): boolean {
  return isIdentStart(c) || isDigit(c) || c === Ch.Dollar;
}

/** Characters allowed anywhere: printable ASCII and the white space PostgreSQL's lexer knows (not \v). */
function isAllowed(c: number): boolean {
  return (c >= 32 && c < 127) || c === Ch.Tab || c === Ch.Newline || c === Ch.Return || c === Ch.FormFeed;
}

function isAllDigits(s: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (!isDigit(s.charCodeAt(i))) return false;
  return true;
}

/** Whether the decimal digits s[start, end) fit a 32-bit signed integer (PostgreSQL's ICONST). */
function fitsInt32(s: string, start: number, end: number): boolean {
  let i = start;
  while (i < end - 1 && s.charCodeAt(i) === Ch.Zero) i++;
  const len = end - i;
  if (len < 10) return true;
  if (len > 10) return false;
  return s.slice(i, end) <= '2147483647';
}

/** Character classes for the scanner's dispatch (ASCII only; everything else is refused). */
const enum K {
  Refuse = 0,
  Space,
  IdentStart,
  Digit,
  Quote,
  DoubleQuote,
  Minus,
  Slash,
  Dollar,
  Dot,
  BracketOpen,
  BracketClose,
  ParenOpen,
  ParenClose,
  Semicolon,
  Other,
}

const CHAR_KIND = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  let kind = K.Refuse;
  if (c === Ch.Tab || c === Ch.Newline || c === Ch.Return || c === Ch.FormFeed || c === 32) kind = K.Space;
  else if (isIdentStart(c)) kind = K.IdentStart;
  else if (isDigit(c)) kind = K.Digit;
  else if (c === Ch.Quote) kind = K.Quote;
  else if (c === Ch.DoubleQuote) kind = K.DoubleQuote;
  else if (c === Ch.Minus) kind = K.Minus;
  else if (c === Ch.Slash) kind = K.Slash;
  else if (c === Ch.Dollar) kind = K.Dollar;
  else if (c === Ch.Dot) kind = K.Dot;
  else if (c === Ch.BracketOpen) kind = K.BracketOpen;
  else if (c === Ch.BracketClose) kind = K.BracketClose;
  else if (c === 40) kind = K.ParenOpen;
  else if (c === 41) kind = K.ParenClose;
  else if (c === 59) kind = K.Semicolon;
  else if (c > 32 && c < 127 && c !== Ch.Backslash) kind = K.Other;
  CHAR_KIND[c] = kind;
}

/** Words a query (as opposed to a utility statement) starts with. */
const QUERY_KEYWORDS = new Set(['select', 'insert', 'update', 'delete', 'merge', 'with', 'values', 'table']);

function isQueryKeyword(sql: string, start: number, end: number): boolean {
  const length = end - start;
  return length >= 4 && length <= 6 && QUERY_KEYWORDS.has(sql.slice(start, end).toLowerCase());
}

function kindOf(c: number): number {
  return c < 128 ? CHAR_KIND[c]! : K.Refuse;
}

/**
 * Scans `sql` for its shape. Returns a 32-bit hash of the shape key (≥ 0), or -1 when the text cannot be read
 * with certainty. `literals` receives, per replaced literal, its start and end offsets in `sql` and its
 * placeholder (LITERAL_STRIDE entries each, in order); the caller empties it first.
 */
export function scanShape(sql: string, literals: number[]): number {
  const n = sql.length;
  let hash = FNV_OFFSET;
  let copied = 0; // sql[copied, i) is still to be hashed
  let brackets = 0;
  let parens = 0;
  let atStatementStart = true;
  let i = 0;
  while (i < n) {
    const c = sql.charCodeAt(i);
    const kind = kindOf(c);
    if (atStatementStart && kind !== K.Space && kind !== K.IdentStart && kind !== K.ParenOpen && kind !== K.Semicolon) {
      // Comments may precede a statement; anything else there is not a query.
      if (!((kind === K.Minus && sql.charCodeAt(i + 1) === Ch.Minus) || (kind === K.Slash && sql.charCodeAt(i + 1) === Ch.Star))) return -1;
    }
    switch (kind) {
      case K.Space:
      case K.Other:
        i++;
        continue;
      case K.ParenOpen:
        parens++;
        i++;
        continue;
      case K.ParenClose:
        parens--;
        i++;
        continue;
      case K.Semicolon:
        if (parens <= 0) atStatementStart = true;
        i++;
        continue;
      case K.IdentStart: {
        let j = i + 1;
        while (j < n && isIdentChar(sql.charCodeAt(j))) j++;
        if (atStatementStart) {
          if (!isQueryKeyword(sql, i, j)) return -1;
          atStatementStart = false;
        }
        const next = sql.charCodeAt(j);
        if (next === Ch.Quote) return -1; // E'', B'', X'', N'', date'...'
        if (next === Ch.Ampersand && j === i + 1 && (c === 85 || c === 117)) return -1; // U&
        if (j - i === 5 && sql.slice(i, j).toLowerCase() === 'float') return -1;
        i = j;
        continue;
      }
      case K.Quote: {
        if (i > 0) {
          const p = sql.charCodeAt(i - 1);
          if (isIdentChar(p) || p === Ch.Ampersand) return -1;
        }
        const end = scanQuoted(sql, i, Ch.Quote);
        if (end < 0) return -1;
        hash = Math.imul(hashRange(hash, sql, copied, i) ^ STRING_PLACEHOLDER, FNV_PRIME);
        literals.push(i, end, STRING_PLACEHOLDER);
        copied = i = end;
        continue;
      }
      case K.Dot:
      case K.Digit: {
        if (c === Ch.Dot && !isDigit(sql.charCodeAt(i + 1))) {
          i++;
          continue;
        }
        const end = scanNumber(sql, i);
        if (end < 0) return -1;
        if (brackets === 0) {
          const placeholder = isAllDigits(sql, i, end) && fitsInt32(sql, i, end) ? INT_PLACEHOLDER : NUMBER_PLACEHOLDER;
          hash = Math.imul(hashRange(hash, sql, copied, i) ^ placeholder, FNV_PRIME);
          literals.push(i, end, placeholder);
          copied = end;
        }
        i = end;
        continue;
      }
      case K.DoubleQuote: {
        if (i > 0 && sql.charCodeAt(i - 1) === Ch.Ampersand) return -1; // U&""
        const end = scanQuoted(sql, i, Ch.DoubleQuote);
        if (end < 0) return -1;
        i = end;
        continue;
      }
      case K.Minus:
        if (sql.charCodeAt(i + 1) !== Ch.Minus) {
          i++;
          continue;
        }
        // Line comment: to the end of the line (newline or carriage return).
        i += 2;
        while (i < n) {
          const d = sql.charCodeAt(i);
          if (d === Ch.Newline || d === Ch.Return) break;
          if (!isAllowed(d) || d === Ch.Backslash) return -1;
          i++;
        }
        continue;
      case K.Slash: {
        if (sql.charCodeAt(i + 1) !== Ch.Star) {
          i++;
          continue;
        }
        const end = scanBlockComment(sql, i);
        if (end < 0) return -1;
        i = end;
        continue;
      }
      case K.Dollar: {
        // Only $n parameters: anything else is dollar quoting or an error.
        let j = i + 1;
        if (!isDigit(sql.charCodeAt(j))) return -1;
        while (isDigit(sql.charCodeAt(j))) j++;
        const after = sql.charCodeAt(j);
        if (isIdentChar(after) || after === Ch.Dot) return -1;
        i = j;
        continue;
      }
      case K.BracketOpen:
        brackets++;
        i++;
        continue;
      case K.BracketClose:
        if (brackets > 0) brackets--;
        i++;
        continue;
      default:
        return -1; // control characters, backslash, non-ASCII
    }
  }
  return hashRange(hash, sql, copied, n) >>> 0;
}

/** The shape key of `sql`, or null when the text cannot be read with certainty. `literals` as for scanShape. */
export function shapeKey(sql: string, literals: number[]): string | null {
  return scanShape(sql, literals) < 0 ? null : buildShapeKey(sql, literals);
}

/** The key of a text scanShape() accepted, from its literals. */
export function buildShapeKey(sql: string, literals: ArrayLike<number>): string {
  let key = '';
  let copied = 0;
  for (let m = 0; m < literals.length; m += LITERAL_STRIDE) {
    key += sql.slice(copied, literals[m]) + String.fromCharCode(literals[m + 2]!);
    copied = literals[m + 1]!;
  }
  return key + sql.slice(copied);
}

/** Whether `key` is the shape key of `sql` (scanned by scanShape into `literals`), without building it. */
export function sameShape(sql: string, literals: ArrayLike<number>, key: string): boolean {
  let k = 0;
  let copied = 0;
  for (let m = 0; m <= literals.length; m += LITERAL_STRIDE) {
    const end = m < literals.length ? literals[m]! : sql.length;
    const length = end - copied;
    if (k + length > key.length) return false;
    for (let i = 0; i < length; i++) if (sql.charCodeAt(copied + i) !== key.charCodeAt(k + i)) return false;
    k += length;
    if (m === literals.length) break;
    if (key.charCodeAt(k) !== literals[m + 2]) return false;
    k++;
    copied = literals[m + 1]!;
  }
  return k === key.length;
}

/** End (exclusive) of a '...' or "..." token starting at `start` (doubled quotes escape), or -1. */
function scanQuoted(sql: string, start: number, quote: number): number {
  const n = sql.length;
  let i = start + 1;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === quote) {
      if (sql.charCodeAt(i + 1) === quote) {
        i += 2;
        continue;
      }
      return i + 1;
    }
    if (!isAllowed(c) || c === Ch.Backslash) return -1;
    i++;
  }
  return -1;
}

/** End of a /* comment *\/ starting at `start`; -1 when nested or unterminated. */
function scanBlockComment(sql: string, start: number): number {
  const n = sql.length;
  let i = start + 2;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === Ch.Star && sql.charCodeAt(i + 1) === Ch.Slash) return i + 2;
    if (c === Ch.Slash && sql.charCodeAt(i + 1) === Ch.Star) return -1;
    if (!isAllowed(c) || c === Ch.Backslash) return -1;
    i++;
  }
  return -1;
}

/**
 * End of a number starting at `start` (digits, optional fraction, optional exponent with digits), or -1 when
 * what follows would make PostgreSQL read it differently (identifier characters, another dot).
 */
function scanNumber(sql: string, start: number): number {
  let i = start;
  while (isDigit(sql.charCodeAt(i))) i++;
  if (sql.charCodeAt(i) === Ch.Dot) {
    if (sql.charCodeAt(i + 1) === Ch.Dot) return -1; // 1..2
    i++;
    while (isDigit(sql.charCodeAt(i))) i++;
  }
  const e = sql.charCodeAt(i);
  if (e === 69 || e === 101) {
    let j = i + 1;
    const sign = sql.charCodeAt(j);
    if (sign === 43 || sign === Ch.Minus) j++;
    if (!isDigit(sql.charCodeAt(j))) return -1;
    while (isDigit(sql.charCodeAt(j))) j++;
    i = j;
  }
  const after = sql.charCodeAt(i);
  if (isIdentChar(after) || after === Ch.Dot) return -1;
  return i;
}

/**
 * Maps offsets in a key to offsets in the text it came from. `literals` as filled by shapeKey for that text;
 * `keyOffsets` must be ascending and never inside a literal.
 */
export function keyOffsetsToText(keyOffsets: ArrayLike<number>, literals: ArrayLike<number>, out: number[]): void {
  let shift = 0; // text offset - key offset so far
  let m = 0; // index of the next literal in `literals`
  for (let k = 0; k < keyOffsets.length; k++) {
    const offset = keyOffsets[k]!;
    // literal m sits at key offset literals[m] - shift
    while (m < literals.length && literals[m]! - shift < offset) {
      shift += literals[m + 1]! - literals[m]! - PLACEHOLDER_LENGTH;
      m += LITERAL_STRIDE;
    }
    out.push(offset + shift);
  }
}

/** Maps ascending text offsets (never inside a literal) to offsets in the text's key. */
export function textOffsetsToKey(textOffsets: ArrayLike<number>, literals: ArrayLike<number>, out: number[]): void {
  let shift = 0;
  let m = 0;
  for (let k = 0; k < textOffsets.length; k++) {
    const offset = textOffsets[k]!;
    while (m < literals.length && literals[m]! < offset) {
      shift += literals[m + 1]! - literals[m]! - PLACEHOLDER_LENGTH;
      m += LITERAL_STRIDE;
    }
    out.push(offset - shift);
  }
}
