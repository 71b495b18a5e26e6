/**
 * Authenticating a client against stepgate's own users, and choosing how:
 *
 * - `trust` (only allowed on loopback listeners): the user must exist and not be disabled.
 * - A user with a local password: SCRAM-SHA-256 with the stored verifier (stepgate never sees the
 *   password).
 * - With single sign-on configured, a user without a local password (an SSO user, or a name stepgate
 *   does not know):
 *   - over TLS, when `sso.token_login` is on: the cleartext password exchange
 *     (AuthenticationCleartextPassword). The password is a token from the IdP (an ID token, or an access
 *     token whose audience is stepgate), verified for issuer, audience, expiry, age and signature; or a
 *     database credential the console or `stepgate login` issued (checked against its SCRAM verifier).
 *   - without TLS: SCRAM-SHA-256 against the person's issued credentials (all of one person's credentials
 *     share a salt, so one exchange tests each); a person with none (or a name stepgate does not know)
 *     gets FATAL 28000 "needs an encrypted connection", so that nobody sends a token in the clear.
 * - Otherwise a decoy SCRAM exchange that fails exactly like a wrong password, so names cannot be probed.
 *
 * Every failure looks the same to the client (`28P01` password authentication failed); `reason` says why
 * in the log. A token or password never reaches a log line.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import * as backend from '../protocol/backend-messages.js';
import { PayloadReader, ProtocolViolation } from '../protocol/payload-reader.js';
import {
  DEFAULT_ITERATIONS,
  makeVerifier,
  parseVerifier,
  ScramError,
  ScramServerExchange,
  SCRAM_MECHANISM,
  type ScramVerifier,
} from '../protocol/scram.js';
import type { IdentityStore, User } from '../identity/store.js';
import { SsoProvider, SsoRefused } from '../identity/sso.js';
import type { HandshakeReader } from './handshake-reader.js';

/** Login refused; the caller answers with `28P01` (or `28000`) after the failure delay. */
export class AuthFailed extends Error {
  constructor(
    message: string,
    readonly sqlstate: string,
    /** Why, for the log only: the client always sees the same message. */
    readonly reason: string,
    readonly extra: { detail?: string; hint?: string } = {},
    /** The login named a user stepgate knows (failures of known users feed `recent_login_failures`). */
    readonly knownUser: string | null = null,
  ) {
    super(message);
  }
}

export interface ClientAuthOptions {
  method: 'scram-sha-256' | 'trust';
  store: IdentityStore;
  /** The client connected with TLS. */
  secure?: boolean;
  /** Single sign-on; null or absent: local users only. */
  sso?: SsoProvider | null;
}

/** Who logged in, and how. */
export interface Authenticated {
  user: User;
  via: 'trust' | 'password' | 'credential' | 'token';
  /** The issued credential used (via `credential`). */
  credentialId?: string;
}

const PASSWORD_MESSAGE = 0x70; // 'p'

function decoyVerifier(store: IdentityStore, user: string): ScramVerifier {
  // Stable per user name (a real user's salt does not change between attempts either).
  const secret = store.secret('scram-decoy');
  const salt = createHmac('sha256', secret).update(`salt:${user}`).digest().subarray(0, 16);
  const key = createHmac('sha256', secret).update(`key:${user}`).digest();
  return { iterations: DEFAULT_ITERATIONS, salt, storedKey: key, serverKey: key };
}

export async function authenticateClient(socket: Socket, reader: HandshakeReader, userName: string, options: ClientAuthOptions): Promise<Authenticated> {
  const user = options.store.getUser(userName);
  const failed = (reason: string): AuthFailed =>
    new AuthFailed(`password authentication failed for user "${userName}"`, '28P01', reason, {}, user?.name ?? null);

  if (options.method === 'trust') {
    // Even with trust, only stepgate's users may connect: step-up needs to know who they are.
    if (!user) throw new AuthFailed(`role "${userName}" does not exist`, '28000', 'unknown user');
    if (user.disabled) throw new AuthFailed(`role "${userName}" is not permitted to log in`, '28000', 'user disabled', {}, user.name);
    return { user, via: 'trust' };
  }

  const sso = options.sso ?? null;
  if (user?.verifier || !sso) {
    // A local password (or no SSO at all): SCRAM, with a decoy for unknown users and users without one.
    const verifier = user?.verifier ? parseVerifier(user.verifier) : decoyVerifier(options.store, userName);
    const ok = await scram(socket, reader, verifier, []);
    if (!user) throw failed('unknown user');
    if (!user.verifier) throw failed('user has no password');
    if (ok === null) throw failed('wrong password');
    if (user.disabled) throw failed('user disabled');
    return { user, via: 'password' };
  }

  if (options.secure && sso.config.tokenLogin) return cleartext(socket, reader, userName, user, options.store, sso, failed);

  // No TLS: issued credentials by SCRAM; a token cannot be sent this way.
  const credentials = user ? options.store.activeCredentials(user.name) : [];
  if (credentials.length === 0 && !sso.config.tokenLogin) {
    // Nothing this person could log in with here: fail like a wrong password.
    await scram(socket, reader, decoyVerifier(options.store, userName), []);
    throw failed(user ? 'no active issued credential' : 'unknown user');
  }
  if (credentials.length === 0) {
    throw new AuthFailed('stepgate: this login needs an encrypted connection', '28000', user ? 'no TLS for a token login' : 'unknown user, no TLS', {
      detail: 'Single sign-on users log in with a token from the identity provider, which stepgate accepts only over TLS, or with a database credential from the stepgate console.',
      hint: sso.config.tokenLogin ? 'Connect with sslmode=require, or get a credential with `stepgate login`.' : 'Get a database credential in the stepgate console (Connect) or with `stepgate login`.',
    }, user?.name ?? null);
  }
  const verifiers = credentials.map((c) => parseVerifier(c.verifier));
  const matched = await scram(socket, reader, verifiers[0]!, verifiers.slice(1));
  if (matched === null) throw failed('wrong password (no issued credential matched)');
  if (user!.disabled) throw failed('user disabled');
  const credential = credentials[matched]!;
  // The database decides, not this instance's copy: revoked (or expired) meanwhile, elsewhere, refuses.
  if (!(await options.store.credentialUsed(credential.id))) throw failed('issued credential revoked or expired');
  return { user: user!, via: 'credential', credentialId: credential.id };
}

