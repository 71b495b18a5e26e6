/**
 * Validation of a rule's `match:` block: every key's values checked and normalised (classes and flags
 * against the known lists, commands against PostgreSQL's command tags, globs, CIDRs, time windows).
 */
import { STATEMENT_CLASSES, STATEMENT_FLAGS, type StatementClass, type StatementFlag } from '../sql/types.js';
import { isScalar } from 'yaml';
import { cidrProblem } from './client.js';
import { COMMAND_HINTS, COMMAND_TAGS } from './command-tags.js';
import { didYouMean } from './errors.js';
import { compileGlobList, globProblem } from './glob.js';
import { qualifiedNameProblem, type QualifiedKind } from './names.js';
import { parseDuration } from '../util/units.js';
import { MATCH_KEYS, RULE_KEYS, SIGNAL_KEYS, TIME_KEYS, type MatchSpec, type RowsCondition, type SignalSpec } from './schema.js';
import { knownTimeZones, parseClock, parseDayItem, resolveTimeZone, WEEKDAYS, type TimeWindow } from './timewindow.js';
import type { KeyHints, MapEntry, YamlNode, YamlReader } from './yamlread.js';

function isNumberScalar(node: YamlNode | null): boolean {
  return isScalar(node) && typeof node.value === 'number';
}

const MATCH_KEY_HINTS: KeyHints = Object.fromEntries(
  RULE_KEYS.map((key) => [key, `\`${key}\` belongs to the rule, not to \`match:\`: indent it to line up with \`match:\``]),
);

export function readMatch(yaml: YamlReader, matchEntry: MapEntry): MatchSpec | null {
  const entries = yaml.mapEntries(matchEntry.value, '`match`', '`match: {class: [write], flags: [no_where]}`', matchEntry.keyNode);
  if (entries === null) return null;
  const errorsBefore = yaml.errors.length;
  const match: MatchSpec = {};
  for (const entry of yaml.checkKeys(entries, MATCH_KEYS, '`match`', MATCH_KEY_HINTS)) {
    switch (entry.key) {
      case 'class':
        match.class = readEnumList(yaml, entry, STATEMENT_CLASSES, 'class', '`class: [write, ddl]`') as StatementClass[];
        break;
      case 'flags':
        match.flags = readEnumList(yaml, entry, STATEMENT_FLAGS, 'flag', '`flags: [no_where]`') as StatementFlag[];
        break;
      case 'command':
        match.command = readCommands(yaml, entry);
        break;
      case 'tables':
      case 'columns':
      case 'functions':
        match[entry.key] = readQualified(yaml, entry, KIND_OF[entry.key]);
        break;
      case 'user':
      case 'groups':
      case 'database':
      case 'application':
        match[entry.key] = readGlobs(yaml, entry);
        break;
      case 'client':
        match.client = readCidrs(yaml, entry);
        break;
      case 'time':
        match.time = readTimeWindows(yaml, entry);
        break;
      case 'tls': {
        const value = yaml.boolean(entry, '`tls`');
        if (value !== null) match.tls = value;
        break;
      }
      case 'signals': {
        const signals = readSignals(yaml, entry);
        if (signals) match.signals = signals;
        break;
      }
      case 'rows': {
        const rows = readRows(yaml, entry);
        if (rows) match.rows = rows;
        break;
      }
    }
  }
  return yaml.errors.length > errorsBefore ? null : match;
}

const ROWS_FORM = /^\s*(>=|<=|>|<|=)?\s*([0-9][0-9_,]*)\s*$/;

/** `rows: ">100"` (also `>=`, `<`, `<=`, `=`; a bare number means `=`). */
function readRows(yaml: YamlReader, entry: MapEntry): RowsCondition | null {
  const node = yaml.deref(entry.value);
  const text = isScalar(node) && (typeof node.value === 'string' || typeof node.value === 'number') ? String(node.value) : null;
  const m = text === null ? null : ROWS_FORM.exec(text);
  if (text === null || m === null) {
    yaml.error(entry.value, '`rows` must be a comparison with a number of rows', 'write it quoted, like `rows: ">100"` (also `">="`, `"<"`, `"<="`, `"="`)', entry.keyNode);
    return null;
  }
  return { op: (m[1] ?? '=') as RowsCondition['op'], n: Number(m[2]!.replace(/[_,]/g, '')), text: text.trim() };
}

