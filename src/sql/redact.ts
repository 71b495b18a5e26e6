/**
 * Secrets out of SQL text before anyone sees it (the step-up console, the audit trail, logs).
 *
 * A small lexer (strings in every PostgreSQL spelling, dollar quotes, quoted identifiers, comments) and a
 * few rules over its tokens, each replacing whole string literals with '***':
 *
 *  - a password-like name followed by a literal, with or without `=` in between:
 *    `CREATE ROLE x PASSWORD '...'`, `ALTER USER x ENCRYPTED PASSWORD '...'`,
 *    `OPTIONS (password '...')`, `WHERE api_token = '...'`;
 *  - `SET [LOCAL|SESSION] name TO|= ...` (also inside `ALTER ROLE|DATABASE|SYSTEM ... SET`) of a
 *    password-like setting: every value up to the end of the statement;
 *  - `set_config('password-like', '...', ...)`: the value;
 *  - arguments of pgcrypto functions that take a key or a password (`crypt`, `pgp_sym_encrypt`, `hmac` ...);
 *  - inside any literal: `password=...` of a libpq connection string (dblink, CREATE SUBSCRIPTION ...)
 *    and the password of a `scheme://user:password@host` URL.
 *
 * It errs towards hiding too much: a redacted literal that was harmless costs nothing, a shown secret does.
 * The text is not parsed for meaning, so this works on statements that do not parse too.
 */

/** Names of settings, options and columns that hold secrets. */
const SECRET_NAME = /pass|pwd|secret|token|credential|key/i;

const MASK = "'***'";

/** Functions whose arguments (0-based) hold a key or password. */
const SECRET_ARGUMENTS: Record<string, number[]> = {
  crypt: [0],
  pgp_sym_encrypt: [1],
  pgp_sym_decrypt: [1],
  pgp_sym_encrypt_bytea: [1],
  pgp_sym_decrypt_bytea: [1],
  pgp_pub_decrypt: [1, 2],
  pgp_pub_decrypt_bytea: [1, 2],
  encrypt: [1],
  decrypt: [1],
  encrypt_iv: [1, 2],
  decrypt_iv: [1, 2],
  hmac: [1],
  dblink_connect: [0, 1],
  dblink_connect_u: [0, 1],
};

type Kind = 'space' | 'comment' | 'string' | 'ident' | 'qident' | 'word' | 'number' | 'punct' | 'param';

interface Token {
  kind: Kind;
  start: number;
  end: number;
  /** Lower-case for words, unquoted for quoted identifiers; the character for punctuation. */
  text: string;
}

export interface RedactOptions {
  /**
   * The session's standard_conforming_strings (default on). Off: backslashes escape in '...' literals too,
   * so `'it\'s'` is one literal.
   */
  standardConformingStrings?: boolean;
}

