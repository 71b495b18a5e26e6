/**
 * Signed approvals (issue #14 part 2), end to end: a real PostgreSQL, stepgate in this process, the console
 * in a real Chromium with a virtual passkey. A passkey approval signs a challenge that commits to the held
 * statement (and its preview), the card shows the digest, the audit trail keeps the whole assertion and the
 * passkey's public key, and `stepgate audit verify` re-checks every approval from the trail alone: a forged
 * signature, an assertion copied onto another approval and an edited statement are each reported, also
 * after the chain was rewritten (re-hashed and its checkpoints re-signed, as an administrator with the
 * signing key could). TOTP approvals are counted apart. Replay names the passkey.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import pg from 'pg';
import t from 'tap';
import { canonical, chainHash, GENESIS_HASH, type CheckpointPayload, type EventRow } from '../../src/audit/format.js';
import { loadOrCreateSigningKey, signCheckpoint } from '../../src/audit/keys.js';
import { enrollmentLink } from '../../src/console/url.js';
import { totpCode, newTotpSecret } from '../../src/identity/totp.js';
import { approvalChallenge, statementDigest, type ApprovalStatement, type SignedAssertion } from '../../src/stepup/evidence.js';
import { AuditStore } from '../../src/audit/store.js';
import { capturedLog, cli, copyDataDir, readEvents, tamper, type ParsedEvent } from '../audit/helpers.js';
import { startPostgres } from '../helpers/postgres.js';
import { ALICE, startStepgate } from '../helpers/stepgate.js';
import { approveOnPage, challengeCard, enroll, launchBrowser, newPerson, waitForChallenge } from './browser.js';

declare const window: unknown;

const rulesDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-signed-rules-'));
t.teardown(() => fs.rmSync(rulesDir, { recursive: true, force: true }));
fs.writeFileSync(
  path.join(rulesDir, '00-signed.yaml'),
  `default: allow
rules:
  - name: held-login
    on: connect
    match: {application: held-login}
    action: step-up
  - name: preview-orders
    match: {command: DELETE, tables: [orders]}
    action: step-up
    preview: true
  - name: step-up-delete
    match: {command: DELETE}
    action: step-up
    message: Deleting rows needs your passkey.
`,
);

const db = await startPostgres(t);
await db.query(`
  CREATE TABLE items (id int PRIMARY KEY);
  CREATE TABLE orders (id int PRIMARY KEY);
  INSERT INTO items SELECT generate_series(1, 10);
  INSERT INTO orders SELECT generate_series(1, 10);
`);
// Bind parameters recorded (an approval then signs those the trail records).
const sg = await startStepgate(t, db, { rulesDir, users: [ALICE], configYaml: 'audit:\n  bind_parameters: true\n' });
const browser = await launchBrowser(t);
const alice = await newPerson(browser, 'alice');
const page = alice.page;
await enroll(alice, enrollmentLink(sg.consoleUrl!, (await sg.identity.issueEnrollment('alice')).token), 'Chrome on Linux');

const client = new pg.Client({ ...sg.pgConfig(ALICE), application_name: 'signed-test' });
client.on('error', () => {});
await client.connect();
t.teardown(() => client.end().catch(() => {}));

interface Held {
  id: string;
  shown: string;
  connection: string;
  file: string | null;
}

/** Runs a statement that is held, waits for its card, reads the digest the card shows. */
async function hold(sql: string | pg.QueryConfig): Promise<{ held: Held; result: Promise<pg.QueryResult> }> {
  const result = client.query(sql);
  result.catch(() => {});
  const id = await waitForChallenge(page);
  const card = challengeCard(page, id);
  const shown = ((await card.locator('.digest code').textContent()) ?? '').trim();
  const request = sg.broker!.get(id)!.request;
  return { held: { id, shown, connection: request.connectionId, file: request.decision.file }, result };
}

