/**
 * Waiting for a condition with a deadline (polling something that has no event to await, such as
 * pg_stat_activity), instead of sleeping a fixed time.
 */
import type pg from 'pg';

/** A TestPostgres (new connection per query) or a connected pg.Client (cheaper for polling). */
export interface Queryable {
  query(sql: string): Promise<pg.QueryResult>;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | null | undefined | false> | T | null | undefined | false, timeoutMs = 10_000, intervalMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null && value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Server backends (pg_stat_activity rows of client backends) whose query text matches `like`. */
export async function backendsRunning(db: Queryable, like: string): Promise<{ pid: number; state: string; application_name: string }[]> {
  const r = await db.query(
    `SELECT pid, state, application_name FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND query LIKE ${quote(like)}`,
  );
  return r.rows as { pid: number; state: string; application_name: string }[];
}

/** Waits until a backend runs (state active) a query matching `like`; resolves with its pid. */
export async function waitForActive(db: Queryable, like: string, timeoutMs = 10_000): Promise<number> {
  return waitFor(`a backend running ${like}`, async () => (await backendsRunning(db, like)).find((b) => b.state === 'active')?.pid, timeoutMs);
}

/** Waits until no backend with this pid exists. */
export async function waitForBackendGone(db: Queryable, pid: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(`backend ${pid} to exit`, async () => (await db.query(`SELECT 1 FROM pg_stat_activity WHERE pid = ${Number(pid)}`)).rowCount === 0, timeoutMs);
}

function quote(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
