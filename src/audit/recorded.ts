/**
 * How a statement's text, bind parameters and preview look once recorded in the audit trail: secrets
 * masked, long texts cut. The writer (worker thread) records them with these functions, and the console
 * describes what an approval signs with the same ones (src/stepup/evidence.ts), so that `stepgate audit
 * verify` can recompute an approval's digest from the recorded events alone.
 *
 * Invariant: pure and deterministic (the same input gives the same output in every thread and process).
 */
import { mayHoldSecrets, redactFreeText, redactParams, redactStatement, scrubMessage } from './secrets.js';
import type { PreviewReport } from '../proxy/preview.js';
import type { PlainPreview } from './records.js';

/** Longest SQL text recorded; the rest is cut (and said so). */
export const LONGEST_SQL = 1_000_000;

const NO_FRAGMENTS: string[] = [];

/** A statement's text as recorded, and the secret fragments masked in it (to mask them in messages too). */
export function recordedSql(sql: string): { text: string; fragments: string[] } {
  let text = sql;
  let fragments = NO_FRAGMENTS;
  if (mayHoldSecrets(sql)) {
    const redacted = redactStatement(sql);
    text = redacted.text;
    fragments = redacted.fragments;
  }
  if (text.length > LONGEST_SQL) text = `${text.slice(0, LONGEST_SQL)}… [${text.length} characters in all]`;
  return { text, fragments };
}

/** Bind parameters as recorded (null: none recorded). */
export function recordedParams(sql: string, params: (string | null)[] | null): (string | null)[] | null {
  return params ? redactParams(sql, params) : null;
}

/** A preview's event body as recorded, without its `statement` field. */
export function previewBody(p: PlainPreview, fragments: string[]): Record<string, unknown> {
  const clean = (text: string): string => redactFreeText(fragments.length > 0 ? scrubMessage(text, fragments) : text);
  const body: Record<string, unknown> = { status: p.status };
  if (p.status === 'ran') {
    body.tags = p.tags;
    body.rows = p.rows;
    body.locks = p.locks;
    body.notices = p.notices.map(clean);
  } else if (p.status === 'failed') {
    body.sqlstate = p.error.code;
    body.message = clean(p.error.message);
  } else {
    body.reason = p.reason;
    if (p.estimatedRows !== undefined) body.estimated_rows = p.estimatedRows;
  }
  return body;
}

/** A preview report as plain data (it crosses to the worker thread); an error keeps only what is recorded of it. */
export function plainPreview(report: PreviewReport | PlainPreview): PlainPreview {
  if (report.status === 'failed') return { status: 'failed', error: { code: report.error.code, message: report.error.message } };
  if (report.status === 'ran') return { status: 'ran', tags: [...report.tags], rows: report.rows, locks: [...report.locks], notices: [...report.notices] };
  return report.estimatedRows === undefined ? { status: 'unavailable', reason: report.reason } : { status: 'unavailable', reason: report.reason, estimatedRows: report.estimatedRows };
}
