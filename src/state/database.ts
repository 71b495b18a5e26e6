/**
 * The shared state database (`state: postgres://...`): what several stepgate instances agree on.
 *
 * One PostgreSQL database of the operator's (any server; not the one stepgate guards, though it may be),
 * holding the schema `stepgate`: every component's tables, migrated in order under an advisory lock so two
 * instances starting at once do not both migrate. Queries go through a small pool; change notices arrive on
 * one dedicated connection that LISTENs.
 *
 * Invariants:
 * - A notice may be lost (NOTIFY is not delivered to a listener that is reconnecting). So every cache fed
 *   by notices also registers `onResync`, which runs after each (re)connection of the listener, before any
 *   later notice is delivered (notices arriving meanwhile are held until every resync finished), and
 *   reloads everything that cache holds. A cache is therefore at most one reconnection behind, never
 *   silently stale.
 * - `listen` resolves once LISTEN is in effect: load after it, and no change committed later is missed.
 * - The database down: queries reject (callers fail closed: a write that did not commit was not acknowledged),
 *   the listener retries with capped exponential backoff and jitter, and `healthy` is false until it is
 *   back; each transition is logged once and counted (`errors`).
 * - Nothing here logs a query's parameters or the URL's password.
 */
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Logger } from '../log.js';

/** One component's schema steps, applied in order; never edit a shipped step, append. */
export interface StateMigrations {
  component: string;
  steps: string[];
}

export interface StateDatabaseOptions {
  url: string;
  log: Logger;
  /** This instance's name (in `pg_stat_activity.application_name` and the instances table). */
  instanceId: string;
  /** First and longest wait between reconnection attempts (ms). */
  backoff?: { initialMs: number; maxMs: number };
  /** Pool size for queries. */
  poolSize?: number;
}

export type NoticeHandler = (payload: string) => void;

const SCHEMA = 'stepgate';
const DEFAULT_BACKOFF = { initialMs: 100, maxMs: 5_000 };

