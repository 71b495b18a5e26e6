/**
 * The audit writer: owns `audit.db`, turns records from the proxy thread into hash-chained events,
 * keeps the sessions index, signs checkpoints and prunes by retention. Runs in the audit worker thread
 * (worker.ts); everything here is synchronous except signing.
 *
 * A batch is one transaction, committed with synchronous=FULL (fsync'd) before it is acknowledged. If a
 * write fails the transaction rolls back, the in-memory chain state is restored and the error goes up:
 * the worker reports it and exits, and the proxy thread re-sends the batch to a new worker later.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { AUDIT_DB_FILE, getAnchor, getMeta, openAuditDbForWriting, type Anchor } from './db.js';
import {
  canonical,
  chainHash,
  CHECKPOINT_TYPE,
  FORMAT_VERSION,
  GENESIS_HASH,
  sha256hex,
  SYSTEM_SESSION,
  type CheckpointPayload,
  type EventKind,
  type EventRow,
} from './format.js';
import { rowsFromTag } from '../sql/command-tag.js';
import { loadOrCreateSigningKey, signCheckpoint, type SigningKey } from './keys.js';
import { processStartTime } from '../util/process-identity.js';
import { firstOutcome, Rec, RECORD_KINDS, type AuditRecord, type JsonRef, type OutcomeFields } from './records.js';
import { previewBody, recordedParams, recordedSql } from './recorded.js';
import { redactFreeText, scrubMessage } from './secrets.js';

export interface WriterOptions {
  dataDir: string;
  /** Identifies this stepgate process (same across worker restarts). */
  run: string;
  /** Reopening after a failure: the database must exist and belong to this run. */
  resume: boolean;
  bindParameters: boolean;
  retentionMs: number | null;
  checkpointEvents: number;
  busyTimeoutMs?: number;
}

export interface WriterState {
  lastSeq: number;
  lastHash: string;
  /** The next session number to hand out. */
  nextSession: number;
  /** Last batch committed: `${run}:${n}`. */
  lastBatch: string | null;
}

export interface Batch {
  n: number;
  recs: AuditRecord[];
  /** Records the proxy thread had to drop while the writer was down, by kind. */
  dropped?: Record<string, number>;
  /** New dictionary entries [id, json, ...]: records refer to repeated JSON by number. */
  dict?: (number | string)[];
}

interface SessionAgg {
  statements: number;
  denied: number;
  held: number;
  first: number;
  last: number;
}

const NO_FRAGMENTS: string[] = [];
/** Remembered secret fragments of statements, to mask them in later error messages. */
const FRAGMENT_MEMORY = 10_000;

export class AuditWriter {
  readonly db: Database.Database;
  readonly file: string;
  private key!: SigningKey;
  private lastSeq = 0;
  private lastHash = GENESIS_HASH;
  private sysSseq = 0;
  private savedSysSseq = 0;
  private nextSession = 1;
  private lastBatch: string | null = null;
  private appliedBatch = 0;
  private inode: number;
  private lastCheckpointSeq = 0;
  private checkpointing: Promise<unknown> = Promise.resolve();
  private readonly fragments = new Map<string, string[]>();
  private readonly aggs = new Map<number, SessionAgg>();
  private readonly dictionary = new Map<number, string>();
  private closed = false;

  private readonly insert: Database.Statement;
  private readonly setMeta: Database.Statement;
  private readonly sessionStart: Database.Statement;
  private readonly sessionEnd: Database.Statement;
  private readonly sessionCounts: Database.Statement;
  private readonly span: Database.Statement;
  private readonly getLastBatch: Database.Statement;

