/**
 * Attacks on stepgate's idea of which statement a portal runs. Protocol portals and SQL cursors are one
 * namespace in PostgreSQL: SQL CLOSE, CLOSE ALL, ROLLBACK TO SAVEPOINT and PL/pgSQL CLOSE drop portals
 * that Bind created, SQL FETCH and MOVE (and PL/pgSQL FETCH) run them, and a function may open a cursor that
 * SQL FETCH then runs. And Parse and Bind run code themselves (parse analysis of literals, parameter input
 * with domain checks): a statement the rules deny must have no effect at all, not even from its Parse or Bind.
 *
 * The payload here is called by name (`SELECT evil(...)` is procedural and refused when stepgate judges it):
 * each attack is about stepgate not judging it, or judging another statement instead.
 *
 * Stopped: every attack. Protocol portals and SQL cursors are one namespace in stepgate's registry (CLOSE,
 * CLOSE ALL, ROLLBACK TO SAVEPOINT, FETCH and MOVE are followed; a name stepgate does not know is unknown); a
 * statement the rules would refuse is judged at its Parse, so neither its Parse nor its Bind reach the server.
 *
 * Not an attack: Execute of a suspended portal after its statement was closed and parsed again: the portal
 * keeps its own plan, so the server continues the old query (no direct proof is possible); the attack needs
 * the portal itself replaced, which is the CLOSE variant below.
 */
import t from 'tap';
import { attack, lookup, m, startLab, type Conn, type Lab } from './harness.js';


const lab: Lab = await startLab(t, {
  kind: 'portals',
  setup: `
CREATE DOMAIN d_evil AS int CHECK (evil_bool('domain check'));
CREATE TABLE victim_rows (id int);
INSERT INTO victim_rows VALUES (1), (2), (3);
CREATE FUNCTION close_portal(c refcursor) RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN CLOSE c; RETURN 1; END $$;
CREATE FUNCTION fetch_portal(c refcursor) RETURNS int LANGUAGE plpgsql STABLE AS $$
DECLARE r record; BEGIN FETCH c INTO r; RETURN 1; END $$;
CREATE FUNCTION open_cursor() RETURNS refcursor LANGUAGE plpgsql STABLE AS $$
DECLARE c refcursor := 'fn_cursor'; BEGIN OPEN c FOR SELECT evil('cursor opened by a STABLE function'); RETURN c; END $$;
`,
});
const domainOid = Number(await lookup(lab, 'd_evil', `SELECT 'd_evil'::regtype::oid`));

const EVIL = (label: string): string => `SELECT evil('${label}')`;

/** Binds portal `name` to SELECT 1 and runs it, so stepgate has released it. */
async function releasedSelectOne(c: Conn, name: string): Promise<void> {
  await c.send(m.parse('', 'SELECT 1'), m.bind(name, ''), m.execute(name), m.sync());
}

/** Binds portal `name` to the payload and executes it. */
async function rebindEvil(c: Conn, name: string, label: string): Promise<void> {
  await c.send(m.parse('', EVIL(label)), m.bind(name, ''), m.execute(name), m.sync());
}

// ───────────────────────────── portals dropped behind stepgate's back ─────────────────────────────

attack(lab, {
  name: 'SQL CLOSE of a released portal, then Bind of the same name to a refused statement',
  run: async (c) => {
    await c.query('BEGIN');
    await releasedSelectOne(c, 'c');
    await c.query('CLOSE c');
    await rebindEvil(c, 'c', 'portal rebound after SQL CLOSE');
    await c.query('COMMIT');
  },
});
attack(lab, {
  name: 'SQL CLOSE ALL, then Bind of the same name to a refused statement',
  run: async (c) => {
    await c.query('BEGIN');
    await releasedSelectOne(c, 'c');
    await c.query('CLOSE ALL');
    await rebindEvil(c, 'c', 'portal rebound after CLOSE ALL');
    await c.query('COMMIT');
  },
});
attack(lab, {
  name: 'suspended portal (Execute with a row limit), SQL CLOSE, its statement name parsed again, portal rebound',
  run: async (c) => {
    await c.query('BEGIN');
    await c.send(m.parse('s', 'SELECT g FROM generate_series(1, 3) g'), m.bind('p', 's'), m.execute('p', 1), m.sync());
    await c.query('CLOSE p');
    await c.send(m.close('S', 's'), m.parse('s', EVIL('suspended portal replaced')), m.bind('p', 's'), m.execute('p', 0), m.sync());
    await c.query('COMMIT');
  },
});
attack(lab, {
  name: 'ROLLBACK TO SAVEPOINT drops a portal bound after the savepoint, then Bind of the same name',
  run: async (c) => {
    await c.queries('BEGIN', 'SAVEPOINT s');
    await releasedSelectOne(c, 'c');
    await c.query('ROLLBACK TO SAVEPOINT s');
    await rebindEvil(c, 'c', 'portal rebound after ROLLBACK TO SAVEPOINT');
    await c.query('COMMIT');
  },
});
attack(lab, {
  name: 'a STABLE PL/pgSQL function closes the portal (CLOSE of a refcursor with its name), then Bind of the same name',
  run: async (c) => {
    await c.query('BEGIN');
    await releasedSelectOne(c, 'c');
    await c.query(`SELECT close_portal('c')`);
    await rebindEvil(c, 'c', 'portal rebound after a PL/pgSQL CLOSE');
    await c.query('COMMIT');
  },
});
attack(lab, {
  name: 'portal name reused in the next transaction',
  run: async (c) => {
    await c.query('BEGIN');
    await releasedSelectOne(c, 'c');
    await c.queries('COMMIT', 'BEGIN');
    await rebindEvil(c, 'c', 'portal name reused in the next transaction');
    await c.query('COMMIT');
  },
});

