/**
 * Single sign-on in the console, end to end: a real OpenID Provider (oidc-provider) on loopback, a real
 * Chromium with a virtual passkey, a real PostgreSQL. Sign-in by SSO (user created, groups from the IdP,
 * refreshed at each sign-in), a passkey enrolled after it (a fresh SSO sign-in required), passkey sign-in
 * refused for SSO users, the authenticator app (TOTP) with recovery codes approving a held statement
 * where the rule allows it (and refused where it demands a passkey, replays and too many wrong codes
 * refused and audited), a database credential from the Connect page and from `stepgate login`, step-up at
 * connect on risk signals (approve and reject), first_access, and a person removed at the IdP.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import Database from 'better-sqlite3';
import pg from 'pg';
import t from 'tap';
import type { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { loginCommand } from '../../src/commands/login.js';
import { totpCode } from '../../src/identity/totp.js';
import { startIdp, type IdpClient } from '../helpers/oidc.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate } from '../helpers/stepgate.js';
import { challengeCard, launchBrowser, live, newPerson, waitForChallenge, approveOnPage, type Person } from './browser.js';

// Browser global, used only inside page.evaluate callbacks (the project compiles without DOM types).
declare const window: unknown;

const RULES = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-sso-rules-'));
t.teardown(() => fs.rmSync(RULES, { recursive: true, force: true }));
fs.writeFileSync(
  path.join(RULES, '10-sso.yaml'),
  `default: allow
rules:
  - name: risky-login
    on: connect
    description: a new network right after failed logins
    match:
      signals: {new_client_address: 30d, recent_login_failures: {count: 2, within: 10m}}
    action: step-up
    timeout: 60s
    message: A login from a new place after failed attempts.
  - name: truncate-passkey-only
    match: {command: TRUNCATE TABLE}
    action: step-up
    factors: [passkey]
  - name: deletes
    match: {command: DELETE}
    action: step-up
  - name: first-touch-of-secrets
    match: {tables: [secrets], signals: {first_access: true}}
    action: step-up
    message: First time you read this table.
`,
);

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE items (id int PRIMARY KEY);
  INSERT INTO items SELECT generate_series(1, 50);
  CREATE TABLE secrets (id int);
  INSERT INTO secrets VALUES (1);
  CREATE TABLE scratch (id int);
`);
const idp = await startIdp(t);
let consoleSkew = 0;
const sg = await startStepgate(t, db, {
  rulesDir: RULES,
  users: [ALICE],
  configYaml: ['sso:', `  issuer: ${idp.issuer}`, '  client_id: stepgate', '  client_secret: stepgate-secret', '  scopes: [openid, profile, email, groups]', '  credential_ttl: 2h', ''].join('\n'),
  now: () => Date.now() + consoleSkew,
  sso: { jwksCooldownMs: 0 },
});
const consoleUrl = sg.consoleUrl!;
const STEPGATE: IdpClient = { client_id: 'stepgate', client_secret: 'stepgate-secret', redirect_uris: [`${consoleUrl}/sso/callback`] };
await idp.setClients([STEPGATE]);
idp.accounts.set('sub-carol', { sub: 'sub-carol', preferred_username: 'carol', email: 'carol@example.com', groups: ['dev', 'dba'] });

const browser = await launchBrowser(t);
const carol: Person = await newPerson(browser, 'carol');
const page = carol.page;
t.afterEach(async () => {
  if (carol.errors.length) t.comment(`browser errors: ${carol.errors.join(' | ')}`);
  carol.errors.length = 0;
});

/** Signs in at the console by SSO (the IdP's login form when it asks). */
async function ssoSignIn(p = page, login = 'sub-carol'): Promise<void> {
  await p.goto(`${consoleUrl}/sso/start`);
  await answerIdp(p, login);
  await p.locator('#view-console').waitFor({ state: 'visible' }).catch(async (e) => {
    throw new Error(`${(e as Error).message}: ${p.url()} ${await p.locator('#signin-error').textContent()}`);
  });
  await live(p);
}

/** Fills the IdP's login form if it shows one (its session may make it skip the form). */
async function answerIdp(p = page, login = 'sub-carol'): Promise<void> {
  if (p.url().startsWith(idp.issuer)) {
    await p.fill('input[name="login"]', login);
    await p.fill('input[name="password"]', 'any');
    await p.click('button[type="submit"]');
  }
  await p.waitForURL((u) => u.href.startsWith(consoleUrl) && !u.pathname.startsWith('/sso/'));
}

