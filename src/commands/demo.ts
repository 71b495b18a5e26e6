/**
 * `stepgate demo` (what `npm start` runs): a real PostgreSQL with the sample database `shop`, stepgate in
 * front of it with the shipped rules, a demo user, its step-up console, and how to connect. Until the demo
 * user has a passkey it prints an enrollment link. Data stays in the data directory between runs; Ctrl-C
 * stops stepgate and the server.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startApp } from '../app.js';
import { loadConfig } from '../config.js';
import { enrollmentLink } from '../console/url.js';
import { ensureDatabase, startDemoPostgres } from '../demo/embedded-postgres.js';
import { SHOP_SCHEMA } from '../demo/shop.js';
import { IdentityStore } from '../identity/store.js';
import { createLogger } from '../log.js';
import { makeVerifier } from '../protocol/scram.js';
import { logLevel, reportStartupError, untilSignal } from './serve.js';
import { parse, println, type CommandIO } from './io.js';

export const DEMO_HELP = `Usage: stepgate demo [options]

Starts a real PostgreSQL (embedded, version 15) with a sample database "shop", and
stepgate in front of it with the shipped rules and its web console for step-up approvals.
Prints how to connect, the console's address and, until the demo user has a passkey, a
one-time link to register one. Data is kept in DATA/demo between runs; Ctrl-C stops
everything.

Options:
  --data DIR            data directory (default ./.stepgate)
  --listen HOST:PORT    where clients connect (default 127.0.0.1:6432)
  --console HOST:PORT   web console (default 127.0.0.1:6480)
  --log-level LEVEL     debug, info, warn or error (default warn: the demo keeps quiet)
`;

const OPTIONS = {
  data: { type: 'string' },
  listen: { type: 'string' },
  console: { type: 'string' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const DEMO_USER = { name: 'demo', password: 'demo' };

export async function demoCommand(args: string[], io: CommandIO): Promise<number> {
  const { values } = parse(args, OPTIONS, false);
  if (values.help) {
    println(io.stdout, DEMO_HELP);
    return 0;
  }
  const log = createLogger({ level: logLevel(values['log-level'] ?? 'warn') });
  // Ctrl-C at any point from here on stops everything in order.
  const stopRequested = untilSignal();
  const dataDir = path.resolve(values.data ?? '.stepgate');
  // Traversable (not listable) by others: the server runs as the "postgres" user when we are root.
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  println(io.stdout, 'Starting PostgreSQL 15 ...');
  const { server: postgres, created, dataDir: clusterDir } = await startDemoPostgres(path.join(dataDir, 'demo'), (line) => log.debug('postgres', { line }));
  let app;
  try {
    if (await ensureDatabase(postgres, 'shop', SHOP_SCHEMA)) println(io.stdout, 'Created the sample database "shop" (customers, products, orders).');
    const identity = new IdentityStore(dataDir);
    try {
      // In `auditors` too, so the demo shows the console's audit trail view.
      const user = identity.getUser(DEMO_USER.name);
      if (!user) identity.addUser(DEMO_USER.name, ['dev', 'auditors'], makeVerifier(DEMO_USER.password));
      else if (!user.groups.includes('auditors')) identity.setGroups(DEMO_USER.name, [...user.groups, 'auditors']);
    } finally {
      identity.close();
    }
    const config = loadConfig({ listen: values.listen, console: values.console, upstream: postgres.url('postgres'), data: dataDir });
    app = await startApp(config, log);
  } catch (err) {
    await postgres.stop();
    const code = reportStartupError(err, io);
    if (code !== null) return code;
    println(io.stderr, `stepgate demo: ${(err as Error).message}`);
    return 1;
  }
  const { address, port } = app.proxyAddress;
  const host = address.includes(':') ? `[${address}]` : address;
  const consoleUrl = app.consoleUrl!;
  const enroll =
    app.identity.passkeyCount(DEMO_USER.name) === 0
      ? `
First, register a passkey for the demo user (the link works once, for 24 hours):
  ${enrollmentLink(consoleUrl, app.identity.issueEnrollment(DEMO_USER.name).token)}
Open it in Chrome, Edge, Firefox or Safari on this machine and click "Register a passkey".
`
      : `
The demo user has a passkey. Sign in at ${consoleUrl} (a new link: stepgate users enroll ${DEMO_USER.name} --data ${dataDir}).
`;
  println(
    io.stdout,
    `
stepgate is running in front of PostgreSQL${created ? ' (new cluster)' : ''}.

  Connect:   psql "postgres://${DEMO_USER.name}:${DEMO_USER.password}@${host}:${port}/shop"
  Console:   ${consoleUrl}   (approve held statements with your passkey; keep it open)
  Rules:     ${app.config.rulesDir}
  Data:      ${dataDir} (PostgreSQL cluster: ${clusterDir})
${enroll}
Try:
  SELECT name, country FROM customers LIMIT 5;      -- a read: runs as usual
  DELETE FROM orders;                               -- no WHERE: held until you approve it
                                                    -- in the console (psql prints the link)
  DROP DATABASE shop;                               -- denied by the shipped rules

Ask stepgate why:  npx stepgate rules explain "DELETE FROM orders"
Press Ctrl-C to stop stepgate and PostgreSQL.
`,
  );
  await stopRequested;
  println(io.stdout, '\nStopping ...');
  await app.close();
  await postgres.stop();
  println(io.stdout, 'Stopped.');
  return 0;
}
