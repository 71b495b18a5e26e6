/**
 * Where a statement's outcomes find its record: the proxy thread reports outcomes by statement id, and
 * the record must be updated in place while it is still in the open batch (or followed by an outcome
 * record once it has gone). Recent statements live in a ring indexed by id (no map, no allocation per
 * statement: entries are reused); one still waiting when the ring comes round again moves to a bounded map.
 */
import type { StatementRecord } from './records.js';

/** One connection as the trail knows it: its session number and the next event number within it. */
export class Conn {
  sseq = 0;
  ended = false;
  constructor(
    readonly id: string,
    readonly no: number,
  ) {}
}

/** A statement whose outcomes are not all recorded yet. Reused once done. */
export class PendingStatement {
  constructor(
    public id: number,
    public conn: Conn,
    public sseq: number,
    public rec: StatementRecord,
    /** The batch its record is in. */
    public batch: number,
    /** Outcomes still to come (one per statement of the message). */
    public remaining: number,
  ) {}
}

const RING = 1 << 14;
/** Statements still open when pushed out of the ring (long-running, or denied: no outcome comes); bounded. */
const MAX_OPEN_STATEMENTS = 100_000;

export class OutcomeIndex {
  private readonly ring: (PendingStatement | undefined)[] = new Array<PendingStatement | undefined>(RING);
  private readonly open = new Map<number, PendingStatement>();

  add(id: number, conn: Conn, sseq: number, rec: StatementRecord, batch: number, remaining: number): void {
    const slot = id & (RING - 1);
    const old = this.ring[slot];
    if (old === undefined) {
      this.ring[slot] = new PendingStatement(id, conn, sseq, rec, batch, remaining);
      return;
    }
    if (old.remaining > 0 && !old.conn.ended) {
      // Still waiting for its outcome: keep it in the map and give the slot a fresh entry.
      if (this.open.size >= MAX_OPEN_STATEMENTS) this.trim();
      this.open.set(old.id, old);
      this.ring[slot] = new PendingStatement(id, conn, sseq, rec, batch, remaining);
      return;
    }
    old.id = id;
    old.conn = conn;
    old.sseq = sseq;
    old.rec = rec;
    old.batch = batch;
    old.remaining = remaining;
  }

  /** The statement, while outcomes are still expected for it. */
  find(id: number): PendingStatement | undefined {
    const p = this.ring[id & (RING - 1)];
    if (p !== undefined && p.id === id) return p.remaining > 0 ? p : undefined;
    return this.open.get(id);
  }

  /** One of its outcomes was recorded. */
  done(p: PendingStatement): void {
    if (--p.remaining <= 0 && this.open.size > 0) this.open.delete(p.id);
  }

  /** Statements of closed connections never get their outcome (denied, or the connection went away). */
  sweep(): void {
    if (this.open.size <= 1000) return;
    for (const [id, p] of this.open) if (p.conn.ended) this.open.delete(id);
  }

  private trim(): void {
    for (const [id, p] of this.open) if (p.conn.ended) this.open.delete(id);
    let excess = this.open.size - MAX_OPEN_STATEMENTS / 2;
    for (const id of this.open.keys()) {
      if (excess-- <= 0) break;
      this.open.delete(id);
    }
  }
}
