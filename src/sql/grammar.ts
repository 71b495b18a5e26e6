/**
 * PostgreSQL's grammar, one per server major version (libpg-query is published per major: 15, 16, 17, 18).
 *
 * A newer grammar reads some names differently from an older server: PostgreSQL 16+ rewrites
 * `json_object(...)` to `pg_catalog.json_object` and makes `json_array(...)` a JSON constructor, 17+ makes
 * `json(...)` and `merge_action()` expressions of their own. A PostgreSQL 15 server resolves all four through
 * search_path, so a `public.json_array(int, int)` would run. So each session parses with the grammar of its
 * server's major version, and a server whose major stepgate has no grammar for is refused.
 *
 * Each version's WebAssembly module is loaded on first use (only the majors in use are loaded). A stack
 * overflow inside the WebAssembly parser leaves the module's state broken (its shadow stack pointer and memory
 * contexts are not unwound: the next parse fails with "table index is out of bounds" or worse), so after one
 * the module is dropped and a fresh instance is loaded; the text is reported as too deep for this thread.
 *
 * libpg-query reports statement locations as UTF-8 byte offsets: texts are sliced through a Buffer unless the
 * text is pure ASCII (then bytes and UTF-16 indices coincide).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type { AnyNode } from './walker.js';

export type GrammarVersion = 15 | 16 | 17 | 18;

/** The PostgreSQL majors stepgate has a grammar for, oldest first. */
export const GRAMMAR_VERSIONS: readonly GrammarVersion[] = [15, 16, 17, 18];

/** The grammar used without a server (`rules explain`, `rules test`, startup settings before login). */
export const DEFAULT_GRAMMAR_VERSION: GrammarVersion = 18;

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
  | {
      ok: false;
      message: string;
      /** UTF-16 offset of the error in the text */
      position: number;
      /**
       * The text nests too deeply for this thread's stack (or the parser was being reloaded after that): a
       * thread with a larger stack may read it. Not a statement about the text's validity.
       */
      stackExhausted?: true;
    };

/** PostgreSQL's grammar of one major version. */
export interface Grammar {
  readonly version: GrammarVersion;
  /** Parses a text that may hold several statements. Empty texts (only blanks, comments, semicolons) hold none. */
  parse(sql: string): ParseOutcome;
}

interface RawStmt {
  stmt: AnyNode;
  stmt_location?: number;
  stmt_len?: number;
}

/** What stepgate uses of a libpg-query package (every major has these; only 18 has scanSync). */
interface LibPgQuery {
  loadModule(): Promise<void>;
  parseSync(sql: string): unknown;
  scanSync?(sql: string): { tokens: { start: number; end: number; text: string; keywordName: string }[] };
  /** PL/pgSQL's own grammar (only the 18 package has it). */
  parsePlPgSQLSync?(definition: string): unknown;
}

const PACKAGES: Record<GrammarVersion, string> = {
  15: 'libpg-query-15',
  16: 'libpg-query-16',
  17: 'libpg-query-17',
  18: 'libpg-query',
};

const requireCjs = createRequire(import.meta.url);

/** WebAssembly.RuntimeError (a trap or abort in the parser); the compiler's lib has no WebAssembly types. */
const WasmRuntimeError = (globalThis as unknown as { WebAssembly: { RuntimeError: new () => Error } }).WebAssembly.RuntimeError;

/**
 * A fresh instance of a package's WebAssembly module. Loaded through its CommonJS entry so that a broken
 * instance can be dropped from the require cache and collected (ES modules are never unloaded).
 */
function freshModule(version: GrammarVersion): LibPgQuery {
  const entry = requireCjs.resolve(PACKAGES[version]);
  const dir = path.dirname(entry) + path.sep;
  for (const key of Object.keys(requireCjs.cache)) if (key.startsWith(dir)) delete requireCjs.cache[key];
  const module = requireCjs(entry) as LibPgQuery;
  // The requiring module lists it among its children, which would keep every replaced instance (and its
  // 128 MiB of WebAssembly memory) alive: only the grammar holds it.
  const loaded = requireCjs.cache[entry] as (NodeJS.Module & { parent?: NodeJS.Module | null }) | undefined;
  const siblings = loaded?.parent?.children;
  if (siblings && loaded) {
    const at = siblings.indexOf(loaded);
    if (at >= 0) siblings.splice(at, 1);
  }
  return module;
}

class LibPgQueryGrammar implements Grammar {
  private module: LibPgQuery | null = null;
  private loading: Promise<void> | null = null;
  /** Times the module was replaced after a stack overflow (for tests and logs). */
  reloads = 0;

  constructor(readonly version: GrammarVersion) {}

