/**
 * For people working on stepgate: a disposable PostgreSQL and stepgate in front of it, printed
 * connection strings, Ctrl-C to stop. `node dist/test/helpers/dev-server.js`
 */
import { startPostgres } from './postgres.js';
import { startStepgate } from './stepgate.js';

const cleanups: (() => unknown)[] = [];
const t = { teardown: (fn: () => unknown) => cleanups.push(fn) };
const db = await startPostgres(t, { tcp: true });
const sg = await startStepgate(t, db);
console.log(`direct:   ${db.url()}`);
console.log(`stepgate: ${sg.url()}`);
await new Promise((resolve) => process.once('SIGINT', resolve));
for (const fn of cleanups.reverse()) await fn();