  private constructor(private readonly options: WriterOptions) {
    this.file = path.join(options.dataDir, AUDIT_DB_FILE);
    this.db = openAuditDbForWriting(options.dataDir, { mustExist: options.resume, busyTimeoutMs: options.busyTimeoutMs });
    this.inode = fs.statSync(this.file).ino;
    this.insert = this.db.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.setMeta = this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value');
    this.sessionStart = this.db.prepare(`
      INSERT INTO sessions (session, connection, user, database, client, application, tls, server_pid, start_time, first_seq, last_seq, run)
      VALUES (@session, @connection, @user, @database, @client, @application, @tls, @server_pid, @start_time, @seq, @seq, @run)
      ON CONFLICT(session) DO UPDATE SET connection = excluded.connection, user = excluded.user, database = excluded.database,
        client = excluded.client, application = excluded.application, tls = excluded.tls, server_pid = excluded.server_pid,
        start_time = excluded.start_time, run = excluded.run, last_seq = excluded.last_seq`);
    this.sessionEnd = this.db.prepare(`
      INSERT INTO sessions (session, end_time, end_reason, duration_ms, bytes_in, bytes_out, first_seq, last_seq)
      VALUES (@session, @end_time, @end_reason, @duration_ms, @bytes_in, @bytes_out, @seq, @seq)
      ON CONFLICT(session) DO UPDATE SET end_time = excluded.end_time, end_reason = excluded.end_reason,
        duration_ms = excluded.duration_ms, bytes_in = excluded.bytes_in, bytes_out = excluded.bytes_out, last_seq = excluded.last_seq`);
    this.sessionCounts = this.db.prepare(`
      INSERT INTO sessions (session, statements, denied, held, first_seq, last_seq) VALUES (?, ?, ?, ?, ?, ?)
      ON CONFLICT(session) DO UPDATE SET statements = statements + excluded.statements, denied = denied + excluded.denied,
        held = held + excluded.held, last_seq = max(coalesce(last_seq, 0), excluded.last_seq)`);
    this.span = this.db.prepare('INSERT INTO session_spans (session, first_seq, last_seq) VALUES (?, ?, ?)');
    this.getLastBatch = this.db.prepare("SELECT value FROM meta WHERE key = 'last_batch'");
  }

  /** Opens the database and the signing key; on a fresh start records `audit.open`. */
  static async open(options: WriterOptions): Promise<AuditWriter> {
    const w = new AuditWriter(options);
    try {
      await w.init();
    } catch (err) {
      w.db.close();
      throw err;
    }
    return w;
  }

  private async init(): Promise<void> {
    const db = this.db;
    const last = db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    const anchor = getAnchor(db);
    if (last) {
      this.lastSeq = last.seq;
      this.lastHash = last.hash;
    } else if (anchor) {
      this.lastSeq = anchor.seq;
      this.lastHash = anchor.hash;
    }
    this.sysSseq = Number(getMeta(db, 'system_sseq') ?? 0);
    this.savedSysSseq = this.sysSseq;
    const maxSession = (db.prepare('SELECT max(session) AS m FROM sessions').get() as { m: number | null }).m ?? 0;
    this.nextSession = maxSession + 1;
    this.lastBatch = getMeta(db, 'last_batch');
    const lastCheckpoint = db.prepare('SELECT max(seq) AS m FROM checkpoints').get() as { m: number | null };
    this.lastCheckpointSeq = lastCheckpoint.m ?? 0;

    if (this.options.resume) {
      const run = this.lastBatch?.split(':')[0] ?? getMeta(db, 'run');
      if (run !== this.options.run) throw new Error(`${this.file} was replaced while stepgate was running (it belongs to run ${run ?? 'none'}); not writing to it`);
      if (this.lastBatch) this.appliedBatch = Number(this.lastBatch.split(':')[1]);
    }

    const { key, created } = await loadOrCreateSigningKey(this.options.dataDir);
    this.key = key;
    if (this.options.resume) return;

    const previousRun = getMeta(db, 'run');
    const clean = getMeta(db, 'clean');
    const open = previousRun
      ? (db.prepare('SELECT connection FROM sessions WHERE run = ? AND end_time IS NULL AND connection IS NOT NULL ORDER BY session').all(previousRun) as { connection: string }[]).map((r) => r.connection)
      : [];
    db.transaction(() => {
      if (created || this.lastSeq === 0) {
        this.appendSystem('audit.key', {
          kid: key.kid,
          jwk: key.jwk,
          note: created ? 'new signing key for checkpoints' : 'signing key in use for checkpoints',
        });
      }
      this.appendSystem('audit.open', {
        format: FORMAT_VERSION,
        run: this.options.run,
        stepgate_pid: process.pid,
        stepgate_start: processStartTime(process.pid),
        host: os.hostname(),
        previous_run: previousRun,
        clean_shutdown: previousRun === null ? null : clean === '1',
        open_sessions: open,
      });
      this.flushAggregates();
      this.setMeta.run('run', this.options.run);
      this.setMeta.run('clean', '0');
      this.setMeta.run('last_batch', `${this.options.run}:0`);
    })();
    this.lastBatch = `${this.options.run}:0`;
  }

