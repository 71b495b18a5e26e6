/**
 * When one side goes away: the server backend terminated or the server connection cut while a client
 * works, and the client vanishing while its server backend works. The other side must learn it the way
 * it would without stepgate.
 */
import net from 'node:net';
import t from 'tap';
import pg from 'pg';
import { freePort, startPostgres } from '../helpers/postgres.js';
import { startStepgate, ALICE } from '../helpers/stepgate.js';
import { m, RawClient, errorsOf, type Msg, type Target } from '../helpers/raw-client.js';
import { waitFor, waitForActive, waitForBackendGone } from '../helpers/wait.js';

const db = await startPostgres(t, { tcp: true });
const sg = await startStepgate(t, db);
const direct = await db.client();
t.teardown(() => direct.end());
await direct.query('CREATE TABLE marks (mark text)');

const proxyTarget: Target = { host: sg.host, port: sg.port };
const directTarget: Target = { host: '127.0.0.1', port: db.port };

async function open(tt: { teardown(fn: () => unknown): void }, where: 'direct' | 'stepgate', app: string, target?: Target): Promise<{ c: RawClient; pid: number }> {
  const c = await RawClient.connect(target ?? (where === 'direct' ? directTarget : proxyTarget));
  tt.teardown(() => c.destroy());
  if (where === 'direct') await c.login({ user: db.user, password: db.password, params: { application_name: app } });
  else await c.login({ user: ALICE.name, password: ALICE.password, params: { application_name: app } });
  const pid = Number(((await c.query('SELECT pg_backend_pid()')).find((x) => x.type === 'D') as Msg).values as unknown as string);
  return { c, pid };
}

const sessionsOf = (): number => (sg.server as unknown as { sessions: Set<unknown> }).sessions.size;

t.test('pg_terminate_backend of the server backend: the client gets the server\'s FATAL, once, and is closed', async (t) => {
  for (const state of ['running a query', 'idle', 'idle in a transaction'] as const) {
    const results: Msg[][] = [];
    for (const where of ['direct', 'stepgate'] as const) {
      const { c, pid } = await open(t, where, `terminate-${where}`);
      if (state === 'idle in a transaction') await c.query('BEGIN');
      if (state === 'running a query') {
        c.send(m.query(`SELECT pg_sleep(30) /* terminate-${where} */`));
        await waitForActive(direct, `%terminate-${where} */%`);
      }
      await direct.query(`SELECT pg_terminate_backend(${pid})`);
      results.push(await c.untilClosed(5000));
    }
    const [a, b] = results;
    t.same(errorsOf(b), errorsOf(a), `${state}: the same errors as directly`);
    t.same(errorsOf(b), [{ severity: 'FATAL', code: '57P01', message: 'terminating connection due to administrator command' }], `${state}: one FATAL 57P01`);
    t.same(b.map((x) => x.type), a.map((x) => x.type), `${state}: the same messages`);
  }
  // node-postgres sees the error on its query, then the end of the connection.
  const c = new pg.Client({ ...sg.pgConfig(), application_name: 'terminate-pg' } as pg.ClientConfig);
  const ended = new Promise<void>((resolve) => c.once('end', () => resolve()));
  c.on('error', () => {});
  await c.connect();
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const running = c.query('SELECT pg_sleep(30) /* terminate-pg */').catch((e: pg.DatabaseError) => e);
  await waitForActive(direct, '%terminate-pg */%');
  await direct.query(`SELECT pg_terminate_backend(${pid})`);
  t.match(await running, { code: '57P01' });
  await ended;
  await waitFor('stepgate to drop the sessions', () => sessionsOf() === 0, 5000);
});

