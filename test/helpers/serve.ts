/**
 * `stepgate serve` as a child process (node bin/stepgate.js), as people run it: a data directory with a
 * user, a config file, the listening port read from its log, its log lines and exit collected, and the
 * child killed when the test ends whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteIdentityStore } from '../../src/identity/sqlite-store.js';
import { makeVerifier } from '../../src/protocol/scram.js';
import { REPO_ROOT } from './stepgate.js';
import type { TestPostgres } from './postgres.js';
import { waitFor } from './wait.js';

export const STEPGATE_BIN = path.join(REPO_ROOT, 'bin', 'stepgate.js');

export interface ServeChild {
  process: ChildProcess;
  port: number;
  /** Parsed JSON log lines so far. */
  logs: Record<string, unknown>[];
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ServeSetup {
  dataDir: string;
  configFile: string;
  user: { name: string; password: string };
}

/** A data directory (removed afterwards) with user alice (and a passkey on record, so holds wait), and a config file. */
export async function serveSetup(t: { teardown(fn: () => unknown): void }, db: TestPostgres, options: { rulesDir?: string; configYaml?: string } = {}): Promise<ServeSetup> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-serve-'));
  t.teardown(() => fs.rmSync(dataDir, { recursive: true, force: true }));
  const user = { name: 'alice', password: 'alice-pw' };
  const identity = new SqliteIdentityStore(dataDir);
  await identity.addUser(user.name, [], makeVerifier(user.password));
  await identity.addPasskey({ id: 'cred-alice', user: user.name, publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'test key', deviceType: null, backedUp: false });
  identity.close();
  const configFile = path.join(dataDir, 'stepgate.yaml');
  fs.writeFileSync(
    configFile,
    [
      'listen: 127.0.0.1:0',
      'console: 127.0.0.1:0',
      `upstream: ${JSON.stringify(db.url())}`,
      `data: ${JSON.stringify(dataDir)}`,
      ...(options.rulesDir ? [`rules: ${JSON.stringify(options.rulesDir)}`] : []),
      options.configYaml ?? '',
      '',
    ].join('\n'),
  );
  return { dataDir, configFile, user };
}

/**
 * SIGKILLs a child process at the test's teardown (and waits for it), or when this process exits first: a
 * test that crashes never runs its teardown, and the child must not outlive it either way.
 */
export function killAtTeardown(t: { teardown(fn: () => unknown): void }, child: ChildProcess): void {
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const kill = (): void => void (running() && child.kill('SIGKILL'));
  process.once('exit', kill);
  t.teardown(async () => {
    process.off('exit', kill);
    if (!running()) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    kill();
    await exited;
  });
}

/** Spawns `stepgate serve ARGS`; resolves once it listens (or rejects with its stderr if it exits first). */
export async function startServe(t: { teardown(fn: () => unknown): void }, args: string[]): Promise<ServeChild> {
  const child = spawn(process.execPath, [STEPGATE_BIN, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  killAtTeardown(t, child);
  let err = '';
  const logs: Record<string, unknown>[] = [];
  let partial = '';
  child.stderr!.on('data', (b: Buffer) => {
    err += b.toString();
    partial += b.toString();
    for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line (a startup message for people)
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const port = await waitFor(
    'stepgate to listen',
    () => {
      if (child.exitCode !== null) throw new Error(`stepgate exited with ${child.exitCode}: ${err}`);
      const line = logs.find((l) => l.event === 'stepgate.listening');
      return line ? Number(String(line.listen).split(':').pop()) : null;
    },
    20_000,
  );
  return { process: child, port, logs, stderr: () => err, exited };
}
