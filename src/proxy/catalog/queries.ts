/**
 * The catalog queries. Each returns one row with one JSON text: the facts src/sql/catalog.ts describes, built
 * on the server (jsonb_build_object) so the client only parses JSON. Schemas and names are passed as two
 * parallel text[] parameters, never joined into one string.
 *
 * Names are matched path-independently (see CatalogLookups): an unqualified function or operator may be in
 * any schema but the temporary ones (PostgreSQL never looks there for them); an unqualified relation or type
 * in any schema, temporary ones (any session's pg_temp_N) included; `pg_temp` qualified means any temporary
 * schema. Every name is written schema-qualified (pg_catalog.x): the connection's search_path is empty.
 *
 * Supported servers: PostgreSQL 12 and later (prokind, attgenerated); prosqlbody (BEGIN ATOMIC) from 14.
 */

/** Bodies larger than this are not fetched: the function is `unknown` (too large to read). */
export const MAX_DEFINITION_BYTES = 256 * 1024;

const FUNCTION_SCHEMA = `CASE WHEN w.schema IS NULL THEN n.nspname !~ '^pg_(toast_)?temp_'
  WHEN w.schema = 'pg_temp' THEN n.nspname ~ '^pg_temp_' ELSE n.nspname = w.schema END`;
const RELATION_SCHEMA = `CASE WHEN w.schema IS NULL THEN true
  WHEN w.schema = 'pg_temp' THEN n.nspname ~ '^pg_temp_' ELSE n.nspname = w.schema END`;

/**
 * The facts of the function p (joined with its namespace n and language l). Built-ins (OID below 16384) get
 * only their name and volatility: stepgate judges them by its own tables.
 */
function functionFacts(p: string, n: string, l: string, version: number, withAggregate: boolean): string {
  const readable = `${p}.oid >= 16384 AND ${p}.prokind IN ('f', 'p') AND ${l}.lanname IN ('sql', 'plpgsql')`;
  const size =
    version >= 140000
      ? `pg_catalog.octet_length(${p}.prosrc) + coalesce(pg_catalog.octet_length(${p}.prosqlbody::pg_catalog.text), 0)`
      : `pg_catalog.octet_length(${p}.prosrc)`;
  const aggregate = withAggregate
    ? `, 'aggregate', CASE WHEN ${p}.prokind = 'a' AND ${p}.oid >= 16384 THEN (
        SELECT coalesce(pg_catalog.jsonb_agg(${functionFacts('sp', 'sn', 'sl', version, false)}), '[]')
        FROM pg_catalog.pg_aggregate ag
        CROSS JOIN LATERAL pg_catalog.unnest(ARRAY[ag.aggtransfn::pg_catalog.oid, ag.aggfinalfn::pg_catalog.oid,
          ag.aggcombinefn::pg_catalog.oid, ag.aggserialfn::pg_catalog.oid, ag.aggdeserialfn::pg_catalog.oid,
          ag.aggmtransfn::pg_catalog.oid, ag.aggminvtransfn::pg_catalog.oid, ag.aggmfinalfn::pg_catalog.oid,
          (SELECT so.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator so WHERE so.oid = ag.aggsortop)]) AS s(fn)
        JOIN pg_catalog.pg_proc sp ON sp.oid = s.fn
        JOIN pg_catalog.pg_namespace sn ON sn.oid = sp.pronamespace
        JOIN pg_catalog.pg_language sl ON sl.oid = sp.prolang
        WHERE ag.aggfnoid = ${p}.oid AND s.fn <> 0) END`
    : '';
  return `pg_catalog.jsonb_build_object(
    'oid', ${p}.oid::pg_catalog.int8, 'schema', ${n}.nspname, 'name', ${p}.proname, 'kind', ${p}.prokind,
    'language', ${l}.lanname, 'volatility', ${p}.provolatile, 'securityDefiner', ${p}.prosecdef,
    'config', coalesce(pg_catalog.to_jsonb(${p}.proconfig), '[]'),
    'definition', CASE WHEN ${readable} AND ${size} <= ${MAX_DEFINITION_BYTES} THEN pg_catalog.pg_get_functiondef(${p}.oid) END,
    'tooLarge', ${readable} AND ${size} > ${MAX_DEFINITION_BYTES},
    'defaults', CASE WHEN ${p}.oid >= 16384 THEN pg_catalog.pg_get_expr(${p}.proargdefaults, 0) END,
    'types', (SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT t::pg_catalog.int8), '[]')
      FROM pg_catalog.unnest(coalesce(${p}.proallargtypes, ${p}.proargtypes::pg_catalog.oid[]) || ${p}.prorettype) AS t
      JOIN pg_catalog.pg_type ty ON ty.oid = t
      WHERE ${p}.oid >= 16384 AND t >= 16384 AND (ty.typtype IN ('d', 'c', 'r', 'm') OR ty.typelem >= 16384))${aggregate})`;
}

