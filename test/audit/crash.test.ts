/**
 * Durability: stepgate as a child process (`node bin/stepgate.js serve`), killed with SIGKILL right after
 * a client received a deny error, and during a hold. On restart the events are there and the chain
 * verifies; the next run records that the previous one did not shut down cleanly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import { startPostgres } from '../helpers/postgres.js';
import { REPO_ROOT } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { cli, readEvents, writeRules } from './helpers.js';

interface Child {
  process: ChildProcess;
  port: number;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startChild(t: { teardown(fn: () => unknown): void }, configFile: string): Promise<Child> {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'stepgate.js'), 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await waitFor(
    'stepgate to listen',
    () => {
      if (child.exitCode !== null) throw new Error(`stepgate exited: ${err}`);
      const line = err.split('\n').find((l) => l.includes('"stepgate.listening"'));
      return line ? Number((JSON.parse(line) as { listen: string }).listen.split(':').pop()) : null;
    },
    // A bound, not a wait: a loaded 2-core machine can take this long to start a process.
    60_000,
  );
  return { process: child, port, stderr: () => err, exited };
}

t.test('events survive kill -9 after a deny and during a hold', async (t) => {
  const db = await startPostgres(t);
  await db.query('CREATE TABLE t (id int); INSERT INTO t VALUES (1)');
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-crash-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const identity = new SqliteIdentityStore(dataDir);
  await identity.addUser('alice', [], makeVerifier('alice-pw'));
  // A passkey on record, so the console broker holds (nobody will approve it here).
  await identity.addPasskey({ id: 'cred-alice', user: 'alice', publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'test key', deviceType: null, backedUp: false });
  identity.close();
  const configFile = path.join(dataDir, 'stepgate.yaml');
  fs.writeFileSync(
    configFile,
    [`listen: 127.0.0.1:0`, `console: 127.0.0.1:0`, `upstream: ${JSON.stringify(db.url())}`, `data: ${JSON.stringify(dataDir)}`, `rules: ${JSON.stringify(writeRules(t))}`, ''].join('\n'),
  );
  const connect = async (port: number): Promise<pg.Client> => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'alice', password: 'alice-pw', database: 'postgres', application_name: 'crash-test' });
    c.on('error', () => {});
    await c.connect();
    return c;
  };

  // 1. A deny: the client's error is sent only after the event is fsync'd. Kill at once.
  let child = await startChild(t, configFile);
  let client = await connect(child.port);
  await client.query('SELECT 1');
  await t.rejects(client.query('DROP TABLE t'), { code: '42501' });
  child.process.kill('SIGKILL');
  t.match(await child.exited, { signal: 'SIGKILL' });
  void client.end().catch(() => {});
  const denied = readEvents(dataDir, "kind = 'statement'").find((e) => e.data.sql === 'DROP TABLE t');
  t.ok(denied, 'the denied statement is in the audit trail');
  t.match(denied?.data.decision, { action: 'deny', rule: 'deny-drop' });
  // The chain is intact, but the killed run never wrote audit.close: a warning naming the run, exit 3.
  const v1 = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(v1.code, 3, v1.stdout);
  const run1 = readEvents(dataDir, "kind = 'audit.open'")[0]!.data as { run: string; stepgate_pid: number };
  t.equal(run1.stepgate_pid, child.process.pid, 'audit.open names the process');
  t.match(v1.stdout, new RegExp(`\\nWARNING: run ${run1.run} \\(stepgate pid ${child.process.pid} on [^,]+, started \\d{4}-\\d\\d-\\d\\dT[^)]+\\) ended without audit.close and its process \\(pid ${child.process.pid}\\) is gone: stepgate was killed or crashed; its last events may be missing`));
  t.match(v1.stdout, /\nINTACT WITH WARNINGS: nothing in the chain was altered, deleted or inserted, but it may be incomplete \(1 warning above\)\.\n/);
  t.notMatch(v1.stdout, /OK: the audit trail is intact/);

  // 2. A hold: the statement and its challenge are on disk before the client is told it is held
  //    (and before anyone is asked), approved or not. Kill as soon as the notice arrives.
  child = await startChild(t, configFile);
  client = await connect(child.port);
  const held = new Promise<void>((resolve) => client.on('notice', (n) => /held for step-up/.test(n.message ?? '') && resolve()));
  const truncate = client.query('TRUNCATE t').catch((err: Error) => err);
  await held;
  child.process.kill('SIGKILL');
  await child.exited;
  await truncate;
  void client.end().catch(() => {});
  const events = readEvents(dataDir);
  const statement = events.find((e) => e.kind === 'statement' && e.data.sql === 'TRUNCATE t');
  t.ok(statement, 'the held statement is in the audit trail');
  t.ok(
    events.some((e) => e.kind === 'challenge.created' && e.session === statement?.session && e.data.statement === statement?.sseq),
    'so is its challenge',
  );
  const v2 = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(v2.code, 3, v2.stdout);
  t.equal(v2.stdout.match(/\nWARNING: run \S+ .* ended without audit.close/g)?.length, 2, 'both killed runs are named');

  // 3. The next run says the previous one stopped uncleanly, and which sessions it left open.
  child = await startChild(t, configFile);
  // serve handles SIGTERM from before it starts (an orderly stop even during startup): no need to wait.
  child.process.kill('SIGTERM');
  t.match(await child.exited, { code: 0 });
  const opens = readEvents(dataDir, "kind = 'audit.open'");
  t.equal(opens.length, 3);
  t.match(opens[2]!.data, { clean_shutdown: false, open_sessions: [String] });
  t.equal(opens[1]!.data.clean_shutdown, false);
  const v3 = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(v3.code, 3, v3.stdout);
  t.match(v3.stdout, /runs: {9}3 \(1 closed cleanly, 2 without audit.close\)/);
  t.equal(v3.stdout.match(/\nWARNING: /g)?.length, 2, 'the run stopped with SIGTERM closed cleanly');
  t.notMatch(v3.stdout, /not sealed/, 'SIGTERM ends with a signed checkpoint');
  const sessions = JSON.parse((await cli(['audit', 'sessions', '--data', dataDir, '--json'])).stdout) as { end: string | null; denied: number; held: number }[];
  t.equal(sessions.length, 2);
  t.ok(sessions.every((s) => s.end === null), 'neither killed session has an end');
  t.same(
    sessions.map((s) => [s.denied, s.held]),
    [
      [1, 0],
      [0, 1],
    ],
  );
});
