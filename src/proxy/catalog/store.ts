/**
 * A coarse clock for expiry checks on the hot path (every cached classification re-checks its catalog
 * answers): Date.now() read at most every 250 ms, advanced by a timer that does not keep the process alive.
 */
let coarseNow = Date.now();
let ticking: NodeJS.Timeout | null = null;

export function clock(): number {
  if (ticking === null) {
    ticking = setInterval(() => (coarseNow = Date.now()), 250);
    ticking.unref();
    coarseNow = Date.now();
  }
  return coarseNow;
}

/**
 * A bounded map whose entries expire: what the catalog learnt, kept for `ttlMs`. Bounded by entry count and
 * by the approximate size of the answers (function bodies and view queries can be large); when full it
 * starts over, which only costs lookups.
 */
export class ExpiringStore<V> {
  private entries = new Map<string, { value: V; expires: number; size: number }>();
  private bytes = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
    private readonly maxBytes: number,
  ) {}

  /** The value, or undefined when unknown or expired. */
  get(key: string, now = clock()): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.expires < now) {
      this.entries.delete(key);
      this.bytes -= e.size;
      return undefined;
    }
    return e.value;
  }

  has(key: string, now = clock()): boolean {
    return this.get(key, now) !== undefined;
  }

  set(key: string, value: V, size: number, now = Date.now()): void {
    const old = this.entries.get(key);
    if (old !== undefined) {
      this.entries.delete(key);
      this.bytes -= old.size;
    }
    if (this.entries.size >= this.maxEntries || this.bytes + size > this.maxBytes) this.clear();
    this.entries.set(key, { value, expires: now + this.ttlMs, size });
    this.bytes += size;
  }

  clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.entries.size;
  }

  get approximateBytes(): number {
    return this.bytes;
  }
}
