/**
 * The settings a startup packet asks for, read exactly as PostgreSQL reads them, and what stepgate sends
 * upstream instead of them.
 *
 * The server (ProcessStartupPacket in postmaster.c) takes `user`, `database`, `options` and `replication`
 * (the last of each, names compared case-sensitively), keeps `_pq_.*` names as protocol options, and every
 * other parameter as a setting, in packet order. At login (process_startup_options in postinit.c) it applies
 * the `options` switches first (pg_split_opts, then process_postgres_switches: `-c name=value`,
 * `-cname=value`, `--name=value`), then the other parameters, each as SetConfigOption(name, value).
 *
 * stepgate accepts only `-c` and `--` switches, refuses settings named user, database, options or
 * replication, or starting with `_pq_.` (they would mean something else as the startup parameters stepgate
 * sends: a nested `options`, a walsender, another database; the server itself refuses them as unknown
 * settings, except `_pq_.` ones, which it keeps as placeholders), and judges every other setting as the SET
 * it amounts to. Upstream it sends only what was judged, each setting as a parameter of its own, in the order
 * the server would have applied them: the server then reads exactly the judged names and values.
 */
import { quoteIdent, quoteLiteral } from '../sql/quote.js';

export class StartupSettingsError extends Error {
  override name = 'StartupSettingsError';
  constructor(
    message: string,
    readonly sqlstate = '42501',
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** C isspace() in the C locale, as pg_split_opts uses it: space, \t, \n, \v, \f, \r (never other Unicode spaces). */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13);
}

/**
 * Splits an `options` value as PostgreSQL's pg_split_opts does: words separated by ASCII white space; a
 * backslash makes the next character part of the word (a backslash at the very end is dropped).
 */
export function splitOptions(options: string): string[] {
  const words: string[] = [];
  let i = 0;
  while (i < options.length) {
    while (i < options.length && isSpace(options.charCodeAt(i))) i++;
    if (i >= options.length) break;
    let word = '';
    let escaped = false;
    for (; i < options.length; i++) {
      const ch = options[i]!;
      if (!escaped && isSpace(ch.charCodeAt(0))) break;
      if (!escaped && ch === '\\') {
        escaped = true;
      } else {
        escaped = false;
        word += ch;
      }
    }
    words.push(word);
  }
  return words;
}

/**
 * PostgreSQL's ParseLongOption: name up to the first `=`, value after it (null without one); in the name,
 * `-` becomes `_`.
 */
function parseLongOption(assignment: string): [name: string, value: string | null] {
  const eq = assignment.indexOf('=');
  const name = (eq === -1 ? assignment : assignment.slice(0, eq)).replace(/-/g, '_');
  return [name, eq === -1 ? null : assignment.slice(eq + 1)];
}

/**
 * The settings an `options` value asks for, in order. Only `-c name=value`, `-cname=value` and
 * `--name=value` are accepted (and a final `--`, which ends the switches); anything else is refused.
 */
export function parseOptions(options: string): [string, string][] {
  const words = splitOptions(options);
  const settings: [string, string][] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    let assignment: string;
    let spelled: string;
    if (w === '-c') {
      if (i + 1 >= words.length) throw new StartupSettingsError('startup option -c needs name=value');
      assignment = words[++i]!;
      spelled = `-c ${assignment}`;
    } else if (w.startsWith('-c')) {
      assignment = w.slice(2);
      spelled = w;
    } else if (w === '--') {
      // getopt: the end of the switches. The server refuses any word after it.
      if (i + 1 < words.length) throw new StartupSettingsError(`startup option "${words[i + 1]}" is not supported by stepgate; only -c name=value is relayed`);
      break;
    } else if (w.startsWith('--')) {
      assignment = w.slice(2);
      spelled = w;
    } else {
      throw new StartupSettingsError(`startup option "${w}" is not supported by stepgate; only -c name=value is relayed`);
    }
    const [name, value] = parseLongOption(assignment);
    if (value === null || name === '') throw new StartupSettingsError(`startup option "${spelled}" must be name=value`);
    settings.push([name, value]);
  }
  return settings;
}

