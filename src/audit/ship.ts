/**
 * Shipping one instance's audit trail to the shared store: what one round copies from `DATA/audit.db` to
 * the `stepgate.audit_*` tables (shared-schema.ts). The shipper thread (ship-worker.ts) runs rounds.
 *
 * A round reads audit.db in one read transaction (a snapshot: it always ends at a writer commit, so every
 * session row and span in it is complete) and writes in one PostgreSQL transaction holding an advisory
 * lock on the instance's name. It reads how far the shared store got (the instance's highest seq and
 * checkpoint id) inside that transaction, so a commit whose acknowledgement was lost is never shipped
 * twice, and copies everything after it: events, the sessions index rows they changed (one version per
 * change), their spans, new checkpoints.
 *
 * Invariants:
 * - Only INSERT, never a rewrite. Rows after the store's high-water mark cannot exist, so a plain INSERT
 *   that conflicts means someone else wrote there, and the round fails.
 * - The shared store's chain must be this trail's: its last event must have the same hash as this trail's
 *   event of that seq, its events must not go beyond this trail's head, and its key for the instance must be
 *   this trail's key. Otherwise it is a ShipConflict (another data directory ships under this instance's
 *   name, or the store was edited): the shipper alarms and ships nothing more.
 * - Local events pruned by retention before they were shipped cannot be shipped: the round reports the gap
 *   (the shipped chain then has a hole `audit verify` names), except on an instance's first shipment, where
 *   the retention anchor (vouched for by a shipped checkpoint) is shipped and the chain starts after it.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { getAnchor } from './db.js';
import type { EventRow } from './format.js';
import type { PublicKey } from './keys.js';
import type { SessionRow } from './read.js';

/** The shared store holds a chain under this instance's name that is not this trail's. */
export class ShipConflict extends Error {}

/** Where this trail ends: its last seq and its last checkpoint's id (0 for none). */
export interface LocalHead {
  seq: number;
  checkpoint: number;
}

export interface RoundResult {
  /** The instance's last seq in the shared store after the round. */
  shipped: number;
  /** This trail's head in the round's snapshot (all of it is shipped when the round returns). */
  head: LocalHead;
  events: number;
  checkpoints: number;
  /** Events pruned locally before they were shipped (first and last seq), never to be in the shared store. */
  lost: { from: number; to: number } | null;
}

/** Events copied per INSERT (and read from audit.db per page). */
const PAGE = 1000;

const INSERT_EVENTS = `INSERT INTO stepgate.audit_events (instance, seq, session, sseq, time, kind, body, hash)
  SELECT $1, * FROM unnest($2::bigint[], $3::integer[], $4::bigint[], $5::bigint[], $6::text[], $7::text[], $8::text[])`;
const INSERT_SESSIONS = `INSERT INTO stepgate.audit_sessions (instance, session, last_seq, connection, user_name, database, client, application, tls,
    server_pid, start_time, end_time, end_reason, duration_ms, bytes_in, bytes_out, statements, denied, held, first_seq, run)
  SELECT $1, session, last_seq, connection, "user", database, client, application, tls, server_pid, start_time, end_time, end_reason,
    duration_ms, bytes_in, bytes_out, statements, denied, held, first_seq, run
  FROM jsonb_to_recordset($2::jsonb) AS x(session integer, last_seq bigint, connection text, "user" text, database text, client text,
    application text, tls integer, server_pid integer, start_time bigint, end_time bigint, end_reason text, duration_ms double precision,
    bytes_in bigint, bytes_out bigint, statements integer, denied integer, held integer, first_seq bigint, run text)`;
const INSERT_SPANS = `INSERT INTO stepgate.audit_spans (instance, session, first_seq, last_seq)
  SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::bigint[])`;
const INSERT_CHECKPOINTS = `INSERT INTO stepgate.audit_checkpoints (instance, id, seq, hash, time, reason, jws)
  SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[])`;

/**
 * Pins this trail's public key to the instance's name (the first shipment) or checks that it is the one
 * pinned. Throws ShipConflict when another key is.
 */
export async function pinKey(client: pg.ClientBase, instance: string, key: PublicKey): Promise<void> {
  await client.query('INSERT INTO stepgate.audit_keys (instance, kid, jwk) VALUES ($1, $2, $3) ON CONFLICT (instance) DO NOTHING', [instance, key.kid, JSON.stringify(key.jwk)]);
  const pinned = (await client.query<{ kid: string }>('SELECT kid FROM stepgate.audit_keys WHERE instance = $1', [instance])).rows[0]?.kid;
  if (pinned !== key.kid) {
    throw new ShipConflict(
      `the shared store pins key ${pinned} to instance ${instance}, but this audit trail is signed with key ${key.kid}: another data directory ships under this name (give each instance its own state.instance)`,
    );
  }
}

/** This trail's head (cheap: two index lookups), to skip a round when nothing was written since the last. */
export function localHead(local: Database.Database): LocalHead {
  const row = local.prepare('SELECT (SELECT max(seq) FROM events) AS seq, (SELECT max(id) FROM checkpoints) AS checkpoint').get() as { seq: number | null; checkpoint: number | null };
  return { seq: row.seq ?? getAnchor(local)?.seq ?? 0, checkpoint: row.checkpoint ?? 0 };
}