let plain: { held: Held; result: Promise<pg.QueryResult> };
let previewed: { held: Held; result: Promise<pg.QueryResult> };
let coded: { held: Held; result: Promise<pg.QueryResult> };
let bound: { held: Held; result: Promise<pg.QueryResult> };
let loginId = '';
let secretive: { held: Held; result: Promise<pg.QueryResult> };
const SECRETIVE = "DELETE FROM items WHERE id = 5 AND md5(id::text) <> crypt('hunter2-secret', 'salt')";
let events: ParsedEvent[] = [];
const dataDir = sg.dataDir;

t.test('approvals are recorded: with the passkey (plain, previewed, with bind parameters, with a masked secret) and with a TOTP code', async (t) => {
  plain = await hold('DELETE FROM items WHERE id = 1');
  t.equal(await approveOnPage(page, plain.held.id), 'approved');
  t.equal((await plain.result).rowCount, 1);

  bound = await hold({ text: 'DELETE FROM items WHERE id = $1', values: [4] } as never);
  t.equal(await approveOnPage(page, bound.held.id), 'approved');
  t.equal((await bound.result).rowCount, 1);

  // The trail masks the secret; the approval signs the text as recorded (pgcrypto is not installed: it fails after approval).
  secretive = await hold(SECRETIVE);
  t.equal(await approveOnPage(page, secretive.held.id), 'approved');
  await t.rejects(secretive.result, { code: '42883' });

  previewed = await hold('DELETE FROM orders WHERE id <= 3');
  t.equal(await approveOnPage(page, previewed.held.id), 'approved');
  t.equal((await previewed.result).rowCount, 3);

  // The page recomputes the challenge before it asks the authenticator: options whose challenge does not
  // commit to the card's digest (here: another nonce than the one the challenge was made with) are refused.
  const other = await hold('DELETE FROM items WHERE id = 6');
  await page.route('**/api/challenges/*/options', async (route) => {
    const response = await route.fetch();
    const json = (await response.json()) as { approval: { nonce: string } };
    json.approval.nonce = 'A'.repeat(43);
    await route.fulfill({ response, json });
  });
  t.match(await approveOnPage(page, other.held.id), /^error: stepgate asked to sign something other than what this card shows; nothing was signed/);
  await page.unroute('**/api/challenges/*/options');
  await challengeCard(page, other.held.id).locator('[data-action="reject"]').click();
  await t.rejects(other.result, { code: '42501' });

  // A login held at connect: its approval is signed the same way (kind "connect", no statement).
  const held = new pg.Client({ ...sg.pgConfig(ALICE), application_name: 'held-login' });
  held.on('error', () => {});
  const connecting = held.connect();
  loginId = await waitForChallenge(page);
  t.equal(await approveOnPage(page, loginId), 'approved');
  await connecting;
  await held.end();

  const secret = newTotpSecret();
  await sg.identity.setTotp('alice', secret, -1, []);
  coded = await hold('DELETE FROM items WHERE id = 2');
  const byCode = await page.evaluate(
    async ([id, code]) => {
      const w = window as unknown as { stepgateConsole: { api(method: string, path: string, body?: unknown): Promise<unknown> } };
      return w.stepgateConsole.api('POST', `/api/challenges/${id}/approve-code`, { code });
    },
    [coded.held.id, totpCode(secret, Date.now())],
  );
  t.match(byCode, { status: 'approved' });
  t.equal((await coded.result).rowCount, 1);

  await client.end();
  await sg.app.close(); // keeps the data directory (the helper's teardown removes it)

  events = readEvents(dataDir);
});

const resolvedOf = (challenge: string): ParsedEvent => events.find((e) => e.kind === 'challenge.resolved' && e.data.challenge === challenge)!;

function expected(h: Held, sql: string, rule: string, preview: Record<string, unknown> | null): ApprovalStatement {
  return { v: 1, kind: 'statement', connection: h.connection, user: 'alice', database: 'postgres', sql, params: null, rule, file: h.file, preview };
}

