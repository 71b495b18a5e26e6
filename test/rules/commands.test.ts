/** `stepgate rules check|explain|test`: exit codes and output, with in-memory streams and the real classifier. */
import t from 'tap';
import { rulesCheck, rulesExplain, rulesTest, RULES_CHECK_HELP, RULES_EXPLAIN_HELP, RULES_TEST_HELP } from '../../src/commands/rules.js';
import { memoryIO, tempDir } from './helpers.js';

const base = `default: allow
rules:
  - name: no-unbounded-deletes
    description: DELETE or UPDATE without WHERE on production
    match:
      class: [write]
      flags: [no_where]
      database: ["prod*"]
    action: deny
    message: Add a WHERE clause, or ask a DBA.
  - name: ddl-needs-dba
    match: {class: ddl}
    action: step-up
    approvers: {groups: [dba]}
    grant: 10m
`;

t.test('check: the shipped rules are valid', async (t) => {
  const io = memoryIO();
  t.equal(await rulesCheck([], io.io), 0);
  t.match(io.out, /^rules OK: 1 file, \d+ rules, default allow \(00-defaults\.yaml\); 1 test file, \d+ cases\n$/);
});

t.test('check: prints every error with position and fix, exit 1', async (t) => {
  const dir = await tempDir(t, {
    '00.yaml': 'default: allow\nrules:\n  - name: a\n    match: {tabels: [x]}\n    action: deny\n',
    '10.yaml': 'default: deny\n',
    '10.test.yaml': 'cases:\n  - sql: SELECT 1\n    expect: allowed\n',
  });
  const io = memoryIO();
  t.equal(await rulesCheck([dir], io.io), 1);
  t.match(io.out, `${dir}/00.yaml:4:13: unknown key \`tabels\` in \`match\`\n    fix: did you mean \`tables\`?`);
  t.match(io.out, `${dir}/10.test.yaml:3:13: unknown action \`allowed\` in \`expect\``);
  t.match(io.out, `${dir}/10.yaml:1:10: \`default: deny\` conflicts with \`default: allow\` at ${dir}/00.yaml:1:10`);
  t.match(io.out, /\n3 errors\n$/);
});

t.test('check: a valid directory gives a one-line summary', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  const io = memoryIO();
  t.equal(await rulesCheck([dir], io.io), 0);
  t.equal(io.out, 'rules OK: 1 file, 2 rules, default allow (00.yaml); 0 test files, 0 cases\n');
});

t.test('check: missing or empty directory, usage errors, help', async (t) => {
  const empty = await tempDir(t);
  let io = memoryIO();
  t.equal(await rulesCheck([empty], io.io), 1);
  t.match(io.out, 'the rules directory has no rule files');
  io = memoryIO();
  t.equal(await rulesCheck([`${empty}/missing`], io.io), 1);
  t.match(io.out, 'the rules directory does not exist');
  io = memoryIO();
  t.equal(await rulesCheck(['--bogus'], io.io), 2);
  t.match(io.err, "Unknown option '--bogus'");
  io = memoryIO();
  t.equal(await rulesCheck(['--help'], io.io), 0);
  t.equal(io.out, RULES_CHECK_HELP);
});

t.test('explain: text shows the classification, the deciding rule and why', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  const io = memoryIO();
  const code = await rulesExplain(['--rules', dir, '--user', 'alice', '--groups', 'dev,ops', '--database', 'prod_eu', 'DELETE FROM orders; SELECT 1'], io.io);
  t.equal(code, 0, io.err);
  t.match(io.out, 'Subject: user alice (groups dev, ops) on database prod_eu via psql from 127.0.0.1 without TLS');
  t.match(io.out, 'Statement 1 of 2: DELETE FROM orders');
  t.match(io.out, /command +DELETE/);
  t.match(io.out, /classes +write/);
  t.match(io.out, /tables +orders write \(schema from search_path\)/);
  t.match(io.out, /flags +.*no_where/);
  t.match(io.out, /decided by rule no-unbounded-deletes \(00\.yaml:\d+\): deny/);
  t.match(io.out, /matched +class write: write\n +flags no_where: no_where\n +database prod\*: prod_eu/);
  t.match(io.out, 'Statement 2 of 2: SELECT 1');
  t.match(io.out, /decided by no rule matched: default allow/);
  t.match(io.out, 'Decision: DENY by rule no-unbounded-deletes (00.yaml)');
  t.match(io.out, /message +Add a WHERE clause, or ask a DBA\./);
});

