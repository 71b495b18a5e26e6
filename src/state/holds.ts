/**
 * Held statements and grants shared by every instance on one state database (the broker's HoldExchange).
 *
 * A statement is held where its client is connected (the owner). The owner writes the challenge into
 * `stepgate.holds` and says so on the channel `stepgate_holds`; every other instance shows a copy on its
 * consoles (a `peer` Challenge). Whoever approves, wherever: the approval is inserted while the challenge's
 * row is locked, the approvals are counted in that same transaction, and the transaction that completes the
 * count sets the one final outcome (`status` moves from pending exactly once). The owner learns the outcome
 * from the notice and releases or rejects the statement.
 *
 * Invariants:
 * - The row's status is the truth. An owner releases a statement only for an `approved` outcome it read
 *   from the database (or wrote there itself). Refusals (cancel, client gone, shutdown) end locally at once
 *   and are recorded after; an expiry asks the database first, since an approval may have won.
 * - Each instance renews a lease (`stepgate.instances`). Any instance finding another's lease run out marks
 *   that instance stopped and its pending challenges abandoned (its clients were cut off with it); an owner
 *   that comes back after losing its lease finds its challenges abandoned and refuses their statements.
 * - Grants live in `stepgate.grants`; each instance keeps the active ones in memory (the statement path reads
 *   them there), updated by `stepgate_grants` notices and reloaded whole after the listener reconnects.
 *   A revocation is committed before the revoking console is told it worked.
 * - Times that decide (leases) are the database's `now()`, so instances' clocks need not agree for them.
 */
import os from 'node:os';
import type pg from 'pg';
import type { Logger } from '../log.js';
import { pidExists } from '../util/process-identity.js';
import type { HoldOutcome } from '../stepup/types.js';
import { Challenge, type Approval, type ChallengeSummary, type ConsoleBroker, type Grant, type HoldExchange, type RanOutcome } from '../stepup/broker.js';
import type { StateDatabase, StateMigrations } from './database.js';

export const HOLDS_MIGRATIONS: StateMigrations = {
  component: 'holds',
  steps: [
    `CREATE TABLE stepgate.instances (
       id text PRIMARY KEY,
       started_at timestamptz NOT NULL DEFAULT now(),
       renewed_at timestamptz NOT NULL DEFAULT now(),
       lease_ms integer NOT NULL,
       stopped_at timestamptz,
       host text NOT NULL,
       pid integer NOT NULL
     );
     CREATE TABLE stepgate.holds (
       id text PRIMARY KEY,
       instance text NOT NULL REFERENCES stepgate.instances (id),
       record jsonb NOT NULL,
       created_at timestamptz NOT NULL DEFAULT now(),
       status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'decided', 'abandoned')),
       outcome jsonb,
       ran jsonb NOT NULL DEFAULT '[]',
       decided_at timestamptz,
       decided_by text
     );
     CREATE INDEX holds_pending ON stepgate.holds (instance) WHERE status = 'pending';
     CREATE TABLE stepgate.hold_approvals (
       hold_id text NOT NULL REFERENCES stepgate.holds (id) ON DELETE CASCADE,
       user_name text NOT NULL,
       approval jsonb NOT NULL,
       instance text NOT NULL,
       at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (hold_id, user_name)
     );
     CREATE TABLE stepgate.grants (
       id text PRIMARY KEY,
       body jsonb NOT NULL,
       user_name text NOT NULL,
       rule text,
       file text,
       connection_id text,
       instance text NOT NULL,
       expires_at timestamptz NOT NULL,
       revoked_at timestamptz
     );
     CREATE INDEX grants_active ON stepgate.grants (user_name) WHERE revoked_at IS NULL;`,
  ],
};

const HOLDS = 'stepgate_holds';
const GRANTS = 'stepgate_grants';
/** Decided challenges and dead grants are kept this long (the audit trail keeps every decision for good). */
const KEEP_DECIDED = '7 days';
/** Old rows are pruned every this many sweeps (about every five minutes). */
const PRUNE_EVERY = 300;

/** What a peer needs to show and count a challenge: no statement texts beyond the summary. */
interface HoldRecord {
  request: Challenge['request'];
  entries: Challenge['entries'];
  summary: ChallengeSummary;
  createdAt: number;
  expiresAt: number;
}

type HoldNotice = { e: 'held' | 'approval' | 'decided' | 'ran'; id: string; by: string };
type GrantNotice = { e: 'put' | 'gone'; ids: string[]; by: string };

export interface SharedHoldsOptions {
  db: StateDatabase;
  broker: ConsoleBroker;
  log: Logger;
  leaseMs: number;
}

