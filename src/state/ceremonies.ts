/**
 * Passkey ceremonies in progress, shared by every instance (the console's CeremonyStore): the options
 * request and the answer may reach different instances behind a load balancer.
 *
 * Invariants:
 * - Single use across instances: `take` is one DELETE ... RETURNING; of two instances given the same
 *   answer, one gets the ceremony and the other nothing (it refuses, as for a replay).
 * - Bounded as LocalCeremonies is: a new ceremony without a session evicts the oldest beyond
 *   CEREMONY_LIMITS.anonymous, one of a signed-in user the user's oldest beyond perUser; expired ones are
 *   deleted as new ones come (and are never returned).
 * - Expiry is the issuing instance's clock (`expiresAt`), compared with the taking instance's: instances'
 *   clocks are assumed to agree within seconds (a ceremony lives three minutes).
 */
import type { Ceremony, CeremonyStore } from '../console/webauthn.js';
import { CEREMONY_LIMITS } from '../console/webauthn.js';
import type { StateDatabase } from './database.js';

export class SharedCeremonies implements CeremonyStore {
  constructor(private readonly db: StateDatabase) {}

  async put(challenge: string, ceremony: Ceremony): Promise<void> {
    const signedIn = Boolean(ceremony.sid);
    await this.db.transaction(async (tx) => {
      await tx.query(`DELETE FROM stepgate.ceremonies WHERE expires_at < now()`);
      if (signedIn) {
        await tx.query(
          `DELETE FROM stepgate.ceremonies WHERE challenge IN (
             SELECT challenge FROM stepgate.ceremonies WHERE signed_in AND user_name = $1 ORDER BY created_at DESC OFFSET $2)`,
          [ceremony.user, CEREMONY_LIMITS.perUser - 1],
        );
      } else {
        await tx.query(
          `DELETE FROM stepgate.ceremonies WHERE challenge IN (
             SELECT challenge FROM stepgate.ceremonies WHERE NOT signed_in ORDER BY created_at DESC OFFSET $1)`,
          [CEREMONY_LIMITS.anonymous - 1],
        );
      }
      await tx.query(`INSERT INTO stepgate.ceremonies (challenge, body, user_name, signed_in, expires_at) VALUES ($1, $2, $3, $4, to_timestamp($5 / 1000.0))`, [
        challenge,
        JSON.stringify(ceremony),
        ceremony.user,
        signedIn,
        ceremony.expiresAt,
      ]);
    });
  }

  async take(challenge: string): Promise<Ceremony | null> {
    const r = await this.db.query<{ body: Ceremony }>(`DELETE FROM stepgate.ceremonies WHERE challenge = $1 RETURNING body`, [challenge]);
    const c = r.rows[0]?.body;
    return c && c.expiresAt >= Date.now() ? c : null;
  }
}