/** The text with secrets replaced by '***'. Returns the same string when there is nothing to hide. */
export function redactSql(sql: string, options: RedactOptions = {}): string {
  if (typeof sql !== 'string' || sql.length === 0) return sql;
  const tokens = lex(sql, options.standardConformingStrings ?? true);
  const redact = new Set<number>(); // indexes of string tokens to mask
  const partial = new Map<number, string>(); // string tokens with secrets inside (connection strings)

  // Indexes of significant tokens (no spaces or comments).
  const sig: number[] = [];
  for (let i = 0; i < tokens.length; i++) if (tokens[i]!.kind !== 'space' && tokens[i]!.kind !== 'comment') sig.push(i);
  const at = (k: number): Token | undefined => (k < sig.length ? tokens[sig[k]!] : undefined);
  const isName = (t: Token | undefined): boolean => t !== undefined && (t.kind === 'word' || t.kind === 'qident');
  const isValue = (t: Token | undefined): boolean => t !== undefined && (t.kind === 'string' || t.kind === 'number' || t.kind === 'word' || t.kind === 'qident' || t.kind === 'param');

  // One pass, linear in the text: a stack of open parentheses tracks which function call and argument each
  // token is in; `redacting` counts the open arguments whose literals are secret.
  interface Frame {
    fn: string | null;
    arg: number;
    /** set_config: its first argument names a secret setting. */
    secretName: boolean;
    redacts: boolean;
  }
  const stack: Frame[] = [];
  let redacting = 0;
  const secretArg = (f: Frame): boolean =>
    f.fn !== null && ((SECRET_ARGUMENTS[f.fn]?.includes(f.arg) ?? false) || (f.fn === 'set_config' && f.arg === 1 && f.secretName));
  /** SET ... values are redacted up to this significant index already (no rescans). */
  let setDoneUpTo = -1;

  for (let k = 0; k < sig.length; k++) {
    const t = at(k)!;

    if (t.kind === 'punct') {
      if (t.text === '(' || t.text === '[') {
        const prev = k > 0 ? at(k - 1)! : undefined;
        const fn = t.text === '(' && prev?.kind === 'word' ? prev.text : null;
        const frame: Frame = { fn, arg: 0, secretName: false, redacts: false };
        frame.redacts = secretArg(frame);
        if (frame.redacts) redacting++;
        stack.push(frame);
      } else if (t.text === ')' || t.text === ']') {
        const frame = stack.pop();
        if (frame?.redacts) redacting--;
      } else if (t.text === ',' && stack.length > 0) {
        const frame = stack[stack.length - 1]!;
        if (frame.redacts) redacting--;
        frame.arg++;
        frame.redacts = secretArg(frame);
        if (frame.redacts) redacting++;
      } else if (t.text === ';') {
        stack.length = 0;
        redacting = 0;
      }
      continue;
    }

    if (t.kind === 'string') {
      if (redacting > 0) {
        redact.add(sig[k]!);
        continue;
      }
      // set_config('name', ...): remember whether the name is a secret's.
      const top = stack[stack.length - 1];
      if (top && top.fn === 'set_config' && top.arg === 0 && SECRET_NAME.test(literalValue(sql, t))) top.secretName = true;
    }

    // A password-like name followed by a literal: PASSWORD '...', password '...', api_key = '...'.
    if (isName(t) && SECRET_NAME.test(t.text)) {
      let j = k + 1;
      if (at(j)?.kind === 'punct' && at(j)!.text === '=') j++;
      if (at(j)?.kind === 'string') redact.add(sig[j]!);
    }

    // SET [LOCAL|SESSION] name[.name] TO|= values ... (until ; or the end).
    if (t.kind === 'word' && t.text === 'set') {
      let j = k + 1;
      if (at(j)?.kind === 'word' && (at(j)!.text === 'local' || at(j)!.text === 'session')) j++;
      let name = '';
      while (isName(at(j))) {
        name += at(j)!.text;
        j++;
        if (at(j)?.kind === 'punct' && at(j)!.text === '.') {
          name += '.';
          j++;
        } else break;
      }
      const op = at(j);
      if (name && op && ((op.kind === 'word' && op.text === 'to') || (op.kind === 'punct' && op.text === '=')) && SECRET_NAME.test(name)) {
        for (j = Math.max(j + 1, setDoneUpTo); j < sig.length && !(at(j)!.kind === 'punct' && at(j)!.text === ';'); j++) {
          if (at(j)!.kind === 'string') redact.add(sig[j]!);
          else if (isValue(at(j))) markValue(tokens, sig[j]!, redact);
        }
        setDoneUpTo = j;
      }
    }

    // Inside any literal: connection strings and URLs with passwords.
    if (t.kind === 'string' && !redact.has(sig[k]!)) {
      const raw = sql.slice(t.start, t.end);
      const cleaned = redactInsideLiteral(raw);
      if (cleaned !== raw) partial.set(sig[k]!, cleaned);
    }
  }

  if (redact.size === 0 && partial.size === 0) return sql;
  let out = '';
  let pos = 0;
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    const replacement = redact.has(i) ? MASK : partial.get(i);
    if (replacement === undefined) continue;
    out += sql.slice(pos, tok.start) + replacement;
    pos = tok.end;
  }
  return out + sql.slice(pos);
}

/** A bare value after SET secret = ... (a number or word): masked too, as a literal. */
function markValue(tokens: Token[], index: number, redact: Set<number>): void {
  const t = tokens[index]!;
  if (t.kind === 'number' || t.kind === 'word' || t.kind === 'qident') {
    if (t.kind === 'word' && (t.text === 'default' || t.text === 'local')) return;
    redact.add(index);
  }
}

/** The content of a string token, roughly unescaped (enough to compare a setting name). */
function literalValue(sql: string, t: Token): string {
  const raw = sql.slice(t.start, t.end);
  const q = raw.indexOf("'");
  if (q >= 0) return raw.slice(q + 1, -1).replace(/''/g, "'");
  const m = /^\$[^$]*\$/.exec(raw);
  return m ? raw.slice(m[0].length, raw.length - m[0].length) : raw;
}

/** password=... in connection strings and user:password@ in URLs, inside one literal's source text. */
function redactInsideLiteral(raw: string): string {
  // A plain '...' literal: work on its value (where '' is one quote, as conninfo quoting sees it), then
  // quote it again. Other forms (E'', $$) are worked on as written.
  if (raw.startsWith("'") && raw.endsWith("'") && raw.length >= 2) {
    const value = raw.slice(1, -1).replace(/''/g, "'");
    const cleaned = redactConnectionSecrets(value);
    return cleaned === value ? raw : `'${cleaned.replace(/'/g, "''")}'`;
  }
  return redactConnectionSecrets(raw);
}

