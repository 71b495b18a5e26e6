/**
 * A small PostgreSQL v3 client over a plain socket, for tests that must send exact byte sequences and see
 * exactly what comes back: every server message is decoded into { type, fields } and kept in order.
 *
 *   const c = await RawClient.connect({ host, port });
 *   await c.login({ user, password, database });
 *   c.send(m.query('SELECT 1'));
 *   const replies = await c.untilReady();   // [{ type: 'T', ...}, { type: 'D', ...}, { type: 'C', ...}, { type: 'Z', ...}]
 */
import net from 'node:net';
import tls from 'node:tls';
import { createHash } from 'node:crypto';
import { ScramClientExchange, SCRAM_MECHANISM } from '../../src/protocol/scram.js';

// ───────────────────────────── encoding (client messages) ─────────────────────────────

function typed(type: string, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const cstr = (s: string): Buffer => Buffer.from(s + '\0', 'utf8');
const i16 = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const i32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};

/** Builders for client messages (whole messages, type byte and length included). */
export const m = {
  /** A raw typed message with any body (for malformed input). */
  typed,
  startup(params: Record<string, string>, major = 3, minor = 0): Buffer {
    const body = Buffer.concat([i32((major << 16) | minor), ...Object.entries(params).map(([k, v]) => cstr(`${k}\0${v}`)), Buffer.from([0])]);
    return Buffer.concat([i32(4 + body.length), body]);
  },
  sslRequest: (): Buffer => Buffer.concat([i32(8), i32(80877103)]),
  gssencRequest: (): Buffer => Buffer.concat([i32(8), i32(80877104)]),
  cancelRequest: (pid: number, key: Buffer): Buffer => Buffer.concat([i32(12 + key.length), i32(80877102), i32(pid), key]),
  query: (sql: string): Buffer => typed('Q', cstr(sql)),
  parse: (name: string, sql: string, types: number[] = []): Buffer => typed('P', cstr(name), cstr(sql), i16(types.length), ...types.map(i32)),
  bind(portal: string, statement: string, params: (string | null)[] = [], resultFormats: number[] = []): Buffer {
    const values = params.map((p) => (p === null ? i32(-1) : Buffer.concat([i32(Buffer.byteLength(p)), Buffer.from(p)])));
    return typed('B', cstr(portal), cstr(statement), i16(0), i16(params.length), ...values, i16(resultFormats.length), ...resultFormats.map(i16));
  },
  execute: (portal = '', maxRows = 0): Buffer => typed('E', cstr(portal), i32(maxRows)),
  describe: (kind: 'S' | 'P', name: string): Buffer => typed('D', Buffer.from(kind), cstr(name)),
  close: (kind: 'S' | 'P', name: string): Buffer => typed('C', Buffer.from(kind), cstr(name)),
  sync: (): Buffer => typed('S'),
  flush: (): Buffer => typed('H'),
  copyData: (data: string | Buffer): Buffer => typed('d', Buffer.isBuffer(data) ? data : Buffer.from(data)),
  copyDone: (): Buffer => typed('c'),
  copyFail: (message: string): Buffer => typed('f', cstr(message)),
  terminate: (): Buffer => typed('X'),
  password: (p: string): Buffer => typed('p', cstr(p)),
  saslInitial: (mechanism: string, data: string): Buffer => typed('p', cstr(mechanism), i32(Buffer.byteLength(data)), Buffer.from(data)),
  saslResponse: (data: string): Buffer => typed('p', Buffer.from(data)),
};

// ───────────────────────────── decoding (server messages) ─────────────────────────────

export interface Msg {
  /** The message type letter ('Z', 'E', 'T' ...). */
  type: string;
  [field: string]: unknown;
}

function readCstrings(buf: Buffer, pos: number, end: number): string[] {
  const out: string[] = [];
  while (pos < end) {
    const nul = buf.indexOf(0, pos);
    if (nul === -1 || nul >= end) break;
    out.push(buf.toString('utf8', pos, nul));
    pos = nul + 1;
  }
  return out;
}