  state(): WriterState {
    return { lastSeq: this.lastSeq, lastHash: this.lastHash, nextSession: this.nextSession, lastBatch: this.lastBatch };
  }

  get keyId(): string {
    return this.key.kid;
  }

  /** Throws when the database file was removed or replaced under us (writes would go nowhere). */
  checkFile(): void {
    let ino: number;
    try {
      ino = fs.statSync(this.file).ino;
    } catch (err) {
      throw new Error(`the audit database ${this.file} is gone: ${(err as Error).message}`);
    }
    if (ino !== this.inode) throw new Error(`the audit database ${this.file} was replaced by another file`);
  }

  /** Adds dictionary entries ([id, json, ...]). */
  define(entries: (number | string)[]): void {
    for (let i = 0; i + 1 < entries.length; i += 2) this.dictionary.set(entries[i] as number, entries[i + 1] as string);
  }

  private resolve(ref: JsonRef): string {
    if (typeof ref === 'string') return ref;
    const json = this.dictionary.get(ref);
    if (json === undefined) throw new Error(`audit record refers to unknown dictionary entry ${String(ref)}`);
    return json;
  }

  /** Writes one batch in one fsync'd transaction. Batches already applied (re-sent after a restart) are skipped. */
  writeBatch(batch: Batch): { seq: number } {
    if (this.closed) throw new Error('the audit writer is closed');
    this.checkFile();
    if (batch.dict) this.define(batch.dict);
    if (batch.n <= this.appliedBatch) return { seq: this.lastSeq };
    const saved = { lastSeq: this.lastSeq, lastHash: this.lastHash, sysSseq: this.sysSseq, savedSysSseq: this.savedSysSseq };
    try {
      this.db.transaction(() => {
        // One writer per chain: if another stepgate wrote since our last batch, stop (both fail closed).
        const last = (this.getLastBatch.get() as { value: string } | undefined)?.value ?? null;
        if (last !== this.lastBatch) {
          throw new Error(`another stepgate process writes to ${this.file} (its last batch is ${last}, ours ${this.lastBatch}); one data directory per stepgate`);
        }
        if (batch.dropped && Object.keys(batch.dropped).length > 0) {
          const total = Object.values(batch.dropped).reduce((a, b) => a + b, 0);
          this.appendSystem('audit.gap', {
            dropped: total,
            by_kind: batch.dropped,
            reason: 'the audit store was unavailable for longer than stepgate could keep events in memory',
          });
        }
        for (const rec of batch.recs) this.appendRecord(rec);
        this.flushAggregates();
        this.setMeta.run('last_batch', `${this.options.run}:${batch.n}`);
      })();
    } catch (err) {
      this.lastSeq = saved.lastSeq;
      this.lastHash = saved.lastHash;
      this.sysSseq = saved.sysSseq;
      this.savedSysSseq = saved.savedSysSseq;
      this.aggs.clear();
      throw err;
    }
    this.appliedBatch = batch.n;
    this.lastBatch = `${this.options.run}:${batch.n}`;
    return { seq: this.lastSeq };
  }

  private append(session: number, sseq: number, time: number, kind: EventKind, body: string): number {
    const seq = this.lastSeq + 1;
    // chainHash(lastHash, canonical(...)) in one string.
    const hash = sha256hex(`${this.lastHash}\n${seq}\t${session}\t${sseq}\t${time}\t${kind}\t${body}`);
    this.insert.run(seq, session, sseq, time, kind, body, hash);
    this.lastSeq = seq;
    this.lastHash = hash;
    return seq;
  }

  private appendSystem(kind: EventKind, body: object, time = Date.now()): number {
    const seq = this.append(SYSTEM_SESSION, ++this.sysSseq, time, kind, JSON.stringify(body));
    this.agg(SYSTEM_SESSION, seq);
    return seq;
  }

  private agg(session: number, seq: number): SessionAgg {
    let a = this.aggs.get(session);
    if (a === undefined) {
      a = { statements: 0, denied: 0, held: 0, first: seq, last: seq };
      this.aggs.set(session, a);
    }
    a.last = seq;
    return a;
  }

