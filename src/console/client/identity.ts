// @ts-nocheck
/*
 * The console's identity features in the browser (served as /static/identity.js, imported by app.js):
 * single sign-on, the authenticator app (TOTP) with recovery codes, approving with a code, the Connect
 * page (short-lived database credentials) and confirming a `stepgate login` from a terminal.
 *
 * Written to move into the typed modules shared with hub.ts (#14): small functions, one context object
 * from app.js (no globals), and the message shapes this code reads in one place, below.
 *
 * Data never becomes HTML: every value goes through textContent or setAttribute.
 */

/**
 * The API shapes this module reads (kept in one place; see docs/console.md for the full API).
 *
 * @typedef {{ sso: boolean, consoleUrl: string }} PublicInfo                       GET /api/public
 * @typedef {{ user: string, sso: boolean, totp: boolean, recoveryCodesLeft: number,
 *             credentials: boolean, recentAuth: boolean }} MeFields                 part of GET /api/me
 * @typedef {{ secret: string, uri: string, qr: string }} TotpSetup                POST /api/totp/setup
 * @typedef {{ recoveryCodes: string[], me: object }} TotpConfirmed                POST /api/totp/confirm
 * @typedef {{ id: string, label: string, createdAt: number, expiresAt: number,
 *             lastUsedAt: number | null }} CredentialView
 * @typedef {{ credential: CredentialView, user: string, password: string, host: string, port: number,
 *             sslmode: string, psql: string, pgpass: string }} IssuedCredential   POST /api/credentials
 * @typedef {{ code: string, label: string, client: string, createdAt: number,
 *             expiresAt: number }} CliLoginInfo                                   POST /api/cli/info
 * @typedef {{ status: 'approved' | 'pending', remaining: number,
 *             recoveryCodesLeft: number }} CodeApproval                            POST /api/challenges/:id/approve-code
 * @typedef {{ kind: 'statement' | 'connect', signals: string[],
 *             you: { factors: ('passkey' | 'totp')[] } }} ChallengeFactors         part of a challenge
 */

/** Set by app.js: { api, h, $, friendly, busy, announce, state, sessionEnded, render } */
let ctx = null;

export function initIdentity(context) {
  ctx = context;
}

// ───────────────────────────── single sign-on ─────────────────────────────

/** Where the browser goes to sign in at the IdP (fresh: the IdP must ask again, before enrolling a factor). */
export function ssoUrl(fresh) {
  const ret = location.pathname + (location.pathname === '/connect' ? '' : '');
  return `/sso/start?return=${encodeURIComponent(ret)}${fresh ? '&fresh=1' : ''}`;
}

/** The sign-in view: offers SSO when configured, and shows why the last SSO attempt failed. */
export async function prepareSignIn() {
  const { $, api } = ctx;
  const params = new URLSearchParams(location.search);
  const error = params.get('sso_error');
  if (error) {
    $('signin-error').textContent = `Single sign-on failed: ${error}`;
    history.replaceState(null, '', location.pathname);
  }
  try {
    const info = await api('GET', '/api/public');
    $('signin-sso').hidden = !info.sso;
  } catch {
    $('signin-sso').hidden = true;
  }
}

export function signInSso() {
  location.assign(ssoUrl(false));
}

/** Runs fn; when the server wants a fresh SSO sign-in first, goes to the IdP (and comes back here). */
export async function withFreshSso(fn) {
  try {
    return await fn();
  } catch (err) {
    if (err.code === 'sso_reauth') {
      location.assign(ssoUrl(true));
      return new Promise(() => {});
    }
    throw err;
  }
}

// ───────────────────────────── the authenticator app ─────────────────────────────

