/**
 * `stepgate demo` (what `npm start` runs): a real PostgreSQL with the sample database `shop`, stepgate in
 * front of it with the shipped rules, a demo user, its step-up console, and how to connect. Until the demo
 * user has a passkey it prints an enrollment link. Data stays in the data directory between runs; Ctrl-C
 * stops stepgate and the server in order (a second Ctrl-C at once).
 *
 * The demo runs as a deployment should: stepgate logs in to PostgreSQL as `shop_app`, a role with only
 * the privileges the sample needs (not the superuser), and offers TLS to clients with a self-signed
 * certificate it makes on first run (DATA/demo/server.crt). The console stays on http://localhost, where
 * browsers allow passkeys.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startApp, type App } from '../app.js';
import { loadConfig } from '../config.js';
import { enrollmentLink } from '../console/url.js';
import { ensureDemoCertificate } from '../demo/certificate.js';
import { dropDatabase, ensureDatabase, startDemoPostgres, type DemoPostgres } from '../demo/embedded-postgres.js';
import { APP_GRANTS, APP_ROLE, SHOP_SCHEMA } from '../demo/shop.js';
import { SqliteIdentityStore } from '../identity/sqlite-store.js';
import { createLogger } from '../log.js';
import { makeVerifier } from '../protocol/scram.js';
import { lockDataDir, OwnerLockHeld, type OwnerLock } from '../util/owner-lock.js';
import { logLevel, reportStartupError, stopSignals } from './serve.js';
import { parse, println, type CommandIO } from './io.js';
import { randomBytes } from 'node:crypto';

export const DEMO_HELP = `Usage: stepgate demo [options]

Starts a real PostgreSQL (embedded, version 15) with a sample database "shop", and
stepgate in front of it with the shipped rules and its web console for step-up approvals.
Prints how to connect, the console's address and, until the demo user has a passkey, a
one-time link to register one. Data is kept in DATA/demo between runs.

stepgate logs in to PostgreSQL as the role "shop_app" (reads every table, writes rows of
orders and customers; not a superuser), and offers TLS to clients with a self-signed
certificate made on first run (DATA/demo/server.crt): sslmode=require works, and
sslmode=verify-full with sslrootcert=DATA/demo/server.crt checks it.

Ctrl-C stops everything in order (running statements may finish, then clients get
FATAL 57P01); a second Ctrl-C stops at once. Only one stepgate can use a data directory:
a second one exits with status 1 ("another stepgate (pid N) is using DIR").

Options:
  --data DIR            data directory (default ./.stepgate)
  --listen HOST:PORT    where clients connect (default 127.0.0.1:6432; port 0: any free port)
  --console HOST:PORT   web console (default 127.0.0.1:6480; port 0: any free port)
  --reset               restore the sample database "shop" first (users and passkeys stay)
  --log-level LEVEL     debug, info, warn or error (default warn: the demo keeps quiet)
`;

const OPTIONS = {
  data: { type: 'string' },
  listen: { type: 'string' },
  console: { type: 'string' },
  reset: { type: 'boolean' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const DEMO_USER = { name: 'demo', password: 'demo' };

/** The demo's app role, its password (kept in DATA/demo), its privileges; the sample data (restored with `reset`). */
async function prepareShop(postgres: DemoPostgres, role: { name: string; password: string }, reset: boolean): Promise<'created' | 'restored' | null> {
  const admin = new pg.Client({ connectionString: postgres.url('postgres') });
  await admin.connect();
  try {
    const exists = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role.name]);
    if (exists.rowCount === 0) await admin.query(`CREATE ROLE ${role.name}`);
    await admin.query(`ALTER ROLE ${role.name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${admin.escapeLiteral(role.password)}`);
  } finally {
    await admin.end();
  }
  if (reset) await dropDatabase(postgres, 'shop');
  const created = await ensureDatabase(postgres, 'shop', SHOP_SCHEMA);
  const shop = new pg.Client({ connectionString: postgres.url('shop') });
  await shop.connect();
  try {
    await shop.query(APP_GRANTS);
  } finally {
    await shop.end();
  }
  return created ? (reset ? 'restored' : 'created') : null;
}

function secretFile(file: string): string {
  if (!fs.existsSync(file)) fs.writeFileSync(file, randomBytes(18).toString('base64url'), { mode: 0o600 });
  return fs.readFileSync(file, 'utf8').trim();
}

