/**
 * `stepgate rules check|explain|test`. Each command takes its arguments and streams and returns the exit
 * code: 0 success, 1 a problem with the rules or a failing test, 2 a usage error.
 */
import { isIP } from 'node:net';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { CompiledRuleSet } from '../rules/decide.js';
import { formatRuleError, sortRuleErrors, type RuleError } from '../rules/errors.js';
import { explain, explanationJson, formatExplanationText, type Classify } from '../rules/explain.js';
import { loadRules, type LoadedRules } from '../rules/load.js';
import { shippedRulesDir } from '../rules/package-root.js';
import { DEFAULT_SUBJECT } from '../rules/subject.js';
import { checkCaseRuleNames, loadTestFiles } from '../rules/testfile.js';
import { runCase } from '../rules/testrun.js';
import type { Subject } from '../rules/types.js';
import type { CommandIO } from './io.js';


export const RULES_CHECK_HELP = `Usage: stepgate rules check [DIR]

Validates the rule files (*.yaml, *.yml) and rule tests (*.test.yaml) in DIR
(default: the rules/ shipped with stepgate). Prints every error as
file:line:column with what is wrong and how to fix it, and warns about rules
that can never decide anything (another rule matches every statement they
match and decides first; a matching deny wins regardless of order).

Exit status: 0 when valid (warnings or not), 1 when there are errors, 2 on a
usage error.
`;

export const RULES_EXPLAIN_HELP = `Usage: stepgate rules explain [options] SQL

Shows how stepgate classifies SQL (every statement: command, classes, tables,
columns, functions, flags, reasons) and which rule decides it, and why.
SQL "-" reads the statements from standard input.

Options:
  --rules DIR          rules directory (default: the rules/ shipped with stepgate)
  --user U             user name (default: $USER, or stepgate)
  --groups g,h         the user's groups (default: none)
  --database D         database (default: postgres)
  --application A      application_name (default: psql)
  --client ADDR        client IP address (default: 127.0.0.1)
  --tls                the client connected with TLS
  --at TIME            decide as of this ISO 8601 time (default: now), for time windows
  --signal NAME[=N]    a risk signal holds (repeatable): new_client_address, new_application,
                       first_access, recent_login_failures=N (N failed logins just now)
  --json               print one JSON object instead of text
  -h, --help           show this help

Exit status: 0 when explained, 1 when the rules are invalid, 2 on a usage error.
`;

export const RULES_TEST_HELP = `Usage: stepgate rules test [--verbose] [DIR]

Runs every case in DIR/*.test.yaml (default: the rules/ shipped with stepgate)
against the rules in DIR and prints each failure with its explanation.

  --verbose            also list the cases that pass

Exit status: 0 when every case passes, 1 on a failure, invalid rules or no
test cases, 2 on a usage error.
`;

type Options = NonNullable<ParseArgsConfig['options']>;

interface ParsedArgs {
  values: Record<string, string | boolean | Array<string | boolean> | undefined>;
  positionals: string[];
}

/** Parses arguments; on a usage error prints it with the help text and returns null. */
function parse(args: string[], options: Options, help: string, io: CommandIO): ParsedArgs | null {
  try {
    return parseArgs({ args, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true });
  } catch (error) {
    write(io.stderr, `${(error as Error).message}\n\n${help}`);
    return null;
  }
}

function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text);
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

function printErrors(stream: NodeJS.WritableStream, errors: RuleError[]): void {
  for (const error of sortRuleErrors(errors)) write(stream, `${formatRuleError(error)}\n`);
  write(stream, `${plural(errors.length, 'error')}\n`);
}

/**
 * Rule files and test files of a directory, every error printed (rule files, test files, test cases naming
 * rules that do not exist); `tests` is null when there were errors.
 */
async function loadDirectory(dir: string, io: CommandIO) {
  const loaded = await loadRules(dir);
  const tests = await loadTestFiles(dir, new Date());
  const errors = loaded.ok ? [...tests.errors, ...checkCaseRuleNames(tests.cases, ruleNames(loaded.rules))] : [...loaded.errors, ...tests.errors];
  if (errors.length > 0) {
    printErrors(io.stdout, errors);
    return { loaded, tests: null };
  }
  return { loaded, tests };
}

