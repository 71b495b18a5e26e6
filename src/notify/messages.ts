/**
 * What a webhook says about a held (or decided) statement: one plain event (the generic JSON body) and
 * its Slack rendering (`{text, blocks}`, also understood by Mattermost and Rocket.Chat incoming webhooks).
 *
 * Invariants: SQL comes from the broker's challenge, already redacted (src/sql/redact.ts, as the console
 * shows it) and is cut to SQL_MAX characters; bind parameters are never included; nothing here knows a
 * webhook's secret or URL.
 */
import type { PreviewReport } from '../proxy/preview.js';
import type { Challenge } from '../stepup/broker.js';
import type { HoldOutcome } from '../stepup/types.js';

/** Characters of SQL per statement in a notification (Slack limits a section to 3000). */
export const SQL_MAX = 1500;
/** Statements listed per notification; the rest are counted. */
export const STATEMENTS_MAX = 5;

export type NotifyEventKind = 'held' | 'decided';
export const NOTIFY_EVENTS: readonly NotifyEventKind[] = ['held', 'decided'];

/** The generic JSON body (format: json). Field names are part of the documented contract. */
export interface NotifyEvent {
  event: NotifyEventKind;
  /** The challenge id; the console link is `url` (…/c/<challenge>). */
  challenge: string;
  url: string;
  kind: 'statement' | 'connect';
  user: string;
  database: string;
  application: string;
  client: string;
  /** The deciding rule (`default` when the file's default asked) and every rule that asked. */
  rule: string;
  rules: string[];
  file: string | null;
  message: string;
  statements: { command: string; tables: string[]; sql: string; truncated: boolean }[];
  omitted_statements: number;
  /** What the preview found ("DELETE 9812 (9,812 rows); locks orders"), null when none was asked for. */
  preview: string | null;
  /** Who must approve: `author` or "1 of dba". */
  approvers: string[];
  created_at: string;
  expires_at: string;
  /** decided only: approved, rejected, expired, cancelled, withdrawn, shutdown, unavailable. */
  status?: HoldOutcome['status'];
  by?: string[];
  reason?: string;
}

export function previewSummary(report: PreviewReport | null | undefined): string | null {
  if (!report) return null;
  switch (report.status) {
    case 'ran': {
      const rows = `${report.rows.toLocaleString('en-US')} row${report.rows === 1 ? '' : 's'}`;
      const locks = report.locks.length ? `; locks ${report.locks.join(', ')}` : '';
      return `${report.tags.join('; ')} (${rows})${locks}`;
    }
    case 'failed':
      return `failed: ${report.error.code} ${report.error.message}`;
    case 'unavailable':
      return `no preview: ${report.reason}${report.estimatedRows !== undefined ? ` (planner estimate: ${report.estimatedRows.toLocaleString('en-US')} rows)` : ''}`;
  }
}

export function notifyEvent(kind: NotifyEventKind, c: Challenge, url: string, outcome?: HoldOutcome): NotifyEvent {
  const d = c.request.decision;
  const ev: NotifyEvent = {
    event: kind,
    challenge: c.id,
    url,
    kind: c.kind,
    user: c.user,
    database: c.request.database,
    application: c.request.application,
    client: c.request.clientAddress,
    rule: d.rule ?? 'default',
    rules: [...new Set(c.entries.map((e) => e.rule ?? 'default'))],
    file: d.file,
    message: d.message,
    statements: c.statements.slice(0, STATEMENTS_MAX).map((s) => ({
      command: s.command,
      tables: s.tables,
      sql: s.sql.length > SQL_MAX ? s.sql.slice(0, SQL_MAX) : s.sql,
      truncated: s.sql.length > SQL_MAX || s.omitted > 0,
    })),
    omitted_statements: Math.max(0, c.statementCount - Math.min(STATEMENTS_MAX, c.statements.length)),
    preview: previewSummary(c.request.preview),
    approvers: c.entries.map((e) => ((e.approvers?.groups.length ?? 0) > 0 ? `${Math.max(1, e.approvers!.count)} of ${e.approvers!.groups.join(', ')}` : 'author')),
    created_at: new Date(c.createdAt).toISOString(),
    expires_at: new Date(c.expiresAt).toISOString(),
  };
  if (outcome) {
    ev.status = outcome.status;
    if (outcome.status === 'approved') ev.by = outcome.approvers.map((a) => a.user);
    if (outcome.status === 'rejected') {
      ev.by = [outcome.by];
      ev.reason = outcome.reason;
    }
    if (outcome.status === 'unavailable') ev.reason = outcome.reason;
  }
  return ev;
}

/** One line: "alice: DELETE on orders in shop". */
export function headline(ev: NotifyEvent): string {
  if (ev.kind === 'connect') return `${ev.user}: login to ${ev.database}`;
  const parts = ev.statements.map((s) => s.command + (s.tables.length ? ` on ${s.tables.join(', ')}` : ''));
  const more = ev.omitted_statements > 0 ? ` and ${ev.omitted_statements} more` : '';
  return `${ev.user}: ${parts.join('; ')}${more} in ${ev.database}`;
}

/** Slack's mrkdwn: &, < and > are control characters. */
function esc(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Slack refuses a whole message whose section text exceeds 3000 characters: cut (escaping can grow text 5×). */
const SLACK_TEXT_MAX = 2900;
function cut(escaped: string, max = SLACK_TEXT_MAX): { text: string; cut: boolean } {
  if (escaped.length <= max) return { text: escaped, cut: false };
  // Never end inside an entity (&amp;).
  return { text: escaped.slice(0, max).replace(/&[a-z]*$/, ''), cut: true };
}

export function slackBody(ev: NotifyEvent): { text: string; blocks: unknown[] } {
  const title =
    ev.event === 'held'
      ? `Waiting for approval: ${headline(ev)}`
      : `${ev.status === 'approved' ? 'Approved' : ev.status === 'rejected' ? 'Rejected' : `Ended (${ev.status})`}: ${headline(ev)}${ev.by?.length ? ` by ${ev.by.join(', ')}` : ''}`;
  const facts = [`*Rule:* ${esc(ev.rule)}`, `*Approvers:* ${esc(ev.approvers.join('; '))}`, `*Application:* ${esc(ev.application || '-')}`, `*Client:* ${esc(ev.client)}`];
  const blocks: unknown[] = [
    { type: 'section', text: { type: 'mrkdwn', text: `*${cut(esc(title), 2000).text}*\n<${ev.url}|Open in the stepgate console>` } },
    { type: 'section', fields: facts.map((text) => ({ type: 'mrkdwn', text: cut(text, 1900).text })) },
  ];
  for (const s of ev.statements) {
    // A ``` inside the SQL would end the code block early.
    const sql = cut(esc(s.sql).replace(/```/g, '`\u200b``'));
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `\`\`\`${sql.text}${s.truncated || sql.cut ? '\n…' : ''}\`\`\`` } });
  }
  const context: string[] = [];
  if (ev.preview) context.push(`Preview: ${esc(ev.preview)}`);
  if (ev.message) context.push(esc(ev.message));
  if (ev.reason) context.push(`Reason: ${esc(ev.reason)}`);
  if (context.length) blocks.push({ type: 'context', elements: context.map((text) => ({ type: 'mrkdwn', text: cut(text, 2000).text })) });
  return { text: `${title}${ev.preview ? ` (${ev.preview})` : ''}: ${ev.url}`, blocks };
}