/** Facts of the function with OID `expr` (a subquery), or SQL NULL. */
function functionByOidFacts(expr: string, version: number): string {
  return `(SELECT ${functionFacts('fp', 'fn', 'fl', version, true)} FROM pg_catalog.pg_proc fp
    JOIN pg_catalog.pg_namespace fn ON fn.oid = fp.pronamespace JOIN pg_catalog.pg_language fl ON fl.oid = fp.prolang
    WHERE fp.oid = ${expr})`;
}

/** Which names may be user-defined: {functions: {name: user?}, operators: {...}, types: {name: runs code on coercion?}}. */
export function namesQuery(): string {
  return `SELECT pg_catalog.jsonb_build_object(
    'functions', (SELECT coalesce(pg_catalog.jsonb_object_agg(proname, usr), '{}') FROM (
      SELECT p.proname, pg_catalog.bool_or(p.oid >= 16384) AS usr FROM pg_catalog.pg_proc p GROUP BY p.proname) f),
    'operators', (SELECT coalesce(pg_catalog.jsonb_object_agg(oprname, usr), '{}') FROM (
      SELECT o.oprname, pg_catalog.bool_or(o.oid >= 16384) AS usr FROM pg_catalog.pg_operator o GROUP BY o.oprname) o),
    'types', (SELECT coalesce(pg_catalog.jsonb_object_agg(typname, code), '{}') FROM (
      SELECT t.typname, pg_catalog.bool_or(
        (t.oid >= 16384 AND t.typtype NOT IN ('e', 'p') AND NOT (t.typtype = 'b' AND t.typelem = 0))
        OR EXISTS (SELECT FROM pg_catalog.pg_cast c WHERE c.casttarget = t.oid AND c.oid >= 16384 AND c.castfunc <> 0)
      ) AS code FROM pg_catalog.pg_type t GROUP BY t.typname) t)
  )::pg_catalog.text`;
}

/** Functions by (schema, name): $1 schemas (NULL: unqualified), $2 names. One JSON array per pair, in order. */
export function functionsQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_agg((
      SELECT coalesce(pg_catalog.jsonb_agg(${functionFacts('p', 'n', 'l', version, true)} ORDER BY p.oid), '[]')
      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
      WHERE p.proname = w.name AND ${FUNCTION_SCHEMA}) ORDER BY w.i)::pg_catalog.text
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS w(schema, name, i)`;
}

/** Functions by OID: $1 int8[]. One value (facts or null) per OID, in order. */
export function functionOidsQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_agg(${functionByOidFacts('w.oid::pg_catalog.oid', version)} ORDER BY w.i)::pg_catalog.text
    FROM pg_catalog.unnest($1::pg_catalog.int8[]) WITH ORDINALITY AS w(oid, i)`;
}