t.test('explain: step-up details', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  const io = memoryIO();
  t.equal(await rulesExplain(['--rules', dir, 'CREATE TABLE t (id int)'], io.io), 0);
  t.match(io.out, 'Decision: STEP-UP by rule ddl-needs-dba (00.yaml)');
  t.match(io.out, /approval +1 approval from dba \(not the author\)/);
  t.match(io.out, /grant +10m per connection/);
  t.match(io.out, /timeout +2m/);
});

t.test('explain --json: one object with statements and decision', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  const io = memoryIO();
  const code = await rulesExplain(['--rules', dir, '--database', 'prod', '--client', '::ffff:10.0.0.1', '--tls', '--json', 'UPDATE billing.invoices SET paid = true'], io.io);
  t.equal(code, 0, io.err);
  const result = JSON.parse(io.out);
  t.match(result, {
    statements: [
      {
        sql: 'UPDATE billing.invoices SET paid = true',
        command: 'UPDATE',
        classes: ['write'],
        tables: [{ schema: 'billing', name: 'invoices', access: 'write' }],
        functions: [],
        flags: ['no_where'],
      },
    ],
    decision: { action: 'deny', rule: 'no-unbounded-deletes', message: 'Add a WHERE clause, or ask a DBA.', file: '00.yaml' },
    subject: { database: 'prod', clientAddress: '::ffff:10.0.0.1', tls: true },
  });
});

t.test('explain: SQL from stdin with -', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  const io = memoryIO('DROP TABLE orders;\n');
  t.equal(await rulesExplain(['--rules', dir, '--json', '-'], io.io), 0, io.err);
  t.match(JSON.parse(io.out), { statements: [{ command: 'DROP TABLE', classes: ['ddl'] }], decision: { action: 'step-up', rule: 'ddl-needs-dba' } });
});

t.test('explain: text that does not parse is unknown, and the default rules step up', async (t) => {
  const io = memoryIO();
  t.equal(await rulesExplain(['SELEC 1'], io.io), 0, io.err);
  t.match(io.out, /Parse error at position \d+: .*treated as unknown/);
  t.match(io.out, 'Decision: STEP-UP by rule step-up-unknown (00-defaults.yaml)');
});

t.test('explain: invalid rules, bad options, help', async (t) => {
  const dir = await tempDir(t, { '00.yaml': 'default: maybe\n' });
  let io = memoryIO();
  t.equal(await rulesExplain(['--rules', dir, 'SELECT 1'], io.io), 1);
  t.match(io.err, 'The rules are invalid');
  t.match(io.err, `${dir}/00.yaml:1:10: unknown action \`maybe\``);
  io = memoryIO();
  t.equal(await rulesExplain([], io.io), 2);
  t.match(io.err, 'missing SQL');
  io = memoryIO();
  t.equal(await rulesExplain(['--client', 'localhost', 'SELECT 1'], io.io), 2);
  t.match(io.err, '--client: `localhost` is not an IP address');
  io = memoryIO();
  t.equal(await rulesExplain(['--at', 'yesterday', 'SELECT 1'], io.io), 2);
  io = memoryIO();
  t.equal(await rulesExplain(['-h'], io.io), 0);
  t.equal(io.out, RULES_EXPLAIN_HELP);
});

