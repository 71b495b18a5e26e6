/**
 * The broker's rules without a browser: what a message needs when several rules held it, grants per rule
 * and scope, withdrawal, and approvals checked against who may give them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { IdentityStore } from '../../src/identity/store.js';
import { silentLogger } from '../../src/log.js';
import type { Decision, StepUpRequirement } from '../../src/rules/types.js';
import type { StatementInfo } from '../../src/sql/types.js';
import { ConsoleBroker } from '../../src/stepup/broker.js';
import type { HoldRequest } from '../../src/stepup/types.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-broker-'));
const identity = new IdentityStore(dir);
t.teardown(() => {
  identity.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
identity.addUser('alice', ['dev'], null);
identity.addUser('bob', ['dba'], null);
for (const [user, id] of [['alice', 'cred-a'], ['bob', 'cred-b']]) {
  identity.addPasskey({ id: id!, user: user!, publicKey: new Uint8Array([1]), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });
}

const broker = new ConsoleBroker({ identity, log: silentLogger, consoleUrl: () => 'http://localhost:1' });
t.teardown(() => broker.close());

const statement: StatementInfo = {
  sql: 'DELETE FROM t',
  command: 'DELETE',
  commands: ['DELETE'],
  classes: ['write'],
  tables: [{ schema: null, name: 't', access: 'write' }],
  columns: [],
  functions: [],
  flags: ['no_where'],
  reasons: [],
  changesParsing: false,
};

function req(entries: Partial<StepUpRequirement>[], connectionId = 'c1', user = 'alice'): HoldRequest {
  const stepUps: StepUpRequirement[] = entries.map((e, i) => ({
    rule: `r${i}`,
    file: 'f.yaml',
    statementIndex: i,
    grantMs: 0,
    grantScope: 'connection',
    timeoutMs: 60_000,
    ...e,
  }));
  const first = stepUps[0]!;
  const decision: Decision = {
    action: 'step-up',
    rule: first.rule,
    file: first.file,
    message: '',
    reason: '',
    grantMs: first.grantMs,
    grantScope: first.grantScope,
    timeoutMs: first.timeoutMs,
    statementIndex: 0,
    stepUps,
    ...(first.approvers ? { approvers: first.approvers } : {}),
  };
  return {
    connectionId,
    user,
    groups: identity.getUser(user)!.groups,
    database: 'db',
    application: 'app',
    clientAddress: '127.0.0.1',
    statements: stepUps.map(() => statement),
    decision,
  };
}

t.test('a grant covers only its rule: a message that also needs another rule is held', async (t) => {
  const granted = { rule: 'granted', grantMs: 60_000 };
  const other = { rule: 'other' };
  const hold = broker.hold(req([granted, other]));
  t.ok(hold.challengeId);
  t.same(broker.approve(hold.challengeId!, 'alice', 'cred-a'), { ok: true, status: 'approved', remaining: 0 });
  t.match(await hold.outcome, { status: 'approved', grant: false });

  const onlyGranted = broker.hold(req([granted]));
  t.equal(onlyGranted.challengeId, null, 'the granted rule alone passes');
  t.match(await onlyGranted.outcome, { status: 'approved', grant: true, approvers: [{ user: 'alice', credentialId: null }] });

  const both = broker.hold(req([granted, other]));
  t.ok(both.challengeId, 'together with the ungranted rule it is held');
  both.end('cancelled');
  t.same(await both.outcome, { status: 'cancelled' });

  const elsewhere = broker.hold(req([granted], 'c2'));
  t.ok(elsewhere.challengeId, 'connection scope: another connection is asked');
  elsewhere.end('withdrawn');

  broker.connectionClosed('c1');
  const after = broker.hold(req([granted]));
  t.ok(after.challengeId, 'closing the connection drops its grants');
  after.end('withdrawn');
});

t.test('a grant of a rule whose grant was removed no longer applies', async (t) => {
  const hold = broker.hold(req([{ rule: 'g2', grantMs: 60_000 }], 'c3'));
  broker.approve(hold.challengeId!, 'alice', 'cred-a');
  await hold.outcome;
  const now = broker.hold(req([{ rule: 'g2', grantMs: 0 }], 'c3'));
  t.ok(now.challengeId, 'the rule says no grant now: asked');
  now.end('withdrawn');
});

t.test('approvers: only members other than the author count; others are refused', async (t) => {
  const hold = broker.hold(req([{ rule: 'dba', approvers: { groups: ['dba'], count: 1 } }], 'c4', 'alice'));
  const id = hold.challengeId!;
  t.match(broker.approve(id, 'alice', 'cred-a'), { ok: false, status: 403 }, 'the author');
  t.match(broker.mayApprove(id, 'nobody'), { ok: false, status: 404 }, 'a stranger does not even see it');
  t.equal(broker.pendingFor('bob', ['dba']).length, 1, 'the approver sees it');
  t.equal(broker.pendingFor('carol', ['dev']).length, 0, 'others do not');
  t.same(broker.approve(id, 'bob', 'cred-b'), { ok: true, status: 'approved', remaining: 0 });
  t.same(await hold.outcome, { status: 'approved', approvers: [{ user: 'bob', credentialId: 'cred-b', factor: 'passkey' }], grant: false });
});

t.test('nobody able to approve: unavailable at once', async (t) => {
  const hold = broker.hold(req([{ rule: 'two', approvers: { groups: ['dba'], count: 2 } }]));
  t.equal(hold.challengeId, null);
  t.match(await hold.outcome, { status: 'unavailable', reason: /needs 2 approvers from dba/ });
  identity.addUser('erin', [], null);
  const none = broker.hold(req([{ rule: 'self' }], 'c5', 'erin'));
  t.match(await none.outcome, { status: 'unavailable', reason: /erin has no factor yet/ });
});

t.test('timeout: expired', async (t) => {
  const hold = broker.hold({ ...req([{ rule: 'fast', timeoutMs: 30 }]), decision: { ...req([{ rule: 'fast', timeoutMs: 30 }]).decision, timeoutMs: 30 } });
  t.same(await hold.outcome, { status: 'expired' });
});

t.test('a rejection ends it with the reason, cleaned', async (t) => {
  const hold = broker.hold(req([{ rule: 'x' }], 'c6'));
  t.same(broker.reject(hold.challengeId!, 'alice', 'no\nway'), { ok: true });
  t.same(await hold.outcome, { status: 'rejected', by: 'alice', reason: 'no way' });
  t.match(broker.reject(hold.challengeId!, 'alice', ''), { ok: false, status: 404 }, 'only once');
});

t.test('a passkey approval carries an assertion signed for this statement\'s digest, and the outcome keeps it', async (t) => {
  const hold = broker.hold(req([{ rule: 'signed' }]));
  const c = broker.get(hold.challengeId!)!;
  t.match(c.digest, /^[0-9a-f]{64}$/);
  t.equal(broker.view(c, 'alice', ['dev']).digest, c.digest, 'the card gets the digest');
  const signed = { digest: c.digest, nonce: 'n', rp_id: 'localhost', authenticator_data: 'a', client_data_json: 'c', signature: 's' };
  t.match(broker.approve(c.id, 'alice', 'cred-a', 'passkey', { passkey: 'k', signed: { ...signed, digest: '0'.repeat(64) } }), { ok: false, status: 409 }, 'signed for another digest: refused');
  t.same(broker.approve(c.id, 'alice', 'cred-a', 'passkey', { passkey: 'k', signed }), { ok: true, status: 'approved', remaining: 0 });
  t.match(await hold.outcome, { status: 'approved', approvers: [{ user: 'alice', credentialId: 'cred-a', passkey: 'k', signed }] });
});