/** Relations by (schema, name). Built-ins get only their names and kind. */
export function relationsQuery(version: number): string {
  const virtual = version >= 180000 ? `a.attgenerated = 'v'` : 'false';
  return `SELECT pg_catalog.jsonb_agg((
      SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'oid', c.oid::pg_catalog.int8, 'schema', n.nspname, 'name', c.relname, 'kind', c.relkind,
        'rowSecurity', c.relrowsecurity AND c.oid >= 16384,
        'policies', CASE WHEN c.relrowsecurity AND c.oid >= 16384 THEN (
          SELECT coalesce(pg_catalog.jsonb_agg(e), '[]') FROM pg_catalog.pg_policy pol
          CROSS JOIN LATERAL (VALUES (pg_catalog.pg_get_expr(pol.polqual, pol.polrelid)),
                                     (pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid))) AS v(e)
          WHERE pol.polrelid = c.oid AND e IS NOT NULL) ELSE '[]' END,
        'query', CASE WHEN c.relkind = 'v' AND c.oid >= 16384 THEN pg_catalog.pg_get_viewdef(c.oid) END,
        'foreign', CASE WHEN c.oid < 16384 THEN '[]' ELSE (
          WITH RECURSIVE d(oid) AS (
            SELECT c.oid
            UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN d ON i.inhparent = d.oid)
          SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT fw.fdwname), '[]') FROM d
          JOIN pg_catalog.pg_foreign_table ft ON ft.ftrelid = d.oid
          JOIN pg_catalog.pg_foreign_server fs ON fs.oid = ft.ftserver
          JOIN pg_catalog.pg_foreign_data_wrapper fw ON fw.oid = fs.srvfdw) END,
        'readExpressions', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)), '[]')
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
          WHERE a.attrelid = c.oid AND c.oid >= 16384 AND ${virtual}),
        'write', CASE WHEN c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'f') THEN pg_catalog.jsonb_build_object(
          'triggers', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('fn', ${functionByOidFacts('tg.tgfoid', version)},
              'definition', pg_catalog.pg_get_triggerdef(tg.oid))), '[]')
            FROM pg_catalog.pg_trigger tg WHERE tg.tgrelid = c.oid AND NOT tg.tgisinternal AND tg.tgenabled <> 'D'),
          'rules', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.pg_get_ruledef(rw.oid)), '[]') FROM pg_catalog.pg_rewrite rw
            WHERE rw.ev_class = c.oid AND rw.ev_type <> '1' AND rw.ev_enabled <> 'D'),
          'expressions', (SELECT coalesce(pg_catalog.jsonb_agg(x.e), '[]') FROM (
              SELECT pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) AS e FROM pg_catalog.pg_attrdef ad WHERE ad.adrelid = c.oid
              UNION ALL SELECT pg_catalog.pg_get_expr(co.conbin, co.conrelid) FROM pg_catalog.pg_constraint co
                WHERE co.conrelid = c.oid AND co.contype = 'c') AS x),
          'types', (SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT a.atttypid::pg_catalog.int8), '[]') FROM pg_catalog.pg_attribute a
            JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid >= 16384
              AND (ty.typtype IN ('d', 'c', 'r', 'm') OR ty.typelem >= 16384)),
          'indexes', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.pg_get_indexdef(ix.indexrelid)), '[]') FROM pg_catalog.pg_index ix
            WHERE ix.indrelid = c.oid AND (ix.indexprs IS NOT NULL OR ix.indpred IS NOT NULL))) END
      ) ORDER BY c.oid), '[]')
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname = w.name AND ${RELATION_SCHEMA}) ORDER BY w.i)::pg_catalog.text
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS w(schema, name, i)`;
}

