/**
 * The planner's estimate (rules on `rows` where no preview is possible) sends the statement's text again,
 * behind EXPLAIN. An attacker who knows the lexer: with standard_conforming_strings off, libpg-query (always
 * on) reads `SELECT 'a\''; COMMIT; BEGIN READ WRITE; DROP TABLE victim; COMMIT; --'` as one SELECT of a
 * literal, the server as five statements, so an EXPLAIN of it would end stepgate's read-only transaction and
 * drop the table before any rule decided. Proved against the server directly, then stopped through stepgate
 * under rules that allow reads and settings and deny statements over 100,000 rows.
 */
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, rulesDirWith, startStepgate } from '../helpers/stepgate.js';

const ATTACK = "SELECT 'a\\''; COMMIT; BEGIN READ WRITE; DROP TABLE victim; COMMIT; --'";

const db = await startPostgres(t);
const setup = 'DROP TABLE IF EXISTS victim; CREATE TABLE victim (v int); GRANT ALL ON victim TO PUBLIC';
const exists = async (): Promise<boolean> => (await db.query("SELECT to_regclass('public.victim') IS NOT NULL AS e")).rows[0].e as boolean;

t.test('directly: with standard_conforming_strings off the text drops the table', async (t) => {
  await db.query(setup);
  const c = await db.client();
  t.teardown(() => c.end());
  await c.query('SET standard_conforming_strings = off');
  await c.query(`EXPLAIN (FORMAT JSON) ${ATTACK}`).catch(() => {});
  t.notOk(await exists(), 'EXPLAIN of it dropped victim');
});

t.test('through stepgate: no estimate of a text it cannot read, nothing dropped', async (t) => {
  await db.query(setup);
  const rulesDir = rulesDirWith(
    t,
    `default: deny
rules:
  - name: reads-and-settings
    match: {class: [read, session]}
    action: allow
  - name: huge
    match: {rows: ">100000"}
    action: deny
`,
  );
  const sg = await startStepgate(t, db, { rulesDir });
  const c = new pg.Client(sg.pgConfig(ALICE));
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  await c.query('SET standard_conforming_strings = off');
  await t.rejects(c.query(ATTACK), { code: '42501' }, 'refused');
  t.ok(await exists(), 'victim is still there');
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1, 'the connection goes on');
});
