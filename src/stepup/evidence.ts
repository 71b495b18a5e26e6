/**
 * What a passkey approval signs, so that the audit trail alone proves it later.
 *
 * The approved statement is described canonically (ApprovalStatement: connection, user, database, the SQL
 * text and bind parameters as the audit trail records them, the deciding rule, and the preview's result
 * when there was one), and its digest is
 *
 *     digest    = hex(SHA-256(canonicalJson(description)))
 *     challenge = SHA-256("stepgate-approval-v1\n" + digest + "\n" + challengeId + "\n" + nonce)
 *
 * where `nonce` is 32 random bytes (base64url) made for each ceremony. `challenge` is the WebAuthn challenge
 * the authenticator signs (inside clientDataJSON), so the signature covers the statement, the hold it
 * answers and a one-time value. The console shows the digest's first 12 hex characters on the card.
 *
 * Invariants: both sides build the description with the same functions, from the same recorded forms
 * (src/audit/recorded.ts): `describeHold` from the live hold in the console, `describeRecorded` from the
 * events `stepgate audit verify` reads. Where the audit trail masks a secret in the text, the digest covers
 * the masked text (the trail never holds the secret). Canonical JSON: object keys sorted, no whitespace,
 * JSON.stringify's escaping (so the text has no raw newline and the separators above are unambiguous).
 */
import { createHash } from 'node:crypto';
import { plainPreview, previewBody, recordedParams, recordedSql } from '../audit/recorded.js';
import type { HoldRequest } from './types.js';

export const APPROVAL_DOMAIN = 'stepgate-approval-v1';

/** What a passkey approval commits to. */
export interface ApprovalStatement {
  v: 1;
  kind: 'statement' | 'connect';
  /** The session (connection id, as in connection.start). */
  connection: string;
  user: string;
  database: string;
  /** The message's text as recorded (secrets masked); null for a login. */
  sql: string | null;
  /** Bind parameters as recorded; null when not recorded. */
  params: (string | null)[] | null;
  rule: string | null;
  file: string | null;
  /** The preview event's body (without `statement`); null when none ran. */
  preview: Record<string, unknown> | null;
}

/**
 * A passkey assertion as recorded with its approval (base64url as the browser sent it), with what is
 * needed to recompute its challenge. The credential id is the approver entry's `credential`.
 */
export interface SignedAssertion {
  /** Hex digest of the approved statement's description. */
  digest: string;
  nonce: string;
  /** The relying party id the assertion is for (its hash is in authenticatorData). */
  rp_id: string;
  authenticator_data: string;
  client_data_json: string;
  signature: string;
}

/** JSON with object keys sorted at every level and no whitespace. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`not JSON: ${typeof value}`);
    return text;
  }
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(',')}}`;
}

export function statementDigest(description: ApprovalStatement): string {
  return createHash('sha256').update(canonicalJson(description)).digest('hex');
}

/** The WebAuthn challenge (32 bytes) of one approval ceremony. */
export function approvalChallenge(digest: string, challengeId: string, nonce: string): Buffer {
  return createHash('sha256').update(`${APPROVAL_DOMAIN}\n${digest}\n${challengeId}\n${nonce}`).digest();
}

/** The description of a held statement (or login), as the console sees it. */
export function describeHold(request: HoldRequest): ApprovalStatement {
  const base = {
    v: 1 as const,
    connection: request.connectionId,
    user: request.user,
    database: request.database,
    rule: request.decision.rule ?? null,
    file: request.decision.file ?? null,
  };
  if (request.kind === 'connect') return { ...base, kind: 'connect', sql: null, params: null, preview: null };
  const sql = request.sql ?? request.statements.map((s) => s.sql).join('; ');
  const recorded = recordedSql(sql);
  return {
    ...base,
    kind: 'statement',
    sql: recorded.text,
    params: recordedParams(sql, request.params ?? null),
    preview: request.preview ? previewBody(plainPreview(request.preview), recorded.fragments) : null,
  };
}

/** The description of an approved statement, from the events the audit trail recorded of it. */
export function describeRecorded(
  start: Record<string, unknown>,
  statement: Record<string, unknown>,
  preview: Record<string, unknown> | null,
): ApprovalStatement {
  const decision = (statement.decision ?? {}) as Record<string, unknown>;
  let previewFields: Record<string, unknown> | null = null;
  if (preview) {
    const { statement: _ignored, ...rest } = preview;
    previewFields = rest;
  }
  return {
    v: 1,
    kind: 'statement',
    connection: String(start.connection),
    user: String(start.user),
    database: String(start.database),
    sql: typeof statement.sql === 'string' ? statement.sql : null,
    params: Array.isArray(statement.params) ? (statement.params as (string | null)[]) : null,
    rule: typeof decision.rule === 'string' ? decision.rule : null,
    file: typeof decision.file === 'string' ? decision.file : null,
    preview: previewFields,
  };
}

/** The first 12 hex characters of a digest, as the card shows it. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 12);
}
