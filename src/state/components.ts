/**
 * What lives in the state database, component by component, and how an instance or the CLI opens it.
 * A component with tables there appends its migrations to STATE_MIGRATIONS (each is migrated at open,
 * under the advisory lock of StateDatabase).
 */
import os from 'node:os';
import type { StateConfig } from '../config.js';
import { IDENTITY_STATE_MIGRATIONS } from '../identity/postgres-schema.js';
import type { Logger } from '../log.js';
import { redactUrl, StateDatabase, type StateMigrations } from './database.js';
import { HOLDS_MIGRATIONS } from './holds.js';
import { CONSOLE_MIGRATIONS } from './console-schema.js';
import { AUDIT_STATE_MIGRATIONS } from '../audit/shared-schema.js';

/**
 * Components: `identity` (users and factors: identity/postgres-schema.ts), `holds` (held statements,
 * approvals, grants, leases: holds.ts), `console` (sign-outs and passkey ceremonies: console-schema.ts), `audit` (every instance's
 * audit trail, shipped from its data directory: audit/shared-schema.ts).
 */
export const STATE_MIGRATIONS: StateMigrations[] = [IDENTITY_STATE_MIGRATIONS, HOLDS_MIGRATIONS, CONSOLE_MIGRATIONS, AUDIT_STATE_MIGRATIONS];

/**
 * `state.instance`, else host name and listening port: stable across restarts, so a restarted instance
 * continues its lease and its audit chain. A port chosen at start (0) is not known yet: then the pid too.
 */
export function instanceId(state: StateConfig, port: number | string): string {
  if (state.instance) return state.instance;
  return Number(port) === 0 ? `${os.hostname()}:0:${process.pid}` : `${os.hostname()}:${port}`;
}

export async function openStateDatabase(state: StateConfig, instance: string, log: Logger): Promise<StateDatabase> {
  const db = await StateDatabase.open({ url: state.url, log, instanceId: instance }, STATE_MIGRATIONS);
  log.info('state.connected', { url: redactUrl(state.url), instance, lease_ms: state.leaseMs });
  return db;
}
