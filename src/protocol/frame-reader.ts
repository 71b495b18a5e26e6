/**
 * Splits a byte stream of typed PostgreSQL v3 messages (one type byte, then an int32 length that counts
 * itself) into frames, without copying where it can be avoided.
 *
 * Messages whose content the reader's owner needs ("buffered" types) are delivered whole, reassembled from
 * several chunks when they straddle chunk boundaries. Every other message may be delivered in parts as its
 * bytes arrive, so a 1 GB DataRow or CopyData never sits in memory whole: the owner forwards the parts.
 */

/**
 * A whole message: buf[start, end) holds type byte, length and payload. For the reader's `runs` types,
 * several consecutive whole messages of one type that arrived in one chunk come as one WHOLE frame.
 */
export const WHOLE = 0;
/** The first part of a message delivered in parts: buf[start, end) holds at least the 5-byte header. */
export const HEAD = 1;
/** A following part of a message delivered in parts (no header). `type` repeats the message type. */
export const PART = 2;
/** The last part of a message delivered in parts. */
export const TAIL = 3;
export type FrameKind = typeof WHOLE | typeof HEAD | typeof PART | typeof TAIL;

export type FrameHandler = (type: number, buf: Buffer, start: number, end: number, kind: FrameKind) => void;

export class FrameError extends Error {
  constructor(
    message: string,
    readonly sqlstate: string,
  ) {
    super(message);
  }
}

export interface FrameReaderOptions {
  /**
   * Largest accepted length (the int32 length field) of a buffered message, which is held in memory whole.
   * Larger ones raise FrameError 08P01.
   */
  maxLength: number;
  /**
   * Largest accepted length of a message delivered in parts (CopyData ...), which is never held whole.
   * Default: the protocol's limit (2^31 - 1).
   */
  maxStreamedLength?: number;
  /** Types that must be delivered whole (their content is read); all others may come in parts. */
  buffered: Uint8Array; // 256 entries, 1 = buffered
  /**
   * Types the owner only relays (DataRow, CopyData): consecutive whole messages of one such type are
   * delivered as one frame, one call for a run of rows instead of one per row.
   */
  runs?: Uint8Array; // 256 entries, 1 = may be joined
}

export function typeSet(types: string): Uint8Array {
  const set = new Uint8Array(256);
  for (let i = 0; i < types.length; i++) set[types.charCodeAt(i)] = 1;
  return set;
}

export class FrameReader {
  /** Chunks of an incomplete buffered message (or an incomplete header), joined once complete. */
  private carry: Buffer[] = [];
  private carryBytes = 0;
  /** Total bytes the carried message needs (type byte included); 0 while its header is incomplete. */
  private carryNeed = 0;
  /** Remaining bytes of a message being delivered in parts. */
  private streamRemaining = 0;
  private streamType = 0;

  constructor(private readonly options: FrameReaderOptions) {}

  /** True when no partial message is pending. */
  get idle(): boolean {
    return this.carryBytes === 0 && this.streamRemaining === 0;
  }

  /**
   * Feeds one chunk. Calls `onFrame` for each frame, in order. Throws FrameError on a malformed length;
   * the stream is then unusable. The reader keeps `chunk` while a message that began in it is incomplete,
   * and frames are views of it: the caller must not write into a chunk once it has been read.
   */
  read(chunk: Buffer, onFrame: FrameHandler): void {
    let buf = chunk;
    let pos = 0;

    if (this.streamRemaining > 0) {
      const n = Math.min(this.streamRemaining, buf.length);
      this.streamRemaining -= n;
      onFrame(this.streamType, buf, 0, n, this.streamRemaining === 0 ? TAIL : PART);
      pos = n;
    } else if (this.carryBytes > 0) {
      this.carry.push(chunk);
      this.carryBytes += chunk.length;
      if (this.carryNeed === 0 && this.carryBytes >= 5) {
        const head = Buffer.concat(this.carry, this.carryBytes);
        this.carry = [head];
        this.carryNeed = this.checkedLength(head, 0) + 1;
      }
      // Joining before a buffered message is complete would copy it over and over.
      const type = this.carry[0][0];
      if (this.carryNeed === 0 || (this.carryBytes < this.carryNeed && this.options.buffered[type] === 1)) return;
      buf = this.carry.length === 1 ? this.carry[0] : Buffer.concat(this.carry, this.carryBytes);
      this.carry = [];
      this.carryBytes = 0;
      this.carryNeed = 0;
    }

    const buffered = this.options.buffered;
    const runs = this.options.runs;
    while (pos < buf.length) {
      const available = buf.length - pos;
      if (available < 5) {
        this.keep(buf, pos, 0);
        return;
      }
      const type = buf[pos];
      const total = this.checkedLength(buf, pos) + 1;
      if (total <= available) {
        let end = pos + total;
        if (runs !== undefined && runs[type] === 1) {
          // Extend over the following whole messages of the same type.
          while (buf.length - end >= 5 && buf[end] === type) {
            const next = this.checkedLength(buf, end) + 1;
            if (next > buf.length - end) break;
            end += next;
          }
        }
        onFrame(type, buf, pos, end, WHOLE);
        pos = end;
        continue;
      }
      if (buffered[type] === 1) {
        this.keep(buf, pos, total);
        return;
      }
      // Deliver what we have now and the rest as it arrives.
      this.streamType = type;
      this.streamRemaining = total - available;
      onFrame(type, buf, pos, buf.length, HEAD);
      return;
    }
  }

  private checkedLength(buf: Buffer, pos: number): number {
    const type = buf[pos];
    const length = buf.readInt32BE(pos + 1);
    if (length < 4) {
      throw new FrameError(`invalid message length ${length} (message type 0x${type.toString(16)})`, '08P01');
    }
    // The limit protects memory, so it applies to what is held whole. Messages delivered in parts (a
    // CopyData of a large row: pg_restore sends one per row) are bound only by the protocol, as on the
    // server (1 GB for CopyData).
    const max = this.options.buffered[type] === 1 ? this.options.maxLength : (this.options.maxStreamedLength ?? 0x7fffffff);
    if (length > max) {
      throw new FrameError(`message of ${length} bytes (type 0x${type.toString(16)}) exceeds the limit of ${max} bytes`, '08P01');
    }
    return length;
  }

  private keep(buf: Buffer, pos: number, need: number): void {
    const rest = Buffer.from(buf.subarray(pos));
    this.carry = [rest];
    this.carryBytes = rest.length;
    this.carryNeed = need;
  }
}
