/** Where stepgate's own files are, wherever it is installed or run from (src/ or dist/src/). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The directory holding stepgate's package.json. */
export function packageRoot(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === 'stepgate') return (cached = dir);
      } catch {
        // Not ours or unreadable: keep walking up.
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the stepgate package root above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

/** The rules shipped with stepgate: `rules/` at the package root. */
export function shippedRulesDir(): string {
  return join(packageRoot(), 'rules');
}
