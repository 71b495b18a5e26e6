/**
 * stepgate's SQLite files (identity.db, signals.db, audit.db): how they are opened, and their schema
 * versions, kept in PRAGMA user_version.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

/** One schema step. Lists of them are append-only: a shipped step is never edited. */
export type Migration = (db: Database.Database) => void;

/** The file's schema version; throws when a newer stepgate wrote it (this one would misread it). */
export function schemaVersion(db: Database.Database, file: string, migrations: Migration[], doing = 'use'): number {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > migrations.length) {
    throw new Error(`${file} was written by a newer stepgate (schema ${version}); upgrade stepgate to ${doing} it`);
  }
  return version;
}

/** Brings the file to the latest schema, each step in its own transaction. */
export function migrate(db: Database.Database, file: string, migrations: Migration[]): void {
  for (let v = schemaVersion(db, file, migrations); v < migrations.length; v++) {
    db.transaction(() => {
      migrations[v]!(db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/** Opens (creating, owner-only) a file with WAL and foreign keys, brought to the latest schema. */
export function openDatabase(file: string, migrations: Migration[]): Database.Database {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  fs.chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  migrate(db, file, migrations);
  return db;
}
