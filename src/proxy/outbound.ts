/**
 * Bytes on their way to one socket. Consecutive slices of the same buffer (the messages of one chunk
 * that are forwarded unchanged) are joined into one slice, so they go out in one write without copying.
 * `blocked` tells the session to stop reading from the other side until this socket drains, so that no
 * result or COPY stream piles up in memory.
 */
import type { Socket } from 'node:net';

export class Outbound {
  private buf: Buffer | null = null;
  private start = 0;
  private end = 0;
  /** The socket's write buffer is full; cleared on 'drain'. */
  blocked = false;

  constructor(
    private readonly socket: Socket,
    /** Called when `blocked` changes. */
    private readonly onBlockedChange: () => void,
  ) {
    socket.on('drain', () => {
      this.blocked = false;
      onBlockedChange();
    });
  }

  /** Queues buf[start, end) (relayed bytes), joined to what is pending when it continues it. */
  queue(buf: Buffer, start: number, end: number): void {
    if (this.buf === buf && this.end === start) {
      this.end = end;
      return;
    }
    this.flush();
    this.buf = buf;
    this.start = start;
    this.end = end;
  }

  /** Writes what is queued. */
  flush(): void {
    const buf = this.buf;
    if (buf === null) return;
    this.buf = null;
    this.send(this.start === 0 && this.end === buf.length ? buf : buf.subarray(this.start, this.end));
  }

  /** Writes stepgate's own bytes, after what is queued. */
  write(bytes: Buffer): void {
    this.flush();
    this.send(bytes);
  }

  private send(bytes: Buffer): void {
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) return;
    if (!socket.write(bytes) && !this.blocked) {
      this.blocked = true;
      this.onBlockedChange();
    }
  }
}
