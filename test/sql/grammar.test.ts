/**
 * One grammar per PostgreSQL major: the right one is chosen from what the server reports, and the names that
 * newer grammars rewrite (json_object, json_array, json, merge_action) read as the matching server reads them.
 */
import t from 'tap';
import { classify } from '../../src/sql/classify.js';
import { GRAMMAR_VERSIONS, grammarStats, loadGrammar, serverGrammar, type Grammar, type GrammarVersion } from '../../src/sql/grammar.js';
import { initParser, preparedQueryText } from '../../src/sql/parser.js';
import type { ClassifyContext, StatementClass } from '../../src/sql/types.js';

await initParser();

t.test('the grammar for what the server reports', async (t) => {
  const cases: [string | undefined, string | undefined, GrammarVersion | null][] = [
    ['15.18 (Debian 15.18-1.pgdg120+1)', undefined, 15],
    ['15.18', undefined, 15],
    [undefined, '150018', 15],
    ['16.4', undefined, 16],
    ['17.2 (Ubuntu 17.2-1.pgdg24.04+1)', undefined, 17],
    ['18beta1', undefined, 18],
    ['18.0', undefined, 18],
    ['18rc1', '180000', 18],
    // server_version_num wins when both are there (a pooler may rewrite server_version).
    ['16.4', '150018', 15],
    ['9.6.24', undefined, null],
    ['9.6', undefined, null],
    [undefined, '90624', null],
    ['14.12', undefined, null],
    ['19devel', undefined, null],
    ['19.0', '190000', null],
    ['', undefined, null],
    [undefined, undefined, null],
    ['EnterpriseDB', undefined, null],
    ['v15', undefined, null],
  ];
  for (const [version, num, expected] of cases) {
    const chosen = serverGrammar(version, num);
    const label = `server_version ${JSON.stringify(version)}, server_version_num ${JSON.stringify(num)}`;
    if (expected === null) {
      t.equal(chosen.ok, false, `${label}: refused`);
      if (!chosen.ok) t.match(chosen.message, /PostgreSQL 15 to 18/, `${label}: the message names what stepgate supports`);
    } else {
      t.same(chosen, { ok: true, version: expected }, `${label}: PostgreSQL ${expected}`);
    }
  }
  t.match(serverGrammar('9.6.24'), { ok: false, version: '9.6', message: /the server runs PostgreSQL 9\.6/ });
  t.match(serverGrammar('19devel'), { ok: false, version: '19devel', message: /the server runs PostgreSQL 19devel/ });
  t.match(serverGrammar('EnterpriseDB'), { ok: false, message: /cannot tell which PostgreSQL version.*"EnterpriseDB"/ });
});

/** A session whose server has public.json_object/json_array/json/merge_action, all VOLATILE. */
const SHADOWED = new Set(['json_object', 'json_array', 'json', 'merge_action']);
function context(grammar: Grammar): ClassifyContext {
  return {
    grammar,
    standardConformingStrings: true,
    shadowedBuiltin: (name, kind) => kind === 'function' && SHADOWED.has(name),
    functionVolatility: (name) => (SHADOWED.has(name) ? 'procedural' : 'read'),
  };
}

t.test('json_object, json_array, json and merge_action read as the matching server reads them', async (t) => {
  const sql = {
    json_object: "SELECT json_object('{a,1}')",
    json_array: 'SELECT json_array(1, 2)',
    json: `SELECT json('[1]')`,
    merge_action: 'SELECT merge_action()',
  };
  // What each major's server runs: a function looked up through search_path (the user's volatile one), or
  // its own built-in (a pg_catalog function or an expression of the grammar's own).
  const callsUserFunction: Record<GrammarVersion, (keyof typeof sql)[]> = {
    15: ['json_object', 'json_array', 'json', 'merge_action'],
    16: ['json', 'merge_action'],
    17: [],
    18: [],
  };
  for (const version of GRAMMAR_VERSIONS) {
    const grammar = await loadGrammar(version);
    t.equal(grammar.version, version);
    for (const [name, text] of Object.entries(sql) as [keyof typeof sql, string][]) {
      const classes: StatementClass[] = classify(text, context(grammar)).statements[0]!.classes;
      if (callsUserFunction[version].includes(name)) t.ok(classes.includes('procedural'), `PostgreSQL ${version}: ${text} calls the user's function (${classes.join(', ')})`);
      else t.same(classes, ['read'], `PostgreSQL ${version}: ${text} is the built-in`);
    }
  }
  // Without a grammar in the context: PostgreSQL 18's.
  t.same(classify(sql.json_array, { standardConformingStrings: true, shadowedBuiltin: () => true, functionVolatility: () => 'procedural' }).statements[0]!.classes, ['read']);
});

t.test('each grammar gives the same tree for what all of them read alike', async (t) => {
  const texts = [
    "SELECT a, b FROM t WHERE x = 'é' AND y IN (1, 2) ORDER BY 1; UPDATE t SET a = 1",
    'WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d',
    'PREPARE p (int, numeric(10, 2)) AS SELECT $1 + $2',
    'COPY (SELECT * FROM t) TO STDOUT',
  ];
  const reference = await loadGrammar(18);
  for (const version of GRAMMAR_VERSIONS) {
    const grammar = await loadGrammar(version);
    for (const text of texts) {
      t.same(classify(text, context(grammar)), classify(text, context(reference)), `PostgreSQL ${version}: ${text}`);
    }
  }
});

