/**
 * Approvers (four eyes) and many people at once, end to end: alice (dev), bob and carol (dba), each in
 * their own browser profile with their own virtual passkey.
 */
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { enrollmentLink } from '../../src/console/url.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, REPO_ROOT, startStepgate, type TestUser } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { approveOnPage, approveViaApi, challengeCard, enroll, launchBrowser, newPerson, waitForChallenge, type Person } from './browser.js';

// Browser global, used only inside page.evaluate callbacks (the project compiles without DOM types).
declare const window: unknown;

const RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'console');
const BOB: TestUser = { name: 'bob', password: 'bob-secret-pw', groups: ['dba'] };
const CAROL: TestUser = { name: 'carol', password: 'carol-secret-pw', groups: ['dba'] };

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE items (id int PRIMARY KEY);
  CREATE TABLE payroll (id int PRIMARY KEY);
  CREATE TABLE vault (id int PRIMARY KEY);
  INSERT INTO items SELECT generate_series(1, 50);
  INSERT INTO payroll SELECT generate_series(1, 50);
  INSERT INTO vault SELECT generate_series(1, 50);
`);
const sg = await startStepgate(t, db, { rulesDir: RULES, users: [ALICE, BOB, CAROL] });
const consoleUrl = sg.consoleUrl!;
const browser = await launchBrowser(t);
const people: Record<string, Person> = {};
for (const name of ['alice', 'bob', 'carol']) people[name] = await newPerson(browser, name);
const { alice, bob, carol } = people as { alice: Person; bob: Person; carol: Person };

t.afterEach(async () => {
  for (const p of Object.values(people)) {
    if (p.errors.length) t.comment(`${p.name}'s browser errors: ${p.errors.join(' | ')}`);
    p.errors.length = 0;
  }
});

async function connect(tt: { teardown(fn: () => unknown): void }, user: TestUser): Promise<{ c: pg.Client; notices: { message: string; detail?: string }[] }> {
  const c = new pg.Client({ ...sg.pgConfig(user), application_name: `${user.name}-app` });
  const notices: { message: string; detail?: string }[] = [];
  c.on('notice', (n) => notices.push({ message: n.message ?? '', detail: n.detail }));
  c.on('error', () => {});
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  return { c, notices };
}

async function remaining(table: string, id: number): Promise<number> {
  return (await db.query(`SELECT count(*)::int AS n FROM ${table} WHERE id = ${id}`)).rows[0].n as number;
}

t.test('everyone enrolls', async (t) => {
  for (const p of [alice, bob]) await enroll(p, enrollmentLink(consoleUrl, (await sg.identity.issueEnrollment(p.name)).token));
  t.equal(sg.identity.passkeyCount('alice'), 1);
  t.equal(sg.identity.passkeyCount('bob'), 1);
});

t.test('a rule that needs more approvers than have passkeys is refused at once, with what is missing', async (t) => {
  const { c } = await connect(t, ALICE);
  const err = (await c.query('DELETE FROM vault WHERE id = 1').catch((e: pg.DatabaseError) => e)) as pg.DatabaseError;
  t.equal(err.code, '42501');
  t.match(err.detail, /needs 2 approvers from dba other than alice, but only 1 such user has a passkey or an authenticator app/);
  await enroll(carol, enrollmentLink(consoleUrl, (await sg.identity.issueEnrollment('carol')).token));
});

t.test("four eyes: the author's own approval is refused by the server; another DBA's is accepted", async (t) => {
  const { c, notices } = await connect(t, BOB);
  const query = c.query('DELETE FROM payroll WHERE id = 1');
  const id = await waitForChallenge(carol.page);
  await waitFor('the notice', () => notices.length > 0);
  t.match(notices[0]!.detail, /needs an approval by dba \(not you\)/);

  // The author sees it, without an Approve button, and the server refuses the ceremony anyway.
  await waitForChallenge(bob.page, id);
  t.equal(await challengeCard(bob.page, id).locator('[data-action="approve"]').count(), 0, 'no Approve button for the author');
  t.match(await challengeCard(bob.page, id).locator('.note').textContent(), /four eyes/);
  const own = await approveViaApi(bob.page, id);
  t.equal(own.ok, false);
  t.equal(own.status, 403);
  t.match(own.error, /you wrote this statement/);

  // Nobody else sees it: alice is neither the author nor a DBA.
  t.equal(await challengeCard(alice.page, id).count(), 0, 'alice does not see bob\'s statement');
  const aliceTries = await approveViaApi(alice.page, id);
  t.equal(aliceTries.status, 404, 'and cannot approve it');

  // An assertion made by carol for this statement does not work from bob's session.
  const carolsResponse = await carol.page.evaluate(async (cid) => {
    const opts = await fetch(`/api/challenges/${cid}/options`, { method: 'POST', headers: { 'X-Stepgate': '1', 'Content-Type': 'application/json' }, body: '{}' }).then((r) => r.json());
    const lib = (window as { SimpleWebAuthnBrowser: { startAuthentication(o: unknown): Promise<unknown> } }).SimpleWebAuthnBrowser;
    return lib.startAuthentication({ optionsJSON: opts });
  }, id);
  const stolen = await bob.page.evaluate(
    async ({ cid, response }) =>
      fetch(`/api/challenges/${cid}/approve`, { method: 'POST', headers: { 'X-Stepgate': '1', 'Content-Type': 'application/json' }, body: JSON.stringify({ response }) }).then((r) => r.status),
    { cid: id, response: carolsResponse },
  );
  t.equal(stolen, 403, "carol's assertion is refused in bob's session");
  t.equal(await remaining('payroll', 1), 1, 'still held');

  t.equal(await approveOnPage(carol.page, id), 'approved');
  t.equal((await query).rowCount, 1);
  t.equal(await remaining('payroll', 1), 0);
  await challengeCard(bob.page, id).waitFor({ state: 'detached' });
});

