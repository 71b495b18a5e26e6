/**
 * `stepgate audit verify`: walks the hash chain from its start (or from the retention anchor a signed
 * checkpoint vouches for) to its head, checks every checkpoint's signature and that it matches the chain,
 * and cross-checks the sessions index. Names the first event that was altered, deleted or inserted.
 *
 * An intact chain can still be incomplete, and that is reported as warnings: a run (one stepgate process,
 * from `audit.open`) that ended without `audit.close` (killed or crashed: its last events may be missing),
 * events of two runs interleaved (two processes wrote at once), and events the store had to drop
 * (`audit.gap`). A run without `audit.close` whose process still runs on this host is running, not lost.
 *
 * Last, every passkey approval's signed assertion is checked against the statement it approved and the
 * passkey's recorded public key (verify-approvals.ts), as findings of their own.
 */
import os from 'node:os';
import type Database from 'better-sqlite3';
import { isAlive } from '../util/process-identity.js';
import { getAnchor } from './db.js';
import { canonical, chainHash, GENESIS_HASH, SYSTEM_SESSION, type CheckpointRow, type EventRow } from './format.js';
import { verifyCheckpointSignature, type PublicKey } from './keys.js';
import { checkApprovals, type ApprovalCounts } from './verify-approvals.js';

export interface Problem {
  /** Global sequence number of the event concerned (null: not about one event). */
  seq: number | null;
  severity: 'error' | 'warning';
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  events: number;
  firstSeq: number | null;
  lastSeq: number | null;
  firstTime: number | null;
  lastTime: number | null;
  sessions: number;
  /** Events pruned by retention: the chain starts after this seq. */
  anchor: { seq: number; hash: string; checkpoint: number } | null;
  checkpoints: { total: number; valid: number; lastSeq: number | null };
  /** Events after the last valid checkpoint: nothing signed vouches for them yet. */
  unsealed: number;
  key: { kid: string; source: string };
  /** Every run (stepgate process) the chain records, oldest first. */
  runs: RunReport[];
  /** Events the store had to drop (sum of audit.gap events). */
  dropped: number;
  /** Approvals checked from the trail alone (verify-approvals.ts). */
  approvals: ApprovalCounts;
  problems: Problem[];
}

export interface RunReport {
  /** The run's id; null for a trail written before runs were named and not named by a later run. */
  id: string | null;
  pid: number | null;
  host: string | null;
  /** Time of its audit.open. */
  started: number;
  /** Time of its last event. */
  lastTime: number;
  /** It ended with audit.close. */
  closed: boolean;
  /** No audit.close, but its process still runs on this host. */
  running: boolean;
}

interface RunSeen extends RunReport {
  openSeq: number;
  lastSeq: number;
  start: string | null;
}

interface SessionSeen {
  connection: string | null;
  user: string | null;
  database: string | null;
  client: string | null;
  statements: number;
  denied: number;
  held: number;
  lastSseq: number;
  firstSeq: number;
}

const MAX_PROBLEMS = 50;

export interface VerifyOptions {
  /**
   * Whether the process of a run without audit.close still runs (its last events are then not missing,
   * just not written yet). Default: its pid is alive on this host. The shared store passes one that also
   * knows other hosts' instances by their leases (shared-read.ts).
   */
  running?(run: { pid: number; host: string | null; start: string | null }): boolean;
}

function runningHere(run: { pid: number; host: string | null; start: string | null }): boolean {
  return run.host === os.hostname() && isAlive({ pid: run.pid, start: run.start });
}

