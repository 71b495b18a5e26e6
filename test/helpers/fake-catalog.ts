/**
 * A schema catalog for unit tests: answers the classifier's lookups (src/sql/catalog.ts) from objects
 * described in a few lines, the way the proxy's catalog answers them from a real server (path-independent
 * names, user-defined operators only, built-ins judged by name).
 */
import {
  catalogKeyString,
  FIRST_NORMAL_OID,
  type CatalogAnswer,
  type CatalogKey,
  type CatalogLookups,
  type DatabaseHazards,
  type FunctionFacts,
  type OperatorFacts,
  type RelationFacts,
  type TypeFacts,
} from '../../src/sql/catalog.js';
import { BUILTIN_FUNCTIONS, BUILTIN_OPERATORS } from '../../src/sql/builtin-functions.js';

let nextOid = FIRST_NORMAL_OID + 1000;
let nextBuiltinOid = 3000;

export function oid(): number {
  return nextOid++;
}

function builtinOid(): number {
  return nextBuiltinOid++;
}

function split(qualified: string): [string, string] {
  const dot = qualified.indexOf('.');
  return dot < 0 ? ['public', qualified] : [qualified.slice(0, dot), qualified.slice(dot + 1)];
}

/** A function in language sql; `body` is its source (or a whole BEGIN ATOMIC ... END with `atomic`). */
export function sqlFunction(qualified: string, body: string, extra: Partial<FunctionFacts> & { atomic?: boolean } = {}): FunctionFacts {
  const [schema, name] = split(qualified);
  const { atomic, ...rest } = extra;
  const definition = atomic
    ? `CREATE OR REPLACE FUNCTION ${schema}.${name}() RETURNS integer LANGUAGE sql\n${body}\n`
    : `CREATE OR REPLACE FUNCTION ${schema}.${name}() RETURNS integer LANGUAGE sql AS $function$${body}$function$\n`;
  return { oid: oid(), schema, name, kind: 'f', language: 'sql', volatility: 'v', securityDefiner: false, config: [], definition, defaults: null, types: [], ...rest };
}

export function plpgsqlFunction(qualified: string, body: string, extra: Partial<FunctionFacts> = {}): FunctionFacts {
  const [schema, name] = split(qualified);
  const returns = /\b(NEW|OLD|TG_OP)\b/.test(body) ? 'trigger' : /RETURN (QUERY|NEXT)/i.test(body) ? 'SETOF integer' : 'integer';
  const definition = `CREATE OR REPLACE FUNCTION ${schema}.${name}() RETURNS ${returns} LANGUAGE plpgsql AS $function$${body}$function$\n`;
  return { oid: oid(), schema, name, kind: 'f', language: 'plpgsql', volatility: 'v', securityDefiner: false, config: [], definition, defaults: null, types: [], ...extra };
}

export function nativeFunction(qualified: string, volatility: 'i' | 's' | 'v', extra: Partial<FunctionFacts> = {}): FunctionFacts {
  const [schema, name] = split(qualified);
  return { oid: oid(), schema, name, kind: 'f', language: 'c', volatility, securityDefiner: false, config: [], definition: null, defaults: null, types: [], ...extra };
}

export function builtinFunction(name: string, volatility: 'i' | 's' | 'v' = 'i'): FunctionFacts {
  return { oid: builtinOid(), schema: 'pg_catalog', name, kind: 'f', language: 'internal', volatility, securityDefiner: false, config: [], definition: null, defaults: null, types: [] };
}

export function relation(qualified: string, kind: string, extra: Partial<RelationFacts> = {}): RelationFacts {
  const [schema, name] = split(qualified);
  return { oid: schema === 'pg_catalog' ? builtinOid() : oid(), schema, name, kind, rowSecurity: false, policies: [], query: null, foreign: [], readExpressions: [], ...extra };
}

export function view(qualified: string, query: string): RelationFacts {
  return relation(qualified, 'v', { query });
}

export function domain(qualified: string, checks: string[], extra: Partial<TypeFacts> = {}): TypeFacts {
  const [schema, name] = split(qualified);
  return { oid: oid(), schema, name, kind: 'd', checks, parts: [], casts: [], ...extra };
}

export function type(qualified: string, kind: string, extra: Partial<TypeFacts> = {}): TypeFacts {
  const [schema, name] = split(qualified);
  return { oid: oid(), schema, name, kind, checks: [], parts: [], casts: [], ...extra };
}

export function operator(qualified: string, functions: FunctionFacts[]): OperatorFacts {
  const [schema, name] = split(qualified);
  return { oid: oid(), schema, name, functions };
}

