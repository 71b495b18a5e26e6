/**
 * ClassificationCache: exact-text and shape hits, frozen results, context dependencies, bounds.
 */
import t from 'tap';
import { ClassificationCache } from '../../src/sql/cache.js';
import { classify, initParser } from '../../src/sql/classify.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';

await initParser();

function context(extra: Partial<ClassifyContext> = {}): ClassifyContext {
  return { standardConformingStrings: true, functionVolatility: () => 'read', ...extra };
}

t.test('exact text hits return the same frozen result', async (tt) => {
  const cache = new ClassificationCache();
  const ctx = context();
  const a = cache.classify('SELECT * FROM t WHERE id = 1', ctx);
  const b = cache.classify('SELECT * FROM t WHERE id = 1', ctx);
  tt.equal(a, b);
  tt.ok(Object.isFrozen(a) && Object.isFrozen(a.statements) && Object.isFrozen(a.statements[0]));
  tt.ok(Object.isFrozen(a.statements[0]!.classes) && Object.isFrozen(a.statements[0]!.tables[0]));
  tt.throws(() => {
    (a.statements[0]!.classes as string[]).push('write');
  });
  tt.same(cache.stats(), { exactHits: 1, shapeHits: 0, misses: 1, stale: 0, entries: 1, shapes: 1 });
  tt.same(a, classify('SELECT * FROM t WHERE id = 1', ctx), 'same as uncached');
});

t.test('shape hits return the actual texts', async (tt) => {
  const cache = new ClassificationCache();
  const ctx = context();
  cache.classify("UPDATE t SET a = 'x' WHERE id = 1; SELECT * FROM u WHERE b = 2.5", ctx);
  const sql = "UPDATE t SET a = 'a much longer value' WHERE id = 123456; SELECT * FROM u WHERE b = 1e10";
  const hit = cache.classify(sql, ctx);
  tt.equal(cache.stats().shapeHits, 1);
  tt.same(hit.statements.map((s) => s.sql), ["UPDATE t SET a = 'a much longer value' WHERE id = 123456", 'SELECT * FROM u WHERE b = 1e10']);
  const fresh = classify(sql, ctx);
  tt.same(hit, { statements: fresh.statements, unresolvedFunctions: [], shapeSafe: true }, 'same as classifying it');
  tt.ok(Object.isFrozen(hit.statements[0]));
});

t.test('literal-dependent results are not reused by shape', async (tt) => {
  const cache = new ClassificationCache();
  const ctx = context();
  cache.classify("SELECT nextval('a')", ctx);
  const other = cache.classify("SELECT nextval('b')", ctx);
  tt.equal(cache.stats().shapeHits, 0);
  tt.same(other.statements[0]!.tables, [{ schema: null, name: 'b', access: 'write' }]);
  cache.classify("SELECT set_config('work_mem', '1MB', false)", ctx);
  const role = cache.classify("SELECT set_config('role', 'admin', false)", ctx);
  tt.ok(role.statements[0]!.classes.includes('privilege'));
  cache.classify("SELECT 'a'::regclass", ctx);
  cache.classify("SELECT 'b'::regclass", ctx);
  tt.equal(cache.stats().shapeHits, 0);
});

t.test('results with unresolved functions are not cached', async (tt) => {
  const known = new Map<string, 'read' | 'procedural'>();
  const ctx = context({ functionVolatility: (name) => known.get(name) });
  const first = new ClassificationCache();
  const r1 = first.classify('SELECT f(1)', ctx);
  tt.same(r1.unresolvedFunctions, ['f']);
  known.set('f', 'read');
  const r2 = first.classify('SELECT f(1)', ctx);
  tt.same(r2.unresolvedFunctions, []);
  tt.same(r2.statements[0]!.classes, ['read']);
  tt.equal(first.stats().misses, 2);
});

t.test('a changed function volatility or prepared statement invalidates the entry', async (tt) => {
  const known = new Map<string, 'read' | 'procedural'>([['f', 'read']]);
  const prepared = new Map<string, StatementInfo>();
  const ctx = context({ functionVolatility: (name) => known.get(name), preparedStatement: (name) => prepared.get(name) });
  const cache = new ClassificationCache();
  tt.same(cache.classify('SELECT f(1)', ctx).statements[0]!.classes, ['read']);
  known.set('f', 'procedural');
  tt.same(cache.classify('SELECT f(1)', ctx).statements[0]!.classes, ['procedural', 'read']);
  tt.same(cache.classify('SELECT f(2)', ctx).statements[0]!.classes, ['procedural', 'read'], 'shape entry too');
  tt.ok(cache.stats().stale >= 1);

  prepared.set('p', classify('SELECT 1', ctx).statements[0]!);
  tt.same(cache.classify('EXECUTE p', ctx).statements[0]!.classes, ['read']);
  prepared.set('p', classify('DELETE FROM t', ctx).statements[0]!);
  tt.same(cache.classify('EXECUTE p', ctx).statements[0]!.classes, ['write'], 're-PREPAREd');
  prepared.delete('p');
  tt.same(cache.classify('EXECUTE p', ctx).statements[0]!.classes, ['unknown'], 'deallocated');
});

