/**
 * What lives in the state database, component by component, and how an instance or the CLI opens it.
 * A component with tables there appends its migrations to STATE_MIGRATIONS (each is migrated at open,
 * under the advisory lock of StateDatabase).
 */
import os from 'node:os';
import type { StateConfig } from '../config.js';
import { IDENTITY_STATE_MIGRATIONS } from '../identity/postgres-schema.js';
import type { Logger } from '../log.js';
import { StateDatabase, type StateMigrations } from './database.js';

export const STATE_MIGRATIONS: StateMigrations[] = [IDENTITY_STATE_MIGRATIONS];

/** `state.instance`, else host name, listening port and pid (unique among running instances). */
export function instanceId(state: StateConfig, port: number | string): string {
  return state.instance ?? `${os.hostname()}:${port}:${process.pid}`;
}

export function openStateDatabase(state: StateConfig, instance: string, log: Logger): Promise<StateDatabase> {
  return StateDatabase.open({ url: state.url, log, instanceId: instance }, STATE_MIGRATIONS);
}