  load(): Promise<void> {
    if (this.loading) return this.loading;
    const module = freshModule(this.version);
    const loading = module.loadModule().then(
      () => {
        this.module = module;
      },
      (err: unknown) => {
        // A failed load may be retried by the next caller.
        if (this.loading === loading) this.loading = null;
        throw err;
      },
    );
    this.loading = loading;
    return loading;
  }

  get ready(): boolean {
    return this.module !== null;
  }

  /** The 18 package's scanner (the lexer is the same in every supported major for what stepgate scans). */
  scanner(): LibPgQuery['scanSync'] {
    return this.module?.scanSync?.bind(this.module);
  }

  /** The 18 package's PL/pgSQL parser (PL/pgSQL's grammar, for function bodies, changes little between majors). */
  plpgsqlParser(): LibPgQuery['parsePlPgSQLSync'] {
    return this.module?.parsePlPgSQLSync?.bind(this.module);
  }

  parse(sql: string): ParseOutcome {
    const module = this.module;
    if (module === null) {
      if (this.reloads === 0) throw new Error(`stepgate sql: the PostgreSQL ${this.version} grammar must be loaded (loadGrammar) before parsing`);
      // Replaced after a stack overflow and not back yet (or the reload failed: try again).
      if (this.loading === null) this.load().catch(() => {});
      return { ok: false, message: `the PostgreSQL ${this.version} parser is being reloaded`, position: 0, stackExhausted: true };
    }
    if (sql.length === 0 || ONLY_BLANKS.test(sql)) return { ok: true, statements: [] };
    let stmts: RawStmt[];
    try {
      stmts = ((module.parseSync(sql) as { stmts?: RawStmt[] }).stmts ?? []) as RawStmt[];
    } catch (err) {
      if (err instanceof RangeError || err instanceof WasmRuntimeError) {
        // The stack overflowed (RangeError), or the WebAssembly code trapped or aborted: either way this
        // instance's state is broken. Replace it; meanwhile parses fail as "too deep" too (the caller may
        // retry on a thread with a larger stack).
        this.module = null;
        this.loading = null;
        this.reloads++;
        this.load().catch(() => {});
        if (err instanceof RangeError) {
          return { ok: false, message: 'the statement nests too deeply for the parser on this thread', position: 0, stackExhausted: true };
        }
        return { ok: false, message: `the parser failed: ${(err as Error).message}`, position: 0 };
      }
      const details = (err as { sqlDetails?: { message?: string; cursorPosition?: number } }).sqlDetails;
      const message = details?.message ?? (err instanceof Error ? err.message : String(err));
      return { ok: false, message, position: codePointsToIndex(sql, details?.cursorPosition ?? 0) };
    }
    return { ok: true, statements: statementsOf(sql, stmts) };
  }
}

/**
 * Only PostgreSQL white space (scan.l: space, tab, newline, carriage return, form feed): no statements. The
 * libpg-query 15–17 wrappers refuse such texts as "empty" (they test String.trim(), which also strips
 * Unicode spaces the server does not skip), so they are answered here, as the 18 grammar answers them.
 */
const ONLY_BLANKS = /^[ \t\n\r\f]*$/;

/**
 * Each statement's text. Up to PostgreSQL 17 a statement's location is where the previous one ended (its
 * text begins with the blanks and comments in between); 18 skips them. Texts are the same in every grammar:
 * from the statement's first token to its last.
 */
function statementsOf(sql: string, stmts: RawStmt[]): ParsedStatement[] {
  const ascii = Buffer.byteLength(sql, 'utf8') === sql.length;
  const statements: ParsedStatement[] = [];
  if (ascii) {
    for (const s of stmts) {
      const location = s.stmt_location ?? 0;
      const end = trimmedEnd(sql, location, s.stmt_len ? location + s.stmt_len : sql.length);
      const start = firstToken(sql, location, end);
      statements.push({ node: s.stmt, text: sql.slice(start, end), start, end });
    }
    return statements;
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
    const location = toIndex(byteStart);
    const end = trimmedEnd(sql, location, toIndex(byteEnd));
    const start = firstToken(sql, location, end);
    statements.push({ node: s.stmt, text: sql.slice(start, end), start, end });
  }
  return statements;
}

/**
 * Index of the first token in sql[start, end): past white space, `--` comments and (nested) `/* *\/`
 * comments, as PostgreSQL's lexer skips them. Only blanks and comments can precede a statement's first token.
 */
