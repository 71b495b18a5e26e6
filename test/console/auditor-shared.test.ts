/**
 * The auditor view across instances: two stepgates (a and b) in this process on one state database.
 * Statements go through both; an auditor signed in on a's console in a real Chromium sees the sessions
 * of both instances (each row naming its instance; filters and paging across them), opens a session
 * b recorded and sees its timeline, runs "verify now" and sees both chains verified, each with its head
 * and checkpoint, a's shipping lag known and b's said to be unknown. After a shipped event of b is edited
 * in PostgreSQL (the triggers disabled, as a superuser could), "verify now" names instance b and the seq.
 */
import pg from 'pg';
import t from 'tap';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate, type TestStepgate, type TestUser } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { readEvents, writeRules } from '../audit/helpers.js';
import { enrollmentLink } from '../../src/console/url.js';
import type { SessionFilter } from '../../src/audit/read.js';
import { sharedSessionsPage } from '../../src/audit/shared-browse.js';
import { AUDIT_STATE_MIGRATIONS } from '../../src/audit/shared-schema.js';
import { enroll, launchBrowser, newPerson, type Person } from './browser.js';

const AUDREY: TestUser = { name: 'audrey', password: 'audrey-secret-pw', groups: ['auditors'] };
const ALICE: TestUser = { name: 'alice', password: 'alice-secret-pw', groups: ['dev'] };
const BOB: TestUser = { name: 'bob', password: 'bob-secret-pw', groups: ['dev'] };

const RULES = `
default: allow
rules:
  - name: deny-drop
    match: {command: DROP TABLE}
    action: deny
    message: Dropping tables is refused here.
`;

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
await db.query('CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, $$item$$ FROM generate_series(1, 5) g;');
const stateUrl = db.url('stepgate_state');
const state = await db.client('stepgate_state');
state.on('error', () => {});
t.teardown(() => state.end());
const rules = writeRules(t, RULES);

async function instance(name: string): Promise<TestStepgate> {
  return startStepgate(t, db, {
    rulesDir: rules,
    users: [ALICE, BOB, AUDREY],
    configYaml: `audit:\n  checkpoint_every: 5\nstate:\n  url: ${JSON.stringify(stateUrl)}\n  instance: ${name}\n`,
  });
}

const a = await instance('a');
const b = await instance('b');
const consoleUrl = a.consoleUrl!;
const browser = await launchBrowser(t);
const audrey = await newPerson(browser, 'audrey');

t.afterEach(async () => {
  if (audrey.errors.length) t.comment(`audrey's browser errors: ${audrey.errors.join(' | ')}`);
  audrey.errors.length = 0;
});

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

async function sql(sg: TestStepgate, user: TestUser, application: string, ...texts: string[]): Promise<void> {
  const c = new pg.Client({ ...sg.pgConfig(user), application_name: application });
  c.on('error', () => {});
  await c.connect();
  try {
    for (const text of texts) await c.query(text).catch((e: pg.DatabaseError) => e);
  } finally {
    await c.end();
  }
}

/** Waits until the shared store holds every event of the instance's local trail. */
async function caughtUp(name: string, sg: TestStepgate): Promise<void> {
  await waitFor(
    `instance ${name} to ship all of its trail`,
    async () => {
      const local = readEvents(sg.dataDir);
      const r = await state.query('SELECT max(seq)::int AS m FROM stepgate.audit_events WHERE instance = $1', [name]);
      return local.length > 0 && r.rows[0].m === local[local.length - 1]!.seq;
    },
    20_000,
  );
}

/** The session ids (connection) of the user's ended sessions in the instance's shipped index. */
async function shippedSession(name: string, user: string): Promise<string> {
  return waitFor(`${user}'s session on ${name} to be shipped, ended`, async () => {
    const r = await state.query(`SELECT connection FROM stepgate.audit_sessions WHERE instance = $1 AND user_name = $2 AND end_time IS NOT NULL LIMIT 1`, [name, user]);
    return (r.rows[0]?.connection as string | undefined) ?? null;
  });
}

