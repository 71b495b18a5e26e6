/**
 * Deep statements through stepgate: a 3,000-term sum and 1,000 nested subselects are answered (PostgreSQL runs
 * both), deeper ones get the server's own error or a refusal, never a FATAL; the connection stays usable.
 */
import path from 'node:path';
import t from 'tap';
import { startPostgres } from '../helpers/postgres.js';
import { errorsOf, m, RawClient, type Msg } from '../helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';

const db = await startPostgres(t);
const sg = await startStepgate(t, db, { rulesDir: path.join(REPO_ROOT, 'rules') });

const sum = (n: number): string => 'SELECT ' + Array(n).fill('1').join('+') + ' AS v';
const nested = (n: number): string => 'SELECT ' + '(SELECT '.repeat(n) + '1' + ')'.repeat(n) + ' AS v';

async function connect(target: { host: string; port: number } | { path: string }): Promise<RawClient> {
  const c = await RawClient.connect(target);
  t.teardown(() => c.destroy());
  await c.login({ user: ALICE.name, password: ALICE.password });
  return c;
}

function outcome(replies: Msg[]): string {
  const error = errorsOf(replies)[0];
  if (error) return `${error.severity} ${error.code}`;
  return `row ${JSON.stringify((replies.find((r) => r.type === 'D') as Msg | undefined)?.values)}`;
}

t.test('simple and extended protocol: the answer, the server error, or 42501; never FATAL', async (t) => {
  const direct = await RawClient.connect({ path: `${db.socketDir}/.s.PGSQL.${db.port}` });
  t.teardown(() => direct.destroy());
  await direct.login({ user: 'postgres', password: db.password });
  const proxied = await connect({ host: sg.host, port: sg.port });

  const cases: [string, string, string][] = [
    ['a 3,000-term sum', sum(3000), 'row ["3000"]'],
    ['1,000 nested subselects', nested(1000), 'row ["1"]'],
    // Deeper than PostgreSQL's max_stack_depth (2 MB): its own error, relayed. (Subselects nested that deep
    // take the server seconds to refuse: not here.)
    ['a 10,000-term sum', sum(10_000), 'ERROR 54001'],
    // Deeper than stepgate's parser can go: unknown, refused (the shipped rules step up unknown SQL).
    ['a 150,000-term sum', sum(150_000), 'ERROR 42501'],
  ];
  for (const [label, sql, expected] of cases) {
    const server = outcome(await direct.query(sql));
    const replies = await proxied.query(sql);
    const got = outcome(replies);
    t.notOk(errorsOf(replies).some((e) => e.severity === 'FATAL'), `${label}: no FATAL`);
    t.equal(got, expected, `${label}: ${got} (directly: ${server})`);
    if (expected !== 'ERROR 42501') t.equal(got, server, `${label}: as the server answers`);
    else t.match(errorsOf(replies)[0]?.message, /step-up required by rule "step-up-unknown"/);
    t.same((await proxied.query('SELECT 2')).find((x) => x.type === 'D'), { type: 'D', values: ['2'] }, `${label}: the connection stays usable`);
  }

  // Extended protocol: Parse, Bind, Execute of the deep texts.
  for (const [label, sql, expected] of [
    ['a 3,000-term sum', sum(3000), 'row ["3000"]'],
    ['1,000 nested subselects', nested(1000), 'row ["1"]'],
  ] as const) {
    proxied.send(m.parse('', sql), m.bind('', ''), m.execute(''), m.sync());
    const replies = await proxied.untilReady();
    t.equal(outcome(replies), expected, `extended: ${label}`);
  }
  t.same((await proxied.query('SELECT 3')).find((x) => x.type === 'D'), { type: 'D', values: ['3'] });
  t.notOk(sg.logs.some((l) => l.event === 'session.internal_error'), 'no internal errors');
});
