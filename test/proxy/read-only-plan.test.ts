/**
 * The read-only enforcement planner (src/proxy/read-only.ts) on its own: for each transaction state and
 * message, which statements stepgate sends first, how each statement will run, and the state after.
 * Statements are classified by the real classifier (no server). The end-to-end behaviour against a real
 * server is in read-only.test.ts.
 */
import t from 'tap';
import { classify, initParser } from '../../src/sql/classify.js';
import type { StatementInfo } from '../../src/sql/types.js';
import {
  Injection,
  Mode,
  mayRunUserCode,
  needsReadWrite,
  planExtended,
  planQuery,
  TransactionModel,
  type BlockState,
  type PlanContext,
  type TransactionState,
} from '../../src/proxy/read-only.js';

await initParser();

const stmts = (sql: string): StatementInfo[] => classify(sql, { standardConformingStrings: true }).statements;
const one = (sql: string): StatementInfo => stmts(sql)[0]!;
const IDLE: TransactionState = { kind: 'idle' };
const TRUSTED: PlanContext = { defaultReadOnly: true, clientDefaultReadOnly: false };
const UNTRUSTED: PlanContext = { defaultReadOnly: false, clientDefaultReadOnly: false };
const block = (over: Partial<BlockState> = {}): BlockState => ({
  kind: 'block',
  readOnly: false,
  clientReadOnly: false,
  snapshot: true,
  region: false,
  failed: false,
  ...over,
});

t.test('what needs read-write mode', async (t) => {
  for (const sql of ['SELECT * FROM t', 'SELECT 1', 'SHOW work_mem', 'SET work_mem = 1', 'BEGIN', 'COPY t TO STDOUT', 'EXPLAIN SELECT 1', 'DECLARE c CURSOR FOR SELECT 1', 'LISTEN x']) {
    t.equal(needsReadWrite(one(sql)), false, sql);
  }
  for (const sql of ['INSERT INTO t VALUES (1)', 'SELECT * FROM t FOR UPDATE', 'SET CONSTRAINTS ALL IMMEDIATE', 'VACUUM t', 'CREATE TABLE x (a int)', 'SELECT nextval(\'s\')', 'DO $$BEGIN END$$', 'CALL p()', 'DISCARD ALL', 'NOTIFY x']) {
    t.equal(needsReadWrite(one(sql)), true, sql);
  }
  for (const sql of ['BEGIN', 'COMMIT', 'SET work_mem = 1', 'SELECT 1', 'SHOW work_mem']) t.equal(mayRunUserCode(one(sql)), false, sql);
  for (const sql of ['SELECT * FROM t', 'SELECT now()', 'SET default_transaction_read_only = off', "SELECT set_config('default_transaction_read_only', 'off', false)", 'FETCH c']) {
    t.equal(mayRunUserCode(one(sql)), true, sql);
  }
});

t.test('autocommit', async (t) => {
  let p = planQuery(IDLE, stmts('SELECT * FROM t'), TRUSTED);
  t.same(p.before, [], 'a read relies on the session default (no cost)');
  t.same(p.modes, [Mode.ReadOnly]);
  t.same(p.after_state, IDLE);

  p = planQuery(IDLE, stmts('SELECT * FROM t'), UNTRUSTED);
  t.same(p.before, [Injection.ReadOnly], 'the default may have changed (a message in flight, a report): the transaction is made read-only');

  p = planQuery(IDLE, stmts('SELECT 1'), UNTRUSTED);
  t.same(p.before, [], 'no user code, no guard');

  p = planQuery(IDLE, stmts('UPDATE t SET a = 1 WHERE id = 1'), TRUSTED);
  t.same(p.before, [Injection.ReadWrite], 'a write turns read-only off for its own transaction');
  t.same(p.modes, [Mode.ReadWrite]);

  p = planQuery(IDLE, stmts('VACUUM t'), TRUSTED);
  t.same([p.before, p.after], [[Injection.DefaultOff], [Injection.DefaultOn]], 'own transactions: the default is off around them');

  p = planQuery(IDLE, stmts('INSERT INTO t VALUES (1); SELECT * FROM v'), TRUSTED);
  t.same(p.modes, [Mode.ReadWrite, Mode.ReadWrite], 'a read rides with the write of its own message');
  t.same(p.unenforced, []);
});

