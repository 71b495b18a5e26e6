/**
 * stepgate's people: users, their groups and SCRAM verifiers (never passwords), single sign-on links,
 * issued database credentials, TOTP secrets and recovery codes, WebAuthn handles, passkeys, enrollment
 * links, and the installation's secrets. This module is the contract; two stores implement it:
 *
 * - SqliteIdentityStore (sqlite-store.ts): DATA/identity.db, one instance's own file.
 * - PostgresIdentityStore (postgres-store.ts): the shared state database (`state:` in the config), so
 *   several instances agree on one truth about people.
 *
 * openIdentityStore (open.ts) picks one.
 *
 * Invariants every implementation keeps:
 * - Reads are synchronous (the statement path and the console read on every login and page).
 * - Every change is async and resolves only once the change is durable and visible to this store's own
 *   reads (read-your-writes); it rejects when it did not happen (callers fail closed).
 * - Single-use and monotonic operations (a TOTP step, a recovery code, a passkey's counter, an enrollment
 *   link, an issued credential's use, revocations) are decided by the database in one conditional
 *   statement, never by what a store read earlier: their boolean (or throw) is the only answer to act on.
 * - `secret(name)` is the same bytes on every instance sharing a store, from the first read on.
 */
import { createHash } from 'node:crypto';

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

/** A passkey as a registration produced it, before it is stored. */
export type NewPasskey = Omit<Passkey, 'createdAt' | 'lastUsedAt'>;

export interface Enrollment {
  /** The secret part of the link, shown once; only its hash is stored. */
  token: string;
  user: string;
  expiresAt: Date;
}

export const PASSKEY_NAME_MAX = 64;

/** How long an enrollment link stays valid. */
export const ENROLLMENT_TTL_MS = 24 * 60 * 60 * 1000;

/** Issued credentials a user holds at most (older ones are dropped when a new one is issued). */
export const CREDENTIALS_PER_USER = 20;

/**
 * The installation's random secrets (32 bytes each), all created when a store opens: a closed list, so
 * that reading one never writes (and, shared, never races another instance creating it).
 */
export const SECRET_NAMES = ['console-session-key', 'credential-salt', 'recovery-pepper', 'scram-decoy'] as const;
export type SecretName = (typeof SECRET_NAMES)[number];
export const SECRET_BYTES = 32;

export interface IdentityStore {
  // ───────────── reads (synchronous) ─────────────
  getUser(name: string): User | null;
  listUsers(): User[];
  userBySubject(subject: string): User | null;
  /** The salt every credential of `user` is derived with (see credentialSaltOf). */
  credentialSalt(user: string): Buffer;
  /** Credentials that still work (not expired, not revoked), newest first, with their verifiers. */
  activeCredentials(user: string, now?: number): (Credential & { verifier: string })[];
  totpSecret(user: string): { secret: string; lastStep: number } | null;
  recoveryCodesLeft(user: string): number;
  /** Users with at least one factor that can approve: a passkey, or (when `totp`) a TOTP. */
  usersWithFactors(totp: boolean): Set<string>;
  /** Users with at least one passkey. */
  usersWithPasskeys(): Set<string>;
  /** The user's WebAuthn user handle (what a discoverable credential returns as userHandle); null before ensureWebauthnHandle. */
  webauthnHandle(user: string): Buffer | null;
  passkeys(user: string): Passkey[];
  passkey(id: string): Passkey | null;
  passkeyCount(user: string): number;
  /** The user an enrollment token is for, while it is unused and unexpired; null otherwise. */
  enrollmentUser(token: string): string | null;
  secret(name: SecretName): Buffer;

