/**
 * Attacks on what stepgate remembers between statements: a classification cached (by exact text, by
 * statement shape, or with a prepared statement) together with the catalog's answers it was made with.
 * The attacker reads a plain table through stepgate, so its classification is cached with "swap_target is
 * a table"; then, on another connection stepgate never sees (no invalidation reaches its catalog, whose
 * answers live for a minute), swaps the table for a view whose query calls a function that writes; then
 * sends the same statement again: the same text, the same shape with another literal, and a prepared
 * statement bound after the swap (the server re-plans it against the view).
 *
 * Stopped: stepgate's cached reading is wrong on purpose here (it still believes in the table), so the
 * server must refuse the write: the read runs in read-only mode (25006), and nothing is written.
 */
import t from 'tap';
import { attack, m, startLab, type Conn, type Lab } from './harness.js';

const lab: Lab = await startLab(t, { kind: 'catalog-cache', setup: 'CREATE TABLE swap_target (id int); INSERT INTO swap_target VALUES (1), (2);' });

/** Replaces the table with a view that writes, where stepgate cannot see it (the lab's admin connection). */
async function swap(lab: Lab): Promise<void> {
  await lab.admin.query(`ALTER TABLE swap_target RENAME TO swap_old; CREATE VIEW swap_target AS SELECT public.evil('the view behind a cached reading') AS id`);
}

async function restore(lab: Lab): Promise<void> {
  await lab.admin.query(`DO $$ BEGIN
    IF EXISTS (SELECT FROM pg_views WHERE schemaname = 'public' AND viewname = 'swap_target') THEN
      DROP VIEW swap_target;
      ALTER TABLE swap_old RENAME TO swap_target;
    END IF;
  END $$; TRUNCATE pwned`);
}

/** Reads the table (cached by stepgate with its catalog answers), swaps it, and runs `after`. */
function cachedThenSwapped(after: (c: Conn) => Promise<unknown>) {
  return async (c: Conn, lab: Lab): Promise<void> => {
    await c.query('SELECT id FROM swap_target WHERE id = 1');
    await c.query('SELECT id FROM swap_target WHERE id = 1');
    await swap(lab);
    await after(c);
  };
}

attack(lab, {
  name: 'a table swapped for a writing view behind a classification cached by exact text',
  run: cachedThenSwapped((c) => c.query('SELECT id FROM swap_target WHERE id = 1')),
  restore,
});

attack(lab, {
  name: 'a table swapped for a writing view behind a classification cached by shape (another literal)',
  run: cachedThenSwapped((c) => c.query('SELECT id FROM swap_target WHERE id = 2')),
  restore,
});

attack(lab, {
  name: 'a table swapped for a writing view between Parse and Bind of a prepared statement',
  run: async (c, lab) => {
    await c.send(m.parse('s1', 'SELECT id FROM swap_target WHERE id = $1'), m.sync());
    await swap(lab);
    await c.send(m.bind('', 's1', ['1']), m.execute(''), m.sync());
  },
  restore,
});