export async function demoCommand(args: string[], io: CommandIO): Promise<number> {
  const { values } = parse(args, OPTIONS, false);
  if (values.help) {
    println(io.stdout, DEMO_HELP);
    return 0;
  }
  const log = createLogger({ level: logLevel(values['log-level'] ?? 'warn') });
  // Ctrl-C at any point from here on stops everything in order; a second one at once.
  const signals = stopSignals();
  let postgres: DemoPostgres | null = null;
  signals.onAgain(() => {
    println(io.stdout, '\nStopping at once.');
    postgres?.stopNow();
    process.exit(1);
  });
  const dataDir = path.resolve(values.data ?? '.stepgate');
  // Traversable (not listable) by others: the server runs as the "postgres" user when we are root.
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o711 });
  let lock: OwnerLock;
  try {
    // Before anything else: one stepgate per data directory (its PostgreSQL included).
    lock = lockDataDir(dataDir);
  } catch (err) {
    signals.dispose();
    if (err instanceof OwnerLockHeld) {
      println(io.stderr, `stepgate demo: ${err.message}`);
      return 1;
    }
    throw err;
  }
  const demoDir = path.join(dataDir, 'demo');
  let app: App;
  let clusterDir: string;
  let created: boolean;
  try {
    println(io.stdout, 'Starting PostgreSQL 15 ...');
    const started = await startDemoPostgres(demoDir, dataDir, (line) => log.debug('postgres', { line }));
    postgres = started.server;
    clusterDir = started.dataDir;
    created = started.created;
    postgres.onUnexpectedExit((pid) => {
      log.error('demo.postgres_gone', { pid, data: clusterDir, note: 'the demo PostgreSQL stopped while stepgate runs; clients get errors' });
      println(io.stderr, `\nstepgate demo: PostgreSQL (pid ${pid}) stopped unexpectedly; clients will get errors. Stop the demo with Ctrl-C and start it again.`);
    });
    const role = { name: APP_ROLE, password: secretFile(path.join(demoDir, `${APP_ROLE}.password`)) };
    const shop = await prepareShop(postgres, role, values.reset === true);
    if (shop === 'created') println(io.stdout, 'Created the sample database "shop" (customers, products, orders).');
    if (shop === 'restored') println(io.stdout, 'Restored the sample database "shop" (users and passkeys are unchanged).');
    // The demo keeps its people in its own data directory (it has no `state:`).
    const identity = new SqliteIdentityStore(dataDir);
    try {
      // In `auditors` too, so the demo shows the console's audit trail view.
      const user = identity.getUser(DEMO_USER.name);
      if (!user) await identity.addUser(DEMO_USER.name, ['dev', 'auditors'], makeVerifier(DEMO_USER.password));
      else if (!user.groups.includes('auditors')) await identity.setGroups(DEMO_USER.name, [...user.groups, 'auditors']);
    } finally {
      identity.close();
    }
    const tls = ensureDemoCertificate(demoDir);
    const config = loadConfig({
      listen: values.listen,
      console: values.console,
      upstream: postgres.url('postgres', role),
      data: dataDir,
      tlsCert: tls.certFile,
      tlsKey: tls.keyFile,
    });
    app = await startApp(config, log, { consoleTls: false });
  } catch (err) {
    await postgres?.stop().catch(() => {});
    lock.release();
    signals.dispose();
    if (err instanceof OwnerLockHeld) {
      println(io.stderr, `stepgate demo: ${err.message}`);
      return 1;
    }
    const code = reportStartupError(err, io);
    if (code !== null) return code;
    println(io.stderr, `stepgate demo: ${(err as Error).message}`);
    return 1;
  }
  const { address, port } = app.proxyAddress;
  const host = address.includes(':') ? `[${address}]` : address;
  const consoleUrl = app.consoleUrl!;
  const connect = `postgres://${DEMO_USER.name}:${DEMO_USER.password}@${host}:${port}/shop`;
  const certFile = path.join(demoDir, 'server.crt');
  const enroll =
    app.identity.passkeyCount(DEMO_USER.name) === 0
      ? `
First, register a passkey for the demo user (the link works once, for 24 hours):
  ${enrollmentLink(consoleUrl, (await app.identity.issueEnrollment(DEMO_USER.name)).token)}
Open it in Chrome, Edge, Firefox or Safari on this machine and click "Register a passkey".
`
      : `
The demo user has a passkey. Sign in at ${consoleUrl} (a new link: stepgate users enroll ${DEMO_USER.name} --data ${dataDir}).
`;
  println(
    io.stdout,
    `
stepgate is running in front of PostgreSQL${created ? ' (new cluster)' : ''}.

  Connect:   psql "${connect}"
  With TLS:  psql "${connect}?sslmode=require"
             (to check the certificate too: ?sslmode=verify-full&sslrootcert=${certFile})
  Console:   ${consoleUrl}   (approve held statements with your passkey; keep it open)
  Rules:     ${app.config.rulesDir}
  Data:      ${dataDir} (PostgreSQL cluster: ${clusterDir})
  Upstream:  stepgate logs in as "${APP_ROLE}" (not a superuser: reads every table, writes rows
             of orders and customers)
${enroll}
Try:
  SELECT name, country FROM customers LIMIT 5;      -- a read: runs as usual
  DELETE FROM orders;                               -- no WHERE: held until you approve it
                                                    -- in the console (psql prints the link)
  DROP DATABASE shop;                               -- denied by the shipped rules

Ask stepgate why:  npx stepgate rules explain "DELETE FROM orders"
Restore the sample data:  npx stepgate demo --reset
Press Ctrl-C to stop stepgate and PostgreSQL.
`,
  );
  await signals.first;
  const timeoutMs = app.config.limits.shutdownTimeoutMs;
  println(io.stdout, `\nStopping ... (running statements may finish within ${Math.round(timeoutMs / 1000)} s; Ctrl-C again to stop at once)`);
  await app.close({ timeoutMs });
  await postgres.stop();
  lock.release();
  signals.dispose();
  println(io.stdout, 'Stopped.');
  return 0;
}
