/**
 * Step-up at connect: rules with `on: connect` decide the login itself, after the client authenticated
 * and before stepgate opens the server connection (like Teleport's per-session MFA, but only when the
 * rules say so, typically on risk signals: a new network after failed logins).
 *
 * - no connect rule matches: the login goes on at once;
 * - `deny`: FATAL 28000 with the rule's message;
 * - `step-up`: the client gets a NOTICE with the console link (after AuthenticationOk, where every
 *   client prints notices) and waits; the person (or the approvers the rule names) approves in the
 *   console. Approved: the login goes on. Rejected, timed out, or nobody able to approve: FATAL 28000
 *   with a message that says which. The client closing the connection withdraws the request.
 *
 * Every held login and its outcome are in the audit trail (`login.held`, `login.resolved`, with the
 * signals that fired), on disk before the login goes on.
 */
import type net from 'node:net';
import type { AuditSink } from '../audit/types.js';
import type { Logger } from '../log.js';
import * as backend from '../protocol/backend-messages.js';
import type { Decision, RuleSet, Subject } from '../rules/types.js';
import type { HoldOutcome, StepUpBroker } from '../stepup/types.js';

/** The login was refused; the client hears FATAL `sqlstate` with `message`. */
export class LoginRefused extends Error {
  constructor(
    message: string,
    readonly sqlstate: string,
    readonly extra: { detail?: string; hint?: string } = {},
    /** The client went away while it waited: nothing to send. */
    readonly gone = false,
  ) {
    super(message);
  }
}

export interface ConnectGateServices {
  rules(): RuleSet;
  stepUp: StepUpBroker;
  audit: AuditSink;
  log: Logger;
}

/**
 * Decides the login of `subject` and, for a step-up, waits for the outcome. Resolves when the login may
 * go on; throws LoginRefused otherwise. The caller has sent AuthenticationOk (the notice follows it).
 */
export async function gateLogin(connectionId: string, socket: net.Socket, subject: Subject, services: ConnectGateServices): Promise<Decision | null> {
  const decision = services.rules().decideConnect?.(subject) ?? null;
  if (decision === null) return null;
  const facts = {
    connection: connectionId,
    user: subject.user,
    database: subject.database,
    client: subject.clientAddress,
    application: subject.application,
    rule: decision.rule,
    file: decision.file,
    signals: decision.signals ?? [],
  };
  if (decision.action === 'deny') {
    services.audit.event?.('login.resolved', { ...facts, status: 'denied' });
    await durable(services);
    services.log.info('connection.login_denied', facts);
    throw new LoginRefused(`stepgate: login refused by rule "${decision.rule}"${decision.message ? `: ${decision.message}` : ''}`, '28000');
  }
  if (decision.action !== 'step-up') return decision;

  const hold = services.stepUp.hold({
    connectionId,
    user: subject.user,
    groups: subject.groups,
    database: subject.database,
    application: subject.application,
    clientAddress: subject.clientAddress,
    clientPort: socket.remotePort ?? null,
    statements: [],
    decision,
    kind: 'connect',
  });
  services.audit.event?.('login.held', { ...facts, challenge: hold.challengeId });
  if (!(await durable(services))) {
    hold.end('withdrawn');
    throw new LoginRefused('stepgate: the audit trail is unavailable, so no login can be approved now', '58030');
  }
  const gone = (): void => hold.end('withdrawn');
  socket.once('close', gone);
  if (hold.challengeId) {
    services.log.info('connection.login_held', { ...facts, challenge: hold.challengeId });
    socket.write(
      backend.noticeResponse({
        severity: 'NOTICE',
        code: '01000',
        message: `stepgate: this login is held for step-up by rule "${decision.rule}"${decision.message ? `: ${decision.message}` : ''}`,
        detail: `${decision.signals?.length ? `Signals: ${decision.signals.join('; ')}. ` : ''}${
          decision.approvers?.groups.length ? `It needs approval by ${decision.approvers.groups.join(', ')} at ${hold.url}` : `Approve it at ${hold.url}`
        }`,
        hint: `It waits ${Math.round(decision.timeoutMs / 1000)} s; close the connection to withdraw it.`,
      }),
    );
  }
  let outcome: HoldOutcome;
  try {
    outcome = await hold.outcome;
  } finally {
    socket.off('close', gone);
  }
  services.audit.event?.('login.resolved', { ...facts, challenge: hold.challengeId, ...outcomeFacts(outcome) });
  const recorded = await durable(services);
  if (outcome.status === 'withdrawn' || socket.destroyed) throw new LoginRefused('the client went away', '08006', {}, true);
  if (outcome.status === 'approved') {
    if (!recorded) throw new LoginRefused('stepgate: the audit trail is unavailable, so the approved login cannot be recorded', '58030');
    return decision;
  }
  throw new LoginRefused(refusalMessage(outcome, decision), '28000');
}

function refusalMessage(outcome: HoldOutcome, decision: Decision): string {
  const rule = `rule "${decision.rule}"`;
  switch (outcome.status) {
    case 'rejected':
      return `stepgate: login rejected by ${outcome.by}${outcome.reason ? `: ${outcome.reason}` : ''} (${rule})`;
    case 'expired':
      return `stepgate: login not approved within ${Math.round(decision.timeoutMs / 1000)} s (step-up timed out, ${rule})`;
    case 'unavailable':
      return `stepgate: login needs step-up (${rule}), which is not possible: ${outcome.reason}`;
    case 'shutdown':
      return 'stepgate: shutting down';
    default:
      return `stepgate: login not approved (${outcome.status}, ${rule})`;
  }
}

function outcomeFacts(o: HoldOutcome): Record<string, unknown> {
  switch (o.status) {
    case 'approved':
      return {
        status: o.status,
        // A passkey approval keeps its signed assertion (audit verify checks it, as for statements).
        approvers: o.approvers.map((a) => ({ user: a.user, credential: a.credentialId, factor: a.factor ?? 'passkey', ...(a.signed ? { passkey: a.passkey, signed: a.signed } : {}) })),
      };
    case 'rejected':
      return { status: o.status, by: o.by, reason: o.reason };
    case 'unavailable':
      return { status: o.status, reason: o.reason };
    default:
      return { status: o.status };
  }
}

async function durable(services: ConnectGateServices): Promise<boolean> {
  try {
    await services.audit.durable();
    return true;
  } catch (err) {
    services.log.error('audit.unavailable', { error: (err as Error).message });
    return false;
  }
}
