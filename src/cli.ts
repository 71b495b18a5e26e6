/**
 * The `stepgate` command: dispatches to subcommands, prints help, maps usage errors to exit 2.
 */
import { auditCommand, AUDIT_HELP } from './commands/audit.js';
import { demoCommand, DEMO_HELP } from './commands/demo.js';
import { processIO, println, UsageError, type CommandIO } from './commands/io.js';
import { loginCommand, LOGIN_HELP } from './commands/login.js';
import { serveCommand, SERVE_HELP } from './commands/serve.js';
import { usersCommand, USERS_HELP } from './commands/users.js';
import { rulesCheck, rulesExplain, rulesTest, RULES_CHECK_HELP, RULES_EXPLAIN_HELP, RULES_TEST_HELP } from './commands/rules.js';

export const HELP = `stepgate: a PostgreSQL proxy with query-level step-up authentication

Usage: stepgate <command> [options]

Commands:
  serve                 run the proxy (see stepgate serve --help)
  demo                  stepgate in front of an embedded PostgreSQL with sample data
  users add|enroll|passwd|groups|list|disable|enable|remove
                        the people who connect through stepgate, and their
                        passkey enrollment links
  login                 a short-lived database credential for you (single sign-on)
  rules check [DIR]     validate rule files
  rules explain SQL     show how a statement is classified and decided
  rules test [DIR]      run the rule test cases (*.test.yaml)
  audit verify|sessions|replay|export|pubkey
                        check, read and export the audit trail
  help [COMMAND]        help for a command

step-up approvals happen in the web console (default http://localhost:6480), which
stepgate serve starts next to the proxy: people register a passkey there with their
enrollment link and approve held statements with it. See docs/console.md.

Every command takes --help. Exit status: 0 success, 1 failure, 2 usage or configuration error
(audit verify: 3 when the trail is intact but with warnings).
`;

const RULES_HELP = `Usage: stepgate rules <check|explain|test> ...

${RULES_CHECK_HELP}
${RULES_EXPLAIN_HELP}
${RULES_TEST_HELP}`;

type Command = (args: string[], io: CommandIO) => Promise<number>;

async function rulesCommand(args: string[], io: CommandIO): Promise<number> {
  const [sub, ...rest] = args;
  const commands: Record<string, Command> = { check: rulesCheck, explain: rulesExplain, test: rulesTest };
  const command = sub ? commands[sub] : undefined;
  if (!command) {
    println(sub === '--help' || sub === '-h' ? io.stdout : io.stderr, RULES_HELP);
    return sub === '--help' || sub === '-h' ? 0 : 2;
  }
  return command(rest, io);
}

const COMMANDS: Record<string, { run: Command; help: string }> = {
  serve: { run: serveCommand, help: SERVE_HELP },
  demo: { run: demoCommand, help: DEMO_HELP },
  users: { run: usersCommand, help: USERS_HELP },
  login: { run: loginCommand, help: LOGIN_HELP },
  rules: { run: rulesCommand, help: RULES_HELP },
  audit: { run: auditCommand, help: AUDIT_HELP },
};

export async function main(argv: string[], io: CommandIO = processIO): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h') {
    println(name ? io.stdout : io.stderr, HELP);
    return name ? 0 : 2;
  }
  if (name === 'help') {
    const topic = args[0] ? COMMANDS[args[0]] : undefined;
    println(io.stdout, topic ? topic.help : HELP);
    return 0;
  }
  if (name === '--version' || name === 'version') {
    println(io.stdout, 'stepgate 0.1.0');
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    println(io.stderr, `stepgate: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  try {
    return await command.run(args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      println(io.stderr, `stepgate ${name}: ${err.message}\nRun "stepgate ${name} --help" for usage.`);
      return 2;
    }
    throw err;
  }
}
