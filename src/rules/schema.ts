/**
 * The rule-file format: which keys exist where, and the validated, position-carrying form a rule file
 * is read into (before it is compiled into matchers by match.ts).
 *
 * ```yaml
 * default: allow            # action when no rule matches
 * rules:
 *   - name: no-unbounded-deletes
 *     description: DELETE or UPDATE without WHERE on production
 *     match: { class: [write], flags: [no_where], database: [prod*] }
 *     action: deny
 *     message: Add a WHERE clause, or ask a DBA.
 * ```
 */
import type { StatementClass, StatementFlag } from '../sql/types.js';
import type { Action, Approvers, Factor } from './types.js';
import type { SourcePosition } from './errors.js';
import type { TimeWindow } from './timewindow.js';

export const ACTIONS: readonly Action[] = ['allow', 'step-up', 'deny'];

/** When no file sets `default`: fail closed, every unmatched statement needs an approval. */
export const FALLBACK_DEFAULT: Action = 'step-up';

export const FILE_KEYS = ['default', 'rules'] as const;
export const RULE_KEYS = [
  'name',
  'description',
  'match',
  'action',
  'message',
  'grant',
  'grant_scope',
  'timeout',
  'approvers',
  'preview',
  'max_rows',
  'factors',
  'on',
  'notify',
] as const;
/** Rule keys that only make sense when `action: step-up`. */
export const STEP_UP_KEYS = ['grant', 'grant_scope', 'timeout', 'approvers', 'preview', 'max_rows', 'factors', 'notify'] as const;
/** What a rule is about: each statement (default), or the login itself. */
export const RULE_EVENTS = ['statement', 'connect'] as const;
export type RuleEvent = (typeof RULE_EVENTS)[number];
/** The factors an approval can be made with; `factors:` on a step-up rule narrows them. */
export const FACTORS: readonly Factor[] = ['passkey', 'totp'];
/** Risk signals (`match: {signals: {...}}`), computed by stepgate from its own records. */
export const SIGNAL_KEYS = ['new_client_address', 'new_application', 'recent_login_failures', 'first_access'] as const;
export type SignalKey = (typeof SIGNAL_KEYS)[number];
export const MATCH_KEYS = [
  'class',
  'command',
  'tables',
  'columns',
  'functions',
  'flags',
  'user',
  'groups',
  'database',
  'application',
  'client',
  'time',
  'tls',
  'signals',
  'rows',
] as const;
/** Match keys a rule with `on: connect` may use (there is no statement yet). */
export const CONNECT_MATCH_KEYS = ['user', 'groups', 'database', 'application', 'client', 'time', 'tls', 'signals'] as const;
export type MatchKey = (typeof MATCH_KEYS)[number];
export const TIME_KEYS = ['days', 'from', 'to', 'tz'] as const;
export const APPROVER_KEYS = ['groups', 'count'] as const;

export const DEFAULT_TIMEOUT_MS = 120_000;
export const GRANT_SCOPES = ['connection', 'user'] as const;
export type GrantScope = (typeof GRANT_SCOPES)[number];

/** Rule names: things people type in `rule:` test expectations, grep in logs and see in the console. */
export const RULE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** `rule: default` in a test case means "no rule matched; the default decided". */
export const DEFAULT_RULE_NAME = 'default';

/** The `match:` block after validation. Lists are never empty. Absent keys are undefined. */
export interface MatchSpec {
  class?: StatementClass[];
  command?: string[];
  tables?: string[];
  columns?: string[];
  functions?: string[];
  flags?: StatementFlag[];
  user?: string[];
  groups?: string[];
  database?: string[];
  application?: string[];
  client?: string[];
  time?: TimeWindow[];
  tls?: boolean;
  signals?: SignalSpec;
  rows?: RowsCondition;
}

/**
 * `rows: ">100"`: the rows the message affects (or returns), as its preview counted them, or the planner's
 * estimate where no preview is possible. Unknown rows match deny and step-up rules, never allow rules.
 */
export interface RowsCondition {
  op: '>' | '>=' | '<' | '<=' | '=';
  n: number;
  /** As written, for explanations. */
  text: string;
}

/** `signals:` after validation: every signal given must hold. */
export interface SignalSpec {
  /** The client's network (/24, /64) was not seen for this user within this long (ms). */
  newClientAddressMs?: number;
  /** The application name was not seen for this user within this long (ms). */
  newApplicationMs?: number;
  /** At least `count` failed logins of this user within `withinMs`. */
  recentLoginFailures?: { count: number; withinMs: number };
  /** The statement touches a table this user has never touched (in this database). */
  firstAccess?: boolean;
}

export interface RuleSpec {
  name: string;
  description: string;
  match: MatchSpec;
  action: Action;
  message: string;
  /** 0 = no grant. */
  grantMs: number;
  grantScope: GrantScope;
  /** 0 for rules that are not step-up. */
  timeoutMs: number;
  approvers?: Approvers;
  /** Step-up only: run the statement uncommitted before asking, and show the approver what it did. */
  preview: boolean;
  /** Step-up only: a preview that affects more rows than this is rolled back and denied without asking. */
  maxRows?: number;
  /** Step-up only: the factors that may approve; undefined = any the approver has. */
  factors?: Factor[];
  /** Step-up only: webhooks (names from the config's `notify.webhooks`) told when this rule holds a statement. */
  notify?: string[];
  /** `connect`: the rule decides the login itself (before any statement). */
  on: RuleEvent;
  /** File name relative to the rules directory (what Decision.file carries). */
  file: string;
  /** Where the rule starts, for errors that point at it. */
  at: SourcePosition;
}

export interface RuleFileSpec {
  /** File name relative to the rules directory. */
  file: string;
  default?: { action: Action; at: SourcePosition };
  rules: RuleSpec[];
}
