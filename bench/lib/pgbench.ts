/** Running the system's pgbench and reading its summary. */
import { execFile } from 'node:child_process';

export interface PgbenchResult {
  tps: number;
  /** Average latency in milliseconds. */
  latencyMs: number;
  transactions: number;
  failed: number;
}

export interface PgbenchTarget {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export function pgbenchEnv(target: PgbenchTarget): NodeJS.ProcessEnv {
  return {
    ...process.env,
    PGHOST: target.host,
    PGPORT: String(target.port),
    PGUSER: target.user,
    PGPASSWORD: target.password,
    PGDATABASE: target.database,
    PGSSLMODE: 'disable',
  };
}

export function hasPgbench(): Promise<boolean> {
  return new Promise((resolve) => execFile('pgbench', ['--version'], (err) => resolve(!err)));
}

export function runPgbench(target: PgbenchTarget, args: string[], timeoutMs: number): Promise<PgbenchResult> {
  return new Promise((resolve, reject) => {
    execFile('pgbench', args, { env: pgbenchEnv(target), timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`pgbench ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        return;
      }
      const number = (re: RegExp): number => {
        const m = re.exec(stdout);
        if (!m) throw new Error(`unexpected pgbench output (no ${re}):\n${stdout}\n${stderr}`);
        return Number(m[1]);
      };
      try {
        resolve({
          tps: number(/^tps = ([\d.]+)/m),
          latencyMs: number(/^latency average = ([\d.]+) ms/m),
          transactions: number(/^number of transactions actually processed: (\d+)/m),
          failed: /^number of failed transactions: (\d+)/m.test(stdout) ? number(/^number of failed transactions: (\d+)/m) : 0,
        });
      } catch (e) {
        reject(e);
      }
    });
  });
}
