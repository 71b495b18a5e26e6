/**
 * The console's auditor view end to end: real traffic through stepgate (allowed, denied, and a held
 * statement its author approves with a passkey), then a member of `auditors` signs in with a passkey in a
 * real Chromium and sees every user's sessions, one session's timeline (as `stepgate audit replay` shows
 * it) and the chain's verification; after an event row is changed in the SQLite file, "verify now"
 * names it. Someone outside `auditors` gets 403 from the API and no view.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import t from 'tap';
import { sessionsPage } from '../../src/audit/browse.js';
import { AUDIT_MIGRATIONS } from '../../src/audit/db.js';
import { readPublicKey } from '../../src/audit/keys.js';
import { listSessions, type SessionFilter } from '../../src/audit/read.js';
import { enrollmentLink } from '../../src/console/url.js';
import { openDb, readEvents, tamper, writeRules } from '../audit/helpers.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, type TestUser } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { approveOnPage, challengeCard, enroll, launchBrowser, newPerson, waitForChallenge, type Person } from './browser.js';

const AUDREY: TestUser = { name: 'audrey', password: 'audrey-secret-pw', groups: ['auditors'] };
const BOB: TestUser = { name: 'bob', password: 'bob-secret-pw', groups: ['dev'] };

const RULES = `
default: allow
rules:
  - name: deny-drop
    match: {command: DROP TABLE}
    action: deny
    message: Dropping tables is refused here.
  - name: step-up-delete
    match: {command: DELETE}
    action: step-up
    message: Deleting rows needs your passkey.
`;

const db = await startPostgres(t);
await db.query(`CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g;`);
// Checkpoints every 5 events, so the view has signed checkpoints to show.
const sg = await startStepgate(t, db, { rulesDir: writeRules(t, RULES), users: [ALICE, AUDREY, BOB], configYaml: 'audit:\n  checkpoint_every: 5\n' });
const consoleUrl = sg.consoleUrl!;
const origin = new URL(consoleUrl).origin;
const browser = await launchBrowser(t);
const alice = await newPerson(browser, 'alice');
const audrey = await newPerson(browser, 'audrey');

t.afterEach(async () => {
  for (const p of [alice, audrey]) {
    if (p.errors.length) t.comment(`${p.name}'s browser errors: ${p.errors.join(' | ')}`);
    p.errors.length = 0;
  }
});

/** Calls the console API from the person's page (their cookie, the page's origin). */
async function call(person: Person, method: string, url: string): Promise<{ status: number; body: Record<string, any> }> {
  return person.page.evaluate(
    async ({ method, url }) => {
      const init: Record<string, unknown> = { method, headers: { 'X-Stepgate': '1', 'Content-Type': 'application/json' } };
      if (method !== 'GET') init.body = '{}';
      const r = await fetch(url, init);
      return { status: r.status, body: (await r.json()) as Record<string, any> };
    },
    { method, url },
  );
}

function sessionRow(connection: string) {
  return audrey.page.locator(`[data-audit-session="${connection}"]`);
}

t.test('pages of sessions add up to what `stepgate audit sessions` lists, newest first, however small the pages', async (t) => {
  const d = new Database(':memory:');
  t.teardown(() => d.close());
  for (const m of AUDIT_MIGRATIONS) m(d);
  const insert = d.prepare('INSERT INTO sessions (session, connection, user, start_time, end_time) VALUES (?, ?, ?, ?, ?)');
  const base = 1_700_000_000_000;
  for (let i = 1; i <= 40; i++) {
    // Some start at the same millisecond, some are still open, two lost their start (an audit.gap).
    const start = i % 13 === 0 ? null : base + Math.floor(i / 3) * 1000;
    const end = i % 5 === 0 ? null : (start ?? base) + (i % 4) * 10_000;
    insert.run(i, `00000000-0000-0000-0000-${String(i).padStart(12, '0')}`, `u${i % 3}`, start, end);
  }
  const filters: SessionFilter[] = [{}, { user: 'u1' }, { since: base + 8000 }, { until: base + 6000 }, { user: 'u2', since: base + 3000, until: base + 9000 }, { since: base + 10 ** 9 }];
  for (const filter of filters) {
    const expected = listSessions(d, filter).map((r) => r.session).reverse();
    for (const [limit, maxScan] of [[1, 1], [3, 2], [7, 5], [50, 2000]] as const) {
      const got: number[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = sessionsPage(d, filter, cursor, limit, maxScan);
        t.ok(page.sessions.length <= limit);
        got.push(...page.sessions.map((r) => r.session));
        cursor = page.next;
      } while (cursor && ++pages < 200);
      t.same(got, expected, `${JSON.stringify(filter)}, pages of ${limit}, examining ${maxScan}`);
    }
  }
});

