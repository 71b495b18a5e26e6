/**
 * Server settings a client asks for at startup. PostgreSQL applies every startup parameter other than
 * user, database, replication and options as a setting, and `options` may carry more (`-c name=value`,
 * `--name=value`). Some change who the session is (role, session_authorization), so each one is judged
 * by the rules like the SET statement it amounts to before it is relayed.
 */
import { quoteIdent, quoteLiteral } from '../sql/quote.js';

export class StartupSettingsError extends Error {}

/** Splits an `options` value as PostgreSQL does (pg_split_opts): spaces separate, backslash escapes. */
export function splitOptions(options: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  for (let i = 0; i < options.length; i++) {
    const ch = options[i];
    if (ch === '\\' && i + 1 < options.length) {
      word += options[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** The settings in an `options` value; only `-c name=value` and `--name=value` are accepted. */
export function parseOptions(options: string): [string, string][] {
  const words = splitOptions(options);
  const settings: [string, string][] = [];
  for (let i = 0; i < words.length; i++) {
    let assignment: string;
    const w = words[i];
    if (w === '-c') {
      if (i + 1 >= words.length) throw new StartupSettingsError('startup option -c needs name=value');
      assignment = words[++i];
    } else if (w.startsWith('-c')) {
      assignment = w.slice(2);
    } else if (w.startsWith('--')) {
      assignment = w.slice(2);
    } else {
      throw new StartupSettingsError(`startup option "${w}" is not supported by stepgate; only -c name=value is relayed`);
    }
    const eq = assignment.indexOf('=');
    if (eq <= 0) throw new StartupSettingsError(`startup option "${assignment}" must be name=value`);
    // PostgreSQL treats - and _ alike in option names given this way.
    settings.push([assignment.slice(0, eq).replace(/-/g, '_'), assignment.slice(eq + 1)]);
  }
  return settings;
}

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);

/** All settings a startup packet asks for, in the order PostgreSQL applies them (parameters, then options). */
export function startupSettings(params: Map<string, string>): [string, string][] {
  const settings: [string, string][] = [];
  for (const [name, value] of params) if (!NOT_SETTINGS.has(name)) settings.push([name, value]);
  const options = params.get('options');
  if (options) settings.push(...parseOptions(options));
  return settings;
}

/** The SQL a setting amounts to, for classification and rules. */
export function settingAsSql(name: string, value: string): string {
  return `SET ${quoteIdent(name.toLowerCase())} = ${quoteLiteral(value)}`;
}
