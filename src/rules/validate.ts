/**
 * Validation of rule files: YAML text in, a RuleFileSpec and every error out (never just the first).
 * Each error names file:line:column, what is wrong and how to fix it. Cross-file checks (duplicate rule
 * names, conflicting defaults, rules hidden behind a catch-all) are in `validateRuleSet`; the `match:`
 * block is checked by validate-match.ts.
 */
import { isScalar, isSeq, type Scalar } from 'yaml';
import { didYouMean, formatPosition, type RuleError, type SourcePosition } from './errors.js';
import { parseDuration } from '../util/units.js';
import { globProblem, isWildcard } from './glob.js';
import {
  ACTIONS,
  APPROVER_KEYS,
  CONNECT_MATCH_KEYS,
  DEFAULT_RULE_NAME,
  FACTORS,
  RULE_EVENTS,
  DEFAULT_TIMEOUT_MS,
  FILE_KEYS,
  GRANT_SCOPES,
  MATCH_KEYS,
  RULE_KEYS,
  RULE_NAME,
  STEP_UP_KEYS,
  type GrantScope,
  type MatchSpec,
  type RuleEvent,
  type RuleFileSpec,
  type RuleSpec,
} from './schema.js';
import type { Action, Approvers, Factor } from './types.js';
import { readMatch } from './validate-match.js';
import { describe, YamlReader, type KeyHints, type MapEntry, type YamlNode } from './yamlread.js';

export interface FileValidation {
  spec: RuleFileSpec;
  errors: RuleError[];
  /** Every well-formed rule name with its position, including rules that have other errors. */
  names: Array<{ name: string; at: SourcePosition }>;
}

/** Frequent words for actions that are not stepgate's. */
const ACTION_SYNONYMS: Record<string, Action> = {
  block: 'deny',
  reject: 'deny',
  refuse: 'deny',
  forbid: 'deny',
  approve: 'step-up',
  ask: 'step-up',
  confirm: 'step-up',
  stepup: 'step-up',
  step_up: 'step-up',
  permit: 'allow',
  accept: 'allow',
  pass: 'allow',
};

const RULE_KEY_HINTS: KeyHints = Object.fromEntries(
  MATCH_KEYS.map((key) => [key, `\`${key}\` is a match key: move it under \`match:\``]),
);
const FILE_KEY_HINTS: KeyHints = {
  ...Object.fromEntries(
    RULE_KEYS.map((key) => [key, `\`${key}\` belongs to a rule: list rules under \`rules:\`, each starting with \`- name:\``]),
  ),
  ...Object.fromEntries(
    MATCH_KEYS.map((key) => [key, `\`${key}\` is a match key: put it under a rule's \`match:\` inside \`rules:\``]),
  ),
};

/**
 * Validates one rule file. `file` is the name relative to the rules directory (what decisions carry);
 * `displayPath` is what errors show.
 */
export function validateRuleFile(file: string, displayPath: string, source: string): FileValidation {
  const yaml = new YamlReader(displayPath, source);
  const spec: RuleFileSpec = { file, rules: [] };
  const names: FileValidation['names'] = [];
  const done = (): FileValidation => ({ spec, errors: yaml.errors, names });
  if (yaml.errors.length > 0) return done();
  const root = yaml.root;
  if (root === null) {
    yaml.error(null, 'the file is empty', 'add `rules:` (and `default:`), or delete the file');
    return done();
  }
  const entries = yaml.mapEntries(root, 'a rule file', '`default: allow` and `rules:` with a list of rules');
  if (entries === null) return done();
  for (const entry of yaml.checkKeys(entries, FILE_KEYS, 'a rule file', FILE_KEY_HINTS)) {
    if (entry.key === 'default') {
      const action = readAction(yaml, entry, '`default`');
      if (action !== null) spec.default = { action, at: yaml.at(entry.value, entry.keyNode) };
    } else {
      const items = yaml.deref(entry.value);
      if (items === null || isNullScalar(items)) continue; // `rules:` with nothing under it: no rules.
      if (!isSeq(items)) {
        yaml.error(items, `\`rules\` must be a list of rules, not ${describe(items)}`, 'start each rule with `- name:` under `rules:`', entry.keyNode);
        continue;
      }
      for (const item of yaml.nodeList(entry)) {
        const rule = readRule(yaml, item, file, names);
        if (rule !== null) spec.rules.push(rule);
      }
    }
  }
  return done();
}

