/**
 * Attacks: an overloaded operator on a user type, reached in every syntactic form PostgreSQL has for it, and
 * the type's operator classes, which sorting, grouping, hashing, joins, index scans, range input and the
 * planner's selectivity estimates call without any operator being written.
 *
 * The type `mytext` is a copy of text (its I/O functions are textin/textout); every operator and support
 * function on it writes to pwned (naming itself) before answering like text would. They are declared
 * IMMUTABLE, as an attacker would declare them: a classifier that reads the operator's function from the catalog
 * must not trust that (and PostgreSQL uses only non-volatile operators for merge and hash joins).
 *
 * Stopped: every form (42501: every operator symbol a statement uses, written or implied, is looked up in
 * the catalog; operator-family members of user types count where such values appear; 25006 for the rest).
 */
import t from 'tap';
import { sqlAttack, startLab, type Lab } from './harness.js';


const fn = (name: string, args: string, returns: string, label: string, body: string): string =>
  `CREATE FUNCTION ${name}(${args}) RETURNS ${returns} LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM evil('${label}'); RETURN ${body}; END $$;`;

const lab: Lab = await startLab(t, {
  kind: 'operators',
  setup: `
CREATE TYPE mytext;
CREATE FUNCTION mytext_in(cstring) RETURNS mytext LANGUAGE internal IMMUTABLE STRICT AS 'textin';
CREATE FUNCTION mytext_out(mytext) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'textout';
CREATE TYPE mytext (INPUT = mytext_in, OUTPUT = mytext_out, LIKE = text, CATEGORY = 'U', COLLATABLE = true);
CREATE CAST (mytext AS text) WITHOUT FUNCTION;
CREATE CAST (text AS mytext) WITHOUT FUNCTION AS ASSIGNMENT;
${fn('mytext_eq', 'a mytext, b mytext', 'boolean', 'operator =', 'a::text = b::text')}
${fn('mytext_ne', 'a mytext, b mytext', 'boolean', 'operator <>', 'a::text <> b::text')}
${fn('mytext_lt', 'a mytext, b mytext', 'boolean', 'operator <', 'a::text < b::text')}
${fn('mytext_le', 'a mytext, b mytext', 'boolean', 'operator <=', 'a::text <= b::text')}
${fn('mytext_gt', 'a mytext, b mytext', 'boolean', 'operator >', 'a::text > b::text')}
${fn('mytext_ge', 'a mytext, b mytext', 'boolean', 'operator >=', 'a::text >= b::text')}
${fn('mytext_like', 'a mytext, p text', 'boolean', 'operator ~~ (LIKE)', 'a::text LIKE p')}
${fn('mytext_notlike', 'a mytext, p text', 'boolean', 'operator !~~ (NOT LIKE)', 'a::text NOT LIKE p')}
${fn('mytext_ilike', 'a mytext, p text', 'boolean', 'operator ~~* (ILIKE)', 'a::text ILIKE p')}
${fn('mytext_regex', 'a mytext, p text', 'boolean', 'operator ~ (SIMILAR TO)', 'a::text ~ p')}
${fn('mytext_cmp', 'a mytext, b mytext', 'int', 'btree support function', 'CASE WHEN a::text < b::text THEN -1 WHEN a::text > b::text THEN 1 ELSE 0 END')}
${fn('mytext_hash', 'a mytext', 'int', 'hash support function', 'hashtext(a::text)')}
CREATE OPERATOR = (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_eq, COMMUTATOR = =, NEGATOR = <>,
  RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR <> (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_ne, COMMUTATOR = <>, NEGATOR = =,
  RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR < (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_lt, COMMUTATOR = >, NEGATOR = >=,
  RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR <= (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_le, COMMUTATOR = >=, NEGATOR = >,
  RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR > (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_gt, COMMUTATOR = <, NEGATOR = <=,
  RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR >= (LEFTARG = mytext, RIGHTARG = mytext, FUNCTION = mytext_ge, COMMUTATOR = <=, NEGATOR = <,
  RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR ~~ (LEFTARG = mytext, RIGHTARG = text, FUNCTION = mytext_like, RESTRICT = likesel, JOIN = likejoinsel);
CREATE OPERATOR !~~ (LEFTARG = mytext, RIGHTARG = text, FUNCTION = mytext_notlike, NEGATOR = ~~, RESTRICT = nlikesel, JOIN = nlikejoinsel);
CREATE OPERATOR ~~* (LEFTARG = mytext, RIGHTARG = text, FUNCTION = mytext_ilike, RESTRICT = iclikesel, JOIN = iclikejoinsel);
CREATE OPERATOR ~ (LEFTARG = mytext, RIGHTARG = text, FUNCTION = mytext_regex, RESTRICT = regexeqsel, JOIN = regexeqjoinsel);
CREATE OPERATOR CLASS mytext_btree_ops DEFAULT FOR TYPE mytext USING btree AS
  OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >, FUNCTION 1 mytext_cmp(mytext, mytext);
CREATE OPERATOR CLASS mytext_hash_ops DEFAULT FOR TYPE mytext USING hash AS
  OPERATOR 1 =, FUNCTION 1 mytext_hash(mytext);
CREATE TYPE myrange AS RANGE (SUBTYPE = mytext, SUBTYPE_OPCLASS = mytext_btree_ops);

CREATE TABLE u (id int, v mytext);
INSERT INTO u SELECT g, chr(97 + g % 3) FROM generate_series(1, 30) g;  -- a, b, c ten times each
CREATE TABLE u2 (id int, v mytext);
INSERT INTO u2 VALUES (1, 'a'), (2, 'c');
CREATE TABLE ui (id int, v mytext);
INSERT INTO ui SELECT g, 'k' || g FROM generate_series(1, 200) g;
CREATE INDEX ui_v ON ui (v);
-- Statistics on u: its most common values are what selectivity estimation compares with.
ANALYZE u, u2, ui;
`,
});