/** The URL as it may be logged: no password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

export class StateDatabase {
  private readonly pool: pg.Pool;
  private readonly handlers = new Map<string, Set<NoticeHandler>>();
  /** The LISTEN issued for a channel subscribed while the listener was up (a second subscriber awaits it too). */
  private readonly listening = new Map<string, Promise<void>>();
  private readonly resyncs = new Set<() => Promise<void> | void>();
  private readonly events = new EventEmitter();
  private listener: pg.Client | null = null;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private closed = false;
  /** False while the listener is down (notices may be missed; caches reload when it is back). */
  healthy = false;
  /** Connection failures seen (for metrics: stepgate_state_errors_total). */
  errors = 0;

  private constructor(private readonly options: StateDatabaseOptions) {
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 4,
      application_name: `stepgate ${options.instanceId}`,
      // A query must not wait forever for a connection when the database is gone: fail closed, quickly.
      connectionTimeoutMillis: 5_000,
      idleTimeoutMillis: 30_000,
    });
    // An idle pooled connection that dies is reported here; the next query gets a new one. (Health is the
    // listener's: it dies too when the server goes away.)
    this.pool.on('error', (err) => {
      this.errors++;
      options.log.warn('state.pool_error', { error: err.message });
    });
  }

  /** Connects, migrates every component's schema, and starts listening. */
  static async open(options: StateDatabaseOptions, migrations: StateMigrations[]): Promise<StateDatabase> {
    const db = new StateDatabase(options);
    try {
      await db.migrate(migrations);
      await db.connectListener();
    } catch (err) {
      await db.close();
      throw new Error(`cannot use the state database ${redactUrl(options.url)}: ${(err as Error).message}`);
    }
    return db;
  }

  get instanceId(): string {
    return this.options.instanceId;
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    return this.pool.query<R>(text, params);
  }

  /** Runs `fn` in one transaction (committed when it resolves, rolled back when it throws). */
  async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Sends a notice to every instance listening on `channel` (this one included). */
  async notify(channel: string, payload: string): Promise<void> {
    await this.pool.query('SELECT pg_notify($1, $2)', [channel, payload]);
  }

  /**
   * Notices on `channel`; resolves to the unsubscribe once LISTEN is in effect on the listener (or at once
   * while it is down: its reconnection LISTENs and resyncs). A cache that loads after this resolves cannot
   * miss a change committed after its load began.
   */
  async listen(channel: string, handler: NoticeHandler): Promise<() => void> {
    let set = this.handlers.get(channel);
    const unsubscribe = (): void => {
      set!.delete(handler);
    };
    if (set) {
      set.add(handler);
      await this.listening.get(channel);
      return unsubscribe;
    }
    set = new Set([handler]);
    this.handlers.set(channel, set);
    const listener = this.listener;
    if (listener) {
      const issued = listener.query(`LISTEN ${pg.escapeIdentifier(channel)}`).then(
        () => {},
        (err: Error) => this.failed('listen', err),
      );
      this.listening.set(channel, issued);
      await issued;
    }
    return unsubscribe;
  }

  /** Called after every (re)connection of the listener: reload what notices may have missed. */
  onResync(fn: () => Promise<void> | void): () => void {
    this.resyncs.add(fn);
    return () => this.resyncs.delete(fn);
  }

  /** 'up' | 'down' transitions of the listener (metrics and readiness). */
  on(event: 'up' | 'down', fn: () => void): void {
    this.events.on(event, fn);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const l = this.listener;
    this.listener = null;
    await l?.end().catch(() => {});
    await this.pool.end().catch(() => {});
  }

  // ───────────────────────────── internals ─────────────────────────────

  private async migrate(all: StateMigrations[]): Promise<void> {
    await this.transaction(async (c) => {
      // Instances starting together: one migrates, the others wait here and then find nothing to do.
      await c.query(`SELECT pg_advisory_xact_lock(hashtext('stepgate.migrate'))`);
      await c.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
      await c.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.schema_versions (component text PRIMARY KEY, version integer NOT NULL)`);
      for (const m of all) {
        const row = await c.query<{ version: number }>(`SELECT version FROM ${SCHEMA}.schema_versions WHERE component = $1`, [m.component]);
        const have = row.rows[0]?.version ?? 0;
        if (have > m.steps.length) {
          throw new Error(`its ${m.component} schema is version ${have}, newer than this stepgate knows (${m.steps.length}): upgrade stepgate on every instance`);
        }
        for (let v = have; v < m.steps.length; v++) await c.query(m.steps[v]!);
        if (have < m.steps.length) {
          await c.query(
            `INSERT INTO ${SCHEMA}.schema_versions (component, version) VALUES ($1, $2) ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version`,
            [m.component, m.steps.length],
          );
        }
      }
    });
  }

  private async connectListener(): Promise<void> {
    const client = new pg.Client({ connectionString: this.options.url, application_name: `stepgate ${this.options.instanceId} listener` });
    // Notices that arrive while the caches resync wait for the resync to finish, so that none is applied
    // before (and then overwritten by) a reload that began earlier.
    let held: pg.Notification[] | null = [];
    client.on('notification', (n) => {
      if (held) held.push(n);
      else this.deliver(n);
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('the connection ended')));
    try {
      await client.connect();
      for (const channel of this.handlers.keys()) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
      if (this.closed) {
        await client.end().catch(() => {});
        return;
      }
      this.listener = client;
      // Reload before declaring health: until then a cache may lack what was said while nobody listened.
      for (const fn of this.resyncs) await fn();
    } catch (err) {
      // A connection that failed half-way (LISTEN or a resync failed) must not stay open beside the next
      // attempt's: it would deliver notices to caches that think they are resyncing.
      if (this.listener === client) this.listener = null;
      client.removeAllListeners('end');
      await client.end().catch(() => {});
      throw err;
    }
    // Lost during the resync: its reconnection is scheduled already and will resync again.
    if (this.listener !== client) return;
    const waiting = held;
    held = null;
    for (const n of waiting) this.deliver(n);
    const wasDown = this.attempt > 0;
    this.attempt = 0;
    this.healthy = true;
    if (wasDown) this.options.log.info('state.reconnected', { url: redactUrl(this.options.url) });
    this.events.emit('up');
  }

  private deliver(n: pg.Notification): void {
    for (const h of this.handlers.get(n.channel) ?? []) {
      try {
        h(n.payload ?? '');
      } catch (err) {
        this.options.log.error('state.notice_failed', { channel: n.channel, error: (err as Error).stack ?? String(err) });
      }
    }
  }

  private lost(client: pg.Client, err: Error): void {
    if (this.listener !== client) return;
    this.listener = null;
    client.removeAllListeners('end');
    void client.end().catch(() => {});
    this.failed('listener', err);
    this.scheduleReconnect();
  }

  private failed(where: string, err: Error): void {
    if (this.closed) return;
    this.errors++;
    if (this.healthy) {
      this.healthy = false;
      this.options.log.error('state.disconnected', { where, url: redactUrl(this.options.url), error: err.message, note: 'step-up and deny fail closed until it is back; retrying with backoff' });
      this.events.emit('down');
    }
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const b = this.options.backoff ?? DEFAULT_BACKOFF;
    const wait = Math.min(b.maxMs, b.initialMs * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connectListener().catch((err) => {
        this.failed('listener', err as Error);
        this.scheduleReconnect();
      });
    }, wait);
    this.reconnectTimer.unref();
  }
}
