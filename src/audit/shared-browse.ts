/**
 * Browsing the shared store (every instance's trail in `stepgate.audit_*`, shared-schema.ts) a page at a
 * time, for the console's auditor view when stepgate runs with `state:`: sessions newest first across
 * instances, one session's timeline, and each instance's chain head and latest checkpoint.
 *
 * Why PostgreSQL directly, and not shared-read.ts's copy into a temporary audit.db: a copy costs a pass
 * over an instance's rows, fine for a command run now and then (and for verification, which reads every
 * row anyway: console/auditor.ts does that in its worker thread), not for each click in a page. Here every
 * request is a few indexed queries, the same bounds as browse.ts: a page of sessions examines at most
 * MAX_SCAN rows, a page of a timeline reads at most `limit` events plus CONTEXT_EVENTS before them.
 *
 * Invariants:
 * - The same shapes as browse.ts: the page is cut by its PageCollector (same filters, same "examined"
 *   bound, same cursor semantics), the timeline rendered by timelineSteps (the transcript `stepgate audit
 *   replay` prints). Only where rows come from differs.
 * - The sessions index in the shared store is versioned (a row per change, keyed by last_seq): a session
 *   is its newest version. The list walks the index (start_time, instance, session, last_seq) backwards
 *   as a loose index scan (a recursive query: one index descent per distinct session), so a session with
 *   thousands of versions costs one step, not thousands; a walked row that is not its session's newest
 *   version (its start moved between versions) is skipped and counted as examined.
 * - What was not shipped yet is not here: an instance's events committed after its shipper's last round
 *   are missing from the list and timelines until it ships them (console/auditor.ts says so).
 * - Read-only: SELECT only (the tables are INSERT-only anyway; this file never writes).
 */
import type pg from 'pg';
import { BrowseError, checkpointView, CONTEXT_EVENTS, PageCollector, timelineSteps, type CheckpointView, type SessionPage, type TimelinePage } from './browse.js';
import type { EventRow } from './format.js';
import { parseEvent, PASSKEY_NAME_KINDS, passkeyNamesFrom, SessionLookupError, type SessionFilter, type SessionRow } from './read.js';
import { INSTANCE_NAMES_SQL } from './shared-read.js';

/** A StateDatabase, a pool or a client: whatever runs a query. */
export interface Queryable {
  query<R extends pg.QueryResultRow = any>(text: string, params?: unknown[]): Promise<pg.QueryResult<R>>;
}

export type SharedSessionRow = SessionRow & { instance: string };

export interface SharedSessionPage extends SessionPage {
  sessions: SharedSessionRow[];
}

/** Rows fetched per query while a page fills (a page needs limit + 1 without `since`). */
const CHUNK_MAX = 500;

const RAW_COLUMNS = `s.instance, s.session, s.last_seq, s.connection, s.user_name, s.database, s.client, s.application, s.tls, s.server_pid,
  s.start_time, s.end_time, s.end_reason, s.duration_ms, s.bytes_in, s.bytes_out, s.statements, s.denied, s.held, s.first_seq`;
const COLUMNS = RAW_COLUMNS.replace('s.user_name', 's.user_name AS "user"');

type Cursor = { phase: 'a'; time: number; instance: string; session: number } | { phase: 'n'; instance: string; session: number };

function parseCursor(text: string): Cursor {
  let m = /^a\.(\d{1,16})\.(\d{1,16})\.([A-Za-z0-9_-]{1,400})$/.exec(text);
  if (m) return { phase: 'a', time: Number(m[1]), session: Number(m[2]), instance: Buffer.from(m[3]!, 'base64url').toString() };
  m = /^n\.(\d{1,16})\.([A-Za-z0-9_-]{1,400})$/.exec(text);
  if (m) return { phase: 'n', session: Number(m[1]), instance: Buffer.from(m[2]!, 'base64url').toString() };
  throw new BrowseError('not a valid cursor');
}

function cursorOf(row: SharedSessionRow): string {
  const instance = Buffer.from(row.instance).toString('base64url');
  return row.start_time !== null ? `a.${row.start_time}.${row.session}.${instance}` : `n.${row.session}.${instance}`;
}

/**
 * Sessions of every instance active at some point in [since, until], newest first (start time, then
 * instance and session number, descending), then those without a recorded start: as browse.ts's
 * sessionsPage for one audit.db, with rows naming their instance.
 */