const on = (where: string): string => `SELECT id FROM u WHERE ${where}`;

// ───────────────────────────── forms that write the symbol (stopped today) ─────────────────────────────

sqlAttack(lab, 'a = b', on(`v = 'a'`));
sqlAttack(lab, 'a <> b', on(`v <> 'a'`));
sqlAttack(lab, 'a < b', on(`v < 'b'`));
sqlAttack(lab, '= ANY (array)', on(`v = ANY (ARRAY['a', 'b']::mytext[])`));
sqlAttack(lab, '= ANY (subquery)', on('v = ANY (SELECT v FROM u2)'));
sqlAttack(lab, '<> ALL (array)', on(`v <> ALL (ARRAY['a']::mytext[])`));
sqlAttack(lab, 'row comparison (v, id) = (..., ...)', on(`(v, id) = ('a'::mytext, 3)`));
sqlAttack(lab, 'ORDER BY ... USING <', 'SELECT id FROM u ORDER BY v USING <');

// ───────────────────────────── forms that do not write it ─────────────────────────────

sqlAttack(lab, 'IN (list)', on(`v IN ('a', 'b')`));
sqlAttack(lab, 'IN with one element (becomes a = b after parse analysis)', on(`v IN ('a')`));
sqlAttack(lab, 'NOT IN (list)', on(`v NOT IN ('a')`));
sqlAttack(lab, 'IN (subquery)', on('v IN (SELECT v FROM u2)'));
sqlAttack(lab, 'NULLIF', 'SELECT NULLIF(v, \'a\') FROM u');
sqlAttack(lab, 'IS DISTINCT FROM', on(`v IS DISTINCT FROM 'a'`));
sqlAttack(lab, 'IS NOT DISTINCT FROM', on(`v IS NOT DISTINCT FROM 'a'`));
sqlAttack(lab, 'LIKE', on(`v LIKE 'a%'`));
sqlAttack(lab, 'NOT LIKE', on(`v NOT LIKE 'a%'`));
sqlAttack(lab, 'ILIKE', on(`v ILIKE 'A%'`));
sqlAttack(lab, 'SIMILAR TO', on(`v SIMILAR TO 'a%'`));
sqlAttack(lab, 'BETWEEN', on(`v BETWEEN 'a' AND 'b'`));
sqlAttack(lab, 'BETWEEN SYMMETRIC', on(`v BETWEEN SYMMETRIC 'b' AND 'a'`));
sqlAttack(lab, 'CASE x WHEN', `SELECT CASE v WHEN 'a' THEN 1 ELSE 0 END FROM u`);
sqlAttack(lab, 'row IN (row, ...)', on(`ROW(v, id) IN (ROW('a'::mytext, 3))`));
sqlAttack(lab, 'JOIN USING (no operator written)', 'SELECT u.id FROM u JOIN u2 USING (v)');
sqlAttack(lab, 'NATURAL JOIN', 'SELECT * FROM (SELECT v FROM u) a NATURAL JOIN (SELECT v FROM u2) b');
sqlAttack(lab, 'merge join (forced with planner settings)', 'SET enable_hashjoin = off; SET enable_nestloop = off; SELECT u.id FROM u JOIN u2 USING (v)', {
});
sqlAttack(lab, 'hash join (forced with planner settings)', 'SET enable_mergejoin = off; SET enable_nestloop = off; SELECT u.id FROM u JOIN u2 USING (v)', {
});