/** Decodes one server message body (after type and length). */
export function decode(type: string, body: Buffer): Msg {
  switch (type) {
    case 'R': {
      const code = body.readInt32BE(0);
      if (code === 10) return { type, code, mechanisms: readCstrings(body, 4, body.length).filter((s) => s !== '') };
      if (code === 5) return { type, code, salt: body.subarray(4, 8) };
      return { type, code, data: body.subarray(4).toString('utf8') };
    }
    case 'S': {
      const [name, value] = readCstrings(body, 0, body.length);
      return { type, name, value };
    }
    case 'K':
      return { type, pid: body.readInt32BE(0), key: body.subarray(4).toString('hex') };
    case 'Z':
      return { type, status: String.fromCharCode(body[0]) };
    case 'E':
    case 'N': {
      const fields: Record<string, string> = {};
      let pos = 0;
      while (pos < body.length && body[pos] !== 0) {
        const code = String.fromCharCode(body[pos]);
        const nul = body.indexOf(0, pos + 1);
        fields[code] = body.toString('utf8', pos + 1, nul);
        pos = nul + 1;
      }
      return { type, severity: fields.V ?? fields.S, code: fields.C, message: fields.M, fields };
    }
    case 'T': {
      const n = body.readInt16BE(0);
      const columns: unknown[] = [];
      let pos = 2;
      for (let i = 0; i < n; i++) {
        const nul = body.indexOf(0, pos);
        const name = body.toString('utf8', pos, nul);
        pos = nul + 1;
        columns.push({
          name,
          table: body.readUInt32BE(pos),
          column: body.readInt16BE(pos + 4),
          typeOid: body.readUInt32BE(pos + 6),
          typeLen: body.readInt16BE(pos + 10),
          typeMod: body.readInt32BE(pos + 12),
          format: body.readInt16BE(pos + 16),
        });
        pos += 18;
      }
      return { type, columns };
    }
    case 'D': {
      const n = body.readInt16BE(0);
      const values: (string | null)[] = [];
      let pos = 2;
      for (let i = 0; i < n; i++) {
        const len = body.readInt32BE(pos);
        pos += 4;
        if (len === -1) values.push(null);
        else {
          values.push(body.toString('utf8', pos, pos + len));
          pos += len;
        }
      }
      return { type, values };
    }
    case 'C':
      return { type, tag: body.toString('utf8', 0, body.length - 1) };
    case 't': {
      const n = body.readInt16BE(0);
      const oids: number[] = [];
      for (let i = 0; i < n; i++) oids.push(body.readUInt32BE(2 + 4 * i));
      return { type, oids };
    }
    case 'G':
    case 'H':
    case 'W': {
      const n = body.readInt16BE(1);
      const formats: number[] = [];
      for (let i = 0; i < n; i++) formats.push(body.readInt16BE(3 + 2 * i));
      return { type, format: body[0], formats };
    }
    case 'd':
      return { type, data: body.toString('utf8') };
    case 'A': {
      const [channel, payload] = readCstrings(body, 4, body.length);
      return { type, pid: body.readInt32BE(0), channel, payload };
    }
    case 'v': {
      // PostgreSQL sends the whole version number here (3 << 16 | minor), not the minor number alone.
      const version = body.readInt32BE(0);
      const n = body.readInt32BE(4);
      return { type, version, options: readCstrings(body, 8, body.length).slice(0, n) };
    }
    case 'V': {
      const len = body.readInt32BE(0);
      return { type, value: len === -1 ? null : body.toString('utf8', 4, 4 + len) };
    }
    default:
      // '1' ParseComplete, '2' BindComplete, '3' CloseComplete, 'n' NoData, 'I' EmptyQueryResponse,
      // 's' PortalSuspended, 'c' CopyDone: no fields.
      return body.length === 0 ? { type } : { type, body: body.toString('hex') };
  }
}

