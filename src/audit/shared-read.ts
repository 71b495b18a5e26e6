/**
 * Reading the shared store (`stepgate.audit_*`, shared-schema.ts) with the readers of one audit.db: one
 * instance's rows are copied into a temporary audit.db (same schema, db.ts) and `verify`, `sessions`,
 * `replay` and `export` run on it unchanged.
 *
 * Why that is sound: the copy holds, row for row and byte for byte, what the shared store holds for that
 * instance, read in one REPEATABLE READ snapshot (the shipper commits whole rounds, so the snapshot ends at
 * a round); the verifier hashes the stored text as it is, so an event altered, deleted or inserted in
 * PostgreSQL is altered, missing or inserted in the copy and named by its seq. Only the sessions index is
 * chosen: the newest version of each session (a version deleted or altered shows as an index mismatch).
 * The key that checks the checkpoints is the instance's pinned key (or the one the auditor gives).
 *
 * The copy is private (a 0700 temporary directory) and removed when done. Its cost is one pass over the
 * instance's rows: for `sessions` only the index is copied.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { isAlive } from '../util/process-identity.js';
import { openAuditDbForReading, openAuditDbForWriting } from './db.js';
import { publicKeyFromJwk, type PublicKey } from './keys.js';
import { verifyAudit, type VerifyReport } from './verify.js';

export interface SharedInstance {
  instance: string;
  /** Its pinned checkpoint key (null: events without a key, which verify reports). */
  key: PublicKey | null;
}

/**
 * The names of the instances with a trail in the shared store (a pinned key, or events without one): the
 * events' names by a loose index scan of their primary key (one descent per instance, not a pass over
 * every event).
 */
export const INSTANCE_NAMES_SQL = `WITH RECURSIVE shipped AS (
    (SELECT instance FROM stepgate.audit_events ORDER BY instance LIMIT 1)
    UNION ALL
    SELECT (SELECT e.instance FROM stepgate.audit_events e WHERE e.instance > shipped.instance ORDER BY e.instance LIMIT 1) FROM shipped WHERE shipped.instance IS NOT NULL
  )
  SELECT instance FROM stepgate.audit_keys UNION SELECT instance FROM shipped WHERE instance IS NOT NULL`;

/** Every instance with a trail in the shared store, by name. */
export async function sharedInstances(client: Pick<pg.ClientBase, 'query'>): Promise<SharedInstance[]> {
  const rows = (
    await client.query<{ instance: string; jwk: Record<string, string> | null }>(
      `SELECT i.instance, k.jwk FROM (${INSTANCE_NAMES_SQL}) i LEFT JOIN stepgate.audit_keys k USING (instance) ORDER BY i.instance`,
    )
  ).rows;
  return Promise.all(rows.map(async (r) => ({ instance: r.instance, key: r.jwk ? await publicKeyFromJwk(r.jwk, `the key pinned to instance ${r.instance} in the shared store`) : null })));
}

export interface Copy {
  db: Database.Database;
  dispose(): void;
}

const PAGE = 5000;

/** One instance's trail as an audit.db (read-only handle); `sessionsOnly` copies the sessions index alone. */
export async function copyInstance(client: pg.ClientBase, instance: string, options: { sessionsOnly?: boolean } = {}): Promise<Copy> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-copy-'));
  const dispose = (): void => fs.rmSync(dir, { recursive: true, force: true });
  try {
    const out = openAuditDbForWriting(dir);
    // A scratch copy: its durability does not matter, the shared store is the original.
    out.pragma('synchronous = OFF');
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        await copyRows(client, instance, out, options.sessionsOnly === true);
      } finally {
        await client.query('COMMIT');
      }
    } finally {
      out.close();
    }
    return { db: openAuditDbForReading(dir), dispose };
  } catch (err) {
    dispose();
    throw err;
  }
}

