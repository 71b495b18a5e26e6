/**
 * stepgate reads each session's SQL with the grammar of its server's PostgreSQL major. A PostgreSQL 15 server
 * resolves json_array, json_object, json and merge_action through search_path (a user's volatile function of
 * that name runs); 16 and 17 read them as built-ins. A server of a major stepgate has no grammar for is refused.
 */
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { classifyWithCatalog, ServerSchemaCatalog } from '../../src/proxy/catalog/index.js';
import { parseUpstreamUrl } from '../../src/proxy/upstream.js';
import { classify } from '../../src/sql/classify.js';
import { loadGrammar, type GrammarVersion } from '../../src/sql/grammar.js';
import type { ClassifyContext } from '../../src/sql/types.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { m, RawClient, errorsOf } from '../helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate } from '../helpers/stepgate.js';

// Two servers (15 and 17): on a loaded machine this file may need more than the default 120 s.
t.setTimeout(300_000);

const SHIPPED_RULES = path.join(REPO_ROOT, 'rules');

/** The four names, each a user's VOLATILE function that leaves a mark. */
const USER_FUNCTIONS = `
  CREATE TABLE marker (what text);
  CREATE FUNCTION public.json_array(a int, b int) RETURNS text VOLATILE LANGUAGE sql
    AS $$ INSERT INTO marker VALUES ('json_array'); SELECT 'the user''s json_array' $$;
  CREATE FUNCTION public.json_object(t text) RETURNS text VOLATILE LANGUAGE sql
    AS $$ INSERT INTO marker VALUES ('json_object'); SELECT 'the user''s json_object' $$;
  CREATE FUNCTION public.json(t text) RETURNS text VOLATILE LANGUAGE sql
    AS $$ INSERT INTO marker VALUES ('json'); SELECT 'the user''s json' $$;
  CREATE FUNCTION public.merge_action() RETURNS text VOLATILE LANGUAGE sql
    AS $$ INSERT INTO marker VALUES ('merge_action'); SELECT 'the user''s merge_action' $$;
`;

// json() with a text argument: with an untyped literal, PostgreSQL 15 takes json('...') for a cast to type json.
const CALLS = ['SELECT json_array(1, 2) AS v', "SELECT json_object('{a,1}') AS v", "SELECT json('[1]'::text) AS v", 'SELECT merge_action() AS v'];

async function marks(db: TestPostgres): Promise<string[]> {
  return (await db.query('SELECT what FROM marker ORDER BY what')).rows.map((r: { what: string }) => r.what);
}

/** The four calls classified with a grammar and the server's real catalog answers (as a session asks them). */
async function classesWith(db: TestPostgres, version: GrammarVersion): Promise<string[][]> {
  const catalog = new ServerSchemaCatalog(parseUpstreamUrl(db.url()), 'postgres', 10_000);
  try {
    await catalog.ready();
    const grammar = await loadGrammar(version);
    const ctx: ClassifyContext = { grammar, standardConformingStrings: true, catalog: catalog.lookups };
    const classes: string[][] = [];
    for (const sql of CALLS) {
      const result = await classifyWithCatalog(catalog, () => classify(sql, ctx), classify(sql, ctx), (err) => {
        throw err;
      });
      classes.push(result.statements[0]!.classes);
    }
    return classes;
  } finally {
    catalog.close();
  }
}

