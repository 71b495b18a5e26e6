/**
 * node-postgres (`pg`) through stepgate: everything an application does with it must behave exactly as it
 * does against the server directly.
 */
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import t from 'tap';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { sendCancel } from '../helpers/raw-client.js';
import { waitForActive } from '../helpers/wait.js';

const db = await startPostgres(t);
const sg = await startStepgate(t, db);
const direct = await db.client();
t.teardown(() => direct.end());

/** A client through stepgate, ended when the (sub)test ends. */
async function connect(tt: { teardown(fn: () => unknown): void }, config: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ ...sg.pgConfig(), ...config });
  c.on('error', () => {}); // asserted where it matters
  await c.connect();
  tt.teardown(() => c.end().catch(() => {}));
  return c;
}

await direct.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], created timestamptz DEFAULT now())`);

t.test('simple and parameterized queries return what the server returns', async (t) => {
  const c = await connect(t);
  const sql = `SELECT 1 AS one, 'two'::text AS two, NULL::int AS nothing, ARRAY[1,2,3] AS arr, '{"a":1}'::jsonb AS j, 1.5::numeric AS num, 'é✓'::text AS uni`;
  const viaProxy = await c.query(sql);
  const viaServer = await direct.query(sql);
  t.same(viaProxy.rows, viaServer.rows);
  t.same(viaProxy.fields.map((f) => [f.name, f.dataTypeID]), viaServer.fields.map((f) => [f.name, f.dataTypeID]));

  const ins = await c.query('INSERT INTO items (id, name, price, tags) VALUES ($1, $2, $3, $4), ($5, $6, $7, $8)', [1, 'apple', '1.20', ['fruit', 'red'], 2, 'pear', null, []]);
  t.equal(ins.command, 'INSERT');
  t.equal(ins.rowCount, 2);
  const sel = await c.query('SELECT id, name, price, tags FROM items WHERE id = ANY($1::int[]) ORDER BY id', [[1, 2]]);
  t.same(sel.rows, [
    { id: 1, name: 'apple', price: '1.20', tags: ['fruit', 'red'] },
    { id: 2, name: 'pear', price: null, tags: [] },
  ]);
  // Errors carry the server's fields.
  const err = await c.query('SELECT * FROM no_such_table').catch((e: pg.DatabaseError) => e);
  t.match(err, { code: '42P01', message: 'relation "no_such_table" does not exist', position: '15' });
  const bad = await c.query('SELECT $1::int', ['not a number']).catch((e: pg.DatabaseError) => e);
  t.match(bad, { code: '22P02' });
  // An empty query.
  const empty = await c.query('');
  t.same(empty.rows, []);
  t.equal((await c.query('SELECT 42 AS x')).rows[0].x, 42, 'usable after errors');
});

t.test('named prepared statements are parsed once and reused', async (t) => {
  const c = await connect(t);
  for (let i = 0; i < 5; i++) {
    const r = await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS sum', values: [i, 10] });
    t.equal(r.rows[0].sum, i + 10);
  }
  const other = await c.query({ name: 'upper', text: 'SELECT upper($1) AS u', values: ['abc'] });
  t.equal(other.rows[0].u, 'ABC');
  t.equal((await c.query({ name: 'add', text: 'SELECT $1::int + $2::int AS sum', values: [1, 1] })).rows[0].sum, 2);
  // stepgate's own prepared statements (read-only enforcement) are named stepgate_*.
  const prepared = await c.query(`SELECT name, statement FROM pg_prepared_statements WHERE name NOT LIKE 'stepgate\\_%' ORDER BY name`);
  t.same(prepared.rows.map((r) => r.name), ['add', 'upper'], 'the server holds both, parsed once each');
  // A named statement whose Parse fails is not remembered: pg parses it again next time.
  await t.rejects(c.query({ name: 'broken', text: 'SELEC 1' }), { code: '42601' });
  await t.rejects(c.query({ name: 'broken', text: 'SELEC 1' }), { code: '42601' });
});

t.test('binary results are relayed byte for byte', async (t) => {
  const raw = { getTypeParser: () => (v: unknown) => v };
  const c = await connect(t, { types: raw as unknown as pg.CustomTypesConfig });
  const d = new pg.Client({ host: db.socketDir, port: db.port, user: db.user, password: db.password, database: 'postgres', types: raw as unknown as pg.CustomTypesConfig });
  await d.connect();
  t.teardown(() => d.end());
  const query = {
    text: `SELECT 12345::int4 AS i, 9007199254740993::int8 AS big, 3.25::float8 AS f, '2024-02-29 12:34:56.789+00'::timestamptz AS ts,
                  '\\x00ff10'::bytea AS b, 'text'::text AS s, $1::int AS p, NULL::int AS n, ARRAY[1,2]::int[] AS arr`,
    values: [7],
    binary: true,
  };
  const viaProxy = await c.query(query);
  const viaServer = await d.query(query);
  t.ok(Buffer.isBuffer(viaProxy.rows[0].i), 'values arrive as raw binary buffers');
  t.same(viaProxy.rows[0].i, Buffer.from([0, 0, 0x30, 0x39]));
  t.same(viaProxy.rows, viaServer.rows);
  t.same(viaProxy.fields.map((f) => f.format), viaServer.fields.map((f) => f.format));
  t.ok(viaProxy.fields.every((f) => f.format === 'binary'));
});

t.test('transactions commit and roll back', async (t) => {
  const c = await connect(t);
  await c.query('BEGIN');
  await c.query(`INSERT INTO items (id, name) VALUES (10, 'committed')`);
  await c.query('COMMIT');
  await c.query('BEGIN');
  await c.query(`INSERT INTO items (id, name) VALUES (11, 'rolled back')`);
  await c.query('ROLLBACK');
  const r = await direct.query('SELECT id FROM items WHERE id IN (10, 11) ORDER BY id');
  t.same(r.rows, [{ id: 10 }]);
});

t.test('an error mid-transaction aborts it until ROLLBACK, and its rows are not there', async (t) => {
  const c = await connect(t);
  await c.query('BEGIN');
  await c.query(`INSERT INTO items (id, name) VALUES (20, 'first')`);
  await c.query({ text: `INSERT INTO items (id, name) VALUES ($1, 'second')`, values: [21] });
  await t.rejects(c.query(`INSERT INTO items (id, name) VALUES (20, 'duplicate')`), { code: '23505' });
  await t.rejects(c.query('SELECT 1'), { code: '25P02', message: /current transaction is aborted/ });
  await t.rejects(c.query({ text: 'SELECT $1::int', values: [1] }), { code: '25P02' });
  const rb = await c.query('ROLLBACK');
  t.equal(rb.command, 'ROLLBACK');
  const r = await direct.query('SELECT count(*)::int AS n FROM items WHERE id IN (20, 21)');
  t.equal(r.rows[0].n, 0, 'nothing of the failed transaction was committed');
  t.equal((await c.query('SELECT 1 AS ok')).rows[0].ok, 1, 'usable after ROLLBACK');

  // COMMIT of a failed transaction reports ROLLBACK, as PostgreSQL does.
  await c.query('BEGIN');
  await c.query(`INSERT INTO items (id, name) VALUES (22, 'x')`);
  await t.rejects(c.query('SELECT 1/0'), { code: '22012' });
  const commit = await c.query('COMMIT');
  t.equal(commit.command, 'ROLLBACK');
  t.equal((await direct.query('SELECT count(*)::int AS n FROM items WHERE id = 22')).rows[0].n, 0);
});

t.test('LISTEN/NOTIFY between two connections through stepgate', async (t) => {
  const listener = await connect(t);
  const notifier = await connect(t);
  await listener.query('LISTEN "stepgate chan"');
  const got = new Promise<pg.Notification>((resolve) => listener.once('notification', resolve));
  const notifierPid = (await notifier.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  await notifier.query(`SELECT pg_notify('stepgate chan', 'hello ✓')`);
  const n = await got;
  t.equal(n.channel, 'stepgate chan');
  t.equal(n.payload, 'hello ✓');
  t.equal(n.processId, notifierPid, 'the notifying server backend, as pg_backend_pid() reports it');

  // In a transaction: delivered at commit only.
  const second = new Promise<pg.Notification>((resolve) => listener.once('notification', resolve));
  await notifier.query('BEGIN');
  await notifier.query(`NOTIFY "stepgate chan", 'in tx'`);
  await notifier.query('COMMIT');
  t.equal((await second).payload, 'in tx');
  await listener.query('UNLISTEN *');
});

/** A few MB of COPY text, with characters that need escaping. */
function copyText(rows: number): Buffer {
  const lines: string[] = [];
  for (let i = 1; i <= rows; i++) lines.push(`${i}\tname ${i} \\t tab é✓ ${'x'.repeat(i % 97)}\t${(i % 1000) / 100}\t{a,"b c"}\t\\N\n`);
  return Buffer.from(lines.join(''));
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    stream,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(chunks);
}

t.test('COPY FROM STDIN and COPY TO STDOUT with pg-copy-streams', async (t) => {
  const c = await connect(t);
  await c.query(`CREATE TABLE copied (id int PRIMARY KEY, name text, price numeric, tags text[], nothing text)`);
  const input = copyText(40_000);
  t.ok(input.length > 3_000_000, `input is ${input.length} bytes`);

  // In: through stepgate, in uneven chunks.
  const ingest = c.query(copyFrom('COPY copied FROM STDIN'));
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < input.length; ) {
    const n = 1 + Math.floor(Math.random() * 200_000);
    chunks.push(input.subarray(pos, pos + n));
    pos += n;
  }
  await pipeline(Readable.from(chunks), ingest);
  t.equal(ingest.rowCount, 40_000);

  // Out: through stepgate and directly, compared byte for byte (and with the input).
  const out = 'COPY (SELECT * FROM copied ORDER BY id) TO STDOUT';
  const viaProxy = await collect(c.query(copyTo(out)));
  const viaServer = await collect(direct.query(copyTo(out)));
  t.equal(viaProxy.length, viaServer.length);
  t.ok(viaProxy.equals(viaServer), 'COPY TO output through stepgate equals the server\'s');
  t.ok(viaProxy.equals(input), 'and equals what was copied in');

  // Binary COPY too.
  const bin = 'COPY (SELECT * FROM copied ORDER BY id) TO STDOUT (FORMAT binary)';
  t.ok((await collect(c.query(copyTo(bin)))).equals(await collect(direct.query(copyTo(bin)))), 'binary COPY is identical');

  // A COPY that fails on bad data: the error comes through and nothing was loaded.
  const failing = c.query(copyFrom('COPY copied FROM STDIN'));
  const err = await pipeline(Readable.from([Buffer.from('900001\tok\t1\t{}\t\\N\nnot-a-number\tbad\t1\t{}\t\\N\n')]), failing).catch((e: pg.DatabaseError) => e);
  t.match(err, { code: '22P02' });
  t.equal((await c.query('SELECT count(*)::int AS n FROM copied WHERE id = 900001')).rows[0].n, 0);
  t.equal((await c.query('SELECT count(*)::int AS n FROM copied')).rows[0].n, 40_000, 'usable after a failed COPY');
});

t.test('cancel of a running query: 57014 quickly, and the connection still works', async (t) => {
  const c = await connect(t);
  await c.query(`SET application_name = 'cancel-me-pg'`);

  // With pg's own cancel: a second connection sends CancelRequest with the BackendKeyData pg received.
  const started = Date.now();
  const running = c.query('SELECT pg_sleep(30) /* cancel-1 */');
  const pending = running.catch((e: pg.DatabaseError) => e);
  await waitForActive(direct, '%pg_sleep(30) /* cancel-1 */%');
  const canceller = new pg.Client(sg.pgConfig());
  (canceller as unknown as { cancel(client: pg.Client, query: unknown): void }).cancel(c, (c as unknown as { activeQuery: unknown }).activeQuery);
  const err = await pending;
  t.match(err, { code: '57014', message: 'canceling statement due to user request' });
  t.ok(Date.now() - started < 10_000, `cancelled after ${Date.now() - started} ms`);
  t.equal((await c.query('SELECT 1 AS ok')).rows[0].ok, 1, 'the connection is usable afterwards');

  // With a raw CancelRequest built from the key pg received; the cancel connection closes once it is done.
  const key = Buffer.alloc(4);
  key.writeInt32BE((c as unknown as { secretKey: number }).secretKey);
  const pid = (c as unknown as { processID: number }).processID;
  const second = c.query('SELECT pg_sleep(30) /* cancel-2 */').catch((e: pg.DatabaseError) => e);
  await waitForActive(direct, '%pg_sleep(30) /* cancel-2 */%');
  await sendCancel({ host: sg.host, port: sg.port }, pid, key);
  t.match(await second, { code: '57014' });

  // Inside a transaction: the transaction is aborted, as on the server.
  await c.query('BEGIN');
  const third = c.query('SELECT pg_sleep(30) /* cancel-3 */').catch((e: pg.DatabaseError) => e);
  await waitForActive(direct, '%pg_sleep(30) /* cancel-3 */%');
  await sendCancel({ host: sg.host, port: sg.port }, pid, key);
  t.match(await third, { code: '57014' });
  await t.rejects(c.query('SELECT 1'), { code: '25P02' });
  await c.query('ROLLBACK');
  t.equal((await c.query('SELECT 2 AS ok')).rows[0].ok, 2);
});

t.test('notices from RAISE NOTICE arrive', async (t) => {
  const c = await connect(t);
  const notices: unknown[] = [];
  c.on('notice', (n) => notices.push(n));
  await c.query(`DO $$ BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful' USING DETAIL = 'some detail', HINT = 'a hint'; END $$`);
  t.equal(notices.length, 2);
  t.match(notices[0], { severity: 'NOTICE', code: '00000', message: 'hello 42' });
  t.match(notices[1], { severity: 'WARNING', code: '01000', message: 'careful', detail: 'some detail', hint: 'a hint' });
  // A notice in the middle of a result set, and client_min_messages filtering done by the server.
  await c.query(`SET client_min_messages = warning`);
  await c.query(`DO $$ BEGIN RAISE NOTICE 'filtered'; END $$`);
  t.equal(notices.length, 2, 'filtered by the server');
});

