/**
 * Classification speed on the corpus (PostgreSQL's regression suite): uncached, cached by exact text, and
 * cached by shape (the same statements with other literal values). Prints statements per second and p50/p99
 * latency in µs, and compares with the targets (uncached p50 ≤ 50 µs, cached p50 ≤ 2 µs).
 *
 * Run: npm run build && npm run bench:classify
 */
import { ClassificationCache } from '../src/sql/cache.js';
import { classify, initParser } from '../src/sql/classify.js';
import { LITERAL_STRIDE, shapeKey } from '../src/sql/shape.js';
import type { ClassifyContext } from '../src/sql/types.js';
import { corpusStatements } from '../test/helpers/sql-corpus.js';

const UNCACHED_TARGET_US = 50;
const CACHED_TARGET_US = 2;

/** A session whose catalog lookups are done: every non-built-in function is known (as a read). */
const ctx: ClassifyContext = {
  standardConformingStrings: true,
  functionVolatility: () => 'read',
  preparedStatement: () => undefined,
};

interface Run {
  name: string;
  count: number;
  totalMs: number;
  p50: number;
  p99: number;
}

function measure(name: string, texts: string[], fn: (sql: string) => unknown): Run {
  const samples = new Float64Array(texts.length);
  const started = process.hrtime.bigint();
  for (let i = 0; i < texts.length; i++) {
    const t0 = process.hrtime.bigint();
    fn(texts[i]!);
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  const totalMs = Number(process.hrtime.bigint() - started) / 1e6;
  samples.sort();
  const at = (q: number) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0;
  return { name, count: texts.length, totalMs, p50: at(0.5), p99: at(0.99) };
}

let variantCounter = 0;

/**
 * The same text with every literal replaced by another value of the same kind, unique across calls (so that
 * only the shape can hit).
 */
function withOtherLiterals(sql: string, literals: number[]): string {
  const n = ++variantCounter;
  let out = '';
  let copied = 0;
  for (let i = 0; i < literals.length; i += LITERAL_STRIDE) {
    const start = literals[i]!;
    const end = literals[i + 1]!;
    const literal = sql.slice(start, end);
    const replacement = literal.startsWith("'") ? `'v${n}'` : /^[0-9]+$/.test(literal) ? String(n + 1000) : `${n}.5`;
    out += sql.slice(copied, start) + replacement;
    copied = end;
  }
  return out + sql.slice(copied);
}

function fmt(n: number, digits = 1): string {
  return n.toFixed(digits).padStart(9);
}

async function main(): Promise<void> {
  await initParser();
  const texts = corpusStatements().flatMap((f) => f.statements);

  // Warm the JIT on the whole corpus before measuring.
  for (let round = 0; round < 2; round++) for (const sql of texts) classify(sql, ctx);

  const runs: Run[] = [];
  runs.push(measure('uncached classify()', texts, (sql) => classify(sql, ctx)));

  const cache = new ClassificationCache({ maxEntries: texts.length * 2, maxShapes: texts.length * 2 });
  for (const sql of texts) cache.classify(sql, ctx);
  // Exact hits: the texts the cache now answers from its exact-text map (the others hit by shape).
  const exactTexts = texts.filter((sql) => {
    const before = cache.stats().exactHits;
    cache.classify(sql, ctx);
    return cache.stats().exactHits > before;
  });
  runs.push(measure('cached, exact text hits', exactTexts, (sql) => cache.classify(sql, ctx)));

  // Shape hits: statements whose result was stored by shape, with their literals changed.
  const variants: string[] = [];
  for (const sql of texts) {
    const literals: number[] = [];
    if (shapeKey(sql, literals) === null || literals.length === 0) continue;
    const result = cache.classify(sql, ctx);
    if (!result.shapeSafe) continue;
    // As the proxy gets it: a flat string decoded from the wire, not a concatenation.
    variants.push(Buffer.from(withOtherLiterals(sql, literals), 'utf8').toString('utf8'));
  }
  // Warm the shape path with other variants, so the measured lookups are first-time exact misses.
  for (const sql of texts) {
    const literals: number[] = [];
    if (shapeKey(sql, literals) !== null && literals.length > 0) cache.classify(withOtherLiterals(sql, literals), ctx);
  }
  const shapeBefore = cache.stats();
  runs.push(measure('cached, shape hits', variants, (sql) => cache.classify(sql, ctx)));
  const shapeAfter = cache.stats();

  console.log(`corpus: ${texts.length} statements`);
  console.log('                              count    stmts/s    p50 µs    p99 µs');
  for (const r of runs) {
    const perSecond = Math.round((r.count / r.totalMs) * 1000);
    console.log(`${r.name.padEnd(26)}${String(r.count).padStart(9)}${String(perSecond).padStart(11)}${fmt(r.p50, 2)}${fmt(r.p99, 2)}`);
  }
  console.log(
    `${exactTexts.length} corpus texts hit by exact text; ` +
      `${shapeAfter.shapeHits - shapeBefore.shapeHits}/${variants.length} texts with new literal values hit by shape ` +
      `(cache: ${shapeAfter.entries} texts, ${shapeAfter.shapes} shapes)`,
  );
  const [uncached, exact, shape] = runs as [Run, Run, Run];
  const verdict = (p50: number, target: number) => (p50 <= target ? 'meets' : 'MISSES');
  console.log(`target uncached p50 ≤ ${UNCACHED_TARGET_US} µs: ${verdict(uncached.p50, UNCACHED_TARGET_US)} (${uncached.p50.toFixed(2)} µs)`);
  console.log(`target cached p50 ≤ ${CACHED_TARGET_US} µs: exact ${verdict(exact.p50, CACHED_TARGET_US)} (${exact.p50.toFixed(2)} µs), shape ${verdict(shape.p50, CACHED_TARGET_US)} (${shape.p50.toFixed(2)} µs)`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
