/**
 * One owner at a time: an exclusive lock on a file that the kernel releases when its owner dies.
 *
 * Why a kernel lock and not a pid file. A pid file has to be checked for liveness and taken over when it
 * is stale, and there is no atomic "replace it if it is still stale" on a file system: two processes
 * that find the same stale file at the same moment can both take it over, and both believe they own the
 * directory. A POSIX record lock (fcntl) has none of these problems: the kernel grants it to one process
 * at a time and drops it the moment that process ends, however it ends (exit, kill -9, OOM, a crash), so
 * there is never a stale lock to clean up and nothing to race for. Node has no fcntl of its own; SQLite
 * (better-sqlite3, already a dependency) takes exactly these locks. So the lock file is a small SQLite
 * database opened with `locking_mode=EXCLUSIVE` and written once: its exclusive lock is held until the
 * connection closes or the process is gone. SQLite also tracks the connections of one process, so a
 * second lock of the same file in the same process (another worker thread, a test) is refused as well.
 * The lock file itself is never removed (removing it would let a late opener lock the old inode while a
 * new owner locks a new one).
 *
 * Who holds the lock is written beside it (`FILE.owner`: pid, process start time, command line, since)
 * once the lock is taken. That file only names the owner in the refusal ("another stepgate (pid N) is
 * using DIR"); it is never what decides who owns the lock.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { currentProcess, isAlive, type ProcessIdentity } from './process-identity.js';

export interface OwnerInfo extends ProcessIdentity {
  /** The owner's command line (argv joined), for people. */
  command: string;
  /** When it took the lock (ISO 8601). */
  since: string;
}

/** The lock is held by another process (or another part of this one). */
export class OwnerLockHeld extends Error {
  readonly code = 'LOCK_HELD';
  constructor(
    message: string,
    /** Who holds it, when the owner file says so and that process is alive. */
    readonly owner: OwnerInfo | null,
    readonly file: string,
  ) {
    super(message);
  }
}

/** What the owner file says, if anything (and the process it names is alive). */
export function readOwner(lockFile: string): OwnerInfo | null {
  try {
    const owner = JSON.parse(fs.readFileSync(`${lockFile}.owner`, 'utf8')) as OwnerInfo;
    return typeof owner.pid === 'number' && isAlive(owner) ? owner : null;
  } catch {
    return null;
  }
}

export class OwnerLock {
  private db: Database.Database | null;

  private constructor(
    readonly file: string,
    db: Database.Database,
  ) {
    this.db = db;
  }

  /**
   * Takes the lock at once or throws OwnerLockHeld with `refusal(owner)` as its message. Creates the file
   * (and nothing else) when it does not exist; the directory must exist.
   */
  static acquire(file: string, refusal: (owner: OwnerInfo | null) => string): OwnerLock {
    let db: Database.Database | null = null;
    try {
      // timeout 0: a held lock is refused at once, never waited for.
      db = new Database(file, { timeout: 0 });
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = MEMORY');
      const me: OwnerInfo = { ...currentProcess(), command: process.argv.join(' '), since: new Date().toISOString() };
      db.exec('BEGIN EXCLUSIVE');
      db.exec('CREATE TABLE IF NOT EXISTS owner (pid INTEGER NOT NULL, start TEXT, command TEXT NOT NULL, since TEXT NOT NULL)');
      db.exec('DELETE FROM owner');
      db.prepare('INSERT INTO owner (pid, start, command, since) VALUES (?, ?, ?, ?)').run(me.pid, me.start, me.command, me.since);
      db.exec('COMMIT');
      try {
        fs.chmodSync(file, 0o600);
      } catch {
        // not ours to change (a shared directory): the lock works regardless
      }
      writeOwnerFile(`${file}.owner`, me);
      return new OwnerLock(file, db);
    } catch (err) {
      try {
        db?.close();
      } catch {
        // closing a connection that failed to lock: nothing to undo
      }
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') throw new OwnerLockHeld(refusal(readOwner(file)), readOwner(file), file);
      throw err;
    }
  }

  get held(): boolean {
    return this.db !== null;
  }

  /** Gives the lock up (the process ending does the same). */
  release(): void {
    const db = this.db;
    if (!db) return;
    this.db = null;
    try {
      const owner = JSON.parse(fs.readFileSync(`${this.file}.owner`, 'utf8')) as OwnerInfo;
      if (owner.pid === process.pid) fs.rmSync(`${this.file}.owner`, { force: true });
    } catch {
      // no owner file (removed with the directory): nothing to tidy
    }
    db.close();
  }
}

function writeOwnerFile(file: string, owner: OwnerInfo): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(owner)}\n`, { mode: 0o644 });
  fs.renameSync(tmp, file);
}

/** The data directory's lock file: `serve` and `demo` hold it while they run. */
export const DATA_DIR_LOCK = 'stepgate.lock';

/**
 * One stepgate per data directory. Creates the directory if needed (nothing in it); refuses with
 * `another stepgate (pid N) is using DIR` when a live stepgate holds it.
 */
export function lockDataDir(dataDir: string): OwnerLock {
  fs.mkdirSync(dataDir, { recursive: true });
  return OwnerLock.acquire(path.join(dataDir, DATA_DIR_LOCK), (owner) => `another stepgate${owner ? ` (pid ${owner.pid})` : ''} is using ${dataDir}`);
}
