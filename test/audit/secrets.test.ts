/**
 * No password reaches the audit store: role passwords in every spelling, set_config of a secret, and bind
 * parameters (recorded here, audit.bind_parameters: true), checked in the raw bytes of audit.db and its
 * -wal and -shm files, and in stepgate's log.
 */
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import type { AuditStore } from '../../src/audit/store.js';
import { mayHoldSecrets, redactParams, redactStatement, scrubMessage } from '../../src/audit/secrets.js';
import { redactSql } from '../../src/sql/redact.js';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { readEvents, waitForEvent } from './helpers.js';

const SECRET = 'p4ss-unique';

function rawFiles(dataDir: string): { file: string; bytes: Buffer }[] {
  return ['audit.db', 'audit.db-wal', 'audit.db-shm']
    .map((f) => path.join(dataDir, f))
    .filter((f) => fs.existsSync(f))
    .map((file) => ({ file, bytes: fs.readFileSync(file) }));
}

t.test('no password in the audit store or the log', async (t) => {
  const db = await startPostgres(t);
  const sg = await startStepgate(t, db, { configYaml: 'audit:\n  bind_parameters: true\n' });
  const store = sg.app.audit as AuditStore;
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  await client.query(`CREATE ROLE audit_x PASSWORD '${SECRET}-1'`);
  await client.query(`ALTER ROLE audit_x PASSWORD '${SECRET}-2'`);
  await client.query(`ALTER ROLE audit_x WITH LOGIN ENCRYPTED PASSWORD '${SECRET}-3' VALID UNTIL 'infinity'`);
  // What psql's \password sends: a verifier computed by the client.
  await client.query(`ALTER USER audit_x PASSWORD 'SCRAM-SHA-256$4096:${Buffer.from(SECRET + '-4').toString('base64')}$c2FsdA==:c2VydmVy'`);
  await client.query(`ALTER ROLE audit_x PASSWORD E'${SECRET}-5\\'s'`);
  await client.query(`ALTER ROLE audit_x PASSWORD $$${SECRET}-6$$`);
  // Not a literal: a syntax error the server echoes ("at or near ...").
  await t.rejects(client.query(`ALTER ROLE audit_x PASSWORD ${SECRET}-7`), { code: '42601' });
  await client.query(`SELECT set_config('app.api_token', '${SECRET}-8', false)`);
  await client.query(`SET app.secret_key = '${SECRET}-9'`);
  await client.query(`SELECT 'host=db.example user=u password=${SECRET}-10 dbname=x' AS conninfo`);
  await client.query(`SELECT 'postgresql://u:${SECRET}-11@db.example/x' AS url`);
  // Bind parameters, recorded because bind_parameters is on: masked where they may be secrets.
  await t.rejects(client.query('ALTER ROLE audit_x PASSWORD $1', [`${SECRET}-12`]));
  await client.query("SELECT set_config('app.password', $1, false)", [`${SECRET}-13`]);
  await client.query('SELECT $1::text AS v', [`host=x password=${SECRET}-14`]);
  await client.query('SELECT $1::text AS v', [`SCRAM-SHA-256$4096:${SECRET}-15`]);
  await client.query('SELECT $1::text AS harmless', ['plain value']);
  await client.query('DROP ROLE audit_x');
  await client.end();
  await waitForEvent(store, sg.dataDir, (e) => e.kind === 'connection.end');

  const events = readEvents(sg.dataDir, "kind = 'statement'");
  t.ok(events.length >= 17, 'the statements are recorded');
  const sqls = events.map((e) => e.data.sql as string);
  t.ok(sqls.includes("CREATE ROLE audit_x PASSWORD '***'"), 'CREATE ROLE masked');
  t.ok(sqls.includes("ALTER ROLE audit_x PASSWORD '***'"), 'ALTER ROLE masked');
  t.ok(sqls.includes('ALTER ROLE audit_x PASSWORD ***-7') || sqls.some((s) => /ALTER ROLE audit_x PASSWORD \*\*\*$/.test(s)), 'bare password masked');
  const harmless = events.find((e) => (e.data.sql as string).includes('AS harmless'))!;
  t.same(harmless.data.params, ['plain value'], 'ordinary parameters are recorded');
  const masked = events.find((e) => (e.data.sql as string).startsWith("SELECT set_config('app.password'"))!;
  t.same(masked.data.params, ['***']);
  const syntax = readEvents(sg.dataDir).find((e) => JSON.stringify(e.data).includes('syntax error'));
  t.ok(syntax, 'the syntax error was recorded');
  t.notMatch(JSON.stringify(syntax?.data), /p4ss/);

  const check = (label: string): void => {
    for (const { file, bytes } of rawFiles(sg.dataDir)) {
      t.equal(bytes.indexOf('p4ss'), -1, `${label}: no password in ${path.basename(file)}`);
      t.equal(bytes.indexOf(Buffer.from(SECRET + '-4').toString('base64')), -1, `${label}: no verifier in ${path.basename(file)}`);
    }
  };
  check('while running');
  t.notMatch(JSON.stringify(sg.logs), /p4ss/, 'nothing in the log');
  const dataDir = sg.dataDir;
  await sg.app.close();
  check('after shutdown');
  void dataDir;
});

t.test('redaction helpers', async (t) => {
  // Everything redactSql changes passes the pre-check (which lets the common statement skip the lexer).
  const cases = [
    "CREATE ROLE x PASSWORD 'a'",
    "ALTER USER x ENCRYPTED PASSWORD 'a'",
    "CREATE USER MAPPING FOR x SERVER s OPTIONS (user 'u', password 'pw')",
    "ALTER SERVER s OPTIONS (SET password 'pw')",
    "SELECT dblink_connect('host=h password=pw')",
    "SELECT dblink('host=h password=pw', 'select 1')",
    "CREATE SUBSCRIPTION s CONNECTION 'host=h password=pw dbname=d' PUBLICATION p",
    "ALTER SUBSCRIPTION s CONNECTION 'host=h password=pw'",
    "SELECT set_config('app.token', 'tk', false)",
    "SET app.secret = 'v'",
    "SELECT crypt('pw', gen_salt('bf'))",
    "SELECT pgp_sym_encrypt('data', 'key')",
    "SELECT hmac('data', 'k', 'sha256')",
    "SELECT 'postgres://u:pw@h/d'",
    "UPDATE users SET api_key = 'k' WHERE id = 1",
  ];
  for (const sql of cases) {
    t.not(redactSql(sql), sql, `redactSql changes: ${sql}`);
    t.ok(mayHoldSecrets(sql), `pre-check lets through: ${sql}`);
    t.notMatch(redactStatement(sql).text, /'pw'|'tk'|'a'|password=pw|:pw@/, `masked: ${sql}`);
  }
  t.equal(redactStatement('SELECT abalance FROM pgbench_accounts WHERE aid = 1').text, 'SELECT abalance FROM pgbench_accounts WHERE aid = 1');
  const bare = redactStatement('ALTER ROLE x PASSWORD hunter2-x');
  t.equal(bare.text, 'ALTER ROLE x PASSWORD ***');
  t.equal(scrubMessage('syntax error at or near "hunter2"', bare.fragments), 'syntax error at or near "***"');
  t.same(redactParams('SELECT $1', ['a', null, 'md5' + 'a'.repeat(32)]), ['a', null, '***']);
  t.same(redactParams('UPDATE u SET password = $1', ['x']), ['***']);
});
