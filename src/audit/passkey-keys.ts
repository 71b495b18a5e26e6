/**
 * Passkeys' public keys in the audit trail: a `passkey.enrolled` event (session 0) for every passkey, so
 * that `stepgate audit verify` can check its approvals' signatures from the trail alone
 * (verify-approvals.ts). The console records one when a passkey is registered; at start, stepgate records
 * those the trail does not hold yet (passkeys registered before stepgate recorded keys), marked as such.
 *
 * Invariant: only public data is recorded (the COSE public key, the name, flags): never a secret.
 */
import type { IdentityStore, Passkey } from '../identity/store.js';
import type { Logger } from '../log.js';
import { openAuditDbForReading } from './db.js';
import type { AuditSink } from './types.js';
import type { BrokerListener, Challenge } from '../stepup/broker.js';
import type { HoldOutcome } from '../stepup/types.js';

/** The body of a `passkey.enrolled` event. */
export function passkeyEnrolledBody(p: Omit<Passkey, 'createdAt' | 'lastUsedAt'> & { createdAt?: Date }, via: string): Record<string, unknown> {
  return {
    user: p.user,
    credential: p.id,
    name: p.name,
    public_key: Buffer.from(p.publicKey).toString('base64url'),
    device_type: p.deviceType,
    backed_up: p.backedUp,
    via,
    ...(p.createdAt ? { enrolled: p.createdAt.toISOString() } : {}),
  };
}

/** Credential ids the trail holds a key for. */
export function recordedPasskeys(dataDir: string): Set<string> {
  const db = openAuditDbForReading(dataDir);
  try {
    const spans = db.prepare('SELECT first_seq, last_seq FROM session_spans WHERE session = 0 ORDER BY first_seq').all() as { first_seq: number; last_seq: number }[];
    const range = db.prepare("SELECT body FROM events WHERE seq BETWEEN ? AND ? AND session = 0 AND kind = 'passkey.enrolled'");
    const ids = new Set<string>();
    for (const s of spans) {
      for (const row of range.iterate(s.first_seq, s.last_seq) as IterableIterator<{ body: string }>) {
        try {
          const credential = (JSON.parse(row.body) as { credential?: unknown }).credential;
          if (typeof credential === 'string') ids.add(credential);
        } catch {
          // verify reports a body that is not JSON
        }
      }
    }
    return ids;
  } finally {
    db.close();
  }
}

/**
 * Records the keys of passkeys the trail does not hold yet; returns how many, and the ids the trail holds
 * keys for now (null: the trail could not be read).
 */
export function recordMissingPasskeys(dataDir: string, identity: IdentityStore, audit: AuditSink, log: Logger): { recorded: number; known: Set<string> | null } {
  if (!audit.event) return { recorded: 0, known: null };
  let known: Set<string>;
  try {
    known = recordedPasskeys(dataDir);
  } catch (err) {
    // Not fatal: approvals by passkeys without a recorded key are reported by verify as not checked.
    log.warn('audit.passkeys_unread', { error: (err as Error).message, note: 'could not read which passkey keys the audit trail holds; none recorded now' });
    return { recorded: 0, known: null };
  }
  let n = 0;
  for (const user of identity.listUsers()) {
    for (const p of identity.passkeys(user.name)) {
      if (known.has(p.id)) continue;
      audit.event('passkey.enrolled', passkeyEnrolledBody(p, 'recorded at start (registered before stepgate recorded passkey keys)'));
      known.add(p.id);
      n++;
    }
  }
  if (n > 0) log.info('audit.passkeys_recorded', { passkeys: n, note: 'public keys of passkeys registered earlier, for audit verify' });
  return { recorded: n, known };
}

/**
 * With shared state, a passkey may have been registered on another instance, whose trail holds its key.
 * So that each instance's trail proves its own approvals, a passkey approval of a statement held here
 * records the key first when this trail lacks it. A broker listener: it runs as the challenge is decided,
 * before the session records the outcome (the key comes first in the chain).
 */
export class PasskeyKeysForApprovals implements BrokerListener {
  constructor(
    private readonly known: Set<string>,
    private readonly identity: IdentityStore,
    private readonly audit: AuditSink,
  ) {}

  challengeResolved(c: Challenge, outcome: HoldOutcome): void {
    if (c.origin !== 'local' || outcome.status !== 'approved' || !this.audit.event) return;
    for (const a of outcome.approvers) {
      if (!a.signed || !a.credentialId || this.known.has(a.credentialId)) continue;
      const p = this.identity.passkey(a.credentialId);
      if (!p) continue;
      this.audit.event('passkey.enrolled', passkeyEnrolledBody(p, 'recorded at an approval (registered on another instance)'));
      this.known.add(p.id);
    }
  }

  challengeCreated(): void {}
  challengeUpdated(): void {}
  grantsChanged(): void {}
}
