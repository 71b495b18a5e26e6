/**
 * Export records for SIEMs: JSON Lines (one object per event, the stored body under `data`) and CSV (one
 * row per event, the fields most searches need as columns). Field names are stable; see docs/audit.md.
 */
import { iso, type OutcomeData } from './format.js';
import type { AuditEvent, SessionFacts } from './read.js';

export interface ExportRecord {
  seq: number;
  time: string;
  time_ms: number;
  /** Connection id (UUID); null for the audit trail's own events. */
  session: string | null;
  session_no: number;
  session_seq: number;
  kind: string;
  user: string | null;
  database: string | null;
  client_address: string | null;
  application: string | null;
  /** The stored, hashed body (JSON.stringify(data) reproduces it byte for byte). */
  data: Record<string, unknown>;
  hash: string;
  /** The previous event's hash: sha256(prev_hash + "\n" + seq\tsession_no\tsession_seq\ttime_ms\tkind\tJSON.stringify(data)) = hash. */
  prev_hash: string | null;
}

export function exportRecord(e: AuditEvent & { prevHash: string | null }, facts: SessionFacts): ExportRecord {
  const s = e.session === 0 ? null : facts.get(e.session);
  return {
    seq: e.seq,
    time: iso(e.time),
    time_ms: e.time,
    session: s?.connection ?? null,
    session_no: e.session,
    session_seq: e.sseq,
    kind: e.kind,
    user: s?.user ?? null,
    database: s?.database ?? null,
    client_address: s?.client ?? null,
    application: s?.application ?? null,
    data: e.data,
    hash: e.hash,
    prev_hash: e.prevHash,
  };
}

export const CSV_COLUMNS = [
  'seq',
  'time',
  'session',
  'session_seq',
  'kind',
  'user',
  'database',
  'client_address',
  'application',
  'sql',
  'commands',
  'classes',
  'tables',
  'action',
  'rule',
  'rule_file',
  'statement_seq',
  'tag',
  'rows',
  'sqlstate',
  'message',
  'duration_ms',
  'challenge',
  'status',
  'approvers',
  'detail',
  'hash',
] as const;

type Csv = Partial<Record<(typeof CSV_COLUMNS)[number], string | number | boolean | null>>;


export function csvRow(r: ExportRecord): string {
  const row: Csv = {
    seq: r.seq,
    time: r.time,
    session: r.session,
    session_seq: r.session_seq,
    kind: r.kind,
    user: r.user,
    database: r.database,
    client_address: r.client_address,
    application: r.application,
    hash: r.hash,
  };
  const d = r.data;
  switch (r.kind) {
    case 'statement': {
      const statements = (d.statements as { command: string; classes: string[]; tables: { schema: string | null; name: string; access: string }[] }[]) ?? [];
      const decision = (d.decision as { action: string; rule: string | null; file: string | null; reason: string; message?: string }) ?? {};
      row.sql = d.sql as string;
      row.commands = statements.map((s) => s.command).join('; ');
      row.classes = [...new Set(statements.flatMap((s) => s.classes))].join(',');
      row.tables = [...new Set(statements.flatMap((s) => s.tables.map((t) => `${t.schema ? `${t.schema}.` : ''}${t.name}:${t.access}`)))].join(',');
      row.action = decision.action;
      row.rule = decision.rule;
      row.rule_file = decision.file;
      const outcomes = (d.outcomes as OutcomeData[]) ?? [];
      if (outcomes.length > 0) Object.assign(row, outcomeColumns(outcomes));
      if (d.params !== undefined) row.detail = JSON.stringify({ params: d.params });
      break;
    }
    case 'outcome':
      row.statement_seq = d.statement as number;
      Object.assign(row, outcomeColumns([d as unknown as OutcomeData]));
      break;
    case 'preview':
      row.statement_seq = d.statement as number;
      row.status = d.status as string;
      if (d.tags !== undefined) row.tag = (d.tags as string[]).join('; ');
      if (d.rows !== undefined) row.rows = d.rows as number;
      if (d.sqlstate !== undefined) row.sqlstate = d.sqlstate as string;
      row.message = (d.message ?? d.reason ?? null) as string | null;
      row.detail = JSON.stringify({ locks: d.locks, notices: d.notices, estimated_rows: d.estimated_rows });
      break;
    case 'challenge.created':
      row.statement_seq = d.statement as number;
      row.challenge = d.challenge as string;
      break;
    case 'challenge.resolved': {
      row.statement_seq = d.statement as number;
      row.challenge = d.challenge as string | null;
      row.status = d.status as string;
      const approvers = (d.approvers as { user: string; credential: string | null }[] | undefined) ?? [];
      row.approvers = approvers.map((a) => (a.credential ? `${a.user}:${a.credential}` : a.user)).join(',');
      if (d.by !== undefined) row.approvers = d.by as string;
      if (d.reason !== undefined) row.message = d.reason as string;
      if (d.grant !== undefined) row.detail = JSON.stringify({ grant: d.grant });
      break;
    }
    case 'connection.start':
      row.detail = JSON.stringify({ tls: d.tls, server_pid: d.server_pid });
      break;
    case 'connection.end':
      row.message = d.reason as string;
      row.duration_ms = d.duration_ms as number;
      row.detail = JSON.stringify({ bytes_in: d.bytes_in, bytes_out: d.bytes_out });
      break;
    default:
      row.detail = JSON.stringify(d);
  }
  return CSV_COLUMNS.map((c) => csvField(row[c])).join(',');
}

function outcomeColumns(outcomes: OutcomeData[]): Csv {
  const join = (f: (o: OutcomeData) => string | number | null | undefined): string => outcomes.map((o) => String(f(o) ?? '')).join('; ');
  const one = outcomes.length === 1;
  return {
    tag: join((o) => (o.skipped ? 'skipped' : o.tag)),
    rows: one ? (outcomes[0]!.rows ?? null) : join((o) => o.rows),
    sqlstate: outcomes.some((o) => o.sqlstate) ? join((o) => o.sqlstate) : null,
    message: outcomes.some((o) => o.message) ? join((o) => o.message) : null,
    duration_ms: Math.round(outcomes.reduce((sum, o) => sum + (o.duration_ms ?? 0), 0) * 1000) / 1000,
  };
}

export function csvField(v: string | number | boolean | null | undefined): string {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvHeader(): string {
  return CSV_COLUMNS.join(',');
}
