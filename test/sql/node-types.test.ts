/**
 * Every statement node type libpg-query can produce maps to a class: none throws, none comes out empty, and
 * only SelectStmt is a plain read. The list comes from libpg-query's own type definitions, so a node type
 * added by a newer grammar shows up here. (Plain EXPLAIN is a read too: it only plans.)
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import t from 'tap';
import { TextEnvironment } from '../../src/sql/analysis.js';
import { initParser } from '../../src/sql/parser.js';
import { analyzeStatement } from '../../src/sql/statements.js';

await initParser();

function statementNodeTypes(): string[] {
  const require = createRequire(import.meta.url);
  const typesDir = path.dirname(require.resolve('@pgsql/types/package.json'));
  const source = fs.readFileSync(path.join(typesDir, 'types.d.ts'), 'utf8');
  return [...source.matchAll(/^export interface (\w+Stmt) \{/gm)].map((m) => m[1]!);
}

t.test('every statement node type gets a class', async (tt) => {
  const types = statementNodeTypes();
  tt.ok(types.length > 100, `${types.length} statement node types`);
  const env = new TextEnvironment({ standardConformingStrings: true });
  for (const type of types) {
    const info = analyzeStatement(env, { [type]: {} }, 'x', () => 'x');
    tt.ok(info.classes.length > 0, `${type}: ${info.classes.join(',')}`);
    if (type !== 'SelectStmt' && type !== 'ExplainStmt') tt.not(info.classes.join(','), 'read', `${type} is not a plain read`);
  }
});

t.test('an unrecognised statement type is unknown, never read', async (tt) => {
  const env = new TextEnvironment({ standardConformingStrings: true });
  const info = analyzeStatement(env, { FutureStmt: { anything: 1 } }, 'FUTURE', () => 'FUTURE');
  tt.same(info.classes, ['unknown']);
  tt.equal(info.command, 'UNKNOWN');
});
