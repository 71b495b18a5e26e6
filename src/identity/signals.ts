/**
 * The records risk signals are computed from, and the signals of one login.
 *
 * - Where a person connects from: the network of the client address (its /24 for IPv4, its /64 for
 *   IPv6) and the application name, with when each was first and last seen. At most PLACES_PER_USER of
 *   each kind per user (the least recently seen go first).
 * - Failed logins of existing users (unknown names are not recorded: they would let anyone fill the
 *   table), at most FAILURES_PER_USER per user and none older than FAILURE_HORIZON_MS.
 * - The tables a person has touched (`first_access`): one row per user and table, read into memory per
 *   user when that user first logs in, so the statement path only looks in a Set. New pairs are written
 *   in batches, off the statement path.
 *
 * Everything is computed once per connection, at login; the statement path only reads the result.
 *
 * Where they are kept: in identity.db when identities are this instance's own (SQLite), else in
 * DATA/signals.db (identities shared through `state:`): for now every instance knows only the logins it
 * saw itself.
 */
import path from 'node:path';
import type Database from 'better-sqlite3';
import { openDatabase, type Migration } from '../util/sqlite-schema.js';
import { expandIPv6, normalizeClientAddress } from '../rules/client.js';
import type { SubjectSignals } from '../rules/types.js';

type TableRef = { schema: string | null; name: string };

export const PLACES_PER_USER = 200;
export const FAILURES_PER_USER = 100;
export const FAILURE_HORIZON_MS = 24 * 60 * 60_000;
/** Users whose table sets are kept in memory at once (least recently used are forgotten, not lost). */
const TABLE_SETS_IN_MEMORY = 2000;
const FLUSH_MS = 1000;

/** What stepgate knew about this person's circumstances when they logged in (the rules' Subject.signals). */
export type LoginSignals = SubjectSignals;

/** The network a client address belongs to, for `new_client_address`. */
export function networkOf(address: string): string {
  const n = normalizeClientAddress(address);
  if (!n) return 'local';
  if (n.family === 'ipv4') return `${n.address.split('.').slice(0, 3).join('.')}.0/24`;
  const words = expandIPv6(n.address)!;
  return `${words.slice(0, 4).map((w) => w.toString(16)).join(':')}::/64`;
}

/** The key of a table in a user's set: database and the name as written (lower case). */
export function tableKey(database: string, table: TableRef): string {
  return `${database.toLowerCase()}\u001f${table.schema === null ? '' : `${table.schema.toLowerCase()}.`}${table.name.toLowerCase()}`;
}

/**
 * The tables of the records signals are computed from: in identity.db (its third step) for a SQLite
 * instance, alone in signals.db with shared state. Shipped DDL: never edit, append steps instead.
 */
export const SIGNALS_DDL = `
      CREATE TABLE login_places (
        user_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        PRIMARY KEY (user_name, kind, value)
      );
      CREATE TABLE login_failures (
        user_name TEXT NOT NULL,
        at INTEGER NOT NULL
      );
      CREATE INDEX login_failures_user ON login_failures (user_name, at);
      CREATE TABLE table_access (
        user_name TEXT NOT NULL,
        tbl TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        PRIMARY KEY (user_name, tbl)
      );
`;

/** signals.db's schema (with `state:`). Append only. */
export const SIGNALS_MIGRATIONS: Migration[] = [(db) => db.exec(SIGNALS_DDL)];

export class SignalRecords {
  private readonly tables = new Map<string, Set<string>>();
  /**
   * Per user and database, the table objects already known to be in the user's set. Classifications are
   * cached and shared, so the same statement brings the same objects: this skips building the key (a
   * few hundred ns) on the statement path for everything but the first sight of a table.
   */
  private readonly known = new Map<string, WeakSet<object>>();
  private queue: [string, string, number][] = [];
  private timer: NodeJS.Timeout | null = null;

  /** `owned`: the handle is this object's to close (signals.db); identity.db's is the identity store's. */
  constructor(
    private readonly db: Database.Database,
    private readonly owned = false,
  ) {}

  /** The records in DATA/signals.db, for an instance whose identities are shared. */
  static openFile(dataDir: string): SignalRecords {
    return new SignalRecords(openDatabase(path.join(dataDir, 'signals.db'), SIGNALS_MIGRATIONS), true);
  }

  /** Writes what is queued, and closes the file when it is this object's own. */
  close(): void {
    this.flush();
    if (this.owned) this.db.close();
  }

