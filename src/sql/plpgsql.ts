/**
 * What a PL/pgSQL function runs, read from PL/pgSQL's own parse tree (libpg-query's parsePlPgSQL of the
 * function's CREATE FUNCTION text): every embedded SQL statement and expression, the declared variable types
 * (assigning to a domain-typed variable runs the domain's checks), and what stepgate cannot see (EXECUTE of
 * a string, transaction control in procedures).
 *
 * Expressions come as text with a parse mode (PostgreSQL's RawParseMode): 0 a whole statement, 2 an
 * expression (read as `SELECT expr`), 3-5 an assignment `target := expr` (both sides are evaluated:
 * subscripts of the target too).
 */
import { assignmentParts } from './parser.js';
import type { AnyNode } from './walker.js';

export interface PlpgsqlContents {
  /** SQL texts to classify as statements of the function. */
  texts: string[];
  /** Declared types of variables, as written (`public.posint`, `int[]`, `t%rowtype`). */
  types: string[];
  /** Why some of it runs SQL stepgate cannot see (EXECUTE ...); empty when none. */
  dynamic: string[];
  /** Set when it commits or rolls back (procedures). */
  transactionControl: boolean;
  /** Pieces that could not be read. */
  errors: string[];
}

/** Statement nodes that run a query built at run time. */
const DYNAMIC_STATEMENTS: Record<string, string> = {
  PLpgSQL_stmt_dynexecute: 'EXECUTE runs SQL built at run time',
  PLpgSQL_stmt_dynfors: 'FOR ... IN EXECUTE runs SQL built at run time',
};

export function plpgsqlContents(tree: AnyNode): PlpgsqlContents {
  const out: PlpgsqlContents = { texts: [], types: [], dynamic: [], transactionControl: false, errors: [] };
  // Iterative: a deeply nested function body must not exhaust the stack.
  const stack: unknown[] = [tree];
  while (stack.length > 0) {
    const value = stack.pop();
    if (value === null || typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push(value[i]);
      continue;
    }
    const o = value as AnyNode;
    for (const key in o) {
      const v = o[key];
      if (key === 'PLpgSQL_expr') {
        expression(v as AnyNode, out);
        continue;
      }
      if (key === 'PLpgSQL_type') {
        const t = (v as AnyNode).typname;
        if (typeof t === 'string') out.types.push(t);
        continue;
      }
      const dynamic = DYNAMIC_STATEMENTS[key];
      if (dynamic !== undefined) out.dynamic.push(dynamic);
      if ((key === 'PLpgSQL_stmt_open' || key === 'PLpgSQL_stmt_return_query') && (v as AnyNode | null)?.dynquery !== undefined) {
        out.dynamic.push(key === 'PLpgSQL_stmt_open' ? 'OPEN ... FOR EXECUTE runs SQL built at run time' : 'RETURN QUERY EXECUTE runs SQL built at run time');
      }
      if (key === 'PLpgSQL_stmt_commit' || key === 'PLpgSQL_stmt_rollback') out.transactionControl = true;
      if (v !== null && typeof v === 'object') stack.push(v);
    }
  }
  return out;
}

function expression(expr: AnyNode, out: PlpgsqlContents): void {
  const query = expr.query;
  if (typeof query !== 'string') return;
  const mode = (expr.parseMode as number | undefined) ?? 0;
  if (mode === 0) {
    out.texts.push(query);
  } else if (mode === 2) {
    out.texts.push(`SELECT ${query}`);
  } else if (mode >= 3 && mode <= 5) {
    const parts = assignmentParts(query);
    if (parts === null) {
      out.errors.push(`an assignment stepgate cannot read: ${query.slice(0, 80)}`);
      return;
    }
    // The target's subscripts are expressions too (`a[f()] := 1`).
    out.texts.push(`SELECT ${parts.target}`, `SELECT ${parts.value}`);
  } else {
    out.errors.push(`an expression of an unknown kind (${mode})`);
  }
}
