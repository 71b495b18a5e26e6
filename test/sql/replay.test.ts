/**
 * A context rebuilt from recorded answers reproduces the classification: what the classification worker
 * relies on, whatever lookups the classifier makes.
 */
import t from 'tap';
import { classify } from '../../src/sql/classify.js';
import { initParser } from '../../src/sql/parser.js';
import { lookupKey, lookupsHold, recordingContext, replayContext, sameValue, snapshotContext } from '../../src/sql/replay.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';
import { corpusStatements } from '../helpers/sql-corpus.js';

await initParser();

function sessionContext(): ClassifyContext {
  const prepared = new Map<string, StatementInfo>();
  const base: ClassifyContext = { standardConformingStrings: true };
  prepared.set('p', classify('DELETE FROM t WHERE id = 1', base).statements[0]!);
  prepared.set('q', classify('SELECT 1', base).statements[0]!);
  return {
    standardConformingStrings: true,
    preparedStatement: (name) => prepared.get(name),
    functionVolatility: (name) => (name.startsWith('v') ? 'procedural' : name.startsWith('u') ? undefined : 'read'),
    shadowedBuiltin: (name) => name === 'lower' || name === 'now' || name === '+',
  };
}

function replayed(sql: string, ctx: ClassifyContext): { direct: unknown; replay: unknown; missing: number } {
  const recorder = recordingContext(ctx);
  const direct = classify(sql, recorder.ctx);
  const answers = new Map<string, unknown>();
  for (const [method, args, answer] of recorder.lookups) answers.set(lookupKey(method, args), answer);
  const { ctx: replayCtx, missing } = replayContext(snapshotContext(ctx), answers, {});
  const replay = classify(sql, replayCtx);
  return { direct, replay, missing: missing.size };
}

t.test('lookups of every kind, replayed', async (t) => {
  const ctx = sessionContext();
  const texts = [
    'EXECUTE p',
    'EXECUTE q; EXECUTE nope',
    'PREPARE r AS SELECT 1; EXECUTE r; DEALLOCATE r; EXECUTE r',
    'SELECT lower(x), upper(y), now() FROM t WHERE a + 1 > 2',
    'SELECT vfunc(1), rfunc(2), ufunc(3)',
    'SELECT public.vfunc(1), pg_catalog.lower(x)',
    "SELECT nextval('s'), set_config('search_path', 'public', false)",
  ];
  for (const sql of texts) {
    const { direct, replay, missing } = replayed(sql, ctx);
    t.equal(missing, 0, `${sql}: every lookup had an answer`);
    t.same(replay, direct, sql);
  }
});

t.test('a lookup without an answer is reported missing, never answered by chance', async (t) => {
  const ctx = sessionContext();
  const { ctx: replayCtx, missing, used } = replayContext(snapshotContext(ctx), new Map(), {});
  const r = classify('EXECUTE p; SELECT vfunc(1)', replayCtx);
  const asked = [...missing.values()].map(([method, args]) => JSON.stringify([method, args]));
  t.ok(asked.includes(JSON.stringify(['preparedStatement', ['p']])), 'the prepared statement');
  t.ok(asked.includes(JSON.stringify(['functionVolatility', ['vfunc']])), 'the function');
  t.equal(used.size, 0);
  // Whatever the result says, the caller discards it (missing is not empty); it is never a plain read here.
  t.notSame(r.statements[0]!.classes, ['read']);
});

t.test('the snapshot copies properties and lists methods, whatever their names', async (t) => {
  class Ctx implements ClassifyContext {
    standardConformingStrings = false;
    somethingNew = ['a', 'b'];
    get computed(): number {
      return 42;
    }
    preparedStatement(): undefined {
      return undefined;
    }
    futureLookup(x: string): string {
      return x.toUpperCase();
    }
  }
  const snapshot = snapshotContext(new Ctx());
  t.same(snapshot.data, { standardConformingStrings: false, somethingNew: ['a', 'b'], computed: 42 });
  t.same(snapshot.methods.sort(), ['futureLookup', 'preparedStatement']);
  t.equal(snapshot.grammar, 18);
  const { ctx, used } = replayContext(snapshot, new Map([[lookupKey('futureLookup', ['x']), 'X']]), {});
  t.equal((ctx as unknown as Ctx).futureLookup('x'), 'X');
  t.same([...used], [lookupKey('futureLookup', ['x'])]);
  t.equal((ctx as unknown as Record<string, unknown>).functionVolatility, undefined, 'a method the context lacks stays absent');
});

t.test('recorded answers hold while the context answers the same (or an equal value)', async (t) => {
  let answer: unknown = { a: [1, 2] };
  const ctx = { standardConformingStrings: true, preparedStatement: () => answer } as unknown as ClassifyContext;
  const lookups: [string, unknown[], unknown][] = [['preparedStatement', ['p'], { a: [1, 2] }]];
  t.ok(lookupsHold(lookups, ctx));
  answer = { a: [1, 3] };
  t.notOk(lookupsHold(lookups, ctx));
  t.notOk(lookupsHold([['missingMethod', [], undefined]], ctx), 'a method the context no longer has');
  t.ok(sameValue([1, { b: null }], [1, { b: null }]));
  t.notOk(sameValue([1], { 0: 1 }));
});

t.test('the corpus, replayed', async (t) => {
  const ctx = sessionContext();
  let n = 0;
  const failures: string[] = [];
  for (const { statements } of corpusStatements()) {
    for (const sql of statements) {
      n++;
      const { direct, replay, missing } = replayed(sql, ctx);
      if (missing > 0 || JSON.stringify(direct) !== JSON.stringify(replay)) failures.push(sql.slice(0, 200));
    }
  }
  t.ok(n > 20_000, `${n} statements`);
  t.same(failures.slice(0, 10), [], `${failures.length} statements classify differently when replayed`);
});
