/**
 * The classification worker: large texts (and texts too deep for the main thread) are classified off the event
 * loop, with the same results as classify(), answering lookups through rounds; the event loop stays responsive.
 */
import t from 'tap';
import { ClassificationCache } from '../../src/sql/cache.js';
import { classify } from '../../src/sql/classify.js';
import { loadGrammar } from '../../src/sql/grammar.js';
import { classifyAsync, OffThreadClassifier } from '../../src/sql/offload.js';
import { initParser } from '../../src/sql/parser.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';

await initParser();

function sessionContext(asked: string[] = []): ClassifyContext {
  const prepared = new Map<string, StatementInfo>();
  prepared.set('p', classify('DELETE FROM t WHERE id = 1', { standardConformingStrings: true }).statements[0]!);
  return {
    standardConformingStrings: true,
    preparedStatement: (name) => (asked.push(`prepared ${name}`), prepared.get(name)),
    functionVolatility: (name) => (asked.push(`function ${name}`), name.startsWith('v') ? 'procedural' : name.startsWith('u') ? undefined : 'read'),
    shadowedBuiltin: (name, kind) => (asked.push(`shadowed ${kind} ${name}`), name === 'lower'),
  };
}

const TEXTS = [
  'SELECT 1',
  "SELECT lower(x), vfunc(1), rfunc(2), ufunc(3) FROM t WHERE a + 1 > 2; EXECUTE p; EXECUTE nope",
  "PREPARE r (int) AS UPDATE t SET a = $1; EXECUTE r (1); DEALLOCATE ALL; EXECUTE r (2)",
  "SELECT 'ünïcödé 😀' AS x; /* c */ DELETE FROM \"tä\"; -- end",
  'SELECT (1',
  "SET standard_conforming_strings = off; SELECT 'a\\b'",
  '',
  ' ; ',
];

t.test('results are those of classify(), statement texts included', async (t) => {
  const worker = new OffThreadClassifier({ threshold: 0 });
  t.teardown(() => worker.close());
  for (const sql of TEXTS) {
    const result = await worker.classify(sql, sessionContext());
    t.same(result, classify(sql, sessionContext()), JSON.stringify(sql));
  }
  // Many statements sharing few classifications; chunks of 7 statements.
  const many = new OffThreadClassifier({ threshold: 0, chunkStatements: 7, chunkKinds: 2 });
  t.teardown(() => many.close());
  const sql = Array.from({ length: 100 }, (_, i) => (i % 3 === 0 ? `SELECT ${i}` : i % 3 === 1 ? `DELETE FROM t${i % 5}` : `SELECT 'é${i}'`)).join(';\n');
  t.same(await many.classify(sql, sessionContext()), classify(sql, sessionContext()), '100 statements in chunks');
  t.equal(worker.stats().offloaded, TEXTS.length - 1, 'all but the empty text went to the worker');
});

t.test('lookups the worker lacked are asked here, round by round', async (t) => {
  const worker = new OffThreadClassifier({ threshold: 0 });
  t.teardown(() => worker.close());
  const asked: string[] = [];
  const sql = 'EXECUTE p; SELECT vfunc(1), lower(x)';
  const result = await worker.classify(sql, sessionContext(asked));
  t.same(result, classify(sql, sessionContext()));
  t.ok(asked.includes('prepared p') && asked.includes('function vfunc') && asked.includes('shadowed function lower'), asked.join(', '));
  t.ok(worker.stats().rounds >= 2, `${worker.stats().rounds} rounds`);
});

t.test('the result holds for the context as it is when it is returned', async (t) => {
  const worker = new OffThreadClassifier({ threshold: 0 });
  t.teardown(() => worker.close());
  const read = classify('SELECT 1', { standardConformingStrings: true }).statements[0]!;
  const write = classify('DELETE FROM t', { standardConformingStrings: true }).statements[0]!;
  let calls = 0;
  // Changes its answer after the first time it was asked (as a session's registry may while a text waits).
  const ctx: ClassifyContext = { standardConformingStrings: true, preparedStatement: () => (calls++ === 0 ? read : write) };
  const result = await worker.classify('EXECUTE p', ctx);
  t.same(result.statements[0]!.classes, ['write']);
});

