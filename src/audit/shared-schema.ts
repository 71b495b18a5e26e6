/**
 * The audit trail in the shared state database (schema `stepgate`, migration component `audit`): every
 * instance's hash chain, copied there from its own `DATA/audit.db` by the shipper (shipper.ts).
 *
 * Each table mirrors one table of audit.db (db.ts), keyed by the instance's name first, with the same
 * columns, so a reader can rebuild one instance's audit.db from them row for row (shared-read.ts):
 *  - `audit_events`: the chain, (instance, seq).
 *  - `audit_checkpoints`: signed chain heads, (instance, id).
 *  - `audit_sessions`: the sessions index as versions: a row of audit.db's `sessions` each time it
 *    changed, keyed by its `last_seq` (every change to a session's row moves its last_seq, so a
 *    (session, last_seq) pair names one content); the newest version is the index.
 *  - `audit_spans`: session_spans (where each session's events are).
 *  - `audit_anchors`: the retention anchor, when an instance's trail was already pruned the first time it
 *    shipped (its chain in the shared store starts after it).
 *  - `audit_keys`: the instance's checkpoint public key (what `stepgate audit pubkey` prints), pinned the
 *    first time it ships: a later different key under that name is refused.
 *
 * Invariants:
 * - Append-only: triggers refuse UPDATE, DELETE and TRUNCATE on every one of these tables, for every role
 *   (a superuser can disable triggers: `stepgate audit verify` then still finds the edit in the chain).
 *   Operators should also grant stepgate's login role only INSERT and SELECT on them (README).
 * - Steps are never edited once shipped: a change is a new step (2 added the auditor view's indexes).
 * - No retention here: the shared store keeps every instance's chain whole (pruning a local trail does not
 *   prune its shipped copy).
 */
import type { StateMigrations } from '../state/database.js';

/** The tables (what an operator grants INSERT and SELECT on). Step 1 below names them itself: a shipped step never changes. */
export const AUDIT_TABLES = ['audit_keys', 'audit_events', 'audit_checkpoints', 'audit_sessions', 'audit_spans', 'audit_anchors'] as const;

export const AUDIT_STATE_MIGRATIONS: StateMigrations = {
  component: 'audit',
  steps: [
    `CREATE TABLE stepgate.audit_keys (
       instance text PRIMARY KEY,
       kid text NOT NULL,
       jwk jsonb NOT NULL,
       shipped_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE stepgate.audit_events (
       instance text NOT NULL,
       seq bigint NOT NULL,
       session integer NOT NULL,
       sseq bigint NOT NULL,
       time bigint NOT NULL,
       kind text NOT NULL,
       body text NOT NULL,
       hash text NOT NULL,
       PRIMARY KEY (instance, seq)
     );
     CREATE TABLE stepgate.audit_checkpoints (
       instance text NOT NULL,
       id integer NOT NULL,
       seq bigint NOT NULL,
       hash text NOT NULL,
       time bigint NOT NULL,
       reason text NOT NULL,
       jws text NOT NULL,
       PRIMARY KEY (instance, id)
     );
     CREATE TABLE stepgate.audit_sessions (
       instance text NOT NULL,
       session integer NOT NULL,
       last_seq bigint NOT NULL,
       connection text,
       user_name text,
       database text,
       client text,
       application text,
       tls integer,
       server_pid integer,
       start_time bigint,
       end_time bigint,
       end_reason text,
       duration_ms double precision,
       bytes_in bigint,
       bytes_out bigint,
       statements integer NOT NULL,
       denied integer NOT NULL,
       held integer NOT NULL,
       first_seq bigint,
       run text,
       PRIMARY KEY (instance, session, last_seq)
     );
     CREATE INDEX audit_sessions_connection ON stepgate.audit_sessions (connection text_pattern_ops);
     CREATE TABLE stepgate.audit_spans (
       instance text NOT NULL,
       session integer NOT NULL,
       first_seq bigint NOT NULL,
       last_seq bigint NOT NULL,
       PRIMARY KEY (instance, session, first_seq)
     );
     CREATE TABLE stepgate.audit_anchors (
       instance text PRIMARY KEY,
       seq bigint NOT NULL,
       hash text NOT NULL,
       checkpoint integer NOT NULL
     );
     CREATE FUNCTION stepgate.audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
       RAISE EXCEPTION 'stepgate audit tables are append-only (% on %.%)', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
         USING ERRCODE = 'insufficient_privilege';
     END $$;
     ${['audit_keys', 'audit_events', 'audit_checkpoints', 'audit_sessions', 'audit_spans', 'audit_anchors']
       .map(
         (t) => `CREATE TRIGGER ${t}_no_change BEFORE UPDATE OR DELETE ON stepgate.${t} FOR EACH ROW EXECUTE FUNCTION stepgate.audit_append_only();
     CREATE TRIGGER ${t}_no_truncate BEFORE TRUNCATE ON stepgate.${t} FOR EACH STATEMENT EXECUTE FUNCTION stepgate.audit_append_only();`,
       )
       .join('\n     ')}`,
    // 2: for the console's auditor view (shared-browse.ts), which pages the sessions list newest first
    // across instances by walking these indexes, and names passkeys from the few events that name them.
    `CREATE INDEX audit_sessions_start ON stepgate.audit_sessions (start_time, instance, session, last_seq);
     CREATE INDEX audit_sessions_user ON stepgate.audit_sessions (user_name, start_time, instance, session, last_seq);
     CREATE INDEX audit_events_passkey_names ON stepgate.audit_events (time, instance, seq)
       WHERE session = 0 AND kind IN ('passkey.enrolled', 'passkey.renamed');`,
  ],
};