/** `stepgate rules check [DIR]` */
export async function rulesCheck(args: string[], io: CommandIO): Promise<number> {
  const parsed = parse(args, {}, RULES_CHECK_HELP, io);
  if (parsed === null) return 2;
  if (parsed.values['help']) return write(io.stdout, RULES_CHECK_HELP), 0;
  if (parsed.positionals.length > 1) return write(io.stderr, `expected at most one directory\n\n${RULES_CHECK_HELP}`), 2;
  const { loaded, tests } = await loadDirectory(parsed.positionals[0] ?? shippedRulesDir(), io);
  if (!loaded.ok || !tests) return 1;
  const warnings = sortRuleErrors(loaded.rules.warnings);
  for (const warning of warnings) write(io.stdout, `${formatRuleWarning(warning)}\n`);
  write(
    io.stdout,
    `${summary(loaded.rules)}; ${plural(tests.files.length, 'test file')}, ${plural(tests.cases.length, 'case')}${warnings.length ? `; ${plural(warnings.length, 'warning')}` : ''}\n`,
  );
  return 0;
}

/** `file:line:column: warning: message` and the fix, like errors. */
function formatRuleWarning(warning: RuleError): string {
  return formatRuleError({ ...warning, message: `warning: ${warning.message}` });
}

function ruleNames(rules: LoadedRules): string[] {
  return rules.ruleSet.rules.map((rule) => rule.spec.name);
}

function summary(rules: LoadedRules): string {
  const defaultSource = rules.defaultFile ?? 'no file sets it: fail closed';
  return `rules OK: ${plural(rules.files.length, 'file')}, ${plural(rules.ruleCount, 'rule')}, default ${rules.defaultAction} (${defaultSource})`;
}

