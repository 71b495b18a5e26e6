/**
 * Compiles a rule's `match:` block into a list of checks that run without allocating: class and flag sets
 * become bit masks, globs become one regular expression per key, CIDRs a BlockList.
 */
import { STATEMENT_CLASSES, STATEMENT_FLAGS, type StatementClass, type StatementFlag, type StatementInfo } from '../sql/types.js';
import { compileCidrList } from './client.js';
import { compileGlobList } from './glob.js';
import { compileColumnPatterns, compileFunctionPatterns, compileTablePatterns } from './names.js';
import { MATCH_KEYS, type MatchKey, type MatchSpec } from './schema.js';
import { windowMatches } from './timewindow.js';
import type { RowsFact, Subject } from './types.js';
import { formatDuration } from '../util/units.js';

const CLASS_BIT = new Map<string, number>(STATEMENT_CLASSES.map((name, i) => [name, 1 << i]));
const FLAG_BIT = new Map<string, number>(STATEMENT_FLAGS.map((name, i) => [name, 1 << i]));

/** Classes of statements that may read or change rows (unknown may): the ones `rows` counts. */
const ROW_CLASSES = classMask(['read', 'write', 'export', 'import', 'unknown']);

/** Classes as a bit mask. Unknown names (a newer classifier) set no bit. */
export function classMask(classes: readonly StatementClass[]): number {
  let mask = 0;
  for (const name of classes) mask |= CLASS_BIT.get(name) ?? 0;
  return mask;
}

export function flagMask(flags: readonly StatementFlag[]): number {
  let mask = 0;
  for (const name of flags) mask |= FLAG_BIT.get(name) ?? 0;
  return mask;
}

/** What a check sees: the statement, its class and flag masks (computed once per statement), the subject. */
export interface MatchInput {
  statement: StatementInfo;
  classMask: number;
  flagMask: number;
  subject: Subject;
  /** The rows the message affects; undefined: not counted yet, null: they cannot be. */
  rows?: RowsFact | null;
  /** Set by a `rows` check reached while the rows were not counted yet: counting them may change the verdict. */
  rowsMatter?: boolean;
}

export interface KeyCheck {
  key: MatchKey;
  /** The key's patterns as written, for explanations: `write, ddl`. */
  patterns: string;
  test(input: MatchInput): boolean;
  /** What in the statement or subject made the key hold (only called to explain a decision). */
  witness(input: MatchInput): string;
}

export interface CompiledMatch {
  checks: KeyCheck[];
  /** `class write; flags no_where; database prod*`, or `every statement (empty match)`. */
  summary: string;
  /** When the match has `signals`: the signals that held, each with why (for the card and the audit trail). */
  signals?: (input: MatchInput) => string[];
}

/** Cheapest checks first: most rules are rejected by the first key that fails. */
const CHECK_ORDER: readonly MatchKey[] = [
  'tls',
  'class',
  'flags',
  'command',
  'database',
  'user',
  'application',
  'groups',
  'client',
  'tables',
  'functions',
  'columns',
  'time',
  'signals',
  // Last: reached only when every other key held, which is when counting the rows would matter.
  'rows',
];

/**
 * `covering`: the rule allows, so it must cover the whole statement. A rule that denies or asks matches
 * when ANY of the statement's classes, tables, columns or functions is in its lists (one risky part is
 * enough); a rule that allows matches only when ALL of them are, and only names it can be sure of
 * count. Otherwise `allow class: [read]` would let `WITH d AS (DELETE ...) SELECT ...` through, and
 * `allow tables: [scratch.*]` a statement that also writes to `billing.invoices`.
 */
export function compileMatch(spec: MatchSpec, covering = false): CompiledMatch {
  const checks: KeyCheck[] = [];
  for (const key of CHECK_ORDER) {
    const check = compileKey(key, spec, covering);
    if (check) checks.push(check);
  }
  const written = MATCH_KEYS.map((key) => checks.find((check) => check.key === key)).filter((c) => c !== undefined);
  const summary = written.length ? written.map((check) => `${check.key} ${check.patterns}`).join('; ') : 'every statement (empty match)';
  const signalCheck = checks.find((c) => c.key === 'signals');
  return signalCheck ? { checks, summary, signals: (input) => signalCheck.witness(input).split('; ').filter(Boolean) } : { checks, summary };
}

/** True when every check holds. */
export function matches(match: CompiledMatch, input: MatchInput): boolean {
  const checks = match.checks;
  for (let i = 0; i < checks.length; i++) if (!checks[i]!.test(input)) return false;
  return true;
}