export async function sharedSessionsPage(q: Queryable, filter: SessionFilter, cursor: string | null, limit: number, maxScan: number): Promise<SharedSessionPage> {
  const from = cursor ? parseCursor(cursor) : null;
  const page = new PageCollector<SharedSessionRow>(filter, limit, maxScan, cursorOf);
  const phases: { phase: 'a' | 'n'; from: Cursor | null }[] = [];
  if (!from || from.phase === 'a') phases.push({ phase: 'a', from });
  // No recorded start (lost in an audit.gap): listed last, as `audit sessions` treats them (time 0).
  if (filter.until === undefined || filter.until >= 0) phases.push({ phase: 'n', from: from?.phase === 'n' ? from : null });
  for (const phase of phases) {
    let after = phase.from;
    for (;;) {
      const n = Math.min(page.wanted, CHUNK_MAX);
      const { sql, params } = walk(phase.phase, filter, after, n);
      const rows = (await q.query<Record<string, unknown>>(sql, params)).rows;
      for (const r of rows) {
        const row = sessionRow(r);
        if (!page.offer(row, r.newest !== true)) return page.result();
      }
      if (rows.length < n) break;
      const last = sessionRow(rows[rows.length - 1]!);
      after = phase.phase === 'a' ? { phase: 'a', time: last.start_time!, instance: last.instance, session: last.session } : { phase: 'n', instance: last.instance, session: last.session };
    }
  }
  return page.result();
}

/**
 * One loose index scan down audit_sessions_start (or audit_sessions_user): each step descends the index
 * once to the next (start_time, instance, session) below the previous one, taking its highest last_seq;
 * `newest` says whether that is the session's newest version (a primary key probe).
 */
function walk(phase: 'a' | 'n', filter: SessionFilter, after: Cursor | null, n: number): { sql: string; params: unknown[] } {
  const params: unknown[] = [];
  const p = (v: unknown): string => {
    params.push(v);
    return `$${params.length}`;
  };
  let base = phase === 'a' ? 's.start_time IS NOT NULL' : 's.start_time IS NULL';
  if (filter.user !== undefined) base += ` AND s.user_name = ${p(filter.user)}`;
  if (phase === 'a' && filter.until !== undefined) base += ` AND s.start_time <= ${p(filter.until)}::bigint`;
  const key = (t: string): string => (phase === 'a' ? `${t}.start_time, ${t}.instance, ${t}.session` : `${t}.instance, ${t}.session`);
  const order = phase === 'a' ? 's.start_time DESC, s.instance DESC, s.session DESC, s.last_seq DESC' : 's.instance DESC, s.session DESC, s.last_seq DESC';
  let first = base;
  if (after?.phase === 'a') first += ` AND (s.start_time, s.instance, s.session) < (${p(after.time)}::bigint, ${p(after.instance)}::text, ${p(after.session)}::integer)`;
  if (after?.phase === 'n') first += ` AND (s.instance, s.session) < (${p(after.instance)}::text, ${p(after.session)}::integer)`;
  const max = p(n);
  const sql = `WITH RECURSIVE walk AS (
      (SELECT ${RAW_COLUMNS}, 1 AS n FROM stepgate.audit_sessions s WHERE ${first} ORDER BY ${order} LIMIT 1)
      UNION ALL
      SELECT x.*, w.n + 1 FROM walk w CROSS JOIN LATERAL (
        SELECT ${RAW_COLUMNS} FROM stepgate.audit_sessions s WHERE ${base} AND (${key('s')}) < (${key('w')}) ORDER BY ${order} LIMIT 1
      ) x WHERE w.n < ${max}::integer
    )
    SELECT ${COLUMNS.replace(/\bs\./g, 'walk.')},
      NOT EXISTS (SELECT 1 FROM stepgate.audit_sessions v WHERE v.instance = walk.instance AND v.session = walk.session AND v.last_seq > walk.last_seq) AS newest
    FROM walk ORDER BY walk.n`;
  return { sql, params };
}

