/**
 * stepgate's people: users, their groups and SCRAM verifiers (never passwords), kept in SQLite
 * (`identity.db` in the data directory). The CLI and a running server may use the file at the same time:
 * WAL mode lets the server see `stepgate users add` at the next login, without a restart.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export interface User {
  name: string;
  groups: string[];
  /** SCRAM-SHA-256 verifier in PostgreSQL's format; null until a password is set. */
  verifier: string | null;
  createdAt: Date;
}

/** Names follow PostgreSQL role-name habits: no control characters, at most 63 bytes. */
export function validateUserName(name: string): string | null {
  if (!name) return 'a user name must not be empty';
  if (Buffer.byteLength(name) > 63) return 'a user name must be at most 63 bytes';
  if (/[\u0000-\u001f\u007f,]/.test(name)) return 'a user name must not contain control characters or commas';
  return null;
}

export function validateGroupName(name: string): string | null {
  if (!/^[A-Za-z0-9_.-]{1,63}$/.test(name)) return `group "${name}" must be 1-63 letters, digits, "_", "." or "-"`;
  return null;
}

type Migration = (db: Database.Database) => void;

/** Schema versions, applied in order; later issues append to this list (never edit a shipped entry). */
export const IDENTITY_MIGRATIONS: Migration[] = [
  (db) => {
    db.exec(`
      CREATE TABLE users (
        name TEXT PRIMARY KEY,
        groups TEXT NOT NULL DEFAULT '[]',
        verifier TEXT,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
    `);
  },
];

export function openDatabase(file: string, migrations: Migration[]): Database.Database {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file);
  fs.chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > migrations.length) {
    throw new Error(`${file} was written by a newer stepgate (schema ${version}); upgrade stepgate to use it`);
  }
  for (let v = version; v < migrations.length; v++) {
    db.transaction(() => {
      migrations[v](db);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return db;
}

interface UserRow {
  name: string;
  groups: string;
  verifier: string | null;
  created_at: number;
}

const toUser = (row: UserRow): User => ({
  name: row.name,
  groups: JSON.parse(row.groups) as string[],
  verifier: row.verifier,
  createdAt: new Date(row.created_at),
});

export class IdentityStore {
  readonly db: Database.Database;
  private readonly getUserStmt: Database.Statement<[string], UserRow>;

  constructor(dataDir: string) {
    this.db = openDatabase(path.join(dataDir, 'identity.db'), IDENTITY_MIGRATIONS);
    this.getUserStmt = this.db.prepare('SELECT * FROM users WHERE name = ?');
  }

  close(): void {
    this.db.close();
  }

  getUser(name: string): User | null {
    const row = this.getUserStmt.get(name);
    return row ? toUser(row) : null;
  }

  listUsers(): User[] {
    return (this.db.prepare('SELECT * FROM users ORDER BY name').all() as UserRow[]).map(toUser);
  }

  addUser(name: string, groups: string[], verifier: string | null): User {
    const problem = validateUserName(name) ?? groups.map(validateGroupName).find((p) => p !== null) ?? null;
    if (problem) throw new Error(problem);
    const now = Date.now();
    try {
      this.db
        .prepare('INSERT INTO users (name, groups, verifier, created_at) VALUES (?, ?, ?, ?)')
        .run(name, JSON.stringify([...new Set(groups)].sort()), verifier, now);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new Error(`user "${name}" already exists`);
      throw err;
    }
    return { name, groups, verifier, createdAt: new Date(now) };
  }

  setVerifier(name: string, verifier: string): void {
    const { changes } = this.db.prepare('UPDATE users SET verifier = ? WHERE name = ?').run(verifier, name);
    if (changes === 0) throw new Error(`no user "${name}"`);
  }

  setGroups(name: string, groups: string[]): void {
    const problem = groups.map(validateGroupName).find((p) => p !== null);
    if (problem) throw new Error(problem);
    const { changes } = this.db
      .prepare('UPDATE users SET groups = ? WHERE name = ?')
      .run(JSON.stringify([...new Set(groups)].sort()), name);
    if (changes === 0) throw new Error(`no user "${name}"`);
  }

  removeUser(name: string): boolean {
    return this.db.prepare('DELETE FROM users WHERE name = ?').run(name).changes > 0;
  }

  /** A per-installation random secret, created on first use (decoy SCRAM salts, signing keys ...). */
  secret(name: string, bytes = 32): Buffer {
    const row = this.db.prepare('SELECT value FROM secrets WHERE name = ?').get(name) as { value: Buffer } | undefined;
    if (row) return row.value;
    const value = randomBytes(bytes);
    this.db.prepare('INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)').run(name, value);
    return (this.db.prepare('SELECT value FROM secrets WHERE name = ?').get(name) as { value: Buffer }).value;
  }
}
