/**
 * Webhooks to reach approvers: a BrokerListener that turns held (and decided) statements into signed
 * HTTP POSTs, delivered from a bounded queue with retries.
 *
 * Invariants:
 * - Never in the way of a hold: the broker calls the listener synchronously, and all it does is build
 *   the body and enqueue; delivery happens later, off the hold path. A full queue drops (audited), it
 *   never blocks or grows without bound.
 * - Every attempt is audited (`notify.delivered`, `notify.failed`: the webhook's name, the host, the
 *   HTTP status or the error, whether it will be retried) and nothing else about the webhook: no secret,
 *   no URL path (a Slack webhook URL is itself a secret), no body.
 * - Every request is signed (signing.ts) with a fresh timestamp per attempt; retries carry the same
 *   `X-Stepgate-Delivery` id so receivers can drop duplicates.
 * - Retries: network errors, timeouts, 5xx, 408 and 429, up to `attempts` tries, waiting
 *   min(cap, base × 2^(n−1)) before try n+1. Other 4xx are the receiver saying no: not retried.
 */
import { randomBytes } from 'node:crypto';
import type { AuditSink } from '../audit/types.js';
import type { Logger } from '../log.js';
import { compileGlobList, type TextMatcher } from '../rules/glob.js';
import type { BrokerListener, Challenge, ResolvedView } from '../stepup/broker.js';
import type { HoldOutcome } from '../stepup/types.js';
import { notifyEvent, slackBody, type NotifyEventKind } from './messages.js';
import { SIGNATURE_HEADER, signHeader } from './signing.js';

export interface WebhookConfig {
  name: string;
  url: string;
  format: 'slack' | 'json';
  /** The HMAC key (from secret_env or secret_file; never written anywhere by stepgate). */
  secret: string;
  events: NotifyEventKind[];
  /**
   * Rule names (globs) this webhook is for; null: every rule; empty: only rules that name it (`notify:` in
   * a rule file). Matched against every rule that asked.
   */
  rules: string[] | null;
  /** Tries per notification, the first included. */
  attempts: number;
}

export interface NotifyConfig {
  webhooks: WebhookConfig[];
}

export const NOTIFY_DEFAULTS = {
  attempts: 5,
  baseDelayMs: 1000,
  maxDelayMs: 60_000,
  timeoutMs: 10_000,
  maxQueue: 1000,
  concurrency: 4,
} as const;

/** The wait before try `attempt + 1`, after try `attempt` (1-based) failed. */
export function backoffMs(attempt: number, baseMs: number = NOTIFY_DEFAULTS.baseDelayMs, capMs: number = NOTIFY_DEFAULTS.maxDelayMs): number {
  return Math.min(capMs, baseMs * 2 ** (attempt - 1));
}

export interface NotifierOptions {
  webhooks: WebhookConfig[];
  audit: Pick<AuditSink, 'event'>;
  log: Logger;
  /** The console link of a challenge (…/c/<id>). */
  url(challengeId: string): string;
  /** The clock the signature's timestamp is taken from. */
  now?(): number;
  /** Waits `ms` (the backoff) or until `signal` aborts; tests pass one that records and returns at once. */
  sleep?(ms: number, signal: AbortSignal): Promise<void>;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Per attempt. */
  timeoutMs?: number;
  /** Deliveries queued, waiting for a retry or in flight, at most. */
  maxQueue?: number;
  concurrency?: number;
}

