/**
 * The startup packet, read as the server reads it: each case directly against PostgreSQL (what the server
 * does with it) and through stepgate (refused, or the same effect), and what stepgate sends upstream.
 */
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import type { AuditStore } from '../../src/audit/store.js';
import { waitForEvent } from '../audit/helpers.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { errorsOf, m, RawClient, ServerError, type Msg } from '../helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';

const db = await startPostgres(t);
await db.query('CREATE DATABASE other');
await db.query('CREATE ROLE x');
const sg = await startStepgate(t, db);
const direct = { path: `${db.socketDir}/.s.PGSQL.${db.port}` };
const proxy = { host: sg.host, port: sg.port };

const PROBE = `SELECT current_database(), current_user, current_setting('application_name'), current_setting('work_mem'),
  current_setting('search_path'), current_setting('statement_timeout'), current_setting('_pq_.x', true)`;

type Outcome = { error: { severity: string; code: string; message: string; hint?: string } } | { row: (string | null)[] };

/** Logs in with these extra startup parameters and runs PROBE; the FATAL error instead, if login fails. */
async function attempt(target: { path: string } | { host: string; port: number }, params: Record<string, string>, database = 'postgres'): Promise<Outcome> {
  const c = await RawClient.connect(target);
  try {
    const viaProxy = 'host' in target;
    const user = viaProxy ? ALICE : { name: 'postgres', password: db.password };
    c.write(m.startup({ user: user.name, database, ...params }));
    try {
      await c.authenticate({ user: user.name, password: user.password });
    } catch (err) {
      if (!(err instanceof ServerError)) throw err;
      const f = err.msg.fields as Record<string, string>;
      return { error: { severity: f.V ?? f.S!, code: f.C!, message: f.M!, ...(f.H ? { hint: f.H } : {}) } };
    }
    const replies = await c.query(PROBE);
    const failed = errorsOf(replies)[0];
    if (failed) return { error: failed };
    return { row: (replies.find((r) => r.type === 'D') as Msg).values as (string | null)[] };
  } finally {
    c.destroy();
  }
}

const [databaseOf, userOf, applicationOf, workMemOf, searchPathOf, statementTimeoutOf, pqOf] = [0, 1, 2, 3, 4, 5, 6].map(
  (i) => (o: Outcome) => ('row' in o ? o.row[i] : undefined),
);

t.test('settings named user, database, options, replication or _pq_.*: the server refuses or misreads them, stepgate refuses them', async (t) => {
  const cases: [string, Record<string, string>, RegExp | null][] = [
    // A nested options: forwarded as an upstream `options` parameter, it would have set the role.
    ['-c options=-c\\ role=x', { options: '-c options=-c\\ role=x' }, /unrecognized configuration parameter "options"/],
    ['-c replication=database', { options: '-c replication=database' }, /unrecognized configuration parameter "replication"/],
    ['-c database=other', { options: '-c database=other' }, /unrecognized configuration parameter "database"/],
    ['-c user=x', { options: '-c user=x' }, /unrecognized configuration parameter "user"/],
    ['--user=x', { options: '--user=x' }, /unrecognized configuration parameter "user"/],
    // The server keeps it as a placeholder setting; as an upstream parameter it would be a protocol option.
    ['-c _pq_.x=1', { options: '-c _pq_.x=1' }, null],
    ['a parameter Database=other', { Database: 'other' }, /unrecognized configuration parameter "Database"/],
  ];
  for (const [label, params, serverError] of cases) {
    const server = await attempt(direct, params);
    if (serverError) t.match(server, { error: { severity: 'FATAL', code: '42704', message: serverError } }, `directly, ${label}: ${JSON.stringify(server)}`);
    else t.equal(pqOf(server), '1', `directly, ${label}: a placeholder setting`);
    const through = await attempt(proxy, params);
    t.match(through, { error: { severity: 'FATAL', code: '42501', message: /stepgate refuses the startup setting/, hint: /connection parameters of their own/ } }, `through stepgate, ${label}: refused`);
  }
  // Before the fix, the upstream got options=-c role=x: the session ran as x.
  t.equal(userOf(await attempt(proxy, { options: '-c application_name=fine' })), 'postgres', "stepgate's own upstream user, no role change");
});

