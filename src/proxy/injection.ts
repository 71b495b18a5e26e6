/**
 * The statements stepgate sends to the server on its own (read-only.ts decides which), encoded so that the
 * client never sees them and they cannot change what the client sees:
 *
 *  - Before a client's simple Query in a transaction block: one simple Query with the statements. A failure
 *    aborts the block, so the client's statement then fails as it would in an aborted block (never runs in
 *    the wrong mode). Its replies are swallowed up to its ReadyForQuery.
 *  - Before anything else: Bind/Execute of statements stepgate prepared once per session (no parsing per use).
 *    They share the client's implicit transaction (a simple Query would end it). An error is relayed as the
 *    answer to the client's next message, which the server then skips up to Sync: the same error the
 *    client's message would have got (the transaction is aborted), or a cancel that hit stepgate's statement
 *    instead of the client's. In front of a simple Query or FunctionCall, which the server would skip too, a
 *    Sync follows the client's message so that the server answers (its ReadyForQuery is the client's then).
 *  - Around statements that run their own transactions: Bind/Execute and a Sync of stepgate's own.
 *
 * Names: prepared statements `stepgate_<generation>_<what>`, portal `stepgate_portal`, savepoint
 * `stepgate_ro`. Client statements that use names starting with `stepgate_` are refused, so a client cannot
 * drop, replace or release them. DEALLOCATE ALL and DISCARD ALL drop stepgate's statements too: they are
 * prepared again, under a new generation, before their next use.
 */
import * as frontend from '../protocol/frontend-messages.js';
import { ServerType, type ErrorFields } from '../protocol/backend-messages.js';
import { Injection } from './read-only.js';
import { Entry, type OwnQueryHandlers, type ReplyState } from './reply-state.js';

/** Names a client may not use for statements, portals, cursors or savepoints. */
export const RESERVED_PREFIX = 'stepgate_';
export const REGION_SAVEPOINT = 'stepgate_ro';
const PORTAL = 'stepgate_portal';

/** The SQL of each injection, one statement per entry (in order). */
const SQL: Record<Injection, readonly string[]> = {
  [Injection.ReadWrite]: ['SET transaction_read_only = off'],
  [Injection.ReadOnly]: ['SET transaction_read_only = on'],
  [Injection.OpenRegion]: [`SAVEPOINT ${REGION_SAVEPOINT}`, 'SET transaction_read_only = on'],
  [Injection.CloseRegion]: [`RELEASE SAVEPOINT ${REGION_SAVEPOINT}`],
  [Injection.DefaultOff]: ['SET default_transaction_read_only = off'],
  [Injection.DefaultOn]: ['SET default_transaction_read_only = on'],
};

/** Every distinct statement, with a short name for its prepared statement. */
const STATEMENTS: readonly { key: string; sql: string }[] = [
  { key: 'rw', sql: 'SET transaction_read_only = off' },
  { key: 'ro', sql: 'SET transaction_read_only = on' },
  { key: 'sp', sql: `SAVEPOINT ${REGION_SAVEPOINT}` },
  { key: 'rel', sql: `RELEASE SAVEPOINT ${REGION_SAVEPOINT}` },
  { key: 'doff', sql: 'SET default_transaction_read_only = off' },
  { key: 'don', sql: 'SET default_transaction_read_only = on' },
];

/** How injections are sent, chosen by what follows them. */
export const enum Style {
  /** One simple Query (only in a transaction block, right before a client's simple Query). */
  QueryText,
  /** Bind/Execute of prepared statements; errors stand in for the client's next message. */
  Extended,
  /** Bind/Execute and a Sync of stepgate's own; errors are swallowed. */
  Synced,
}

export interface EncodeOptions {
  /** The client's unnamed portal may still be executed later: use stepgate's own portal (and Close it). */
  keepUnnamedPortal: boolean;
  /** Called when an injected statement fails (for the transaction model). */
  onError?: (fields: ErrorFields) => void;
}

export function isReservedName(name: string): boolean {
  return name.startsWith(RESERVED_PREFIX);
}

export class Injector {
  private generation = 0;
  /** stepgate's prepared statements exist on the server (as far as it knows). */
  private prepared = false;

  constructor(private readonly replies: ReplyState) {}

  /**
   * One simple Query of stepgate's own (its replies are swallowed; `handlers` hear its rows and its end).
   * Only where a simple Query cannot change what the client sees: the server idle between client messages,
   * or in a transaction block right before a client's simple Query.
   */
  query(sql: string, handlers: OwnQueryHandlers): Buffer {
    this.replies.expect(Entry.ownQuery(handlers), true);
    return frontend.encodeQuery(sql);
  }

  /** The server dropped every prepared statement (DEALLOCATE ALL, DISCARD ALL): prepare again before use. */
  forgetPrepared(): void {
    if (!this.prepared) return;
    this.prepared = false;
    this.generation++;
  }

  /**
   * The bytes for a list of injections, with their reply entries recorded in order. `style` QueryText is
   * only valid in a transaction block right before a client simple Query.
   */
  encode(injections: readonly Injection[], style: Style, options: EncodeOptions): Buffer {
    if (injections.length === 0) return EMPTY;
    const statements: string[] = [];
    for (const i of injections) statements.push(...SQL[i]);
    if (style === Style.QueryText) {
      this.replies.expect(Entry.ownQuery({ onError: options.onError }), true);
      return frontend.encodeQuery(statements.join('; '));
    }
    const parts: Buffer[] = [];
    const passThrough = style === Style.Extended;
    this.prepareIfNeeded(parts, passThrough, options);
    const portal = options.keepUnnamedPortal ? PORTAL : '';
    for (const sql of statements) {
      const name = this.nameOf(sql);
      parts.push(frontend.encodeBind(portal, name), frontend.encodeExecute(portal));
      this.own(ServerType.BindComplete, passThrough, options);
      this.own(ServerType.CommandComplete, passThrough, options);
      if (portal !== '') {
        parts.push(frontend.encodeClose('P', portal));
        this.own(ServerType.CloseComplete, passThrough, options);
      }
    }
    if (style === Style.Synced) {
      parts.push(frontend.SYNC);
      this.replies.expect(Entry.ownSync(null), true);
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  private prepareIfNeeded(parts: Buffer[], passThrough: boolean, options: EncodeOptions): void {
    if (this.prepared) return;
    this.prepared = true;
    const onError = (fields: ErrorFields): void => {
      // Not prepared after all (the transaction was aborted): try again, under new names, next time.
      this.prepared = false;
      this.generation++;
      options.onError?.(fields);
    };
    for (const s of STATEMENTS) {
      parts.push(frontend.encodeParse(this.name(s.key), s.sql));
      this.own(ServerType.ParseComplete, passThrough, { ...options, onError });
    }
  }

  private own(completes: ServerType, passThrough: boolean, options: EncodeOptions): void {
    this.replies.expect(Entry.ownMessage(completes, passThrough, options.onError ?? null));
  }

  private nameOf(sql: string): string {
    for (const s of STATEMENTS) if (s.sql === sql) return this.name(s.key);
    throw new Error(`stepgate: no prepared statement for ${sql}`);
  }

  private name(key: string): string {
    return `${RESERVED_PREFIX}${this.generation}_${key}`;
  }
}

const EMPTY = Buffer.alloc(0);