export function renderFactors() {
  const { $, state } = ctx;
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

export async function totpSetup(button) {
  const { $, api, busy, friendly } = ctx;
  $('totp-error').textContent = '';
  await busy(button, 'Preparing…', async () => {
    try {
      const setup = await withFreshSso(() => api('POST', '/api/totp/setup'));
      $('totp-qr').src = setup.qr;
      $('totp-secret').textContent = setup.secret;
      $('totp-enroll').hidden = false;
      $('totp-code').value = '';
      $('totp-code').focus();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpConfirm(button) {
  const { $, api, busy, friendly, state } = ctx;
  $('totp-error').textContent = '';
  await busy(button, 'Checking…', async () => {
    try {
      const r = await api('POST', '/api/totp/confirm', { code: $('totp-code').value.trim() });
      state.me = r.me;
      $('totp-enroll').hidden = true;
      showRecoveryCodes(r.recoveryCodes);
      renderFactors();
      ctx.render();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpRecovery(button) {
  const { $, api, busy, friendly, state } = ctx;
  await busy(button, 'Making new codes…', async () => {
    try {
      const r = await withFreshSso(() => api('POST', '/api/recovery-codes'));
      state.me = r.me;
      showRecoveryCodes(r.recoveryCodes);
      renderFactors();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

export async function totpRemove(button) {
  const { $, api, busy, friendly, state } = ctx;
  await busy(button, 'Removing…', async () => {
    try {
      state.me = await withFreshSso(() => api('DELETE', '/api/totp'));
      $('recovery').hidden = true;
      renderFactors();
      ctx.render();
    } catch (err) {
      $('totp-error').textContent = friendly(err);
    }
  });
}

function showRecoveryCodes(codes) {
  const { $, h } = ctx;
  $('recovery-codes').replaceChildren(...codes.map((c) => h('li', { text: c })));
  $('recovery').hidden = false;
}

// ───────────────────────────── approving with a code ─────────────────────────────

/** The controls a card gets when this viewer may approve with an authenticator app code. */
export function codeControls(c) {
  const { h } = ctx;
  if (!c.you.factors || !c.you.factors.includes('totp')) return null;
  const inputId = `code-${c.id}`;
  return h(
    'div',
    { class: 'code-approve' },
    h('label', { for: inputId }, 'Code from your authenticator app', h('input', { id: inputId, name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '11' })),
    h('button', { type: 'button', 'data-action': 'approve-code', 'data-id': c.id, text: 'Approve with code' }),
  );
}

/** The risk signals that made a rule ask, for the card. */
export function signalList(c) {
  const { h } = ctx;
  if (!c.signals || c.signals.length === 0) return null;
  return h('ul', { class: 'signals', 'aria-label': 'risk signals' }, c.signals.map((s) => h('li', { 'data-signal': s.split(' ')[0], text: s })));
}

export async function approveWithCode(button) {
  const { api, busy, friendly, state } = ctx;
  const id = button.dataset.id;
  const part = (selector) => state.cards.get(id)?.querySelector(selector);
  const input = part('input[name=code]');
  const code = input ? input.value.trim() : '';
  part('.error').textContent = '';
  await busy(button, 'Checking…', async () => {
    try {
      const r = await api('POST', `/api/challenges/${encodeURIComponent(id)}/approve-code`, { code });
      const result = part('.result');
      if (result) {
        result.classList.add('ok');
        result.textContent = r.status === 'pending' ? 'Your approval is recorded; it still needs more approvals.' : 'Approved: the statement runs now.';
      }
    } catch (err) {
      if (err.status === 401 && err.code === 'signin') return ctx.sessionEnded();
      const error = part('.error');
      if (error) error.textContent = friendly(err);
    }
  });
}

// ───────────────────────────── Connect: database credentials ─────────────────────────────

export async function connectView() {
  const { $, api, friendly } = ctx;
  const code = new URLSearchParams(location.hash.slice(1)).get('code');
  if (code) sessionStorage.setItem('stepgate-cli-code', code);
  if (location.hash) history.replaceState(null, '', '/connect');
  await showCliRequest();
  try {
    const r = await api('GET', '/api/credentials');
    renderCredentials(r);
  } catch (err) {
    $('connect-error').textContent = friendly(err);
  }
}

function renderCredentials(r) {
  const { $, h } = ctx;
  if (r.connect) $('connect-where').textContent = `stepgate listens at ${r.connect.host}:${r.connect.port} (sslmode=${r.connect.sslmode}).`;
  if (r.ttlMs) $('connect-ttl').textContent = `A credential works for ${Math.round(r.ttlMs / 3600000 * 10) / 10} hours, for you only, and can be revoked here at any time.`;
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

export async function issueCredential(button) {
  const { $, api, busy, friendly } = ctx;
  $('connect-error').textContent = '';
  await busy(button, 'Issuing…', async () => {
    try {
      const issued = await api('POST', '/api/credentials', { label: 'console' });
      showIssued(issued);
      renderCredentials(await api('GET', '/api/credentials'));
    } catch (err) {
      $('connect-error').textContent = friendly(err);
    }
  });
}

function showIssued(issued) {
  const { $ } = ctx;
  $('issued-password').textContent = issued.password;
  $('issued-psql').textContent = `PGPASSWORD='${issued.password}' ${issued.psql}`;
  $('issued-pgpass').textContent = issued.pgpass;
  $('issued').hidden = false;
}

export async function revokeCredential(button) {
  const { $, api, busy, friendly } = ctx;
  await busy(button, 'Revoking…', async () => {
    try {
      await api('DELETE', `/api/credentials/${encodeURIComponent(button.dataset.id)}`);
      renderCredentials(await api('GET', '/api/credentials'));
    } catch (err) {
      $('connect-error').textContent = friendly(err);
    }
  });
}

async function showCliRequest() {
  const { $, api, friendly } = ctx;
  const code = sessionStorage.getItem('stepgate-cli-code');
  $('cli-request').hidden = !code;
  if (!code) return;
  try {
    const info = await api('POST', '/api/cli/info', { code });
    $('cli-code').textContent = info.code;
    $('cli-from').textContent = `${info.label} from ${info.client}`;
    $('cli-buttons').hidden = false;
  } catch (err) {
    sessionStorage.removeItem('stepgate-cli-code');
    $('cli-result').textContent = friendly(err);
  }
}

export async function cliAnswer(button) {
  const { $, api, busy, friendly } = ctx;
  const code = sessionStorage.getItem('stepgate-cli-code');
  const approve = button.dataset.action === 'cli-approve';
  await busy(button, approve ? 'Issuing…' : 'Refusing…', async () => {
    try {
      await api('POST', approve ? '/api/cli/approve' : '/api/cli/deny', { code });
      sessionStorage.removeItem('stepgate-cli-code');
      $('cli-buttons').hidden = true;
      $('cli-result').textContent = approve ? 'Done: your terminal has a database credential now.' : 'Refused: the terminal gets nothing.';
      $('cli-result').dataset.status = approve ? 'approved' : 'denied';
      if (approve) renderCredentials(await api('GET', '/api/credentials'));
    } catch (err) {
      $('cli-result').textContent = friendly(err);
    }
  });
}

export const IDENTITY_ACTIONS = {
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
