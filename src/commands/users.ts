/**
 * `stepgate users add|enroll|list|remove|passwd`: the people who may connect through stepgate, in the
 * store the instances use: the shared state database when the config file (`--config`) has `state:`
 * (every instance sees the change through its notice), else DATA/identity.db (`--data`).
 */
import os from 'node:os';
import { enrollmentLink, resolveConsoleUrl } from '../console/url.js';
import { PostgresIdentityStore } from '../identity/postgres-store.js';
import { SqliteIdentityStore } from '../identity/sqlite-store.js';
import type { Enrollment, IdentityStore } from '../identity/store.js';
import { silentLogger } from '../log.js';
import { makeVerifier } from '../protocol/scram.js';
import { resolveDataDir, resolveState } from '../config.js';
import { openStateDatabase } from '../state/components.js';
import { parse, println, readAll, UsageError, type CommandIO } from './io.js';

export const USERS_HELP = `Usage: stepgate users <add|enroll|list|remove|passwd|groups|disable|enable> [options]

Manage the people who connect through stepgate. Passwords are stored as SCRAM-SHA-256
verifiers (never the password itself) in DATA/identity.db, or, when the config file has
state: postgres://..., in that shared database; a running stepgate sees changes at the
next login, without a restart.

  stepgate users add NAME [--groups a,b] [--password-stdin | --sso]
      Create a user. Without --password-stdin the password is asked for on the terminal.
      Prints a one-time enrollment link: the user opens it to register a passkey, which
      approves the statements stepgate holds for step-up.
      --sso: no password and no link: the person signs in with single sign-on (their first
      sign-in links this user; with groups_claim set, the IdP's groups replace these).
  stepgate users enroll NAME
      A new enrollment link (for a new device, or a lost passkey). Older links of this user
      stop working. A link works once and expires after 24 hours.
  stepgate users passwd NAME [--password-stdin]
      Set a new password.
  stepgate users groups NAME a,b
      Replace the user's groups ("" for none). Takes effect at their next login and approval.
  stepgate users list [--json]
      Show users, their groups and how many passkeys they have.
  stepgate users remove NAME
      Delete a user (with their passkeys).
  stepgate users disable NAME / stepgate users enable NAME
      A disabled user cannot log in (password, token or issued credential), sign in to the
      console or approve anything, at once; their open connections stay open.

Options:
  --data DIR          data directory (default ./.stepgate)
  --config FILE       take the data directory (or the shared state: database) and the
                      console URL from this config file
  --console-url URL   the console's address for enrollment links (default: from the config,
                      else http://localhost:6480)
  --groups a,b        comma-separated groups (rules match on them; "dba" may approve, ...)
  --password-stdin    read the password from standard input (first line)
  --json              machine-readable output (list, add, enroll)
`;

