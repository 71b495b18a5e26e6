/**
 * The fallback factor: TOTP (RFC 6238, by `otpauth`: SHA-1, 6 digits, 30-second steps, as every
 * authenticator app expects) and one-time recovery codes.
 *
 * - A code is accepted in the step it belongs to or the one before or after (clock drift), and **once**:
 *   the last accepted step is stored, and a code of that step or an earlier one is refused (a replay,
 *   or a code seen over someone's shoulder).
 * - Recovery codes (10, shown once when TOTP is set up) are stored as SHA-256 hashes with a
 *   per-installation pepper, and each works once. A recovery code stands in for a TOTP code.
 * - Attempts are limited per user: after MAX_FAILURES failed codes within FAILURE_WINDOW_MS, every
 *   code is refused until the oldest of those failures is older than the window (in memory: a restart
 *   forgets it, which the limit's purpose — slowing a guesser to a few codes per quarter hour — survives).
 *
 * The clock is passed in (`now`), so tests can step through time steps without waiting.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import type { IdentityStore } from './store.js';

export const TOTP_PERIOD_S = 30;
export const TOTP_DIGITS = 6;
export const RECOVERY_CODES = 10;
export const MAX_FAILURES = 5;
export const FAILURE_WINDOW_MS = 15 * 60_000;

export type CodeFactor = 'totp' | 'recovery';

export type CodeCheck =
  | { ok: true; factor: CodeFactor; recoveryLeft: number }
  | { ok: false; reason: 'no_totp' | 'locked' | 'wrong' | 'replay' | 'malformed'; message: string; retryAfterMs?: number };

export function newTotpSecret(): string {
  return new Secret({ size: 20 }).base32;
}

function totp(user: string, secret: string): TOTP {
  return new TOTP({ issuer: 'stepgate', label: user, algorithm: 'SHA1', digits: TOTP_DIGITS, period: TOTP_PERIOD_S, secret: Secret.fromBase32(secret) });
}

/** The otpauth:// URI an authenticator app reads from the QR code. */
export function totpUri(user: string, secret: string): string {
  return totp(user, secret).toString();
}

/** The code for a time (tests, and nothing else: stepgate never shows a code). */
export function totpCode(secret: string, timestamp: number): string {
  return totp('x', secret).generate({ timestamp });
}

/** The time step a code belongs to (±1 step of drift), or null when it is not a current code. */
export function totpStep(secret: string, code: string, timestamp: number): number | null {
  const t = totp('x', secret);
  const delta = t.validate({ token: code, timestamp, window: 1 });
  if (delta === null) return null;
  return t.counter({ timestamp }) + delta;
}

const RECOVERY_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

/** Ten fresh recovery codes, `xxxxx-xxxxx` (about 49 bits each). */
export function newRecoveryCodes(): string[] {
  const codes: string[] = [];
  while (codes.length < RECOVERY_CODES) {
    const bytes = randomBytes(10);
    let text = '';
    for (const b of bytes) text += RECOVERY_ALPHABET[b % RECOVERY_ALPHABET.length];
    const code = `${text.slice(0, 5)}-${text.slice(5)}`;
    if (!codes.includes(code)) codes.push(code);
  }
  return codes;
}

export function normalizeRecoveryCode(code: string): string {
  const c = code.toLowerCase().replace(/[\s-]/g, '');
  return c.length === 10 ? `${c.slice(0, 5)}-${c.slice(5)}` : c;
}

export class CodeFactors {
  private readonly failures = new Map<string, number[]>();

  constructor(
    private readonly identity: IdentityStore,
    private readonly now: () => number = Date.now,
  ) {}

  recoveryHash(code: string): Buffer {
    return createHash('sha256').update(this.identity.secret('recovery-pepper')).update(normalizeRecoveryCode(code)).digest();
  }

  /** Checks the first code of a new secret (set-up): the step it belongs to, or null. */
  confirmStep(secret: string, code: string): number | null {
    if (!/^\d{6}$/.test(code.trim())) return null;
    return totpStep(secret, code.trim(), this.now());
  }

  hasTotp(user: string): boolean {
    return this.identity.totpSecret(user) !== null;
  }

  /** When the user may try again (ms from now), or 0. */
  lockedFor(user: string): number {
    const now = this.now();
    const recent = (this.failures.get(user) ?? []).filter((t) => t > now - FAILURE_WINDOW_MS);
    if (recent.length === 0) this.failures.delete(user);
    else this.failures.set(user, recent);
    return recent.length >= MAX_FAILURES ? recent[0]! + FAILURE_WINDOW_MS - now : 0;
  }

  /**
   * Checks a TOTP or recovery code of `user`, uses it up when it is right, counts it when it is wrong.
   * Whether it is used up is the store's answer (one conditional write), not what was read before:
   * rejects when that write fails (the caller must not approve).
   */
  async verify(user: string, input: unknown): Promise<CodeCheck> {
    const stored = this.identity.totpSecret(user);
    if (!stored) return { ok: false, reason: 'no_totp', message: 'you have no authenticator app set up: set one up under "Your factors" first' };
    const locked = this.lockedFor(user);
    if (locked > 0) {
      return { ok: false, reason: 'locked', message: `too many wrong codes: try again in ${Math.ceil(locked / 60_000)} min`, retryAfterMs: locked };
    }
    const code = typeof input === 'string' ? input.replace(/\s+/g, '') : '';
    if (/^\d{6}$/.test(code)) {
      const step = totpStep(stored.secret, code, this.now());
      if (step === null) return this.failed(user, 'wrong', 'this code is not right (or no longer current): enter the code your app shows now');
      if (step <= stored.lastStep || !(await this.identity.useTotpStep(user, step))) {
        return this.failed(user, 'replay', 'this code was used already: wait for the next one');
      }
      return { ok: true, factor: 'totp', recoveryLeft: this.identity.recoveryCodesLeft(user) };
    }
    if (/^[a-z0-9]{5}-?[a-z0-9]{5}$/i.test(code)) {
      if (!(await this.identity.useRecoveryCode(user, this.recoveryHash(code)))) return this.failed(user, 'wrong', 'this recovery code is not valid (or was used already)');
      return { ok: true, factor: 'recovery', recoveryLeft: this.identity.recoveryCodesLeft(user) };
    }
    return this.failed(user, 'malformed', 'enter the 6-digit code from your authenticator app, or a recovery code (xxxxx-xxxxx)');
  }

  private failed(user: string, reason: 'wrong' | 'replay' | 'malformed', message: string): CodeCheck {
    const list = this.failures.get(user) ?? [];
    list.push(this.now());
    this.failures.set(user, list);
    return { ok: false, reason, message };
  }
}

/** Constant-time equality of two strings (for codes kept in memory during set-up). */
export function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
