/**
 * Loading a rules directory: which files count, in which order, and turning them into a CompiledRuleSet
 * or the full list of errors. Nothing is half-loaded: any error means no rule set.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CompiledRuleSet } from './decide.js';
import { compareText, sortRuleErrors, type RuleError } from './errors.js';
import { FALLBACK_DEFAULT } from './schema.js';
import { shadowedRules, type RuleWarning } from './shadow.js';
import type { Action } from './types.js';
import { validateRuleFile, validateRuleSet, type FileValidation } from './validate.js';

const RULE_FILE = /\.ya?ml$/i;
const TEST_FILE = /\.test\.ya?ml$/i;

/**
 * `*.yaml` / `*.yml`, except tests (`*.test.yaml`) and hidden files: editors leave `.#name.yaml` locks
 * and `.name.yaml.swp`-style files beside the ones being edited.
 */
export function isRuleFileName(name: string): boolean {
  return RULE_FILE.test(name) && !TEST_FILE.test(name) && !name.startsWith('.');
}

export function isTestFileName(name: string): boolean {
  return TEST_FILE.test(name) && !name.startsWith('.');
}

export interface LoadedRules {
  ruleSet: CompiledRuleSet;
  /** The directory as given. */
  dir: string;
  /** Rule files in evaluation order, relative to `dir`. */
  files: string[];
  ruleCount: number;
  defaultAction: Action;
  /** File that set `default`, or null when none did (then the default is step-up: fail closed). */
  defaultFile: string | null;
  /** Rules that can never decide (shadow.ts): reported, not errors. */
  warnings: RuleWarning[];
}

export type LoadResult = { ok: true; rules: LoadedRules } | { ok: false; errors: RuleError[] };

export interface RuleSource {
  /** Name relative to the rules directory. */
  file: string;
  source: string;
}

/** Thrown by `loadRulesOrThrow` so a proxy that cannot load its rules refuses to start. */
export class RuleLoadError extends Error {
  constructor(readonly errors: RuleError[]) {
    super(`invalid rules: ${errors.length} error${errors.length === 1 ? '' : 's'}`);
    this.name = 'RuleLoadError';
  }
}

export async function loadRules(dir: string): Promise<LoadResult> {
  const read = await readRuleSources(dir);
  if (!read.ok) return read;
  return compileRuleSources(dir, read.sources);
}

export async function loadRulesOrThrow(dir: string): Promise<LoadedRules> {
  const result = await loadRules(dir);
  if (!result.ok) throw new RuleLoadError(result.errors);
  return result.rules;
}

/** Directory-level error (no file to point into). */
export function directoryError(dir: string, message: string, fix: string): RuleError {
  return { file: dir, line: 1, column: 1, message, fix };
}

/** Reads every rule file of `dir`, in name order. */
export async function readRuleSources(dir: string): Promise<{ ok: true; sources: RuleSource[] } | { ok: false; errors: RuleError[] }> {
  const listed = await listDirectory(dir, isRuleFileName);
  if (!listed.ok) return listed;
  if (listed.names.length === 0) {
    return {
      ok: false,
      errors: [directoryError(dir, 'the rules directory has no rule files (*.yaml or *.yml)', 'add a rule file, e.g. copy rules/00-defaults.yaml from stepgate')],
    };
  }
  const sources: RuleSource[] = [];
  const errors: RuleError[] = [];
  for (const file of listed.names) {
    try {
      sources.push({ file, source: await readFile(join(dir, file), 'utf8') });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EISDIR' || code === 'ENOENT') continue; // A directory named *.yaml, or removed meanwhile.
      errors.push({ file: join(dir, file), line: 1, column: 1, message: `cannot read the file: ${(error as Error).message}`, fix: 'check the file permissions' });
    }
  }
  return errors.length ? { ok: false, errors } : { ok: true, sources };
}

/** Names in `dir` accepted by `filter`, in code-point order (so order never depends on the locale). */
export async function listDirectory(
  dir: string,
  filter: (name: string) => boolean,
): Promise<{ ok: true; names: string[] } | { ok: false; errors: RuleError[] }> {
  try {
    const names = (await readdir(dir)).filter(filter).sort(compareText);
    return { ok: true, names };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT' ? 'the rules directory does not exist' : code === 'ENOTDIR' ? 'the rules path is not a directory' : `cannot read the rules directory: ${(error as Error).message}`;
    return { ok: false, errors: [directoryError(dir, message, 'pass the directory that holds the rule files (*.yaml)')] };
  }
}

/** Validates and compiles already-read files (in evaluation order). */
export function compileRuleSources(dir: string, sources: readonly RuleSource[]): LoadResult {
  if (sources.length === 0) {
    return { ok: false, errors: [directoryError(dir, 'the rules directory has no rule files (*.yaml or *.yml)', 'add a rule file')] };
  }
  const errors: RuleError[] = [];
  const files: FileValidation[] = [];
  for (const { file, source } of sources) {
    const result = validateRuleFile(file, join(dir, file), source);
    errors.push(...result.errors);
    files.push(result);
  }
  const across = validateRuleSet(files, FALLBACK_DEFAULT);
  errors.push(...across.errors);
  if (errors.length > 0) return { ok: false, errors: sortRuleErrors(errors) };
  const rules = files.flatMap(({ spec }) => spec.rules);
  return {
    ok: true,
    rules: {
      ruleSet: new CompiledRuleSet(rules, across.defaultAction, across.defaultFile),
      dir,
      files: sources.map((s) => s.file),
      ruleCount: rules.length,
      defaultAction: across.defaultAction,
      defaultFile: across.defaultFile,
      warnings: shadowedRules(rules),
    },
  };
}
