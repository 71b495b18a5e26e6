/**
 * A session's events as a psql-like transcript: each statement at its prompt, the decision and the rule,
 * approvals (who, with which passkey), and what happened, with the time between them. `stepgate audit
 * replay` prints the steps with the pauses they had.
 */
import type { OutcomeData } from './format.js';
import type { AuditEvent, SessionRow } from './read.js';

export interface ReplayStep {
  /** When it happened (Unix ms). */
  time: number;
  lines: string[];
  /** The event it shows (absent for the header and notes: the console pages a timeline by it). */
  seq?: number;
  kind?: string;
}


interface DecisionData {
  action: 'allow' | 'step-up' | 'deny';
  rule: string | null;
  file: string | null;
  reason: string;
  message?: string;
  timeout_ms?: number;
  approvers?: { groups: string[]; count: number };
  signals?: string[];
}

interface StatementState {
  database: string;
  statements: number;
  decision: DecisionData;
  /** The client saw an error from stepgate (deny, or a hold that ended without approval). */
  refused: boolean;
}

export function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}

export function gap(ms: number): string {
  const s = ms / 1000;
  return `+${s.toFixed(3)}s`;
}

export function humanDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms * 10) / 10} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s - m * 60);
  if (m < 60) return rest ? `${m} min ${rest} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return m - h * 60 ? `${h} h ${m - h * 60} min` : `${h} h`;
}

function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function ruleName(d: { rule: string | null; file: string | null }): string {
  return d.rule === null ? `the default${d.file ? ` (${d.file})` : ''}` : `rule "${d.rule}"${d.file ? ` (${d.file})` : ''}`;
}

function prompt(database: string, sql: string): string[] {
  const lines = sql.replace(/\s+$/, '').split('\n');
  const text = lines.map((l, i) => `${database}${i === 0 ? '=>' : '->'} ${l}`);
  if (!/;\s*$/.test(sql)) text[text.length - 1] += ';';
  return text;
}

function outcomeLines(o: OutcomeData, of: number): string[] {
  const which = of > 1 ? `[${o.index + 1}/${of}] ` : '';
  if (o.skipped) return [`-- ${which}not run: an earlier statement of the message failed`];
  if (o.sqlstate != null || o.message != null) {
    const lines = [`ERROR:  ${o.message ?? '(no message)'}`, `-- ${which}SQLSTATE ${o.sqlstate ?? '?'}, after ${humanDuration(o.duration_ms)}`];
    if (o.read_only_refused) lines.push(`-- ${which}a hidden write, stopped: stepgate ran it read-only because it was let through as a read`);
    return lines;
  }
  const tag = o.tag ?? '';
  const shown = /^SELECT \d+$/.test(tag) ? `(${o.rows ?? '?'} ${o.rows === 1 ? 'row' : 'rows'})` : tag === '' ? '(empty query)' : tag;
  return [`${which}${shown}`, `-- ${humanDuration(o.duration_ms)}`];
}

/**
 * The transcript of one session. `passkeys`: passkey names by credential id (read.ts passkeyNames), so that
 * approvals name the passkey ("Chrome on Linux") instead of its raw id.
 */
export function replaySteps(session: SessionRow, events: AuditEvent[], passkeys: ReadonlyMap<string, string> = new Map()): ReplayStep[] {
  const steps: ReplayStep[] = [];
  const database = session.database ?? '?';
  const statements = new Map<number, StatementState>();
  let last = session.start_time ?? events[0]?.time ?? 0;
  const stamp = (time: number): string => {
    const s = `[${clock(time)} ${gap(time - last)}]`;
    last = time;
    return s;
  };

  steps.push({
    time: session.start_time ?? events[0]?.time ?? 0,
    lines: [
      `-- stepgate audit replay of session ${session.connection ?? `#${session.session}`}`,
      `-- ${session.user ?? '?'} on database "${database}" from ${session.client ?? '?'}, application "${session.application ?? ''}", TLS ${session.tls ? 'on' : 'off'}, server pid ${session.server_pid ?? '?'}`,
      `-- started ${session.start_time === null ? '?' : new Date(session.start_time).toISOString()}`,
    ],
  });
  if (events.length > 0 && events[0]!.kind !== 'connection.start' && (session.first_seq ?? 0) < events[0]!.seq) {
    steps.push({ time: events[0]!.time, lines: ['-- (earlier events of this session were pruned by retention)'] });
  }

  for (const e of events) {
    const d = e.data;
    switch (e.kind) {
      case 'connection.start':
        break; // the header says it
      case 'statement': {
        const decision = d.decision as DecisionData;
        const count = ((d.statements as unknown[]) ?? []).length;
        const state: StatementState = { database, statements: count, decision, refused: false };
        statements.set(e.sseq, state);
        const text = prompt(database, String(d.sql ?? ''));
        text[0] = `${stamp(e.time)} ${text[0]}`;
        const lines = ['', ...text];
        if (Array.isArray(d.params)) {
          lines.push(`-- parameters: ${(d.params as (string | null)[]).map((p, i) => `$${i + 1} = ${p === null ? 'NULL' : `'${p.replace(/'/g, "''")}'`}`).join(', ') || '(none)'}`);
        }
        if (decision.action === 'allow') {
          lines.push(`-- allowed by ${ruleName(decision)}`);
        } else if (decision.action === 'deny') {
          lines.push(`-- DENIED by ${ruleName(decision)}${decision.message ? `: ${decision.message}` : ''}`);
          state.refused = true;
        } else {
          const who = decision.approvers ? `${decision.approvers.count} of group ${decision.approvers.groups.join(', ')}` : 'its author';
          lines.push(`-- held for step-up by ${ruleName(decision)}${decision.message ? `: ${decision.message}` : ''}`);
          if (decision.signals?.length) lines.push(`-- signals: ${decision.signals.join('; ')}`);
          lines.push(`-- needs approval by ${who}${decision.timeout_ms ? `, within ${humanDuration(decision.timeout_ms)}` : ''}`);
        }
        for (const o of (d.outcomes as OutcomeData[]) ?? []) lines.push(...outcomeLines(o, count));
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines });
        break;
      }
      case 'outcome': {
        const state = statements.get(d.statement as number);
        // Printed like an outcome inside the statement event (which it is, when it arrives within the batch).
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines: outcomeLines(d as unknown as OutcomeData, state?.statements ?? 1) });
        break;
      }
      case 'preview': {
        const at = stamp(e.time);
        let line: string;
        if (d.status === 'ran') {
          const locks = (d.locks as string[] | undefined) ?? [];
          line = `-- ${at} preview (not committed): ${((d.tags as string[]) ?? []).join('; ')}${locks.length > 0 ? `; locked ${locks.join(', ')} while waiting` : ''}`;
        } else if (d.status === 'failed') {
          line = `-- ${at} preview failed: ERROR ${String(d.sqlstate)} ${String(d.message ?? '')} (rolled back; the client got the error)`;
        } else {
          line = `-- ${at} no preview: ${String(d.reason)}${d.estimated_rows !== undefined ? ` (planner estimate: ${String(d.estimated_rows)} rows)` : ''}`;
        }
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines: [line] });
        break;
      }
      case 'challenge.created':
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines: [`-- ${stamp(e.time)} waiting for approval (challenge ${String(d.challenge)})`] });
        break;
      case 'challenge.resolved': {
        const state = statements.get(d.statement as number);
        const lines: string[] = [];
        const at = stamp(e.time);
        switch (d.status) {
          case 'approved': {
            const approvers = (d.approvers as { user: string; credential: string | null; factor?: string; passkey?: string; signed?: unknown }[]) ?? [];
            const passkey = (a: (typeof approvers)[number]): string => {
              const name = a.passkey ?? passkeys.get(a.credential ?? '');
              return ` with passkey ${name !== undefined ? JSON.stringify(name) : a.credential}${a.signed ? ' (signed)' : ''}`;
            };
            const who = approvers
              .map((a) => `${a.user}${a.factor === 'totp' ? ' with an authenticator app code' : a.factor === 'recovery' ? ' with a recovery code' : a.credential ? passkey(a) : ''}`)
              .join(', ');
            lines.push(d.challenge === null && d.grant ? `-- ${at} approved by an earlier grant` : `-- ${at} approved by ${who || '?'}${d.grant ? ' (grant given)' : ''}`);
            break;
          }
          case 'rejected':
            lines.push(`-- ${at} rejected by ${String(d.by)}${d.reason ? `: ${String(d.reason)}` : ''}`);
            break;
          case 'expired':
            lines.push(`-- ${at} timed out: nobody approved`);
            break;
          case 'cancelled':
            lines.push(`-- ${at} cancelled by the client`);
            break;
          case 'withdrawn':
            lines.push(`-- ${at} withdrawn: the client went away`);
            break;
          case 'shutdown':
            lines.push(`-- ${at} ended: stepgate shut down while it waited (not run; the client got FATAL 57P01)`);
            break;
          case 'unavailable':
            lines.push(`-- ${at} refused: step-up is not available (${String(d.reason ?? '')})`);
            break;
          default:
            lines.push(`-- ${at} ${String(d.status)}`);
        }
        if (state && d.status !== 'approved') state.refused = true;
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines });
        break;
      }
      case 'connection.end':
        steps.push({
          time: e.time,
          seq: e.seq,
          kind: e.kind,
          lines: ['', `-- ${stamp(e.time)} session ended: ${String(d.reason)} (after ${humanDuration(Number(d.duration_ms))}; ${bytes(d.bytes_in as number)} in, ${bytes(d.bytes_out as number)} out)`],
        });
        break;
      default:
        steps.push({ time: e.time, seq: e.seq, kind: e.kind, lines: [`-- ${stamp(e.time)} ${e.kind} ${e.body}`] });
    }
  }
  if (session.end_time === null) steps.push({ time: last, lines: ['', '-- (no end recorded: the session is still open, or stepgate stopped without recording it)'] });
  return steps;
}