t.test('pages of sessions across instances add up to the newest version of each, in order, however small the pages', async (t) => {
  // A database of its own: the audit component's migrations, then sessions index versions as shipped.
  await db.query('CREATE DATABASE paging');
  const c = await db.client('paging');
  t.teardown(() => c.end());
  await c.query('CREATE SCHEMA stepgate');
  for (const step of AUDIT_STATE_MIGRATIONS.steps) await c.query(step);
  const base = 1_700_000_000_000;
  type V = { instance: string; session: number; last_seq: number; user: string | null; start: number | null; end: number | null };
  const versions: V[] = [];
  for (const instance of ['a', 'b', 'c']) {
    for (let i = 1; i <= 12; i++) {
      const start = i % 7 === 0 ? null : base + Math.floor(i / 2) * 1000;
      const n = 1 + (i % 4); // 1 to 4 versions; the last one is the index
      for (let v = 1; v <= n; v++) {
        // Some sessions' start moved between versions (first shipped before their start was known).
        const s = v === 1 && i % 5 === 0 ? null : start;
        versions.push({ instance, session: i, last_seq: i * 10 + v, user: `u${i % 3}`, start: s, end: v === n && i % 3 !== 0 ? (start ?? base) + 5000 : null });
      }
    }
  }
  for (const v of versions) {
    await c.query(
      `INSERT INTO stepgate.audit_sessions (instance, session, last_seq, connection, user_name, start_time, end_time, statements, denied, held) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0)`,
      [v.instance, v.session, v.last_seq, `${v.instance}-${v.session}`, v.user, v.start, v.end],
    );
  }
  const newest = [...new Map(versions.map((v) => [`${v.instance}/${v.session}`, v])).values()];
  const filters: SessionFilter[] = [{}, { user: 'u1' }, { since: base + 4000 }, { until: base + 3000 }, { user: 'u2', since: base + 2000, until: base + 5000 }];
  for (const filter of filters) {
    const expected = newest
      .filter((v) => (filter.user === undefined || v.user === filter.user) && (filter.until === undefined || (v.start ?? 0) <= filter.until) && (filter.since === undefined || v.end === null || v.end >= filter.since))
      .sort((x, y) => (y.start ?? -1) - (x.start ?? -1) || (x.instance < y.instance ? 1 : x.instance > y.instance ? -1 : 0) || y.session - x.session)
      .map((v) => `${v.instance}/${v.session}`);
    for (const [limit, maxScan] of [[1, 1], [3, 2], [5, 7], [50, 2000]] as const) {
      const got: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const page = await sharedSessionsPage(c, filter, cursor, limit, maxScan);
        t.ok(page.sessions.length <= limit);
        got.push(...page.sessions.map((r) => `${r.instance}/${r.session}`));
        cursor = page.next;
      } while (cursor && ++pages < 400);
      t.same(got, expected, `${JSON.stringify(filter)}, pages of ${limit}, examining ${maxScan}`);
    }
  }
});

let aliceOnA = '';
let bobOnB = '';
let deniedOnB = 0;

t.test('statements through both instances reach the shared store', async (t) => {
  await sql(a, ALICE, 'alice-on-a', 'SELECT count(*) FROM items', `UPDATE items SET note = 'a' WHERE id = 1`);
  await sql(b, BOB, 'bob-on-b', 'SELECT count(*) FROM items', 'DROP TABLE items', `UPDATE items SET note = 'b' WHERE id = 2`);
  aliceOnA = await shippedSession('a', 'alice');
  bobOnB = await shippedSession('b', 'bob');
  await caughtUp('a', a);
  await caughtUp('b', b);
  deniedOnB = readEvents(b.dataDir, "kind = 'statement'").find((e) => e.data.decision.action === 'deny')!.seq;
  t.ok(aliceOnA && bobOnB && deniedOnB > 0);
});

