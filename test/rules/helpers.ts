/** Shared builders for rule tests: statements, subjects and rule sets from YAML text. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StatementInfo } from '../../src/sql/types.js';
import type { CompiledRuleSet } from '../../src/rules/decide.js';
import { compileRuleSources, type LoadResult } from '../../src/rules/load.js';
import type { Subject } from '../../src/rules/types.js';
import { PassThrough } from 'node:stream';

export function statement(partial: Partial<StatementInfo> = {}): StatementInfo {
  return {
    sql: partial.sql ?? 'SELECT 1',
    command: partial.command ?? 'SELECT',
    commands: partial.commands ?? [partial.command ?? 'SELECT'],
    classes: ['read'],
    tables: [],
    columns: [],
    functions: [],
    flags: [],
    reasons: [],
    changesParsing: false,
    ...partial,
  };
}

/** Monday 2024-01-08 10:00 UTC unless `now` says otherwise. */
export function subject(partial: Partial<Subject> = {}): Subject {
  return {
    user: 'alice',
    groups: [],
    database: 'app',
    application: 'psql',
    clientAddress: '127.0.0.1',
    tls: false,
    now: new Date('2024-01-08T10:00:00Z'),
    ...partial,
  };
}

/** Compiles rule files given as `{ '00-a.yaml': 'yaml text' }` (in name order), or throws with the errors. */
export function compile(files: Record<string, string>): CompiledRuleSet {
  const result = compileFiles(files);
  if (!result.ok) throw new Error(result.errors.map((e) => `${e.file}:${e.line}:${e.column}: ${e.message}`).join('\n'));
  return result.rules.ruleSet;
}

export function compileFiles(files: Record<string, string>): LoadResult {
  const names = Object.keys(files).sort();
  return compileRuleSources('rules', names.map((file) => ({ file, source: files[file]! })));
}

/** One rule file with one rule `r` that matches `match` (YAML flow mapping) with `action`, default allow. */
export function oneRule(match: string, action = 'deny'): CompiledRuleSet {
  return compile({ '00.yaml': `default: allow\nrules:\n  - name: r\n    match: ${match}\n    action: ${action}\n` });
}

export async function tempDir(t: { teardown(fn: () => unknown): void }, files: Record<string, string> = {}): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stepgate-rules-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

/** In-memory streams for command tests. */
export function memoryIO(input = '') {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  stdin.end(input);
  return {
    io: { stdout, stderr, stdin },
    get out() {
      return out;
    },
    get err() {
      return err;
    },
  };
}
