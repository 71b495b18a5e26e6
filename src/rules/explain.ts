/**
 * What `rules explain` (and a failing `rules test` case) prints: how each statement was classified, which
 * rule decided it and why, and the decision for the whole message. Text for people, JSON for tools.
 */
import type { Classification, StatementInfo, TableRef } from '../sql/types.js';
import type { CompiledRuleSet, StatementVerdict } from './decide.js';
import { formatDuration } from '../util/units.js';
import { classMask, flagMask, type MatchInput } from './match.js';
import { describeSubject } from './subject.js';
import type { Decision, Subject } from './types.js';

/** A classifier as `rules explain` and `rules test` need it: the session context is fixed by the caller. */
export type Classify = (sql: string) => Classification & { unresolvedFunctions?: string[] };

export interface Explanation {
  classification: Classification & { unresolvedFunctions?: string[] };
  verdicts: StatementVerdict[];
  decision: Decision;
  subject: Subject;
  /** The login itself (rules with `on: connect`); undefined when the rule set has none. */
  connect?: Decision | null;
}

export function explain(sql: string, classify: Classify, ruleSet: CompiledRuleSet, subject: Subject): Explanation {
  const classification = classify(sql);
  return {
    classification,
    verdicts: ruleSet.decideEach(classification.statements, subject),
    decision: ruleSet.decide(classification.statements, subject),
    connect: ruleSet.connectRules.length ? ruleSet.decideConnect(subject) : undefined,
    subject,
  };
}

const LABEL_WIDTH = 11;
const line = (label: string, value: string) => `  ${label.padEnd(LABEL_WIDTH)}${value}`;
const list = (values: readonly string[]) => (values.length ? values.join(', ') : '-');

function tableText(table: TableRef): string {
  return table.schema === null ? `${table.name} ${table.access} (schema from search_path)` : `${table.schema}.${table.name} ${table.access}`;
}

