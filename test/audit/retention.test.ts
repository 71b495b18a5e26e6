/**
 * Retention prunes old events at signed checkpoints; what remains verifies from the anchor. Sessions and
 * export filters by user, time and session.
 */
import t from 'tap';
import pg from 'pg';
import type { AuditStore } from '../../src/audit/store.js';
import { loadConfig, ConfigError } from '../../src/config.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate, type TestUser } from '../helpers/stepgate.js';
import { clockPast, cli, copyDataDir, readEvents, tamper, waitForEvent } from './helpers.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const BOB: TestUser = { name: 'bob', password: 'bob-secret-pw', groups: ['dba'] };

async function session(sg: Awaited<ReturnType<typeof startStepgate>>, user: TestUser, sqls: string[]): Promise<void> {
  const ends = (): number => readEvents(sg.dataDir, "kind = 'connection.end'").length;
  const before = ends();
  const client = new pg.Client({ ...sg.pgConfig(user), application_name: `app-${user.name}` });
  await client.connect();
  for (const sql of sqls) await client.query(sql);
  await client.end();
  const store = sg.app.audit as AuditStore;
  await waitForEvent(store, sg.dataDir, () => ends() > before);
}

t.test('retention prunes at a signed checkpoint and the rest verifies', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { users: [ALICE, BOB], configYaml: 'audit:\n  retention: 1h\n' });
  const store = sg.app.audit as AuditStore;
  await session(sg, ALICE, ['SELECT 1', 'SELECT 2', 'SELECT 3']);
  const before = readEvents(sg.dataDir);
  await clockPast(Math.max(...before.map((e) => e.time)));
  await session(sg, BOB, ['SELECT 4']);
  const bobStart = readEvents(sg.dataDir, "kind = 'connection.start'").find((e) => e.data.user === 'bob')!.time;

  // Retention as of an hour after bob connected: everything before him is older than the hour, he is not.
  const result = await store.prune(bobStart + 3_600_000, 3);
  t.ok(result.pruned >= before.length - 1, `pruned ${result.pruned} events`);
  const remaining = readEvents(sg.dataDir);
  t.notOk(
    remaining.some((e) => e.kind === 'statement' && e.data.sql === 'SELECT 1'),
    "alice's old statements are gone",
  );
  t.ok(remaining.some((e) => e.kind === 'statement' && e.data.sql === 'SELECT 4'), "bob's recent one stays");
  const pruned = remaining.filter((e) => e.kind === 'audit.pruned');
  t.ok(pruned.length >= 2, 'pruned in chunks, each recorded');
  t.match(pruned[pruned.length - 1]!.data, { retention_ms: 3_600_000, through_seq: Number, checkpoint: Number });

  const v = await cli(['audit', 'verify', '--data', sg.dataDir]);
  t.equal(v.code, 0, v.stdout);
  t.match(v.stdout, /retention: {4}events up to \d+ were pruned; the chain continues from the hash signed by checkpoint \d+/);
  const sessions = JSON.parse((await cli(['audit', 'sessions', '--data', sg.dataDir, '--json'])).stdout) as { user: string }[];
  t.same(
    sessions.map((s) => s.user),
    ['bob'],
    'fully pruned sessions leave the index',
  );

  // Pruning that retention did not do is still caught.
  const copy = copyDataDir(t, sg.dataDir);
  const first = remaining[0]!;
  tamper(copy, (d) => d.prepare('DELETE FROM events WHERE seq <= ?').run(first.seq + 1));
  const broken = await cli(['audit', 'verify', '--data', copy]);
  t.equal(broken.code, 1);
  t.match(broken.stdout, `FAILED: events ${first.seq} to ${first.seq + 1} are missing`);
  const copy2 = copyDataDir(t, sg.dataDir);
  tamper(copy2, (d) => d.prepare("DELETE FROM meta WHERE key = 'anchor'").run());
  const noAnchor = await cli(['audit', 'verify', '--data', copy2]);
  t.equal(noAnchor.code, 1);
  t.match(noAnchor.stdout, /FAILED: events 1 to \d+ are missing/);

  // Nothing old enough: nothing pruned.
  t.same(await store.prune(Date.now() - 60_000), { pruned: 0, throughSeq: null });
  const dataDir = sg.dataDir;
  await sg.app.close();
  t.equal((await cli(['audit', 'verify', '--data', dataDir])).code, 0);
  fs.rmSync(dataDir, { recursive: true, force: true });
});

