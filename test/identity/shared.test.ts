/**
 * Two instances on one state database (two StateDatabases, two PostgresIdentityStores, as two stepgate
 * processes have): a change on one is seen on the other through its notice; single-use factors are
 * decided by the database, so what one instance accepted the other refuses even before its copy heard;
 * a write by a plain SQL client (the CLI on another host) is seen; `stepgate users` with a config that
 * has `state:` acts on the shared store; after the LISTEN connection is killed the store reconnects and
 * resyncs, and a change made while it was down is seen. No sleeps: each wait is for the copy to change.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import { usersCommand } from '../../src/commands/users.js';
import type { PostgresIdentityStore } from '../../src/identity/postgres-store.js';
import type { NewPasskey } from '../../src/identity/store.js';
import pgClient from 'pg';
import type { StateDatabase } from '../../src/state/database.js';
import { changed, freshStateUrl, openState, postgresStore } from '../helpers/identity.js';
import { startPostgres } from '../helpers/postgres.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import { ALICE, startStepgate } from '../helpers/stepgate.js';

const pg = await startPostgres(t);
const url = await freshStateUrl(pg);
const stateA = await openState(t, url, 'instance-a');
const stateB = await openState(t, url, 'instance-b');
const a = await postgresStore(t, stateA);
const b = await postgresStore(t, stateB);

const key = (id: string, user: string, counter = 0): NewPasskey => ({ id, user, publicKey: new Uint8Array([9]), counter, transports: [], name: id, deviceType: null, backedUp: false });

t.test('a user added on A is seen on B (and the latency)', async (t) => {
  const total: number[] = [];
  const afterA: number[] = [];
  for (let i = 0; i < 20; i++) {
    const name = `latency-${i}`;
    let seenAt = 0;
    const seen = changed(b, () => b.getUser(name) !== null).then(() => (seenAt = performance.now()));
    const started = performance.now();
    await a.addUser(name, ['dev'], null);
    const resolved = performance.now();
    await seen;
    total.push(seenAt - started);
    afterA.push(Math.max(0, seenAt - resolved));
  }
  t.match(b.getUser('latency-0'), { name: 'latency-0', groups: ['dev'] });
  const median = (xs: number[]): string => [...xs].sort((x, y) => x - y)[10]!.toFixed(1);
  t.comment(`addUser on A until B's copy has the user: median ${median(total)} ms, max ${Math.max(...total).toFixed(1)} ms; after A's promise resolved: median ${median(afterA)} ms (20 samples)`);
  t.ok(Math.max(...total) < 5_000);
});

t.test('a TOTP step used on A is refused on B', async (t) => {
  await a.addUser('tom', [], null);
  await a.setTotp('tom', 'SECRET', 100, [Buffer.from('code-1')]);
  await changed(b, () => b.totpSecret('tom') !== null);
  t.equal(await a.useTotpStep('tom', 101), true);
  t.equal(await b.useTotpStep('tom', 101), false, 'the same step on the other instance');
  t.equal(b.totpSecret('tom')!.lastStep, 101, "B's copy has A's step once B asked the database");
  const race = await Promise.all([a.useTotpStep('tom', 102), b.useTotpStep('tom', 102)]);
  t.same(race.filter(Boolean).length, 1, 'one of two instances racing with one step wins');
  const codes = await Promise.all([a.useRecoveryCode('tom', Buffer.from('code-1')), b.useRecoveryCode('tom', Buffer.from('code-1'))]);
  t.same(codes.filter(Boolean).length, 1, 'and one recovery code is used once');
});

t.test('an enrollment link used on A is refused on B', async (t) => {
  await a.addUser('ena', [], null);
  const link = await a.issueEnrollment('ena');
  await changed(b, () => b.enrollmentUser(link.token) === 'ena');
  const results = await Promise.allSettled([a.enrollPasskey(link.token, key('ena-a', 'ena')), b.enrollPasskey(link.token, key('ena-b', 'ena'))]);
  t.same(results.map((r) => r.status).sort(), ['fulfilled', 'rejected'], 'of two concurrent registrations with one link, one wins');
  t.match(results.find((r) => r.status === 'rejected'), { reason: /already used or has expired/ });
  await changed(a, () => a.passkeyCount('ena') === 1 && a.enrollmentUser(link.token) === null);
  await changed(b, () => b.passkeyCount('ena') === 1 && b.enrollmentUser(link.token) === null);
  t.pass('both copies: one passkey, the link used up');
  await t.rejects(b.enrollPasskey(link.token, key('ena-c', 'ena')), /already used or has expired/, 'and later too');
});

t.test("a passkey counter that does not move forward is refused across instances", async (t) => {
  await a.addUser('cal', [], null);
  await a.addPasskey(key('cal-key', 'cal'));
  await changed(b, () => b.passkey('cal-key') !== null);
  t.equal(await a.recordPasskeyUse('cal-key', 0, 5), true);
  // B's copy may still say 0: a cloned authenticator presenting 3 passes the library's check against 0,
  // the database (at 5) refuses it.
  t.equal(await b.recordPasskeyUse('cal-key', 0, 3), false, 'from a stale counter');
  t.equal(b.passkey('cal-key')!.counter, 5, "B's copy caught up");
  t.equal(await b.recordPasskeyUse('cal-key', 5, 5), false, 'not forward');
  t.equal(await b.recordPasskeyUse('cal-key', 5, 6), true);
  await changed(a, () => a.passkey('cal-key')!.counter === 6);
  t.pass("A's copy has B's use");
});

t.test('a revocation on A is seen on B', async (t) => {
  await a.addUser('rev', [], null);
  const credential = await a.addCredential('rev', 'verifier', 'laptop', 60_000);
  await changed(b, () => b.activeCredentials('rev').length === 1);
  t.equal(await a.revokeCredential('rev', credential.id), true);
  t.equal(await b.credentialUsed(credential.id), false, "B refuses the login whatever its copy says");
  await changed(b, () => b.activeCredentials('rev').length === 0);
  t.pass("B's copy has the revocation");
  await a.setDisabled('rev', true);
  await changed(b, () => b.getUser('rev')?.disabled === true);
  t.pass('a user disabled on A is disabled on B');
  await a.removeUser('rev');
  await changed(b, () => b.getUser('rev') === null);
  t.pass('a user removed on A is gone on B');
});

t.test('a write by a plain SQL client is seen by both', async (t) => {
  await a.addUser('sql', [], null);
  await changed(b, () => b.getUser('sql') !== null);
  await pg.query("UPDATE stepgate.users SET groups = '{auditors}' WHERE name = 'sql'", new URL(url).pathname.slice(1));
  await changed(a, () => a.getUser('sql')?.groups[0] === 'auditors');
  await changed(b, () => b.getUser('sql')?.groups[0] === 'auditors');
  t.pass('both copies have the change');
});

t.test('stepgate users with a config that has state: acts on the shared store', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-users-state-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, 'stepgate.yaml');
  fs.writeFileSync(config, `upstream: postgres://u:p@127.0.0.1:1/db\nstate: ${JSON.stringify(url)}\n`);
  const run = async (...args: string[]): Promise<{ code: number; out: string }> => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const code = await usersCommand(args, { stdout: out, stderr: out, stdin: Readable.from(['cli-password\n']) });
    return { code, out: text };
  };
  const added = await run('add', 'cli-user', '--groups', 'dev', '--password-stdin', '--config', config, '--json');
  t.equal(added.code, 0, added.out);
  const token = /#token=([A-Za-z0-9_-]+)/.exec(added.out)?.[1] ?? '';
  await changed(a, () => a.getUser('cli-user') !== null && a.enrollmentUser(token) === 'cli-user');
  t.match(a.getUser('cli-user'), { groups: ['dev'], verifier: /^SCRAM-SHA-256\$/ }, 'the instance sees the user and its enrollment link');
  await changed(b, () => b.getUser('cli-user') !== null);
  t.equal((await run('disable', 'cli-user', '--config', config)).code, 0);
  await changed(b, () => b.getUser('cli-user')?.disabled === true);
  const listed = await run('list', '--json', '--config', config);
  t.match((JSON.parse(listed.out) as { name: string }[]).find((u) => u.name === 'cli-user'), { disabled: true, groups: ['dev'] });
  await t.rejects(run('list', '--config', config, '--data', dir), /drop --data/, 'the shared store and a data directory at once: refused');
  t.equal((await run('remove', 'cli-user', '--config', config)).code, 0);
  await changed(a, () => a.getUser('cli-user') === null);
  t.pass('removed everywhere');
});

t.test('an instance started with state: logs in a user another instance created, and refuses them once disabled there', async (t) => {
  const sg = await startStepgate(t, pg, { configYaml: `state: ${JSON.stringify(url)}\n`, users: [] });
  t.ok(sg.app.state, 'the app opened the state database');
  await a.addUser(ALICE.name, ['dev'], makeVerifier(ALICE.password));
  await changed(sg.identity as PostgresIdentityStore, () => sg.identity.getUser(ALICE.name) !== null);
  const client = new pgClient.Client(sg.pgConfig(ALICE));
  await client.connect();
  t.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1, 'logged in through the proxy');
  await client.end();
  await a.setDisabled(ALICE.name, true);
  await changed(sg.identity as PostgresIdentityStore, () => sg.identity.getUser(ALICE.name)?.disabled === true);
  await t.rejects(new pgClient.Client(sg.pgConfig(ALICE)).connect(), /not permitted|authentication failed/, 'disabled on A: refused by this instance');
  t.ok(fs.existsSync(path.join(sg.dataDir, 'signals.db')), 'risk signals in its own signals.db');
  t.notOk(fs.existsSync(path.join(sg.dataDir, 'identity.db')), 'no identity.db');
});

t.test('after the LISTEN connection is killed, the store reconnects and resyncs', async (t) => {
  await a.addUser('down', [], null);
  await changed(b, () => b.getUser('down') !== null);
  const listener = async (state: StateDatabase): Promise<number> =>
    Number((await pg.query(`SELECT pid FROM pg_stat_activity WHERE application_name = 'stepgate ${state.instanceId} listener'`, new URL(url).pathname.slice(1))).rows[0]?.pid);
  const before = await listener(stateB);
  t.ok(before > 0, "B's listener is connected");
  const down = new Promise<boolean>((resolve) => stateB.on('down', () => resolve(stateB.healthy)));
  const up = new Promise<void>((resolve) => stateB.on('up', resolve));
  const resynced = new Promise<void>((resolve) => {
    const off = b.onChange((user) => {
      if (user !== null) return;
      off();
      resolve();
    });
  });
  // The change commits after the listener is gone (pg_terminate_backend waits for it to end): its
  // notice reaches nobody on B, only the resync can bring it.
  const c = await pg.client(new URL(url).pathname.slice(1));
  try {
    await c.query('BEGIN');
    await c.query("UPDATE stepgate.users SET disabled = true WHERE name = 'down'");
    await c.query(`SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name LIKE '%listener' AND application_name LIKE '%instance-b%'`);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
  t.equal(await down, false, 'B knows its listener is down');
  await up;
  await resynced;
  t.equal(stateB.healthy, true, 'back');
  await changed(b, () => b.getUser('down')?.disabled === true);
  t.pass('the change made while it was down is seen');
  t.not(await listener(stateB), before, 'on a new connection');
  await a.setDisabled('down', false);
  await changed(b, () => b.getUser('down')?.disabled === false);
  t.pass('and later notices arrive again');
});