function isNullScalar(node: YamlNode): boolean {
  return isScalar(node) && node.value === null;
}

function isNumberScalar(node: YamlNode | null): node is Scalar<number> {
  return isScalar(node) && typeof node.value === 'number';
}

function readAction(yaml: YamlReader, entry: MapEntry, what: string): Action | null {
  const text = yaml.string(entry, what, '`allow`, `step-up` or `deny`');
  if (text === null) return null;
  if ((ACTIONS as readonly string[]).includes(text)) return text as Action;
  const synonym = ACTION_SYNONYMS[text.toLowerCase()];
  const suggestion = synonym ? `did you mean \`${synonym}\`?` : didYouMean(text, ACTIONS);
  yaml.error(
    entry.value,
    `unknown action \`${text}\` in ${what}`,
    `${suggestion ? `${suggestion} ` : ''}the actions are allow, step-up and deny`,
  );
  return null;
}

function readRule(yaml: YamlReader, node: YamlNode, file: string, names: FileValidation['names']): RuleSpec | null {
  const entries = yaml.mapEntries(node, 'a rule', '`- name: my-rule` with `match:` and `action:` lines below it');
  if (entries === null) return null;
  const errorsBefore = yaml.errors.length;
  const known = yaml.checkKeys(entries, RULE_KEYS, 'a rule', RULE_KEY_HINTS);
  const byKey = new Map(known.map((entry) => [entry.key, entry]));
  const at = yaml.at(node);

  const nameEntry = byKey.get('name');
  let name: string | null = null;
  if (nameEntry === undefined) {
    yaml.error(node, 'this rule has no `name`', 'add `name: some-name` (unique across all rule files; it appears in logs and approvals)');
  } else {
    name = yaml.string(nameEntry, '`name`', '`name: no-unbounded-deletes`');
    if (name !== null && !RULE_NAME.test(name)) {
      yaml.error(nameEntry.value, `rule name \`${name}\` has characters other than letters, digits, \`-\`, \`_\` and \`.\``, `write it like \`${suggestName(name)}\``);
      name = null;
    } else if (name === DEFAULT_RULE_NAME) {
      yaml.error(nameEntry.value, '`default` is reserved: tests use `rule: default` for "no rule matched"', 'choose another name');
      name = null;
    }
    if (name !== null) names.push({ name, at: yaml.at(nameEntry.value, nameEntry.keyNode) });
  }

  const actionEntry = byKey.get('action');
  let action: Action | null = null;
  if (actionEntry === undefined) {
    yaml.error(node, `rule${name ? ` \`${name}\`` : ''} has no \`action\``, 'add `action: allow`, `action: step-up` or `action: deny`');
  } else {
    action = readAction(yaml, actionEntry, '`action`');
  }

  const matchEntry = byKey.get('match');
  let match: MatchSpec | null = null;
  if (matchEntry === undefined) {
    yaml.error(node, `rule${name ? ` \`${name}\`` : ''} has no \`match\``, 'add `match:` with the keys that select statements (`match: {}` matches every statement)');
  } else if (matchEntry.value === null || isNullScalar(matchEntry.value)) {
    yaml.error(matchEntry.keyNode, '`match` is empty', 'indent the match keys under `match:`, or write `match: {}` to match every statement');
  } else {
    match = readMatch(yaml, matchEntry);
  }

  const description = optionalString(yaml, byKey.get('description'), '`description`', '`description: why this rule exists`');
  const message = optionalString(yaml, byKey.get('message'), '`message`', '`message: what the person should do`');

  let grantMs = 0;
  let grantScope: GrantScope = 'connection';
  let timeoutMs = action === 'step-up' ? DEFAULT_TIMEOUT_MS : 0;
  let approvers: Approvers | undefined;
  let preview = false;
  let maxRows: number | undefined;
  let factors: Factor[] | undefined;
  let notify: string[] | undefined;
  let on: RuleEvent = 'statement';
  const onEntry = byKey.get('on');
  if (onEntry) {
    const text = yaml.string(onEntry, '`on`', '`on: connect`');
    if (text !== null && !(RULE_EVENTS as readonly string[]).includes(text)) {
      yaml.error(onEntry.value, `unknown \`on: ${text}\``, `${didYouMean(text, RULE_EVENTS) ?? ''} write \`on: connect\` (the rule decides the login) or leave it out (each statement)`.trim());
    } else if (text !== null) on = text as RuleEvent;
  }
  if (on === 'connect') {
    if (action === 'allow') {
      yaml.error(actionEntry!.value, 'a rule with `on: connect` holds (`step-up`) or refuses (`deny`) a login; logins no connect rule matches go on anyway', 'write `action: step-up` or `action: deny`');
    }
    if (match) {
      for (const key of Object.keys(match)) {
        if (!(CONNECT_MATCH_KEYS as readonly string[]).includes(key)) {
          const e = matchEntry!;
          yaml.error(e.keyNode, `\`${key}\` cannot be matched at connect: no statement has been sent yet`, `use ${CONNECT_MATCH_KEYS.map((k) => `\`${k}\``).join(', ')} in a rule with \`on: connect\`, or move \`${key}\` to a statement rule`);
        }
      }
      if (match.signals?.firstAccess) {
        yaml.error(matchEntry!.keyNode, '`first_access` cannot be matched at connect: it is about the tables a statement touches', 'move it to a statement rule (without `on: connect`)');
      }
    }
    for (const key of ['grant', 'grant_scope'] as const) {
      const entry = byKey.get(key);
      if (entry) yaml.error(entry.keyNode, `\`${key}\` does not apply to \`on: connect\`: an approval lets this one login in`, `remove \`${key}\``);
    }
    for (const key of ['preview', 'max_rows'] as const) {
      const entry = byKey.get(key);
      if (entry) yaml.error(entry.keyNode, `\`${key}\` does not apply to \`on: connect\`: there is no statement to preview yet`, `remove \`${key}\`, or move it to a statement rule`);
    }
  }
  if (action !== null && action !== 'step-up') {
    for (const key of STEP_UP_KEYS) {
      const entry = byKey.get(key);
      if (entry) {
        yaml.error(entry.keyNode, `\`${key}\` only applies to step-up rules, and this rule's action is \`${action}\``, 'remove it, or set `action: step-up`');
      }
    }
  } else {
    const grantEntry = byKey.get('grant');
    if (grantEntry) grantMs = readDuration(yaml, grantEntry, '`grant`') ?? 0;
    const scopeEntry = byKey.get('grant_scope');
    if (scopeEntry) {
      const scope = yaml.string(scopeEntry, '`grant_scope`', '`grant_scope: user`');
      if (scope !== null && !(GRANT_SCOPES as readonly string[]).includes(scope)) {
        yaml.error(scopeEntry.value, `unknown grant_scope \`${scope}\``, `${didYouMean(scope, GRANT_SCOPES)} write \`connection\` (this connection only) or \`user\` (all of this person's connections)`.trim());
      } else if (scope !== null) {
        grantScope = scope as GrantScope;
        if (!grantEntry) yaml.error(scopeEntry.keyNode, '`grant_scope` without `grant` has no effect', 'add `grant: 10m` (how long an approval lasts), or remove `grant_scope`');
      }
    }
    const timeoutEntry = byKey.get('timeout');
    if (timeoutEntry) timeoutMs = readDuration(yaml, timeoutEntry, '`timeout`') ?? timeoutMs;
    const approversEntry = byKey.get('approvers');
    if (approversEntry) approvers = readApprovers(yaml, approversEntry) ?? undefined;
    const previewEntry = byKey.get('preview');
    if (previewEntry) preview = yaml.boolean(previewEntry, '`preview`') ?? false;
    const maxRowsEntry = byKey.get('max_rows');
    if (maxRowsEntry) {
      const n = yaml.integer(maxRowsEntry, '`max_rows`');
      if (n !== null && n < 0) yaml.error(maxRowsEntry.value, '`max_rows` must be 0 or more', 'write `max_rows: 10000`');
      else if (n !== null) {
        maxRows = n;
        // Counting the rows is what a preview does.
        if (previewEntry && !preview) yaml.error(previewEntry.value, '`max_rows` needs the preview that counts the rows', 'write `preview: true`, or leave `preview` out (max_rows implies it)');
        preview = true;
      }
    }
    const factorsEntry = byKey.get('factors');
    if (factorsEntry) factors = readFactors(yaml, factorsEntry) ?? undefined;
    const notifyEntry = byKey.get('notify');
    if (notifyEntry) notify = readNotify(yaml, notifyEntry) ?? undefined;
  }

  if (yaml.errors.length > errorsBefore || name === null || action === null || match === null) return null;
  return {
    name,
    description: description ?? '',
    match,
    action,
    message: message ?? '',
    grantMs,
    grantScope,
    timeoutMs,
    ...(approvers ? { approvers } : {}),
    preview,
    ...(maxRows !== undefined ? { maxRows } : {}),
    ...(factors ? { factors } : {}),
    ...(notify ? { notify } : {}),
    on,
    file,
    at,
  };
}

