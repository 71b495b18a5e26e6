/**
 * The step-up broker: holds statements until the right people approve them with a passkey in the console,
 * and remembers grants.
 *
 * One challenge per held message. What it needs is derived from every step-up rule the message matched
 * (Decision.stepUps): a rule without approvers needs the author's own approval, a rule with
 * `approvers: {groups, count}` needs `count` distinct members of those groups other than the author. The
 * challenge is approved when every rule is satisfied, so an approval for one rule never lets another rule's
 * statement through. Who sees a challenge: its author, and members of its approver groups; nobody else.
 *
 * The broker knows nothing of HTTP or WebAuthn: the console verifies the passkey assertion and then calls
 * `approve(challengeId, user, credentialId, 'passkey', {passkey, signed})` with the signed assertion, which
 * must be for this challenge's digest (what a passkey approval signs, evidence.ts; it goes into the audit
 * trail with the outcome); the broker re-checks that this person may approve. Events go
 * to listeners (the console's WebSocket hub) synchronously, so a challenge reaches open consoles at once.
 */
import { randomBytes } from 'node:crypto';
import { redactSql } from '../sql/redact.js';
import { describeHold, statementDigest, type SignedAssertion } from './evidence.js';
import type { IdentityStore } from '../identity/store.js';
import type { Logger } from '../log.js';
import type { Decision, Factor, StepUpRequirement } from '../rules/types.js';
import type { Hold, HoldOutcome, HoldRequest, StepUpBroker } from './types.js';
import type { ChallengeView, ConnectionView, GrantView, OutcomeView, PreviewView, ResolvedStatus, ResolvedView, StatementView } from '../console/protocol.js';
import type { PreviewReport } from '../proxy/preview.js';
import { rowsFromTag } from '../sql/command-tag.js';

// The console's copy of the outcome statuses must stay the broker's.
const sameStatuses: [HoldOutcome['status']] extends [ResolvedStatus] ? ([ResolvedStatus] extends [HoldOutcome['status']] ? true : false) : false = true;
void sameStatuses;

export const DEFAULT_TIMEOUT_MS = 120_000;
/** Resolved challenges kept for consoles that reconnect ("what you missed"). */
const RECENT_LIMIT = 200;
const RECENT_MS = 30 * 60_000;
const REASON_MAX = 500;
/** Longest SQL text per statement sent to consoles; anything cut is said so, loudly. */
const SQL_VIEW_MAX = 256 * 1024;
/** Most statements of one message shown; the rest are summarised. */
const STATEMENTS_VIEW_MAX = 200;

// The views the console shows are the console's protocol types (shared with the page).
export type { ChallengeView, GrantView, OutcomeView, RequirementView, ResolvedView, StatementView } from '../console/protocol.js';

export interface Approval {
  user: string;
  credentialId: string;
  factor: Factor;
  /** `recovery`: a recovery code stood in for TOTP. */
  via: Factor | 'recovery';
  /** The approver's groups when they approved. */
  groups: string[];
  at: number;
  /** A passkey approval: the passkey's name and the signed assertion. */
  passkey?: string;
  signed?: SignedAssertion;
}

export interface Grant {
  id: string;
  rule: string | null;
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
}

/**
 * What people see of a held message and what an approval signs, computed once where it was held; a peer
 * instance's copy of a challenge is built from it (it never has the statements' full texts).
 */
export interface ChallengeSummary {
  statements: StatementView[];
  /** Statements in the message (more than `statements` when they were too many to show). */
  statementCount: number;
  omittedCommands: string[];
  digest: string;
}

export function summarize(request: HoldRequest): ChallengeSummary {
  const statements = request.statements.slice(0, STATEMENTS_VIEW_MAX).map((s) => {
    const sql = redactSql(s.sql);
    return {
      sql: sql.length > SQL_VIEW_MAX ? sql.slice(0, SQL_VIEW_MAX) : sql,
      omitted: Math.max(0, sql.length - SQL_VIEW_MAX),
      command: s.command,
      classes: [...s.classes],
      tables: s.tables.map((t) => (t.schema ? `${t.schema}.${t.name}` : t.name)),
      flags: [...s.flags],
      reasons: [...s.reasons],
    };
  });
  return {
    statements,
    statementCount: request.statements.length,
    omittedCommands: [...new Set(request.statements.slice(statements.length).map((s) => s.command))],
    digest: statementDigest(describeHold(request)),
  };
}

export class Challenge {
  readonly approvals = new Map<string, Approval>();
  done = false;
  timer: NodeJS.Timeout | null = null;
  /** Set by the broker: settles the hold's outcome once. */
  settle!: (outcome: HoldOutcome) => void;
  readonly statements: StatementView[];
  readonly statementCount: number;
  readonly omittedCommands: string[];
  /** What an approval of it signs (see evidence.ts). */
  readonly digest: string;

