/**
 * The identity store several instances share: the tables of postgres-schema.ts in the state database,
 * read from an in-memory cache. This is Teleport's proxy cache over its backend: the database is the
 * one truth, each instance keeps a copy that serves every read synchronously (the statement path and the
 * console never wait for the network to read a user), and change notices keep the copy current.
 *
 * Invariants:
 * - Whoever changes a user's rows (another instance, `stepgate users` on another host, plain SQL), a
 *   trigger NOTIFYs that user's name at commit, and the notice reloads that user's rows (user, handle,
 *   passkeys, TOTP, recovery codes left, credentials, enrollment links) in one REPEATABLE READ snapshot.
 * - Loads are applied one at a time, in the order they began. A load that begins after a notice arrived
 *   sees that commit, and nothing that began earlier is applied after it: the copy never goes back.
 * - After every (re)connection of the LISTEN connection everything is reloaded (StateDatabase.onResync),
 *   so notices missed while it was down are made up; the copy is at most one reconnection behind.
 * - A change is committed in PostgreSQL first, then its user is reloaded here before the promise
 *   resolves (read-your-writes). A failed change rejects and changes nothing here. A reload that fails
 *   drops that user from the copy (fail closed: an instance that cannot know a user's state does not let
 *   them in) and is retried; the change that asked for it rejects although it committed.
 * - Single-use and monotonic operations are conditional statements in PostgreSQL (a TOTP step, a recovery
 *   code, a passkey's counter, an enrollment link in the same transaction as its passkey, a credential's
 *   use, revocations): the copy may be stale, the database's row count is the answer. Two instances
 *   cannot both accept one code, one link or one counter value.
 * - Secrets are created at open with INSERT ... ON CONFLICT DO NOTHING and read back: every instance holds
 *   the first one written. They never change, so they are not reloaded.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../log.js';
import type { StateDatabase } from '../state/database.js';
import { IDENTITY_CHANNEL } from './postgres-schema.js';
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

/** A reload that failed is tried again after this long (the user stays out of the copy meanwhile). */
const RETRY_MS = 1_000;

/** PostgreSQL's SQLSTATEs for the constraints the changes rely on. */
const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

/** Everything the copy holds about one user. */
interface Entry {
  user: User;
  handle: Buffer | null;
  passkeys: Passkey[];
  totp: { secret: string; lastStep: number } | null;
  recoveryLeft: number;
  /** Not revoked (expired ones are filtered at read: the clock moves without a notice). */
  credentials: (Credential & { verifier: string })[];
  /** Unused links (hash in hex); expiry is checked at read. */
  enrollments: { hash: string; expiresAt: number }[];
}

type Millis = string | number;
const date = (v: Millis): Date => new Date(Number(v));
const dateOrNull = (v: Millis | null): Date | null => (v === null ? null : date(v));

interface UserRow {
  name: string;
  groups: string[];
  verifier: string | null;
  created_at: Millis;
  sso_subject: string | null;
  email: string | null;
  disabled: boolean;
}

interface PasskeyRow {
  id: string;
  user_name: string;
  public_key: Buffer;
  counter: Millis;
  transports: string[];
  name: string;
  device_type: string | null;
  backed_up: boolean;
  created_at: Millis;
  last_used_at: Millis | null;
}

interface CredentialRow {
  id: string;
  user_name: string;
  verifier: string;
  label: string;
  created_at: Millis;
  expires_at: Millis;
  revoked_at: Millis | null;
  last_used_at: Millis | null;
}

// The copy hands out its own objects: frozen, so that a caller cannot change what other callers read.
const toUser = (r: UserRow): User =>
  Object.freeze({
    name: r.name,
    groups: Object.freeze([...r.groups]) as string[],
    verifier: r.verifier,
    createdAt: date(r.created_at),
    ssoSubject: r.sso_subject,
    email: r.email,
    disabled: r.disabled,
  });

const toPasskey = (r: PasskeyRow): Passkey =>
  Object.freeze({
    id: r.id,
    user: r.user_name,
    publicKey: new Uint8Array(r.public_key),
    counter: Number(r.counter),
    transports: Object.freeze([...r.transports]) as string[],
    name: r.name,
    deviceType: r.device_type,
    backedUp: r.backed_up,
    createdAt: date(r.created_at),
    lastUsedAt: dateOrNull(r.last_used_at),
  });

