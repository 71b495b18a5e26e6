/**
 * Passkeys registered before the trail recorded their keys get a `passkey.enrolled` event at start, once:
 * a restart does not record them again, and passkeys the trail already holds are left alone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { recordMissingPasskeys } from '../../src/audit/passkey-keys.js';
import { AuditStore } from '../../src/audit/store.js';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import { capturedLog, readEvents } from './helpers.js';

t.test('keys of earlier passkeys are recorded once', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-passkey-keys-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const identity = new SqliteIdentityStore(dataDir);
  t.teardown(() => identity.close());
  await identity.addUser('alice', [], makeVerifier('pw'));
  const key = new Uint8Array([0xa5, 0x01, 0x02, 0x03, 0x26]);
  await identity.addPasskey({ id: 'cred-1', user: 'alice', publicKey: key, counter: 0, transports: [], name: 'Old laptop', deviceType: 'singleDevice', backedUp: false });
  const { log } = capturedLog();

  let store = await AuditStore.open({ dataDir, log });
  t.equal(recordMissingPasskeys(dataDir, identity, store, log).recorded, 1);
  await store.close();
  store = await AuditStore.open({ dataDir, log });
  t.equal(recordMissingPasskeys(dataDir, identity, store, log).recorded, 0, 'not again after a restart');
  await identity.addPasskey({ id: 'cred-2', user: 'alice', publicKey: key, counter: 0, transports: [], name: 'New phone', deviceType: 'multiDevice', backedUp: true });
  t.equal(recordMissingPasskeys(dataDir, identity, store, log).recorded, 1, 'only the one not recorded yet');
  await store.close();

  const enrolled = readEvents(dataDir, "kind = 'passkey.enrolled'");
  t.same(
    enrolled.map((e) => [e.session, e.data.credential, e.data.name, e.data.public_key]),
    [
      [0, 'cred-1', 'Old laptop', Buffer.from(key).toString('base64url')],
      [0, 'cred-2', 'New phone', Buffer.from(key).toString('base64url')],
    ],
  );
  t.match(enrolled[0]!.data, { user: 'alice', via: /recorded at start/, enrolled: /^\d{4}-/ });
});
