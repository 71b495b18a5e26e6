/**
 * The operators' listener (`metrics: {listen: HOST:PORT}`): GET /metrics (Prometheus text), /healthz and
 * /readyz for load balancers and Kubernetes. Unauthenticated, like every Prometheus exporter: bind it to
 * loopback or a private interface. It serves nothing a client sent (no SQL, no user names).
 *
 * /healthz: 200 while the process serves HTTP at all.
 * /readyz: 200 only when every configured upstream server accepts TCP connections, the audit store is
 * healthy and its oldest unwritten record is younger than AUDIT_LAG_LIMIT_MS, and stepgate is not shutting
 * down; otherwise 503. Either way the body is JSON naming each check, so an operator sees what failed.
 *
 * Upstream probes are shared: one probe per server at a time, its result reused for `probeCacheMs`, so a
 * load balancer checking every 200 ms from several places costs the server about one TCP connect a second.
 */
import http from 'node:http';
import type net from 'node:net';
import type { HostPort } from '../config.js';
import type { Logger } from '../log.js';
import { probeUpstream, type UpstreamTarget } from '../proxy/upstream.js';
import type { ShipStats } from '../audit/shipper.js';
import type { AuditStats } from './registry.js';

/** An audit writer this far behind means acknowledged statements wait on it: not ready (ms). */
export const AUDIT_LAG_LIMIT_MS = 10_000;

export interface ReadinessSources {
  /** The servers stepgate connects to (upstream: and databases:), each probed. */
  upstreams: UpstreamTarget[];
  probeTimeoutMs: number;
  audit(): { healthy: boolean; failure: string | null; stats: AuditStats | null };
  /** The shared state database; absent: none configured. */
  state?(): { healthy: boolean };
  /** The audit shipper (with `state:`): reported, never a reason to be not ready (the local trail is durable). */
  auditShipping?(): ShipStats;
  shuttingDown(): boolean;
  /** Each change of readiness is logged (what failed), so the log says why a load balancer took this instance out. */
  log?: Logger;
}

export interface ReadyReport {
  ready: boolean;
  shutting_down: boolean;
  audit: { ok: boolean; error?: string };
  upstream: { ok: boolean; servers: { server: string; ok: boolean; error?: string }[] };
  /** Only with `state:` in the config. */
  state?: { ok: boolean; error?: string };
  /** Only with `state:`: information, not a check. */
  audit_shipping?: { state: string; shipped_seq: number; behind_events: number; behind_seconds: number; error?: string };
}

interface Probe {
  at: number;
  error: string | null;
  running: Promise<void> | null;
}

export class Readiness {
  private readonly probes = new Map<UpstreamTarget, Probe>();
  private lastReady: boolean | null = null;

  constructor(
    private readonly sources: ReadinessSources,
    private readonly probeCacheMs = 1000,
  ) {
    for (const t of sources.upstreams) this.probes.set(t, { at: -Infinity, error: 'not checked yet', running: null });
  }

  async check(): Promise<ReadyReport> {
    const servers = await Promise.all(
      this.sources.upstreams.map(async (t) => {
        const error = await this.probe(t);
        return error === null ? { server: t.display, ok: true } : { server: t.display, ok: false, error };
      }),
    );
    const a = this.sources.audit();
    let auditError: string | null = a.healthy ? null : `the audit store failed: ${a.failure ?? 'unknown'}`;
    const oldest = a.stats?.oldestQueuedAt ?? null;
    if (auditError === null && oldest !== null && Date.now() - oldest > AUDIT_LAG_LIMIT_MS) {
      auditError = `the audit writer is ${Math.round((Date.now() - oldest) / 1000)} s behind (${a.stats!.queued} records wait)`;
    }
    const shuttingDown = this.sources.shuttingDown();
    const upstreamOk = servers.every((s) => s.ok);
    const stateError = this.sources.state && !this.sources.state().healthy ? 'the shared state database is unreachable (reconnecting)' : null;
    const report: ReadyReport = {
      ready: upstreamOk && auditError === null && stateError === null && !shuttingDown,
      shutting_down: shuttingDown,
      audit: auditError === null ? { ok: true } : { ok: false, error: auditError },
      upstream: { ok: upstreamOk, servers },
      ...(this.sources.state ? { state: stateError === null ? { ok: true } : { ok: false, error: stateError } } : {}),
      ...(this.sources.auditShipping ? { audit_shipping: shippingReport(this.sources.auditShipping()) } : {}),
    };
    if (report.ready !== this.lastReady) {
      // The first answer is logged only when it is "not ready".
      if (this.lastReady !== null || !report.ready) {
        const failed = [
          ...(shuttingDown ? ['shutting down'] : []),
          ...(auditError ? [auditError] : []),
          ...(stateError ? [stateError] : []),
          ...servers.filter((s) => !s.ok).map((s) => `${s.server}: ${s.error}`),
        ];
        if (report.ready) this.sources.log?.info('readiness.ready', {});
        else this.sources.log?.warn('readiness.not_ready', { failed });
      }
      this.lastReady = report.ready;
    }
    return report;
  }

  /** null when the server accepted a connection within probeCacheMs; else why not. */
  private async probe(target: UpstreamTarget): Promise<string | null> {
    const p = this.probes.get(target)!;
    if (performance.now() - p.at < this.probeCacheMs) return p.error;
    p.running ??= probeUpstream(target, this.sources.probeTimeoutMs)
      .then(
        () => {
          p.error = null;
        },
        (err: Error) => {
          p.error = err.message;
        },
      )
      .finally(() => {
        p.at = performance.now();
        p.running = null;
      });
    await p.running;
    return p.error;
  }
}

/** What /metrics and /readyz answer: one stepgate's, or a cluster's primary speaking for its workers. */
export interface MetricsSource {
  scrape(): Promise<{ contentType: string; body: string }>;
}
export interface ReadinessSource {
  check(): Promise<{ ready: boolean }>;
}

export class MetricsServer {
  private readonly server: http.Server;

  constructor(
    private readonly listenAt: HostPort,
    private readonly metrics: MetricsSource,
    private readonly readiness: ReadinessSource,
    private readonly log: Logger,
  ) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        this.log.error('metrics.internal_error', { error: err.stack ?? String(err) });
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('internal error\n');
      });
    });
    // Scrapers and health checkers keep connections alive; none of them should hold up a shutdown.
    this.server.keepAliveTimeout = 5000;
  }

  async listen(): Promise<net.AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.listenAt.port, this.listenAt.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as net.AddressInfo;
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      res.end('only GET\n');
      return;
    }
    switch (path) {
      case '/metrics': {
        const { contentType, body } = await this.metrics.scrape();
        res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      case '/healthz':
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : '{"alive":true}\n');
        return;
      case '/readyz': {
        const report = await this.readiness.check();
        res.writeHead(report.ready ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : `${JSON.stringify(report)}\n`);
        return;
      }
      default:
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found: try /metrics, /healthz or /readyz\n');
    }
  }
}

function shippingReport(s: ShipStats): NonNullable<ReadyReport['audit_shipping']> {
  return {
    state: s.state,
    shipped_seq: s.shippedSeq,
    behind_events: s.behindEvents,
    behind_seconds: Math.round(s.behindSeconds * 10) / 10,
    ...(s.error !== null ? { error: s.error } : {}),
  };
}