const toCredential = (r: CredentialRow): Credential & { verifier: string } =>
  Object.freeze({
    id: r.id,
    user: r.user_name,
    label: r.label,
    createdAt: date(r.created_at),
    expiresAt: date(r.expires_at),
    revokedAt: dateOrNull(r.revoked_at),
    lastUsedAt: dateOrNull(r.last_used_at),
    verifier: r.verifier,
  });

/** `$1` is one user's name, or null for everyone (one text for both loads: no SQL written twice). */
const OF = (column: string): string => `($1::text IS NULL OR ${column} = $1)`;

const INSERT_PASSKEY =
  'INSERT INTO stepgate.passkeys (id, user_name, public_key, counter, transports, name, device_type, backed_up, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)';
const passkeyRow = (p: NewPasskey, now: number): unknown[] => [p.id, p.user, Buffer.from(p.publicKey), p.counter, p.transports, p.name, p.deviceType, p.backedUp, now];

export class PostgresIdentityStore implements IdentityStore {
  private readonly entries = new Map<string, Entry>();
  private readonly bySubject = new Map<string, string>();
  private readonly passkeyById = new Map<string, Passkey>();
  private readonly enrollmentByHash = new Map<string, string>();
  private readonly secrets = new Map<SecretName, Buffer>();
  /** The tail of the loads, applied one after the other. */
  private chain: Promise<void> = Promise.resolve();
  /** Loads queued and not begun, by user (null: everyone): a second request for one joins it. */
  private readonly queued = new Map<string | null, Promise<void>>();
  private readonly retries = new Map<string, NodeJS.Timeout>();
  private readonly changeListeners = new Set<(user: string | null) => void>();
  private unsubscribe: (() => void)[] = [];
  private closed = false;

  private constructor(
    private readonly state: StateDatabase,
    private readonly log: Logger,
  ) {}

  /** Subscribes to the notices, then loads the secrets and every user. The caller keeps `state` (and closes it). */
  static async open(state: StateDatabase, log: Logger): Promise<PostgresIdentityStore> {
    const store = new PostgresIdentityStore(state, log);
    // LISTEN first: a change committed after the load began is then noticed, never missed.
    store.unsubscribe.push(await state.listen(IDENTITY_CHANNEL, (user) => void store.reload(user).catch(() => {})));
    store.unsubscribe.push(state.onResync(() => store.reload(null)));
    await state.query(
      'INSERT INTO stepgate.secrets (name, value) SELECT * FROM unnest($1::text[], $2::bytea[]) ON CONFLICT (name) DO NOTHING',
      [SECRET_NAMES, SECRET_NAMES.map(() => randomBytes(SECRET_BYTES))],
    );
    for (const row of (await state.query<{ name: SecretName; value: Buffer }>('SELECT name, value FROM stepgate.secrets')).rows) store.secrets.set(row.name, row.value);
    await store.reload(null);
    return store;
  }

