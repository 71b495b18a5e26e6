/**
 * The schema catalog's pieces that need no server: the expiring, bounded store and the lookup rounds.
 */
import t from 'tap';
import { classifyWithCatalog, MAX_LOOKUP_ROUNDS, type SchemaCatalog } from '../../src/proxy/catalog/index.js';
import { ExpiringStore } from '../../src/proxy/catalog/store.js';
import { catalogKeyString, type CatalogKey } from '../../src/sql/catalog.js';
import { classify, initParser } from '../../src/sql/classify.js';
import type { ClassifyContext } from '../../src/sql/types.js';
import { FakeCatalog, relation, sqlFunction, view } from '../helpers/fake-catalog.js';

await initParser();

t.test('ExpiringStore: entries expire, count and size are bounded', async (tt) => {
  const store = new ExpiringStore<string>(1000, 3, 100);
  store.set('a', 'A', 10, 0);
  tt.equal(store.get('a', 500), 'A');
  tt.equal(store.get('a', 1001), undefined, 'expired');
  tt.equal(store.size, 0);
  for (const k of ['a', 'b', 'c']) store.set(k, k, 10, 0);
  store.set('d', 'd', 10, 0);
  tt.ok(store.size <= 3, 'at most 3 entries');
  tt.equal(store.get('d', 0), 'd', 'the newest survives');
  store.set('big', 'x', 95, 0);
  tt.ok(store.approximateBytes <= 100, 'at most 100 bytes');
});

/** A SchemaCatalog over a FakeCatalog whose lookups answer only once resolve() was asked for them. */
function lazyCatalog(fake: FakeCatalog, options: { fail?: boolean; never?: boolean } = {}): SchemaCatalog & { rounds: number } {
  const answered = new Set<string>();
  const c = {
    rounds: 0,
    lookups: {
      lookup: (key: CatalogKey) => (answered.has(catalogKeyString(key)) ? fake.lookup(key) : undefined),
    },
    loaded: true,
    ready: async () => {},
    refreshIfStale: () => {},
    invalidate: () => answered.clear(),
    describeOid: async () => null,
    close: () => {},
    async resolve(keys: readonly CatalogKey[]) {
      c.rounds++;
      if (options.fail) throw new Error('catalog connection closed');
      if (!options.never) for (const k of keys) answered.add(catalogKeyString(k));
    },
  };
  return c as SchemaCatalog & { rounds: number };
}

t.test('classifyWithCatalog: level by level until every lookup is answered', async (tt) => {
  const fake = new FakeCatalog({
    functions: [sqlFunction('public.inner_fn', 'SELECT pg_catalog.pg_advisory_lock(1)'), sqlFunction('public.outer_fn', 'SELECT * FROM public.v')],
    relations: [view('public.v', 'SELECT public.inner_fn();'), relation('public.t', 'r')],
  });
  const catalog = lazyCatalog(fake);
  const ctx: ClassifyContext = { standardConformingStrings: true, catalog: catalog.lookups };
  const sql = 'SELECT outer_fn() FROM t';
  const first = classify(sql, ctx);
  tt.ok(first.statements[0]!.classes.includes('unknown'), 'first pass: unknown');
  const r = await classifyWithCatalog(catalog, () => classify(sql, ctx), first, () => tt.fail('no error'));
  tt.equal(r.unresolvedLookups, undefined);
  tt.same(r.statements[0]!.classes, ['read']);
  tt.same(r.statements[0]!.flags, ['advisory_lock', 'locks'], 'found through a function, a view and a function');
  tt.ok(catalog.rounds >= 3 && catalog.rounds <= MAX_LOOKUP_ROUNDS, `${catalog.rounds} rounds`);
});

t.test('classifyWithCatalog: a failing or silent catalog leaves the statement unknown', async (tt) => {
  const fake = new FakeCatalog({ relations: [relation('public.t', 'r')] });
  const failing = lazyCatalog(fake, { fail: true });
  const ctx: ClassifyContext = { standardConformingStrings: true, catalog: failing.lookups };
  const errors: string[] = [];
  const r = await classifyWithCatalog(failing, () => classify('SELECT * FROM t', ctx), classify('SELECT * FROM t', ctx), (e) => errors.push(e.message));
  tt.same(errors, ['catalog connection closed']);
  tt.ok(r.statements[0]!.classes.includes('unknown'));

  const silent = lazyCatalog(fake, { never: true });
  const sctx: ClassifyContext = { standardConformingStrings: true, catalog: silent.lookups };
  const s = await classifyWithCatalog(silent, () => classify('SELECT * FROM t', sctx), classify('SELECT * FROM t', sctx), () => {});
  tt.ok(s.statements[0]!.classes.includes('unknown'));
  tt.equal(silent.rounds, 2, 'asked once more, then gave up');
});
