/**
 * The schema catalog: what the server's catalog says about the functions, relations, operators and types a
 * statement reaches, for the classifier (src/sql/catalog.ts, src/sql/hidden.ts).
 *
 * - connection.ts: the catalog's own connection (never a client's transaction; search_path = '')
 * - queries.ts: the catalog queries
 * - store.ts: bounded, expiring answers
 * - schema-catalog.ts: lookups, resolve(), invalidate()
 * - this file: classifying with lookups until every answer is known
 */
import type { ClassifyResult } from '../../sql/types.js';
import type { SchemaCatalog } from './schema-catalog.js';

export { ServerSchemaCatalog, type SchemaCatalog, type SchemaCatalogOptions } from './schema-catalog.js';

/** The name the session knows the catalog by. */
export type FunctionCatalog = SchemaCatalog;

/**
 * Hidden code is read level by level (a view calls a function whose body uses a type ...): each round looks up
 * what the previous classification could not answer. After this many rounds what is still unknown stays
 * `unknown`.
 */
export const MAX_LOOKUP_ROUNDS = 12;

/**
 * Classifies, looks up what the classification asked for, and classifies again until nothing is left to look
 * up (or MAX_LOOKUP_ROUNDS). `first` is the first classification. A failing lookup ends the rounds: the last
 * result, whose unanswered parts are `unknown`, is returned, and `onError` is told why.
 */
export async function classifyWithCatalog(
  catalog: SchemaCatalog,
  classify: () => ClassifyResult | Promise<ClassifyResult>,
  first: ClassifyResult,
  onError: (err: Error) => void,
): Promise<ClassifyResult> {
  let result = first;
  let previous = '';
  let repeats = 0;
  for (let round = 0; round < MAX_LOOKUP_ROUNDS; round++) {
    const keys = result.unresolvedLookups;
    if (keys === undefined || keys.length === 0) return result;
    // The same keys again: an invalidate() may have dropped the answers on their way (ask once more), or the
    // catalog cannot answer them (stop: they stay unknown).
    const signature = JSON.stringify(keys);
    if (signature === previous && ++repeats >= 2) return result;
    previous = signature;
    try {
      await catalog.resolve(keys);
    } catch (err) {
      onError(err as Error);
      return result;
    }
    result = await classify();
  }
  return result;
}
