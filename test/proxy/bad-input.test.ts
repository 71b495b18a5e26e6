/**
 * Bad input of every kind: each gets a clear PostgreSQL error (the SQLSTATE PostgreSQL would send) or a
 * clean close, never a crash or a hang, and stepgate keeps serving everyone else. Then thousands of
 * connections dropped in every phase, after which nothing is left behind.
 */
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import t, { type Test } from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate, ALICE } from '../helpers/stepgate.js';
import { exchange, m, RawClient, ServerError, errorsOf, type Msg, type Target } from '../helpers/raw-client.js';
import { ScramClientExchange } from '../../src/protocol/scram.js';
import { waitFor } from '../helpers/wait.js';

const db = await startPostgres(t, { settings: { max_connections: '300' } });
const MAX_MESSAGE = 64 * 1024;
const sg = await startStepgate(t, db, { configYaml: `limits:\n  max_message_size: 64kB\n` });
const proxy: Target = { host: sg.host, port: sg.port };
const directTarget: Target = { path: `${db.socketDir}/.s.PGSQL.${db.port}` };
const direct = await db.client();
t.teardown(() => direct.end());

/** Someone else, connected all along: must keep working whatever the others send. */
const bystander = new pg.Client(sg.pgConfig());
await bystander.connect();
t.teardown(() => bystander.end());
async function stillServes(tt: Test): Promise<void> {
  tt.equal((await bystander.query('SELECT 41 + 1 AS n')).rows[0].n, 42, 'stepgate still serves the others');
  const fresh = new pg.Client(sg.pgConfig());
  await fresh.connect();
  tt.equal((await fresh.query('SELECT 1 AS one')).rows[0].one, 1, 'and accepts new connections');
  await fresh.end();
}

async function login(tt: { teardown(fn: () => unknown): void }, target: Target = proxy, params: Record<string, string> = {}): Promise<RawClient> {
  const c = await RawClient.connect(target);
  tt.teardown(() => c.destroy());
  if (target === proxy) await c.login({ user: ALICE.name, password: ALICE.password, params });
  else await c.login({ user: db.user, password: db.password, params });
  return c;
}

/** The replies are one FATAL ErrorResponse with this SQLSTATE (or nothing: a clean close), and the connection closed. */
function refused(tt: Test, replies: Msg[], code: string | null, what: string): void {
  const errors = errorsOf(replies);
  if (code === null && errors.length === 0) {
    tt.same(replies, [], `${what}: closed without a reply`);
    return;
  }
  tt.same(replies.map((x) => x.type), ['E'], `${what}: one ErrorResponse, then closed`);
  tt.match(errors[0], { severity: 'FATAL', code: code ?? /.+/ }, `${what}: FATAL ${code}`);
}

t.test('message lengths: below 4, above the maximum, truncated then closed', async (t) => {
  for (const length of [3, 0, -1, -2147483648]) {
    const c = await login(t);
    const bad = Buffer.from([0x51, 0, 0, 0, 0]);
    bad.writeInt32BE(length, 1);
    c.write(bad);
    const replies = await c.untilClosed();
    refused(t, replies, '08P01', `length ${length}`);
    t.match(errorsOf(replies)[0]?.message, /invalid message length/);
  }

  // A Query just above the limit is refused as soon as its header arrives (not read into memory first).
  const big = await login(t);
  const header = Buffer.from([0x51, 0, 0, 0, 0]);
  header.writeInt32BE(MAX_MESSAGE + 1, 1);
  big.write(header);
  const replies = await big.untilClosed();
  refused(t, replies, '08P01', 'message above max_message_size');
  t.match(errorsOf(replies)[0]?.message, /exceeds the limit/);
  // Just below the limit is fine.
  const ok = await login(t);
  const sql = `SELECT length('${'x'.repeat(MAX_MESSAGE - 100)}')`;
  t.same((await ok.query(sql)).map((x) => x.type), ['T', 'D', 'C', 'Z'], 'a Query just under the limit runs');

  // CopyData is streamed, not bound by max_message_size (as documented): a 1 MB row goes through.
  await direct.query('CREATE TABLE big_rows (v text)');
  const copier = await login(t);
  copier.send(m.query('COPY big_rows FROM STDIN'));
  await copier.until((x) => x.type === 'G');
  copier.send(m.copyData(Buffer.concat([Buffer.alloc(1024 * 1024, 'y'), Buffer.from('\n')])), m.copyDone());
  t.same((await copier.untilReady()).map((x) => x.type), ['C', 'Z'], 'a 1 MB CopyData message is relayed');
  t.equal((await direct.query('SELECT length(v) AS n FROM big_rows')).rows[0]?.n, 1024 * 1024);

  // A message cut off by the client closing: stepgate closes the server side too.
  const cut = await login(t, proxy, { application_name: 'truncated-message' });
  const q = m.query('SELECT 1 /* never finished */');
  cut.write(q.subarray(0, 10));
  await waitFor('the truncated client\'s backend', async () => (await direct.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'truncated-message'`)).rowCount === 1);
  cut.socket.end();
  await cut.closed;
  await waitFor('the backend of the truncated client to go away', async () => (await direct.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'truncated-message'`)).rowCount === 0);
  await stillServes(t);
});