  /**
   * `local`: held here (a session waits on it); `peer`: held by another instance sharing the state (its
   * `request.statements` is empty: the summary stands in for them).
   */
  constructor(
    readonly id: string,
    readonly request: HoldRequest,
    readonly entries: StepUpRequirement[],
    readonly createdAt: number,
    readonly expiresAt: number,
    summary: ChallengeSummary = summarize(request),
    readonly origin: 'local' | 'peer' = 'local',
  ) {
    this.statements = summary.statements;
    this.statementCount = summary.statementCount;
    this.omittedCommands = summary.omittedCommands;
    this.digest = summary.digest;
  }

  get summary(): ChallengeSummary {
    return { statements: this.statements, statementCount: this.statementCount, omittedCommands: this.omittedCommands, digest: this.digest };
  }

  get user(): string {
    return this.request.user;
  }

  /** Approvals that count for one requirement (by the right people, with a factor the rule allows). */
  countsFor(entry: StepUpRequirement): Approval[] {
    const groups = entry.approvers?.groups ?? [];
    const allowed = (a: Approval): boolean => !entry.factors || entry.factors.includes(a.factor);
    if (groups.length === 0) {
      const own = this.approvals.get(this.user);
      return own && allowed(own) ? [own] : [];
    }
    return [...this.approvals.values()].filter((a) => a.user !== this.user && allowed(a) && a.groups.some((g) => groups.includes(g)));
  }

  /** The open requirements this person could help satisfy (with any factor). */
  helpsWith(user: string, groups: string[]): StepUpRequirement[] {
    return this.entries.filter((e) => {
      if (this.satisfied(e)) return false;
      const eg = e.approvers?.groups ?? [];
      return eg.length === 0 ? user === this.user : user !== this.user && groups.some((g) => eg.includes(g));
    });
  }

  get kind(): 'statement' | 'connect' {
    return this.request.kind ?? 'statement';
  }

  satisfied(entry: StepUpRequirement): boolean {
    const groups = entry.approvers?.groups ?? [];
    const need = groups.length === 0 ? 1 : Math.max(1, entry.approvers?.count ?? 1);
    return this.countsFor(entry).length >= need;
  }

  /** May this person approve now (with `factor`, when given)? Null when yes, else why not. */
  refusal(user: string, groups: string[], factor?: Factor): string | null {
    if (this.done) return 'this statement is no longer waiting for approval';
    if (this.approvals.has(user)) return 'you have already approved this statement; it needs another approver';
    const open = this.entries.filter((e) => !this.satisfied(e));
    const mine = this.helpsWith(user, groups);
    if (mine.length > 0) {
      if (factor === undefined || mine.some((e) => !e.factors || e.factors.includes(factor))) return null;
      const e = mine[0]!;
      return `rule "${e.rule ?? 'default'}" needs ${e.factors!.map(factorName).join(' or ')} to approve: ${factorName(factor)} is not enough for it`;
    }
    const groupRules = open.filter((e) => (e.approvers?.groups.length ?? 0) > 0);
    if (user === this.user && groupRules.length > 0) {
      const g = [...new Set(groupRules.flatMap((e) => e.approvers!.groups))].join(', ');
      return `you wrote this statement: rule "${groupRules[0]!.rule ?? 'default'}" needs approval by another member of ${g} (four eyes)`;
    }
    return 'you are not an approver of this statement';
  }

  visibleTo(user: string, groups: string[]): boolean {
    if (user === this.user) return true;
    return this.entries.some((e) => (e.approvers?.groups ?? []).some((g) => groups.includes(g)));
  }
}

export interface BrokerListener {
  challengeCreated(challenge: Challenge): void;
  challengeUpdated(challenge: Challenge): void;
  challengeResolved(challenge: Challenge, outcome: HoldOutcome, resolved: ResolvedView): void;
  /** Grants of these users (holders and approvers) changed. */
  grantsChanged(users: string[]): void;
  /** An approved challenge's statement ran: `resolved` carries its outcomes so far. */
  challengeOutcome?(challenge: Challenge, resolved: ResolvedView): void;
}

/** How people read a factor's name. */
export function factorName(f: Factor | 'recovery'): string {
  return f === 'passkey' ? 'a passkey' : f === 'totp' ? 'an authenticator app code' : 'a recovery code';
}

export interface BrokerOptions {
  identity: IdentityStore;
  log: Logger;
  /** The console's base URL (known once it listens). */
  consoleUrl(): string;
  now?(): number;
}

/**
 * Why the broker refused (the console maps these to HTTP statuses): `not_found` (no such challenge waiting
 * that this person may see), `not_allowed` (they may not approve it, or not with this factor), `stale` (the
 * signature is for another version of it), `unavailable` (the shared state cannot be reached: nothing was
 * recorded, try again).
 */
export type Refusal = { ok: false; refusal: 'not_found' | 'not_allowed' | 'stale' | 'unavailable'; error: string };

/** What one statement of an approved challenge did (as the audit trail records it). */
export interface RanOutcome {
  tag: string | null;
  sqlstate: string | null;
  message: string | null;
  skipped: boolean;
  durationMs: number;
}

export type ApproveResult = { ok: true; status: 'approved' | 'pending'; remaining: number } | Refusal;

