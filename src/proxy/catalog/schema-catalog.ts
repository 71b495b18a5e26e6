/**
 * The schema catalog of one upstream database: answers the classifier's lookups (src/sql/catalog.ts)
 * synchronously from caches, and fills them from the server when asked (resolve()).
 *
 * What is cached, and for how long:
 * - the name lists (which function, operator and type names may be user-defined): loaded with the first
 *   statement, refreshed in the background after 3/4 of the TTL, unknown (so looked up again) after the TTL;
 * - per name or OID: functions with their definitions, relations with their view queries, policies and foreign
 *   servers, operators with their functions, types with their checks and casts; the database-wide hazards.
 *   Each for the TTL (default 60 s), bounded in count and size.
 *
 * invalidate() forgets everything at once (the session calls it when a statement that may change the schema,
 * ddl, privilege or admin, has completed): a CREATE OR REPLACE FUNCTION that puts an evil body behind a
 * name that was safe is then seen by the next statement, not a minute later. Fetches that were under way
 * when it was called are not stored.
 */
import { catalogKeyString, type CatalogAnswer, type CatalogKey, type CatalogLookups, type NameStatus } from '../../sql/catalog.js';
import type { UpstreamTarget } from '../upstream.js';
import { CatalogConnection, textArray } from './connection.js';
import {
  functionOidsQuery,
  functionsQuery,
  hazardsQuery,
  namesQuery,
  OID_NAME_SQL,
  operatorsQuery,
  relationsQuery,
  typeOidsQuery,
  typesQuery,
} from './queries.js';
import { clock, ExpiringStore } from './store.js';

export interface SchemaCatalog {
  /** The classifier's view (ClassifyContext.catalog). */
  readonly lookups: CatalogLookups;
  /** True when the name lists have been loaded once (ready() would not wait). */
  readonly loaded: boolean;
  /** Loads the name lists (or waits for the load under way). */
  ready(): Promise<void>;
  /** Starts a background refresh of the name lists when they are getting old. */
  refreshIfStale(): void;
  /** Fetches the answers to these lookups (those not cached already). Rejects when the server cannot be asked. */
  resolve(keys: readonly CatalogKey[]): Promise<void>;
  /** Forgets everything learnt: the schema may have changed. */
  invalidate(): void;
  /** FunctionCall messages name a function by OID. */
  describeOid(oid: number): Promise<{ schema: string; name: string } | null>;
  close(): void;
}

export interface SchemaCatalogOptions {
  ttlMs?: number;
  maxEntries?: number;
  /** Approximate bytes of answers kept (function bodies, view queries ...). Default 32 MiB. */
  maxBytes?: number;
}

interface Names {
  functions: Map<string, boolean>;
  operators: Map<string, boolean>;
  types: Map<string, boolean>;
  loadedAt: number;
}

const DEFAULT_TTL_MS = 60_000;

type PairKind = 'functions' | 'relations' | 'operators' | 'types';
type OidKind = 'function' | 'type';

export class ServerSchemaCatalog implements SchemaCatalog {
  private readonly connection: CatalogConnection;
  private readonly ttlMs: number;
  private readonly store: ExpiringStore<unknown>;
  private readonly oidNames: ExpiringStore<{ schema: string; name: string } | null>;
  private names: Names | null = null;
  private namesLoading: Promise<void> | null = null;
  /** Bumped by invalidate(): answers fetched under an older generation are dropped. */
  private generation = 0;

  readonly lookups: CatalogLookups;

  constructor(target: UpstreamTarget, database: string, timeoutMs: number, options: SchemaCatalogOptions = {}) {
    this.connection = new CatalogConnection(target, database, timeoutMs);
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    this.store = new ExpiringStore(this.ttlMs, options.maxEntries ?? 20_000, options.maxBytes ?? 32 * 1024 * 1024);
    this.oidNames = new ExpiringStore(this.ttlMs, 10_000, 4 * 1024 * 1024);
    this.lookups = { lookup: (key) => this.lookup(key) };
  }

  get loaded(): boolean {
    return this.names !== null;
  }

  ready(): Promise<void> {
    if (this.names !== null && Date.now() - this.names.loadedAt <= this.ttlMs) return Promise.resolve();
    return this.loadNames();
  }

  refreshIfStale(): void {
    if (this.names !== null && this.namesLoading === null && Date.now() - this.names.loadedAt > (this.ttlMs * 3) / 4) {
      this.loadNames().catch(() => {});
    }
  }

  invalidate(): void {
    this.generation++;
    this.names = null;
    this.store.clear();
    this.oidNames.clear();
  }

  close(): void {
    this.connection.close();
  }

