/**
 * The contract between a session that holds a statement and whatever asks a person to approve it.
 */
import type { Decision, Factor } from '../rules/types.js';
import type { PreviewReport } from '../proxy/preview.js';
import type { StatementInfo } from '../sql/types.js';
import type { SignedAssertion } from './evidence.js';

export interface HoldRequest {
  connectionId: string;
  user: string;
  groups: string[];
  database: string;
  application: string;
  clientAddress: string;
  /**
   * Which terminal this is, so that approvers can tell two sessions of one person apart: the client's
   * port, the PostgreSQL backend's pid (null for a held login: no server session yet), when it connected.
   */
  clientPort?: number | null;
  serverPid?: number | null;
  connectedAt?: number | null;
  /** The statements held (one message's worth); empty for a login held by a rule with `on: connect`. */
  statements: StatementInfo[];
  /** The message's text as the server will read it, and its bind parameters when recorded (what an approval signs). */
  sql?: string;
  params?: (string | null)[] | null;
  decision: Decision;
  /** What a preview of them found (null: none was asked for). */
  preview?: PreviewReport | null;
  /** `connect`: the login itself is held (no statement yet). Default: statements. */
  kind?: 'statement' | 'connect';
}

export type HoldOutcome =
  | { status: 'approved'; approvers: Approver[]; grant: boolean }
  | { status: 'rejected'; by: string; reason: string }
  | { status: 'expired' }
  /** The client sent a CancelRequest. */
  | { status: 'cancelled' }
  /** The client went away. */
  | { status: 'withdrawn' }
  /** stepgate shut down while it waited (the statement did not run; the client got FATAL 57P01). */
  | { status: 'shutdown' }
  /** No way to ask anyone (step-up not set up): the statement is refused. */
  | { status: 'unavailable'; reason: string };

export interface Approver {
  user: string;
  credentialId: string | null;
  factor?: Factor | 'recovery';
  /** A passkey approval: the passkey's name then, and the assertion it signed (see evidence.ts). */
  passkey?: string;
  signed?: SignedAssertion;
}

export interface Hold {
  /** Null when the outcome was known at once (a grant, or step-up unavailable). */
  challengeId: string | null;
  /** Where the person approves, for the notice sent to the client. */
  url: string | null;
  outcome: Promise<HoldOutcome>;
  /** Ends the hold early (client cancel or disconnect, or stepgate shutting down). */
  end(status: 'cancelled' | 'withdrawn' | 'shutdown'): void;
}

export interface StepUpBroker {
  hold(request: HoldRequest): Hold;
  /** The connection closed: withdraw its challenges and drop its connection-scoped grants. */
  connectionClosed(connectionId: string): void;
}
