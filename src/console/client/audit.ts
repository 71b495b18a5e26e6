/**
 * The auditor view (members of `auditors`): sessions (every user's, read-only), one session's timeline as
 * `stepgate audit replay` prints it, and the hash chain's verification. The server refuses the API to
 * everyone else; this page only mirrors that.
 *
 * With `state:` on the server, sessions are every instance's (the shared store): rows, a timeline's facts
 * and its address name the instance (`/audit/ID?instance=NAME`: session numbers are per instance), and
 * verification is shown per instance, with what each has not shipped yet where that is known.
 *
 * Invariant: answers that arrive for a list or timeline no longer shown are dropped (generation counters).
 */
import type { AuditInstanceView, AuditSessionView, AuditSessionsReply, AuditTimelineReply, TimelineStepView, VerificationReply, VerificationRunView } from '../protocol.js';
import { api, errorOf, friendly } from './api.js';
import { $, $input, fmtUtc, h, setStatus } from './dom.js';
import { state } from './state.js';
import { sessionEnded, show, startRefresher } from './views.js';

const audit = {
  started: false,
  filter: { user: '', since: '', until: '' },
  /** Cursor of the next page of sessions (null: no more). */
  next: null as string | null,
  sessionsGen: 0,
  /** The session whose timeline is shown (its id, or #NUMBER), and its instance (with `state:`). */
  open: null as string | null,
  openInstance: null as string | null,
  timelineNext: null as number | null,
  timelineGen: 0,
  poll: null as number | null,
};

export function auditStarted(): boolean {
  return audit.started;
}

export function auditView(): void {
  show('audit');
  setStatus('', '');
  document.title = 'Audit trail · stepgate console';
  startRefresher();
  const allowed = !!state.me?.auditor;
  $('audit-denied').hidden = allowed;
  $('audit-body').hidden = !allowed;
  if (!allowed || audit.started) return;
  audit.started = true;
  void loadVerification(true);
  void loadSessions(true);
  routeAudit();
}

export function stopAudit(): void {
  if (audit.poll !== null) clearTimeout(audit.poll);
  audit.poll = null;
  audit.started = false;
  audit.sessionsGen++;
  audit.timelineGen++;
  audit.open = audit.openInstance = null;
  audit.next = audit.timelineNext = null;
  for (const id of ['audit-sessions', 'audit-timeline', 'audit-session-facts', 'audit-verify-facts', 'audit-problems', 'audit-instances']) $(id).replaceChildren();
  $('audit-status').textContent = '';
  $('audit-status').setAttribute('data-audit-status', '');
}

/** Shared error handling of the auditor API: signed out, no longer an auditor, or a message. */
function auditFailed(err: unknown, where: string): void {
  const { status, code } = errorOf(err);
  if (status === 401 && code === 'signin') return sessionEnded();
  if (status === 403 && code === 'not_auditor') {
    if (state.me) state.me = { ...state.me, auditor: false };
    stopAudit();
    return auditView();
  }
  $(where).textContent = friendly(err);
}

/** The address says which session (if any) to show: /audit/ID, or #NUMBER kept in the history entry. */
export function routeAudit(): void {
  const m = /^\/audit\/([A-Za-z0-9_-]+)$/.exec(location.pathname);
  const kept = (history.state as { audit?: string; instance?: string | null } | null) ?? null;
  const key = m ? m[1]! : (kept?.audit ?? null);
  const instance = m ? new URLSearchParams(location.search).get('instance') : (kept?.instance ?? null);
  if (key) {
    if (key !== audit.open || instance !== audit.openInstance) void openSession(key, false, instance);
  } else {
    closeTimeline();
  }
}

// ───────────────────────────── sessions ─────────────────────────────

