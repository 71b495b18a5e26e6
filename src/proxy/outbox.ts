/**
 * Bytes on their way to one socket. Consecutive slices of the same buffer (the messages of one chunk
 * that are forwarded unchanged) are joined into one slice, so they go out in one write without copying.
 */
export class Outbox {
  private buf: Buffer | null = null;
  private start = 0;
  private end = 0;

  /** Queues buf[start, end). Returns what was pending when the new bytes do not continue it (write that first). */
  add(buf: Buffer, start: number, end: number): Buffer | null {
    if (this.buf === buf && this.end === start) {
      this.end = end;
      return null;
    }
    const pending = this.take();
    this.buf = buf;
    this.start = start;
    this.end = end;
    return pending;
  }

  /** The pending bytes, or null; the outbox is empty afterwards. */
  take(): Buffer | null {
    const buf = this.buf;
    if (buf === null) return null;
    this.buf = null;
    return this.start === 0 && this.end === buf.length ? buf : buf.subarray(this.start, this.end);
  }
}
