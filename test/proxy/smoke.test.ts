import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';

t.test('a pg client works through stepgate', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db);
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  t.teardown(() => client.end());
  const r = await client.query('SELECT 1 + 1 AS two');
  t.equal(r.rows[0].two, 2);
  const p = await client.query('SELECT $1::int * 2 AS x', [21]);
  t.equal(p.rows[0].x, 42);
  await t.rejects(client.query('SELECT 1/0'), { code: '22012' });
  const again = await client.query({ name: 'named', text: 'SELECT $1::text AS v', values: ['hi'] });
  t.equal(again.rows[0].v, 'hi');
});
