/**
 * Rule tests: `*.test.yaml` files beside the rules, each a list of statements with the decision they
 * must get. They make a rule set something a DBA can change with confidence: `stepgate rules test`.
 *
 * ```yaml
 * cases:
 *   - sql: DELETE FROM orders
 *     database: prod_eu
 *     expect: deny
 *     rule: no-unbounded-deletes
 * ```
 */
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { isScalar, isSeq, type Node } from 'yaml';
import { didYouMean, type RuleError, type SourcePosition } from './errors.js';
import { ACTIONS, DEFAULT_RULE_NAME } from './schema.js';
import type { Action, Subject } from './types.js';
import { DEFAULT_SUBJECT } from './subject.js';
import { describe, YamlReader, type MapEntry } from './yamlread.js';
import { isTestFileName, listDirectory } from './load.js';

export const TEST_FILE_KEYS = ['cases'] as const;
export const CASE_KEYS = ['name', 'sql', 'user', 'groups', 'database', 'application', 'client', 'tls', 'at', 'expect', 'rule'] as const;

export interface RuleTestCase {
  /** Optional label; the SQL is shown when absent. */
  name: string;
  sql: string;
  /** Everything unspecified comes from DEFAULT_SUBJECT; `now` from `at` or the time the test runs. */
  subject: Subject;
  expect: Action;
  /** Expected deciding rule; `default` = no rule matched; undefined = not checked. */
  rule?: string;
  at: SourcePosition;
  /** Where `rule:` is, to report a name that no rule has. */
  ruleAt?: SourcePosition;
}

export function validateTestFile(displayPath: string, source: string, now: Date): { cases: RuleTestCase[]; errors: RuleError[] } {
  const yaml = new YamlReader(displayPath, source);
  const cases: RuleTestCase[] = [];
  if (yaml.errors.length) return { cases, errors: yaml.errors };
  const root = yaml.root;
  if (root === null) {
    yaml.error(null, 'the test file is empty', 'add `cases:` with a list of `- sql: ...` / `expect: ...` entries, or delete the file');
    return { cases, errors: yaml.errors };
  }
  const entries = yaml.mapEntries(root, 'a test file', '`cases:` followed by `- sql: ...` entries');
  if (entries === null) return { cases, errors: yaml.errors };
  const hints = Object.fromEntries(CASE_KEYS.map((key) => [key, `\`${key}\` belongs to a case: list cases under \`cases:\`, each starting with \`- sql:\``]));
  for (const entry of yaml.checkKeys(entries, TEST_FILE_KEYS, 'a test file', hints)) {
    const list = yaml.deref(entry.value);
    if (list === null || !isSeq(list)) {
      yaml.error(list, `\`cases\` must be a list, not ${describe(list)}`, 'start each case with `- sql:` under `cases:`', entry.keyNode);
      continue;
    }
    for (const item of yaml.nodeList(entry)) {
      const testCase = readCase(yaml, item, now);
      if (testCase) cases.push(testCase);
    }
  }
  if (cases.length === 0 && yaml.errors.length === 0) {
    yaml.error(root, 'the test file has no cases', 'add cases under `cases:`, or delete the file');
  }
  return { cases, errors: yaml.errors };
}

