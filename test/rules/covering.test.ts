/**
 * A rule that allows must cover the whole statement (ALL classes, tables, columns, functions, and only
 * names it can be sure of); a rule that denies or asks matches on ANY risky part.
 */
import t from 'tap';
import { oneRule, statement, subject } from './helpers.js';

const cteDelete = statement({
  sql: 'WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d',
  command: 'SELECT',
  classes: ['read', 'write'],
  tables: [{ schema: null, name: 'orders', access: 'write' }],
  flags: ['writing_cte', 'no_where'],
});
const cteDeleteCommands = statement({ ...cteDelete, commands: ['DELETE', 'SELECT'] });
const scratchRead = statement({ tables: [{ schema: 'scratch', name: 'a', access: 'read' }] });
const mixed = statement({
  command: 'INSERT',
  classes: ['write'],
  tables: [
    { schema: 'scratch', name: 'a', access: 'read' },
    { schema: 'billing', name: 'invoices', access: 'write' },
  ],
});
const unqualified = statement({ tables: [{ schema: null, name: 'invoices', access: 'read' }] });
const noTables = statement({ sql: 'DROP DATABASE shop', command: 'DROP DATABASE', classes: ['admin', 'ddl'] });
const star = statement({ columns: ['users.*'], tables: [{ schema: 'public', name: 'users', access: 'read' }] });
const named = statement({ columns: ['users.name'], tables: [{ schema: 'public', name: 'users', access: 'read' }] });
const unqualifiedFn = statement({ functions: ['audit_log'] });

const cases: [string, string, ReturnType<typeof statement>, boolean][] = [
  // [match, action, statement, matches?]
  ['{class: [read]}', 'allow', cteDelete, false],
  ['{class: [read]}', 'deny', cteDelete, true],
  ['{class: [read, write]}', 'allow', cteDelete, true],
  ['{command: [DELETE]}', 'deny', cteDeleteCommands, true],
  ['{command: [SELECT]}', 'allow', cteDeleteCommands, false],
  ['{command: [SELECT, DELETE]}', 'allow', cteDeleteCommands, true],
  ['{tables: ["scratch.*"]}', 'allow', scratchRead, true],
  ['{tables: ["scratch.*"]}', 'allow', mixed, false],
  ['{tables: ["scratch.*"]}', 'deny', mixed, true],
  ['{tables: ["billing.invoices"]}', 'allow', unqualified, false],
  ['{tables: ["billing.invoices"]}', 'step-up', unqualified, true],
  ['{tables: ["*.invoices"]}', 'allow', unqualified, true],
  ['{tables: [invoices]}', 'allow', unqualified, true],
  ['{tables: ["scratch.*"]}', 'allow', noTables, false],
  ['{columns: [users.name]}', 'allow', star, false],
  ['{columns: [users.name]}', 'allow', named, true],
  ['{columns: [users.email]}', 'deny', star, true],
  ['{columns: ["users.*"]}', 'allow', star, true],
  ['{functions: [app.audit_log]}', 'allow', unqualifiedFn, false],
  ['{functions: [app.audit_log]}', 'deny', unqualifiedFn, true],
  ['{functions: [audit_log]}', 'allow', unqualifiedFn, true],
];

for (const [match, action, s, expected] of cases) {
  t.test(`${action} ${match} ${expected ? 'matches' : 'does not match'} ${s.sql} ${JSON.stringify(s.tables.map((x) => x.schema + '.' + x.name))} ${s.columns.join()}`, async (t) => {
    const decision = oneRule(match, action).decide([s], subject());
    t.equal(decision.rule === 'r', expected);
  });
}
