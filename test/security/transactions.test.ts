/**
 * Attacks through transaction control, and on the read-only enforcement itself.
 *
 * When reads run in PostgreSQL's read-only mode, the attacker's next move is to turn read-write back on with
 * statements that are transaction control or session settings (allowed under reads-only rules): BEGIN READ
 * WRITE, SET TRANSACTION, SET SESSION CHARACTERISTICS, SET/RESET default_transaction_read_only, RESET ALL,
 * a set_config hidden in a STABLE function, ROLLBACK TO SAVEPOINT (which undoes a SET LOCAL made after the
 * savepoint), COMMIT in the middle of a multi-statement Query or pipeline (the rest runs in a new implicit
 * transaction), COMMIT/ROLLBACK AND CHAIN; each followed by a hidden write (a view that calls a volatile
 * function). The direct proof of these runs against a server where read-only mode is switched on the naive
 * way (the session default, a session SET, or SET LOCAL inside the transaction) and shows that the attack
 * turns it off. PREPARE TRANSACTION keeps a transaction (its locks, its hidden write) past the session, and
 * read-only mode allows it. WITH HOLD cursors run their query at COMMIT.
 *
 * Not possible: turning transaction_read_only off from inside a read (set_config in a SELECT, or a function's
 * SET clause): PostgreSQL refuses once the transaction has taken a snapshot ("transaction read-write mode must
 * be set before any query"); a persistent change needs default_transaction_read_only, which is attacked below.
 *
 * Stopped: every attack. PREPARE TRANSACTION is `admin`; reads run in read-only mode, which the client's own
 * statements (SET, RESET, DISCARD, BEGIN READ WRITE ...) and functions cannot turn off for stepgate's reads.
 */
import t from 'tap';
import { attack, m, sqlAttack, startLab, stepsAttack, type Conn, type Lab, type Probe } from './harness.js';


const lab: Lab = await startLab(t, {
  kind: 'transactions',
  postgres: { settings: { max_prepared_transactions: '5' } },
  setup: `
CREATE TABLE t_locked (id int);
INSERT INTO t_locked VALUES (1);
CREATE FUNCTION rw_on() RETURNS text LANGUAGE sql STABLE AS $$ SELECT set_config('default_transaction_read_only', 'off', false) $$;
CREATE PROCEDURE p_evil() LANGUAGE plpgsql AS $$ BEGIN PERFORM evil('procedure'); END $$;
`,
});

/** The default_transaction_read_only=on a naive enforcement would set on the session. */
const READ_ONLY_SESSION = { default_transaction_read_only: 'on' };

// ───────────────────────────── sanity ─────────────────────────────

sqlAttack(lab, 'sanity: DO block', `DO $$ BEGIN PERFORM evil('DO block'); END $$`);
sqlAttack(lab, 'sanity: CALL of a procedure', 'CALL p_evil()');

// ───────────────────────────── PREPARE TRANSACTION ─────────────────────────────

const prepared: Probe = async (l) =>
  (await l.admin.query('SELECT (SELECT count(*) FROM pwned)::int AS pwned, (SELECT count(*) FROM pg_prepared_xacts)::int AS prepared')).rows[0];
async function restorePrepared(l: Lab): Promise<void> {
  for (const row of (await l.admin.query('SELECT gid FROM pg_prepared_xacts')).rows) {
    await l.admin.query(`ROLLBACK PREPARED '${(row.gid as string).replace(/'/g, "''")}'`);
  }
  await l.admin.query('TRUNCATE pwned');
}
stepsAttack(lab, 'PREPARE TRANSACTION of a plain read: its locks outlive the session', ['BEGIN', 'SELECT * FROM t_locked', `PREPARE TRANSACTION 'sg_read_locks'`], {
  probe: prepared,
  restore: restorePrepared,
});
stepsAttack(
  lab,
  'PREPARE TRANSACTION of SELECT ... FOR UPDATE: row locks outlive the session',
  ['BEGIN', 'SELECT * FROM t_locked FOR UPDATE', `PREPARE TRANSACTION 'sg_row_locks'`],
  { probe: prepared, restore: restorePrepared },
);
stepsAttack(lab, 'PREPARE TRANSACTION of a hidden write', ['BEGIN', 'SELECT * FROM v_evil', `PREPARE TRANSACTION 'sg_hidden_write'`], {
  probe: prepared,
  restore: restorePrepared,
});

// ───────────────────────────── transaction boundaries ─────────────────────────────

