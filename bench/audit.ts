/**
 * What the audit trail costs.
 *
 *  1. Hot path: statement() + outcome() calls per second on the proxy thread (realistic, cached
 *     classifications and decisions from the shipped rules), against NoAudit; and how fast the writer
 *     thread drains them (events written per second, end to end).
 *  2. pgbench select-only through stepgate with the audit on and off, interleaved rounds, medians.
 *
 *   npm run build && node dist/bench/audit.js [--duration 10] [--rounds 3] [--clients 8] [--calls 300000]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startApp } from '../src/app.js';
import { AuditStore } from '../src/audit/store.js';
import { NoAudit, type AuditSink } from '../src/audit/types.js';
import { loadConfig } from '../src/config.js';
import { SqliteIdentityStore } from '../src/identity/sqlite-store.js';
import { createLogger } from '../src/log.js';
import { makeVerifier } from '../src/protocol/scram.js';
import { loadRulesOrThrow } from '../src/rules/load.js';
import { ClassificationCache } from '../src/sql/cache.js';
import { initParser } from '../src/sql/parser.js';
import { freePort, startPostgres } from '../test/helpers/postgres.js';
import { runPgbench, type PgbenchTarget } from './lib/pgbench.js';
import { median } from './lib/stats.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const HERE = fileURLToPath(import.meta.url);

async function microbench(calls: number): Promise<void> {
  await initParser();
  const rules = await loadRulesOrThrow(path.join(REPO_ROOT, 'rules'));
  const cache = new ClassificationCache();
  const ctx = { standardConformingStrings: true };
  const subject = { user: 'bench', groups: [], database: 'bench', application: 'pgbench', clientAddress: '127.0.0.1', tls: false, now: new Date() };
  const texts = Array.from({ length: 1000 }, (_, i) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${(i * 7919) % 1_000_000};`);
  const run = async (sink: AuditSink, label: string): Promise<number> => {
    const conns = Array.from({ length: 8 }, (_, i) => `conn-${label}-${i}`);
    for (const c of conns) sink.connectionStart({ connectionId: c, user: 'bench', database: 'bench', application: 'pgbench', clientAddress: '127.0.0.1', tls: false, serverPid: 1 });
    // Classification and decision are done by the proxy anyway: prepare them outside the timed loop.
    const prepared = texts.map((sql) => {
      const statements = cache.classify(sql, ctx).statements;
      return { sql, statements, decision: rules.ruleSet.decide(statements, subject) };
    });
    const outcome = { tag: 'SELECT 1', sqlstate: null, message: null, skipped: false, durationMs: 0.05 };
    let busy = 0n;
    const slice = 2000; // yield between slices, as the proxy does between socket reads
    for (let done = 0; done < calls; done += slice) {
      const t0 = process.hrtime.bigint();
      for (let i = done; i < done + slice && i < calls; i++) {
        const p = prepared[i % prepared.length]!;
        const id = sink.statement({ connectionId: conns[i & 7]!, sql: p.sql, statements: p.statements, decision: p.decision, params: null });
        sink.outcome(id, 0, outcome);
      }
      busy += process.hrtime.bigint() - t0;
      await new Promise((r) => setImmediate(r));
    }
    return Number(busy) / 1e6;
  };

  const noAuditMs = await run(new NoAudit(), 'none');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-bench-audit-'));
  const store = await AuditStore.open({ dataDir: dir, log: createLogger({ level: 'warn' }) });
  const started = performance.now();
  const auditMs = await run(store, 'store');
  await store.durable();
  const drainedMs = performance.now() - started;
  const events = store.lastWrittenSeq;
  await store.close();
  const size = fs.statSync(path.join(dir, 'audit.db')).size;
  fs.rmSync(dir, { recursive: true, force: true });
  const perCall = (ms: number): string => `${((ms * 1e6) / calls).toFixed(0)} ns`;
  console.log(`hot path (${calls.toLocaleString('en')} × statement()+outcome(), 8 connections):`);
  console.log(`  NoAudit      ${perCall(noAuditMs)} per statement`);
  console.log(`  AuditStore   ${perCall(auditMs)} per statement on the proxy thread → ${Math.round(calls / (auditMs / 1000)).toLocaleString('en')} statements/s`);
  console.log(`  end to end   ${Math.round(calls / (drainedMs / 1000)).toLocaleString('en')} statements/s written and fsync'd (${events.toLocaleString('en')} events, ${(size / calls).toFixed(0)} bytes per statement on disk)`);
}

/** Child mode: one stepgate, audit on or off, until SIGTERM. */
async function child(configFile: string, audit: 'on' | 'off'): Promise<void> {
  const log = createLogger({ level: 'warn' });
  const app = await startApp(loadConfig({ config: configFile }), log, audit === 'off' ? { audit: new NoAudit() } : {});
  process.stdout.write(`listening ${app.proxyAddress.port}\n`);
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  await app.close();
}