/** User-defined operators (OID >= 16384) by (schema, symbol), with their functions' facts. */
export function operatorsQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_agg((
      SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'oid', o.oid::pg_catalog.int8, 'schema', n.nspname, 'name', o.oprname,
        'functions', (SELECT coalesce(pg_catalog.jsonb_agg(${functionByOidFacts('f.fn', version)}), '[]')
          FROM (SELECT DISTINCT fn FROM pg_catalog.unnest(ARRAY[o.oprcode::pg_catalog.oid, o.oprrest::pg_catalog.oid,
            o.oprjoin::pg_catalog.oid,
            (SELECT x.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator x WHERE x.oid = o.oprcom),
            (SELECT x.oprcode::pg_catalog.oid FROM pg_catalog.pg_operator x WHERE x.oid = o.oprnegate)]) AS fn
            WHERE fn IS NOT NULL AND fn <> 0) f)
      ) ORDER BY o.oid), '[]')
      FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
      WHERE o.oprname = w.name AND o.oid >= 16384 AND ${FUNCTION_SCHEMA}) ORDER BY w.i)::pg_catalog.text
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS w(schema, name, i)`;
}

function typeFacts(t: string, n: string, version: number): string {
  return `pg_catalog.jsonb_build_object(
    'oid', ${t}.oid::pg_catalog.int8, 'schema', ${n}.nspname, 'name', ${t}.typname, 'kind', ${t}.typtype,
    'checks', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.pg_get_expr(co.conbin, 0)), '[]') FROM pg_catalog.pg_constraint co
      WHERE co.contypid = ${t}.oid AND co.contype = 'c' AND co.conbin IS NOT NULL),
    'parts', (SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT x::pg_catalog.int8), '[]') FROM (
        SELECT ${t}.typbasetype AS x UNION ALL SELECT ${t}.typelem
        UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a WHERE a.attrelid = ${t}.typrelid AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = ${t}.oid
        UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = ${t}.oid) AS p WHERE x >= 16384),
    'casts', (SELECT coalesce(pg_catalog.jsonb_agg(${functionByOidFacts('ca.castfunc', version)}), '[]') FROM pg_catalog.pg_cast ca
      WHERE ca.casttarget = ${t}.oid AND ca.oid >= 16384 AND ca.castfunc <> 0))`;
}

/** Types by (schema, name). */
export function typesQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_agg((
      SELECT coalesce(pg_catalog.jsonb_agg(${typeFacts('t', 'n', version)} ORDER BY t.oid), '[]')
      FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
      WHERE t.typname = w.name AND ${RELATION_SCHEMA}) ORDER BY w.i)::pg_catalog.text
    FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS w(schema, name, i)`;
}

/** Types by OID: $1 int8[]. */
export function typeOidsQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_agg((SELECT ${typeFacts('t', 'n', version)} FROM pg_catalog.pg_type t
      JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = w.oid::pg_catalog.oid) ORDER BY w.i)::pg_catalog.text
    FROM pg_catalog.unnest($1::pg_catalog.int8[]) WITH ORDINALITY AS w(oid, i)`;
}

/** The database-wide hazards: user-defined operator-family members and implicit/assignment casts with functions. */
export function hazardsQuery(version: number): string {
  return `SELECT pg_catalog.jsonb_build_object(
    'opfamilies', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'family', pg_catalog.format('%s.%s (%s)', famns.nspname, fam.opfname, am.amname), 'fn', ${functionByOidFacts('m.fn', version)},
        'builtinTypes', m.builtin_types)), '[]')
      FROM (SELECT family, fn, pg_catalog.bool_and(builtin_types) AS builtin_types FROM (
          SELECT ap.amprocfamily AS family, ap.amproc::pg_catalog.oid AS fn,
              ap.amproclefttype < 16384 AND ap.amprocrighttype < 16384 AS builtin_types
            FROM pg_catalog.pg_amproc ap WHERE ap.oid >= 16384
          UNION ALL SELECT ao.amopfamily, o.oprcode::pg_catalog.oid, ao.amoplefttype < 16384 AND ao.amoprighttype < 16384
            FROM pg_catalog.pg_amop ao JOIN pg_catalog.pg_operator o ON o.oid = ao.amopopr WHERE ao.oid >= 16384) AS members
          GROUP BY family, fn) AS m
      JOIN pg_catalog.pg_opfamily fam ON fam.oid = m.family JOIN pg_catalog.pg_namespace famns ON famns.oid = fam.opfnamespace
      JOIN pg_catalog.pg_am am ON am.oid = fam.opfmethod
      WHERE m.fn <> 0),
    'casts', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
        'source', pg_catalog.format_type(ca.castsource, NULL), 'target', pg_catalog.format_type(ca.casttarget, NULL),
        'fn', ${functionByOidFacts('ca.castfunc', version)}, 'builtinTypes', ca.castsource < 16384 AND ca.casttarget < 16384)), '[]')
      FROM pg_catalog.pg_cast ca WHERE ca.oid >= 16384 AND ca.castcontext IN ('i', 'a') AND ca.castfunc <> 0)
  )::pg_catalog.text`;
}

/** FunctionCall messages name a function by OID. */
export const OID_NAME_SQL = `SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = $1::pg_catalog.oid`;