/** node-postgres returns bigint columns as strings: times in ms, counts and seqs all fit a number. */
function sessionRow(r: Record<string, unknown>): SharedSessionRow {
  const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
  return {
    instance: String(r.instance),
    session: Number(r.session),
    connection: (r.connection as string | null) ?? null,
    user: (r.user as string | null) ?? null,
    database: (r.database as string | null) ?? null,
    client: (r.client as string | null) ?? null,
    application: (r.application as string | null) ?? null,
    tls: num(r.tls),
    server_pid: num(r.server_pid),
    start_time: num(r.start_time),
    end_time: num(r.end_time),
    end_reason: (r.end_reason as string | null) ?? null,
    duration_ms: num(r.duration_ms),
    bytes_in: num(r.bytes_in),
    bytes_out: num(r.bytes_out),
    statements: Number(r.statements),
    denied: Number(r.denied),
    held: Number(r.held),
    first_seq: num(r.first_seq),
    last_seq: num(r.last_seq),
  };
}

/**
 * A session by connection id or a unique prefix of it, in one instance's trail or (instance null) in any
 * (connection ids are UUIDs, unique across instances); `#NUMBER` is per instance, so it needs one. Its
 * newest version of the sessions index row.
 */
export async function findSharedSession(q: Queryable, id: string, instance: string | null): Promise<SharedSessionRow> {
  const text = id.trim();
  const newest = async (inst: string, session: number): Promise<SharedSessionRow | null> => {
    const r = await q.query(`SELECT ${COLUMNS} FROM stepgate.audit_sessions s WHERE s.instance = $1 AND s.session = $2 ORDER BY s.last_seq DESC LIMIT 1`, [inst, session]);
    return r.rows[0] ? sessionRow(r.rows[0]) : null;
  };
  if (/^#\d{1,9}$/.test(text)) {
    if (instance === null) throw new SessionLookupError(`session numbers are per instance: give the instance too (${text} of which instance?)`);
    const row = await newest(instance, Number(text.slice(1)));
    if (!row) throw new SessionLookupError(`no session ${text} in instance ${instance}'s trail`);
    return row;
  }
  if (!/^[0-9a-fA-F-]{1,36}$/.test(text)) throw new SessionLookupError(`"${id}" is not a session id (hexadecimal, as listed by stepgate audit sessions)`);
  const prefix = text.toLowerCase();
  // audit_sessions_connection (text_pattern_ops) serves the prefix; DISTINCT folds a session's versions.
  const rows = (
    await q.query<{ instance: string; session: number; connection: string }>(
      `SELECT DISTINCT s.instance, s.session, s.connection FROM stepgate.audit_sessions s WHERE s.connection LIKE $1 ${instance !== null ? 'AND s.instance = $2' : ''}
       ORDER BY s.instance, s.session LIMIT 11`,
      instance !== null ? [`${prefix}%`, instance] : [`${prefix}%`],
    )
  ).rows;
  const where = instance !== null ? ` in instance ${instance}'s trail` : '';
  if (rows.length === 0) throw new SessionLookupError(`no session ${id}${where}`);
  const exact = rows.filter((r) => r.connection === prefix);
  const pick = exact.length === 1 ? exact : rows;
  if (pick.length > 1) throw new SessionLookupError(`session id ${id} is ambiguous: ${pick.slice(0, 10).map((r) => `${r.instance}/${r.connection}`).join(', ')}; give more characters`);
  const row = await newest(pick[0]!.instance, pick[0]!.session);
  if (!row) throw new SessionLookupError(`no session ${id}${where}`);
  return row;
}

const EVENT_COLUMNS = 'e.seq, e.session, e.sseq, e.time, e.kind, e.body, e.hash';

function eventRow(r: Record<string, unknown>): EventRow {
  return { seq: Number(r.seq), session: Number(r.session), sseq: Number(r.sseq), time: Number(r.time), kind: String(r.kind), body: String(r.body), hash: String(r.hash) };
}

/**
 * One page of a session's timeline from the instance that recorded it: up to `limit` events after seq
 * `after` (null: from the start), found as browse.ts finds them, through the session's spans (audit_spans,
 * then primary key ranges of audit_events: that table has no index on session), in one query each for
 * the page and for the context before it.
 */