t.test('ParameterStatus changes reach the client', async (t) => {
  const c = await connect(t);
  const statuses: { parameterName: string; parameterValue: string }[] = [];
  (c as unknown as { connection: NodeJS.EventEmitter }).connection.on('parameterStatus', (m: { parameterName: string; parameterValue: string }) => statuses.push(m));
  await c.query(`SET application_name = 'through-stepgate'`);
  t.match(statuses[0], { parameterName: 'application_name', parameterValue: 'through-stepgate' });
  await c.query(`SET TimeZone = 'Asia/Tokyo'`);
  t.match(statuses[1], { parameterName: 'TimeZone', parameterValue: 'Asia/Tokyo' });
  await c.query(`SET DateStyle = 'SQL, DMY'`);
  t.match(statuses[2], { parameterName: 'DateStyle', parameterValue: 'SQL, DMY' });
  const app = await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'through-stepgate'`);
  t.equal(app.rows[0].n, 1, 'the server sees the setting');
  // A rolled back SET reverts and the server reports the old value again.
  await c.query('BEGIN');
  await c.query(`SET application_name = 'temporary'`);
  await c.query('ROLLBACK');
  t.match(statuses.at(-1), { parameterName: 'application_name', parameterValue: 'through-stepgate' });
  // Startup parameters reach the server.
  const d = await connect(t, { application_name: 'from-startup' } as Partial<pg.ClientConfig>);
  t.equal((await d.query('SHOW application_name')).rows[0].application_name, 'from-startup');
});
