/**
 * What the audit writer does about secrets, on top of `redactSql` (redact.ts, shared with the console):
 *
 *  - a cheap pre-check so the common statement (no secret-like word anywhere) skips the lexer;
 *  - a backstop for role statements whose password is not a literal (`ALTER ROLE x PASSWORD p4ss`: a
 *    syntax error the server still echoes back);
 *  - bind parameters: all of them are masked when the statement mentions anything secret-like, and any
 *    one that looks like a connection string with a password or a password verifier;
 *  - server error messages of a statement that had secrets removed: the removed fragments are masked
 *    there too ("syntax error at or near "p4ss"").
 */
import { redactSql } from '../sql/redact.js';

/**
 * Every statement redactSql can change contains one of these (its secret names, the functions whose
 * arguments it masks, `password=` in connection strings and `scheme://user:pw@` URLs). Keep in step with
 * redact.ts; a test holds the two together. Erring wide only costs time.
 */
const MAY_HOLD_SECRETS = /pass|pwd|secret|token|credential|key|crypt|pgp_|hmac|dblink|auth|:\/\//i;

export function mayHoldSecrets(text: string): boolean {
  return MAY_HOLD_SECRETS.test(text);
}

const MASK = '***';

const ROLE_STATEMENT = /^\s*(?:create|alter)\s+(?:role|user|group)\b/i;
/** PASSWORD followed by something that is not a literal, NULL, or already masked. */
const BARE_PASSWORD = /\b(password\s+)(?!null\b|'|E'|e'|U&'|u&'|\$)([^\s;]+)/gi;

export interface Redacted {
  text: string;
  /** Pieces of the original text that were masked (to mask them in error messages too); empty when none. */
  fragments: string[];
}

/** SQL text with secrets masked, and what was masked. */
export function redactStatement(sql: string): Redacted {
  if (!MAY_HOLD_SECRETS.test(sql)) return { text: sql, fragments: [] };
  let text = redactSql(sql);
  if (ROLE_STATEMENT.test(text)) text = text.replace(BARE_PASSWORD, (_m, kw: string) => `${kw}${MASK}`);
  // A statement that holds several role statements: check each.
  else if (/;\s*(?:create|alter)\s+(?:role|user|group)\b/i.test(text)) {
    text = text.replace(/((?:^|;)\s*(?:create|alter)\s+(?:role|user|group)\b[^;]*)/gi, (stmt) => stmt.replace(BARE_PASSWORD, (_m, kw: string) => `${kw}${MASK}`));
  }
  return { text, fragments: text === sql ? [] : removedFragments(sql, text) };
}

const WORD = /[^\s'"(),;=]+/g;

/** Words of `before` that are gone from `after`, and their alphanumeric pieces (4 characters or more). */
function removedFragments(before: string, after: string): string[] {
  const kept = new Set(after.match(WORD) ?? []);
  const out = new Set<string>();
  for (const w of before.match(WORD) ?? []) {
    if (kept.has(w)) continue;
    if (w.length >= 3) out.add(w);
    for (const piece of w.split(/[^A-Za-z0-9]+/)) if (piece.length >= 4 && !kept.has(piece)) out.add(piece);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

/** `message` with every fragment masked. */
export function scrubMessage(message: string, fragments: string[]): string {
  let out = message;
  for (const f of fragments) if (out.includes(f)) out = out.split(f).join(MASK);
  return out;
}

const VERIFIER = /^(?:SCRAM-SHA-256\$|md5[0-9a-f]{32}$)/;
const LONGEST_PARAM = 10_000;

/** Bind parameter values as they may be recorded. */
export function redactParams(sql: string, params: (string | null)[]): (string | null)[] {
  const all = MAY_HOLD_SECRETS.test(sql);
  return params.map((p) => {
    if (p === null) return null;
    if (all || VERIFIER.test(p)) return MASK;
    if (MAY_HOLD_SECRETS.test(p) && redactSql(`'${p.replace(/'/g, "''")}'`).length !== p.replace(/'/g, "''").length + 2) return MASK;
    return p.length > LONGEST_PARAM ? `${p.slice(0, LONGEST_PARAM)}… [${p.length} characters]` : p;
  });
}

/** Any text that is not SQL but may quote it (server messages of statements without known fragments). */
export function redactFreeText(text: string): string {
  if (!MAY_HOLD_SECRETS.test(text)) return text;
  return text
    .replace(/(\b(?:password|passwd|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, `$1${MASK}`)
    .replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@'"]*:)([^\s@'"/]+)(@)/gi, `$1${MASK}$3`);
}
