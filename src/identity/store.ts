/**
 * stepgate's people: users, their groups and SCRAM verifiers (never passwords), kept in SQLite
 * (`identity.db` in the data directory). The CLI and a running server may use the file at the same time:
 * WAL mode lets the server see `stepgate users add` at the next login, without a restart.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrate, type Migration } from '../util/sqlite-schema.js';

export interface User {
  name: string;
  groups: string[];
  /** SCRAM-SHA-256 verifier in PostgreSQL's format; null until a password is set. */
  verifier: string | null;
  createdAt: Date;
  /** Linked to an identity at the OpenID Provider (`issuer|sub`); null for local users. */
  ssoSubject: string | null;
  email: string | null;
  /** A disabled user cannot log in, sign in to the console or approve (`stepgate users disable`). */
  disabled: boolean;
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
      CREATE TABLE login_places (
        user_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (user_name, kind, value)
      );
      CREATE TABLE login_failures (
        user_name TEXT NOT NULL,
        at INTEGER NOT NULL
      );
      CREATE INDEX login_failures_user ON login_failures (user_name, at);
      CREATE TABLE table_access (
        user_name TEXT NOT NULL,
        tbl TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        PRIMARY KEY (user_name, tbl)
      );
    `);
  },
];

/** A short-lived database password issued by the console or `stepgate login` (only its SCRAM verifier is kept). */
export interface Credential {
  id: string;
  user: string;
  label: string;
  createdAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

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

/** A registered WebAuthn credential. */
export interface Passkey {
  /** Credential ID, base64url. */
  id: string;
  user: string;
  publicKey: Uint8Array;
  /** Signature counter last seen (0 for authenticators that do not count). */
  counter: number;
  transports: string[];
  /** The person's label for it ("work laptop"). */
  name: string;
  deviceType: string | null;
  backedUp: boolean;
  createdAt: Date;
  lastUsedAt: Date | null;
}

export const PASSKEY_NAME_MAX = 64;

/** How long an enrollment link stays valid. */
export const ENROLLMENT_TTL_MS = 24 * 60 * 60 * 1000;

export interface Enrollment {
  /** The secret part of the link, shown once; only its hash is stored. */
  token: string;
  user: string;
  expiresAt: Date;
}

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

const hashToken = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

export function cleanPasskeyName(name: unknown): string | null {
  if (typeof name !== 'string') return null;
  const clean = name.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().replace(/\s+/g, ' ');
  if (!clean || clean.length > PASSKEY_NAME_MAX) return null;
  return clean;
}

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
    return { name, groups, verifier, createdAt: new Date(now), ssoSubject: null, email: null, disabled: false };
  }

  // ───────────────────────────── single sign-on ─────────────────────────────

  userBySubject(subject: string): User | null {
    const row = this.db.prepare('SELECT * FROM users WHERE sso_subject = ?').get(subject) as UserRow | undefined;
    return row ? toUser(row) : null;
  }

  /**
   * The user an SSO identity signs in as: the one linked to `subject`, else the user called `name` when it
   * is not linked to another identity yet (an administrator may create users first, with their groups),
   * else a new user. Groups are replaced by `groups` unless a newer sign-in already set them (`issuedAt`:
   * when the IdP issued the claims, ms). Throws when `name` is linked to another identity.
   */
  linkSsoUser(subject: string, name: string, groups: string[], email: string | null, issuedAt: number): { user: User; created: boolean; linked: boolean } {
    const problem = validateUserName(name);
    if (problem) throw new Error(problem);
    const clean = [...new Set(groups.filter((g) => validateGroupName(g) === null))].sort();
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

  setDisabled(name: string, disabled: boolean): void {
    const { changes } = this.db.prepare('UPDATE users SET disabled = ? WHERE name = ?').run(disabled ? 1 : 0, name);
    if (changes === 0) throw new Error(`no user "${name}"`);
  }

  // ───────────────────────────── database credentials ─────────────────────────────

  /**
   * The salt every credential of this user is derived with: SCRAM names its salt before the client proves
   * anything, so all of a user's credentials share one (each password is random, so that costs nothing).
   */
  credentialSalt(user: string): Buffer {
    return createHash('sha256').update(this.secret('credential-salt')).update(user).digest().subarray(0, 16);
  }

  addCredential(user: string, verifier: string, label: string, ttlMs: number, now = Date.now()): Credential {
    if (!this.getUser(user)) throw new Error(`no user "${user}"`);
    const id = randomBytes(9).toString('base64url');
    this.db.transaction(() => {
      // Bounded: expired and revoked credentials are dropped, and a user holds at most 20 at a time.
      this.db.prepare('DELETE FROM credentials WHERE user_name = ? AND (expires_at <= ? OR revoked_at IS NOT NULL)').run(user, now);
      const ids = this.db.prepare('SELECT id FROM credentials WHERE user_name = ? ORDER BY created_at DESC').all(user) as { id: string }[];
      for (const old of ids.slice(19)) this.db.prepare('DELETE FROM credentials WHERE id = ?').run(old.id);
      this.db
        .prepare('INSERT INTO credentials (id, user_name, verifier, label, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(id, user, verifier, label, now, now + ttlMs);
    })();
    return { id, user, label, createdAt: new Date(now), expiresAt: new Date(now + ttlMs), revokedAt: null, lastUsedAt: null };
  }

  /** Credentials that still work (not expired, not revoked), newest first, with their verifiers. */
  activeCredentials(user: string, now = Date.now()): (Credential & { verifier: string })[] {
    return (
      this.db.prepare('SELECT * FROM credentials WHERE user_name = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at DESC').all(user, now) as CredentialRow[]
    ).map((r) => ({ ...toCredential(r), verifier: r.verifier }));
  }

  revokeCredential(user: string, id: string, now = Date.now()): boolean {
    return this.db.prepare('UPDATE credentials SET revoked_at = ? WHERE id = ? AND user_name = ? AND revoked_at IS NULL').run(now, id, user).changes === 1;
  }

  credentialUsed(id: string, now = Date.now()): void {
    this.db.prepare('UPDATE credentials SET last_used_at = ? WHERE id = ?').run(now, id);
  }

  // ───────────────────────────── TOTP and recovery codes ─────────────────────────────

  totpSecret(user: string): { secret: string; lastStep: number } | null {
    const row = this.db.prepare('SELECT secret, last_step FROM totp WHERE user_name = ?').get(user) as { secret: string; last_step: number } | undefined;
    return row ? { secret: row.secret, lastStep: row.last_step } : null;
  }

  /** Stores a confirmed TOTP secret and fresh recovery codes (hashes), replacing any earlier ones. */
  setTotp(user: string, secret: string, confirmedStep: number, recoveryHashes: Buffer[]): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM totp WHERE user_name = ?').run(user);
      this.db.prepare('INSERT INTO totp (user_name, secret, created_at, last_step) VALUES (?, ?, ?, ?)').run(user, secret, Date.now(), confirmedStep);
      this.setRecoveryCodes(user, recoveryHashes);
    })();
  }

  setRecoveryCodes(user: string, hashes: Buffer[]): void {
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM recovery_codes WHERE user_name = ?').run(user);
      for (const h of hashes) this.db.prepare('INSERT OR IGNORE INTO recovery_codes (user_name, code_hash) VALUES (?, ?)').run(user, h);
    })();
  }

  removeTotp(user: string): boolean {
    return this.db.transaction(() => {
      this.db.prepare('DELETE FROM recovery_codes WHERE user_name = ?').run(user);
      return this.db.prepare('DELETE FROM totp WHERE user_name = ?').run(user).changes === 1;
    })();
  }

  /** Moves the last accepted time step forward; false when this step (or a later one) was used already (a replay). */
  useTotpStep(user: string, step: number): boolean {
    return this.db.prepare('UPDATE totp SET last_step = ? WHERE user_name = ? AND last_step < ?').run(step, user, step).changes === 1;
  }

  /** Uses up one recovery code (by hash); false when it is unknown or used. */
  useRecoveryCode(user: string, hash: Buffer): boolean {
    return this.db.prepare('UPDATE recovery_codes SET used_at = ? WHERE user_name = ? AND code_hash = ? AND used_at IS NULL').run(Date.now(), user, hash).changes === 1;
  }

  recoveryCodesLeft(user: string): number {
    return (this.db.prepare('SELECT count(*) AS n FROM recovery_codes WHERE user_name = ? AND used_at IS NULL').get(user) as { n: number }).n;
  }

  /** Users with at least one factor that can approve: a passkey, or (when `totp`) a TOTP. */
  usersWithFactors(totp: boolean): Set<string> {
    const names = this.usersWithPasskeys();
    if (totp) for (const r of this.db.prepare('SELECT user_name FROM totp').all() as { user_name: string }[]) names.add(r.user_name);
    return names;
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

  // ───────────────────────────── passkeys ─────────────────────────────

  /** The user's WebAuthn user handle (random, 32 bytes): what a discoverable credential returns as userHandle. */
  webauthnHandle(user: string): Buffer {
    const get = (): Buffer | undefined =>
      (this.db.prepare('SELECT handle FROM webauthn_handles WHERE user_name = ?').get(user) as { handle: Buffer } | undefined)?.handle;
    const found = get();
    if (found) return found;
    if (!this.getUser(user)) throw new Error(`no user "${user}"`);
    this.db.prepare('INSERT OR IGNORE INTO webauthn_handles (user_name, handle) VALUES (?, ?)').run(user, randomBytes(32));
    return get()!;
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

  /** Users with at least one passkey. */
  usersWithPasskeys(): Set<string> {
    return new Set((this.db.prepare('SELECT DISTINCT user_name FROM passkeys').all() as { user_name: string }[]).map((r) => r.user_name));
  }

  addPasskey(p: Omit<Passkey, 'createdAt' | 'lastUsedAt'>): Passkey {
    const now = Date.now();
    try {
      this.db
        .prepare(
          'INSERT INTO passkeys (id, user_name, public_key, counter, transports, name, device_type, backed_up, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(p.id, p.user, Buffer.from(p.publicKey), p.counter, JSON.stringify(p.transports), p.name, p.deviceType, p.backedUp ? 1 : 0, now);
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new Error('this passkey is already registered');
      throw err;
    }
    return { ...p, createdAt: new Date(now), lastUsedAt: null };
  }

  /**
   * Records a verified use of a passkey. The counter only moves forward: false when another use with the
   * same or a higher counter was recorded meanwhile (a cloned authenticator or a replay racing this one).
   */
  recordPasskeyUse(id: string, previousCounter: number, newCounter: number): boolean {
    const { changes } = this.db
      .prepare('UPDATE passkeys SET counter = ?, last_used_at = ? WHERE id = ? AND counter = ?')
      .run(newCounter, Date.now(), id, previousCounter);
    return changes === 1;
  }

  renamePasskey(user: string, id: string, name: string): boolean {
    return this.db.prepare('UPDATE passkeys SET name = ? WHERE id = ? AND user_name = ?').run(name, id, user).changes === 1;
  }

  removePasskey(user: string, id: string): boolean {
    return this.db.prepare('DELETE FROM passkeys WHERE id = ? AND user_name = ?').run(id, user).changes === 1;
  }

  // ───────────────────────────── enrollment links ─────────────────────────────

  /** A new one-time enrollment token for `user`; every older one of this user stops working. */
  issueEnrollment(user: string, ttlMs = ENROLLMENT_TTL_MS): Enrollment {
    if (!this.getUser(user)) throw new Error(`no user "${user}"`);
    const token = randomBytes(32).toString('base64url');
    const now = Date.now();
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM enrollments WHERE user_name = ?').run(user);
      this.db.prepare('INSERT INTO enrollments (token_hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)').run(hashToken(token), user, now, now + ttlMs);
    })();
    return { token, user, expiresAt: new Date(now + ttlMs) };
  }

  /** The user an enrollment token is for, while it is unused and unexpired; null otherwise. */
  enrollmentUser(token: string): string | null {
    if (typeof token !== 'string' || token.length === 0 || token.length > 200) return null;
    const row = this.db
      .prepare('SELECT user_name FROM enrollments WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?')
      .get(hashToken(token), Date.now()) as { user_name: string } | undefined;
    return row?.user_name ?? null;
  }

  /**
   * Uses up an enrollment token and stores the passkey it registered, atomically: of two registrations
   * racing with one token, exactly one succeeds. Throws when the token is no longer valid.
   */
  enrollPasskey(token: string, passkey: Omit<Passkey, 'createdAt' | 'lastUsedAt'>): Passkey {
    return this.db.transaction(() => {
      const { changes } = this.db
        .prepare('UPDATE enrollments SET used_at = ? WHERE token_hash = ? AND user_name = ? AND used_at IS NULL AND expires_at > ?')
        .run(Date.now(), hashToken(token), passkey.user, Date.now());
      if (changes !== 1) throw new Error('this enrollment link was already used or has expired');
      return this.addPasskey(passkey);
    })();
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
