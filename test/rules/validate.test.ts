/** Every validation error: position (file:line:column), message and fix. */
import t from 'tap';
import { compileFiles } from './helpers.js';
import { formatRuleError } from '../../src/rules/errors.js';

interface Case {
  why: string;
  files: Record<string, string>;
  /** `file:line:column` of the (first) expected error. */
  at: string;
  message: RegExp;
  fix?: RegExp;
}

const rule = (body: string) => `default: allow\nrules:\n  - name: r\n${body}`;

const cases: Case[] = [
  {
    why: 'rows is a comparison with a number',
    files: { 'a.yaml': rule('    match:\n      rows: "more than ten"\n    action: step-up\n') },
    at: 'rules/a.yaml:5:13',
    message: /`rows` must be a comparison with a number of rows/,
    fix: /rows: ">100"/,
  },
  {
    why: 'max_rows is a whole number of 0 or more',
    files: { 'a.yaml': rule('    match: {class: [write]}\n    action: step-up\n    max_rows: -1\n') },
    at: 'rules/a.yaml:6:15',
    message: /`max_rows` must be 0 or more/,
    fix: /max_rows: 10000/,
  },
  {
    why: 'max_rows needs the preview that counts',
    files: { 'a.yaml': rule('    match: {class: [write]}\n    action: step-up\n    preview: false\n    max_rows: 10\n') },
    at: 'rules/a.yaml:6:14',
    message: /`max_rows` needs the preview that counts the rows/,
    fix: /preview: true/,
  },
  {
    why: 'max_rows is a step-up key',
    files: { 'a.yaml': rule('    match: {class: [write]}\n    action: deny\n    max_rows: 10\n') },
    at: 'rules/a.yaml:6:5',
    message: /max_rows/,
  },
  {
    why: 'unknown match key, nearest suggested',
    files: { 'a.yaml': rule('    match:\n      tabels: [orders]\n    action: deny\n') },
    at: 'rules/a.yaml:5:7',
    message: /unknown key `tabels` in `match`/,
    fix: /did you mean `tables`\?/,
  },
  {
    why: 'match key at rule level',
    files: { 'a.yaml': rule('    class: write\n    match: {}\n    action: deny\n') },
    at: 'rules/a.yaml:4:5',
    message: /unknown key `class` in a rule/,
    fix: /move it under `match:`/,
  },
  {
    why: 'rule key inside match',
    files: { 'a.yaml': rule('    match:\n      class: write\n      action: deny\n') },
    at: 'rules/a.yaml:6:7',
    message: /unknown key `action` in `match`/,
    fix: /indent it to line up with `match:`/,
  },
  {
    why: 'unknown file key',
    files: { 'a.yaml': 'defualt: allow\n' },
    at: 'rules/a.yaml:1:1',
    message: /unknown key `defualt` in a rule file/,
    fix: /did you mean `default`\?/,
  },
  {
    why: 'unknown key with nothing close lists the valid keys',
    files: { 'a.yaml': rule('    match: {}\n    action: deny\n    colour: red\n') },
    at: 'rules/a.yaml:6:5',
    message: /unknown key `colour`/,
    fix: /valid keys are: name, description, match, action/,
  },
  {
    why: 'wrong type: mapping where a list is expected',
    files: { 'a.yaml': rule('    match:\n      tables: {a: 1}\n    action: deny\n') },
    at: 'rules/a.yaml:5:15',
    message: /`tables` must be a value or a list of values, not a mapping/,
    fix: /tables: \[billing\.invoices/,
  },
  {
    why: 'wrong type: number in a list',
    files: { 'a.yaml': rule('    match:\n      user: [alice, 42]\n    action: deny\n') },
    at: 'rules/a.yaml:5:21',
    message: /items of `user` must be text, not the number 42/,
    fix: /quote values/,
  },
  {
    why: 'wrong type: rules is not a list',
    files: { 'a.yaml': 'rules:\n  name: x\n' },
    at: 'rules/a.yaml:2:3',
    message: /`rules` must be a list of rules, not a mapping/,
    fix: /- name:/,
  },
  {
    why: 'wrong type: tls',
    files: { 'a.yaml': rule('    match: {tls: yes}\n    action: deny\n') },
    at: 'rules/a.yaml:4:18',
    message: /`tls` must be true or false, not the text `yes`/,
    fix: /`tls: true` or `tls: false`/,
  },
  {
    why: 'empty list matches nothing',
    files: { 'a.yaml': rule('    match: {class: []}\n    action: deny\n') },
    at: 'rules/a.yaml:4:20',
    message: /`class` is an empty list, which matches nothing/,
    fix: /remove `class` to match any/,
  },
  {
    why: 'bad glob',
    files: { 'a.yaml': rule('    match: {tables: ["order[s]"]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /bad pattern in `tables`: `\[` in `order\[s\]` is not supported/,
    fix: /list each alternative as its own entry/,
  },
  {
    why: 'bad glob: too many dots',
    files: { 'a.yaml': rule('    match: {tables: [db.public.orders]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /`db\.public\.orders` has 2 dots; a table pattern is `table` or `schema\.table`/,
    fix: /`public\.orders`/,
  },
  {
    why: 'bad glob: empty part',
    files: { 'a.yaml': rule('    match: {columns: [users.]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:23',
    message: /`users\.` has an empty part/,
    fix: /`users\.\*`/,
  },
  {
    why: 'bad glob: quotes',
    files: { 'a.yaml': rule(`    match: {user: ['"Alice"']}\n    action: deny\n`) },
    at: 'rules/a.yaml:4:20',
    message: /quotes in `"Alice"`/,
    fix: /write Alice/,
  },
  {
    why: 'unknown class lists the valid ones',
    files: { 'a.yaml': rule('    match: {class: [wirte]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:21',
    message: /unknown class `wirte`/,
    fix: /did you mean `write`\? valid classes: read, write, ddl, export, import, privilege, admin, maintenance, procedural, transaction, session, unknown/,
  },
  {
    why: 'a command given as a class',
    files: { 'a.yaml': rule('    match: {class: DELETE}\n    action: deny\n') },
    at: 'rules/a.yaml:4:20',
    message: /unknown class `DELETE`/,
    fix: /`DELETE` is a command: use `command: DELETE`/,
  },
  {
    why: 'unknown flag lists the valid ones',
    files: { 'a.yaml': rule('    match: {flags: [nowhere]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:21',
    message: /unknown flag `nowhere`/,
    fix: /did you mean `no_where`\? valid flags: no_where, locks, select_into/,
  },
  {
    why: 'unknown command',
    files: { 'a.yaml': rule('    match: {command: DELTE}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /unknown command `DELTE`: no PostgreSQL command tag matches it/,
    fix: /did you mean `DELETE`\?/,
  },
  {
    why: 'command that is only the start of tags',
    files: { 'a.yaml': rule('    match: {command: TRUNCATE}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /unknown command `TRUNCATE`/,
    fix: /did you mean `TRUNCATE TABLE`\?/,
  },
  {
    why: 'unknown action',
    files: { 'a.yaml': rule('    match: {}\n    action: block\n') },
    at: 'rules/a.yaml:5:13',
    message: /unknown action `block` in `action`/,
    fix: /did you mean `deny`\? the actions are allow, step-up and deny/,
  },
  {
    why: 'unknown action, typo',
    files: { 'a.yaml': rule('    match: {}\n    action: stepup\n') },
    at: 'rules/a.yaml:5:13',
    message: /unknown action `stepup`/,
    fix: /did you mean `step-up`\?/,
  },
  {
    why: 'unknown default action',
    files: { 'a.yaml': 'default: permit\n' },
    at: 'rules/a.yaml:1:10',
    message: /unknown action `permit` in `default`/,
    fix: /did you mean `allow`\?/,
  },
  {
    why: 'bad duration',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    grant: 10 minutes\n') },
    at: 'rules/a.yaml:6:12',
    message: /`grant` `10 minutes` is not a duration/,
    fix: /`10m`, `90s` or `1h30m`/,
  },
  {
    why: 'duration without unit',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    timeout: 120\n') },
    at: 'rules/a.yaml:6:14',
    message: /`timeout` needs a unit/,
    fix: /`120s`/,
  },
  {
    why: 'zero duration',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    timeout: 0s\n') },
    at: 'rules/a.yaml:6:14',
    message: /`timeout` must be longer than zero/,
  },
  {
    why: 'step-up keys on a deny rule',
    files: { 'a.yaml': rule('    match: {}\n    action: deny\n    grant: 10m\n') },
    at: 'rules/a.yaml:6:5',
    message: /`grant` only applies to step-up rules, and this rule's action is `deny`/,
    fix: /remove it, or set `action: step-up`/,
  },
  {
    why: 'grant_scope without grant',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    grant_scope: user\n') },
    at: 'rules/a.yaml:6:5',
    message: /`grant_scope` without `grant` has no effect/,
  },
  {
    why: 'unknown grant scope',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    grant: 1m\n    grant_scope: users\n') },
    at: 'rules/a.yaml:7:18',
    message: /unknown grant_scope `users`/,
    fix: /did you mean `user`\?/,
  },
  {
    why: 'approvers without groups',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    approvers: {count: 2}\n') },
    at: 'rules/a.yaml:6:5',
    message: /`approvers` has no `groups`/,
  },
  {
    why: 'approvers count below 1',
    files: { 'a.yaml': rule('    match: {}\n    action: step-up\n    approvers: {groups: [dba], count: 0}\n') },
    at: 'rules/a.yaml:6:39',
    message: /`approvers.count` must be 1 or more/,
  },
  {
    why: 'bad CIDR',
    files: { 'a.yaml': rule('    match: {client: [10.0.0.0/33]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /bad CIDR in `client`: `10.0.0.0\/33` has prefix length `\/33`; an IPv4 prefix is 0 to 32/,
  },
  {
    why: 'CIDR with host bits',
    files: { 'a.yaml': rule('    match: {client: [10.1.2.3/8]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /`10.1.2.3\/8` has bits set after the \/8 prefix/,
    fix: /`10.0.0.0\/8` for the range, or `10.1.2.3` for the single host/,
  },
  {
    why: 'not an address',
    files: { 'a.yaml': rule('    match: {client: [office]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /`office` is not an IP address or CIDR range/,
  },
  {
    why: 'bad timezone',
    files: { 'a.yaml': rule('    match: {time: {tz: Europe/Berln}}\n    action: deny\n') },
    at: 'rules/a.yaml:4:24',
    message: /unknown time zone `Europe\/Berln`/,
    fix: /did you mean `Europe\/Berlin`\?/,
  },
  {
    why: 'bad day',
    files: { 'a.yaml': rule('    match: {time: {days: [mon-fry]}}\n    action: deny\n') },
    at: 'rules/a.yaml:4:27',
    message: /`mon-fry` is not a day or range of days/,
  },
  {
    why: 'time as a number',
    files: { 'a.yaml': rule('    match: {time: {from: 9, to: "17:00"}}\n    action: deny\n') },
    at: 'rules/a.yaml:4:26',
    message: /`from` must be a time like "09:00", not a number/,
  },
  {
    why: 'from without to',
    files: { 'a.yaml': rule('    match: {time: {from: "09:00"}}\n    action: deny\n') },
    at: 'rules/a.yaml:4:20',
    message: /a `time` window has `from` but no `to`/,
  },
  {
    why: 'missing name',
    files: { 'a.yaml': 'rules:\n  - match: {}\n    action: deny\n' },
    at: 'rules/a.yaml:2:5',
    message: /this rule has no `name`/,
  },
  {
    why: 'missing action',
    files: { 'a.yaml': rule('    match: {}\n') },
    at: 'rules/a.yaml:3:5',
    message: /rule `r` has no `action`/,
  },
  {
    why: 'missing match',
    files: { 'a.yaml': rule('    action: deny\n') },
    at: 'rules/a.yaml:3:5',
    message: /rule `r` has no `match`/,
    fix: /`match: \{\}` matches every statement/,
  },
  {
    why: 'match with nothing under it',
    files: { 'a.yaml': rule('    match:\n    action: deny\n') },
    at: 'rules/a.yaml:4:5',
    message: /`match` is empty/,
  },
  {
    why: 'bad rule name',
    files: { 'a.yaml': 'rules:\n  - name: no deletes\n    match: {}\n    action: deny\n' },
    at: 'rules/a.yaml:2:11',
    message: /rule name `no deletes` has characters other than/,
    fix: /`no-deletes`/,
  },
  {
    why: 'duplicate rule name across files names both places',
    files: {
      'a.yaml': rule('    match: {class: ddl}\n    action: deny\n'),
      'b.yaml': 'rules:\n  - name: r\n    match: {class: write}\n    action: deny\n',
    },
    at: 'rules/b.yaml:2:11',
    message: /duplicate rule name `r`: also defined at rules\/a\.yaml:3:11/,
    fix: /rename one of them/,
  },
  {
    why: 'conflicting defaults name both places',
    files: { 'a.yaml': 'default: allow\n', 'b.yaml': '# strict\ndefault: deny\n' },
    at: 'rules/b.yaml:2:10',
    message: /`default: deny` conflicts with `default: allow` at rules\/a\.yaml:1:10/,
  },
  {
    why: 'rule after a catch-all can never match (a deny could: deny wins regardless of order)',
    files: { 'a.yaml': rule('    match: {}\n    action: allow\n'), 'b.yaml': 'rules:\n  - name: late\n    match: {class: ddl}\n    action: step-up\n' },
    at: 'rules/b.yaml:2:5',
    message: /rule `late` can never match: rule `r` at rules\/a\.yaml:3:5 has an empty `match`/,
  },
  {
    why: 'YAML syntax error',
    files: { 'a.yaml': 'rules:\n  - name: r\n    match: {class: [write}\n' },
    at: 'rules/a.yaml:3:26',
    message: /YAML syntax:/,
    fix: /close the `\[` with `\]`/,
  },
  {
    why: 'YAML duplicate key',
    files: { 'a.yaml': 'default: allow\ndefault: deny\n' },
    at: 'rules/a.yaml:2:1',
    message: /YAML syntax: Map keys must be unique/,
  },
  {
    why: 'tabs',
    files: { 'a.yaml': 'rules:\n\t- name: r\n' },
    at: 'rules/a.yaml:2:1',
    message: /YAML syntax:/,
  },
  {
    why: 'empty file',
    files: { 'a.yaml': '# nothing yet\n' },
    at: 'rules/a.yaml:1:1',
    message: /the file is empty/,
  },
  {
    why: 'the file is a list',
    files: { 'a.yaml': '- name: r\n' },
    at: 'rules/a.yaml:1:1',
    message: /a rule file must be a mapping/,
  },
  {
    why: 'a pattern starting with * is a YAML alias unless quoted',
    files: { 'a.yaml': rule('    match: {tables: [*_audit]}\n    action: deny\n') },
    at: 'rules/a.yaml:4:22',
    message: /`\*_audit` is read as a YAML alias/,
    fix: /write `"\*_audit"`/,
  },
  {
    why: 'reserved rule name',
    files: { 'a.yaml': 'rules:\n  - name: default\n    match: {}\n    action: deny\n' },
    at: 'rules/a.yaml:2:11',
    message: /`default` is reserved/,
  },
];

for (const c of cases) {
  t.test(c.why, async (t) => {
    const result = compileFiles(c.files);
    t.notOk(result.ok, 'the rules are rejected');
    if (result.ok) return;
    const found = result.errors.find((e) => c.message.test(e.message));
    t.ok(found, `an error matches ${c.message}; got:\n${result.errors.map(formatRuleError).join('\n')}`);
    if (!found) return;
    t.equal(`${found.file}:${found.line}:${found.column}`, c.at, 'position');
    if (c.fix) t.match(found.fix, c.fix, 'fix');
  });
}

t.test('all errors are collected, not just the first, in file and line order', async (t) => {
  const result = compileFiles({
    'b.yaml': rule('    match: {class: [wirte], flags: [nope], tables: ["[x]"]}\n    action: maybe\n'),
    'a.yaml': 'defualt: allow\n',
  });
  t.notOk(result.ok);
  if (result.ok) return;
  t.same(
    result.errors.map((e) => `${e.file}:${e.line}:${e.column}`),
    ['rules/a.yaml:1:1', 'rules/b.yaml:4:21', 'rules/b.yaml:4:37', 'rules/b.yaml:4:53', 'rules/b.yaml:5:13'],
  );
});

t.test('an empty rule directory is an error', async (t) => {
  const result = compileFiles({});
  t.notOk(result.ok);
  if (!result.ok) t.match(result.errors[0]!.message, /no rule files/);
});

t.test('formatted errors: file:line:column, message, fix', async (t) => {
  const result = compileFiles({ 'a.yaml': rule('    match: {tabels: [x]}\n    action: deny\n') });
  t.notOk(result.ok);
  if (!result.ok) t.equal(formatRuleError(result.errors[0]!), 'rules/a.yaml:4:13: unknown key `tabels` in `match`\n    fix: did you mean `tables`?');
});

t.test('anchors and aliases may share lists between rules', async (t) => {
  const result = compileFiles({
    'a.yaml': 'rules:\n  - name: a\n    match: {tables: &pii [users, accounts]}\n    action: deny\n  - name: b\n    match: {tables: *pii, user: x}\n    action: deny\n',
  });
  t.ok(result.ok, result.ok ? '' : result.errors.map(formatRuleError).join('\n'));
});

t.test('valid files with every key load', async (t) => {
  const result = compileFiles({
    '00.yaml': `default: allow
rules:
  - name: everything
    description: every key at once
    match:
      class: [write, ddl]
      command: [DELETE, "DROP *"]
      tables: [billing.invoices, "audit_*"]
      columns: [users.password]
      functions: [pg_read_file]
      flags: [no_where]
      user: ["svc_*"]
      groups: [dev]
      database: ["prod*"]
      application: [psql]
      client: [10.0.0.0/8, "2001:db8::/32"]
      time: {days: [mon-fri], from: "09:00", to: "18:00", tz: Europe/Berlin}
      tls: true
    action: step-up
    message: Ask first.
    grant: 1h30m
    grant_scope: user
    timeout: 90s
    approvers: {groups: [dba], count: 2}
`,
  });
  t.ok(result.ok, result.ok ? '' : result.errors.map(formatRuleError).join('\n'));
});
