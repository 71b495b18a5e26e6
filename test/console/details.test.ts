/**
 * What the console tells approvers beyond the SQL (issue #14, part 3), in a real Chromium with a virtual
 * passkey against a real PostgreSQL: cards that tell two terminals apart, the preview on the card, what
 * an approved statement did in "Recently decided", what a /c/ID link of a decided statement says, a
 * passkey's "last used" updated live, and the banner when stepgate becomes unreachable.
 */
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { enrollmentLink } from '../../src/console/url.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { approveOnPage, challengeCard, enroll, launchBrowser, live, newPerson, waitForChallenge } from './browser.js';

// Browser global, used only inside page.evaluate callbacks (the project compiles without DOM types).
declare const document: { querySelector(selector: string): { getAttribute(name: string): string | null } | null };

const RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'console-details');

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE items (id int PRIMARY KEY);
  CREATE TABLE orders (id int PRIMARY KEY, status text);
  INSERT INTO items SELECT generate_series(1, 10);
  INSERT INTO orders SELECT g, CASE WHEN g <= 7 THEN 'stale' ELSE 'open' END FROM generate_series(1, 50) g;
`);
const sg = await startStepgate(t, db, { rulesDir: RULES, users: [ALICE] });
const consoleUrl = sg.consoleUrl!;
const browser = await launchBrowser(t);
const alice = await newPerson(browser, 'alice');
const page = alice.page;

t.afterEach(async () => {
  if (alice.errors.length) t.comment(`browser errors: ${alice.errors.join(' | ')}`);
  alice.errors.length = 0;
});

interface Terminal {
  c: pg.Client;
  /** The PostgreSQL backend's pid, as the terminal itself sees it. */
  pid: number;
  /** The client's own port (stepgate sees it as the remote port). */
  port: number;
}

async function terminal(tt: { teardown(fn: () => unknown): void }): Promise<Terminal> {
  const c = new pg.Client({ ...sg.pgConfig(ALICE), application_name: 'psql' });
  c.on('error', () => {});
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const port = (c as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort;
  return { c, pid, port };
}

/** The text of one fact (data-fact) on a card. */
async function fact(id: string, key: string): Promise<string> {
  return (await challengeCard(page, id).locator(`[data-fact="${key}"] dd`).textContent()) ?? '';
}

t.test('enroll', async () => {
  await enroll(alice, enrollmentLink(consoleUrl, (await sg.identity.issueEnrollment('alice')).token), 'laptop');
});

t.test('two terminals of the same person: their cards say which is which', async (t) => {
  const a = await terminal(t);
  const b = await terminal(t);
  t.not(a.pid, b.pid);
  const qa = a.c.query('DELETE FROM items WHERE id = 1');
  const ida = await waitForChallenge(page);
  const qb = b.c.query('DELETE FROM items WHERE id = 2');
  await waitFor('two cards', async () => (await challengeCard(page).count()) === 2);
  const idb = (await challengeCard(page).nth(1).getAttribute('data-challenge-id'))!;
  t.not(ida, idb);

  for (const [id, term] of [
    [ida, a],
    [idb, b],
  ] as const) {
    t.equal(await fact(id, 'server-pid'), String(term.pid), 'the server pid is the one the terminal sees (SELECT pg_backend_pid())');
    t.equal(await fact(id, 'client'), `127.0.0.1:${term.port}`, 'the client address and port');
    t.match(await fact(id, 'connected'), /^since \S/, 'connected since');
  }
  const sa = await fact(ida, 'session');
  const sb = await fact(idb, 'session');
  t.match(sa, /^[0-9a-f]{8}$/, 'the session as the audit trail lists it');
  t.not(sa, sb, 'different sessions');
  t.match(await challengeCard(page, ida).locator('.head .muted').textContent(), `session ${sa}`);

  t.equal(await approveOnPage(page, ida), 'approved');
  t.equal(await approveOnPage(page, idb), 'approved');
  t.equal((await qa).rowCount, 1);
  t.equal((await qb).rowCount, 1);
});

let previewId = '';

t.test('the preview on the card; after approval, Recently decided shows what ran; "last used" updates', async (t) => {
  const a = await terminal(t);
  const lastUsed = async (): Promise<number> => Number(await page.locator('#passkeys li').first().getAttribute('data-last-used-at'));
  const before = await lastUsed();
  const q = a.c.query("DELETE FROM orders WHERE status = 'stale'");
  const id = await waitForChallenge(page);
  previewId = id;
  const card = challengeCard(page, id);
  t.equal(await card.locator('[data-preview]').getAttribute('data-preview'), 'ran');
  t.equal(await card.locator('.preview-result').textContent(), 'DELETE 7 · locks orders', 'the real row count and the locked table');
  t.equal(await db.query("SELECT count(*)::int AS n FROM orders WHERE status = 'stale'").then((r) => r.rows[0].n), 7, 'not committed while it waits');

  t.equal(await approveOnPage(page, id), 'approved');
  t.equal((await q).rowCount, 7, 'the client gets the real reply');
  const entry = page.locator(`#recent li[data-recent-id="${id}"]`);
  await entry.locator('.outcome[data-outcomes="1"]').waitFor();
  t.match(await entry.locator('.outcome').textContent(), /^ran: DELETE 7 \(7 rows\) at .+/, 'tag, rows and time');
  t.match(await entry.textContent(), /approved by alice at/);

  await page.waitForFunction((old) => Number(document.querySelector('#passkeys li')?.getAttribute('data-last-used-at')) > old, before);
  t.ok((await lastUsed()) > before, 'last used moved forward without reloading');
});

