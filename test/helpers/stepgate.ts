/**
 * stepgate in front of a test PostgreSQL, in this process: a fresh data directory with users, listening
 * on an ephemeral port, closed when the test ends.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApp, type App, type AppOverrides } from '../../src/app.js';
import type { AuditSink } from '../../src/audit/types.js';
import { loadConfig, type Config } from '../../src/config.js';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import type { IdentityStore } from '../../src/identity/store.js';
import { createLogger } from '../../src/log.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import type { ConsoleBroker } from '../../src/stepup/broker.js';
import type { StepUpBroker } from '../../src/stepup/types.js';
import type { TestPostgres } from './postgres.js';

/** The repository root (this file is compiled to dist/test/helpers/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
/** Rules that let everything through, for tests of the relay itself. */
export const ALLOW_ALL_RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'allow-all');

export interface TestUser {
  name: string;
  password: string;
  groups?: string[];
}

export interface TestStepgate {
  host: string;
  port: number;
  config: Config;
  dataDir: string;
  identity: IdentityStore;
  server: ProxyServer;
  app: App;
  /** The web console's URL (http://localhost:PORT), null when `stepUp` replaced the console broker. */
  consoleUrl: string | null;
  broker: ConsoleBroker | null;
  /** Every log line, parsed. */
  logs: Record<string, unknown>[];
  /** Connection settings for node-postgres. */
  pgConfig(user?: TestUser, database?: string): { host: string; port: number; user: string; password: string; database: string };
  /** Environment for psql/pg_dump/pgbench through stepgate. */
  env(user?: TestUser, database?: string): NodeJS.ProcessEnv;
  url(user?: TestUser, database?: string): string;
  close(): Promise<void>;
}

/** A rules directory holding one file (`00-test.yaml`) with `yaml`, removed when the test ends. */
export function rulesDirWith(t: { teardown(fn: () => unknown): void }, yaml: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-rules-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, '00-test.yaml'), yaml);
  return dir;
}

export const ALICE: TestUser = { name: 'alice', password: 'alice-secret-pw', groups: ['dev'] };

export interface StepgateOptions {
  users?: TestUser[];
  /** Default: ALLOW_ALL_RULES. */
  rulesDir?: string;
  stepUp?: StepUpBroker;
  audit?: AuditSink;
  /** Wraps the classifier (see AppOverrides.classify). */
  classify?: AppOverrides['classify'];
  /** Extra config file content (YAML), merged before flags. */
  configYaml?: string;
  flags?: Record<string, string | boolean>;
  /** Overrides applied to the loaded config. */
  tweak?(config: Config): void;
  /** Single sign-on options (the clock, the key cache's cooldown) and the console's clock. */
  sso?: AppOverrides['sso'];
  now?: AppOverrides['now'];
  /** Webhook delivery's wait and clock (see AppOverrides.notify). */
  notify?: AppOverrides['notify'];
}

export async function startStepgate(
  t: { teardown(fn: () => unknown): void },
  pg: TestPostgres,
  options: StepgateOptions = {},
): Promise<TestStepgate> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-data-'));
  const configFile = path.join(dataDir, 'stepgate.yaml');
  fs.writeFileSync(configFile, `listen: 127.0.0.1:0\nupstream: ${JSON.stringify(pg.url())}\ndata: ${JSON.stringify(dataDir)}\n${options.configYaml ?? ''}`);
  // The console on an ephemeral port too, unless the test chose one.
  const consoleFlag = /^console:/m.test(options.configYaml ?? '') ? {} : { console: '127.0.0.1:0' };
  const config = loadConfig({ config: configFile, rules: options.rulesDir ?? ALLOW_ALL_RULES, ...consoleFlag, ...(options.flags as object) });
  config.limits.authFailureDelayMs = 50;
  options.tweak?.(config);
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  // Users first: the app opens the same identity file. With `state:` they go into the shared store once
  // the app runs (an instance started later on the same state finds them there). None: the test makes its own.
  const users = options.users ?? [ALICE];
  if (users.length > 0 && !config.state) {
    const setup = new SqliteIdentityStore(dataDir);
    for (const u of users) await setup.addUser(u.name, u.groups ?? [], makeVerifier(u.password));
    setup.close();
  }
  const app = await startApp(config, log, { stepUp: options.stepUp, audit: options.audit, classify: options.classify, sso: options.sso, now: options.now, notify: options.notify });
  if (config.state) {
    for (const u of users) if (!app.identity.getUser(u.name)) await app.identity.addUser(u.name, u.groups ?? [], makeVerifier(u.password));
  }
  const identity = app.identity;
  const server = app.proxy;
  const { port } = app.proxyAddress;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await app.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  t.teardown(close);
  const host = '127.0.0.1';
  const userOf = (u?: TestUser): TestUser => u ?? (options.users ?? [ALICE])[0];
  return {
    host,
    port,
    config,
    dataDir,
    identity,
    server,
    app,
    consoleUrl: app.consoleUrl,
    broker: app.broker,
    logs,
    pgConfig: (u, database = 'postgres') => ({ host, port, user: userOf(u).name, password: userOf(u).password, database }),
    env: (u, database = 'postgres') => ({
      ...process.env,
      PGHOST: host,
      PGPORT: String(port),
      PGUSER: userOf(u).name,
      PGPASSWORD: userOf(u).password,
      PGDATABASE: database,
      PGSSLMODE: 'disable',
    }),
    url: (u, database = 'postgres') => `postgres://${encodeURIComponent(userOf(u).name)}:${encodeURIComponent(userOf(u).password)}@${host}:${port}/${database}`,
    close,
  };
}