t.test('test: the shipped rules pass their own tests', async (t) => {
  const io = memoryIO();
  t.equal(await rulesTest([], io.io), 0, io.out);
  t.match(io.out, /^\d+ passed, 0 failed \(\d+ cases in 1 test file\)\n$/);
});

t.test('test: a failing case prints the expectation and the explanation, exit 1', async (t) => {
  const dir = await tempDir(t, {
    '00.yaml': base,
    '00.test.yaml': `cases:
  - sql: DELETE FROM orders
    database: prod_eu
    expect: deny
    rule: no-unbounded-deletes
  - name: deletes on staging
    sql: DELETE FROM orders
    database: staging
    expect: deny
  - sql: CREATE INDEX ON orders (id)
    groups: [dba]
    client: 10.1.2.3
    tls: true
    at: "2024-01-08T10:00:00Z"
    expect: step-up
    rule: ddl-needs-dba
`,
  });
  const io = memoryIO();
  t.equal(await rulesTest([dir], io.io), 1);
  t.match(io.out, `FAIL ${dir}/00.test.yaml:6:5 deletes on staging\n  expected deny, got allow by the default\n`);
  t.match(io.out, /    Statement 1: DELETE FROM orders\n/);
  t.match(io.out, /    Decision: ALLOW by the default \(00\.yaml\)/);
  t.notMatch(io.out, 'CREATE INDEX', 'passing cases are not printed');
  t.match(io.out, /\n2 passed, 1 failed \(3 cases in 1 test file\)\n$/);

  const verbose = memoryIO();
  t.equal(await rulesTest(['--verbose', dir], verbose.io), 1);
  t.match(verbose.out, `ok   ${dir}/00.test.yaml:10:5 CREATE INDEX ON orders (id)`);
});

t.test('test: a wrong rule name in a case is an error with its position', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base, 'a.test.yaml': 'cases:\n  - sql: SELECT 1\n    expect: allow\n    rule: no-unbounded-delete\n' });
  const io = memoryIO();
  t.equal(await rulesTest([dir], io.io), 1);
  t.match(io.out, `${dir}/a.test.yaml:4:11: no rule is named \`no-unbounded-delete\`\n    fix: did you mean \`no-unbounded-deletes\`?`);
});

t.test('test: invalid test files are reported with positions', async (t) => {
  const dir = await tempDir(t, {
    '00.yaml': base,
    'a.test.yaml': 'cases:\n  - sql: SELECT 1\n    expect: allow\n    databse: prod\n  - expect: deny\n  - sql: SELECT 2\n    expect: allow\n    client: 10.0.0.0/8\n    tls: "no"\n',
  });
  const io = memoryIO();
  t.equal(await rulesTest([dir], io.io), 1);
  t.match(io.out, `${dir}/a.test.yaml:4:5: unknown key \`databse\` in a test case\n    fix: did you mean \`database\`?`);
  t.match(io.out, `${dir}/a.test.yaml:5:5: this test case has no \`sql\``);
  t.match(io.out, `${dir}/a.test.yaml:8:13: \`10.0.0.0/8\` is not an IP address`);
  t.match(io.out, `${dir}/a.test.yaml:9:10: \`tls\` must be true or false, not the text \`no\``);
});

t.test('test: no test files is a failure; invalid rules too; help', async (t) => {
  const dir = await tempDir(t, { '00.yaml': base });
  let io = memoryIO();
  t.equal(await rulesTest([dir], io.io), 1);
  t.match(io.out, 'no test cases');
  const broken = await tempDir(t, { '00.yaml': 'rules: 3\n', 'a.test.yaml': 'cases:\n  - {sql: SELECT 1, expect: allow}\n' });
  io = memoryIO();
  t.equal(await rulesTest([broken], io.io), 1);
  t.match(io.out, `${broken}/00.yaml:1:8: \`rules\` must be a list of rules, not the number 3`);
  io = memoryIO();
  t.equal(await rulesTest(['--help'], io.io), 0);
  t.equal(io.out, RULES_TEST_HELP);
});