  // ───────────── changes (async: durable and readable here when they resolve) ─────────────
  addUser(name: string, groups: string[], verifier: string | null): Promise<User>;
  /**
   * The user an SSO identity signs in as: the one linked to `subject`, else the user called `name` when it
   * is not linked to another identity yet (an administrator may create users first, with their groups),
   * else a new user. Groups are replaced by `groups` unless a newer sign-in already set them (`issuedAt`:
   * when the IdP issued the claims, ms). Rejects when `name` is linked to another identity.
   */
  linkSsoUser(subject: string, name: string, groups: string[], email: string | null, issuedAt: number): Promise<{ user: User; created: boolean; linked: boolean }>;
  setDisabled(name: string, disabled: boolean): Promise<void>;
  setVerifier(name: string, verifier: string): Promise<void>;
  setGroups(name: string, groups: string[]): Promise<void>;
  removeUser(name: string): Promise<boolean>;
  addCredential(user: string, verifier: string, label: string, ttlMs: number, now?: number): Promise<Credential>;
  revokeCredential(user: string, id: string, now?: number): Promise<boolean>;
  /** Records a login with an issued credential; false when it is revoked or expired by now (refuse the login). */
  credentialUsed(id: string, now?: number): Promise<boolean>;
  /** Stores a confirmed TOTP secret and fresh recovery codes (hashes), replacing any earlier ones. */
  setTotp(user: string, secret: string, confirmedStep: number, recoveryHashes: Buffer[]): Promise<void>;
  setRecoveryCodes(user: string, hashes: Buffer[]): Promise<void>;
  removeTotp(user: string): Promise<boolean>;
  /** Moves the last accepted time step forward; false when this step (or a later one) was used already (a replay). */
  useTotpStep(user: string, step: number): Promise<boolean>;
  /** Uses up one recovery code (by hash); false when it is unknown or used. */
  useRecoveryCode(user: string, hash: Buffer): Promise<boolean>;
  /** The user's WebAuthn handle, created (random, 32 bytes) on first use. */
  ensureWebauthnHandle(user: string): Promise<Buffer>;
  addPasskey(p: NewPasskey): Promise<Passkey>;
  /**
   * Records a verified use of a passkey. The counter only moves forward: false when the stored counter is
   * no longer `previousCounter` (another use was recorded meanwhile: a cloned authenticator or a replay
   * racing this one) or `newCounter` is not above it (0 to 0 is allowed: authenticators that do not count).
   */
  recordPasskeyUse(id: string, previousCounter: number, newCounter: number): Promise<boolean>;
  renamePasskey(user: string, id: string, name: string): Promise<boolean>;
  removePasskey(user: string, id: string): Promise<boolean>;
  /** A new one-time enrollment token for `user`; every older one of this user stops working. */
  issueEnrollment(user: string, ttlMs?: number): Promise<Enrollment>;
  /**
   * Uses up an enrollment token and stores the passkey it registered, atomically: of two registrations
   * racing with one token, exactly one succeeds. Rejects when the token is no longer valid.
   */
  enrollPasskey(token: string, passkey: NewPasskey): Promise<Passkey>;

  close(): void;
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

/** Groups as stored: validated (throws on the first bad one), without duplicates, sorted. */
export function storedGroups(groups: string[]): string[] {
  const problem = groups.map(validateGroupName).find((p) => p !== null);
  if (problem) throw new Error(problem);
  return [...new Set(groups)].sort();
}

/** Groups from an IdP's claims as stored: the ones stepgate cannot use are dropped, not refused. */
export function ssoGroups(groups: string[]): string[] {
  return [...new Set(groups.filter((g) => validateGroupName(g) === null))].sort();
}

/** Throws unless `name` may be a user's name. */
export function checkUserName(name: string): void {
  const problem = validateUserName(name);
  if (problem) throw new Error(problem);
}

/**
 * The salt every credential of a user is derived with: SCRAM names its salt before the client proves
 * anything, so all of a user's credentials share one (each password is random, so that costs nothing).
 */
export function credentialSaltOf(secret: Buffer, user: string): Buffer {
  return createHash('sha256').update(secret).update(user).digest().subarray(0, 16);
}

/** Enrollment tokens are kept as their SHA-256 only. */
export const hashToken = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

/** Whether `token` could be an enrollment token at all (checked before hashing input from the network). */
export const plausibleToken = (token: unknown): token is string => typeof token === 'string' && token.length > 0 && token.length <= 200;

export function cleanPasskeyName(name: unknown): string | null {
  if (typeof name !== 'string') return null;
  const clean = name.replace(/[\u0000-\u001f\u007f]/g, ' ').trim().replace(/\s+/g, ' ');
  if (!clean || clean.length > PASSKEY_NAME_MAX) return null;
  return clean;
}

export const noUser = (name: string): Error => new Error(`no user "${name}"`);
export const userExists = (name: string): Error => new Error(`user "${name}" already exists`);
export const passkeyExists = (): Error => new Error('this passkey is already registered');
export const enrollmentUnusable = (): Error => new Error('this enrollment link was already used or has expired');
