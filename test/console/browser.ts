/**
 * A real Chromium (playwright-core + @sparticuz/chromium) for console tests: one browser per test file,
 * one context per person, each with its own virtual passkey authenticator (CDP WebAuthn domain).
 * Everything is closed when the test ends, pass or fail.
 */
import fs from 'node:fs';
import path from 'node:path';
import sparticuz from '@sparticuz/chromium';
import { chromium, type Browser, type BrowserContext, type CDPSession, type Locator, type Page } from 'playwright-core';
import { REPO_ROOT } from '../helpers/stepgate.js';

// Browser globals, used only inside page.evaluate callbacks (the project compiles without DOM types).
declare const document: { querySelector(selector: string): { querySelector(selector: string): { textContent: string | null } | null } | null };
declare const window: unknown;

/**
 * Launch flags dropped from @sparticuz/chromium's set: two would weaken what the tests check (the
 * same-origin policy), and in single-process mode closing one context takes the whole browser down.
 */
const WEAKENING = new Set(['--disable-web-security', '--allow-running-insecure-content', '--single-process']);

/**
 * The page's modules are a program of their own (src/console/client/tsconfig.json): `tsc -p .` does not
 * build them. A test would otherwise run yesterday's page against today's server: refuse, saying what to run.
 */
function requireBuiltPage(): void {
  const src = path.join(REPO_ROOT, 'src', 'console', 'client');
  const out = path.join(REPO_ROOT, 'dist', 'src', 'console', 'client');
  for (const file of fs.readdirSync(src)) {
    if (!file.endsWith('.ts') || file === 'page.ts' || file === 'styles.ts') continue;
    const js = path.join(out, file.replace(/\.ts$/, '.js'));
    if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(path.join(src, file)).mtimeMs) {
      throw new Error(`the console's browser code is not built or older than its source (${js}): run npx tsc -p src/console/client (npm run build builds both programs)`);
    }
  }
}

export async function launchBrowser(t: { teardown(fn: () => unknown): void }): Promise<Browser> {
  requireBuiltPage();
  const browser = await chromium.launch({
    executablePath: await sparticuz.executablePath(),
    args: sparticuz.args.filter((a) => !WEAKENING.has(a)),
    headless: true,
  });
  t.teardown(() => browser.close().catch(() => {}));
  return browser;
}

export interface Person {
  name: string;
  context: BrowserContext;
  page: Page;
  cdp: CDPSession;
  authenticatorId: string;
  /** Browser console errors and page errors, for diagnosing failures. */
  errors: string[];
}

/** A fresh browser profile with a virtual platform authenticator (resident keys, user verification). */
export async function newPerson(browser: Browser, name: string): Promise<Person> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });
  return { name, context, page, cdp, authenticatorId, errors };
}

/** Opens an enrollment link and registers a passkey; resolves once the console shows up (signed in). */
export async function enroll(person: Person, link: string, passkeyName = `${person.name}'s test key`): Promise<void> {
  const { page } = person;
  await page.goto(link);
  await page.locator('#enroll-ready').waitFor({ state: 'visible' });
  await page.fill('#enroll-name', passkeyName);
  await page.click('[data-action="register-passkey"]');
  await page.locator('#view-console').waitFor({ state: 'visible' });
  await live(page);
}

/** Signs in with the person's passkey at the console URL. */
export async function signIn(person: Person, consoleUrl: string): Promise<void> {
  const { page } = person;
  await page.goto(consoleUrl);
  await page.locator('[data-action="sign-in"]').waitFor({ state: 'visible' });
  await page.click('[data-action="sign-in"]');
  await page.locator('#view-console').waitFor({ state: 'visible' });
  await live(page);
}

/** Waits until the page's WebSocket is connected (the status says Live). */
export async function live(page: Page): Promise<void> {
  await page.locator('#status[data-state="live"]').waitFor();
}

/** The card of a held statement; with `id`, that one. */
export function challengeCard(page: Page, id?: string): Locator {
  return id ? page.locator(`[data-challenge-id="${id}"]`) : page.locator('[data-challenge-id]');
}

/** Waits for a held statement to appear on the page and returns its challenge id. */
export async function waitForChallenge(page: Page, id?: string, timeoutMs = 5_000): Promise<string> {
  // One element handle: a card may go again at once (a rule's short timeout); its id is read from the
  // element that was seen, not from a second lookup that could find nothing.
  const handle = await page.waitForSelector(id ? `[data-challenge-id="${id}"]` : '[data-challenge-id]', { state: 'attached', timeout: timeoutMs });
  return (await handle!.getAttribute('data-challenge-id'))!;
}

/** Clicks Approve on a card and waits for the page to report the server's answer. */
export async function approveOnPage(page: Page, id: string): Promise<string> {
  const card = challengeCard(page, id);
  await card.locator('[data-action="approve"]').click();
  await page.waitForFunction(
    (cid) => {
      const el = document.querySelector(`[data-challenge-id="${cid}"]`);
      return !el || el.querySelector('.result')?.textContent || el.querySelector('.error')?.textContent;
    },
    id,
  );
  const el = challengeCard(page, id);
  if ((await el.count()) === 0) return 'approved';
  const error = await el.locator('.error').textContent();
  return error ? `error: ${error}` : ((await el.locator('.result').textContent()) ?? '');
}

/** Runs the approval ceremony through the page's API helper (no button), returning status and body. */
export async function approveViaApi(page: Page, id: string): Promise<{ ok: boolean; status?: number; body?: unknown; error?: string }> {
  return page.evaluate(async (cid) => {
    const w = window as unknown as { stepgateConsole: { approve(id: string): Promise<unknown> } };
    try {
      return { ok: true, body: await w.stepgateConsole.approve(cid) };
    } catch (err) {
      const e = err as { status?: number; message?: string };
      return { ok: false, status: e.status, error: e.message };
    }
  }, id);
}