/** Startup parameters that are not settings (the server compares these names case-sensitively). */
const STARTUP_KEYWORDS = new Set(['user', 'database', 'options', 'replication']);

/**
 * Names no setting may have: the startup keywords (in any case: the server would refuse them as unknown
 * settings anyway) and protocol options.
 */
function forbiddenSetting(name: string): boolean {
  const lower = name.toLowerCase();
  return STARTUP_KEYWORDS.has(lower) || lower.startsWith('_pq_.');
}

/**
 * PostgreSQL's parse_bool: a non-empty prefix of true/false/yes/no (any case), on/off (at least two letters),
 * 1 or 0. Null when the value is none of these.
 */
export function parseBool(value: string): boolean | null {
  const v = value.toLowerCase();
  if (v.length === 0) return null;
  const prefixOf = (word: string, min = 1): boolean => v.length >= min && v.length <= word.length && word.startsWith(v);
  if (prefixOf('true') || prefixOf('yes') || prefixOf('on', 2) || v === '1') return true;
  if (prefixOf('false') || prefixOf('no') || prefixOf('off', 2) || v === '0') return false;
  return null;
}

/** What a startup packet asks for, as the server reads it. */
export interface StartupRequest {
  /** The last `user`, `database`, `options`, `replication` parameters (undefined when absent). */
  user: string | undefined;
  database: string | undefined;
  replication: string | undefined;
  /** Every setting in the order the server applies them: those of `options` first, then the parameters. */
  settings: [string, string][];
}

/**
 * Reads a startup packet's parameters (in packet order, repeats included, `_pq_.*` protocol options left out)
 * as the server does. Throws StartupSettingsError for what stepgate refuses.
 */
export function readStartup(parameters: readonly (readonly [string, string])[]): StartupRequest {
  let user: string | undefined;
  let database: string | undefined;
  let options: string | undefined;
  let replication: string | undefined;
  const fromParameters: [string, string][] = [];
  for (const [name, value] of parameters) {
    if (name === 'user') user = value;
    else if (name === 'database') database = value;
    else if (name === 'options') options = value;
    else if (name === 'replication') replication = value;
    else if (name.startsWith('_pq_.')) continue;
    else fromParameters.push([name, value]);
  }
  const settings = [...(options ? parseOptions(options) : []), ...fromParameters];
  for (const [name] of settings) {
    if (forbiddenSetting(name)) {
      throw new StartupSettingsError(
        `stepgate refuses the startup setting "${name}": user, database, options and replication are connection parameters, not settings, and _pq_.* names are protocol options`,
        '42501',
        'Give the user and the database as connection parameters of their own (user=..., dbname=...), not as -c settings.',
      );
    }
  }
  return { user, database, replication, settings };
}

/** The setting's value as the server ends up with it (the last assignment of that name), or undefined. */
export function finalSetting(settings: readonly (readonly [string, string])[], name: string): string | undefined {
  let value: string | undefined;
  for (const [n, v] of settings) if (n.toLowerCase() === name) value = v;
  return value;
}

/** The SQL a setting amounts to, for classification and rules. */
export function settingAsSql(name: string, value: string): string {
  return `SET ${quoteIdent(name.toLowerCase())} = ${quoteLiteral(value)}`;
}

/**
 * The startup parameters stepgate sends upstream: the database, then each judged setting as a parameter of
 * its own, in order (repeats included: the server applies each, as it would have). No `options`: nothing
 * needs escaping, and no setting can be read as a switch.
 */
export function upstreamParameters(database: string, settings: readonly (readonly [string, string])[]): [string, string][] {
  return [['database', database], ...settings.map(([n, v]): [string, string] => [n, v])];
}
