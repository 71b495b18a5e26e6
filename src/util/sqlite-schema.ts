/**
 * Schema versions for stepgate's SQLite files (identity.db, audit.db), kept in PRAGMA user_version.
 */
import type Database from 'better-sqlite3';

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
