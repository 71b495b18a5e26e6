/**
 * What a passkey approval signs (src/stepup/evidence.ts), without a browser: canonical JSON, the challenge
 * format pinned by a fixed vector (third parties recompute it from docs/audit.md), and the two sides of
 * the description agreeing: the console's (from the live hold) and verify's (from the events the real
 * audit writer recorded), also where the writer masks secrets in the text, in bind parameters and in a
 * preview's notices.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { AuditStore } from '../../src/audit/store.js';
import type { PreviewReport } from '../../src/proxy/preview.js';
import type { Decision } from '../../src/rules/types.js';
import type { StatementInfo } from '../../src/sql/types.js';
import { approvalChallenge, canonicalJson, describeHold, describeRecorded, statementDigest, type ApprovalStatement } from '../../src/stepup/evidence.js';
import type { HoldRequest } from '../../src/stepup/types.js';
import { capturedLog, readEvents } from '../audit/helpers.js';

t.test('canonical JSON: keys sorted at every level, no whitespace, undefined left out', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [{ d: null, c: 'x\ny' }], e: undefined }), '{"a":[{"c":"x\\ny","d":null}],"b":1}');
  t.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }));
  t.throws(() => canonicalJson(() => 1));
});

t.test('the digest and the challenge, as docs/audit.md says', async (t) => {
  const d: ApprovalStatement = { v: 1, kind: 'statement', connection: 'c-1', user: 'alice', database: 'shop', sql: 'DELETE FROM orders WHERE id = 7', params: null, rule: 'r', file: 'f.yaml', preview: null };
  const json = '{"connection":"c-1","database":"shop","file":"f.yaml","kind":"statement","params":null,"preview":null,"rule":"r","sql":"DELETE FROM orders WHERE id = 7","user":"alice","v":1}';
  t.equal(canonicalJson(d), json);
  const digest = statementDigest(d);
  t.equal(digest, createHash('sha256').update(json).digest('hex'));
  t.equal(digest, '343da7ac3e3e68d4618558afdaf51398e395d04c9c6f1527ebc2087b7c1f1b3c', 'a fixed vector');
  t.same(approvalChallenge(digest, 'ch', 'n0nce'), createHash('sha256').update(`stepgate-approval-v1\n${digest}\nch\nn0nce`).digest());
  t.not(approvalChallenge(digest, 'ch', 'n0nce').toString('hex'), approvalChallenge(digest, 'ch2', 'n0nce').toString('hex'), 'another challenge id, another challenge');
});

const info = (sql: string, command: string): StatementInfo =>
  ({ sql, command, commands: [command], classes: ['write'], tables: [], columns: [], functions: [], flags: [], reasons: [], changesParsing: false }) as unknown as StatementInfo;
const decision: Decision = { action: 'step-up', rule: 'held', file: 'h.yaml', message: 'm', reason: 'r', grantMs: 0, grantScope: 'connection', timeoutMs: 1000, statementIndex: 0 };

t.test('the console and verify describe the same statement: the writer masks secrets the same way', async (t) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-evidence-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const store = await AuditStore.open({ dataDir, log: capturedLog().log, bindParameters: true });
  store.connectionStart({ connectionId: 'conn-1', user: 'alice', database: 'shop', application: 'psql', clientAddress: '::1', tls: false, serverPid: 7 });

  const cases: { sql: string; params: (string | null)[] | null; preview: PreviewReport | null }[] = [
    { sql: 'DELETE FROM orders WHERE id = 7', params: null, preview: null },
    // The text and a notice echo a password: both are masked in the trail, and in what is signed.
    {
      sql: "UPDATE accounts SET pw = crypt('hunter2-very-secret', gen_salt('bf')) WHERE id = $1",
      params: ['42'],
      preview: { status: 'ran', tags: ['UPDATE 1'], rows: 1, locks: ['accounts'], notices: ['NOTICE: hashing hunter2-very-secret'] },
    },
    { sql: "SELECT dblink_exec('host=db password=s3cret-pw', 'DELETE FROM t')", params: ["postgres://u:pw1234@h/db"], preview: { status: 'unavailable', reason: 'it reaches outside the database', estimatedRows: 12 } },
  ];
  const ids: number[] = [];
  const requests: HoldRequest[] = [];
  for (const c of cases) {
    const id = store.statement({ connectionId: 'conn-1', sql: c.sql, statements: [info(c.sql, 'UPDATE')], decision, params: c.params });
    if (c.preview) store.preview(id, c.preview, null);
    ids.push(id);
    requests.push({ connectionId: 'conn-1', user: 'alice', groups: [], database: 'shop', application: 'psql', clientAddress: '::1', statements: [info(c.sql, 'UPDATE')], sql: c.sql, params: c.params, decision, preview: c.preview });
  }
  await store.close();

  const events = readEvents(dataDir);
  const start = events.find((e) => e.kind === 'connection.start')!.data;
  const statements = events.filter((e) => e.kind === 'statement');
  t.equal(statements.length, cases.length);
  for (let i = 0; i < cases.length; i++) {
    const s = statements[i]!;
    const preview = events.find((e) => e.kind === 'preview' && e.session === s.session && e.data.statement === s.sseq)?.data ?? null;
    const live = describeHold(requests[i]!);
    t.same(describeRecorded(start, s.data, preview), live, `case ${i}: the same description from the trail`);
    t.equal(statementDigest(describeRecorded(start, s.data, preview)), statementDigest(live));
    t.notMatch(canonicalJson(live), /hunter2|s3cret|pw1234/, `case ${i}: no secret in what is signed`);
  }
  // A statement that mentions a secret has all its parameters masked in the trail, and so in what is signed.
  t.match(describeHold(requests[1]!), { params: ['***'], preview: { status: 'ran', rows: 1, tags: ['UPDATE 1'] } });
});

t.test('a login held at connect is described without a statement', async (t) => {
  const d = describeHold({ connectionId: 'c', user: 'bob', groups: [], database: 'shop', application: '', clientAddress: '', statements: [], decision, kind: 'connect' });
  t.same(d, { v: 1, kind: 'connect', connection: 'c', user: 'bob', database: 'shop', sql: null, params: null, rule: 'held', file: 'h.yaml', preview: null });
});