export class SharedHolds implements HoldExchange {
  private readonly db: StateDatabase;
  private readonly broker: ConsoleBroker;
  private readonly log: Logger;
  private readonly me: string;
  /** Owner side: a challenge's insert, which its approval and outcome must follow. */
  private readonly published = new Map<string, Promise<void>>();
  /** Writes not yet answered: close() waits for them (an outcome recorded before the instance goes). */
  private readonly inFlight = new Set<Promise<unknown>>();
  private renewTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void)[] = [];
  private closed = false;
  private sweeps = 0;

  private constructor(private readonly options: SharedHoldsOptions) {
    this.db = options.db;
    this.broker = options.broker;
    this.log = options.log;
    this.me = options.db.instanceId;
  }

  /**
   * Claims this instance's lease (refused while another live instance has the same name), subscribes,
   * loads what is pending and granted, and starts renewing and sweeping.
   */
  static async start(options: SharedHoldsOptions): Promise<SharedHolds> {
    const x = new SharedHolds(options);
    await x.claimLease();
    x.unsubscribe.push(await x.db.listen(HOLDS, (p) => x.onHoldNotice(p)));
    x.unsubscribe.push(await x.db.listen(GRANTS, (p) => x.onGrantNotice(p)));
    x.unsubscribe.push(x.db.onResync(() => x.resync()));
    await x.resync();
    const lease = options.leaseMs;
    x.renewTimer = setInterval(() => x.track(x.renew()).catch((err) => x.log.warn('state.renew_failed', { error: (err as Error).message })), Math.max(250, Math.floor(lease / 3)));
    // Sweeping is one indexed query: often, so that a dead instance's challenges end soon after its lease.
    x.sweepTimer = setInterval(() => x.track(x.sweep()).catch(() => {}), Math.max(250, Math.min(1000, Math.floor(lease / 2))));
    x.renewTimer.unref();
    x.sweepTimer.unref();
    x.broker.useExchange(x);
    return x;
  }

  get healthy(): boolean {
    return this.db.healthy && !this.closed;
  }

  // ───────────────────────────── HoldExchange ─────────────────────────────

  publish(c: Challenge): Promise<void> {
    const record: HoldRecord = {
      // The full texts stay with the owner (and its audit trail); peers show the summary.
      request: { ...c.request, statements: [], sql: undefined, params: undefined },
      entries: c.entries,
      summary: c.summary,
      createdAt: c.createdAt,
      expiresAt: c.expiresAt,
    };
    const done = this.db
      .query(`WITH h AS (INSERT INTO stepgate.holds (id, instance, record) VALUES ($1, $2, $3) RETURNING id) SELECT pg_notify($4, $5) FROM h`, [
        c.id,
        this.me,
        JSON.stringify(record),
        HOLDS,
        notice({ e: 'held', id: c.id, by: this.me }),
      ])
      .then(() => undefined);
    this.published.set(c.id, done);
    // Once answered, nothing needs to wait for it (a failed insert leaves no row: approvals find none).
    const forget = (): void => {
      this.published.delete(c.id);
    };
    done.then(forget, forget);
    return done;
  }

  async approve(
    c: Challenge,
    approval: Approval,
    decide: (all: Approval[]) => { outcome: HoldOutcome; grants: Grant[] } | null,
  ): Promise<{ state: 'pending' | 'decided' | 'closed'; approvals: Approval[]; outcome: HoldOutcome | null }> {
    await this.published.get(c.id);
    const result = await this.track(
      this.db.transaction(async (tx) => {
        const row = await tx.query<{ status: string; outcome: HoldOutcome | null }>(`SELECT status, outcome FROM stepgate.holds WHERE id = $1 FOR UPDATE`, [c.id]);
        if (row.rowCount === 0) return { state: 'closed' as const, approvals: [], outcome: null, removed: [] as string[], grants: [] as Grant[] };
        if (row.rows[0]!.status !== 'pending') return { state: 'closed' as const, approvals: await approvalsOf(tx, c.id), outcome: row.rows[0]!.outcome, removed: [], grants: [] };
        await tx.query(`INSERT INTO stepgate.hold_approvals (hold_id, user_name, approval, instance) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, [
          c.id,
          approval.user,
          JSON.stringify(approval),
          this.me,
        ]);
        const approvals = await approvalsOf(tx, c.id);
        const decided = decide(approvals);
        if (!decided) {
          await tx.query('SELECT pg_notify($1, $2)', [HOLDS, notice({ e: 'approval', id: c.id, by: this.me })]);
          return { state: 'pending' as const, approvals, outcome: null, removed: [], grants: [] };
        }
        await tx.query(`UPDATE stepgate.holds SET status = 'decided', outcome = $2, decided_at = now(), decided_by = $3 WHERE id = $1`, [c.id, JSON.stringify(decided.outcome), this.me]);
        const removed: string[] = [];
        for (const g of decided.grants) {
          // A new grant replaces the holder's older one for the same rule (and connection).
          const old = await tx.query<{ id: string }>(
            `UPDATE stepgate.grants SET revoked_at = now()
              WHERE revoked_at IS NULL AND user_name = $1 AND rule IS NOT DISTINCT FROM $2 AND file IS NOT DISTINCT FROM $3 AND connection_id IS NOT DISTINCT FROM $4
              RETURNING id`,
            [g.user, g.rule, g.file, g.connectionId],
          );
          removed.push(...old.rows.map((r) => r.id));
          await tx.query(
            `INSERT INTO stepgate.grants (id, body, user_name, rule, file, connection_id, instance, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, to_timestamp($8 / 1000.0))`,
            [g.id, JSON.stringify(g), g.user, g.rule, g.file, g.connectionId, this.me, g.expiresAt],
          );
        }
        await tx.query('SELECT pg_notify($1, $2)', [HOLDS, notice({ e: 'decided', id: c.id, by: this.me })]);
        if (decided.grants.length || removed.length) {
          await tx.query('SELECT pg_notify($1, $2)', [GRANTS, notice({ e: 'put', ids: decided.grants.map((g) => g.id), by: this.me })]);
          if (removed.length) await tx.query('SELECT pg_notify($1, $2)', [GRANTS, notice({ e: 'gone', ids: removed, by: this.me })]);
        }
        return { state: 'decided' as const, approvals, outcome: decided.outcome, removed, grants: decided.grants };
      }),
    );
    // Read your writes: this instance's statement path sees the grants before the console is answered.
    if (result.grants.length || result.removed.length) this.broker.putGrants(result.grants, result.removed);
    return { state: result.state, approvals: result.approvals, outcome: result.outcome };
  }

  async decide(id: string, outcome: HoldOutcome): Promise<HoldOutcome> {
    await this.published.get(id)?.catch(() => {});
    return this.track(
      (async () => {
        const won = await this.db.query(
          `UPDATE stepgate.holds SET status = 'decided', outcome = $2, decided_at = now(), decided_by = $3 WHERE id = $1 AND status = 'pending' RETURNING pg_notify($4, $5)`,
          [id, JSON.stringify(outcome), this.me, HOLDS, notice({ e: 'decided', id, by: this.me })],
        );
        if (won.rowCount === 1) return outcome;
        const row = await this.db.query<{ outcome: HoldOutcome | null }>(`SELECT outcome FROM stepgate.holds WHERE id = $1`, [id]);
        // Never recorded (its publish failed): the outcome stands as given.
        return row.rows[0]?.outcome ?? outcome;
      })(),
    );
  }

  async revokeGrant(id: string): Promise<boolean> {
    const r = await this.track(
      this.db.query(`UPDATE stepgate.grants SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING pg_notify($2, $3)`, [
        id,
        GRANTS,
        notice({ e: 'gone', ids: [id], by: this.me }),
      ]),
    );
    return r.rowCount === 1;
  }

  async recordOutcome(id: string, index: number, outcome: RanOutcome): Promise<void> {
    await this.track(
      this.db.query(`UPDATE stepgate.holds SET ran = ran || $2::jsonb WHERE id = $1 RETURNING pg_notify($3, $4)`, [
        id,
        JSON.stringify([{ index, ...outcome }]),
        HOLDS,
        notice({ e: 'ran', id, by: this.me }),
      ]),
    );
  }

  async dropConnectionGrants(connectionId: string): Promise<void> {
    const r = await this.track(
      this.db.query<{ id: string }>(`UPDATE stepgate.grants SET revoked_at = now() WHERE connection_id = $1 AND revoked_at IS NULL RETURNING id`, [connectionId]),
    );
    if (r.rowCount) await this.db.notify(GRANTS, notice({ e: 'gone', ids: r.rows.map((x) => x.id), by: this.me }));
  }

  /** Stops renewing, records the outcomes still being written, and gives up the lease. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const u of this.unsubscribe) u();
    await Promise.allSettled([...this.inFlight]);
    await this.db.query(`UPDATE stepgate.instances SET stopped_at = now() WHERE id = $1`, [this.me]).catch((err) => this.log.warn('state.lease_release_failed', { error: (err as Error).message }));
  }

  // ───────────────────────────── notices ─────────────────────────────

  private onHoldNotice(payload: string): void {
    const n = parse<HoldNotice>(payload);
    if (!n || n.by === this.me) return;
    this.track(
      (async () => {
        if (n.e === 'held') {
          const row = await this.db.query<{ record: HoldRecord; status: string }>(`SELECT record, status FROM stepgate.holds WHERE id = $1`, [n.id]);
          const r = row.rows[0];
          if (r && r.status === 'pending') this.broker.peerHeld(peerChallenge(n.id, r.record), await approvalsOf(this.db, n.id));
        } else if (n.e === 'approval') {
          this.broker.peerApprovals(n.id, await approvalsOf(this.db, n.id));
        } else if (n.e === 'ran') {
          const row = await this.db.query<{ ran: (RanOutcome & { index: number })[] }>(`SELECT ran FROM stepgate.holds WHERE id = $1`, [n.id]);
          for (const o of row.rows[0]?.ran ?? []) this.broker.outcome(n.id, o.index, o);
        } else {
          // With what already ran: its notice may have been handled before this one.
          const row = await this.db.query<{ outcome: HoldOutcome | null; ran: (RanOutcome & { index: number })[] }>(`SELECT outcome, ran FROM stepgate.holds WHERE id = $1`, [n.id]);
          const r = row.rows[0];
          if (r?.outcome) this.broker.decidedElsewhere(n.id, r.outcome);
          for (const o of r?.ran ?? []) this.broker.outcome(n.id, o.index, o);
        }
      })().catch((err) => this.log.warn('state.hold_notice_failed', { id: n.id, event: n.e, error: (err as Error).message })),
    );
  }

  private onGrantNotice(payload: string): void {
    const n = parse<GrantNotice>(payload);
    if (!n || n.by === this.me) return;
    if (n.e === 'gone') return this.broker.putGrants([], n.ids);
    this.track(
      this.db
        .query<{ body: Grant }>(`SELECT body FROM stepgate.grants WHERE id = ANY($1) AND revoked_at IS NULL`, [n.ids])
        .then((r) => this.broker.putGrants(r.rows.map((x) => x.body)))
        .catch((err) => this.log.warn('state.grant_notice_failed', { error: (err as Error).message })),
    );
  }

  /** After (re)connecting: what notices may have said while nobody listened. */
  private async resync(): Promise<void> {
    const peers = await this.db.query<{ id: string; record: HoldRecord }>(`SELECT id, record FROM stepgate.holds WHERE status = 'pending' AND instance <> $1`, [this.me]);
    const pending = new Set(peers.rows.map((r) => r.id));
    for (const r of peers.rows) this.broker.peerHeld(peerChallenge(r.id, r.record), await approvalsOf(this.db, r.id));
    // Copies of peers' challenges decided meanwhile, and this instance's own decided elsewhere.
    const known = [...this.broker.pendingIds('peer').filter((id) => !pending.has(id)), ...this.broker.pendingIds('local')];
    if (known.length) {
      const decided = await this.db.query<{ id: string; outcome: HoldOutcome }>(`SELECT id, outcome FROM stepgate.holds WHERE id = ANY($1) AND status <> 'pending'`, [known]);
      for (const r of decided.rows) this.broker.decidedElsewhere(r.id, r.outcome);
    }
    const grants = await this.db.query<{ body: Grant }>(`SELECT body FROM stepgate.grants WHERE revoked_at IS NULL AND expires_at > now()`);
    this.broker.replaceGrants(grants.rows.map((r) => r.body));
  }

  // ───────────────────────────── the lease ─────────────────────────────

  private async claimLease(): Promise<void> {
    // Restarted on the same host after a crash: the old process is gone, so its lease need not run out.
    const prior = await this.db.query<{ host: string; pid: number; stopped: boolean }>(`SELECT host, pid, stopped_at IS NOT NULL AS stopped FROM stepgate.instances WHERE id = $1`, [this.me]);
    const p = prior.rows[0];
    if (p && !p.stopped && p.host === os.hostname() && p.pid !== process.pid && !pidExists(p.pid)) {
      await this.db.query(`UPDATE stepgate.instances SET stopped_at = now() WHERE id = $1 AND pid = $2`, [this.me, p.pid]);
    }
    const r = await this.db.query(
      `INSERT INTO stepgate.instances AS i (id, lease_ms, host, pid) VALUES ($1, $2, $3, $4)
       ON CONFLICT (id) DO UPDATE SET started_at = now(), renewed_at = now(), lease_ms = EXCLUDED.lease_ms, stopped_at = NULL, host = EXCLUDED.host, pid = EXCLUDED.pid
        WHERE i.stopped_at IS NOT NULL OR i.renewed_at < now() - make_interval(secs => i.lease_ms / 1000.0)
       RETURNING id`,
      [this.me, this.options.leaseMs, os.hostname(), process.pid],
    );
    if (r.rowCount !== 1) {
      throw new Error(`another stepgate instance named "${this.me}" holds a live lease on the shared state: give each instance its own name (state.instance in the config)`);
    }
    // A previous run under this name that died with statements held: its clients are gone.
    const left = await this.db.query<{ id: string }>(
      `UPDATE stepgate.holds SET status = 'abandoned', outcome = $2, decided_at = now(), decided_by = $1 WHERE instance = $1 AND status = 'pending' RETURNING id`,
      [this.me, JSON.stringify(abandoned(this.me))],
    );
    for (const { id } of left.rows) await this.db.notify(HOLDS, notice({ e: 'decided', id, by: this.me }));
  }

  private async renew(): Promise<void> {
    if (this.closed) return;
    const r = await this.db.query(`UPDATE stepgate.instances SET renewed_at = now() WHERE id = $1 AND stopped_at IS NULL`, [this.me]);
    if (r.rowCount === 1) return;
    // Another instance declared this one gone (it could not renew in time): its held statements were
    // abandoned; claim a new lease and drop what this instance still holds.
    this.log.error('state.lease_lost', { instance: this.me, note: 'statements held here were abandoned; their clients get an error' });
    await this.claimLease();
    await this.resync();
  }

  /** Any instance: abandons the challenges of instances whose lease ran out, and drops old rows. */
  private async sweep(): Promise<void> {
    if (this.closed) return;
    const dead = await this.db.query<{ id: string; instance: string }>(
      `WITH dead AS (
         UPDATE stepgate.instances SET stopped_at = now()
          WHERE stopped_at IS NULL AND renewed_at < now() - make_interval(secs => lease_ms / 1000.0)
          RETURNING id
       ), grants AS (
         UPDATE stepgate.grants SET revoked_at = now() WHERE revoked_at IS NULL AND connection_id IS NOT NULL AND instance IN (SELECT id FROM dead) RETURNING id
       )
       UPDATE stepgate.holds h SET status = 'abandoned', decided_at = now(), decided_by = $1,
              outcome = jsonb_build_object('status', 'unavailable', 'reason', 'abandoned: stepgate instance ' || h.instance || ' stopped renewing its lease (its clients were cut off)')
        WHERE h.status = 'pending' AND h.instance IN (SELECT id FROM dead)
        RETURNING h.id, h.instance`,
      [this.me],
    );
    for (const r of dead.rows) {
      this.log.warn('state.hold_abandoned', { challenge: r.id, instance: r.instance });
      await this.db.notify(HOLDS, notice({ e: 'decided', id: r.id, by: this.me }));
      this.broker.decidedElsewhere(r.id, abandoned(r.instance));
    }
    if (++this.sweeps % PRUNE_EVERY === 0) {
      await this.db.query(`DELETE FROM stepgate.holds WHERE status <> 'pending' AND decided_at < now() - interval '${KEEP_DECIDED}'`);
      await this.db.query(`DELETE FROM stepgate.grants WHERE coalesce(revoked_at, expires_at) < now() - interval '${KEEP_DECIDED}'`);
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const forget = (): void => {
      this.inFlight.delete(p);
    };
    p.then(forget, forget);
    return p;
  }
}

function abandoned(instance: string): HoldOutcome {
  return { status: 'unavailable', reason: `abandoned: stepgate instance ${instance} stopped renewing its lease (its clients were cut off)` };
}

function peerChallenge(id: string, r: HoldRecord): Challenge {
  return new Challenge(id, r.request, r.entries, r.createdAt, r.expiresAt, r.summary, 'peer');
}

/** Anything that runs a query: the pool (StateDatabase) or a transaction's client. */
interface Queryable {
  query<R extends pg.QueryResultRow>(text: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
}

async function approvalsOf(q: Queryable, id: string): Promise<Approval[]> {
  const r = await q.query<{ approval: Approval }>(`SELECT approval FROM stepgate.hold_approvals WHERE hold_id = $1 ORDER BY at, user_name`, [id]);
  return r.rows.map((x) => x.approval);
}

function notice(n: HoldNotice | GrantNotice): string {
  return JSON.stringify(n);
}

function parse<T>(payload: string): T | null {
  try {
    return JSON.parse(payload) as T;
  } catch {
    return null;
  }
}
