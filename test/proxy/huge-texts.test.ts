/**
 * A huge Query on one connection does not stall the others: while stepgate classifies a 10 MB INSERT (in its
 * worker thread), small queries on another connection keep their latency.
 */
import path from 'node:path';
import t from 'tap';
import type { AuditStore } from '../../src/audit/store.js';
import { startPostgres } from '../helpers/postgres.js';
import { m, RawClient, type Msg } from '../helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';

// Megabytes of SQL to parse: on a loaded machine this file may need more than the default 120 s.
t.setTimeout(300_000);

const db = await startPostgres(t);
await db.query('CREATE TABLE bulk (id int, name text)');
const sg = await startStepgate(t, db, { rulesDir: path.join(REPO_ROOT, 'rules') });

async function connect(): Promise<RawClient> {
  const c = await RawClient.connect({ host: sg.host, port: sg.port });
  t.teardown(() => c.destroy());
  await c.login({ user: ALICE.name, password: ALICE.password });
  return c;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

t.test('small queries keep their latency while another connection sends a 10 MB Query', async (t) => {
  const rows: string[] = [];
  for (let i = 0, length = 0; length < 10 << 20; i++) {
    const row = `(${i}, 'name ${i}')`;
    rows.push(row);
    length += row.length + 1;
  }
  // Built before anything is measured: this process is the client too.
  const bigQuery = m.query(`INSERT INTO bulk (id, name) VALUES ${rows.join(',')}`);
  const small = await connect();
  const bulk = await connect();

  const smallQuery = m.query('SELECT 1');
  const timed = async (): Promise<number> => {
    const started = performance.now();
    small.send(smallQuery);
    await small.untilReady();
    return performance.now() - started;
  };
  const before: number[] = [];
  for (let i = 0; i < 300; i++) before.push(await timed());

  let done = false;
  const started = performance.now();
  bulk.send(bigQuery);
  const bulkReplies = bulk.untilReady(120_000).finally(() => (done = true));
  const during: number[] = [];
  while (!done) during.push(await timed());
  const replies: Msg[] = await bulkReplies;
  const seconds = (performance.now() - started) / 1000;

  t.same(replies.map((r) => r.type), ['C', 'Z']);
  t.equal((replies[0] as Msg).tag, `INSERT 0 ${rows.length}`, 'the big INSERT ran');
  const p99 = percentile(during, 0.99);
  t.comment(
    `10 MB INSERT of ${rows.length} rows: ${seconds.toFixed(1)} s. SELECT 1 on another connection before: p50 ${percentile(before, 0.5).toFixed(2)} ms, p99 ${percentile(before, 0.99).toFixed(2)} ms; ` +
      `during (${during.length} queries): p50 ${percentile(during, 0.5).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, max ${Math.max(...during).toFixed(1)} ms`,
  );
  t.ok(during.length >= 100, `${during.length} small queries ran meanwhile`);
  // Classified in the event loop, the INSERT would hold every small query for the whole parse (seconds).
  t.ok(p99 < 50, `p99 ${p99.toFixed(1)} ms < 50 ms`);
});

t.test('a client that leaves while its huge text is classified: nothing is decided or recorded for it', async (t) => {
  const { readEvents, waitForEvent } = await import('../audit/helpers.js');
  const store = sg.app.audit as AuditStore;
  const leaving = await connect();
  leaving.send(m.query(`SELECT ${'1, '.repeat(300_000)}1`));
  await new Promise((resolve) => setTimeout(resolve, 50));
  leaving.destroy();
  const end = await waitForEvent(store, sg.dataDir, (e) => e.kind === 'connection.end' && e.data.reason === 'client closed the connection', 60_000);
  // Wait until the worker has finished with the text: a small query after it in the same worker queue.
  const after = await connect();
  after.send(m.query(`SELECT ${'2, '.repeat(2000)}2`));
  await after.untilReady(120_000);
  await store.durable();
  const statements = readEvents(sg.dataDir, "kind = 'statement'").filter((e) => String(e.data.sql).startsWith('SELECT 1, 1, 1'));
  t.same(statements, [], 'the text was not decided, nor recorded (in its session or a new one)');
  t.ok(end.session > 0);
  t.notOk(sg.logs.some((l) => l.event === 'session.internal_error'));
});