async function pageApi(method: string, url: string, body?: unknown): Promise<{ ok: boolean; status?: number; code?: string; data?: Record<string, unknown>; error?: string }> {
  return page.evaluate(
    async ([m, u, b]) => {
      const w = window as unknown as { stepgateConsole: { api(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> } };
      try {
        return { ok: true, data: await w.stepgateConsole.api(m as string, u as string, b) };
      } catch (err) {
        const e = err as { status?: number; code?: string; message?: string };
        return { ok: false, status: e.status, code: e.code, error: e.message };
      }
    },
    [method, url, body] as const,
  );
}

let password = '';
const clients: pg.Client[] = [];
t.teardown(async () => {
  for (const c of clients) await c.end().catch(() => {});
});
async function connect(pw = password, user = 'carol'): Promise<{ c: pg.Client; notices: string[] }> {
  const c = new pg.Client({ host: sg.host, port: sg.port, user, password: pw, database: 'postgres', application_name: 'sso-test' });
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(`${n.message} ${n.detail ?? ''}`));
  c.on('error', () => {});
  clients.push(c);
  await c.connect();
  return { c, notices };
}

/** The next time step's code (the console's clock moved on by one step). */
function nextCode(secret: string): string {
  consoleSkew += 30_000;
  return totpCode(secret, Date.now() + consoleSkew);
}

let secret = '';

t.test('sign-in by SSO creates the user with the IdP groups; the console shows SSO', async (t) => {
  t.equal(sg.identity.getUser('carol'), null);
  await page.goto(consoleUrl);
  await page.locator('#signin-sso').waitFor({ state: 'visible' });
  await Promise.all([page.waitForURL((u) => u.href.startsWith(idp.issuer)), page.click('[data-action="sign-in-sso"]')]);
  await answerIdp();
  await page.locator('#view-console').waitFor({ state: 'visible' });
  await live(page);
  const carolUser = sg.identity.getUser('carol')!;
  t.same(carolUser.groups, ['dba', 'dev']);
  t.equal(carolUser.ssoSubject, `${idp.issuer}|sub-carol`);
  const me = await pageApi('GET', '/api/me');
  t.equal(me.data!.sso, true);
  t.equal(me.data!.credentials, true, 'an SSO user gets database credentials');
  t.ok(sg.logs.some((l) => l.event === 'console.signin' && l.via === 'sso' && l.created === true));
});

t.test('a passkey is enrolled after the SSO sign-in; passkey sign-in is refused for SSO users', async (t) => {
  page.once('dialog', (d) => void d.accept('carol laptop'));
  await page.click('[data-action="add-passkey"]');
  await page.waitForFunction(() => (window as unknown as { document: { querySelectorAll(s: string): { length: number } } }).document.querySelectorAll('[data-passkey-id]').length === 1);
  t.equal(sg.identity.passkeyCount('carol'), 1);
  // Later than 5 minutes after the SSO sign-in, adding a factor needs a fresh SSO sign-in (not a passkey).
  consoleSkew = 6 * 60_000;
  const stale = await pageApi('POST', '/api/totp/setup');
  t.equal(stale.status, 401);
  t.equal(stale.code, 'sso_reauth');
  const reauth = await pageApi('POST', '/api/passkeys/options');
  t.equal(reauth.code, 'sso_reauth', 'adding a passkey too');
  // The page goes to the IdP with prompt=login and comes back; then the set-up works.
  await Promise.all([page.waitForURL((u) => u.href.startsWith(idp.issuer)), page.click('[data-action="totp-setup"]')]);
  await answerIdp();
  await page.locator('#view-console').waitFor({ state: 'visible' });
  await live(page);
  await page.click('[data-action="totp-setup"]');
  await page.locator('#totp-enroll').waitFor({ state: 'visible' });
  secret = (await page.locator('#totp-secret').textContent())!.trim();
  t.match(secret, /^[A-Z2-7]{32}$/);
  t.match((await page.locator('#totp-qr').getAttribute('src'))!, /^data:image\/png;base64,/, 'a QR code');
  await page.fill('#totp-code', '000000');
  await page.click('[data-action="totp-confirm"]');
  await page.locator('#totp-error').filter({ hasText: /does not match/ }).waitFor();
  await page.fill('#totp-code', totpCode(secret, Date.now() + consoleSkew));
  await page.click('[data-action="totp-confirm"]');
  await page.locator('#recovery').waitFor({ state: 'visible' });
  t.equal(await page.locator('#recovery-codes li').count(), 10, 'ten recovery codes, shown once');
  t.equal(sg.identity.recoveryCodesLeft('carol'), 10);
  t.equal(await page.locator('#totp-state[data-totp="on"]').count(), 1);

  // Passkey sign-in: refused for an SSO user (sign-in goes through the IdP).
  await page.click('[data-action="sign-out"]');
  await page.click('[data-action="sign-in"]');
  await page.locator('#signin-error').filter({ hasText: /single sign-on/ }).waitFor();
  await ssoSignIn();
});