/** Built-in type names the fake knows (others, unless defined, are `none`). */
const BUILTIN_TYPES = new Set([
  'int2', 'int4', 'int8', 'text', 'varchar', 'bpchar', 'numeric', 'bool', 'float8', 'date', 'timestamptz', 'timestamp',
  'interval', 'json', 'jsonb', 'regclass', 'oid', 'record', 'bytea', 'uuid', 'name', 'refcursor', 'xml',
]);

export interface FakeCatalogContents {
  functions?: FunctionFacts[];
  relations?: RelationFacts[];
  operators?: OperatorFacts[];
  types?: TypeFacts[];
  hazards?: DatabaseHazards;
}

export class FakeCatalog implements CatalogLookups {
  readonly asked: CatalogKey[] = [];
  functions: FunctionFacts[];
  relations: RelationFacts[];
  operators: OperatorFacts[];
  types: TypeFacts[];
  hazards: DatabaseHazards;
  /** Lookup kinds that answer undefined: not looked up yet. */
  unknownKinds = new Set<string>();
  private readonly builtinRelations = new Map<string, RelationFacts>();
  private readonly answers = new Map<string, unknown>();

  constructor(c: FakeCatalogContents = {}) {
    this.functions = c.functions ?? [];
    this.relations = c.relations ?? [];
    this.operators = c.operators ?? [];
    this.types = c.types ?? [];
    this.hazards = c.hazards ?? { opfamilies: [], casts: [] };
  }

  lookup<K extends CatalogKey>(key: K): CatalogAnswer<K> | undefined {
    this.asked.push(key);
    if (this.unknownKinds.has(key.kind)) return undefined;
    // Stable answers (as the proxy's cache gives them) until the contents change.
    const k = catalogKeyString(key);
    if (!this.answers.has(k)) this.answers.set(k, this.answer(key));
    return this.answers.get(k) as CatalogAnswer<K>;
  }

  /** Call after changing the contents: later lookups answer afresh (new objects, like a refreshed cache). */
  changed(): void {
    this.answers.clear();
  }

  private answer(key: CatalogKey): unknown {
    switch (key.kind) {
      case 'names': {
        if (key.of === 'function') {
          if (this.functions.some((f) => f.name === key.name && f.oid >= FIRST_NORMAL_OID)) return 'lookup';
          return BUILTIN_FUNCTIONS.has(key.name) || this.functions.some((f) => f.name === key.name) ? 'trusted' : 'none';
        }
        if (key.of === 'operator') {
          if (this.operators.some((o) => o.name === key.name)) return 'lookup';
          return BUILTIN_OPERATORS.has(key.name) ? 'trusted' : 'none';
        }
        const user = this.types.filter((t) => t.name === key.name);
        if (user.some((t) => t.checks.length > 0 || t.parts.length > 0 || t.casts.length > 0 || t.kind === 'd' || t.kind === 'c')) return 'lookup';
        // Every table has a row type of its name.
        return user.length > 0 || BUILTIN_TYPES.has(key.name) || this.relations.some((r) => r.name === key.name) ? 'trusted' : 'none';
      }
      case 'functions':
        return this.functions.filter((f) => f.name === key.name && schemaMatches(key.schema, f.schema, false));
      case 'function':
        return this.functions.find((f) => f.oid === key.oid) ?? null;
      case 'relations': {
        const found = this.relations.filter((r) => r.name === key.name && schemaMatches(key.schema, r.schema, true));
        // Built-in catalogs exist without being listed.
        if (found.length === 0 && (key.schema === null || key.schema === 'pg_catalog') && key.name.startsWith('pg_')) {
          let builtin = this.builtinRelations.get(key.name);
          if (builtin === undefined) this.builtinRelations.set(key.name, (builtin = relation(`pg_catalog.${key.name}`, 'v')));
          return [builtin];
        }
        return found;
      }
      case 'operators':
        return this.operators.filter((o) => o.name === key.name && schemaMatches(key.schema === 'pg_catalog' ? 'pg_catalog' : key.schema, o.schema, false));
      case 'types':
        return this.types.filter((t) => t.name === key.name && schemaMatches(key.schema, t.schema, true));
      case 'type':
        return this.types.find((t) => t.oid === key.oid) ?? null;
      case 'hazards':
        return this.hazards;
    }
  }
}

function schemaMatches(wanted: string | null, actual: string, temp: boolean): boolean {
  const isTemp = /^pg_temp_\d+$/.test(actual);
  if (wanted === null) return temp || !isTemp;
  if (wanted === 'pg_temp') return isTemp;
  return wanted === actual;
}
