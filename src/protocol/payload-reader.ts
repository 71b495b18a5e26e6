/**
 * Reads the fields of one message payload. Every read is bounds-checked: a malformed message raises
 * ProtocolViolation (SQLSTATE 08P01), which the session turns into a FATAL error and a clean close,
 * as PostgreSQL does ("invalid message format").
 */
export class ProtocolViolation extends Error {
  readonly sqlstate = '08P01';
}

export class PayloadReader {
  constructor(
    private readonly buf: Buffer,
    public pos: number,
    private readonly end: number,
  ) {}

  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  byte(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  /** A NUL-terminated string's raw bytes (without the NUL). */
  cstringBytes(): Buffer {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul === -1 || nul >= this.end) throw new ProtocolViolation('invalid string in message');
    const bytes = this.buf.subarray(this.pos, nul);
    this.pos = nul + 1;
    return bytes;
  }

  /**
   * A NUL-terminated name (statement, portal, parameter). Names are compared byte for byte, so they are
   * read as latin1: one char per byte, whatever the client encoding.
   */
  name(): string {
    return this.cstringBytes().toString('latin1');
  }

  /** A length-prefixed value (-1 = NULL), as in Bind and FunctionCall. */
  value(): Buffer | null {
    const length = this.int32();
    if (length === -1) return null;
    if (length < 0) throw new ProtocolViolation(`invalid value length ${length}`);
    this.need(length);
    const v = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return v;
  }

  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** PostgreSQL rejects trailing bytes after a message's last field (pq_getmsgend). */
  expectEnd(): void {
    if (this.pos !== this.end) throw new ProtocolViolation('invalid message format');
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new ProtocolViolation('invalid message format');
  }
}
