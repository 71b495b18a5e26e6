/**
 * Deciding, for each statement: a matching `deny` rule wins regardless of order (the first matching deny
 * in file and rule order decides, so its message is the one shown); when no deny rule matches, the first
 * matching rule decides (files in name order, rules in file order), else the default. For the message the
 * strictest of those (deny > step-up > allow; ties: earliest statement).
 *
 * Why deny overrides: an explicit deny is the strongest thing a rule file can say, and one that applies
 * only when no earlier rule happens to match is easily ignored in silence (a site rule denying exports of
 * `customers` placed after the shipped `step-up-export`). As in most policy languages (AWS IAM, XACML's
 * deny-overrides), a matching deny cannot be undone by an allow or step-up elsewhere; `allow` and
 * `step-up` keep first-match order, so an earlier allow can still refine a shipped step-up.
 * Runs for every statement the proxy sees, so everything that can be is done when rules load.
 */
import type { StatementInfo } from '../sql/types.js';
import { classMask, compileMatch, flagMask, matches, type CompiledMatch, type MatchInput } from './match.js';
import { DEFAULT_TIMEOUT_MS, type RuleSpec } from './schema.js';
import type { Action, Decision, RowsFact, RuleSet, StepUpRequirement, Subject } from './types.js';

const RANK: Record<Action, number> = { allow: 0, 'step-up': 1, deny: 2 };

export interface CompiledRule {
  spec: RuleSpec;
  match: CompiledMatch;
}

/** The rule (or the default, rule null) that decided one statement. */
export interface StatementVerdict {
  statementIndex: number;
  action: Action;
  rule: CompiledRule | null;
  /** Every rule whose match held, in order, the deciding one included (for `rules explain`). */
  matched: CompiledRule[];
}

export class CompiledRuleSet implements RuleSet {
  /** Rules about statements, in order. */
  readonly rules: readonly CompiledRule[];
  /** Rules about logins (`on: connect`), in order. */
  readonly connectRules: readonly CompiledRule[];

  constructor(
    rules: readonly RuleSpec[],
    /** Action when no rule matches. */
    readonly defaultAction: Action,
    /** File that set the default, relative to the rules directory; null when the built-in fallback applies. */
    readonly defaultFile: string | null,
  ) {
    this.rules = rules.filter((spec) => spec.on !== 'connect').map((spec) => ({ spec, match: compileMatch(spec.match, spec.action === 'allow') }));
    this.connectRules = rules.filter((spec) => spec.on === 'connect').map((spec) => ({ spec, match: compileMatch(spec.match, false) }));
    this.lastDeny = this.rules.findLastIndex((r) => r.spec.action === 'deny');
  }

  /** Index of the last deny rule (-1: none): past it, the first match is final. */
  private readonly lastDeny: number;

  decide(statements: StatementInfo[], subject: Subject, rows?: RowsFact | null): Decision {
    if (statements.length === 0) {
      // Nothing will run (an empty query string): there is nothing to hold back.
      return {
        action: 'allow',
        rule: null,
        file: null,
        message: '',
        reason: 'the message holds no statement',
        grantMs: 0,
        grantScope: 'connection',
        timeoutMs: 0,
        statementIndex: -1,
      };
    }
    const input: MatchInput = { statement: statements[0]!, classMask: 0, flagMask: 0, subject, rows, rowsMatter: false };
    let bestIndex = -1;
    let bestRank = -1;
    let bestRule: CompiledRule | null = null;
    let stepUps: StepUpRequirement[] | undefined;
    let bestSignals: string[] | undefined;
    for (let i = 0; i < statements.length; i++) {
      const rule = this.firstMatch(statements[i]!, input);
      const action = rule === null ? this.defaultAction : rule.spec.action;
      if (action === 'step-up') stepUps = this.addStepUp(stepUps, rule, i, input);
      const rank = RANK[action];
      if (rank > bestRank) {
        bestRank = rank;
        bestIndex = i;
        bestRule = rule;
        bestSignals = rule?.match.signals?.(input);
        if (action === 'deny') break; // Nothing is stricter; the earliest deny wins.
      }
    }
    const decision = this.decision(bestRule, statements, bestIndex);
    if (bestSignals && bestSignals.length > 0) decision.signals = bestSignals;
    if (rows !== undefined) decision.rows = rows;
    // Unknown rows match only rules that deny or ask: counting them can only make the decision milder. A deny
    // by a rule that does not look at rows stays a deny (a denied statement is never run to count it).
    else if (decision.action !== 'allow' && (decision.maxRows !== undefined || (input.rowsMatter && (decision.action !== 'deny' || bestRule?.spec.match.rows !== undefined)))) {
      decision.measureRows = true;
    }
    if (decision.action === 'step-up' && stepUps !== undefined) {
      decision.stepUps = stepUps;
      // A message held by several rules waits no longer than the strictest of them allows.
      for (const s of stepUps) if (s.timeoutMs > 0 && s.timeoutMs < decision.timeoutMs) decision.timeoutMs = s.timeoutMs;
    }
    return decision;
  }

  /** The verdict for each statement on its own, with every rule that matched it (for `rules explain`). */
  decideEach(statements: StatementInfo[], subject: Subject): StatementVerdict[] {
    const input: MatchInput = { statement: statements[0]!, classMask: 0, flagMask: 0, subject };
    return statements.map((statement, statementIndex) => {
      const rule = this.firstMatch(statement, input);
      const matched = this.rules.filter((r) => matches(r.match, input));
      return { statementIndex, rule, action: rule === null ? this.defaultAction : rule.spec.action, matched };
    });
  }

