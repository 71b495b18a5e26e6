/**
 * The console's wire protocol: the WebSocket messages (hub.ts) and the JSON bodies of the API (server.ts),
 * as one set of types shared by the server side and the page (src/console/client, compiled with its own
 * tsconfig and the DOM library).
 *
 * Invariants: this file is types only (it emits nothing a browser would run) and imports nothing, so the
 * page's compiler can include it without Node's types; the server builds every message it sends with these
 * types (`satisfies` or annotated returns), so a change here breaks the build on the side that lags.
 */

/** A factor an approval is made with (rules/types.ts Factor). */
export type Factor = 'passkey' | 'totp';

/** How a held statement ended (stepup/types.ts HoldOutcome['status']). */
export type ResolvedStatus = 'approved' | 'rejected' | 'expired' | 'cancelled' | 'withdrawn' | 'shutdown' | 'unavailable';

/** One statement as the console shows it (SQL redacted). */
export interface StatementView {
  sql: string;
  /** Characters of the SQL not shown (it was too long); 0 when shown in full. */
  omitted: number;
  command: string;
  classes: string[];
  tables: string[];
  flags: string[];
  reasons: string[];
}

/** One step-up rule that asked, and what it needs. */
export interface RequirementView {
  rule: string;
  file: string | null;
  /** Empty: the author approves. */
  groups: string[];
  count: number;
  /** Approvals that count for it so far. */
  approvedBy: string[];
  satisfied: boolean;
  grantMs: number;
  grantScope: 'connection' | 'user';
  /** The factors that may approve for this rule. */
  factors: Factor[];
  /** The risk signals that held for this rule. */
  signals: string[];
}

/**
 * Which terminal a held statement comes from: enough to tell two sessions of the same person apart. The
 * session id's short form is the one the audit trail lists; the server pid is what `SELECT pg_backend_pid()`
 * answers in that terminal.
 */
export interface ConnectionView {
  /** The session id (the audit trail's), and its short form. */
  connectionId: string;
  session: string;
  clientAddress: string;
  /** Null when not known (a local socket). */
  clientPort: number | null;
  /** The PostgreSQL backend's pid; null for a held login (no server session yet). */
  serverPid: number | null;
  /** When the client connected (ms). */
  connectedAt: number | null;
}

/** What a preview found (proxy/preview.ts PreviewReport, with errors reduced to their text). */
export type PreviewView =
  | { status: 'ran'; tags: string[]; rows: number; locks: string[]; notices: string[] }
  | { status: 'failed'; sqlstate: string | null; message: string }
  | { status: 'unavailable'; reason: string; estimatedRows: number | null };

/** A pending challenge as one viewer sees it. */
export interface ChallengeView {
  id: string;
  /** `connect`: a login held by a rule with `on: connect` (no statement). */
  kind: 'statement' | 'connect';
  url: string;
  user: string;
  database: string;
  application: string;
  clientAddress: string;
  connection: ConnectionView;
  /** What the preview found; null when the rules asked for none. */
  preview: PreviewView | null;
  statements: StatementView[];
  /** Statements of the message not listed (too many); their commands are in `omittedCommands`. */
  omittedStatements: number;
  omittedCommands: string[];
  /** The deciding rule, its message and why it matched. */
  rule: string;
  file: string | null;
  message: string;
  reason: string;
  requirements: RequirementView[];
  /** Every risk signal that held for a rule that asked (shown on the card). */
  signals: string[];
  approvals: { user: string; at: number; factor: Factor }[];
  /** Hex digest of what a passkey approval signs (stepup/evidence.ts); the card shows its first 12 characters. */
  digest: string;
  createdAt: number;
  expiresAt: number;
  /**
   * This viewer: whether they wrote it, may approve it (and with which of their factors, as the rules
   * allow), and why not.
   */
  you: { author: boolean; canApprove: boolean; canReject: boolean; note: string | null; factors: Factor[] };
}

/** What one statement of an approved message did once it ran (the audit trail's outcome record). */
export interface OutcomeView {
  /** Position in its message. */
  index: number;
  /** Command tag ("DELETE 7"); '' for an empty query; null when it failed or was skipped. */
  tag: string | null;
  /** Rows from the tag; null when the tag has no count. */
  rows: number | null;
  sqlstate: string | null;
  message: string | null;
  skipped: boolean;
  durationMs: number;
  /** When the outcome was recorded (ms). */
  at: number;
}

/** A decided challenge: the decision, and (for an approval) what the statements did afterwards. */
export interface ResolvedView {
  id: string;
  kind: 'statement' | 'connect';
  user: string;
  database: string;
  rule: string;
  summary: string;
  status: ResolvedStatus;
  by: string | null;
  reason: string | null;
  /** When it was decided (ms). */
  at: number;
  connection: ConnectionView;
  preview: PreviewView | null;
  /** Statements in the message (outcomes arrive one by one until there are this many). */
  statementCount: number;
  outcomes: OutcomeView[];
}