export async function loadSessions(reset: boolean): Promise<void> {
  if (reset) {
    audit.sessionsGen++;
    audit.next = null;
    $('audit-sessions').replaceChildren();
    $('audit-more').hidden = true;
    $('audit-sessions-empty').hidden = true;
  }
  const gen = audit.sessionsGen;
  const more = $('audit-more') as HTMLButtonElement;
  more.disabled = true;
  $('audit-sessions-error').textContent = '';
  try {
    let cursor = audit.next;
    let page: AuditSessionsReply;
    let rounds = 0;
    // A page examines a bounded number of sessions on the server; when a filter skipped them all, go on.
    do {
      const q = new URLSearchParams();
      for (const k of ['user', 'since', 'until'] as const) if (audit.filter[k]) q.set(k, audit.filter[k]);
      if (cursor) q.set('cursor', cursor);
      page = await api<AuditSessionsReply>('GET', `/api/audit/sessions?${q}`);
      if (gen !== audit.sessionsGen) return;
      $('audit-instance-col').hidden = !page.shared;
      for (const s of page.sessions) $('audit-sessions').append(sessionRow(s));
      cursor = page.next;
    } while (page.sessions.length === 0 && cursor && ++rounds < 10);
    audit.next = cursor;
    more.hidden = !cursor;
    $('audit-sessions-empty').hidden = $('audit-sessions').children.length > 0 || !!cursor;
  } catch (err) {
    if (gen === audit.sessionsGen) auditFailed(err, 'audit-sessions-error');
  } finally {
    more.disabled = false;
  }
}

function sessionKey(s: AuditSessionView): string {
  return s.id || `#${s.no}`;
}

function sessionRow(s: AuditSessionView): HTMLElement {
  const key = sessionKey(s);
  const cell = (text: string | number | null, cls?: string): HTMLElement => h('td', { class: cls, text: text === null || text === '' ? '—' : String(text) });
  const instance = s.instance ?? null;
  const row = h(
    'tr',
    { 'data-audit-session': key, 'data-session-no': s.no, 'data-instance': instance, class: s.denied ? 'has-denied' : null },
    h(
      'td',
      {},
      h('button', {
        type: 'button',
        class: 'link mono',
        'data-action': 'audit-open',
        'data-id': key,
        'data-instance': instance,
        'aria-label': `Open session ${s.short} of ${s.user || 'unknown user'}${instance !== null ? ` on instance ${instance}` : ''}`,
        text: s.short,
      }),
    ),
    cell(s.user),
    cell(s.database),
    cell(s.clientAddress),
    cell(s.application),
    cell(fmtUtc(s.start), 'time'),
    cell(s.end === null ? 'open' : fmtUtc(s.end), 'time'),
    cell(s.statements, 'num'),
    cell(s.denied, s.denied ? 'num denied' : 'num'),
    cell(s.held, s.held ? 'num held' : 'num'),
  );
  // With `state:`, the instance that recorded it comes first (its header is shown then).
  if (instance !== null) row.prepend(cell(instance, 'instance'));
  return row;
}

export function applyFilter(): void {
  audit.filter = { user: $input('audit-user').value.trim(), since: $input('audit-since').value.trim(), until: $input('audit-until').value.trim() };
  void loadSessions(true);
}

export function clearFilter(): void {
  for (const id of ['audit-user', 'audit-since', 'audit-until']) $input(id).value = '';
  applyFilter();
}

// ───────────────────────────── a session's timeline ─────────────────────────────

export async function openSession(key: string, push: boolean, instance: string | null = null): Promise<void> {
  audit.timelineGen++;
  audit.open = key;
  audit.openInstance = instance;
  audit.timelineNext = null;
  if (push) {
    const where = instance !== null ? `?${new URLSearchParams({ instance })}` : '';
    history.pushState({ audit: key, instance }, '', key.startsWith('#') ? '/audit' : `/audit/${key}${where}`);
  }
  $('audit-sessions-panel').hidden = true;
  $('audit-timeline-panel').hidden = false;
  $('audit-timeline').replaceChildren();
  $('audit-session-facts').replaceChildren();
  $('audit-timeline-error').textContent = '';
  $('audit-timeline-more').hidden = true;
  $('timeline-title').textContent = 'Session';
  await loadTimeline();
  $('audit-timeline-panel').scrollIntoView({ block: 'start' });
}

function closeTimeline(): void {
  audit.timelineGen++;
  audit.open = audit.openInstance = null;
  $('audit-timeline-panel').hidden = true;
  $('audit-sessions-panel').hidden = false;
}

export function back(): void {
  history.pushState({}, '', '/audit');
  closeTimeline();
}

