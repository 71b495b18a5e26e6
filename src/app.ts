/**
 * Wires a running stepgate from its configuration: users, rules (hot-reloaded), the classifier, the
 * step-up broker and its web console, the audit trail and the proxy listener. `serve` and `demo` both
 * start one.
 */
import type net from 'node:net';
import { PasskeyKeysForApprovals, recordMissingPasskeys } from './audit/passkey-keys.js';
import { AuditShipper } from './audit/shipper.js';
import { AuditStore } from './audit/store.js';
import type { AuditSink } from './audit/types.js';
import type { Config } from './config.js';
import { ConsoleServer } from './console/server.js';
import { openIdentityStore, openSignalRecords } from './identity/open.js';
import type { SignalRecords } from './identity/signals.js';
import { SsoProvider, type SsoOptions } from './identity/sso.js';
import type { IdentityStore } from './identity/store.js';
import { WebhookNotifier, type NotifierOptions } from './notify/webhooks.js';
import { TouchRecordingSink } from './identity/touches.js';
import type { Logger } from './log.js';
import { StepgateMetrics } from './metrics/registry.js';
import { MetricsServer, Readiness } from './metrics/server.js';
import type { UpstreamTarget } from './proxy/upstream.js';
import { ProxyServer, type ProxyServices } from './proxy/server.js';
import { formatRuleErrorOneLine } from './rules/errors.js';
import type { LoadedRules } from './rules/load.js';
import { watchRules, type RuleWatcher } from './rules/watch.js';
import { ClassificationCache } from './sql/cache.js';
import { OffThreadClassifier } from './sql/offload.js';
import { initParser } from './sql/parser.js';
import { instanceId, openStateDatabase } from './state/components.js';
import type { StateDatabase } from './state/database.js';
import { ConsoleBroker } from './stepup/broker.js';
import { OutcomeTap } from './stepup/outcomes.js';
import { SharedHolds } from './state/holds.js';
import { SharedCeremonies } from './state/ceremonies.js';
import { SharedRevocations } from './state/revocations.js';
import type { StepUpBroker } from './stepup/types.js';

export interface App {
  config: Config;
  /** The people: the shared store when the config has `state:`, else DATA/identity.db. */
  identity: IdentityStore;
  /** The shared state database (`state:`); null without. */
  state: StateDatabase | null;
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
  /** The records risk signals are computed from (this instance's own: identity.db, or signals.db with `state:`). */
  signals: SignalRecords;
  /** Metrics for operators; null without `metrics:` in the config. */
  metrics: StepgateMetrics | null;
  /** Where /metrics, /healthz and /readyz are served; null without `metrics:` (and in a cluster's worker). */
  metricsAddress: net.AddressInfo | null;
  /** What /readyz answers; null without `metrics:`. */
  readiness: Readiness | null;
  /** Webhooks for held statements; null without `notify.webhooks` (or without the console broker). */
  notifier: WebhookNotifier | null;
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
  /**
   * One worker of `workers: N` (src/commands/cluster.ts): only the worker with `serveConsole` runs the web
   * console (the others' notices point at `consoleUrl`); none listens for metrics (the primary serves
   * them for all, asking each worker: see App.readiness).
   */
  worker?: { serveConsole: boolean; consoleUrl: string | null };
  /** Webhook delivery: the backoff's wait and the clock (tests of retries without real waiting). */
  notify?: Partial<Pick<NotifierOptions, 'sleep' | 'now' | 'baseDelayMs' | 'maxDelayMs' | 'timeoutMs' | 'maxQueue' | 'concurrency'>>;
}