/**
 * What the broker needs from the shared state (src/state/holds.ts). The database is the single truth about
 * a shared challenge: its approvals and its one final outcome. Each call either commits or rejects.
 */
export interface HoldExchange {
  /** False while the state database is out of reach: new holds and grants then fail closed. */
  readonly healthy: boolean;
  /** A challenge held here: visible to the other instances once this resolves. */
  publish(c: Challenge): Promise<void>;
  /**
   * In one transaction, with the challenge's row locked: adds `approval` (when it is still pending) and lets
   * `decide` look at every approval recorded so far; when it returns an outcome, that becomes the final one
   * and its grants are stored. Two instances cannot both approve, nor count past each other.
   */
  approve(
    c: Challenge,
    approval: Approval,
    decide: (all: Approval[]) => { outcome: HoldOutcome; grants: Grant[] } | null,
  ): Promise<{ state: 'pending' | 'decided' | 'closed'; approvals: Approval[]; outcome: HoldOutcome | null }>;
  /** Records `outcome` as final unless one already is; resolves to the outcome in force. */
  decide(id: string, outcome: HoldOutcome): Promise<HoldOutcome>;
  revokeGrant(id: string): Promise<boolean>;
  /** What an approved statement held here did once it ran (consoles elsewhere show it in "recently decided"). */
  recordOutcome(id: string, index: number, outcome: RanOutcome): Promise<void>;
  /** A connection closed: its connection-scoped grants go. */
  dropConnectionGrants(connectionId: string): Promise<void>;
}

/** How long a local hold waits for the shared state to record its expiry before expiring anyway. */
const EXCHANGE_WAIT_MS = 5_000;

export class ConsoleBroker implements StepUpBroker {
  private readonly challenges = new Map<string, Challenge>();
  private readonly grants = new Map<string, Grant>();
  private readonly recent: { view: ResolvedView; audience: Challenge }[] = [];
  private readonly listeners = new Set<BrokerListener>();
  private readonly identity: IdentityStore;
  private readonly log: Logger;
  private readonly now: () => number;
  private grantTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** Holds and grants shared with other instances (src/state/holds.ts); null: this process alone. */
  private exchange: HoldExchange | null = null;