function compileKey(key: MatchKey, spec: MatchSpec, covering: boolean): KeyCheck | null {
  switch (key) {
    case 'class': {
      if (!spec.class) return null;
      const mask = classMask(spec.class);
      return {
        key,
        patterns: spec.class.join(', '),
        test: covering ? (input) => input.classMask !== 0 && (input.classMask & ~mask) === 0 : (input) => (input.classMask & mask) !== 0,
        witness: (input) => input.statement.classes.filter((name) => spec.class!.includes(name)).join(', '),
      };
    }
    case 'flags': {
      if (!spec.flags) return null;
      const mask = flagMask(spec.flags);
      return {
        key,
        patterns: spec.flags.join(', '),
        test: (input) => (input.flagMask & mask) !== 0,
        witness: (input) => input.statement.flags.filter((name) => spec.flags!.includes(name)).join(', '),
      };
    }
    case 'command':
      // Every command the statement runs: `WITH d AS (DELETE ...) SELECT`, `EXPLAIN ANALYZE DELETE` and
      // `EXECUTE` of a prepared DELETE all run a DELETE.
      return spec.command ? listCheck(key, spec.command, compileGlobList(spec.command, true), (s) => s.statement.commands, covering) : null;
    case 'tables': {
      if (!spec.tables) return null;
      const test = compileTablePatterns(spec.tables, covering);
      return {
        key,
        patterns: spec.tables.join(', '),
        test: (input) => {
          const tables = input.statement.tables;
          if (covering) {
            for (let i = 0; i < tables.length; i++) if (!test(tables[i]!)) return false;
            return tables.length > 0;
          }
          for (let i = 0; i < tables.length; i++) if (test(tables[i]!)) return true;
          return false;
        },
        witness: (input) =>
          input.statement.tables
            .filter(test)
            .map((t) => (t.schema === null ? `${t.name} (schema unknown: search_path)` : `${t.schema}.${t.name}`))
            .join(', '),
      };
    }
    case 'functions':
      return spec.functions
        ? listCheck(key, spec.functions, compileFunctionPatterns(spec.functions, covering), (s) => s.statement.functions, covering)
        : null;
    case 'columns':
      return spec.columns
        ? listCheck(key, spec.columns, compileColumnPatterns(spec.columns, covering), (s) => s.statement.columns, covering)
        : null;
    case 'groups':
      // Group names come from the identity provider: matched as written (case-sensitive).
      return spec.groups ? listCheck(key, spec.groups, compileGlobList(spec.groups, false), (s) => s.subject.groups) : null;
    case 'user':
      // Role and database names are SQL names: case-insensitive.
      return spec.user ? valueCheck(key, spec.user, compileGlobList(spec.user, true), (s) => s.subject.user) : null;
    case 'database':
      return spec.database ? valueCheck(key, spec.database, compileGlobList(spec.database, true), (s) => s.subject.database) : null;
    case 'application':
      return spec.application
        ? valueCheck(key, spec.application, compileGlobList(spec.application, false), (s) => s.subject.application)
        : null;
    case 'client':
      return spec.client ? valueCheck(key, spec.client, compileCidrList(spec.client), (s) => s.subject.clientAddress) : null;
    case 'tls': {
      if (spec.tls === undefined) return null;
      const wanted = spec.tls;
      return {
        key,
        patterns: String(wanted),
        test: (input) => input.subject.tls === wanted,
        witness: (input) => String(input.subject.tls),
      };
    }
    case 'rows': {
      if (!spec.rows) return null;
      const { op, n, text } = spec.rows;
      const holds = (count: number): boolean => (op === '>' ? count > n : op === '>=' ? count >= n : op === '<' ? count < n : op === '<=' ? count <= n : count === n);
      return {
        key,
        patterns: text,
        test: (input) => {
          // Settings, transaction control, DDL ... touch no rows: a count of 0, known without measuring.
          if ((input.classMask & ROW_CLASSES) === 0) return holds(0);
          const rows = input.rows;
          if (rows === undefined) input.rowsMatter = true;
          // Not known (yet): a rule that denies or asks may apply; one that allows must be sure.
          if (rows === undefined || rows === null) return !covering;
          return holds(rows.count);
        },
        witness: (input) =>
          input.rows === undefined || input.rows === null ? 'not counted' : `${input.rows.count}${input.rows.estimate ? ' (the planner\'s estimate)' : ''}`,
      };
    }
    case 'signals':
      return spec.signals ? signalsCheck(spec.signals, spec.tables ? compileTablePatterns(spec.tables, false) : null) : null;
    case 'time': {
      if (!spec.time) return null;
      const windows = spec.time;
      return {
        key,
        patterns: windows.map((w) => w.text).join(' | '),
        test: (input) => {
          for (let i = 0; i < windows.length; i++) if (windowMatches(windows[i]!, input.subject.now)) return true;
          return false;
        },
        witness: (input) => input.subject.now.toISOString(),
      };
    }
  }
}

