/**
 * How every webhook request is signed, and how a receiver checks it (documented in README: Notifications).
 *
 *   X-Stepgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
 *
 * Invariants: the timestamp is inside the signed text, so a captured request cannot be replayed later
 * with a new timestamp; the receiver compares in constant time and refuses timestamps outside its
 * tolerance. The secret never leaves this module in any form but the MAC.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-stepgate-signature';
/** How far a receiver should accept a timestamp from its own clock (seconds). */
export const DEFAULT_TOLERANCE_S = 300;

export function signatureOf(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** The header value for `body` sent at `nowMs`. */
export function signHeader(secret: string, nowMs: number, body: string): string {
  const t = Math.floor(nowMs / 1000);
  return `t=${t},v1=${signatureOf(secret, t, body)}`;
}

/** A receiver's check: true when `header` signs exactly `body` with `secret`, within `toleranceS` of `nowMs`. */
export function verifySignature(secret: string, header: string | undefined, body: string, nowMs = Date.now(), toleranceS = DEFAULT_TOLERANCE_S): boolean {
  if (!header) return false;
  const parts = new Map<string, string[]>();
  for (const item of header.split(',')) {
    const eq = item.indexOf('=');
    if (eq <= 0) continue;
    const k = item.slice(0, eq).trim();
    parts.set(k, [...(parts.get(k) ?? []), item.slice(eq + 1).trim()]);
  }
  const t = Number(parts.get('t')?.[0]);
  if (!Number.isInteger(t) || Math.abs(nowMs / 1000 - t) > toleranceS) return false;
  const expected = Buffer.from(signatureOf(secret, t, body), 'hex');
  // Several v1 values are allowed (a receiver rotating secrets may be sent both); any one must match.
  return (parts.get('v1') ?? []).some((v) => {
    const given = Buffer.from(v, 'hex');
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
}