  /** Called after the copy changed: for one user, or (null) for everyone. Returns the unsubscribe. */
  onChange(fn: (user: string | null) => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  close(): void {
    this.closed = true;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    for (const t of this.retries.values()) clearTimeout(t);
    this.retries.clear();
  }

  // ───────────────────────────── reads: the copy ─────────────────────────────

  getUser(name: string): User | null {
    return this.entries.get(name)?.user ?? null;
  }

  listUsers(): User[] {
    return [...this.entries.values()].map((e) => e.user).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  userBySubject(subject: string): User | null {
    const name = this.bySubject.get(subject);
    return name === undefined ? null : this.getUser(name);
  }

  credentialSalt(user: string): Buffer {
    return credentialSaltOf(this.secret('credential-salt'), user);
  }

  activeCredentials(user: string, now = Date.now()): (Credential & { verifier: string })[] {
    return (this.entries.get(user)?.credentials ?? []).filter((c) => c.expiresAt.getTime() > now);
  }

  totpSecret(user: string): { secret: string; lastStep: number } | null {
    const totp = this.entries.get(user)?.totp;
    return totp ? { ...totp } : null;
  }

  recoveryCodesLeft(user: string): number {
    return this.entries.get(user)?.recoveryLeft ?? 0;
  }

  usersWithFactors(totp: boolean): Set<string> {
    const names = new Set<string>();
    for (const [name, e] of this.entries) if (e.passkeys.length > 0 || (totp && e.totp)) names.add(name);
    return names;
  }

  usersWithPasskeys(): Set<string> {
    return this.usersWithFactors(false);
  }

  webauthnHandle(user: string): Buffer | null {
    return this.entries.get(user)?.handle ?? null;
  }

  passkeys(user: string): Passkey[] {
    return [...(this.entries.get(user)?.passkeys ?? [])];
  }

  passkey(id: string): Passkey | null {
    return this.passkeyById.get(id) ?? null;
  }

  passkeyCount(user: string): number {
    return this.entries.get(user)?.passkeys.length ?? 0;
  }

  enrollmentUser(token: string): string | null {
    if (!plausibleToken(token)) return null;
    const hash = hashToken(token).toString('hex');
    const user = this.enrollmentByHash.get(hash);
    const link = user === undefined ? undefined : this.entries.get(user)?.enrollments.find((e) => e.hash === hash);
    return link && link.expiresAt > Date.now() ? user! : null;
  }

  secret(name: SecretName): Buffer {
    const value = this.secrets.get(name);
    if (!value) throw new Error(`no secret "${name}"`);
    return value;
  }

  // ───────────────────────────── changes: the database, then the copy ─────────────────────────────

  async addUser(name: string, groups: string[], verifier: string | null): Promise<User> {
    checkUserName(name);
    const stored = storedGroups(groups);
    await this.write(name, () => this.state.query('INSERT INTO stepgate.users (name, groups, verifier, created_at) VALUES ($1, $2, $3, $4)', [name, stored, verifier, Date.now()]), userExists);
    return this.present(name);
  }

  async linkSsoUser(subject: string, name: string, groups: string[], email: string | null, issuedAt: number): Promise<{ user: User; created: boolean; linked: boolean }> {
    checkUserName(name);
    const clean = ssoGroups(groups);
    // Two instances linking one identity at once: the row locks order them, and a second INSERT of one
    // name (or one subject) fails on its unique constraint and rejects (the login is refused, not merged).
    const outcome = await this.state.transaction(async (c) => {
      let created = false;
      let linked = false;
      let user = (await c.query<{ name: string }>('SELECT name FROM stepgate.users WHERE sso_subject = $1 FOR UPDATE', [subject])).rows[0]?.name;
      if (user === undefined) {
        const existing = (await c.query<{ sso_subject: string | null }>('SELECT sso_subject FROM stepgate.users WHERE name = $1 FOR UPDATE', [name])).rows[0];
        if (existing && existing.sso_subject !== null) throw new Error(`user "${name}" is linked to another single sign-on identity`);
        if (existing) {
          await c.query('UPDATE stepgate.users SET sso_subject = $1 WHERE name = $2', [subject, name]);
          linked = true;
        } else {
          await c.query("INSERT INTO stepgate.users (name, groups, created_at, sso_subject) VALUES ($1, '{}', $2, $3)", [name, Date.now(), subject]);
          created = true;
        }
        user = name;
      }
      await c.query('UPDATE stepgate.users SET groups = $1, groups_at = $2, email = coalesce($3, email) WHERE name = $4 AND groups_at <= $2', [clean, issuedAt, email, user]);
      return { user, created, linked };
    });
    await this.reload(outcome.user);
    return { user: this.present(outcome.user), created: outcome.created, linked: outcome.linked };
  }

  async setDisabled(name: string, disabled: boolean): Promise<void> {
    await this.updateUser(name, 'disabled', disabled);
  }

  async setVerifier(name: string, verifier: string): Promise<void> {
    await this.updateUser(name, 'verifier', verifier);
  }

  async setGroups(name: string, groups: string[]): Promise<void> {
    await this.updateUser(name, 'groups', storedGroups(groups));
  }

  private async updateUser(name: string, column: 'disabled' | 'verifier' | 'groups', value: unknown): Promise<void> {
    const r = await this.write(name, () => this.state.query(`UPDATE stepgate.users SET ${column} = $1 WHERE name = $2`, [value, name]));
    if (r.rowCount === 0) throw noUser(name);
  }

  async removeUser(name: string): Promise<boolean> {
    return changed(await this.write(name, () => this.state.query('DELETE FROM stepgate.users WHERE name = $1', [name])));
  }

  async addCredential(user: string, verifier: string, label: string, ttlMs: number, now = Date.now()): Promise<Credential> {
    const id = randomBytes(9).toString('base64url');
    await this.write(user, () =>
      this.state.transaction(async (c) => {
        // Bounded: expired and revoked credentials are dropped, and a user holds at most CREDENTIALS_PER_USER.
        await c.query('DELETE FROM stepgate.credentials WHERE user_name = $1 AND (expires_at <= $2 OR revoked_at IS NOT NULL)', [user, now]);
        await c.query(
          'DELETE FROM stepgate.credentials WHERE id IN (SELECT id FROM stepgate.credentials WHERE user_name = $1 ORDER BY created_at DESC OFFSET $2)',
          [user, CREDENTIALS_PER_USER - 1],
        );
        await c.query('INSERT INTO stepgate.credentials (id, user_name, verifier, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)', [id, user, verifier, label, now, now + ttlMs]);
      }),
    );
    return { id, user, label, createdAt: new Date(now), expiresAt: new Date(now + ttlMs), revokedAt: null, lastUsedAt: null };
  }

  async revokeCredential(user: string, id: string, now = Date.now()): Promise<boolean> {
    return changed(await this.write(user, () => this.state.query('UPDATE stepgate.credentials SET revoked_at = $1 WHERE id = $2 AND user_name = $3 AND revoked_at IS NULL', [now, id, user])));
  }

  async credentialUsed(id: string, now = Date.now()): Promise<boolean> {
    // Decided here, not by the copy: a revocation on another instance counts even before its notice.
    const r = await this.state.query<{ user_name: string }>(
      'UPDATE stepgate.credentials SET last_used_at = $1 WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1 RETURNING user_name',
      [now, id],
    );
    const owner = r.rows[0]?.user_name;
    if (owner !== undefined) await this.reload(owner);
    return owner !== undefined;
  }

  async setTotp(user: string, secret: string, confirmedStep: number, recoveryHashes: Buffer[]): Promise<void> {
    await this.write(user, () =>
      this.state.transaction(async (c) => {
        await c.query('DELETE FROM stepgate.totp WHERE user_name = $1', [user]);
        await c.query('INSERT INTO stepgate.totp (user_name, secret, created_at, last_step) VALUES ($1, $2, $3, $4)', [user, secret, Date.now(), confirmedStep]);
        await replaceRecoveryCodes(c, user, recoveryHashes);
      }),
    );
  }

  async setRecoveryCodes(user: string, hashes: Buffer[]): Promise<void> {
    await this.write(user, () => this.state.transaction((c) => replaceRecoveryCodes(c, user, hashes)));
  }

  async removeTotp(user: string): Promise<boolean> {
    return changed(
      await this.write(user, () =>
        this.state.transaction(async (c) => {
          await c.query('DELETE FROM stepgate.recovery_codes WHERE user_name = $1', [user]);
          return c.query('DELETE FROM stepgate.totp WHERE user_name = $1', [user]);
        }),
      ),
    );
  }

  async useTotpStep(user: string, step: number): Promise<boolean> {
    return changed(await this.write(user, () => this.state.query('UPDATE stepgate.totp SET last_step = $1 WHERE user_name = $2 AND last_step < $1', [step, user])));
  }

  async useRecoveryCode(user: string, hash: Buffer): Promise<boolean> {
    return changed(
      await this.write(user, () =>
        this.state.query('UPDATE stepgate.recovery_codes SET used_at = $1 WHERE user_name = $2 AND code_hash = $3 AND used_at IS NULL', [Date.now(), user, hash]),
      ),
    );
  }

  async ensureWebauthnHandle(user: string): Promise<Buffer> {
    const found = this.webauthnHandle(user);
    if (found) return found;
    // Two instances at once: the first handle stays (ON CONFLICT), and both read it back.
    await this.write(user, () => this.state.query('INSERT INTO stepgate.webauthn_handles (user_name, handle) VALUES ($1, $2) ON CONFLICT DO NOTHING', [user, randomBytes(32)]));
    const handle = this.webauthnHandle(user);
    if (!handle) throw noUser(user);
    return handle;
  }

  async addPasskey(p: NewPasskey): Promise<Passkey> {
    await this.write(p.user, () => this.state.query(INSERT_PASSKEY, passkeyRow(p, Date.now())), passkeyExists);
    return this.storedPasskey(p.id);
  }

  async recordPasskeyUse(id: string, previousCounter: number, newCounter: number): Promise<boolean> {
    // Compare-and-set on the database's counter, not the copy's (another instance's use wins the race),
    // and forward only (an authenticator that does not count stays at 0).
    const owner = this.passkeyById.get(id)?.user;
    const r = await this.state.query<{ user_name: string }>(
      'UPDATE stepgate.passkeys SET counter = $1, last_used_at = $2 WHERE id = $3 AND counter = $4 AND (counter < $1 OR ($1 = 0 AND counter = 0)) RETURNING user_name',
      [newCounter, Date.now(), id, previousCounter],
    );
    const user = r.rows[0]?.user_name ?? owner;
    if (user !== undefined) await this.reload(user);
    return r.rowCount === 1;
  }

  async renamePasskey(user: string, id: string, name: string): Promise<boolean> {
    return changed(await this.write(user, () => this.state.query('UPDATE stepgate.passkeys SET name = $1 WHERE id = $2 AND user_name = $3', [name, id, user])));
  }

  async removePasskey(user: string, id: string): Promise<boolean> {
    return changed(await this.write(user, () => this.state.query('DELETE FROM stepgate.passkeys WHERE id = $1 AND user_name = $2', [id, user])));
  }

  async issueEnrollment(user: string, ttlMs = ENROLLMENT_TTL_MS): Promise<Enrollment> {
    const token = randomBytes(32).toString('base64url');
    const now = Date.now();
    await this.write(user, () =>
      this.state.transaction(async (c) => {
        await c.query('DELETE FROM stepgate.enrollments WHERE user_name = $1', [user]);
        await c.query('INSERT INTO stepgate.enrollments (token_hash, user_name, created_at, expires_at) VALUES ($1, $2, $3, $4)', [hashToken(token), user, now, now + ttlMs]);
      }),
    );
    return { token, user, expiresAt: new Date(now + ttlMs) };
  }

  async enrollPasskey(token: string, passkey: NewPasskey): Promise<Passkey> {
    await this.write(
      passkey.user,
      () =>
        this.state.transaction(async (c) => {
          // The link is used up in the database, in the passkey's transaction: of two instances racing
          // with one link, the second waits for the first's row lock and then finds it used.
          const now = Date.now();
          const used = await c.query(
            'UPDATE stepgate.enrollments SET used_at = $1 WHERE token_hash = $2 AND user_name = $3 AND used_at IS NULL AND expires_at > $1',
            [now, hashToken(token), passkey.user],
          );
          if (used.rowCount !== 1) throw enrollmentUnusable();
          await c.query(INSERT_PASSKEY, passkeyRow(passkey, now));
        }),
      passkeyExists,
    );
    return this.storedPasskey(passkey.id);
  }

  // ───────────────────────────── internals ─────────────────────────────

  /**
   * Runs a change of `user`'s rows, then reloads that user here. A constraint the change breaks becomes
   * its error: a missing user (foreign key), or `unique()` (a duplicate).
   */
  private async write<T>(user: string, change: () => Promise<T>, unique?: (user: string) => Error): Promise<T> {
    let result: T;
    try {
      result = await change();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === FOREIGN_KEY_VIOLATION) throw noUser(user);
      if (code === UNIQUE_VIOLATION && unique) throw unique(user);
      throw err;
    }
    await this.reload(user);
    return result;
  }

  /** The user just written, from the copy (gone again only when someone removed it meanwhile). */
  private present(name: string): User {
    const user = this.getUser(name);
    if (!user) throw noUser(name);
    return user;
  }

  private storedPasskey(id: string): Passkey {
    const p = this.passkey(id);
    if (!p) throw new Error('the passkey was removed while it was being stored');
    return p;
  }

  /** Loads `user`'s rows (null: everyone's) after every load begun earlier, and applies them. */
  private reload(user: string | null): Promise<void> {
    const waiting = this.queued.get(user) ?? (user === null ? undefined : this.queued.get(null));
    if (waiting) return waiting;
    const run = this.chain.then(async () => {
      this.queued.delete(user);
      if (this.closed) return;
      let loaded: Map<string, Entry>;
      try {
        loaded = await this.load(user);
      } catch (err) {
        this.log.error('identity.reload_failed', { user, error: (err as Error).message, note: user === null ? 'retried when the state database is back' : 'this user cannot log in or approve here until the reload succeeds' });
        if (user !== null) {
          this.put(user, undefined);
          this.retry(user);
        }
        throw err;
      }
      if (this.closed) return;
      if (user === null) {
        for (const name of [...this.entries.keys()]) this.put(name, undefined);
        for (const [name, e] of loaded) this.put(name, e);
      } else {
        this.put(user, loaded.get(user));
      }
      for (const fn of this.changeListeners) fn(user);
    });
    this.queued.set(user, run);
    this.chain = run.catch(() => {});
    return run;
  }

  private retry(user: string): void {
    if (this.closed || this.retries.has(user)) return;
    const timer = setTimeout(() => {
      this.retries.delete(user);
      void this.reload(user).catch(() => {});
    }, RETRY_MS);
    timer.unref();
    this.retries.set(user, timer);
  }

  /** Replaces (or, `entry` undefined, removes) one user in the copy and its indexes. */
  private put(name: string, entry: Entry | undefined): void {
    const old = this.entries.get(name);
    if (old) {
      // An index entry another user has taken since (a moved subject) is theirs now: left alone.
      if (old.user.ssoSubject !== null && this.bySubject.get(old.user.ssoSubject) === name) this.bySubject.delete(old.user.ssoSubject);
      for (const p of old.passkeys) if (this.passkeyById.get(p.id)?.user === name) this.passkeyById.delete(p.id);
      for (const e of old.enrollments) if (this.enrollmentByHash.get(e.hash) === name) this.enrollmentByHash.delete(e.hash);
      this.entries.delete(name);
    }
    if (!entry) return;
    this.entries.set(name, entry);
    if (entry.user.ssoSubject !== null) this.bySubject.set(entry.user.ssoSubject, name);
    for (const p of entry.passkeys) this.passkeyById.set(p.id, p);
    for (const e of entry.enrollments) this.enrollmentByHash.set(e.hash, name);
  }

  /** One user's rows (null: everyone's) as of one snapshot. */
  private load(only: string | null): Promise<Map<string, Entry>> {
    return this.state.transaction(async (c) => {
      await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const rows = async <R extends pg.QueryResultRow>(sql: string): Promise<R[]> => (await c.query<R>(sql, [only])).rows;
      const entries = new Map<string, Entry>();
      for (const r of await rows<UserRow>(`SELECT * FROM stepgate.users WHERE ${OF('name')}`)) {
        entries.set(r.name, { user: toUser(r), handle: null, passkeys: [], totp: null, recoveryLeft: 0, credentials: [], enrollments: [] });
      }
      // One snapshot and foreign keys: every row below belongs to a user loaded above.
      const of = (name: string): Entry => entries.get(name)!;
      for (const r of await rows<{ user_name: string; handle: Buffer }>(`SELECT user_name, handle FROM stepgate.webauthn_handles WHERE ${OF('user_name')}`)) of(r.user_name).handle = r.handle;
      for (const r of await rows<PasskeyRow>(`SELECT * FROM stepgate.passkeys WHERE ${OF('user_name')} ORDER BY created_at, id`)) of(r.user_name).passkeys.push(toPasskey(r));
      for (const r of await rows<{ user_name: string; secret: string; last_step: Millis }>(`SELECT user_name, secret, last_step FROM stepgate.totp WHERE ${OF('user_name')}`)) {
        of(r.user_name).totp = { secret: r.secret, lastStep: Number(r.last_step) };
      }
      for (const r of await rows<{ user_name: string; n: number }>(`SELECT user_name, count(*)::int AS n FROM stepgate.recovery_codes WHERE used_at IS NULL AND ${OF('user_name')} GROUP BY user_name`)) {
        of(r.user_name).recoveryLeft = r.n;
      }
      for (const r of await rows<CredentialRow>(`SELECT * FROM stepgate.credentials WHERE revoked_at IS NULL AND ${OF('user_name')} ORDER BY created_at DESC, id`)) {
        of(r.user_name).credentials.push(toCredential(r));
      }
      for (const r of await rows<{ user_name: string; token_hash: Buffer; expires_at: Millis }>(`SELECT user_name, token_hash, expires_at FROM stepgate.enrollments WHERE used_at IS NULL AND ${OF('user_name')}`)) {
        of(r.user_name).enrollments.push({ hash: r.token_hash.toString('hex'), expiresAt: Number(r.expires_at) });
      }
      for (const e of entries.values()) {
        Object.freeze(e.passkeys);
        Object.freeze(e.credentials);
      }
      return entries;
    });
  }
}

/** Whether a statement changed a row. */
const changed = (r: pg.QueryResult): boolean => (r.rowCount ?? 0) > 0;

/** Inside a transaction: the user's recovery codes become `hashes`. */
async function replaceRecoveryCodes(c: pg.PoolClient, user: string, hashes: Buffer[]): Promise<void> {
  await c.query('DELETE FROM stepgate.recovery_codes WHERE user_name = $1', [user]);
  await c.query('INSERT INTO stepgate.recovery_codes (user_name, code_hash) SELECT $1, unnest($2::bytea[]) ON CONFLICT DO NOTHING', [user, hashes]);
}
