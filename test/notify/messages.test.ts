/**
 * The webhook bodies: the Slack rendering stays within Slack's limits (a message with one section over
 * 3000 characters is refused whole) and escapes its control characters; the preview summary reads as
 * the card's.
 */
import t from 'tap';
import { previewSummary, slackBody, type NotifyEvent } from '../../src/notify/messages.js';

const base: NotifyEvent = {
  event: 'held',
  challenge: 'abc',
  url: 'http://localhost:6480/c/abc',
  kind: 'statement',
  user: 'alice',
  database: 'shop',
  application: 'psql',
  client: '127.0.0.1',
  rule: 'step-up-delete',
  rules: ['step-up-delete'],
  file: '00.yaml',
  message: 'Ask a <DBA> & wait',
  statements: [{ command: 'DELETE', tables: ['orders'], sql: "DELETE FROM orders WHERE note = '" + '&'.repeat(1480) + "'", truncated: false }],
  omitted_statements: 0,
  preview: 'DELETE 9812 (9,812 rows); locks public.orders',
  approvers: ['1 of dba'],
  created_at: '2026-01-01T00:00:00.000Z',
  expires_at: '2026-01-01T00:02:00.000Z',
};

t.test('Slack: within the limits, escaped, cut visibly', async (t) => {
  const body = slackBody(base);
  const texts: string[] = [];
  for (const b of body.blocks as { text?: { text: string }; fields?: { text: string }[]; elements?: { text: string }[] }[]) {
    if (b.text) texts.push(b.text.text);
    for (const f of b.fields ?? []) texts.push(f.text);
    for (const e of b.elements ?? []) texts.push(e.text);
  }
  for (const x of texts) t.ok(x.length <= 3000, `a text of ${x.length} characters`);
  const sql = texts.find((x) => x.startsWith('```'))!;
  t.match(sql, /&amp;…?/);
  t.notMatch(sql, /&a?m?p?…/, 'not cut inside an entity');
  t.match(sql, /\n…```$/, 'the cut is shown');
  t.ok(texts.some((x) => x === 'Ask a &lt;DBA&gt; &amp; wait'), 'the message escaped');
  t.ok(texts.some((x) => x === 'Preview: DELETE 9812 (9,812 rows); locks public.orders'));
  t.equal(body.text, 'Waiting for approval: alice: DELETE on orders in shop (DELETE 9812 (9,812 rows); locks public.orders): http://localhost:6480/c/abc');
  t.match(slackBody({ ...base, event: 'decided', status: 'rejected', by: ['bob'], reason: 'not now' }).text, /^Rejected: alice: DELETE on orders in shop by bob/);
  t.match(slackBody({ ...base, kind: 'connect', statements: [], event: 'decided', status: 'expired' }).text, /^Ended \(expired\): alice: login to shop/);
});

t.test('preview summaries', async (t) => {
  t.equal(previewSummary(null), null);
  t.equal(previewSummary({ status: 'ran', tags: ['DELETE 9812'], rows: 9812, locks: ['public.orders'], notices: [] }), 'DELETE 9812 (9,812 rows); locks public.orders');
  t.equal(previewSummary({ status: 'ran', tags: ['UPDATE 1'], rows: 1, locks: [], notices: [] }), 'UPDATE 1 (1 row)');
  t.equal(previewSummary({ status: 'unavailable', reason: 'VACUUM cannot run inside a transaction block', estimatedRows: 1200 }), 'no preview: VACUUM cannot run inside a transaction block (planner estimate: 1,200 rows)');
  t.equal(previewSummary({ status: 'failed', error: { severity: 'ERROR', code: '23503', message: 'violates foreign key' } }), 'failed: 23503 violates foreign key');
});