  private lookup<K extends CatalogKey>(key: K): CatalogAnswer<K> | undefined {
    if (key.kind === 'names') {
      const names = this.names;
      if (names === null || clock() - names.loadedAt > this.ttlMs) return undefined;
      const map = key.of === 'function' ? names.functions : key.of === 'operator' ? names.operators : names.types;
      const user = map.get(key.name);
      const status: NameStatus = user === undefined ? 'none' : user ? 'lookup' : 'trusted';
      return status as CatalogAnswer<K>;
    }
    return this.store.get(catalogKeyString(key)) as CatalogAnswer<K> | undefined;
  }

  async resolve(keys: readonly CatalogKey[]): Promise<void> {
    const pairs: Record<PairKind, { schema: string | null; name: string }[]> = { functions: [], relations: [], operators: [], types: [] };
    const oids: Record<OidKind, number[]> = { function: [], type: [] };
    const tasks: Promise<void>[] = [];
    const seen = new Set<string>();
    let names = false;
    for (const key of keys) {
      const k = catalogKeyString(key);
      if (seen.has(k) || this.lookup(key) !== undefined) continue;
      seen.add(k);
      switch (key.kind) {
        case 'names':
          if (!names) tasks.push(this.loadNames());
          names = true;
          break;
        case 'hazards':
          tasks.push(this.loadHazards());
          break;
        case 'function':
        case 'type':
          oids[key.kind].push(key.oid);
          break;
        default:
          pairs[key.kind].push({ schema: key.schema, name: key.name });
      }
    }
    for (const kind of Object.keys(pairs) as PairKind[]) if (pairs[kind].length > 0) tasks.push(this.loadPairs(kind, pairs[kind]));
    for (const kind of Object.keys(oids) as OidKind[]) if (oids[kind].length > 0) tasks.push(this.loadOids(kind, oids[kind]));
    await Promise.all(tasks);
  }

  async describeOid(oid: number): Promise<{ schema: string; name: string } | null> {
    const cached = this.oidNames.get(String(oid));
    if (cached !== undefined) return cached;
    const rows = await this.connection.query(OID_NAME_SQL, [String(oid)]);
    const value = rows.length === 1 ? { schema: rows[0]![0] as string, name: rows[0]![1] as string } : null;
    this.oidNames.set(String(oid), value, 64);
    return value;
  }

  // ---- loading --------------------------------------------------------------------------------------------

  private loadNames(): Promise<void> {
    this.namesLoading ??= (async () => {
      const generation = this.generation;
      const value = await this.json<{ functions: Record<string, boolean>; operators: Record<string, boolean>; types: Record<string, boolean> }>(
        namesQuery(),
        [],
      );
      if (generation !== this.generation) return;
      this.names = {
        functions: new Map(Object.entries(value.functions)),
        operators: new Map(Object.entries(value.operators)),
        types: new Map(Object.entries(value.types)),
        loadedAt: Date.now(),
      };
    })().finally(() => (this.namesLoading = null));
    return this.namesLoading;
  }

  private async loadHazards(): Promise<void> {
    const generation = this.generation;
    const version = await this.connection.version();
    const value = await this.json<unknown>(hazardsQuery(version), []);
    if (generation === this.generation) this.store.set(catalogKeyString({ kind: 'hazards' }), value, JSON.stringify(value).length);
  }

  private async loadPairs(kind: PairKind, wanted: { schema: string | null; name: string }[]): Promise<void> {
    const generation = this.generation;
    const version = await this.connection.version();
    const sql =
      kind === 'functions' ? functionsQuery(version) : kind === 'relations' ? relationsQuery(version) : kind === 'operators' ? operatorsQuery(version) : typesQuery(version);
    const values = await this.json<unknown[]>(sql, [textArray(wanted.map((w) => w.schema)), textArray(wanted.map((w) => w.name))]);
    if (generation !== this.generation) return;
    for (let i = 0; i < wanted.length; i++) {
      const value = values?.[i] ?? [];
      this.store.set(catalogKeyString({ kind, ...wanted[i]! } as CatalogKey), value, JSON.stringify(value).length);
    }
  }

  private async loadOids(kind: OidKind, wanted: number[]): Promise<void> {
    const generation = this.generation;
    const version = await this.connection.version();
    const sql = kind === 'function' ? functionOidsQuery(version) : typeOidsQuery(version);
    const values = await this.json<unknown[]>(sql, [`{${wanted.join(',')}}`]);
    if (generation !== this.generation) return;
    for (let i = 0; i < wanted.length; i++) {
      const value = values?.[i] ?? null;
      this.store.set(catalogKeyString({ kind, oid: wanted[i]! }), value, value === null ? 16 : JSON.stringify(value).length);
    }
  }

  private async json<T>(sql: string, params: (string | null)[]): Promise<T> {
    const rows = await this.connection.query(sql, params);
    const text = rows[0]?.[0];
    if (text === null || text === undefined) return null as T;
    return JSON.parse(text) as T;
  }
}
