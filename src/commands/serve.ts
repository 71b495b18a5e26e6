/**
 * `stepgate serve`: run the proxy until SIGINT or SIGTERM.
 */
import { startApp } from '../app.js';
import { ConfigError, loadConfig, type ConfigFlags } from '../config.js';
import { createLogger, type Level } from '../log.js';
import { RuleLoadError } from '../rules/load.js';
import { formatRuleError } from '../rules/errors.js';
import { lockDataDir, type OwnerLock } from '../util/owner-lock.js';
import { reportToPrimary, runPrimary, workerConfig, workerIndex, workerStopSignals } from './cluster.js';
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

With state: in the config, instances share users, held statements, grants, console
sign-ins and the audit trail; with workers: N, serve runs N worker processes on one port
(see README: Several instances).

Logs are JSON lines on standard error. A bad config exits with status 2 and names
the file, line and what to fix; another stepgate using the same data directory, with
status 1 ("another stepgate (pid N) is using DIR").

SIGINT or SIGTERM stops stepgate as PostgreSQL does: new connections get FATAL 57P03,
running statements may finish within limits.shutdown_timeout (default 10s), then every
client gets FATAL 57P01 (its server rolls back an open transaction), held statements end
with the outcome "shutdown", and the audit trail is closed; exit status 0. A second
signal stops at once (exit status 1).
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

export interface StopSignals {
  /** Resolves on the first SIGINT or SIGTERM: stop in order. */
  first: Promise<NodeJS.Signals>;
  /** What a second signal does: stop at once (default: exit with status 1). */
  onAgain(handler: (signal: NodeJS.Signals) => void): void;
  /** Stops listening (the process's default handling applies again). */
  dispose(): void;
}

/**
 * SIGINT and SIGTERM, as PostgreSQL treats them: the first starts an orderly shutdown, a second one
 * (an impatient Ctrl-C) stops at once.
 */
export function stopSignals(): StopSignals {
  let count = 0;
  let again: (signal: NodeJS.Signals) => void = () => process.exit(1);
  let resolveFirst!: (signal: NodeJS.Signals) => void;
  const first = new Promise<NodeJS.Signals>((resolve) => (resolveFirst = resolve));
  const on = (signal: NodeJS.Signals): void => {
    if (count++ === 0) resolveFirst(signal);
    else again(signal);
  };
  process.on('SIGINT', on);
  process.on('SIGTERM', on);
  return {
    first,
    onAgain: (handler) => (again = handler),
    dispose: () => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    },
  };
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
  const index = workerIndex();
  const signals = index === null ? stopSignals() : workerStopSignals();
  let app;
  let lock: OwnerLock | null = null;
  let config;
  try {
    config = loadConfig(configFlags(values));
    if (config.workers > 1 && index === null) {
      // The primary of `workers: N` (src/commands/cluster.ts): it runs no proxy itself.
      const code = await runPrimary(config, log, signals);
      signals.dispose();
      return code;
    }
    let worker;
    if (index !== null) ({ config, worker } = workerConfig(config, index));
    // Before anything in the data directory is touched: one stepgate per data directory.
    lock = lockDataDir(config.dataDir);
    app = await startApp(config, log, worker ? { worker } : {});
    if (index !== null) reportToPrimary(app);
  } catch (err) {
    lock?.release();
    signals.dispose();
    const code = reportStartupError(err, io);
    if (code !== null) return code;
    println(io.stderr, `stepgate: ${(err as Error).message}`);
    return 1;
  }
  const signal = await signals.first;
  const timeoutMs = config.limits.shutdownTimeoutMs;
  log.info('stepgate.stopping', { signal, shutdown_timeout_ms: timeoutMs, note: 'running statements may finish; a second signal stops at once' });
  signals.onAgain((again) => {
    log.warn('stepgate.stopping_now', { signal: again, note: 'second signal: not waiting for sessions or the audit trail' });
    process.exit(1);
  });
  await app.close({ timeoutMs });
  lock.release();
  signals.dispose();
  log.info('stepgate.stopped', {});
  // A worker's channel to the primary would keep this process alive.
  if (index !== null) process.disconnect?.();
  return 0;
}
