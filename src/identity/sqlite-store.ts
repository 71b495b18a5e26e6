/**
 * The identity store of one instance: SQLite, `identity.db` in the data directory. The CLI and a running
 * server may use the file at the same time: WAL mode lets the server see `stepgate users add` at the next
 * login, without a restart, because every read goes to the file (nothing is cached here).
 *
 * Changes are executed synchronously inside their (async) methods: when the promise resolves the row is
 * committed, and a failure rejects. Single-use operations are one conditional UPDATE each (SQLite
 * serializes writers, so of two racing uses exactly one changes a row).
 *
 * The file also holds the risk-signal records (login_places, login_failures, table_access: signals.ts)
 * for an instance that keeps its identities here.
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { openDatabase, type Migration } from '../util/sqlite-schema.js';
import { SIGNALS_DDL } from './signals.js';
import {
  checkUserName,
  CREDENTIALS_PER_USER,
  credentialSaltOf,
  ENROLLMENT_TTL_MS,
  enrollmentUnusable,
  hashToken,
  noUser,
  passkeyExists,
  plausibleToken,
  SECRET_BYTES,
  SECRET_NAMES,
  ssoGroups,
  storedGroups,
  userExists,
  type Credential,
  type Enrollment,
  type IdentityStore,
  type NewPasskey,
  type Passkey,
  type SecretName,
  type User,
} from './store.js';

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
  // 2: passkeys (WebAuthn credentials), their per-user handles, and one-time enrollment links.
  (db) => {
    db.exec(`
      CREATE TABLE webauthn_handles (
        user_name TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        handle BLOB NOT NULL UNIQUE
      );
      CREATE TABLE passkeys (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        public_key BLOB NOT NULL,
        counter INTEGER NOT NULL DEFAULT 0,
        transports TEXT NOT NULL DEFAULT '[]',
        name TEXT NOT NULL,
        device_type TEXT,
        backed_up INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
      );
      CREATE INDEX passkeys_user ON passkeys (user_name);
      CREATE TABLE enrollments (
        token_hash BLOB PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
      );
      CREATE INDEX enrollments_user ON enrollments (user_name);
    `);
  },
  // 3: single sign-on links, disabled users, short-lived database credentials, TOTP and recovery codes,
  // and the records risk signals are computed from (where people connect from, their failed logins,
  // the tables they have touched).
  (db) => {
    db.exec(`
      ALTER TABLE users ADD COLUMN sso_subject TEXT;
      ALTER TABLE users ADD COLUMN email TEXT;
      ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE users ADD COLUMN groups_at INTEGER NOT NULL DEFAULT 0;
      CREATE UNIQUE INDEX users_sso_subject ON users (sso_subject) WHERE sso_subject IS NOT NULL;
      CREATE TABLE credentials (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        verifier TEXT NOT NULL,
        label TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER,
        last_used_at INTEGER
      );
      CREATE INDEX credentials_user ON credentials (user_name, expires_at);
      CREATE TABLE totp (
        user_name TEXT PRIMARY KEY REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_step INTEGER NOT NULL DEFAULT -1
      );
      CREATE TABLE recovery_codes (
        user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
        code_hash BLOB NOT NULL,
        used_at INTEGER,
        PRIMARY KEY (user_name, code_hash)
      );
    `);
    // The signal records (signals.ts), here for a SQLite instance.
    db.exec(SIGNALS_DDL);
  },
];

interface CredentialRow {
  id: string;
  user_name: string;
  verifier: string;
  label: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
  last_used_at: number | null;
}

const toCredential = (r: CredentialRow): Credential => ({
  id: r.id,
  user: r.user_name,
  label: r.label,
  createdAt: new Date(r.created_at),
  expiresAt: new Date(r.expires_at),
  revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
  lastUsedAt: r.last_used_at === null ? null : new Date(r.last_used_at),
});

interface PasskeyRow {
  id: string;
  user_name: string;
  public_key: Buffer;
  counter: number;
  transports: string;
  name: string;
  device_type: string | null;
  backed_up: number;
  created_at: number;
  last_used_at: number | null;
}

const toPasskey = (row: PasskeyRow): Passkey => ({
  id: row.id,
  user: row.user_name,
  publicKey: new Uint8Array(row.public_key),
  counter: row.counter,
  transports: JSON.parse(row.transports) as string[],
  name: row.name,
  deviceType: row.device_type,
  backedUp: row.backed_up === 1,
  createdAt: new Date(row.created_at),
  lastUsedAt: row.last_used_at === null ? null : new Date(row.last_used_at),
});

interface UserRow {
  name: string;
  groups: string;
  verifier: string | null;
  created_at: number;
  sso_subject: string | null;
  email: string | null;
  disabled: number;
  groups_at: number;
}

const toUser = (row: UserRow): User => ({
  name: row.name,
  groups: JSON.parse(row.groups) as string[],
  verifier: row.verifier,
  createdAt: new Date(row.created_at),
  ssoSubject: row.sso_subject,
  email: row.email,
  disabled: row.disabled === 1,
});


export class SqliteIdentityStore implements IdentityStore {
  /** The file's handle: the risk-signal records share it (signals.ts). */
  readonly db: Database.Database;
  private readonly getUserStmt: Database.Statement<[string], UserRow>;
  private readonly secrets = new Map<SecretName, Buffer>();

  constructor(dataDir: string) {
    this.db = openDatabase(path.join(dataDir, 'identity.db'), IDENTITY_MIGRATIONS);
    this.getUserStmt = this.db.prepare('SELECT * FROM users WHERE name = ?');
    // Every secret exists from the start, so that reading one never writes (INSERT OR IGNORE: a CLI
    // opening the file at the same time keeps whichever came first).
    const insert = this.db.prepare('INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)');
    this.db.transaction(() => {
      for (const name of SECRET_NAMES) insert.run(name, randomBytes(SECRET_BYTES));
    })();
    for (const row of this.db.prepare('SELECT name, value FROM secrets').all() as { name: SecretName; value: Buffer }[]) this.secrets.set(row.name, row.value);
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

  async addUser(name: string, groups: string[], verifier: string | null): Promise<User> {
    checkUserName(name);
    const stored = storedGroups(groups);
    const now = Date.now();
    try {
      this.db.prepare('INSERT INTO users (name, groups, verifier, created_at) VALUES (?, ?, ?, ?)').run(name, JSON.stringify(stored), verifier, now);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw userExists(name);
      throw err;
    }
    return this.getUser(name)!;
  }

  // ───────────────────────────── single sign-on ─────────────────────────────

  userBySubject(subject: string): User | null {
    const row = this.db.prepare('SELECT * FROM users WHERE sso_subject = ?').get(subject) as UserRow | undefined;
    return row ? toUser(row) : null;
  }

  async linkSsoUser(subject: string, name: string, groups: string[], email: string | null, issuedAt: number): Promise<{ user: User; created: boolean; linked: boolean }> {
    checkUserName(name);
    const clean = ssoGroups(groups);
    return this.db.transaction(() => {
      let created = false;
      let linked = false;
      let user = this.userBySubject(subject);
      if (!user) {
        const existing = this.getUser(name);
        if (existing && existing.ssoSubject !== null) throw new Error(`user "${name}" is linked to another single sign-on identity`);
        if (existing) {
          this.db.prepare('UPDATE users SET sso_subject = ? WHERE name = ?').run(subject, name);
          linked = true;
        } else {
          this.db.prepare('INSERT INTO users (name, groups, verifier, created_at, sso_subject) VALUES (?, ?, NULL, ?, ?)').run(name, '[]', Date.now(), subject);
          created = true;
        }
        user = this.getUser(name)!;
      }
      this.db
        .prepare('UPDATE users SET groups = ?, groups_at = ?, email = coalesce(?, email) WHERE name = ? AND groups_at <= ?')
        .run(JSON.stringify(clean), issuedAt, email, user.name, issuedAt);
      return { user: this.getUser(user.name)!, created, linked };
    })();
  }

  async setDisabled(name: string, disabled: boolean): Promise<void> {
    this.updateUser(name, 'UPDATE users SET disabled = ? WHERE name = ?', disabled ? 1 : 0);
  }

  async setVerifier(name: string, verifier: string): Promise<void> {
    this.updateUser(name, 'UPDATE users SET verifier = ? WHERE name = ?', verifier);
  }

  async setGroups(name: string, groups: string[]): Promise<void> {
    this.updateUser(name, 'UPDATE users SET groups = ? WHERE name = ?', JSON.stringify(storedGroups(groups)));
  }

  /** One column of one user (`sql` takes the value, then the name); throws when there is no such user. */
  private updateUser(name: string, sql: string, value: unknown): void {
    if (this.db.prepare(sql).run(value, name).changes === 0) throw noUser(name);
  }

  async removeUser(name: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM users WHERE name = ?').run(name).changes > 0;
  }

  // ───────────────────────────── database credentials ─────────────────────────────

  credentialSalt(user: string): Buffer {
    return credentialSaltOf(this.secret('credential-salt'), user);
  }

  async addCredential(user: string, verifier: string, label: string, ttlMs: number, now = Date.now()): Promise<Credential> {
    if (!this.getUser(user)) throw noUser(user);
    const id = randomBytes(9).toString('base64url');
    this.db.transaction(() => {
      // Bounded: expired and revoked credentials are dropped, and a user holds at most CREDENTIALS_PER_USER.
      this.db.prepare('DELETE FROM credentials WHERE user_name = ? AND (expires_at <= ? OR revoked_at IS NOT NULL)').run(user, now);
      this.db
        .prepare('DELETE FROM credentials WHERE id IN (SELECT id FROM credentials WHERE user_name = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)')
        .run(user, CREDENTIALS_PER_USER - 1);
      this.db
        .prepare('INSERT INTO credentials (id, user_name, verifier, label, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(id, user, verifier, label, now, now + ttlMs);
    })();
    return { id, user, label, createdAt: new Date(now), expiresAt: new Date(now + ttlMs), revokedAt: null, lastUsedAt: null };
  }

  activeCredentials(user: string, now = Date.now()): (Credential & { verifier: string })[] {
    return (
      this.db.prepare('SELECT * FROM credentials WHERE user_name = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC, id').all(user, now) as CredentialRow[]
    ).map((r) => ({ ...toCredential(r), verifier: r.verifier }));
  }

  async revokeCredential(user: string, id: string, now = Date.now()): Promise<boolean> {
    return this.db.prepare('UPDATE credentials SET revoked_at = ? WHERE id = ? AND user_name = ? AND revoked_at IS NULL').run(now, id, user).changes === 1;
  }

  async credentialUsed(id: string, now = Date.now()): Promise<boolean> {
    return this.db.prepare('UPDATE credentials SET last_used_at = ? WHERE id = ? AND revoked_at IS NULL AND expires_at > ?').run(now, id, now).changes === 1;
  }

  // ───────────────────────────── TOTP and recovery codes ─────────────────────────────

  totpSecret(user: string): { secret: string; lastStep: number } | null {
    const row = this.db.prepare('SELECT secret, last_step FROM totp WHERE user_name = ?').get(user) as { secret: string; last_step: number } | undefined;
    return row ? { secret: row.secret, lastStep: row.last_step } : null;
  }

  async setTotp(user: string, secret: string, confirmedStep: number, recoveryHashes: Buffer[]): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM totp WHERE user_name = ?').run(user);
      this.db.prepare('INSERT INTO totp (user_name, secret, created_at, last_step) VALUES (?, ?, ?, ?)').run(user, secret, Date.now(), confirmedStep);
      this.replaceRecoveryCodes(user, recoveryHashes);
    })();
  }

  async setRecoveryCodes(user: string, hashes: Buffer[]): Promise<void> {
    this.db.transaction(() => this.replaceRecoveryCodes(user, hashes))();
  }

  /** Inside a transaction. */
  private replaceRecoveryCodes(user: string, hashes: Buffer[]): void {
    this.db.prepare('DELETE FROM recovery_codes WHERE user_name = ?').run(user);
    const insert = this.db.prepare('INSERT OR IGNORE INTO recovery_codes (user_name, code_hash) VALUES (?, ?)');
    for (const h of hashes) insert.run(user, h);
  }

  async removeTotp(user: string): Promise<boolean> {
    return this.db.transaction(() => {
      this.db.prepare('DELETE FROM recovery_codes WHERE user_name = ?').run(user);
      return this.db.prepare('DELETE FROM totp WHERE user_name = ?').run(user).changes === 1;
    })();
  }

  async useTotpStep(user: string, step: number): Promise<boolean> {
    return this.db.prepare('UPDATE totp SET last_step = ? WHERE user_name = ? AND last_step < ?').run(step, user, step).changes === 1;
  }

  async useRecoveryCode(user: string, hash: Buffer): Promise<boolean> {
    return this.db.prepare('UPDATE recovery_codes SET used_at = ? WHERE user_name = ? AND code_hash = ? AND used_at IS NULL').run(Date.now(), user, hash).changes === 1;
  }

  recoveryCodesLeft(user: string): number {
    return (this.db.prepare('SELECT count(*) AS n FROM recovery_codes WHERE user_name = ? AND used_at IS NULL').get(user) as { n: number }).n;
  }

  usersWithFactors(totp: boolean): Set<string> {
    const names = this.usersWithPasskeys();
    if (totp) for (const r of this.db.prepare('SELECT user_name FROM totp').all() as { user_name: string }[]) names.add(r.user_name);
    return names;
  }

  // ───────────────────────────── passkeys ─────────────────────────────

  webauthnHandle(user: string): Buffer | null {
    return (this.db.prepare('SELECT handle FROM webauthn_handles WHERE user_name = ?').get(user) as { handle: Buffer } | undefined)?.handle ?? null;
  }

  async ensureWebauthnHandle(user: string): Promise<Buffer> {
    const found = this.webauthnHandle(user);
    if (found) return found;
    if (!this.getUser(user)) throw noUser(user);
    this.db.prepare('INSERT OR IGNORE INTO webauthn_handles (user_name, handle) VALUES (?, ?)').run(user, randomBytes(32));
    return this.webauthnHandle(user)!;
  }

  passkeys(user: string): Passkey[] {
    return (this.db.prepare('SELECT * FROM passkeys WHERE user_name = ? ORDER BY created_at, id').all(user) as PasskeyRow[]).map(toPasskey);
  }

  passkey(id: string): Passkey | null {
    const row = this.db.prepare('SELECT * FROM passkeys WHERE id = ?').get(id) as PasskeyRow | undefined;
    return row ? toPasskey(row) : null;
  }

  passkeyCount(user: string): number {
    return (this.db.prepare('SELECT count(*) AS n FROM passkeys WHERE user_name = ?').get(user) as { n: number }).n;
  }

  usersWithPasskeys(): Set<string> {
    return new Set((this.db.prepare('SELECT DISTINCT user_name FROM passkeys').all() as { user_name: string }[]).map((r) => r.user_name));
  }

  async addPasskey(p: NewPasskey): Promise<Passkey> {
    return this.insertPasskey(p);
  }

  /** Synchronous, so that enrollPasskey can run it inside its transaction. */
  private insertPasskey(p: NewPasskey): Passkey {
    const now = Date.now();
    try {
      this.db
        .prepare(
          'INSERT INTO passkeys (id, user_name, public_key, counter, transports, name, device_type, backed_up, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(p.id, p.user, Buffer.from(p.publicKey), p.counter, JSON.stringify(p.transports), p.name, p.deviceType, p.backedUp ? 1 : 0, now);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw passkeyExists();
      if (code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw noUser(p.user);
      throw err;
    }
    return { ...p, createdAt: new Date(now), lastUsedAt: null };
  }

  async recordPasskeyUse(id: string, previousCounter: number, newCounter: number): Promise<boolean> {
    // Compare-and-set, and forward only (an authenticator that does not count stays at 0).
    const { changes } = this.db
      .prepare('UPDATE passkeys SET counter = @next, last_used_at = @now WHERE id = @id AND counter = @previous AND (counter < @next OR (@next = 0 AND counter = 0))')
      .run({ next: newCounter, now: Date.now(), id, previous: previousCounter });
    return changes === 1;
  }

  async renamePasskey(user: string, id: string, name: string): Promise<boolean> {
    return this.db.prepare('UPDATE passkeys SET name = ? WHERE id = ? AND user_name = ?').run(name, id, user).changes === 1;
  }

  async removePasskey(user: string, id: string): Promise<boolean> {
    return this.db.prepare('DELETE FROM passkeys WHERE id = ? AND user_name = ?').run(id, user).changes === 1;
  }

  // ───────────────────────────── enrollment links ─────────────────────────────

  async issueEnrollment(user: string, ttlMs = ENROLLMENT_TTL_MS): Promise<Enrollment> {
    if (!this.getUser(user)) throw noUser(user);
    const token = randomBytes(32).toString('base64url');
    const now = Date.now();
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM enrollments WHERE user_name = ?').run(user);
      this.db.prepare('INSERT INTO enrollments (token_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)').run(hashToken(token), user, now, now + ttlMs);
    })();
    return { token, user, expiresAt: new Date(now + ttlMs) };
  }

  enrollmentUser(token: string): string | null {
    if (!plausibleToken(token)) return null;
    const row = this.db
      .prepare('SELECT user_name FROM enrollments WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?')
      .get(hashToken(token), Date.now()) as { user_name: string } | undefined;
    return row?.user_name ?? null;
  }

  async enrollPasskey(token: string, passkey: NewPasskey): Promise<Passkey> {
    return this.db.transaction(() => {
      const now = Date.now();
      const { changes } = this.db
        .prepare('UPDATE enrollments SET used_at = ? WHERE token_hash = ? AND user_name = ? AND used_at IS NULL AND expires_at > ?')
        .run(now, hashToken(token), passkey.user, now);
      if (changes !== 1) throw enrollmentUnusable();
      return this.insertPasskey(passkey);
    })();
  }

  secret(name: SecretName): Buffer {
    const value = this.secrets.get(name);
    if (!value) throw new Error(`no secret "${name}"`);
    return value;
  }
}