export async function loadTimeline(): Promise<void> {
  const gen = audit.timelineGen;
  const more = $('audit-timeline-more') as HTMLButtonElement;
  more.disabled = true;
  try {
    const q = new URLSearchParams();
    if (audit.timelineNext !== null) q.set('after', String(audit.timelineNext));
    if (audit.openInstance !== null) q.set('instance', audit.openInstance);
    const r = await api<AuditTimelineReply>('GET', `/api/audit/sessions/${encodeURIComponent(audit.open ?? '')}?${q}`);
    if (gen !== audit.timelineGen) return;
    if (!$('audit-session-facts').children.length) renderSessionFacts(r.session);
    for (const step of r.steps) $('audit-timeline').append(timelineStep(step));
    audit.timelineNext = r.next;
    more.hidden = r.next === null;
  } catch (err) {
    if (gen === audit.timelineGen) auditFailed(err, 'audit-timeline-error');
  } finally {
    more.disabled = false;
  }
}

function renderSessionFacts(s: AuditSessionView): void {
  $('timeline-title').textContent = `Session ${s.short} · ${s.user || '?'}${s.instance !== undefined ? ` · instance ${s.instance}` : ''}`;
  const rows: [string, string | null][] = [
    ...(s.instance !== undefined ? [['Instance', s.instance] as [string, string]] : []),
    ['Session', s.id || `#${s.no}`],
    ['User', s.user],
    ['Database', s.database],
    ['Client', s.clientAddress],
    ['Application', s.application || '—'],
    ['TLS', s.tls === null ? '—' : s.tls ? 'on' : 'off'],
    ['Started (UTC)', fmtUtc(s.start)],
    ['Ended (UTC)', s.end === null ? 'no end recorded' : `${fmtUtc(s.end)}${s.endReason ? ` (${s.endReason})` : ''}`],
    ['Statements', `${s.statements} (${s.denied} denied, ${s.held} held)`],
  ];
  for (const [k, v] of rows) $('audit-session-facts').append(h('div', {}, h('dt', { text: k }), h('dd', { text: v ?? '—' })));
}

function timelineStep(step: TimelineStepView): HTMLElement {
  const tone =
    step.kind === 'statement' && step.decision ? `decision-${step.decision.action}` : step.kind === 'challenge.resolved' ? `resolved-${step.status}` : step.status === 'error' ? 'outcome-error' : '';
  const li = h('li', {
    class: `step kind-${step.kind.replace(/\./g, '-')} ${tone}`.trim(),
    'data-audit-event': step.seq,
    'data-kind': step.kind,
    'data-decision': step.decision ? step.decision.action : null,
    'data-status': step.status || null,
  });
  li.append(h('pre', {}, h('code', { text: step.lines.join('\n') })));
  if (step.statements && step.statements.length) {
    for (const st of step.statements) {
      const chips = h('ul', { class: 'chips', 'aria-label': `classification of the ${st.command} statement` });
      chips.append(h('li', { class: 'command', text: st.command }));
      for (const c of st.classes) chips.append(h('li', { text: c }));
      for (const t of st.tables) chips.append(h('li', { class: 'table', text: t }));
      for (const f of st.flags) chips.append(h('li', { class: 'flag', text: f }));
      li.append(chips);
    }
    if (step.decision && step.decision.reason) li.append(h('p', { class: 'muted small why', text: `Why: ${step.decision.reason}` }));
  }
  return li;
}

// ───────────────────────────── verification ─────────────────────────────

async function loadVerification(startIfNever: boolean): Promise<void> {
  try {
    let v = await api<VerificationReply>('GET', '/api/audit/verification');
    if (startIfNever && v.state === 'never') v = await api<VerificationReply>('POST', '/api/audit/verify');
    if (!audit.started) return;
    renderVerification(v);
  } catch (err) {
    if (audit.started) auditFailed(err, 'audit-status');
  }
}

export async function verifyNow(button: HTMLButtonElement): Promise<void> {
  button.disabled = true;
  try {
    renderVerification(await api<VerificationReply>('POST', '/api/audit/verify'));
  } catch (err) {
    button.disabled = false;
    auditFailed(err, 'audit-status');
  }
}