async function startChild(dir: string, audit: 'on' | 'off', upstream: string): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const file = path.join(dir, `stepgate-${audit}.yaml`);
  fs.writeFileSync(file, `listen: 127.0.0.1:${port}\nupstream: ${JSON.stringify(upstream)}\ndata: ${JSON.stringify(path.join(dir, `data-${audit}`))}\nrules: ${JSON.stringify(path.join(REPO_ROOT, 'rules'))}\nconsole: 127.0.0.1:0\n`);
  const identity = new SqliteIdentityStore(path.join(dir, `data-${audit}`));
  if (!identity.getUser('bench')) await identity.addUser('bench', [], makeVerifier('bench-password'));
  identity.close();
  const profile = process.env.AUDIT_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.AUDIT_BENCH_PROFILE}`] : [];
  const proc = spawn(process.execPath, [...profile, HERE, '--child', file, audit], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve());
    proc.once('exit', (code) => reject(new Error(`stepgate (audit ${audit}) exited with ${code}`)));
  });
  return { port, proc };
}

const TICKS_PER_SECOND = 100; // Linux USER_HZ

/** CPU time (clock ticks) of a process: its main thread, and all its threads. */
function cpuTicks(pid: number): { main: number; total: number } {
  const read = (file: string): number => {
    const fields = fs.readFileSync(file, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  };
  return { main: read(`/proc/${pid}/task/${pid}/stat`), total: read(`/proc/${pid}/stat`) };
}

async function pgbench(duration: number, rounds: number, clients: number): Promise<void> {
  const cleanups: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => cleanups.push(fn) };
  try {
    const db = await startPostgres(t, { tcp: true, settings: { shared_buffers: '256MB' } });
    await db.query('CREATE DATABASE bench');
    const direct: PgbenchTarget = { host: '127.0.0.1', port: db.port, user: 'postgres', password: db.password, database: 'bench' };
    await runPgbench(direct, ['-i', '-q', '-s', '10'], 600_000).catch((err: Error) => {
      if (!/unexpected pgbench output/.test(err.message)) throw err;
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-bench-audit-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const upstream = `postgres://postgres:${db.password}@localhost:${db.port}/bench?host=${encodeURIComponent(db.socketDir)}`;
    const results: Record<'on' | 'off', number[]> = { on: [], off: [] };
    const args = ['-S', '-M', 'simple', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(duration), '-n'];
    for (let round = 0; round < rounds; round++) {
      for (const mode of round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
        const { port, proc } = await startChild(dir, mode, upstream);
        const before = cpuTicks(proc.pid!);
        const r = await runPgbench({ host: '127.0.0.1', port, user: 'bench', password: 'bench-password', database: 'bench' }, args, (duration + 60) * 1000);
        const after = cpuTicks(proc.pid!);
        results[mode].push(r.tps);
        const perTx = (ticks: number): string => `${((ticks * 1e6) / TICKS_PER_SECOND / r.transactions).toFixed(1)} µs`;
        console.log(
          `  round ${round + 1} audit ${mode.padEnd(3)} ${Math.round(r.tps).toLocaleString('en')} tps (${r.latencyMs.toFixed(3)} ms); stepgate CPU per statement: proxy thread ${perTx(after.main - before.main)}, all threads ${perTx(after.total - before.total)}`,
        );
        await new Promise<void>((resolve) => {
          proc.once('exit', () => resolve());
          proc.kill('SIGTERM');
        });
      }
    }
    const on = median(results.on);
    const off = median(results.off);
    console.log(`pgbench -S -M simple -c ${clients}, ${duration} s × ${rounds} rounds: audit off ${Math.round(off).toLocaleString('en')} tps, on ${Math.round(on).toLocaleString('en')} tps: ${(((off - on) / off) * 100).toFixed(1)} % slower with the audit trail`);
    const db2 = fs.readdirSync(path.join(dir, 'data-on')).filter((f) => f.startsWith('audit'));
    console.log(`  (audit files: ${db2.join(', ')})`);
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  await child(argv[1]!, argv[2] as 'on' | 'off');
} else {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
      clients: { type: 'string', default: '8' },
      calls: { type: 'string', default: '300000' },
      'skip-pgbench': { type: 'boolean' },
    },
  });
  await microbench(Number(values.calls));
  if (!values['skip-pgbench']) await pgbench(Number(values.duration), Number(values.rounds), Number(values.clients));
}
