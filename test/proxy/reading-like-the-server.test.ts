/**
 * The proxy must read SQL as the server will: functions that shadow built-ins, user functions by their
 * volatility, bytes the server would refuse, and standard_conforming_strings off. Decided with the
 * shipped rules (step-up is unavailable in these tests, so a held statement is refused with 42501).
 */
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { REPO_ROOT, startStepgate } from '../helpers/stepgate.js';
import { m, RawClient } from '../helpers/raw-client.js';
import { ALICE } from '../helpers/stepgate.js';

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE log (at timestamptz DEFAULT now(), what text);
  CREATE FUNCTION public.total_orders() RETURNS bigint STABLE LANGUAGE sql AS 'SELECT 42::bigint';
  CREATE FUNCTION public.record_visit(what text) RETURNS void VOLATILE LANGUAGE sql AS 'INSERT INTO log (what) VALUES (what)';
  CREATE FUNCTION public.now(n integer) RETURNS timestamptz VOLATILE LANGUAGE sql AS 'INSERT INTO log (what) VALUES (''shadow''); SELECT now()';
`);
const sg = await startStepgate(t, db, { rulesDir: path.join(REPO_ROOT, 'rules') });
const client = new pg.Client(sg.pgConfig());
await client.connect();
t.teardown(() => client.end());

t.test('a user function that is STABLE is a read; a VOLATILE one needs step-up', async (t) => {
  const r = await client.query('SELECT total_orders() AS n');
  t.equal(r.rows[0].n, '42');
  await t.rejects(client.query(`SELECT record_visit('x')`), { code: '42501', message: /step-up required by rule "step-up-procedural"/ });
  t.equal((await db.query('SELECT count(*)::int AS n FROM log')).rows[0].n, 0, 'the volatile function did not run');
});

t.test('a built-in name shadowed by a user function is not trusted to be the built-in', async (t) => {
  await t.rejects(client.query('SELECT now(1)'), { code: '42501', message: /step-up-procedural/ });
  t.equal((await db.query(`SELECT count(*)::int AS n FROM log WHERE what = 'shadow'`)).rows[0].n, 0);
  // Built-ins nobody shadows stay plain reads.
  t.equal((await client.query(`SELECT lower('ABC') AS v`)).rows[0].v, 'abc');
});

t.test('bytes the server would refuse get the server-like error, not a step-up', async (t) => {
  const raw = await RawClient.connect({ host: sg.host, port: sg.port });
  t.teardown(() => raw.destroy());
  await raw.login({ user: ALICE.name, password: ALICE.password });
  const bad = Buffer.concat([Buffer.from('SELECT \''), Buffer.from([0xc3, 0x28]), Buffer.from('\'\0')]);
  const frame = Buffer.alloc(5);
  frame[0] = 0x51;
  frame.writeInt32BE(4 + bad.length, 1);
  raw.send(Buffer.concat([frame, bad]));
  const replies = await raw.untilReady();
  t.match(replies.find((x) => x.type === 'E'), { code: '22021' });
  t.equal(replies.at(-1)?.type, 'Z');
  raw.send(m.query('SELECT 1'));
  t.ok((await raw.untilReady()).some((x) => x.type === 'C'), 'the connection stays usable');
});

t.test('with standard_conforming_strings off, a backslash makes a statement unknown', async (t) => {
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end());
  await c.query('SET standard_conforming_strings = off');
  await t.rejects(c.query(`SELECT 'a\\\\' AS v`), { code: '42501', message: /step-up-unknown/ });
  t.equal((await c.query(`SELECT 'plain' AS v`)).rows[0].v, 'plain', 'text without backslashes is read as usual');
});