t.test('texts of only blanks hold no statements in every grammar; other blanks are the server\'s to judge', async (t) => {
  for (const version of GRAMMAR_VERSIONS) {
    const grammar = await loadGrammar(version);
    for (const text of ['', ' ', '\n\t\r\f ', ';', ' ; ; ', '-- a comment', '/* a */']) {
      t.same(grammar.parse(text), { ok: true, statements: [] }, `PostgreSQL ${version}: ${JSON.stringify(text)}`);
    }
    // U+00A0 is no white space to PostgreSQL (an identifier character): never "no statements".
    t.equal(grammar.parse('\u00a0').ok, false, `PostgreSQL ${version}: a no-break space is not blank`);
  }
});

t.test("a PREPARE's statement text, whichever grammar parsed it", async (t) => {
  for (const version of GRAMMAR_VERSIONS) {
    const grammar = await loadGrammar(version);
    const r = classify("PREPARE q (int, text) AS\n  UPDATE t SET a = $2 WHERE id = $1; EXECUTE q (1, 'x')", context(grammar));
    t.equal(r.statements[0]!.prepare?.statement.sql, 'UPDATE t SET a = $2 WHERE id = $1', `PostgreSQL ${version}`);
    t.same(r.statements[1]!.classes, ['write'], `PostgreSQL ${version}: EXECUTE runs the prepared write`);
  }
  t.equal(preparedQueryText('PREPARE "ä" (numeric(10, 2)) AS SELECT \'é\' AS x'), "SELECT 'é' AS x");
});

t.test('a stack overflow in the parser: the text is too deep for this thread, and the parser is replaced', async (t) => {
  const grammar = await loadGrammar(15);
  const before = grammarStats().find((g) => g.version === 15)!.reloads;
  // Deeper than the main thread's stack (about 7,000 terms here), shallower than the worker's.
  const deep = 'SELECT ' + Array(40_000).fill('1').join('+');
  const r = classify(deep, context(grammar));
  t.same(r.statements[0]!.classes, ['unknown']);
  t.match(r.error, { stackExhausted: true, message: /nests too deeply/ });
  t.equal(grammarStats().find((g) => g.version === 15)!.reloads, before + 1, 'the broken instance was dropped');
  // While the fresh instance loads, texts are "too deep for this thread" too (never a crash, never a read).
  const meanwhile = classify('SELECT 1', context(grammar));
  t.ok(meanwhile.error?.stackExhausted || meanwhile.statements[0]!.classes.join() === 'read');
  await loadGrammar(15);
  for (let i = 0; i < 20; i++) {
    t.same(classify(`SELECT a, 'x' FROM t WHERE b = ${i}`, context(grammar)).statements[0]!.classes, ['read'], 'the new instance reads as before');
  }
});

t.test('the corpus reads the same in every grammar, but for the names newer grammars rewrite', async (t) => {
  const { corpusStatements } = await import('../helpers/sql-corpus.js');
  const reference = await loadGrammar(18);
  const plain = (grammar: Grammar): ClassifyContext => ({ grammar, standardConformingStrings: true, shadowedBuiltin: () => false, functionVolatility: () => 'read', preparedStatement: () => undefined });
  // Where 15 and 16 read differently from 18 (json_object is pg_catalog.json_object from 16 on; tt201v's view
  // lists special function syntaxes).
  const rewritten = /json_object|json_array|\bjson\s*\(|merge_action|tt201v/i;
  let compared = 0;
  const differences: string[] = [];
  let n = 0;
  for (const { statements } of corpusStatements()) {
    for (const sql of statements) {
      // Every third statement: the whole corpus in four grammars takes too long for one test file.
      if (n++ % 3 !== 0) continue;
      const expected = classify(sql, plain(reference));
      for (const version of [15, 16, 17] as const) {
        const actual = classify(sql, plain(await loadGrammar(version)));
        if (actual.error) continue; // newer syntax
        compared++;
        if (JSON.stringify(actual) !== JSON.stringify(expected) && !rewritten.test(sql)) differences.push(`${version}: ${sql.slice(0, 200)}`);
      }
    }
  }
  t.ok(compared > 20_000, `${compared} classifications compared`);
  t.same(differences, [], 'no other differences');
});

t.test('replaced parser instances are released (each holds 128 MiB of WebAssembly memory)', async (t) => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const grammar = await loadGrammar(16);
  const deep = 'SELECT ' + Array(40_000).fill('1').join('+');
  gc();
  const before = process.memoryUsage().external;
  for (let i = 0; i < 6; i++) {
    classify(deep, context(grammar));
    await loadGrammar(16);
  }
  gc();
  await new Promise((resolve) => setTimeout(resolve, 100));
  gc();
  const grown = (process.memoryUsage().external - before) / 2 ** 20;
  t.ok(grown < 3 * 128, `external memory grew by ${grown.toFixed(0)} MiB after 6 replacements`);
});
