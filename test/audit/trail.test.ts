/**
 * A session through stepgate with allowed, denied, approved and rejected statements: the events it leaves,
 * in order; the replay transcript; export; and the chain verifies.
 */
import crypto from 'node:crypto';
import t from 'tap';
import pg from 'pg';
import { canonical } from '../../src/audit/format.js';
import type { AuditStore } from '../../src/audit/store.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, type TestUser } from '../helpers/stepgate.js';
import { cli, normaliseReplay, readEvents, ScriptedBroker, waitForEvent, writeRules, type ParsedEvent } from './helpers.js';

const BOB: TestUser = { name: 'bob', password: 'bob-secret-pw', groups: ['dba'] };

t.test('a session leaves its events in order, replays and exports', async (t) => {
  const db = await startPostgres(t);
  await db.query('CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)');
  const broker = new ScriptedBroker((request) =>
    request.statements[0]!.command === 'TRUNCATE TABLE'
      ? { status: 'approved', approvers: [{ user: 'alice', credentialId: 'cred-alice-1' }], grant: false }
      : { status: 'rejected', by: 'bob', reason: 'not during business hours' },
  );
  const sg = await startStepgate(t, db, { users: [ALICE, BOB], rulesDir: writeRules(t), stepUp: broker });
  const store = sg.app.audit as AuditStore;

  const client = new pg.Client({ ...sg.pgConfig(), application_name: 'audit-test' });
  await client.connect();
  const r1 = await client.query('SELECT count(*)::int AS n FROM t');
  t.equal(r1.rows[0].n, 3);
  await t.rejects(client.query('DROP TABLE t'), { code: '42501', message: /denied by rule "deny-drop"/ });
  await client.query('TRUNCATE t');
  await t.rejects(client.query('DELETE FROM t'), { code: '42501', message: /rejected by bob/ });
  const r2 = await client.query('SELECT $1::int * 2 AS x', [21]);
  t.equal(r2.rows[0].x, 42);
  await t.rejects(client.query('SELECT 1/0'), { code: '22012' });
  await client.end();

  await waitForEvent(store, sg.dataDir, (e) => e.kind === 'connection.end');
  const events = readEvents(sg.dataDir, 'session <> 0');
  const session = events[0]!.session;
  t.ok(events.every((e) => e.session === session), 'one session');
  t.same(
    events.map((e) => e.sseq),
    events.map((_, i) => i + 1),
    'session sequence numbers count up from 1',
  );

  // The logical story, with outcomes folded into their statements wherever they were written.
  const story = logical(events);
  t.same(
    story.map((s) => s.line),
    [
      'connection.start alice postgres audit-test',
      'statement allow "SELECT count(*)::int AS n FROM t" → SELECT 1 (1 rows)',
      'statement deny:deny-drop "DROP TABLE t" → ERROR 42501 stepgate: statement denied by rule "deny-drop": Dropping tables is refused here.',
      'statement step-up:step-up-truncate "TRUNCATE t" → TRUNCATE TABLE',
      'challenge.created ch-1',
      'challenge.resolved approved alice/cred-alice-1',
      'statement step-up:step-up-unbounded "DELETE FROM t" → ERROR 42501 stepgate: statement rejected by bob: not during business hours',
      'challenge.created ch-2',
      'challenge.resolved rejected by bob: not during business hours',
      'statement allow "SELECT $1::int * 2 AS x" → SELECT 1 (1 rows)',
      'statement allow "SELECT 1/0" → ERROR 22012 division by zero',
      'connection.end client terminated the session',
    ],
  );
  const start = events[0]!.data;
  t.match(start, { user: 'alice', database: 'postgres', application: 'audit-test', client: '127.0.0.1', tls: false });
  t.type(start.server_pid, 'number');
  const truncate = events.find((e) => e.kind === 'statement' && e.data.sql === 'TRUNCATE t')!;
  t.match(truncate.data.statements, [{ command: 'TRUNCATE TABLE', classes: ['write'], tables: [{ name: 't', access: 'write' }] }]);
  t.match(truncate.data.decision, { action: 'step-up', rule: 'step-up-truncate', file: '10-audit.yaml', message: /Approve the TRUNCATE/ });
  const del = events.find((e) => e.kind === 'statement' && e.data.sql === 'DELETE FROM t')!;
  t.same(del.data.decision.approvers, { groups: ['dba'], count: 1 });
  t.ok(del.data.statements[0].flags.includes('no_where'));
  const param = events.find((e) => e.kind === 'statement' && e.data.sql.startsWith('SELECT $1'))!;
  t.notOk('params' in param.data, 'bind parameters are not recorded by default');
  const end = events[events.length - 1]!.data;
  t.type(end.duration_ms, 'number');
  t.ok(end.bytes_in > 0 && end.bytes_out > 0);

  // The sessions index.
  const listed = await cli(['audit', 'sessions', '--data', sg.dataDir, '--json']);
  t.equal(listed.code, 0);
  const sessions = JSON.parse(listed.stdout) as Record<string, unknown>[];
  t.equal(sessions.length, 1);
  t.match(sessions[0], { user: 'alice', database: 'postgres', application: 'audit-test', statements: 6, denied: 1, held: 2 });
  const id = sessions[0]!.id as string;

  // Replay: the transcript, times normalised.
  const replay = await cli(['audit', 'replay', id.slice(0, 8), '--instant', '--data', sg.dataDir]);
  t.equal(replay.code, 0, replay.stderr);
  t.equal(normaliseReplay(replay.stdout), GOLDEN_REPLAY);

  // A prefix that matches nothing, and --speed with --instant.
  t.equal((await cli(['audit', 'replay', 'ffffffff', '--instant', '--data', sg.dataDir])).code, 2);
  t.equal((await cli(['audit', 'replay', id, '--instant', '--speed', '2', '--data', sg.dataDir])).code, 2);
  // Real pauses, sped up: takes about (session length / 50).
  const fast = await cli(['audit', 'replay', id, '--speed', '50', '--data', sg.dataDir]);
  t.equal(normaliseReplay(fast.stdout), GOLDEN_REPLAY);

  // Export: JSON lines re-verify on their own; CSV has the columns.
  const jsonl = await cli(['audit', 'export', '--data', sg.dataDir, '--session', id]);
  t.equal(jsonl.code, 0);
  const records = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l));
  t.equal(records.length, events.length);
  for (const r of records) {
    const recomputed = crypto
      .createHash('sha256')
      .update(`${r.prev_hash}\n${canonical(r.seq, r.session_no, r.session_seq, r.time_ms, r.kind, JSON.stringify(r.data))}`)
      .digest('hex');
    t.equal(recomputed, r.hash, `export record ${r.seq} re-verifies`);
    t.equal(r.session, id);
    t.equal(r.user, 'alice');
  }
  const csv = await cli(['audit', 'export', '--format', 'csv', '--data', sg.dataDir, '--user', 'alice']);
  const lines = csv.stdout.trim().split('\n');
  t.match(lines[0], /^seq,time,session,session_seq,kind,user,database,client_address,application,sql,commands,classes,tables,action,rule,rule_file,/);
  t.equal(lines.length, events.length + 1);
  t.ok(lines.some((l) => l.includes(',DROP TABLE t,DROP TABLE,ddl,') && l.includes(',deny,deny-drop,10-audit.yaml,')), 'denied statement row');
  t.ok(lines.some((l) => /,challenge\.resolved,alice,.*,approved,alice:cred-alice-1,/.test(l)), 'approval row');
  t.equal((await cli(['audit', 'export', '--format', 'csv', '--data', sg.dataDir, '--user', 'nobody'])).stdout.trim().split('\n').length, 1, 'header only');

  // The chain verifies while stepgate runs, and after it stops (final checkpoint).
  const live = await cli(['audit', 'verify', '--data', sg.dataDir]);
  t.equal(live.code, 0, live.stdout);
  const dataDir = sg.dataDir;
  await sg.app.close();
  const after = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(after.code, 0, after.stdout);
  t.match(after.stdout, /OK: the audit trail is intact/);
  t.notMatch(after.stdout, /not sealed/, 'the shutdown checkpoint seals everything');
  const system = readEvents(dataDir, 'session = 0').map((e) => e.kind);
  t.same(system, ['audit.key', 'audit.open', 'audit.close']);
});

