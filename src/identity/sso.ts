/**
 * Single sign-on with an OpenID Provider: the console's sign-in (authorization code flow with PKCE, state
 * and nonce, by `openid-client`) and tokens used as database passwords (verified with `jose` against the
 * issuer's JWKS: signature, issuer, audience, expiry, age).
 *
 * The provider's metadata is discovered on first use (and again after a failure, so stepgate starts
 * while the IdP is down). Its signing keys come from a remote JWKS (`jose`'s createRemoteJWKSet): cached,
 * and fetched again when a token names a key id the cache lacks (the IdP rotated its keys), at most once
 * per `jwksCooldownMs`.
 *
 * A token is never logged: failures carry a reason (`expired`, `audience`, `issuer`, `signature`, ...)
 * for the log line, and the client only ever hears the generic password failure.
 */
import * as oidc from 'openid-client';
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { SsoConfig } from '../config.js';
import type { Logger } from '../log.js';
import { validateUserName } from './store.js';

/** Who an SSO sign-in or token says the person is. */
export interface SsoIdentity {
  /** `issuer|sub`: what a stepgate user is linked by. */
  subject: string;
  /** The stepgate user name (from `username_claim`). */
  name: string;
  /** Groups from `groups_claim`; null when the claims carry none (the stored groups stay). */
  groups: string[] | null;
  email: string | null;
  /** When the IdP issued these claims (ms). */
  issuedAt: number;
}

/** A refused token or sign-in; `reason` is for the log (never the token). */
export class SsoRefused extends Error {
  constructor(
    readonly reason: string,
    message = reason,
  ) {
    super(message);
  }
}

/** A sign-in the browser was sent to the IdP for; kept server-side until the IdP sends it back. */
export interface PendingSignIn {
  state: string;
  nonce: string;
  codeVerifier: string;
  createdAt: number;
  /** Where the console goes after the sign-in (a path of the console). */
  returnTo: string;
  /** A fresh sign-in was demanded (prompt=login, max_age=0): before enrolling a factor. */
  fresh: boolean;
}

export interface SsoOptions {
  log: Logger;
  now?: () => number;
  /** How long the key cache waits before fetching the JWKS again for an unknown key id (default 30 s). */
  jwksCooldownMs?: number;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

export class SsoProvider {
  private configuration: Promise<oidc.Configuration> | null = null;
  private jwks: ReturnType<typeof createRemoteJWKSet> | null = null;
  private readonly now: () => number;

  constructor(
    readonly config: SsoConfig,
    private readonly options: SsoOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** http:// issuers are accepted only on loopback (tests, the demo). */
  private get insecure(): boolean {
    const u = new URL(this.config.issuer);
    return u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.host.replace(/:\d+$/, ''));
  }

  /** The discovered provider (cached; a failed discovery is tried again next time). */
  async discovered(): Promise<oidc.Configuration> {
    if (!this.configuration) {
      const auth = this.config.clientSecret ? oidc.ClientSecretBasic(this.config.clientSecret) : oidc.None();
      this.configuration = oidc
        .discovery(new URL(this.config.issuer), this.config.clientId, undefined, auth, this.insecure ? { execute: [oidc.allowInsecureRequests] } : undefined)
        .catch((err: Error) => {
          this.configuration = null;
          this.options.log.warn('sso.discovery_failed', { issuer: this.config.issuer, error: err.message });
          throw new SsoRefused('discovery', `the identity provider ${this.config.issuer} cannot be reached: ${err.message}`);
        });
    }
    return this.configuration;
  }

  // ───────────────────────────── console sign-in ─────────────────────────────

  async startSignIn(redirectUri: string, returnTo: string, fresh: boolean): Promise<{ url: string; pending: PendingSignIn }> {
    const config = await this.discovered();
    const codeVerifier = oidc.randomPKCECodeVerifier();
    const pending: PendingSignIn = { state: oidc.randomState(), nonce: oidc.randomNonce(), codeVerifier, createdAt: this.now(), returnTo, fresh };
    const params: Record<string, string> = {
      redirect_uri: redirectUri,
      scope: this.config.scopes.join(' '),
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state: pending.state,
      nonce: pending.nonce,
    };
    if (fresh) {
      params.prompt = 'login';
      params.max_age = '0';
    }
    return { url: oidc.buildAuthorizationUrl(config, params).href, pending };
  }

