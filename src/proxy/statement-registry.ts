/**
 * What the server holds under each prepared-statement and portal name, as far as the proxy can know, so
 * that an Execute (or FETCH) is judged by the statement the server will really run.
 *
 * Changes are applied when a message is forwarded (clients pipeline, so waiting for the server's answer
 * is not an option) and undone when the server reports that the message failed or was skipped. A name
 * that exists already is replaced too: if the server refuses the duplicate, the refusal undoes the change.
 * The invariant: whatever the server may run under a name, the registry holds that statement, or holds
 * nothing and the server holds nothing either. Names the registry does not know are treated as unknown
 * statements, never as reads.
 *
 * Protocol portals and SQL cursors are one namespace: DECLARE creates a portal that Execute can run, FETCH
 * runs one created by Bind, SQL CLOSE drops either. ROLLBACK TO SAVEPOINT drops the portals created after
 * the savepoint; the end of a transaction drops all but WITH HOLD cursors.
 */
import type { StatementInfo } from '../sql/types.js';

/** A prepared statement as the proxy knows it: the classified statement, or the empty query. */
export interface PreparedStatement {
  /** Empty for an empty query string (the server answers EmptyQueryResponse). */
  statements: StatementInfo[];
  sql: string;
  /**
   * A statement the rules do not simply allow is judged at its Parse (parse analysis can run its code:
   * literals coerced to a domain, for one): the audit id of that approval, for its first Bind.
   */
  approved?: number;
}

export interface Portal {
  statement: PreparedStatement;
  /** Batch (Sync count) in which the portal was created: portals end with their transaction. */
  batch: number;
  /** Bind parameters, kept only when the audit trail records them. */
  params: (Buffer | null)[] | null;
  /**
   * The audit id of the decision that let it run (at Bind, or the DECLARE that created it); null when it
   * is not audited. Executes of the portal continue what was decided and are not decided again.
   */
  decided: number | null;
  /** DECLARE ... WITH HOLD: survives the end of its transaction. */
  hold: boolean;
  /** Creation order, for ROLLBACK TO SAVEPOINT. */
  seq: number;
}

/** Restores one change; kept by the pending reply of the message that made it. */
export type Undo = () => void;

interface Savepoint {
  name: string;
  /** Portals with a higher seq were created after it. */
  mark: number;
}

export class StatementRegistry {
  /**
   * Named statements share one namespace in PostgreSQL, whether created by a Parse message or by SQL
   * PREPARE (EXECUTE can run the former and Bind the latter). '' is the unnamed statement.
   */
  private readonly statements = new Map<string, PreparedStatement>();
  private readonly portals = new Map<string, Portal>();
  /** The client's savepoints in the current transaction block, oldest first. */
  private savepoints: Savepoint[] = [];
  private seq = 0;

  statement(name: string): PreparedStatement | undefined {
    return this.statements.get(name);
  }

  portal(name: string): Portal | undefined {
    return this.portals.get(name);
  }

  get size(): { statements: number; portals: number } {
    return { statements: this.statements.size, portals: this.portals.size };
  }

  /** Parse or PREPARE. */
  defineStatement(name: string, statement: PreparedStatement): Undo {
    return this.set(this.statements, name, statement);
  }

  /** Bind or DECLARE. */
  bindPortal(name: string, portal: Omit<Portal, 'seq'>): Undo {
    return this.set(this.portals, name, { ...portal, seq: ++this.seq });
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

  /**
   * The transaction that created portals up to `batch` has ended: the server has dropped them (WITH HOLD
   * cursors excepted), and the block's savepoints with them.
   */
  endPortalsUpTo(batch: number): void {
    for (const [name, portal] of this.portals) if (portal.batch <= batch && !portal.hold) this.portals.delete(name);
    this.savepoints = [];
  }

  /** CLOSE ALL, DISCARD ALL: every portal. */
  dropAllPortals(): Undo {
    const saved = new Map(this.portals);
    this.portals.clear();
    return () => {
      for (const [k, v] of saved) this.portals.set(k, v);
    };
  }

  /** SAVEPOINT name. */
  savepoint(name: string): Undo {
    this.savepoints.push({ name, mark: this.seq });
    const entry = this.savepoints[this.savepoints.length - 1];
    return () => {
      const i = this.savepoints.lastIndexOf(entry!);
      if (i >= 0) this.savepoints.splice(i, 1);
    };
  }

  /** RELEASE name: it and every later savepoint end; their portals stay. */
  release(name: string): Undo {
    const i = this.lastSavepoint(name);
    if (i < 0) return () => {};
    const removed = this.savepoints.splice(i);
    return () => this.savepoints.splice(i, 0, ...removed);
  }

  /** ROLLBACK TO name: the portals created after it are dropped; it stays, later ones end. */
  rollbackTo(name: string): Undo {
    const i = this.lastSavepoint(name);
    if (i < 0) return () => {};
    const mark = this.savepoints[i]!.mark;
    const removedSavepoints = this.savepoints.splice(i + 1);
    const removedPortals: [string, Portal][] = [];
    for (const [k, p] of this.portals) if (p.seq > mark) removedPortals.push([k, p]);
    for (const [k] of removedPortals) this.portals.delete(k);
    return () => {
      this.savepoints.push(...removedSavepoints);
      for (const [k, p] of removedPortals) this.portals.set(k, p);
    };
  }

  private lastSavepoint(name: string): number {
    for (let i = this.savepoints.length - 1; i >= 0; i--) if (this.savepoints[i]!.name === name) return i;
    return -1;
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