/** `notify: [dba-slack]`: webhooks by the names the config gives them (checked against it when a hold names one). */
function readNotify(yaml: YamlReader, entry: MapEntry): string[] | null {
  const values = yaml.stringList(entry, '`notify`', '`notify: [dba-slack]`');
  if (values === null) return null;
  for (const { value, node } of values) {
    if (!RULE_NAME.test(value)) {
      yaml.error(node, `\`${value}\` is not a webhook name`, 'write the `name:` of a webhook under `notify.webhooks` in the config file, e.g. `notify: [dba-slack]`');
      return null;
    }
  }
  return [...new Set(values.map((v) => v.value))];
}

/** `factors: [passkey]`: the factors that may approve this rule's statements. */
function readFactors(yaml: YamlReader, entry: MapEntry): Factor[] | null {
  const values = yaml.stringList(entry, '`factors`', '`factors: [passkey]`');
  if (values === null) return null;
  const result: Factor[] = [];
  for (const { value, node } of values) {
    const lower = value.toLowerCase();
    const synonym = ({ webauthn: 'passkey', fido: 'passkey', fido2: 'passkey', 'security-key': 'passkey', otp: 'totp', code: 'totp', authenticator: 'totp' } as Record<string, string>)[lower];
    if ((FACTORS as readonly string[]).includes(lower)) {
      if (!result.includes(lower as Factor)) result.push(lower as Factor);
    } else {
      const suggestion = synonym ? `did you mean \`${synonym}\`?` : didYouMean(lower, FACTORS);
      yaml.error(node, `unknown factor \`${value}\``, `${suggestion ? `${suggestion} ` : ''}the factors are passkey and totp (a recovery code counts as totp)`);
      return null;
    }
  }
  return result;
}