let aliceSession = '';
let bobSession = '';
let deniedSeq = 0;

t.test('traffic through stepgate: allowed, denied, and a held statement its author approves', async (t) => {
  await enroll(alice, enrollmentLink(consoleUrl, (await sg.identity.issueEnrollment('alice')).token));
  const c = new pg.Client({ ...sg.pgConfig(ALICE), application_name: 'auditor-test' });
  c.on('error', () => {});
  await c.connect();
  t.equal((await c.query('SELECT count(*)::int AS n FROM items')).rows[0].n, 20);
  t.equal((await c.query(`UPDATE items SET note = 'changed' WHERE id = 1`)).rowCount, 1);
  await t.rejects(c.query('DROP TABLE items'), { code: '42501' });
  const held = c.query('DELETE FROM items WHERE id = 2');
  t.equal(await approveOnPage(alice.page, await waitForChallenge(alice.page)), 'approved');
  t.equal((await held).rowCount, 1);
  await c.end();

  const b = new pg.Client({ ...sg.pgConfig(BOB), application_name: 'bob-app' });
  await b.connect();
  await b.query('SELECT 1');
  await b.end();

  // Both sessions' ends are recorded.
  const rows = await waitFor('both sessions to end in the audit trail', () => {
    const d = openDb(sg.dataDir);
    try {
      const r = d.prepare('SELECT user, connection FROM sessions WHERE end_time IS NOT NULL ORDER BY session').all() as { user: string; connection: string }[];
      return r.length === 2 ? r : null;
    } finally {
      d.close();
    }
  });
  aliceSession = rows.find((r) => r.user === 'alice')!.connection;
  bobSession = rows.find((r) => r.user === 'bob')!.connection;
  deniedSeq = readEvents(sg.dataDir, "kind = 'statement'").find((e) => e.data.decision.action === 'deny')!.seq;
  t.ok(deniedSeq > 0);
});

