/**
 * `npm run bench`, very short, for correctness only: every target answers, pgbench sees no failed
 * transactions, and the report has every section. No timing assertions (speed is for the benchmark).
 */
import t from 'tap';
import { formatReport, runBench } from '../../bench/proxy.js';

t.test('a very short benchmark run', async (t) => {
  const report = await runBench({
    durationSec: 1,
    rounds: 1,
    scale: 1,
    copyMb: 4,
    idleConnections: 20,
    stepUpSamples: 2,
    sharedSamples: 2,
    hugeMb: 1,
    workloads: ['select-only simple', 'tpcb-like extended'],
    clients: [2],
    log: () => {},
  });
  t.equal(report.workloads.length, 2);
  for (const w of report.workloads) {
    const targets = Object.keys(w.runs).sort();
    const expected = ['direct', 'node-pipe', 'stepgate', 'stepgate-unenforced', ...(w.workload.startsWith('select-only') ? ['stepgate-shared'] : []), ...(report.machine.pgbouncer ? ['pgbouncer'] : []), ...(report.machine.pgpool ? ['pgpool'] : [])].sort();
    t.same(targets, expected, `${w.workload}: targets`);
    t.ok(w.runs.stepgate.every((r) => r.cpuUsPerTxn !== null && r.cpuUsPerTxn > 0), `${w.workload}: stepgate's CPU per transaction measured`);
    for (const [target, runs] of Object.entries(w.runs)) {
      for (const r of runs) {
        t.ok(r.transactions > 0, `${w.workload} via ${target}: transactions ran`);
        t.equal(r.failed, 0, `${w.workload} via ${target}: no failed transactions`);
      }
    }
    t.ok(Number.isFinite(w.ratios.stepgateVsDirect), `${w.workload}: ratio to direct computed`);
    t.ok(Number.isFinite(w.ratios.stepgateVsNodePipe), `${w.workload}: ratio to the bare Node.js relay computed`);
    t.ok(Number.isFinite(w.ratios.enforcedVsUnenforced), `${w.workload}: cost of server-enforced reads computed`);
    if (w.workload.startsWith('select-only')) t.ok(Number.isFinite(w.ratios.sharedVsLocal), `${w.workload}: cost of shared state computed`);
  }
  t.ok(report.copy && report.copy.mb >= 3, 'COPY moved the data through both');
  t.ok(report.memory && Number.isFinite(report.memory.perConnectionKiB), 'memory per idle connection measured');
  t.equal(report.stepUp?.samples, 2, 'step-up latency measured with the console');
  t.equal(report.shared?.samples, 2, 'cross-instance step-up latency measured');
  const text = formatReport(report);
  t.match(text, /Throughput[^]*\| select-only simple \| 2 \|[^]*Average latency[^]*\| select-only simple \| 2 \|/);
  t.match(text, /Server-enforced reads[^]*\| select-only simple \| 2 \|/);
  t.match(text, /CPU time per transaction[^]*\| select-only simple \| 2 \|/);
  t.match(text, /COPY TO STDOUT of \d+ MiB: direct \d+ MiB\/s/);
  t.match(text, /Step-up \(2 samples\)/);
  t.match(text, /Shared state \(stepgate with `state:`[^]*\| select-only simple \| 2 \|/);
  t.match(text, /Shared state, two instances \(2 samples\): held on A → shown on B p50 [\d.]+ ms/);
  t.match(text, /Huge Query: SELECT 1 on one connection while another sends a 1 MiB INSERT \(\d+ rows\): direct p99 [\d.]+ ms .*; stepgate p99 [\d.]+ ms /);
});
