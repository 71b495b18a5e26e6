/**
 * Repeated JSON on its way to the writer: a statement's classification and an allow decision are the same
 * for every execution of a statement (cached classifications are shared, frozen objects), so they are
 * serialised once and travel once, as a numbered dictionary entry; records carry the number. Past
 * DICTIONARY_LIMIT entries, JSON travels inline.
 */
import type { Decision } from '../rules/types.js';
import type { StatementInfo } from '../sql/types.js';
import type { JsonRef } from './records.js';

const DICTIONARY_LIMIT = 50_000;

interface ClassEntry {
  command: string;
  tables: unknown;
  flags: unknown;
  functions: unknown;
  ref: JsonRef;
}

export class Dictionary {
  private readonly entries = new Map<number, string>();
  /** Entries not yet sent: [id, json, id, json ...]. */
  private fresh: (number | string)[] = [];
  /** Allow decisions by the default rule, by file (their JSON does not depend on the reason). */
  private readonly defaultAllow = new Map<string | null, JsonRef>();
  private readonly classCache = new WeakMap<object, ClassEntry>();
  private readonly allowCache = new Map<string, { rule: string | null; file: string | null; ref: JsonRef }>();

  /** The statement's classification as JSON, or the number of a dictionary entry holding it. */
  classification(s: StatementInfo): JsonRef {
    const key = s.classes as unknown as object;
    const hit = this.classCache.get(key);
    if (hit !== undefined && hit.tables === s.tables && hit.flags === s.flags && hit.command === s.command && hit.functions === s.functions) return hit.ref;
    const json = JSON.stringify({
      command: s.command,
      classes: s.classes,
      tables: s.tables.map((t) => ({ schema: t.schema, name: t.name, access: t.access })),
      ...(s.flags.length > 0 ? { flags: s.flags } : {}),
      ...(s.functions.length > 0 ? { functions: s.functions } : {}),
    });
    // Only frozen (cached, shared) classifications are remembered: they cannot change under us.
    if (!Object.isFrozen(key) || !Object.isFrozen(s.tables)) return json;
    const ref = this.define(json);
    this.classCache.set(key, { command: s.command, tables: s.tables, flags: s.flags, functions: s.functions, ref });
    return ref;
  }

  /** A decision as JSON, or the number of a dictionary entry holding it (allow decisions repeat). */
  decision(d: Decision): JsonRef {
    if (d.action !== 'allow') return decisionJson(d);
    if (d.rule === null) {
      const ref = this.defaultAllow.get(d.file);
      if (ref !== undefined) return ref;
      const made = this.define(decisionJson(d));
      if (this.defaultAllow.size < 100) this.defaultAllow.set(d.file, made);
      return made;
    }
    const hit = this.allowCache.get(d.reason);
    if (hit !== undefined && hit.rule === d.rule && hit.file === d.file) return hit.ref;
    const ref = this.define(decisionJson(d));
    if (this.allowCache.size >= 10_000) this.allowCache.clear();
    this.allowCache.set(d.reason, { rule: d.rule, file: d.file, ref });
    return ref;
  }

  /** Entries defined since the last call: they go with the next batch. */
  takeFresh(): (number | string)[] | null {
    if (this.fresh.length === 0) return null;
    const fresh = this.fresh;
    this.fresh = [];
    return fresh;
  }

  /** Every entry, for a new writer (it knows none). */
  all(): (number | string)[] {
    return [...this.entries].flat();
  }

  private define(json: string): JsonRef {
    if (this.entries.size >= DICTIONARY_LIMIT) return json;
    const id = this.entries.size + 1;
    this.entries.set(id, json);
    this.fresh.push(id, json);
    return id;
  }
}

function decisionJson(d: Decision): string {
  if (d.action === 'allow') {
    // An allow by the default says nothing its rule and file do not: the trail stays smaller without it.
    return JSON.stringify(d.rule === null ? { action: d.action, rule: null, file: d.file } : { action: d.action, rule: d.rule, file: d.file, reason: d.reason });
  }
  return JSON.stringify({
    action: d.action,
    rule: d.rule,
    file: d.file,
    reason: d.reason,
    message: d.message,
    statement_index: d.statementIndex,
    ...(d.signals && d.signals.length ? { signals: d.signals } : {}),
    ...(d.factors ? { factors: d.factors } : {}),
    ...(d.action === 'step-up'
      ? {
          timeout_ms: d.timeoutMs,
          grant_ms: d.grantMs,
          grant_scope: d.grantScope,
          ...(d.approvers ? { approvers: { groups: [...d.approvers.groups], count: d.approvers.count } } : {}),
          ...(d.stepUps
            ? {
                step_ups: d.stepUps.map((s) => ({
                  rule: s.rule,
                  file: s.file,
                  statement_index: s.statementIndex,
                  ...(s.approvers ? { approvers: { groups: [...s.approvers.groups], count: s.approvers.count } } : {}),
                })),
              }
            : {}),
        }
      : {}),
  });
}
