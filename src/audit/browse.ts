/**
 * Browsing the audit trail a page at a time (the console's auditor view): sessions newest first with the
 * filters of `stepgate audit sessions`, one session's timeline as `stepgate audit replay` renders it, and
 * the latest signed checkpoint. Every call is bounded (rows examined, events read), so the console can
 * run them on the proxy's thread: a big trail means more pages, not a longer stall.
 */
import type Database from 'better-sqlite3';
import { decodeProtectedHeader } from 'jose';
import { parseEvent, passkeyNames, type AuditEvent, type SessionFilter, type SessionRow } from './read.js';
import { replaySteps } from './replay.js';
import type { EventRow } from './format.js';

export class BrowseError extends Error {}

export interface SessionPage {
  sessions: SessionRow[];
  /** Pass back as `cursor` for the next page; null when there is nothing more. */
  next: string | null;
}

/** Most rows one page request examines (the `since` filter is applied while reading, not by an index). */
export const MAX_SCAN = 2_000;

type Cursor = { phase: 'a'; time: number; session: number } | { phase: 'n'; session: number };

function parseCursor(text: string): Cursor {
  let m = /^a\.(\d{1,16})\.(\d{1,16})$/.exec(text);
  if (m) return { phase: 'a', time: Number(m[1]), session: Number(m[2]) };
  m = /^n\.(\d{1,16})$/.exec(text);
  if (m) return { phase: 'n', session: Number(m[1]) };
  throw new BrowseError('not a valid cursor');
}

function cursorOf(row: SessionRow): string {
  return row.start_time !== null ? `a.${row.start_time}.${row.session}` : `n.${row.session}`;
}

/**
 * Sessions active at some point in [since, until] (as `stepgate audit sessions` selects them), newest
 * first: by start time through the sessions_start / sessions_user indexes, then the few without a
 * recorded start. At most `maxScan` rows are examined per call; when the filter skips that many,
 * the page comes back short (maybe empty) with a cursor to go on from.
 */
export function sessionsPage(db: Database.Database, filter: SessionFilter, cursor: string | null, limit: number, maxScan = MAX_SCAN): SessionPage {
  const from = cursor ? parseCursor(cursor) : null;
  const byUser = filter.user !== undefined ? 'AND user = @user' : '';
  const params: Record<string, unknown> = {};
  if (filter.user !== undefined) params.user = filter.user;
  const phases: { sql: string; params: Record<string, unknown> }[] = [];
  if (!from || from.phase === 'a') {
    const p = { ...params };
    let where = `start_time IS NOT NULL ${byUser}`;
    if (filter.until !== undefined) {
      where += ' AND start_time <= @until';
      p.until = filter.until;
    }
    if (from?.phase === 'a') {
      where += ' AND (start_time, session) < (@t, @s)';
      p.t = from.time;
      p.s = from.session;
    }
    phases.push({ sql: `SELECT * FROM sessions WHERE ${where} ORDER BY start_time DESC, session DESC`, params: p });
  }
  // No recorded start (it was lost in an audit.gap): listed last, as `audit sessions` treats them (time 0).
  if (filter.until === undefined || filter.until >= 0) {
    const p = { ...params };
    let where = `start_time IS NULL ${byUser}`;
    if (from?.phase === 'n') {
      where += ' AND session < @s';
      p.s = from.session;
    }
    phases.push({ sql: `SELECT * FROM sessions WHERE ${where} ORDER BY session DESC`, params: p });
  }

  const page = new PageCollector<SessionRow>(filter, limit, maxScan, cursorOf);
  for (const phase of phases) {
    for (const row of db.prepare(phase.sql).iterate(phase.params) as IterableIterator<SessionRow>) {
      if (!page.offer(row)) return page.result();
    }
  }
  return page.result();
}

/**
 * How a page of sessions is cut, whatever the rows come from (this file's audit.db, or the shared store:
 * shared-browse.ts): rows arrive in list order; the `since` filter is applied here, while reading; at most
 * `maxScan` rows are examined, then the page ends (maybe short, maybe empty) with a cursor after the last
 * row examined, so a request costs the same however selective the filter. `skip` drops a row that is not
 * a session of the list (the shared store's older versions of a sessions index row), counted as examined.
 */
export class PageCollector<R extends SessionRow> {
  private readonly sessions: R[] = [];
  private scanned = 0;
  private last: R | null = null;
  private next: string | null = null;

