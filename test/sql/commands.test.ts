/** Every command a statement runs is listed, so rules on `command` cannot be dodged by wrapping. */
import t from 'tap';
import { classify } from '../../src/sql/classify.js';
import { initParser } from '../../src/sql/parser.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';

await initParser();
const prepared = new Map<string, StatementInfo>();
const ctx: ClassifyContext = { standardConformingStrings: true, preparedStatement: (name) => prepared.get(name) };
prepared.set('wipe', classify('DELETE FROM orders', ctx).statements[0]!);

const cases: [string, string[]][] = [
  ['SELECT 1', ['SELECT']],
  ['DELETE FROM orders WHERE id = 1', ['DELETE']],
  ['WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d', ['DELETE', 'SELECT']],
  ['WITH u AS (UPDATE t SET a = 1 RETURNING *) INSERT INTO log SELECT * FROM u', ['INSERT', 'UPDATE']],
  ['SELECT * FROM (WITH d AS (DELETE FROM t RETURNING 1) SELECT * FROM d) s', ['DELETE', 'SELECT']],
  ['EXPLAIN ANALYZE DELETE FROM orders', ['DELETE', 'EXPLAIN']],
  ['EXPLAIN DELETE FROM orders', ['EXPLAIN']],
  ['EXECUTE wipe', ['DELETE', 'EXECUTE']],
  ['COPY (DELETE FROM orders RETURNING *) TO STDOUT', ['COPY', 'DELETE']],
  ['CREATE TABLE x AS SELECT * FROM orders', ['CREATE TABLE AS', 'SELECT']],
  ['PREPARE p AS DELETE FROM orders', ['PREPARE']],
  ['CREATE VIEW v AS WITH d AS (SELECT 1) SELECT * FROM d', ['CREATE VIEW']],
];

for (const [sql, expected] of cases) {
  t.test(sql, async (t) => {
    t.same(classify(sql, ctx).statements[0]!.commands, expected);
  });
}
