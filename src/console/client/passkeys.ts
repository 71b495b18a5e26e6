/**
 * Passkeys: registering the first one with an enrollment link, and the signed-in person's list (rename,
 * remove, add; "last used" kept current by the server's 'passkeys' messages after each approval).
 *
 * Invariant: the enrollment token lives in the URL fragment and sessionStorage only: it never reaches the
 * server's logs or a Referer header, and leaves the address bar at once.
 */
import type { EnrollInfo, MeView, PasskeyView } from '../protocol.js';
import { api, errorOf, friendly, webauthn } from './api.js';
import { $, $input, announce, busy, h, setStatus } from './dom.js';
import { withFreshSso } from './identity.js';
import { state } from './state.js';
import { consoleView, show } from './views.js';

/** Runs fn; when the server asks for a fresh passkey check first, does one and runs fn again. */
async function withRecentAuth<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await withFreshSso(fn);
  } catch (err) {
    if (errorOf(err).code !== 'reauth') throw err;
    const optionsJSON = await api('POST', '/api/reauth/options');
    const response = await webauthn().startAuthentication({ optionsJSON });
    await api('POST', '/api/reauth/verify', { response });
    return await fn();
  }
}

export function defaultPasskeyName(): string {
  const ua = navigator.userAgent;
  const os = /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'Mac' : /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iPhone' : /Linux/.test(ua) ? 'Linux' : 'this device';
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrome\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'browser';
  return `${browser} on ${os}`;
}

// ───────────────────────────── enrollment ─────────────────────────────

export async function enrollView(): Promise<void> {
  show('enroll');
  document.title = 'Register a passkey · stepgate console';
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromHash) sessionStorage.setItem('stepgate-enroll', fromHash);
  // Keep the secret out of the address bar and history.
  if (location.hash) history.replaceState(null, '', '/enroll');
  const token = sessionStorage.getItem('stepgate-enroll');
  if (!token) {
    $('enroll-error').textContent = 'This page needs the enrollment link your administrator gave you (it ends in #token=…).';
    return;
  }
  try {
    const info = await api<EnrollInfo>('POST', '/api/enroll/info', { token });
    $('enroll-user').textContent = info.user;
    $input('enroll-name').value = defaultPasskeyName();
    if (info.passkeys > 0) {
      $('enroll-existing').hidden = false;
      $('enroll-existing').textContent = `You already have ${info.passkeys} passkey${info.passkeys > 1 ? 's' : ''}; this adds another one.`;
    }
    $('enroll-ready').hidden = false;
  } catch (err) {
    $('enroll-error').textContent = friendly(err);
  }
}

export async function registerPasskey(button: HTMLButtonElement): Promise<void> {
  const token = sessionStorage.getItem('stepgate-enroll');
  $('enroll-error').textContent = '';
  const name = $input('enroll-name').value.trim() || defaultPasskeyName();
  await busy(button, 'Waiting for your passkey…', async () => {
    try {
      const optionsJSON = await api('POST', '/api/enroll/options', { token });
      const response = await webauthn().startRegistration({ optionsJSON });
      state.me = await api<MeView>('POST', '/api/enroll/verify', { token, name, response });
      sessionStorage.removeItem('stepgate-enroll');
      history.replaceState(null, '', '/');
      consoleView();
      announce('Your passkey is registered. You are signed in.');
      setStatus('live', 'Passkey registered');
    } catch (err) {
      $('enroll-error').textContent = friendly(err);
    }
  });
}

// ───────────────────────────── the list ─────────────────────────────

/** The server says the passkeys changed (one was just used to approve). */
export function onPasskeys(passkeys: PasskeyView[]): void {
  if (!state.me) return;
  state.me = { ...state.me, passkeys };
  renderPasskeys();
}

export function renderPasskeys(): void {
  const keys = state.me?.passkeys ?? [];
  $('passkeys').replaceChildren(
    ...keys.map((p) => {
      const only = keys.length === 1;
      const used = p.lastUsedAt ? ` · last used ${new Date(p.lastUsedAt).toLocaleString()}` : ' · not used yet';
      return h(
        'li',
        { 'data-passkey-id': p.id, 'data-last-used-at': p.lastUsedAt ?? '' },
        h(
          'div',
          { class: 'what' },
          h('strong', { class: 'pk-name', text: p.name }),
          h('span', { class: 'meta', text: `added ${new Date(p.createdAt).toLocaleDateString()}${used}${p.backedUp ? ' · synced' : ''}` }),
        ),
        h(
          'div',
          { class: 'buttons' },
          h('button', { type: 'button', 'data-action': 'rename-passkey', 'data-id': p.id, text: 'Rename' }),
          h('button', {
            type: 'button',
            class: 'danger',
            'data-action': 'remove-passkey',
            'data-id': p.id,
            disabled: only,
            title: only ? 'Your only passkey cannot be removed: add another one first.' : null,
            text: 'Remove',
          }),
        ),
      );
    }),
  );
}

function passkeyError(text: string): void {
  $('passkeys-error').textContent = text;
}

export function renamePasskey(button: HTMLButtonElement): void {
  const li = button.closest('li');
  if (!li || li.querySelector('form')) return;
  const current = li.querySelector('.pk-name')?.textContent ?? '';
  const input = h('input', { name: 'name', maxlength: '64', 'aria-label': 'New name for this passkey', value: current });
  const form = h('form', { class: 'buttons' }, input, h('button', { type: 'submit', class: 'primary', text: 'Save' }), h('button', { type: 'button', 'data-action': 'cancel-rename', text: 'Cancel' }));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void (async () => {
      try {
        state.me = await api<MeView>('POST', `/api/passkeys/${encodeURIComponent(button.dataset.id ?? '')}/rename`, { name: input.value });
        renderPasskeys();
        passkeyError('');
      } catch (err) {
        passkeyError(friendly(err));
      }
    })();
  });
  const buttons = li.querySelector<HTMLElement>('.buttons');
  if (buttons) buttons.hidden = true;
  li.append(form);
  input.focus();
  input.select();
}

export function cancelRename(button: HTMLButtonElement): void {
  const li = button.closest('li');
  li?.querySelector('form')?.remove();
  const buttons = li?.querySelector<HTMLElement>('.buttons');
  if (buttons) buttons.hidden = false;
}

export async function removePasskey(button: HTMLButtonElement): Promise<void> {
  const name = button.closest('li')?.querySelector('.pk-name')?.textContent ?? '';
  if (!confirm(`Remove the passkey "${name}"? You will no longer be able to sign in or approve with it.`)) return;
  passkeyError('');
  await busy(button, 'Removing…', async () => {
    try {
      state.me = await withRecentAuth(() => api<MeView>('DELETE', `/api/passkeys/${encodeURIComponent(button.dataset.id ?? '')}`));
      renderPasskeys();
      announce(`Passkey ${name} removed`);
    } catch (err) {
      passkeyError(friendly(err));
    }
  });
}

export async function addPasskey(button: HTMLButtonElement): Promise<void> {
  passkeyError('');
  const name = prompt('Name for the new passkey:', defaultPasskeyName());
  if (name === null) return;
  await busy(button, 'Waiting for your passkeys…', async () => {
    try {
      state.me = await withRecentAuth(async () => {
        const optionsJSON = await api('POST', '/api/passkeys/options');
        const response = await webauthn().startRegistration({ optionsJSON });
        return api<MeView>('POST', '/api/passkeys/verify', { name: name.trim() || defaultPasskeyName(), response });
      });
      renderPasskeys();
      announce('Passkey added');
    } catch (err) {
      passkeyError(friendly(err));
    }
  });
}
