/**
 * `npm run bench`: stepgate against a direct connection, pgbouncer and a bare Node.js socket relay (the
 * floor for a proxy written in Node.js), in one run on one machine.
 *
 * pgbench runs against the targets interleaved (A B C D, A B C D, ...) so that drift in the machine's
 * speed hits all of them alike; each ratio is taken within a round, and the report shows the median of
 * the ratios. Also COPY TO STDOUT throughput, stepgate's memory per idle connection, and the latency of small
 * queries while another connection sends a huge Query.
 *
 *   npm run bench                       # the full run (several minutes)
 *   npm run bench -- --duration 5 --rounds 2 --copy-mb 50 --idle 200 --step-up 10 --shared 10 --huge-mb 2
 */
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { startPostgres, type TestPostgres } from '../test/helpers/postgres.js';
import { hasPgbench, runPgbench, type PgbenchResult } from './lib/pgbench.js';
import { m, RawClient } from '../test/helpers/raw-client.js';
import { median, percentile } from './lib/stats.js';
import { benchShared, type SharedBenchResult } from './shared.js';
import { benchStepUp, type StepUpBenchResult } from './stepup.js';
import { cpuSeconds, directTarget, hasPgbouncer, hasPgpool, REPO_ROOT, rssKiB, startNodePipe, startPgbouncer, startPgpool, startStepgateProcess, type Target } from './lib/targets.js';

export interface BenchOptions {
  durationSec: number;
  rounds: number;
  scale: number;
  copyMb: number;
  idleConnections: number;
  /** Step-up latency samples with a real browser console (0 skips it). */
  stepUpSamples: number;
  /** Cross-instance step-up samples, two stepgates on one state database (0 or absent skips it). */
  sharedSamples?: number;
  /** MiB of the huge Query sent while small queries run on another connection (0 or absent skips it). */
  hugeMb?: number;
  workloads?: string[];
  clients?: number[];
  log(line: string): void;
}

/** One pgbench run, with the CPU time the target's process used during it (null for direct). */
export interface RunResult extends PgbenchResult {
  cpuUsPerTxn: number | null;
}

export interface WorkloadResult {
  workload: string;
  clients: number;
  /** Statements per transaction (select-only 1, tpcb-like 7). */
  statementsPerTxn: number;
  /** Per target: one result per round. */
  runs: Record<string, RunResult[]>;
  ratios: {
    stepgateVsDirect: number;
    stepgateVsPgbouncer: number | null;
    pgbouncerVsDirect: number | null;
    nodePipeVsDirect: number;
    stepgateVsNodePipe: number;
    stepgateVsPgpool: number | null;
    /** What server-enforced reads cost: stepgate / stepgate without them (1.0 = nothing). */
    enforcedVsUnenforced: number;
    /** What shared state costs (select-only workloads only): stepgate on `state:` / stepgate alone. */
    sharedVsLocal: number | null;
  };
  /** stepgate's own CPU per statement beyond the bare relay (stepgate − node-pipe), µs, median over rounds. */
  ownCpuUsPerStatement: number | null;
  /** stepgate's average latency minus direct's, in µs (median over rounds). */
  addedLatencyUs: number;
  /** The same for pgbouncer (null when not installed). */
  pgbouncerAddedLatencyUs: number | null;
}

export interface BenchReport {
  machine: { cpu: string; cores: number; memoryGiB: number; node: string; postgres: string; pgbouncer: boolean; pgpool: boolean };
  workloads: WorkloadResult[];
  /** MiB (2^20 bytes) copied; MiB/s by target (medians); the median of the per-round ratios stepgate/direct. */
  copy: { mb: number; mbps: Record<string, number>; ratio: number } | null;
  memory: { idleConnections: number; baselineKiB: number; loadedKiB: number; perConnectionKiB: number } | null;
  stepUp: StepUpBenchResult | null;
  shared: SharedBenchResult | null;
  /**
   * Small queries on one connection while another sends one huge Query (an INSERT of many rows): latency of
   * the small ones during it, by target.
   */
  huge: { mb: number; rows: number; results: Record<string, { queries: number; p50Ms: number; p99Ms: number; maxMs: number; seconds: number }> } | null;
}