t.test("an auditor sees every user's sessions, a session's timeline and the chain's verification", async (t) => {
  const page = audrey.page;
  await enroll(audrey, enrollmentLink(consoleUrl, (await sg.identity.issueEnrollment('audrey')).token));
  // The auditor is not shown anyone's held statements by being an auditor.
  t.equal(await challengeCard(page).count(), 0);
  await page.locator('#nav').waitFor({ state: 'visible' });
  await page.click('#nav [data-nav="audit"]');
  await page.waitForURL(`${consoleUrl}/audit`);

  // Sessions, newest first, every user's.
  await sessionRow(aliceSession).waitFor();
  const order = await page.locator('[data-audit-session]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-audit-session')));
  t.same(order, [bobSession, aliceSession], 'newest first');
  const cells = await sessionRow(aliceSession).locator('td').allTextContents();
  t.same(cells.slice(0, 2), [aliceSession.slice(0, 8), 'alice']);
  t.equal(cells[2], 'postgres');
  t.equal(cells[3], '127.0.0.1');
  t.equal(cells[4], 'auditor-test');
  t.match(cells[5], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, 'start (UTC)');
  t.match(cells[6], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, 'end (UTC)');
  t.same(cells.slice(7), ['4', '1', '1'], 'statements, denied, held');

  // Verification runs by itself the first time.
  const status = page.locator('[data-audit-status]');
  await page.locator('[data-audit-status="verified"]').waitFor();
  t.match(await status.textContent(), /^Verified: events 1 to \d+ are intact\.$/);
  const kid = (await readPublicKey(path.join(sg.dataDir, 'audit-signing.pub'))).kid;
  const facts = (await page.locator('#audit-verify-facts li').allTextContents()).join('\n');
  t.match(facts, /\d+ signed checkpoints?, all signatures valid; the last covers event \d+/);
  t.match(facts, /\d+ passkey approvals? signature-checked against the statements they approved/, 'the approvals are checked too');
  t.match(facts, new RegExp(`Latest signed checkpoint: #\\d+, event \\d+, signed \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC \\([a-z]+\\) with key ${kid}\\.`));
  t.match(facts, /Checked .* UTC by audrey \(took \d+/);

  // Filters: the same as `stepgate audit sessions`.
  await page.fill('#audit-user', 'bob');
  await page.click('[data-action="audit-filter"]');
  // The list is cleared, then filled from the server: bob's row shows that the filtered page arrived.
  await sessionRow(aliceSession).waitFor({ state: 'detached' });
  await sessionRow(bobSession).waitFor();
  t.equal(await page.locator('[data-audit-session]').count(), 1, 'only bob\'s session');
  await page.fill('#audit-since', '2999-01-01');
  await page.press('#audit-since', 'Enter');
  await page.locator('#audit-sessions-empty').waitFor({ state: 'visible' });
  t.equal(await page.locator('[data-audit-session]').count(), 0, 'nothing since a time to come');
  await page.fill('#audit-since', 'yesterday-ish');
  await page.click('[data-action="audit-filter"]');
  await page.locator('#audit-sessions-error').filter({ hasText: /is not a time/ }).waitFor();
  await page.click('[data-action="audit-clear"]');
  await sessionRow(aliceSession).waitFor();

  // Paging through the API: one at a time, newest first, then the end.
  const first = await call(audrey, 'GET', '/api/audit/sessions?limit=1');
  t.equal(first.status, 200);
  t.same(
    first.body.sessions.map((s: { id: string }) => s.id),
    [bobSession],
  );
  t.type(first.body.next, 'string');
  const second = await call(audrey, 'GET', `/api/audit/sessions?limit=1&cursor=${encodeURIComponent(first.body.next)}`);
  t.same(
    second.body.sessions.map((s: { id: string }) => s.id),
    [aliceSession],
  );
  const third = second.body.next ? await call(audrey, 'GET', `/api/audit/sessions?limit=1&cursor=${encodeURIComponent(second.body.next)}`) : null;
  t.same(third?.body.sessions ?? [], [], 'no more');
  t.same(
    (await call(audrey, 'GET', '/api/audit/sessions?user=alice&since=1h')).body.sessions.map((s: { id: string }) => s.id),
    [aliceSession],
  );
  t.equal((await call(audrey, 'GET', '/api/audit/sessions?cursor=nonsense')).status, 400);

  // One session's timeline.
  await sessionRow(aliceSession).locator('[data-action="audit-open"]').click();
  await page.waitForURL(`${consoleUrl}/audit/${aliceSession}`);
  const timeline = page.locator('#audit-timeline');
  await timeline.locator('[data-kind="connection.end"]').waitFor();
  t.match(await page.locator('#timeline-title').textContent(), `Session ${aliceSession.slice(0, 8)} · alice`);
  const text = (await timeline.locator('li pre').allTextContents()).join('\n');
  const credential = sg.identity.passkeys('alice')[0]!.id;
  t.notMatch(text, credential, 'the passkey is named by its name, not its raw id');
  t.match(text, `-- stepgate audit replay of session ${aliceSession}`);
  t.match(text, /\[\d\d:\d\d:\d\d\.\d{3} \+\d+\.\d{3}s\] postgres=> SELECT count\(\*\)::int AS n FROM items;\n-- allowed by the default \(10-audit\.yaml\)\n\(1 row\)/);
  t.match(text, `postgres=> UPDATE items SET note = 'changed' WHERE id = 1;\n-- allowed by the default (10-audit.yaml)\nUPDATE 1`);
  t.match(text, `postgres=> DROP TABLE items;\n-- DENIED by rule "deny-drop" (10-audit.yaml): Dropping tables is refused here.\nERROR:  stepgate: statement denied by rule "deny-drop"`);
  t.match(text, `postgres=> DELETE FROM items WHERE id = 2;\n-- held for step-up by rule "step-up-delete" (10-audit.yaml): Deleting rows needs your passkey.\n-- needs approval by its author`);
  t.match(text, `s] approved by alice with passkey "alice's test key" (signed)\n`);
  t.match(text, /DELETE 1/);
  t.match(text, /session ended: /);
  // The classification and the decisions, as hooks.
  t.equal(await timeline.locator('[data-kind="statement"]').count(), 4);
  t.equal(await timeline.locator(`[data-audit-event="${deniedSeq}"][data-decision="deny"]`).count(), 1);
  t.equal(await timeline.locator('[data-kind="statement"][data-decision="step-up"]').count(), 1);
  t.equal(await timeline.locator('[data-kind="challenge.resolved"][data-status="approved"]').count(), 1);
  t.same(await timeline.locator(`[data-audit-event="${deniedSeq}"] .chips li`).allTextContents(), ['DROP TABLE', 'ddl', 'items (write)']);

  // The address opens the same timeline; back goes to the list.
  await page.reload();
  await timeline.locator('[data-kind="connection.end"]').waitFor();
  await page.click('[data-action="audit-back"]');
  await sessionRow(aliceSession).waitFor({ state: 'visible' });
  await page.goBack();
  await page.locator('#audit-timeline-panel').waitFor({ state: 'visible' });
  t.equal(new URL(page.url()).pathname, `/audit/${aliceSession}`);

  // Paging a timeline: the same steps two at a time, through the API.
  const steps: string[] = [];
  let after: number | null = null;
  for (let i = 0; i < 20; i++) {
    const r = await call(audrey, 'GET', `/api/audit/sessions/${aliceSession.slice(0, 8)}?limit=2${after !== null ? `&after=${after}` : ''}`);
    t.equal(r.status, 200);
    for (const s of r.body.steps) steps.push(s.lines.join('\n'));
    after = r.body.next;
    if (after === null) break;
  }
  t.equal(steps.join('\n'), text, 'pages add up to the whole timeline, pauses included');
  t.equal((await call(audrey, 'GET', '/api/audit/sessions/ffffffff')).status, 404);
  t.equal((await call(audrey, 'GET', `/api/audit/sessions/%23999`)).status, 404);
});

