/**
 * The audit database (`DATA/audit.db`, SQLite in WAL mode): its schema and how to open it.
 *
 *  - `events`: the hash-chained, append-only trail (one row per event; triggers refuse UPDATE and DELETE
 *    except retention pruning, which the writer switches on for its own transaction).
 *  - `checkpoints`: signed chain heads (JWS, Ed25519).
 *  - `sessions`: an index of connections for listing and filtering (derived from the events; `verify`
 *    checks it against them); `session_spans`: which seq ranges hold each session's events.
 *  - `meta`: the writer's bookkeeping (retention anchor, last batch, run).
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, schemaVersion, type Migration } from '../util/sqlite-schema.js';

export const AUDIT_DB_FILE = 'audit.db';

/** Schema versions, applied in order; append, never edit a shipped entry. */
export const AUDIT_MIGRATIONS: Migration[] = [
  (db) => {
    db.exec(`
      CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        session INTEGER NOT NULL,
        sseq INTEGER NOT NULL,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL
      );
      -- Where each session's events are: one row per session per written batch (cheaper than an index
      -- on events, which would cost every insert).
      CREATE TABLE session_spans (
        session INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (session, first_seq)
      ) WITHOUT ROWID;
      CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        time INTEGER NOT NULL,
        reason TEXT NOT NULL,
        jws TEXT NOT NULL
      );
      CREATE INDEX checkpoints_seq ON checkpoints (seq);
      CREATE TABLE sessions (
        session INTEGER PRIMARY KEY,
        connection TEXT,
        user TEXT,
        database TEXT,
        client TEXT,
        application TEXT,
        tls INTEGER,
        server_pid INTEGER,
        start_time INTEGER,
        end_time INTEGER,
        end_reason TEXT,
        duration_ms REAL,
        bytes_in INTEGER,
        bytes_out INTEGER,
        statements INTEGER NOT NULL DEFAULT 0,
        denied INTEGER NOT NULL DEFAULT 0,
        held INTEGER NOT NULL DEFAULT 0,
        first_seq INTEGER,
        last_seq INTEGER,
        run TEXT
      );
      CREATE UNIQUE INDEX sessions_connection ON sessions (connection);
      CREATE INDEX sessions_start ON sessions (start_time);
      CREATE INDEX sessions_user ON sessions (user, start_time);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'stepgate audit events are append-only'); END;
      CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
        WHEN (SELECT value FROM meta WHERE key = 'pruning') IS NULL
        BEGIN SELECT RAISE(ABORT, 'stepgate audit events are append-only (only retention prunes them)'); END;
      CREATE TRIGGER checkpoints_append_only BEFORE UPDATE ON checkpoints
        BEGIN SELECT RAISE(ABORT, 'stepgate audit checkpoints are append-only'); END;
    `);
  },
];

export interface OpenOptions {
  /** Fail when the file does not exist (the writer reopening after a failure must not start a new chain). */
  mustExist?: boolean;
  busyTimeoutMs?: number;
}

/** Opens (creating when allowed) the audit database for writing: WAL, synchronous=FULL, 0600. */
export function openAuditDbForWriting(dataDir: string, options: OpenOptions = {}): Database.Database {
  const file = path.join(dataDir, AUDIT_DB_FILE);
  if (options.mustExist && !fs.existsSync(file)) throw new Error(`${file} is gone (removed while stepgate was running?)`);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const db = new Database(file, { fileMustExist: options.mustExist ?? false });
  try {
    fs.chmodSync(file, 0o600);
    db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
    db.pragma('journal_mode = WAL');
    // Every commit is fsync'd: a commit that returned survives a crash or power loss.
    db.pragma('synchronous = FULL');
    // Checkpoint the WAL into the database every ~16 MB instead of 4 MB: pages rewritten by consecutive
    // batches are copied once (measurably less work for the writer under load).
    db.pragma('wal_autocheckpoint = 4000');
    migrate(db, file, AUDIT_MIGRATIONS);
    for (const suffix of ['-wal', '-shm']) if (fs.existsSync(file + suffix)) fs.chmodSync(file + suffix, 0o600);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

export class AuditDbMissing extends Error {}

/** Opens the audit database for reading (commands). A running stepgate may write at the same time. */
export function openAuditDbForReading(dataDir: string): Database.Database {
  const file = path.join(dataDir, AUDIT_DB_FILE);
  if (!fs.existsSync(file)) throw new AuditDbMissing(`no audit trail in ${dataDir} (${AUDIT_DB_FILE} not found)`);
  // Not readonly: reading a WAL database needs its -shm file, which a read-only handle cannot create.
  const db = new Database(file, { fileMustExist: true });
  db.pragma('busy_timeout = 5000');
  try {
    if (schemaVersion(db, file, AUDIT_MIGRATIONS, 'read') === 0) throw new AuditDbMissing(`${file} is not a stepgate audit database (no schema)`);
  } catch (err) {
    db.close();
    throw err;
  }
  db.pragma('query_only = ON');
  return db;
}

export function getMeta(db: Database.Database, key: string): string | null {
  const row = db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined;
  return row ? row.value : null;
}

export interface Anchor {
  /** Events up to and including this seq were pruned. */
  seq: number;
  /** Hash of event `seq`: the previous hash of the first stored event. */
  hash: string;
  /** The signed checkpoint that vouches for (seq, hash). */
  checkpoint: number;
}

export function getAnchor(db: Database.Database): Anchor | null {
  const v = getMeta(db, 'anchor');
  return v ? (JSON.parse(v) as Anchor) : null;
}
