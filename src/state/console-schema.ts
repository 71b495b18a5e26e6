/**
 * The console's tables in the state database (migration component `console`): sign-outs
 * (revocations.ts) and passkey ceremonies in progress (ceremonies.ts).
 */
import type { StateMigrations } from './database.js';

export const CONSOLE_MIGRATIONS: StateMigrations = {
  component: 'console',
  steps: [
    `CREATE TABLE stepgate.console_revocations (sid text PRIMARY KEY, until timestamptz NOT NULL);
     CREATE INDEX console_revocations_until ON stepgate.console_revocations (until);
     CREATE TABLE stepgate.ceremonies (
       challenge text PRIMARY KEY,
       body jsonb NOT NULL,
       user_name text,
       signed_in boolean NOT NULL,
       created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
       expires_at timestamptz NOT NULL
     );
     CREATE INDEX ceremonies_expiry ON stepgate.ceremonies (expires_at);
     CREATE INDEX ceremonies_user ON stepgate.ceremonies (user_name, created_at) WHERE signed_in;
     CREATE INDEX ceremonies_anonymous ON stepgate.ceremonies (created_at) WHERE NOT signed_in;`,
  ],
};