  constructor(private readonly options: BrokerOptions) {
    this.identity = options.identity;
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  /** Connects the shared state after construction (it needs the broker to deliver what peers say). */
  useExchange(exchange: HoldExchange): void {
    this.exchange = exchange;
  }

  addListener(listener: BrokerListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // ───────────────────────────── StepUpBroker ─────────────────────────────

  hold(request: HoldRequest): Hold {
    const entries = requirementsOf(request.decision);
    const now = this.now();
    if (this.closed) return settled({ status: 'unavailable', reason: 'stepgate is shutting down' });
    // Grants and approvals live in the shared state: without it, neither can be trusted (a revocation may be missed).
    if (this.exchange && !this.exchange.healthy) return settled({ status: 'unavailable', reason: STATE_DOWN });

    // A grant for every rule that asked: pass without asking.
    const grants = entries.map((e) => this.findGrant(e, request, now));
    if (grants.every((g) => g !== null)) {
      const approvers = [...new Set(grants.flatMap((g) => g!.approvedBy))].map((user) => ({ user, credentialId: null }));
      this.log.info('stepup.granted', { connection: request.connectionId, user: request.user, rules: entries.map((e) => e.rule ?? 'default') });
      return settled({ status: 'approved', approvers, grant: true });
    }

    const missing = this.nobodyCanApprove(entries, request.user);
    if (missing) return settled({ status: 'unavailable', reason: missing });

    const id = randomBytes(16).toString('base64url');
    const timeoutMs = request.decision.timeoutMs > 0 ? request.decision.timeoutMs : DEFAULT_TIMEOUT_MS;
    const challenge = new Challenge(id, request, entries, now, now + timeoutMs);
    const outcome = new Promise<HoldOutcome>((resolve) => {
      challenge.settle = (o) => {
        if (challenge.done) return;
        challenge.done = true;
        if (challenge.timer) clearTimeout(challenge.timer);
        this.challenges.delete(id);
        resolve(o);
        this.resolved(challenge, o);
      };
    });
    challenge.timer = setTimeout(() => this.expire(challenge), timeoutMs);
    this.challenges.set(id, challenge);
    this.log.info('stepup.held', { challenge: id, connection: request.connectionId, user: request.user, rules: entries.map((e) => e.rule ?? 'default') });
    for (const l of this.listeners) safely(this.log, () => l.challengeCreated(challenge));
    if (this.exchange) {
      // Not recorded, not approvable elsewhere: fail closed rather than wait for nobody.
      this.exchange.publish(challenge).catch((err) => {
        this.log.error('stepup.publish_failed', { challenge: id, error: (err as Error).message });
        challenge.settle({ status: 'unavailable', reason: STATE_DOWN });
      });
    }
    return {
      challengeId: id,
      url: this.challengeUrl(id),
      outcome,
      end: (status) => this.end(challenge, { status }),
    };
  }

  connectionClosed(connectionId: string): void {
    for (const c of [...this.challenges.values()]) if (c.origin === 'local' && c.request.connectionId === connectionId) this.end(c, { status: 'withdrawn' });
    const users: string[] = [];
    for (const [id, g] of this.grants) {
      if (g.connectionId === connectionId) {
        this.grants.delete(id);
        users.push(g.user, ...g.approvedBy);
      }
    }
    if (users.length === 0) return;
    this.emitGrants(users);
    // Every grant is in memory here, so only a connection that held one costs a write to the shared state.
    this.exchange?.dropConnectionGrants(connectionId).catch((err) => this.log.warn('stepup.grant_drop_failed', { connection: connectionId, error: (err as Error).message }));
  }

  // ───────────────────────────── for the console ─────────────────────────────

  challengeUrl(id: string): string {
    return `${this.options.consoleUrl()}/c/${id}`;
  }

  get(id: string): Challenge | undefined {
    return this.challenges.get(id);
  }

  /** Pending challenges this person may see, oldest first. */
  pendingFor(user: string, groups: string[]): Challenge[] {
    return [...this.challenges.values()].filter((c) => c.visibleTo(user, groups));
  }

  recentFor(user: string, groups: string[]): ResolvedView[] {
    const cutoff = this.now() - RECENT_MS;
    return this.recent.filter((r) => r.view.at >= cutoff && r.audience.visibleTo(user, groups)).map((r) => r.view);
  }

  /** What became of a decided challenge, for someone who could see it (null: not known, or not theirs). */
  decided(id: string, user: string, groups: string[]): ResolvedView | null {
    const r = this.recent.findLast((x) => x.view.id === id);
    // As long as "Recently decided" lists it (RECENT_MS), no longer.
    if (!r || r.view.at < this.now() - RECENT_MS) return null;
    return r.audience.visibleTo(user, groups) ? r.view : null;
  }

  /**
   * What an approved statement did once it ran (the outcome the audit trail records, passed on by
   * OutcomeTap): added to its entry in "recently decided" and sent to the consoles that see it.
   */
  outcome(challengeId: string, index: number, outcome: RanOutcome): void {
    const entry = this.recent.findLast((r) => r.view.id === challengeId);
    if (!entry || entry.view.outcomes.some((o) => o.index === index)) return;
    if (this.exchange && entry.audience.origin === 'local') {
      this.exchange.recordOutcome(challengeId, index, outcome).catch((err) => this.log.warn('stepup.outcome_unshared', { challenge: challengeId, error: (err as Error).message }));
    }
    const view: OutcomeView = {
      index,
      tag: outcome.tag,
      rows: rowsFromTag(outcome.tag),
      sqlstate: outcome.sqlstate,
      message: outcome.message,
      skipped: outcome.skipped,
      durationMs: outcome.durationMs,
      at: this.now(),
    };
    entry.view.outcomes.push(view);
    entry.view.outcomes.sort((a, b) => a.index - b.index);
    for (const l of this.listeners) safely(this.log, () => l.challengeOutcome?.(entry.audience, entry.view));
  }

  view(c: Challenge, viewer: string, groups: string[]): ChallengeView {
    const d = c.request.decision;
    const refusal = c.refusal(viewer, groups);
    const author = viewer === c.user;
    const factors: Factor[] = [];
    if (refusal === null) {
      const mine = c.helpsWith(viewer, groups);
      const allowed = (f: Factor): boolean => mine.some((e) => !e.factors || e.factors.includes(f));
      if (allowed('passkey') && this.identity.passkeyCount(viewer) > 0) factors.push('passkey');
      if (allowed('totp') && this.identity.totpSecret(viewer) !== null) factors.push('totp');
    }
    const signals = [...new Set([...(d.signals ?? []), ...c.entries.flatMap((e) => e.signals ?? [])])];
    return {
      id: c.id,
      kind: c.kind,
      url: this.challengeUrl(c.id),
      user: c.user,
      database: c.request.database,
      application: c.request.application,
      clientAddress: c.request.clientAddress,
      connection: connectionView(c.request),
      preview: previewView(c.request.preview ?? null),
      statements: c.statements,
      omittedStatements: Math.max(0, c.statementCount - c.statements.length),
      omittedCommands: c.omittedCommands,
      rule: d.rule ?? 'default',
      file: d.file,
      message: d.message,
      reason: d.reason,
      requirements: c.entries.map((e) => ({
        rule: e.rule ?? 'default',
        file: e.file,
        groups: e.approvers?.groups ?? [],
        count: (e.approvers?.groups.length ?? 0) > 0 ? Math.max(1, e.approvers!.count) : 1,
        approvedBy: c.countsFor(e).map((a) => a.user),
        satisfied: c.satisfied(e),
        grantMs: e.grantMs,
        grantScope: e.grantScope,
        factors: e.factors ?? ['passkey', 'totp'],
        signals: e.signals ?? [],
      })),
      signals,
      approvals: [...c.approvals.values()].map((a) => ({ user: a.user, at: a.at, factor: a.factor })),
      digest: c.digest,
      createdAt: c.createdAt,
      expiresAt: c.expiresAt,
      you: {
        author,
        canApprove: refusal === null && factors.length > 0,
        canReject: !c.done && c.visibleTo(viewer, groups),
        note: refusal ?? (factors.length === 0 ? 'you have no factor this rule accepts: register a passkey (or set up an authenticator app, where the rule allows it)' : null),
        factors,
      },
    };
  }

  /** Checks, before a ceremony starts (and again after it), that this person could approve with `factor`. */
  mayApprove(id: string, user: string, factor?: Factor): { ok: true; challenge: Challenge } | Refusal {
    const c = this.challenges.get(id);
    const groups = this.groupsOf(user);
    if (!c || !c.visibleTo(user, groups)) return NOT_WAITING;
    if (this.identity.getUser(user)?.disabled) return { ok: false, refusal: 'not_allowed', error: 'your stepgate account is disabled' };
    const refusal = c.refusal(user, groups, factor);
    if (refusal) return { ok: false, refusal: 'not_allowed', error: refusal };
    return { ok: true, challenge: c };
  }

  /**
   * A verified approval by `user` (a passkey assertion, or a TOTP or recovery code). Re-checks who may
   * approve (groups read now, from the store) and that the rule accepts the factor.
   */
  async approve(id: string, user: string, credentialId: string, via: Factor | 'recovery' = 'passkey', evidence?: { passkey: string; signed: SignedAssertion }): Promise<ApproveResult> {
    const factor: Factor = via === 'recovery' ? 'totp' : via;
    const check = this.mayApprove(id, user, factor);
    if (!check.ok) return check;
    const c = check.challenge;
    // A signature over another statement's digest proves nothing about this one.
    if (evidence && evidence.signed.digest !== c.digest) return { ok: false, refusal: 'stale', error: 'this approval was signed for another version of the statement; try again' };
    const approval: Approval = { user, credentialId, factor, via, groups: this.groupsOf(user), at: this.now(), ...(evidence ?? {}) };
    if (!this.exchange) {
      c.approvals.set(user, approval);
      const decided = this.decideWith(c);
      this.log.info('stepup.approval', { challenge: id, user, credential: credentialId, factor: via, remaining: decided.remaining });
      if (!decided.outcome) {
        for (const l of this.listeners) safely(this.log, () => l.challengeUpdated(c));
        return { ok: true, status: 'pending', remaining: decided.remaining };
      }
      this.addGrants(decided.grants);
      c.settle(decided.outcome);
      return { ok: true, status: 'approved', remaining: 0 };
    }
    // Shared: the approval counts once it is in the database, and only the transaction that completes the
    // count decides (the challenge's row is locked while it counts).
    let result: Awaited<ReturnType<HoldExchange['approve']>>;
    const before = [...c.approvals.values()];
    try {
      result = await this.exchange.approve(c, approval, (all) => {
        c.approvals.clear();
        for (const a of all) c.approvals.set(a.user, a);
        const d = this.decideWith(c);
        return d.outcome ? { outcome: d.outcome, grants: d.grants } : null;
      });
    } catch (err) {
      // Rolled back: the card must not show an approval that was not recorded.
      c.approvals.clear();
      for (const a of before) c.approvals.set(a.user, a);
      this.log.error('stepup.approval_unrecorded', { challenge: id, user, error: (err as Error).message });
      return { ok: false, refusal: 'unavailable', error: `your approval was not recorded: ${STATE_DOWN}; try again` };
    }
    c.approvals.clear();
    for (const a of result.approvals) c.approvals.set(a.user, a);
    if (result.state === 'closed') {
      if (result.outcome) this.decidedElsewhere(id, result.outcome);
      return NOT_WAITING;
    }
    const remaining = c.entries.filter((e) => !c.satisfied(e)).length;
    this.log.info('stepup.approval', { challenge: id, user, credential: credentialId, factor: via, remaining });
    if (result.state === 'pending') {
      for (const l of this.listeners) safely(this.log, () => l.challengeUpdated(c));
      return { ok: true, status: 'pending', remaining };
    }
    this.decidedElsewhere(id, result.outcome!);
    return { ok: true, status: 'approved', remaining: 0 };
  }

  async reject(id: string, user: string, reason: string): Promise<{ ok: true } | Refusal> {
    const c = this.challenges.get(id);
    if (!c || !c.visibleTo(user, this.groupsOf(user))) return NOT_WAITING;
    const clean = String(reason ?? '').replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, REASON_MAX);
    const outcome: HoldOutcome = { status: 'rejected', by: user, reason: clean };
    if (this.exchange) {
      let inForce: HoldOutcome;
      try {
        inForce = await this.exchange.decide(id, outcome);
      } catch (err) {
        // A rejection that cannot be recorded still stops the statement where it is held here.
        if (c.origin === 'local') {
          this.log.warn('stepup.reject_unrecorded', { challenge: id, error: (err as Error).message });
          c.settle(outcome);
          return { ok: true };
        }
        return { ok: false, refusal: 'unavailable', error: `the rejection was not recorded: ${STATE_DOWN}; try again` };
      }
      this.decidedElsewhere(id, inForce);
      if (inForce.status !== 'rejected' || inForce.by !== user) return NOT_WAITING;
      this.log.info('stepup.rejected', { challenge: id, user });
      return { ok: true };
    }
    this.log.info('stepup.rejected', { challenge: id, user });
    c.settle(outcome);
    return { ok: true };
  }

  /** Active grants this person holds or approved. */
  grantsFor(user: string): GrantView[] {
    const now = this.now();
    const out: GrantView[] = [];
    for (const g of this.grants.values()) {
      if (g.expiresAt <= now) continue;
      if (g.user !== user && !g.approvedBy.includes(user)) continue;
      out.push({
        id: g.id,
        rule: g.rule ?? 'default',
        file: g.file,
        user: g.user,
        scope: g.scope,
        connectionId: g.connectionId,
        database: g.database,
        application: g.application,
        clientAddress: g.clientAddress,
        approvedBy: g.approvedBy,
        createdAt: g.createdAt,
        expiresAt: g.expiresAt,
        yours: g.user === user,
      });
    }
    return out.sort((a, b) => a.expiresAt - b.expiresAt);
  }

  async revokeGrant(id: string, user: string): Promise<boolean> {
    const g = this.grants.get(id);
    if (!g || (g.user !== user && !g.approvedBy.includes(user))) return false;
    // Shared: revoked in the database first (every instance drops it on the notice), or not at all.
    if (this.exchange && !(await this.exchange.revokeGrant(id))) return false;
    this.grants.delete(id);
    this.log.info('stepup.grant_revoked', { grant: id, rule: g.rule, holder: g.user, by: user });
    this.emitGrants([g.user, ...g.approvedBy]);
    return true;
  }

  /** Ends every pending challenge (stepgate stops). */
  close(): void {
    this.closed = true;
    for (const c of [...this.challenges.values()]) {
      if (c.origin === 'local') this.end(c, { status: 'unavailable', reason: 'stepgate is shutting down' });
      else c.settle({ status: 'unavailable', reason: 'this stepgate is shutting down' });
    }
    if (this.grantTimer) clearTimeout(this.grantTimer);
    this.grants.clear();
  }

  groupsOf(user: string): string[] {
    return this.identity.getUser(user)?.groups ?? [];
  }

  // ───────────────────── what other instances said (src/state/holds.ts) ─────────────────────

  /** A challenge held by another instance: shown to the people here who may see it. */
  peerHeld(c: Challenge, approvals: Approval[]): void {
    if (this.closed || this.challenges.has(c.id)) return;
    for (const a of approvals) c.approvals.set(a.user, a);
    c.settle = (o) => {
      if (c.done) return;
      c.done = true;
      this.challenges.delete(c.id);
      this.resolved(c, o);
    };
    this.challenges.set(c.id, c);
    for (const l of this.listeners) safely(this.log, () => l.challengeCreated(c));
  }

  /** Another instance recorded an approval (of several needed). */
  peerApprovals(id: string, approvals: Approval[]): void {
    const c = this.challenges.get(id);
    if (!c || c.done) return;
    c.approvals.clear();
    for (const a of approvals) c.approvals.set(a.user, a);
    for (const l of this.listeners) safely(this.log, () => l.challengeUpdated(c));
  }

  /**
   * The final outcome the shared state holds for `id` (decided here or elsewhere): a challenge held here
   * ends with it (an approval releases the statement), a peer's copy leaves the consoles.
   */
  decidedElsewhere(id: string, outcome: HoldOutcome): void {
    this.challenges.get(id)?.settle(outcome);
  }

  /** Challenges pending here: the shared state reloads them after missing notices. */
  pendingIds(origin: 'local' | 'peer'): string[] {
    return [...this.challenges.values()].filter((c) => c.origin === origin).map((c) => c.id);
  }

  /** Grants made or changed (in the shared state): replaces them here by id; `removed`: gone. */
  putGrants(grants: Grant[], removed: string[] = []): void {
    const users: string[] = [];
    for (const id of removed) {
      const g = this.grants.get(id);
      if (!g) continue;
      this.grants.delete(id);
      users.push(g.user, ...g.approvedBy);
    }
    for (const g of grants) {
      this.grants.set(g.id, g);
      users.push(g.user, ...g.approvedBy);
    }
    if (users.length) {
      this.emitGrants(users);
      this.scheduleGrantSweep();
    }
  }

  /** All grants at once (after the shared state reconnects): what is not in `grants` is gone. */
  replaceGrants(grants: Grant[]): void {
    const keep = new Set(grants.map((g) => g.id));
    this.putGrants(grants, [...this.grants.keys()].filter((id) => !keep.has(id)));
  }

  // ───────────────────────────── internals ─────────────────────────────

  /** The outcome once every requirement is satisfied (with the grants it makes), else how many remain. */
  private decideWith(c: Challenge): { outcome: HoldOutcome | null; grants: Grant[]; remaining: number } {
    const remaining = c.entries.filter((e) => !c.satisfied(e)).length;
    if (remaining > 0) return { outcome: null, grants: [], remaining };
    const outcome: HoldOutcome = {
      status: 'approved',
      approvers: [...c.approvals.values()].map((a) => ({
        user: a.user,
        credentialId: a.credentialId,
        factor: a.via,
        ...(a.signed ? { passkey: a.passkey, signed: a.signed } : {}),
      })),
      grant: false,
    };
    return { outcome, grants: this.grantsMadeBy(c), remaining: 0 };
  }

  /** The timer of a challenge held here ran out: shared, whatever the database already holds wins. */
  private expire(c: Challenge): void {
    if (!this.exchange) return c.settle({ status: 'expired' });
    const expired: HoldOutcome = { status: 'expired' };
    // The database out of reach: expire anyway (refusing is always safe), after a bounded wait.
    const fallback = setTimeout(() => c.settle(expired), EXCHANGE_WAIT_MS);
    this.exchange.decide(c.id, expired).then(
      (inForce) => {
        clearTimeout(fallback);
        c.settle(inForce);
      },
      () => {
        clearTimeout(fallback);
        c.settle(expired);
      },
    );
  }

  /**
   * A challenge held here ends without an approval (cancelled, withdrawn, shutting down): at once, since a
   * refusal needs nobody's agreement; the shared state is told so that other consoles drop it.
   */
  private end(c: Challenge, outcome: HoldOutcome): void {
    if (c.done) return;
    c.settle(outcome);
    this.exchange?.decide(c.id, outcome).catch((err) => this.log.warn('stepup.outcome_unrecorded', { challenge: c.id, status: outcome.status, error: (err as Error).message }));
  }

  private findGrant(entry: StepUpRequirement, request: HoldRequest, now: number): Grant | null {
    if (entry.grantMs <= 0) return null;
    for (const g of this.grants.values()) {
      if (g.expiresAt <= now || g.user !== request.user || g.rule !== entry.rule || g.file !== entry.file) continue;
      if (g.scope === 'connection' && g.connectionId !== request.connectionId) continue;
      return g;
    }
    return null;
  }

  /** The grants an approval of `c` makes (one per rule that grants). */
  private grantsMadeBy(c: Challenge): Grant[] {
    const now = this.now();
    const made: Grant[] = [];
    for (const e of c.entries) {
      if (e.grantMs <= 0) continue;
      const connectionId = e.grantScope === 'connection' ? c.request.connectionId : null;
      const approvedBy = c.countsFor(e).map((a) => a.user);
      made.push({
        id: randomBytes(12).toString('base64url'),
        rule: e.rule,
        file: e.file,
        user: c.user,
        scope: e.grantScope,
        connectionId,
        database: c.request.database,
        application: c.request.application,
        clientAddress: c.request.clientAddress,
        approvedBy,
        createdAt: now,
        expiresAt: now + e.grantMs,
      });
    }
    return made;
  }

  /** Grants made here (without shared state): a new one replaces the holder's older one for the same rule. */
  private addGrants(made: Grant[]): void {
    const replaced: string[] = [];
    for (const grant of made) {
      for (const [id, g] of this.grants) {
        if (g.user === grant.user && g.rule === grant.rule && g.file === grant.file && g.connectionId === grant.connectionId) replaced.push(id);
      }
      this.log.info('stepup.grant', { grant: grant.id, rule: grant.rule, user: grant.user, scope: grant.scope, ms: grant.expiresAt - grant.createdAt });
    }
    this.putGrants(made, replaced);
  }

  /** Drops expired grants and tells the consoles, at the next expiry. */
  private scheduleGrantSweep(): void {
    if (this.grantTimer) clearTimeout(this.grantTimer);
    this.grantTimer = null;
    let next = Infinity;
    for (const g of this.grants.values()) next = Math.min(next, g.expiresAt);
    if (next === Infinity || this.closed) return;
    this.grantTimer = setTimeout(() => {
      this.grantTimer = null;
      const now = this.now();
      const users: string[] = [];
      for (const [id, g] of this.grants) {
        if (g.expiresAt <= now) {
          this.grants.delete(id);
          users.push(g.user, ...g.approvedBy);
        }
      }
      if (users.length) this.emitGrants(users);
      this.scheduleGrantSweep();
    }, Math.max(0, next - this.now()) + 5);
    this.grantTimer.unref();
  }

  private emitGrants(users: string[]): void {
    const unique = [...new Set(users)];
    for (const l of this.listeners) safely(this.log, () => l.grantsChanged(unique));
  }

  /** Null when every rule has someone with a factor it accepts who could approve; else what is missing. */
  private nobodyCanApprove(entries: StepUpRequirement[], author: string): string | null {
    for (const e of entries) {
      const groups = e.approvers?.groups ?? [];
      const rule = `rule "${e.rule ?? 'default'}"`;
      const totp = !e.factors || e.factors.includes('totp');
      const passkeyOnly = e.factors?.length === 1 && e.factors[0] === 'passkey';
      const what = passkeyOnly ? 'a passkey' : totp && e.factors?.length === 1 ? 'an authenticator app (TOTP)' : 'a passkey or an authenticator app';
      if (groups.length === 0) {
        const has = (!e.factors || e.factors.includes('passkey')) && this.identity.passkeyCount(author) > 0;
        const hasTotp = totp && this.identity.totpSecret(author) !== null;
        if (!has && !hasTotp) {
          return `${rule} asks you to approve with ${what}, but ${author} has ${passkeyOnly || !totp ? 'no passkey' : 'no factor'} yet. Sign in to the stepgate console at ${this.options.consoleUrl()} and register one (or ask an administrator for an enrollment link: stepgate users enroll ${author}).`;
        }
        continue;
      }
      const withFactors = this.identity.usersWithFactors(totp);
      const passkeys = !e.factors || e.factors.includes('passkey') ? this.identity.usersWithPasskeys() : new Set<string>();
      const count = Math.max(1, e.approvers!.count);
      const able = this.identity
        .listUsers()
        .filter((u) => u.name !== author && !u.disabled && (passkeys.has(u.name) || (totp && withFactors.has(u.name))) && u.groups.some((g) => groups.includes(g)));
      if (able.length < count) {
        return `${rule} needs ${count} approver${count > 1 ? 's' : ''} from ${groups.join(', ')} other than ${author}, but only ${able.length} such user${able.length === 1 ? ' has' : 's have'} ${totp ? 'a passkey or an authenticator app' : 'a passkey'}.`;
      }
    }
    return null;
  }

  private resolved(c: Challenge, outcome: HoldOutcome): void {
    const view: ResolvedView = {
      id: c.id,
      kind: c.kind,
      user: c.user,
      database: c.request.database,
      rule: c.request.decision.rule ?? 'default',
      summary: c.kind === 'connect' ? `login to ${c.request.database}` : c.statements.map((s) => s.command).join('; '),
      status: outcome.status,
      by: outcome.status === 'rejected' ? outcome.by : outcome.status === 'approved' ? outcome.approvers.map((a) => a.user).join(', ') : null,
      reason: outcome.status === 'rejected' ? outcome.reason : outcome.status === 'unavailable' ? outcome.reason : null,
      at: this.now(),
      connection: connectionView(c.request),
      preview: previewView(c.request.preview ?? null),
      statementCount: c.statementCount,
      outcomes: [],
    };
    this.recent.push({ view, audience: c });
    if (this.recent.length > RECENT_LIMIT) this.recent.splice(0, this.recent.length - RECENT_LIMIT);
    this.log.info('stepup.resolved', { challenge: c.id, status: outcome.status });
    for (const l of this.listeners) safely(this.log, () => l.challengeResolved(c, outcome, view));
  }
}

/** The step-up rules a decision carries (one entry when a single rule asked). */
export function requirementsOf(decision: Decision): StepUpRequirement[] {
  if (decision.stepUps && decision.stepUps.length > 0) return decision.stepUps;
  return [
    {
      rule: decision.rule,
      file: decision.file,
      statementIndex: decision.statementIndex,
      grantMs: decision.grantMs,
      grantScope: decision.grantScope,
      timeoutMs: decision.timeoutMs,
      ...(decision.approvers ? { approvers: decision.approvers } : {}),
      ...(decision.factors ? { factors: decision.factors } : {}),
      ...(decision.signals ? { signals: decision.signals } : {}),
    },
  ];
}

/** Which terminal a request comes from (see ConnectionView). */
function connectionView(r: HoldRequest): ConnectionView {
  return {
    connectionId: r.connectionId,
    // As the audit trail lists sessions (audit/read.ts shortId).
    session: r.connectionId.slice(0, 8),
    clientAddress: r.clientAddress,
    clientPort: r.clientPort ?? null,
    serverPid: r.serverPid ?? null,
    connectedAt: r.connectedAt ?? null,
  };
}

/** A preview as the console shows it: errors reduced to their code and text. */
function previewView(p: PreviewReport | null): PreviewView | null {
  if (!p) return null;
  if (p.status === 'ran') return { status: 'ran', tags: [...p.tags], rows: p.rows, locks: [...p.locks], notices: [...p.notices] };
  if (p.status === 'failed') return { status: 'failed', sqlstate: p.error.code, message: p.error.message };
  return { status: 'unavailable', reason: p.reason, estimatedRows: p.estimatedRows ?? null };
}

const STATE_DOWN = 'the shared state database is out of reach, so nobody can approve now';
const NOT_WAITING: Refusal = { ok: false, refusal: 'not_found', error: 'no such statement is waiting for approval' };

function settled(outcome: HoldOutcome): Hold {
  return { challengeId: null, url: null, outcome: Promise.resolve(outcome), end() {} };
}

function safely(log: Logger, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    log.error('stepup.listener_failed', { error: (err as Error).stack ?? String(err) });
  }
}
