/**
 * `stepgate login`: a short-lived database credential for the person at this terminal, confirmed in the
 * console. Like the OAuth device flow, but between stepgate's own CLI and console (the IdP sees an
 * ordinary console sign-in): the terminal asks the console for a one-time code, the person opens the link
 * (signed in to the console by single sign-on), checks that the code matches and confirms; the terminal
 * then collects the credential once and prints a ready psql line and a .pgpass entry.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { resolveConsoleUrl } from '../console/url.js';
import { parse, println, UsageError, type CommandIO } from './io.js';

export const LOGIN_HELP = `Usage: stepgate login [--console-url URL | --config FILE] [--pgpass [FILE]] [--label TEXT] [--json]

Gets a short-lived database credential (a random password, valid for sso.credential_ttl,
8 hours by default, revocable in the console) for you. Prints a link and a code; open the link,
sign in (single sign-on), check the code and confirm. Then it prints a psql command line and
a .pgpass entry.

Options:
  --console-url URL   the stepgate console (default: from --config, else http://localhost:6480)
  --config FILE       take the console URL from this config file
  --pgpass            also write the entry to ~/.pgpass (or --pgpass=FILE), replacing an
                      older entry for the same host, port and user (the file is made 0600)
  --label TEXT        what the console lists the credential as (default: stepgate login on HOST)
  --json              print the result as JSON (password included)
  --timeout DURATION  how long to wait for the confirmation (seconds; default 600)
`;

const OPTIONS = {
  'console-url': { type: 'string' },
  config: { type: 'string' },
  pgpass: { type: 'string' },
  label: { type: 'string' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

interface Issued {
  user: string;
  password: string;
  host: string;
  port: number;
  sslmode: string;
  psql: string;
  pgpass: string;
  credential: { id: string; expiresAt: number };
}

export async function loginCommand(args: string[], io: CommandIO, options: { sleep?: (ms: number) => Promise<void> } = {}): Promise<number> {
  // `--pgpass` alone means ~/.pgpass.
  const normalized = args.map((a) => (a === '--pgpass' ? `--pgpass=${path.join(os.homedir(), '.pgpass')}` : a));
  const { values, positionals } = parse(normalized, OPTIONS, false);
  if (values.help) {
    println(io.stdout, LOGIN_HELP);
    return 0;
  }
  if (positionals.length) throw new UsageError('stepgate login takes no arguments');
  const base = resolveConsoleUrl({ config: values.config, consoleUrl: values['console-url'] });
  const origin = new URL(base).origin;
  const timeoutMs = values.timeout ? Number(values.timeout) * 1000 : 600_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new UsageError('--timeout takes a number of seconds');
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const call = async (p: string, body: unknown): Promise<{ status: number; data: Record<string, unknown> }> => {
    let res: Response;
    try {
      res = await fetch(`${base}${p}`, {
        method: 'POST',
        headers: { 'x-stepgate': '1', 'content-type': 'application/json', origin },
        body: JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`cannot reach the stepgate console at ${base}: ${(err as Error).cause ? String((err as { cause: Error }).cause.message) : (err as Error).message}`);
    }
    return { status: res.status, data: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  };

  try {
    return await pair(io, call, values, timeoutMs, sleep);
  } catch (err) {
    println(io.stderr, `stepgate login: ${(err as Error).message}`);
    return 1;
  }
}

async function pair(
  io: CommandIO,
  call: (p: string, body: unknown) => Promise<{ status: number; data: Record<string, unknown> }>,
  values: { label?: string; pgpass?: string; json?: boolean },
  timeoutMs: number,
  sleep: (ms: number) => Promise<void>,
): Promise<number> {
  const label = values.label ?? `stepgate login on ${os.hostname()}`.slice(0, 64);
  const start = await call('/api/cli/start', { label });
  if (start.status !== 200) {
    println(io.stderr, `stepgate login: the console refused: ${String(start.data.error ?? start.status)}`);
    return 1;
  }
  const { device, code, url } = start.data as { device: string; code: string; url: string };
  const interval = Math.max(200, Number(start.data.intervalMs ?? 1000));
  println(io.stderr, `Open this link, sign in and check that it shows the code ${code}:`);
  println(io.stderr, `  ${url}`);
  println(io.stderr, 'Waiting for your confirmation (Ctrl-C to give up) ...');

  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const poll = await call('/api/cli/poll', { device });
    if (poll.status === 404) {
      println(io.stderr, 'stepgate login: the request expired before it was confirmed; run stepgate login again');
      return 1;
    }
    if (poll.status !== 200) {
      println(io.stderr, `stepgate login: ${String(poll.data.error ?? poll.status)}`);
      return 1;
    }
    if (poll.data.status === 'denied') {
      println(io.stderr, 'stepgate login: refused in the console');
      return 1;
    }
    if (poll.data.status === 'approved') return printIssued(io, poll.data as unknown as Issued, values);
    if (Date.now() > deadline) {
      println(io.stderr, 'stepgate login: nobody confirmed in time');
      return 1;
    }
    await sleep(interval);
  }
}

function printIssued(io: CommandIO, issued: Issued, values: { pgpass?: string; json?: boolean }): number {
  if (values.pgpass) writePgpass(values.pgpass, issued);
  if (values.json) {
    println(io.stdout, JSON.stringify({ user: issued.user, password: issued.password, host: issued.host, port: issued.port, sslmode: issued.sslmode, expiresAt: new Date(issued.credential.expiresAt).toISOString(), psql: issued.psql, pgpass: issued.pgpass }));
    return 0;
  }
  println(io.stdout, `Database credential for ${issued.user}, valid until ${new Date(issued.credential.expiresAt).toISOString().replace(/\.\d+Z$/, 'Z')}:`);
  println(io.stdout, '');
  println(io.stdout, `  PGPASSWORD='${issued.password}' ${issued.psql}`);
  println(io.stdout, '');
  println(io.stdout, values.pgpass ? `Written to ${values.pgpass}:` : '.pgpass entry (or run stepgate login --pgpass):');
  println(io.stdout, `  ${issued.pgpass}`);
  return 0;
}

/** Replaces this host:port:*:user's entry in a .pgpass file (created 0600). */
function writePgpass(file: string, issued: Issued): void {
  const prefix = issued.pgpass.slice(0, issued.pgpass.lastIndexOf(':') + 1);
  let lines: string[] = [];
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith(prefix));
  } catch {
    lines = [];
  }
  lines.push(issued.pgpass);
  fs.writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  fs.chmodSync(file, 0o600);
}