  private flushAggregates(): void {
    for (const [session, a] of this.aggs) {
      this.span.run(session, a.first, a.last);
      if (session !== SYSTEM_SESSION) this.sessionCounts.run(session, a.statements, a.denied, a.held, a.first, a.last);
    }
    this.aggs.clear();
    if (this.sysSseq !== this.savedSysSseq) {
      this.setMeta.run('system_sseq', String(this.sysSseq));
      this.savedSysSseq = this.sysSseq;
    }
  }

  private appendRecord(r: AuditRecord): void {
    const session = r[1];
    const sseq = r[2];
    const time = r[3];
    const kind = RECORD_KINDS[r[0]] as EventKind;
    switch (r[0]) {
      case Rec.Statement: {
        const sql = r[4];
        const { text, fragments } = recordedSql(sql);
        const cls = r[5];
        const params = this.options.bindParameters ? r[7] : null;
        if (fragments.length > 0) {
          if (this.fragments.size >= FRAGMENT_MEMORY) this.fragments.delete(this.fragments.keys().next().value as string);
          this.fragments.set(`${session}:${sseq}`, fragments);
        }
        let outcomes = '[]';
        const first = firstOutcome(r);
        if (first !== null) {
          outcomes = `[${outcomeJson(first, fragments)}`;
          const more = r[15];
          if (more !== null) for (const o of more) outcomes += `,${outcomeJson(o, fragments)}`;
          outcomes += ']';
        }
        const body =
          `{"sql":${JSON.stringify(text)}` +
          (params ? `,"params":${JSON.stringify(recordedParams(sql, params))}` : '') +
          `,"statements":[${Array.isArray(cls) ? cls.map((c) => this.resolve(c)).join(',') : this.resolve(cls)}]` +
          `,"decision":${this.resolve(r[6])}` +
          `,"outcomes":${outcomes}}`;
        const seq = this.append(session, sseq, time, kind, body);
        const a = this.agg(session, seq);
        a.statements++;
        if (r[8] === 'deny') a.denied++;
        else if (r[8] === 'step-up') a.held++;
        return;
      }
      case Rec.Outcome: {
        const statement = r[4];
        const fragments = this.fragments.get(`${session}:${statement}`) ?? [];
        const o = outcomeJson([r[5], r[6], r[7], r[8], r[9], r[10], r[11]], fragments);
        const seq = this.append(session, sseq, time, kind, `{"statement":${statement},${o.slice(1)}`);
        this.agg(session, seq);
        return;
      }
      case Rec.Start: {
        const body = JSON.stringify({
          connection: r[4],
          user: r[5],
          database: r[6],
          application: r[7],
          client: r[8],
          tls: r[9],
          server_pid: r[10],
          // Only when routed to another name (absent in records written before it existed).
          ...(typeof r[11] === 'string' ? { server_database: r[11] } : {}),
        });
        const seq = this.append(session, sseq, time, kind, body);
        this.agg(session, seq);
        this.sessionStart.run({
          session,
          connection: r[4],
          user: r[5],
          database: r[6],
          application: r[7],
          client: r[8],
          tls: r[9] ? 1 : 0,
          server_pid: r[10],
          start_time: time,
          seq,
          run: this.options.run,
        });
        return;
      }
      case Rec.End: {
        const body = JSON.stringify({ duration_ms: r[4], bytes_in: r[5], bytes_out: r[6], reason: r[7] });
        const seq = this.append(session, sseq, time, kind, body);
        this.agg(session, seq);
        this.sessionEnd.run({ session, end_time: time, end_reason: r[7], duration_ms: r[4], bytes_in: r[5], bytes_out: r[6], seq });
        for (const key of this.fragments.keys()) if (key.startsWith(`${session}:`)) this.fragments.delete(key);
        return;
      }
      case Rec.ChallengeCreated: {
        const seq = this.append(session, sseq, time, kind, JSON.stringify({ statement: r[4], challenge: r[5] }));
        this.agg(session, seq);
        return;
      }
      case Rec.System: {
        this.appendSystem(r[4], r[5], time);
        return;
      }
      case Rec.ChallengeResolved: {
        const outcome = r[6];
        const body: Record<string, unknown> = { statement: r[4], challenge: r[5], status: outcome.status };
        switch (outcome.status) {
          case 'approved':
            body.approvers = (outcome.approvers ?? []).map((a) => ({
              user: a.user,
              credential: a.credentialId,
              ...(a.factor && a.factor !== 'passkey' ? { factor: a.factor } : {}),
              // A passkey approval: the passkey's name and the whole assertion (audit verify checks it).
              ...(a.passkey !== undefined ? { passkey: a.passkey } : {}),
              ...(a.signed ? { signed: a.signed } : {}),
            }));
            body.grant = outcome.grant === true;
            break;
          case 'rejected':
            body.by = outcome.by;
            body.reason = redactFreeText(String(outcome.reason ?? ''));
            break;
          case 'unavailable':
            body.reason = String(outcome.reason ?? '');
            break;
        }
        const seq = this.append(session, sseq, time, kind, JSON.stringify(body));
        this.agg(session, seq);
        return;
      }
      case Rec.Preview: {
        const fragments = this.fragments.get(`${session}:${r[4]}`) ?? NO_FRAGMENTS;
        const body: Record<string, unknown> = { statement: r[4], ...previewBody(r[5], fragments) };
        const d = r[6];
        if (d !== null) body.decision = { action: d.action, rule: d.rule, file: d.file, reason: d.reason, rows: d.rows?.count ?? null, ...(d.rows?.estimate ? { estimate: true } : {}) };
        const seq = this.append(session, sseq, time, kind, JSON.stringify(body));
        this.agg(session, seq);
        return;
      }
      default:
        throw new Error(`unknown audit record type ${String((r as unknown[])[0])}`);
    }
  }

