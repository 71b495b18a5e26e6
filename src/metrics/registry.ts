/**
 * What stepgate tells an operator, as Prometheus metrics (prom-client): one Registry per app (never the
 * global default registry, so several apps in one process, as in tests, keep their own numbers).
 *
 * Invariants:
 * - Labels come from small fixed sets: connection refusal reasons (REFUSAL_REASONS), statement classes
 *   (STATEMENT_CLASSES) × decisions (allow, step-up, deny), hold statuses (HOLD_STATUSES). No SQL, no user
 *   names, no addresses: nothing a client sends becomes a label value.
 * - The statement path allocates nothing here: a statement's decision and its classification time are
 *   counted into preallocated typed arrays (one increment, one comparison loop over the buckets), and
 *   turned into prom-client values only when /metrics is scraped. prom-client's own `inc`/`observe` build
 *   label objects and closures on every call, which is fine per connection or per hold, not per statement.
 * - Everything else (connections, refusals, holds, failures) is counted with prom-client directly.
 */
import type { ShipStats } from '../audit/shipper.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type Aggregator, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';
import { STATEMENT_CLASSES } from '../sql/types.js';
import type { HoldOutcome } from '../stepup/types.js';

/** Why a connection was refused before its session began (the `reason` label). */
export const REFUSAL_REASONS = [
  'auth', // wrong password or token, unknown user
  'too_many_clients', // limits.max_connections
  'shutting_down', // stepgate is shutting down (57P03)
  'tls_required', // require_tls and the client did not ask for TLS
  'tls_handshake', // the TLS handshake failed
  'policy', // a rule refused the login or a startup setting
  'unknown_database', // no upstream for the database name
  'upstream', // the upstream server could not be reached or refused stepgate's login
  'protocol', // a protocol violation, an unsupported protocol or startup packet
  'startup_timeout', // limits.startup_timeout passed before the login completed
  'client_gone', // the client left while its login was held
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** How a hold ended (the `status` label): HoldOutcome's statuses, and `granted` (approved at once by a grant). */
export const HOLD_STATUSES = ['approved', 'granted', 'rejected', 'expired', 'cancelled', 'withdrawn', 'shutdown', 'unavailable'] as const;
export type HoldStatus = (typeof HOLD_STATUSES)[number];

const DECISIONS = ['allow', 'step-up', 'deny'] as const;

/** Classification time buckets (seconds): a cache hit takes microseconds, a large text in the worker milliseconds. */
export const CLASSIFY_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5];
/** Hold to decision (seconds): people take seconds to minutes. */
export const HOLD_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800];

/** What the audit store can report (AuditStore.stats); a sink without it reports only `healthy`. */
export interface AuditStats {
  /** Records waiting in memory for the writer (the open batch and the batches not yet acknowledged). */
  queued: number;
  /** When the oldest of them was recorded (ms since the epoch); null when none waits. */
  oldestQueuedAt: number | null;
  /** Records dropped since start because the store was down and the memory buffer full. */
  dropped: number;
}

export interface MetricsSources {
  audit(): { healthy: boolean; stats: AuditStats | null };
  /** The shared state database (`state:`); absent: none configured (its metrics are not exported). */
  state?(): { healthy: boolean; errors: number };
  /** The audit shipper to the shared state (audit/shipper.ts); absent without `state:`. */
  auditShipping?(): ShipStats;
}

/** The hooks the proxy calls (ProxyServices.metrics); all cheap, none throws. */
export interface ProxyMetrics {
  connectionOpened(): void;
  connectionClosed(): void;
  connectionRefused(reason: RefusalReason): void;
  upstreamConnectFailed(): void;
  catalogError(): void;
  /** One judged message: every statement counted once per class it has, under the message's decision. */
  statementsDecided(statements: readonly { classes: readonly string[] }[], action: string): void;
  /** A hold now waits for a person; returns the time it started (pass it to holdEnded). */
  holdWaiting(): number;
  /** A hold that waited has ended (whatever its outcome). */
  holdEnded(startedAt: number, outcome: HoldOutcome | null): void;
  /** How a hold ended, including holds that never waited (a grant, step-up unavailable). */
  holdOutcome(status: HoldStatus): void;
  /** One classification took this long (ms, from performance.now()). */
  classified(ms: number): void;
}

const CLASS_INDEX = new Map<string, number>(STATEMENT_CLASSES.map((c, i) => [c, i]));
const DECISION_INDEX = new Map<string, number>(DECISIONS.map((d, i) => [d, i]));

