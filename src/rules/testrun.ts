/** Running rule tests: decide each case's SQL and compare with what the case expects. */
import type { CompiledRuleSet } from './decide.js';
import { explain, type Classify, type Explanation } from './explain.js';
import { DEFAULT_RULE_NAME } from './schema.js';
import type { RuleTestCase } from './testfile.js';

export interface CaseResult {
  testCase: RuleTestCase;
  explanation: Explanation;
  passed: boolean;
  /** Why it failed: `expected deny, got step-up by rule x`; empty when passed. */
  problem: string;
}

export function runCase(testCase: RuleTestCase, classify: Classify, ruleSet: CompiledRuleSet): CaseResult {
  const explanation = explain(testCase.sql, classify, ruleSet, testCase.subject);
  const { decision } = explanation;
  const gotRule = decision.rule ?? DEFAULT_RULE_NAME;
  const actionOk = decision.action === testCase.expect;
  const ruleOk = testCase.rule === undefined || testCase.rule === gotRule;
  const expected = `${testCase.expect}${testCase.rule !== undefined ? ` by ${ruleLabel(testCase.rule)}` : ''}`;
  const got = `${decision.action} by ${ruleLabel(gotRule)}`;
  const passed = actionOk && ruleOk;
  return { testCase, explanation, passed, problem: passed ? '' : `expected ${expected}, got ${got}` };
}

function ruleLabel(name: string): string {
  return name === DEFAULT_RULE_NAME ? 'the default' : `rule ${name}`;
}