t.test('the server connection cut without a word: stepgate says so (08006) and closes the client', async (t) => {
  // A TCP relay between stepgate and the server that the test can cut.
  const cut: net.Socket[] = [];
  const relay = net.createServer((inbound) => {
    const outbound = net.connect({ host: '127.0.0.1', port: db.port });
    inbound.pipe(outbound).pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
    cut.push(inbound, outbound);
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => relay.close(() => resolve())));
  const port = (relay.address() as net.AddressInfo).port;
  const viaRelay = await startStepgate(t, db, { flags: { upstream: `postgres://postgres:${db.password}@127.0.0.1:${port}/postgres?sslmode=disable` } });
  const target: Target = { host: viaRelay.host, port: viaRelay.port };

  for (const state of ['running a query', 'idle'] as const) {
    const { c } = await open(t, 'stepgate', `cut-${state}`, target);
    if (state === 'running a query') {
      c.send(m.query(`SELECT pg_sleep(30) /* cut */`));
      await waitForActive(direct, '%pg_sleep(30) /* cut */%');
    }
    for (const s of cut.splice(0)) s.destroy();
    const replies = await c.untilClosed(5000);
    t.same(errorsOf(replies).map((e) => [e.severity, e.code]), [['FATAL', '08006']], `${state}: FATAL 08006`);
    t.match(errorsOf(replies)[0].message, /stepgate: the server closed the connection unexpectedly/);
  }
  await waitFor('the sessions to end', () => viaRelay.server.connectionCount === 0, 5000);
  // The next client gets in (a new relay connection).
  const ok = new pg.Client(viaRelay.pgConfig());
  await ok.connect();
  t.equal((await ok.query('SELECT 1 AS one')).rows[0].one, 1);
  await ok.end();
});

t.test('the client vanishing: its server backend goes away, as it would without stepgate', async (t) => {
  // With client_connection_check_interval, PostgreSQL notices a vanished client during a long query. stepgate
  // passes the disappearance on (Terminate, then its side of the connection closed), so the server notices
  // it just the same.
  for (const where of ['direct', 'stepgate'] as const) {
    const { c, pid } = await open(t, where, `vanish-${where}`);
    await c.query(`SET client_connection_check_interval = '100ms'`);
    c.send(m.query(`SELECT pg_sleep(30) /* vanish-${where} */`));
    await waitForActive(direct, `%vanish-${where} */%`);
    const started = Date.now();
    c.destroy();
    await waitForBackendGone(direct, pid, 10_000);
    t.ok(Date.now() - started < 5000, `${where}: backend ${pid} gone after ${Date.now() - started} ms`);
  }

  // Without it, the statement runs to its end, then the backend exits; an autocommit statement is committed,
  // exactly as for a client that vanishes while connected directly.
  for (const where of ['direct', 'stepgate'] as const) {
    const { c, pid } = await open(t, where, `vanish-short-${where}`);
    c.send(m.query(`INSERT INTO marks SELECT '${where}' FROM pg_sleep(0.5)`));
    await waitForActive(direct, `%FROM pg_sleep(0.5)%`);
    c.destroy();
    await waitForBackendGone(direct, pid, 10_000);
  }
  t.same((await direct.query('SELECT mark FROM marks ORDER BY mark')).rows.map((r) => r.mark), ['direct', 'stepgate'], 'the same outcome');

  // In the middle of a transaction: rolled back.
  for (const where of ['direct', 'stepgate'] as const) {
    const { c, pid } = await open(t, where, `vanish-tx-${where}`);
    await c.query(`BEGIN; INSERT INTO marks VALUES ('tx-${where}')`);
    c.destroy();
    await waitForBackendGone(direct, pid, 10_000);
  }
  t.equal((await direct.query(`SELECT count(*)::int AS n FROM marks WHERE mark LIKE 'tx-%'`)).rows[0].n, 0, 'open transactions rolled back');

  // While stepgate holds back a large result the client does not read (backpressure), then vanishes.
  const { c, pid } = await open(t, 'stepgate', 'vanish-unread');
  c.socket.pause();
  c.send(m.query(`SELECT repeat('x', 1000) FROM generate_series(1, 1000000)`));
  await waitFor('the server to block on sending', async () => (await direct.query(`SELECT wait_event FROM pg_stat_activity WHERE pid = ${pid}`)).rows[0]?.wait_event === 'ClientWrite', 10_000);
  c.destroy();
  await waitForBackendGone(direct, pid, 10_000);
  t.pass('a backend blocked on sending to a vanished client goes away');

  // In the middle of COPY FROM STDIN: the partial copy is not committed.
  const copier = await open(t, 'stepgate', 'vanish-copy');
  copier.c.send(m.query('COPY marks FROM STDIN'));
  await copier.c.until((x) => x.type === 'G');
  copier.c.send(m.copyData('copied-then-vanished\n'));
  copier.c.destroy();
  await waitForBackendGone(direct, copier.pid, 10_000);
  t.equal((await direct.query(`SELECT count(*)::int AS n FROM marks WHERE mark = 'copied-then-vanished'`)).rows[0].n, 0);
  await waitFor('stepgate to drop the sessions', () => sessionsOf() === 0, 5000);
});