  /**
   * The rule that decides `statement`: the first matching deny rule, else the first matching rule; null
   * when none matches. `input` is reused to avoid allocating per statement.
   */
  private firstMatch(statement: StatementInfo, input: MatchInput): CompiledRule | null {
    input.statement = statement;
    input.classMask = classMask(statement.classes);
    input.flagMask = flagMask(statement.flags);
    const rules = this.rules;
    let first: CompiledRule | null = null;
    for (let r = 0; r < rules.length; r++) {
      const rule = rules[r]!;
      // Once a rule matched, only a deny further on can change the verdict.
      if (first !== null && (r > this.lastDeny || rule.spec.action !== 'deny')) {
        if (r > this.lastDeny) break;
        continue;
      }
      if (!matches(rule.match, input)) continue;
      if (rule.spec.action === 'deny') return rule;
      first = rule;
    }
    return first;
  }

  /**
   * The login itself: the first matching `on: connect` deny rule, else the first matching connect
   * step-up rule; null when none matches. Only subject keys are matched (no statement yet).
   */
  decideConnect(subject: Subject): Decision | null {
    if (this.connectRules.length === 0) return null;
    const input: MatchInput = { statement: NO_STATEMENT, classMask: 0, flagMask: 0, subject };
    let chosen: CompiledRule | null = null;
    for (const rule of this.connectRules) {
      if (!matches(rule.match, input)) continue;
      if (rule.spec.action === 'deny') {
        chosen = rule;
        break;
      }
      chosen ??= rule;
    }
    if (chosen === null) return null;
    const spec = chosen.spec;
    const signals = chosen.match.signals?.(input) ?? [];
    const requirement: StepUpRequirement = {
      rule: spec.name,
      file: spec.file,
      statementIndex: -1,
      grantMs: 0,
      grantScope: 'connection',
      timeoutMs: spec.timeoutMs,
      ...(spec.approvers ? { approvers: spec.approvers } : {}),
      ...(spec.factors ? { factors: spec.factors } : {}),
      ...(signals.length ? { signals } : {}),
      ...(spec.notify ? { notify: spec.notify } : {}),
    };
    return {
      action: spec.action,
      rule: spec.name,
      file: spec.file,
      message: spec.message,
      reason: `the login matched rule \`${spec.name}\` (${spec.file}): ${chosen.match.summary}`,
      grantMs: 0,
      grantScope: 'connection',
      timeoutMs: spec.timeoutMs,
      ...(spec.approvers ? { approvers: spec.approvers } : {}),
      ...(spec.factors ? { factors: spec.factors } : {}),
      ...(signals.length ? { signals } : {}),
      statementIndex: -1,
      ...(spec.action === 'step-up' ? { stepUps: [requirement] } : {}),
    };
  }

  private addStepUp(list: StepUpRequirement[] | undefined, rule: CompiledRule | null, statementIndex: number, input: MatchInput): StepUpRequirement[] {
    const name = rule === null ? null : rule.spec.name;
    if (list?.some((entry) => entry.rule === name)) return list;
    const signals = rule?.match.signals?.(input);
    const entry: StepUpRequirement = rule === null
      ? { rule: null, file: this.defaultFile, statementIndex, grantMs: 0, grantScope: 'connection', timeoutMs: DEFAULT_TIMEOUT_MS }
      : {
          rule: rule.spec.name,
          file: rule.spec.file,
          statementIndex,
          grantMs: rule.spec.grantMs,
          grantScope: rule.spec.grantScope,
          timeoutMs: rule.spec.timeoutMs,
          ...(rule.spec.approvers ? { approvers: rule.spec.approvers } : {}),
          ...(rule.spec.factors ? { factors: rule.spec.factors } : {}),
          ...(signals && signals.length ? { signals } : {}),
          ...(rule.spec.notify ? { notify: rule.spec.notify } : {}),
        };
    return list === undefined ? [entry] : [...list, entry];
  }

  private decision(rule: CompiledRule | null, statements: StatementInfo[], index: number): Decision {
    const statement = statements[index]!;
    const which = statements.length === 1 ? `statement 1 (${statement.command})` : `statement ${index + 1} of ${statements.length} (${statement.command})`;
    if (rule === null) {
      const source = this.defaultFile === null ? 'no rule file sets `default`, so stepgate fails closed' : `from ${this.defaultFile}`;
      return {
        action: this.defaultAction,
        rule: null,
        file: this.defaultFile,
        message: '',
        reason: `${which}: no rule matched; default ${this.defaultAction} (${source})`,
        grantMs: 0,
        grantScope: 'connection',
        timeoutMs: this.defaultAction === 'step-up' ? DEFAULT_TIMEOUT_MS : 0,
        statementIndex: index,
      };
    }
    const spec = rule.spec;
    return {
      action: spec.action,
      rule: spec.name,
      file: spec.file,
      message: spec.message,
      reason: `${which} matched rule \`${spec.name}\` (${spec.file}): ${rule.match.summary}`,
      grantMs: spec.grantMs,
      grantScope: spec.grantScope,
      timeoutMs: spec.timeoutMs,
      ...(spec.approvers ? { approvers: spec.approvers } : {}),
      ...(spec.preview ? { preview: true } : {}),
      ...(spec.maxRows !== undefined ? { maxRows: spec.maxRows } : {}),
      ...(spec.factors ? { factors: spec.factors } : {}),
      statementIndex: index,
    };
  }
}

/** What connect rules are matched with: no statement (they may not use statement keys). */
const NO_STATEMENT: StatementInfo = Object.freeze({
  sql: '',
  command: '',
  commands: [],
  classes: [],
  tables: [],
  columns: [],
  functions: [],
  flags: [],
  reasons: [],
}) as unknown as StatementInfo;