t.test('unresolved functions come back as such; the caller looks them up and asks again', async (t) => {
  const cache = new ClassificationCache();
  const worker = new OffThreadClassifier({ threshold: 10, cache });
  t.teardown(() => worker.close());
  const known = new Map<string, 'read' | 'procedural'>();
  const ctx: ClassifyContext = { standardConformingStrings: true, functionVolatility: (name) => known.get(name) };
  const sql = `SELECT myfunc(x) FROM t WHERE y = 1 -- ${'x'.repeat(100)}`;
  const first = await worker.classify(sql, ctx);
  t.same(first.unresolvedFunctions, ['myfunc']);
  known.set('myfunc', 'read');
  const second = await worker.classify(sql, ctx);
  t.same(second.unresolvedFunctions, []);
  t.same(second.statements[0]!.classes, ['read']);
  // Kept in the cache (the text is under its maxTextLength): the next time it is answered at once.
  const third = worker.classify(sql, ctx);
  t.notOk(third instanceof Promise, 'a cache hit, in this thread');
  t.same(third, second);
  known.set('myfunc', 'procedural');
  const fourth = await worker.classify(sql, ctx);
  t.same(fourth.statements[0]!.classes, ['procedural', 'read'], 'the cached entry held only while the answer did');
});

t.test('short texts stay in this thread, unless they nest deeply', async (t) => {
  const worker = new OffThreadClassifier();
  t.teardown(() => worker.close());
  const ordinary = `SELECT a, b, c FROM t WHERE x = 1 AND y IN (1, 2, 3) -- ${'x'.repeat(3000)}`;
  t.notOk(worker.classify(ordinary, sessionContext()) instanceof Promise, '3 KiB of ordinary SQL: at once');
  const sum = 'SELECT ' + Array(1000).fill('1').join('+');
  const deep = worker.classify(sum, sessionContext());
  t.ok(deep instanceof Promise, '2 KiB, 999 operators: in the worker');
  t.same((await deep).statements[0]!.classes, ['read']);
  t.same(worker.stats(), { inThread: 1, offloaded: 1, rounds: (worker.stats() as { rounds: number }).rounds, stackRetries: 0, workersStarted: 1 });
});

t.test('deep statements: classified in the worker, whose stack is larger', async (t) => {
  const worker = new OffThreadClassifier();
  t.teardown(() => worker.close());
  const plus = 'SELECT ' + Array(3000).fill('1').join('+');
  const nested = 'SELECT ' + '(SELECT '.repeat(1000) + '1' + ')'.repeat(1000);
  t.same((await worker.classify(plus, sessionContext())).statements[0]!.classes, ['read'], '3,000 terms');
  t.same((await worker.classify(nested, sessionContext())).statements[0]!.classes, ['read'], '1,000 nested subselects');
  // A text too deep for this thread that was not sent to the worker at first (a high threshold): retried there.
  const retrying = new OffThreadClassifier({ threshold: 1 << 20 });
  t.teardown(() => retrying.close());
  const deep = 'SELECT ' + Array(10_000).fill('1').join('+');
  const r = await retrying.classify(deep, { standardConformingStrings: true, grammar: await loadGrammar(16) });
  t.same(r.statements[0]!.classes, ['read'], '10,000 terms');
  t.equal(retrying.stats().stackRetries, 1);
  // Deeper than the worker's stack too: unknown, never a crash.
  const deeper = 'SELECT ' + Array(150_000).fill('1').join('+');
  const too = await worker.classify(deeper, sessionContext());
  t.same(too.statements[0]!.classes, ['unknown']);
  t.match(too.error, { stackExhausted: true });
  // The worker retired after that; the next job gets a fresh one.
  t.same((await worker.classify(plus, sessionContext())).statements[0]!.classes, ['read']);
  t.ok(worker.stats().workersStarted >= 2);
});

t.test('a worker that dies mid-job: the text is unknown, the next one is classified', async (t) => {
  const worker = new OffThreadClassifier({ threshold: 0 });
  t.teardown(() => worker.close());
  await worker.classify('SELECT 1', sessionContext());
  const pending = worker.classify('SELECT ' + 'x, '.repeat(200_000) + '1', sessionContext());
  await (worker as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
  const r = await pending;
  t.same(r.statements[0]!.classes, ['unknown']);
  t.match(r.statements[0]!.reasons[0], /worker/);
  t.same((await worker.classify('DELETE FROM t', sessionContext())).statements[0]!.classes, ['write']);
  await worker.close();
  t.same((await worker.classify('SELECT 1', sessionContext())).statements[0]!.classes, ['unknown'], 'after close');
});

t.test('classifyAsync(): the shared worker, no cache', async (t) => {
  const r = await classifyAsync('SELECT 1; DELETE FROM t', { standardConformingStrings: true });
  t.same(r.statements.map((s) => s.command), ['SELECT', 'DELETE']);
  const big = await classifyAsync(`SELECT ${'1, '.repeat(5000)}1`, { standardConformingStrings: true });
  t.same(big.statements[0]!.classes, ['read']);
});
