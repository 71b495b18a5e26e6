/**
 * Exact protocol exchanges: the same byte sequences sent to the server directly and through stepgate must
 * get the same replies, message for message. Only what legitimately differs is normalised: BackendKeyData
 * (stepgate issues its own keys) and server process ids inside messages.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate, ALICE } from '../helpers/stepgate.js';
import { m, RawClient, sendCancel, type Msg, type Target } from '../helpers/raw-client.js';
import { waitForActive } from '../helpers/wait.js';

const db = await startPostgres(t);
/**
 * Allow-all, except DROP DATABASE (denied by stepgate itself): to check that stepgate's own rejection
 * lands at the right place of the reply stream.
 */
const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.writeFileSync(
  path.join(rulesDir, '00-test.yaml'),
  'default: allow\nrules:\n  - name: test-deny\n    match: {command: DROP DATABASE}\n    action: deny\n    message: denied in this test\n',
);
const DENIED_SQL = 'DROP DATABASE stepgate_no_such_database';
const sg = await startStepgate(t, db, { rulesDir });
const direct = await db.client();
t.teardown(() => direct.end());
await direct.query('CREATE TABLE rp (id int PRIMARY KEY, v text)');

const directTarget: Target = { path: `${db.socketDir}/.s.PGSQL.${db.port}` };
const proxyTarget: Target = { host: sg.host, port: sg.port };

async function open(tt: { teardown(fn: () => unknown): void }, where: 'direct' | 'stepgate'): Promise<RawClient> {
  const c = await RawClient.connect(where === 'direct' ? directTarget : proxyTarget);
  tt.teardown(() => c.destroy());
  const params = { application_name: 'raw-protocol' };
  if (where === 'direct') await c.login({ user: db.user, password: db.password, params });
  else await c.login({ user: ALICE.name, password: ALICE.password, params });
  return c;
}

/** What may differ between the two: process ids in NotificationResponse; nothing else. */
function normalize(msgs: Msg[]): Msg[] {
  return msgs.filter((x) => x.type !== 'K').map((x) => (x.type === 'A' ? { ...x, pid: 0 } : x));
}

type Scenario = (c: RawClient, where: 'direct' | 'stepgate') => Promise<Msg[]>;

/**
 * Runs the scenario on a fresh connection directly and through stepgate (table rp emptied before each),
 * asserts the same replies and the same rows left in rp. Returns stepgate's replies.
 */
async function same(tt: Test, scenario: Scenario, expected?: string[]): Promise<Msg[]> {
  const results: { replies: Msg[]; rows: unknown[] }[] = [];
  for (const where of ['direct', 'stepgate'] as const) {
    await direct.query('TRUNCATE rp');
    const c = await open(tt, where);
    const replies = normalize(await scenario(c, where));
    // The connection is still in sync: a query gets its answer.
    c.send(m.query('SELECT 1'));
    const after = await c.untilReady();
    tt.same(after.map((x) => x.type), ['T', 'D', 'C', 'Z'], `${where}: the connection works afterwards`);
    c.end();
    const rows = (await direct.query('SELECT id, v FROM rp ORDER BY id')).rows;
    results.push({ replies, rows });
  }
  const [a, b] = results;
  tt.same(b.replies, a.replies, 'stepgate relays exactly what the server sends');
  tt.same(b.rows, a.rows, 'with the same effect on the database');
  if (expected) tt.same(b.replies.map((x) => x.type), expected, `replies ${expected.join(' ')}`);
  return b.replies;
}