export interface GrantView {
  id: string;
  rule: string;
  file: string | null;
  user: string;
  scope: 'connection' | 'user';
  connectionId: string | null;
  database: string;
  application: string;
  clientAddress: string;
  approvedBy: string[];
  createdAt: number;
  expiresAt: number;
  /** This viewer holds it (else they approved it). */
  yours: boolean;
}

export interface PasskeyView {
  id: string;
  name: string;
  createdAt: number;
  lastUsedAt: number | null;
  backedUp: boolean;
  deviceType: string | null;
}

// ───────────────────────────── WebSocket /ws (server → page only) ─────────────────────────────

export type ServerMessageBody =
  /** On connect: what a reconnecting page missed. */
  | { type: 'snapshot'; user: string; groups: string[]; challenges: ChallengeView[]; recent: ResolvedView[]; grants: GrantView[] }
  /** A statement is held that this person may see. */
  | { type: 'challenge'; challenge: ChallengeView }
  /** An approval was added (count > 1). */
  | { type: 'challenge-updated'; challenge: ChallengeView }
  /** Approved, rejected, expired, cancelled, withdrawn, shutdown. */
  | { type: 'resolved'; resolved: ResolvedView }
  /** An approved statement ran: the same resolved entry with its outcomes so far. */
  | { type: 'outcome'; resolved: ResolvedView }
  /** This person's active grants changed. */
  | { type: 'grants'; grants: GrantView[] }
  /** This person's passkeys changed (one was used: its "last used"). */
  | { type: 'passkeys'; passkeys: PasskeyView[] };

/** Every message carries the server's clock (the page shows times left on the server's clock). */
export type ServerMessage = ServerMessageBody & { now: number };

/** Close code: the session expired or was signed out (the page asks to sign in again). A type, not a value. */
export type CloseSessionEnded = 4401;

// ───────────────────────────── API bodies (JSON) ─────────────────────────────

/** Every error answer. */
export interface ApiErrorBody {
  error: string;
  code: string;
}

/** GET /api/me, and the answer of sign-in, enrollment, passkey changes. */
export interface MeView {
  user: string;
  groups: string[];
  passkeys: PasskeyView[];
  auditor: boolean;
  recentAuth: boolean;
  expiresAt: number | null;
  consoleUrl: string;
  sso: boolean;
  email: string | null;
  totp: boolean;
  recoveryCodesLeft: number;
  /** Database credentials are offered (people without a local password). */
  credentials: boolean;
}

/** GET /api/public */
export interface PublicInfo {
  sso: boolean;
  consoleUrl: string;
}

/** POST /api/enroll/info */
export interface EnrollInfo {
  user: string;
  passkeys: number;
}

/** GET /api/challenges */
export interface ChallengesReply {
  now: number;
  challenges: ChallengeView[];
  recent: ResolvedView[];
}

/** GET /api/challenges/ID: a held statement, or what became of it. */
export type ChallengeLookup = { state: 'pending'; now: number; challenge: ChallengeView } | { state: 'decided'; now: number; resolved: ResolvedView };

/**
 * POST /api/challenges/ID/options: WebAuthn request options whose challenge commits to the statement
 * (stepup/evidence.ts): base64url(SHA-256("stepgate-approval-v1\n" digest "\n" challengeId "\n" nonce)).
 */
export interface ApprovalOptions {
  challenge: string;
  approval?: { challengeId: string; digest: string; nonce: string };
}

/** POST /api/challenges/ID/approve */
export interface ApproveReply {
  status: 'approved' | 'pending';
  remaining: number;
}

/** POST /api/challenges/ID/approve-code */
export interface CodeApproveReply extends ApproveReply {
  recoveryCodesLeft: number | null;
}

/** GET /api/grants, DELETE /api/grants/ID */
export interface GrantsReply {
  now?: number;
  grants: GrantView[];
}

/** POST /api/totp/setup */
export interface TotpSetup {
  secret: string;
  uri: string;
  qr: string;
}

/** POST /api/totp/confirm, POST /api/recovery-codes */
export interface RecoveryCodesReply {
  recoveryCodes: string[];
  me: MeView;
}

export interface CredentialView {
  id: string;
  label: string;
  createdAt: number;
  expiresAt: number;
  lastUsedAt: number | null;
}

export interface ConnectInfoView {
  host: string;
  port: number;
  sslmode: 'require' | 'disable';
}

/** GET /api/credentials */
export interface CredentialsReply {
  now?: number;
  credentials: CredentialView[];
  connect?: ConnectInfoView | null;
  ttlMs?: number | null;
}

