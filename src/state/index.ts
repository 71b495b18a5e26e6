/**
 * Opening the shared state (`state:` in the config): one StateDatabase per instance, every component's
 * schema migrated at once. Components: `holds` (held statements, approvals, grants, leases: holds.ts) and
 * `audit` (every instance's audit trail, shipped from its data directory: audit/shared-schema.ts).
 */
import os from 'node:os';
import type { Config, StateConfig } from '../config.js';
import type { Logger } from '../log.js';
import { redactUrl, StateDatabase } from './database.js';
import { HOLDS_MIGRATIONS } from './holds.js';
import { AUDIT_STATE_MIGRATIONS } from '../audit/shared-schema.js';

export const STATE_MIGRATIONS = [HOLDS_MIGRATIONS, AUDIT_STATE_MIGRATIONS];

/** This instance's name among those sharing the state: configured, else host and listening port. */
export function instanceName(state: StateConfig, config: Pick<Config, 'listen'>): string {
  return state.instance ?? `${os.hostname()}:${config.listen.port}`;
}

export async function openSharedState(config: Config & { state: StateConfig }, log: Logger): Promise<StateDatabase> {
  const instanceId = instanceName(config.state, config);
  const db = await StateDatabase.open({ url: config.state.url, log, instanceId }, STATE_MIGRATIONS);
  log.info('state.connected', { url: redactUrl(config.state.url), instance: instanceId, lease_ms: config.state.leaseMs });
  return db;
}