t.test('the Connect page issues a short-lived database credential that works with SCRAM and can be revoked', async (t) => {
  await page.goto(`${consoleUrl}/connect`);
  await page.locator('#view-connect').waitFor({ state: 'visible' });
  await page.click('[data-action="issue-credential"]');
  await page.locator('#issued').waitFor({ state: 'visible' });
  const first = (await page.locator('#issued-password').textContent())!.trim();
  t.match(await page.locator('#issued-psql').textContent(), new RegExp(`psql "host=${sg.host} port=${sg.port} user=carol dbname=postgres sslmode=disable"`));
  t.match(await page.locator('#issued-pgpass').textContent(), new RegExp(`^${sg.host}:${sg.port}:\\*:carol:${first}$`));
  const { c } = await connect(first);
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  const list = await pageApi('GET', '/api/credentials');
  const credentials = list.data!.credentials as { id: string; expiresAt: number }[];
  t.equal(credentials.length, 1);
  t.ok(Math.abs(credentials[0]!.expiresAt - (Date.now() + consoleSkew) - 2 * 60 * 60_000) < 60_000, 'valid for credential_ttl (2h)');
  await page.locator(`[data-credential-id="${credentials[0]!.id}"] [data-action="revoke-credential"]`).click();
  await page.locator('#credentials-empty').waitFor({ state: 'visible' });
  await t.rejects(connect(first), /password authentication failed/, 'revoked: refused');
});

t.test('stepgate login: the terminal gets a credential once the person confirms the code in the console', async (t) => {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (b: Buffer) => (out += b.toString()));
  stderr.on('data', (b: Buffer) => (err += b.toString()));
  const pgpass = path.join(RULES, 'pgpass');
  const done = loginCommand(['--console-url', consoleUrl, `--pgpass=${pgpass}`], { stdout, stderr, stdin: Readable.from([]) }, { sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 100))) });
  await t.resolves(
    (async () => {
      while (!/\/connect#code=/.test(err)) await new Promise((r) => setTimeout(r, 20));
    })(),
  );
  const url = /(http\S+\/connect#code=\S+)/.exec(err)![1]!;
  const code = /code ([A-Z]{4}-[A-Z]{4})/.exec(err)![1]!;
  await page.goto(url);
  await page.locator('#cli-buttons').waitFor({ state: 'visible' });
  t.equal((await page.locator('#cli-code').textContent())!.trim(), code, 'the console shows the code the terminal shows');
  await page.click('[data-action="cli-approve"]');
  t.equal(await done, 0, err);
  t.match(out, /PGPASSWORD='[A-Za-z0-9_-]{32}' psql "host=127\.0\.0\.1 port=\d+ user=carol dbname=postgres sslmode=disable"/);
  password = /PGPASSWORD='([^']+)'/.exec(out)![1]!;
  t.match(fs.readFileSync(pgpass, 'utf8'), new RegExp(`:carol:${password}\\n$`));
  t.equal(fs.statSync(pgpass).mode & 0o777, 0o600);
  const { c } = await connect();
  t.equal((await c.query('SELECT 2 AS two')).rows[0].two, 2);
});

