/**
 * The `notify:` config section: what it reads, and that every mistake names file:line:column and says
 * what to write instead, without echoing a secret. Also the signature scheme as a receiver checks it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';
import { signatureOf, signHeader, verifySignature } from '../../src/notify/signing.js';
import { createHmac } from 'node:crypto';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-notify-config-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'stepgate.yaml');
fs.writeFileSync(path.join(dir, 'hook.secret'), 'file-secret-0123456789abcdef\n');
fs.writeFileSync(path.join(dir, 'short.secret'), 'short\n');
process.env.STEPGATE_TEST_HOOK_SECRET = 'env-secret-0123456789abcdef';
process.env.STEPGATE_TEST_HOOK_URL = 'https://hooks.example.com/services/T0/B0/XYZ';
t.teardown(() => {
  delete process.env.STEPGATE_TEST_HOOK_SECRET;
  delete process.env.STEPGATE_TEST_HOOK_URL;
});

/** Line 1 is upstream:, line 2 notify:, line 3 webhooks:, the entries from line 4. */
const load = (hooks: string) => {
  fs.writeFileSync(file, `upstream: postgres://u:p@localhost/db\nnotify:\n  webhooks:\n${hooks}`);
  return loadConfig({ config: file });
};
const problems = (hooks: string): string[] => {
  try {
    load(hooks);
    return [];
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.problems;
  }
};

t.test('a valid section', async (t) => {
  fs.writeFileSync(file, 'upstream: postgres://u:p@localhost/db\n');
  t.same(loadConfig({ config: file }).notify, { webhooks: [] }, 'none by default');
  const config = load(`    - name: team-slack
      url_env: STEPGATE_TEST_HOOK_URL
      format: slack
      secret_env: STEPGATE_TEST_HOOK_SECRET
      events: [held, decided]
      rules: [four-eyes*, step-up-delete]
      attempts: 3
    - name: audit-json
      url: http://localhost:9000/hook
      secret_file: hook.secret
`);
  t.same(config.notify.webhooks, [
    {
      name: 'team-slack',
      url: 'https://hooks.example.com/services/T0/B0/XYZ',
      format: 'slack',
      secret: 'env-secret-0123456789abcdef',
      events: ['held', 'decided'],
      rules: ['four-eyes*', 'step-up-delete'],
      attempts: 3,
    },
    { name: 'audit-json', url: 'http://localhost:9000/hook', format: 'json', secret: 'file-secret-0123456789abcdef', events: ['held'], rules: null, attempts: 5 },
  ]);
});

t.test('mistakes name file, line and column, and the fix', async (t) => {
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_env: STEPGATE_TEST_HOOK_SECRET\n      format: teams\n'), [
    `${file}:7:15: webhook "a": format must be slack or json, not "teams"`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n'), [
    `${file}:4:7: webhook "a" needs a signing secret: add secret_env: VARIABLE or secret_file: FILE (every request is signed; see README: Notifications)`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_env: STEPGATE_TEST_NOT_SET\n'), [
    `${file}:6:19: webhook "a": the environment variable STEPGATE_TEST_NOT_SET is not set: export the signing secret (at least 16 characters; openssl rand -hex 32) before starting stepgate`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: short.secret\n'), [
    `${file}:6:20: webhook "a": the signing secret is shorter than 16 characters; use a random one (openssl rand -hex 32)`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: missing.secret\n'), [`${file}:6:20: webhook "a": cannot read secret_file: ENOENT`]);
  t.same(problems('    - name: a\n      url: http://hooks.example.com/h\n      secret_file: hook.secret\n'), [
    `${file}:5:12: webhook "a": use https:// (http:// only to localhost): the body names users and statements`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n      evnts: [held]\n'), [`${file}:7:7: unknown key "evnts" in webhook "a": did you mean "events"?`]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n      events: [approved]\n'), [
    `${file}:7:15: webhook "a": events must be a list of held, decided (for example events: [held, decided])`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n      rules: ["[abc]"]\n'), [
    `${file}:7:14: webhook "a": rules: \`[\` in \`[abc]\` is not supported in patterns (only \`*\` and \`?\` are): list each alternative as its own entry, e.g. \`[orders, order_items]\``,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n      attempts: 50\n'), [`${file}:7:17: webhook "a": attempts must be a whole number from 1 to 10`]);
  t.same(problems('    - url: https://x.example/h\n      secret_file: hook.secret\n'), [
    `${file}:4:7: notify.webhooks[0] needs a name: letters, digits, "-", "_" or "." (for example name: dba-slack); it names the webhook in the audit trail`,
  ]);
  t.same(problems('    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n    - name: a\n      url: https://x.example/h\n      secret_file: hook.secret\n'), [
    `${file}:7:13: two webhooks are named "a": give each its own name`,
  ]);
  t.match(problems('    name: a\n')[0], `${file}:4:5: notify.webhooks must be a list: start each webhook with "- name: ..."`);
  const whole = (text: string): string[] => {
    fs.writeFileSync(file, `upstream: postgres://u:p@localhost/db\n${text}`);
    try {
      loadConfig({ config: file });
      return [];
    } catch (err) {
      return (err as ConfigError).problems;
    }
  };
  t.same(whole('notfy: {}\n'), [`${file}:2:1: unknown key "notfy": did you mean "notify"?`]);
  t.same(whole('notify:\n  hooks: []\n'), [`${file}:3:3: unknown key notify.hooks; valid keys: webhooks`]);
  t.same(whole('notify: [a]\n'), [`${file}:2:9: "notify" must be a mapping with webhooks: (a list; see README: Notifications)`]);
  // A URL from the environment may itself be a credential: not echoed.
  process.env.STEPGATE_TEST_HOOK_URL = 'ftp://user:hunter2@example.com/x';
  const p = problems('    - name: a\n      url_env: STEPGATE_TEST_HOOK_URL\n      secret_file: hook.secret\n');
  t.same(p, [`${file}:5:16: webhook "a": the URL in STEPGATE_TEST_HOOK_URL is not an http:// or https:// URL`]);
  process.env.STEPGATE_TEST_HOOK_URL = 'https://hooks.example.com/services/T0/B0/XYZ';
});

t.test('the signature as a receiver checks it', async (t) => {
  const body = '{"event":"held"}';
  const now = 1_760_000_000_000;
  const header = signHeader('k'.repeat(32), now, body);
  const expected = createHmac('sha256', 'k'.repeat(32)).update(`1760000000.${body}`).digest('hex');
  t.equal(header, `t=1760000000,v1=${expected}`, 'HMAC-SHA256 over "<t>.<body>", hex');
  t.equal(signatureOf('k'.repeat(32), 1760000000, body), expected);
  t.ok(verifySignature('k'.repeat(32), header, body, now));
  t.ok(verifySignature('k'.repeat(32), `${header},v1=${'0'.repeat(64)}`, body, now), 'any of several v1 values');
  t.notOk(verifySignature('k'.repeat(32), header, body + ' ', now), 'another body');
  t.notOk(verifySignature('k'.repeat(32), header, body, now + 301_000), 'too old: replay refused');
  t.notOk(verifySignature('k'.repeat(32), header.replace(/t=\d+/, `t=${now / 1000 + 10}`), body, now), 'a changed timestamp');
  t.notOk(verifySignature('k'.repeat(32), undefined, body, now));
  t.notOk(verifySignature('k'.repeat(32), 't=1760000000,v1=zz', body, now));
});