function firstToken(sql: string, start: number, end: number): number {
  let i = start;
  while (i < end) {
    const c = sql.charCodeAt(i);
    if (c === 32 || (c >= 9 && c <= 13)) {
      i++;
    } else if (c === 45 /* - */ && sql.charCodeAt(i + 1) === 45) {
      while (i < end && sql.charCodeAt(i) !== 10 && sql.charCodeAt(i) !== 13) i++;
    } else if (c === 47 /* / */ && sql.charCodeAt(i + 1) === 42 /* * */) {
      let depth = 0;
      while (i < end) {
        if (sql.charCodeAt(i) === 47 && sql.charCodeAt(i + 1) === 42) {
          depth++;
          i += 2;
        } else if (sql.charCodeAt(i) === 42 && sql.charCodeAt(i + 1) === 47) {
          depth--;
          i += 2;
          if (depth === 0) break;
        } else {
          i++;
        }
      }
    } else {
      return i;
    }
  }
  return start;
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

const grammars = new Map<GrammarVersion, LibPgQueryGrammar>();

function grammarObject(version: GrammarVersion): LibPgQueryGrammar {
  let g = grammars.get(version);
  if (g === undefined) {
    if (!GRAMMAR_VERSIONS.includes(version)) throw new Error(`stepgate sql: no grammar for PostgreSQL ${String(version)}`);
    g = new LibPgQueryGrammar(version);
    grammars.set(version, g);
  }
  return g;
}

/** The grammar of a PostgreSQL major, loading its WebAssembly module on first use. */
export async function loadGrammar(version: GrammarVersion): Promise<Grammar> {
  const g = grammarObject(version);
  await g.load();
  return g;
}

/** The grammar when it is loaded (or being reloaded after a stack overflow), else undefined. */
export function loadedGrammar(version: GrammarVersion): Grammar | undefined {
  const g = grammars.get(version);
  return g !== undefined && (g.ready || g.reloads > 0) ? g : undefined;
}

/** The default grammar (PostgreSQL 18); load it first (loadGrammar(18), or initParser()). */
export function defaultGrammar(): Grammar {
  const g = loadedGrammar(DEFAULT_GRAMMAR_VERSION);
  if (g === undefined) throw new Error('stepgate sql: initParser() must be awaited before parsing');
  return g;
}

/** Which majors are loaded in this thread, and how often each was reloaded after a stack overflow. */
export function grammarStats(): { version: GrammarVersion; loaded: boolean; reloads: number }[] {
  return [...grammars.values()].map((g) => ({ version: g.version, loaded: g.ready, reloads: g.reloads }));
}

/** The scanner of the PostgreSQL 18 package, when that grammar is loaded in this thread. */
export function scanner18(): LibPgQuery['scanSync'] {
  return grammars.get(18)?.scanner();
}

/** The PL/pgSQL parser of the PostgreSQL 18 package, when that grammar is loaded in this thread. */
export function plpgsql18(): LibPgQuery['parsePlPgSQLSync'] {
  return grammars.get(18)?.plpgsqlParser();
}

export type ServerGrammar = { ok: true; version: GrammarVersion } | { ok: false; version: string; message: string };

/**
 * The grammar for a server, from what it reported at login: `server_version_num` when reported (PostgreSQL does
 * not report it by default; a pooler may), else `server_version` ("15.18 (Debian 15.18-1.pgdg120+1)",
 * "16.4", "18beta1", "19devel", "9.6.24"). Fails closed: a major without a grammar, or a version that cannot be
 * read, is not ok.
 */
export function serverGrammar(serverVersion: string | undefined, serverVersionNum?: string): ServerGrammar {
  let major: number | null = null;
  let shown: string;
  if (serverVersionNum !== undefined && /^[0-9]{5,6}$/.test(serverVersionNum.trim())) {
    const n = Number(serverVersionNum.trim());
    // 100000 and up: major * 10000 + minor; before 10: major * 10000 + minor * 100 + patch (9.6.24 = 90624).
    major = n >= 100000 ? Math.floor(n / 10000) : null;
    shown = n >= 100000 ? String(major) : `${Math.floor(n / 10000)}.${Math.floor(n / 100) % 100}`;
  } else {
    const v = (serverVersion ?? '').trim();
    const m = /^([0-9]+)(?:\.([0-9]+))?/.exec(v);
    shown = v === '' ? '(not reported)' : v;
    if (m !== null) {
      const first = Number(m[1]);
      major = first >= 10 ? first : null;
      if (first < 10) shown = m[2] === undefined ? m[1]! : `${m[1]}.${m[2]}`;
    }
  }
  if (major !== null && (GRAMMAR_VERSIONS as readonly number[]).includes(major)) return { ok: true, version: major as GrammarVersion };
  const supported = `${GRAMMAR_VERSIONS[0]} to ${GRAMMAR_VERSIONS[GRAMMAR_VERSIONS.length - 1]}`;
  return {
    ok: false,
    version: shown,
    message:
      major === null && !/^[0-9]/.test(shown)
        ? `stepgate cannot tell which PostgreSQL version the server runs (server_version ${JSON.stringify(serverVersion ?? '')}); it reads SQL only with the grammar of PostgreSQL ${supported}`
        : `the server runs PostgreSQL ${shown}, and stepgate reads SQL only with the grammar of PostgreSQL ${supported}`,
  };
}
