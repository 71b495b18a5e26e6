/**
 * Every statement of PostgreSQL's regression suite that libpg-query parses must classify without an exception
 * and without an `unknown` class. Each file is classified as one session: PREPAREs are remembered for EXECUTE.
 */
import t from 'tap';
import { classify, initParser } from '../../src/sql/classify.js';
import type { CatalogAnswer, CatalogKey, CatalogLookups, FunctionFacts, RelationFacts } from '../../src/sql/catalog.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';
import { corpusStatements } from '../helpers/sql-corpus.js';

await initParser();

t.test('corpus statements classify with no unknown class', async (tt) => {
  let checked = 0;
  const commands = new Set<string>();
  for (const { file, statements } of corpusStatements()) {
    const prepared = new Map<string, StatementInfo>();
    const ctx: ClassifyContext = {
      standardConformingStrings: true,
      functionVolatility: () => 'procedural',
      preparedStatement: (name) => prepared.get(name),
    };
    const failures: string[] = [];
    for (const sql of statements) {
      try {
        const result = classify(sql, ctx);
        for (const s of result.statements) {
          checked++;
          commands.add(s.command);
          if (s.prepare) prepared.set(s.prepare.name, s.prepare.statement);
          if (s.deallocate?.name === null) prepared.clear();
          else if (s.deallocate) prepared.delete(s.deallocate.name);
          if (s.classes.includes('unknown')) failures.push(`unknown: ${s.sql.slice(0, 200)} (${s.reasons.join('; ')})`);
          if (s.classes.length === 0) failures.push(`no class: ${s.sql.slice(0, 200)}`);
        }
      } catch (err) {
        failures.push(`exception: ${sql.slice(0, 200)}: ${(err as Error).stack}`);
      }
    }
    tt.same(failures, [], `${file}: ${statements.length} statements`);
  }
  tt.ok(checked > 20000, `checked ${checked} statements`);
  tt.notOk(commands.has('UNKNOWN'), 'every statement has a command tag');
  tt.comment(`corpus: ${checked} statements classified, ${commands.size} distinct commands`);
  console.log(`corpus: ${checked} statements classified, ${commands.size} distinct commands`);
});

t.test('corpus statements classify with a catalog that knows every name as a plain object', async (tt) => {
  // Every relation is a plain table, every function a C function that only reads, every name a built-in:
  // the catalog code paths see every syntactic form of the regression suite without throwing, and nothing
  // is unknown but a record whose type cannot be seen (populate_record of ROW(column, ...)).
  const table = (name: string): RelationFacts[] => [
    { oid: 20000, schema: 'public', name, kind: 'r', rowSecurity: false, policies: [], query: null, foreign: [], readExpressions: [] },
  ];
  const fn = (name: string): FunctionFacts[] => [
    { oid: 20001, schema: 'public', name, kind: 'f', language: 'c', volatility: 's', securityDefiner: false, config: [], definition: null, defaults: null, types: [] },
  ];
  const catalog: CatalogLookups = {
    lookup: <K extends CatalogKey>(key: K): CatalogAnswer<K> | undefined => {
      const answer = (): unknown => {
        switch (key.kind) {
          case 'names':
            return 'trusted';
          case 'functions':
            return fn(key.name);
          case 'relations':
            return table(key.name);
          case 'operators':
          case 'types':
            return [];
          case 'hazards':
            return { opfamilies: [], casts: [] };
          default:
            return null;
        }
      };
      return answer() as CatalogAnswer<K>;
    },
  };
  let checked = 0;
  const unknown: string[] = [];
  const failures: string[] = [];
  for (const { file, statements } of corpusStatements()) {
    const prepared = new Map<string, StatementInfo>();
    const ctx: ClassifyContext = { standardConformingStrings: true, catalog, preparedStatement: (name) => prepared.get(name) };
    for (const sql of statements) {
      try {
        for (const s of classify(sql, ctx).statements) {
          checked++;
          if (s.prepare) prepared.set(s.prepare.name, s.prepare.statement);
          if (!s.classes.includes('unknown')) continue;
          if (s.reasons.some((r) => r.includes('builds a record of a type stepgate cannot see'))) unknown.push(s.sql);
          else failures.push(`unknown: ${file}: ${s.sql.slice(0, 200)} (${s.reasons.join('; ')})`);
        }
      } catch (err) {
        failures.push(`exception: ${file}: ${sql.slice(0, 200)}: ${(err as Error).stack}`);
      }
    }
  }
  tt.same(failures, []);
  tt.ok(unknown.length <= 2, `records of types stepgate cannot see: ${unknown.length}`);
  tt.ok(checked > 20000, `checked ${checked} statements`);
});