t.test('TOTP approves a held statement where the rule allows it; replays, passkey-only rules and guessing are refused', async (t) => {
  await page.goto(consoleUrl);
  await live(page);
  const { c } = await connect();
  const del = c.query('DELETE FROM items WHERE id = 1');
  const id = await waitForChallenge(page);
  const card = challengeCard(page, id);
  await card.locator('input[name="code"]').waitFor();
  const code = nextCode(secret);
  await card.locator('input[name="code"]').fill(code);
  await card.locator('[data-action="approve-code"]').click();
  t.equal((await del).rowCount, 1, 'approved with the authenticator app code');

  // The same code again (same time step): refused, audited.
  const del2 = c.query('DELETE FROM items WHERE id = 2');
  const id2 = await waitForChallenge(page);
  const replay = await pageApi('POST', `/api/challenges/${id2}/approve-code`, { code });
  t.equal(replay.status, 403);
  t.match(replay.error!, /used already/);
  // A recovery code stands in for the app; each works once.
  const left = sg.identity.recoveryCodesLeft('carol');
  t.equal(left, 10);
  const r = await pageApi('POST', `/api/challenges/${id2}/approve-code`, { code: nextCode(secret) });
  t.equal(r.ok, true, r.error ?? 'recovery');
  t.equal((await del2).rowCount, 1);

  // A rule that demands a passkey: no code controls, and the API refuses a code.
  const trunc = c.query('TRUNCATE scratch');
  const id3 = await waitForChallenge(page);
  t.equal(await challengeCard(page, id3).locator('input[name="code"]').count(), 0, 'the card offers the passkey only');
  const refused = await pageApi('POST', `/api/challenges/${id3}/approve-code`, { code: nextCode(secret) });
  t.equal(refused.status, 403);
  t.match(refused.error!, /needs a passkey to approve: an authenticator app code is not enough/);
  t.equal(await approveOnPage(page, id3), 'approved', 'the passkey approves it');
  await trunc;

  // Guessing: five wrong codes, then even a right one is refused for a while.
  const del3 = c.query('DELETE FROM items WHERE id = 3').then(
    () => null,
    (e: Error) => e,
  );
  const id4 = await waitForChallenge(page);
  // The replay above counted as one failed code: four more make five within the window.
  for (let i = 0; i < 4; i++) {
    const wrong = await pageApi('POST', `/api/challenges/${id4}/approve-code`, { code: '123456' === nextCode(secret) ? '654321' : '123456' });
    t.equal(wrong.status, 403, `wrong code ${i + 2}`);
  }
  const locked = await pageApi('POST', `/api/challenges/${id4}/approve-code`, { code: nextCode(secret) });
  t.equal(locked.status, 429);
  t.match(locked.error!, /too many wrong codes/);
  await pageApi('POST', `/api/challenges/${id4}/reject`, { reason: 'testing the lock' });
  t.match((await del3)?.message, /rejected by carol/);

  await sg.app.audit.durable();
  const trail = new Database(path.join(sg.dataDir, 'audit.db'), { readonly: true });
  const failures = (trail.prepare("SELECT body FROM events WHERE kind = 'factor.failed'").all() as { body: string }[]).map((r) => JSON.parse(r.body));
  const approvals = (trail.prepare("SELECT body FROM events WHERE kind = 'challenge.resolved'").all() as { body: string }[]).map((r) => JSON.parse(r.body));
  trail.close();
  t.ok(failures.length >= 6, `every failure audited (${failures.length})`);
  t.same([...new Set(failures.map((f) => f.reason))].sort(), ['locked', 'replay', 'wrong']);
  t.notOk(JSON.stringify(failures).includes(code), 'never the code itself');
  t.ok(approvals.some((a) => a.status === 'approved' && a.approvers?.[0]?.factor === 'totp'), 'the approval records the factor');
});

