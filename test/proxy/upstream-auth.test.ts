/**
 * stepgate logs in to the server with its own credentials using whatever the server asks for:
 * SCRAM-SHA-256, md5, cleartext password, or nothing (trust). A wrong upstream password reaches the
 * client as the server's own error.
 */
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';

for (const method of ['scram-sha-256', 'md5', 'password', 'trust'] as const) {
  t.test(`upstream asks for ${method}`, async (t) => {
    const db = await startPostgres(t, { authMethod: method });
    const sg = await startStepgate(t, db);
    const client = new pg.Client(sg.pgConfig());
    await client.connect();
    t.teardown(() => client.end());
    const r = await client.query('SELECT current_user AS u');
    t.equal(r.rows[0].u, 'postgres', 'stepgate is logged in as its configured user');
  });
}

t.test('a wrong upstream password: the client gets the server\'s error at login', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { tweak: (config) => void (config.upstream!.password = 'not-the-password') });
  const client = new pg.Client(sg.pgConfig());
  await t.rejects(client.connect(), { code: '28P01', message: /password authentication failed for user "postgres"/ });
  t.notMatch(JSON.stringify(sg.logs), 'not-the-password', 'the upstream password is not logged');
});
