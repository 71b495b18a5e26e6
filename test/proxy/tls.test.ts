/**
 * TLS on both sides: clients to stepgate (sslmode=require, verify-full, require_tls) and stepgate to the
 * server (an upstream URL with sslmode=require / verify-full), and the SSLRequest edge cases.
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import { makeCert } from '../helpers/certs.js';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate, ALICE, type TestStepgate } from '../helpers/stepgate.js';
import { exchange, m, RawClient, errorsOf } from '../helpers/raw-client.js';
import { requirePrograms, run } from '../helpers/run.js';
import { waitFor, waitForActive } from '../helpers/wait.js';

const cert = makeCert(t);
const db = await startPostgres(t);
const direct = await db.client();
t.teardown(() => direct.end());

async function pgQuery(tt: Test, config: pg.ClientConfig, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client(config);
  c.on('error', () => {});
  tt.teardown(() => c.end().catch(() => {}));
  await c.connect();
  return c.query(sql);
}

function psqlEnv(sg: TestStepgate, sslmode: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...sg.env(), PGSSLMODE: sslmode, PSQLRC: '/dev/null', LC_ALL: 'C', ...extra };
}

t.test('sslmode=require (and verify-full) to stepgate with psql and pg', async (t) => {
  const sg = await startStepgate(t, db, { flags: { tlsCert: cert.certFile, tlsKey: cert.keyFile } });
  // pg: require (no verification) and verify-full against our CA.
  const r1 = await pgQuery(t, { ...sg.pgConfig(), ssl: { rejectUnauthorized: false } }, 'SELECT 1 AS one');
  t.equal(r1.rows[0].one, 1);
  const r2 = await pgQuery(t, { ...sg.pgConfig(), host: 'localhost', ssl: { ca: cert.cert, servername: 'localhost' } }, `SELECT repeat('x', 100000) AS big`);
  t.equal(r2.rows[0].big.length, 100000, 'a large result over TLS');
  // A plaintext client is still welcome without require_tls.
  t.equal((await pgQuery(t, sg.pgConfig(), 'SELECT 2 AS two')).rows[0].two, 2);
  t.ok(sg.logs.some((l) => l.event === 'connection.start' && l.tls === true), 'stepgate logged TLS connections');

  if (!requirePrograms(t, ['psql'])) return;
  for (const [mode, extra] of [['require', {}], ['verify-full', { PGSSLROOTCERT: cert.certFile }], ['prefer', {}]] as const) {
    const r = await run(t, 'psql', ['-X', '-A', '-t', '-c', "SELECT 'over tls'"], { env: psqlEnv(sg, mode, extra) });
    t.equal(r.code, 0, `psql sslmode=${mode}: ${r.stderr}`);
    t.equal(r.stdout, 'over tls\n');
  }
  // verify-full with a CA that did not sign the certificate fails on the client side, cleanly.
  const other = makeCert(t);
  const bad = await run(t, 'psql', ['-X', '-c', 'SELECT 1'], { env: psqlEnv(sg, 'verify-full', { PGSSLROOTCERT: other.certFile }) });
  t.not(bad.code, 0);
  t.match(bad.stderr, /certificate verify failed/);
  t.notOk(sg.logs.some((l) => l.event === 'connection.internal_error'), 'a client that aborts the TLS handshake is not an internal error');
  t.equal((await pgQuery(t, sg.pgConfig(), 'SELECT 3 AS three')).rows[0].three, 3, 'stepgate still serves');
});

t.test('with require_tls, a plaintext client gets FATAL 28000; TLS clients and cancel requests work', async (t) => {
  const sg = await startStepgate(t, db, { flags: { tlsCert: cert.certFile, tlsKey: cert.keyFile, requireTls: true } });
  await t.rejects(pgQuery(t, sg.pgConfig(), 'SELECT 1'), { code: '28000', message: 'stepgate requires an encrypted connection' });
  const { replies } = await exchange({ host: sg.host, port: sg.port }, m.startup({ user: ALICE.name, database: 'postgres' }));
  t.same(errorsOf(replies), [{ severity: 'FATAL', code: '28000', message: 'stepgate requires an encrypted connection' }]);
  t.equal((await pgQuery(t, { ...sg.pgConfig(), ssl: { rejectUnauthorized: false } }, 'SELECT 1 AS one')).rows[0].one, 1);

  if (!requirePrograms(t, ['psql'])) return;
  const plain = await run(t, 'psql', ['-X', '-c', 'SELECT 1'], { env: psqlEnv(sg, 'disable') });
  t.equal(plain.code, 2);
  t.match(plain.stderr, /FATAL:  stepgate requires an encrypted connection/);
  t.match(plain.stderr, /HINT:  Connect with sslmode=require/);
  // psql with sslmode=prefer upgrades and gets in.
  const prefer = await run(t, 'psql', ['-X', '-A', '-t', '-c', 'SELECT 1'], { env: psqlEnv(sg, 'prefer') });
  t.equal(prefer.code, 0, prefer.stderr);
  // libpq sends CancelRequest on a plain connection: stepgate takes it even when it requires TLS.
  let child: import('node:child_process').ChildProcess | null = null;
  const sleeping = run(t, 'psql', ['-X', '-c', 'select pg_sleep(30) /* tls-cancel */'], { env: psqlEnv(sg, 'require'), onSpawn: (c) => (child = c), timeoutMs: 20_000 });
  await waitForActive(direct, '%tls-cancel%');
  (child as unknown as import('node:child_process').ChildProcess).kill('SIGINT');
  const r = await sleeping;
  t.equal(r.code, 1);
  t.match(r.stderr, /canceling statement due to user request/);
});

