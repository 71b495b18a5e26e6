/**
 * The shared SQL corpus (PostgreSQL's regression suite), split into statements for tests and benchmarks.
 * Read at run time from ../shared/corpus next to the repository (or STEPGATE_CORPUS_DIR, or the
 * workplace's /work/shared for a clone made elsewhere); never copied into it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModule, parseSync, scanSync } from 'libpg-query';

// This package's own (ES module) instance: stepgate's grammars are separate instances (src/sql/grammar.ts).
await loadModule();

/** The repository root (the nearest directory with package.json above this file). */
function repositoryRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('repository root not found');
    dir = parent;
  }
  return dir;
}

const CANDIDATES = [
  process.env.STEPGATE_CORPUS_DIR,
  path.resolve(repositoryRoot(), '../shared/corpus/pg-regress'),
  '/work/shared/corpus/pg-regress',
].filter((d): d is string => Boolean(d));

export const CORPUS_DIR = CANDIDATES.find((d) => fs.existsSync(d)) ?? CANDIDATES[0]!;

export function corpusFiles(): string[] {
  if (!fs.existsSync(CORPUS_DIR)) {
    throw new Error(`the SQL corpus is not there: looked in ${CANDIDATES.join(', ')}; set STEPGATE_CORPUS_DIR to its pg-regress directory`);
  }
  return fs
    .readdirSync(CORPUS_DIR)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((f) => path.join(CORPUS_DIR, f));
}

/** A file's SQL without psql meta-command lines (those starting with a backslash). */
function withoutMetaCommands(text: string): string {
  return text
    .split('\n')
    .map((line) => (line.startsWith('\\') ? '' : line))
    .join('\n');
}

/**
 * Splits SQL into statement texts with libpg-query's scanner: at semicolons outside parentheses and outside
 * BEGIN ATOMIC ... END bodies. Returns null when the scanner rejects the text.
 */
export function scanSplit(sql: string): string[] | null {
  let tokens: { start: number; end: number; text: string }[];
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return null;
  }
  const buf = Buffer.from(sql, 'utf8');
  const out: string[] = [];
  let depth = 0;
  let atomic = -1; // nesting of CASE ... END inside BEGIN ATOMIC, or -1 outside
  let start = 0;
  let previous = '';
  for (const t of tokens) {
    const word = t.text.toLowerCase();
    if (atomic >= 0) {
      if (word === 'case') atomic++;
      else if (word === 'end') atomic = atomic === 0 ? -1 : atomic - 1;
    } else if (word === 'atomic' && previous === 'begin') {
      atomic = 0;
    } else if (word === '(') depth++;
    else if (word === ')') depth--;
    else if (word === ';' && depth <= 0) {
      const text = buf.toString('utf8', start, t.start).trim();
      if (text) out.push(text);
      start = t.end;
      depth = 0;
    }
    previous = word;
  }
  const rest = buf.toString('utf8', start).trim();
  if (rest) out.push(rest);
  return out;
}

/** Every statement text of the corpus that libpg-query parses (one statement each), per file. */
export function corpusStatements(): { file: string; statements: string[] }[] {
  const result: { file: string; statements: string[] }[] = [];
  for (const file of corpusFiles()) {
    const sql = withoutMetaCommands(fs.readFileSync(file, 'utf8'));
    let pieces = scanSplit(sql);
    if (pieces === null) {
      // The scanner rejects the whole file (an invalid literal somewhere): split roughly, scan piece by piece.
      pieces = [];
      for (const rough of sql.split(/;\s*\n/)) pieces.push(...(scanSplit(rough) ?? []));
    }
    const statements: string[] = [];
    for (const piece of pieces) {
      try {
        const parsed = parseSync(piece) as unknown as { stmts?: unknown[] };
        if ((parsed.stmts?.length ?? 0) > 0) statements.push(piece);
      } catch {
        // deliberately invalid SQL in the suite, or psql syntax: not a statement PostgreSQL accepts
      }
    }
    result.push({ file: path.basename(file), statements });
  }
  return result;
}