// ───────────────────────────── portals run by SQL ─────────────────────────────

attack(lab, {
  name: 'SQL FETCH of a portal that Bind created and nobody executed',
  run: async (c) => {
    await c.query('BEGIN');
    await c.send(m.parse('', EVIL('Bind-created portal run by SQL FETCH')), m.bind('p', ''), m.sync());
    await c.queries('FETCH ALL p', 'COMMIT');
  },
});
attack(lab, {
  name: 'SQL MOVE of a portal that Bind created and nobody executed',
  run: async (c) => {
    await c.query('BEGIN');
    await c.send(m.parse('', EVIL('Bind-created portal run by SQL MOVE')), m.bind('p', ''), m.sync());
    await c.queries('MOVE ALL p', 'COMMIT');
  },
});
attack(lab, {
  name: 'a STABLE PL/pgSQL function FETCHes from a portal that Bind created',
  run: async (c) => {
    await c.query('BEGIN');
    await c.send(m.parse('', EVIL('Bind-created portal run by a PL/pgSQL FETCH')), m.bind('p', ''), m.sync());
    await c.queries(`SELECT fetch_portal('p')`, 'COMMIT');
  },
});
attack(lab, {
  name: 'a STABLE function opens a cursor on a volatile call; SQL FETCH runs it',
  run: (c) => c.queries('BEGIN', 'SELECT open_cursor()', 'FETCH ALL fn_cursor', 'COMMIT'),
});

// ───────────────────────────── Parse and Bind run code ─────────────────────────────

const victims = async (l: Lab): Promise<unknown> => {
  const r = await l.admin.query('SELECT (SELECT count(*) FROM pwned)::int AS pwned, (SELECT count(*) FROM victim_rows)::int AS victim_rows');
  return r.rows[0];
};
const restoreVictims = async (l: Lab): Promise<void> => {
  await l.admin.query('TRUNCATE pwned, victim_rows; INSERT INTO victim_rows VALUES (1), (2), (3)');
};
attack(lab, {
  name: 'Parse of a refused statement runs a domain check (array literal, parse analysis), no Bind or Execute',
  run: (c) => c.send(m.parse('', `DELETE FROM victim_rows WHERE id = ANY ('{1}'::d_evil[])`), m.sync()),
  probe: victims,
  restore: restoreVictims,
});
attack(lab, {
  name: 'Bind of a refused statement runs a domain check (parameter typed with the domain), no Execute',
  run: (c) => c.send(m.parse('', 'DELETE FROM victim_rows WHERE id = $1', [domainOid]), m.bind('', '', ['1']), m.sync()),
  probe: victims,
  restore: restoreVictims,
});
attack(lab, {
  name: 'Bind of a refused statement inside BEGIN, then COMMIT',
  run: async (c) => {
    await c.query('BEGIN');
    await c.send(m.parse('d', 'DELETE FROM victim_rows WHERE id = $1', [domainOid]), m.bind('dp', 'd', ['2']), m.sync());
    await c.query('COMMIT');
  },
  probe: victims,
  restore: restoreVictims,
});
attack(lab, {
  name: 'Bind and Execute of a refused statement whose Bind writes (the refusal must roll the Bind back)',
  run: (c) => c.send(m.parse('', 'DELETE FROM victim_rows WHERE id = $1', [domainOid]), m.bind('', '', ['3']), m.execute(''), m.sync()),
  probe: victims,
  restore: restoreVictims,
});