t.test('unknown message types: the same FATAL as the server', async (t) => {
  for (const type of ['z', '!', '\u0000', 'p' /* a password message after login */, 'R' /* a backend message type */]) {
    const results: Msg[][] = [];
    for (const target of [directTarget, proxy]) {
      const c = await login(t, target);
      c.write(m.typed(type, Buffer.from('abc\0')));
      results.push(await c.untilClosed());
    }
    const [a, b] = results.map(errorsOf);
    refused(t, results[1], '08P01', `message type ${JSON.stringify(type)}`);
    t.same(b.map((e) => [e.code, e.message]), a.map((e) => [e.code, e.message]), `type ${JSON.stringify(type)}: same error as the server`);
  }
  // Messages with a valid type and a malformed body.
  for (const [name, bytes] of [
    ['Query without its NUL', m.typed('Q', Buffer.from('SELECT 1'))],
    ['Bind with a negative parameter count', m.typed('B', Buffer.from([0, 0, 0, 0, 0xff, 0xff]))],
    ['Describe with a bad kind', m.typed('D', Buffer.from('Xname\0'))],
    ['Sync with a body', m.typed('S', Buffer.from('x'))],
    ['Execute cut short', m.typed('E', Buffer.from('\0'))],
  ] as const) {
    const c = await login(t);
    c.write(bytes);
    refused(t, await c.untilClosed(), '08P01', name);
  }
  await stillServes(t);
});

t.test('garbage before startup', async (t) => {
  const cases: [string, Buffer][] = [
    ['random bytes', randomBytes(64)],
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n')],
    ['a TLS ClientHello without SSLRequest', Buffer.from('160301020001000', 'hex')],
    ['a length of 4', Buffer.from([0, 0, 0, 4])],
    ['a negative length', Buffer.from([0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0])],
    ['startup packet too long', Buffer.concat([Buffer.from([0, 0, 0x27, 0x11]), Buffer.alloc(10001 - 4, 1)])],
    ['startup packet without its final terminator', (() => {
      const b = m.startup({ user: 'alice', database: 'postgres' }).subarray(0, -1);
      b.writeInt32BE(b.length, 0);
      return b;
    })()],
    ['startup parameter without a value', (() => {
      const b = Buffer.concat([Buffer.alloc(8), Buffer.from('user\0')]);
      b.writeInt32BE(b.length, 0);
      b.writeInt32BE(3 << 16, 4);
      return b;
    })()],
    ['cancel request of a bad length', Buffer.from([0, 0, 0, 10, 0x04, 0xd2, 0x16, 0x2e, 0, 0])],
  ];
  for (const [name, bytes] of cases) {
    const { replies } = await exchange(proxy, bytes, 5000).catch((err: Error) => {
      t.fail(`${name}: ${err.message}`);
      return { replies: [] as Msg[] };
    });
    // PostgreSQL closes without a word for most of these; stepgate may say 08P01 first.
    const errors = errorsOf(replies);
    t.ok(replies.length === 0 || (errors.length === 1 && replies.length === 1 && errors[0].severity === 'FATAL' && errors[0].code === '08P01'), `${name}: ${JSON.stringify(errors)}`);
  }
  // A cut-off startup packet, then the client closes.
  const c = await RawClient.connect(proxy);
  c.write(m.startup({ user: 'alice', database: 'postgres' }).subarray(0, 12));
  c.socket.end();
  t.same(await c.untilClosed(), []);
  await stillServes(t);
});

