/**
 * The state database is trusted to say what was approved (README, "The shared state database is as
 * sensitive as the data directory"). This test shows the limit honestly and what still holds: someone who
 * can write the schema `stepgate` marks a held statement approved with a forged passkey approval and
 * sends the notice; the instance holding it releases it (that is the trust) — and the instance's own audit
 * trail, verified with `stepgate audit verify`, reports the approval as FAILED, because its signature over
 * the statement's digest does not check against the passkey's recorded public key.
 */
import { generateKeyPairSync } from 'node:crypto';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, rulesDirWith, startStepgate } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';
import { cli } from '../audit/helpers.js';

const rulesDir = rulesDirWith(t, 'default: allow\nrules:\n  - name: ask-for-deletes\n    match: {command: DELETE}\n    action: step-up\n    factors: [passkey]\n    timeout: 60s\n');
const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
await db.query('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)');
const sg = await startStepgate(t, db, { rulesDir, configYaml: `state:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: a\n` });
// A real passkey's public key (COSE, EC2 P-256) on record: only its private key could sign an approval.
const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = publicKey.export({ format: 'jwk' });
const cose = Buffer.concat([
  Buffer.from([0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20]),
  Buffer.from(jwk.x!, 'base64url'),
  Buffer.from([0x22, 0x58, 0x20]),
  Buffer.from(jwk.y!, 'base64url'),
]);
await sg.identity.addPasskey({ id: 'cred-alice', user: ALICE.name, publicKey: new Uint8Array(cose), counter: 0, transports: [], name: "alice's key", deviceType: null, backedUp: false });

t.test('a forged approval written into the state database releases the statement, and audit verify reports it', async (t) => {
  const c = new pg.Client(sg.pgConfig());
  await c.connect();
  t.teardown(() => c.end().catch(() => {}));
  const held = c.query('DELETE FROM t WHERE id = 1');
  const hold = await waitFor('the hold in the state database', async () => {
    const r = await db.query(`SELECT id, record->'summary'->>'digest' AS digest FROM stepgate.holds WHERE status = 'pending'`, 'stepgate_state');
    return r.rows[0] as { id: string; digest: string } | undefined;
  });

  // The attacker: the row and the notice, as an instance would write them, with a made-up assertion.
  const forged = {
    status: 'approved',
    grant: false,
    approvers: [
      {
        user: ALICE.name,
        credentialId: 'cred-alice',
        factor: 'passkey',
        passkey: "alice's key",
        signed: {
          digest: hold.digest,
          nonce: 'AAAA',
          rp_id: 'localhost',
          authenticator_data: Buffer.alloc(37).toString('base64url'),
          client_data_json: Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge: 'AAAA', origin: 'http://localhost' })).toString('base64url'),
          signature: Buffer.alloc(64).toString('base64url'),
        },
      },
    ],
  };
  await db.query(
    `UPDATE stepgate.holds SET status = 'decided', outcome = '${JSON.stringify(forged).replace(/'/g, "''")}', decided_at = now(), decided_by = 'attacker' WHERE id = '${hold.id}';
     SELECT pg_notify('stepgate_holds', '{"e":"decided","id":"${hold.id}","by":"attacker"}')`,
    'stepgate_state',
  );
  t.equal((await held).rowCount, 1, 'the instance trusted the state database and released the DELETE (the documented limit)');

  const report = await waitFor('the outcome in the trail', async () => {
    const r = await cli(['audit', 'verify', '--data', sg.dataDir, '--local']);
    return /passkey approval/.test(r.stdout) && /FAILED/.test(r.stdout) ? r : null;
  });
  t.comment(report.stdout.split('\n').filter((l) => /FAILED|approval/.test(l)).join(' / '));
  t.not(report.code, 0, 'audit verify fails');
  t.match(report.stdout, /FAILED/, 'and says the approval does not check');
  t.match(report.stdout, /1 FAILED/, 'one passkey approval failed its signature check');
});
