/**
 * Identity stores for tests, on either backend, so one behaviour test runs against both: SQLite (a
 * temporary data directory) and PostgreSQL (a fresh database on the test file's server, through a
 * StateDatabase, as an instance with `state:` uses it). Everything opened is closed at teardown.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PostgresIdentityStore } from '../../src/identity/postgres-store.js';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import type { IdentityStore } from '../../src/identity/store.js';
import { silentLogger } from '../../src/log.js';
import { openStateDatabase } from '../../src/state/components.js';
import type { StateDatabase } from '../../src/state/database.js';
import type { TestPostgres } from './postgres.js';

type Teardown = { teardown(fn: () => unknown): void };

export const BACKENDS = ['sqlite', 'postgres'] as const;
export type Backend = (typeof BACKENDS)[number];

export interface TestIdentity {
  store: IdentityStore;
  /** A table's rows as the backend holds them (bytes as latin1 text), for checks of what is stored. */
  rows(table: string): Promise<Record<string, unknown>[]>;
}

let databases = 0;

/** A new, empty database on `pg` for one shared state; returns its URL. */
export async function freshStateUrl(pg: TestPostgres): Promise<string> {
  const name = `state_${process.pid}_${++databases}`;
  await pg.query(`CREATE DATABASE ${name}`);
  return pg.url(name);
}

/** A StateDatabase on `url`, as instance `instance` (closed at teardown). */
export async function openState(t: Teardown, url: string, instance: string): Promise<StateDatabase> {
  const state = await openStateDatabase({ url, instance, leaseMs: 10_000 }, instance, silentLogger);
  t.teardown(() => state.close());
  return state;
}

/** A PostgreSQL store over `state` (closed at teardown, before the state database). */
export async function postgresStore(t: Teardown, state: StateDatabase): Promise<PostgresIdentityStore> {
  const store = await PostgresIdentityStore.open(state, silentLogger);
  t.teardown(() => store.close());
  return store;
}

export async function openIdentity(t: Teardown, backend: Backend, pg: TestPostgres | null): Promise<TestIdentity> {
  if (backend === 'sqlite') {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-identity-'));
    const store = new SqliteIdentityStore(dir);
    t.teardown(() => {
      store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    return { store, rows: async (table) => latin1(store.db.prepare(`SELECT * FROM ${table}`).all() as Record<string, unknown>[]) };
  }
  const state = await openState(t, await freshStateUrl(pg!), 'test');
  const store = await postgresStore(t, state);
  return { store, rows: async (table) => latin1((await state.query(`SELECT * FROM stepgate.${table}`)).rows) };
}

function latin1(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('latin1') : v])));
}

/** Resolves when `store`'s copy has changed for `user` (or everyone) and `ready()` holds. */
export function changed(store: PostgresIdentityStore, ready: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    if (ready()) return resolve();
    const off = store.onChange(() => {
      if (!ready()) return;
      off();
      resolve();
    });
  });
}
