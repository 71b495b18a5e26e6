/**
 * Risk signals (`match: {signals: ...}`), `factors:` and `on: connect` in rule files: validation with
 * file:line:column and a fix, matching against the records a login carries, the signals that fired in
 * the decision (card, audit trail), and the login decision of connect rules.
 */
import t from 'tap';
import { formatRuleError } from '../../src/rules/errors.js';
import { signalsFromOptions } from '../../src/commands/rules.js';
import type { SubjectSignals } from '../../src/rules/types.js';
import { compile, compileFiles, statement, subject } from './helpers.js';

const NOW = new Date('2024-01-08T10:00:00Z').getTime();
const DAY = 86_400_000;

function signals(partial: Partial<SubjectSignals> = {}): SubjectSignals {
  return { network: '10.1.2.0/24', networkLastSeen: NOW - DAY, applicationLastSeen: NOW - DAY, failures: [], firstAccess: () => false, ...partial };
}

const RULES = `default: allow
rules:
  - name: risky-login
    on: connect
    match:
      signals: {new_client_address: 30d, recent_login_failures: {count: 3, within: 10m}}
    action: step-up
  - name: deny-known-bad
    on: connect
    match: {client: [192.0.2.0/24]}
    action: deny
    message: Not from there.
  - name: new-app-writes
    match: {class: write, signals: {new_application: 7d}}
    action: step-up
    factors: [passkey]
  - name: first-touch
    match: {tables: ["billing.*"], signals: {first_access: true}}
    action: step-up
`;

t.test('new_client_address, recent_login_failures: the login is held only when both hold', async (t) => {
  const rules = compile({ '10.yaml': RULES });
  const now = new Date(NOW);
  const at = (s: Partial<SubjectSignals>, clientAddress = '10.1.2.3') => rules.decideConnect(subject({ now, clientAddress, signals: signals(s) }));
  t.equal(at({}), null, 'known network, no failures: the login goes on');
  t.equal(at({ networkLastSeen: null }), null, 'new network alone: no');
  t.equal(at({ failures: [NOW - 1000, NOW - 2000, NOW - 3000] }), null, 'failures alone: no');
  t.equal(at({ networkLastSeen: NOW - 31 * DAY, failures: [NOW - 1000, NOW - 2000, NOW - 11 * 60_000] }), null, 'only 2 failures within 10m');
  const held = at({ networkLastSeen: NOW - 31 * DAY, failures: [NOW - 1000, NOW - 2000, NOW - 3000] })!;
  t.equal(held.action, 'step-up');
  t.equal(held.rule, 'risky-login');
  t.same(held.signals, ['new_client_address (10.1.2.0/24: last seen 31d ago)', 'recent_login_failures (3 failed logins in the last 10m)']);
  t.same(held.stepUps![0]!.signals, held.signals);
  t.equal(at({}, '192.0.2.7')!.action, 'deny', 'a connect deny wins');
  t.equal(at({}, '192.0.2.7')!.message, 'Not from there.');
  t.equal(rules.decideConnect(subject({ now })), null, 'without records no signal holds');
});

t.test('new_application and factors; first_access per table', async (t) => {
  const rules = compile({ '10.yaml': RULES });
  const now = new Date(NOW);
  const write = statement({ command: 'INSERT', classes: ['write'], tables: [{ schema: null, name: 'orders', access: 'write' }] });
  t.equal(rules.decide([write], subject({ now, signals: signals() })).action, 'allow');
  const d = rules.decide([write], subject({ now, application: 'DBeaver 24', signals: signals({ applicationLastSeen: null }) }));
  t.equal(d.action, 'step-up');
  t.same(d.factors, ['passkey'], 'the rule demands a passkey');
  t.same(d.stepUps![0]!.factors, ['passkey']);
  t.same(d.signals, ['new_application (DBeaver 24: never seen before)']);

  const read = statement({ tables: [{ schema: 'billing', name: 'invoices', access: 'read' }, { schema: 'public', name: 'orders', access: 'read' }] });
  const seen = new Set(['app\u001fbilling.invoices']);
  const first = (_db: string, tbl: { schema: string | null; name: string }) => !seen.has(`app\u001f${tbl.schema ? `${tbl.schema}.` : ''}${tbl.name}`);
  t.equal(rules.decide([read], subject({ now, signals: signals({ firstAccess: first }) })).action, 'allow', 'billing.invoices was touched before; orders is new, but the rule is about billing tables');
  seen.clear();
  const held = rules.decide([read], subject({ now, signals: signals({ firstAccess: first }) }));
  t.equal(held.action, 'step-up');
  t.same(held.signals, ['first_access (billing.invoices: never touched by alice)']);
  t.same(held.factors, undefined, 'any factor');
});