t.test('options split as the server splits them: ASCII white space, backslashes, a trailing backslash', async (t) => {
  const cases: [string, Record<string, string>, (o: Outcome) => unknown][] = [
    ['a no-break space is part of the value', { options: '-c application_name=a\u00a0b' }, applicationOf],
    ['an em space is no separator: no second switch', { options: '-c application_name=x\u2003-c\u2003work_mem=77kB' }, (o) => [applicationOf(o), workMemOf(o)]],
    ['a trailing backslash is dropped', { options: '-c application_name=abc\\' }, applicationOf],
    ['escaped spaces', { options: '-c application_name=two\\ words' }, applicationOf],
    ['tab, vertical tab, form feed and carriage return separate', { options: '-c\twork_mem=5MB\u000b-c\fstatement_timeout=7\r' }, (o) => [workMemOf(o), statementTimeoutOf(o)]],
    ['--name=value with dashes in the name', { options: '--search-path=pg_catalog,public' }, searchPathOf],
    ['-cname=value', { options: '-cwork_mem=4MB' }, workMemOf],
    ['a final -- ends the switches', { options: '-c work_mem=3MB --' }, workMemOf],
    ['the last of two', { options: '-c work_mem=1MB -c work_mem=9MB' }, workMemOf],
    // The server applies options first, then the other parameters.
    ['a parameter after options', { options: '-c work_mem=1MB', work_mem: '2MB' }, workMemOf],
    ['a parameter name in another case', { Application_Name: 'mixed' }, applicationOf],
  ];
  for (const [label, params, read] of cases) {
    const server = await attempt(direct, params);
    const through = await attempt(proxy, params);
    t.ok('row' in server, `directly, ${label}: ${JSON.stringify(server)}`);
    t.same(read(through), read(server), `${label}: ${JSON.stringify(read(through))} through stepgate, as directly`);
  }
  t.same(applicationOf(await attempt(direct, { options: '-c application_name=a\u00a0b' })), 'a??b', 'the server cleans non-ASCII from application_name');
});

t.test('what the server refuses in options, stepgate refuses too', async (t) => {
  for (const options of ['-c work_mem', '--work_mem', 'foo', '-c work_mem=3MB -- x', '\\', '-c', '-c =x']) {
    const server = await attempt(direct, { options });
    t.match(server, { error: { severity: 'FATAL' } }, `directly, ${JSON.stringify(options)}: ${JSON.stringify(server)}`);
    t.match(await attempt(proxy, { options }), { error: { severity: 'FATAL', code: '42501' } }, `through stepgate, ${JSON.stringify(options)}`);
  }
});

t.test('replication: false values connect as usual, true ones are refused, invalid ones get the server\'s error', async (t) => {
  for (const replication of ['false', 'off', 'no', '0', 'f', 'OFF']) {
    t.ok('row' in (await attempt(direct, { replication })), `directly, replication=${replication}: a normal backend`);
    t.ok('row' in (await attempt(proxy, { replication })), `through stepgate, replication=${replication}`);
  }
  for (const replication of ['bogus', '', 'o']) {
    const server = await attempt(direct, { replication });
    t.match(server, { error: { code: '22023', message: `invalid value for parameter "replication": "${replication}"` } });
    const through = await attempt(proxy, { replication });
    t.same(through, server, `replication=${JSON.stringify(replication)}: the server's error`);
  }
  for (const replication of ['database', 'true', 'on', '1', 'yes']) {
    t.match(await attempt(proxy, { replication }), { error: { code: '0A000', message: /does not relay replication connections/ } }, `replication=${replication}`);
  }
});

t.test('settings only a new connection can set are admin: the shipped rules do not let them through at startup', async (t) => {
  const shipped = await startStepgate(t, db, { rulesDir: path.join(REPO_ROOT, 'rules') });
  for (const params of [{ log_disconnections: 'off' }, { options: '-c log_connections=off' }, { post_auth_delay: '0' }] as Record<string, string>[]) {
    t.ok('row' in (await attempt(direct, params)), `directly (a superuser): ${JSON.stringify(params)} is taken`);
    t.match(
      await attempt({ host: shipped.host, port: shipped.port }, params),
      { error: { severity: 'FATAL', code: '42501', message: /is not allowed through stepgate \(rule "step-up-admin": step-up\)/ } },
      `through stepgate: ${JSON.stringify(params)} refused`,
    );
  }
  t.ok('row' in (await attempt({ host: shipped.host, port: shipped.port }, { options: '-c work_mem=8MB' })), 'ordinary settings still pass');
});

