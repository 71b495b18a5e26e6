/**
 * Matchers for SQL object names: tables (`schema.table`), functions (`schema.function`) and columns
 * (`table.column`). All are case-insensitive, like unquoted SQL identifiers.
 *
 * A statement often names objects without a schema (or a column without its table). What such a name
 * refers to depends on the session's search_path, which the session can change at any time, so stepgate
 * cannot know it. A qualified pattern therefore matches an unqualified name whenever the name part
 * matches: `billing.invoices` matches `DELETE FROM invoices`. This is deliberate: the alternative would
 * let `SET search_path = billing; DELETE FROM invoices` slip past a rule written for `billing.invoices`.
 */
import type { TableRef } from '../sql/types.js';
import { globProblem, globSource, type GlobProblem } from './glob.js';

/** One dot-separated part of a name: `*` stays within the part. */
const PART_STAR = '[^.]*';
const PART_ONE = '[^.]';

export type QualifiedKind = 'table' | 'function' | 'column';

const SHAPES: Record<QualifiedKind, string> = {
  table: '`table` or `schema.table`',
  function: '`function` or `schema.function`',
  column: '`column` or `table.column`',
};

/** Why `pattern` is not a valid pattern for `kind`, or null. */
export function qualifiedNameProblem(pattern: string, kind: QualifiedKind): GlobProblem | null {
  const problem = globProblem(pattern);
  if (problem) return problem;
  const parts = pattern.split('.');
  if (parts.length > 2) {
    return {
      message: `\`${pattern}\` has ${parts.length - 1} dots; a ${kind} pattern is ${SHAPES[kind]}`,
      fix: `write ${SHAPES[kind]}, e.g. \`${parts.slice(-2).join('.')}\``,
    };
  }
  if (parts.some((part) => part === '')) {
    return {
      message: `\`${pattern}\` has an empty part; a ${kind} pattern is ${SHAPES[kind]}`,
      fix: `use \`*\` for any, e.g. \`${parts.map((part) => part || '*').join('.')}\``,
    };
  }
  return null;
}

function split(pattern: string): { qualifier: string | null; name: string } {
  const dot = pattern.indexOf('.');
  return dot < 0 ? { qualifier: null, name: pattern } : { qualifier: pattern.slice(0, dot), name: pattern.slice(dot + 1) };
}

function partRegex(pattern: string): RegExp {
  return new RegExp(`^${globSource(pattern, PART_STAR, PART_ONE)}$`, 'i');
}

export type TableMatcher = (table: TableRef) => boolean;

/**
 * Matches a table reference against `table` / `schema.table` patterns (validated beforehand).
 * `certain`: for rules that allow, a name matches only when it surely refers to a matching table, so an
 * unqualified name matches a qualified pattern only when the schema part matches any schema (`*`).
 */
export function compileTablePatterns(patterns: readonly string[], certain = false): TableMatcher {
  const anySchema: string[] = [];
  const qualified: Array<{ schema: RegExp; name: RegExp; anySchema: boolean }> = [];
  for (const pattern of patterns) {
    const { qualifier, name } = split(pattern);
    if (qualifier === null) anySchema.push(globSource(name, PART_STAR, PART_ONE));
    else qualified.push({ schema: partRegex(qualifier), name: partRegex(name), anySchema: /^\*+$/.test(qualifier) });
  }
  const anySchemaName = anySchema.length ? new RegExp(`^(?:${anySchema.join('|')})$`, 'i') : null;
  return (table) => {
    if (anySchemaName !== null && anySchemaName.test(table.name)) return true;
    for (const pattern of qualified) {
      // Unknown schema (search_path): the table part decides, unless the rule needs certainty.
      if (!pattern.name.test(table.name)) continue;
      if (table.schema === null ? !certain || pattern.anySchema : pattern.schema.test(table.schema)) return true;
    }
    return false;
  };
}

export type NameMatcher = (name: string) => boolean;

/**
 * Matches function names as the classifier reports them (`name`, or `schema.name` when written so)
 * against `function` / `schema.function` patterns.
 */
export function compileFunctionPatterns(patterns: readonly string[], certain = false): NameMatcher {
  const alternatives = patterns.map((pattern) => {
    const { qualifier, name } = split(pattern);
    const nameSource = globSource(name, PART_STAR, PART_ONE);
    // `f` matches `f` and `any.f`; `s.f` matches `s.f` and unqualified `f` (unknown schema) unless the
    // rule needs certainty (see compileTablePatterns).
    const qualifierSource = qualifier === null ? PART_STAR : globSource(qualifier, PART_STAR, PART_ONE);
    const unqualifiedMatches = !certain || qualifier === null || /^\*+$/.test(qualifier);
    return `(?:${qualifierSource}\\.)${unqualifiedMatches ? '?' : ''}${nameSource}`;
  });
  const regex = new RegExp(`^(?:${alternatives.join('|')})$`, 'i');
  return (name) => regex.test(name);
}

/**
 * Matches columns as the classifier reports them (`table.column`, or `column` when the table is
 * ambiguous; a schema-qualified `schema.table.column` is accepted too) against `column` /
 * `table.column` patterns. A star (`t.*` or `*`, from `SELECT *`) reads every column, so it matches any
 * pattern whose table part matches: a rule about `users.password` must see `SELECT * FROM users`.
 */
export function compileColumnPatterns(patterns: readonly string[], certain = false): NameMatcher {
  const alternatives: string[] = [];
  for (const pattern of patterns) {
    const { qualifier, name } = split(pattern);
    const nameSource = globSource(name, PART_STAR, PART_ONE);
    // For rules that allow, a star (every column) is covered only by a pattern for every column, and a
    // column of an unknown table only by a pattern for any table.
    const column = certain ? nameSource : `(?:${nameSource}|\\*)`;
    if (qualifier === null) {
      alternatives.push(`(?:[^]*\\.)?${column}`);
    } else {
      const tableSource = globSource(qualifier, PART_STAR, PART_ONE);
      const tableOptional = !certain || /^\*+$/.test(qualifier);
      // Optional schema, optional (unknown) table, then the column or a star.
      alternatives.push(`(?:(?:[^.]*\\.)?${tableSource}\\.)${tableOptional ? '?' : ''}${column}`);
    }
  }
  const regex = new RegExp(`^(?:${alternatives.join('|')})$`, 'i');
  return (column) => regex.test(column);
}
