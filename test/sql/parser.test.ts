/**
 * Statement splitting: texts come back exactly, also after multibyte characters (libpg-query reports UTF-8
 * byte offsets).
 */
import t from 'tap';
import { initParser, isParserReady, parseText, preparedQueryText, splitStatements } from '../../src/sql/parser.js';

t.test('initParser loads once', async (tt) => {
  const a = initParser();
  const b = initParser();
  tt.equal(a, b);
  await a;
  tt.ok(isParserReady());
});

t.test('splitStatements', async (tt) => {
  await initParser();
  const cases: [string, string[]][] = [
    ['SELECT 1', ['SELECT 1']],
    ['SELECT 1;', ['SELECT 1']],
    ['  SELECT 1  ;  SELECT 2  \n', ['SELECT 1', 'SELECT 2']],
    ["SELECT ';'; SELECT \"a;b\" FROM t", ["SELECT ';'", 'SELECT "a;b" FROM t']],
    ['/* lead */ SELECT 1 /* trail */; -- x\nSELECT 2', ['SELECT 1 /* trail */', 'SELECT 2']],
    ['SELECT $$;$$; SELECT 2', ['SELECT $$;$$', 'SELECT 2']],
    ["SELECT 'ä'; SELECT 'ö';SELECT '😀'", ["SELECT 'ä'", "SELECT 'ö'", "SELECT '😀'"]],
    ['SELECT "ünï", \'€\' FROM "täble"; DELETE FROM x', ['SELECT "ünï", \'€\' FROM "täble"', 'DELETE FROM x']],
    ['CREATE RULE r AS ON INSERT TO t DO (DELETE FROM a; DELETE FROM b); SELECT 1', ['CREATE RULE r AS ON INSERT TO t DO (DELETE FROM a; DELETE FROM b)', 'SELECT 1']],
    ['CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 2', ['CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END', 'SELECT 2']],
    [';;', []],
    ['', []],
  ];
  for (const [sql, expected] of cases) tt.same(splitStatements(sql), expected, JSON.stringify(sql));
  tt.throws(() => splitStatements('SELECT (1'));
});

t.test('parseText offsets index the text', async (tt) => {
  await initParser();
  const sql = "SELECT '日本'; SELECT 2";
  const parsed = parseText(sql);
  if (!parsed.ok) throw new Error('does not parse');
  for (const s of parsed.statements) tt.equal(sql.slice(s.start, s.end), s.text);
  tt.same(parsed.statements.map((s) => [s.start, s.end]), [[0, 11], [13, 21]]);
  const bad = parseText("SELECT 'ö' +");
  tt.notOk(bad.ok);
  if (!bad.ok) tt.equal(bad.position, 12);
});

t.test('preparedQueryText', async (tt) => {
  await initParser();
  tt.equal(preparedQueryText('PREPARE p AS SELECT 1'), 'SELECT 1');
  tt.equal(preparedQueryText('PREPARE p (int, text) AS\n  UPDATE t SET a = $2 WHERE id = $1'), 'UPDATE t SET a = $2 WHERE id = $1');
  tt.equal(preparedQueryText('PREPARE "ä" (numeric(10, 2)) AS SELECT \'é\' AS x'), "SELECT 'é' AS x");
});