t.test('multi-statement messages with transaction control', async (t) => {
  let p = planQuery(IDLE, stmts('BEGIN; UPDATE t SET a = 1 WHERE id = 1; COMMIT'), TRUSTED);
  t.same(p.before, [Injection.ReadWrite]);
  t.same(p.after_state, IDLE);

  p = planQuery(IDLE, stmts('BEGIN; SELECT * FROM t'), TRUSTED);
  t.same(p.modes, [Mode.ReadOnly, Mode.ReadOnly], 'a block opened by a read-only text starts read-only');
  t.match(p.after_state, { kind: 'block', readOnly: true, snapshot: true });

  p = planQuery(IDLE, stmts('BEGIN; SET LOCAL work_mem = 1'), TRUSTED);
  t.match(p.after_state, { kind: 'block', snapshot: false }, 'no snapshot yet: it can still be made read-write');

  p = planQuery(IDLE, stmts('BEGIN READ WRITE; SELECT * FROM v'), TRUSTED);
  t.same(p.unenforced, [1], 'the client turned read-only off: the read runs read-write and is not a read to stepgate');

  p = planQuery(IDLE, stmts('SELECT * FROM v; COMMIT; SELECT * FROM w'), TRUSTED);
  t.same(p.unenforced, [2], 'after a transaction end in the text, a view before it may have changed the default');
  p = planQuery(IDLE, stmts('SELECT 1; COMMIT; SELECT * FROM w'), TRUSTED);
  t.same(p.unenforced, [], 'nothing before the COMMIT can run user code');
  p = planQuery(IDLE, stmts("SET default_transaction_read_only = off; COMMIT; SELECT * FROM w"), TRUSTED);
  t.same(p.unenforced, [2]);
});

t.test('transaction blocks', async (t) => {
  const fresh = block({ readOnly: true, snapshot: false });
  let p = planQuery(fresh, stmts('UPDATE t SET a = 1 WHERE id = 1'), TRUSTED);
  t.same(p.before, [Injection.ReadWrite], 'made read-write at its first snapshot');
  t.match(p.after_state, { readOnly: false, snapshot: true, region: false });

  p = planQuery(fresh, stmts('SELECT * FROM t'), TRUSTED);
  t.same(p.before, [Injection.ReadWrite, Injection.OpenRegion], 'a read first: read-write block, read in a region');
  t.same(p.modes, [Mode.ReadOnly]);
  t.match(p.after_state, { readOnly: false, region: true });

  p = planQuery(block({ region: true }), stmts('SELECT * FROM t'), TRUSTED);
  t.same(p.before, [], 'the region stays open for the next read');
  p = planQuery(block({ region: true }), stmts('UPDATE t SET a = 1 WHERE id = 1'), TRUSTED);
  t.same(p.before, [Injection.CloseRegion], 'closed before a write');
  p = planQuery(block({ region: true }), stmts('COMMIT'), TRUSTED);
  t.same(p.before, [], 'COMMIT needs no particular place');
  t.same(p.after_state, IDLE);
  p = planQuery(block({ region: true }), stmts('SAVEPOINT a'), TRUSTED);
  t.same(p.before, [Injection.CloseRegion], "a client savepoint never nests in stepgate's region");
  p = planQuery(block({ region: true }), stmts('ROLLBACK TO SAVEPOINT a'), TRUSTED);
  t.match(p.after_state, { region: false }, 'rolling back to a client savepoint ends the region');
  p = planQuery(block({ region: true }), stmts('SET TRANSACTION READ ONLY'), TRUSTED);
  t.same(p.before, [Injection.CloseRegion], 'mode changes apply to the top level');
  t.match(p.after_state, { readOnly: true, clientReadOnly: true });

  p = planQuery(block({ readOnly: true, clientReadOnly: true }), stmts('SELECT * FROM t'), TRUSTED);
  t.same(p.before, [], 'a read-only block the client asked for needs nothing');
  p = planQuery(block({ readOnly: true, clientReadOnly: true, snapshot: false }), stmts('UPDATE t SET a = 1 WHERE id = 1'), TRUSTED);
  t.same(p.before, [], "and its writes fail as they would directly");

  p = planQuery(block({ readOnly: true, snapshot: true }), stmts('UPDATE t SET a = 1 WHERE id = 1'), TRUSTED);
  t.same(p.doomed, [0], 'a read-only block that has read cannot become read-write');

  p = planQuery(block({ failed: true, region: false }), stmts('SELECT * FROM t'), TRUSTED);
  t.same([p.before, p.unenforced], [[], []], 'an aborted block fails everything anyway');

  p = planQuery(block(), stmts('SAVEPOINT a; SELECT * FROM v'), TRUSTED);
  t.same(p.unenforced, [1], 'a savepoint in the same text: the read cannot have a region');
});