export async function sharedTimelinePage(q: Queryable, session: SharedSessionRow, after: number | null, limit: number): Promise<TimelinePage> {
  const from = after ?? 0;
  // The span holding `after` (it may go on past it), and every later one.
  const pageRows = (
    await q.query(
      `SELECT ${EVENT_COLUMNS} FROM stepgate.audit_spans sp
       CROSS JOIN LATERAL (SELECT ${EVENT_COLUMNS} FROM stepgate.audit_events e
         WHERE e.instance = sp.instance AND e.seq BETWEEN greatest(sp.first_seq, $3::bigint + 1) AND sp.last_seq AND e.session = sp.session ORDER BY e.seq) e
       WHERE sp.instance = $1 AND sp.session = $2 AND sp.last_seq > $3::bigint
         AND sp.first_seq >= coalesce((SELECT max(h.first_seq) FROM stepgate.audit_spans h WHERE h.instance = $1 AND h.session = $2 AND h.first_seq <= $3::bigint), 0)
       ORDER BY sp.first_seq, e.seq LIMIT $4::integer`,
      [session.instance, session.session, from, limit + 1],
    )
  ).rows.map((r) => parseEvent(eventRow(r)));
  const more = pageRows.length > limit;
  if (more) pageRows.length = limit;
  const context =
    after === null
      ? []
      : (
          await q.query(
            `SELECT ${EVENT_COLUMNS} FROM stepgate.audit_spans sp
             CROSS JOIN LATERAL (SELECT ${EVENT_COLUMNS} FROM stepgate.audit_events e
               WHERE e.instance = sp.instance AND e.seq BETWEEN sp.first_seq AND least(sp.last_seq, $3::bigint) AND e.session = sp.session ORDER BY e.seq DESC) e
             WHERE sp.instance = $1 AND sp.session = $2 AND sp.first_seq <= $3::bigint
             ORDER BY sp.first_seq DESC, e.seq DESC LIMIT $4::integer`,
            [session.instance, session.session, after, CONTEXT_EVENTS],
          )
        ).rows
          .map((r) => parseEvent(eventRow(r)))
          .reverse();
  return timelineSteps(session, context, pageRows, more, after, await sharedPasskeyNames(q));
}

/**
 * Passkey names from every instance's trail: with `state:` people and their passkeys are shared, so a
 * passkey enrolled through one instance's console may approve on another. Through the partial index
 * audit_events_passkey_names (only those events), oldest first: the latest name wins.
 */
async function sharedPasskeyNames(q: Queryable): Promise<Map<string, string>> {
  const rows = await q.query<{ body: string }>(
    `SELECT body FROM stepgate.audit_events WHERE session = 0 AND kind IN (${PASSKEY_NAME_KINDS.map((k) => `'${k}'`).join(', ')}) ORDER BY time, instance, seq`,
  );
  return passkeyNamesFrom(rows.rows.map((r) => r.body));
}

export interface SharedInstanceHead {
  instance: string;
  /** Its last shipped event. */
  head: { seq: number; time: number } | null;
  /** Its latest shipped checkpoint (as stored: verification says whether its signature holds). */
  checkpoint: CheckpointView | null;
  /** The key pinned to it (what its checkpoints are checked with); null: none pinned. */
  pinnedKid: string | null;
}

/** Instances shown at most (each costs two index lookups). */
const MAX_INSTANCES = 1000;

/** Every instance with a trail in the shared store: its last shipped event and checkpoint, by name. */
export async function sharedHeads(q: Queryable): Promise<SharedInstanceHead[]> {
  const rows = (
    await q.query(
      `WITH names AS (${INSTANCE_NAMES_SQL})
       SELECT n.instance, h.seq, h.time, c.id AS c_id, c.seq AS c_seq, c.time AS c_time, c.reason AS c_reason, c.jws AS c_jws, k.kid
       FROM (SELECT instance FROM names ORDER BY instance LIMIT ${MAX_INSTANCES}) n
       LEFT JOIN LATERAL (SELECT seq, time FROM stepgate.audit_events WHERE instance = n.instance ORDER BY seq DESC LIMIT 1) h ON true
       LEFT JOIN LATERAL (SELECT id, seq, time, reason, jws FROM stepgate.audit_checkpoints WHERE instance = n.instance ORDER BY id DESC LIMIT 1) c ON true
       LEFT JOIN stepgate.audit_keys k ON k.instance = n.instance
       ORDER BY n.instance`,
    )
  ).rows;
  return rows.map((r) => ({
    instance: String(r.instance),
    head: r.seq === null ? null : { seq: Number(r.seq), time: Number(r.time) },
    checkpoint: r.c_id === null ? null : checkpointView({ id: Number(r.c_id), seq: Number(r.c_seq), time: Number(r.c_time), reason: String(r.c_reason), jws: String(r.c_jws) }),
    pinnedKid: (r.kid as string | null) ?? null,
  }));
}