/** One SCRAM-SHA-256 exchange; the index of the verifier the proof matched, or null. */
async function scram(socket: Socket, reader: HandshakeReader, verifier: ScramVerifier, others: ScramVerifier[]): Promise<number | null> {
  socket.write(backend.authenticationSASL([SCRAM_MECHANISM]));
  const initial = await reader.message();
  if (initial.type !== PASSWORD_MESSAGE) throw new ProtocolViolation(`expected SASL response, got message type 0x${initial.type.toString(16)}`);
  const r = new PayloadReader(initial.payload, 0, initial.payload.length);
  const mechanism = r.cstringBytes().toString('utf8');
  if (mechanism !== SCRAM_MECHANISM) {
    throw new AuthFailed('client selected an invalid SASL authentication mechanism', '08P01', `mechanism ${mechanism}`);
  }
  const data = r.value();
  r.expectEnd();
  const exchange = new ScramServerExchange(verifier, others);
  let serverFinal: string | null;
  try {
    socket.write(backend.authenticationSASLContinue(Buffer.from(exchange.start((data ?? Buffer.alloc(0)).toString('utf8')))));
    const response = await reader.message();
    if (response.type !== PASSWORD_MESSAGE) throw new ProtocolViolation('expected SASL response');
    serverFinal = exchange.finish(response.payload.toString('utf8'));
  } catch (err) {
    if (err instanceof ScramError) throw new AuthFailed(err.message, '08P01', err.message);
    throw err;
  }
  if (serverFinal === null) return null;
  socket.write(backend.authenticationSASLFinal(Buffer.from(serverFinal)));
  return exchange.matched;
}

/** The cleartext exchange (over TLS only): a token from the IdP, or an issued credential. */
async function cleartext(
  socket: Socket,
  reader: HandshakeReader,
  userName: string,
  user: User | null,
  store: IdentityStore,
  sso: SsoProvider,
  failed: (reason: string) => AuthFailed,
): Promise<Authenticated> {
  socket.write(backend.authenticationCleartextPassword());
  const message = await reader.message();
  if (message.type !== PASSWORD_MESSAGE) throw new ProtocolViolation(`expected a password message, got message type 0x${message.type.toString(16)}`);
  const nul = message.payload.indexOf(0);
  if (nul !== message.payload.length - 1) throw new ProtocolViolation('invalid password packet');
  const password = message.payload.subarray(0, nul).toString('utf8');

  if (SsoProvider.looksLikeToken(password)) {
    let identity;
    try {
      identity = await sso.verifyToken(password);
    } catch (err) {
      if (err instanceof SsoRefused) throw failed(err.reason);
      throw err;
    }
    // The token must be this user's: the person it names, linked to this user name (or becoming it).
    const linked = store.userBySubject(identity.subject);
    if (linked && linked.name !== userName) throw failed(`token is for user "${linked.name}"`);
    if (!linked && identity.name !== userName) throw failed(`token names "${identity.name}" (${sso.config.usernameClaim})`);
    if (!linked && user?.ssoSubject) throw failed('user is linked to another identity');
    let result;
    try {
      result = await store.linkSsoUser(identity.subject, userName, identity.groups ?? linked?.groups ?? user?.groups ?? [], identity.email, identity.groups === null ? 0 : identity.issuedAt);
    } catch (err) {
      throw failed(`cannot link the token's identity: ${(err as Error).message}`);
    }
    if (result.user.disabled) throw failed('user disabled');
    return { user: result.user, via: 'token' };
  }

  // An issued credential: its verifier checked against the password, as SCRAM would.
  if (!user) throw failed('unknown user');
  const credentials = store.activeCredentials(user.name);
  const salt = Buffer.from(store.credentialSalt(user.name));
  const derived = credentials.length > 0 ? makeVerifier(password, parseVerifier(credentials[0]!.verifier).iterations, salt) : '';
  const match = credentials.find((c) => sameText(c.verifier, derived));
  if (!match) throw failed(credentials.length ? 'wrong password (no issued credential matched)' : 'no token and no issued credential');
  if (user.disabled) throw failed('user disabled');
  // The database decides, not this instance's copy: revoked (or expired) meanwhile, elsewhere, refuses.
  if (!(await store.credentialUsed(match.id))) throw failed('issued credential revoked or expired');
  return { user, via: 'credential', credentialId: match.id };
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