/**
 * A histogram without labels whose observations are counted into a typed array (no allocation), read by
 * the registry in prom-client's own value format (the registry formats it as it formats its histograms).
 */
class HotHistogram {
  readonly type = 'histogram' as const;
  readonly aggregator = 'sum' as const;
  private readonly counts: Float64Array;
  private sum = 0;
  private count = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {
    this.counts = new Float64Array(bounds.length);
  }

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (seconds <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }

  async get(): Promise<MetricObjectWithValues<MetricValueWithName<string>>> {
    const values: MetricValueWithName<string>[] = [];
    let cumulative = 0;
    for (let i = 0; i < this.bounds.length; i++) {
      cumulative += this.counts[i]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: this.bounds[i]! }, value: cumulative });
    }
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: this.count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.count });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values } as unknown as MetricObjectWithValues<MetricValueWithName<string>>;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

export class StepgateMetrics implements ProxyMetrics {
  readonly registry = new Registry();

  private readonly connectionsOpen: Gauge;
  private readonly connectionsTotal: Counter;
  private readonly refused: Counter<'reason'>;
  private readonly upstreamFailures: Counter;
  private readonly catalogErrors: Counter;
  private readonly holdsWaiting: Gauge;
  private readonly holdOutcomes: Counter<'status'>;
  private readonly holdDecision: Histogram;
  private readonly classification: HotHistogram;
  /** Statements by class × decision, counted on the hot path; `reported` is what prom-client has been given. */
  private readonly decided = new Float64Array(STATEMENT_CLASSES.length * DECISIONS.length);
  private readonly reported = new Float64Array(STATEMENT_CLASSES.length * DECISIONS.length);
  private open = 0;
  private waiting = 0;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    this.connectionsOpen = new Gauge({
      name: 'stepgate_connections_open',
      help: 'Client TCP connections open now (in login or in a session)',
      registers,
      collect: () => this.connectionsOpen.set(this.open),
    });
    this.connectionsTotal = new Counter({ name: 'stepgate_connections_total', help: 'Client TCP connections accepted (cancel requests included)', registers });
    this.refused = new Counter({ name: 'stepgate_connections_refused_total', help: 'Connections refused before their session began, by reason', labelNames: ['reason'], registers });
    for (const reason of REFUSAL_REASONS) this.refused.inc({ reason }, 0);

    const statements = new Counter({
      name: 'stepgate_statements_total',
      help: 'Statements judged, by class and decision (a statement with several classes counts once per class)',
      labelNames: ['class', 'decision'],
      registers,
      collect: () => {
        // Hand prom-client what was counted since the last scrape.
        for (let c = 0; c < STATEMENT_CLASSES.length; c++) {
          for (let d = 0; d < DECISIONS.length; d++) {
            const i = c * DECISIONS.length + d;
            const delta = this.decided[i]! - this.reported[i]!;
            if (delta > 0) {
              statements.inc({ class: STATEMENT_CLASSES[c]!, decision: DECISIONS[d]! }, delta);
              this.reported[i] = this.decided[i]!;
            }
          }
        }
      },
    });

    this.holdsWaiting = new Gauge({
      name: 'stepgate_holds_waiting',
      help: 'Held statements waiting for a person to approve or reject them',
      registers,
      collect: () => this.holdsWaiting.set(this.waiting),
    });
    this.holdOutcomes = new Counter({ name: 'stepgate_hold_outcomes_total', help: 'Holds ended, by status (granted: approved at once by an earlier grant)', labelNames: ['status'], registers });
    for (const status of HOLD_STATUSES) this.holdOutcomes.inc({ status }, 0);
    this.holdDecision = new Histogram({
      name: 'stepgate_hold_decision_seconds',
      help: 'Time from a statement being held to a person approving or rejecting it',
      buckets: HOLD_BUCKETS,
      registers,
    });
    this.classification = new HotHistogram('stepgate_classification_seconds', 'Time to classify one SQL text (cache hits included; large texts in the worker thread)', CLASSIFY_BUCKETS);
    this.registry.registerMetric(this.classification as never);

    this.upstreamFailures = new Counter({
      name: 'stepgate_upstream_connect_failures_total',
      help: 'Upstream connections for clients that failed (unreachable, timed out, or the server refused the login)',
      registers,
    });
    this.catalogErrors = new Counter({ name: 'stepgate_catalog_errors_total', help: 'Failed reads of a database\'s schema catalog (the classifier then knows less)', registers });