t.test('the passkey signed a challenge that commits to the held statement, and the card showed its digest', async (t) => {
  const plainStatement = expected(plain.held, 'DELETE FROM items WHERE id = 1', 'step-up-delete', null);
  const previewStatement = expected(previewed.held, 'DELETE FROM orders WHERE id <= 3', 'preview-orders', { status: 'ran', tags: ['DELETE 3'], rows: 3, locks: ['orders'], notices: [] });
  // Held at its Parse (node-postgres sends Parse, Bind, Execute at once): judged before its parameters were
  // bound, so none are recorded for it, and the approval signs the text with its placeholder.
  const boundStatement = expected(bound.held, 'DELETE FROM items WHERE id = $1', 'step-up-delete', null);
  t.equal(events.find((e) => e.kind === 'statement' && e.data.sql === 'DELETE FROM items WHERE id = $1')!.data.params, undefined);
  const recordedSecretive = events.find((e) => e.kind === 'statement' && String(e.data.sql).startsWith('DELETE FROM items WHERE id = 5'))!.data.sql as string;
  t.notMatch(recordedSecretive, 'hunter2', 'the trail masks the secret');
  const secretiveStatement = expected(secretive.held, recordedSecretive, 'step-up-delete', null);
  for (const [h, statement] of [
    [plain.held, plainStatement],
    [previewed.held, previewStatement],
    [bound.held, boundStatement],
    [secretive.held, secretiveStatement],
  ] as const) {
    const digest = statementDigest(statement);
    t.equal(h.shown, digest.slice(0, 12), 'the card shows the digest of the statement as it will run');
    const approver = resolvedOf(h.id).data.approvers[0];
    t.match(approver, { user: 'alice', passkey: 'Chrome on Linux' });
    const signed = approver.signed as SignedAssertion;
    t.equal(signed.digest, digest, 'the recorded digest');
    t.match(signed, { nonce: /^[A-Za-z0-9_-]{43}$/, rp_id: 'localhost', authenticator_data: /\S/, signature: /\S/ });
    const clientData = JSON.parse(Buffer.from(signed.client_data_json, 'base64url').toString('utf8')) as { type: string; challenge: string };
    t.equal(clientData.type, 'webauthn.get');
    t.equal(clientData.challenge, approvalChallenge(digest, h.id, signed.nonce).toString('base64url'), 'the signed challenge is the digest with the challenge id and nonce');
  }
  const enrolled = events.filter((e) => e.kind === 'passkey.enrolled');
  t.equal(enrolled.length, 1, 'the enrollment is in the trail');
  t.match(enrolled[0]!.data, { user: 'alice', name: 'Chrome on Linux', public_key: /^[A-Za-z0-9_-]{40,}$/, via: 'enrollment link' });
  t.equal(enrolled[0]!.session, 0, 'a system event');
  t.notOk('signed' in resolvedOf(coded.held.id).data.approvers[0], 'a TOTP approval has nothing signed');
});

t.test('audit verify re-checks every passkey approval; TOTP is counted apart', async (t) => {
  const r = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(r.code, 0, r.stdout);
  t.match(r.stdout, /approvals: +5 passkey approvals signature-checked; 1 by authenticator app or recovery code \(no signature to check\)/);
  t.match(r.stdout, 'OK: the audit trail is intact.');
});

t.test('replay names the passkey', async (t) => {
  const r = await cli(['audit', 'replay', plain.held.connection, '--instant', '--data', dataDir]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, 'approved by alice with passkey "Chrome on Linux" (signed)');
  t.match(r.stdout, 'approved by alice with an authenticator app code');
  t.notMatch(r.stdout, resolvedOf(plain.held.id).data.approvers[0].credential as string, 'not the raw credential id');
});

