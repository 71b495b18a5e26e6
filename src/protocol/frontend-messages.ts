/**
 * Decoders for the messages a client sends (pg-protocol only parses the server's side).
 * Each takes the whole raw message (type byte and length included) as buf[start, end).
 * See https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import { PayloadReader, ProtocolViolation } from './payload-reader.js';

/** Message type bytes sent by clients once the startup phase is over. */
export const enum ClientType {
  Bind = 0x42, // B
  Close = 0x43, // C
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyFail = 0x66, // f
  Describe = 0x44, // D
  Execute = 0x45, // E
  Flush = 0x48, // H
  FunctionCall = 0x46, // F
  Parse = 0x50, // P
  Password = 0x70, // p: PasswordMessage, SASLInitialResponse, SASLResponse
  Query = 0x51, // Q
  Sync = 0x53, // S
  Terminate = 0x58, // X
}

function payload(buf: Buffer, start: number, end: number): PayloadReader {
  return new PayloadReader(buf, start + 5, end);
}

/** The SQL text's bytes of a Query message. Like the server, anything after the terminating NUL is an error. */
export function readQuery(buf: Buffer, start: number, end: number): Buffer {
  const r = payload(buf, start, end);
  const sql = r.cstringBytes();
  r.expectEnd();
  return sql;
}

export interface ParseMessage {
  name: string;
  sql: Buffer;
  paramTypes: number[];
}

export function readParse(buf: Buffer, start: number, end: number): ParseMessage {
  const r = payload(buf, start, end);
  const name = r.name();
  const sql = r.cstringBytes();
  const n = r.int16();
  if (n < 0) throw new ProtocolViolation('invalid parameter count');
  const paramTypes: number[] = [];
  for (let i = 0; i < n; i++) paramTypes.push(r.int32() >>> 0);
  r.expectEnd();
  return { name, sql, paramTypes };
}

export interface BindMessage {
  portal: string;
  statement: string;
  paramFormats: number[];
  params: (Buffer | null)[];
  resultFormats: number[];
}

export function readBind(buf: Buffer, start: number, end: number): BindMessage {
  const r = payload(buf, start, end);
  const portal = r.name();
  const statement = r.name();
  const paramFormats = int16List(r);
  const nParams = r.int16();
  if (nParams < 0) throw new ProtocolViolation('invalid parameter count');
  const params: (Buffer | null)[] = [];
  for (let i = 0; i < nParams; i++) params.push(r.value());
  const resultFormats = int16List(r);
  r.expectEnd();
  return { portal, statement, paramFormats, params, resultFormats };
}

export interface TargetMessage {
  /** 'S' for a prepared statement, 'P' for a portal. */
  kind: 'S' | 'P';
  name: string;
}

/** Describe and Close share a layout. */
export function readTarget(buf: Buffer, start: number, end: number): TargetMessage {
  const r = payload(buf, start, end);
  const kind = r.byte();
  if (kind !== 0x53 && kind !== 0x50) throw new ProtocolViolation(`invalid DESCRIBE/CLOSE message subtype ${kind}`);
  const name = r.name();
  r.expectEnd();
  return { kind: kind === 0x53 ? 'S' : 'P', name };
}

export interface ExecuteMessage {
  portal: string;
  maxRows: number;
}

export function readExecute(buf: Buffer, start: number, end: number): ExecuteMessage {
  const r = payload(buf, start, end);
  const portal = r.name();
  const maxRows = r.int32();
  r.expectEnd();
  return { portal, maxRows };
}

export interface FunctionCallMessage {
  oid: number;
  args: (Buffer | null)[];
}

export function readFunctionCall(buf: Buffer, start: number, end: number): FunctionCallMessage {
  const r = payload(buf, start, end);
  const oid = r.int32() >>> 0;
  int16List(r);
  const n = r.int16();
  if (n < 0) throw new ProtocolViolation('invalid argument count');
  const args: (Buffer | null)[] = [];
  for (let i = 0; i < n; i++) args.push(r.value());
  r.int16();
  r.expectEnd();
  return { oid, args };
}

export function readCopyFail(buf: Buffer, start: number, end: number): string {
  const r = payload(buf, start, end);
  const message = r.cstringBytes().toString('utf8');
  r.expectEnd();
  return message;
}

/** An empty-payload message (Sync, Flush, Terminate, CopyDone) must have length 4. */
export function expectEmpty(buf: Buffer, start: number, end: number): void {
  if (end - start !== 5) throw new ProtocolViolation('invalid message format');
  void buf;
}

function int16List(r: PayloadReader): number[] {
  const n = r.int16();
  if (n < 0) throw new ProtocolViolation('invalid format code count');
  const list: number[] = [];
  for (let i = 0; i < n; i++) list.push(r.int16());
  return list;
}

// ───────────────────────────── builders (messages stepgate sends to the server itself) ─────────────────────────────

function framed(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

export function encodeQuery(sql: string): Buffer {
  return framed(ClientType.Query, cstr(sql));
}

/** Parse of a statement without declared parameter types. */
export function encodeParse(name: string, sql: string): Buffer {
  return framed(ClientType.Parse, Buffer.concat([cstr(name), cstr(sql), Buffer.from([0, 0])]));
}

/** Bind of a statement without parameters, text results. */
export function encodeBind(portal: string, statement: string): Buffer {
  return framed(ClientType.Bind, Buffer.concat([cstr(portal), cstr(statement), Buffer.from([0, 0, 0, 0, 0, 0])]));
}

export function encodeExecute(portal: string, maxRows = 0): Buffer {
  const body = Buffer.allocUnsafe(Buffer.byteLength(portal) + 5);
  const n = body.write(portal, 0, 'utf8');
  body[n] = 0;
  body.writeInt32BE(maxRows, n + 1);
  return framed(ClientType.Execute, body);
}

export function encodeClose(kind: 'S' | 'P', name: string): Buffer {
  return framed(ClientType.Close, Buffer.concat([Buffer.from(kind), cstr(name)]));
}

export const SYNC: Buffer = Buffer.from([ClientType.Sync, 0, 0, 0, 4]);
export const FLUSH: Buffer = Buffer.from([ClientType.Flush, 0, 0, 0, 4]);
export const TERMINATE: Buffer = Buffer.from([ClientType.Terminate, 0, 0, 0, 4]);
