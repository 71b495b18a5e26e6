/**
 * The store's bookkeeping without a proxy: outcomes folded into their statement or written on their own,
 * multi-statement messages, statements whose outcome comes after thousands of others, checkpoints every N
 * events, and the durability contract (durable() resolves only once the events are committed).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { AuditStore } from '../../src/audit/store.js';
import type { Decision } from '../../src/rules/types.js';
import type { StatementInfo } from '../../src/sql/types.js';
import { capturedLog, cli, openDb, readEvents } from './helpers.js';

const info = (command: string, classes: StatementInfo['classes'] = ['read']): StatementInfo =>
  Object.freeze({ sql: '', command, commands: [command], classes: Object.freeze(classes) as StatementInfo['classes'], tables: Object.freeze([]) as unknown as StatementInfo['tables'], columns: [], functions: Object.freeze([]) as unknown as string[], flags: Object.freeze([]) as unknown as StatementInfo['flags'], reasons: [], changesParsing: false });
const allow: Decision = { action: 'allow', rule: null, file: 'a.yaml', message: '', reason: 'default', grantMs: 0, grantScope: 'connection', timeoutMs: 0, statementIndex: 0 };
const ok = (tag: string) => ({ tag, sqlstate: null, message: null, skipped: false, durationMs: 0.5 });

async function open(t: { teardown(fn: () => unknown): void }, options: Partial<Parameters<typeof AuditStore.open>[0]> = {}) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-store-'));
  const { log, lines: logs, logged } = capturedLog();
  const store = await AuditStore.open({ dataDir, log, ...options });
  t.teardown(async () => {
    await store.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
  store.connectionStart({ connectionId: 'c', user: 'u', database: 'd', application: 'a', clientAddress: '::1', tls: true, serverPid: 7 });
  return { store, dataDir, logs, logged };
}

t.test('outcomes: folded in, separate, several per message, and long after', async (t) => {
  const { store, dataDir } = await open(t);
  const multi = store.statement({ connectionId: 'c', sql: 'SELECT 1; SELECT 2; SELECT 3', statements: [info('SELECT'), info('SELECT'), info('SELECT')], decision: allow, params: null });
  store.outcome(multi, 0, ok('SELECT 1'));
  store.outcome(multi, 1, { tag: null, sqlstate: '22012', message: 'division by zero', skipped: false, durationMs: 0.1 });
  store.outcome(multi, 2, { tag: null, sqlstate: null, message: null, skipped: true, durationMs: 0 });
  const slow = store.statement({ connectionId: 'c', sql: 'SELECT pg_sleep(1)', statements: [info('SELECT')], decision: allow, params: null });
  store.flush();
  // 20,000 statements pass (more than the store keeps in its ring) before the slow one answers.
  for (let i = 0; i < 20_000; i++) store.outcome(store.statement({ connectionId: 'c', sql: `SELECT ${i}`, statements: [info('SELECT')], decision: allow, params: null }), 0, ok('SELECT 1'));
  store.outcome(slow, 0, ok('SELECT 1'));
  store.outcome(slow, 0, ok('SELECT 1')); // a second report for a finished statement is ignored
  await store.durable();

  const events = readEvents(dataDir, 'session = 1');
  const m = events.find((e) => e.data.sql === 'SELECT 1; SELECT 2; SELECT 3')!;
  t.same(m.data.outcomes, [
    { index: 0, tag: 'SELECT 1', rows: 1, duration_ms: 0.5 },
    { index: 1, sqlstate: '22012', message: 'division by zero', duration_ms: 0.1 },
    { index: 2, skipped: true, duration_ms: 0 },
  ]);
  t.equal(m.data.statements.length, 3);
  const s = events.find((e) => e.data.sql === 'SELECT pg_sleep(1)')!;
  t.same(s.data.outcomes, [], 'written before its outcome');
  const late = events.filter((e) => e.kind === 'outcome');
  t.equal(late.length, 1);
  t.match(late[0]!.data, { statement: s.sseq, index: 0, tag: 'SELECT 1', rows: 1 });
  t.equal(late[0]!.seq, events[events.length - 1]!.seq, 'after everything before it');
  t.equal(events.filter((e) => e.kind === 'statement').length, 20_002);
});

t.test('held statements: challenge events find their statement after a long hold', async (t) => {
  const { store, dataDir } = await open(t);
  const held = store.statement({ connectionId: 'c', sql: 'TRUNCATE t', statements: [info('TRUNCATE TABLE', ['write'])], decision: { ...allow, action: 'step-up', rule: 'r', timeoutMs: 1000 }, params: null });
  store.challengeCreated(held, 'ch-1');
  await store.durable();
  for (let i = 0; i < 20_000; i++) store.statement({ connectionId: 'c', sql: `SELECT ${i}`, statements: [info('SELECT')], decision: allow, params: null });
  store.challengeResolved(held, 'ch-1', { status: 'approved', approvers: [{ user: 'boss', credentialId: 'cred-9' }], grant: true });
  store.outcome(held, 0, ok('TRUNCATE TABLE'));
  await store.durable();
  const events = readEvents(dataDir, "session = 1 AND kind <> 'statement'");
  t.same(
    events.map((e) => e.kind),
    ['connection.start', 'challenge.created', 'challenge.resolved', 'outcome'],
  );
  const statement = readEvents(dataDir, "kind = 'statement' AND body LIKE '%TRUNCATE%'")[0]!;
  for (const e of events.slice(1)) t.equal(e.data.statement, statement.sseq);
  t.same(events[2]!.data, { statement: statement.sseq, challenge: 'ch-1', status: 'approved', approvers: [{ user: 'boss', credential: 'cred-9' }], grant: true });
  t.match(statement.data.decision, { action: 'step-up', rule: 'r', timeout_ms: 1000 });
});

t.test('durable() resolves only after the events are committed; checkpoints every N events', async (t) => {
  const { store, dataDir, logs, logged } = await open(t, { checkpointEvents: 100, flushMs: 10_000 });
  for (let i = 0; i < 250; i++) store.statement({ connectionId: 'c', sql: `SELECT ${i}`, statements: [info('SELECT')], decision: allow, params: null });
  const reader = openDb(dataDir);
  t.teardown(() => reader.close());
  const count = (): number => (reader.prepare("SELECT count(*) AS n FROM events WHERE kind = 'statement'").get() as { n: number }).n;
  t.equal(count(), 0, 'nothing written yet (flushMs is long)');
  await store.durable();
  t.equal(count(), 250, 'all of it once durable() resolved');
  // The writer signs after it acknowledged the batch; the checkpoint is logged once it is stored.
  await logged('audit.checkpoint');
  const checkpoints = reader.prepare('SELECT seq, reason FROM checkpoints ORDER BY id').all() as { seq: number; reason: string }[];
  t.ok(checkpoints.length >= 1 && checkpoints.every((c) => c.reason === 'events'), 'checkpoints every 100 events');
  t.ok(logs.some((l) => l.event === 'audit.checkpoint' && typeof l.jws === 'string'), 'each checkpoint goes to the log too');
  const manual = await store.checkpoint();
  t.match(manual, { seq: Number, hash: /^[0-9a-f]{64}$/, jws: /^ey/ });
  t.equal((await cli(['audit', 'verify', '--data', dataDir])).code, 0);
});

t.test('bind parameters are dropped unless configured', async (t) => {
  const off = await open(t);
  off.store.statement({ connectionId: 'c', sql: 'SELECT $1', statements: [info('SELECT')], decision: allow, params: ['personal data'] });
  await off.store.durable();
  t.notOk(fs.readFileSync(path.join(off.dataDir, 'audit.db-wal')).includes('personal data'));
  const on = await open(t, { bindParameters: true });
  on.store.statement({ connectionId: 'c', sql: 'SELECT $1', statements: [info('SELECT')], decision: allow, params: ['personal data', null] });
  await on.store.durable();
  t.same(readEvents(on.dataDir, "kind = 'statement'")[0]!.data.params, ['personal data', null]);
});
