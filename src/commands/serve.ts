/**
 * `stepgate serve`: run the proxy until SIGINT or SIGTERM.
 */
import { startApp } from '../app.js';
import { ConfigError, loadConfig, type ConfigFlags } from '../config.js';
import { createLogger, type Level } from '../log.js';
import { RuleLoadError } from '../rules/load.js';
import { formatRuleError } from '../rules/errors.js';
import { lockDataDir, type OwnerLock } from '../util/owner-lock.js';
import { parse, println, UsageError, type CommandIO } from './io.js';

export const SERVE_HELP = `Usage: stepgate serve [options]

Run the proxy: clients connect to stepgate as if it were PostgreSQL; stepgate logs in to the
real server with its own credentials and checks every statement against the rules.

Options (override the config file):
  --config FILE           YAML config file (see README: Configuration)
  --listen HOST:PORT      where clients connect (default 127.0.0.1:6432)
  --upstream URL          postgres://USER:PASSWORD@HOST:PORT/DB: the server and the
                          credentials stepgate uses (?sslmode=require|verify-full for TLS,
                          ?host=/dir for a Unix socket)
  --data DIR              users, keys and audit trail (default ./.stepgate)
  --rules DIR             rule files (default: the rules/ shipped with stepgate)
  --tls-cert FILE         certificate for clients that ask for TLS
  --tls-key FILE          its private key
  --require-tls           refuse clients that do not use TLS
  --console HOST:PORT     web console for step-up approvals (default 127.0.0.1:6480)
  --log-level LEVEL       debug, info, warn or error (default info)

Logs are JSON lines on standard error. A bad config exits with status 2 and names
the file, line and what to fix. SIGINT or SIGTERM stops stepgate; open sessions are closed
and their servers roll back open transactions.
`;

const OPTIONS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  upstream: { type: 'string' },
  data: { type: 'string' },
  rules: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'require-tls': { type: 'boolean' },
  console: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function configFlags(values: Record<string, string | boolean | undefined>): ConfigFlags {
  return {
    config: values.config as string | undefined,
    listen: values.listen as string | undefined,
    upstream: values.upstream as string | undefined,
    data: values.data as string | undefined,
    rules: values.rules as string | undefined,
    tlsCert: values['tls-cert'] as string | undefined,
    tlsKey: values['tls-key'] as string | undefined,
    requireTls: values['require-tls'] as boolean | undefined,
    console: values.console as string | undefined,
  };
}

export function logLevel(value: string | undefined): Level {
  const level = value ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError(`--log-level must be debug, info, warn or error`);
  return level as Level;
}

/** Prints startup problems people can fix; returns the exit code, or null when the error is not one of them. */
export function reportStartupError(err: unknown, io: CommandIO): number | null {
  if (err instanceof ConfigError) {
    for (const p of err.problems) println(io.stderr, `stepgate: config error: ${p}`);
    return 2;
  }
  if (err instanceof RuleLoadError) {
    for (const e of err.errors) println(io.stderr, `stepgate: rules error: ${formatRuleError(e)}`);
    println(io.stderr, 'stepgate: fix the rules (stepgate rules check DIR lists every problem) and start again');
    return 2;
  }
  return null;
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

export async function serveCommand(args: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parse(args, OPTIONS, false);
  if (values.help) {
    println(io.stdout, SERVE_HELP);
    return 0;
  }
  void positionals;
  const log = createLogger({ level: logLevel(values['log-level']) });
  // Listening for signals before anything starts: a SIGTERM during startup still shuts down in order.
  const stopRequested = untilSignal();
  let app;
  let lock: OwnerLock | null = null;
  try {
    const config = loadConfig(configFlags(values));
    // Before anything in the data directory is touched: one stepgate per data directory.
    lock = lockDataDir(config.dataDir);
    app = await startApp(config, log);
  } catch (err) {
    lock?.release();
    const code = reportStartupError(err, io);
    if (code !== null) return code;
    println(io.stderr, `stepgate: ${(err as Error).message}`);
    return 1;
  }
  const signal = await stopRequested;
  log.info('stepgate.stopping', { signal });
  await app.close();
  lock.release();
  return 0;
}
