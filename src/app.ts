/**
 * Wires a running stepgate from its configuration: users, rules (hot-reloaded), the classifier, the
 * step-up broker and its web console, the audit trail and the proxy listener. `serve` and `demo` both
 * start one.
 */
import type net from 'node:net';
import { recordMissingPasskeys } from './audit/passkey-keys.js';
import { AuditStore } from './audit/store.js';
import type { AuditSink } from './audit/types.js';
import type { Config } from './config.js';
import { ConsoleServer } from './console/server.js';
import { SignalRecords } from './identity/signals.js';
import { SsoProvider, type SsoOptions } from './identity/sso.js';
import { IdentityStore } from './identity/store.js';
import { TouchRecordingSink } from './identity/touches.js';
import type { Logger } from './log.js';
import { ProxyServer, type ProxyServices } from './proxy/server.js';
import { formatRuleErrorOneLine } from './rules/errors.js';
import type { LoadedRules } from './rules/load.js';
import { watchRules, type RuleWatcher } from './rules/watch.js';
import { ClassificationCache } from './sql/cache.js';
import { OffThreadClassifier } from './sql/offload.js';
import { initParser } from './sql/parser.js';
import { ConsoleBroker } from './stepup/broker.js';
import type { StepUpBroker } from './stepup/types.js';

export interface App {
  config: Config;
  identity: IdentityStore;
  rules: RuleWatcher;
  proxy: ProxyServer;
  proxyAddress: net.AddressInfo;
  /** What holds step-up statements: the console's broker, or the override. */
  stepUp: StepUpBroker;
  /** The console's broker; null when `overrides.stepUp` replaced it. */
  broker: ConsoleBroker | null;
  /** The web console (passkeys, approvals); null when `overrides.stepUp` replaced the broker. */
  console: ConsoleServer | null;
  /** The console's public URL (http://localhost:6480 ...); null without a console. */
  consoleUrl: string | null;
  /** The audit trail: DATA/audit.db, or the override. (The proxy writes to it through the recorder of touched tables.) */
  audit: AuditSink;
  /** Single sign-on; null without `sso:` in the config. */
  sso: SsoProvider | null;
  /** The records risk signals are computed from. */
  signals: SignalRecords;
  /**
   * Stops everything in order: the proxy (see ProxyServer.shutdown: running statements get `timeoutMs`,
   * default 0, or until `deadline`; then every client gets FATAL 57P01 and held statements end with the
   * outcome `shutdown`), the broker and console, the rules watcher, and last the audit trail (the
   * sessions' ends recorded, a final signed checkpoint, audit.close).
   */
  close(options?: { timeoutMs?: number; deadline?: Promise<unknown> }): Promise<void>;
}

export interface AppOverrides {
  /** Replaces the console broker (tests of the proxy); no console is started then. */
  stepUp?: StepUpBroker;
  audit?: AuditSink;
  /**
   * Wraps the classifier (tests of server-enforced reads: a classifier whose reading is wrong must not let
   * a write through).
   */
  classify?: (classify: ProxyServices['classify']) => ProxyServices['classify'];
  /**
   * false: the console stays on plain HTTP although `tls` is configured for PostgreSQL clients (the demo:
   * a self-signed certificate on the console would stop browsers from offering passkeys, and
   * http://localhost is a secure context for them anyway).
   */
  consoleTls?: boolean;
  /** Single sign-on: the clock and the key cache's cooldown (tests of expiry and key rotation). */
  sso?: Partial<Omit<SsoOptions, 'log'>>;
  /** The console's clock (sessions, TOTP steps). */
  now?: () => number;
}

