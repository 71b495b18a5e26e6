/**
 * The demo's TLS certificate: self-signed, for localhost, 127.0.0.1 and ::1, made on first run with
 * Node's crypto (an EC P-256 key; the X.509 structure is written out in DER here, since Node can read
 * certificates but not make them) and kept in the demo's data directory, so `psql "sslmode=require"`
 * works and `sslmode=verify-full sslrootcert=DATA/demo/server.crt` can check it.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

// ───────────────────────────── DER ─────────────────────────────

function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

const seq = (...items: Buffer[]): Buffer => tlv(0x30, ...items);
const set = (...items: Buffer[]): Buffer => tlv(0x31, ...items);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const bits = (b: Buffer, unused = 0): Buffer => tlv(0x03, Buffer.from([unused]), b);
const bool = (v: boolean): Buffer => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));
const explicit = (n: number, inner: Buffer): Buffer => tlv(0xa0 | n, inner);

function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return tlv(0x02, v[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v);
}

function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const out: number[] = [parts[0]! * 40 + parts[1]!];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

/** UTCTime (until 2049) as X.509 wants it: YYMMDDHHMMSSZ. */
function time(d: Date): Buffer {
  const s = d.toISOString();
  return tlv(0x17, Buffer.from(`${s.slice(2, 4)}${s.slice(5, 7)}${s.slice(8, 10)}${s.slice(11, 13)}${s.slice(14, 16)}${s.slice(17, 19)}Z`, 'latin1'));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
}

function ipBytes(ip: string): Buffer {
  if (ip.includes(':')) {
    // Only the forms used here (::1); expands "::".
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
    return Buffer.from(groups.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]));
  }
  return Buffer.from(ip.split('.').map(Number));
}

// ───────────────────────────── the certificate ─────────────────────────────

export interface SelfSigned {
  cert: string;
  key: string;
}

/** A self-signed certificate (PEM) and its key (PKCS#8 PEM) for these DNS names and IP addresses. */
export function makeSelfSigned(commonName: string, dnsNames: string[], ips: string[], days = 3650, now = new Date()): SelfSigned {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const name = seq(set(seq(oid('2.5.4.3'), utf8(commonName))));
  const notBefore = new Date(now.getTime() - 60 * 60_000);
  const notAfter = new Date(now.getTime() + days * 86_400_000);
  // The subject public key's bits (inside the SPKI's BIT STRING) identify it (RFC 5280, 4.2.1.2 method 1).
  const keyId = crypto.createHash('sha1').update(spki.subarray(spki.length - 65)).digest();
  const altNames = seq(...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'latin1'))), ...ips.map((ip) => tlv(0x87, ipBytes(ip))));
  const extensions = seq(
    extension('2.5.29.19', true, seq(bool(true))), // basicConstraints: CA (self-signed: it is its own root)
    extension('2.5.29.15', true, bits(Buffer.from([0x84]), 2)), // keyUsage: digitalSignature, keyCertSign
    extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'))), // extKeyUsage: serverAuth
    extension('2.5.29.17', false, altNames), // subjectAltName
    extension('2.5.29.14', false, octets(keyId)), // subjectKeyIdentifier
  );
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))), // v3
    integer(Buffer.concat([Buffer.from([0x01]), crypto.randomBytes(15)])),
    ecdsaWithSha256,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    explicit(3, extensions),
  );
  const signature = crypto.sign('sha256', tbs, privateKey); // DER-encoded ECDSA signature
  const der = seq(tbs, ecdsaWithSha256, bits(signature));
  const cert = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END CERTIFICATE-----\n`;
  // Read back what was written: a mistake in the encoding fails here, not in a client's handshake.
  const parsed = new crypto.X509Certificate(cert);
  if (!parsed.verify(publicKey)) throw new Error('the generated certificate does not verify with its own key');
  return { cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}

export const DEMO_CERT_FILE = 'server.crt';
export const DEMO_KEY_FILE = 'server.key';

/** DIR/server.crt and DIR/server.key, made on first use (localhost, 127.0.0.1, ::1); `created` when new. */
export function ensureDemoCertificate(dir: string): { certFile: string; keyFile: string; created: boolean } {
  const certFile = path.join(dir, DEMO_CERT_FILE);
  const keyFile = path.join(dir, DEMO_KEY_FILE);
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) return { certFile, keyFile, created: false };
  const { cert, key } = makeSelfSigned('stepgate demo (localhost)', ['localhost'], ['127.0.0.1', '::1']);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(keyFile, key, { mode: 0o600 });
  fs.writeFileSync(certFile, cert, { mode: 0o644 });
  return { certFile, keyFile, created: true };
}
