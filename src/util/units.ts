/**
 * Durations and sizes as people write them in YAML and on the command line: `90s`, `10m`, `1h30m`,
 * `1d`, `250ms`; `64MB`, `512kB`. Always with a unit, so `120` cannot mean ms or s.
 */

const DURATION = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/;

/** Milliseconds, or null when `text` is not a duration. `0s` parses as 0; callers decide whether 0 is allowed. */
export function parseDuration(text: string): number | null {
  const trimmed = text.trim();
  const match = DURATION.exec(trimmed);
  if (!match || trimmed === '') return null;
  const [, d, h, m, s, ms] = match;
  return Number(d ?? 0) * 86_400_000 + Number(h ?? 0) * 3_600_000 + Number(m ?? 0) * 60_000 + Number(s ?? 0) * 1000 + Number(ms ?? 0);
}

/** The shortest spelling of a duration: 5400000 -> `1h30m`. */
export function formatDuration(ms: number): string {
  if (ms <= 0) return '0s';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let rest = Math.round(ms / 1000);
  let text = '';
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    const count = Math.floor(rest / size);
    if (count > 0) text += `${count}${unit}`;
    rest -= count * size;
  }
  return text;
}

const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 };

/** Bytes, or null when `text` is not a size. */
export function parseSize(text: string): number | null {
  const m = /^(\d+)\s*(b|kb|mb|gb)?$/i.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * SIZE_UNITS[(m[2] ?? 'b').toLowerCase()]!;
}
