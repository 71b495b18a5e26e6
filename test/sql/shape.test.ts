/**
 * The shape key must be safe: equal keys mean the same parse tree apart from constant values. Checked with
 * libpg-query's fingerprint (which ignores constants) over the corpus, and with a table of texts the scanner
 * must refuse.
 */
import t from 'tap';
import { fingerprintSync } from 'libpg-query';
import { classify, initParser } from '../../src/sql/classify.js';
import { keyOffsetsToText, LITERAL_STRIDE, sameShape, scanShape, shapeKey, textOffsetsToKey } from '../../src/sql/shape.js';
import type { ClassifyContext, StatementInfo } from '../../src/sql/types.js';
import { corpusStatements } from '../helpers/sql-corpus.js';

await initParser();

const ctx: ClassifyContext = { standardConformingStrings: true, functionVolatility: () => 'read' };

function fingerprint(sql: string): string | null {
  try {
    return fingerprintSync(sql);
  } catch {
    return null;
  }
}

/** Other values of the same kind for each placeholder (1: int32, 2: other number, 3: string). */
const REPLACEMENTS: Record<number, string[]> = {
  1: ['0', '7', '2147483647', '00042'],
  2: ['1.5', '99999999999', '.25', '1e10', '3.0E-2'],
  3: ["''", "'x'", "'it''s'", "'line\nbreak'", "'-- not a comment'", "'/* nor this */'", "'\"'"],
};

function replaceLiterals(sql: string, literals: number[], pick: (kind: number, index: number) => string): string {
  let out = '';
  let copied = 0;
  for (let m = 0; m < literals.length; m += LITERAL_STRIDE) {
    out += sql.slice(copied, literals[m]) + pick(literals[m + 2]!, m / LITERAL_STRIDE);
    copied = literals[m + 1]!;
  }
  return out + sql.slice(copied);
}

/** A classification without the statement texts (which differ between variants by design). */
function withoutTexts(statements: StatementInfo[]): unknown {
  return statements.map(({ sql: _sql, ...rest }) => rest);
}

t.test('changing literal values keeps the key, the fingerprint and the classification', async (tt) => {
  let keyed = 0;
  let variants = 0;
  const problems: string[] = [];
  for (const { statements } of corpusStatements()) {
    for (const sql of statements) {
      const literals: number[] = [];
      const key = shapeKey(sql, literals);
      if (key === null) continue;
      keyed++;
      if (literals.length === 0) continue;
      const original = fingerprint(sql);
      const originalResult = classify(sql, ctx);
      for (let round = 0; round < 2; round++) {
        const variant = replaceLiterals(sql, literals, (kind, i) => {
          const options = REPLACEMENTS[kind]!;
          return options[(i + round * 3 + sql.length) % options.length]!;
        });
        variants++;
        const variantLiterals: number[] = [];
        if (shapeKey(variant, variantLiterals) !== key) problems.push(`key changed: ${sql} => ${variant}`);
        if (!sameShape(variant, variantLiterals, key)) problems.push(`sameShape false: ${variant}`);
        const f = fingerprint(variant);
        if (original !== null && f !== original) problems.push(`fingerprint changed: ${sql} => ${variant}`);
        if (originalResult.shapeSafe) {
          const r = classify(variant, ctx);
          if (!r.shapeSafe || JSON.stringify(withoutTexts(r.statements)) !== JSON.stringify(withoutTexts(originalResult.statements))) {
            problems.push(`classification changed: ${sql} => ${variant}`);
          }
        }
      }
    }
  }
  tt.same(problems.slice(0, 20), [], `${problems.length} problems`);
  tt.ok(keyed > 10000, `${keyed} corpus statements get a key`);
  tt.comment(`${keyed} corpus statements got a shape key; ${variants} variants checked`);
});

t.test('texts with equal keys have equal fingerprints', async (tt) => {
  const byKey = new Map<string, { sql: string; fingerprint: string | null }>();
  const problems: string[] = [];
  let groups = 0;
  for (const { statements } of corpusStatements()) {
    for (const sql of statements) {
      const key = shapeKey(sql, []);
      if (key === null) continue;
      const f = fingerprint(sql);
      const first = byKey.get(key);
      if (first === undefined) byKey.set(key, { sql, fingerprint: f });
      else {
        groups++;
        if (first.fingerprint !== f) problems.push(`${first.sql} / ${sql}`);
      }
    }
  }
  tt.same(problems, [], 'no two texts with one key differ in fingerprint');
  tt.ok(groups > 100, `${groups} texts share a key with another`);
});