/** Why the deciding rule decided, given every rule that matched. */
function deciderWhy(verdict: StatementVerdict): string | null {
  const rule = verdict.rule;
  if (rule === null) return null;
  const index = verdict.matched.indexOf(rule);
  if (rule.spec.action === 'deny') {
    const before = verdict.matched.slice(0, index).map((r) => r.spec.name);
    return before.length
      ? `a matching deny rule wins regardless of order (${before.map((n) => `\`${n}\``).join(', ')} came first)`
      : 'the first matching rule, and a deny';
  }
  return 'the first matching rule (no deny rule matched)';
}

/** The other rules that matched, each with why it did not decide. */
function alsoMatched(verdict: StatementVerdict): { rule: string; file: string; line: number; action: string; note: string }[] {
  const decider = verdict.rule;
  if (decider === null) return [];
  return verdict.matched
    .filter((r) => r !== decider)
    .map((r) => {
      // A non-deny decider is the first match: every other one came later.
      const note =
        decider.spec.action === 'deny'
          ? r.spec.action === 'deny'
            ? 'a later deny: the first matching deny decides'
            : 'overridden: a matching deny wins regardless of order'
          : 'came later: the first matching rule decides';
      return { rule: r.spec.name, file: r.spec.file, line: r.spec.at.line, action: r.spec.action, note };
    });
}

function matchedText(verdict: StatementVerdict, statement: StatementInfo, subject: Subject): string[] {
  if (verdict.rule === null) return [];
  const input: MatchInput = { statement, classMask: classMask(statement.classes), flagMask: flagMask(statement.flags), subject };
  if (verdict.rule.match.checks.length === 0) return ['every statement (empty match)'];
  return verdict.rule.match.checks.map((check) => `${check.key} ${check.patterns}: ${check.witness(input) || '(held)'}`);
}

export function formatExplanationText(explanation: Explanation): string {
  const { classification, verdicts, decision, subject } = explanation;
  const out: string[] = [];
  out.push(`Subject: ${describeSubject(subject)}`);
  if (subject.signals) out.push(`Signals: ${signalsText(subject)}`);
  if (explanation.connect !== undefined) {
    const c = explanation.connect;
    out.push(c === null ? 'Login: no rule with `on: connect` matches: the login goes on' : `Login: ${c.action.toUpperCase()} by rule ${c.rule} (${c.file})${c.signals?.length ? `; signals: ${c.signals.join('; ')}` : ''}`);
  }
  if (classification.error) {
    out.push(`Parse error at position ${classification.error.position}: ${classification.error.message} (the statement is treated as unknown)`);
  }
  const count = classification.statements.length;
  classification.statements.forEach((statement, i) => {
    const verdict = verdicts[i]!;
    out.push('');
    out.push(`Statement ${i + 1}${count > 1 ? ` of ${count}` : ''}: ${oneLine(statement.sql)}`);
    out.push(line('command', statement.commands.length > 1 ? `${statement.command} (runs ${statement.commands.filter((c) => c !== statement.command).join(', ')})` : statement.command));
    out.push(line('classes', list(statement.classes)));
    out.push(line('tables', list(statement.tables.map(tableText))));
    out.push(line('columns', list(statement.columns)));
    out.push(line('functions', list(statement.functions)));
    out.push(line('flags', list(statement.flags)));
    statement.reasons.forEach((reason, r) => out.push(line(r === 0 ? 'reasons' : '', reason)));
    if (statement.prepare) out.push(line('prepares', `${statement.prepare.name}: ${statement.prepare.statement.command} (${list(statement.prepare.statement.classes)})`));
    if (verdict.rule === null) {
      out.push(line('decided by', `no rule matched: default ${verdict.action}`));
    } else {
      out.push(line('decided by', `rule ${verdict.rule.spec.name} (${verdict.rule.spec.file}:${verdict.rule.spec.at.line}): ${verdict.action}`));
      out.push(line('because', deciderWhy(verdict)!));
      matchedText(verdict, statement, subject).forEach((text, m) => out.push(line(m === 0 ? 'matched' : '', text)));
      for (const also of alsoMatched(verdict)) out.push(line('also', `rule ${also.rule} (${also.file}:${also.line}): ${also.action} — ${also.note}`));
    }
  });
  if (classification.unresolvedFunctions?.length) {
    out.push('');
    out.push(
      `Functions not known to be read-only, treated as procedural: ${classification.unresolvedFunctions.join(', ')} ` +
        '(the proxy asks the server for their volatility, so a STABLE or IMMUTABLE function may be read there)',
    );
  }
  out.push('');
  out.push(`Decision: ${decision.action.toUpperCase()}${decision.rule ? ` by rule ${decision.rule} (${decision.file})` : decision.statementIndex >= 0 ? ` by the default${decision.file ? ` (${decision.file})` : ''}` : ''}`);
  out.push(line('why', decision.reason));
  if (decision.signals?.length) out.push(line('signals', decision.signals.join('; ')));
  if (decision.message) out.push(line('message', decision.message));
  if (decision.action === 'step-up') {
    const who = decision.approvers
      ? `${decision.approvers.count} approval${decision.approvers.count === 1 ? '' : 's'} from ${decision.approvers.groups.join(' or ')} (not the author)`
      : `the author approves with ${decision.factors?.length === 1 && decision.factors[0] === 'passkey' ? 'their passkey (factors: passkey)' : 'a passkey or an authenticator app code'}`;
    out.push(line('approval', who));
    out.push(line('timeout', formatDuration(decision.timeoutMs)));
    out.push(line('grant', decision.grantMs ? `${formatDuration(decision.grantMs)} per ${decision.grantScope}` : 'none (asks every time)'));
    if (decision.stepUps && decision.stepUps.length > 1) {
      out.push(line('also held', decision.stepUps.slice(1).map((s) => `statement ${s.statementIndex + 1} by ${s.rule ?? 'the default'}`).join('; ')));
    }
  }
  return `${out.join('\n')}\n`;
}

/** What the subject's signal records say, in one line. */
function signalsText(subject: Subject): string {
  const s = subject.signals!;
  const now = subject.now.getTime();
  const parts = [
    s.networkLastSeen === null ? 'new client address' : null,
    s.applicationLastSeen === null ? 'new application' : null,
    s.failures.length ? `${s.failures.length} failed login${s.failures.length === 1 ? '' : 's'} in the last ${formatDuration(now - Math.min(...s.failures))}` : null,
    s.firstAccess && s.firstAccess('', { schema: null, name: '' }) ? 'first access to every table' : null,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : 'none';
}

function oneLine(sql: string): string {
  const text = sql.replace(/\s+/g, ' ').trim();
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

/** The `--json` shape: `{statements: [...], decision: {...}}` plus subject and parse details. */
export function explanationJson(explanation: Explanation): Record<string, unknown> {
  const { classification, verdicts, decision, subject } = explanation;
  return {
    subject: { ...subject, now: subject.now.toISOString(), ...(subject.signals ? { signals: signalsText(subject) } : {}) },
    ...(explanation.connect !== undefined ? { connect: explanation.connect } : {}),
    statements: classification.statements.map((statement, i) => ({
      sql: statement.sql,
      command: statement.command,
      commands: statement.commands,
      classes: statement.classes,
      tables: statement.tables.map(({ schema, name, access }) => ({ schema, name, access })),
      columns: statement.columns,
      functions: statement.functions,
      flags: statement.flags,
      reasons: statement.reasons,
      decision: {
        action: verdicts[i]!.action,
        rule: verdicts[i]!.rule?.spec.name ?? null,
        file: verdicts[i]!.rule?.spec.file ?? null,
        matched: matchedText(verdicts[i]!, statement, subject),
        why: deciderWhy(verdicts[i]!),
        alsoMatched: alsoMatched(verdicts[i]!),
      },
    })),
    ...(classification.error ? { error: classification.error } : {}),
    ...(classification.unresolvedFunctions?.length ? { unresolvedFunctions: classification.unresolvedFunctions } : {}),
    decision,
  };
}
