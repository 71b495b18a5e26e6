/**
 * Wires a running stepgate from its configuration: users, rules (hot-reloaded), the classifier, the
 * step-up broker, the audit trail and the proxy listener. `serve` and `demo` both start one.
 */
import type net from 'node:net';
import { NoAudit, type AuditSink } from './audit/types.js';
import type { Config } from './config.js';
import { IdentityStore } from './identity/store.js';
import type { Logger } from './log.js';
import { ProxyServer } from './proxy/server.js';
import { formatRuleErrorOneLine } from './rules/errors.js';
import { watchRules, type RuleWatcher } from './rules/watch.js';
import { ClassificationCache } from './sql/cache.js';
import { initParser } from './sql/parser.js';
import { UnavailableStepUp, type StepUpBroker } from './stepup/types.js';

export interface App {
  config: Config;
  identity: IdentityStore;
  rules: RuleWatcher;
  proxy: ProxyServer;
  proxyAddress: net.AddressInfo;
  close(): Promise<void>;
}

export interface AppOverrides {
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
  const proxy = new ProxyServer(config, {
    identity,
    classify: (sql, ctx) => cache.classify(sql, ctx),
    rules: () => rules.ruleSet,
    stepUp: overrides.stepUp ?? new UnavailableStepUp('step-up approvals are not available on this stepgate'),
    audit: overrides.audit ?? new NoAudit(),
    log,
  });
  let proxyAddress: net.AddressInfo;
  try {
    proxyAddress = await proxy.listen();
  } catch (err) {
    rules.close();
    identity.close();
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
  });
  if (config.auth === 'trust') log.warn('auth.trust', { note: 'clients are not asked for passwords (loopback only); use scram-sha-256 anywhere else' });
  return {
    config,
    identity,
    rules,
    proxy,
    proxyAddress,
    async close() {
      await proxy.close();
      rules.close();
      identity.close();
    },
  };
}
