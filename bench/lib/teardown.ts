/**
 * A benchmark's own `t.teardown`: the test helpers (PostgreSQL, stepgate, the browser) register their
 * cleanup with it, and everything registered is undone in reverse order when the run ends, pass or fail.
 */
export async function withTeardown<T>(run: (t: { teardown(fn: () => unknown): void }) => Promise<T>): Promise<T> {
  const cleanups: (() => unknown)[] = [];
  try {
    return await run({ teardown: (fn) => void cleanups.push(fn) });
  } finally {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch {
        /* keep cleaning up */
      }
    }
  }
}

/** Two decimals, for printing milliseconds. */
export function round2(n: number): number {
  return Math.round(n * 100) / 100;
}
