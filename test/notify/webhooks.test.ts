/**
 * Webhooks end to end: a real PostgreSQL, stepgate in this process, local HTTP receivers (node:http on
 * port 0). A held DELETE reaches a Slack-format and a JSON receiver, signed as documented; a receiver that
 * fails twice gets three attempts with the computed backoff (the wait injected: no real sleeping); a
 * dead and a hanging receiver delay neither the hold nor the approval; every attempt is in the audit
 * trail, and the secrets are nowhere in it (nor in the logs).
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { verifySignature } from '../../src/notify/signing.js';
import type { NotifyEvent } from '../../src/notify/messages.js';
import { backoffMs } from '../../src/notify/webhooks.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { cli } from '../audit/helpers.js';

const RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'notify');
const SLACK_SECRET = 'slack-signing-secret-0123456789';
const JSON_SECRET = 'json-signing-secret-abcdefghijkl';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A receiver: records every request; `answer` decides the status per path (a list is used up in order). */
async function receiver(tt: { teardown(fn: () => unknown): void }) {
  const got: Received[] = [];
  const plan = new Map<string, number[]>();
  let hanging = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      if (req.url === '/hang') {
        // Never answers: stepgate's per-attempt timeout ends it.
        hanging++;
        res.on('close', () => hanging--);
        return;
      }
      const status = plan.get(req.url ?? '')?.shift() ?? 200;
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  tt.teardown(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    got,
    plan,
    get hanging() {
      return hanging;
    },
    on: (p: string) => got.filter((g) => g.path === p),
  };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE items (id int PRIMARY KEY, note text, api_token text);
  CREATE TABLE granted (id int, n int DEFAULT 0);
  CREATE TABLE paged (id int);
  CREATE TABLE previewed (id int);
  INSERT INTO previewed SELECT generate_series(1, 1234);
  INSERT INTO paged VALUES (1);
  INSERT INTO items SELECT g, 'item ' || g, 'tok-' || g FROM generate_series(1, 10) g;
  INSERT INTO granted VALUES (1);
`);
const rx = await receiver(t);
const dead = await deadPort();
const secrets = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-notify-'));
t.teardown(() => fs.rmSync(secrets, { recursive: true, force: true }));
fs.writeFileSync(path.join(secrets, 'json.secret'), `${JSON_SECRET}\n`, { mode: 0o600 });
process.env.STEPGATE_TEST_SLACK_SECRET = SLACK_SECRET;
t.teardown(() => delete process.env.STEPGATE_TEST_SLACK_SECRET);

/** Every backoff wait stepgate asked for, in order; the wait itself returns at once. */
const waits: number[] = [];
const sg = await startStepgate(t, db, {
  rulesDir: RULES,
  users: [ALICE],
  notify: {
    sleep: async (ms) => {
      waits.push(ms);
    },
    timeoutMs: 4000,
  },
  configYaml: `
notify:
  webhooks:
    - name: team-slack
      url: ${rx.base}/slack
      format: slack
      secret_env: STEPGATE_TEST_SLACK_SECRET
      events: [held, decided]
    - name: deletes-json
      url: ${rx.base}/json
      format: json
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
      rules: [step-up-*]
    - name: flaky
      url: ${rx.base}/flaky
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
      rules: [granted-updates]
    - name: dead
      url: http://127.0.0.1:${dead}/hook
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
      rules: [step-up-delete]
      attempts: 3
    - name: hang
      url: ${rx.base}/hang
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
      rules: [step-up-delete]
      attempts: 1
    - name: pager
      url: ${rx.base}/pager
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
      rules: []
`,
});
// Alice approves with an authenticator app (the broker holds only what someone could approve).
await sg.identity.setTotp('alice', 'JBSWY3DPEHPK3PXP', 0, []);
const notifier = sg.app.notifier!;
const broker = sg.broker!;

async function client(tt: { teardown(fn: () => unknown): void }): Promise<pg.Client> {
  const c = new pg.Client({ ...sg.pgConfig(), application_name: 'notify-test' });
  c.on('error', () => {});
  c.on('notice', () => {});
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  return c;
}

async function heldId(): Promise<string> {
  return waitFor('a held statement', () => broker.pendingFor('alice', [])[0]?.id);
}

function auditEvents(kindLike: string): Record<string, unknown>[] {
  const trail = new Database(path.join(sg.dataDir, 'audit.db'), { readonly: true });
  try {
    return (trail.prepare('SELECT kind, body FROM events WHERE kind LIKE ? ORDER BY seq').all(kindLike) as { kind: string; body: string }[]).map((r) => ({ kind: r.kind, ...JSON.parse(r.body) }));
  } finally {
    trail.close();
  }
}

t.test('a held DELETE reaches Slack and JSON receivers, signed; dead receivers delay nothing', async (t) => {
  const c = await client(t);
  const deleting = c.query("DELETE FROM items WHERE api_token = 'tok-3'");
  const id = await heldId();

  const [slack] = await waitFor('the Slack body', () => rx.on('/slack').length >= 1 && rx.on('/slack'));
  const [json] = await waitFor('the JSON body', () => rx.on('/json').length >= 1 && rx.on('/json'));
  // The hanging receiver has the request and has not answered; the hold is there all the same.
  await waitFor('the hanging receiver to have the request', () => rx.hanging > 0);
  t.ok(broker.get(id), 'held while a receiver hangs (the hold did not wait for it)');

  for (const [r, secret] of [
    [slack!, SLACK_SECRET],
    [json!, JSON_SECRET],
  ] as const) {
    t.equal(r.headers['content-type'], 'application/json');
    t.equal(r.headers['x-stepgate-event'], 'held');
    t.match(r.headers['x-stepgate-signature'], /^t=\d+,v1=[0-9a-f]{64}$/);
    t.ok(verifySignature(secret, r.headers['x-stepgate-signature'] as string, r.body), `${r.path}: the signature verifies with its secret`);
    t.notOk(verifySignature(secret, r.headers['x-stepgate-signature'] as string, r.body.replace('alice', 'mallo')), `${r.path}: a changed body does not`);
    t.notOk(verifySignature(secret === SLACK_SECRET ? JSON_SECRET : SLACK_SECRET, r.headers['x-stepgate-signature'] as string, r.body), `${r.path}: another secret does not`);
    t.notMatch(r.body, /tok-3/, `${r.path}: the SQL is redacted`);
  }

  const ev = JSON.parse(json!.body) as NotifyEvent;
  t.match(ev, {
    event: 'held',
    challenge: id,
    kind: 'statement',
    user: 'alice',
    database: 'postgres',
    application: 'notify-test',
    rule: 'step-up-delete',
    rules: ['step-up-delete'],
    message: 'Deleting rows needs your passkey.',
    statements: [{ command: 'DELETE', tables: ['items'], sql: "DELETE FROM items WHERE api_token = '***'", truncated: false }],
    preview: null,
    approvers: ['author'],
  });
  t.equal(ev.url, `${sg.consoleUrl}/c/${id}`, 'the console link');

  const s = JSON.parse(slack!.body) as { text: string; blocks: { type: string; text?: { text: string } }[] };
  t.match(s.text, /^Waiting for approval: alice: DELETE on items in postgres/);
  t.match(s.text, `${sg.consoleUrl}/c/${id}`);
  t.ok(s.blocks.some((b) => b.text?.text.includes(`<${sg.consoleUrl}/c/${id}|Open in the stepgate console>`)), 'a Slack link block');
  t.ok(s.blocks.some((b) => b.text?.text.includes("DELETE FROM items WHERE api_token = '***'")), 'the redacted SQL in a block');

  // Approve while the hanging receiver still has its request open: the approval is not delayed either.
  t.equal((await broker.approve(id, 'alice', 'totp', 'totp')).ok, true);
  const done = await deleting;
  t.equal(done.rowCount, 1, 'the DELETE ran');
  t.ok(rx.hanging > 0, 'approved and run while the hanging receiver still has its request (4 s timeout)');

  const decided = await waitFor('the decided message', () => rx.on('/slack').find((r) => r.headers['x-stepgate-event'] === 'decided'));
  t.ok(verifySignature(SLACK_SECRET, decided.headers['x-stepgate-signature'] as string, decided.body));
  t.match(JSON.parse(decided.body).text, /^Approved: alice: DELETE on items in postgres by alice/);
  t.equal(rx.on('/json').length, 1, 'events: [held] by default: no decided message to the JSON receiver');
  t.equal(rx.on('/flaky').length, 0, 'rules: [granted-updates]: not told about a DELETE');
  t.equal(rx.on('/pager').length, 0, 'rules: []: only rules that name it');

  await notifier.idle();
  t.same(waits, [backoffMs(1), backoffMs(2)], 'the dead receiver: two waits (1s, 2s) between its three attempts');
  await sg.app.audit.durable();
  const events = auditEvents('notify.%').filter((e) => e.challenge === id);
  const of = (hook: string) => events.filter((e) => e.webhook === hook);
  t.match(of('team-slack'), [
    { kind: 'notify.delivered', event: 'held', attempt: 1, status: 200, host: new URL(rx.base).host },
    { kind: 'notify.delivered', event: 'decided', attempt: 1, status: 200 },
  ]);
  t.match(of('deletes-json'), [{ kind: 'notify.delivered', event: 'held', attempt: 1, status: 200 }]);
  t.match(of('dead'), [
    { kind: 'notify.failed', attempt: 1, error: /ECONNREFUSED/, will_retry: true, retry_in_ms: 1000 },
    { kind: 'notify.failed', attempt: 2, error: /ECONNREFUSED/, will_retry: true, retry_in_ms: 2000 },
    { kind: 'notify.failed', attempt: 3, error: /ECONNREFUSED/, will_retry: false },
  ]);
  t.match(of('hang'), [{ kind: 'notify.failed', attempt: 1, error: 'no answer within 4000 ms', will_retry: false }]);
  t.equal(of('dead').length, 3);
  const deliveries = new Set(of('dead').map((e) => e.delivery));
  t.equal(deliveries.size, 1, 'one delivery id across the retries');
});

t.test('a receiver that fails twice (500) gets a third attempt, after waits of 1s and 2s', async (t) => {
  waits.length = 0;
  rx.plan.set('/flaky', [500, 500]);
  const c = await client(t);
  const updating = c.query('UPDATE granted SET n = n + 1');
  const id = await heldId();
  await waitFor('three attempts', () => rx.on('/flaky').length >= 3);
  await notifier.idle();
  const tries = rx.on('/flaky');
  t.equal(tries.length, 3, 'three attempts, no more');
  t.same(waits, [1000, 2000], 'the backoff as computed: min(60s, 1s × 2^(n−1))');
  t.equal(new Set(tries.map((r) => r.headers['x-stepgate-delivery'])).size, 1, 'the same delivery id each time');
  for (const r of tries) t.ok(verifySignature(JSON_SECRET, r.headers['x-stepgate-signature'] as string, r.body), 'every attempt signed');
  t.equal(rx.on('/json').filter((r) => JSON.parse(r.body).challenge === id).length, 0, 'deletes-json (rules: [step-up-*]) is not told about granted-updates');

  await broker.approve(id, 'alice', 'totp', 'totp');
  await updating;
  await notifier.idle();
  await sg.app.audit.durable();
  t.match(
    auditEvents('notify.%').filter((e) => e.webhook === 'flaky'),
    [
      { kind: 'notify.failed', attempt: 1, status: 500, will_retry: true, retry_in_ms: 1000 },
      { kind: 'notify.failed', attempt: 2, status: 500, will_retry: true, retry_in_ms: 2000 },
      { kind: 'notify.delivered', attempt: 3, status: 200 },
    ],
  );
});

t.test('a rule that names a webhook (notify: [pager]) reaches it; rules: [] hears of nothing else', async (t) => {
  const c = await client(t);
  const deleting = c.query('DELETE FROM paged');
  const id = await heldId();
  const [paged] = await waitFor('the pager', () => rx.on('/pager').length >= 1 && rx.on('/pager'));
  t.ok(verifySignature(JSON_SECRET, paged!.headers['x-stepgate-signature'] as string, paged!.body));
  t.match(JSON.parse(paged!.body), { event: 'held', challenge: id, rule: 'paged-deletes', message: 'The on-call DBA has been paged.' });
  await broker.approve(id, 'alice', 'totp', 'totp');
  await deleting;
  await notifier.idle();
  t.equal(rx.on('/pager').length, 1, 'held only (events default to [held])');
  t.equal(rx.on('/json').filter((r) => JSON.parse(r.body).challenge === id).length, 0, 'deletes-json (rules: [step-up-*]) not told');
  t.equal(sg.logs.filter((l) => l.event === 'notify.unknown_webhook' || l.event === 'rules.unknown_webhook').length, 0, 'pager is configured: no warning');
});

t.test('a previewed DELETE: the body says what the preview did', async (t) => {
  const c = await client(t);
  const deleting = c.query('DELETE FROM previewed WHERE id > 4');
  const id = await heldId();
  const json = await waitFor('the JSON body', () => rx.on('/json').find((r) => JSON.parse(r.body).challenge === id));
  t.match(JSON.parse(json.body), { rule: 'step-up-previewed', preview: /^DELETE 1230 \(1,230 rows\)/ });
  const slack = await waitFor('the Slack body', () => rx.on('/slack').find((r) => r.headers['x-stepgate-event'] === 'held' && r.body.includes(id)));
  t.match(JSON.parse(slack.body).text, /\(DELETE 1230 \(1,230 rows\)/);
  await broker.approve(id, 'alice', 'totp', 'totp');
  t.equal((await deleting).rowCount, 1230);
  await notifier.idle();
});

t.test('the secrets are in no audit event and no log line', async (t) => {
  await sg.app.audit.durable();
  const trail = new Database(path.join(sg.dataDir, 'audit.db'), { readonly: true });
  const all = (trail.prepare('SELECT body FROM events').all() as { body: string }[]).map((r) => r.body).join('\n');
  trail.close();
  t.ok(all.includes('notify.') || auditEvents('notify.%').length > 0, 'there are notify events');
  for (const secret of [SLACK_SECRET, JSON_SECRET]) {
    t.notOk(all.includes(secret), 'not in the audit trail');
    t.notOk(JSON.stringify(sg.logs).includes(secret), 'not in the logs');
  }
  t.notOk(all.includes('/slack') || all.includes('/flaky'), 'no URL path in the trail (a Slack URL is a credential)');
});

t.test('a full queue drops (audited), a 4xx is not retried, close() ends the waits at once', async (t) => {
  const sg2 = await startStepgate(t, db, {
    rulesDir: RULES,
    users: [ALICE],
    notify: { maxQueue: 2, baseDelayMs: 60_000 },
    configYaml: `
notify:
  webhooks:
    - name: forbidden
      url: ${rx.base}/forbidden
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
    - name: dead
      url: http://127.0.0.1:${dead}/hook
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
    - name: overflow
      url: ${rx.base}/overflow
      secret_file: ${JSON.stringify(path.join(secrets, 'json.secret'))}
`,
  });
  t.match(sg2.logs.filter((l) => l.event === 'rules.unknown_webhook'), [
    { level: 'warn', rule: 'paged-deletes', webhook: 'pager', rule_at: /fixtures\/rules\/notify\/00-notify\.yaml:5:\d+$/, fix: /add a webhook named pager under notify\.webhooks/ },
  ], 'a rule naming a webhook the config lacks: warned at load, with its position');
  rx.plan.set('/forbidden', [403]);
  await sg2.identity.setTotp('alice', 'JBSWY3DPEHPK3PXP', 0, []);
  const c = new pg.Client({ ...sg2.pgConfig(), application_name: 'notify-test' });
  c.on('error', () => {});
  c.on('notice', () => {});
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  void c.query('DELETE FROM paged WHERE id = 42').catch(() => {});
  const id = await waitFor('a held statement', () => sg2.broker!.pendingFor('alice', [])[0]?.id);
  const trail = (): Record<string, unknown>[] => {
    const d = new Database(path.join(sg2.dataDir, 'audit.db'), { readonly: true });
    try {
      return (d.prepare("SELECT kind, body FROM events WHERE kind LIKE 'notify.%' ORDER BY seq").all() as { kind: string; body: string }[]).map((r) => ({ kind: r.kind, ...JSON.parse(r.body) }));
    } finally {
      d.close();
    }
  };
  const events = await waitFor('three notify events', async () => {
    await sg2.app.audit.durable();
    const e = trail();
    return e.length >= 3 && e;
  });
  const of = (hook: string) => events.filter((e) => e.webhook === hook);
  t.match(of('overflow'), [{ kind: 'notify.failed', challenge: id, error: 'the delivery queue is full (2)', will_retry: false }]);
  t.match(of('forbidden'), [{ kind: 'notify.failed', attempt: 1, status: 403, will_retry: false }]);
  t.match(of('dead'), [{ kind: 'notify.failed', attempt: 1, will_retry: true, retry_in_ms: 60_000 }]);
  t.equal(rx.on('/overflow').length, 0, 'the dropped delivery was not sent');
  t.equal(rx.on('/forbidden').length, 1, 'a 403 is the receiver saying no: one attempt');
  const closing = Date.now();
  await sg2.app.close();
  await sg2.app.notifier!.idle();
  t.ok(Date.now() - closing < 5000, `closed without waiting out the 60 s backoff (${Date.now() - closing} ms)`);
  // The notify events are part of the hash chain like any other.
  const v = await cli(['audit', 'verify', '--data', sg2.dataDir]);
  t.equal(v.code, 0, v.stdout + v.stderr);
  t.match(v.stdout, /OK: the audit trail is intact/);
  await sg2.close();
});

t.test('backoff: doubles from 1s, capped at 60s', async (t) => {
  t.same([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffMs(n)), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
  t.equal(backoffMs(3, 100, 250), 250);
});