    // Read when scraped: a gauge of a value, a counter following a running total kept elsewhere.
    // `aggregator`: how `workers: N` combines the workers' values on the primary's /metrics: an "up" gauge is
    // the least of them (one worker cut off is 0, not N-1), a lag the largest, a count the sum.
    const gauge = (name: string, help: string, read: () => number, aggregator: Aggregator = 'sum'): void => {
      new Gauge({
        name,
        help,
        registers,
        aggregator,
        collect() {
          this.set(read());
        },
      });
    };
    const total = (name: string, help: string, read: () => number): void => {
      let reported = 0;
      const counter = new Counter({
        name,
        help,
        registers,
        collect() {
          const now = read();
          if (now > reported) {
            counter.inc(now - reported);
            reported = now;
          }
        },
      });
    };
    const audit = (): ReturnType<MetricsSources['audit']> => sources.audit();
    gauge('stepgate_audit_healthy', '1 when the audit store records, 0 when it failed (statements that must be recorded are refused)', () => (audit().healthy ? 1 : 0), 'min');
    gauge('stepgate_audit_queue_records', 'Audit records waiting in memory for the writer', () => audit().stats?.queued ?? 0);
    gauge('stepgate_audit_write_lag_seconds', 'Age of the oldest audit record not yet committed (0 when none waits)', () => {
      const at = audit().stats?.oldestQueuedAt ?? null;
      return at === null ? 0 : Math.max(0, (Date.now() - at) / 1000);
    }, 'max');
    total('stepgate_audit_dropped_events_total', 'Audit events dropped because the store was down and its memory buffer full (recorded as audit.gap)', () => audit().stats?.dropped ?? 0);
    const shipping = sources.auditShipping;
    if (shipping) {
      gauge('stepgate_audit_ship_lag_events', 'Audit events committed to the local trail and not yet in the shared state database', () => shipping().behindEvents);
      gauge('stepgate_audit_ship_lag_seconds', 'Age of the oldest audit event not yet in the shared state database (0 when none)', () => shipping().behindSeconds, 'max');
      gauge(
        'stepgate_audit_ship_up',
        '1 while the audit shipper copies the trail to the shared state database, 0 while it retries or stopped (a conflict: see the log)',
        () => (shipping().state === 'shipping' ? 1 : 0),
        'min',
      );
    }
    const state = sources.state;
    if (state) {
      gauge('stepgate_state_up', '1 while the shared state database is reachable, 0 while stepgate reconnects (step-up then fails closed)', () => (state().healthy ? 1 : 0), 'min');
      total('stepgate_state_errors_total', 'Connection failures of the shared state database (each followed by a reconnection with backoff)', () => state().errors);
    }
    // Process metrics (CPU, memory, event loop lag, handles), in this registry.
    collectDefaultMetrics({ register: this.registry });
  }

  /** The text a scrape gets, and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  // ───────────────────────────── ProxyMetrics ─────────────────────────────

  connectionOpened(): void {
    this.open++;
    this.connectionsTotal.inc();
  }

  connectionClosed(): void {
    this.open--;
  }

  connectionRefused(reason: RefusalReason): void {
    this.refused.inc({ reason });
  }

  upstreamConnectFailed(): void {
    this.upstreamFailures.inc();
  }

  catalogError(): void {
    this.catalogErrors.inc();
  }

  statementsDecided(statements: readonly { classes: readonly string[] }[], action: string): void {
    const d = DECISION_INDEX.get(action);
    if (d === undefined) return;
    for (let s = 0; s < statements.length; s++) {
      const classes = statements[s]!.classes;
      for (let k = 0; k < classes.length; k++) {
        const c = CLASS_INDEX.get(classes[k]!);
        if (c !== undefined) this.decided[c * DECISIONS.length + d]!++;
      }
    }
  }

  holdWaiting(): number {
    this.waiting++;
    return performance.now();
  }

  holdEnded(startedAt: number, outcome: HoldOutcome | null): void {
    this.waiting--;
    // Only a person's answer is a decision; an expiry, a cancel or a shutdown is not.
    if (outcome && (outcome.status === 'approved' || outcome.status === 'rejected')) this.holdDecision.observe((performance.now() - startedAt) / 1000);
  }

  holdOutcome(status: HoldStatus): void {
    this.holdOutcomes.inc({ status });
  }

  classified(ms: number): void {
    this.classification.observe(ms / 1000);
  }
}