/** POST /api/credentials */
export interface IssuedCredential {
  credential: CredentialView;
  user: string;
  password: string;
  host: string;
  port: number;
  sslmode: string;
  psql: string;
  pgpass: string;
}

/** POST /api/cli/info */
export interface CliLoginInfo {
  code: string;
  label: string;
  client: string;
  createdAt: number;
  expiresAt: number;
}

// The auditor view (members of `auditors`): what the page reads of console/auditor.ts's answers.

export interface AuditSessionView {
  /** With `state:`: the instance whose trail recorded it (absent without: there is only this one). */
  instance?: string;
  id: string | null;
  short: string;
  no: number;
  user: string | null;
  database: string | null;
  clientAddress: string | null;
  application: string | null;
  tls: boolean | null;
  serverPid: number | null;
  start: number | null;
  end: number | null;
  endReason: string | null;
  statements: number;
  denied: number;
  held: number;
}

/** GET /api/audit/sessions */
export interface AuditSessionsReply {
  sessions: AuditSessionView[];
  next: string | null;
  /** Every instance's trail from the shared store (`state:`); false: this instance's DATA/audit.db. */
  shared: boolean;
}

export interface TimelineStepView {
  seq: number | null;
  kind: string;
  time: number;
  lines: string[];
  statements?: { command: string; classes: string[]; tables: string[]; flags: string[] }[];
  decision?: { action: string; rule: string | null; file: string | null; reason: string | null };
  status?: string;
}

/** GET /api/audit/sessions/ID */
export interface AuditTimelineReply {
  session: AuditSessionView;
  steps: TimelineStepView[];
  next: number | null;
}

export interface VerificationProblemView {
  seq: number | null;
  severity: 'error' | 'warning';
  message: string;
}

export interface VerificationRunBase {
  startedAt: number;
  finishedAt: number;
  durationMs: number;
  by: string;
}

/** One verification run: it could not run (error), or what it found. */
export type VerificationRunView =
  | (VerificationRunBase & { ok: false; error: string })
  | (VerificationRunBase & {
      ok: boolean;
      error: null;
      events: number;
      firstSeq: number | null;
      lastSeq: number | null;
      firstTime: number | null;
      lastTime: number | null;
      sessions: number;
      key: { kid: string };
      anchor: { seq: number } | null;
      checkpoints: { total: number; valid: number; lastSeq: number | null };
      unsealed: number;
      /** Approvals checked from the trail alone (audit/verify-approvals.ts ApprovalCounts). */
      approvals: { verified: number; codes: number; unsigned: number; noKey: number; failed: number };
      firstProblem: VerificationProblemView | null;
      problems: VerificationProblemView[];
      moreProblems: number;
    });

export interface CheckpointInfoView {
  id: number;
  seq: number;
  time: number;
  reason: string;
  kid: string | null;
}

/** GET /api/audit/verification, POST /api/audit/verify */
export interface VerificationReply {
  /** With `shared`: over every instance (broken when any is, error when any could not be checked). */
  state: 'never' | 'running' | 'verified' | 'broken' | 'error';
  running: { startedAt: number; by: string } | null;
  /** This instance's DATA/audit.db; null with `shared` (see its instances). */
  last: VerificationRunView | null;
  checkpoint: CheckpointInfoView | null;
  head: { seq: number; time: number } | null;
  /** With `state:`: every instance's chain in the shared store; null without. */
  shared: SharedVerificationView | null;
}

export interface SharedVerificationView {
  /** This console's instance. */
  self: string;
  /** The last run over every instance: when, by whom, and an error that stopped it as a whole. */
  last: (VerificationRunBase & { ok: boolean; error: string | null }) | null;
  instances: AuditInstanceView[];
}

/** One instance's chain in the shared store. */
export interface AuditInstanceView {
  instance: string;
  /** Its last shipped event and latest shipped checkpoint, read when asked. */
  head: { seq: number; time: number } | null;
  checkpoint: CheckpointInfoView | null;
  /** The key pinned to it in the shared store (what its checkpoints are checked with). */
  pinnedKid: string | null;
  /**
   * Events committed to its local trail and not in the shared store, so neither listed nor verified here:
   * known for this console's own instance only (its shipper); null for the others (their consoles and
   * /metrics stepgate_audit_ship_lag_events show theirs).
   */
  unshipped: { events: number; seconds: number; state: string; error: string | null } | null;
  /** Its part of the last run (null: not in it, e.g. first shipped after it). */
  last: VerificationRunView | null;
  /**
   * This console's own instance only: events it had committed locally when that run finished beyond the
   * last one the run verified (not shipped yet, so not checked); null for the others (not known here).
   */
  unverified: number | null;
}