const OPTIONS = {
  data: { type: 'string' },
  config: { type: 'string' },
  'console-url': { type: 'string' },
  groups: { type: 'string' },
  'password-stdin': { type: 'boolean' },
  sso: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function readPassword(io: CommandIO, fromStdin: boolean): Promise<string> {
  if (fromStdin) {
    const text = await readAll(io.stdin);
    const password = text.split(/\r?\n/)[0];
    if (!password) throw new UsageError('no password on standard input');
    return password;
  }
  const stdin = io.stdin as NodeJS.ReadStream;
  if (!stdin.isTTY) throw new UsageError('standard input is not a terminal: pass the password with --password-stdin');
  const first = await promptHidden(io, 'Password: ');
  const second = await promptHidden(io, 'Repeat password: ');
  if (first !== second) throw new UsageError('the passwords do not match');
  if (!first) throw new UsageError('the password must not be empty');
  return first;
}

function promptHidden(io: CommandIO, prompt: string): Promise<string> {
  const stdin = io.stdin as NodeJS.ReadStream;
  io.stderr.write(prompt);
  return new Promise((resolve) => {
    let value = '';
    stdin.setRawMode(true);
    stdin.resume();
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') {
          stdin.setRawMode(false);
          stdin.pause();
          stdin.off('data', onData);
          io.stderr.write('\n');
          resolve(value);
          return;
        }
        if (ch === '\u0003') process.exit(130);
        if (ch === '\u007f') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

export async function usersCommand(args: string[], io: CommandIO): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, OPTIONS);
  if (values.help || !sub || sub === 'help' || sub === '--help' || sub === '-h') {
    println(sub ? io.stdout : io.stderr, USERS_HELP);
    return sub ? 0 : 2;
  }
  // A state database that cannot be reached (or a bad state: section) is said in one line, like other mistakes.
  const { store, close } = await openStore(values).catch((err: Error) => {
    throw err instanceof UsageError ? err : new UsageError(err.message);
  });
  try {
    switch (sub) {
      case 'add': {
        const name = onePositional(positionals, 'users add NAME');
        const groups = values.groups ? values.groups.split(',').map((g) => g.trim()).filter(Boolean) : [];
        if (store.getUser(name)) throw new UsageError(`user "${name}" already exists (use "stepgate users passwd ${name}" to change the password)`);
        if (values.sso) {
          await store.addUser(name, groups, null);
          if (values.json) println(io.stdout, JSON.stringify({ user: name, groups, sso: true }));
          else println(io.stdout, `added user ${name}${groups.length ? ` (groups: ${groups.join(', ')})` : ''}: signs in with single sign-on`);
          return 0;
        }
        const password = await readPassword(io, values['password-stdin'] ?? false);
        await store.addUser(name, groups, makeVerifier(password));
        const enrollment = await store.issueEnrollment(name);
        const link = enrollmentLink(resolveConsoleUrl({ config: values.config, consoleUrl: values['console-url'] }), enrollment.token);
        if (values.json) {
          println(io.stdout, JSON.stringify({ user: name, groups, enrollmentLink: link, expires: enrollment.expiresAt.toISOString() }));
        } else {
          println(io.stdout, `added user ${name}${groups.length ? ` (groups: ${groups.join(', ')})` : ''}`);
          printEnrollment(io, enrollment, link);
        }
        return 0;
      }
      case 'enroll': {
        const name = onePositional(positionals, 'users enroll NAME');
        if (!store.getUser(name)) throw new UsageError(`no user "${name}"`);
        const enrollment = await store.issueEnrollment(name);
        const link = enrollmentLink(resolveConsoleUrl({ config: values.config, consoleUrl: values['console-url'] }), enrollment.token);
        if (values.json) {
          println(io.stdout, JSON.stringify({ user: name, enrollmentLink: link, expires: enrollment.expiresAt.toISOString() }));
        } else {
          const count = store.passkeyCount(name);
          println(io.stdout, `new enrollment link for ${name} (older links no longer work)${count ? `; ${name} has ${count} passkey${count > 1 ? 's' : ''} already, this adds one` : ''}`);
          printEnrollment(io, enrollment, link);
        }
        return 0;
      }
      case 'passwd': {
        const name = onePositional(positionals, 'users passwd NAME');
        if (!store.getUser(name)) throw new UsageError(`no user "${name}"`);
        await store.setVerifier(name, makeVerifier(await readPassword(io, values['password-stdin'] ?? false)));
        println(io.stdout, `password of ${name} changed`);
        return 0;
      }
      case 'groups': {
        if (positionals.length !== 2) throw new UsageError('usage: stepgate users groups NAME a,b');
        const [name, list] = positionals as [string, string];
        const groups = list.split(',').map((g) => g.trim()).filter(Boolean);
        await store.setGroups(name, groups);
        println(io.stdout, `groups of ${name}: ${groups.join(', ') || '(none)'}`);
        return 0;
      }
      case 'list': {
        const users = store.listUsers();
        if (values.json) {
          println(
            io.stdout,
            JSON.stringify(
              users.map((u) => ({
                name: u.name,
                groups: u.groups,
                passkeys: store.passkeyCount(u.name),
                totp: store.totpSecret(u.name) !== null,
                sso: u.ssoSubject !== null,
                disabled: u.disabled,
                created: u.createdAt.toISOString(),
              })),
            ),
          );
        } else if (users.length === 0) {
          println(io.stdout, 'no users yet: stepgate users add NAME');
        } else {
          const width = Math.max(4, ...users.map((u) => u.name.length));
          const groupsWidth = Math.max(6, ...users.map((u) => (u.groups.join(',') || '-').length));
          println(io.stdout, `${'NAME'.padEnd(width)}  ${'GROUPS'.padEnd(groupsWidth)}  PASSKEYS  TOTP  LOGIN`);
          for (const u of users) {
            const login = `${u.ssoSubject ? 'sso' : 'local'}${u.disabled ? ' (disabled)' : ''}`;
            println(io.stdout, `${u.name.padEnd(width)}  ${(u.groups.join(',') || '-').padEnd(groupsWidth)}  ${String(store.passkeyCount(u.name)).padEnd(8)}  ${(store.totpSecret(u.name) ? 'yes' : 'no').padEnd(4)}  ${login}`);
          }
        }
        return 0;
      }
      case 'disable':
      case 'enable': {
        const name = onePositional(positionals, `users ${sub} NAME`);
        await store.setDisabled(name, sub === 'disable');
        println(io.stdout, `${name} is ${sub === 'disable' ? 'disabled: no new logins, console sign-ins or approvals' : 'enabled'}`);
        return 0;
      }
      case 'remove': {
        const name = onePositional(positionals, 'users remove NAME');
        if (!(await store.removeUser(name))) throw new UsageError(`no user "${name}"`);
        println(io.stdout, `removed user ${name}`);
        return 0;
      }
      default:
        throw new UsageError(`unknown users command "${sub}"; use add, enroll, passwd, groups, list, disable, enable or remove`);
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError((err as Error).message);
  } finally {
    await close();
  }
}

/** The shared store when the config file has `state:`, else DATA/identity.db. */
async function openStore(values: { data?: string; config?: string }): Promise<{ store: IdentityStore; close(): Promise<void> }> {
  const state = resolveState(values);
  if (!state) {
    const store = new SqliteIdentityStore(resolveDataDir(values));
    return { store, close: async () => store.close() };
  }
  // Both would be a guess at which store was meant: a change made in the wrong one is silently ignored.
  if (values.data) throw new UsageError(`${values.config} has state: (users are in the shared database there): drop --data, or drop --config to use ${values.data}`);
  const db = await openStateDatabase(state, `cli:${os.hostname()}:${process.pid}`, silentLogger);
  try {
    const store = await PostgresIdentityStore.open(db, silentLogger);
    return {
      store,
      close: async () => {
        store.close();
        await db.close();
      },
    };
  } catch (err) {
    await db.close();
    throw err;
  }
}

function printEnrollment(io: CommandIO, enrollment: Enrollment, link: string): void {
  println(io.stdout, '');
  println(io.stdout, `Enrollment link for ${enrollment.user} (works once, until ${enrollment.expiresAt.toISOString().replace(/\.\d+Z$/, 'Z')}):`);
  println(io.stdout, `  ${link}`);
  println(io.stdout, '');
  println(io.stdout, 'Send it to them privately: whoever opens it first registers a passkey for this user.');
}

function onePositional(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw new UsageError(`usage: stepgate ${usage}`);
  return positionals[0];
}