// ───────────────────────────── operator classes ─────────────────────────────

sqlAttack(lab, 'ORDER BY', 'SELECT id FROM u ORDER BY v');
sqlAttack(lab, 'DISTINCT', 'SELECT DISTINCT v FROM u');
sqlAttack(lab, 'DISTINCT ON', 'SELECT DISTINCT ON (v) id FROM u ORDER BY v, id');
sqlAttack(lab, 'GROUP BY', 'SELECT count(*) FROM u GROUP BY v');
sqlAttack(lab, 'GROUP BY ROLLUP', 'SELECT count(*) FROM u GROUP BY ROLLUP (v)');
sqlAttack(lab, 'UNION', 'SELECT v FROM u UNION SELECT v FROM u2');
sqlAttack(lab, 'INTERSECT', 'SELECT v FROM u INTERSECT SELECT v FROM u2');
sqlAttack(lab, 'EXCEPT', 'SELECT v FROM u EXCEPT SELECT v FROM u2');
sqlAttack(lab, 'recursive CTE with UNION', 'WITH RECURSIVE r(v) AS (SELECT v FROM u2 UNION SELECT v FROM r) SELECT count(*) FROM r');
sqlAttack(lab, 'count(DISTINCT ...)', 'SELECT count(DISTINCT v) FROM u');
sqlAttack(lab, 'ORDER BY inside an aggregate', 'SELECT array_agg(v ORDER BY v) FROM u');
sqlAttack(lab, 'window PARTITION BY', 'SELECT row_number() OVER (PARTITION BY v) FROM u');
sqlAttack(lab, 'window ORDER BY', 'SELECT rank() OVER (ORDER BY v) FROM u');
sqlAttack(lab, 'GREATEST / LEAST', `SELECT greatest(v, 'b'), least(v, 'b') FROM u`);
sqlAttack(lab, 'index scan (btree support function; planner settings force it)', `SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id FROM ui WHERE v IN ('k7')`, {
});
sqlAttack(lab, 'range input compares its bounds with the subtype\'s btree function', `SELECT '[a,c]'::myrange`);
sqlAttack(lab, 'PREPARE alone runs range input (parse analysis of a literal)', `PREPARE pr AS SELECT '[a,c]'::myrange`, {
});

// ───────────────────────────── built-ins that call the type's equality ─────────────────────────────

sqlAttack(lab, 'array_position', `SELECT array_position(ARRAY['a', 'b']::mytext[], 'b'::mytext)`);
sqlAttack(lab, 'array @> array (built-in operator)', on(`ARRAY['a']::mytext[] @> ARRAY[v]`));

// ───────────────────────────── the planner ─────────────────────────────

sqlAttack(lab, 'plain EXPLAIN: BETWEEN estimates with < and >= on the most common values', `EXPLAIN SELECT id FROM u WHERE v BETWEEN 'a' AND 'b'`, {
});
sqlAttack(lab, 'plain EXPLAIN of a = b: the explained statement is not judged, and planning calls = on the most common values', `EXPLAIN SELECT id FROM u WHERE v = 'b'`, {
});
sqlAttack(lab, 'plain EXPLAIN: IN estimates each element with = on the most common values', `EXPLAIN SELECT id FROM u WHERE v IN ('b')`, {
});
