/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: the server side that authenticates clients
 * against stored verifiers, and the client side stepgate uses to log in to the real server.
 * Verifiers use PostgreSQL's format, so they can be compared with pg_authid.rolpassword:
 *   SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';
export const DEFAULT_ITERATIONS = 4096;

export class ScramError extends Error {}

const hmac = (key: Buffer, data: string | Buffer): Buffer => createHmac('sha256', key).update(data).digest();
const sha256 = (data: Buffer): Buffer => createHash('sha256').update(data).digest();

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] ^ b[i];
  return out;
}

/**
 * SASLprep (RFC 4013) as PostgreSQL applies it: normalise where the password is valid Unicode, and use the
 * raw bytes otherwise. ASCII passwords are unchanged.
 */
export function saslprep(password: string): string {
  if (/^[\x20-\x7e]*$/.test(password)) return password;
  const mapped = password
    .replace(/[\u00a0\u1680\u2000-\u200b\u202f\u205f\u3000]/g, ' ') // non-ASCII spaces → space
    .replace(/[\u00ad\u034f\u1806\u180b-\u180d\u200c\u200d\u2060\ufe00-\ufe0f\ufeff]/g, '') // mapped to nothing
    .normalize('NFKC');
  // Prohibited output (controls, private use, surrogates ...) → PostgreSQL falls back to the raw password.
  if (/[\u0000-\u001f\u007f-\u009f\ue000-\uf8ff\ufff9-\uffff]/.test(mapped)) return password;
  return mapped;
}

function saltedPassword(password: string, salt: Buffer, iterations: number): Buffer {
  return pbkdf2Sync(Buffer.from(saslprep(password), 'utf8'), salt, iterations, 32, 'sha256');
}

export interface ScramVerifier {
  iterations: number;
  salt: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

export function makeVerifier(password: string, iterations = DEFAULT_ITERATIONS, salt = randomBytes(16)): string {
  const salted = saltedPassword(password, salt, iterations);
  const storedKey = sha256(hmac(salted, 'Client Key'));
  const serverKey = hmac(salted, 'Server Key');
  return `${SCRAM_MECHANISM}$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

export function parseVerifier(text: string): ScramVerifier {
  const m = /^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  if (!m) throw new ScramError('not a SCRAM-SHA-256 verifier');
  return {
    iterations: Number(m[1]),
    salt: Buffer.from(m[2], 'base64'),
    storedKey: Buffer.from(m[3], 'base64'),
    serverKey: Buffer.from(m[4], 'base64'),
  };
}

/** Splits "a=1,b=2" into a map, refusing duplicates and malformed attributes. */
function attributes(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const part of text.split(',')) {
    if (part.length < 2 || part[1] !== '=') throw new ScramError(`malformed SCRAM attribute "${part.slice(0, 20)}"`);
    if (map.has(part[0])) throw new ScramError(`duplicate SCRAM attribute "${part[0]}"`);
    map.set(part[0], part.slice(2));
  }
  return map;
}

const PRINTABLE_NONCE = /^[\x21-\x2b\x2d-\x7e]+$/;

/**
 * One server-side SCRAM exchange. `verifier` may be a decoy (for unknown users) so that the exchange looks
 * the same and fails only at the end.
 */
export class ScramServerExchange {
  private clientFirstBare = '';
  private serverFirst = '';
  private gs2Header = '';
  private nonce = '';
  /** Which verifier the proof matched (0: `verifier`, 1...: `others`), after a successful finish(). */
  matched = -1;

  /**
   * `others`: further verifiers with the same salt and iteration count (a person's short-lived database
   * credentials): the proof may match any of them.
   */
  constructor(
    private readonly verifier: ScramVerifier,
    private readonly others: readonly ScramVerifier[] = [],
  ) {}

  /** Handles SASLInitialResponse data; returns server-first-message. */
  start(clientFirst: string): string {
    // gs2-header: "n,," (no channel binding) or "y,," (client could, server did not offer it).
    const m = /^([ny]),(a=[^,]*)?,(.*)$/.exec(clientFirst);
    if (!m) throw new ScramError('malformed SCRAM client-first-message (channel binding is not supported)');
    if (m[2]) throw new ScramError('SCRAM authorization identities are not supported');
    this.gs2Header = `${m[1]},,`;
    this.clientFirstBare = m[3];
    const attrs = attributes(this.clientFirstBare);
    const clientNonce = attrs.get('r');
    if (!clientNonce || !PRINTABLE_NONCE.test(clientNonce)) throw new ScramError('malformed SCRAM nonce');
    if (attrs.has('m')) throw new ScramError('SCRAM extensions are not supported');
    this.nonce = clientNonce + randomBytes(18).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.verifier.salt.toString('base64')},i=${this.verifier.iterations}`;
    return this.serverFirst;
  }

