/**
 * What the server's catalog says about functions stepgate does not know as built-ins: whether they may
 * change anything (volatility) and, for FunctionCall messages, which function an OID names. One small
 * connection per upstream database, separate from the clients' sessions so a lookup never runs inside a
 * client's transaction; answers are cached for a minute.
 */
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { connectUpstream, type UpstreamTarget } from './upstream.js';

export interface FunctionCatalog {
  /**
   * Loads (or starts refreshing) the names of functions and operators defined outside pg_catalog. Await it
   * before classifying: until it has loaded, every built-in name counts as shadowed (fail closed).
   */
  ready(): Promise<void>;
  /** True when the first load is done (ready() would not wait). */
  readonly loaded: boolean;
  /** Starts a background refresh of the shadowed names when they are older than a minute. */
  refreshIfStale(): void;
  /** Whether a schema other than pg_catalog defines a function or operator of this built-in name. */
  shadowedBuiltin(name: string, kind: 'function' | 'operator'): boolean;
  /** 'read' when every function of that name is STABLE or IMMUTABLE; undefined when not looked up yet. */
  volatility(name: string): 'read' | 'procedural' | undefined;
  /** Looks the names up; names the server does not know become 'procedural'. */
  lookup(names: string[]): Promise<void>;
  describeOid(oid: number): Promise<{ schema: string; name: string } | null>;
  close(): void;
}

const TTL_MS = 60_000;
const MAX_ENTRIES = 10_000;

const VOLATILITY_SQL = `
SELECT wanted.name, bool_and(p.provolatile <> 'v') AS read_only
FROM unnest($1::text[]) AS wanted(name)
JOIN pg_catalog.pg_proc p ON p.proname = CASE WHEN strpos(wanted.name, '.') > 0 THEN split_part(wanted.name, '.', 2) ELSE wanted.name END
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE strpos(wanted.name, '.') = 0 OR n.nspname = split_part(wanted.name, '.', 1)
GROUP BY wanted.name`;

const SHADOW_SQL = `
SELECT 'f', p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION
SELECT 'o', o.oprname FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')`;

const OID_SQL = `SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1::oid`;

/** A minimal client: one query at a time, text results. */
class CatalogConnection {
  private socket: Socket | null = null;
  private connecting: Promise<Socket> | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly target: UpstreamTarget,
    private readonly database: string,
    private readonly timeoutMs: number,
  ) {}

  query(sql: string, params: string[]): Promise<(string | null)[][]> {
    const run = this.queue.then(() => this.run(sql, params));
    this.queue = run.catch(() => undefined);
    return run;
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }

  private async connection(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.connecting ??= connectUpstream(this.target, { database: this.database, application_name: 'stepgate-catalog', client_encoding: 'UTF8' }, this.timeoutMs)
      .then((c) => {
        c.socket.unref();
        c.socket.on('error', () => c.socket.destroy());
        this.socket = c.socket;
        return c.socket;
      })
      .finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async run(sql: string, params: string[]): Promise<(string | null)[][]> {
    const socket = await this.connection();
    return new Promise((resolve, reject) => {
      const parser = new Parser();
      const rows: (string | null)[][] = [];
      let error: Error | null = null;
      const timer = setTimeout(() => finish(new Error('catalog query timed out')), this.timeoutMs);
      const finish = (err: Error | null): void => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('close', onClose);
        if (err) {
          socket.destroy();
          reject(err);
        } else if (error) reject(error);
        else resolve(rows);
      };
      const onClose = (): void => finish(new Error('catalog connection closed'));
      const onMessage = (msg: BackendMessage): void => {
        if (msg.name === 'dataRow') rows.push((msg as unknown as { fields: (string | null)[] }).fields);
        else if (msg.name === 'error') error = new Error((msg as unknown as { message: string }).message);
        else if (msg.name === 'readyForQuery') finish(null);
      };
      const onData = (chunk: Buffer): void => {
        try {
          parser.parse(chunk, onMessage);
        } catch (err) {
          finish(err as Error);
        }
      };
      socket.on('data', onData);
      socket.on('close', onClose);
      socket.write(
        Buffer.concat([
          serialize.parse({ text: sql, types: [] }),
          serialize.bind({ values: params }),
          serialize.describe({ type: 'P' }),
          serialize.execute({}),
          serialize.sync(),
        ]),
      );
    });
  }
}

