/**
 * The catalog's own connection to one database: separate from the clients' sessions, so a lookup never runs
 * inside a client's transaction (and sees only committed catalog rows). One query at a time, text results.
 *
 * It runs with search_path = '' (a startup parameter): pg_get_viewdef, pg_get_expr and pg_get_functiondef
 * then print every name outside pg_catalog schema-qualified, so the classifier reads hidden code as the
 * server will run it whatever the client's search_path.
 */
import type { Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import { Parser } from 'pg-protocol/dist/parser.js';
import { connectUpstream, type UpstreamTarget } from '../upstream.js';

export class CatalogConnection {
  private socket: Socket | null = null;
  private connecting: Promise<Socket> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** server_version_num of the server, known once connected (0 before). */
  serverVersion = 0;

  constructor(
    private readonly target: UpstreamTarget,
    private readonly database: string,
    private readonly timeoutMs: number,
  ) {}

  query(sql: string, params: (string | null)[]): Promise<(string | null)[][]> {
    const run = this.queue.then(() => this.run(sql, params));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Connects (if not yet) and returns the server's version number (150018 for 15.18). */
  async version(): Promise<number> {
    await this.connection();
    return this.serverVersion;
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }

  private async connection(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.connecting ??= connectUpstream(
      this.target,
      { database: this.database, application_name: 'stepgate-catalog', client_encoding: 'UTF8', search_path: '' },
      this.timeoutMs,
    )
      .then((c) => {
        c.socket.unref();
        c.socket.on('error', () => c.socket.destroy());
        this.serverVersion = versionNumber(c.parameters.get('server_version') ?? '');
        this.socket = c.socket;
        return c.socket;
      })
      .finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async run(sql: string, params: (string | null)[]): Promise<(string | null)[][]> {
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

/** "15.18", "16beta1", "17.2 (Debian ...)" → 150018, 160000, 170002; 9.x → 90000 + minor * 100. */
export function versionNumber(version: string): number {
  const m = /^(\d+)(?:\.(\d+))?/.exec(version);
  if (!m) return 0;
  const major = Number(m[1]);
  const minor = Number(m[2] ?? 0);
  return major >= 10 ? major * 10000 + minor : major * 10000 + minor * 100;
}

/** A text[] parameter in array-literal form; null elements stay NULL. */
export function textArray(values: readonly (string | null)[]): string {
  return `{${values.map((v) => (v === null ? 'NULL' : `"${v.replace(/["\\]/g, '\\$&')}"`)).join(',')}}`;
}
