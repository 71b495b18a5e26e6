/**
 * Running the PostgreSQL client programs (psql, pg_dump, pgbench ...) from tests: output collected,
 * a deadline, and the child killed when the test ends whatever happened.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
  /** Called with the child once it runs (to signal it, for instance). */
  onSpawn?(child: ChildProcess): void;
}

/** True when the program is on PATH. */
export function have(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

/**
 * True when every program is installed. Otherwise a developer machine skips what needs them (saying so),
 * while CI (CI set in the environment) fails: there they must be installed and the tests must run.
 */
export function requirePrograms(t: { fail(message: string): void; comment(message: string): void }, programs: string[]): boolean {
  const missing = programs.filter((p) => !have(p));
  if (missing.length === 0) return true;
  const message = `${missing.join(', ')} not installed (apt-get install postgresql-client-15)`;
  if (process.env.CI) t.fail(`${message}: CI must run these tests`);
  else t.comment(`SKIP: ${message}`);
  return false;
}

export function run(t: { teardown(fn: () => unknown): void }, program: string, args: string[], options: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const child = spawn(program, args, { env: options.env, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  child.stdin.on('error', () => {});
  child.stdin.end(options.input ?? '');
  const timeoutMs = options.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${program} ${args.join(' ')} did not finish within ${timeoutMs} ms; stderr: ${Buffer.concat(err).toString()}`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), ms: performance.now() - started });
    });
    options.onSpawn?.(child);
  });
}