interface Step {
  line: string;
}

function logical(events: ParsedEvent[]): Step[] {
  const out: Step[] = [];
  const statements = new Map<number, { step: Step; outcomes: string[] }>();
  const outcomeText = (o: any): string => (o.sqlstate ? `ERROR ${o.sqlstate} ${o.message}` : `${o.tag}${o.rows !== undefined ? ` (${o.rows} rows)` : ''}`);
  for (const e of events) {
    const d = e.data;
    switch (e.kind) {
      case 'connection.start':
        out.push({ line: `connection.start ${d.user} ${d.database} ${d.application}` });
        break;
      case 'statement': {
        const decision = d.decision.action === 'allow' ? 'allow' : `${d.decision.action}:${d.decision.rule}`;
        const step = { line: `statement ${decision} "${d.sql}"` };
        statements.set(e.sseq, { step, outcomes: d.outcomes.map(outcomeText) });
        out.push(step);
        break;
      }
      case 'outcome':
        statements.get(d.statement)!.outcomes.push(outcomeText(d));
        break;
      case 'challenge.created':
        out.push({ line: `challenge.created ${d.challenge}` });
        break;
      case 'challenge.resolved':
        out.push({
          line:
            d.status === 'approved'
              ? `challenge.resolved approved ${d.approvers.map((a: any) => `${a.user}/${a.credential}`).join(',')}`
              : `challenge.resolved ${d.status} by ${d.by}: ${d.reason}`,
        });
        break;
      case 'connection.end':
        out.push({ line: `connection.end ${d.reason}` });
        break;
    }
  }
  for (const { step, outcomes } of statements.values()) if (outcomes.length) step.line += ` → ${outcomes.join('; ')}`;
  return out;
}

