/**
 * Classifying a 4 MB text through the worker keeps the event loop responsive (the same text classified in
 * this thread would stall it for seconds).
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import t from 'tap';
import { classify } from '../../src/sql/classify.js';
import { OffThreadClassifier } from '../../src/sql/offload.js';
import { initParser } from '../../src/sql/parser.js';
import type { ClassifyContext } from '../../src/sql/types.js';

// Megabytes of SQL to parse: on a loaded machine this file may need more than the default 120 s.
t.setTimeout(300_000);

await initParser();

const sessionContext = (): ClassifyContext => ({ standardConformingStrings: true, preparedStatement: () => undefined, functionVolatility: () => 'read', shadowedBuiltin: () => false });

t.test('classifying a 4 MB text keeps the event loop responsive', async (t) => {
  const worker = new OffThreadClassifier();
  t.teardown(() => worker.close());
  const big = 'SELECT 1;'.repeat(Math.ceil((4 << 20) / 9));
  // What the same text costs in this thread, extrapolated from a part of it (the whole would stall ~10 s).
  const part = big.slice(0, 256 * 1024);
  const t0 = performance.now();
  classify(part, sessionContext());
  const inThreadMs = ((performance.now() - t0) * big.length) / part.length;

  const delay = monitorEventLoopDelay({ resolution: 1 });
  let longest = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  delay.enable();
  const started = performance.now();
  const result = await worker.classify(big, sessionContext());
  const elapsed = performance.now() - started;
  delay.disable();
  clearInterval(ticker);
  t.equal(result.statements.length, Math.ceil((4 << 20) / 9));
  t.same(result.statements[123_456], { ...classify('SELECT 1; SELECT 1', sessionContext()).statements[1], sql: 'SELECT 1' });
  const p99 = delay.percentile(99) / 1e6;
  const max = delay.max / 1e6;
  t.comment(
    `4 MB, ${result.statements.length} statements: ${(elapsed / 1000).toFixed(1)} s in the worker; event loop delay p50 ${(delay.percentile(50) / 1e6).toFixed(1)} ms, ` +
      `p99 ${p99.toFixed(1)} ms, max ${max.toFixed(1)} ms, longest gap between 1 ms ticks ${longest.toFixed(1)} ms ` +
      `(in this thread: one stall of about ${(inThreadMs / 1000).toFixed(1)} s)`,
  );
  // 50 ms: a blocked event loop shows the whole classification (seconds); this machine's own scheduling noise
  // under load reaches tens of milliseconds now and then, and p99 looks past the rare ones.
  t.ok(p99 < 50, `event loop delay p99 ${p99.toFixed(1)} ms < 50 ms`);
});
