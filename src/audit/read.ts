/**
 * Reading the audit trail: sessions, one session's events, and events for export, with the filters the
 * `stepgate audit` commands offer. Events come back parsed, joined with their session's facts.
 */
import type Database from 'better-sqlite3';
import { parseDuration } from '../util/units.js';
import { iso, type EventRow } from './format.js';

export interface SessionRow {
  session: number;
  connection: string | null;
  user: string | null;
  database: string | null;
  client: string | null;
  application: string | null;
  tls: number | null;
  server_pid: number | null;
  start_time: number | null;
  end_time: number | null;
  end_reason: string | null;
  duration_ms: number | null;
  bytes_in: number | null;
  bytes_out: number | null;
  statements: number;
  denied: number;
  held: number;
  first_seq: number | null;
  last_seq: number | null;
}

/** A time from the command line: ISO 8601 ("2025-11-24", "2025-11-24T10:00:00Z") or "N{ms,s,m,h,d} ago" written as "2h", "7d". */
export function parseTime(text: string, now = Date.now()): number | null {
  const t = text.trim();
  if (t === 'now') return now;
  const ago = parseDuration(t.replace(/\s*ago$/, ''));
  if (ago !== null) return now - ago;
  if (!/^\d{4}-\d{2}-\d{2}/.test(t)) return null;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

export interface SessionFilter {
  user?: string;
  since?: number;
  until?: number;
}

/** Sessions active at some point in [since, until], oldest first. */
export function listSessions(db: Database.Database, filter: SessionFilter = {}): SessionRow[] {
  const where: string[] = [];
  const args: unknown[] = [];
  if (filter.user !== undefined) {
    where.push('user = ?');
    args.push(filter.user);
  }
  if (filter.until !== undefined) {
    where.push('coalesce(start_time, 0) <= ?');
    args.push(filter.until);
  }
  if (filter.since !== undefined) {
    where.push('(end_time IS NULL OR end_time >= ?)');
    args.push(filter.since);
  }
  return db.prepare(`SELECT * FROM sessions ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY coalesce(start_time, 0), session`).all(...args) as SessionRow[];
}

export class SessionLookupError extends Error {}

/** A session by connection id or a unique prefix of it (like git), or by number ("#12"). */
export function findSession(db: Database.Database, id: string): SessionRow {
  const text = id.trim();
  if (/^#\d+$/.test(text)) {
    const row = db.prepare('SELECT * FROM sessions WHERE session = ?').get(Number(text.slice(1))) as SessionRow | undefined;
    if (!row) throw new SessionLookupError(`no session ${text}`);
    return row;
  }
  if (!/^[0-9a-fA-F-]{1,36}$/.test(text)) throw new SessionLookupError(`"${id}" is not a session id (hexadecimal, as listed by stepgate audit sessions)`);
  const rows = db.prepare(`SELECT * FROM sessions WHERE connection >= ? AND connection < ? ORDER BY start_time LIMIT 11`).all(text.toLowerCase(), `${text.toLowerCase()}\uffff`) as SessionRow[];
  if (rows.length === 0) throw new SessionLookupError(`no session ${id}`);
  if (rows.length > 1) {
    const exact = rows.find((r) => r.connection === text.toLowerCase());
    if (exact) return exact;
    throw new SessionLookupError(`session id ${id} is ambiguous: ${rows.slice(0, 10).map((r) => r.connection).join(', ')}${rows.length > 10 ? ', ...' : ''}; give more characters`);
  }
  return rows[0]!;
}

/** A stored event with its body parsed. */
export interface AuditEvent extends EventRow {
  data: Record<string, unknown>;
}

export function parseEvent(row: EventRow): AuditEvent {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(row.body) as Record<string, unknown>;
  } catch {
    data = { unreadable: row.body };
  }
  return { ...row, data };
}

/** A session's events in order (found through session_spans: events has no index on session). */
export function sessionEvents(db: Database.Database, session: number): AuditEvent[] {
  const spans = db.prepare('SELECT first_seq, last_seq FROM session_spans WHERE session = ? ORDER BY first_seq').all(session) as { first_seq: number; last_seq: number }[];
  const range = db.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE seq BETWEEN ? AND ? AND session = ? ORDER BY seq');
  const out: AuditEvent[] = [];
  for (const s of spans) for (const row of range.iterate(s.first_seq, s.last_seq, session) as IterableIterator<EventRow>) out.push(parseEvent(row));
  return out;
}

/** Passkey names by credential id, from the trail's passkey.enrolled and passkey.renamed events (latest name wins). */
export function passkeyNames(db: Database.Database): Map<string, string> {
  const spans = db.prepare('SELECT first_seq, last_seq FROM session_spans WHERE session = 0 ORDER BY first_seq').all() as { first_seq: number; last_seq: number }[];
  const range = db.prepare(`SELECT body FROM events WHERE seq BETWEEN ? AND ? AND session = 0 AND kind IN (${PASSKEY_NAME_KINDS.map((k) => `'${k}'`).join(', ')}) ORDER BY seq`);
  function* bodies(): Generator<string> {
    for (const s of spans) for (const row of range.iterate(s.first_seq, s.last_seq) as IterableIterator<{ body: string }>) yield row.body;
  }
  return passkeyNamesFrom(bodies());
}