t.test('sessions and export filter by user, time and session', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { users: [ALICE, BOB] });
  await session(sg, ALICE, ['SELECT 1 AS a1', 'SELECT 2 AS a2']);
  // A millisecond after alice's first session ended and before bob's starts (the filters include their bounds).
  const aliceEnd = readEvents(sg.dataDir, "kind = 'connection.end'")[0]!.time;
  const between = new Date(aliceEnd + 1).toISOString();
  await clockPast(aliceEnd + 1);
  await session(sg, BOB, ['SELECT 3 AS b1']);
  await session(sg, ALICE, ['SELECT 4 AS a3']);
  const data = ['--data', sg.dataDir];

  const all = JSON.parse((await cli(['audit', 'sessions', ...data, '--json'])).stdout) as { id: string; user: string; statements: number; application: string; end: string }[];
  t.same(
    all.map((s) => [s.user, s.statements, s.application]),
    [
      ['alice', 2, 'app-alice'],
      ['bob', 1, 'app-bob'],
      ['alice', 1, 'app-alice'],
    ],
  );
  const alice = JSON.parse((await cli(['audit', 'sessions', ...data, '--json', '--user', 'alice'])).stdout) as unknown[];
  t.equal(alice.length, 2);
  const since = JSON.parse((await cli(['audit', 'sessions', ...data, '--json', '--since', between])).stdout) as { user: string }[];
  t.same(
    since.map((s) => s.user),
    ['bob', 'alice'],
  );
  const until = JSON.parse((await cli(['audit', 'sessions', ...data, '--json', '--until', between])).stdout) as { user: string }[];
  t.same(
    until.map((s) => s.user),
    ['alice'],
  );
  const recent = JSON.parse((await cli(['audit', 'sessions', ...data, '--json', '--since', '1h'])).stdout) as unknown[];
  t.equal(recent.length, 3, 'relative times');
  const table = await cli(['audit', 'sessions', ...data, '--user', 'bob']);
  t.match(table.stdout, /^SESSION +USER +DATABASE +CLIENT +APPLICATION +START \(UTC\) +END \(UTC\) +STATEMENTS +DENIED +HELD\n[0-9a-f]{8} +bob +postgres +127\.0\.0\.1 +app-bob +\d{4}-/);

  const sqlsOf = (out: string): string[] =>
    out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { kind: string; data: { sql?: string } })
      .filter((r) => r.kind === 'statement')
      .map((r) => r.data.sql!);
  t.same(sqlsOf((await cli(['audit', 'export', ...data])).stdout), ['SELECT 1 AS a1', 'SELECT 2 AS a2', 'SELECT 3 AS b1', 'SELECT 4 AS a3']);
  t.same(sqlsOf((await cli(['audit', 'export', ...data, '--user', 'alice'])).stdout), ['SELECT 1 AS a1', 'SELECT 2 AS a2', 'SELECT 4 AS a3']);
  t.same(sqlsOf((await cli(['audit', 'export', ...data, '--since', between])).stdout), ['SELECT 3 AS b1', 'SELECT 4 AS a3']);
  t.same(sqlsOf((await cli(['audit', 'export', ...data, '--until', between])).stdout), ['SELECT 1 AS a1', 'SELECT 2 AS a2']);
  t.same(sqlsOf((await cli(['audit', 'export', ...data, '--session', all[1]!.id.slice(0, 6)])).stdout), ['SELECT 3 AS b1']);
  const userOnly = (await cli(['audit', 'export', ...data, '--user', 'bob'])).stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string });
  t.notOk(userOnly.some((r) => r.kind.startsWith('audit.')), "a user's export leaves out the trail's own events");
  // (An outcome is its own event when the batch was handed over between the statement and its answer.)
  const csv = (await cli(['audit', 'export', ...data, '--format', 'csv', '--since', between, '--user', 'alice'])).stdout
    .trim()
    .split('\n')
    .filter((l) => !l.includes(',outcome,'));
  t.equal(csv.length, 1 + 3, "header, then start, statement and end of alice's second session");
  t.match(csv[2], /,statement,alice,postgres,127\.0\.0\.1,app-alice,SELECT 4 AS a3,SELECT,read,,allow,,00-allow\.yaml,,/);
  t.equal((await cli(['audit', 'export', ...data, '--format', 'xml'])).code, 2);
});

t.test('the audit: config section', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'stepgate.yaml');
  const load = (audit: string): ReturnType<typeof loadConfig> => {
    fs.writeFileSync(file, `upstream: postgres://u:p@localhost/db\naudit:\n${audit}`);
    return loadConfig({ config: file });
  };
  t.same(load('  on_failure: close\n').audit, { onFailure: 'close', retentionMs: null, bindParameters: false, checkpointEvents: 10_000, checkpointMs: 300_000 });
  t.same(load('  on_failure: allow_reads\n  retention: 90d\n  bind_parameters: true\n  checkpoint_every: 500\n').audit, {
    onFailure: 'allow_reads',
    retentionMs: 90 * 86_400_000,
    bindParameters: true,
    checkpointEvents: 500,
    checkpointMs: 300_000,
  });
  t.match(load('  checkpoint_every: {events: 100, time: 1m}\n').audit, { checkpointEvents: 100, checkpointMs: 60_000 });
  t.match(load('  checkpoint_every: 30s\n').audit, { checkpointEvents: 10_000, checkpointMs: 30_000 });
  const problems = (audit: string): string[] => {
    try {
      load(audit);
      return [];
    } catch (err) {
      return (err as ConfigError).problems;
    }
  };
  t.same(problems('  on_failure: open\n'), [`${file}:3:15: audit.on_failure must be close or allow_reads, not "open"`]);
  t.same(problems('  on_failure: close\n  retention: forever and ever\n'), [`${file}:4:14: audit.retention: "forever and ever" is not a duration (for example 90d, 12h; or none to keep everything)`]);
  t.same(problems('  bind_params: true\n'), [`${file}:3:3: unknown key audit.bind_params: did you mean "bind_parameters"?`]);
  t.same(problems('  bind_parameters: yes please\n'), [`${file}:3:20: audit.bind_parameters must be true or false`]);
  t.match(problems('  checkpoint_every: -1\n')[0], /audit\.checkpoint_every: -1 must be a number of events/);
  t.match(problems('  - retention\n')[0], /"audit" must be a mapping/);
});