t.test('adversarial texts get no key', async (tt) => {
  const refused = [
    "SELECT E'\\''", // escape string
    "SELECT e'x'",
    "SELECT B'101'",
    "SELECT b'101'",
    "SELECT X'1F'",
    "SELECT x'1f'",
    "SELECT N'x'",
    "SELECT U&'d\\0061t'",
    "SELECT U&'d!0061t' UESCAPE '!'",
    'SELECT U&"d!0061t" UESCAPE \'!\' FROM t',
    "SELECT u&'x'",
    "SELECT 'a\\'", // backslash anywhere
    "SELECT 1 -- \\ in a comment",
    'SELECT "a\\b" FROM t',
    'SELECT $$dollar$$',
    'SELECT $tag$x$tag$',
    'SELECT $',
    'SELECT $1abc',
    'SELECT $1.5',
    'SELECT 0x1F',
    'SELECT 0o17',
    'SELECT 0b101',
    'SELECT 1_000',
    'SELECT 123abc',
    'SELECT 1e',
    'SELECT 1e+',
    'SELECT 1.2.3',
    'SELECT 1..2',
    'SELECT .5.5',
    'SELECT 1.e',
    'SELECT /* outer /* nested */ */ 1',
    'SELECT /* unterminated',
    "SELECT 'unterminated",
    'SELECT "unterminated',
    "SELECT 'é'",
    'SELECT é',
    'SELECT 1 -- é',
    '/* é */ SELECT 1',
    'SELECT 1\u0000',
    'SELECT\u000b1',
    'SELECT 1\u0001',
    "SELECT 'a\u0002'",
    'SELECT 1\u007f',
    "SELECT date'2020-01-01'",
    "SELECT foo'x'",
    "SELECT 1::float(24)",
    "SELECT CAST(1 AS FLOAT(53))",
    'SELECT 1::Float',
    "SELECT a&'x' FROM t",
    // Utility statements: their literals are names and options, not constants.
    "SET work_mem = '1MB'",
    "COPY t TO '/tmp/x'",
    "CREATE TABLE t (a int DEFAULT 1)",
    "EXPLAIN SELECT 1",
    "PREPARE p AS SELECT 1",
    "SELECT 1; SET x = 1",
    "SELECT 1; /* c */ NOTIFY c, 'x'",
    "1",
    "'x'",
  ];
  for (const sql of refused) {
    const literals: number[] = [];
    tt.equal(shapeKey(sql, literals), null, JSON.stringify(sql));
    tt.equal(scanShape(sql, []), -1, `scanShape ${JSON.stringify(sql)}`);
  }
});

t.test('keys keep everything but literal values', async (tt) => {
  const literals: number[] = [];
  tt.equal(
    shapeKey("SELECT * FROM t WHERE a = 1 AND b = 'x''y' -- 'c'\n", literals),
    "SELECT * FROM t WHERE a = \u0001 AND b = \u0003 -- 'c'\n",
  );
  tt.same(literals, [26, 27, 1, 36, 42, 3]);
  tt.equal(shapeKey('SELECT 1.5, 99999999999, 2147483647, 2147483648, 007', []), 'SELECT \u0002, \u0002, \u0001, \u0002, \u0001');
  tt.equal(shapeKey('SELECT a[1], b[2:3] FROM t', []), 'SELECT a[1], b[2:3] FROM t', 'numbers in brackets are kept');
  tt.equal(shapeKey('SELECT $1, $2 FROM t WHERE "we""ird" = 1', []), 'SELECT $1, $2 FROM t WHERE "we""ird" = \u0001');
  tt.equal(shapeKey("SELECT 1 /* '2' */, '3'", []), "SELECT \u0001 /* '2' */, \u0003");
  tt.equal(shapeKey("SELECT 'a'\n'b'", []), "SELECT \u0003\n\u0003", 'string continuation keeps its white space');
  tt.not(shapeKey('SELECT 1', []), shapeKey("SELECT '1'", []), 'numbers and strings differ');
  tt.not(shapeKey('SELECT 1', []), shapeKey('SELECT 1.0', []), 'integers and other numbers differ');
  tt.not(shapeKey('SELECT 1', []), shapeKey('SELECT  1', []), 'white space is kept');
  tt.not(shapeKey('select 1', []), shapeKey('SELECT 1', []), 'case is kept');
  tt.equal(shapeKey('SELECT 1', []), shapeKey('SELECT 42', []));
  tt.equal(shapeKey("-- c\n(SELECT 1) UNION VALUES (2); WITH x AS (SELECT 3) TABLE x;; INSERT INTO t VALUES ('4')", []),
    "-- c\n(SELECT \u0001) UNION VALUES (\u0001); WITH x AS (SELECT \u0001) TABLE x;; INSERT INTO t VALUES (\u0003)", 'queries are keyed');
});

t.test('scanShape hashes the key; sameShape compares without building it', async (tt) => {
  const a: number[] = [];
  const b: number[] = [];
  const ha = scanShape("SELECT * FROM t WHERE id = 1 AND s = 'x'", a);
  const hb = scanShape("SELECT * FROM t WHERE id = 99 AND s = 'longer'", b);
  tt.equal(ha, hb);
  tt.ok(ha >= 0);
  const key = shapeKey("SELECT * FROM t WHERE id = 1 AND s = 'x'", [])!;
  tt.ok(sameShape("SELECT * FROM t WHERE id = 99 AND s = 'longer'", b, key));
  const c: number[] = [];
  scanShape("SELECT * FROM t WHERE id = 99 AND s = 'longer' ", c);
  tt.notOk(sameShape("SELECT * FROM t WHERE id = 99 AND s = 'longer' ", c, key), 'longer text');
  const d: number[] = [];
  scanShape("SELECT * FROM u WHERE id = 99 AND s = 'longer'", d);
  tt.notOk(sameShape("SELECT * FROM u WHERE id = 99 AND s = 'longer'", d, key), 'other table');
});

t.test('offsets map between a text and its key', async (tt) => {
  const sql = "SELECT 'aaaa'; SELECT 12345, 'b'";
  const literals: number[] = [];
  shapeKey(sql, literals);
  const spans = [0, 13, 15, 32];
  const keySpans: number[] = [];
  textOffsetsToKey(spans, literals, keySpans);
  tt.same(keySpans, [0, 8, 10, 21]);
  const other = "SELECT ''; SELECT 1, 'bbbbbbbb'";
  const otherLiterals: number[] = [];
  shapeKey(other, otherLiterals);
  const back: number[] = [];
  keyOffsetsToText(keySpans, otherLiterals, back);
  tt.same([other.slice(back[0], back[1]), other.slice(back[2], back[3])], ["SELECT ''", "SELECT 1, 'bbbbbbbb'"]);
});