export class ServerFunctionCatalog implements FunctionCatalog {
  private readonly connection: CatalogConnection;
  /** Names defined outside pg_catalog; null until loaded (then everything counts as shadowed). */
  private shadow: { functions: Set<string>; operators: Set<string> } | null = null;
  private shadowLoadedAt = 0;
  private shadowLoading: Promise<void> | null = null;
  private readonly known = new Map<string, { value: 'read' | 'procedural'; expires: number }>();
  private readonly oids = new Map<number, { value: { schema: string; name: string } | null; expires: number }>();

  constructor(target: UpstreamTarget, database: string, timeoutMs: number) {
    this.connection = new CatalogConnection(target, database, timeoutMs);
  }

  get loaded(): boolean {
    return this.shadow !== null;
  }

  refreshIfStale(): void {
    if (this.shadowLoading === null && Date.now() - this.shadowLoadedAt > TTL_MS) this.ready().catch(() => {});
  }

  ready(): Promise<void> {
    const stale = Date.now() - this.shadowLoadedAt > TTL_MS;
    if (stale && !this.shadowLoading) {
      this.shadowLoading = this.connection
        .query(SHADOW_SQL, [])
        .then((rows) => {
          const shadow = { functions: new Set<string>(), operators: new Set<string>() };
          for (const [kind, name] of rows) (kind === 'o' ? shadow.operators : shadow.functions).add(name as string);
          this.shadow = shadow;
          this.shadowLoadedAt = Date.now();
        })
        .finally(() => (this.shadowLoading = null));
    }
    // A refresh runs in the background; only the first load is waited for.
    return this.shadow !== null ? Promise.resolve() : (this.shadowLoading ?? Promise.resolve());
  }

  shadowedBuiltin(name: string, kind: 'function' | 'operator'): boolean {
    if (this.shadow === null) return true;
    return (kind === 'function' ? this.shadow.functions : this.shadow.operators).has(name);
  }

  volatility(name: string): 'read' | 'procedural' | undefined {
    const entry = this.known.get(name);
    if (!entry) return undefined;
    if (entry.expires < Date.now()) {
      this.known.delete(name);
      return undefined;
    }
    return entry.value;
  }

  async lookup(names: string[]): Promise<void> {
    const wanted = [...new Set(names)].filter((n) => this.volatility(n) === undefined);
    if (wanted.length === 0) return;
    const arrayLiteral = `{${wanted.map((n) => `"${n.replace(/["\\]/g, '\\$&')}"`).join(',')}}`;
    const rows = await this.connection.query(VOLATILITY_SQL, [arrayLiteral]);
    const readOnly = new Set(rows.filter((r) => r[1] === 't').map((r) => r[0] as string));
    const expires = Date.now() + TTL_MS;
    if (this.known.size + wanted.length > MAX_ENTRIES) this.known.clear();
    for (const name of wanted) this.known.set(name, { value: readOnly.has(name) ? 'read' : 'procedural', expires });
  }

  async describeOid(oid: number): Promise<{ schema: string; name: string } | null> {
    const cached = this.oids.get(oid);
    if (cached && cached.expires >= Date.now()) return cached.value;
    const rows = await this.connection.query(OID_SQL, [String(oid)]);
    const value = rows.length === 1 ? { schema: rows[0][0] as string, name: rows[0][1] as string } : null;
    if (this.oids.size >= MAX_ENTRIES) this.oids.clear();
    this.oids.set(oid, { value, expires: Date.now() + TTL_MS });
    return value;
  }

  close(): void {
    this.connection.close();
  }
}