  constructor(
    private readonly filter: SessionFilter,
    private readonly limit: number,
    private readonly maxScan: number,
    private readonly cursorOf: (row: R) => string,
  ) {}

  /** Takes the next row in list order; false when the page is complete (no more rows wanted). */
  offer(row: R, skip = false): boolean {
    // Examined enough for one request: the next one goes on after the last row examined.
    if (this.scanned >= this.maxScan && this.last) {
      this.next = this.cursorOf(this.last);
      return false;
    }
    this.scanned++;
    if (skip || (this.filter.since !== undefined && row.end_time !== null && row.end_time < this.filter.since)) {
      this.last = row;
      return true;
    }
    if (this.sessions.length === this.limit) {
      this.next = this.cursorOf(this.last!);
      return false;
    }
    this.sessions.push(row);
    this.last = row;
    return true;
  }

  /** At most this many more rows can be offered before the page is complete (what the next read need fetch). */
  get wanted(): number {
    return Math.min(this.maxScan - this.scanned, this.limit - this.sessions.length + (this.filter.since !== undefined ? this.maxScan : 0)) + 1;
  }

  /** The page: a cursor when it was cut, null when every row was offered and taken or filtered out. */
  result(): { sessions: R[]; next: string | null } {
    return { sessions: this.sessions, next: this.next };
  }
}

export interface TimelineStep {
  seq: number | null;
  kind: string;
  time: number;
  lines: string[];
  /** For statements: what each statement of the message is (command, classes, tables, flags) and the decision. */
  statements?: { command: string; classes: string[]; tables: string[]; flags: string[] }[];
  decision?: { action: string; rule: string | null; file: string | null; reason: string | null };
  /** challenge.resolved: approved, rejected, expired, ...; outcome: ok or error. */
  status?: string;
}

export interface TimelinePage {
  steps: TimelineStep[];
  /** Pass back as `after` for the next page; null at the end of the session. */
  next: number | null;
  /** Events of the session in this page. */
  events: number;
}

/** Events read before a later page's first one, so pauses and statement state carry over (replay keeps both). */
export const CONTEXT_EVENTS = 64;

/**
 * One page of a session's timeline: up to `limit` events after seq `after` (null: from the start),
 * rendered by replaySteps (the same transcript `stepgate audit replay` prints).
 */
export function timelinePage(db: Database.Database, session: SessionRow, after: number | null, limit: number): TimelinePage {
  // session_spans: one row per session per written batch, not overlapping; read lazily, from `after` on.
  const forward = db.prepare('SELECT first_seq, last_seq FROM session_spans WHERE session = ? AND first_seq >= ? ORDER BY first_seq');
  const backward = db.prepare('SELECT first_seq, last_seq FROM session_spans WHERE session = ? AND first_seq <= ? ORDER BY first_seq DESC');
  const range = db.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE seq BETWEEN ? AND ? AND session = ? ORDER BY seq LIMIT ?');
  const rangeBack = db.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE seq BETWEEN ? AND ? AND session = ? ORDER BY seq DESC LIMIT ?');
  type Span = { first_seq: number; last_seq: number };

  const page: AuditEvent[] = [];
  let more = false;
  const read = (s: Span): boolean => {
    if (after !== null && s.last_seq <= after) return false;
    const lo = after !== null ? Math.max(s.first_seq, after + 1) : s.first_seq;
    for (const row of range.all(lo, s.last_seq, session.session, limit + 1 - page.length) as EventRow[]) page.push(parseEvent(row));
    if (page.length > limit) {
      more = true;
      page.length = limit;
      return true;
    }
    return false;
  };
  let full = false;
  if (after !== null) {
    // The span holding `after` may go on past it.
    const holding = backward.get(session.session, after) as Span | undefined;
    if (holding) full = read(holding);
  }
  if (!full) {
    for (const s of forward.iterate(session.session, after !== null ? after + 1 : 0) as IterableIterator<Span>) {
      if (read(s)) break;
    }
  }

  const context: AuditEvent[] = [];
  if (after !== null) {
    for (const s of backward.iterate(session.session, after) as IterableIterator<Span>) {
      const rows = rangeBack.all(s.first_seq, Math.min(s.last_seq, after), session.session, CONTEXT_EVENTS - context.length) as EventRow[];
      for (const row of rows) context.unshift(parseEvent(row));
      if (context.length >= CONTEXT_EVENTS) break;
    }
  }

  return timelineSteps(session, context, page, more, after, passkeyNames(db));
}