  /** Completes a sign-in from the URL the IdP redirected the browser to. */
  async finishSignIn(currentUrl: URL, pending: PendingSignIn): Promise<SsoIdentity & { authTime: number }> {
    const config = await this.discovered();
    let tokens;
    try {
      tokens = await oidc.authorizationCodeGrant(config, currentUrl, {
        pkceCodeVerifier: pending.codeVerifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
        idTokenExpected: true,
        ...(pending.fresh ? { maxAge: 0 } : {}),
      });
    } catch (err) {
      throw new SsoRefused('sign-in', `the sign-in did not complete: ${(err as Error).message}`);
    }
    let claims: Record<string, unknown> = { ...(tokens.claims() ?? {}) };
    // Many providers put profile, e-mail and groups claims in the userinfo response only.
    if (config.serverMetadata().userinfo_endpoint && tokens.access_token) {
      try {
        const info = await oidc.fetchUserInfo(config, tokens.access_token, String(claims.sub));
        claims = { ...info, ...claims }; // the ID token's own claims win
      } catch (err) {
        this.options.log.warn('sso.userinfo_failed', { error: (err as Error).message });
      }
    }
    const identity = this.identityOf(claims);
    const authTime = typeof claims.auth_time === 'number' ? claims.auth_time * 1000 : this.now();
    if (pending.fresh && this.now() - authTime > 5 * 60_000) throw new SsoRefused('stale', 'the identity provider did not ask you to sign in again');
    return { ...identity, authTime };
  }

  // ───────────────────────────── tokens as passwords ─────────────────────────────

  /** Looks like a JWT (three base64url parts): what is tried as a token, not as a password. */
  static looksLikeToken(text: string): boolean {
    return text.length > 40 && text.length < 8192 && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(text);
  }

  /**
   * Verifies an ID token (audience: the client id) or an access token whose audience is stepgate (one
   * of `audiences`): signature with the issuer's keys, issuer, audience, expiry, not before, and age.
   */
  async verifyToken(token: string): Promise<SsoIdentity> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw new SsoRefused('malformed token');
    }
    // A foreign issuer's token is refused before its key is looked for (no JWKS fetch for it).
    if (unverified.iss !== this.config.issuer) throw new SsoRefused(`token from a foreign issuer (${String(unverified.iss).slice(0, 200)})`);
    const config = await this.discovered();
    const jwksUri = config.serverMetadata().jwks_uri;
    if (!jwksUri) throw new SsoRefused('the identity provider publishes no jwks_uri');
    this.jwks ??= createRemoteJWKSet(new URL(jwksUri), { cooldownDuration: this.options.jwksCooldownMs ?? 30_000, timeoutDuration: 5000 });
    const audiences = [this.config.clientId, ...this.config.audiences];
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: this.config.issuer,
        audience: audiences,
        currentDate: new Date(this.now()),
        clockTolerance: 5,
        requiredClaims: ['exp', 'iat', 'sub'],
        ...(this.config.maxTokenAgeMs !== null ? { maxTokenAge: `${Math.round(this.config.maxTokenAgeMs / 1000)}s` } : {}),
      }));
    } catch (err) {
      throw new SsoRefused(tokenFailure(err));
    }
    return this.identityOf(payload as Record<string, unknown>);
  }

  // ───────────────────────────── claims ─────────────────────────────

  /** The person the claims name; refuses names stepgate cannot use and e-mail domains not allowed. */
  identityOf(claims: Record<string, unknown>): SsoIdentity {
    const sub = claims.sub;
    if (typeof sub !== 'string' || !sub) throw new SsoRefused('no subject in the claims');
    const raw = claims[this.config.usernameClaim];
    if (typeof raw !== 'string' || !raw) throw new SsoRefused(`the claim ${this.config.usernameClaim} is missing`, `the identity provider sent no ${this.config.usernameClaim} claim, which stepgate takes the user name from`);
    const name = raw.trim();
    const problem = validateUserName(name);
    if (problem) throw new SsoRefused(`bad user name in ${this.config.usernameClaim}: ${problem}`);
    const email = typeof claims.email === 'string' ? claims.email.toLowerCase() : null;
    if (this.config.allowedDomains.length > 0) {
      const domain = email?.split('@')[1] ?? null;
      if (!email || claims.email_verified === false || !domain || !this.config.allowedDomains.includes(domain)) {
        throw new SsoRefused(`e-mail domain not allowed (${domain ?? 'no verified e-mail'})`, `stepgate accepts accounts of ${this.config.allowedDomains.join(', ')} only`);
      }
    }
    let groups: string[] | null = null;
    if (this.config.groupsClaim) {
      const g = claims[this.config.groupsClaim];
      if (Array.isArray(g)) groups = g.filter((x): x is string => typeof x === 'string');
      else if (typeof g === 'string') groups = g.split(/[\s,]+/).filter(Boolean);
    }
    const iat = typeof claims.iat === 'number' ? claims.iat * 1000 : this.now();
    return { subject: `${this.config.issuer}|${sub}`, name, groups, email, issuedAt: iat };
  }
}

/** The log's reason for a token jose refused. */
function tokenFailure(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'token expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return 'token audience is not stepgate';
    if (err.claim === 'iss') return 'token from a foreign issuer';
    if (err.claim === 'iat') return 'token too old (max_token_age)';
    if (err.claim === 'nbf') return 'token not yet valid';
    return `token claim ${err.claim} refused: ${err.reason}`;
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad token signature';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'token signed with a key the issuer does not publish';
  if (err instanceof joseErrors.JOSEError) return `token refused: ${err.code}`;
  return `token check failed: ${(err as Error).message}`;
}