// ───────────────────────────── the client ─────────────────────────────

export type Target = { host: string; port: number } | { path: string };

export interface LoginOptions {
  user: string;
  password?: string;
  database?: string;
  /** Extra startup parameters. */
  params?: Record<string, string>;
}

export class RawClient {
  /** Every message received so far and not yet taken by next(). */
  private queue: Msg[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  /** Single bytes expected (SSLRequest answer) before typed messages. */
  private rawBytesWanted = 0;
  private rawBytes: number[] = [];
  private ended = false;
  /** Set once the socket closed; the socket error, if any. */
  closeError: Error | null = null;
  readonly closed: Promise<void>;
  /** BackendKeyData received at login. */
  backendKey: { pid: number; key: Buffer } | null = null;
  /** ParameterStatus received at login. */
  readonly parameters = new Map<string, string>();

  private constructor(public socket: net.Socket) {
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.attach(socket);
  }

  static async connect(target: Target): Promise<RawClient> {
    const socket = 'path' in target ? net.connect({ path: target.path }) : net.connect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawClient(socket);
  }

  private attach(socket: net.Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => (this.closeError = err));
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.rawBytesWanted > 0 && this.buf.length > 0) {
      this.rawBytes.push(this.buf[0]);
      this.buf = this.buf.subarray(1);
      this.rawBytesWanted--;
    }
    while (this.buf.length >= 5) {
      const len = this.buf.readInt32BE(1);
      if (this.buf.length < len + 1) break;
      this.queue.push(decode(String.fromCharCode(this.buf[0]), Buffer.from(this.buf.subarray(5, len + 1))));
      this.buf = this.buf.subarray(len + 1);
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private async wait(timeoutMs: number, what: string): Promise<void> {
    if (this.ended) throw new ClosedError(`connection closed while waiting for ${what}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.waiter = resolve;
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
      });
    } finally {
      clearTimeout(timer);
    }
  }

  write(bytes: Buffer | Buffer[]): void {
    this.socket.write(Array.isArray(bytes) ? Buffer.concat(bytes) : bytes);
  }

  /** Alias of write, reads better in scripts. */
  send(...messages: Buffer[]): void {
    this.write(messages);
  }

  /** The next server message. Rejects with ClosedError when the connection ends first. */
  async next(timeoutMs = 10_000): Promise<Msg> {
    for (;;) {
      const msg = this.queue.shift();
      if (msg) return msg;
      await this.wait(timeoutMs, 'a message');
    }
  }

  /** Messages up to and including the first one for which `stop` is true. */
  async until(stop: (msg: Msg) => boolean, timeoutMs = 10_000): Promise<Msg[]> {
    const out: Msg[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const msg = await this.next(Math.max(1, deadline - Date.now()));
      out.push(msg);
      if (stop(msg)) return out;
    }
  }

  /** Messages up to and including the next ReadyForQuery. */
  untilReady(timeoutMs = 10_000): Promise<Msg[]> {
    return this.until((msg) => msg.type === 'Z', timeoutMs);
  }

  /** Every message until the server closes the connection (the close is not an error here). */
  async untilClosed(timeoutMs = 10_000): Promise<Msg[]> {
    const out: Msg[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        out.push(await this.next(Math.max(1, deadline - Date.now())));
      } catch (err) {
        if (err instanceof ClosedError) return out;
        throw err;
      }
    }
  }

  /** Messages already received, without waiting. */
  drain(): Msg[] {
    const out = this.queue;
    this.queue = [];
    return out;
  }

  /** Reads one untyped byte (the answer to SSLRequest / GSSENCRequest). */
  async byte(timeoutMs = 10_000): Promise<string> {
    this.rawBytesWanted++;
    if (this.buf.length > 0) this.onData(Buffer.alloc(0));
    const deadline = Date.now() + timeoutMs;
    while (this.rawBytes.length === 0) await this.wait(Math.max(1, deadline - Date.now()), 'the SSLRequest answer');
    return String.fromCharCode(this.rawBytes.shift() as number);
  }

  /** SSLRequest, then TLS on the same socket. Resolves false when the server answers 'N'. */
  async startTls(options: tls.ConnectionOptions = { rejectUnauthorized: false }): Promise<boolean> {
    this.write(m.sslRequest());
    const answer = await this.byte();
    if (answer !== 'S') return false;
    const plain = this.socket;
    plain.removeAllListeners('data');
    plain.removeAllListeners('close');
    const secure = tls.connect({ ...options, socket: plain });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return true;
  }

  /**
   * Sends a StartupMessage and answers whatever authentication the server asks for (SCRAM-SHA-256, md5,
   * cleartext, trust). Resolves with every message up to ReadyForQuery; rejects on ErrorResponse.
   */
  async login(options: LoginOptions): Promise<Msg[]> {
    this.write(m.startup({ user: options.user, database: options.database ?? 'postgres', ...options.params }));
    return this.authenticate(options);
  }

  /** The authentication exchange after a StartupMessage the caller sent itself. */
  async authenticate(options: { user: string; password?: string }): Promise<Msg[]> {
    const got: Msg[] = [];
    let scram: ScramClientExchange | null = null;
    for (;;) {
      const msg = await this.next();
      got.push(msg);
      if (msg.type === 'E') throw new ServerError(msg);
      if (msg.type === 'R') {
        const password = options.password ?? '';
        if (msg.code === 3) this.write(m.password(password));
        else if (msg.code === 5) {
          const inner = createHash('md5').update(password + options.user).digest('hex');
          const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), msg.salt as Buffer])).digest('hex');
          this.write(m.password('md5' + outer));
        } else if (msg.code === 10) {
          scram = new ScramClientExchange(password);
          this.write(m.saslInitial(SCRAM_MECHANISM, scram.first()));
        } else if (msg.code === 11) this.write(m.saslResponse((scram as ScramClientExchange).final(msg.data as string)));
        else if (msg.code === 12) (scram as ScramClientExchange).verify(msg.data as string);
      } else if (msg.type === 'S') this.parameters.set(msg.name as string, msg.value as string);
      else if (msg.type === 'K') this.backendKey = { pid: msg.pid as number, key: Buffer.from(msg.key as string, 'hex') };
      else if (msg.type === 'Z') return got;
    }
  }

  /** Simple query; resolves with the replies up to ReadyForQuery. */
  async query(sql: string): Promise<Msg[]> {
    this.write(m.query(sql));
    return this.untilReady();
  }

  end(): void {
    if (!this.socket.destroyed) this.socket.end(m.terminate());
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export class ClosedError extends Error {}

export class ServerError extends Error {
  constructor(readonly msg: Msg) {
    super(`${String(msg.severity)} ${String(msg.code)}: ${String(msg.message)}`);
  }
  get code(): string {
    return this.msg.code as string;
  }
}

/** Sends a CancelRequest on a fresh connection and resolves when the server closes it. */
export async function sendCancel(target: Target, pid: number, key: Buffer): Promise<void> {
  const c = await RawClient.connect(target);
  c.write(m.cancelRequest(pid, key));
  await c.closed;
}

/** Opens a connection and sends raw bytes; resolves with every message until the server closes. */
export async function exchange(target: Target, bytes: Buffer, timeoutMs = 10_000): Promise<{ replies: Msg[]; client: RawClient }> {
  const c = await RawClient.connect(target);
  c.write(bytes);
  const replies = await c.untilClosed(timeoutMs);
  return { replies, client: c };
}

/** The error fields of the ErrorResponses among `msgs`. */
export function errorsOf(msgs: Msg[]): { severity: string; code: string; message: string }[] {
  return msgs.filter((x) => x.type === 'E').map((x) => ({ severity: x.severity as string, code: x.code as string, message: x.message as string }));
}