const GOLDEN_REPLAY = `-- stepgate audit replay of session ID
-- alice on database "postgres" from 127.0.0.1, application "audit-test", TLS off, server pid P
-- started ISO

[T] postgres=> SELECT count(*)::int AS n FROM t;
-- allowed by the default (10-audit.yaml)
(1 row)
-- D

[T] postgres=> DROP TABLE t;
-- DENIED by rule "deny-drop" (10-audit.yaml): Dropping tables is refused here.
ERROR:  stepgate: statement denied by rule "deny-drop": Dropping tables is refused here.
-- SQLSTATE 42501, after D

[T] postgres=> TRUNCATE t;
-- held for step-up by rule "step-up-truncate" (10-audit.yaml): Approve the TRUNCATE with your passkey.
-- needs approval by its author, within D
-- [T] waiting for approval (challenge ch-1)
-- [T] approved by alice with passkey cred-alice-1
TRUNCATE TABLE
-- D

[T] postgres=> DELETE FROM t;
-- held for step-up by rule "step-up-unbounded" (10-audit.yaml)
-- needs approval by 1 of group dba, within D
-- [T] waiting for approval (challenge ch-2)
-- [T] rejected by bob: not during business hours
ERROR:  stepgate: statement rejected by bob: not during business hours
-- SQLSTATE 42501, after D

[T] postgres=> SELECT $1::int * 2 AS x;
-- allowed by the default (10-audit.yaml)
(1 row)
-- D

[T] postgres=> SELECT 1/0;
-- allowed by the default (10-audit.yaml)
ERROR:  division by zero
-- SQLSTATE 22012, after D

-- [T] session ended: client terminated the session (after D; N in, N out)
`;