t.test('PostgreSQL 15: the user functions run on the server, so stepgate does not read them as built-ins', async (t) => {
  const db = await startPostgres(t);
  await db.query(USER_FUNCTIONS);
  // What the server does with them: the user's functions run.
  for (const sql of CALLS) t.match((await db.query(sql)).rows[0].v, /^the user's /, `directly: ${sql} runs the user's function`);
  t.same(await marks(db), ['json', 'json_array', 'json_object', 'merge_action']);
  await db.query('TRUNCATE marker');

  const sg = await startStepgate(t, db, { rulesDir: SHIPPED_RULES });
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  t.teardown(() => client.end());
  for (const sql of CALLS) {
    await t.rejects(client.query(sql), { code: '42501', message: /step-up required by rule "step-up-procedural"/ }, `through stepgate: ${sql} is procedural`);
  }
  t.same(await marks(db), [], 'none of them ran');
  t.equal((await client.query(`SELECT lower('ABC') AS v`)).rows[0].v, 'abc', 'the session goes on');
  t.match(sg.logs.find((l) => l.event === 'connection.start'), { grammar: 15 });

  // The same calls and catalog answers read with PostgreSQL 18's grammar would have been reads. With 15's,
  // each is the user's function: its body (read from the catalog) inserts.
  const userFunction = ['procedural', 'read', 'write'];
  t.same(await classesWith(db, 15), [userFunction, userFunction, userFunction, userFunction]);
  t.same(await classesWith(db, 18), [['read'], ['read'], ['read'], ['read']], "PostgreSQL 18's grammar: built-ins");
});

t.test('PostgreSQL 17: the server runs its built-ins, and stepgate reads them so', async (t) => {
  const db = await startPostgres(t, { major: 17 });
  await db.query(USER_FUNCTIONS);
  const direct = [];
  for (const sql of CALLS.slice(0, 3)) direct.push((await db.query(sql)).rows[0].v);
  t.same(direct, [[1, 2], { a: '1' }, [1]], 'directly: the built-ins (json values)');
  await t.rejects(db.query(CALLS[3]!), { message: /MERGE_ACTION\(\) can only be used in the RETURNING list of a MERGE command/ });
  t.same(await marks(db), [], 'no user function ran');

  const sg = await startStepgate(t, db, { rulesDir: SHIPPED_RULES });
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  t.teardown(() => client.end());
  const through = [];
  for (const sql of CALLS.slice(0, 3)) through.push((await client.query(sql)).rows[0].v);
  t.same(through, direct, 'through stepgate: reads, with the same results');
  await t.rejects(client.query(CALLS[3]!), { message: /MERGE_ACTION\(\) can only be used/ }, "merge_action(): the server's own error");
  t.same(await marks(db), []);
  t.match(sg.logs.find((l) => l.event === 'connection.start'), { grammar: 17 });
  t.same(await classesWith(db, 17), [['read'], ['read'], ['read'], ['read']]);
});

/** A server that logs anyone in and reports `serverVersion`. */
async function fakeServer(t: { teardown(fn: () => unknown): void }, parameters: Record<string, string>): Promise<{ port: number; terminated: () => boolean }> {
  let terminated = false;
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', () => {
      const out: Buffer[] = [Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0])];
      for (const [name, value] of Object.entries(parameters)) {
        const body = Buffer.from(`${name}\0${value}\0`);
        const head = Buffer.alloc(5);
        head[0] = 0x53;
        head.writeInt32BE(4 + body.length, 1);
        out.push(head, body);
      }
      out.push(Buffer.from([0x4b, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]), Buffer.from([0x5a, 0, 0, 0, 5, 0x49]));
      socket.write(Buffer.concat(out));
      socket.on('data', (chunk) => {
        if (chunk[0] === 0x58) terminated = true;
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as net.AddressInfo).port, terminated: () => terminated };
}

t.test('a server of a major without a grammar (or an unreadable version) is refused at startup', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ server_version: '9.6.24', server_encoding: 'UTF8' }, /the server runs PostgreSQL 9\.6, and stepgate reads SQL only with the grammar of PostgreSQL 15 to 18/],
    [{ server_version: '19devel' }, /the server runs PostgreSQL 19devel/],
    [{ server_version: 'quux' }, /cannot tell which PostgreSQL version the server runs \(server_version "quux"\)/],
    [{}, /cannot tell which PostgreSQL version/],
    [{ server_version: '16.4', server_version_num: '140011' }, /the server runs PostgreSQL 14,/],
  ];
  for (const [parameters, message] of cases) {
    const fake = await fakeServer(t, parameters);
    const sg = await startStepgate(t, { url: () => `postgres://postgres:x@127.0.0.1:${fake.port}/postgres?sslmode=disable` } as TestPostgres);
    const c = await RawClient.connect({ host: sg.host, port: sg.port });
    t.teardown(() => c.destroy());
    c.write(m.startup({ user: ALICE.name, database: 'postgres' }));
    const replies = await c.authenticate({ user: ALICE.name, password: ALICE.password }).then(
      () => c.untilClosed(),
      (err: { msg: unknown }) => [err.msg as { type: string }],
    );
    const label = JSON.stringify(parameters);
    t.match(errorsOf(replies as never)[0], { severity: 'FATAL', code: '0A000', message }, `${label}: FATAL 0A000`);
    t.match((replies as { type: string; fields?: Record<string, string> }[]).find((x) => x.type === 'E')?.fields, { H: /PostgreSQL 15 to 18/ }, `${label}: with a hint`);
    t.match(sg.logs.find((l) => l.event === 'connection.refused'), { reason: message });
    t.notOk(sg.logs.some((l) => l.event === 'connection.start'), 'no session');
    await new Promise((r) => setTimeout(r, 50));
    t.ok(fake.terminated(), 'the server connection was ended with Terminate');
  }
});
