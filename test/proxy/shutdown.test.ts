/**
 * Shutdown as PostgreSQL does it (in this process, with a deadline the test controls): new connections get
 * FATAL 57P03, an idle client FATAL 57P01 at once, a running statement that finishes before the deadline
 * completes (then 57P01), one that does not is cut off with 57P01, and a held statement ends with the
 * outcome `shutdown` (57P01 to its client). Everything is in the audit trail, which closes cleanly.
 * (`stepgate serve` as a process, with SIGTERM and its exit status, is in test/cli/shutdown.test.ts.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { backendsRunning, waitFor, waitForActive, waitForBackendGone } from '../helpers/wait.js';
import { cli, readEvents } from '../audit/helpers.js';
import type { Hold, HoldOutcome, HoldRequest, StepUpBroker } from '../../src/stepup/types.js';

/** Holds every step-up statement until it is ended; never decides. */
class NeverDecides implements StepUpBroker {
  readonly requests: HoldRequest[] = [];
  readonly ended: string[] = [];
  private n = 0;
  hold(request: HoldRequest): Hold {
    this.requests.push(request);
    const challengeId = `never-${++this.n}`;
    let settle!: (o: HoldOutcome) => void;
    let ended = false;
    const outcome = new Promise<HoldOutcome>((resolve) => (settle = resolve));
    return {
      challengeId,
      url: `http://console.test/c/${challengeId}`,
      outcome,
      end: (status) => {
        // Once, like the console's broker: later ends (the session closing) change nothing.
        if (ended) return;
        ended = true;
        this.ended.push(status);
        settle({ status });
      },
    };
  }
  connectionClosed(): void {}
}

const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.writeFileSync(path.join(rulesDir, '00-test.yaml'), 'default: allow\nrules:\n  - name: ask-for-secrets\n    match: {tables: [secrets]}\n    action: step-up\n');

/** A connected client whose asynchronous errors (a FATAL while idle) are collected. */
async function connect(config: pg.ClientConfig): Promise<{ client: pg.Client; errors: (Error & { code?: string })[]; ended: Promise<void> }> {
  const client = new pg.Client(config);
  const errors: (Error & { code?: string })[] = [];
  client.on('error', (e) => errors.push(e));
  const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
  await client.connect();
  return { client, errors, ended };
}

t.test('shutdown: 57P03 for new connections, running statements get until the deadline, then 57P01; a hold ends as shutdown', async (t) => {
  const db = await startPostgres(t);
  await db.query('CREATE TABLE secrets (v int); INSERT INTO secrets VALUES (1)');
  const broker = new NeverDecides();
  const sg = await startStepgate(t, db, { rulesDir, stepUp: broker });
  const config = (app: string): pg.ClientConfig => ({ ...sg.pgConfig(), application_name: app });
  const admin = await db.client();
  t.teardown(() => admin.end());

  const idle = await connect(config('idle'));
  const short = await connect(config('short'));
  const long = await connect(config('long'));
  const held = await connect(config('held'));

  const shortQuery = short.client.query('SELECT pg_sleep(0.5) AS slept');
  const longQuery = long.client.query('SELECT pg_sleep(60) AS slept').then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  const heldQuery = held.client.query('SELECT v FROM secrets').then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  await waitForActive(admin, 'SELECT pg_sleep(0.5)%');
  const longPid = await waitForActive(admin, 'SELECT pg_sleep(60)%');
  await waitFor('the statement to be held', () => broker.requests.length === 1);

  // The grace period ends when the test says so.
  let endGrace!: () => void;
  const deadline = new Promise<void>((resolve) => (endGrace = resolve));
  const closed = sg.app.close({ deadline });

  // An idle session ends at once, as PostgreSQL's does.
  await idle.ended;
  t.match(idle.errors[0], { code: '57P01', severity: 'FATAL', message: 'terminating connection due to administrator command' }, 'idle client: FATAL 57P01');

  // New connections are refused while stepgate drains.
  await t.rejects(connect(config('late')), { code: '57P03', message: 'the database system is shutting down' });

  // The short statement completes, then its client is told.
  t.same((await shortQuery).rows, [{ slept: '' }], 'the running statement shorter than the drain completes');
  await short.ended;
  t.match(short.errors[0], { code: '57P01', severity: 'FATAL' }, 'then FATAL 57P01');

  // Still running, still held: until the deadline.
  t.equal((await backendsRunning(admin, 'SELECT pg_sleep(60)%')).length, 1, 'the long statement still runs');
  t.same(broker.ended, [], 'the hold is still waiting');
  endGrace();

  t.match(await longQuery, { code: '57P01', severity: 'FATAL', message: 'terminating connection due to administrator command' }, 'the long statement is cut off with 57P01');
  t.match(await heldQuery, { code: '57P01', severity: 'FATAL' }, 'the held statement gets 57P01');
  t.same(broker.ended, ['shutdown'], 'the hold ended with the outcome shutdown');
  await closed;
  await waitForBackendGone(admin, longPid);

  // The audit trail: every outcome, the hold's included; closed cleanly.
  const events = readEvents(sg.dataDir);
  const statement = (sql: string) => events.find((e) => e.kind === 'statement' && e.data.sql === sql)!;
  const heldStatement = statement('SELECT v FROM secrets');
  t.match(
    events.find((e) => e.kind === 'challenge.resolved' && e.session === heldStatement.session),
    { data: { statement: heldStatement.sseq, challenge: 'never-1', status: 'shutdown' } },
    'the hold is recorded as ended by the shutdown',
  );
  const shortStatement = statement('SELECT pg_sleep(0.5) AS slept');
  const shortOutcome = [...(shortStatement.data.outcomes ?? []), ...events.filter((e) => e.kind === 'outcome' && e.session === shortStatement.session).map((e) => e.data)];
  t.match(shortOutcome, [{ tag: 'SELECT 1' }], 'the completed statement has its outcome');
  const ends = events.filter((e) => e.kind === 'connection.end').map((e) => e.data.reason);
  t.same(ends, ['stepgate shut down', 'stepgate shut down', 'stepgate shut down', 'stepgate shut down'], 'every session ended by the shutdown');
  t.equal(events.at(-1)!.kind, 'audit.close', 'the trail is closed last');
  const v = await cli(['audit', 'verify', '--data', sg.dataDir]);
  t.equal(v.code, 0, v.stdout);
  t.match(sg.logs.find((l) => l.event === 'stepgate.drained'), { finished_in_time: 1, terminated: 2 });
  for (const c of [idle, short, long, held]) void c.client.end().catch(() => {});
});

t.test('close() without a grace period: every client gets 57P01 at once', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { rulesDir, stepUp: new NeverDecides() });
  const admin = await db.client();
  t.teardown(() => admin.end());
  const busy = await connect(sg.pgConfig());
  const running = busy.client.query('SELECT pg_sleep(60)').then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  const pid = await waitForActive(admin, 'SELECT pg_sleep(60)%');
  await sg.app.close();
  t.match(await running, { code: '57P01' });
  await waitForBackendGone(admin, pid);
  void busy.client.end().catch(() => {});
});
