/**
 * Decided statements: the "Recently decided" list (the decision, and for an approval what the statements
 * did afterwards: command tag, rows, time), and the panel a /c/ID link shows once its statement is no
 * longer waiting.
 *
 * Outcomes come from the server as the audit trail records them ('outcome' messages); an entry is
 * replaced whole by the newer one of the same id, never edited in place.
 */
import type { ChallengeLookup, OutcomeView, ResolvedView } from '../protocol.js';
import { api, errorOf, friendly } from './api.js';
import { clientText, onChallenge, previewText } from './approvals.js';
import { $, fmtTime, h } from './dom.js';
import { state } from './state.js';

const RECENT_SHOWN = 25;

/** "approved by alice at 10:42:01", "rejected by bob: not now", "timed out: …". */
export function statusText(r: ResolvedView): string {
  const at = ` at ${fmtTime(r.at)}`;
  switch (r.status) {
    case 'approved':
      return `approved${r.by ? ` by ${r.by}` : ''}${at}`;
    case 'rejected':
      return `rejected by ${r.by ?? 'someone'}${at}${r.reason ? `: ${r.reason}` : ''}`;
    case 'expired':
      return `timed out${at}: nobody approved it in time`;
    case 'cancelled':
      return `cancelled by the client${at}`;
    case 'withdrawn':
      return `withdrawn${at}: the client disconnected`;
    case 'shutdown':
      return `ended${at}: stepgate shut down while it waited`;
    default:
      return r.reason || r.status;
  }
}

function one(o: OutcomeView): string {
  if (o.skipped) return 'skipped (an earlier statement failed)';
  if (o.sqlstate) return `failed: ${o.message ?? 'error'} (${o.sqlstate})`;
  if (o.tag === null || o.tag === '') return 'ran (no command tag)';
  return o.rows !== null && !/^SELECT /.test(o.tag) ? `${o.tag} (${o.rows} row${o.rows === 1 ? '' : 's'})` : o.tag;
}

/** What happened after the decision: "ran: DELETE 7 (7 rows) at 10:42:02"; null when nothing ran. */
export function outcomeText(r: ResolvedView): string | null {
  if (r.status !== 'approved' || r.kind === 'connect') return null;
  if (r.outcomes.length === 0) return 'running…';
  const last = r.outcomes[r.outcomes.length - 1]!;
  const more = r.statementCount > r.outcomes.length ? ` (${r.statementCount - r.outcomes.length} more to come)` : '';
  return `ran: ${r.outcomes.map(one).join('; ')} at ${fmtTime(last.at)}${more}`;
}

/** A newly decided statement: first in the list (and in the /c/ID panel when it is the one). */
export function rememberResolved(r: ResolvedView): void {
  state.recent = [r, ...state.recent.filter((x) => x.id !== r.id)].slice(0, RECENT_SHOWN);
  renderRecent();
  if (state.focusId === r.id) showDecided(r);
}

/** An approved statement ran: its entry gets the outcome. */
export function onOutcome(r: ResolvedView): void {
  const i = state.recent.findIndex((x) => x.id === r.id);
  if (i >= 0) state.recent[i] = r;
  else state.recent.unshift(r);
  renderRecent();
  if (state.focusId === r.id) showDecided(r);
}

export function renderRecent(): void {
  $('recent').replaceChildren(
    ...state.recent.map((r) => {
      const outcome = outcomeText(r);
      return h(
        'li',
        { 'data-recent-id': r.id, 'data-status': r.status },
        h(
          'div',
          { class: 'what' },
          h('span', {}, h('span', { class: `status-${r.status}`, text: r.status }), ` ${r.summary}`),
          h('span', { class: 'meta', text: `${r.user} · session ${r.connection.session} · rule ${r.rule} · ${statusText(r)}` }),
          outcome ? h('span', { class: 'meta outcome', 'data-outcomes': r.outcomes.length, text: outcome }) : null,
        ),
      );
    }),
  );
  $('recent-empty').hidden = state.recent.length > 0;
}

// ───────────────────────────── /c/ID ─────────────────────────────

/** The statement a /c/ID link names is not (or no longer) waiting here: ask the server what became of it. */
export async function focusDecided(id: string): Promise<void> {
  const known = state.recent.find((r) => r.id === id);
  if (known) return showDecided(known);
  try {
    const r = await api<ChallengeLookup>('GET', `/api/challenges/${encodeURIComponent(id)}`);
    if (r.state === 'pending') {
      if (!state.cards.has(id)) onChallenge(r.challenge);
      state.cards.get(id)?.scrollIntoView({ block: 'center' });
      return;
    }
    showDecided(r.resolved);
  } catch (err) {
    const panel = $('decided');
    panel.hidden = false;
    panel.dataset.status = errorOf(err).code || 'error';
    $('decided-title').textContent = 'About this statement';
    $('decided-what').textContent = '';
    $('decided-status').textContent = friendly(err);
    $('decided-outcome').textContent = '';
  }
}

function showDecided(r: ResolvedView): void {
  const panel = $('decided');
  panel.hidden = false;
  panel.dataset.status = r.status;
  panel.dataset.decidedId = r.id;
  $('decided-title').textContent = r.kind === 'connect' ? 'This login was already decided' : 'This statement was already decided';
  $('decided-what').textContent = `${r.summary} by ${r.user} on ${r.database} (session ${r.connection.session}, ${clientText(r.connection)}${r.preview ? `; preview: ${previewText(r.preview)}` : ''})`;
  $('decided-status').textContent = `It was ${statusText(r)}.`;
  $('decided-outcome').textContent = outcomeText(r) ?? (r.status === 'approved' ? '' : 'It did not run.');
}