  /** Handles SASLResponse data; returns server-final-message, or null when the proof is wrong. */
  finish(clientFinal: string): string | null {
    const proofAt = clientFinal.lastIndexOf(',p=');
    if (proofAt === -1) throw new ScramError('malformed SCRAM client-final-message');
    const withoutProof = clientFinal.slice(0, proofAt);
    const attrs = attributes(withoutProof);
    if (attrs.get('c') !== Buffer.from(this.gs2Header).toString('base64')) {
      throw new ScramError('SCRAM channel binding check failed');
    }
    if (attrs.get('r') !== this.nonce) throw new ScramError('SCRAM nonce mismatch');
    const proof = Buffer.from(clientFinal.slice(proofAt + 3), 'base64');
    if (proof.length !== 32) throw new ScramError('malformed SCRAM proof');
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const all = [this.verifier, ...this.others];
    for (let i = 0; i < all.length; i++) {
      const v = all[i]!;
      const clientKey = xor(proof, hmac(v.storedKey, authMessage));
      if (!timingSafeEqual(sha256(clientKey), v.storedKey)) continue;
      this.matched = i;
      return `v=${hmac(v.serverKey, authMessage).toString('base64')}`;
    }
    return null;
  }
}

/** Client side of one SCRAM exchange, for logging in to the upstream server. */
export class ScramClientExchange {
  private readonly clientNonce = randomBytes(18).toString('base64');
  private clientFirstBare = '';
  private expectedServerSignature: Buffer | null = null;

  constructor(private readonly password: string) {}

  first(): string {
    this.clientFirstBare = `n=*,r=${this.clientNonce}`;
    return `n,,${this.clientFirstBare}`;
  }

  /** Takes server-first-message; returns client-final-message. */
  final(serverFirst: string): string {
    const attrs = attributes(serverFirst);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !nonce.startsWith(this.clientNonce) || nonce.length === this.clientNonce.length) {
      throw new ScramError('server sent an invalid SCRAM nonce');
    }
    if (!salt || !Number.isInteger(iterations) || iterations < 1) throw new ScramError('server sent invalid SCRAM parameters');
    const salted = saltedPassword(this.password, Buffer.from(salt, 'base64'), iterations);
    const clientKey = hmac(salted, 'Client Key');
    const withoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${serverFirst},${withoutProof}`;
    const proof = xor(clientKey, hmac(sha256(clientKey), authMessage));
    this.expectedServerSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return `${withoutProof},p=${proof.toString('base64')}`;
  }

  /** Checks server-final-message: the server must prove it knows the verifier too. */
  verify(serverFinal: string): void {
    const v = attributes(serverFinal).get('v');
    const expected = this.expectedServerSignature;
    if (!v || !expected) throw new ScramError('server sent an invalid SCRAM final message');
    const got = Buffer.from(v, 'base64');
    if (got.length !== expected.length || !timingSafeEqual(got, expected)) {
      throw new ScramError('server signature mismatch: the server could not prove it knows the password');
    }
  }
}