const WORKLOADS: Record<string, { args: string[]; rules: string; statements: number }> = {
  'select-only simple': { args: ['-S', '-M', 'simple'], rules: path.join(REPO_ROOT, 'rules'), statements: 1 },
  'select-only extended': { args: ['-S', '-M', 'extended'], rules: path.join(REPO_ROOT, 'rules'), statements: 1 },
  // tpcb-like writes; a rule set without step-up measures the relay, not a person.
  'tpcb-like simple': { args: ['-M', 'simple'], rules: path.join(REPO_ROOT, 'fixtures', 'rules', 'no-step-up'), statements: 7 },
  'tpcb-like extended': { args: ['-M', 'extended'], rules: path.join(REPO_ROOT, 'fixtures', 'rules', 'no-step-up'), statements: 7 },
};

const DATABASE = 'bench';
const STATE_DATABASE = 'stepgate_state';

export async function runBench(options: BenchOptions): Promise<BenchReport> {
  const cleanups: (() => unknown)[] = [];
  const t = { teardown: (fn: () => unknown) => cleanups.push(fn) };
  try {
    if (!(await hasPgbench())) throw new Error('pgbench is not installed (Debian/Ubuntu: apt install postgresql-client)');
    const withPgbouncer = hasPgbouncer();
    if (!withPgbouncer) options.log('pgbouncer is not installed: skipping it (Debian/Ubuntu: apt install pgbouncer)');
    const withPgpool = hasPgpool();
    if (!withPgpool) options.log('pgpool-II is not installed: skipping it (Debian/Ubuntu: apt install pgpool2)');
    const maxClients = Math.max(options.idleConnections, ...(options.clients ?? [1, 8]));
    // trust: pgpool-II relays client authentication only that way without a password file of its own; a
    // login is a one-time cost per pgbench client, so it does not change what is measured.
    const db = await startPostgres(t, { tcp: true, authMethod: 'trust', settings: { max_connections: String(maxClients * 2 + 100), shared_buffers: '256MB' } });
    await db.query(`CREATE DATABASE ${DATABASE}`);
    const direct = directTarget(db, DATABASE);
    options.log(`pgbench -i -s ${options.scale} ...`);
    await runPgbench(direct, ['-i', '-q', '-s', String(options.scale)], 600_000).catch((err: Error) => {
      // pgbench -i prints no tps summary; only a failure matters.
      if (!/unexpected pgbench output/.test(err.message)) throw err;
    });
    const version = (await db.query('SHOW server_version')).rows[0].server_version as string;

    const report: BenchReport = {
      machine: {
        cpu: os.cpus()[0]?.model ?? 'unknown',
        cores: os.cpus().length,
        memoryGiB: Math.round(os.totalmem() / 2 ** 30),
        node: process.version,
        postgres: version,
        pgbouncer: withPgbouncer,
        pgpool: withPgpool,
      },
      workloads: [],
      copy: null,
      memory: null,
      stepUp: null,
      shared: null,
      huge: null,
    };

    const pgbouncer = withPgbouncer ? await startPgbouncer(db, DATABASE, maxClients) : null;
    if (pgbouncer) cleanups.push(() => pgbouncer.stop());
    const pgpool = withPgpool ? await startPgpool(db, DATABASE, maxClients) : null;
    if (pgpool) cleanups.push(() => pgpool.stop());
    const nodePipe = await startNodePipe(db, DATABASE);
    cleanups.push(() => nodePipe.stop());
    const stepgates = new Map<string, Target>();
    await db.query(`CREATE DATABASE ${STATE_DATABASE}`);
    const stepgateFor = async (rules: string, enforceReads = true, shared = false): Promise<Target> => {
      const key = `${rules}\0${enforceReads}\0${shared}`;
      let target = stepgates.get(key);
      if (!target) {
        target = await startStepgateProcess(db, DATABASE, rules, { enforceReads, ...(shared ? { stateDatabase: STATE_DATABASE } : {}) });
        const started = target;
        cleanups.push(() => started.stop());
        stepgates.set(key, target);
      }
      return target;
    };

    for (const name of options.workloads ?? Object.keys(WORKLOADS)) {
      const workload = WORKLOADS[name];
      if (!workload) throw new Error(`unknown workload "${name}"; known: ${Object.keys(WORKLOADS).join(', ')}`);
      const stepgate = await stepgateFor(workload.rules);
      const unenforced = await stepgateFor(workload.rules, false);
      // What sharing the state costs the statement path: measured where it would show, on the cheapest statements.
      const shared = name.startsWith('select-only') ? await stepgateFor(workload.rules, true, true) : null;
      const targets = [direct, ...(pgbouncer ? [pgbouncer] : []), ...(pgpool ? [pgpool] : []), nodePipe, stepgate, unenforced, ...(shared ? [shared] : [])];
      for (const clients of options.clients ?? [1, 8]) {
        const runs: Record<string, RunResult[]> = Object.fromEntries(targets.map((x) => [x.name, []]));
        for (let round = 0; round < options.rounds; round++) {
          for (const target of targets) {
            const args = ['-n', ...workload.args, '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(options.durationSec)];
            const cpuBefore = cpuSeconds(target);
            const result = await runPgbench(target, args, (options.durationSec + 60) * 1000);
            const cpuAfter = cpuSeconds(target);
            const cpuUsPerTxn = cpuBefore === null || cpuAfter === null ? null : ((cpuAfter - cpuBefore) * 1e6) / Math.max(1, result.transactions);
            runs[target.name].push({ ...result, cpuUsPerTxn });
            options.log(
              `${name}, ${clients} client(s), round ${round + 1}: ${target.name} ${result.tps.toFixed(0)} tps, ${(result.latencyMs * 1000).toFixed(0)} µs, ${result.failed} failed` +
                (cpuUsPerTxn === null ? '' : `, ${cpuUsPerTxn.toFixed(1)} µs CPU per transaction`),
            );
          }
        }
        const ratio = (a: string, b: string): number => median(runs[a].map((r, i) => r.tps / runs[b][i].tps));
        const own = runs.stepgate.map((r, i) => (r.cpuUsPerTxn !== null && runs['node-pipe'][i].cpuUsPerTxn !== null ? (r.cpuUsPerTxn - runs['node-pipe'][i].cpuUsPerTxn!) / workload.statements : NaN));
        report.workloads.push({
          workload: name,
          clients,
          statementsPerTxn: workload.statements,
          ownCpuUsPerStatement: own.every(Number.isFinite) ? median(own) : null,
          runs,
          ratios: {
            stepgateVsDirect: ratio('stepgate', 'direct'),
            stepgateVsPgbouncer: pgbouncer ? ratio('stepgate', 'pgbouncer') : null,
            pgbouncerVsDirect: pgbouncer ? ratio('pgbouncer', 'direct') : null,
            nodePipeVsDirect: ratio('node-pipe', 'direct'),
            stepgateVsNodePipe: ratio('stepgate', 'node-pipe'),
            stepgateVsPgpool: pgpool ? ratio('stepgate', 'pgpool') : null,
            enforcedVsUnenforced: ratio('stepgate', 'stepgate-unenforced'),
            sharedVsLocal: shared ? ratio('stepgate-shared', 'stepgate') : null,
          },
          addedLatencyUs: median(runs.stepgate.map((r, i) => (r.latencyMs - runs.direct[i].latencyMs) * 1000)),
          pgbouncerAddedLatencyUs: pgbouncer ? median(runs.pgbouncer.map((r, i) => (r.latencyMs - runs.direct[i].latencyMs) * 1000)) : null,
        });
      }
    }

    // COPY TO is a bulk export, which the shipped rules hold for step-up: measure the relay.
    const relayOnly = WORKLOADS['tpcb-like simple'].rules;
    if (options.copyMb > 0) report.copy = await benchCopy(db, [direct, ...(pgbouncer ? [pgbouncer] : []), nodePipe, await stepgateFor(relayOnly)], options);
    if (options.idleConnections > 0) {
      // A stepgate of its own: one that has served the workloads has a heap that shrinks under the measurement.
      const fresh = await startStepgateProcess(db, DATABASE, relayOnly);
      try {
        report.memory = await benchIdleMemory(fresh, options);
      } finally {
        await fresh.stop();
      }
    }
    if ((options.hugeMb ?? 0) > 0) {
      report.huge = await benchHugeQuery(db, [direct, await stepgateFor(WORKLOADS['select-only simple'].rules)], options);
    }
    if (options.stepUpSamples > 0) {
      options.log(`step-up: ${options.stepUpSamples} samples with a browser console ...`);
      report.stepUp = await benchStepUp({ samples: options.stepUpSamples, log: options.log });
    }
    if ((options.sharedSamples ?? 0) > 0) {
      options.log(`shared state: ${options.sharedSamples} cross-instance step-up samples ...`);
      report.shared = await benchShared({ samples: options.sharedSamples });
    }
    return report;
  } finally {
    for (const fn of cleanups.reverse()) await fn();
  }
}

async function copyOnce(target: Target): Promise<{ bytes: number; seconds: number }> {
  const client = new pg.Client({ host: target.host, port: target.port, user: target.user, password: target.password, database: target.database });
  await client.connect();
  try {
    const started = process.hrtime.bigint();
    const stream = client.query(copyTo('COPY bench_copy TO STDOUT'));
    let bytes = 0;
    for await (const chunk of stream) bytes += (chunk as Buffer).length;
    return { bytes, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
  } finally {
    await client.end();
  }
}

async function benchCopy(db: TestPostgres, targets: Target[], options: BenchOptions): Promise<BenchReport['copy']> {
  // 79-80 bytes per row in COPY text format.
  const rows = Math.ceil((options.copyMb * 1024 * 1024) / 80);
  options.log(`COPY: creating ${options.copyMb} MiB of rows ...`);
  await db.query(
    `CREATE TABLE bench_copy AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || '-' || (g % 1000) AS payload FROM generate_series(1, ${rows}) g`,
    DATABASE,
  );
  const speeds: Record<string, number[]> = Object.fromEntries(targets.map((x) => [x.name, []]));
  let bytes = 0;
  // A copy takes about a second: more rounds than pgbench, so that one badly scheduled round does not decide.
  for (let round = 0; round < Math.max(5, options.rounds); round++) {
    for (const target of targets) {
      const r = await copyOnce(target);
      bytes = r.bytes;
      speeds[target.name].push(r.bytes / 2 ** 20 / r.seconds);
      options.log(`COPY TO STDOUT round ${round + 1}: ${target.name} ${(r.bytes / 2 ** 20 / r.seconds).toFixed(0)} MiB/s`);
    }
  }
  const mbps = Object.fromEntries(Object.entries(speeds).map(([name, list]) => [name, median(list)]));
  return { mb: Math.round(bytes / 2 ** 20), mbps, ratio: median(speeds.stepgate.map((s, i) => s / speeds.direct[i])) };
}

async function benchIdleMemory(stepgate: Target, options: BenchOptions): Promise<BenchReport['memory']> {
  const pid = stepgate.pid as number;
  const clients: pg.Client[] = [];
  // The first connections load code and caches that every later one shares: not per-connection memory.
  for (let i = 0; i < 20; i++) {
    const c = new pg.Client({ host: stepgate.host, port: stepgate.port, user: stepgate.user, password: stepgate.password, database: stepgate.database });
    await c.connect();
    await c.query('SELECT 1');
    await c.end();
  }
  const baselineKiB = rssKiB(pid);
  options.log(`memory: opening ${options.idleConnections} idle connections through stepgate ...`);
  try {
    for (let i = 0; i < options.idleConnections; i += 50) {
      const batch = Array.from({ length: Math.min(50, options.idleConnections - i) }, () => {
        const c = new pg.Client({ host: stepgate.host, port: stepgate.port, user: stepgate.user, password: stepgate.password, database: stepgate.database });
        clients.push(c);
        return c.connect();
      });
      await Promise.all(batch);
    }
    // Every connection has run a query, so its buffers and caches are as they stay when idle.
    await Promise.all(clients.map((c) => c.query('SELECT 1')));
    const loadedKiB = rssKiB(pid);
    return { idleConnections: options.idleConnections, baselineKiB, loadedKiB, perConnectionKiB: (loadedKiB - baselineKiB) / options.idleConnections };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  }
}

/**
 * While one connection sends a huge Query (an INSERT of many rows, built beforehand), another runs SELECT 1
 * in a loop: what a huge text costs everybody else. Raw protocol clients, so that this process spends
 * nothing on building the big message while it measures.
 */
async function benchHugeQuery(db: TestPostgres, targets: Target[], options: BenchOptions): Promise<BenchReport['huge']> {
  const mb = options.hugeMb ?? 10;
  const rows: string[] = [];
  for (let i = 0, length = 0; length < mb * 2 ** 20; i++) {
    const row = `(${i}, 'name ${i}')`;
    rows.push(row);
    length += row.length + 1;
  }
  const bigQuery = m.query(`INSERT INTO bench_huge (id, name) VALUES ${rows.join(',')}`);
  await db.query('CREATE TABLE bench_huge (id int, name text)', DATABASE);
  const results: NonNullable<BenchReport['huge']>['results'] = {};
  for (const target of targets) {
    options.log(`huge Query: ${mb} MiB INSERT via ${target.name}, SELECT 1 on another connection ...`);
    const open = async (): Promise<RawClient> => {
      const c = await RawClient.connect({ host: target.host, port: target.port });
      await c.login({ user: target.user, password: target.password, database: target.database });
      return c;
    };
    const small = await open();
    const bulk = await open();
    try {
      const selectOne = m.query('SELECT 1');
      const timed = async (): Promise<number> => {
        const started = performance.now();
        small.send(selectOne);
        await small.untilReady();
        return performance.now() - started;
      };
      for (let i = 0; i < 200; i++) await timed();
      let done = false;
      const started = performance.now();
      bulk.send(bigQuery);
      const finished = bulk.untilReady(600_000).finally(() => (done = true));
      const latencies: number[] = [];
      while (!done) latencies.push(await timed());
      const replies = await finished;
      const error = replies.find((r) => r.type === 'E');
      if (error) throw new Error(`the huge INSERT failed via ${target.name}: ${String(error.message)}`);
      results[target.name] = {
        queries: latencies.length,
        p50Ms: percentile(latencies, 50),
        p99Ms: percentile(latencies, 99),
        maxMs: Math.max(...latencies),
        seconds: (performance.now() - started) / 1000,
      };
      await db.query('TRUNCATE bench_huge', DATABASE);
    } finally {
      small.end();
      bulk.end();
    }
  }
  return { mb, rows: rows.length, results };
}

const f = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toFixed(digits) : '-');

export function formatReport(report: BenchReport): string {
  const m = report.machine;
  const lines: string[] = [];
  lines.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; Node ${m.node}; PostgreSQL ${m.postgres}; pgbouncer ${m.pgbouncer ? 'yes' : 'not installed'}; pgpool-II ${m.pgpool ? 'yes' : 'not installed'}`,
  );
  lines.push('');
  const names = ['direct', ...(m.pgbouncer ? ['pgbouncer'] : []), ...(m.pgpool ? ['pgpool'] : []), 'node-pipe', 'stepgate'];
  const ratio = (r: number | null): string => (r === null ? '-' : `${f(r, 2)}×`);
  lines.push('Throughput (tps; ratios are medians of the per-round ratios; node-pipe is a bare Node.js socket relay, the floor for a Node.js proxy):');
  lines.push('');
  lines.push(
    `| workload | clients | ${names.join(' | ')} | stepgate/direct | stepgate/pgbouncer | stepgate/pgpool | stepgate/node-pipe | pgbouncer/direct | node-pipe/direct |`,
  );
  lines.push(`|---|---|${names.map(() => '---|').join('')}---|---|---|---|---|---|`);
  const medianOf = (w: WorkloadResult, name: string, value: (r: RunResult) => number | null, digits = 0): string => {
    const list = w.runs[name]?.map(value).filter((x): x is number => x !== null);
    return list && list.length > 0 ? f(median(list), digits) : '-';
  };
  for (const w of report.workloads) {
    const r = w.ratios;
    const tps = names.map((name) => medianOf(w, name, (x) => x.tps)).join(' | ');
    lines.push(
      `| ${w.workload} | ${w.clients} | ${tps} | ${ratio(r.stepgateVsDirect)} | ${ratio(r.stepgateVsPgbouncer)} | ${ratio(r.stepgateVsPgpool)} | ${ratio(r.stepgateVsNodePipe)} | ${ratio(r.pgbouncerVsDirect)} | ${ratio(r.nodePipeVsDirect)} |`,
    );
  }
  lines.push('');
  lines.push("CPU time per transaction (µs, all threads of the target's process, from /proc; \"own\" is stepgate minus node-pipe, per statement):");
  lines.push('');
  const cpuNames = names.filter((n) => n !== 'direct');
  lines.push(`| workload | clients | ${cpuNames.join(' | ')} | stepgate own per statement |`);
  lines.push(`|---|---|${cpuNames.map(() => '---|').join('')}---|`);
  for (const w of report.workloads) {
    const cpu = cpuNames.map((name) => medianOf(w, name, (x) => x.cpuUsPerTxn, 1)).join(' | ');
    lines.push(`| ${w.workload} | ${w.clients} | ${cpu} | ${w.ownCpuUsPerStatement === null ? '-' : f(w.ownCpuUsPerStatement, 1)} |`);
  }
  lines.push('');
  lines.push('Server-enforced reads (stepgate / stepgate with them switched off, same run):');
  lines.push('');
  lines.push('| workload | clients | stepgate | without enforced reads | ratio |');
  lines.push('|---|---|---|---|---|');
  for (const w of report.workloads) {
    lines.push(`| ${w.workload} | ${w.clients} | ${medianOf(w, 'stepgate', (x) => x.tps)} | ${medianOf(w, 'stepgate-unenforced', (x) => x.tps)} | ${ratio(w.ratios.enforcedVsUnenforced)} |`);
  }
  if (report.workloads.some((w) => w.ratios.sharedVsLocal !== null)) {
    lines.push('');
    lines.push('Shared state (stepgate with `state:` on PostgreSQL / stepgate alone, same run):');
    lines.push('');
    lines.push('| workload | clients | stepgate | stepgate-shared | ratio |');
    lines.push('|---|---|---|---|---|');
    for (const w of report.workloads) {
      if (w.ratios.sharedVsLocal === null) continue;
      lines.push(`| ${w.workload} | ${w.clients} | ${medianOf(w, 'stepgate', (x) => x.tps)} | ${medianOf(w, 'stepgate-shared', (x) => x.tps)} | ${ratio(w.ratios.sharedVsLocal)} |`);
    }
  }
  lines.push('');
  lines.push('Average latency (µs; "added" is the target minus direct, the median over rounds):');
  lines.push('');
  lines.push(`| workload | clients | ${names.join(' | ')} | stepgate added | pgbouncer added |`);
  lines.push(`|---|---|${names.map(() => '---|').join('')}---|---|`);
  for (const w of report.workloads) {
    const lat = names.map((name) => medianOf(w, name, (x) => x.latencyMs * 1000)).join(' | ');
    lines.push(`| ${w.workload} | ${w.clients} | ${lat} | ${f(w.addedLatencyUs)} | ${w.pgbouncerAddedLatencyUs === null ? '-' : f(w.pgbouncerAddedLatencyUs)} |`);
  }
  if (report.copy) {
    lines.push('');
    const speeds = Object.entries(report.copy.mbps).map(([name, mbps]) => `${name} ${f(mbps)} MiB/s`);
    lines.push(`COPY TO STDOUT of ${report.copy.mb} MiB: ${speeds.join(', ')}; stepgate/direct ${f(report.copy.ratio, 2)}×`);
  }
  if (report.memory) {
    lines.push(
      `Memory: ${report.memory.idleConnections} idle connections: stepgate RSS ${f(report.memory.baselineKiB / 1024)} → ${f(report.memory.loadedKiB / 1024)} MiB, ${f(report.memory.perConnectionKiB, 1)} KiB per connection`,
    );
  }
  if (report.huge) {
    const h = report.huge;
    const parts = Object.entries(h.results).map(
      ([name, r]) => `${name} p99 ${f(r.p99Ms, 1)} ms (p50 ${f(r.p50Ms, 2)}, max ${f(r.maxMs, 0)}, ${r.queries} queries; the INSERT took ${f(r.seconds, 1)} s)`,
    );
    lines.push(`Huge Query: SELECT 1 on one connection while another sends a ${h.mb} MiB INSERT (${h.rows} rows): ${parts.join('; ')}`);
  }
  if (report.stepUp) {
    const s = report.stepUp;
    lines.push(
      `Step-up (${s.samples} samples): statement → challenge on the console p50 ${f(s.challengeP50Ms, 1)} ms (p99 ${f(s.challengeP99Ms, 1)}); approval → first result byte p50 ${f(s.releaseP50Ms, 1)} ms (p99 ${f(s.releaseP99Ms, 1)})`,
    );
  }
  if (report.shared) {
    const s = report.shared;
    lines.push(
      `Shared state, two instances (${s.samples} samples): held on A → shown on B p50 ${f(s.heldP50Ms, 1)} ms (p99 ${f(s.heldP99Ms, 1)}); approval on B → first result byte on A p50 ${f(s.approvalP50Ms, 1)} ms (p99 ${f(s.approvalP99Ms, 1)})`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '3' },
      scale: { type: 'string', default: '10' },
      'copy-mb': { type: 'string', default: '256' }, // MiB of COPY text the table is sized to
      idle: { type: 'string', default: '1000' },
      'step-up': { type: 'string', default: '30' },
      shared: { type: 'string', default: '30' }, // cross-instance step-up samples (two stepgates, one state database)
      'huge-mb': { type: 'string', default: '10' }, // MiB of the huge Query sent while small queries run
      workload: { type: 'string', multiple: true },
      clients: { type: 'string', multiple: true },
      json: { type: 'string' },
    },
  });
  const report = await runBench({
    durationSec: Number(values.duration),
    rounds: Number(values.rounds),
    scale: Number(values.scale),
    copyMb: Number(values['copy-mb']),
    idleConnections: Number(values.idle),
    stepUpSamples: Number(values['step-up']),
    sharedSamples: Number(values.shared),
    hugeMb: Number(values['huge-mb']),
    workloads: values.workload,
    clients: values.clients?.map(Number),
    log: (line) => process.stderr.write(line + '\n'),
  });
  if (values.json) (await import('node:fs')).writeFileSync(values.json, JSON.stringify(report, null, 2));
  process.stdout.write(formatReport(report) + '\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main().catch((err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  });
}