t.test('an upstream that is down, or never answers, fails the client login with a clear error (no hang)', async (t) => {
  const nobody = await freePort();
  const down = await startStepgate(t, db, { flags: { upstream: `postgres://postgres:x@127.0.0.1:${nobody}/postgres?sslmode=disable` } });
  const err = await new pg.Client(down.pgConfig()).connect().catch((e: pg.DatabaseError) => e);
  t.match(err, { severity: 'FATAL', code: '08001', message: /could not connect to postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres/ });

  // Accepts TCP, then says nothing: bounded by limits.upstream_connect_timeout.
  const silent = net.createServer((s) => s.on('error', () => {}));
  const held: net.Socket[] = [];
  silent.on('connection', (s) => held.push(s));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of held) s.destroy();
    return new Promise<void>((resolve) => silent.close(() => resolve()));
  });
  const mute = await startStepgate(t, db, {
    flags: { upstream: `postgres://postgres:x@127.0.0.1:${(silent.address() as net.AddressInfo).port}/postgres?sslmode=disable` },
    configYaml: 'limits:\n  upstream_connect_timeout: 500ms\n',
  });
  const started = Date.now();
  const err2 = await new pg.Client(mute.pgConfig()).connect().catch((e: pg.DatabaseError) => e);
  t.match(err2, { severity: 'FATAL', code: '08001', message: /timed out logging in/ });
  t.ok(Date.now() - started < 3000, `refused after ${Date.now() - started} ms`);
  await waitFor('the refused connections to be released', () => down.server.connectionCount === 0 && mute.server.connectionCount === 0, 5000);
});

t.test('stepgate shutting down closes every session and their server backends', async (t) => {
  const own = await startStepgate(t, db);
  const clients = await Promise.all(
    [0, 1, 2].map(async (i) => {
      const c = new pg.Client({ ...own.pgConfig(), application_name: `shutdown-${i}` } as pg.ClientConfig);
      c.on('error', () => {});
      await c.connect();
      return c;
    }),
  );
  await clients[0].query('BEGIN');
  await clients[0].query(`INSERT INTO marks VALUES ('shutdown')`);
  const running = clients[1].query('SELECT pg_sleep(30) /* shutdown */').catch((e: Error) => e);
  await waitForActive(direct, '%pg_sleep(30) /* shutdown */%');
  const started = Date.now();
  await own.close();
  t.ok(Date.now() - started < 5000, `closed in ${Date.now() - started} ms`);
  t.type(await running, Error, 'the running query fails');
  const backends = async (): Promise<number> => (await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'shutdown-%'`)).rows[0].n as number;
  // The sleeping backend finishes its statement first unless it checks the connection; the others go at once.
  await waitFor('the idle backends to go', async () => (await backends()) <= 1, 10_000);
  t.equal((await direct.query(`SELECT count(*)::int AS n FROM marks WHERE mark = 'shutdown'`)).rows[0].n, 0, 'the open transaction was rolled back');
  for (const c of clients) await c.end().catch(() => {});
});