function redactConnectionSecrets(text: string): string {
  // conninfo: key = 'quoted value with \' escapes' or an unquoted value up to whitespace.
  let out = text.replace(/(\b(?:password|passwd|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s'\\]|\\.)+)/gi, (_m, key: string) => `${key}***`);
  out = out.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@'"]*:)([^\s@'"/]+)(@)/gi, (_m, before: string, _pw: string, at: string) => `${before}***${at}`);
  return out;
}

// ───────────────────────────── lexer ─────────────────────────────

const isIdentStart = (c: number): boolean => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
const isIdentPart = (c: number): boolean => isIdentStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x24;
const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0c;

function lex(sql: string, standardConformingStrings: boolean): Token[] {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  const push = (kind: Kind, start: number, end: number, text = ''): void => {
    tokens.push({ kind, start, end, text });
  };
  /** Reads a '...' literal whose opening quote is at q; backslashes escape when `backslash`. */
  const quoted = (q: number, backslash: boolean): number => {
    let j = q + 1;
    while (j < n) {
      const c = sql.charCodeAt(j);
      if (backslash && c === 0x5c) {
        j += 2;
        continue;
      }
      if (c === 0x27) {
        if (sql.charCodeAt(j + 1) === 0x27) {
          j += 2;
          continue;
        }
        return j + 1;
      }
      j++;
    }
    return n; // unterminated: the rest of the text is the literal
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    const start = i;
    if (isSpace(c)) {
      while (i < n && isSpace(sql.charCodeAt(i))) i++;
      push('space', start, i);
    } else if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      const nl = sql.indexOf('\n', i);
      i = nl === -1 ? n : nl;
      push('comment', start, i);
    } else if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql.startsWith('/*', i)) {
          depth++;
          i += 2;
        } else if (sql.startsWith('*/', i)) {
          depth--;
          i += 2;
        } else i++;
      }
      push('comment', start, i);
    } else if (c === 0x27) {
      i = quoted(i, !standardConformingStrings);
      push('string', start, i);
    } else if ((c === 0x45 || c === 0x65) && sql.charCodeAt(i + 1) === 0x27) {
      i = quoted(i + 1, true); // E'...'
      push('string', start, i);
    } else if ((c === 0x55 || c === 0x75) && sql.charCodeAt(i + 1) === 0x26 && sql.charCodeAt(i + 2) === 0x27) {
      i = quoted(i + 2, false); // U&'...'
      push('string', start, i);
    } else if ((c === 0x55 || c === 0x75) && sql.charCodeAt(i + 1) === 0x26 && sql.charCodeAt(i + 2) === 0x22) {
      const end = sql.indexOf('"', i + 3);
      i = end === -1 ? n : end + 1;
      push('qident', start, i, sql.slice(start + 3, i - 1));
    } else if ((c === 0x42 || c === 0x62 || c === 0x58 || c === 0x78 || c === 0x4e || c === 0x6e) && sql.charCodeAt(i + 1) === 0x27) {
      i = quoted(i + 1, !standardConformingStrings); // B'...', X'...', N'...'
      push('string', start, i);
    } else if (c === 0x24) {
      // $1 parameter, or a dollar quote $tag$ ... $tag$
      if (isDigit(sql.charCodeAt(i + 1))) {
        i++;
        while (i < n && isDigit(sql.charCodeAt(i))) i++;
        push('param', start, i);
        continue;
      }
      let j = i + 1;
      while (j < n && isIdentPart(sql.charCodeAt(j)) && sql.charCodeAt(j) !== 0x24) j++;
      if (sql.charCodeAt(j) === 0x24) {
        const tag = sql.slice(i, j + 1);
        const close = sql.indexOf(tag, j + 1);
        i = close === -1 ? n : close + tag.length;
        push('string', start, i);
      } else {
        i++;
        push('punct', start, i, '$');
      }
    } else if (c === 0x22) {
      let j = i + 1;
      let text = '';
      for (;;) {
        const end = sql.indexOf('"', j);
        if (end === -1) {
          text += sql.slice(j);
          j = n;
          break;
        }
        text += sql.slice(j, end);
        if (sql.charCodeAt(end + 1) === 0x22) {
          text += '"';
          j = end + 2;
          continue;
        }
        j = end + 1;
        break;
      }
      i = j;
      push('qident', start, i, text);
    } else if (isIdentStart(c)) {
      while (i < n && isIdentPart(sql.charCodeAt(i))) i++;
      push('word', start, i, sql.slice(start, i).toLowerCase());
    } else if (isDigit(c) || (c === 0x2e && isDigit(sql.charCodeAt(i + 1)))) {
      while (i < n && /[0-9a-zA-Z_.]/.test(sql[i]!)) {
        // 1e-5 / 1e+5
        if ((sql[i] === 'e' || sql[i] === 'E') && (sql[i + 1] === '-' || sql[i + 1] === '+')) i++;
        i++;
      }
      push('number', start, i);
    } else {
      i++;
      push('punct', start, i, sql[start]!);
    }
  }
  return tokens;
}
