/**
 * Every statement of PostgreSQL's regression suite that libpg-query parses must classify without an exception
 * and without an `unknown` class. Each file is classified as one session: PREPAREs are remembered for EXECUTE.
 */
import t from 'tap';
import { classify, initParser } from '../../src/sql/classify.js';
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
