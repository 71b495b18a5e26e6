/**
 * Classifier and rules for tests that exercise the relay. TEMPORARY stand-ins until src/sql and src/rules land.
 */
import type { RuleSet } from '../../src/rules/types.js';
import type { ClassifyContext, ClassifyResult } from '../../src/sql/types.js';

export function testClassifier(): (sql: string, ctx: ClassifyContext) => ClassifyResult {
  return (sql) => ({
    statements: [{ sql, command: 'SELECT', classes: ['read'], tables: [], columns: [], functions: [], flags: [], reasons: [], changesParsing: false }],
    unresolvedFunctions: [],
    shapeSafe: false,
  });
}

export function testRules(_dir?: string): RuleSet {
  return {
    decide: () => ({ action: 'allow', rule: null, file: null, message: '', reason: '', grantMs: 0, grantScope: 'connection', timeoutMs: 120000, statementIndex: 0 }),
  };
}
