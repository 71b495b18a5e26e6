/**
 * The contract between `rules/` (which decides), the proxy (which enforces) and step-up (which asks).
 */
import type { StatementInfo } from '../sql/types.js';

export type Action = 'allow' | 'step-up' | 'deny';

/** Who runs a statement, from where and when: everything a rule can match on besides the statement itself. */
export interface Subject {
  user: string;
  groups: string[];
  database: string;
  application: string;
  /** Client IP address as seen by stepgate (IPv4, IPv6 or IPv4-mapped IPv6). */
  clientAddress: string;
  tls: boolean;
  now: Date;
  /** What stepgate knew about this person's circumstances at login (risk signals); absent: nothing known. */
  signals?: SubjectSignals;
}

/** A factor an approval is made with. A recovery code counts as `totp` (it is the authenticator app's backup). */
export type Factor = 'passkey' | 'totp';

/** The records risk signals are computed from, as of the login (see identity/signals.ts). */
export interface SubjectSignals {
  /** The client's network (`10.1.2.0/24`, `2001:db8:1:2::/64`, `local`). */
  network: string;
  /** When this user last connected from that network before this login (ms); null: never. */
  networkLastSeen: number | null;
  /** When this user last connected with this application name (ms); null: never. */
  applicationLastSeen: number | null;
  /** Times of this user's failed logins in the last day (ms), newest first. */
  failures: number[];
  /** True when this user has never touched this table in this database; null: not known. */
  firstAccess: ((database: string, table: { schema: string | null; name: string }) => boolean) | null;
}

export interface Approvers {
  /** Members of any of these groups may approve. Empty: the statement's own user approves. */
  groups: string[];
  /** Distinct approvals needed. */
  count: number;
}

export interface Decision {
  action: Action;
  /** Name of the deciding rule; null when the file's `default` decided. */
  rule: string | null;
  /** File the deciding rule (or default) came from, relative to the rules directory. */
  file: string | null;
  /** The rule's message for the person at the keyboard; may be empty. */
  message: string;
  /** Why this decision: which statement and which match keys held. For `rules explain` and the audit trail. */
  reason: string;
  /** Step-up only: how long an approval lets the same rule pass without asking again (ms); 0 = no grant. */
  grantMs: number;
  grantScope: 'connection' | 'user';
  /** Step-up only: how long a held statement waits for approval (ms). */
  timeoutMs: number;
  /** Step-up only: who approves; undefined = the statement's own user. */
  approvers?: Approvers;
  /** Step-up only: the factors that may approve; undefined = any enrolled factor. */
  factors?: Factor[];
  /** The risk signals that held for the deciding rule (`new_client_address (10.1.2.0/24: never seen)`). */
  signals?: string[];
  /** Index of the statement (in the message) that decided; -1 when there was none. */
  statementIndex: number;
  /**
   * Step-up only: every distinct rule (or the default, rule null) that asked for step-up in this message,
   * in statement order; the first is the deciding one. When a message mixes statements held by different
   * rules, a grant or approval for one of them must not let the others through: the proxy passes the
   * message on a grant only when every entry has one, and otherwise asks with the strictest approvers.
   * Set on every step-up decision (one entry when a single rule asked).
   */
  stepUps?: StepUpRequirement[];
  /** Step-up only: the deciding rule asks for a preview (the statement runs, uncommitted, before anyone approves). */
  preview?: boolean;
  /** Step-up only: the deciding rule's `max_rows` (more rows in the preview: rolled back and denied). */
  maxRows?: number;
  /**
   * The rows the message affects would change this decision (a rule with `rows` matched on everything else,
   * or `max_rows`): count them (a preview, else the planner's estimate) and decide again with them.
   * Never set when `rows` was given to decide(): that decision is final.
   */
  measureRows?: boolean;
  /** The rows this decision was made with, when they were counted. */
  rows?: RowsFact | null;
}

/**
 * What is known of the rows a message affects (or returns): counted by a preview, or the planner's estimate
 * (`estimate: true`). null: they could not be counted (then `rows` matches deny and step-up rules only).
 */
export interface RowsFact {
  count: number;
  estimate: boolean;
}

/** One step-up rule's demands, as in Decision. */
export interface StepUpRequirement {
  rule: string | null;
  file: string | null;
  statementIndex: number;
  grantMs: number;
  grantScope: 'connection' | 'user';
  timeoutMs: number;
  approvers?: Approvers;
  factors?: Factor[];
  /** The risk signals that held for this rule. */
  signals?: string[];
  /** Webhooks the rule names (`notify:`), besides those the config sends every hold to. */
  notify?: string[];
}

/** A loaded, validated rule set: what the proxy asks for each statement. */
export interface RuleSet {
  /**
   * `rows`: what is known of the rows the message affects; undefined when not counted yet (a rule whose
   * decision would depend on them then sets Decision.measureRows).
   */
  decide(statements: StatementInfo[], subject: Subject, rows?: RowsFact | null): Decision;
  /**
   * The login itself (rules with `on: connect`): a matching deny wins, else the first matching step-up;
   * null when no such rule matches (the login goes on). Optional: rule sets without connect rules.
   */
  decideConnect?(subject: Subject): Decision | null;
}
