/** Every match key, as a table: rule `match`, statement, subject -> does the rule match? */
import t from 'tap';
import type { StatementInfo } from '../../src/sql/types.js';
import type { Subject } from '../../src/rules/types.js';
import { oneRule, statement, subject } from './helpers.js';

interface Case {
  match: string;
  statement?: Partial<StatementInfo>;
  subject?: Partial<Subject>;
  matches: boolean;
  why: string;
}

const table = (schema: string | null, name: string, access: 'read' | 'write' = 'read') => ({ schema, name, access });

const cases: Case[] = [
  // class: ANY of the listed classes
  { match: '{class: [write]}', statement: { classes: ['write'] }, matches: true, why: 'class listed' },
  { match: '{class: write}', statement: { classes: ['read', 'write'] }, matches: true, why: 'scalar accepted; any class of the statement' },
  { match: '{class: [ddl, admin]}', statement: { classes: ['admin'] }, matches: true, why: 'any element of the list' },
  { match: '{class: [write]}', statement: { classes: ['read'] }, matches: false, why: 'class not listed' },
  { match: '{class: [WRITE]}', statement: { classes: ['write'] }, matches: true, why: 'class names are case-insensitive' },
  // flags
  { match: '{flags: [no_where]}', statement: { flags: ['no_where'] }, matches: true, why: 'flag set' },
  { match: '{flags: [no_where, locks]}', statement: { flags: ['locks'] }, matches: true, why: 'any flag' },
  { match: '{flags: no_where}', statement: { flags: [] }, matches: false, why: 'flag absent' },
  // command: case-insensitive, globs
  { match: '{command: DELETE}', statement: { command: 'DELETE' }, matches: true, why: 'exact command' },
  { match: '{command: delete}', statement: { command: 'DELETE' }, matches: true, why: 'case-insensitive' },
  { match: '{command: "create   table"}', statement: { command: 'CREATE TABLE' }, matches: true, why: 'spaces normalised' },
  { match: '{command: CREATE TABLE}', statement: { command: 'CREATE TABLE AS' }, matches: false, why: 'whole command, not a prefix' },
  { match: '{command: "DROP *"}', statement: { command: 'DROP TABLE' }, matches: true, why: 'glob' },
  { match: '{command: "DROP *"}', statement: { command: 'CREATE TABLE' }, matches: false, why: 'glob does not match' },
  // tables
  { match: '{tables: [orders]}', statement: { tables: [table('public', 'orders')] }, matches: true, why: 'no dot: any schema' },
  { match: '{tables: [orders]}', statement: { tables: [table(null, 'orders')] }, matches: true, why: 'no dot, unqualified' },
  { match: '{tables: [billing.orders]}', statement: { tables: [table('billing', 'orders')] }, matches: true, why: 'qualified' },
  { match: '{tables: [billing.orders]}', statement: { tables: [table('public', 'orders')] }, matches: false, why: 'other schema' },
  { match: '{tables: [billing.orders]}', statement: { tables: [table(null, 'orders')] }, matches: true, why: 'unknown schema: table part decides (search_path)' },
  { match: '{tables: ["billing.*"]}', statement: { tables: [table('billing', 'invoices')] }, matches: true, why: 'schema glob' },
  { match: '{tables: ["billing.*"]}', statement: { tables: [table('sales', 'invoices')] }, matches: false, why: 'schema glob, other schema' },
  { match: '{tables: ["audit_*"]}', statement: { tables: [table('x', 'AUDIT_2024')] }, matches: true, why: 'case-insensitive glob' },
  { match: '{tables: ["ord?rs"]}', statement: { tables: [table(null, 'orders')] }, matches: true, why: '? is one character' },
  { match: '{tables: ["ord?rs"]}', statement: { tables: [table(null, 'ordrs')] }, matches: false, why: '? is exactly one character' },
  { match: '{tables: [users]}', statement: { tables: [table(null, 'orders'), table(null, 'users')] }, matches: true, why: 'any table of the statement' },
  { match: '{tables: [users]}', statement: { tables: [] }, matches: false, why: 'no tables' },
  // columns
  { match: '{columns: [users.password]}', statement: { columns: ['users.password'] }, matches: true, why: 'table.column' },
  { match: '{columns: [password]}', statement: { columns: ['users.password'] }, matches: true, why: 'column in any table' },
  { match: '{columns: [users.password]}', statement: { columns: ['password'] }, matches: true, why: 'ambiguous table: column decides' },
  { match: '{columns: [users.password]}', statement: { columns: ['accounts.password'] }, matches: false, why: 'other table' },
  { match: '{columns: [users.password]}', statement: { columns: ['users.*'] }, matches: true, why: 'star reads every column' },
  { match: '{columns: [users.password]}', statement: { columns: ['*'] }, matches: true, why: 'unqualified star' },
  { match: '{columns: [users.password]}', statement: { columns: ['accounts.*'] }, matches: false, why: 'star of another table' },
  { match: '{columns: ["*.ssn"]}', statement: { columns: ['people.ssn'] }, matches: true, why: 'table glob' },
  { match: '{columns: [users.password]}', statement: { columns: ['auth.users.password'] }, matches: true, why: 'schema-qualified column' },
  // functions
  { match: '{functions: [pg_read_file]}', statement: { functions: ['pg_read_file'] }, matches: true, why: 'function name' },
  { match: '{functions: [pg_read_file]}', statement: { functions: ['pg_catalog.pg_read_file'] }, matches: true, why: 'no dot: any schema' },
  { match: '{functions: [pg_catalog.pg_read_file]}', statement: { functions: ['pg_read_file'] }, matches: true, why: 'unknown schema' },
  { match: '{functions: [util.wipe]}', statement: { functions: ['other.wipe'] }, matches: false, why: 'other schema' },
  { match: '{functions: ["dblink*"]}', statement: { functions: ['lower', 'dblink_exec'] }, matches: true, why: 'glob, any function' },
  { match: '{functions: ["dblink*"]}', statement: { functions: ['lower'] }, matches: false, why: 'no function matches' },
  // user / database: SQL names, case-insensitive globs
  { match: '{user: [alice]}', subject: { user: 'alice' }, matches: true, why: 'user' },
  { match: '{user: [ALICE]}', subject: { user: 'alice' }, matches: true, why: 'user, case-insensitive' },
  { match: '{user: ["svc_*"]}', subject: { user: 'alice' }, matches: false, why: 'user glob' },
  { match: '{database: ["prod*"]}', subject: { database: 'prod_eu' }, matches: true, why: 'database glob' },
  { match: '{database: ["prod*"]}', subject: { database: 'staging' }, matches: false, why: 'other database' },
  // groups / application: case-sensitive globs
  { match: '{groups: [dba]}', subject: { groups: ['dev', 'dba'] }, matches: true, why: 'any group of the subject' },
  { match: '{groups: [dba]}', subject: { groups: ['DBA'] }, matches: false, why: 'groups are case-sensitive' },
  { match: '{groups: [dba]}', subject: { groups: [] }, matches: false, why: 'no groups' },
  { match: '{application: ["psql*"]}', subject: { application: 'psql' }, matches: true, why: 'application glob' },
  { match: '{application: [metabase]}', subject: { application: 'psql' }, matches: false, why: 'other application' },
  // client: CIDR, IPv4 and IPv6, IPv4-mapped
  { match: '{client: [10.0.0.0/8]}', subject: { clientAddress: '10.1.2.3' }, matches: true, why: 'IPv4 in range' },
  { match: '{client: [10.0.0.0/8]}', subject: { clientAddress: '11.1.2.3' }, matches: false, why: 'IPv4 out of range' },
  { match: '{client: [10.0.0.0/8]}', subject: { clientAddress: '::ffff:10.1.2.3' }, matches: true, why: 'IPv4-mapped IPv6' },
  { match: '{client: [10.0.0.0/8]}', subject: { clientAddress: '::ffff:a01:203' }, matches: true, why: 'IPv4-mapped, hex form' },
  { match: '{client: ["2001:db8::/32"]}', subject: { clientAddress: '2001:db8::7' }, matches: true, why: 'IPv6 in range' },
  { match: '{client: ["2001:db8::/32"]}', subject: { clientAddress: '2001:db9::7' }, matches: false, why: 'IPv6 out of range' },
  { match: '{client: ["fe80::/10"]}', subject: { clientAddress: 'fe80::1%eth0' }, matches: true, why: 'zone index ignored' },
  { match: '{client: [192.168.1.7]}', subject: { clientAddress: '192.168.1.7' }, matches: true, why: 'bare address is one host' },
  { match: '{client: ["::ffff:10.0.0.0/104"]}', subject: { clientAddress: '10.9.9.9' }, matches: true, why: 'mapped CIDR matches IPv4' },
  { match: '{client: [0.0.0.0/0]}', subject: { clientAddress: '' }, matches: false, why: 'no IP address (Unix socket)' },
  // tls
  { match: '{tls: true}', subject: { tls: true }, matches: true, why: 'tls true' },
  { match: '{tls: false}', subject: { tls: true }, matches: false, why: 'tls false' },
  // time: Monday 2024-01-08 10:00 UTC = 11:00 Europe/Berlin
  { match: '{time: {days: [mon-fri], from: "09:00", to: "18:00"}}', matches: true, why: 'weekday window, UTC default' },
  { match: '{time: {days: [sat, sun]}}', matches: false, why: 'weekend only' },
  { match: '{time: {days: [mon], from: "10:30", to: "18:00", tz: Europe/Berlin}}', matches: true, why: '11:00 in Berlin' },
  { match: '{time: {days: [mon], from: "10:30", to: "18:00"}}', matches: false, why: '10:00 UTC is before 10:30' },
  { match: '{time: {from: "09:00", to: "10:00"}}', matches: false, why: 'to is exclusive' },
  { match: '{time: {from: "22:00", to: "06:00"}}', subject: { now: new Date('2024-01-09T03:00:00Z') }, matches: true, why: 'across midnight, morning part' },
  { match: '{time: {from: "22:00", to: "06:00"}}', subject: { now: new Date('2024-01-08T23:00:00Z') }, matches: true, why: 'across midnight, evening part' },
  { match: '{time: {from: "22:00", to: "06:00"}}', matches: false, why: 'across midnight, daytime' },
  { match: '{time: {days: [fri], from: "22:00", to: "06:00"}}', subject: { now: new Date('2024-01-13T05:00:00Z') }, matches: true, why: 'Saturday morning belongs to Friday night' },
  { match: '{time: {days: [fri], from: "22:00", to: "06:00"}}', subject: { now: new Date('2024-01-12T05:00:00Z') }, matches: false, why: 'Friday morning belongs to Thursday night' },
  { match: '{time: {days: [fri-mon]}}', subject: { now: new Date('2024-01-14T12:00:00Z') }, matches: true, why: 'wrapping day range includes Sunday' },
  { match: '{time: [{days: [sat]}, {days: [mon], from: "09:00", to: "12:00"}]}', matches: true, why: 'a list of windows: any' },
  { match: '{time: {from: "00:00", to: "24:00", days: [monday]}}', matches: true, why: '24:00 end, full day name' },
  // empty match and combinations
  { match: '{}', matches: true, why: 'empty match: every statement' },
  { match: '{class: [write], database: ["prod*"]}', statement: { classes: ['write'] }, subject: { database: 'prod' }, matches: true, why: 'all keys hold' },
  { match: '{class: [write], database: ["prod*"]}', statement: { classes: ['write'] }, subject: { database: 'dev' }, matches: false, why: 'one key fails' },
];

for (const c of cases) {
  t.test(`${c.match} — ${c.why}`, async (t) => {
    const rules = oneRule(c.match, 'deny');
    const decision = rules.decide([statement(c.statement)], subject(c.subject));
    t.equal(decision.action, c.matches ? 'deny' : 'allow');
    t.equal(decision.rule, c.matches ? 'r' : null);
  });
}
