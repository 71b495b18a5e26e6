/**
 * Passkey ceremonies for the console (on @simplewebauthn/server): every ceremony's challenge is made and
 * remembered here, server-side, with what it is for, and can be used once.
 *
 * - Registration (enrollment link, or adding a passkey while signed in): user verification required,
 *   resident key preferred, no attestation.
 * - Sign-in: discoverable credentials (no allowCredentials); the credential names the user.
 * - Approval of a held statement: the challenge commits to what is approved, SHA-256 over the statement's
 *   digest, the challenge id and a random 32-byte nonce (src/stepup/evidence.ts), remembered with the
 *   challenge id, the digest, the nonce and the approving user. An assertion is only accepted for that
 *   challenge id, from that user's session, with that user's passkey, once; the assertion and what it
 *   needs to recompute its challenge go into the audit trail (signedAssertion).
 *
 * `take()` removes a ceremony before its assertion is checked: whatever the outcome, a challenge is never
 * accepted twice (replay), and a mismatched use (another statement, another user) burns it.
 *
 * Where ceremonies are kept is a CeremonyStore: this process's memory (LocalCeremonies), or with shared
 * state the state database (state/ceremonies.ts), so the options request and its answer may reach
 * different instances behind a load balancer; `take` is then one DELETE ... RETURNING, single use across
 * instances.
 */
import { randomBytes } from 'node:crypto';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
  type AuthenticationResponseJSON,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import type { IdentityStore, Passkey } from '../identity/store.js';
import { approvalChallenge, type SignedAssertion } from '../stepup/evidence.js';

/** Sent with an approval's options: what the page needs to recompute the challenge. */
export interface ApprovalOptions {
  challengeId: string;
  digest: string;
  nonce: string;
}

export type Purpose = 'enroll' | 'add-passkey' | 'signin' | 'reauth' | 'approve';

export interface Ceremony {
  purpose: Purpose;
  /** Who it is for (null for sign-in: the credential tells). */
  user: string | null;
  /** approve: the held statement's challenge id, the digest of what is approved, and the ceremony's nonce. */
  challengeId?: string;
  digest?: string;
  nonce?: string;
  /** enroll: the enrollment token it was started with. */
  token?: string;
  /** Console session that started it (null for enroll and sign-in). */
  sid?: string | null;
  expiresAt: number;
}

/** A ceremony taken to check a response: with the challenge the response must carry. */
export interface TakenCeremony extends Ceremony {
  challengeKey: string;
}

const CEREMONY_TTL_MS = 3 * 60_000;
/** COSE algorithms offered: EdDSA, ES256, RS256. */
const ALGORITHMS = [-8, -7, -257];