function renderVerification(v: VerificationReply): void {
  if (audit.poll !== null) clearTimeout(audit.poll);
  audit.poll = null;
  const el = $('audit-status');
  el.setAttribute('data-audit-status', v.state);
  const last = v.last;
  const report = last && last.error === null ? last : null;
  const button = document.querySelector<HTMLButtonElement>('[data-action="verify-audit"]');
  if (button) {
    button.disabled = v.state === 'running';
    button.textContent = v.state === 'running' ? 'Verifying…' : 'Verify now';
  }
  if (v.shared) return renderShared(v, el);
  $('audit-instances').hidden = true;
  switch (v.state) {
    case 'never':
      el.textContent = 'Not checked yet.';
      break;
    case 'running':
      el.textContent = `Checking the chain… (started ${fmtUtc(v.running?.startedAt)} UTC by ${v.running?.by ?? '?'})`;
      break;
    case 'verified':
      el.textContent = !report || report.events === 0 ? 'Verified: the trail has no events yet.' : `Verified: events ${report.firstSeq} to ${report.lastSeq} are intact.`;
      break;
    case 'broken':
      el.textContent = `BROKEN: ${report?.firstProblem ? report.firstProblem.message : 'the chain does not verify'}`;
      break;
    default:
      el.textContent = `Could not verify: ${last?.error ?? 'unknown error'}`;
  }
  const facts: string[] = [];
  if (report) {
    if (v.state === 'running') facts.push(`Previous result: ${report.ok ? 'verified' : 'BROKEN'}.`);
    facts.push(...reportFacts(report));
  }
  facts.push(checkpointFact(v.checkpoint, 'Latest signed checkpoint'));
  if (v.head) facts.push(`Newest event: ${v.head.seq}, ${fmtUtc(v.head.time)} UTC.`);
  if (last) facts.push(checkedFact(last));
  $('audit-verify-facts').replaceChildren(...facts.map((f) => h('li', { text: f })));
  // The first break is in the status line; the rest (and warnings) below it.
  const list = $('audit-problems');
  list.replaceChildren(...problemItems(report, true));
  list.hidden = list.children.length === 0;
  if (v.state === 'running' && audit.started) audit.poll = window.setTimeout(() => void loadVerification(false), 500);
}

type Report = Extract<VerificationRunView, { error: null }>;

/** What a run found in one chain (as `stepgate audit verify` prints it). */
function reportFacts(report: Report): string[] {
  const facts: string[] = [];
  facts.push(
      `Checked up to event ${report.lastSeq ?? '—'} (${report.events} events, ${report.sessions} sessions)${report.anchor ? `; events up to ${report.anchor.seq} were pruned by retention` : ''}.`,
    );
    const cps = report.checkpoints;
    const invalid = cps.total - cps.valid;
    facts.push(
      cps.total === 0
        ? 'No signed checkpoints yet.'
        : `${cps.total} signed checkpoint${cps.total === 1 ? '' : 's'}${invalid ? `, ${invalid} NOT VALID` : ', all signatures valid'}${cps.lastSeq !== null ? `; the last covers event ${cps.lastSeq}` : ''}${report.unsealed ? `; ${report.unsealed} event${report.unsealed === 1 ? '' : 's'} after it not sealed yet` : ''}.`,
    );
    const a = report.approvals;
    facts.push(
      `${a.verified} passkey approval${a.verified === 1 ? '' : 's'} signature-checked against the statements they approved${a.failed ? `, ${a.failed} FAILED` : ''}${a.codes ? `; ${a.codes} by authenticator app or recovery code (no signature to check)` : ''}${a.noKey + a.unsigned ? `; ${a.noKey + a.unsigned} without a key or signature on record (not checked)` : ''}.`,
  );
  return facts;
}

function checkpointFact(c: VerificationReply['checkpoint'], what: string): string {
  return c ? `${what}: #${c.id}, event ${c.seq}, signed ${fmtUtc(c.time)} UTC (${c.reason})${c.kid ? ` with key ${c.kid}` : ''}.` : `${what}: none yet.`;
}

function checkedFact(last: { finishedAt: number; by: string; durationMs: number }): string {
  return `Checked ${fmtUtc(last.finishedAt)} UTC by ${last.by} (took ${last.durationMs < 1000 ? `${last.durationMs} ms` : `${(last.durationMs / 1000).toFixed(1)} s`}).`;
}

/** A report's problems; `skipFirst`: the first break is in a status line already. */
function problemItems(report: Report | null, skipFirst: boolean): HTMLElement[] {
  if (!report) return [];
  const first = skipFirst ? report.firstProblem : null;
  const problems = report.problems.filter((p) => !(first && p.message === first.message && p.seq === first.seq));
  const items = problems.map((p) => h('li', { class: p.severity, 'data-seq': p.seq }, h('strong', { text: p.severity === 'error' ? (first ? 'also:' : 'error:') : 'warning:' }), ` ${p.message}`));
  if (report.moreProblems) items.push(h('li', { class: 'muted', text: `…and ${report.moreProblems} more (run stepgate audit verify for the list)` }));
  return items;
}

