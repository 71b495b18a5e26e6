/**
 * What stepgate tells a client about a statement it does not simply forward: the notice while it is held
 * for step-up, and the errors that replace it when it is denied, not approved, or cannot be recorded.
 * SQLSTATEs follow the server's meaning: 42501 (insufficient privilege) for a refusal by policy, 57014
 * (query canceled) for a hold the user withdrew, 58030 (I/O error) when the audit trail cannot record.
 */
import type { ErrorFields } from '../protocol/backend-messages.js';
import type { Decision } from '../rules/types.js';
import { describePreview, type PreviewReport } from './preview.js';
import type { StatementInfo } from '../sql/types.js';
import type { HoldOutcome } from '../stepup/types.js';

function describeStatements(statements: StatementInfo[]): string {
  return statements.map((s) => `${s.command} (${s.classes.join(', ')})`).join('; ');
}

export function auditUnavailableError(failure: string | null | undefined): ErrorFields {
  return {
    severity: 'ERROR',
    code: '58030',
    message: 'stepgate: the audit trail is unavailable, so this statement cannot run',
    detail: failure ? `The audit store failed: ${failure}` : undefined,
    hint: 'An administrator must look at the stepgate log and the data directory.',
  };
}

export function denyError(decision: Decision, statements: StatementInfo[]): ErrorFields {
  return {
    severity: 'ERROR',
    code: '42501',
    message: `stepgate: statement denied by rule "${decision.rule ?? 'default'}"${decision.message ? `: ${decision.message}` : ''}`,
    detail: `Statement: ${describeStatements(statements)}. ${decision.reason}`,
  };
}

/** A preview affected more rows than the rule's `max_rows`: rolled back, nobody asked. */
export function maxRowsError(decision: Decision, rows: number): ErrorFields {
  return {
    severity: 'ERROR',
    code: '42501',
    message: `stepgate: statement denied by rule "${decision.rule ?? 'default'}": it affects ${rows.toLocaleString('en-US')} rows, more than max_rows ${decision.maxRows!.toLocaleString('en-US')}`,
    detail: 'stepgate ran it uncommitted to count the rows and rolled it back; nothing changed.',
    hint: 'Split the change into smaller statements, or ask a DBA to change the rule.',
  };
}

export function holdError(outcome: HoldOutcome, decision: Decision): ErrorFields {
  const rule = `rule "${decision.rule ?? 'default'}"`;
  switch (outcome.status) {
    case 'cancelled':
      return { severity: 'ERROR', code: '57014', message: 'canceling statement due to user request', detail: `The statement was held for step-up by ${rule} and withdrawn.` };
    case 'rejected':
      return {
        severity: 'ERROR',
        code: '42501',
        message: `stepgate: statement rejected by ${outcome.by}${outcome.reason ? `: ${outcome.reason}` : ''}`,
        detail: `The statement was held for step-up by ${rule}.`,
      };
    case 'expired':
      return {
        severity: 'ERROR',
        code: '42501',
        message: `stepgate: step-up timed out after ${Math.round(decision.timeoutMs / 1000)} s: nobody approved the statement`,
        detail: `The statement was held for step-up by ${rule}.`,
        hint: 'Run it again and approve it in the stepgate console.',
      };
    case 'unavailable':
      return {
        severity: 'ERROR',
        code: '42501',
        message: `stepgate: step-up required by ${rule}${decision.message ? `: ${decision.message}` : ''}`,
        detail: outcome.reason,
      };
    default:
      return { severity: 'ERROR', code: '42501', message: 'stepgate: statement not approved' };
  }
}

export function heldNotice(statements: StatementInfo[], decision: Decision, url: string | null, preview: PreviewReport | null = null): ErrorFields {
  const ask = decision.approvers?.groups.length
    ? `It needs ${decision.approvers.count > 1 ? `${decision.approvers.count} approvals` : 'an approval'} by ${decision.approvers.groups.join(', ')} (not you) at ${url}`
    : `Approve it with your passkey at ${url}`;
  return {
    severity: 'NOTICE',
    code: '01000',
    message: `stepgate: ${describeStatements(statements)} held for step-up by rule "${decision.rule ?? 'default'}"${decision.message ? `: ${decision.message}` : ''}`,
    detail: preview === null ? ask : `${ask}. Its ${describePreview(preview)}; nothing is committed before the approval.`,
    hint: `It waits ${Math.round(decision.timeoutMs / 1000)} s; press Ctrl-C to withdraw it.`,
  };
}
