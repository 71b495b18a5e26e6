/**
 * Reads a client's messages one at a time during startup and authentication, where every step waits for
 * the client's answer. The relay takes over afterwards with whatever bytes are left (`detach`).
 */
import type { Socket } from 'node:net';
import { ProtocolViolation } from '../protocol/payload-reader.js';
import { MAX_STARTUP_LENGTH, StartupReader, type StartupPacket } from '../protocol/startup-messages.js';

/** The client went away or sent something the handshake cannot continue from. */
export class HandshakeClosed extends Error {}

/** Typed messages during authentication are small; PostgreSQL caps them similarly (PQ_SMALL_MESSAGE_LIMIT). */
const MAX_AUTH_MESSAGE = 10000;

export class HandshakeReader {
  private buffered: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private ended = false;
  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    if (this.buffered.length > MAX_STARTUP_LENGTH + MAX_AUTH_MESSAGE) {
      // Nobody needs this much before authenticating: refuse to hold it.
      this.buffered = Buffer.alloc(0);
      this.ended = true;
    }
    this.wake();
  };
  private readonly onEnd = (): void => {
    this.ended = true;
    this.wake();
  };

  constructor(private socket: Socket) {
    this.attach(socket);
  }

  /** Bytes received but not consumed yet. */
  get pending(): number {
    return this.buffered.length;
  }

  /** Switches to another socket (the TLS socket after SSLRequest). */
  replaceSocket(socket: Socket): void {
    this.detachListeners();
    this.socket = socket;
    this.attach(socket);
  }

  async startupPacket(): Promise<StartupPacket> {
    for (;;) {
      if (this.buffered.length > 0) {
        const reader = new StartupReader();
        const got = reader.push(this.buffered);
        if (got) {
          this.buffered = got.rest;
          return got.packet;
        }
      }
      await this.more();
    }
  }

  /** The next typed message: its type and payload (without type and length). */
  async message(): Promise<{ type: number; payload: Buffer }> {
    for (;;) {
      if (this.buffered.length >= 5) {
        const length = this.buffered.readInt32BE(1);
        if (length < 4 || length > MAX_AUTH_MESSAGE) throw new ProtocolViolation('invalid message length during authentication');
        if (this.buffered.length >= length + 1) {
          const type = this.buffered[0];
          const payload = this.buffered.subarray(5, length + 1);
          this.buffered = this.buffered.subarray(length + 1);
          return { type, payload };
        }
      }
      await this.more();
    }
  }

  /** Stops reading; returns bytes that arrived after the last message (the session relays them). */
  detach(): Buffer {
    this.detachListeners();
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }

  private attach(socket: Socket): void {
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onEnd);
  }

  private detachListeners(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
  }

  private more(): Promise<void> {
    if (this.ended) return Promise.reject(new HandshakeClosed('client closed the connection during startup'));
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}
