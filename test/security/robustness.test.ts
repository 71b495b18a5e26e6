/**
 * Robustness: deep statements PostgreSQL answers without trouble must get an answer through stepgate too (the
 * result, or a clean 42501 refusal), never a FATAL or a dead connection. (The 4 MB Query is flood.test.ts.)
 *
 * - a 3,000-term expression SELECT 1+1+...+1 (a left-deep tree 3,000 levels deep);
 * - 1,000 nested scalar subqueries SELECT (SELECT (... 1)).
 *
 * TODO today: both: stepgate closes the client connection (an internal error while classifying; the
 * comment of each test quotes stepgate's log).
 */
import t from 'tap';
import { connect, errorsIn, isFatal, report, rowsIn, startLab, type Lab } from './harness.js';

const lab: Lab = await startLab(t, { kind: 'robustness' });

const TERMS = 3000;
const NESTING = 1000;

const todos: Record<string, string | undefined> = {};

function deepStatement(name: string, key: string, sql: string, expected: string): void {
  t.test(name, async (t) => {
    const direct = await connect(lab, 'direct');
    const d = await direct.query(sql);
    direct.raw.destroy();
    t.same(rowsIn(d), [[expected]], `PostgreSQL answers it directly: ${expected}`, { errors: errorsIn(d) });

    const extra = todos[key] ? { todo: todos[key] } : {};
    let label: string;
    const logsBefore = lab.sg.logs.length;
    try {
      const c = await connect(lab, 'stepgate');
      const r = await c.query(sql);
      const e = errorsIn(r)[0];
      const rows = rowsIn(r);
      label = e ? `${e.severity} ${e.code}: ${e.message}` : `answered ${JSON.stringify(rows)}`;
      t.notOk(r.some(isFatal), `through stepgate: no FATAL (${label})`, extra);
      t.ok((rows.length === 1 && rows[0]![0] === expected && !e) || e?.code === '42501', `through stepgate: the result or a clean 42501 refusal (${label})`, extra);
      t.same(rowsIn(await c.query('SELECT 1')), [['1']], 'the connection is usable afterwards', extra);
      c.raw.destroy();
    } catch (err) {
      label = `connection died or hung: ${String(err)}`;
      t.fail(label, extra);
      // What stepgate said about it (for the developers).
      await new Promise((r) => setTimeout(r, 100));
      for (const line of lab.sg.logs.slice(logsBefore)) {
        if (line.level === 'error' || line.level === 'warn' || /closed|ended/.test(String(line.event))) {
          t.comment(`stepgate: ${JSON.stringify(line).slice(0, 400)}`);
        }
      }
    }
    report({ file: 'robustness', attack: name, direct: true, readOnlyAlone: 'n/a', stepgate: label, todo: todos[key] ?? null });
  });
}

deepStatement(`a ${TERMS}-term SELECT 1+1+...+1`, 'terms', `SELECT ${Array(TERMS).fill('1').join('+')}`, String(TERMS));
deepStatement(`${NESTING} nested subselects SELECT (SELECT (... 1))`, 'nesting', `SELECT ${'(SELECT '.repeat(NESTING)}1${')'.repeat(NESTING)}`, '1');