  /** Signs a checkpoint of the current chain head (if it moved since the last one). */
  checkpoint(reason: string, force = false): Promise<{ id: number; seq: number; hash: string; jws: string } | null> {
    return this.exclusive(async () => {
      if (this.closed) return null;
      if (!force && this.lastSeq === this.lastCheckpointSeq) return null;
      if (this.lastSeq === 0) return null;
      return this.signAndStore(this.lastSeq, this.lastHash, reason);
    });
  }

  /** Checkpoints and pruning run one at a time (they interleave with batches, which are synchronous). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.checkpointing.then(fn, fn);
    this.checkpointing = p.catch(() => {});
    return p;
  }

  get eventsSinceCheckpoint(): number {
    return this.lastSeq - this.lastCheckpointSeq;
  }

  private async signAndStore(seq: number, hash: string, reason: string): Promise<{ id: number; seq: number; hash: string; jws: string }> {
    const id = ((this.db.prepare('SELECT max(id) AS m FROM checkpoints').get() as { m: number | null }).m ?? 0) + 1;
    const time = Date.now();
    const firstSeq = (this.db.prepare('SELECT min(seq) AS m FROM events').get() as { m: number | null }).m ?? seq + 1;
    const payload: CheckpointPayload = {
      typ: CHECKPOINT_TYPE,
      v: FORMAT_VERSION,
      id,
      seq,
      hash,
      time: new Date(time).toISOString(),
      reason,
      first_seq: firstSeq,
    };
    const jws = await signCheckpoint(this.key, payload);
    this.checkFile();
    this.db.prepare('INSERT INTO checkpoints (id, seq, hash, time, reason, jws) VALUES (?, ?, ?, ?, ?, ?)').run(id, seq, hash, time, reason, jws);
    this.lastCheckpointSeq = Math.max(this.lastCheckpointSeq, seq);
    return { id, seq, hash, jws };
  }

  /**
   * Retention: removes events older than `retentionMs`, in chunks. Each chunk is first verified (the
   * chain from the current anchor to its last event must hold: evidence of tampering is never pruned),
   * then a signed checkpoint vouches for its last event, which becomes the anchor the rest verifies from,
   * and an `audit.pruned` event records it in the chain.
   */
  prune(now = Date.now(), chunk = 20_000): Promise<{ pruned: number; throughSeq: number | null }> {
    return this.exclusive(() => this.pruneNow(now, chunk));
  }

