/**
 * A context rebuilt from what a classification asked (its ContextDependencies): classifying the same text
 * with it reproduces the classification without the original context, e.g. in a worker thread that only
 * received the recorded answers (they are plain JSON, prepared statements included).
 */
import type { ContextDependencies } from './analysis.js';
import { catalogKeyString, type CatalogAnswer, type CatalogKey } from './catalog.js';
import type { ClassifyContext, StatementInfo } from './types.js';

export function replayContext(standardConformingStrings: boolean, deps: ContextDependencies): ClassifyContext {
  const functions = new Map(deps.functions.map((f) => [f.name, f.answer]));
  const prepared = new Map<string, StatementInfo | undefined>(deps.prepared.map((p) => [p.name, p.statement]));
  const shadowed = new Map(deps.shadowed.map((s) => [`${s.kind}\u0000${s.name}`, s.answer]));
  const portals = new Map<string, StatementInfo | undefined>(deps.portals.map((p) => [p.name, p.statement]));
  const ctx: ClassifyContext = {
    standardConformingStrings,
    functionVolatility: (name) => functions.get(name),
    preparedStatement: (name) => prepared.get(name),
    portalStatement: (name) => portals.get(name),
    shadowedBuiltin: (name, kind) => shadowed.get(`${kind}\u0000${name}`) ?? false,
  };
  if (deps.catalog !== undefined) {
    const answers = new Map(deps.catalog.map((d) => [catalogKeyString(d.key), d.answer]));
    ctx.catalog = { lookup: <K extends CatalogKey>(key: K) => answers.get(catalogKeyString(key)) as CatalogAnswer<K> | undefined };
  }
  if (deps.parameterTypes !== undefined) ctx.parameterTypes = deps.parameterTypes;
  return ctx;
}
