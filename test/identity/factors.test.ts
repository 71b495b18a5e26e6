/**
 * The fallback factor with a clock of its own (no waiting): TOTP codes accepted once per time step, with
 * one step of drift; wrong codes rate-limited per user and forgiven after the window; recovery codes
 * stored hashed and used once, with either identity store. And the `sso:` config section's errors, each
 * with file:line:column.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { loadConfig, ConfigError } from '../../src/config.js';
import { CodeFactors, FAILURE_WINDOW_MS, MAX_FAILURES, newRecoveryCodes, newTotpSecret, totpCode } from '../../src/identity/totp.js';
import { BACKENDS, openIdentity } from '../helpers/identity.js';
import { startPostgres } from '../helpers/postgres.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-factors-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const pg = await startPostgres(t);

for (const backend of BACKENDS) {
  t.test(`codes with the ${backend} store`, async (t) => {
    const { store, rows } = await openIdentity(t, backend, pg);
    await store.addUser('erin', [], null);
    await store.addUser('frank', [], null);
    let now = Date.UTC(2025, 0, 6, 9, 0, 0);
    const codes = new CodeFactors(store, () => now);
    const secret = newTotpSecret();
    const recovery = newRecoveryCodes();
    await store.setTotp('erin', secret, -1, recovery.map((c) => codes.recoveryHash(c)));

    t.test('a code is accepted once per time step, with one step of drift either way', async (t) => {
      const code = totpCode(secret, now);
      t.match(await codes.verify('erin', code), { ok: true, factor: 'totp' });
      t.match(await codes.verify('erin', code), { ok: false, reason: 'replay' }, 'the same code again');
      now += 30_000;
      t.match(await codes.verify('erin', totpCode(secret, now - 30_000)), { ok: false, reason: 'replay' }, 'the previous step, after the current was used');
      t.match(await codes.verify('erin', totpCode(secret, now + 30_000)), { ok: true }, 'one step ahead (a fast phone clock)');
      now += 30_000;
      t.match(await codes.verify('erin', totpCode(secret, now)), { ok: false, reason: 'replay' }, 'the step just used');
      now += 5 * 30_000;
      t.match(await codes.verify('erin', totpCode(secret, now - 3 * 30_000)), { ok: false, reason: 'wrong' }, 'three steps old: not current');
    });

    t.test('wrong codes are limited per user and forgiven after the window', async (t) => {
      now += FAILURE_WINDOW_MS; // a clean slate
      for (let i = 0; i < MAX_FAILURES; i++) t.match(await codes.verify('erin', '000000' === totpCode(secret, now) ? '111111' : '000000'), { ok: false, reason: 'wrong' });
      now += 30_000;
      t.match(await codes.verify('erin', totpCode(secret, now)), { ok: false, reason: 'locked' }, 'even the right code, while locked');
      t.match(await codes.verify('frank', '123456'), { ok: false, reason: 'no_totp' }, 'another user is not affected (and has no app)');
      now += FAILURE_WINDOW_MS;
      t.match(await codes.verify('erin', totpCode(secret, now)), { ok: true }, 'after the window');
    });

    t.test('recovery codes are stored hashed and work once each', async (t) => {
      const raw = JSON.stringify(await rows('recovery_codes'));
      for (const c of recovery) t.notOk(raw.includes(c) || raw.includes(c.replace('-', '')), 'not stored in the clear');
      t.equal(store.recoveryCodesLeft('erin'), 10);
      t.match(await codes.verify('erin', recovery[0]!.toUpperCase().replace('-', ' ')), { ok: true, factor: 'recovery', recoveryLeft: 9 }, 'case and separators do not matter');
      t.match(await codes.verify('erin', recovery[0]!), { ok: false, reason: 'wrong' }, 'used up');
      t.match(await codes.verify('erin', 'not a code'), { ok: false, reason: 'malformed' });
    });
  });
}

function configErrors(yaml: string): string[] {
  const file = path.join(dir, `c-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(file, `upstream: postgres://u:p@127.0.0.1:5432/db\n${yaml}`);
  try {
    loadConfig({ config: file });
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.replace(`${file}:`, 'FILE:'));
    throw err;
  }
}

t.test('the sso section: every mistake with its line and column and what to write', async (t) => {
  t.match(configErrors('sso:\n  client_id: stepgate\n'), [/^FILE:3:3: sso\.issuer is missing: add issuer: https:\/\/login\.example\.com/]);
  t.match(configErrors('sso:\n  issuer: http://idp.example.com\n  client_id: x\n'), [/^FILE:3:11: sso\.issuer must be an https:\/\/ URL/]);
  t.match(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  scopes: [profile]\n'), [/^FILE:5:11: sso\.scopes must include openid/]);
  t.match(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  credential_tll: 8h\n'), [/^FILE:5:3: unknown key sso\.credential_tll: did you mean "credential_ttl"\?/]);
  t.match(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  credential_ttl: 30d\n'), [/^FILE:5:19: sso\.credential_ttl must be at most 7d/]);
  t.match(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  allowed_domains: ["@example.com", "not a domain"]\n'), [/sso\.allowed_domains: "not a domain" is not a domain name/]);
  t.match(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  token_login: true\n'), [/^FILE:5:16: sso\.token_login needs TLS for clients/]);
  t.same(configErrors('sso:\n  issuer: https://idp.example.com\n  client_id: x\n  max_token_age: none\n  session_ttl: 4h\n'), [], 'valid');
  const file = path.join(dir, 'ok.yaml');
  fs.writeFileSync(file, 'upstream: postgres://u:p@127.0.0.1:5432/db\nsso:\n  issuer: https://idp.example.com\n  client_id: x\n  session_ttl: 4h\n');
  const sso = loadConfig({ config: file }).sso!;
  t.equal(sso.tokenLogin, false, 'token login is off without TLS');
  t.equal(sso.sessionTtlMs, 4 * 3600_000);
  t.equal(sso.credentialTtlMs, 8 * 3600_000, 'default credential lifetime: 8h');
  t.same(sso.scopes, ['openid', 'profile', 'email']);
});
