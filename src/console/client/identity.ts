/**
 * The console's identity features in the browser: single sign-on, the authenticator app (TOTP) with
 * recovery codes, approving with a code, the Connect page (short-lived database credentials) and
 * confirming a `stepgate login` from a terminal.
 *
 * Invariant: data never becomes HTML (textContent and setAttribute only); the one-time codes and
 * passwords shown here are shown once and kept nowhere but the page.
 */
import type { ChallengeView, CliLoginInfo, CodeApproveReply, CredentialsReply, IssuedCredential, MeView, PublicInfo, RecoveryCodesReply, TotpSetup } from '../protocol.js';
import { api, errorOf, friendly } from './api.js';
import { cardPart, rebuildCards } from './approvals.js';
import { $, $input, busy, h } from './dom.js';
import { state } from './state.js';
import { sessionEnded } from './views.js';

// ───────────────────────────── single sign-on ─────────────────────────────

/** Where the browser goes to sign in at the IdP (fresh: the IdP must ask again, before enrolling a factor). */
export function ssoUrl(fresh: boolean): string {
  return `/sso/start?return=${encodeURIComponent(location.pathname)}${fresh ? '&fresh=1' : ''}`;
}

/** The sign-in view: offers SSO when configured, and shows why the last SSO attempt failed. */
export async function prepareSignIn(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const error = params.get('sso_error');
  if (error) {
    $('signin-error').textContent = `Single sign-on failed: ${error}`;
    history.replaceState(null, '', location.pathname);
  }
  try {
    const info = await api<PublicInfo>('GET', '/api/public');
    $('signin-sso').hidden = !info.sso;
  } catch {
    $('signin-sso').hidden = true;
  }
}

export function signInSso(): void {
  location.assign(ssoUrl(false));
}

/** Runs fn; when the server wants a fresh SSO sign-in first, goes to the IdP (and comes back here). */
export async function withFreshSso<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (errorOf(err).code === 'sso_reauth') {
      location.assign(ssoUrl(true));
      return new Promise<T>(() => {});
    }
    throw err;
  }
}

// ───────────────────────────── the authenticator app ─────────────────────────────

export function renderFactors(): void {
  const me = state.me;
  if (!me) return;
  $('totp-state').textContent = me.totp
    ? `An authenticator app is set up. ${me.recoveryCodesLeft} recovery code${me.recoveryCodesLeft === 1 ? '' : 's'} left.`
    : 'No authenticator app yet. Set one up to approve statements with a 6-digit code when no passkey is at hand (where the rules allow it).';
  $('totp-state').dataset.totp = me.totp ? 'on' : 'off';
  $('totp-setup-button').hidden = me.totp;
  $('totp-remove-button').hidden = !me.totp;
  $('totp-recovery-button').hidden = !me.totp;
  $('connect-nav').hidden = !me.credentials;
}