export async function verifyAudit(db: Database.Database, key: PublicKey, options: VerifyOptions = {}): Promise<VerifyReport> {
  const running = options.running ?? runningHere;
  // Chain problems first (in chain order: the first one is the first break), then checkpoints, then the index.
  const found: Record<'chain' | 'checkpoint' | 'index' | 'approvals', Problem[]> = { chain: [], checkpoint: [], index: [], approvals: [] };
  let area: keyof typeof found = 'checkpoint';
  let count = 0;
  const error = (seq: number | null, message: string): void => {
    if (count++ < MAX_PROBLEMS) found[area].push({ seq, severity: 'error', message });
  };
  const warning = (seq: number | null, message: string): void => {
    if (count++ < MAX_PROBLEMS) found[area].push({ seq, severity: 'warning', message });
  };
  const checkpointError = (seq: number | null, message: string): void => {
    if (count++ < MAX_PROBLEMS) found.checkpoint.push({ seq, severity: 'error', message });
  };
  const indexError = (seq: number | null, message: string): void => {
    if (count++ < MAX_PROBLEMS) found.index.push({ seq, severity: 'error', message });
  };

  // A consistent snapshot even while stepgate writes.
  db.exec('BEGIN');
  try {
    const anchor = getAnchor(db);
    const checkpoints = db.prepare('SELECT id, seq, hash, time, jws FROM checkpoints ORDER BY id').all() as CheckpointRow[];

    // 1. Checkpoint signatures.
    const validCheckpoints = new Map<number, CheckpointRow[]>(); // by seq
    let valid = 0;
    let lastValidSeq: number | null = null;
    let previous: CheckpointRow | null = null;
    for (const cp of checkpoints) {
      const check = await verifyCheckpointSignature(cp.jws, key);
      if (!check.ok) {
        error(cp.seq, `checkpoint ${cp.id} (event ${cp.seq}): ${check.problem}`);
        continue;
      }
      const p = check.payload;
      if (p.seq !== cp.seq || p.hash !== cp.hash || p.id !== cp.id) {
        error(cp.seq, `checkpoint ${cp.id}: the stored seq/hash (${cp.seq}, ${cp.hash.slice(0, 12)}…) differ from what its signature covers (${p.seq}, ${p.hash.slice(0, 12)}…)`);
        continue;
      }
      if (previous && cp.seq < previous.seq) warning(cp.seq, `checkpoint ${cp.id} covers an earlier event (${cp.seq}) than checkpoint ${previous.id} (${previous.seq})`);
      previous = cp;
      valid++;
      lastValidSeq = lastValidSeq === null ? cp.seq : Math.max(lastValidSeq, cp.seq);
      const list = validCheckpoints.get(cp.seq) ?? [];
      list.push(cp);
      validCheckpoints.set(cp.seq, list);
    }

    // 2. The start of the chain.
    area = 'chain';
    let prevHash = GENESIS_HASH;
    let expected = 1;
    if (anchor) {
      const cps = validCheckpoints.get(anchor.seq) ?? [];
      if (!cps.some((c) => c.id === anchor.checkpoint && c.hash === anchor.hash)) {
        error(anchor.seq, `the retention anchor (events up to ${anchor.seq} pruned, hash ${anchor.hash.slice(0, 12)}…) is not vouched for by a valid signed checkpoint: events before the first stored one may have been removed`);
      }
      prevHash = anchor.hash;
      expected = anchor.seq + 1;
    }

    // 3. The chain, with one row of look-ahead to tell an altered event from a broken link.
    const sessions = new Map<number, SessionSeen>();
    let events = 0;
    let firstSeq: number | null = null;
    let lastSeq: number | null = null;
    let firstTime: number | null = null;
    let lastTime: number | null = null;
    let broken = false;
    let prunedRecorded = anchor === null;
    let prevRow: EventRow | null = null;
    let prevPrevHash: string | null = null;
    /** Stored seq minus original seq, after an insertion or deletion that renumbered the events after it. */
    let shift = 0;
    const rows = db.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events ORDER BY seq').iterate() as IterableIterator<EventRow>;
    // session_spans (how replay finds a session's events), walked alongside: each event must be in one.
    const spans = db.prepare('SELECT session, first_seq, last_seq FROM session_spans ORDER BY first_seq').iterate() as IterableIterator<{ session: number; first_seq: number; last_seq: number }>;
    let nextSpan = spans.next();
    const openSpans = new Map<number, number>();
    let unlisted = 0;
    // Runs: which run each session started in, to see events of an earlier run after a later one opened.
    const runs: RunSeen[] = [];
    let run: RunSeen | null = null;
    const sessionRun = new Map<number, RunSeen>();
    const interleaved = new Set<string>();
    let dropped = 0;
    let next = rows.next();
    while (!next.done) {
      const row = next.value;
      next = rows.next();
      const ahead = next.done ? null : next.value;
      events++;
      firstSeq ??= row.seq;
      firstTime ??= row.time;
      lastSeq = row.seq;
      if (lastTime !== null && row.time < lastTime - 1000) warning(row.seq, `event ${row.seq} is dated ${new Date(row.time).toISOString()}, before the event preceding it (${new Date(lastTime).toISOString()}): the clock went back?`);
      lastTime = row.time;
      const where = describe(row);
      const orig = row.seq - shift;
      /** Move on from this row, trusting its stored hash, so one break does not hide later ones. */
      const advance = (originalSeq: number): void => {
        prevPrevHash = prevHash;
        prevHash = row.hash;
        expected = originalSeq + 1;
      };

      if (orig !== expected) {
        const missing = orig - expected;
        error(expected, missing === 1 ? `event ${expected} is missing (deleted): the chain jumps from ${expected - 1} to ${orig}` : `events ${expected} to ${orig - 1} are missing (${missing} deleted): the chain jumps from ${expected - 1} to ${orig}`);
        broken = true;
        advance(orig);
      } else if (verifiesAs(prevHash, row, orig)) {
        advance(orig);
      } else {
        broken = true;
        if (ahead && verifiesAs(row.hash, ahead, ahead.seq - shift)) {
          // The next event chains onto this one's stored hash: this event's content was changed.
          error(row.seq, `event ${where} was altered: its content does not match its hash`);
          advance(orig);
        } else if (ahead && verifiesAs(prevHash, ahead, orig)) {
          error(row.seq, `event ${where} was inserted: it is not part of the chain (the event after it chains onto the one before it)`);
          shift++; // skip it: the chain goes on from the previous event
        } else if (prevRow && prevPrevHash !== null && verifiesAs(prevPrevHash, row, orig - 1)) {
          error(prevRow.seq, `event ${describe(prevRow)} was inserted: it is not part of the chain (the events after it were renumbered)`);
          shift++;
          advance(orig - 1);
        } else if (ahead && verifiesAs(row.hash, ahead, ahead.seq - shift + 1)) {
          error(row.seq, `the event before ${where} was deleted and the events after it renumbered`);
          shift--;
          advance(orig + 1);
        } else if (!ahead) {
          error(row.seq, `event ${where} (the last one) does not match the chain: it was altered or added`);
          advance(orig);
        } else {
          error(row.seq, `the chain breaks at event ${where}: it was altered, or the event before it was altered and its hash recomputed`);
          advance(orig);
        }
      }
      prevRow = row;
      while (!nextSpan.done && nextSpan.value.first_seq <= row.seq) {
        openSpans.set(nextSpan.value.session, Math.max(openSpans.get(nextSpan.value.session) ?? 0, nextSpan.value.last_seq));
        nextSpan = spans.next();
      }
      if ((openSpans.get(row.session) ?? 0) < row.seq && unlisted++ < 5) {
        indexError(row.seq, `event ${where} is not in the session_spans index: replay of session ${row.session} would not show it`);
      }

      const cps = validCheckpoints.get(row.seq - shift);
      if (cps) for (const cp of cps) if (cp.hash !== row.hash) checkpointError(row.seq, `checkpoint ${cp.id} signed event ${cp.seq} with hash ${cp.hash.slice(0, 12)}…, but the stored event's hash is ${row.hash.slice(0, 12)}…: the chain was rewritten`);

      if (run) {
        run.lastTime = row.time;
        run.lastSeq = row.seq;
      }
      if (row.session === SYSTEM_SESSION && (row.kind === 'audit.open' || row.kind === 'audit.close' || row.kind === 'audit.gap')) {
        let body: Record<string, unknown> = {};
        try {
          body = JSON.parse(row.body) as Record<string, unknown>;
        } catch {
          // reported below (system events are checked for JSON like the others by the hash check)
        }
        if (row.kind === 'audit.open') {
          const previous = typeof body.previous_run === 'string' ? body.previous_run : null;
          if (run && run.id === null && previous !== null) run.id = previous;
          run = {
            id: typeof body.run === 'string' ? body.run : null,
            pid: typeof body.stepgate_pid === 'number' ? body.stepgate_pid : null,
            start: typeof body.stepgate_start === 'string' ? body.stepgate_start : null,
            host: typeof body.host === 'string' ? body.host : null,
            started: row.time,
            lastTime: row.time,
            openSeq: row.seq,
            lastSeq: row.seq,
            closed: false,
            running: false,
          };
          runs.push(run);
        } else if (row.kind === 'audit.close') {
          if (run) run.closed = true;
        } else {
          const n = typeof body.dropped === 'number' ? body.dropped : 0;
          dropped += n;
          warning(row.seq, `the audit store had to drop ${n} event(s) while it could not write (audit.gap, event ${row.seq} at ${iso(row.time)}): what happened then is not in the trail`);
        }
      } else if (row.session !== SYSTEM_SESSION && run) {
        if (row.kind === 'connection.start') sessionRun.set(row.session, run);
        else {
          const own = sessionRun.get(row.session);
          if (own && own !== run) {
            const pair = `${own.openSeq}:${run.openSeq}`;
            if (!interleaved.has(pair)) {
              interleaved.add(pair);
              warning(
                row.seq,
                `runs ${runName(own)} and ${runName(run)} interleave: event ${describe(row)} belongs to session ${row.session} of run ${runName(own)}, but was written after run ${runName(run)} started (event ${run.openSeq}, ${iso(run.started)}): two stepgate processes wrote to this trail at once`,
              );
            }
          }
        }
      }

      // Sessions, for the index cross-check and sequence gaps.
      if (row.session !== SYSTEM_SESSION) {
        let s = sessions.get(row.session);
        if (!s) {
          s = { connection: null, user: null, database: null, client: null, statements: 0, denied: 0, held: 0, lastSseq: row.sseq - 1, firstSeq: row.seq };
          sessions.set(row.session, s);
        }
        if (row.sseq !== s.lastSseq + 1 && !(anchor && s.firstSeq === row.seq)) {
          warning(row.seq, `session ${row.session}: event ${row.sseq} follows event ${s.lastSseq} of the session (events in between are missing)`);
        }
        s.lastSseq = row.sseq;
        try {
          const body = JSON.parse(row.body) as Record<string, unknown>;
          if (row.kind === 'connection.start') {
            s.connection = String(body.connection);
            s.user = String(body.user);
            s.database = String(body.database);
            s.client = String(body.client);
          } else if (row.kind === 'statement') {
            s.statements++;
            const action = (body.decision as { action?: string } | undefined)?.action;
            if (action === 'deny') s.denied++;
            else if (action === 'step-up') s.held++;
          }
        } catch {
          error(row.seq, `event ${where}: its body is not valid JSON`);
        }
      } else if (row.kind === 'audit.pruned' && anchor) {
        try {
          if ((JSON.parse(row.body) as { through_seq?: number }).through_seq === anchor.seq) prunedRecorded = true;
        } catch {
          // reported by the hash check if altered
        }
      }
    }
    spans.return?.();
    // Runs that ended without audit.close: every run but the last one that is not closed, and the last one
    // unless its process is still running here.
    for (let i = 0; i < runs.length; i++) {
      const r = runs[i]!;
      if (r.closed) continue;
      const last = i === runs.length - 1;
      if (last && r.pid !== null && running({ pid: r.pid, host: r.host, start: r.start })) {
        r.running = true;
        continue;
      }
      const why = last
        ? r.host !== null && r.host !== os.hostname()
          ? `and the trail ends there (it ran on host ${r.host}: if that stepgate still runs, this is expected)`
          : `and its process (pid ${r.pid ?? '?'}) is gone: stepgate was killed or crashed`
        : `before run ${runName(runs[i + 1]!)} started (event ${runs[i + 1]!.openSeq}, ${iso(runs[i + 1]!.started)}): stepgate was killed or crashed, or another stepgate took over the trail`;
      found.chain.push({
        seq: r.lastSeq,
        severity: 'warning',
        message: `run ${runName(r)} (stepgate pid ${r.pid ?? '?'}${r.host ? ` on ${r.host}` : ''}, started ${iso(r.started)}) ended without audit.close ${why}; its last events may be missing (its last recorded event is ${r.lastSeq}, ${iso(r.lastTime)})`,
      });
    }
    if (!prunedRecorded && anchor) error(null, `events up to ${anchor.seq} were removed, but no audit.pruned event records that retention did it`);
    if (anchor && firstSeq !== null && firstSeq !== anchor.seq + 1 && !broken) error(anchor.seq + 1, `the chain should continue after the retention anchor with event ${anchor.seq + 1}`);

    // 4. Checkpoints that point beyond the stored chain: events were cut from its end.
    area = 'checkpoint';
    const lastOrig = lastSeq === null ? null : lastSeq - shift;
    for (const [seq, cps] of validCheckpoints) {
      if (lastOrig === null || seq > lastOrig) {
        for (const cp of cps) error(seq, `checkpoint ${cp.id} vouches for event ${seq}, but the chain ends at ${lastOrig ?? 'nothing'}: events were deleted from its end`);
      }
      // Checkpoints before the first stored event were pruned by retention: their signatures were checked above.
    }

    // 5. The sessions index (what `stepgate audit sessions` shows) against the events.
    area = 'index';
    const index = db.prepare('SELECT session, connection, user, database, client, statements, denied, held, first_seq FROM sessions').all() as (Omit<
      SessionSeen,
      'lastSseq' | 'firstSeq'
    > & { session: number; first_seq: number | null })[];
    const indexed = new Set<number>();
    for (const row of index) {
      indexed.add(row.session);
      const s = sessions.get(row.session);
      if (!s) {
        if (!anchor) error(null, `the sessions index lists session ${row.session} (${row.connection ?? '?'}), which has no events`);
        continue;
      }
      const partlyPruned = anchor !== null && (row.first_seq === null || row.first_seq <= anchor.seq);
      for (const field of ['connection', 'user', 'database', 'client'] as const) {
        if (s[field] !== null && s[field] !== row[field]) error(s.firstSeq, `the sessions index says ${field} "${row[field]}" for session ${row.session}, its events say "${s[field]}"`);
      }
      if (!partlyPruned && (s.statements !== row.statements || s.denied !== row.denied || s.held !== row.held)) {
        error(s.firstSeq, `the sessions index counts ${row.statements} statements (${row.denied} denied, ${row.held} held) for session ${row.session}, its events ${s.statements} (${s.denied}, ${s.held})`);
      }
    }
    for (const [no, s] of sessions) if (!indexed.has(no)) error(s.firstSeq, `session ${no} (${s.connection ?? 'no connection.start'}) is missing from the sessions index`);

    // 6. Every passkey approval's signature, against the statement it approved (its own finding: a
    // rewritten chain can hide an edit from the checks above, not from this one).
    area = 'approvals';
    const approvals = await checkApprovals(db, describe, error, warning, anchor !== null);

    const unsealed = lastOrig === null ? 0 : lastOrig - Math.max(lastValidSeq ?? 0, anchor?.seq ?? 0);
    const problems = [...found.chain, ...found.checkpoint, ...found.index, ...found.approvals];
    return {
      ok: !problems.some((p) => p.severity === 'error'),
      events,
      firstSeq,
      lastSeq,
      firstTime,
      lastTime,
      sessions: sessions.size,
      anchor: anchor ? { seq: anchor.seq, hash: anchor.hash, checkpoint: anchor.checkpoint } : null,
      checkpoints: { total: checkpoints.length, valid, lastSeq: lastValidSeq },
      unsealed: Math.max(0, unsealed),
      key: { kid: key.kid, source: key.source },
      runs: runs.map(({ id, pid, host, started, lastTime, closed, running }) => ({ id, pid, host, started, lastTime, closed, running })),
      dropped,
      approvals,
      problems,
    };
  } finally {
    db.exec('COMMIT');
  }
}

export function describe(row: EventRow): string {
  return `${row.seq} (${row.kind}, session ${row.session} #${row.sseq}, ${new Date(row.time).toISOString()})`;
}

function iso(time: number): string {
  return new Date(time).toISOString();
}

function runName(r: { id: string | null; openSeq: number }): string {
  return r.id ?? `(unnamed, opened at event ${r.openSeq})`;
}

function verifiesAs(prevHash: string, row: EventRow, seq: number): boolean {
  return chainHash(prevHash, canonical(seq, row.session, row.sseq, row.time, row.kind, row.body)) === row.hash;
}
