/**
 * A statement whose reply never comes (the server's backend dies mid-statement, its socket closes with no
 * error) still gets an outcome in the audit trail before the session's end: 08006, "whether the statement
 * ran is not known". Real server: the backend running it is killed with SIGKILL.
 */
import t from 'tap';
import pg from 'pg';
import type { AuditStore } from '../../src/audit/store.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, ALLOW_ALL_RULES, startStepgate } from '../helpers/stepgate.js';
import { waitForEvent } from './helpers.js';

const db = await startPostgres(t);
const sg = await startStepgate(t, db, { rulesDir: ALLOW_ALL_RULES });

t.test('the backend dies under a running statement: its outcome says so, before connection.end', async (t) => {
  const c = new pg.Client(sg.pgConfig(ALICE));
  c.on('error', () => {});
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  const running = c.query("SELECT pg_sleep(30) AS slept, 'unanswered-marker' AS m").catch((e: Error) => e);
  // The backend running it, seen from a direct connection.
  let pid: number | undefined;
  while (pid === undefined) {
    const r = await db.query("SELECT pid FROM pg_stat_activity WHERE query LIKE '%unanswered-marker%' AND pid <> pg_backend_pid()");
    pid = r.rows[0]?.pid as number | undefined;
  }
  process.kill(pid, 'SIGKILL');
  t.ok((await running) instanceof Error, 'the client loses its connection');

  const store = sg.app.audit as AuditStore;
  const statement = await waitForEvent(store, sg.dataDir, (e) => e.kind === 'statement' && String(e.data.sql).includes('unanswered-marker'));
  const outcome = await waitForEvent(store, sg.dataDir, (e) => e.kind === 'outcome' && e.session === statement.session && e.data.statement === statement.sseq);
  t.equal(outcome.data.sqlstate, '08006');
  t.match(outcome.data.message, /closed before the server answered; whether the statement ran is not known/);
  const end = await waitForEvent(store, sg.dataDir, (e) => e.kind === 'connection.end' && e.session === statement.session);
  t.ok(end.seq > outcome.seq, 'recorded before the end of the session');
});
