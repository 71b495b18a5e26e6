/**
 * Every client gets its own random BackendKeyData, so a client never learns the server's keys and a
 * cancel cannot reach another client's backend. Keys are matched in constant time.
 */
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';

export interface Cancellable {
  /**
   * The client asked to cancel what its connection is running or waiting for. Resolves once the cancel
   * has been delivered (to the server, or to the held statement), never rejects.
   */
  cancel(): Promise<void>;
}

interface Entry {
  secret: Buffer;
  target: Cancellable;
}

export class CancelKeys {
  private readonly byPid = new Map<number, Entry>();

  /** Issues a process id (unique among live connections) and a 4-byte secret for protocol 3.0. */
  issue(target: Cancellable): { processId: number; secretKey: Buffer } {
    let processId: number;
    do processId = randomInt(1, 0x7fffffff);
    while (this.byPid.has(processId));
    const secretKey = randomBytes(4);
    this.byPid.set(processId, { secret: secretKey, target });
    return { processId, secretKey };
  }

  release(processId: number): void {
    this.byPid.delete(processId);
  }

  /** Finds the connection a CancelRequest names; null for unknown ids and wrong secrets alike. */
  find(processId: number, secretKey: Buffer): Cancellable | null {
    const entry = this.byPid.get(processId);
    // Compare against something of the right length even when the id is unknown, so timing tells nothing.
    const expected = entry?.secret ?? Buffer.alloc(4);
    const same = secretKey.length === expected.length && timingSafeEqual(secretKey, expected);
    return entry && same ? entry.target : null;
  }

  get size(): number {
    return this.byPid.size;
  }
}
