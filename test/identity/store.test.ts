/**
 * The identity store's behaviour, the same on both backends (SQLite: identity.db; PostgreSQL: the shared
 * state database): users and their checks, single sign-on links, issued credentials, TOTP and recovery
 * codes, WebAuthn handles, passkeys and their counters, enrollment links, secrets. Every change is
 * readable as soon as it resolves; every failed change rejects.
 */
import t from 'tap';
import type { NewPasskey } from '../../src/identity/store.js';
import { BACKENDS, openIdentity } from '../helpers/identity.js';
import { startPostgres } from '../helpers/postgres.js';

const pg = await startPostgres(t);

const key = (id: string, user: string, counter = 0): NewPasskey => ({ id, user, publicKey: new Uint8Array([1, 2, 3]), counter, transports: ['usb'], name: `key ${id}`, deviceType: 'singleDevice', backedUp: false });

for (const backend of BACKENDS) {
  t.test(backend, async (t) => {
    const { store } = await openIdentity(t, backend, pg);

    t.test('users', async (t) => {
      const ann = await store.addUser('ann', ['dev', 'dba', 'dev'], 'SCRAM-SHA-256$x');
      t.same(ann.groups, ['dba', 'dev'], 'groups deduplicated and sorted');
      t.match(store.getUser('ann'), { name: 'ann', groups: ['dba', 'dev'], verifier: 'SCRAM-SHA-256$x', ssoSubject: null, disabled: false });
      await t.rejects(store.addUser('ann', [], null), /user "ann" already exists/);
      await t.rejects(store.addUser('bad,name', [], null), /must not contain/);
      await t.rejects(store.addUser('x', ['no spaces'], null), /group "no spaces"/);
      t.equal(store.getUser('x'), null, 'nothing stored by a refused change');
      await store.addUser('abe', [], null);
      t.same(store.listUsers().map((u) => u.name), ['abe', 'ann'], 'by name');
      await store.setGroups('ann', ['ops']);
      await store.setVerifier('ann', 'SCRAM-SHA-256$y');
      await store.setDisabled('ann', true);
      t.match(store.getUser('ann'), { groups: ['ops'], verifier: 'SCRAM-SHA-256$y', disabled: true });
      for (const change of [store.setGroups('nobody', []), store.setVerifier('nobody', 'v'), store.setDisabled('nobody', true)]) await t.rejects(change, /no user "nobody"/);
      t.equal(await store.removeUser('abe'), true);
      t.equal(await store.removeUser('abe'), false);
      t.equal(store.getUser('abe'), null);
    });

    t.test('single sign-on links', async (t) => {
      const first = await store.linkSsoUser('idp|1', 'sso-sam', ['eng', 'not valid'], 'sam@example.com', 1000);
      t.match(first, { created: true, linked: false, user: { name: 'sso-sam', groups: ['eng'], email: 'sam@example.com', ssoSubject: 'idp|1' } }, 'unusable groups dropped');
      t.equal(store.userBySubject('idp|1')?.name, 'sso-sam');
      const older = await store.linkSsoUser('idp|1', 'sso-sam', ['old'], null, 500);
      t.match(older, { created: false, linked: false, user: { groups: ['eng'], email: 'sam@example.com' } }, 'claims older than the last sign-in do not replace groups');
      await store.addUser('local-lee', ['dev'], null);
      t.match(await store.linkSsoUser('idp|2', 'local-lee', [], null, 0), { created: false, linked: true, user: { name: 'local-lee', ssoSubject: 'idp|2' } }, 'an existing user is linked');
      await t.rejects(store.linkSsoUser('idp|3', 'local-lee', [], null, 0), /linked to another single sign-on identity/);
      t.equal(store.userBySubject('idp|3'), null);
    });

    t.test('issued credentials', async (t) => {
      await store.addUser('cy', [], null);
      const now = Date.now();
      const a = await store.addCredential('cy', 'v-a', 'laptop', 60_000, now - 2);
      const b = await store.addCredential('cy', 'v-b', 'desktop', 60_000, now - 1);
      t.same(store.activeCredentials('cy', now).map((c) => [c.id, c.verifier]), [[b.id, 'v-b'], [a.id, 'v-a']], 'newest first, with verifiers');
      t.same(store.activeCredentials('cy', now + 60_000), [], 'expired ones do not work');
      t.equal(await store.credentialUsed(a.id, now), true);
      t.ok(store.activeCredentials('cy', now).find((c) => c.id === a.id)!.lastUsedAt, 'its use is recorded');
      t.equal(await store.revokeCredential('cy', a.id, now), true);
      t.equal(await store.revokeCredential('cy', a.id, now), false, 'once');
      t.equal(await store.credentialUsed(a.id, now), false, 'a revoked credential is refused');
      t.equal(await store.credentialUsed(b.id, now + 60_000), false, 'an expired one too');
      for (let i = 0; i < 25; i++) await store.addCredential('cy', `v-${i}`, 'many', 60_000, now + i);
      t.equal(store.activeCredentials('cy', now).length, 20, 'at most 20 per user');
      await t.rejects(store.addCredential('nobody', 'v', 'x', 1000), /no user "nobody"/);
      t.same(store.credentialSalt('cy'), store.credentialSalt('cy'), 'one salt per user');
      t.notSame(store.credentialSalt('cy'), store.credentialSalt('ann'));
    });

    t.test('TOTP and recovery codes', async (t) => {
      await store.addUser('tia', [], null);
      t.equal(store.totpSecret('tia'), null);
      await store.setTotp('tia', 'SECRET', 10, [Buffer.from('r1'), Buffer.from('r2'), Buffer.from('r1')]);
      t.same(store.totpSecret('tia'), { secret: 'SECRET', lastStep: 10 });
      t.equal(store.recoveryCodesLeft('tia'), 2, 'duplicates kept once');
      t.equal(await store.useTotpStep('tia', 10), false, 'the confirmed step cannot be used again');
      t.equal(await store.useTotpStep('tia', 12), true);
      t.equal(await store.useTotpStep('tia', 11), false, 'nor an earlier one');
      t.equal(store.totpSecret('tia')!.lastStep, 12);
      t.equal(await store.useRecoveryCode('tia', Buffer.from('r1')), true);
      t.equal(await store.useRecoveryCode('tia', Buffer.from('r1')), false, 'once');
      t.equal(await store.useRecoveryCode('tia', Buffer.from('nope')), false);
      t.equal(store.recoveryCodesLeft('tia'), 1);
      await store.setRecoveryCodes('tia', [Buffer.from('n1'), Buffer.from('n2'), Buffer.from('n3')]);
      t.equal(store.recoveryCodesLeft('tia'), 3, 'replaced');
      t.ok(store.usersWithFactors(true).has('tia'));
      t.notOk(store.usersWithFactors(false).has('tia'), 'TOTP counts only where the rules allow it');
      t.equal(await store.removeTotp('tia'), true);
      t.equal(await store.removeTotp('tia'), false);
      t.equal(store.totpSecret('tia'), null);
      t.equal(store.recoveryCodesLeft('tia'), 0);
    });

    t.test('passkeys, handles and counters', async (t) => {
      await store.addUser('pat', [], null);
      t.equal(store.webauthnHandle('pat'), null, 'no handle before the first registration');
      const handle = await store.ensureWebauthnHandle('pat');
      t.equal(handle.length, 32);
      t.same(await store.ensureWebauthnHandle('pat'), handle, 'stable');
      t.same(store.webauthnHandle('pat'), handle);
      await t.rejects(store.ensureWebauthnHandle('nobody'), /no user "nobody"/);
      const p1 = await store.addPasskey(key('k1', 'pat'));
      t.match(p1, { id: 'k1', user: 'pat', counter: 0, transports: ['usb'], lastUsedAt: null });
      await store.addPasskey(key('k2', 'pat', 7));
      await t.rejects(store.addPasskey(key('k1', 'pat')), /already registered/);
      await t.rejects(store.addPasskey(key('k9', 'nobody')), /no user "nobody"/);
      t.same(store.passkeys('pat').map((p) => p.id), ['k1', 'k2']);
      t.equal(store.passkeyCount('pat'), 2);
      t.same([...store.passkey('k1')!.publicKey], [1, 2, 3]);
      t.ok(store.usersWithPasskeys().has('pat'));
      t.equal(await store.recordPasskeyUse('k2', 7, 9), true, 'forward');
      t.equal(store.passkey('k2')!.counter, 9);
      t.ok(store.passkey('k2')!.lastUsedAt);
      t.equal(await store.recordPasskeyUse('k2', 7, 10), false, 'from a counter that is no longer current');
      t.equal(await store.recordPasskeyUse('k2', 9, 9), false, 'not forward');
      t.equal(await store.recordPasskeyUse('k2', 9, 3), false, 'backward');
      t.equal(await store.recordPasskeyUse('k1', 0, 0), true, 'an authenticator that does not count');
      t.equal(await store.renamePasskey('pat', 'k1', 'renamed'), true);
      t.equal(store.passkey('k1')!.name, 'renamed');
      t.equal(await store.renamePasskey('ann', 'k1', 'not hers'), false, "not another user's");
      t.equal(await store.removePasskey('pat', 'k1'), true);
      t.equal(store.passkey('k1'), null);
      t.equal(await store.removeUser('pat'), true);
      t.equal(store.passkey('k2'), null, "a removed user's passkeys go with them");
      t.equal(store.webauthnHandle('pat'), null);
    });

    t.test('enrollment links', async (t) => {
      await store.addUser('eve', [], null);
      const older = await store.issueEnrollment('eve');
      const link = await store.issueEnrollment('eve');
      t.equal(store.enrollmentUser(older.token), null, 'a new link ends older ones');
      t.equal(store.enrollmentUser(link.token), 'eve');
      t.equal(store.enrollmentUser('not-a-token'), null);
      t.equal(store.enrollmentUser(''), null);
      await t.rejects(store.issueEnrollment('nobody'), /no user "nobody"/);
      await store.addPasskey(key('taken', 'eve'));
      await t.rejects(store.enrollPasskey(link.token, key('taken', 'eve')), /already registered/);
      t.equal(store.enrollmentUser(link.token), 'eve', 'a failed registration leaves the link usable');
      await t.rejects(store.enrollPasskey(link.token, key('e2', 'ann')), /already used or has expired/, "not for another user's passkey");
      const results = await Promise.allSettled([store.enrollPasskey(link.token, key('e1', 'eve')), store.enrollPasskey(link.token, key('e3', 'eve'))]);
      t.same(results.map((r) => r.status).sort(), ['fulfilled', 'rejected'], 'of two registrations with one link, one wins');
      t.equal(store.enrollmentUser(link.token), null, 'used up');
      t.equal(store.passkeyCount('eve'), 2);
      const expired = await store.issueEnrollment('eve', -1);
      t.equal(store.enrollmentUser(expired.token), null, 'expired');
      await t.rejects(store.enrollPasskey(expired.token, key('e4', 'eve')), /already used or has expired/);
    });

    t.test('secrets', async (t) => {
      const a = store.secret('console-session-key');
      t.equal(a.length, 32);
      t.same(store.secret('console-session-key'), a, 'stable');
      t.notSame(store.secret('scram-decoy'), a, 'one per name');
    });
  });
}
