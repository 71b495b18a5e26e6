/**
 * Rules that can never decide anything: another rule matches every statement they match and always
 * comes first in the decision (see decide.ts: a matching deny wins regardless of order, otherwise the
 * first match decides). `stepgate rules check` prints them as warnings (file:line and how to fix it);
 * they do not make the rule set invalid.
 *
 * The check is conservative: rule E covers rule R when, for every match key E has, R has it too and each
 * of R's patterns is one of E's, or matched by one of E's globs when it is a plain name (a key E lacks
 * holds for everything). It can miss a shadowed rule (`class: [read]` in R, `class: [read, write]` in E
 * written with different keys), but never reports one that can decide. Matching direction matters: a
 * deny or step-up rule holds when ANY part of the statement matches, an allow rule only when ALL do (see
 * match.ts), so an allow rule covers a deny or step-up rule only on keys without that difference.
 */
import { compileGlobList, isWildcard } from './glob.js';
import { formatPosition, type RuleError } from './errors.js';
import { MATCH_KEYS, type MatchKey, type MatchSpec, type RuleSpec } from './schema.js';

/** A warning about a rule: where it is, what is wrong, how to fix it (the shape of RuleError). */
export type RuleWarning = RuleError;

/** Keys where an allow rule needs ALL of the statement's items to match, a deny or step-up rule ANY. */
const COVERING_KEYS: ReadonlySet<MatchKey> = new Set(['class', 'command', 'tables', 'columns', 'functions']);
/** Keys matched case-insensitively (SQL names). */
const CASE_INSENSITIVE: ReadonlySet<MatchKey> = new Set(['command', 'tables', 'columns', 'functions', 'user', 'database']);

/** True when every statement (and subject) that `later` matches is matched by `earlier` too. */
export function covers(earlier: RuleSpec, later: RuleSpec): boolean {
  for (const key of MATCH_KEYS) {
    const e = earlier.match[key];
    if (e === undefined) continue;
    const l = later.match[key];
    if (l === undefined) return false;
    if (!keyCovers(key, e, l, earlier.action === 'allow', later.action === 'allow')) return false;
  }
  return true;
}

function keyCovers(key: MatchKey, e: NonNullable<MatchSpec[MatchKey]>, l: NonNullable<MatchSpec[MatchKey]>, eAll: boolean, lAll: boolean): boolean {
  // An allow rule (ALL of the statement's items) does not hold for every statement a deny or step-up
  // rule (ANY item) matches: that statement may have other items too.
  if (COVERING_KEYS.has(key) && eAll && !lAll) return false;
  switch (key) {
    case 'tls':
      return e === l;
    case 'signals':
      // The same signals with the same parameters; anything else is not known to cover.
      return JSON.stringify(e) === JSON.stringify(l);
    case 'time':
      return (l as { text: string }[]).every((w) => (e as { text: string }[]).some((x) => x.text === w.text));
    case 'class':
    case 'flags':
      return (l as string[]).every((x) => (e as string[]).includes(x));
    case 'client':
      return (l as string[]).every((x) => (e as string[]).includes(x));
    case 'tables':
    case 'columns':
    case 'functions':
      // Qualified and unqualified names match in ways that depend on the rule's action (search_path):
      // only the same pattern, or `*`, is known to cover.
      return (l as string[]).every((p) => (e as string[]).some((q) => q === '*' || q.toLowerCase() === p.toLowerCase()));
    default: {
      // command, user, database, application, groups: plain globs.
      const ci = CASE_INSENSITIVE.has(key);
      const globs = compileGlobList(e as string[], ci);
      return (l as string[]).every((p) => (e as string[]).some((q) => q === '*' || (ci ? q.toLowerCase() === p.toLowerCase() : q === p)) || (!isWildcard(p) && globs(p)));
    }
  }
}

/**
 * Every rule that can never decide, with the rule that keeps it from deciding. `rules` in evaluation
 * order (files in name order, rules in file order).
 */
export function shadowedRules(all: readonly RuleSpec[]): RuleWarning[] {
  // Rules about logins (`on: connect`) and about statements never decide for each other.
  const rules = all.filter((r) => r.on !== 'connect');
  const warnings: RuleWarning[] = [];
  const overriddenBy = (rule: RuleSpec, deny: RuleSpec): RuleWarning => ({
    ...rule.at,
    message: `rule \`${rule.name}\` (${rule.action}) can never decide: the deny rule \`${deny.name}\` at ${formatPosition(deny.at)} matches every statement it matches, and a matching deny wins regardless of order`,
    fix: `narrow the match of \`${deny.name}\` (so that it leaves these statements to \`${rule.name}\`), or remove \`${rule.name}\``,
  });
  rules.forEach((rule, j) => {
    for (let i = 0; i < j; i++) {
      const earlier = rules[i]!;
      // An earlier allow or step-up cannot keep a deny from deciding: the deny overrides it.
      if (rule.action === 'deny' && earlier.action !== 'deny') continue;
      if (!covers(earlier, rule)) continue;
      if (rule.action !== 'deny' && earlier.action === 'deny') {
        warnings.push(overriddenBy(rule, earlier));
        return;
      }
      warnings.push(
        rule.action === 'deny'
          ? {
              ...rule.at,
              message: `rule \`${rule.name}\` can never decide: the deny rule \`${earlier.name}\` at ${formatPosition(earlier.at)} matches every statement it matches and comes first (the first matching deny decides, so this rule's message is never shown)`,
              fix: `remove \`${rule.name}\`, or move it before \`${earlier.name}\` if its message should be the one people see`,
            }
          : {
              ...rule.at,
              message: `rule \`${rule.name}\` (${rule.action}) can never decide: rule \`${earlier.name}\` (${earlier.action}) at ${formatPosition(earlier.at)} matches every statement it matches and comes first`,
              fix: `move \`${rule.name}\` before \`${earlier.name}\` (earlier in its file, or into a file that sorts first), narrow the match of \`${earlier.name}\`, or remove \`${rule.name}\``,
            },
      );
      return;
    }
    if (rule.action === 'deny') return;
    // A deny anywhere that matches everything this rule matches overrides it.
    for (let i = j + 1; i < rules.length; i++) {
      const deny = rules[i]!;
      if (deny.action !== 'deny' || !covers(deny, rule)) continue;
      warnings.push(overriddenBy(rule, deny));
      return;
    }
  });
  return warnings;
}
