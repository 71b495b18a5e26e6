/** Quoting for SQL text stepgate writes itself (to classify what a message amounts to). */

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A standard string literal (standard_conforming_strings on: backslashes are plain characters). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