export async function totpSetup(button: HTMLButtonElement): Promise<void> {
  $('totp-error').textContent = '';
  await busy(button, 'Preparing…', async () => {
    try {
      const setup = await withFreshSso(() => api<TotpSetup>('POST', '/api/totp/setup'));
      ($('totp-qr') as HTMLImageElement).src = setup.qr;
      $('totp-secret').textContent = setup.secret;
      $('totp-enroll').hidden = false;
      $input('totp-code').value = '';
      $input('totp-code').focus();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpConfirm(button: HTMLButtonElement): Promise<void> {
  $('totp-error').textContent = '';
  await busy(button, 'Checking…', async () => {
    try {
      const r = await api<RecoveryCodesReply>('POST', '/api/totp/confirm', { code: $input('totp-code').value.trim() });
      state.me = r.me;
      $('totp-enroll').hidden = true;
      showRecoveryCodes(r.recoveryCodes);
      renderFactors();
      // Cards show what the viewer may approve with.
      rebuildCards();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpRecovery(button: HTMLButtonElement): Promise<void> {
  await busy(button, 'Making new codes…', async () => {
    try {
      const r = await withFreshSso(() => api<RecoveryCodesReply>('POST', '/api/recovery-codes'));
      state.me = r.me;
      showRecoveryCodes(r.recoveryCodes);
      renderFactors();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpRemove(button: HTMLButtonElement): Promise<void> {
  await busy(button, 'Removing…', async () => {
    try {
      state.me = await withFreshSso(() => api<MeView>('DELETE', '/api/totp'));
      $('recovery').hidden = true;
      renderFactors();
      rebuildCards();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

function showRecoveryCodes(codes: string[]): void {
  $('recovery-codes').replaceChildren(...codes.map((c) => h('li', { text: c })));
  $('recovery').hidden = false;
}

// ───────────────────────────── approving with a code ─────────────────────────────

/** The controls a card gets when this viewer may approve with an authenticator app code. */
export function codeControls(c: ChallengeView): HTMLElement | null {
  if (!c.you.factors.includes('totp')) return null;
  const inputId = `code-${c.id}`;
  return h(
    'div',
    { class: 'code-approve' },
    h('label', { for: inputId }, 'Code from your authenticator app', h('input', { id: inputId, name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '11' })),
    h('button', { type: 'button', 'data-action': 'approve-code', 'data-id': c.id, text: 'Approve with code' }),
  );
}

/** The risk signals that made a rule ask, for the card. */
export function signalList(c: ChallengeView): HTMLElement | null {
  if (c.signals.length === 0) return null;
  return h('ul', { class: 'signals', 'aria-label': 'risk signals' }, c.signals.map((s) => h('li', { 'data-signal': s.split(' ')[0], text: s })));
}

export async function approveWithCode(button: HTMLButtonElement): Promise<void> {
  const id = button.dataset.id ?? '';
  const code = cardPart<HTMLInputElement>(id, 'input[name=code]')?.value.trim() ?? '';
  const clear = cardPart(id, '.error');
  if (clear) clear.textContent = '';
  await busy(button, 'Checking…', async () => {
    try {
      const r = await api<CodeApproveReply>('POST', `/api/challenges/${encodeURIComponent(id)}/approve-code`, { code });
      const result = cardPart(id, '.result');
      if (result) {
        result.classList.add('ok');
        result.textContent = r.status === 'pending' ? 'Your approval is recorded; it still needs more approvals.' : 'Approved: the statement runs now.';
      }
    } catch (err) {
      const { status, code: reason } = errorOf(err);
      if (status === 401 && reason === 'signin') return sessionEnded();
      const error = cardPart(id, '.error');
      if (error) error.textContent = friendly(err);
    }
  });
}

// ───────────────────────────── Connect: database credentials ─────────────────────────────

export async function connectView(): Promise<void> {
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  if (code) sessionStorage.setItem('stepgate-cli-code', code);
  if (location.hash) history.replaceState(null, '', '/connect');
  await showCliRequest();
  try {
    renderCredentials(await api<CredentialsReply>('GET', '/api/credentials'));
  } catch (err) {
    $('connect-error').textContent = friendly(err);
  }
}

function renderCredentials(r: CredentialsReply): void {
  if (r.connect) $('connect-where').textContent = `stepgate listens at ${r.connect.host}:${r.connect.port} (sslmode=${r.connect.sslmode}).`;
  if (r.ttlMs) $('connect-ttl').textContent = `A credential works for ${Math.round((r.ttlMs / 3600000) * 10) / 10} hours, for you only, and can be revoked here at any time.`;
  $('credentials').replaceChildren(
    ...r.credentials.map((c) =>
      h(
        'li',
        { 'data-credential-id': c.id },
        h('div', { class: 'what' }, h('strong', { text: c.label }), h('span', { class: 'meta', text: `expires ${new Date(c.expiresAt).toLocaleString()}${c.lastUsedAt ? ` · last used ${new Date(c.lastUsedAt).toLocaleString()}` : ' · not used yet'}` })),
        h('div', { class: 'buttons' }, h('button', { type: 'button', class: 'danger', 'data-action': 'revoke-credential', 'data-id': c.id, text: 'Revoke' })),
      ),
    ),
  );
  $('credentials-empty').hidden = r.credentials.length > 0;
}

export async function issueCredential(button: HTMLButtonElement): Promise<void> {
  $('connect-error').textContent = '';
  await busy(button, 'Issuing…', async () => {
    try {
      showIssued(await api<IssuedCredential>('POST', '/api/credentials', { label: 'console' }));
      renderCredentials(await api<CredentialsReply>('GET', '/api/credentials'));
    } catch (err) {
      $('connect-error').textContent = friendly(err);
    }
  });
}

function showIssued(issued: IssuedCredential): void {
  $('issued-password').textContent = issued.password;
  $('issued-psql').textContent = `PGPASSWORD='${issued.password}' ${issued.psql}`;
  $('issued-pgpass').textContent = issued.pgpass;
  $('issued').hidden = false;
}

export async function revokeCredential(button: HTMLButtonElement): Promise<void> {
  await busy(button, 'Revoking…', async () => {
    try {
      await api('DELETE', `/api/credentials/${encodeURIComponent(button.dataset.id ?? '')}`);
      renderCredentials(await api<CredentialsReply>('GET', '/api/credentials'));
    } catch (err) {
      $('connect-error').textContent = friendly(err);
    }
  });
}

async function showCliRequest(): Promise<void> {
  const code = sessionStorage.getItem('stepgate-cli-code');
  $('cli-request').hidden = !code;
  if (!code) return;
  try {
    const info = await api<CliLoginInfo>('POST', '/api/cli/info', { code });
    $('cli-code').textContent = info.code;
    $('cli-from').textContent = `${info.label} from ${info.client}`;
    $('cli-buttons').hidden = false;
  } catch (err) {
    sessionStorage.removeItem('stepgate-cli-code');
    $('cli-result').textContent = friendly(err);
  }
}

export async function cliAnswer(button: HTMLButtonElement): Promise<void> {
  const code = sessionStorage.getItem('stepgate-cli-code');
  const approve = button.dataset.action === 'cli-approve';
  await busy(button, approve ? 'Issuing…' : 'Refusing…', async () => {
    try {
      await api('POST', approve ? '/api/cli/approve' : '/api/cli/deny', { code });
      sessionStorage.removeItem('stepgate-cli-code');
      $('cli-buttons').hidden = true;
      $('cli-result').textContent = approve ? 'Done: your terminal has a database credential now.' : 'Refused: the terminal gets nothing.';
      $('cli-result').dataset.status = approve ? 'approved' : 'denied';
      if (approve) renderCredentials(await api<CredentialsReply>('GET', '/api/credentials'));
    } catch (err) {
      $('cli-result').textContent = friendly(err);
    }
  });
}

export const IDENTITY_ACTIONS: Record<string, (button: HTMLButtonElement) => unknown> = {
  'sign-in-sso': signInSso,
  'totp-setup': totpSetup,
  'totp-confirm': totpConfirm,
  'totp-remove': totpRemove,
  'totp-recovery': totpRecovery,
  'approve-code': approveWithCode,
  'issue-credential': issueCredential,
  'revoke-credential': revokeCredential,
  'cli-approve': cliAnswer,
  'cli-deny': cliAnswer,
};