export async function startApp(config: Config, log: Logger, overrides: AppOverrides = {}): Promise<App> {
  await initParser();
  const shadowed = (loaded: LoadedRules): void => {
    for (const w of loaded.warnings) log.warn('rules.never_decides', { rule_at: `${w.file}:${w.line}:${w.column}`, problem: w.message, fix: w.fix });
  };
  const rules = await watchRules(config.rulesDir, {
    onReload: (loaded) => {
      log.info('rules.reloaded', { dir: loaded.dir, files: loaded.files, rules: loaded.ruleCount });
      shadowed(loaded);
    },
    onInvalid: (errors) =>
      log.error('rules.invalid', {
        dir: config.rulesDir,
        errors: errors.map(formatRuleErrorOneLine),
        note: 'the previous rules stay in force until the errors are fixed',
      }),
  });
  shadowed(rules.current);
  const identity = new IdentityStore(config.dataDir);
  const cache = new ClassificationCache();
  // Large texts (and texts too deep for this thread's stack) are classified in a worker thread.
  const classifier = new OffThreadClassifier({ cache });

  // The audit trail before anything can connect: stepgate does not run without one.
  let auditStore: AuditStore | null = null;
  if (!overrides.audit) {
    try {
      auditStore = await AuditStore.open({
        dataDir: config.dataDir,
        log,
        bindParameters: config.audit.bindParameters,
        retentionMs: config.audit.retentionMs,
        checkpointEvents: config.audit.checkpointEvents,
        checkpointMs: config.audit.checkpointMs,
      });
    } catch (err) {
      rules.close();
      identity.close();
      throw new Error(`cannot open the audit trail in ${config.dataDir}: ${(err as Error).message}`);
    }
  }
  // Public keys of passkeys registered before the trail recorded them, so their approvals can be verified.
  if (auditStore) recordMissingPasskeys(config.dataDir, identity, auditStore, log);
  const signals = new SignalRecords(identity.db);
  // Every statement's record passes the recorder of touched tables (first_access) on its way to the trail.
  const trail: AuditSink = overrides.audit ?? auditStore!;
  const audit: AuditSink = new TouchRecordingSink(trail, signals);
  const sso = config.sso ? new SsoProvider(config.sso, { log, ...overrides.sso }) : null;
  if (sso) {
    log.info('sso.configured', { issuer: config.sso!.issuer, client_id: config.sso!.clientId, token_login: config.sso!.tokenLogin });
    // Discovery early (the first sign-in is faster); a provider that is down now is tried again later.
    void sso.discovered().catch(() => {});
  }

  // The console first: held statements' notices carry its URL.
  let broker: ConsoleBroker | null = null;
  let consoleServer: ConsoleServer | null = null;
  let consoleUrl: string | null = null;
  if (!overrides.stepUp) {
    broker = new ConsoleBroker({ identity, log, consoleUrl: () => consoleServer!.url });
    consoleServer = new ConsoleServer({ config: overrides.consoleTls === false ? { ...config, tls: null } : config, identity, broker, log, sso, audit, now: overrides.now });
    try {
      consoleUrl = await consoleServer.listen();
    } catch (err) {
      broker.close();
      rules.close();
      identity.close();
      await auditStore?.close();
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'EADDRINUSE') {
        throw new Error(`cannot listen on ${config.console.host}:${config.console.port} for the console: the address is in use (choose another with --console HOST:PORT)`);
      }
      throw err;
    }
  }
  const stepUp: StepUpBroker = overrides.stepUp ?? broker!;

  // Only for `npm run bench`, to measure what server-enforced reads cost: never in production.
  const enforceReads = process.env.STEPGATE_UNSAFE_NO_READ_ONLY !== '1';
  if (!enforceReads) {
    log.error('read_only.disabled', { note: 'STEPGATE_UNSAFE_NO_READ_ONLY=1: reads are NOT run in read-only mode; a misread statement can write. For benchmarks only.' });
  }
  const proxy = new ProxyServer(config, {
    identity,
    // A test's wrapped classifier reads every text itself (no worker stands in for it).
    ...(overrides.classify
      ? { classify: overrides.classify((sql, ctx) => cache.classify(sql, ctx)) }
      : { classify: (sql, ctx) => cache.classify(sql, ctx), classifyText: (sql, ctx) => classifier.classify(sql, ctx) }),
    rules: () => rules.ruleSet,
    stepUp,
    audit,
    log,
    recordParams: config.audit.bindParameters,
    auditOnFailure: config.audit.onFailure,
    enforceReads,
    sso,
    signals,
  });
  let proxyAddress: net.AddressInfo;
  try {
    proxyAddress = await proxy.listen();
  } catch (err) {
    broker?.close();
    await consoleServer?.close();
    rules.close();
    identity.close();
    await auditStore?.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') throw new Error(`cannot listen on ${config.listen.host}:${config.listen.port}: the address is in use (choose another with --listen HOST:PORT)`);
    throw err;
  }
  consoleServer?.setConnectInfo({
    host: proxyAddress.address === '0.0.0.0' || proxyAddress.address === '::' ? (await import('node:os')).hostname() : proxyAddress.address,
    port: proxyAddress.port,
    sslmode: config.tls ? 'require' : 'disable',
  });
  log.info('stepgate.listening', {
    listen: `${proxyAddress.address}:${proxyAddress.port}`,
    upstream: config.upstream?.display ?? null,
    databases: [...config.databases.keys()],
    rules: config.rulesDir,
    data: config.dataDir,
    tls: config.tls !== null,
    require_tls: config.requireTls,
    auth: config.auth,
    console: consoleUrl,
  });
  let closing: Promise<void> | null = null;
  if (config.auth === 'trust') log.warn('auth.trust', { note: 'clients are not asked for passwords (loopback only); use scram-sha-256 anywhere else' });
  return {
    config,
    identity,
    rules,
    proxy,
    proxyAddress,
    stepUp,
    broker,
    console: consoleServer,
    consoleUrl,
    audit: trail,
    sso,
    signals,
    close(options = {}) {
      // Once: a signal handler and a test's teardown may both ask.
      closing ??= (async () => {
        // The proxy first: its sessions end their held statements.
        const { finished, terminated } = await proxy.shutdown({ timeoutMs: options.timeoutMs ?? 0, deadline: options.deadline });
        if (finished + terminated > 0) log.info('stepgate.drained', { finished_in_time: finished, terminated });
        await classifier.close();
        broker?.close();
        await consoleServer?.close();
        rules.close();
        signals.flush();
        identity.close();
        // Last: the sessions' ends are recorded, then a final signed checkpoint.
        await auditStore?.close();
      })();
      return closing;
    },
  };
}
