/**
 * `notify:` in a rule file: the webhooks (by their config names) a step-up rule's holds are sent to.
 * Validated with positions like every other key; carried on the decision's step-up requirements.
 */
import t from 'tap';
import { formatRuleError } from '../../src/rules/errors.js';
import { compile, compileFiles, statement, subject } from './helpers.js';

const rule = (body: string) => `default: allow\nrules:\n  - name: r\n${body}`;

t.test('carried on the step-up requirement', async (t) => {
  const rules = compile({ 'a.yaml': rule('    match: {class: write}\n    action: step-up\n    notify: [dba-slack, pager, pager]\n') });
  const d = rules.decide([statement({ classes: ['write'], command: 'DELETE' })], subject());
  t.same(d.stepUps?.map((s) => s.notify), [['dba-slack', 'pager']]);
  const plain = compile({ 'a.yaml': rule('    match: {class: write}\n    action: step-up\n') });
  t.equal(plain.decide([statement({ classes: ['write'], command: 'DELETE' })], subject()).stepUps?.[0]?.notify, undefined);
  const login = compile({ 'a.yaml': rule('    on: connect\n    match: {user: [bob]}\n    action: step-up\n    notify: pager\n') });
  t.same(login.decideConnect(subject({ user: 'bob' }))?.stepUps?.[0]?.notify, ['pager'], 'a connect rule too');
});

const cases: { why: string; yaml: string; at: string; message: RegExp; fix?: RegExp }[] = [
  { why: 'not a name', yaml: rule('    match: {class: write}\n    action: step-up\n    notify: ["dba slack"]\n'), at: 'rules/a.yaml:6:14', message: /`dba slack` is not a webhook name/, fix: /notify\.webhooks/ },
  { why: 'empty list', yaml: rule('    match: {class: write}\n    action: step-up\n    notify: []\n'), at: 'rules/a.yaml:6:13', message: /`notify` is an empty list/ },
  { why: 'on a deny rule', yaml: rule('    match: {class: write}\n    action: deny\n    notify: [pager]\n'), at: 'rules/a.yaml:6:5', message: /`notify` only applies to step-up rules/ },
  { why: 'a mapping', yaml: rule('    match: {class: write}\n    action: step-up\n    notify: {pager: true}\n'), at: 'rules/a.yaml:6:13', message: /`notify` must be a value or a list of values/ },
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