/**
 * A page of a timeline from its events, wherever they were read (this file's audit.db, or the shared
 * store: shared-browse.ts): `context` are up to CONTEXT_EVENTS events of the session just before the page
 * (so pauses and statement state carry over), `page` its events, `more` whether events follow.
 */
export function timelineSteps(session: SessionRow, context: AuditEvent[], page: AuditEvent[], more: boolean, after: number | null, names: Map<string, string>): TimelinePage {
  const bySeq = new Map(page.map((e) => [e.seq, e]));
  const all = replaySteps(session, [...context, ...page], names);
  const steps: TimelineStep[] = [];
  let seenEvent = false;
  for (const step of all) {
    if (step.seq === undefined) {
      // Header and notes: the leading ones on the first page, the closing one on the last.
      if (seenEvent ? !more : after === null) steps.push({ seq: null, kind: seenEvent ? 'note' : 'header', time: step.time, lines: trimBlank(step.lines) });
      continue;
    }
    seenEvent = true;
    const event = bySeq.get(step.seq);
    if (!event) continue; // context
    steps.push({ seq: step.seq, kind: step.kind ?? event.kind, time: step.time, lines: trimBlank(step.lines), ...details(event) });
  }
  return { steps, next: more ? page[page.length - 1]!.seq : null, events: page.length };
}

function trimBlank(lines: string[]): string[] {
  let i = 0;
  while (i < lines.length && lines[i] === '') i++;
  return lines.slice(i);
}

function details(e: AuditEvent): Partial<TimelineStep> {
  const d = e.data;
  switch (e.kind) {
    case 'statement': {
      const decision = (d.decision ?? {}) as { action?: string; rule?: string | null; file?: string | null; reason?: string };
      const statements = Array.isArray(d.statements)
        ? (d.statements as { command?: string; classes?: string[]; tables?: { schema: string | null; name: string; access: string }[]; flags?: string[] }[]).map((s) => ({
            command: String(s.command ?? '?'),
            classes: Array.isArray(s.classes) ? s.classes.map(String) : [],
            tables: Array.isArray(s.tables) ? s.tables.map((t) => `${t.schema ? `${t.schema}.` : ''}${t.name} (${t.access})`) : [],
            flags: Array.isArray(s.flags) ? s.flags.map(String) : [],
          }))
        : [];
      const outcomes = (d.outcomes as { sqlstate?: string }[] | undefined) ?? [];
      return {
        statements,
        decision: { action: String(decision.action ?? '?'), rule: decision.rule ?? null, file: decision.file ?? null, reason: decision.reason ?? null },
        status: outcomes.some((o) => o.sqlstate) ? 'error' : undefined,
      };
    }
    case 'challenge.resolved':
      return { status: String(d.status) };
    case 'preview':
      return { status: d.status === 'failed' ? 'error' : String(d.status) };
    case 'outcome':
      return { status: d.sqlstate ? 'error' : d.skipped ? 'skipped' : 'ok' };
    default:
      return {};
  }
}

export interface CheckpointView {
  id: number;
  seq: number;
  time: number;
  reason: string;
  /** The signing key's id (JWK thumbprint), from the JWS header. */
  kid: string | null;
}

/** The latest stored checkpoint (as stored: `verifyAudit` says whether its signature holds). */
export function latestCheckpoint(db: Database.Database): CheckpointView | null {
  const row = db.prepare('SELECT id, seq, time, reason, jws FROM checkpoints ORDER BY id DESC LIMIT 1').get() as { id: number; seq: number; time: number; reason: string; jws: string } | undefined;
  return row ? checkpointView(row) : null;
}

/** A stored checkpoint as shown (the key id read from its JWS header, not checked: verification does that). */
export function checkpointView(row: { id: number; seq: number; time: number; reason: string; jws: string }): CheckpointView {
  let kid: string | null = null;
  try {
    kid = decodeProtectedHeader(row.jws).kid ?? null;
  } catch {
    kid = null;
  }
  return { id: row.id, seq: row.seq, time: row.time, reason: row.reason, kid };
}

/** The last event written (seq and time), or null for an empty trail. */
export function chainHead(db: Database.Database): { seq: number; time: number } | null {
  return (db.prepare('SELECT seq, time FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; time: number } | undefined) ?? null;
}