t.test('count 2: two distinct approvers are needed', async (t) => {
  const { c } = await connect(t, ALICE);
  const query = c.query('DELETE FROM vault WHERE id = 2');
  const id = await waitForChallenge(bob.page);
  await waitForChallenge(carol.page, id);
  await waitForChallenge(alice.page, id);

  t.match(await approveOnPage(bob.page, id), /still needs another approval/);
  await carol.page.locator(`[data-challenge-id="${id}"] .needs`, { hasText: '1 of 2' }).waitFor();
  t.match(await challengeCard(carol.page, id).locator('.needs').textContent(), /so far: bob/);
  const again = await approveViaApi(bob.page, id);
  t.equal(again.status, 403, 'the same approver twice does not count');
  t.match(again.error, /already approved/);
  const author = await approveViaApi(alice.page, id);
  t.equal(author.status, 403, 'the author cannot be the second approver');
  t.equal(await remaining('vault', 2), 1, 'one approval is not enough');

  t.equal(await approveOnPage(carol.page, id), 'approved');
  t.equal((await query).rowCount, 1);
  t.equal(await remaining('vault', 2), 0);
});

t.test('one message held by two rules needs both: the author for one, a DBA for the other', async (t) => {
  const { c } = await connect(t, ALICE);
  const query = c.query('DELETE FROM payroll WHERE id = 3; DELETE FROM items WHERE id = 3');
  const id = await waitForChallenge(carol.page);
  await waitForChallenge(alice.page, id);
  const needs = await challengeCard(alice.page, id).locator('.needs').allTextContents();
  t.equal(needs.length, 2, `two requirements: ${needs.join(' | ')}`);

  t.match(await approveOnPage(carol.page, id), /still needs another approval/, "the DBA's approval covers only the four-eyes rule");
  t.equal(await remaining('payroll', 3), 1);
  t.equal(await approveOnPage(alice.page, id), 'approved');
  await query;
  t.equal(await remaining('payroll', 3), 0);
  t.equal(await remaining('items', 3), 0);
});

t.test('many held statements at once, from several people, are independent', async (t) => {
  const conns = await Promise.all([connect(t, ALICE), connect(t, ALICE), connect(t, ALICE), connect(t, BOB), connect(t, CAROL)]);
  const ids = [10, 11, 12, 13, 14];
  const queries = conns.map(({ c }, i) => c.query(`DELETE FROM items WHERE id = ${ids[i]}`).then(
    (r) => `deleted ${r.rowCount}`,
    (e: pg.DatabaseError) => `error ${e.code}`,
  ));
  // Each person sees exactly their own statements.
  await waitFor('alice sees her three', async () => (await challengeCard(alice.page).count()) === 3);
  await waitFor('bob sees his one', async () => (await challengeCard(bob.page).count()) === 1);
  await waitFor('carol sees her one', async () => (await challengeCard(carol.page).count()) === 1);

  const aliceIds = await challengeCard(alice.page).evaluateAll((els) => els.map((e) => e.getAttribute('data-challenge-id')!));
  // Oldest first: the order they were held in is not guaranteed across connections; find each by its SQL.
  const bySql = new Map<number, string>();
  for (const cid of aliceIds) {
    const sql = (await challengeCard(alice.page, cid).locator('pre.sql').textContent()) ?? '';
    bySql.set(Number(/id = (\d+)/.exec(sql)![1]), cid);
  }
  await challengeCard(alice.page, bySql.get(11)!).locator('[data-action="reject"]').click();
  t.equal(await approveOnPage(alice.page, bySql.get(10)!), 'approved');
  t.equal(await approveOnPage(bob.page, await waitForChallenge(bob.page)), 'approved');
  await challengeCard(carol.page).first().locator('[data-action="reject"]').click();
  t.equal(await approveOnPage(alice.page, bySql.get(12)!), 'approved');

  t.same(await Promise.all(queries), ['deleted 1', 'error 42501', 'deleted 1', 'deleted 1', 'error 42501']);
});