export class CeremonyError extends Error {
  constructor(
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

/**
 * Ceremonies in progress, by challenge. Bounded: at most MAX_ANONYMOUS without a session (sign-in,
 * enrollment; the oldest go first) and MAX_PER_USER per signed-in user.
 */
export interface CeremonyStore {
  put(challenge: string, ceremony: Ceremony): Promise<void>;
  /** Removes and returns it (null: unknown, used already, or expired). */
  take(challenge: string): Promise<Ceremony | null>;
}

export const CEREMONY_LIMITS = { anonymous: 5000, perUser: 50 } as const;

/** This process's ceremonies (one instance). */
export class LocalCeremonies implements CeremonyStore {
  private readonly anonymous = new Map<string, Ceremony>();
  private readonly authenticated = new Map<string, Ceremony>();

  async put(challenge: string, ceremony: Ceremony): Promise<void> {
    this.sweep();
    if (ceremony.sid) {
      const mine = [...this.authenticated].filter(([, c]) => c.user === ceremony.user);
      if (mine.length >= CEREMONY_LIMITS.perUser) this.authenticated.delete(mine[0]![0]);
      this.authenticated.set(challenge, ceremony);
    } else {
      if (this.anonymous.size >= CEREMONY_LIMITS.anonymous) this.anonymous.delete(this.anonymous.keys().next().value!);
      this.anonymous.set(challenge, ceremony);
    }
  }

  async take(challenge: string): Promise<Ceremony | null> {
    const ceremony = this.authenticated.get(challenge) ?? this.anonymous.get(challenge);
    this.authenticated.delete(challenge);
    this.anonymous.delete(challenge);
    return ceremony && ceremony.expiresAt >= Date.now() ? ceremony : null;
  }

  private sweep(): void {
    const now = Date.now();
    for (const map of [this.anonymous, this.authenticated]) for (const [k, c] of map) if (c.expiresAt < now) map.delete(k);
  }
}

export class Ceremonies {
  constructor(
    private readonly identity: IdentityStore,
    readonly origin: string,
    readonly rpId: string,
    private readonly store: CeremonyStore = new LocalCeremonies(),
  ) {}

  private remember(challenge: string, ceremony: Omit<Ceremony, 'expiresAt'>, ttlMs = CEREMONY_TTL_MS): Promise<void> {
    return this.store.put(challenge, { ...ceremony, expiresAt: Date.now() + ttlMs });
  }

  /** The ceremony a response answers (by the challenge in its clientDataJSON), removed: single use. */
  async take(response: unknown, purpose: Purpose): Promise<TakenCeremony> {
    const challenge = clientChallenge(response);
    const ceremony = await this.store.take(challenge);
    if (!ceremony) throw new CeremonyError('this passkey response does not answer a current request (used already, or expired): try again', 400);
    if (ceremony.purpose !== purpose) throw new CeremonyError('this passkey response was made for something else', 400);
    return { ...ceremony, challengeKey: challenge };
  }

  // ───────────────────────────── registration ─────────────────────────────

  async registrationOptions(user: string, ceremony: Omit<Ceremony, 'expiresAt' | 'user'>): Promise<PublicKeyCredentialCreationOptionsJSON> {
    const existing = this.identity.passkeys(user);
    const options = await generateRegistrationOptions({
      rpName: 'stepgate',
      rpID: this.rpId,
      userName: user,
      userDisplayName: user,
      userID: new Uint8Array(await this.identity.ensureWebauthnHandle(user)),
      challenge: new Uint8Array(randomBytes(32)),
      timeout: CEREMONY_TTL_MS - 10_000,
      attestationType: 'none',
      excludeCredentials: existing.map((p) => ({ id: p.id, transports: p.transports })),
      authenticatorSelection: { residentKey: 'preferred', requireResidentKey: false, userVerification: 'required' },
      supportedAlgorithmIDs: ALGORITHMS,
    });
    await this.remember(options.challenge, { ...ceremony, user });
    return options;
  }

  /** Verifies a registration answering `ceremony` and returns the passkey to store (not stored yet). */
  async verifyRegistration(ceremony: TakenCeremony, response: unknown, name: string): Promise<Omit<Passkey, 'createdAt' | 'lastUsedAt'>> {
    const user = ceremony.user!;
    let verified;
    try {
      verified = await verifyRegistrationResponse({
        response: response as RegistrationResponseJSON,
        expectedChallenge: ceremony.challengeKey,
        expectedOrigin: this.origin,
        expectedRPID: this.rpId,
        requireUserPresence: true,
        requireUserVerification: true,
        supportedAlgorithmIDs: ALGORITHMS,
      });
    } catch (err) {
      throw new CeremonyError(`the passkey could not be registered: ${(err as Error).message}`);
    }
    if (!verified.verified) throw new CeremonyError('the passkey could not be registered');
    const info = verified.registrationInfo;
    return {
      id: info.credential.id,
      user,
      publicKey: info.credential.publicKey,
      counter: info.credential.counter,
      transports: (info.credential.transports ?? []).map(String),
      name,
      deviceType: info.credentialDeviceType,
      backedUp: info.credentialBackedUp,
    };
  }

  // ───────────────────────────── assertions ─────────────────────────────

  /** Options for an assertion. `user` null: discoverable (sign-in). `bindTo`: an approval's challenge id. */
  async assertionOptions(ceremony: Omit<Ceremony, 'expiresAt'>, ttlMs = CEREMONY_TTL_MS): Promise<PublicKeyCredentialRequestOptionsJSON & { approval?: ApprovalOptions }> {
    let challenge: Uint8Array<ArrayBuffer> = new Uint8Array(randomBytes(32));
    let approval: ApprovalOptions | undefined;
    if (ceremony.purpose === 'approve') {
      const { digest, challengeId } = ceremony;
      if (!digest || !challengeId) throw new CeremonyError('nothing to approve', 500);
      const nonce = randomBytes(32).toString('base64url');
      challenge = new Uint8Array(approvalChallenge(digest, challengeId, nonce));
      ceremony = { ...ceremony, nonce };
      approval = { challengeId, digest, nonce };
    }
    const allow = ceremony.user ? this.identity.passkeys(ceremony.user).map((p) => ({ id: p.id, transports: p.transports })) : undefined;
    const options = await generateAuthenticationOptions({
      rpID: this.rpId,
      challenge,
      timeout: Math.max(5_000, ttlMs - 5_000),
      userVerification: 'required',
      ...(allow ? { allowCredentials: allow } : {}),
    });
    await this.remember(options.challenge, ceremony, ttlMs);
    // The page recomputes the challenge from these before it asks the authenticator (it signs what the card shows).
    return approval ? { ...options, approval } : options;
  }

  /** What the audit trail keeps of a verified approval assertion (it is checked again by `audit verify`). */
  signedAssertion(ceremony: TakenCeremony, response: unknown): SignedAssertion {
    const r = (response as AuthenticationResponseJSON).response;
    return {
      digest: ceremony.digest!,
      nonce: ceremony.nonce!,
      rp_id: this.rpId,
      authenticator_data: r.authenticatorData,
      client_data_json: r.clientDataJSON,
      signature: r.signature,
    };
  }

  /**
   * Verifies an assertion answering `ceremony`: the credential must be registered (to `ceremony.user` when
   * set), user verification is required, the signature counter must move forward. Returns the passkey.
   */
  async verifyAssertion(ceremony: TakenCeremony, response: unknown): Promise<Passkey> {
    const r = response as AuthenticationResponseJSON;
    const passkey = typeof r?.id === 'string' ? this.identity.passkey(r.id) : null;
    if (!passkey) throw new CeremonyError('this passkey is not registered with stepgate', 403);
    if (ceremony.user !== null && passkey.user !== ceremony.user) throw new CeremonyError('this passkey belongs to someone else', 403);
    const handle = r.response?.userHandle;
    if (handle) {
      const expected = this.identity.webauthnHandle(passkey.user)?.toString('base64url');
      if (handle !== expected) throw new CeremonyError('this passkey does not belong to the user it names', 403);
    }
    let verified;
    try {
      verified = await verifyAuthenticationResponse({
        response: r,
        expectedChallenge: ceremony.challengeKey,
        expectedOrigin: this.origin,
        expectedRPID: this.rpId,
        credential: { id: passkey.id, publicKey: passkey.publicKey as never, counter: passkey.counter, transports: passkey.transports as never },
        requireUserVerification: true,
      });
    } catch (err) {
      throw new CeremonyError(`the passkey check failed: ${(err as Error).message}`, 403);
    }
    if (!verified.verified || !verified.authenticationInfo.userVerified) throw new CeremonyError('the passkey check failed', 403);
    if (!(await this.identity.recordPasskeyUse(passkey.id, passkey.counter, verified.authenticationInfo.newCounter))) {
      throw new CeremonyError('this passkey was used by another request at the same time; try again', 409);
    }
    return { ...passkey, counter: verified.authenticationInfo.newCounter, lastUsedAt: new Date() };
  }
}

/** The base64url challenge inside a browser response's clientDataJSON. */
export function clientChallenge(response: unknown): string {
  const r = response as { response?: { clientDataJSON?: unknown } } | null;
  const data = r?.response?.clientDataJSON;
  if (typeof data !== 'string' || data.length > 8192) throw new CeremonyError('not a passkey response');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(data, 'base64url').toString('utf8'));
  } catch {
    throw new CeremonyError('not a passkey response');
  }
  const challenge = (parsed as { challenge?: unknown })?.challenge;
  if (typeof challenge !== 'string' || !/^[A-Za-z0-9_-]{16,200}$/.test(challenge)) throw new CeremonyError('not a passkey response');
  return challenge;
}