stepsAttack(lab, 'COMMIT AND CHAIN, then a hidden write', ['BEGIN', 'SELECT 1', 'COMMIT AND CHAIN', 'SELECT * FROM v_evil', 'COMMIT']);
stepsAttack(lab, 'ROLLBACK AND CHAIN, then a hidden write', ['BEGIN', 'SELECT 1', 'ROLLBACK AND CHAIN', 'SELECT * FROM v_evil', 'COMMIT']);
sqlAttack(lab, 'multi-statement Query: hidden write; COMMIT; SELECT', 'SELECT * FROM v_evil; COMMIT; SELECT 1');
sqlAttack(lab, 'multi-statement Query: SELECT; COMMIT; hidden write (a new implicit transaction)', 'SELECT 1; COMMIT; SELECT * FROM v_evil');
sqlAttack(lab, 'multi-statement Query: BEGIN; SELECT; COMMIT; hidden write', 'BEGIN; SELECT 1; COMMIT; SELECT * FROM v_evil');
attack(lab, {
  name: 'pipeline: SELECT, COMMIT, hidden write, one Sync',
  run: (c) =>
    c.send(
      m.parse('', 'SELECT 1'), m.bind('', ''), m.execute(''),
      m.parse('', 'COMMIT'), m.bind('', ''), m.execute(''),
      m.parse('', 'SELECT * FROM v_evil'), m.bind('', ''), m.execute(''),
      m.sync(),
    ),
});
stepsAttack(lab, 'WITH HOLD cursor: its query runs at COMMIT', ['BEGIN', 'DECLARE h CURSOR WITH HOLD FOR SELECT * FROM v_evil', 'COMMIT', 'CLOSE h']);
stepsAttack(lab, 'WITH HOLD cursor declared outside a transaction block (materialized when its statement commits)', ['DECLARE h CURSOR WITH HOLD FOR SELECT * FROM v_evil', 'CLOSE h'], {
});

// ───────────────────────────── turning read-write back on ─────────────────────────────

/** An attack whose direct proof runs on a session started with default_transaction_read_only=on. */
function againstReadOnlySession(name: string, sqls: string[]): void {
  stepsAttack(lab, name, sqls, { proofParams: READ_ONLY_SESSION });
}

againstReadOnlySession('hidden set_config(default_transaction_read_only, off) in a STABLE function, then a hidden write', ['SELECT rw_on()', 'SELECT * FROM v_evil']);
attack(lab, {
  name: 'hidden set_config(default_transaction_read_only, off), then a hidden write, pipelined with a Sync between',
  run: (c) =>
    c.send(m.parse('', 'SELECT rw_on()'), m.bind('', ''), m.execute(''), m.sync(), m.parse('', 'SELECT * FROM v_evil'), m.bind('', ''), m.execute(''), m.sync()),
  proofParams: READ_ONLY_SESSION,
});
againstReadOnlySession('hidden set_config, COMMIT, hidden write in one Query', ['SELECT rw_on(); COMMIT; SELECT * FROM v_evil']);
againstReadOnlySession('SET default_transaction_read_only = off, then a hidden write', ['SET default_transaction_read_only = off', 'SELECT * FROM v_evil']);
againstReadOnlySession('set_config(default_transaction_read_only, off) by name, then a hidden write', [`SELECT set_config('default_transaction_read_only', 'off', false)`, 'SELECT * FROM v_evil']);
againstReadOnlySession('SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE, then a hidden write', ['SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', 'SELECT * FROM v_evil']);
againstReadOnlySession('BEGIN READ WRITE, hidden write, COMMIT', ['BEGIN READ WRITE', 'SELECT * FROM v_evil', 'COMMIT']);
againstReadOnlySession('START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE in one Query with the hidden write', ['START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE; SELECT * FROM v_evil; COMMIT']);
againstReadOnlySession('BEGIN; SET TRANSACTION READ WRITE; hidden write; COMMIT', ['BEGIN', 'SET TRANSACTION READ WRITE', 'SELECT * FROM v_evil', 'COMMIT']);
againstReadOnlySession('BEGIN; SET transaction_read_only = off; hidden write; COMMIT', ['BEGIN', 'SET transaction_read_only = off', 'SELECT * FROM v_evil', 'COMMIT']);
againstReadOnlySession('BEGIN; SET LOCAL transaction_read_only = off; hidden write; COMMIT', ['BEGIN', 'SET LOCAL transaction_read_only = off', 'SELECT * FROM v_evil', 'COMMIT']);

/** Direct proof: read-only mode switched on by a session SET (as a proxy might send it), then the attack. */
function againstSessionSet(name: string, sqls: string[]): void {
  stepsAttack(lab, name, sqls, {
    proof: async (c: Conn) => {
      await c.query('SET default_transaction_read_only = on');
      await c.queries(...sqls);
    },
  });
}
againstSessionSet('RESET ALL, then a hidden write', ['RESET ALL', 'SELECT * FROM v_evil']);
againstSessionSet('RESET default_transaction_read_only, then a hidden write', ['RESET default_transaction_read_only', 'SELECT * FROM v_evil']);
againstSessionSet('SET default_transaction_read_only TO DEFAULT, then a hidden write', ['SET default_transaction_read_only TO DEFAULT', 'SELECT * FROM v_evil']);
againstSessionSet('DISCARD ALL (refused), then a hidden write in the next message', ['DISCARD ALL', 'SELECT * FROM v_evil']);

const savepointSteps = ['BEGIN', 'SAVEPOINT s', 'SELECT 1', 'ROLLBACK TO SAVEPOINT s', 'SELECT * FROM v_evil', 'COMMIT'];
stepsAttack(lab, 'ROLLBACK TO SAVEPOINT undoes a SET LOCAL transaction_read_only made after the savepoint', savepointSteps, {
  // Direct proof: read-only mode switched on inside the transaction after the savepoint (as a proxy might
  // do before the first read), then undone by ROLLBACK TO SAVEPOINT.
  proof: (c) => c.queries('BEGIN', 'SAVEPOINT s', 'SET LOCAL transaction_read_only = on', 'SELECT 1', 'ROLLBACK TO SAVEPOINT s', 'SELECT * FROM v_evil', 'COMMIT'),
});
