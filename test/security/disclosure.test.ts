/**
 * Disclosure: reads that change nothing but reveal what the server's superuser (stepgate's upstream user) may
 * see and the person at the keyboard should not: password hashes, the server's configuration and
 * authentication files, the passwords in user mappings and subscriptions, raw column statistics (the most
 * common values of every column of every table, whatever the column privileges), large objects without their
 * ACLs, server files read by a function.
 *
 * Read-only mode does not stop a read, so only stepgate can: through stepgate each must be refused with 42501
 * (under reads-only rules: not classified as a plain read; stepped up or denied). The direct proof shows the
 * secret in the server's answer.
 *
 * Stopped (42501): each of them. The config-file views are `admin` (+ `server_files`), the credential
 * catalogs and the statistics views `admin` (+ `secrets`), also when reached inside a function.
 */
import t from 'tap';
import { connect, errorsIn, report, rowsIn, startLab, type Lab } from './harness.js';

const lab: Lab = await startLab(t, {
  kind: 'disclosure',
  postgres: { files: { 'pg_ident.conf': 'stepgate_map  os_alice_secret  postgres\n' } },
  setup: (db) => [
    `CREATE EXTENSION postgres_fdw;
CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '${db.socketDir}', dbname 'postgres');
CREATE USER MAPPING FOR postgres SERVER remote OPTIONS (user 'postgres', password 'secret-fdw-password');
CREATE TABLE salaries (name text, secret text);
INSERT INTO salaries SELECT 'n' || g, 'top-secret-value' FROM generate_series(1, 50) g;
ANALYZE salaries;
REVOKE ALL ON salaries FROM PUBLIC;
SELECT lo_from_bytea(0, 'lo-secret-bytes');
CREATE FUNCTION read_conf() RETURNS text LANGUAGE sql STABLE AS $$ SELECT pg_read_file('postgresql.conf') $$;`,
    `CREATE SUBSCRIPTION sub CONNECTION 'host=127.0.0.1 port=1 password=secret-sub-password dbname=x' PUBLICATION p WITH (connect = false)`,
  ],
});


function disclosure(name: string, sql: string, secret: RegExp, todo?: string): void {
  t.test(name, async (t) => {
    const direct = await connect(lab, 'direct');
    const d = await direct.query(sql);
    direct.raw.destroy();
    const directText = JSON.stringify(rowsIn(d));
    const proven = secret.test(directText);
    t.ok(proven, `direct proof: the server's answer reveals ${secret}`, { errors: errorsIn(d), rows: rowsIn(d).length });

    const extra = todo ? { todo } : {};
    const c = await connect(lab, 'stepgate');
    let label: string;
    try {
      const r = await c.query(sql);
      const e = errorsIn(r)[0];
      const leaked = secret.test(JSON.stringify(rowsIn(r)));
      label = leaked ? 'NOT stopped (the secret was answered)' : e ? (e.code === '42501' ? 'stopped by 42501 (stepgate refused it)' : `failed with ${e.code} (${e.message})`) : 'answered without the secret';
      t.notOk(leaked, `through stepgate the secret is not answered: ${label}`, extra);
      t.equal(e?.code, '42501', `through stepgate the read is refused with 42501: ${label}`, extra);
      t.same(rowsIn(await c.query('SELECT 1')), [['1']], 'the connection is usable afterwards', extra);
    } catch (err) {
      label = `connection died or hung: ${String(err)}`;
      t.fail(label, extra);
    }
    c.raw.destroy();
    if (todo && label.startsWith('stopped')) t.comment(`"${name}" is stopped now: remove its todo flag`);
    report({ file: 'disclosure', attack: name, direct: proven, readOnlyAlone: 'does NOT stop it (a read)', stepgate: label, todo: todo ?? null });
  });
}

const SCRAM = /SCRAM-SHA-256\$/;
disclosure('pg_authid.rolpassword', 'SELECT rolname, rolpassword FROM pg_authid', SCRAM);
disclosure('pg_catalog.pg_authid, qualified', 'SELECT rolpassword FROM pg_catalog.pg_authid', SCRAM);
disclosure('TABLE pg_authid', 'TABLE pg_authid', SCRAM);
disclosure('pg_shadow', 'SELECT usename, passwd FROM pg_shadow', SCRAM);
disclosure('pg_file_settings (the server\'s configuration files)', 'SELECT sourcefile, name, setting FROM pg_file_settings', /postgresql(\.auto)?\.conf/);
disclosure('pg_hba_file_rules (who may connect how)', 'SELECT * FROM pg_hba_file_rules', /scram-sha-256/);
disclosure('pg_ident_file_mappings', 'SELECT * FROM pg_ident_file_mappings', /os_alice_secret/);
disclosure('pg_user_mappings (the remote password)', 'SELECT srvname, umoptions FROM pg_user_mappings', /secret-fdw-password/);
disclosure('information_schema.user_mapping_options', 'SELECT option_name, option_value FROM information_schema.user_mapping_options', /secret-fdw-password/);
disclosure('pg_subscription.subconninfo', 'SELECT subname, subconninfo FROM pg_subscription', /secret-sub-password/);
disclosure('pg_statistic (most common values of a column nobody was granted)', 'SELECT stavalues1::text FROM pg_statistic WHERE starelid = \'salaries\'::regclass', /top-secret-value/);
disclosure('pg_stats (the same, as the superuser sees it)', `SELECT most_common_vals::text FROM pg_stats WHERE tablename = 'salaries'`, /top-secret-value/);
disclosure('pg_largeobject (large-object contents without their ACL)', `SELECT convert_from(data, 'UTF8') FROM pg_largeobject`, /lo-secret-bytes/);
disclosure('pg_read_file called by name (sanity)', `SELECT pg_read_file('postgresql.conf')`, /max_connections/);
disclosure('pg_read_file hidden in a STABLE function', 'SELECT read_conf()', /max_connections/);