/** Copies what the shared store lacks of this trail. */
export async function shipRound(local: Database.Database, client: pg.ClientBase, instance: string): Promise<RoundResult> {
  local.exec('BEGIN'); // the snapshot this round copies (WAL: the writer goes on meanwhile)
  try {
    const first = (local.prepare('SELECT min(seq) AS m FROM events').get() as { m: number | null }).m;
    const anchor = getAnchor(local);
    const mark = localHead(local);
    const head = mark.seq;
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`stepgate.audit:${instance}`]);
      const top = (await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM stepgate.audit_events WHERE instance = $1 ORDER BY seq DESC LIMIT 1', [instance])).rows[0];
      const shipped = top ? Number(top.seq) : 0;
      const shippedCheckpoint = Number((await client.query<{ m: number | null }>('SELECT max(id) AS m FROM stepgate.audit_checkpoints WHERE instance = $1', [instance])).rows[0]?.m ?? 0);
      if (top) checkSameChain(local, instance, shipped, top.hash, head);
      if (shipped === head && shippedCheckpoint >= mark.checkpoint) {
        await client.query('ROLLBACK');
        return { shipped, head: mark, events: 0, checkpoints: 0, lost: null };
      }
      let lost: RoundResult['lost'] = null;
      if (first !== null && first > shipped + 1) {
        if (shipped === 0 && anchor !== null && anchor.seq === first - 1) {
          await client.query('INSERT INTO stepgate.audit_anchors (instance, seq, hash, checkpoint) VALUES ($1, $2, $3, $4)', [instance, anchor.seq, anchor.hash, anchor.checkpoint]);
        } else {
          lost = { from: shipped + 1, to: first - 1 };
        }
      }
      const touched = await copyEvents(local, client, instance, shipped);
      await copySessions(local, client, instance, shipped, touched.sessions);
      const checkpoints = local.prepare('SELECT id, seq, hash, time, reason, jws FROM checkpoints WHERE id > ? ORDER BY id').all(shippedCheckpoint) as {
        id: number;
        seq: number;
        hash: string;
        time: number;
        reason: string;
        jws: string;
      }[];
      if (checkpoints.length > 0) {
        await client.query(INSERT_CHECKPOINTS, [
          instance,
          checkpoints.map((c) => c.id),
          checkpoints.map((c) => c.seq),
          checkpoints.map((c) => c.hash),
          checkpoints.map((c) => c.time),
          checkpoints.map((c) => c.reason),
          checkpoints.map((c) => c.jws),
        ]);
      }
      await client.query('COMMIT');
      return { shipped: head, head: mark, events: touched.events, checkpoints: checkpoints.length, lost };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
  } finally {
    local.exec('COMMIT');
  }
}

function checkSameChain(local: Database.Database, instance: string, shipped: number, hash: string, head: number): void {
  if (shipped > head) {
    throw new ShipConflict(`the shared store holds events of instance ${instance} up to ${shipped}, beyond this trail's last event ${head}: another data directory ships under this name, or this one was reset`);
  }
  const mine = local.prepare('SELECT hash FROM events WHERE seq = ?').get(shipped) as { hash: string } | undefined;
  // Pruned here already: the pinned key and the shipped checkpoints still tie the store's chain to this trail.
  if (mine !== undefined && mine.hash !== hash) {
    throw new ShipConflict(
      `event ${shipped} of instance ${instance} in the shared store (hash ${hash.slice(0, 12)}…) differs from this trail's (hash ${mine.hash.slice(0, 12)}…): the shared copy was altered, or another data directory ships under this name`,
    );
  }
}

async function copyEvents(local: Database.Database, client: pg.ClientBase, instance: string, after: number): Promise<{ events: number; sessions: Set<number> }> {
  const page = local.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?');
  const sessions = new Set<number>();
  let events = 0;
  for (;;) {
    const rows = page.all(after, PAGE) as EventRow[];
    if (rows.length === 0) break;
    await client.query(INSERT_EVENTS, [
      instance,
      rows.map((r) => r.seq),
      rows.map((r) => r.session),
      rows.map((r) => r.sseq),
      rows.map((r) => r.time),
      rows.map((r) => r.kind),
      rows.map((r) => r.body),
      rows.map((r) => r.hash),
    ]);
    for (const r of rows) sessions.add(r.session);
    events += rows.length;
    after = rows[rows.length - 1]!.seq;
    if (rows.length < PAGE) break;
  }
  return { events, sessions };
}

/**
 * The sessions index rows and spans of the sessions whose events this round copied. A span with events
 * after `shipped` starts after it: spans are written with their events, and every round ends at a commit.
 */
async function copySessions(local: Database.Database, client: pg.ClientBase, instance: string, shipped: number, sessions: Set<number>): Promise<void> {
  const row = local.prepare('SELECT * FROM sessions WHERE session = ?');
  const spansOf = local.prepare('SELECT session, first_seq, last_seq FROM session_spans WHERE session = ? AND first_seq > ? ORDER BY first_seq');
  const versions: (SessionRow & { run: string | null })[] = [];
  const spans: { session: number; first_seq: number; last_seq: number }[] = [];
  for (const session of sessions) {
    const r = row.get(session) as (SessionRow & { run: string | null }) | undefined;
    if (r !== undefined) versions.push(r);
    for (const s of spansOf.iterate(session, shipped) as IterableIterator<{ session: number; first_seq: number; last_seq: number }>) spans.push(s);
  }
  for (let i = 0; i < versions.length; i += PAGE) await client.query(INSERT_SESSIONS, [instance, JSON.stringify(versions.slice(i, i + PAGE))]);
  for (let i = 0; i < spans.length; i += PAGE) {
    const part = spans.slice(i, i + PAGE);
    await client.query(INSERT_SPANS, [instance, part.map((s) => s.session), part.map((s) => s.first_seq), part.map((s) => s.last_seq)]);
  }
}