t.test('a refused client that never closes its side is disconnected anyway', async (t) => {
  const internals = sg.server as unknown as { sockets: Set<unknown> };
  const c = await RawClient.connect(proxy);
  t.teardown(() => c.destroy());
  c.write(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  const started = Date.now();
  // The client reads the FATAL but keeps its end open (and keeps sending): stepgate must not wait forever.
  const noise = setInterval(() => c.socket.writable && c.socket.write('more garbage'), 50);
  t.teardown(() => clearInterval(noise));
  const replies = await c.untilClosed(10_000);
  clearInterval(noise);
  refused(t, replies, '08P01', 'HTTP request');
  t.ok(Date.now() - started < 5000, `closed by stepgate after ${Date.now() - started} ms`);
  await waitFor('the socket to be released', () => internals.sockets.size <= 2, 5000);

  // A client refused in the middle of sending a large message reads its FATAL (no reset before it).
  for (let i = 0; i < 5; i++) {
    const big = await login(t);
    const msg = m.query(`SELECT '${'z'.repeat(MAX_MESSAGE * 4)}'`);
    big.write(msg);
    const got = await big.untilClosed(10_000);
    refused(t, got, '08P01', `oversized Query ${i} while still sending`);
  }
  await stillServes(t);
});

t.test('a client that stalls during startup is disconnected after limits.startup_timeout', async (t) => {
  const quick = await startStepgate(t, db, { configYaml: 'limits:\n  startup_timeout: 300ms\n' });
  const target: Target = { host: quick.host, port: quick.port };
  const stalls: [string, (c: RawClient) => Promise<void>][] = [
    ['sending nothing', async () => {}],
    ['half a startup packet', async (c) => c.write(m.startup({ user: 'alice' }).subarray(0, 10))],
    ['after SSLRequest', async (c) => {
      c.write(m.sslRequest());
      await c.byte();
    }],
    ['in the middle of SCRAM', async (c) => {
      c.write(m.startup({ user: 'alice', database: 'postgres' }));
      await c.next();
    }],
  ];
  for (const [name, stall] of stalls) {
    const c = await RawClient.connect(target);
    t.teardown(() => c.destroy());
    const started = Date.now();
    await stall(c);
    await c.untilClosed(5000);
    const elapsed = Date.now() - started;
    t.ok(elapsed >= 250 && elapsed < 3000, `${name}: closed after ${elapsed} ms`);
  }
  await waitFor('no connections left', () => quick.server.connectionCount === 0, 5000);
  // A normal client is not affected.
  const ok = new pg.Client(quick.pgConfig());
  await ok.connect();
  t.equal((await ok.query('SELECT 1 AS x')).rows[0].x, 1);
  await ok.end();
});

t.test('authentication failures', async (t) => {
  const attempt = async (user: string, password: string): Promise<{ error: ServerError; exchange: Msg[] }> => {
    const c = await RawClient.connect(proxy);
    t.teardown(() => c.destroy());
    const got: Msg[] = [];
    c.write(m.startup({ user, database: 'postgres' }));
    const error = await c.authenticate({ user, password }).then(
      () => null,
      (e: ServerError) => e,
    );
    got.push(...c.drain());
    await c.closed;
    return { error: error as ServerError, exchange: got };
  };
  const wrong = await attempt('alice', 'not-the-password');
  t.ok(wrong.error instanceof ServerError);
  t.match(wrong.error.msg, { severity: 'FATAL', code: '28P01', message: 'password authentication failed for user "alice"' });
  const unknown = await attempt('mallory', 'whatever');
  t.match(unknown.error.msg, { severity: 'FATAL', code: '28P01', message: 'password authentication failed for user "mallory"' });
  t.same(Object.keys(unknown.error.msg.fields as object), Object.keys(wrong.error.msg.fields as object), 'the same fields for an unknown user as for a wrong password');

  // pg sees the same.
  const bad = new pg.Client({ ...sg.pgConfig(), password: 'nope' });
  await t.rejects(bad.connect(), { code: '28P01' });
  // A client that offers a mechanism stepgate does not support, or answers with something else.
  const mech = await RawClient.connect(proxy);
  mech.write(m.startup({ user: 'alice' }));
  t.match(await mech.next(), { type: 'R', code: 10, mechanisms: ['SCRAM-SHA-256'] });
  mech.write(m.saslInitial('SCRAM-SHA-256-PLUS', 'p=tls-server-end-point,,n=,r=abc'));
  refused(t, await mech.untilClosed(), '08P01', 'an unsupported SASL mechanism');
  const other = await RawClient.connect(proxy);
  other.write(m.startup({ user: 'alice' }));
  await other.next();
  other.write(m.query('SELECT 1'));
  refused(t, await other.untilClosed(), '08P01', 'a Query instead of the SASL response');
  const garbled = await RawClient.connect(proxy);
  garbled.write(m.startup({ user: 'alice' }));
  await garbled.next();
  garbled.write(m.saslInitial('SCRAM-SHA-256', 'not scram at all'));
  refused(t, await garbled.untilClosed(), '08P01', 'a malformed SCRAM message');
  // No user name: the same error as the server.
  const results: Msg[][] = [];
  for (const target of [directTarget, proxy]) results.push((await exchange(target, m.startup({ database: 'postgres' }))).replies);
  t.same(errorsOf(results[1]), errorsOf(results[0]), 'no user: same error as the server');
  t.match(errorsOf(results[1])[0], { code: '28000' });
  await stillServes(t);
});

t.test('protocol versions and _pq_ options', async (t) => {
  // 3.2 with a _pq_ option: NegotiateProtocolVersion (newest version 3.0, sent as 0x30000 as PostgreSQL does;
  // the option unsupported), then a normal login. The server (PostgreSQL 15) answers the same.
  for (const target of [directTarget, proxy]) {
    const where = target === proxy ? 'stepgate' : 'direct';
    const c = await RawClient.connect(target);
    t.teardown(() => c.destroy());
    const user = target === proxy ? ALICE : { name: db.user, password: db.password };
    const body = Buffer.concat([Buffer.alloc(4), Buffer.from(`user\0${user.name}\0database\0postgres\0_pq_.test_option\0on\0\0`)]);
    body.writeInt32BE((3 << 16) | 2, 0);
    const packet = Buffer.concat([Buffer.alloc(4), body]);
    packet.writeInt32BE(packet.length, 0);
    c.write(packet);
    const msgs = await c.authenticate({ user: user.name, password: user.password });
    t.same(msgs.find((x) => x.type === 'v'), { type: 'v', version: 0x30000, options: ['_pq_.test_option'] }, `${where}: NegotiateProtocolVersion`);
    t.same((await c.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z'], `${where}: the client still gets in`);
  }
  // 3.1 without options: negotiated down too.
  const c31 = await RawClient.connect(proxy);
  t.teardown(() => c31.destroy());
  c31.write(m.startup({ user: ALICE.name, database: 'postgres' }, 3, 1));
  const msgs = await c31.authenticate({ user: ALICE.name, password: ALICE.password });
  t.same(msgs.find((x) => x.type === 'v'), { type: 'v', version: 0x30000, options: [] });

  // Major versions other than 3: FATAL, with the server's own wording.
  for (const [major, minor] of [[4, 0], [1234, 5681]]) {
    const results: Msg[][] = [];
    for (const target of [directTarget, proxy]) results.push((await exchange(target, m.startup({ user: 'alice' }, major, minor))).replies);
    refused(t, results[1], '0A000', `protocol ${major}.${minor}`);
    t.same(errorsOf(results[1]).map((e) => [e.code, e.message]), errorsOf(results[0]).map((e) => [e.code, e.message]), `protocol ${major}.${minor}: same as the server`);
  }
  // 2.0: the server answers in the 2.0 format (which this client does not read); stepgate in 3.0's. Either
  // way the client is refused with the same text.
  const v2 = (await exchange(proxy, m.startup({ user: 'alice' }, 2, 0))).replies;
  refused(t, v2, '0A000', 'protocol 2.0');
  t.equal(errorsOf(v2)[0]?.message, 'unsupported frontend protocol 2.0: server supports 3.0 to 3.0');
  await stillServes(t);
});

t.test('GSSENCRequest is declined and the client goes on in plain text', async (t) => {
  const c = await RawClient.connect(proxy);
  t.teardown(() => c.destroy());
  c.write(m.gssencRequest());
  t.equal(await c.byte(), 'N');
  await c.login({ user: ALICE.name, password: ALICE.password });
  t.same((await c.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z']);
});

t.test('startup options: -c and --name=value are relayed; others refused; replication refused', async (t) => {
  const c = await login(t, proxy, { options: '-c application_name=from_options --search_path=public,pg_catalog -cwork_mem=3MB' });
  const show = async (name: string): Promise<unknown> => ((await c.query(`SHOW ${name}`)).find((x) => x.type === 'D') as Msg).values;
  t.same(await show('application_name'), ['from_options']);
  t.same(await show('search_path'), ['public,pg_catalog']);
  t.same(await show('work_mem'), ['3MB']);
  // Escaped spaces in a value, as libpq users write them.
  const spaced = await login(t, proxy, { options: '-c application_name=two\\ words' });
  t.same(((await spaced.query('SHOW application_name')).find((x) => x.type === 'D') as Msg).values, ['two words']);
  // pg passes options the same way.
  const viaPg = new pg.Client({ ...sg.pgConfig(), options: '-c statement_timeout=1234' } as pg.ClientConfig);
  await viaPg.connect();
  t.equal((await viaPg.query('SHOW statement_timeout')).rows[0].statement_timeout, '1234ms');
  await viaPg.end();

  for (const options of ['-B 100', '-D /tmp', '--nonsense', '-c']) {
    const x = await RawClient.connect(proxy);
    t.teardown(() => x.destroy());
    x.write(m.startup({ user: ALICE.name, database: 'postgres', options }));
    const err = await x.authenticate({ user: ALICE.name, password: ALICE.password }).then(
      () => null,
      (e: ServerError) => e,
    );
    t.match(err?.msg, { severity: 'FATAL', code: '42501' }, `options ${JSON.stringify(options)} refused with 42501`);
  }
  for (const replication of ['database', 'true', 'on', '1']) {
    const x = await RawClient.connect(proxy);
    t.teardown(() => x.destroy());
    x.write(m.startup({ user: ALICE.name, database: 'postgres', replication }));
    const replies = await x.untilClosed();
    t.match(errorsOf(replies)[0], { severity: 'FATAL', code: '0A000' }, `replication=${replication} refused`);
  }
  await stillServes(t);
});

/** Node's gc, also when the process was not started with --expose-gc. */
function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) return g();
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

t.test('thousands of connections dropped in every phase; nothing is left behind', async (t) => {
  const internals = sg.server as unknown as { sessions: Set<unknown>; sockets: Set<unknown>; cancelKeys: { size: number } };
  // Connections of the tests before this one were closed when they ended; let stepgate see them go.
  await waitFor('earlier connections to close', () => internals.sockets.size === 1, 10_000).catch(() => {});
  const before = { sockets: internals.sockets.size, sessions: internals.sessions.size, keys: internals.cancelKeys.size };
  t.same(before, { sockets: 1, sessions: 1, keys: 1 }, 'only the bystander is connected');
  gc();
  const heapBefore = process.memoryUsage().heapUsed;

  const params = { user: ALICE.name, database: 'postgres', application_name: 'churn' };
  const fullLogin = { user: ALICE.name, password: ALICE.password, params: { application_name: 'churn' } };
  /** Each phase: what the client does before it vanishes (socket destroyed, no Terminate). */
  const phases: [string, number, (c: RawClient) => Promise<void>][] = [
    ['right after connecting', 400, async () => {}],
    ['in the middle of the startup packet', 250, async (c) => c.write(m.startup(params).subarray(0, 9))],
    ['after the startup packet', 250, async (c) => {
      c.write(m.startup(params));
      await c.next();
    }],
    ['in the middle of SCRAM', 250, async (c) => {
      c.write(m.startup(params));
      await c.next();
      c.write(m.saslInitial('SCRAM-SHA-256', 'n,,n=*,r=abcdefghijklmnop'));
      await c.next();
    }],
    ['with a wrong password', 150, async (c) => {
      c.write(m.startup(params));
      await c.authenticate({ user: ALICE.name, password: 'wrong' }).catch(() => {});
    }],
    ['right after sending the SCRAM proof (while stepgate logs in upstream)', 200, async (c) => {
      c.write(m.startup(params));
      await c.next();
      const scram = new ScramClientExchange(ALICE.password);
      c.write(m.saslInitial('SCRAM-SHA-256', scram.first()));
      const serverFirst = (await c.next()).data as string;
      // Vanish as soon as the proof is on its way: SASLFinal/AuthenticationOk are not awaited.
      c.write(m.saslResponse(scram.final(serverFirst)));
    }],
    ['right after AuthenticationOk (while stepgate logs in upstream)', 100, async (c) => {
      c.write(m.startup(params));
      await c.next();
      const scram = new ScramClientExchange(ALICE.password);
      c.write(m.saslInitial('SCRAM-SHA-256', scram.first()));
      c.write(m.saslResponse(scram.final((await c.next()).data as string)));
      await c.until((x) => x.type === 'R' && x.code === 0);
    }],
    ['after login', 200, async (c) => void (await c.login(fullLogin))],
    ['in the middle of a query', 100, async (c) => {
      await c.login(fullLogin);
      c.send(m.query('SELECT g FROM generate_series(1, 50000) g'));
      await c.next();
    }],
    ['in the middle of COPY FROM STDIN', 50, async (c) => {
      await c.login(fullLogin);
      c.send(m.query('COPY big_rows FROM STDIN'));
      await c.until((x) => x.type === 'G');
      c.send(m.copyData('partial row'));
    }],
    ['after Terminate', 50, async (c) => {
      await c.login(fullLogin);
      c.end();
      await c.closed;
    }],
  ];

  // The bystander keeps querying the whole time.
  let bystanderQueries = 0;
  let churning = true;
  const bystanderLoop = (async () => {
    while (churning) {
      const r = await bystander.query('SELECT count(*) AS n FROM pg_class');
      if (Number(r.rows[0].n) > 0) bystanderQueries++;
    }
  })();

  let total = 0;
  const BATCH = 50;
  for (const [name, count, act] of phases) {
    let failures = 0;
    let firstFailure: unknown = null;
    for (let done = 0; done < count; done += BATCH) {
      await Promise.all(
        Array.from({ length: Math.min(BATCH, count - done) }, async () => {
          const c = await RawClient.connect(proxy);
          try {
            await act(c);
          } catch (err) {
            failures++;
            firstFailure ??= err;
          } finally {
            c.destroy();
          }
        }),
      );
    }
    total += count;
    t.equal(failures, 0, `${count} connections dropped ${name}${firstFailure ? `: ${String(firstFailure)}` : ''}`);
  }
  churning = false;
  await bystanderLoop;
  t.equal(total, 2000);
  t.ok(bystanderQueries > 10, `the bystander ran ${bystanderQueries} queries meanwhile`);

  await waitFor('stepgate to let go of every dropped connection', () => internals.sockets.size === 1 && internals.sessions.size === 1, 20_000).catch(() => {});
  t.equal(sg.server.connectionCount, 1, 'connectionCount is back to the bystander only');
  t.equal(internals.sessions.size, 1, 'no session objects left');
  t.equal(internals.cancelKeys.size, 1, 'no cancel keys left');
  const churnBackends = async (): Promise<number> => (await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'churn'`)).rows[0].n as number;
  await waitFor('the server backends of dropped connections to exit', async () => (await churnBackends()) === 0, 20_000).catch(() => {});
  t.equal(await churnBackends(), 0, 'no server backends left');

  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  const growth = (heapAfter - heapBefore) / 1024 / 1024;
  t.ok(growth < 16, `heap grew by ${growth.toFixed(1)} MB after 2000 connections`);
  await stillServes(t);
});
