/**
 * Globs for rule match keys: `*` (any run of characters) and `?` (one character), nothing else.
 * Everything is compiled to anchored regular expressions once, when rules load; matching then
 * allocates nothing.
 */

export interface GlobProblem {
  message: string;
  fix: string;
}

/**
 * Why `pattern` is not a glob stepgate accepts, or null when it is. Characters other globbers treat
 * specially are refused rather than taken literally, so nobody writes `[abc]` or `{a,b}` and trusts a
 * rule that silently never matches.
 */
export function globProblem(pattern: string): GlobProblem | null {
  if (pattern.trim() === '') {
    return { message: 'empty pattern', fix: 'write a name, or `*` for any' };
  }
  if (pattern !== pattern.trim()) {
    return { message: `pattern \`${pattern}\` has leading or trailing spaces`, fix: 'remove the spaces' };
  }
  const special = /[[\]{}\\]/.exec(pattern);
  if (special) {
    return {
      message: `\`${special[0]}\` in \`${pattern}\` is not supported in patterns (only \`*\` and \`?\` are)`,
      fix: 'list each alternative as its own entry, e.g. `[orders, order_items]`',
    };
  }
  if (pattern.includes('"')) {
    return {
      message: `quotes in \`${pattern}\`: patterns match names as PostgreSQL stores them, without quotes`,
      fix: `write ${pattern.replaceAll('"', '')}`,
    };
  }
  return null;
}

/** The regular-expression source for one glob segment. `star` is what `*` may match. */
export function globSource(pattern: string, star = '[^]*', one = '[^]'): string {
  let source = '';
  for (const char of pattern) {
    if (char === '*') source += star;
    else if (char === '?') source += one;
    else source += char.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
  }
  return source;
}

export type TextMatcher = (text: string) => boolean;

const NEVER: TextMatcher = () => false;

/** One matcher for a list of globs: true when any glob matches the whole text. */
export function compileGlobList(patterns: readonly string[], caseInsensitive: boolean): TextMatcher {
  if (patterns.length === 0) return NEVER;
  const regex = new RegExp(`^(?:${patterns.map((p) => globSource(p)).join('|')})$`, caseInsensitive ? 'i' : '');
  return (text) => regex.test(text);
}

/** Whether `pattern` contains wildcards. */
export function isWildcard(pattern: string): boolean {
  return pattern.includes('*') || pattern.includes('?');
}
