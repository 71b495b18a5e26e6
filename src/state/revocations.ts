/**
 * Console sign-outs shared by every instance: a signed-out session's id (`sid`) is refused everywhere,
 * not only where the person signed out. The sign-in cookie itself needs nothing shared but its signing key
 * (a shared secret of the identity store), so any instance accepts it; only revocations need a list.
 *
 * Invariants: `add` resolves once the revocation is committed (the sign-out is answered after that); every
 * instance keeps the unexpired ones in memory (the console checks each request against them), updated by
 * `stepgate_console` notices and reloaded whole after the listener reconnects; a revocation is kept until
 * the session could no longer be refreshed anyway (its `maxAt`), then pruned.
 */
import type { Revocations } from '../console/sessions.js';
import type { Logger } from '../log.js';
import type { StateDatabase } from './database.js';

const CHANNEL = 'stepgate_console';

export class SharedRevocations implements Revocations {
  private readonly revoked = new Map<string, number>();
  private readonly listeners = new Set<(sid: string) => void>();
  private unsubscribe: (() => void)[] = [];

  private constructor(
    private readonly db: StateDatabase,
    private readonly log: Logger,
  ) {}

  static async open(db: StateDatabase, log: Logger): Promise<SharedRevocations> {
    const r = new SharedRevocations(db, log);
    r.unsubscribe.push(await db.listen(CHANNEL, (sid) => void r.fetch(sid)));
    r.unsubscribe.push(db.onResync(() => r.reload()));
    await r.reload();
    return r;
  }

  has(sid: string): boolean {
    return this.revoked.has(sid);
  }

  async add(sid: string, until: number): Promise<void> {
    await this.db.query(
      `WITH r AS (INSERT INTO stepgate.console_revocations (sid, until) VALUES ($1, to_timestamp($2 / 1000.0)) ON CONFLICT (sid) DO NOTHING RETURNING sid)
       SELECT pg_notify($3, sid) FROM r`,
      [sid, until, CHANNEL],
    );
    this.remember(sid, until);
    // Sign-outs are rare: each one clears the expired (they can no longer be refreshed anyway).
    void this.db.query(`DELETE FROM stepgate.console_revocations WHERE until < now()`).catch(() => {});
  }

  /** Called with each sid revoked on another instance (the console ends that session's live connections). */
  onRevoked(fn: (sid: string) => void): void {
    this.listeners.add(fn);
  }

  close(): void {
    for (const u of this.unsubscribe) u();
  }

  private remember(sid: string, until: number): void {
    const isNew = !this.revoked.has(sid);
    this.revoked.set(sid, until);
    const now = Date.now();
    for (const [s, u] of this.revoked) if (u < now) this.revoked.delete(s);
    if (isNew) for (const fn of this.listeners) fn(sid);
  }

  private async fetch(sid: string): Promise<void> {
    try {
      const r = await this.db.query<{ until: Date }>(`SELECT until FROM stepgate.console_revocations WHERE sid = $1`, [sid]);
      if (r.rows[0]) this.remember(sid, r.rows[0].until.getTime());
    } catch (err) {
      this.log.warn('state.revocation_notice_failed', { error: (err as Error).message });
    }
  }

  private async reload(): Promise<void> {
    const r = await this.db.query<{ sid: string; until: Date }>(`SELECT sid, until FROM stepgate.console_revocations WHERE until > now()`);
    for (const row of r.rows) this.remember(row.sid, row.until.getTime());
  }
}
