/**
 * Wires a running stepgate from its configuration: users, rules (hot-reloaded), the classifier, the
 * step-up broker and its web console, the audit trail and the proxy listener. `serve` and `demo` both
 * start one.
 */
import type net from 'node:net';
import { AuditStore } from './audit/store.js';
import type { AuditSink } from './audit/types.js';
import type { Config } from './config.js';
import { ConsoleServer } from './console/server.js';
import { IdentityStore } from './identity/store.js';
import type { Logger } from './log.js';
import { ProxyServer } from './proxy/server.js';
import { formatRuleErrorOneLine } from './rules/errors.js';
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
  /** The audit trail: DATA/audit.db, or the override. */
  audit: AuditSink;
  close(): Promise<void>;
}

export interface AppOverrides {
  /** Replaces the console broker (tests of the proxy); no console is started then. */
  stepUp?: StepUpBroker;
  audit?: AuditSink;
}

export async function startApp(config: Config, log: Logger, overrides: AppOverrides = {}): Promise<App> {
  await initParser();
  const rules = await watchRules(config.rulesDir, {
    onReload: (loaded) => log.info('rules.reloaded', { dir: loaded.dir, files: loaded.files, rules: loaded.ruleCount }),
    onInvalid: (errors) =>
      log.error('rules.invalid', {
        dir: config.rulesDir,
        errors: errors.map(formatRuleErrorOneLine),
        note: 'the previous rules stay in force until the errors are fixed',
      }),
  });
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
  const audit: AuditSink = overrides.audit ?? auditStore!;

  // The console first: held statements' notices carry its URL.
  let broker: ConsoleBroker | null = null;
  let consoleServer: ConsoleServer | null = null;
  let consoleUrl: string | null = null;
  if (!overrides.stepUp) {
    broker = new ConsoleBroker({ identity, log, consoleUrl: () => consoleServer!.url });
    consoleServer = new ConsoleServer({ config, identity, broker, log });
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

  const proxy = new ProxyServer(config, {
    identity,
    classify: (sql, ctx) => cache.classify(sql, ctx),
    classifyText: (sql, ctx) => classifier.classify(sql, ctx),
    rules: () => rules.ruleSet,
    stepUp,
    audit,
    log,
    recordParams: config.audit.bindParameters,
    auditOnFailure: config.audit.onFailure,
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
    audit,
    async close() {
      // The proxy first: its sessions withdraw their held statements.
      await proxy.close();
      await classifier.close();
      broker?.close();
      await consoleServer?.close();
      rules.close();
      identity.close();
      // Last: the sessions' ends are recorded, then a final signed checkpoint.
      await auditStore?.close();
    },
  };
}
