/**
 * Which identity store an instance uses: the shared one when the config has `state:` (the app opens the
 * StateDatabase, with every component's migrations, and hands it here), else DATA/identity.db. And
 * where the risk-signal records go beside it (they stay per instance either way).
 */
import type { Logger } from '../log.js';
import type { StateDatabase } from '../state/database.js';
import { PostgresIdentityStore } from './postgres-store.js';
import { SignalRecords } from './signals.js';
import { SqliteIdentityStore } from './sqlite-store.js';
import type { IdentityStore } from './store.js';

export function openIdentityStore(dataDir: string, state: StateDatabase | null, log: Logger): Promise<IdentityStore> {
  return state ? PostgresIdentityStore.open(state, log) : Promise.resolve(new SqliteIdentityStore(dataDir));
}

/** In identity.db beside a SQLite store (as before shared state existed), else in DATA/signals.db. */
export function openSignalRecords(dataDir: string, identity: IdentityStore): SignalRecords {
  return identity instanceof SqliteIdentityStore ? new SignalRecords(identity.db) : SignalRecords.openFile(dataDir);
}