async function copyRows(client: pg.ClientBase, instance: string, out: Database.Database, sessionsOnly: boolean): Promise<void> {
  const sessions = await client.query(
    `SELECT DISTINCT ON (session) session, connection, user_name AS "user", database, client, application, tls, server_pid, start_time, end_time,
       end_reason, duration_ms, bytes_in, bytes_out, statements, denied, held, first_seq, last_seq, run
     FROM stepgate.audit_sessions WHERE instance = $1 ORDER BY session, last_seq DESC`,
    [instance],
  );
  const insertSession = out.prepare(`INSERT INTO sessions (session, connection, user, database, client, application, tls, server_pid, start_time, end_time,
      end_reason, duration_ms, bytes_in, bytes_out, statements, denied, held, first_seq, last_seq, run)
    VALUES (@session, @connection, @user, @database, @client, @application, @tls, @server_pid, @start_time, @end_time,
      @end_reason, @duration_ms, @bytes_in, @bytes_out, @statements, @denied, @held, @first_seq, @last_seq, @run)`);
  out.transaction(() => {
    for (const r of sessions.rows) insertSession.run(numbers(r, ['start_time', 'end_time', 'bytes_in', 'bytes_out', 'first_seq', 'last_seq']));
  })();
  if (sessionsOnly) return;

  const insertEvent = out.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)');
  for (let after = -1; ; ) {
    const page = await client.query<{ seq: string; session: number; sseq: string; time: string; kind: string; body: string; hash: string }>(
      'SELECT seq, session, sseq, time, kind, body, hash FROM stepgate.audit_events WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT $3',
      [instance, after, PAGE],
    );
    out.transaction(() => {
      for (const r of page.rows) insertEvent.run(Number(r.seq), r.session, Number(r.sseq), Number(r.time), r.kind, r.body, r.hash);
    })();
    if (page.rows.length < PAGE) break;
    after = Number(page.rows[page.rows.length - 1]!.seq);
  }
  const spans = await client.query('SELECT session, first_seq, last_seq FROM stepgate.audit_spans WHERE instance = $1', [instance]);
  const checkpoints = await client.query('SELECT id, seq, hash, time, reason, jws FROM stepgate.audit_checkpoints WHERE instance = $1 ORDER BY id', [instance]);
  const anchor = (await client.query('SELECT seq, hash, checkpoint FROM stepgate.audit_anchors WHERE instance = $1', [instance])).rows[0];
  const insertSpan = out.prepare('INSERT INTO session_spans (session, first_seq, last_seq) VALUES (?, ?, ?)');
  const insertCheckpoint = out.prepare('INSERT INTO checkpoints (id, seq, hash, time, reason, jws) VALUES (?, ?, ?, ?, ?, ?)');
  out.transaction(() => {
    for (const s of spans.rows) insertSpan.run(s.session, Number(s.first_seq), Number(s.last_seq));
    for (const c of checkpoints.rows) insertCheckpoint.run(c.id, Number(c.seq), c.hash, Number(c.time), c.reason, c.jws);
    if (anchor) out.prepare("INSERT INTO meta (key, value) VALUES ('anchor', ?)").run(JSON.stringify({ seq: Number(anchor.seq), hash: anchor.hash, checkpoint: anchor.checkpoint }));
  })();
}

/** node-postgres returns bigint columns as strings: these become numbers (all fit: times in ms, counts). */
function numbers(row: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out = { ...row };
  for (const k of keys) if (out[k] !== null && out[k] !== undefined) out[k] = Number(out[k]);
  return out;
}

/**
 * Whether a run without audit.close still runs (for verify): on this host, its process; elsewhere, its
 * instance's lease in `stepgate.instances` (renewed, not stopped, same host and pid). A reader without
 * access to that table falls back to "not known to run".
 */
export async function runningCheck(client: pg.ClientBase, instance: string): Promise<(run: { pid: number; host: string | null; start: string | null }) => boolean> {
  let lease: { host: string; pid: number } | null = null;
  try {
    lease =
      (
        await client.query<{ host: string; pid: number }>(
          `SELECT host, pid FROM stepgate.instances WHERE id = $1 AND stopped_at IS NULL AND renewed_at + lease_ms * interval '1 millisecond' > now()`,
          [instance],
        )
      ).rows[0] ?? null;
  } catch {
    lease = null;
  }
  return (run) => (run.host === os.hostname() ? isAlive({ pid: run.pid, start: run.start }) : lease !== null && lease.host === run.host && lease.pid === run.pid);
}

/**
 * Verifies one instance's chain in the shared store (a copy, as above) with `key`, default its pinned
 * key; null when it has none (its events cannot be checked against a checkpoint key: a failure the
 * caller reports). The run check knows other hosts' instances by their leases (runningCheck).
 */
export async function verifyShared(client: pg.ClientBase, instance: SharedInstance, key: PublicKey | null = instance.key): Promise<VerifyReport | null> {
  if (key === null) return null;
  const running = await runningCheck(client, instance.instance);
  const copy = await copyInstance(client, instance.instance);
  try {
    return await verifyAudit(copy.db, key, { running });
  } finally {
    copy.db.close();
    copy.dispose();
  }
}

export class SharedSessionError extends Error {}

/**
 * The instance a session id names: `INSTANCE/ID` names it outright; a bare connection id (or unique
 * prefix) is looked up in every instance's index. `#NUMBER` is per instance, so it needs `INSTANCE/`.
 */
export async function sessionInstance(client: pg.ClientBase, id: string, only: string | null): Promise<{ instance: string; id: string }> {
  const slash = id.indexOf('/');
  if (slash >= 0) return { instance: id.slice(0, slash), id: id.slice(slash + 1) };
  if (only !== null) return { instance: only, id };
  if (id.startsWith('#')) throw new SharedSessionError(`session numbers are per instance: write INSTANCE/${id} (instances as listed by stepgate audit sessions)`);
  if (!/^[0-9a-fA-F-]{1,36}$/.test(id)) throw new SharedSessionError(`"${id}" is not a session id (hexadecimal, as listed by stepgate audit sessions)`);
  const prefix = id.toLowerCase();
  const rows = (
    await client.query<{ instance: string; connection: string }>(
      `SELECT DISTINCT instance, connection FROM stepgate.audit_sessions WHERE connection LIKE $1 ORDER BY instance, connection LIMIT 11`,
      [`${prefix.replace(/[%_\\]/g, '\\$&')}%`],
    )
  ).rows;
  if (rows.length === 0) throw new SharedSessionError(`no session ${id} in any instance's trail`);
  const exact = rows.filter((r) => r.connection === prefix);
  const pick = exact.length === 1 ? exact : rows;
  if (pick.length > 1) throw new SharedSessionError(`session id ${id} is ambiguous: ${pick.slice(0, 10).map((r) => `${r.instance}/${r.connection}`).join(', ')}; give more characters`);
  return { instance: pick[0]!.instance, id };
}