function suggestName(name: string): string {
  return name.trim().replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^[-_.]+/, '') || 'my-rule';
}

function optionalString(yaml: YamlReader, entry: MapEntry | undefined, what: string, example: string): string | null {
  return entry ? yaml.string(entry, what, example) : null;
}

function readDuration(yaml: YamlReader, entry: MapEntry, what: string): number | null {
  const node = yaml.deref(entry.value);
  if (isNumberScalar(node)) {
    const n = node.value;
    yaml.error(node, `${what} needs a unit`, `write \`${n}s\` or \`${n}m\` (units: d, h, m, s, e.g. \`1h30m\`)`);
    return null;
  }
  const text = yaml.string(entry, what, '`10m`, `90s` or `1h30m`');
  if (text === null) return null;
  const ms = parseDuration(text);
  if (ms === null) {
    yaml.error(entry.value, `${what} \`${text}\` is not a duration`, 'write a number with a unit: d, h, m, s, e.g. `10m`, `90s` or `1h30m`');
    return null;
  }
  if (ms === 0) {
    yaml.error(entry.value, `${what} must be longer than zero`, entry.key === 'grant' ? 'remove `grant` for no grant' : 'write e.g. `2m`');
    return null;
  }
  return ms;
}

function readApprovers(yaml: YamlReader, entry: MapEntry): Approvers | null {
  const entries = yaml.mapEntries(entry.value, '`approvers`', '`approvers: {groups: [dba], count: 1}`', entry.keyNode);
  if (entries === null) return null;
  const known = yaml.checkKeys(entries, APPROVER_KEYS, '`approvers`');
  const groupsEntry = known.find((e) => e.key === 'groups');
  const countEntry = known.find((e) => e.key === 'count');
  let groups: string[] | null = null;
  if (!groupsEntry) {
    yaml.error(entry.keyNode, '`approvers` has no `groups`', 'add `groups: [dba]` (who may approve), or remove `approvers` to let the person approve their own statement');
  } else {
    const values = yaml.stringList(groupsEntry, '`approvers.groups`', '`groups: [dba, oncall]`');
    if (values) {
      groups = [];
      for (const { value, node } of values) {
        const problem = globProblem(value);
        if (problem) yaml.error(node, problem.message, problem.fix);
        else if (isWildcard(value)) yaml.error(node, `approver group \`${value}\` contains a wildcard`, 'name each approving group exactly');
        else groups.push(value);
      }
      if (groups.length !== values.length) groups = null;
    }
  }
  let count = 1;
  if (countEntry) {
    const value = yaml.integer(countEntry, '`approvers.count`');
    if (value !== null && value < 1) yaml.error(countEntry.value, '`approvers.count` must be 1 or more', 'write `count: 1`, or more for several distinct approvals');
    else if (value !== null) count = value;
  }
  return groups ? { groups, count } : null;
}

