/**
 * Runs in `stepgate audit verify`: one stepgate process from audit.open to audit.close. A run that is
 * still going is not a warning; two runs whose events interleave (two processes writing one trail) are.
 * (A run killed with SIGKILL is in crash.test.ts, with the child process it needs.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { AuditStore } from '../../src/audit/store.js';
import { eventHash, SYSTEM_SESSION } from '../../src/audit/format.js';
import { createLogger } from '../../src/log.js';
import { cli, openDb, readEvents } from './helpers.js';

const quiet = createLogger({ write: () => {} });

function tempDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-runs-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Appends a correctly chained event (and its session_spans row), as a second writer would. */
function append(dataDir: string, session: number, kind: string, body: object): number {
  const db = openDb(dataDir);
  try {
    const last = db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string };
    const sseq = ((db.prepare('SELECT max(sseq) AS m FROM events WHERE session = ?').get(session) as { m: number | null }).m ?? 0) + 1;
    const e = { seq: last.seq + 1, session, sseq, time: Date.now(), kind, body: JSON.stringify(body) };
    db.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)').run(e.seq, e.session, e.sseq, e.time, e.kind, e.body, eventHash(last.hash, e));
    db.prepare('INSERT INTO session_spans (session, first_seq, last_seq) VALUES (?, ?, ?)').run(session, e.seq, e.seq);
    return e.seq;
  } finally {
    db.close();
  }
}

t.test('a run that is still going is reported as running, not as lost', async (t) => {
  const dataDir = tempDir(t);
  const store = await AuditStore.open({ dataDir, log: quiet });
  t.teardown(() => store.close());
  store.connectionStart({ connectionId: 'c1', user: 'alice', database: 'db', application: 'x', clientAddress: '127.0.0.1', tls: false, serverPid: 1 });
  await store.durable();
  const open = readEvents(dataDir, "kind = 'audit.open'")[0]!.data as { run: string; stepgate_pid: number; stepgate_start: string | null };
  t.equal(open.stepgate_pid, process.pid);
  t.type(open.stepgate_start, 'string', 'the process start time is recorded (Linux)');
  const live = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(live.code, 0, live.stdout);
  t.match(live.stdout, `runs:         1 (0 closed cleanly, 1 running: ${open.run} pid ${process.pid})`);
  t.match(live.stdout, 'OK: the audit trail is intact.');
  await store.close();
  const closed = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(closed.code, 0, closed.stdout);
  t.match(closed.stdout, 'runs:         1 (1 closed cleanly)');
  t.match(readEvents(dataDir, "kind = 'audit.close'")[0]!.data, { run: open.run });
});

t.test('events of an earlier run after a later run opened: the runs interleave (warning, exit 3)', async (t) => {
  const dataDir = tempDir(t);
  const store = await AuditStore.open({ dataDir, log: quiet });
  store.connectionStart({ connectionId: 'c1', user: 'alice', database: 'db', application: 'x', clientAddress: '127.0.0.1', tls: false, serverPid: 1 });
  await store.close();
  const runA = (readEvents(dataDir, "kind = 'audit.open'")[0]!.data as { run: string }).run;
  const session = readEvents(dataDir, "kind = 'connection.start'")[0]!.session;
  t.equal((await cli(['audit', 'verify', '--data', dataDir])).code, 0, 'clean before');

  // A second writer (bypassing the lock, as an older stepgate could) opens its run, then the first one's
  // session goes on writing.
  const openB = append(dataDir, SYSTEM_SESSION, 'audit.open', { format: 1, run: 'run-b', stepgate_pid: 2 ** 22 + 1, stepgate_start: null, host: os.hostname(), previous_run: runA, clean_shutdown: true, open_sessions: [] });
  const late = append(dataDir, session, 'connection.end', { duration_ms: 5, bytes_in: 1, bytes_out: 1, reason: 'late' });
  append(dataDir, SYSTEM_SESSION, 'audit.close', { events: late, run: 'run-b' });
  const r = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(r.code, 3, r.stdout);
  t.match(
    r.stdout,
    `\nWARNING: runs ${runA} and run-b interleave: event ${late} (connection.end, session ${session} #2, `,
    'names both runs and the event',
  );
  t.match(r.stdout, `belongs to session ${session} of run ${runA}, but was written after run run-b started (event ${openB}, `);
  t.match(r.stdout, 'two stepgate processes wrote to this trail at once');
  t.match(r.stdout, /\nINTACT WITH WARNINGS: /);
  t.notMatch(r.stdout, /FAILED/);
});

t.test('a run followed by another without audit.close in between is named with the next run', async (t) => {
  const dataDir = tempDir(t);
  const store = await AuditStore.open({ dataDir, log: quiet });
  await store.close();
  const runA = (readEvents(dataDir, "kind = 'audit.open'")[0]!.data as { run: string }).run;
  // Strip nothing: write a second open directly after A's close, then a third without B closing.
  append(dataDir, SYSTEM_SESSION, 'audit.open', { format: 1, run: 'run-b', stepgate_pid: 2 ** 22 + 2, host: os.hostname(), previous_run: runA, clean_shutdown: true, open_sessions: [] });
  const openC = append(dataDir, SYSTEM_SESSION, 'audit.open', { format: 1, run: 'run-c', stepgate_pid: 2 ** 22 + 3, host: os.hostname(), previous_run: 'run-b', clean_shutdown: false, open_sessions: [] });
  append(dataDir, SYSTEM_SESSION, 'audit.close', { events: openC, run: 'run-c' });
  const r = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(r.code, 3, r.stdout);
  t.match(r.stdout, `\nWARNING: run run-b (stepgate pid ${2 ** 22 + 2} on ${os.hostname()}, started `);
  t.match(r.stdout, `ended without audit.close before run run-c started (event ${openC}, `);
  t.match(r.stdout, 'runs:         3 (2 closed cleanly, 1 without audit.close)');
});
