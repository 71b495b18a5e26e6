/**
 * What the server holds under each prepared-statement and portal name, as far as the proxy can know, so
 * that an Execute is judged by the statement the server will really run.
 *
 * Changes are applied when a message is forwarded (clients pipeline, so waiting for the server's answer
 * is not an option) and undone when the server reports that the message failed or was skipped. The
 * invariant: whatever the server may run under a name, the registry holds that statement, or holds
 * nothing and the server holds nothing either. Names the registry does not know are treated as unknown
 * statements, never as reads.
 */
import type { StatementInfo } from '../sql/types.js';

/** A prepared statement as the proxy knows it: the classified statement, or the empty query. */
export interface PreparedStatement {
  /** Empty for an empty query string (the server answers EmptyQueryResponse). */
  statements: StatementInfo[];
  sql: string;
}

export interface Portal {
  statement: PreparedStatement;
  /** Batch (Sync count) in which the portal was bound: portals end with their transaction. */
  batch: number;
  /** Bind parameters, kept only when the audit trail records them. */
  params: (Buffer | null)[] | null;
  /**
   * Set once an Execute of this portal was released (its audit id, null when not audited): later Executes
   * continue the same statement (fetching more rows) and are not decided again.
   */
  releasedAs?: number | null;
}

/** Restores one change; kept by the pending reply of the message that made it. */
export type Undo = () => void;

export class StatementRegistry {
  /**
   * Named statements share one namespace in PostgreSQL, whether created by a Parse message or by SQL
   * PREPARE (EXECUTE can run the former and Bind the latter). '' is the unnamed statement.
   */
  private readonly statements = new Map<string, PreparedStatement>();
  private readonly portals = new Map<string, Portal>();

  statement(name: string): PreparedStatement | undefined {
    return this.statements.get(name);
  }

  portal(name: string): Portal | undefined {
    return this.portals.get(name);
  }

  get size(): { statements: number; portals: number } {
    return { statements: this.statements.size, portals: this.portals.size };
  }

  /**
   * Parse or PREPARE. A named statement that exists already is not replaced: the server refuses the
   * duplicate and keeps the old one. The unnamed statement is always replaced.
   */
  defineStatement(name: string, statement: PreparedStatement): Undo | null {
    if (name !== '' && this.statements.has(name)) return null;
    return this.set(this.statements, name, statement);
  }

  /** Bind. Like statements, a named portal that exists is kept; the unnamed one is replaced. */
  bindPortal(name: string, portal: Portal): Undo | null {
    if (name !== '' && this.portals.has(name)) return null;
    return this.set(this.portals, name, portal);
  }

  closeStatement(name: string): Undo | null {
    return this.remove(this.statements, name);
  }

  closePortal(name: string): Undo | null {
    return this.remove(this.portals, name);
  }

  /** DEALLOCATE ALL drops every named statement (the unnamed one stays); DISCARD ALL drops everything. */
  dropAllStatements(includeUnnamed: boolean): Undo {
    const saved = new Map(this.statements);
    for (const name of saved.keys()) if (name !== '' || includeUnnamed) this.statements.delete(name);
    return () => {
      for (const [k, v] of saved) this.statements.set(k, v);
    };
  }

  /** A simple Query replaces the unnamed statement and portal (the server drops both). */
  dropUnnamed(): void {
    this.statements.delete('');
    this.portals.delete('');
  }

  /** The transaction that bound portals up to `batch` has ended: the server has dropped them. */
  endPortalsUpTo(batch: number): void {
    for (const [name, portal] of this.portals) if (portal.batch <= batch) this.portals.delete(name);
  }

  /** DISCARD ALL / connection reset. */
  dropAllPortals(): Undo {
    const saved = new Map(this.portals);
    this.portals.clear();
    return () => {
      for (const [k, v] of saved) this.portals.set(k, v);
    };
  }

  private set<T>(map: Map<string, T>, name: string, value: T): Undo {
    const had = map.has(name);
    const old = map.get(name);
    map.set(name, value);
    return () => {
      if (had) map.set(name, old as T);
      else map.delete(name);
    };
  }

  private remove<T>(map: Map<string, T>, name: string): Undo | null {
    if (!map.has(name)) return null;
    const old = map.get(name) as T;
    map.delete(name);
    return () => map.set(name, old);
  }
}
