/**
 * The broker's rules without a browser: what a message needs when several rules held it, grants per rule
 * and scope, withdrawal, and approvals checked against who may give them.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { silentLogger } from '../../src/log.js';
import type { Decision, StepUpRequirement } from '../../src/rules/types.js';
import type { StatementInfo } from '../../src/sql/types.js';
import { NoAudit } from '../../src/audit/types.js';
import { ConsoleBroker } from '../../src/stepup/broker.js';
import { OutcomeTap } from '../../src/stepup/outcomes.js';
import type { HoldRequest } from '../../src/stepup/types.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-broker-'));
const identity = new SqliteIdentityStore(dir);
t.teardown(() => {
  identity.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
await identity.addUser('alice', ['dev'], null);
await identity.addUser('bob', ['dba'], null);
for (const [user, id] of [['alice', 'cred-a'], ['bob', 'cred-b']]) {
  await identity.addPasskey({ id: id!, user: user!, publicKey: new Uint8Array([1]), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });
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
  t.same(await broker.approve(hold.challengeId!, 'alice', 'cred-a'), { ok: true, status: 'approved', remaining: 0 });
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
  await broker.approve(hold.challengeId!, 'alice', 'cred-a');
  await hold.outcome;
  const now = broker.hold(req([{ rule: 'g2', grantMs: 0 }], 'c3'));
  t.ok(now.challengeId, 'the rule says no grant now: asked');
  now.end('withdrawn');
});

t.test('approvers: only members other than the author count; others are refused', async (t) => {
  const hold = broker.hold(req([{ rule: 'dba', approvers: { groups: ['dba'], count: 1 } }], 'c4', 'alice'));
  const id = hold.challengeId!;
  t.match(await broker.approve(id, 'alice', 'cred-a'), { ok: false, refusal: 'not_allowed' }, 'the author');
  t.match(broker.mayApprove(id, 'nobody'), { ok: false, refusal: 'not_found' }, 'a stranger does not even see it');
  t.equal(broker.pendingFor('bob', ['dba']).length, 1, 'the approver sees it');
  t.equal(broker.pendingFor('carol', ['dev']).length, 0, 'others do not');
  t.same(await broker.approve(id, 'bob', 'cred-b'), { ok: true, status: 'approved', remaining: 0 });
  t.same(await hold.outcome, { status: 'approved', approvers: [{ user: 'bob', credentialId: 'cred-b', factor: 'passkey' }], grant: false });
});

t.test('nobody able to approve: unavailable at once', async (t) => {
  const hold = broker.hold(req([{ rule: 'two', approvers: { groups: ['dba'], count: 2 } }]));
  t.equal(hold.challengeId, null);
  t.match(await hold.outcome, { status: 'unavailable', reason: /needs 2 approvers from dba/ });
  await identity.addUser('erin', [], null);
  const none = broker.hold(req([{ rule: 'self' }], 'c5', 'erin'));
  t.match(await none.outcome, { status: 'unavailable', reason: /erin has no factor yet/ });
});

t.test('timeout: expired', async (t) => {
  const hold = broker.hold({ ...req([{ rule: 'fast', timeoutMs: 30 }]), decision: { ...req([{ rule: 'fast', timeoutMs: 30 }]).decision, timeoutMs: 30 } });
  t.same(await hold.outcome, { status: 'expired' });
});

t.test('a rejection ends it with the reason, cleaned', async (t) => {
  const hold = broker.hold(req([{ rule: 'x' }], 'c6'));
  t.same(await broker.reject(hold.challengeId!, 'alice', 'no\nway'), { ok: true });
  t.same(await hold.outcome, { status: 'rejected', by: 'alice', reason: 'no way' });
  t.match(await broker.reject(hold.challengeId!, 'alice', ''), { ok: false, refusal: 'not_found' }, 'only once');
});

t.test('what became of it: decided() for those who could see it, outcomes from the audit path (OutcomeTap)', async (t) => {
  const events: string[] = [];
  const detach = broker.addListener({
    challengeCreated() {},
    challengeUpdated() {},
    challengeResolved() {},
    grantsChanged() {},
    challengeOutcome(_c, r) {
      events.push(r.outcomes.map((o) => o.tag).join(','));
    },
  });
  t.teardown(detach);
  const audit = new OutcomeTap(new NoAudit(), broker);
  const request = { ...req([{ rule: 'dba', approvers: { groups: ['dba'], count: 1 } }, { rule: 'dba2', approvers: { groups: ['dba'], count: 1 } }], 'c7'), clientPort: 5001, serverPid: 77, connectedAt: 1000 };
  // As the gate does it: the statement recorded, then held.
  const statementId = audit.statement({ connectionId: 'c7', sql: 'DELETE FROM t; DELETE FROM t', statements: request.statements, decision: request.decision, params: null });
  const hold = broker.hold(request);
  const id = hold.challengeId!;
  audit.challengeCreated(statementId, id);
  t.match(broker.view(broker.get(id)!, 'bob', ['dba']).connection, { session: 'c7', clientAddress: '127.0.0.1', clientPort: 5001, serverPid: 77, connectedAt: 1000 });
  t.equal(broker.decided(id, 'alice', ['dev']), null, 'not decided yet');
  await broker.approve(id, 'bob', 'cred-b');
  const outcome = await hold.outcome;
  audit.challengeResolved(statementId, id, outcome);
  t.match(broker.decided(id, 'alice', ['dev']), { id, status: 'approved', by: 'bob', statementCount: 2, outcomes: [] }, 'the author sees it');
  t.equal(broker.decided(id, 'carol', ['dev']), null, 'someone who could not see it does not now either');

  audit.outcome(statementId, 0, { tag: 'DELETE 3', sqlstate: null, message: null, skipped: false, durationMs: 1 });
  audit.outcome(statementId, 1, { tag: null, sqlstate: '23503', message: 'violates a foreign key', skipped: false, durationMs: 1 });
  audit.outcome(statementId, 1, { tag: 'DELETE 9', sqlstate: null, message: null, skipped: false, durationMs: 1 });
  t.match(broker.decided(id, 'bob', ['dba'])!.outcomes, [
    { index: 0, tag: 'DELETE 3', rows: 3 },
    { index: 1, tag: null, rows: null, sqlstate: '23503' },
  ]);
  t.equal(broker.decided(id, 'bob', ['dba'])!.outcomes.length, 2, 'once per statement; the tap forgets it after the last');
  t.same(events, ['DELETE 3', 'DELETE 3,'], 'each outcome went to the listeners');

  // A rejected hold has no outcome to report.
  const other = audit.statement({ connectionId: 'c7', sql: 'DELETE FROM t', statements: [statement], decision: request.decision, params: null });
  const rejected = broker.hold(req([{ rule: 'x' }], 'c7'));
  audit.challengeCreated(other, rejected.challengeId!);
  await broker.reject(rejected.challengeId!, 'alice', '');
  audit.challengeResolved(other, rejected.challengeId!, await rejected.outcome);
  audit.outcome(other, 0, { tag: null, sqlstate: '42501', message: 'refused', skipped: false, durationMs: 0 });
  t.same(broker.decided(rejected.challengeId!, 'alice', ['dev'])!.outcomes, []);
});

t.test('a passkey approval carries an assertion signed for this statement\'s digest, and the outcome keeps it', async (t) => {
  const hold = broker.hold(req([{ rule: 'signed' }]));
  const c = broker.get(hold.challengeId!)!;
  t.match(c.digest, /^[0-9a-f]{64}$/);
  t.equal(broker.view(c, 'alice', ['dev']).digest, c.digest, 'the card gets the digest');
  const signed = { digest: c.digest, nonce: 'n', rp_id: 'localhost', authenticator_data: 'a', client_data_json: 'c', signature: 's' };
  t.match(await broker.approve(c.id, 'alice', 'cred-a', 'passkey', { passkey: 'k', signed: { ...signed, digest: '0'.repeat(64) } }), { ok: false, refusal: 'stale' }, 'signed for another digest: refused');
  t.same(await broker.approve(c.id, 'alice', 'cred-a', 'passkey', { passkey: 'k', signed }), { ok: true, status: 'approved', remaining: 0 });
  t.match(await hold.outcome, { status: 'approved', approvers: [{ user: 'alice', credentialId: 'cred-a', passkey: 'k', signed }] });
});