/** With `state:`: the run over every instance, then each instance's chain. */
function renderShared(v: VerificationReply, el: HTMLElement): void {
  const shared = v.shared!;
  const instances = shared.instances;
  const broken = instances.find((i) => i.last && i.last.error === null && !i.last.ok);
  const failed = instances.find((i) => i.last && i.last.error !== null);
  switch (v.state) {
    case 'never':
      el.textContent = 'Not checked yet.';
      break;
    case 'running':
      el.textContent = `Checking every instance's chain… (started ${fmtUtc(v.running?.startedAt)} UTC by ${v.running?.by ?? '?'})`;
      break;
    case 'verified':
      el.textContent = `Verified: the chains of all ${instances.length} instance${instances.length === 1 ? '' : 's'} in the shared store are intact.`;
      break;
    case 'broken': {
      const r = broken?.last && broken.last.error === null ? broken.last : null;
      el.textContent = `BROKEN: instance ${broken?.instance ?? '?'}: ${r?.firstProblem ? r.firstProblem.message : 'the chain does not verify'}`;
      break;
    }
    default:
      el.textContent = `Could not verify: ${shared.last?.error ?? (failed ? `instance ${failed.instance}: ${failed.last!.error}` : 'unknown error')}`;
  }
  const facts: string[] = ["Every instance's trail, from the shared state database: what an instance has not shipped yet is not in it, so not listed or checked here."];
  if (shared.last) facts.push(checkedFact(shared.last));
  $('audit-verify-facts').replaceChildren(...facts.map((f) => h('li', { text: f })));
  $('audit-problems').replaceChildren();
  $('audit-problems').hidden = true;
  const list = $('audit-instances');
  list.replaceChildren(...instances.map((i) => instanceItem(i, i.instance === shared.self, v.state === 'running')));
  list.hidden = instances.length === 0;
  if (v.state === 'running' && audit.started) audit.poll = window.setTimeout(() => void loadVerification(false), 500);
}

function instanceItem(i: AuditInstanceView, self: boolean, running: boolean): HTMLElement {
  const last = i.last;
  const report = last && last.error === null ? last : null;
  const status = !last ? 'unchecked' : last.error !== null ? 'error' : last.ok ? 'verified' : 'broken';
  const line =
    status === 'unchecked'
      ? 'Not checked yet.'
      : status === 'error'
        ? `Could not verify: ${last!.error}`
        : status === 'verified'
          ? report!.events === 0
            ? 'Verified: no events yet.'
            : `Verified: events ${report!.firstSeq} to ${report!.lastSeq} are intact.`
          : `BROKEN: ${report!.firstProblem ? report!.firstProblem.message : 'the chain does not verify'}`;
  const facts: string[] = [];
  if (report) facts.push(...reportFacts(report));
  facts.push(checkpointFact(i.checkpoint, 'Latest shipped checkpoint'));
  facts.push(i.head ? `Last shipped event: ${i.head.seq}, ${fmtUtc(i.head.time)} UTC.` : 'Nothing shipped yet.');
  if (i.unshipped) {
    const u = i.unshipped;
    facts.push(
      u.events === 0
        ? 'Everything this instance committed is shipped.'
        : `${u.events} event${u.events === 1 ? '' : 's'} committed here not shipped yet (the oldest ${u.seconds} s ago): not in the shared store, so not shown or checked.`,
    );
    if (u.error) facts.push(`The shipper is ${u.state}: ${u.error}`);
  } else {
    facts.push("Events it committed after its last shipment are not in the shared store; this console cannot know how many (that instance's /metrics: stepgate_audit_ship_lag_events).");
  }
  if (i.unverified) facts.push(`${i.unverified} event${i.unverified === 1 ? '' : 's'} committed here when that check finished had not been shipped, so were not checked.`);
  if (i.pinnedKid) facts.push(`Checked with the key pinned to it in the shared store: ${i.pinnedKid}.`);
  const problems = h('ul', { class: 'problems' }, ...problemItems(report, true));
  problems.hidden = problems.children.length === 0;
  return h(
    'li',
    { 'data-audit-instance': i.instance, 'data-instance-status': running && !last ? 'running' : status },
    h('h3', { text: `Instance ${i.instance}${self ? ' (this console)' : ''}` }),
    h('p', { class: 'verify', 'data-instance-line': '', text: line }),
    h('ul', { class: 'facts-list' }, ...facts.map((f) => h('li', { text: f }))),
    problems,
  );
}