  private async pruneNow(now: number, chunk: number): Promise<{ pruned: number; throughSeq: number | null }> {
    const retention = this.options.retentionMs;
    if (retention === null || this.closed) return { pruned: 0, throughSeq: null };
    const cutoff = now - retention;
    let pruned = 0;
    let through: number | null = null;
    for (;;) {
      const first = this.db.prepare('SELECT seq, time FROM events ORDER BY seq LIMIT 1').get() as { seq: number; time: number } | undefined;
      if (!first || first.time >= cutoff) break;
      // The last event older than the cutoff within the chunk (time follows seq; checked per row below).
      const rows = this.db.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events WHERE seq >= ? ORDER BY seq LIMIT ?').all(first.seq, chunk) as EventRow[];
      const anchor: Anchor | null = getAnchor(this.db);
      let prev = anchor ? anchor.hash : GENESIS_HASH;
      let expected = anchor ? anchor.seq + 1 : 1;
      let end = -1;
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!;
        if (row.time >= cutoff) break;
        if (row.seq === this.lastSeq) break; // never prune the head: the chain continues from it
        if (row.seq !== expected || chainHash(prev, canonical(row.seq, row.session, row.sseq, row.time, row.kind, row.body)) !== row.hash) {
          throw new PruneRefused(`event ${row.seq} does not verify; not pruning (run stepgate audit verify)`);
        }
        prev = row.hash;
        expected = row.seq + 1;
        end = i;
      }
      if (end < 0) break;
      const last = rows[end]!;
      const cp = await this.signAndStore(last.seq, last.hash, 'retention');
      this.checkFile();
      const count = end + 1;
      this.db.transaction(() => {
        this.setMeta.run('pruning', '1');
        this.db.prepare('DELETE FROM events WHERE seq <= ?').run(last.seq);
        this.db.prepare('DELETE FROM meta WHERE key = ?').run('pruning');
        this.db.prepare('DELETE FROM sessions WHERE last_seq <= ? AND (end_time IS NOT NULL OR run IS NOT ?)').run(last.seq, this.options.run);
        this.setMeta.run('anchor', JSON.stringify({ seq: last.seq, hash: last.hash, checkpoint: cp.id } satisfies Anchor));
        this.db.prepare('DELETE FROM session_spans WHERE last_seq <= ?').run(last.seq);
        this.appendSystem('audit.pruned', { through_seq: last.seq, through_time: last.time, checkpoint: cp.id, retention_ms: retention, events: count });
        this.flushAggregates();
      })();
      pruned += count;
      through = last.seq;
      if (rows.length < chunk || end < rows.length - 1) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { pruned, throughSeq: through };
  }

  /** Final checkpoint and `audit.close`; marks the shutdown clean. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.exclusive(async () => {}); // let a running checkpoint or retention pass finish first
      this.db.transaction(() => {
        this.appendSystem('audit.close', { events: this.lastSeq, run: this.options.run });
        this.flushAggregates();
        this.setMeta.run('clean', '1');
      })();
      await this.checkpoint('shutdown');
      await this.checkpointing;
    } finally {
      this.closed = true;
      try {
        this.db.close();
      } catch {
        // already failing: nothing more to do
      }
    }
  }

  /** Closes without writing (after a failure). */
  abandon(): void {
    this.closed = true;
    try {
      this.db.close();
    } catch {
      // ignore
    }
  }
}

export class PruneRefused extends Error {}

/** An outcome as JSON; fields that are null or false are left out (see OutcomeBody). */
function outcomeJson(o: OutcomeFields, fragments: string[]): string {
  const [index, tag, sqlstate, message, skipped, durationMs, readOnlyRefused] = o;
  let out = `{"index":${index}`;
  if (tag !== null) {
    out += `,"tag":${JSON.stringify(tag)}`;
    const rows = rowsFromTag(tag);
    if (rows !== null) out += `,"rows":${rows}`;
  }
  if (sqlstate !== null) out += `,"sqlstate":${JSON.stringify(sqlstate)}`;
  if (message !== null) out += `,"message":${JSON.stringify(redactFreeText(fragments.length > 0 ? scrubMessage(message, fragments) : message))}`;
  if (skipped) out += ',"skipped":true';
  if (readOnlyRefused) out += ',"read_only_refused":true';
  return `${out},"duration_ms":${JSON.stringify(durationMs)}}`;
}