t.test('no preview where none is faithful: the card says why, plainly', async (t) => {
  const a = await terminal(t);
  // Parameters: Parse/Bind/Execute, which is not previewed.
  const q = a.c.query('DELETE FROM orders WHERE id = $1', [40]).catch((e: pg.DatabaseError) => e);
  const id = await waitForChallenge(page);
  const card = challengeCard(page, id);
  t.equal(await card.locator('[data-preview]').getAttribute('data-preview'), 'unavailable');
  t.match(await card.locator('[data-preview]').textContent(), /^No preview: previews run for simple-protocol statements/);
  await card.locator('input[name=reason]').fill('wrong order');
  await card.locator('[data-action="reject"]').click();
  t.equal(((await q) as pg.DatabaseError).code, '42501');
  const entry = page.locator(`#recent li[data-recent-id="${id}"]`);
  await entry.waitFor();
  t.match(await entry.textContent(), /rejected by alice at .+: wrong order/);
  t.equal(await entry.locator('.outcome').count(), 0, 'nothing ran');
});

t.test('a /c/ID link of a decided statement says what became of it', async (t) => {
  await page.goto(`${consoleUrl}/c/${previewId}`);
  await live(page);
  const panel = page.locator('#decided');
  await panel.waitFor();
  t.equal(await panel.getAttribute('data-status'), 'approved');
  t.match(await page.locator('#decided-status').textContent(), /^It was approved by alice at .+\.$/);
  t.match(await page.locator('#decided-outcome').textContent(), /^ran: DELETE 7 \(7 rows\) at /);
  t.match(await page.locator('#decided-what').textContent(), /DELETE by alice on postgres \(session [0-9a-f]{8}, 127\.0\.0\.1:\d+; preview: DELETE 7 · locks orders\)/);

  // The API answers the same for a page that did not see it live.
  const r = await page.evaluate(async (id) => (await fetch(`/api/challenges/${id}`, { headers: { 'X-Stepgate': '1' } })).json(), previewId);
  t.match(r, { state: 'decided', resolved: { id: previewId, status: 'approved', by: 'alice', outcomes: [{ tag: 'DELETE 7', rows: 7 }] } });

  await page.goto(`${consoleUrl}/c/AAAAAAAAAAAAAAAAAAAAAA`);
  await panel.waitFor();
  t.match(await page.locator('#decided-status').textContent(), /stepgate does not remember this statement/, 'an unknown one: said so, with where to look');
});

t.test('the live connection is cut: the banner says so, and goes once the page has reconnected', async (t) => {
  const routes: { close(options: { code: number; reason: string }): Promise<void> }[] = [];
  await page.routeWebSocket(/\/ws$/, (ws) => {
    ws.connectToServer();
    routes.push(ws);
  });
  t.teardown(() => page.unrouteAll());
  await page.goto(consoleUrl);
  await live(page);
  t.equal(routes.length, 1);
  await routes[0]!.close({ code: 4000, reason: 'cut by the test' });
  await page.locator('#unreachable').waitFor({ state: 'visible' });
  t.match(await page.locator('#unreachable').textContent(), /stepgate is unreachable/);
  // The page tries again by itself (0.5 s later) and the banner goes.
  await page.locator('#unreachable').waitFor({ state: 'hidden' });
  await live(page);
  t.equal(routes.length, 2, 'reconnected once');
});

t.test('stepgate goes away: the console says it is unreachable and keeps trying', async (t) => {
  await page.goto(consoleUrl);
  await live(page);
  t.ok(await page.locator('#unreachable').isHidden(), 'no banner while live');
  await sg.close();
  const banner = page.locator('#unreachable');
  await banner.waitFor({ state: 'visible' });
  t.match(await banner.textContent(), /stepgate is unreachable/);
  await page.locator('#unreachable-retry').filter({ hasText: /Trying again in \d+ s/ }).waitFor();
  t.equal(await page.locator('#status').getAttribute('data-state'), 'connecting');
  alice.errors.length = 0; // the failed reconnects are logged by the browser
});