const SIGNALS_EXAMPLE = '`signals: {new_client_address: 30d, recent_login_failures: {count: 3, within: 10m}}`';

/** `signals:` — each signal with its parameter; all given must hold. */
function readSignals(yaml: YamlReader, entry: MapEntry): SignalSpec | null {
  const entries = yaml.mapEntries(entry.value, '`signals`', SIGNALS_EXAMPLE, entry.keyNode);
  if (entries === null) return null;
  const errorsBefore = yaml.errors.length;
  const spec: SignalSpec = {};
  const known = yaml.checkKeys(entries, SIGNAL_KEYS, '`signals`', {
    new_address: 'did you mean `new_client_address`?',
    new_client: 'did you mean `new_client_address`?',
    login_failures: 'did you mean `recent_login_failures`?',
    off_hours: 'off hours are a `time` window: `time: {days: [sat, sun]}` or `{days: [mon-fri], from: "19:00", to: "07:00"}` (see docs/rules.md, Risk signals)',
  });
  for (const e of known) {
    switch (e.key) {
      case 'new_client_address':
      case 'new_application': {
        const ms = readSignalDuration(yaml, e, '`30d`');
        if (ms !== null) spec[e.key === 'new_client_address' ? 'newClientAddressMs' : 'newApplicationMs'] = ms;
        break;
      }
      case 'recent_login_failures': {
        const inner = yaml.mapEntries(e.value, '`recent_login_failures`', '`recent_login_failures: {count: 3, within: 10m}`', e.keyNode);
        if (inner === null) break;
        const byKey = new Map(yaml.checkKeys(inner, ['count', 'within'], '`recent_login_failures`').map((x) => [x.key, x]));
        const countEntry = byKey.get('count');
        const withinEntry = byKey.get('within');
        if (!countEntry || !withinEntry) {
          yaml.error(e.keyNode, '`recent_login_failures` needs `count` and `within`', 'write `recent_login_failures: {count: 3, within: 10m}`');
          break;
        }
        const count = yaml.integer(countEntry, '`recent_login_failures.count`');
        if (count !== null && count < 1) yaml.error(countEntry.value, '`recent_login_failures.count` must be 1 or more', 'write `count: 3`');
        const within = readSignalDuration(yaml, withinEntry, '`10m`');
        if (within !== null && within > 24 * 60 * 60_000) {
          yaml.error(withinEntry.value, '`recent_login_failures.within` can be at most `1d`', 'stepgate keeps failed logins for one day: write `within: 1d` or less');
        } else if (count !== null && count >= 1 && within !== null) spec.recentLoginFailures = { count, withinMs: within };
        break;
      }
      case 'first_access': {
        const value = yaml.boolean(e, '`first_access`');
        if (value === false) yaml.error(e.value, '`first_access: false` matches nothing a rule needs', 'write `first_access: true`, or remove it');
        else if (value) spec.firstAccess = true;
        break;
      }
    }
  }
  if (yaml.errors.length > errorsBefore) return null;
  if (Object.keys(spec).length === 0) {
    yaml.error(entry.value, '`signals` is empty', `name at least one signal, e.g. ${SIGNALS_EXAMPLE}`, entry.keyNode);
    return null;
  }
  return spec;
}

function readSignalDuration(yaml: YamlReader, entry: MapEntry, example: string): number | null {
  const node = yaml.deref(entry.value);
  if (isNumberScalar(node)) {
    yaml.error(node, `\`${entry.key}\` needs a unit`, `write e.g. ${example} (units: d, h, m, s)`);
    return null;
  }
  const text = yaml.string(entry, `\`${entry.key}\``, example);
  if (text === null) return null;
  const ms = parseDuration(text);
  if (ms === null || ms <= 0) {
    yaml.error(entry.value, `\`${entry.key}\` \`${text}\` is not a duration`, `write a number with a unit, e.g. ${example}`);
    return null;
  }
  return ms;
}

const KIND_OF = { tables: 'table', columns: 'column', functions: 'function' } as const satisfies Record<string, QualifiedKind>;

const EXAMPLES: Record<string, string> = {
  tables: '`tables: [billing.invoices, audit_*]`',
  columns: '`columns: [users.password, ssn]`',
  functions: '`functions: [pg_read_file, dblink*]`',
  user: '`user: [alice, svc_*]`',
  groups: '`groups: [dba]`',
  database: '`database: [prod*]`',
  application: '`application: [psql]`',
  client: '`client: [10.0.0.0/8, 2001:db8::/32]`',
};