/** `stepgate rules explain [options] SQL` */
export async function rulesExplain(args: string[], io: CommandIO): Promise<number> {
  const parsed = parse(
    args,
    {
      rules: { type: 'string' },
      user: { type: 'string' },
      groups: { type: 'string' },
      database: { type: 'string' },
      application: { type: 'string' },
      client: { type: 'string' },
      tls: { type: 'boolean' },
      at: { type: 'string' },
      signal: { type: 'string', multiple: true },
      json: { type: 'boolean' },
    },
    RULES_EXPLAIN_HELP,
    io,
  );
  if (parsed === null) return 2;
  const { values, positionals } = parsed;
  if (values['help']) return write(io.stdout, RULES_EXPLAIN_HELP), 0;
  if (positionals.length === 0) return write(io.stderr, `missing SQL\n\n${RULES_EXPLAIN_HELP}`), 2;
  const sql = positionals.length === 1 && positionals[0] === '-' ? await readAll(io.stdin) : positionals.join(' ');
  const text = (name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const at = text('at');
  const subject: Subject = {
    ...DEFAULT_SUBJECT,
    user: text('user') ?? (process.env['USER'] || DEFAULT_SUBJECT.user),
    groups: (text('groups') ?? '').split(',').map((g) => g.trim()).filter(Boolean),
    database: text('database') ?? DEFAULT_SUBJECT.database,
    application: text('application') ?? DEFAULT_SUBJECT.application,
    clientAddress: text('client') ?? DEFAULT_SUBJECT.clientAddress,
    tls: values['tls'] === true,
    now: at === undefined ? new Date() : new Date(at),
  };
  if (isIP(subject.clientAddress) === 0) return write(io.stderr, `--client: \`${subject.clientAddress}\` is not an IP address\n`), 2;
  const signals = values['signal'];
  if (Array.isArray(signals) && signals.length > 0) {
    const made = signalsFromOptions(signals.map(String), subject.now.getTime());
    if (typeof made === 'string') return write(io.stderr, `--signal: ${made}\n`), 2;
    subject.signals = made;
  }
  if (Number.isNaN(subject.now.getTime())) return write(io.stderr, `--at: \`${at}\` is not an ISO 8601 time\n`), 2;
  const loaded = await loadRules(text('rules') ?? shippedRulesDir());
  if (!loaded.ok) {
    write(io.stderr, 'The rules are invalid, so nothing can be decided:\n');
    printErrors(io.stderr, loaded.errors);
    return 1;
  }
  const explanation = explain(sql, await loadClassifier(), loaded.rules.ruleSet, subject);
  if (values['json'] === true) write(io.stdout, `${JSON.stringify(explanationJson(explanation), null, 2)}\n`);
  else write(io.stdout, formatExplanationText(explanation));
  return 0;
}

/** `--signal` options as the records they stand for (everything else: known, no failures). */
export function signalsFromOptions(options: string[], now: number): NonNullable<Subject['signals']> | string {
  const signals: NonNullable<Subject['signals']> = { network: 'as given', networkLastSeen: now, applicationLastSeen: now, failures: [], firstAccess: () => false };
  for (const option of options) {
    const [name, value] = option.split('=', 2) as [string, string | undefined];
    switch (name) {
      case 'new_client_address':
        signals.networkLastSeen = null;
        break;
      case 'new_application':
        signals.applicationLastSeen = null;
        break;
      case 'first_access':
        signals.firstAccess = () => true;
        break;
      case 'recent_login_failures': {
        const n = Number(value ?? '1');
        if (!Number.isInteger(n) || n < 1 || n > 100) return 'recent_login_failures=N takes a number of failed logins from 1 to 100';
        signals.failures = Array.from({ length: n }, (_, i) => now - 1000 * (i + 1));
        break;
      }
      default:
        return `unknown signal \`${name}\`: the signals are new_client_address, new_application, first_access and recent_login_failures=N`;
    }
  }
  return signals;
}

/** `stepgate rules test [DIR]` */
export async function rulesTest(args: string[], io: CommandIO): Promise<number> {
  const parsed = parse(args, { verbose: { type: 'boolean', short: 'v' } }, RULES_TEST_HELP, io);
  if (parsed === null) return 2;
  if (parsed.values['help']) return write(io.stdout, RULES_TEST_HELP), 0;
  if (parsed.positionals.length > 1) return write(io.stderr, `expected at most one directory\n\n${RULES_TEST_HELP}`), 2;
  const dir = parsed.positionals[0] ?? shippedRulesDir();
  const { loaded, tests } = await loadDirectory(dir, io);
  if (!loaded.ok || !tests) return 1;
  if (tests.cases.length === 0) {
    write(io.stdout, `no test cases: add *.test.yaml files to ${dir} (see docs/rules.md)\n`);
    return 1;
  }
  const verbose = parsed.values['verbose'] === true;
  const failed = runCases(loaded.rules.ruleSet, tests.cases, await loadClassifier(), io.stdout, verbose);
  const passed = tests.cases.length - failed;
  const gap = failed > 0 || verbose ? '\n' : '';
  write(io.stdout, `${gap}${passed} passed, ${failed} failed (${plural(tests.cases.length, 'case')} in ${plural(tests.files.length, 'test file')})\n`);
  return failed === 0 ? 0 : 1;
}

function runCases(
  ruleSet: CompiledRuleSet,
  cases: Parameters<typeof runCase>[0][],
  classify: Classify,
  out: NodeJS.WritableStream,
  verbose: boolean,
): number {
  let failed = 0;
  for (const testCase of cases) {
    const result = runCase(testCase, classify, ruleSet);
    const where = `${testCase.at.file}:${testCase.at.line}:${testCase.at.column}`;
    const label = testCase.name || oneLine(testCase.sql);
    if (result.passed) {
      if (verbose) write(out, `ok   ${where} ${label}\n`);
      continue;
    }
    failed++;
    write(out, `FAIL ${where} ${label}\n  ${result.problem}\n`);
    write(out, indent(formatExplanationText(result.explanation), '    '));
  }
  return failed;
}

function oneLine(sql: string): string {
  const text = sql.replace(/\s+/g, ' ').trim();
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function indent(text: string, prefix: string): string {
  return text.replace(/^(?=.)/gm, prefix);
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The real classifier, loaded only by the commands that classify (`check` needs no parser). Context as for
 * a fresh session: standard_conforming_strings on, no prepared statements, no catalog look-ups.
 */
async function loadClassifier(): Promise<Classify> {
  const { initParser } = await import('../sql/parser.js');
  const { classify } = await import('../sql/classify.js');
  await initParser();
  return (sql) => classify(sql, { standardConformingStrings: true });
}