interface Delivery {
  id: string;
  hook: WebhookConfig;
  event: NotifyEventKind;
  challenge: string;
  body: string;
  attempt: number;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    timer.unref();
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export class WebhookNotifier implements BrokerListener {
  private readonly pending: Delivery[] = [];
  private active = 0;
  private waiting = 0;
  private readonly abort = new AbortController();
  private readonly matchers = new Map<WebhookConfig, TextMatcher | null>();
  private idleWaiters: (() => void)[] = [];
  /** Webhook names rules asked for that the config does not have (warned once each). */
  private readonly unknown = new Set<string>();
  private readonly o: Required<Omit<NotifierOptions, 'webhooks' | 'audit' | 'log' | 'url'>>;

  constructor(private readonly options: NotifierOptions) {
    this.o = {
      now: options.now ?? Date.now,
      sleep: options.sleep ?? defaultSleep,
      baseDelayMs: options.baseDelayMs ?? NOTIFY_DEFAULTS.baseDelayMs,
      maxDelayMs: options.maxDelayMs ?? NOTIFY_DEFAULTS.maxDelayMs,
      timeoutMs: options.timeoutMs ?? NOTIFY_DEFAULTS.timeoutMs,
      maxQueue: options.maxQueue ?? NOTIFY_DEFAULTS.maxQueue,
      concurrency: options.concurrency ?? NOTIFY_DEFAULTS.concurrency,
    };
    for (const h of options.webhooks) this.matchers.set(h, h.rules === null ? null : h.rules.length === 0 ? () => false : compileGlobList(h.rules, false));
  }

  // ───────────────────────────── BrokerListener ─────────────────────────────

  // Only the instance holding a statement tells the webhooks (others sharing the state show copies).
  challengeCreated(c: Challenge): void {
    if (c.origin === 'local') this.enqueue('held', c);
  }

  challengeUpdated(): void {}

  challengeResolved(c: Challenge, outcome: HoldOutcome, _resolved: ResolvedView): void {
    if (c.origin === 'local') this.enqueue('decided', c, outcome);
  }

  grantsChanged(): void {}

  // ───────────────────────────── lifecycle ─────────────────────────────

  /** Resolves when nothing is queued, waiting or in flight (tests). */
  idle(): Promise<void> {
    if (this.busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops: queued deliveries are dropped, waits and requests in flight are aborted. */
  close(): void {
    this.abort.abort();
    this.pending.length = 0;
    this.settleIdle();
  }

  private get busy(): number {
    return this.pending.length + this.active + this.waiting;
  }

  // ───────────────────────────── internals ─────────────────────────────

  private enqueue(event: NotifyEventKind, c: Challenge, outcome?: HoldOutcome): void {
    if (this.abort.signal.aborted) return;
    const named = new Set(c.entries.flatMap((e) => e.notify ?? []));
    for (const name of named) {
      if (!this.options.webhooks.some((h) => h.name === name) && !this.unknown.has(name)) {
        this.unknown.add(name);
        this.options.log.warn('notify.unknown_webhook', { webhook: name, rules: c.entries.filter((e) => e.notify?.includes(name)).map((e) => e.rule), fix: `add a webhook named ${name} under notify.webhooks in the config file, or correct notify: in the rule` });
      }
    }
    const hooks = this.options.webhooks.filter((h) => {
      if (!h.events.includes(event)) return false;
      if (named.has(h.name)) return true;
      const m = this.matchers.get(h);
      return !m || c.entries.some((e) => m(e.rule ?? 'default'));
    });
    if (hooks.length === 0) return;
    const ev = notifyEvent(event, c, this.options.url(c.id), outcome);
    const json = JSON.stringify(ev);
    let slack: string | null = null;
    for (const hook of hooks) {
      const body = hook.format === 'slack' ? (slack ??= JSON.stringify(slackBody(ev))) : json;
      const d: Delivery = { id: randomBytes(12).toString('base64url'), hook, event, challenge: c.id, body, attempt: 0 };
      if (this.busy >= this.o.maxQueue) {
        this.options.log.warn('notify.dropped', { webhook: hook.name, event, challenge: c.id, queued: this.busy });
        this.record('notify.failed', d, { error: `the delivery queue is full (${this.o.maxQueue})`, will_retry: false });
        continue;
      }
      this.pending.push(d);
    }
    // Later, never inside the broker's hold().
    setImmediate(() => this.pump());
  }

  private pump(): void {
    while (!this.abort.signal.aborted && this.active < this.o.concurrency && this.pending.length > 0) {
      const d = this.pending.shift()!;
      this.active++;
      void this.send(d).finally(() => {
        this.active--;
        this.pump();
        this.settleIdle();
      });
    }
  }

  private async send(d: Delivery): Promise<void> {
    d.attempt++;
    const started = this.o.now();
    let status: number | null = null;
    let error: string | null = null;
    try {
      const res = await fetch(d.hook.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'stepgate',
          [SIGNATURE_HEADER]: signHeader(d.hook.secret, this.o.now(), d.body),
          'x-stepgate-event': d.event,
          'x-stepgate-delivery': d.id,
        },
        body: d.body,
        redirect: 'error',
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.o.timeoutMs)]),
      });
      status = res.status;
      // The body is not needed; reading it releases the connection.
      await res.arrayBuffer().catch(() => {});
    } catch (err) {
      error = describe(err, this.o.timeoutMs).split(d.hook.url).join('<url>');
    }
    if (this.abort.signal.aborted) return;
    const durationMs = Math.max(0, this.o.now() - started);
    if (status !== null && status >= 200 && status < 300) {
      this.record('notify.delivered', d, { status, duration_ms: durationMs });
      return;
    }
    const retryable = status === null || status >= 500 || status === 408 || status === 429;
    const willRetry = retryable && d.attempt < d.hook.attempts;
    const delay = willRetry ? backoffMs(d.attempt, this.o.baseDelayMs, this.o.maxDelayMs) : 0;
    this.record('notify.failed', d, {
      ...(status !== null ? { status } : { error: error ?? 'unknown error' }),
      duration_ms: durationMs,
      will_retry: willRetry,
      ...(willRetry ? { retry_in_ms: delay } : {}),
    });
    this.options.log.warn('notify.failed', { webhook: d.hook.name, event: d.event, challenge: d.challenge, attempt: d.attempt, status, error, will_retry: willRetry });
    if (!willRetry) return;
    // The wait holds no concurrency slot: one slow receiver does not stop the others.
    this.waiting++;
    void this.o
      .sleep(delay, this.abort.signal)
      .then(() => {
        this.waiting--;
        if (this.abort.signal.aborted) return this.settleIdle();
        this.pending.push(d);
        this.pump();
      })
      .catch(() => {
        this.waiting--;
        this.settleIdle();
      });
  }

  private record(kind: 'notify.delivered' | 'notify.failed', d: Delivery, fields: Record<string, unknown>): void {
    let host = '';
    try {
      host = new URL(d.hook.url).host;
    } catch {
      // validated at config load
    }
    try {
      this.options.audit.event?.(kind, { webhook: d.hook.name, host, event: d.event, challenge: d.challenge, delivery: d.id, attempt: d.attempt, ...fields });
    } catch (err) {
      this.options.log.error('notify.audit_failed', { error: (err as Error).message });
    }
  }

  private settleIdle(): void {
    if (this.busy > 0 && !this.abort.signal.aborted) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

/** A network error as an operator reads it (no URL: only the cause, which names host and port at most). */
function describe(err: unknown, timeoutMs: number): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`;
  const cause = e?.cause;
  if (cause?.code) return `${cause.code}${cause.message ? `: ${cause.message}` : ''}`;
  return e?.message ?? String(err);
}
