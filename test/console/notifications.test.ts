/**
 * Browser notifications in a real Chromium: opt-in with the console's button, then a statement held
 * while the tab is in the background produces exactly one notification with the card's summary, closed
 * once it is decided; none without opting in, none while the tab is visible, and a browser that blocks
 * notifications gets a disabled button that says so.
 *
 * Headless Chromium keeps every tab "visible", so an init script makes document.visibilityState report
 * what the test says (and fires visibilitychange); window.Notification is wrapped (the real constructor
 * still runs) to observe what the page shows.
 */
import path from 'node:path';
import pg from 'pg';
import t from 'tap';
import { enrollmentLink } from '../../src/console/url.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';
import { approveOnPage, challengeCard, enroll, launchBrowser, newPerson, waitForChallenge } from './browser.js';

// Browser globals, used only inside init scripts and page.evaluate callbacks (no DOM types in the project).
declare const window: Record<string, unknown> & { Notification: unknown; dispatchEvent(e: unknown): void };
declare const navigator: unknown;
declare const document: { dispatchEvent(e: unknown): void };
declare const localStorage: { getItem(k: string): string | null };
declare class Event {
  constructor(type: string);
}

interface Shown {
  title: string;
  body: string;
  tag: string;
  closed: boolean;
}

const RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'console');
const db = await startPostgres(t);
await db.query(`CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 10) g;`);
const sg = await startStepgate(t, db, { rulesDir: RULES, users: [ALICE] });
const consoleUrl = sg.consoleUrl!;
const browser = await launchBrowser(t);
const alice = await newPerson(browser, 'alice');
const page = alice.page;
t.teardown(() => alice.context.close().catch(() => {}));

/**
 * Runs in the page before its scripts. The headless shell has no notification platform: its
 * Notification.permission is always "denied" although the permission itself (navigator.permissions,
 * what CDP grants) is "granted". So the wrapper reports the permission from navigator.permissions and
 * requestPermission answers with it; the real constructor still runs (it shows nothing here).
 */
function observeNotifications(): void {
  const w = window as Record<string, unknown>;
  w.__hidden = false;
  Object.defineProperty(Document.prototype, 'visibilityState', { configurable: true, get: () => (w.__hidden ? 'hidden' : 'visible') });
  Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get: () => w.__hidden === true });
  const shown: unknown[] = [];
  w.__shown = shown;
  let permission = 'default';
  const perms = (navigator as { permissions: { query(d: { name: string }): Promise<{ state: string; addEventListener(t: string, f: () => void): void }> } }).permissions;
  void perms.query({ name: 'notifications' }).then((s) => {
    const read = () => (permission = s.state === 'prompt' ? 'default' : s.state);
    read();
    s.addEventListener('change', read);
  });
  const Real = w.Notification as new (title: string, options?: { body?: string; tag?: string }) => { close(): void };
  w.Notification = new Proxy(Real, {
    construct(target, args: [string, { body?: string; tag?: string }?]) {
      const n = Reflect.construct(target, args) as { close(): void };
      const record = { title: args[0], body: args[1]?.body ?? '', tag: args[1]?.tag ?? '', closed: false };
      shown.push(record);
      const close = n.close.bind(n);
      n.close = () => {
        record.closed = true;
        close();
      };
      return n;
    },
    get(target, key) {
      if (key === 'permission') return permission;
      if (key === 'requestPermission') return () => Promise.resolve(permission === 'default' ? 'denied' : permission);
      return Reflect.get(target, key);
    },
  });
}
await alice.context.addInitScript(observeNotifications);
// Declared for the init script's compile only (it runs in the page).
declare const Document: { prototype: object };