function readCase(yaml: YamlReader, node: Node, now: Date): RuleTestCase | null {
  const entries = yaml.mapEntries(node, 'a test case', '`- sql: DELETE FROM t` with `expect: step-up` below it');
  if (entries === null) return null;
  const errorsBefore = yaml.errors.length;
  const byKey = new Map(yaml.checkKeys(entries, CASE_KEYS, 'a test case').map((e) => [e.key, e]));
  const text = (key: string, example: string): string | undefined => {
    const entry = byKey.get(key);
    return entry ? (yaml.string(entry, `\`${key}\``, example) ?? undefined) : undefined;
  };
  const sql = text('sql', '`sql: DELETE FROM orders WHERE id = 1`');
  if (!byKey.has('sql')) yaml.error(node, 'this test case has no `sql`', 'add `sql: <the statement to decide>`');
  let expect: Action | undefined;
  const expectEntry = byKey.get('expect');
  if (!expectEntry) yaml.error(node, 'this test case has no `expect`', 'add `expect: allow`, `expect: step-up` or `expect: deny`');
  else {
    const value = yaml.string(expectEntry, '`expect`', '`expect: deny`');
    if (value !== null && !(ACTIONS as readonly string[]).includes(value)) {
      const hint = didYouMean(value, ACTIONS);
      yaml.error(expectEntry.value, `unknown action \`${value}\` in \`expect\``, `${hint ? `${hint} ` : ''}expect allow, step-up or deny`);
    } else if (value !== null) expect = value as Action;
  }
  const subject: Subject = { ...DEFAULT_SUBJECT, groups: [...DEFAULT_SUBJECT.groups], now };
  subject.user = text('user', '`user: alice`') ?? subject.user;
  subject.database = text('database', '`database: prod`') ?? subject.database;
  subject.application = text('application', '`application: psql`') ?? subject.application;
  const groupsEntry = byKey.get('groups');
  if (groupsEntry) subject.groups = readGroups(yaml, groupsEntry);
  const client = text('client', '`client: 10.1.2.3`');
  if (client !== undefined) {
    if (isIP(client) === 0) yaml.error(byKey.get('client')!.value, `\`${client}\` is not an IP address`, 'write the client address, e.g. `10.1.2.3` or `2001:db8::7` (no prefix length)');
    else subject.clientAddress = client;
  }
  const tlsEntry = byKey.get('tls');
  if (tlsEntry) subject.tls = yaml.boolean(tlsEntry, '`tls`') ?? false;
  const at = text('at', '`at: "2025-01-06T10:00:00+01:00"`');
  if (at !== undefined) {
    const time = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(at) ? new Date(at) : new Date(NaN);
    if (Number.isNaN(time.getTime())) {
      yaml.error(byKey.get('at')!.value, `\`${at}\` is not a timestamp`, 'write an ISO 8601 time with its offset, e.g. `"2025-01-06T10:00:00+01:00"`');
    } else subject.now = time;
  }
  const rule = text('rule', '`rule: no-unbounded-deletes` (or `rule: default`)');
  const name = text('name', '`name: deletes on prod are denied`');
  if (yaml.errors.length > errorsBefore || sql === undefined || expect === undefined) return null;
  return {
    name: name ?? '',
    sql,
    subject,
    expect,
    ...(rule !== undefined ? { rule, ruleAt: yaml.at(byKey.get('rule')!.value) } : {}),
    at: yaml.at(node),
  };
}

/** Groups for a case: a list (possibly empty: no groups) or a single name. */
function readGroups(yaml: YamlReader, entry: MapEntry): string[] {
  const node = yaml.deref(entry.value);
  if (node !== null && isSeq(node) && node.items.length === 0) return [];
  if (isScalar(node) && node.value === null) return [];
  return (yaml.stringList(entry, '`groups`', '`groups: [dba]`') ?? []).map((item) => item.value);
}

/** Errors for `rule:` expectations naming rules that do not exist (a typo would make the case fail forever). */
export function checkCaseRuleNames(cases: readonly RuleTestCase[], ruleNames: readonly string[]): RuleError[] {
  const errors: RuleError[] = [];
  for (const testCase of cases) {
    if (testCase.rule === undefined || testCase.rule === DEFAULT_RULE_NAME || ruleNames.includes(testCase.rule)) continue;
    const hint = didYouMean(testCase.rule, ruleNames);
    errors.push({
      ...(testCase.ruleAt ?? testCase.at),
      message: `no rule is named \`${testCase.rule}\``,
      fix: `${hint ? `${hint} ` : ''}name a rule from the rule files, or \`default\` for "no rule matched"`,
    });
  }
  return errors;
}

export interface LoadedTests {
  /** Test files in name order, relative to the rules directory. */
  files: string[];
  cases: RuleTestCase[];
  errors: RuleError[];
}

/** Reads and validates every `*.test.yaml` / `*.test.yml` in `dir`. */
export async function loadTestFiles(dir: string, now: Date): Promise<LoadedTests> {
  const listed = await listDirectory(dir, isTestFileName);
  if (!listed.ok) return { files: [], cases: [], errors: listed.errors };
  const result: LoadedTests = { files: listed.names, cases: [], errors: [] };
  for (const file of listed.names) {
    const displayPath = join(dir, file);
    let source: string;
    try {
      source = await readFile(displayPath, 'utf8');
    } catch (error) {
      result.errors.push({ file: displayPath, line: 1, column: 1, message: `cannot read the file: ${(error as Error).message}`, fix: 'check the file permissions' });
      continue;
    }
    const { cases, errors } = validateTestFile(displayPath, source, now);
    result.cases.push(...cases);
    result.errors.push(...errors);
  }
  return result;
}