/** What an administrator with the signing key could do after editing: re-hash the chain and re-sign its checkpoints. */
async function rewriteChain(dir: string): Promise<void> {
  const { key } = await loadOrCreateSigningKey(dir);
  const jobs: { id: number; payload: CheckpointPayload }[] = [];
  tamper(dir, (d: Database.Database) => {
    let prev = GENESIS_HASH;
    const hashes = new Map<number, string>();
    const update = d.prepare('UPDATE events SET hash = ? WHERE seq = ?');
    for (const row of d.prepare('SELECT seq, session, sseq, time, kind, body, hash FROM events ORDER BY seq').all() as EventRow[]) {
      prev = chainHash(prev, canonical(row.seq, row.session, row.sseq, row.time, row.kind, row.body));
      update.run(prev, row.seq);
      hashes.set(row.seq, prev);
    }
    for (const cp of d.prepare('SELECT id, seq, jws FROM checkpoints').all() as { id: number; seq: number; jws: string }[]) {
      const payload = JSON.parse(Buffer.from(cp.jws.split('.')[1]!, 'base64url').toString('utf8')) as CheckpointPayload;
      jobs.push({ id: cp.id, payload: { ...payload, hash: hashes.get(cp.seq)! } });
    }
  });
  const signed = await Promise.all(jobs.map(async (j) => ({ ...j, jws: await signCheckpoint(key, j.payload) })));
  tamper(dir, (d) => {
    for (const j of signed) d.prepare('UPDATE checkpoints SET hash = ?, jws = ? WHERE id = ?').run(j.payload.hash, j.jws, j.id);
  });
}

/** Replaces one event's body (by seq). */
function setBody(dir: string, seq: number, body: unknown): void {
  tamper(dir, (d) => d.prepare('UPDATE events SET body = ? WHERE seq = ?').run(typeof body === 'string' ? body : JSON.stringify(body), seq));
}

const CHAIN_BREAK = /was altered|was inserted|chain breaks|was rewritten|does not match the chain|missing/;

t.test('a rewritten chain with nothing changed verifies (the rewrite itself is faithful)', async (t) => {
  const copy = copyDataDir(t, dataDir);
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 0, r.stdout);
});

t.test('a forged assertion (signature bytes changed) is caught by its signature, even in a rewritten chain', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const e = resolvedOf(plain.held.id);
  const data = structuredClone(e.data);
  const sig = Buffer.from(data.approvers[0].signed.signature as string, 'base64url');
  sig[sig.length - 1] ^= 0x01;
  data.approvers[0].signed.signature = sig.toString('base64url');
  setBody(copy, e.seq, data);

  const edited = await cli(['audit', 'verify', '--data', copy]);
  t.equal(edited.code, 1);
  t.match(edited.stdout, CHAIN_BREAK, 'the chain check sees the edit');
  t.match(edited.stdout, 'carries a signature that is not valid', 'and the signature check, as a finding of its own');

  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.notMatch(r.stdout, CHAIN_BREAK, 'the chain alone holds after the rewrite');
  t.match(
    r.stdout,
    new RegExp(`FAILED: event ${e.seq} \\(challenge\\.resolved, session \\d+ #\\d+, [^)]+\\): the approval by alice with passkey "Chrome on Linux" \\([^)]+\\) carries a signature that is not valid for this passkey's public key`),
  );
  t.match(r.stdout, /4 passkey approvals signature-checked, 1 FAILED/);
});

t.test('a replayed assertion (one approval\'s copied onto another) is caught', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const from = resolvedOf(plain.held.id);
  const onto = resolvedOf(previewed.held.id);
  setBody(copy, onto.seq, { ...onto.data, approvers: from.data.approvers });
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.notMatch(r.stdout, CHAIN_BREAK);
  t.match(r.stdout, new RegExp(`FAILED: event ${onto.seq} \\(challenge\\.resolved, .*carries an assertion that does not answer this approval's challenge \\(${previewed.held.id}\\): it was made for another approval \\(replayed\\)`));
});