t.test('a changed shadowedBuiltin answer invalidates the entry', async (tt) => {
  const shadowed = new Set<string>();
  const ctx = context({
    shadowedBuiltin: (name) => shadowed.has(name),
    functionVolatility: (name) => (name === 'lower' ? 'procedural' : 'read'),
  });
  const cache = new ClassificationCache();
  tt.same(cache.classify('SELECT lower(x) FROM t', ctx).statements[0]!.classes, ['read']);
  shadowed.add('lower');
  tt.same(cache.classify('SELECT lower(x) FROM t', ctx).statements[0]!.classes, ['procedural', 'read']);
});

t.test('standard_conforming_strings is part of the key', async (tt) => {
  const cache = new ClassificationCache();
  const sql = "SELECT 'a\\'";
  tt.same(cache.classify(sql, context()).statements[0]!.classes, ['read']);
  tt.same(cache.classify(sql, context({ standardConformingStrings: false })).statements[0]!.classes, ['unknown']);
  tt.same(cache.classify(sql, context()).statements[0]!.classes, ['read']);
});

t.test('the cache is bounded', async (tt) => {
  const cache = new ClassificationCache({ maxEntries: 100, maxShapes: 10 });
  const ctx = context();
  for (let i = 0; i < 1000; i++) cache.classify(`SELECT ${i} FROM t${i}`, ctx);
  const stats = cache.stats();
  tt.ok(stats.entries <= 100, `${stats.entries} entries`);
  tt.ok(stats.shapes <= 10, `${stats.shapes} shapes`);
  // An entry used in every generation survives.
  const hot = cache.classify('SELECT 1 FROM hot', ctx);
  for (let i = 0; i < 1000; i++) {
    cache.classify(`SELECT ${i} FROM u${i}`, ctx);
    if (i % 20 === 0) tt.equal(cache.classify('SELECT 1 FROM hot', ctx), hot);
  }
  cache.clear();
  tt.same(cache.stats(), { exactHits: 0, shapeHits: 0, misses: 0, stale: 0, entries: 0, shapes: 0 });
});

t.test('errors and empty texts go through the cache too', async (tt) => {
  const cache = new ClassificationCache();
  const ctx = context();
  const bad = cache.classify('SELEC 1', ctx);
  tt.same(bad.statements[0]!.classes, ['unknown']);
  tt.equal(cache.classify('SELEC 1', ctx), bad);
  tt.same(cache.classify('', ctx).statements, []);
});

t.test('entries are kept per grammar', async (tt) => {
  const { loadGrammar } = await import('../../src/sql/grammar.js');
  const [g15, g18] = [await loadGrammar(15), await loadGrammar(18)];
  const cache = new ClassificationCache();
  const shadow: Partial<ClassifyContext> = { shadowedBuiltin: (name) => name === 'json_array', functionVolatility: (name) => (name === 'json_array' ? 'procedural' : 'read') };
  // PostgreSQL 15 calls public.json_array; 16 and later have a JSON constructor of that name.
  tt.same(cache.classify('SELECT json_array(1, 2)', context({ ...shadow, grammar: g18 })).statements[0]!.classes, ['read']);
  tt.same(cache.classify('SELECT json_array(1, 2)', context({ ...shadow, grammar: g15 })).statements[0]!.classes, ['procedural', 'read']);
  tt.same(cache.classify('SELECT json_array(3, 4)', context({ ...shadow, grammar: g15 })).statements[0]!.classes, ['procedural', 'read'], 'by shape too');
  tt.same(cache.classify('SELECT json_array(1, 2)', context({ ...shadow, grammar: g18 })).statements[0]!.classes, ['read']);
  tt.equal(cache.stats().exactHits, 1);
});

t.test('texts longer than maxTextLength are classified, not kept', async (tt) => {
  const cache = new ClassificationCache({ maxTextLength: 100 });
  const long = `SELECT ${'1 + '.repeat(40)}1`;
  const a = cache.classify(long, context());
  const b = cache.classify(long, context());
  tt.not(a, b);
  tt.same(a, b);
  tt.same(cache.stats(), { exactHits: 0, shapeHits: 0, misses: 2, stale: 0, entries: 0, shapes: 0 });
});

t.test('results classified elsewhere are stored with the lookups they used, and checked on every hit', async (tt) => {
  const cache = new ClassificationCache();
  let volatility: 'read' | 'procedural' = 'read';
  const ctx = context({ functionVolatility: () => volatility });
  const sql = 'SELECT f(1) FROM t';
  tt.equal(cache.lookup(sql, ctx), undefined);
  const tracked = { result: classify(sql, ctx), dependencies: { lookups: [['functionVolatility', ['f'], 'read'] as [string, unknown[], unknown]] }, spans: [0, sql.length] };
  cache.store(sql, ctx, tracked);
  tt.equal(cache.lookup(sql, ctx), tracked.result, 'an exact hit');
  tt.same(cache.lookup('SELECT f(2) FROM t', ctx)?.statements[0]!.sql, 'SELECT f(2) FROM t', 'a shape hit');
  volatility = 'procedural';
  tt.equal(cache.lookup(sql, ctx), undefined, 'stale once the answer changed');
  tt.equal(cache.lookup('SELECT f(2) FROM t', ctx), undefined);
});