t.test('SSLRequest edge cases', async (t) => {
  const sg = await startStepgate(t, db, { flags: { tlsCert: cert.certFile, tlsKey: cert.keyFile } });
  const target = { host: sg.host, port: sg.port };

  // Bytes right after SSLRequest, before the handshake (CVE-2021-23222): refused, nothing relayed.
  const startup = m.startup({ user: ALICE.name, database: 'postgres', application_name: 'injected-after-ssl' });
  const { replies } = await exchange(target, Buffer.concat([m.sslRequest(), startup]));
  t.same(errorsOf(replies), [{ severity: 'FATAL', code: '08P01', message: 'received unencrypted data after SSL request' }], 'refused with 08P01, no S');
  t.equal(replies.length, 1);
  t.notOk(sg.logs.some((l) => l.event === 'connection.start' && l.application === 'injected-after-ssl'), 'no session was started');
  t.equal((await direct.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'injected-after-ssl'`)).rows[0].n, 0, 'nothing reached the server');

  // Plain text where the TLS ClientHello should be: a clean close, no internal error.
  const c = await RawClient.connect(target);
  t.teardown(() => c.destroy());
  c.write(m.sslRequest());
  t.equal(await c.byte(), 'S');
  c.write(startup);
  await c.untilClosed(5000).catch(() => {});
  await c.closed;
  // A client that closes in the middle of the handshake.
  const d = await RawClient.connect(target);
  d.write(m.sslRequest());
  t.equal(await d.byte(), 'S');
  d.destroy();
  await waitFor('both connections to be released', () => sg.server.connectionCount === 0, 5000);
  t.notOk(sg.logs.some((l) => l.event === 'connection.internal_error'), 'TLS handshake failures are the client\'s, not internal errors');

  // Without a certificate, SSLRequest is declined with N and the client goes on in plain text.
  const plainSg = await startStepgate(t, db);
  const p = await RawClient.connect({ host: plainSg.host, port: plainSg.port });
  t.teardown(() => p.destroy());
  t.equal(await p.startTls(), false, 'N');
  await p.login({ user: ALICE.name, password: ALICE.password });
  t.same((await p.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z']);

  // Over TLS, the raw client sees exactly what it sees in plain text.
  const s = await RawClient.connect(target);
  t.teardown(() => s.destroy());
  t.equal(await s.startTls(), true);
  await s.login({ user: ALICE.name, password: ALICE.password });
  t.same((await s.query('SELECT 1')).map((x) => x.type), ['T', 'D', 'C', 'Z']);
});

t.test('upstream TLS: sslmode=require and verify-full to a server with ssl=on', async (t) => {
  const sslDb = await startPostgres(t, {
    tcp: true,
    settings: { ssl: 'on', ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' },
    files: { 'server.crt': cert.cert, 'server.key': cert.key },
  });
  for (const query of ['sslmode=require', `sslmode=verify-full&sslrootcert=${encodeURIComponent(cert.certFile)}`]) {
    const sg = await startStepgate(t, sslDb, { flags: { upstream: `${sslDb.url()}?${query}` } });
    const r = await pgQuery(t, sg.pgConfig(), 'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    t.same(r.rows[0]?.ssl, true, `${query.split('&')[0]}: the server connection is encrypted`);
    // A cancel goes over TLS too.
    const c = new pg.Client(sg.pgConfig());
    await c.connect();
    t.teardown(() => c.end().catch(() => {}));
    const sleeping = c.query('SELECT pg_sleep(30) /* upstream-tls-cancel */').catch((e: pg.DatabaseError) => e);
    await waitForActive(sslDb, '%upstream-tls-cancel%');
    const key = Buffer.alloc(4);
    key.writeInt32BE((c as unknown as { secretKey: number }).secretKey);
    const { sendCancel } = await import('../helpers/raw-client.js');
    await sendCancel({ host: sg.host, port: sg.port }, (c as unknown as { processID: number }).processID, key);
    t.match(await sleeping, { code: '57014' });
  }
  // verify-full with the wrong CA: refused at client login with a clear error.
  const other = makeCert(t);
  const wrongCa = await startStepgate(t, sslDb, { flags: { upstream: `${sslDb.url()}?sslmode=verify-full&sslrootcert=${encodeURIComponent(other.certFile)}` } });
  await t.rejects(pgQuery(t, wrongCa.pgConfig(), 'SELECT 1'), { code: '08001', message: /TLS .* failed/ });
});

t.test('upstream sslmode=require against a server without SSL fails at client login with a clear error', async (t) => {
  const plainDb = await startPostgres(t, { tcp: true });
  const sg = await startStepgate(t, plainDb, { flags: { upstream: `${plainDb.url()}?sslmode=require` } });
  const err = await pgQuery(t, sg.pgConfig(), 'SELECT 1').catch((e: pg.DatabaseError) => e);
  t.match(err, { severity: 'FATAL', code: '08001', message: /does not support TLS \(sslmode=require\)/ });
  t.notMatch(String((err as Error).message), /pg-test-password/, 'no credentials in the message');
  // prefer falls back to plain text.
  const preferSg = await startStepgate(t, plainDb, { flags: { upstream: `${plainDb.url()}?sslmode=prefer` } });
  t.equal((await pgQuery(t, preferSg.pgConfig(), 'SELECT 1 AS one')).rows[0].one, 1);
  // And stepgate keeps serving (the failed login left nothing behind).
  t.equal(sg.server.connectionCount, 0);
});
