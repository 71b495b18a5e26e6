/**
 * A matching deny wins regardless of order; allow and step-up keep first-match order. `rules check` warns
 * (file:line, and the fix) about rules that can never decide; `rules explain` lists the rules that also
 * matched and why the deciding one decided.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { rulesCheck, rulesExplain } from '../../src/commands/rules.js';
import { shippedRulesDir } from '../../src/rules/package-root.js';
import { compile, compileFiles, memoryIO, statement, subject, tempDir } from './helpers.js';

const exportCustomers = statement({ sql: 'COPY customers TO STDOUT', command: 'COPY', classes: ['export'], tables: [{ schema: null, name: 'customers', access: 'read' }] });
const exportOrders = statement({ sql: 'COPY orders TO STDOUT', command: 'COPY', classes: ['export'], tables: [{ schema: null, name: 'orders', access: 'read' }] });

t.test('a later deny overrides an earlier step-up (the issue: 10-mine.yaml after the shipped step-up-export)', async (t) => {
  const defaults = await readFile(join(shippedRulesDir(), '00-defaults.yaml'), 'utf8');
  const rules = compile({
    '00-defaults.yaml': defaults,
    '10-mine.yaml': 'rules:\n  - name: no-customer-exports\n    match: {class: export, tables: [customers]}\n    action: deny\n    message: Customer data does not leave the database.\n',
  });
  const d = rules.decide([exportCustomers], subject());
  t.match(d, { action: 'deny', rule: 'no-customer-exports', file: '10-mine.yaml', message: 'Customer data does not leave the database.' });
  t.match(rules.decide([exportOrders], subject()), { action: 'step-up', rule: 'step-up-export' }, 'other exports still ask for step-up');
});

t.test('allow and step-up keep first-match order; the first matching deny decides among denies', async (t) => {
  const rules = compile({
    '00.yaml': `default: allow
rules:
  - {name: allow-reporting-exports, match: {class: export, application: [reporting]}, action: allow}
  - {name: ask-exports, match: {class: export}, action: step-up}
  - {name: deny-all-pii, match: {tables: [customers]}, action: deny, message: first deny}
  - {name: deny-customer-exports, match: {class: export, tables: [customers]}, action: deny, message: second deny}
`,
  });
  t.match(rules.decide([exportOrders], subject({ application: 'reporting' })), { action: 'allow', rule: 'allow-reporting-exports' }, 'an earlier allow refines a later step-up');
  t.match(rules.decide([exportOrders], subject()), { action: 'step-up', rule: 'ask-exports' });
  t.match(rules.decide([exportCustomers], subject({ application: 'reporting' })), { action: 'deny', rule: 'deny-all-pii', message: 'first deny' }, 'the allow cannot undo a deny; the first deny decides');
  t.match(rules.decide([statement(), exportCustomers], subject()), { action: 'deny', statementIndex: 1 }, 'per statement, then the strictest');
});

t.test('a deny after a catch-all that does not deny is valid; other rules after a catch-all are errors', async (t) => {
  const ok = compileFiles({ '00.yaml': 'rules:\n  - {name: everything, match: {}, action: step-up}\n  - {name: never-drop, match: {command: DROP TABLE}, action: deny}\n' });
  t.ok(ok.ok, 'a deny after a step-up catch-all can still decide');
  if (ok.ok) t.match(ok.rules.ruleSet.decide([statement({ command: 'DROP TABLE', commands: ['DROP TABLE'], classes: ['ddl'] })], subject()), { action: 'deny', rule: 'never-drop' });
  const bad = compileFiles({ '00.yaml': 'rules:\n  - {name: everything, match: {}, action: step-up}\n  - {name: late, match: {class: ddl}, action: allow}\n' });
  t.notOk(bad.ok);
  if (!bad.ok) t.match(bad.errors[0]?.message, /rule `late` can never match/);
  const afterDeny = compileFiles({ '00.yaml': 'rules:\n  - {name: nothing, match: {}, action: deny}\n  - {name: late-deny, match: {class: ddl}, action: deny}\n' });
  t.notOk(afterDeny.ok, 'after a deny catch-all even a deny cannot decide');
});

t.test('rules check warns about rules that can never decide, with file:line and a fix; exit 0', async (t) => {
  const dir = await tempDir(t, {
    '00-site.yaml': `default: allow
rules:
  - name: ask-writes
    match: {class: [write, ddl]}
    action: step-up
  - name: ask-prod-writes
    match: {class: write, database: ["prod*"]}
    action: step-up
    message: shadowed by ask-writes
  - name: allow-scratch-writes
    match: {class: write, tables: [scratch]}
    action: allow
  - name: deny-drops
    match: {command: ["DROP *"]}
    action: deny
  - name: deny-drop-table
    match: {command: DROP TABLE}
    action: deny
  - name: ask-drop-index
    match: {command: DROP INDEX, user: [alice]}
    action: step-up
  - name: deny-prod-exports
    match: {class: export, database: [prod]}
    action: deny
  - name: ask-truncate
    match: {command: TRUNCATE TABLE}
    action: step-up
`,
    '10-late.yaml': `rules:
  - name: ask-exports-everywhere
    match: {class: export}
    action: step-up
  - name: deny-exports-prod-eu
    match: {class: export, database: [prod]}
    action: deny
  - name: deny-truncate
    match: {command: [TRUNCATE TABLE]}
    action: deny
`,
  });
  const io = memoryIO();
  t.equal(await rulesCheck([dir], io.io), 0, 'warnings do not fail the check');
  const out = io.out;
  const site = join(dir, '00-site.yaml');
  t.match(out, `${site}:6:5: warning: rule \`ask-prod-writes\` (step-up) can never decide: rule \`ask-writes\` (step-up) at ${site}:3:5 matches every statement it matches and comes first\n    fix: move \`ask-prod-writes\` before \`ask-writes\``);
  t.match(out, `${site}:10:5: warning: rule \`allow-scratch-writes\` (allow) can never decide: rule \`ask-writes\` (step-up) at ${site}:3:5`, 'an allow after a broader step-up');
  t.match(out, `${site}:16:5: warning: rule \`deny-drop-table\` can never decide: the deny rule \`deny-drops\` at ${site}:13:5 matches every statement it matches and comes first`, 'a deny after a broader deny (its message is never shown)');
  t.match(out, `${site}:19:5: warning: rule \`ask-drop-index\` (step-up) can never decide: the deny rule \`deny-drops\` at ${site}:13:5 matches every statement it matches, and a matching deny wins regardless of order`);
  t.match(out, `    fix: narrow the match of \`deny-drops\``);
  t.match(out, `${join(dir, '10-late.yaml')}:5:5: warning: rule \`deny-exports-prod-eu\` can never decide: the deny rule \`deny-prod-exports\``);
  t.match(out, `${site}:25:5: warning: rule \`ask-truncate\` (step-up) can never decide: the deny rule \`deny-truncate\` at ${join(dir, '10-late.yaml')}:8:5 matches every statement it matches, and a matching deny wins regardless of order`, 'a later deny overrides it');
  t.notMatch(out, 'ask-exports-everywhere` (step-up) can never decide', 'a step-up that an earlier deny covers only in part can decide');
  t.notMatch(out, '`deny-prod-exports` can never decide', 'a deny after a step-up that covers it still decides');
  t.match(out, /rules OK: 2 files, 11 rules, default allow \(00-site\.yaml\); 0 test files, 0 cases; 6 warnings\n$/);
});

t.test('the shipped rules have no rule that can never decide', async (t) => {
  const io = memoryIO();
  t.equal(await rulesCheck([], io.io), 0);
  t.notMatch(io.out, 'warning');
});

t.test('rules explain: the rules that also matched, and why the deciding one decided', async (t) => {
  const defaults = await readFile(join(shippedRulesDir(), '00-defaults.yaml'), 'utf8');
  const dir = await tempDir(t, {
    '00-defaults.yaml': defaults,
    '10-mine.yaml': 'rules:\n  - name: no-customer-exports\n    match: {class: export, tables: [customers]}\n    action: deny\n',
  });
  const io = memoryIO();
  t.equal(await rulesExplain(['--rules', dir, 'COPY customers TO STDOUT'], io.io), 0, io.err);
  t.match(io.out, 'decided by rule no-customer-exports (10-mine.yaml:2): deny');
  t.match(io.out, 'because    a matching deny rule wins regardless of order (`step-up-export` came first)');
  t.match(io.out, /also {7}rule step-up-export \(00-defaults\.yaml:\d+\): step-up — overridden: a matching deny wins regardless of order/);
  t.match(io.out, 'Decision: DENY by rule no-customer-exports (10-mine.yaml)');

  const later = memoryIO();
  t.equal(await rulesExplain(['--rules', dir, '--json', 'CREATE EXTENSION dblink'], later.io), 0);
  const json = JSON.parse(later.out) as { statements: { decision: { rule: string; why: string; alsoMatched: { rule: string; action: string; note: string }[] } }[] };
  t.match(json.statements[0]!.decision, {
    rule: 'step-up-admin',
    why: 'the first matching rule (no deny rule matched)',
    alsoMatched: [{ rule: 'step-up-ddl', action: 'step-up', note: 'came later: the first matching rule decides' }],
  });
});
