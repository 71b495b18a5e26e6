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

interface Approval {
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

interface Grant {
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

export class Challenge {
  readonly approvals = new Map<string, Approval>();
  done = false;
  timer: NodeJS.Timeout | null = null;
  /** Set by the broker: settles the hold's outcome once. */
  settle!: (outcome: HoldOutcome) => void;
  readonly statements: StatementView[];
  /** What an approval of it signs (see evidence.ts). */
  readonly digest: string;

  constructor(
    readonly id: string,
    readonly request: HoldRequest,
    readonly entries: StepUpRequirement[],
    readonly createdAt: number,
    readonly expiresAt: number,
  ) {
    this.digest = statementDigest(describeHold(request));
    this.statements = request.statements.slice(0, STATEMENTS_VIEW_MAX).map((s) => {
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

export type ApproveResult =
  | { ok: true; status: 'approved' | 'pending'; remaining: number }
  | { ok: false; status: number; error: string };

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

  constructor(private readonly options: BrokerOptions) {
    this.identity = options.identity;
    this.log = options.log;
    this.now = options.now ?? Date.now;
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
    challenge.timer = setTimeout(() => challenge.settle({ status: 'expired' }), timeoutMs);
    this.challenges.set(id, challenge);
    this.log.info('stepup.held', { challenge: id, connection: request.connectionId, user: request.user, rules: entries.map((e) => e.rule ?? 'default') });
    for (const l of this.listeners) safely(this.log, () => l.challengeCreated(challenge));
    return {
      challengeId: id,
      url: this.challengeUrl(id),
      outcome,
      end: (status) => challenge.settle({ status }),
    };
  }

  connectionClosed(connectionId: string): void {
    for (const c of [...this.challenges.values()]) if (c.request.connectionId === connectionId) c.settle({ status: 'withdrawn' });
    const users: string[] = [];
    for (const [id, g] of this.grants) {
      if (g.connectionId === connectionId) {
        this.grants.delete(id);
        users.push(g.user, ...g.approvedBy);
      }
    }
    if (users.length) this.emitGrants(users);
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
  outcome(challengeId: string, index: number, outcome: { tag: string | null; sqlstate: string | null; message: string | null; skipped: boolean; durationMs: number }): void {
    const entry = this.recent.findLast((r) => r.view.id === challengeId);
    if (!entry || entry.view.outcomes.some((o) => o.index === index)) return;
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
      omittedStatements: Math.max(0, c.request.statements.length - c.statements.length),
      omittedCommands: [...new Set(c.request.statements.slice(c.statements.length).map((s) => s.command))],
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
  mayApprove(id: string, user: string, factor?: Factor): { ok: true; challenge: Challenge } | { ok: false; status: number; error: string } {
    const c = this.challenges.get(id);
    const groups = this.groupsOf(user);
    if (!c || !c.visibleTo(user, groups)) return { ok: false, status: 404, error: 'no such statement is waiting for approval' };
    if (this.identity.getUser(user)?.disabled) return { ok: false, status: 403, error: 'your stepgate account is disabled' };
    const refusal = c.refusal(user, groups, factor);
    if (refusal) return { ok: false, status: 403, error: refusal };
    return { ok: true, challenge: c };
  }

  /**
   * A verified approval by `user` (a passkey assertion, or a TOTP or recovery code). Re-checks who may
   * approve (groups read now, from the store) and that the rule accepts the factor.
   */
  approve(id: string, user: string, credentialId: string, via: Factor | 'recovery' = 'passkey', evidence?: { passkey: string; signed: SignedAssertion }): ApproveResult {
    const factor: Factor = via === 'recovery' ? 'totp' : via;
    const check = this.mayApprove(id, user, factor);
    if (!check.ok) return check;
    const c = check.challenge;
    // A signature over another statement's digest proves nothing about this one.
    if (evidence && evidence.signed.digest !== c.digest) return { ok: false, status: 409, error: 'this approval was signed for another version of the statement; try again' };
    c.approvals.set(user, { user, credentialId, factor, via, groups: this.groupsOf(user), at: this.now(), ...(evidence ?? {}) });
    const remaining = c.entries.filter((e) => !c.satisfied(e)).length;
    this.log.info('stepup.approval', { challenge: id, user, credential: credentialId, factor: via, remaining });
    if (remaining > 0) {
      for (const l of this.listeners) safely(this.log, () => l.challengeUpdated(c));
      return { ok: true, status: 'pending', remaining };
    }
    this.createGrants(c);
    c.settle({
      status: 'approved',
      approvers: [...c.approvals.values()].map((a) => ({
        user: a.user,
        credentialId: a.credentialId,
        factor: a.via,
        ...(a.signed ? { passkey: a.passkey, signed: a.signed } : {}),
      })),
      grant: false,
    });
    return { ok: true, status: 'approved', remaining: 0 };
  }

  reject(id: string, user: string, reason: string): { ok: true } | { ok: false; status: number; error: string } {
    const c = this.challenges.get(id);
    if (!c || !c.visibleTo(user, this.groupsOf(user))) return { ok: false, status: 404, error: 'no such statement is waiting for approval' };
    const clean = String(reason ?? '').replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, REASON_MAX);
    this.log.info('stepup.rejected', { challenge: id, user });
    c.settle({ status: 'rejected', by: user, reason: clean });
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

  revokeGrant(id: string, user: string): boolean {
    const g = this.grants.get(id);
    if (!g || (g.user !== user && !g.approvedBy.includes(user))) return false;
    this.grants.delete(id);
    this.log.info('stepup.grant_revoked', { grant: id, rule: g.rule, holder: g.user, by: user });
    this.emitGrants([g.user, ...g.approvedBy]);
    return true;
  }

  /** Ends every pending challenge (stepgate stops). */
  close(): void {
    this.closed = true;
    for (const c of [...this.challenges.values()]) c.settle({ status: 'unavailable', reason: 'stepgate is shutting down' });
    if (this.grantTimer) clearTimeout(this.grantTimer);
    this.grants.clear();
  }

  groupsOf(user: string): string[] {
    return this.identity.getUser(user)?.groups ?? [];
  }

  // ───────────────────────────── internals ─────────────────────────────

  private findGrant(entry: StepUpRequirement, request: HoldRequest, now: number): Grant | null {
    if (entry.grantMs <= 0) return null;
    for (const g of this.grants.values()) {
      if (g.expiresAt <= now || g.user !== request.user || g.rule !== entry.rule || g.file !== entry.file) continue;
      if (g.scope === 'connection' && g.connectionId !== request.connectionId) continue;
      return g;
    }
    return null;
  }

  private createGrants(c: Challenge): void {
    const now = this.now();
    const users = new Set<string>();
    for (const e of c.entries) {
      if (e.grantMs <= 0) continue;
      const connectionId = e.grantScope === 'connection' ? c.request.connectionId : null;
      for (const [id, g] of this.grants) {
        if (g.user === c.user && g.rule === e.rule && g.file === e.file && g.connectionId === connectionId) this.grants.delete(id);
      }
      const approvedBy = c.countsFor(e).map((a) => a.user);
      const grant: Grant = {
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
      };
      this.grants.set(grant.id, grant);
      users.add(c.user);
      for (const u of approvedBy) users.add(u);
      this.log.info('stepup.grant', { grant: grant.id, rule: e.rule, user: c.user, scope: e.grantScope, ms: e.grantMs });
    }
    if (users.size) {
      this.emitGrants([...users]);
      this.scheduleGrantSweep();
    }
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
      statementCount: c.request.statements.length,
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
