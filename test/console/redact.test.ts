import t from 'tap';
import { redactSql } from '../../src/sql/redact.js';

const cases: [string, string][] = [
  [`CREATE ROLE bob LOGIN PASSWORD 'secret'`, `CREATE ROLE bob LOGIN PASSWORD '***'`],
  [`ALTER USER bob WITH ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:abc=='`, `ALTER USER bob WITH ENCRYPTED PASSWORD '***'`],
  [`alter role "Bob" password $$it's$$ valid until '2030-01-01'`, `alter role "Bob" password '***' valid until '2030-01-01'`],
  [`ALTER ROLE bob PASSWORD $pw$x$pw$`, `ALTER ROLE bob PASSWORD '***'`],
  [`ALTER ROLE bob PASSWORD E'it\\'s'`, `ALTER ROLE bob PASSWORD '***'`],
  [`ALTER ROLE bob PASSWORD 'it''s'; SELECT 'kept'`, `ALTER ROLE bob PASSWORD '***'; SELECT 'kept'`],
  [`ALTER ROLE bob PASSWORD 'unterminated`, `ALTER ROLE bob PASSWORD '***'`],
  [`ALTER ROLE bob PASSWORD NULL`, `ALTER ROLE bob PASSWORD NULL`],
  [`SET my.api_key = 'abc'`, `SET my.api_key = '***'`],
  [`SET LOCAL app.secret TO abc`, `SET LOCAL app.secret TO '***'`],
  [`set session "app.token" to 'a', 'b'; select 1`, `set session "app.token" to '***', '***'; select 1`],
  [`SET search_path = 'public'`, `SET search_path = 'public'`],
  [`ALTER ROLE app SET app.password = 'x'`, `ALTER ROLE app SET app.password = '***'`],
  [`SELECT set_config('app.password', 'hunter2', false)`, `SELECT set_config('app.password', '***', false)`],
  [`SELECT pg_catalog.set_config('search_path', 'x', false)`, `SELECT pg_catalog.set_config('search_path', 'x', false)`],
  [`CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'pw')`, `CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password '***')`],
  [
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=hunter2 dbname=app' PUBLICATION p`,
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=*** dbname=app' PUBLICATION p`,
  ],
  // A conninfo value quoted inside the SQL literal ('' is one quote there), with spaces and an escaped quote.
  [
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=''hun ter2'' dbname=app' PUBLICATION p`,
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=*** dbname=app' PUBLICATION p`,
  ],
  [
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=''it\\''s2'' dbname=app' PUBLICATION p`,
    `CREATE SUBSCRIPTION s CONNECTION 'host=db password=*** dbname=app' PUBLICATION p`,
  ],
  [`SELECT dblink_connect('c', 'host=db password=hunter2')`, `SELECT dblink_connect('***', '***')`],
  [`SELECT 'postgres://u:hunter2@h/db'`, `SELECT 'postgres://u:***@h/db'`],
  [`SELECT crypt('hunter2', gen_salt('bf'))`, `SELECT crypt('***', gen_salt('bf'))`],
  [`SELECT pgp_sym_encrypt(data, 'k3y') FROM t`, `SELECT pgp_sym_encrypt(data, '***') FROM t`],
  [`SELECT * FROM users WHERE password = 'hunter2'`, `SELECT * FROM users WHERE password = '***'`],
  [`SELECT 'PASSWORD', 'x'`, `SELECT 'PASSWORD', 'x'`],
  [`DELETE FROM orders WHERE note = 'password is fine here'`, `DELETE FROM orders WHERE note = 'password is fine here'`],
  [`SELECT 1`, `SELECT 1`],
  [``, ``],
];

for (const [input, expected] of cases) {
  t.equal(redactSql(input), expected, input);
}

t.test('backslashes escape in plain strings when standard_conforming_strings is off', async (t) => {
  t.equal(redactSql(`ALTER ROLE x PASSWORD 'a\\'b'`, { standardConformingStrings: false }), `ALTER ROLE x PASSWORD '***'`);
});

t.test('large and pathological input stays linear', async (t) => {
  // Quadratic work on any of these would take minutes; linear takes milliseconds (generous bound for busy CI).
  const inputs = {
    values: `INSERT INTO t VALUES ${Array.from({ length: 20_000 }, (_, i) => `(${i}, 'v${i}')`).join(', ')}`,
    nestedCalls: `SELECT ${'f('.repeat(100_000)}1${')'.repeat(100_000)}`,
    nestedSecretCalls: `SELECT ${"crypt('a', ".repeat(30_000)}'x'${')'.repeat(30_000)}`,
    repeatedSet: `${'SET a.secret = '.repeat(50_000)}'x'`,
  };
  for (const [name, sql] of Object.entries(inputs)) {
    const started = performance.now();
    redactSql(sql);
    const ms = performance.now() - started;
    t.ok(ms < 2_000, `${name}: ${ms.toFixed(0)} ms for ${sql.length} characters`);
  }
  t.equal(redactSql(inputs.values), inputs.values, 'nothing to hide: unchanged');
});

t.test('nested calls: a secret argument is hidden wherever it sits inside', async (t) => {
  t.equal(
    redactSql(`SELECT crypt(lower('pw'), gen_salt('bf')), set_config('a.token', 'v', false), f('keep')`),
    `SELECT crypt(lower('***'), gen_salt('bf')), set_config('a.token', '***', false), f('keep')`,
  );
});