/** Every signal given must hold; without records (rules test, explain without --signal) none does. */
/**
 * `first_access` looks at the statement's tables that the rule's `tables` patterns name (every table of
 * the statement when the rule has no `tables`): "the first read of a billing table" is what such a rule means.
 */
function signalsCheck(spec: NonNullable<MatchSpec['signals']>, tables: ((t: StatementInfo['tables'][number]) => boolean) | null): KeyCheck {
  type One = { name: string; test(input: MatchInput): boolean; why(input: MatchInput): string };
  const parts: One[] = [];
  const ago = (input: MatchInput, at: number | null): string => (at === null ? 'never seen before' : `last seen ${formatDuration(input.subject.now.getTime() - at)} ago`);
  if (spec.newClientAddressMs !== undefined) {
    const ms = spec.newClientAddressMs;
    parts.push({
      name: `new_client_address ${formatDuration(ms)}`,
      test: (input) => {
        const s = input.subject.signals;
        return s !== undefined && (s.networkLastSeen === null || input.subject.now.getTime() - s.networkLastSeen > ms);
      },
      why: (input) => `new_client_address (${input.subject.signals!.network}: ${ago(input, input.subject.signals!.networkLastSeen)})`,
    });
  }
  if (spec.newApplicationMs !== undefined) {
    const ms = spec.newApplicationMs;
    parts.push({
      name: `new_application ${formatDuration(ms)}`,
      test: (input) => {
        const s = input.subject.signals;
        return s !== undefined && (s.applicationLastSeen === null || input.subject.now.getTime() - s.applicationLastSeen > ms);
      },
      why: (input) => `new_application (${input.subject.application || '(no application name)'}: ${ago(input, input.subject.signals!.applicationLastSeen)})`,
    });
  }
  if (spec.recentLoginFailures !== undefined) {
    const { count, withinMs } = spec.recentLoginFailures;
    const within = (input: MatchInput): number => {
      const since = input.subject.now.getTime() - withinMs;
      let n = 0;
      for (const at of input.subject.signals?.failures ?? []) if (at > since) n++;
      return n;
    };
    parts.push({
      name: `recent_login_failures ${count} within ${formatDuration(withinMs)}`,
      test: (input) => within(input) >= count,
      why: (input) => `recent_login_failures (${within(input)} failed logins in the last ${formatDuration(withinMs)})`,
    });
  }
  if (spec.firstAccess) {
    const fresh = (input: MatchInput) => {
      const first = input.subject.signals?.firstAccess;
      if (!first) return [];
      return input.statement.tables.filter((t) => (tables === null || tables(t)) && first(input.subject.database, t));
    };
    parts.push({
      name: 'first_access',
      test: (input) => fresh(input).length > 0,
      why: (input) => `first_access (${fresh(input).map((t) => (t.schema ? `${t.schema}.${t.name}` : t.name)).join(', ')}: never touched by ${input.subject.user})`,
    });
  }
  return {
    key: 'signals',
    patterns: parts.map((p) => p.name).join(', '),
    test: (input) => {
      for (let i = 0; i < parts.length; i++) if (!parts[i]!.test(input)) return false;
      return true;
    },
    witness: (input) => parts.map((p) => p.why(input)).join('; '),
  };
}

function valueCheck(key: MatchKey, patterns: string[], test: (text: string) => boolean, value: (input: MatchInput) => string): KeyCheck {
  return { key, patterns: patterns.join(', '), test: (input) => test(value(input)), witness: value };
}

/** A list key: ANY value matching, or with `covering` ALL of at least one value. */
function listCheck(
  key: MatchKey,
  patterns: string[],
  test: (text: string) => boolean,
  values: (input: MatchInput) => readonly string[],
  covering = false,
): KeyCheck {
  return {
    key,
    patterns: patterns.join(', '),
    test: (input) => {
      const list = values(input);
      if (covering) {
        for (let i = 0; i < list.length; i++) if (!test(list[i]!)) return false;
        return list.length > 0;
      }
      for (let i = 0; i < list.length; i++) if (test(list[i]!)) return true;
      return false;
    },
    witness: (input) => values(input).filter(test).join(', '),
  };
}