function readEnumList(yaml: YamlReader, entry: MapEntry, valid: readonly string[], noun: string, example: string): string[] {
  const values = yaml.stringList(entry, `\`${entry.key}\``, example) ?? [];
  const result: string[] = [];
  for (const { value, node } of values) {
    const lower = value.toLowerCase();
    if (valid.includes(lower)) {
      result.push(lower);
      continue;
    }
    const asCommand = noun === 'class' && COMMAND_TAGS.includes(value.toUpperCase().replace(/\s+/g, ' '));
    const suggestion = asCommand ? `\`${value}\` is a command: use \`command: ${value.toUpperCase()}\`.` : didYouMean(value, valid);
    yaml.error(node, `unknown ${noun} \`${value}\``, `${suggestion ? `${suggestion} ` : ''}valid ${noun === 'class' ? 'classes' : 'flags'}: ${valid.join(', ')}`);
  }
  return result;
}

function readCommands(yaml: YamlReader, entry: MapEntry): string[] {
  const values = yaml.stringList(entry, '`command`', '`command: [DELETE, "DROP *"]`') ?? [];
  const result: string[] = [];
  for (const { value, node } of values) {
    const problem = globProblem(value);
    if (problem) {
      yaml.error(node, problem.message, problem.fix);
      continue;
    }
    const normalized = value.replace(/\s+/g, ' ').toUpperCase();
    const matcher = compileGlobList([normalized], true);
    if (COMMAND_TAGS.some(matcher)) {
      result.push(normalized);
      continue;
    }
    const longer = COMMAND_TAGS.filter((tag) => tag.startsWith(`${normalized} `));
    const hint = COMMAND_HINTS[normalized];
    const suggestion = hint ? (/[.?]$/.test(hint) ? hint : `${hint}.`) :
      longer.length === 1 ? `did you mean \`${longer[0]}\`?` : longer.length > 1 ? `did you mean \`${normalized} *\` (${longer.slice(0, 3).join(', ')}, ...)?` : didYouMean(normalized, COMMAND_TAGS);
    yaml.error(
      node,
      `unknown command \`${value}\`: no PostgreSQL command tag matches it`,
      `${suggestion ? `${suggestion} ` : ''}commands are PostgreSQL command tags such as DELETE, CREATE TABLE, DROP DATABASE; \`stepgate rules explain SQL\` shows a statement's command`,
    );
  }
  return result;
}

function readQualified(yaml: YamlReader, entry: MapEntry, kind: QualifiedKind): string[] {
  const values = yaml.stringList(entry, `\`${entry.key}\``, EXAMPLES[entry.key]!) ?? [];
  const result: string[] = [];
  for (const { value, node } of values) {
    const problem = qualifiedNameProblem(value, kind);
    if (problem) yaml.error(node, `bad pattern in \`${entry.key}\`: ${problem.message}`, problem.fix);
    else result.push(value);
  }
  return result;
}

function readGlobs(yaml: YamlReader, entry: MapEntry): string[] {
  const values = yaml.stringList(entry, `\`${entry.key}\``, EXAMPLES[entry.key]!) ?? [];
  const result: string[] = [];
  for (const { value, node } of values) {
    const problem = globProblem(value);
    if (problem) yaml.error(node, `bad pattern in \`${entry.key}\`: ${problem.message}`, problem.fix);
    else result.push(value);
  }
  return result;
}

function readCidrs(yaml: YamlReader, entry: MapEntry): string[] {
  const values = yaml.stringList(entry, '`client`', EXAMPLES.client!) ?? [];
  const result: string[] = [];
  for (const { value, node } of values) {
    const problem = cidrProblem(value.trim());
    if (problem) yaml.error(node, `bad CIDR in \`client\`: ${problem.message}`, problem.fix);
    else result.push(value.trim());
  }
  return result;
}

const TIME_EXAMPLE = '`time: {days: [mon-fri], from: "09:00", to: "18:00", tz: Europe/Berlin}`';

function readTimeWindows(yaml: YamlReader, entry: MapEntry): TimeWindow[] {
  const nodes = yaml.nodeList(entry);
  if (nodes.length === 0) {
    yaml.error(entry.value, '`time` is empty', `write a window like ${TIME_EXAMPLE}, or remove \`time\``, entry.keyNode);
    return [];
  }
  const windows: TimeWindow[] = [];
  for (const node of nodes) {
    const window = readTimeWindow(yaml, node, entry.keyNode);
    if (window) windows.push(window);
  }
  return windows;
}

