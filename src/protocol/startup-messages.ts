/**
 * The untyped messages of the startup phase: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
 * Each is an int32 length (counting itself), an int32 code, and a body.
 */
import { PayloadReader, ProtocolViolation } from './payload-reader.js';

export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;
export const PROTOCOL_3_0 = 3 << 16;

/** PostgreSQL's MAX_STARTUP_PACKET_LENGTH: anything longer is refused before it is read. */
export const MAX_STARTUP_LENGTH = 10000;

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: Buffer }
  | {
      kind: 'startup';
      major: number;
      minor: number;
      /** By name, the last value of each (as the server keeps user, database, options, replication). */
      params: Map<string, string>;
      /** Every parameter in packet order, repeats included (the server applies each setting in turn). */
      parameters: [string, string][];
      protocolOptions: string[];
    };

/**
 * Accumulates the bytes of one startup packet. Returns the packet and any bytes that followed it in the
 * same read, or null when more bytes are needed.
 */
export class StartupReader {
  private chunks: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): { packet: StartupPacket; rest: Buffer } | null {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    if (this.bytes < 4) return null;
    const buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.bytes);
    this.chunks = [buf];
    const length = buf.readInt32BE(0);
    if (length < 8 || length > MAX_STARTUP_LENGTH) throw new ProtocolViolation('invalid length of startup packet');
    if (this.bytes < length) return null;
    this.chunks = [];
    this.bytes = 0;
    return { packet: decodeStartupPacket(buf.subarray(0, length)), rest: buf.subarray(length) };
  }
}

export function decodeStartupPacket(packet: Buffer): StartupPacket {
  const r = new PayloadReader(packet, 4, packet.length);
  const code = r.int32();
  if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
    r.expectEnd();
    return { kind: code === SSL_REQUEST ? 'ssl' : 'gssenc' };
  }
  if (code === CANCEL_REQUEST) {
    const processId = r.int32();
    // Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
    const keyLength = r.remaining;
    if (keyLength < 4 || keyLength > 256) throw new ProtocolViolation('invalid length of cancel request packet');
    return { kind: 'cancel', processId, secretKey: Buffer.from(r.bytes(keyLength)) };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  const params = new Map<string, string>();
  const parameters: [string, string][] = [];
  const protocolOptions: string[] = [];
  if (major === 3) {
    for (;;) {
      const key = r.cstringBytes().toString('utf8');
      if (key === '') break;
      const value = r.cstringBytes().toString('utf8');
      // _pq_.* are protocol extensions, not server settings: stepgate supports none of them.
      if (key.startsWith('_pq_.')) protocolOptions.push(key);
      else {
        params.set(key, value);
        parameters.push([key, value]);
      }
    }
    r.expectEnd();
  }
  return { kind: 'startup', major, minor, params, parameters, protocolOptions };
}

/**
 * A StartupMessage for protocol 3.0 with exactly these parameters, in order (pg-protocol's serializer adds
 * its own client_encoding, which would override the client's).
 */
export function encodeStartup(params: Record<string, string> | readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of Array.isArray(params) ? params : Object.entries(params)) parts.push(Buffer.from(`${key}\0${value}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const head = Buffer.allocUnsafe(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(PROTOCOL_3_0, 4);
  return Buffer.concat([head, body]);
}