t.test('pipeline Parse/Bind/Execute x3 with an error in the middle, then Sync', async (t) => {
  const replies = await same(
    t,
    async (c) => {
      c.send(
        m.parse('', `INSERT INTO rp VALUES (1, 'first')`),
        m.bind('', ''),
        m.execute(''),
        m.parse('s2', 'SELECT 1/g FROM generate_series(0, 0) g'),
        m.bind('', 's2'),
        m.execute(''),
        m.parse('', `INSERT INTO rp VALUES (3, 'third')`),
        m.bind('', ''),
        m.execute(''),
        m.sync(),
      );
      const replies = await c.untilReady();
      // s2 was parsed before the error, so it exists; the third Parse was skipped.
      c.send(m.describe('S', 's2'), m.sync());
      return [...replies, ...(await c.untilReady())];
    },
    ['1', '2', 'C', '1', '2', 'E', 'Z', 't', 'T', 'Z'],
  );
  t.match(replies[5], { code: '22012' });
  t.equal(replies[6].status, 'I', 'the implicit transaction was rolled back');
  // An error at Bind (1/0 is folded by the planner): the Execute after it is skipped too.
  await same(
    t,
    async (c) => {
      c.send(m.parse('', `INSERT INTO rp VALUES (1, 'x')`), m.bind('', ''), m.execute(''), m.parse('', 'SELECT 1/0'), m.bind('', ''), m.execute(''), m.sync());
      return c.untilReady();
    },
    ['1', '2', 'C', '1', 'E', 'Z'],
  );
});

t.test('a simple Query after a failed, unsynced extended batch is skipped like the rest of the batch, allowed or denied', async (t) => {
  for (const sql of [`INSERT INTO rp VALUES (7, 'skipped')`, DENIED_SQL]) {
    await same(
      t,
      async (c) => {
        c.send(m.parse('', 'SELECT 1/g FROM generate_series(0, 0) g'), m.bind('', ''), m.execute(''), m.query(sql), m.sync());
        return c.untilReady();
      },
      ['1', '2', 'E', 'Z'],
    );
  }
});

