/**
 * stepgate in front of a test PostgreSQL, in this process: a fresh data directory with users, listening
 * on an ephemeral port, closed when the test ends.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NoAudit, type AuditSink } from '../../src/audit/types.js';
import { loadConfig, type Config } from '../../src/config.js';
import { IdentityStore } from '../../src/identity/store.js';
import { createLogger } from '../../src/log.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import { ProxyServer, type ProxyServices } from '../../src/proxy/server.js';
import type { RuleSet } from '../../src/rules/types.js';
import { UnavailableStepUp, type StepUpBroker } from '../../src/stepup/types.js';
import { testClassifier, testRules } from './rules.js';
import type { TestPostgres } from './postgres.js';

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
  /** Every log line, parsed. */
  logs: Record<string, unknown>[];
  /** Connection settings for node-postgres. */
  pgConfig(user?: TestUser, database?: string): { host: string; port: number; user: string; password: string; database: string };
  /** Environment for psql/pg_dump/pgbench through stepgate. */
  env(user?: TestUser, database?: string): NodeJS.ProcessEnv;
  url(user?: TestUser, database?: string): string;
  close(): Promise<void>;
}

export const ALICE: TestUser = { name: 'alice', password: 'alice-secret-pw', groups: ['dev'] };

export interface StepgateOptions {
  users?: TestUser[];
  rulesDir?: string;
  rules?: RuleSet;
  stepUp?: StepUpBroker;
  audit?: AuditSink;
  /** Extra config file content (YAML), merged before flags. */
  configYaml?: string;
  flags?: Record<string, string | boolean>;
  /** Overrides applied to the loaded config. */
  tweak?(config: Config): void;
}

export async function startStepgate(
  t: { teardown(fn: () => unknown): void },
  pg: TestPostgres,
  options: StepgateOptions = {},
): Promise<TestStepgate> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-data-'));
  const configFile = path.join(dataDir, 'stepgate.yaml');
  fs.writeFileSync(configFile, `listen: 127.0.0.1:0\nupstream: ${JSON.stringify(pg.url())}\ndata: ${JSON.stringify(dataDir)}\n${options.configYaml ?? ''}`);
  const config = loadConfig({ config: configFile, ...(options.flags as object) });
  config.limits.authFailureDelayMs = 50;
  options.tweak?.(config);
  const identity = new IdentityStore(dataDir);
  for (const u of options.users ?? [ALICE]) identity.addUser(u.name, u.groups ?? [], makeVerifier(u.password));
  const logs: Record<string, unknown>[] = [];
  const log = createLogger({ level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const services: ProxyServices = {
    identity,
    classify: testClassifier(),
    rules: (() => {
      const rules = options.rules ?? testRules(options.rulesDir);
      return () => rules;
    })(),
    stepUp: options.stepUp ?? new UnavailableStepUp('step-up is not configured in this test'),
    audit: options.audit ?? new NoAudit(),
    log,
  };
  const server = new ProxyServer(config, services);
  const { port } = await server.listen();
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await server.close();
    identity.close();
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