/** The events that name passkeys. */
export const PASSKEY_NAME_KINDS = ['passkey.enrolled', 'passkey.renamed'] as const;

/** Passkey names from those events' bodies, oldest first (wherever they were read: shared-browse.ts reads every instance's). */
export function passkeyNamesFrom(bodies: Iterable<string>): Map<string, string> {
  const names = new Map<string, string>();
  for (const text of bodies) {
    try {
      const body = JSON.parse(text) as { credential?: unknown; name?: unknown };
      if (typeof body.credential === 'string' && typeof body.name === 'string') names.set(body.credential, body.name);
    } catch {
      // verify reports a body that is not JSON
    }
  }
  return names;
}

/**
 * The first seq whose event is at or after `time` (events are written in time order; a clock step back
 * only blurs the edge, every row is still filtered by time).
 */
function firstSeqAtOrAfter(db: Database.Database, time: number): number | null {
  const bounds = db.prepare('SELECT min(seq) AS lo, max(seq) AS hi FROM events').get() as { lo: number | null; hi: number | null };
  if (bounds.lo === null || bounds.hi === null) return null;
  const at = db.prepare('SELECT time FROM events WHERE seq >= ? ORDER BY seq LIMIT 1');
  let lo = bounds.lo;
  let hi = bounds.hi + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const row = at.get(mid) as { time: number } | undefined;
    if (!row || row.time >= time) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

export interface EventFilter {
  since?: number;
  until?: number;
  user?: string;
  /** Session numbers. */
  sessions?: number[];
  /** Include the audit trail's own events (session 0). Default: only when no user/session filter. */
  system?: boolean;
}

/** Events matching the filter, in chain order, with their previous event's hash (for re-verification downstream). */
export function* exportEvents(db: Database.Database, filter: EventFilter = {}): Generator<AuditEvent & { prevHash: string | null }> {
  let sessionSet: Set<number> | null = null;
  if (filter.sessions) sessionSet = new Set(filter.sessions);
  if (filter.user !== undefined) {
    const users = (db.prepare('SELECT session FROM sessions WHERE user = ?').all(filter.user) as { session: number }[]).map((r) => r.session);
    sessionSet = sessionSet ? new Set(users.filter((s) => sessionSet!.has(s))) : new Set(users);
  }
  const system = filter.system ?? sessionSet === null;
  const from = filter.since !== undefined ? firstSeqAtOrAfter(db, filter.since) : null;
  const args: unknown[] = [];
  const where: string[] = [];
  if (from !== null) {
    where.push('seq >= ?');
    args.push(from);
  }
  if (filter.until !== undefined) {
    // The first event after `until` bounds the scan; each row is still filtered by its time.
    const end = firstSeqAtOrAfter(db, filter.until + 1);
    if (end !== null) {
      where.push('seq < ?');
      args.push(end + 1000); // a clock step back may put later rows slightly before it
    }
  }
  const prevOf = db.prepare('SELECT hash FROM events WHERE seq = ?');
  const stmt = db.prepare(`SELECT seq, session, sseq, time, kind, body, hash FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq`);
  let last: EventRow | null = null;
  for (const row of stmt.iterate(...args) as IterableIterator<EventRow>) {
    const keep =
      (filter.since === undefined || row.time >= filter.since) &&
      (filter.until === undefined || row.time <= filter.until) &&
      (row.session === 0 ? system : sessionSet === null || sessionSet.has(row.session));
    if (keep) {
      const prevHash = last && last.seq === row.seq - 1 ? last.hash : ((prevOf.get(row.seq - 1) as { hash: string } | undefined)?.hash ?? null);
      yield { ...parseEvent(row), prevHash };
    }
    last = row;
  }
}

/** Session facts by number, cached (for joining events with who/where). */
export class SessionFacts {
  private readonly cache = new Map<number, SessionRow | null>();
  private readonly stmt;
  constructor(db: Database.Database) {
    this.stmt = db.prepare('SELECT * FROM sessions WHERE session = ?');
  }
  get(session: number): SessionRow | null {
    let row = this.cache.get(session);
    if (row === undefined) {
      row = (this.stmt.get(session) as SessionRow | undefined) ?? null;
      if (this.cache.size > 10_000) this.cache.clear();
      this.cache.set(session, row);
    }
    return row;
  }
}

export function shortId(connection: string | null, session: number): string {
  return connection ? connection.slice(0, 8) : `#${session}`;
}

export function formatTime(ms: number | null): string {
  return ms === null ? '-' : iso(ms).replace('T', ' ').replace('Z', '');
}