t.test('an edited statement event (SQL changed) is caught: the approval was signed for another statement', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const statement = events.find((e) => e.kind === 'statement' && e.data.sql === 'DELETE FROM items WHERE id = 1')!;
  setBody(copy, statement.seq, statement.body.replace('WHERE id = 1', 'WHERE id = 7'));
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.notMatch(r.stdout, CHAIN_BREAK);
  const e = resolvedOf(plain.held.id);
  t.match(r.stdout, new RegExp(`FAILED: event ${e.seq} \\(challenge\\.resolved, .*was signed for another statement than the one recorded: the statement \\(session \\d+ #${e.data.statement}\\) was changed after it was approved`));
});

t.test('a login approval is signed and checked: an edited login.resolved event is caught', async (t) => {
  const e = events.find((x) => x.kind === 'login.resolved' && x.data.challenge === loginId)!;
  t.match(e.data, { status: 'approved', user: 'alice', application: 'held-login', approvers: [{ user: 'alice', passkey: 'Chrome on Linux', signed: { digest: /^[0-9a-f]{64}$/ } }] });
  const copy = copyDataDir(t, dataDir);
  setBody(copy, e.seq, { ...e.data, database: 'payroll' });
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.match(r.stdout, new RegExp(`FAILED: event ${e.seq} \\(login\\.resolved, session 0 .*was signed for another login than the one recorded: the login \\(this event\\) was changed after it was approved`));
});

t.test('an edited preview (rows changed) is caught too', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const preview = events.find((e) => e.kind === 'preview' && e.data.status === 'ran')!;
  setBody(copy, preview.seq, { ...preview.data, tags: ['DELETE 1'], rows: 1 });
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.match(r.stdout, 'was signed for another statement than the one recorded');
});

t.test('removing the assertion from an approval is caught (the trail signs approvals)', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const e = resolvedOf(previewed.held.id);
  const data = structuredClone(e.data);
  delete data.approvers[0].signed;
  setBody(copy, e.seq, data);
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.match(r.stdout, 'has no signed assertion');
});

t.test('a passkey whose public key is not in the trail: its approvals are a warning (not checked), not a pass', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const enrolled = events.find((e) => e.kind === 'passkey.enrolled')!;
  setBody(copy, enrolled.seq, { ...enrolled.data, credential: 'some-other-passkey' });
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 3, r.stdout);
  t.match(r.stdout, /WARNING: event \d+ \(challenge\.resolved, .*\): the approval by alice with passkey "Chrome on Linux" \([^)]+\) cannot be signature-checked: the trail holds no public key for this passkey/);
  t.match(r.stdout, /approvals: +0 passkey approvals signature-checked; 1 by authenticator app or recovery code \(no signature to check\); 5 signed, but whose passkey key or statement is not in the trail \(not checked, see the warnings\)/);
});

t.test('a passkey recorded for someone else cannot approve for the approver', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const enrolled = events.find((e) => e.kind === 'passkey.enrolled')!;
  setBody(copy, enrolled.seq, { ...enrolled.data, user: 'mallory' });
  await rewriteChain(copy);
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 1, r.stdout);
  t.match(r.stdout, 'names a passkey that was enrolled for mallory');
});

t.test('retention that prunes a statement but keeps its approval: a warning (not checked), not a break', async (t) => {
  const copy = copyDataDir(t, dataDir);
  const resolved = resolvedOf(plain.held.id);
  const statement = events.find((e) => e.kind === 'statement' && e.data.sql === 'DELETE FROM items WHERE id = 1')!;
  t.ok(statement.time < resolved.time, 'the statement was recorded before its approval');
  const retentionMs = 60_000;
  const store = await AuditStore.open({ dataDir: copy, log: capturedLog().log, retentionMs, pruneDelayMs: 3_600_000 });
  // Everything before the approval goes: the statement with it.
  t.match(await store.prune(resolved.time + retentionMs), { pruned: resolved.seq - 1 });
  await store.close();
  const r = await cli(['audit', 'verify', '--data', copy]);
  t.equal(r.code, 3, r.stdout);
  t.notMatch(r.stdout, 'FAILED');
  t.match(r.stdout, new RegExp(`WARNING: event ${resolved.seq} \\(challenge\\.resolved, .*cannot be checked: the statement it approves was pruned by retention`));
});