t.test("an auditor on a's console sees both instances' sessions, b's timeline, and both chains verified", async (t) => {
  const page = audrey.page;
  await enroll(audrey, enrollmentLink(consoleUrl, (await a.identity.issueEnrollment('audrey')).token));
  await page.locator('#nav').waitFor({ state: 'visible' });
  await page.click('#nav [data-nav="audit"]');
  await page.waitForURL(`${consoleUrl}/audit`);

  // Sessions of both instances, newest first, each naming its instance in the first column.
  const row = (id: string) => page.locator(`[data-audit-session="${id}"]`);
  await row(bobOnB).waitFor();
  await row(aliceOnA).waitFor();
  t.equal(await page.locator('#audit-instance-col').isVisible(), true, 'an Instance column');
  const order = await page.locator('[data-audit-session]').evaluateAll((rows) => rows.map((r) => `${r.getAttribute('data-instance')}/${r.getAttribute('data-audit-session')}`));
  t.same(order, [`b/${bobOnB}`, `a/${aliceOnA}`], 'newest first, across instances');
  const cells = await row(bobOnB).locator('td').allTextContents();
  t.same(cells.slice(0, 3), ['b', bobOnB.slice(0, 8), 'bob']);
  t.equal(cells[5], 'bob-on-b');
  t.same(cells.slice(8), ['3', '1', '0'], 'statements, denied, held');

  // Filters still work across instances; paging one at a time goes through both.
  await page.fill('#audit-user', 'alice');
  await page.click('[data-action="audit-filter"]');
  await row(bobOnB).waitFor({ state: 'detached' });
  await row(aliceOnA).waitFor();
  t.equal(await page.locator('[data-audit-session]').count(), 1, "only alice's session");
  await page.click('[data-action="audit-clear"]');
  await row(bobOnB).waitFor();
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 5; i++) {
    const r = await call(audrey, 'GET', `/api/audit/sessions?limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    t.equal(r.status, 200);
    t.equal(r.body.shared, true);
    for (const s of r.body.sessions) seen.push(`${s.instance}/${s.id}`);
    cursor = r.body.next;
    if (!cursor) break;
  }
  t.same(seen, [`b/${bobOnB}`, `a/${aliceOnA}`], 'pages of one add up to the list');
  t.same((await call(audrey, 'GET', '/api/audit/sessions?user=bob&since=1h')).body.sessions.map((s: { id: string }) => s.id), [bobOnB]);
  t.equal((await call(audrey, 'GET', '/api/audit/sessions?cursor=nonsense')).status, 400);

  // A session of the OTHER instance: its timeline, read from b's trail in the shared store.
  await row(bobOnB).locator('[data-action="audit-open"]').click();
  await page.waitForURL(`${consoleUrl}/audit/${bobOnB}?instance=b`);
  const timeline = page.locator('#audit-timeline');
  await timeline.locator('[data-kind="connection.end"]').waitFor();
  t.match(await page.locator('#timeline-title').textContent(), `Session ${bobOnB.slice(0, 8)} · bob · instance b`);
  t.match(await page.locator('#audit-session-facts').textContent(), /Instanceb/);
  const text = (await timeline.locator('li pre').allTextContents()).join('\n');
  t.match(text, `-- stepgate audit replay of session ${bobOnB}`);
  t.match(text, `postgres=> DROP TABLE items;\n-- DENIED by rule "deny-drop"`);
  t.equal(await timeline.locator(`[data-audit-event="${deniedOnB}"][data-decision="deny"]`).count(), 1, "b's seq");
  t.equal(await timeline.locator('[data-kind="statement"]').count(), 3);
  // The address opens the same timeline.
  await page.reload();
  await timeline.locator('[data-kind="connection.end"]').waitFor();
  t.match(await page.locator('#timeline-title').textContent(), 'instance b');
  // Paging the timeline two events at a time adds up to the whole.
  const steps: string[] = [];
  let after: number | null = null;
  for (let i = 0; i < 20; i++) {
    const r = await call(audrey, 'GET', `/api/audit/sessions/${bobOnB}?instance=b&limit=2${after !== null ? `&after=${after}` : ''}`);
    t.equal(r.status, 200);
    for (const s of r.body.steps) steps.push(s.lines.join('\n'));
    after = r.body.next;
    if (after === null) break;
  }
  t.equal(steps.join('\n'), text, 'pages add up to the whole timeline');
  // Session numbers are per instance: #N needs the instance.
  const no = (await call(audrey, 'GET', `/api/audit/sessions/${bobOnB}`)).body.session.no as number;
  t.equal((await call(audrey, 'GET', `/api/audit/sessions/%23${no}`)).status, 400, '#N without an instance');
  t.equal((await call(audrey, 'GET', `/api/audit/sessions/%23${no}?instance=b`)).body.session.id, bobOnB);
  t.equal((await call(audrey, 'GET', `/api/audit/sessions/${bobOnB}?instance=a`)).status, 404, 'not in a');
  t.equal((await call(audrey, 'GET', '/api/audit/sessions/ffffffff')).status, 404);

  // Verification ran by itself: both chains, each verified.
  await page.click('[data-action="audit-back"]');
  await page.locator('[data-audit-status="verified"]').waitFor();
  t.equal(await page.locator('[data-audit-status]').textContent(), 'Verified: the chains of all 2 instances in the shared store are intact.');
  for (const name of ['a', 'b']) {
    const item = page.locator(`[data-audit-instance="${name}"]`);
    t.equal(await item.getAttribute('data-instance-status'), 'verified', `instance ${name} verified`);
    const facts = (await item.locator('.facts-list li').allTextContents()).join('\n');
    t.match(facts, /signed checkpoints?, all signatures valid/);
    t.match(facts, /Latest shipped checkpoint: #\d+, event \d+/);
    t.match(facts, /Last shipped event: \d+/);
    if (name === 'a') t.match(facts, /committed here not shipped yet|Everything this instance committed is shipped/, "a's own lag is known");
    else t.match(facts, /this console cannot know how many/, "b's lag is said to be unknown, not zero");
  }
  t.match(await page.locator('[data-audit-instance="a"] h3').textContent(), 'Instance a (this console)');
  const v = await call(audrey, 'GET', '/api/audit/verification');
  t.equal(v.body.shared.self, 'a');
  t.same(v.body.shared.instances.map((i: { instance: string }) => i.instance), ['a', 'b']);
  t.equal(v.body.last, null, 'no single-trail result with state:');
  const bView = v.body.shared.instances[1];
  t.equal(bView.unshipped, null);
  t.ok(bView.last.ok && bView.last.lastSeq >= deniedOnB);
  t.type(v.body.shared.instances[0].unshipped.events, 'number');
  t.ok(a.logs.some((l) => l.event === 'audit.verified' && l.instance === 'b'), 'logged per instance');
});

t.test('a shipped event of b edited in PostgreSQL: "verify now" names instance b and the seq', async (t) => {
  const page = audrey.page;
  await state.query('ALTER TABLE stepgate.audit_events DISABLE TRIGGER audit_events_no_change');
  const changed = await state.query(`UPDATE stepgate.audit_events SET body = replace(body, 'DROP TABLE items', 'SELECT 1') WHERE instance = 'b' AND seq = $1`, [deniedOnB]);
  await state.query('ALTER TABLE stepgate.audit_events ENABLE TRIGGER audit_events_no_change');
  t.equal(changed.rowCount, 1);
  await page.click('[data-action="verify-audit"]');
  await page.locator('[data-audit-status="broken"]').waitFor();
  t.match(await page.locator('[data-audit-status]').textContent(), new RegExp(`^BROKEN: instance b: event ${deniedOnB} \\(statement, session \\d+ #\\d+, [^)]+\\) was altered: its content does not match its hash$`));
  t.equal(await page.locator('[data-audit-instance="b"]').getAttribute('data-instance-status'), 'broken');
  t.equal(await page.locator('[data-audit-instance="a"]').getAttribute('data-instance-status'), 'verified', 'a is still intact');
  const v = await call(audrey, 'GET', '/api/audit/verification');
  t.equal(v.body.state, 'broken');
  t.equal(v.body.shared.instances[1].last.firstProblem.seq, deniedOnB);
  t.ok(a.logs.some((l) => l.event === 'audit.verify_failed' && l.instance === 'b'), 'logged');
  t.notMatch(JSON.stringify(v.body), db.password, 'no secret in the answer');
});
