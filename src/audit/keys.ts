/**
 * The audit trail's signing key: an Ed25519 key pair in the data directory. The private key (PKCS#8 PEM,
 * mode 0600) signs checkpoints of the hash chain; the public key (SPKI PEM) is what auditors keep a copy
 * of (`stepgate audit pubkey`) to verify checkpoints later, also against someone who controls the machine.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { calculateJwkThumbprint, compactVerify, CompactSign, decodeProtectedHeader, exportJWK, importJWK, importPKCS8, importSPKI, type JWK } from 'jose';
import { CHECKPOINT_TYPE, type CheckpointPayload } from './format.js';

export const PRIVATE_KEY_FILE = 'audit-signing.key';
export const PUBLIC_KEY_FILE = 'audit-signing.pub';

type Key = Awaited<ReturnType<typeof importPKCS8>>;

export interface SigningKey {
  kid: string;
  jwk: JWK;
  privateKey: Key;
}

export interface PublicKey {
  kid: string;
  jwk: JWK;
  key: Key;
  /** Where it came from, for messages. */
  source: string;
}

/** Loads the signing key, creating it (and its public half) on first use. */
export async function loadOrCreateSigningKey(dataDir: string): Promise<{ key: SigningKey; created: boolean }> {
  const privateFile = path.join(dataDir, PRIVATE_KEY_FILE);
  const publicFile = path.join(dataDir, PUBLIC_KEY_FILE);
  let created = false;
  let pem: string;
  try {
    pem = fs.readFileSync(privateFile, 'utf8');
    const mode = fs.statSync(privateFile).mode & 0o777;
    if (mode & 0o077) fs.chmodSync(privateFile, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const pair = crypto.generateKeyPairSync('ed25519');
    pem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    try {
      fs.writeFileSync(privateFile, pem, { mode: 0o600, flag: 'wx' });
      created = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      pem = fs.readFileSync(privateFile, 'utf8'); // another process created it first
    }
  }
  const publicPem = crypto.createPublicKey(pem).export({ type: 'spki', format: 'pem' }) as string;
  if (!fs.existsSync(publicFile) || fs.readFileSync(publicFile, 'utf8') !== publicPem) fs.writeFileSync(publicFile, publicPem, { mode: 0o644 });
  const privateKey = await importPKCS8(pem, 'EdDSA');
  const jwk = await publicJwk(publicPem);
  return { key: { kid: await calculateJwkThumbprint(jwk), jwk, privateKey }, created };
}

async function publicJwk(spkiPem: string): Promise<JWK> {
  const jwk = await exportJWK(await importSPKI(spkiPem, 'EdDSA', { extractable: true }));
  return { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
}

/** A public key from a file: a JWK (JSON, or a JWKS with one key) or a PEM (SPKI, or a private key whose public half is taken). */
export async function readPublicKey(file: string): Promise<PublicKey> {
  const text = fs.readFileSync(file, 'utf8').trim();
  let jwk: JWK;
  if (text.startsWith('{')) {
    let parsed: JWK & { keys?: JWK[] };
    try {
      parsed = JSON.parse(text) as JWK & { keys?: JWK[] };
    } catch (err) {
      throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
    }
    const one = parsed.keys ? parsed.keys[0] : parsed;
    if (!one || one.kty !== 'OKP' || one.crv !== 'Ed25519' || typeof one.x !== 'string') {
      throw new Error(`${file}: not an Ed25519 public key (expected a JWK with "kty": "OKP", "crv": "Ed25519")`);
    }
    jwk = { kty: 'OKP', crv: 'Ed25519', x: one.x };
  } else if (text.includes('-----BEGIN')) {
    let spki: string;
    try {
      spki = crypto.createPublicKey(text).export({ type: 'spki', format: 'pem' }) as string;
    } catch (err) {
      throw new Error(`${file}: not a PEM public key: ${(err as Error).message}`);
    }
    if (crypto.createPublicKey(spki).asymmetricKeyType !== 'ed25519') throw new Error(`${file}: not an Ed25519 key`);
    jwk = await publicJwk(spki);
  } else {
    throw new Error(`${file}: expected a JWK (JSON) or a PEM public key`);
  }
  return publicKeyFromJwk(jwk, file);
}

/** A public key from its JWK (`source` says where it came from, for messages). */
export async function publicKeyFromJwk(jwk: JWK, source: string): Promise<PublicKey> {
  const own: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
  return { kid: await calculateJwkThumbprint(own), jwk: own, key: (await importJWK(own, 'EdDSA')) as Key, source };
}

/** The data directory's own public key. */
export function dataDirPublicKey(dataDir: string): Promise<PublicKey> {
  return readPublicKey(path.join(dataDir, PUBLIC_KEY_FILE));
}

export function publicKeyPem(jwk: JWK): string {
  return crypto.createPublicKey({ key: jwk as crypto.JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string;
}

export async function signCheckpoint(key: SigningKey, payload: CheckpointPayload): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader({ alg: 'EdDSA', typ: CHECKPOINT_TYPE, kid: key.kid })
    .sign(key.privateKey);
}

export type CheckpointCheck = { ok: true; payload: CheckpointPayload; kid: string | undefined } | { ok: false; problem: string; kid: string | undefined };

/** Checks a checkpoint's signature with `key`; returns its payload. */
export async function verifyCheckpointSignature(jws: string, key: PublicKey): Promise<CheckpointCheck> {
  let kid: string | undefined;
  try {
    kid = decodeProtectedHeader(jws).kid;
  } catch {
    return { ok: false, problem: 'not a JWS (the signature field is malformed)', kid };
  }
  try {
    const { payload, protectedHeader } = await compactVerify(jws, key.key, { algorithms: ['EdDSA'] });
    if (protectedHeader.typ !== CHECKPOINT_TYPE) return { ok: false, problem: `unexpected JWS type ${String(protectedHeader.typ)}`, kid };
    const parsed = JSON.parse(new TextDecoder().decode(payload)) as CheckpointPayload;
    if (parsed.typ !== CHECKPOINT_TYPE) return { ok: false, problem: 'the signed payload is not a stepgate checkpoint', kid };
    return { ok: true, payload: parsed, kid };
  } catch (err) {
    const reason = kid !== undefined && kid !== key.kid ? ` (signed with key ${kid}, not ${key.kid} from ${key.source})` : '';
    return { ok: false, problem: `the signature is not valid${reason}: ${(err as Error).message}`, kid };
  }
}