t.test('extended protocol', async (t) => {
  const select = one('SELECT * FROM t');
  const update = one('UPDATE t SET a = 1 WHERE id = 1');
  let p = planExtended(IDLE, { kind: 'parse', statement: select, expectWrite: false }, TRUSTED);
  t.same(p.before, []);
  t.match(p.after_state, { kind: 'implicit', readOnly: true, snapshot: true });
  p = planExtended(IDLE, { kind: 'parse', statement: update, expectWrite: false }, TRUSTED);
  t.same(p.before, [Injection.ReadWrite], 'chosen before the first snapshot (the Parse takes it)');
  p = planExtended(IDLE, { kind: 'parse', statement: select, expectWrite: true }, TRUSTED);
  t.same(p.before, [Injection.ReadWrite], 'a write later in the batch');

  const ro: TransactionState = { kind: 'implicit', readOnly: true, snapshot: true, wrote: false };
  p = planExtended(ro, { kind: 'run', statement: update, expectWrite: true, laterWrite: null }, TRUSTED);
  t.same(p.doomed, [0], 'too late for read-write');
  const rw: TransactionState = { kind: 'implicit', readOnly: false, snapshot: true, wrote: true };
  p = planExtended(rw, { kind: 'run', statement: select, expectWrite: false, laterWrite: false }, TRUSTED);
  t.same(p.before, [Injection.ReadOnly], 'after the last write of the batch, the rest is read-only');
  p = planExtended(rw, { kind: 'run', statement: select, expectWrite: false, laterWrite: null }, TRUSTED);
  t.same(p.before, [], 'the Sync has not arrived: the read rides with the writes');

  p = planExtended(block({ readOnly: true, snapshot: false }), { kind: 'parse', statement: select, expectWrite: false }, TRUSTED);
  t.same(p.before, [Injection.ReadWrite], 'a block is made read-write before its first snapshot');
  p = planExtended(block(), { kind: 'run', statement: select, expectWrite: false, laterWrite: null }, TRUSTED);
  t.same(p.before, [Injection.OpenRegion]);
  p = planExtended(block({ region: true }), { kind: 'run', statement: update, expectWrite: false, laterWrite: null }, TRUSTED);
  t.same(p.before, [Injection.CloseRegion]);
  p = planExtended(block(), { kind: 'run', statement: null, expectWrite: false, laterWrite: null }, TRUSTED);
  t.same(p.modes, [Mode.ReadWrite], 'an unknown statement runs read-write (it is judged as unknown)');

  p = planExtended(IDLE, { kind: 'parse', statement: one('VACUUM t'), expectWrite: false }, TRUSTED);
  t.same([p.before, p.afterSync], [[Injection.DefaultOff], [Injection.DefaultOn]]);
  p = planExtended(rw, { kind: 'sync' }, TRUSTED);
  t.same(p.after_state, IDLE);
});

t.test('the model follows the server at ReadyForQuery', async (t) => {
  const model = new TransactionModel(false);
  model.serverDefaultReadOnly = true;
  t.same(model.context(false), { defaultReadOnly: false, clientDefaultReadOnly: false }, 'a client message in flight: the default is not trusted');
  model.state = block({ region: true });
  model.onReadyForQuery(0x45, false);
  t.match(model.state, { failed: false }, 'not the last message: no correction');
  model.onReadyForQuery(0x45, true);
  t.match(model.state, { kind: 'block', failed: true });
  model.onReadyForQuery(0x54, true);
  t.match(model.state, { kind: 'block', failed: false });
  model.onReadyForQuery(0x49, true);
  t.same(model.state, IDLE);
  model.onReadyForQuery(0x54, true);
  t.match(model.state, { kind: 'block', readOnly: false, region: false }, 'a block stepgate did not see begin is taken as read-write (reads get regions)');
});