async function setHidden(hidden: boolean): Promise<void> {
  await page.evaluate((h) => {
    window.__hidden = h;
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}
const shownSoFar = (): Promise<Shown[]> => page.evaluate(() => window.__shown as Shown[]);

async function holdDelete(tt: { teardown(fn: () => unknown): void }, id: number): Promise<{ done: Promise<pg.QueryResult>; challenge: string }> {
  const c = new pg.Client(sg.pgConfig());
  c.on('error', () => {});
  c.on('notice', () => {});
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  const done = c.query(`DELETE FROM items WHERE id = ${id}`);
  const challenge = await waitForChallenge(page);
  return { done, challenge };
}

await alice.context.grantPermissions(['notifications'], { origin: consoleUrl });
const { token } = await sg.identity.issueEnrollment('alice');
await enroll(alice, enrollmentLink(consoleUrl, token));

t.test('not opted in: a hidden tab gets no notification (the browser would allow one)', async (t) => {
  t.equal(await page.evaluate(() => (window.Notification as { permission: string }).permission), 'granted', 'the browser allows notifications (granted over CDP)');
  t.equal(await page.locator('[data-action="toggle-notifications"]').textContent(), 'Notify me when a statement waits');
  await setHidden(true);
  const { done, challenge } = await holdDelete(t, 1);
  await setHidden(false);
  t.equal(await approveOnPage(page, challenge), 'approved');
  await done;
  t.same(await shownSoFar(), [], 'nothing shown');
});

t.test('opted in: one notification for a hold while hidden, with the summary; closed when decided', async (t) => {
  await page.click('[data-action="toggle-notifications"]');
  await page.locator('[data-action="toggle-notifications"]', { hasText: 'Turn off notifications' }).waitFor();
  t.equal(await page.evaluate(() => localStorage.getItem('stepgate.notifications')), 'on', 'remembered in this browser');
  t.match(await page.locator('#notify-note').textContent(), /in the background/);

  await setHidden(true);
  const { done, challenge } = await holdDelete(t, 2);
  await page.waitForFunction(() => (window.__shown as unknown[]).length > 0);
  const shown = await shownSoFar();
  t.equal(shown.length, 1, 'exactly one notification');
  t.match(shown[0], { title: 'stepgate: waiting for your approval', tag: `stepgate-${challenge}`, closed: false });
  t.match(shown[0]!.body, /^DELETE on items\nalice on postgres · rule step-up-delete$/, 'the card summary, who, where and the rule');

  await setHidden(false);
  t.equal(await approveOnPage(page, challenge), 'approved');
  await done;
  await page.waitForFunction(() => (window.__shown as { closed: boolean }[])[0]!.closed);
  t.pass('closed once decided');
  t.equal((await shownSoFar()).length, 1, 'still one');
});

t.test('opted in, tab visible: the card is enough, no notification', async (t) => {
  const { done, challenge } = await holdDelete(t, 3);
  await challengeCard(page, challenge).waitFor();
  t.equal((await shownSoFar()).length, 1, 'no new notification');
  t.equal(await approveOnPage(page, challenge), 'approved');
  await done;
});

t.test('turned off again: hidden holds are silent', async (t) => {
  await page.click('[data-action="toggle-notifications"]');
  await page.locator('[data-action="toggle-notifications"]', { hasText: 'Notify me when a statement waits' }).waitFor();
  await setHidden(true);
  const { done, challenge } = await holdDelete(t, 4);
  await setHidden(false);
  t.equal(await approveOnPage(page, challenge), 'approved');
  await done;
  t.equal((await shownSoFar()).length, 1, 'no new notification');
});

t.test('a browser that blocks notifications: the button is disabled and says why', async (t) => {
  const other = await newPerson(browser, 'blocked');
  t.teardown(() => other.context.close().catch(() => {}));
  await other.context.addInitScript(observeNotifications);
  // The person (or policy) blocked notifications for the console's site.
  const { targetInfo } = await other.cdp.send('Target.getTargetInfo');
  await other.cdp.send('Browser.setPermission', { origin: consoleUrl, browserContextId: targetInfo.browserContextId, permission: { name: 'notifications' }, setting: 'denied' });
  await other.page.goto(consoleUrl);
  const button = other.page.locator('[data-action="toggle-notifications"][disabled]');
  await button.waitFor({ state: 'attached' });
  t.pass('the button is disabled');
  t.match(await other.page.locator('#notify-note').textContent(), /blocked for this site/);
});