function readTimeWindow(yaml: YamlReader, node: YamlNode, keyNode: YamlNode): TimeWindow | null {
  const entries = yaml.mapEntries(node, 'a `time` window', TIME_EXAMPLE, keyNode);
  if (entries === null) return null;
  const errorsBefore = yaml.errors.length;
  const byKey = new Map(yaml.checkKeys(entries, TIME_KEYS, 'a `time` window').map((e) => [e.key, e]));
  const days = new Array<boolean>(7).fill(byKey.get('days') === undefined);
  const daysEntry = byKey.get('days');
  if (daysEntry) {
    for (const { value, node: dayNode } of yaml.stringList(daysEntry, '`days`', '`days: [mon-fri]` or `days: [sat, sun]`') ?? []) {
      const indexes = parseDayItem(value);
      if (indexes === null) {
        yaml.error(dayNode, `\`${value}\` is not a day or range of days`, `write days as ${WEEKDAYS.join(', ')}, or a range like \`mon-fri\``);
      } else for (const day of indexes) days[day] = true;
    }
  }
  const fromEntry = byKey.get('from');
  const toEntry = byKey.get('to');
  let fromMinute = 0;
  let toMinute = 1440;
  if ((fromEntry === undefined) !== (toEntry === undefined)) {
    const present = (fromEntry ?? toEntry)!;
    yaml.error(present.keyNode, `a \`time\` window has \`${present.key}\` but no \`${present.key === 'from' ? 'to' : 'from'}\``, 'give both `from` and `to` (e.g. `from: "09:00"`, `to: "18:00"`), or neither for the whole day');
  } else if (fromEntry && toEntry) {
    fromMinute = readClock(yaml, fromEntry, false) ?? 0;
    toMinute = readClock(yaml, toEntry, true) ?? 1440;
    if (fromMinute === toMinute) {
      yaml.error(toEntry.value, '`from` and `to` are the same time, so the window is ambiguous', 'for the whole day leave out `from` and `to`');
    }
  }
  let tz = 'UTC';
  const tzEntry = byKey.get('tz');
  if (tzEntry) {
    const text = yaml.string(tzEntry, '`tz`', '`tz: Europe/Berlin`');
    if (text !== null) {
      const resolved = resolveTimeZone(text);
      if (resolved === null) {
        const suggestion = didYouMean(text, knownTimeZones());
        yaml.error(tzEntry.value, `unknown time zone \`${text}\``, `${suggestion ? `${suggestion} ` : ''}use an IANA name such as \`Europe/Berlin\`, \`America/New_York\` or \`UTC\``);
      } else tz = resolved;
    }
  }
  if (yaml.errors.length > errorsBefore) return null;
  return { days, fromMinute, toMinute, tz, text: describeWindowSource(days, fromMinute, toMinute, tz) };
}

function readClock(yaml: YamlReader, entry: MapEntry, allow24: boolean): number | null {
  const node = yaml.deref(entry.value);
  if (isNumberScalar(node)) {
    yaml.error(node, `\`${entry.key}\` must be a time like "09:00", not a number`, `write it in quotes as HH:MM, e.g. \`${entry.key}: "09:00"\``);
    return null;
  }
  const text = yaml.string(entry, `\`${entry.key}\``, `\`${entry.key}: "09:00"\``);
  if (text === null) return null;
  const minute = parseClock(text, allow24);
  if (minute === null) {
    yaml.error(entry.value, `\`${entry.key}\` \`${text}\` is not a time of day`, `write HH:MM from 00:00 to ${allow24 ? '24:00' : '23:59'}, e.g. \`"18:00"\``);
  }
  return minute;
}

function describeWindowSource(days: boolean[], fromMinute: number, toMinute: number, tz: string): string {
  const dayText = days.every(Boolean) ? 'every day' : WEEKDAYS.filter((_, i) => days[i]).join(',');
  const clock = (m: number) => `${String(Math.floor(m / 60)).padStart(2, '0')}:${String(m % 60).padStart(2, '0')}`;
  const hours = fromMinute === 0 && toMinute === 1440 ? 'all day' : `${clock(fromMinute)}-${clock(toMinute)}`;
  return `${dayText} ${hours} ${tz}`;
}