t.test('pipelines that wait behind a catalog lookup (functions stepgate does not know) keep their order', async (t) => {
  // Each function is new to stepgate: the message that calls it waits for the server's catalog, and the
  // messages behind it (sent in the same write) wait in stepgate's inbox.
  for (let i = 1; i <= 3; i++) {
    await direct.query(`CREATE FUNCTION rp_fn${i}(x int) RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT x * ${i} $$`);
  }
  await same(
    t,
    async (c) => {
      c.send(
        m.parse('', 'SELECT rp_fn1($1::int)'),
        m.bind('', '', ['7']),
        m.execute(''),
        m.query(`INSERT INTO rp VALUES (rp_fn2(5), 'via fn2'); SELECT rp_fn3(2)`),
        m.parse('a', `INSERT INTO rp VALUES (rp_fn3(10), 'via fn3')`),
        m.bind('', 'a'),
        m.execute(''),
        m.parse('', 'SELECT rp_fn2(1/0)'),
        m.bind('', ''),
        m.execute(''),
        m.parse('', `INSERT INTO rp VALUES (99, 'skipped')`),
        m.bind('', ''),
        m.execute(''),
        m.sync(),
        m.query('SELECT rp_fn1(1), rp_fn2(2), rp_fn3(3)'),
      );
      return [...(await c.untilReady()), ...(await c.untilReady()), ...(await c.untilReady())];
    },
    ['1', '2', 'D', 'C', 'C', 'T', 'D', 'C', 'Z', '1', '2', 'C', '1', 'E', 'Z', 'T', 'D', 'C', 'Z'],
  );
  const catalog = await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'stepgate-catalog'`);
  t.equal(catalog.rows[0].n, 1, 'stepgate did look the functions up in the server catalog');
});

t.test('Flush without Sync: replies arrive, then Sync ends the batch', async (t) => {
  await same(
    t,
    async (c) => {
      c.send(m.parse('q', 'SELECT $1::int + 1 AS n', [23]), m.bind('p', 'q', ['41']), m.describe('P', 'p'), m.execute('p'), m.flush());
      const first = await c.until((x) => x.type === 'C');
      // Nothing more until Sync.
      c.send(m.execute('p'), m.flush());
      const second = await c.until((x) => x.type === 'C');
      c.send(m.sync());
      const rest = await c.untilReady();
      return [...first, ...second, ...rest];
    },
    ['1', '2', 'T', 'D', 'C', 'C', 'Z'],
  );
  // Flush with a row limit: PortalSuspended, then the rest.
  await same(
    t,
    async (c) => {
      c.send(m.parse('', 'SELECT g FROM generate_series(1, 5) g'), m.bind('cur', ''), m.execute('cur', 2), m.flush());
      const a = await c.until((x) => x.type === 's');
      c.send(m.execute('cur', 2), m.flush());
      const b = await c.until((x) => x.type === 's');
      c.send(m.execute('cur', 0), m.sync());
      return [...a, ...b, ...(await c.untilReady())];
    },
    ['1', '2', 'D', 'D', 's', 'D', 'D', 's', 'D', 'C', 'Z'],
  );
});

t.test('CopyFail during COPY FROM STDIN', async (t) => {
  const replies = await same(
    t,
    async (c) => {
      c.send(m.query('COPY rp FROM STDIN'));
      const start = await c.until((x) => x.type === 'G');
      c.send(m.copyData('1\tone\n2\ttwo\n'), m.copyFail('the client changed its mind'));
      return [...start, ...(await c.untilReady())];
    },
    ['G', 'E', 'Z'],
  );
  t.match(replies[1], { code: '57014', message: 'COPY from stdin failed: the client changed its mind' });

  // A COPY that completes, in the simple protocol.
  await same(
    t,
    async (c) => {
      c.send(m.query('COPY rp FROM STDIN'));
      const start = await c.until((x) => x.type === 'G');
      c.send(m.copyData('1\tone\n'), m.copyData('2\ttwo\n'), m.copyDone());
      return [...start, ...(await c.untilReady())];
    },
    ['G', 'C', 'Z'],
  );
});

t.test('COPY FROM STDIN in the extended protocol, with the Sync libpq sends right after Execute', async (t) => {
  // PostgreSQL ignores Sync (and Flush) during COPY IN; the Sync after CopyDone gets the ReadyForQuery.
  const script: Scenario = async (c) => {
    c.send(m.parse('', 'COPY rp FROM STDIN'), m.bind('', ''), m.execute(''), m.sync());
    const start = await c.until((x) => x.type === 'G');
    c.send(m.copyData('1\tone\n2\ttwo\n'), m.copyDone(), m.sync());
    const done = await c.untilReady();
    // A failing COPY (bad data), same shape.
    c.send(m.parse('', 'COPY rp FROM STDIN'), m.bind('', ''), m.execute(''), m.sync());
    const start2 = await c.until((x) => x.type === 'G');
    c.send(m.copyData('x\tbad\n'), m.copyDone(), m.sync());
    const failed = await c.untilReady();
    // Then an ordinary pipeline whose second statement is rejected by stepgate (plain error on the server).
    c.send(m.parse('', 'SELECT 1'), m.bind('', ''), m.execute(''), m.sync());
    const ok = await c.untilReady();
    return [...start, ...done, ...start2, ...failed, ...ok];
  };
  await same(t, script, ['1', '2', 'G', 'C', 'Z', '1', '2', 'G', 'E', 'Z', '1', '2', 'D', 'C', 'Z']);

  // stepgate's bookkeeping of which reply answers which message must still be right afterwards: a denied
  // statement gets stepgate's error (42501) at its place, not the server's error for the injected failure.
  const c = await open(t, 'stepgate');
  c.send(m.parse('', 'COPY rp FROM STDIN'), m.bind('', ''), m.execute(''), m.sync());
  await c.until((x) => x.type === 'G');
  c.send(m.copyData('100\tone\n'), m.copyDone(), m.sync());
  t.same((await c.untilReady()).map((x) => x.type), ['C', 'Z']);
  c.send(m.parse('', DENIED_SQL), m.bind('', ''), m.execute(''), m.sync());
  const denied = await c.untilReady();
  // Refused at its Parse: a refused statement has no effect at all (parse analysis can run its code).
  t.same(denied.map((x) => x.type), ['E', 'Z']);
  t.match(denied[0], { code: '42501', message: /denied by rule "test-deny"/ });
  c.send(m.query(DENIED_SQL));
  const deniedSimple = await c.untilReady();
  t.same(deniedSimple.map((x) => x.type), ['E', 'Z']);
  t.match(deniedSimple[0], { code: '42501' });
  t.same((await c.query('SELECT 2')).map((x) => x.type), ['T', 'D', 'C', 'Z']);
});

t.test('Describe and Close of unknown statements and portals', async (t) => {
  const replies = await same(
    t,
    async (c) => {
      c.send(m.describe('S', 'nope'), m.sync(), m.describe('P', 'nope'), m.sync(), m.close('S', 'nope'), m.close('P', 'nope'), m.sync());
      return c.until((x) => x.type === 'Z' && x.status === 'I').then(async (first) => [...first, ...(await c.untilReady()), ...(await c.untilReady())]);
    },
    ['E', 'Z', 'E', 'Z', '3', '3', 'Z'],
  );
  t.match(replies[0], { code: '26000', message: 'prepared statement "nope" does not exist' });
  t.match(replies[2], { code: '34000', message: 'portal "nope" does not exist' });

  // Describe of a statement and of a portal that exist; Close, then Describe again fails.
  await same(
    t,
    async (c) => {
      c.send(m.parse('st', 'SELECT $1::text AS a, 2 AS b'), m.describe('S', 'st'), m.bind('po', 'st', ['x']), m.describe('P', 'po'), m.execute('po'), m.close('P', 'po'), m.close('S', 'st'), m.describe('S', 'st'), m.sync());
      return c.untilReady();
    },
    ['1', 't', 'T', '2', 'T', 'D', 'C', '3', '3', 'E', 'Z'],
  );
  // Describe of a statement without result columns: NoData.
  await same(
    t,
    async (c) => {
      c.send(m.parse('ins', `INSERT INTO rp VALUES ($1, 'x')`), m.describe('S', 'ins'), m.bind('', 'ins', ['5']), m.describe('P', ''), m.execute(''), m.sync());
      return c.untilReady();
    },
    ['1', 't', 'n', '2', 'n', 'C', 'Z'],
  );
});

t.test('empty query strings', async (t) => {
  await same(
    t,
    async (c) => {
      const a = await c.query('');
      const b = await c.query('  ;  ');
      const d = await c.query('-- only a comment');
      c.send(m.parse('', ''), m.bind('', ''), m.describe('P', ''), m.execute(''), m.sync());
      return [...a, ...b, ...d, ...(await c.untilReady())];
    },
    ['I', 'Z', 'I', 'Z', 'I', 'Z', '1', '2', 'n', 'I', 'Z'],
  );
});

t.test('a multi-statement Query with an error in the middle inside BEGIN, then COMMIT, is rolled back', async (t) => {
  const replies = await same(
    t,
    async (c) => {
      const a = await c.query(`BEGIN; INSERT INTO rp VALUES (1, 'a'); SELECT 1/0; INSERT INTO rp VALUES (2, 'b')`);
      const b = await c.query('SELECT 1');
      const d = await c.query('COMMIT');
      return [...a, ...b, ...d];
    },
    ['C', 'C', 'E', 'Z', 'E', 'Z', 'C', 'Z'],
  );
  t.equal(replies[3].status, 'E', 'in a failed transaction');
  t.match(replies[4], { code: '25P02' });
  t.same(replies[6], { type: 'C', tag: 'ROLLBACK' });
  // Without BEGIN, a multi-statement Query is one implicit transaction: rolled back as a whole.
  await same(
    t,
    async (c) => c.query(`INSERT INTO rp VALUES (1, 'a'); INSERT INTO rp VALUES (1, 'dup'); INSERT INTO rp VALUES (3, 'c')`),
    ['C', 'E', 'Z'],
  );
  // The same in a pipeline of extended messages (one Sync, one implicit transaction).
  await same(t, async (c) => {
    c.send(m.parse('', `INSERT INTO rp VALUES (7, 'x')`), m.bind('', ''), m.execute(''), m.query('SELECT 1'), m.sync());
    return [...(await c.untilReady()), ...(await c.untilReady())];
  });
});

t.test('notifications and notices are relayed in place', async (t) => {
  await same(
    t,
    async (c) => {
      const a = await c.query('LISTEN rp_chan');
      const b = await c.query(`DO $$ BEGIN RAISE NOTICE 'n1'; PERFORM pg_notify('rp_chan', 'p1'); RAISE WARNING 'w1'; END $$`);
      return [...a, ...b];
    },
    ['C', 'Z', 'N', 'N', 'C', 'A', 'Z'],
  );
});

t.test('FunctionCall (fast path) is relayed', async (t) => {
  // md5(text) by OID, text format (fast-path calls have no collation, so not upper()).
  const oid = (await direct.query(`SELECT 'md5(text)'::regprocedure::oid::int AS oid`)).rows[0].oid as number;
  await same(
    t,
    async (c) => {
      const arg = Buffer.from('abc');
      const body = Buffer.alloc(4 + 2 + 2 + 4 + arg.length + 2);
      let p = body.writeInt32BE(oid, 0);
      p = body.writeInt16BE(0, p); // argument formats: all text
      p = body.writeInt16BE(1, p);
      p = body.writeInt32BE(arg.length, p);
      p += arg.copy(body, p);
      body.writeInt16BE(0, p); // result format text
      c.send(m.typed('F', body));
      return c.untilReady();
    },
    ['V', 'Z'],
  );
});

t.test('cancel requests: a wrong key does nothing; a cancel when idle does nothing harmful', async (t) => {
  const c = await open(t, 'stepgate');
  const key = c.backendKey as { pid: number; key: Buffer };
  t.ok(key, 'stepgate sent BackendKeyData');

  // Wrong key (and wrong pid): the query runs to completion.
  c.send(m.query('SELECT pg_sleep(0.3) /* wrong-key */'));
  const wrong = Buffer.from(key.key);
  wrong[0] ^= 0xff;
  await sendCancel(proxyTarget, key.pid, wrong);
  await sendCancel(proxyTarget, key.pid ^ 1, key.key);
  t.same((await c.untilReady()).map((x) => x.type), ['T', 'D', 'C', 'Z'], 'not cancelled by a wrong key');

  // A cancel while idle: the cancel connection closes once the cancel has been delivered (as with the
  // server), so the next query must not be hit by it.
  for (let i = 0; i < 5; i++) {
    await sendCancel(proxyTarget, key.pid, key.key);
    const r = await c.query(`SELECT pg_sleep(0.2), ${i} /* after idle cancel */`);
    t.same(r.map((x) => x.type), ['T', 'D', 'C', 'Z'], `query ${i} after an idle cancel is not cancelled`);
  }

  // Another client's cancel key does not reach this session.
  const other = await open(t, 'stepgate');
  c.send(m.query('SELECT pg_sleep(0.3) /* other key */'));
  await sendCancel(proxyTarget, (other.backendKey as { pid: number }).pid, (other.backendKey as { key: Buffer }).key);
  t.same((await c.untilReady()).map((x) => x.type), ['T', 'D', 'C', 'Z']);
  t.same((await other.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z'], 'and the other session is fine');

  // The right key while a query runs: 57014, then the connection works.
  c.send(m.query('SELECT pg_sleep(30) /* right key */'));
  await waitForActive(direct, '%pg_sleep(30) /* right key */%'); // a cancel before the query starts is ignored, as on the server
  await sendCancel(proxyTarget, key.pid, key.key);
  const cancelled = await c.untilReady(5000);
  t.match(cancelled.find((x) => x.type === 'E'), { code: '57014' });
  t.same((await c.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z']);

  // The same scenarios directly, for reference: idle cancels do nothing there either.
  const d = await open(t, 'direct');
  const dk = d.backendKey as { pid: number; key: Buffer };
  for (let i = 0; i < 3; i++) {
    await sendCancel(directTarget, dk.pid, dk.key);
    t.same((await d.query('SELECT pg_sleep(0.2)')).map((x) => x.type), ['T', 'D', 'C', 'Z']);
  }
});