t.test('after an event row is changed in the file, "verify now" shows broken and names it', async (t) => {
  const page = audrey.page;
  tamper(sg.dataDir, (d) => {
    const changed = d.prepare(`UPDATE events SET body = replace(body, 'DROP TABLE items', 'SELECT 1') WHERE seq = ?`).run(deniedSeq);
    t.equal(changed.changes, 1);
  });
  await page.click('[data-action="verify-audit"]');
  await page.locator('[data-audit-status="broken"]').waitFor();
  const status = await page.locator('[data-audit-status]').textContent();
  t.match(status, new RegExp(`^BROKEN: event ${deniedSeq} \\(statement, session \\d+ #\\d+, [^)]+\\) was altered: its content does not match its hash$`));
  const v = await call(audrey, 'GET', '/api/audit/verification');
  t.equal(v.body.state, 'broken');
  t.equal(v.body.last.firstProblem.seq, deniedSeq);
  t.ok(sg.logs.some((l) => l.event === 'audit.verify_failed'), 'logged');
});

t.test('someone not in auditors gets 403 from the auditor API and no view; auditors approve nothing as auditors', async (t) => {
  const page = alice.page;
  await page.goto(consoleUrl);
  await page.locator('#view-console').waitFor({ state: 'visible' });
  t.equal(await page.locator('#nav').isHidden(), true, 'no link to the audit trail');
  for (const [method, url] of [
    ['GET', '/api/audit/sessions'],
    ['GET', `/api/audit/sessions/${aliceSession}`],
    ['GET', '/api/audit/verification'],
    ['POST', '/api/audit/verify'],
  ] as const) {
    const r = await call(alice, method, url);
    t.equal(r.status, 403, `${method} ${url}`);
    t.equal(r.body.code, 'not_auditor');
  }
  await page.goto(`${consoleUrl}/audit`);
  await page.locator('#audit-denied').waitFor({ state: 'visible' });
  t.equal(await page.locator('#audit-body').isHidden(), true);
  t.equal(await page.locator('[data-audit-session]').count(), 0);

  // The auditor API keeps the console's CSRF rules.
  const cookies = await audrey.context.cookies(consoleUrl);
  const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  const post = (headers: Record<string, string>) => fetch(`${consoleUrl}/api/audit/verify`, { method: 'POST', headers: { cookie, ...headers }, body: '{}' });
  t.equal((await post({ 'x-stepgate': '1', 'content-type': 'application/json' })).status, 403, 'no Origin');
  t.equal((await post({ 'x-stepgate': '1', 'content-type': 'application/json', origin: 'http://evil.example' })).status, 403, 'foreign Origin');
  t.equal((await post({ 'content-type': 'application/json', origin })).status, 403, 'no custom header');
  t.equal((await fetch(`${consoleUrl}/api/audit/sessions`, { headers: { 'x-stepgate': '1' } })).status, 401, 'not signed in');

  // A statement alice's rule holds for her: the auditor neither sees it nor may approve it.
  await page.goto(consoleUrl);
  await page.locator('#status[data-state="live"]').waitFor();
  const c = new pg.Client(sg.pgConfig(ALICE));
  c.on('error', () => {});
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  const held = c.query('DELETE FROM items WHERE id = 3').catch((e: pg.DatabaseError) => e);
  const id = await waitForChallenge(page);
  const options = await call(audrey, 'POST', `/api/challenges/${id}/options`);
  t.equal(options.status, 404, 'not visible to the auditor');
  t.same((await call(audrey, 'GET', '/api/challenges')).body.challenges, []);
  t.equal((await call(audrey, 'POST', `/api/challenges/${id}/reject`)).status, 404);
  await challengeCard(page, id).locator('[data-action="reject"]').click();
  t.equal(((await held) as pg.DatabaseError).code, '42501');
});