  /** The signals of a login by `user` from `address` with `application` (before it is recorded). */
  atLogin(user: string, address: string, application: string, now = Date.now()): LoginSignals {
    const network = networkOf(address);
    const seen = (kind: string, value: string): number | null =>
      (this.db.prepare('SELECT last_seen FROM login_places WHERE user_name = ? AND kind = ? AND value = ?').get(user, kind, value) as { last_seen: number } | undefined)?.last_seen ?? null;
    const failures = (
      this.db.prepare('SELECT at FROM login_failures WHERE user_name = ? AND at > ? ORDER BY at DESC LIMIT ?').all(user, now - FAILURE_HORIZON_MS, FAILURES_PER_USER) as { at: number }[]
    ).map((r) => r.at);
    this.loadTables(user);
    return {
      network,
      networkLastSeen: seen('net', network),
      applicationLastSeen: seen('app', application),
      failures,
      firstAccess: (database, table) => {
        const refs = this.knownRefs(user, database);
        if (refs.has(table)) return false;
        if (!this.tables.get(user)?.has(tableKey(database, table))) return true;
        refs.add(table);
        return false;
      },
    };
  }

  /** The table objects known to be in `user`'s set for `database` (see `known`). */
  knownRefs(user: string, database: string): WeakSet<object> {
    const k = `${user}\u001f${database}`;
    let refs = this.known.get(k);
    if (!refs) {
      if (this.known.size >= TABLE_SETS_IN_MEMORY) this.known.delete(this.known.keys().next().value!);
      this.known.set(k, (refs = new WeakSet()));
    }
    return refs;
  }

  /** A login that went through: its network and application are known from now on. */
  recordLogin(user: string, address: string, application: string, now = Date.now()): void {
    const upsert = this.db.prepare(
      'INSERT INTO login_places (user_name, kind, value, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_name, kind, value) DO UPDATE SET last_seen = excluded.last_seen',
    );
    this.db.transaction(() => {
      for (const [kind, value] of [['net', networkOf(address)], ['app', application]] as const) {
        upsert.run(user, kind, value, now, now);
        this.db
          .prepare('DELETE FROM login_places WHERE user_name = ? AND kind = ? AND value NOT IN (SELECT value FROM login_places WHERE user_name = ? AND kind = ? ORDER BY last_seen DESC LIMIT ?)')
          .run(user, kind, user, kind, PLACES_PER_USER);
      }
    })();
  }

  /** A failed login of an existing user. */
  recordFailure(user: string, now = Date.now()): void {
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO login_failures (user_name, at) VALUES (?, ?)').run(user, now);
      this.db.prepare('DELETE FROM login_failures WHERE user_name = ? AND at <= ?').run(user, now - FAILURE_HORIZON_MS);
      this.db
        .prepare('DELETE FROM login_failures WHERE user_name = ? AND rowid NOT IN (SELECT rowid FROM login_failures WHERE user_name = ? ORDER BY at DESC LIMIT ?)')
        .run(user, user, FAILURES_PER_USER);
    })();
  }

  /**
   * The tables of a statement that ran for `user`: remembered (written to disk within a second).
   * `refs`: knownRefs(user, database), which the caller keeps per connection.
   */
  touched(user: string, database: string, tables: readonly TableRef[], refs: WeakSet<object> = this.knownRefs(user, database), now?: number): void {
    let set: Set<string> | undefined;
    for (let i = 0; i < tables.length; i++) {
      const t = tables[i]!;
      if (refs.has(t)) continue;
      set ??= this.tables.get(user) ?? this.loadTables(user);
      const key = tableKey(database, t);
      refs.add(t);
      if (set.has(key)) continue;
      set.add(key);
      this.queue.push([user, key, now ?? Date.now()]);
    }
    if (this.queue.length > 0 && this.timer === null) {
      this.timer = setTimeout(() => this.flush(), FLUSH_MS);
      this.timer.unref();
    }
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.queue.length === 0 || !this.db.open) return;
    const rows = this.queue;
    this.queue = [];
    const insert = this.db.prepare('INSERT OR IGNORE INTO table_access (user_name, tbl, first_at) VALUES (?, ?, ?)');
    this.db.transaction(() => {
      for (const r of rows) insert.run(...r);
    })();
  }

  private loadTables(user: string): Set<string> {
    let set = this.tables.get(user);
    if (set) {
      // Most recently used last.
      this.tables.delete(user);
      this.tables.set(user, set);
      return set;
    }
    set = new Set((this.db.prepare('SELECT tbl FROM table_access WHERE user_name = ?').all(user) as { tbl: string }[]).map((r) => r.tbl));
    for (const [u, key] of this.queue) if (u === user) set.add(key);
    this.tables.set(user, set);
    if (this.tables.size > TABLE_SETS_IN_MEMORY) {
      const gone = this.tables.keys().next().value!;
      this.tables.delete(gone);
      // Its known objects went with it (a user's set is read again when needed).
      for (const k of [...this.known.keys()]) if (k.startsWith(`${gone}\u001f`)) this.known.delete(k);
    }
    return set;
  }
}