t.test('rules explain --signal builds the records', async (t) => {
  const s = signalsFromOptions(['new_client_address', 'recent_login_failures=4', 'first_access'], NOW) as SubjectSignals;
  t.equal(s.networkLastSeen, null);
  t.equal(s.failures.length, 4);
  t.ok(s.firstAccess!('x', { schema: null, name: 't' }));
  t.match(signalsFromOptions(['off_hours'], NOW), /unknown signal `off_hours`/);
  t.match(signalsFromOptions(['recent_login_failures=x'], NOW), /takes a number/);
});

const rule = (body: string) => `default: allow\nrules:\n  - name: r\n${body}`;
const cases: { why: string; yaml: string; at: string; message: RegExp; fix?: RegExp }[] = [
  { why: 'unknown signal', yaml: rule('    match:\n      signals: {new_adress: 30d}\n    action: step-up\n'), at: 'rules/a.yaml:5:17', message: /unknown key `new_adress` in `signals`/, fix: /new_client_address/ },
  { why: 'off_hours points at time', yaml: rule('    match:\n      signals: {off_hours: true}\n    action: step-up\n'), at: 'rules/a.yaml:5:17', message: /unknown key `off_hours`/, fix: /off hours are a `time` window/ },
  { why: 'a duration needs a unit', yaml: rule('    match:\n      signals: {new_client_address: 30}\n    action: step-up\n'), at: 'rules/a.yaml:5:37', message: /`new_client_address` needs a unit/ },
  { why: 'failures need count and within', yaml: rule('    match:\n      signals: {recent_login_failures: {count: 3}}\n    action: step-up\n'), at: 'rules/a.yaml:5:17', message: /needs `count` and `within`/ },
  { why: 'failures are kept one day', yaml: rule('    match:\n      signals: {recent_login_failures: {count: 3, within: 2d}}\n    action: step-up\n'), at: 'rules/a.yaml:5:59', message: /at most `1d`/ },
  { why: 'empty signals', yaml: rule('    match:\n      signals: {}\n    action: step-up\n'), at: 'rules/a.yaml:5:16', message: /`signals` is empty/ },
  { why: 'unknown factor', yaml: rule('    match: {class: write}\n    action: step-up\n    factors: [sms]\n'), at: 'rules/a.yaml:6:15', message: /unknown factor `sms`/, fix: /passkey and totp/ },
  { why: 'factor synonym', yaml: rule('    match: {class: write}\n    action: step-up\n    factors: [webauthn]\n'), at: 'rules/a.yaml:6:15', message: /unknown factor `webauthn`/, fix: /did you mean `passkey`/ },
  { why: 'factors on a deny rule', yaml: rule('    match: {class: write}\n    action: deny\n    factors: [passkey]\n'), at: 'rules/a.yaml:6:5', message: /`factors` only applies to step-up rules/ },
  { why: 'statement keys at connect', yaml: rule('    on: connect\n    match: {class: write}\n    action: step-up\n'), at: 'rules/a.yaml:5:5', message: /`class` cannot be matched at connect/ },
  { why: 'first_access at connect', yaml: rule('    on: connect\n    match: {signals: {first_access: true}}\n    action: step-up\n'), at: 'rules/a.yaml:5:5', message: /`first_access` cannot be matched at connect/ },
  { why: 'allow at connect', yaml: rule('    on: connect\n    match: {user: [bob]}\n    action: allow\n'), at: 'rules/a.yaml:6:13', message: /holds \(`step-up`\) or refuses \(`deny`\) a login/ },
  { why: 'unknown event', yaml: rule('    on: login\n    match: {}\n    action: step-up\n'), at: 'rules/a.yaml:4:9', message: /unknown `on: login`/, fix: /on: connect/ },
  { why: 'grant at connect', yaml: rule('    on: connect\n    match: {user: [bob]}\n    action: step-up\n    grant: 10m\n'), at: 'rules/a.yaml:7:5', message: /`grant` does not apply to `on: connect`/ },
];

for (const c of cases) {
  t.test(`validation: ${c.why}`, async (t) => {
    const result = compileFiles({ 'a.yaml': c.yaml });
    t.notOk(result.ok, 'invalid');
    if (result.ok) return;
    const e = result.errors[0]!;
    t.equal(`${e.file}:${e.line}:${e.column}`, c.at, formatRuleError(e));
    t.match(e.message, c.message);
    if (c.fix) t.match(e.fix, c.fix);
  });
}

t.test('a connect rule with an empty match is no catch-all for statements', async (t) => {
  const rules = compile({ '10.yaml': 'default: allow\nrules:\n  - name: every-login\n    on: connect\n    match: {}\n    action: step-up\n  - name: later\n    match: {class: write}\n    action: deny\n' });
  t.equal(rules.decide([statement({ classes: ['write'], command: 'INSERT' })], subject()).rule, 'later');
  t.equal(rules.decideConnect(subject())!.rule, 'every-login');
});
