/** Ordering: first match across files (denies aside: see deny-wins.test.ts), strictest statement wins, defaults, and what a Decision carries. */
import t from 'tap';
import { compile, statement, subject } from './helpers.js';

const write = statement({ sql: 'DELETE FROM orders', command: 'DELETE', classes: ['write'], flags: ['no_where'] });
const read = statement({ sql: 'SELECT 1' });
const ddl = statement({ sql: 'DROP TABLE t', command: 'DROP TABLE', classes: ['ddl'] });

const files = {
  '10-team.yaml': `rules:
  - name: team-writes
    match: {class: write}
    action: allow
`,
  '00-base.yaml': `default: allow
rules:
  - name: base-unbounded
    match: {flags: no_where}
    action: step-up
    message: Add a WHERE clause.
    grant: 10m
    grant_scope: user
    timeout: 30s
    approvers: {groups: [dba], count: 2}
  - name: base-writes
    match: {class: write}
    action: step-up
  - name: base-ddl
    match: {class: ddl}
    action: step-up
`,
};

t.test('first matching rule wins: files in name order, rules in file order', async (t) => {
  const rules = compile(files);
  const decision = rules.decide([write], subject());
  t.equal(decision.rule, 'base-unbounded', '00-base.yaml comes before 10-team.yaml, and its first rule matches');
  t.equal(decision.file, '00-base.yaml');
  t.equal(decision.action, 'step-up');
  t.equal(decision.message, 'Add a WHERE clause.');
  t.equal(decision.grantMs, 600_000);
  t.equal(decision.grantScope, 'user');
  t.equal(decision.timeoutMs, 30_000);
  t.same(decision.approvers, { groups: ['dba'], count: 2 });
  t.equal(decision.statementIndex, 0);
  t.match(decision.reason, /statement 1 \(DELETE\) matched rule `base-unbounded` \(00-base\.yaml\): flags no_where/);
});

t.test('a later rule applies when earlier ones do not match', async (t) => {
  const rules = compile(files);
  const bounded = statement({ command: 'DELETE', classes: ['write'] });
  t.equal(rules.decide([bounded], subject()).rule, 'base-writes', 'not team-writes: 00-base.yaml is first');
});

t.test('renaming a file changes the order', async (t) => {
  const rules = compile({ '00-team.yaml': files['10-team.yaml'], '10-base.yaml': files['00-base.yaml'] });
  const bounded = statement({ command: 'DELETE', classes: ['write'] });
  t.equal(rules.decide([bounded], subject()).rule, 'team-writes');
});

t.test('no rule matches: the default decides', async (t) => {
  const rules = compile(files);
  const decision = rules.decide([read], subject());
  t.equal(decision.action, 'allow');
  t.equal(decision.rule, null);
  t.equal(decision.file, '00-base.yaml');
  t.match(decision.reason, /no rule matched; default allow \(from 00-base\.yaml\)/);
});

t.test('no file sets a default: step-up (fail closed)', async (t) => {
  const rules = compile({ 'a.yaml': 'rules:\n  - name: x\n    match: {class: ddl}\n    action: deny\n' });
  const decision = rules.decide([read], subject());
  t.equal(decision.action, 'step-up');
  t.equal(decision.file, null);
  t.equal(decision.timeoutMs, 120_000);
  t.match(decision.reason, /fails closed/);
});

t.test('defaults in several files must agree; agreeing is fine', async (t) => {
  const rules = compile({ 'a.yaml': 'default: deny\n', 'b.yaml': 'default: deny\nrules: []\n' });
  t.equal(rules.decide([read], subject()).action, 'deny');
});

t.test('several statements: the strictest decision wins, ties go to the earliest statement', async (t) => {
  const rules = compile({
    '00.yaml': `default: allow
rules:
  - {name: deny-drop, match: {command: DROP TABLE}, action: deny}
  - {name: ask-writes, match: {class: write}, action: step-up}
  - {name: ask-ddl, match: {class: ddl}, action: step-up}
`,
  });
  const create = statement({ command: 'CREATE TABLE', classes: ['ddl'] });
  const cases = [
    { statements: [read, write], action: 'step-up', rule: 'ask-writes', index: 1, why: 'step-up beats allow' },
    { statements: [write, ddl, read], action: 'deny', rule: 'deny-drop', index: 1, why: 'deny beats step-up' },
    { statements: [create, write], action: 'step-up', rule: 'ask-ddl', index: 0, why: 'tie: earliest statement' },
    { statements: [ddl, ddl], action: 'deny', rule: 'deny-drop', index: 0, why: 'tie between denies: earliest' },
    { statements: [read, read], action: 'allow', rule: null, index: 0, why: 'all allowed: the first statement' },
  ] as const;
  for (const c of cases) {
    const decision = rules.decide([...c.statements], subject());
    t.equal(decision.action, c.action, c.why);
    t.equal(decision.rule, c.rule, c.why);
    t.equal(decision.statementIndex, c.index, c.why);
  }
  const mixed = rules.decide([create, write, statement({ command: 'CREATE TABLE', classes: ['ddl'] })], subject());
  t.same(
    mixed.stepUps?.map((s) => [s.rule, s.statementIndex]),
    [
      ['ask-ddl', 0],
      ['ask-writes', 1],
    ],
    'every step-up rule of the message is listed once, so one grant cannot cover another rule',
  );
  t.match(rules.decide([read, write], subject()).reason, /statement 2 of 2 \(DELETE\)/);
});

t.test('an empty message is allowed with statementIndex -1', async (t) => {
  const decision = compile(files).decide([], subject());
  t.equal(decision.action, 'allow');
  t.equal(decision.statementIndex, -1);
});

t.test('allow and deny decisions carry no step-up settings', async (t) => {
  const rules = compile({ '00.yaml': 'default: allow\nrules:\n  - {name: no-deletes, match: {command: DELETE}, action: deny}\n' });
  const decision = rules.decide([statement({ command: 'DELETE', classes: ['write'] })], subject());
  t.equal(decision.action, 'deny');
  t.equal(decision.grantMs, 0);
  t.equal(decision.timeoutMs, 0);
  t.equal(decision.approvers, undefined);
  t.equal(decision.stepUps, undefined);
});

t.test('decide is fast enough for every statement', async (t) => {
  const many = Array.from({ length: 200 }, (_, i) => `  - {name: r${i}, match: {tables: ["schema${i}.*"], class: write, user: ["svc_${i}*"]}, action: deny}`).join('\n');
  const rules = compile({ '00.yaml': `default: allow\nrules:\n${many}\n` });
  const who = subject();
  const runs = 5_000;
  const start = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) rules.decide([write], who);
  const perCallUs = Number(process.hrtime.bigint() - start) / 1000 / runs;
  t.ok(perCallUs < 200, `decide over 200 rules took ${perCallUs.toFixed(1)} µs per call`);
});

t.test('a message held by several rules waits no longer than the strictest timeout', async (t) => {
  const rules = compile({
    '00.yaml': `default: allow
rules:
  - name: slow
    match: {class: ddl}
    action: step-up
    timeout: 300s
  - name: quick
    match: {flags: no_where}
    action: step-up
    timeout: 30s
`,
  });
  const decision = rules.decide([ddl, write], subject());
  t.equal(decision.rule, 'slow', 'the earliest statement names the rule');
  t.equal(decision.timeoutMs, 30_000);
  t.same(decision.stepUps?.map((s) => s.rule), ['slow', 'quick']);
});