t.test('step-up at connect on risk signals: the login waits, the card shows the signals; approve and reject', async (t) => {
  // Two failed logins, and this network not seen for 31 days.
  await t.rejects(connect('wrong-1'));
  await t.rejects(connect('wrong-2'));
  const age = () => (sg.identity as SqliteIdentityStore).db.prepare("UPDATE login_places SET last_seen = ? WHERE user_name = 'carol' AND kind = 'net'").run(Date.now() - 31 * 86_400_000);
  age();
  const held = connect();
  const id = await waitForChallenge(page);
  const card = challengeCard(page, id);
  t.match(await card.locator('h3').textContent(), /Login to postgres/);
  t.equal(await card.locator('[data-signal="new_client_address"]').count(), 1, 'new_client_address on the card');
  t.match(await card.locator('[data-signal="recent_login_failures"]').textContent(), /recent_login_failures \(\d+ failed logins in the last 10m\)/);
  t.equal(await approveOnPage(page, id), 'approved');
  const { c, notices } = await held;
  t.equal((await c.query('SELECT 3 AS three')).rows[0].three, 3, 'the login went on');
  t.match(notices.join('\n'), /this login is held for step-up by rule "risky-login".*Signals: new_client_address/s);

  // Known place now (the approved login was recorded): no hold, although the failures are recent.
  const { c: again } = await connect();
  t.equal((await again.query('SELECT 4 AS four')).rows[0].four, 4);

  await t.rejects(connect('wrong-3'));
  age();
  const second = connect().then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  const id2 = await waitForChallenge(page);
  await challengeCard(page, id2).locator('input[name="reason"]').fill('not me');
  await challengeCard(page, id2).locator('[data-action="reject"]').click();
  const err = await second;
  t.ok(err, 'refused');
  t.equal(err!.code, '28000');
  t.match(err!.message, /stepgate: login rejected by carol: not me/);
  // The refused login did not make the place known.
  (sg.identity as SqliteIdentityStore).db.prepare("DELETE FROM login_failures WHERE user_name = 'carol'").run();

  await sg.app.audit.durable();
  const trail = new Database(path.join(sg.dataDir, 'audit.db'), { readonly: true });
  const events = (trail.prepare("SELECT kind, body FROM events WHERE kind LIKE 'login.%' ORDER BY seq").all() as { kind: string; body: string }[]).map((e) => ({ kind: e.kind, ...JSON.parse(e.body) }));
  trail.close();
  t.match(events, [
    { kind: 'login.held', user: 'carol', rule: 'risky-login', signals: [/^new_client_address/, /^recent_login_failures/] },
    { kind: 'login.resolved', status: 'approved', approvers: [{ user: 'carol', factor: 'passkey' }] },
    { kind: 'login.held' },
    { kind: 'login.resolved', status: 'rejected', by: 'carol', reason: 'not me' },
  ]);
});

t.test('first_access: the first read of a table is held, later ones are not', async (t) => {
  const { c } = await connect();
  const first = c.query('SELECT count(*)::int AS n FROM secrets');
  const id = await waitForChallenge(page);
  t.match((await challengeCard(page, id).locator('[data-signal="first_access"]').textContent())!, /first_access \(secrets: never touched by carol\)/);
  t.equal(await approveOnPage(page, id), 'approved');
  t.equal((await first).rows[0].n, 1);
  t.equal((await c.query('SELECT count(*)::int AS n FROM secrets')).rows[0].n, 1, 'the second read runs at once');
  sg.app.signals.flush();
  t.equal(((sg.identity as SqliteIdentityStore).db.prepare("SELECT count(*) AS n FROM table_access WHERE user_name = 'carol' AND tbl LIKE '%secrets'").get() as { n: number }).n, 1, 'persisted');
});

t.test('groups change at the IdP take effect at the next sign-in; a person removed there cannot sign in', async (t) => {
  idp.accounts.get('sub-carol')!.groups = ['dev', 'oncall'];
  t.same(sg.identity.getUser('carol')!.groups, ['dba', 'dev'], 'unchanged until the next sign-in');
  await page.click('[data-action="sign-out"]');
  await ssoSignIn();
  t.same(sg.identity.getUser('carol')!.groups, ['dev', 'oncall']);

  idp.accounts.delete('sub-carol');
  await page.click('[data-action="sign-out"]');
  const signins = sg.logs.filter((l) => l.event === 'console.signin').length;
  await page.goto(`${consoleUrl}/sso/start?fresh=1`);
  await page.fill('input[name="login"]', 'sub-carol');
  await page.fill('input[name="password"]', 'any');
  await page.click('button[type="submit"]');
  await page.waitForLoadState('load');
  // The IdP itself refuses (its error page); the browser never comes back with a code.
  t.ok(page.url().startsWith(idp.issuer), 'still at the IdP');
  t.match(await page.locator('body').textContent(), /went wrong/);
  t.equal(sg.logs.filter((l) => l.event === 'console.signin').length, signins, 'no sign-in');
  const me = await fetch(`${consoleUrl}/api/me`, { headers: { 'x-stepgate': '1', cookie: (await carol.context.cookies(consoleUrl)).map((c) => `${c.name}=${c.value}`).join('; ') } });
  t.equal(me.status, 401, 'not signed in');
});
