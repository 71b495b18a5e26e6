/**
 * Attack: log in with an issued database credential that was revoked on another instance, before this
 * instance's copy of the users hears of it. The attacker holds the credential (a leaked password from
 * `stepgate login`); the owner revokes it in the console of instance A; the attacker connects to instance B.
 *
 * The window is made certain here: the revocation is written with the tables' notify triggers switched
 * off, so B's copy never hears of it. First shown to work against the copy alone: B's copy still lists the
 * credential as active and its SCRAM verifier accepts the password (the SCRAM exchange B runs from the copy
 * succeeds). Then shown stopped: the login through B is refused (28P01), because using a credential is a
 * conditional UPDATE in the state database, which knows it was revoked.
 */
import t from 'tap';
import pg from 'pg';
import { makeVerifier } from '../../src/protocol/scram.js';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
// Issued credentials are how single sign-on users log in without TLS; the provider itself is not needed
// for that (its discovery fails quietly here), only the `sso:` section.
const SSO = 'sso:\n  issuer: http://127.0.0.1:9/\n  client_id: stepgate\n  client_secret: stepgate-secret\n';
const state = (name: string): string => `${SSO}state:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: ${name}\n`;
const a = await startStepgate(t, db, { users: [], configYaml: state('a') });
const b = await startStepgate(t, db, { users: [], configYaml: state('b') });

const SECRET = 'issued-credential-secret-1234';
// A person without a local password (as single sign-on users are), with a credential issued on A.
await a.identity.addUser('sam', [], null);
const credential = await a.identity.addCredential('sam', makeVerifier(SECRET, undefined, Buffer.from(a.identity.credentialSalt('sam'))), 'laptop', 60 * 60_000);
const login = (port: number): Promise<pg.Client> => {
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'sam', password: SECRET, database: 'postgres' });
  return c.connect().then(() => c);
};

t.test('the credential works through B before it is revoked', async (t) => {
  await waitFor("the credential in B's copy", () => b.identity.activeCredentials('sam').some((x) => x.id === credential.id));
  const c = await login(b.port);
  t.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  await c.end();
});

t.test('revoked on A without a word to B: B’s copy would accept it, B refuses the login', async (t) => {
  await db.query(
    `ALTER TABLE stepgate.credentials DISABLE TRIGGER USER;
     UPDATE stepgate.credentials SET revoked_at = ${Date.now()} WHERE id = '${credential.id}';
     ALTER TABLE stepgate.credentials ENABLE TRIGGER USER;`,
    'stepgate_state',
  );
  // The attack works against the copy: B still believes the credential is active, and its verifier
  // accepts the password (what the SCRAM exchange checks).
  const stale = b.identity.activeCredentials('sam').find((x) => x.id === credential.id);
  t.ok(stale, "B's copy still lists the revoked credential as active");
  t.equal(stale!.verifier, makeVerifier(SECRET, undefined, Buffer.from(b.identity.credentialSalt('sam'))), 'and its verifier is the one the password derives');

  await t.rejects(login(b.port), { code: '28P01' }, 'but the login through B is refused: the database decides the use');
  await t.rejects(login(a.port), { code: '28P01' }, 'and through A');
});
