/**
 * Active grants: after an approval some rules let the same kind of statement through for a while. The
 * list, its countdowns and revoking one.
 *
 * Invariant: the list is always the server's latest answer (a 'grants' message or the revoke reply).
 */
import type { GrantView, GrantsReply } from '../protocol.js';
import { api, friendly } from './api.js';
import { $, announce, busy, fmt, h } from './dom.js';
import { now, state } from './state.js';

export function onGrants(grants: GrantView[]): void {
  state.grants = grants;
  renderGrants();
}

export function renderGrants(): void {
  const t = now();
  $('grants').replaceChildren(
    ...state.grants.map((g) => {
      const scope = g.scope === 'user' ? `all of ${g.yours ? 'your' : `${g.user}'s`} connections` : `one connection (${g.application || 'no application name'}, ${g.database}, ${g.clientAddress || 'local'})`;
      return h(
        'li',
        { 'data-grant-id': g.id, 'data-expires-at': g.expiresAt },
        h(
          'div',
          { class: 'what' },
          h('span', {}, 'Rule ', h('strong', { text: g.rule }), g.yours ? '' : ` for ${g.user}`),
          h('span', { class: 'meta' }, `${scope}${g.approvedBy.length ? ` · approved by ${g.approvedBy.join(', ')}` : ''} · `, h('span', { class: 'expires', text: `expires in ${fmt(g.expiresAt - t)}` })),
        ),
        h('div', { class: 'buttons' }, h('button', { type: 'button', 'data-action': 'revoke-grant', 'data-id': g.id, text: 'Revoke' })),
      );
    }),
  );
  $('grants-empty').hidden = state.grants.length > 0;
}

/** Every second: the countdowns. */
export function tickGrants(): void {
  const t = now();
  for (const li of $('grants').children) {
    const exp = Number((li as HTMLElement).dataset.expiresAt);
    const el = li.querySelector('.expires');
    if (el) el.textContent = exp > t ? `expires in ${fmt(exp - t)}` : 'expired';
  }
}

export async function revokeGrant(button: HTMLButtonElement): Promise<void> {
  await busy(button, 'Revoking…', async () => {
    try {
      const r = await api<GrantsReply>('DELETE', `/api/grants/${encodeURIComponent(button.dataset.id ?? '')}`);
      onGrants(r.grants);
      announce('Grant revoked');
    } catch (err) {
      announce(friendly(err));
    }
  });
}
