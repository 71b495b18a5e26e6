/**
 * Rule-file errors: where (file:line:column), what is wrong, and how to fix it.
 * Every check in `rules/` reports through this shape so `rules check`, hot reload and `rules test`
 * print the same thing.
 */

export interface SourcePosition {
  /** Path as the person gave it (rules directory joined with the file name), so editors can jump to it. */
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  column: number;
}

export interface RuleError extends SourcePosition {
  /** What is wrong, in one sentence. */
  message: string;
  /** What to do about it; may be empty when the message says it all. */
  fix: string;
}

/** `file:line:column: message` followed by an indented `fix:` line: for terminals (`rules check`). */
export function formatRuleError(error: RuleError): string {
  const head = `${error.file}:${error.line}:${error.column}: ${error.message}`;
  return error.fix ? `${head}\n    fix: ${error.fix}` : head;
}

/** One line per error (for log lines from hot reload). */
export function formatRuleErrorOneLine(error: RuleError): string {
  const head = `${error.file}:${error.line}:${error.column}: ${error.message}`;
  return error.fix ? `${head} (fix: ${error.fix})` : head;
}

/** Errors in reading order: by file, then line, then column. */
export function sortRuleErrors(errors: RuleError[]): RuleError[] {
  return [...errors].sort(
    (a, b) => compareText(a.file, b.file) || a.line - b.line || a.column - b.column,
  );
}

/** Code-point order: file order must not depend on the machine's locale. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The closest candidate to `word` (edit distance), if it is close enough to be a plausible typo. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  const lower = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(lower, candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  // Allow roughly one typo per three characters, at least two: `tabels` -> `tables`, `clas` -> `class`.
  const limit = Math.max(2, Math.floor(lower.length / 3));
  return bestDistance <= limit ? best : undefined;
}

/** `did you mean \`x\`?` or '' when nothing is close. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const match = nearest(word, candidates);
  return match === undefined ? '' : `did you mean \`${match}\`?`;
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions: `tabels` is 1 from `tables`). */
function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[][] = Array.from({ length: rows }, (_, i) => {
    const row = new Array<number>(cols).fill(0);
    row[0] = i;
    return row;
  });
  for (let j = 0; j < cols; j++) d[0][j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let value = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        value = Math.min(value, d[i - 2][j - 2] + 1);
      }
      d[i][j] = value;
    }
  }
  return d[a.length][b.length];
}

/** `file:line:column`. */
export function formatPosition(position: SourcePosition): string {
  return `${position.file}:${position.line}:${position.column}`;
}
