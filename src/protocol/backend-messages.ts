/**
 * Builders for the messages stepgate itself sends to clients (ErrorResponse, ReadyForQuery, the
 * authentication exchange ...) and a reader for the error fields of ErrorResponse/NoticeResponse.
 */

/** Message type bytes a server sends (https://www.postgresql.org/docs/current/protocol-message-formats.html). */
export const enum ServerType {
  Authentication = 0x52, // R
  BackendKeyData = 0x4b, // K
  BindComplete = 0x32, // 2
  CloseComplete = 0x33, // 3
  CommandComplete = 0x43, // C
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyInResponse = 0x47, // G
  CopyOutResponse = 0x48, // H
  CopyBothResponse = 0x57, // W
  DataRow = 0x44, // D
  EmptyQueryResponse = 0x49, // I
  ErrorResponse = 0x45, // E
  FunctionCallResponse = 0x56, // V
  NegotiateProtocolVersion = 0x76, // v
  NoData = 0x6e, // n
  NoticeResponse = 0x4e, // N
  NotificationResponse = 0x41, // A
  ParameterDescription = 0x74, // t
  ParameterStatus = 0x53, // S
  ParseComplete = 0x31, // 1
  PortalSuspended = 0x73, // s
  ReadyForQuery = 0x5a, // Z
  RowDescription = 0x54, // T
}

/** ReadyForQuery's transaction status byte. */
export const enum TransactionStatus {
  Idle = 0x49, // I
  InBlock = 0x54, // T
  Failed = 0x45, // E
}

function message(type: string, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function int32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32BE(n, 0);
  return b;
}

function cstring(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';

/** The fields of an ErrorResponse or NoticeResponse, by their one-letter codes' meaning. */
export interface ErrorFields {
  severity: Severity;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  position?: number;
}

function fieldsBody(f: ErrorFields): Buffer {
  const parts: Buffer[] = [
    Buffer.from('S'),
    cstring(f.severity),
    Buffer.from('V'),
    cstring(f.severity),
    Buffer.from('C'),
    cstring(f.code),
    Buffer.from('M'),
    cstring(f.message),
  ];
  if (f.detail) parts.push(Buffer.from('D'), cstring(f.detail));
  if (f.hint) parts.push(Buffer.from('H'), cstring(f.hint));
  if (f.position !== undefined) parts.push(Buffer.from('P'), cstring(String(f.position)));
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

export function errorResponse(f: ErrorFields): Buffer {
  return message('E', fieldsBody(f));
}

export function noticeResponse(f: ErrorFields): Buffer {
  return message('N', fieldsBody(f));
}

/** Reads the fields of an ErrorResponse/NoticeResponse payload (buf[start, end) is the whole message). */
export function readErrorFields(buf: Buffer, start: number, end: number): Map<string, string> {
  const fields = new Map<string, string>();
  let pos = start + 5;
  while (pos < end && buf[pos] !== 0) {
    const code = String.fromCharCode(buf[pos]);
    const nul = buf.indexOf(0, pos + 1);
    if (nul === -1 || nul >= end) break;
    fields.set(code, buf.toString('utf8', pos + 1, nul));
    pos = nul + 1;
  }
  return fields;
}

export function readyForQuery(status: number): Buffer {
  return message('Z', Buffer.from([status]));
}

export function authenticationOk(): Buffer {
  return message('R', int32(0));
}

export function authenticationCleartextPassword(): Buffer {
  return message('R', int32(3));
}

export function authenticationSASL(mechanisms: string[]): Buffer {
  return message('R', Buffer.concat([int32(10), ...mechanisms.map(cstring), Buffer.from([0])]));
}

export function authenticationSASLContinue(data: Buffer): Buffer {
  return message('R', Buffer.concat([int32(11), data]));
}

export function authenticationSASLFinal(data: Buffer): Buffer {
  return message('R', Buffer.concat([int32(12), data]));
}

export function parameterStatus(name: string, value: string): Buffer {
  return message('S', Buffer.concat([cstring(name), cstring(value)]));
}

export function backendKeyData(processId: number, secretKey: Buffer): Buffer {
  return message('K', Buffer.concat([int32(processId), secretKey]));
}

/**
 * `newestVersion` is the whole protocol version number (major << 16 | minor), not just the minor number:
 * that is what PostgreSQL sends (PG_PROTOCOL_LATEST, 196608 for 3.0), and libpq 18 reads the field as a
 * full version, refusing anything below 3.0.
 */
export function negotiateProtocolVersion(newestVersion: number, unsupportedOptions: string[]): Buffer {
  return message(
    'v',
    Buffer.concat([int32(newestVersion), int32(unsupportedOptions.length), ...unsupportedOptions.map(cstring)]),
  );
}

/** Reads a CommandComplete tag (buf[start, end) is the whole message). */
export function readCommandTag(buf: Buffer, start: number, end: number): string {
  return buf.toString('utf8', start + 5, end - 1);
}

/**
 * Reads the columns of every DataRow in buf[start, end) (one message, or a run of them as the frame reader
 * delivers rows); text format, null for SQL NULL.
 */
export function readDataRows(buf: Buffer, start: number, end: number): (string | null)[][] {
  const rows: (string | null)[][] = [];
  for (let pos = start; pos + 5 <= end; ) {
    const messageEnd = pos + 1 + buf.readInt32BE(pos + 1);
    const count = buf.readInt16BE(pos + 5);
    const row: (string | null)[] = [];
    let p = pos + 7;
    for (let i = 0; i < count; i++) {
      const length = buf.readInt32BE(p);
      p += 4;
      if (length < 0) row.push(null);
      else {
        row.push(buf.toString('utf8', p, p + length));
        p += length;
      }
    }
    rows.push(row);
    pos = messageEnd;
  }
  return rows;
}