export async function startApp(config: Config, log: Logger, overrides: AppOverrides = {}): Promise<App> {
  await initParser();
  const webhookNames = new Set(config.notify.webhooks.map((h) => h.name));
  const shadowed = (loaded: LoadedRules): void => {
    for (const w of loaded.warnings) log.warn('rules.never_decides', { rule_at: `${w.file}:${w.line}:${w.column}`, problem: w.message, fix: w.fix });
    // `notify: [name]` in a rule names a webhook of the config file, which the rules cannot see: said at load.
    for (const { spec } of [...loaded.ruleSet.rules, ...loaded.ruleSet.connectRules]) {
      for (const name of spec.notify ?? []) {
        if (!webhookNames.has(name)) {
          log.warn('rules.unknown_webhook', { rule_at: `${spec.at.file}:${spec.at.line}:${spec.at.column}`, rule: spec.name, webhook: name, fix: `add a webhook named ${name} under notify.webhooks in the config file, or correct the rule's notify:` });
        }
      }
    }
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
  // What a failed start undoes, newest first (a started stepgate stops in the order of close() below).
  const undo: (() => unknown)[] = [() => rules.close()];
  const abandon = async (err: unknown, message?: string): Promise<never> => {
    for (const fn of undo.reverse()) {
      try {
        await fn();
      } catch {
        // the error that stopped the start is the one to report
      }
    }
    throw message === undefined ? err : new Error(message);
  };
  let state: StateDatabase | null = null;
  let identity: IdentityStore;
  try {
    if (config.state) {
      state = await openStateDatabase(config.state, instanceId(config.state, config.listen.port), log);
      undo.push(() => state!.close());
    }
    identity = await openIdentityStore(config.dataDir, state, log);
  } catch (err) {
    return abandon(err);
  }
  const signals = openSignalRecords(config.dataDir, identity);
  undo.push(() => {
    signals.close();
    identity.close();
  });
  const cache = new ClassificationCache();
  // Large texts (and texts too deep for this thread's stack) are classified in a worker thread.
  const classifier = new OffThreadClassifier({ cache });
  undo.push(() => classifier.close());

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
      return abandon(err, `cannot open the audit trail in ${config.dataDir}: ${(err as Error).message}`);
    }
    const opened = auditStore;
    undo.push(() => opened.close());
  }
  // Public keys of passkeys registered before the trail recorded them, so their approvals can be verified.
  const passkeysInTrail = auditStore ? recordMissingPasskeys(config.dataDir, identity, auditStore, log).known : null;
  // Every statement's record passes the recorder of touched tables (first_access) on its way to the trail.
  const trail: AuditSink = overrides.audit ?? auditStore!;
  const audit: AuditSink = new TouchRecordingSink(trail, signals);
  const sso = config.sso ? new SsoProvider(config.sso, { log, ...overrides.sso }) : null;
  if (sso) {
    log.info('sso.configured', { issuer: config.sso!.issuer, client_id: config.sso!.clientId, token_login: config.sso!.tokenLogin });
    // Discovery early (the first sign-in is faster); a provider that is down now is tried again later.
    void sso.discovered().catch(() => {});
  }

  // The trail's copy in the shared state, started once the proxy listens (it ships what came before too).
  let shipper: AuditShipper | null = null;
  // The console first: held statements' notices carry its URL.
  let broker: ConsoleBroker | null = null;
  let consoleServer: ConsoleServer | null = null;
  let revocations: SharedRevocations | null = null;
  let consoleUrl: string | null = null;
  const worker = overrides.worker ?? null;
  if (!overrides.stepUp && worker && !worker.serveConsole) {
    consoleUrl = worker.consoleUrl;
    broker = new ConsoleBroker({ identity, log, consoleUrl: () => consoleUrl ?? '' });
  } else if (!overrides.stepUp) {
    broker = new ConsoleBroker({ identity, log, consoleUrl: () => consoleServer!.url });
    try {
      revocations = state ? await SharedRevocations.open(state, log) : null;
    } catch (err) {
      return abandon(err);
    }
    consoleServer = new ConsoleServer({
      config: overrides.consoleTls === false ? { ...config, tls: null } : config,
      identity,
      broker,
      log,
      sso,
      audit,
      now: overrides.now,
      // Sign-outs and passkey ceremonies count on every instance: behind a load balancer, a ceremony's two
      // requests may reach two instances.
      ...(revocations && state ? { revocations, ceremonies: new SharedCeremonies(state) } : {}),
      // The shipper starts once the proxy listens, after the console: asked when needed.
      ...(state && auditStore ? { auditShared: { db: state, url: config.state!.url, instance: state.instanceId, shipping: () => shipper?.stats() ?? null } } : {}),
    });
    try {
      consoleUrl = await consoleServer.listen();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return abandon(
        err,
        e.code === 'EADDRINUSE' ? `cannot listen on ${config.console.host}:${config.console.port} for the console: the address is in use (choose another with --console HOST:PORT)` : undefined,
      );
    }
    const listening = consoleServer;
    undo.push(() => listening.close());
  }
  if (broker) {
    const b = broker;
    undo.push(() => b.close());
  }
  // Holds and grants shared with the other instances on the state database.
  let sharedHolds: SharedHolds | null = null;
  if (broker && state) {
    try {
      sharedHolds = await SharedHolds.start({ db: state, broker, log, leaseMs: config.state!.leaseMs });
    } catch (err) {
      return abandon(err, `cannot share held statements on the state database: ${(err as Error).message}`);
    }
    const shared = sharedHolds;
    undo.push(() => shared.close());
  }
  // Shared passkeys: each trail records the keys its own approvals need (registered elsewhere or not).
  if (broker && state && auditStore && passkeysInTrail) broker.addListener(new PasskeyKeysForApprovals(passkeysInTrail, identity, auditStore));
  const stepUp: StepUpBroker = overrides.stepUp ?? broker!;
  // Webhooks listen to the broker like the console's hub: enqueued during hold(), delivered later.
  let notifier: WebhookNotifier | null = null;
  if (broker && config.notify.webhooks.length > 0) {
    const b = broker;
    notifier = new WebhookNotifier({ webhooks: config.notify.webhooks, audit, log, url: (id) => b.challengeUrl(id), ...overrides.notify });
    broker.addListener(notifier);
    const n = notifier;
    undo.push(() => n.close());
    log.info('notify.configured', { webhooks: config.notify.webhooks.map((h) => ({ name: h.name, format: h.format, events: h.events, rules: h.rules })) });
  }

  const shipping = state && auditStore ? { auditShipping: () => shipper!.stats() } : {};
  // Metrics only when configured: without them the statement path does not even read the clock.
  const metrics = config.metrics
    ? new StepgateMetrics({
        audit: () => ({ healthy: trail.healthy, stats: auditStore?.stats() ?? null }),
        ...(state ? { state: () => ({ healthy: state!.healthy, errors: state!.errors }) } : {}),
        ...shipping,
      })
    : null;
  const classifyNow: ProxyServices['classify'] = (sql, ctx) => cache.classify(sql, ctx);
  const classifyText: NonNullable<ProxyServices['classifyText']> = (sql, ctx) => classifier.classify(sql, ctx);

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
      : metrics
        ? { classify: timedClassify(classifyNow, metrics), classifyText: timedClassify(classifyText, metrics) }
        : { classify: classifyNow, classifyText }),
    rules: () => rules.ruleSet,
    stepUp,
    // Held statements' outcomes also reach the console's "Recently decided" (as the trail records them).
    audit: broker ? new OutcomeTap(audit, broker) : audit,
    log,
    recordParams: config.audit.bindParameters,
    auditOnFailure: config.audit.onFailure,
    enforceReads,
    sso,
    signals,
    ...(metrics ? { metrics } : {}),
  });
  let proxyAddress: net.AddressInfo;
  try {
    proxyAddress = await proxy.listen();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return abandon(err, e.code === 'EADDRINUSE' ? `cannot listen on ${config.listen.host}:${config.listen.port}: the address is in use (choose another with --listen HOST:PORT)` : undefined);
  }
  undo.push(() => proxy.close());
  if (state && auditStore) {
    const s = new AuditShipper({ dataDir: config.dataDir, url: config.state!.url, instance: state.instanceId, store: auditStore, log });
    shipper = s;
    undo.push(() => s.close());
  }
  let closing: Promise<void> | null = null;
  let metricsServer: MetricsServer | null = null;
  let metricsAddress: net.AddressInfo | null = null;
  let readiness: Readiness | null = null;
  if (metrics && config.metrics) {
    readiness = new Readiness({
      upstreams: distinctServers(config.upstream, config.databases),
      probeTimeoutMs: Math.min(config.limits.upstreamConnectTimeoutMs, 2000),
      audit: () => ({ healthy: trail.healthy, failure: trail.failure ?? null, stats: auditStore?.stats() ?? null }),
      ...(state ? { state: () => ({ healthy: state!.healthy }) } : {}),
      ...shipping,
      shuttingDown: () => closing !== null,
      log,
    });
  }
  if (metrics && readiness && config.metrics && !worker) {
    metricsServer = new MetricsServer(config.metrics.listen, metrics, readiness, log);
    try {
      metricsAddress = await metricsServer.listen();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const at = `${config.metrics.listen.host}:${config.metrics.listen.port}`;
      return abandon(
        err,
        e.code === 'EADDRINUSE'
          ? `cannot listen on ${at} for metrics: the address is in use (choose another with metrics: {listen: HOST:PORT}${config.source ? ` in ${config.source}` : ''})`
          : `cannot listen on ${at} for metrics: ${e.message}`,
      );
    }
    log.info('metrics.listening', { listen: `${metricsAddress.address}:${metricsAddress.port}`, paths: ['/metrics', '/healthz', '/readyz'] });
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
  if (config.auth === 'trust') log.warn('auth.trust', { note: 'clients are not asked for passwords (loopback only); use scram-sha-256 anywhere else' });
  return {
    config,
    identity,
    state,
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
    metrics,
    metricsAddress,
    readiness,
    notifier,
    close(options = {}) {
      // Once: a signal handler and a test's teardown may both ask.
      closing ??= (async () => {
        // The proxy first: its sessions end their held statements.
        const { finished, terminated } = await proxy.shutdown({ timeoutMs: options.timeoutMs ?? 0, deadline: options.deadline });
        if (finished + terminated > 0) log.info('stepgate.drained', { finished_in_time: finished, terminated });
        await classifier.close();
        broker?.close();
        // The outcomes just recorded reach the state database, then the lease is given up.
        await sharedHolds?.close();
        // Deliveries still queued or waiting for a retry are dropped (the trail closes next).
        notifier?.close();
        await consoleServer?.close();
        revocations?.close();
        rules.close();
        signals.close();
        identity.close();
        await state?.close();
        // Last: the sessions' ends are recorded, then a final signed checkpoint, then shipped.
        await auditStore?.close();
        await shipper?.close();
        // /readyz said 503 (shutting down) from the start of close; the listener goes last.
        await metricsServer?.close();
      })();
      return closing;
    },
  };
}

/** Wraps a classifier to time each call into the classification histogram (the promise path when it ends). */
function timedClassify<F extends (sql: string, ctx: Parameters<ProxyServices['classify']>[1]) => ReturnType<ProxyServices['classify']> | Promise<ReturnType<ProxyServices['classify']>>>(
  classify: F,
  metrics: StepgateMetrics,
): F {
  return ((sql, ctx) => {
    const started = performance.now();
    const result = classify(sql, ctx);
    if (result instanceof Promise) {
      return result.then((r) => {
        metrics.classified(performance.now() - started);
        return r;
      });
    }
    metrics.classified(performance.now() - started);
    return result;
  }) as F;
}

/** The servers stepgate connects to, each once (by host and port), for /readyz. */
function distinctServers(upstream: UpstreamTarget | null, databases: Map<string, UpstreamTarget>): UpstreamTarget[] {
  const seen = new Map<string, UpstreamTarget>();
  for (const t of [...(upstream ? [upstream] : []), ...databases.values()]) {
    const key = `${t.host}\0${t.port}`;
    if (!seen.has(key)) seen.set(key, t);
  }
  return [...seen.values()];
}
