/**
 * Authenticating a client against stepgate's own users: SCRAM-SHA-256 with stored verifiers, or `trust`
 * (only allowed on loopback listeners). An unknown user gets a decoy exchange that fails exactly like a
 * wrong password, so names cannot be probed.
 */
import { createHmac } from 'node:crypto';
import type { Socket } from 'node:net';
import * as backend from '../protocol/backend-messages.js';
import { PayloadReader, ProtocolViolation } from '../protocol/payload-reader.js';
import {
  DEFAULT_ITERATIONS,
  parseVerifier,
  ScramError,
  ScramServerExchange,
  SCRAM_MECHANISM,
  type ScramVerifier,
} from '../protocol/scram.js';
import type { IdentityStore, User } from '../identity/store.js';
import type { HandshakeReader } from './handshake-reader.js';

/** Login refused; the caller answers with `28P01` (or `28000`) after the failure delay. */
export class AuthFailed extends Error {
  constructor(
    message: string,
    readonly sqlstate: string,
    /** Why, for the log only: the client always sees the same message. */
    readonly reason: string,
  ) {
    super(message);
  }
}

export interface ClientAuthOptions {
  method: 'scram-sha-256' | 'trust';
  store: IdentityStore;
}

const PASSWORD_MESSAGE = 0x70; // 'p'

function decoyVerifier(store: IdentityStore, user: string): ScramVerifier {
  // Stable per user name (a real user's salt does not change between attempts either).
  const secret = store.secret('scram-decoy');
  const salt = createHmac('sha256', secret).update(`salt:${user}`).digest().subarray(0, 16);
  const key = createHmac('sha256', secret).update(`key:${user}`).digest();
  return { iterations: DEFAULT_ITERATIONS, salt, storedKey: key, serverKey: key };
}

export async function authenticateClient(socket: Socket, reader: HandshakeReader, userName: string, options: ClientAuthOptions): Promise<User> {
  const failed = (reason: string): AuthFailed =>
    new AuthFailed(`password authentication failed for user "${userName}"`, '28P01', reason);
  const user = options.store.getUser(userName);

  if (options.method === 'trust') {
    // Even with trust, only stepgate's users may connect: step-up needs to know who they are.
    if (!user) throw new AuthFailed(`role "${userName}" does not exist`, '28000', 'unknown user');
    return user;
  }

  let verifier: ScramVerifier;
  let reason: string | null = null;
  if (!user) {
    verifier = decoyVerifier(options.store, userName);
    reason = 'unknown user';
  } else if (!user.verifier) {
    verifier = decoyVerifier(options.store, userName);
    reason = 'user has no password';
  } else {
    verifier = parseVerifier(user.verifier);
  }

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
  const exchange = new ScramServerExchange(verifier);
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
  if (serverFinal === null) throw failed(reason ?? 'wrong password');
  if (reason !== null || !user) throw failed(reason ?? 'unknown user');
  socket.write(backend.authenticationSASLFinal(Buffer.from(serverFinal)));
  return user;
}