// ---------------------------------------------------------------------------------------------------------
// Across files

export interface RuleSetValidation {
  errors: RuleError[];
  defaultAction: Action;
  /** File that set the default, or null when the fallback applies. */
  defaultFile: string | null;
}

/**
 * Checks that need every file: unique rule names, agreeing defaults, and rules that can never match
 * because a rule with an empty `match` (every statement) comes first. Files must be in evaluation order.
 */
export function validateRuleSet(files: Array<{ spec: RuleFileSpec; names: FileValidation['names'] }>, fallback: Action): RuleSetValidation {
  const errors: RuleError[] = [];
  const seen = new Map<string, SourcePosition>();
  let catchAll: { name: string; at: SourcePosition; action: Action } | null = null;
  let defaultSetting: { action: Action; at: SourcePosition; file: string } | null = null;
  for (const { spec, names } of files) {
    for (const { name, at } of names) {
      const earlier = seen.get(name);
      if (earlier) {
        errors.push({
          ...at,
          message: `duplicate rule name \`${name}\`: also defined at ${formatPosition(earlier)}`,
          fix: 'rule names must be unique across all rule files: rename one of them',
        });
      } else seen.set(name, at);
    }
    if (spec.default) {
      if (defaultSetting === null) defaultSetting = { ...spec.default, file: spec.file };
      else if (defaultSetting.action !== spec.default.action) {
        errors.push({
          ...spec.default.at,
          message: `\`default: ${spec.default.action}\` conflicts with \`default: ${defaultSetting.action}\` at ${formatPosition(defaultSetting.at)}`,
          fix: 'set `default` in one file only (e.g. 00-defaults.yaml), or make both the same',
        });
      }
    }
    for (const rule of spec.rules) {
      if (rule.on === 'connect') continue; // logins are decided apart from statements
      // After a catch-all nothing can decide, except a deny after a catch-all that does not deny
      // (a matching deny wins regardless of order).
      if (catchAll && (catchAll.action === 'deny' || rule.action !== 'deny')) {
        errors.push({
          ...rule.at,
          message: `rule \`${rule.name}\` can never match: rule \`${catchAll.name}\` at ${formatPosition(catchAll.at)} has an empty \`match\` and matches every statement first`,
          fix: `move \`${catchAll.name}\` after this rule (or to the last file), or give it match keys`,
        });
      } else if (!catchAll && Object.keys(rule.match).length === 0) catchAll = { name: rule.name, at: rule.at, action: rule.action };
    }
  }
  return {
    errors,
    defaultAction: defaultSetting?.action ?? fallback,
    defaultFile: defaultSetting?.file ?? null,
  };
}