t.test('the database connected to is the one the log and the audit trail record', async (t) => {
  const outcome = await attempt(proxy, { application_name: 'to-other' }, 'other');
  t.equal(databaseOf(outcome), 'other');
  const start = sg.logs.filter((l) => l.event === 'connection.start' && l.application === 'to-other').at(-1);
  t.match(start, { database: 'other', server_database: 'other' });
  // A name the configuration routes to another database: both names.
  const routed = await startStepgate(t, db, { configYaml: `databases:\n  alias: ${JSON.stringify(db.url('other'))}\n` });
  t.equal(databaseOf(await attempt({ host: routed.host, port: routed.port }, { application_name: 'routed' }, 'alias')), 'other');
  t.match(routed.logs.find((l) => l.event === 'connection.start'), { database: 'alias', server_database: 'other' });
  const store = routed.app.audit as AuditStore;
  const event = await waitForEvent(store, routed.dataDir, (e) => e.kind === 'connection.start');
  t.match(event.data, { database: 'alias', server_database: 'other', application: 'routed' }, 'in the audit trail');
  const plain = await waitForEvent(sg.app.audit as AuditStore, sg.dataDir, (e) => e.kind === 'connection.start' && e.data.application === 'to-other');
  t.notOk('server_database' in plain.data, 'recorded only when it differs from the name the client used');
});

/** A server that records the startup packet it gets, then logs anyone in. */
async function recordingServer(): Promise<{ url: string; packets: [string, string][][] }> {
  const packets: [string, string][][] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', (chunk: Buffer) => {
      const parts = chunk.subarray(8, chunk.readInt32BE(0) - 1).toString('utf8').split('\0');
      const pairs: [string, string][] = [];
      for (let i = 0; i + 1 < parts.length; i += 2) pairs.push([parts[i]!, parts[i + 1]!]);
      packets.push(pairs);
      const status = (name: string, value: string): Buffer => {
        const body = Buffer.from(`${name}\0${value}\0`);
        const head = Buffer.alloc(5);
        head[0] = 0x53;
        head.writeInt32BE(4 + body.length, 1);
        return Buffer.concat([head, body]);
      };
      socket.write(Buffer.concat([Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0]), status('server_version', '15.18'), Buffer.from([0x4b, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0x5a, 0, 0, 0, 5, 0x49])]));
      // Then answer what stepgate sends at session start (its SET default_transaction_read_only, extended
      // protocol), so that the session is idle and ends at once.
      let pending = Buffer.alloc(0);
      socket.on('data', (more: Buffer) => {
        pending = Buffer.concat([pending, more]);
        const out: Buffer[] = [];
        while (pending.length >= 5 && pending.length >= 1 + pending.readInt32BE(1)) {
          const type = String.fromCharCode(pending[0]!);
          pending = pending.subarray(1 + pending.readInt32BE(1));
          if (type === 'P') out.push(Buffer.from([0x31, 0, 0, 0, 4]));
          else if (type === 'B') out.push(Buffer.from([0x32, 0, 0, 0, 4]));
          else if (type === 'E') out.push(Buffer.from([0x43, 0, 0, 0, 8, 0x53, 0x45, 0x54, 0]));
          else if (type === 'S') out.push(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]));
          else if (type === 'X') socket.end();
        }
        if (out.length > 0) socket.write(Buffer.concat(out));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `postgres://up:pw@127.0.0.1:${(server.address() as net.AddressInfo).port}/postgres?sslmode=disable`, packets };
}

t.test('upstream gets only what was judged, rebuilt: the database, then each setting as a parameter of its own', async (t) => {
  const upstream = await recordingServer();
  const relay = await startStepgate(t, { url: () => upstream.url } as TestPostgres);
  const c = await RawClient.connect({ host: relay.host, port: relay.port });
  t.teardown(() => c.destroy());
  c.write(
    m.startup({
      user: ALICE.name,
      database: 'postgres',
      work_mem: '2MB',
      options: '-c application_name=two\\ words --search-path=a\\,b -c statement_timeout=5',
      client_encoding: 'UTF8',
      '_pq_.test': 'x',
    } as Record<string, string>),
  );
  await c.authenticate({ user: ALICE.name, password: ALICE.password });
  t.same(upstream.packets.at(-1), [
    ['user', 'up'],
    ['database', 'postgres'],
    ['application_name', 'two words'],
    ['search_path', 'a,b'],
    ['statement_timeout', '5'],
    ['work_mem', '2MB'],
    ['client_encoding', 'UTF8'],
  ]);
});
