/**
 * The identity tables in the shared state database (schema `stepgate`, migration component `identity`):
 * those of sqlite-store.ts in PostgreSQL's types (times stay epoch milliseconds, as bigint, so both stores
 * compare against the same clocks). The risk-signal records are not here: they stay per instance.
 *
 * Invariant: every table that holds something about a user has a trigger that NOTIFYs IDENTITY_CHANNEL
 * with that user's name on every INSERT, UPDATE and DELETE, whoever writes (an instance, `stepgate users`
 * on another host, an operator's psql). PostgreSQL delivers notices at commit and folds identical ones of
 * one transaction, so a change of many rows of one user is one notice.
 */
import type { StateMigrations } from '../state/database.js';

export const IDENTITY_CHANNEL = 'stepgate_identity';

/** Tables keyed by `user_name` (besides `users` itself), each with its notifying trigger. */
const USER_TABLES = ['webauthn_handles', 'passkeys', 'enrollments', 'credentials', 'totp', 'recovery_codes'];

const USER_FK = 'text NOT NULL REFERENCES stepgate.users(name) ON DELETE CASCADE ON UPDATE CASCADE';

/** Steps, applied in order; never edit a shipped one, append. */
export const IDENTITY_STATE_MIGRATIONS: StateMigrations = {
  component: 'identity',
  steps: [
    `
    CREATE TABLE stepgate.users (
      name text PRIMARY KEY,
      groups text[] NOT NULL DEFAULT '{}',
      verifier text,
      created_at bigint NOT NULL,
      sso_subject text UNIQUE,
      email text,
      disabled boolean NOT NULL DEFAULT false,
      groups_at bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE stepgate.secrets (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE stepgate.webauthn_handles (user_name ${USER_FK} PRIMARY KEY, handle bytea NOT NULL UNIQUE);
    CREATE TABLE stepgate.passkeys (
      id text PRIMARY KEY,
      user_name ${USER_FK},
      public_key bytea NOT NULL,
      counter bigint NOT NULL DEFAULT 0,
      transports text[] NOT NULL DEFAULT '{}',
      name text NOT NULL,
      device_type text,
      backed_up boolean NOT NULL DEFAULT false,
      created_at bigint NOT NULL,
      last_used_at bigint
    );
    CREATE INDEX passkeys_user ON stepgate.passkeys (user_name);
    CREATE TABLE stepgate.enrollments (
      token_hash bytea PRIMARY KEY,
      user_name ${USER_FK},
      created_at bigint NOT NULL,
      expires_at bigint NOT NULL,
      used_at bigint
    );
    CREATE INDEX enrollments_user ON stepgate.enrollments (user_name);
    CREATE TABLE stepgate.credentials (
      id text PRIMARY KEY,
      user_name ${USER_FK},
      verifier text NOT NULL,
      label text NOT NULL,
      created_at bigint NOT NULL,
      expires_at bigint NOT NULL,
      revoked_at bigint,
      last_used_at bigint
    );
    CREATE INDEX credentials_user ON stepgate.credentials (user_name, expires_at);
    CREATE TABLE stepgate.totp (
      user_name ${USER_FK} PRIMARY KEY,
      secret text NOT NULL,
      created_at bigint NOT NULL,
      last_step bigint NOT NULL DEFAULT -1
    );
    CREATE TABLE stepgate.recovery_codes (
      user_name ${USER_FK},
      code_hash bytea NOT NULL,
      used_at bigint,
      PRIMARY KEY (user_name, code_hash)
    );
    -- The user a row is about is in the column named by the trigger's argument; an UPDATE that moves a row
    -- (a rename) tells both users.
    CREATE FUNCTION stepgate.identity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP <> 'INSERT' THEN PERFORM pg_notify('${IDENTITY_CHANNEL}', to_jsonb(OLD) ->> TG_ARGV[0]); END IF;
      IF TG_OP <> 'DELETE' THEN PERFORM pg_notify('${IDENTITY_CHANNEL}', to_jsonb(NEW) ->> TG_ARGV[0]); END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON stepgate.users
      FOR EACH ROW EXECUTE FUNCTION stepgate.identity_changed('name');
    ${USER_TABLES.map(
      (t) => `CREATE TRIGGER ${t}_changed AFTER INSERT OR UPDATE OR DELETE ON stepgate.${t}
      FOR EACH ROW EXECUTE FUNCTION stepgate.identity_changed('user_name');`,
    ).join('\n    ')}
    `,
  ],
};
