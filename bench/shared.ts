/**
 * Cross-instance step-up latency: two stepgates (A and B) sharing their state on a real PostgreSQL
 * (`state:`), in this process, each with its own listener, pool and LISTEN connection; a client on A.
 * Per sample, the client sends a DELETE that a rule holds on A, and we measure:
 *
 *  - held → on B: from A's broker creating the challenge to B's broker showing its copy (what B's consoles
 *    are sent at that moment; target p50 ≤ 100 ms);
 *  - approval on B → released on A: from B's broker being asked to approve (the call the console makes
 *    once a passkey assertion is verified) to the first byte of the statement's result at the client on A
 *    (the approval's transaction, the notice, A reading the outcome, the statement running; target p50
 *    ≤ 20 ms).
 *
 *   node dist/bench/shared.js [--samples N] [--verbose]
 */
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import type { Challenge } from '../src/stepup/broker.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { m, RawClient } from '../test/helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate, type TestStepgate } from '../test/helpers/stepgate.js';
import { percentile } from './lib/stats.js';
import { round2, withTeardown } from './lib/teardown.js';
import path from 'node:path';

export interface SharedBenchResult {
  heldP50Ms: number;
  heldP99Ms: number;
  approvalP50Ms: number;
  approvalP99Ms: number;
  samples: number;
}

export const HELD_TARGET_MS = 100;
export const APPROVAL_TARGET_MS = 20;

export async function benchShared(opts: { samples?: number; warmup?: number; log?: (line: string) => void } = {}): Promise<SharedBenchResult> {
  const samples = opts.samples ?? 30;
  const warmup = opts.warmup ?? 3;
  const log = opts.log ?? (() => {});
  return withTeardown(async (t) => {
    const db = await startPostgres(t);
    const total = samples + warmup;
    await db.query('CREATE DATABASE stepgate_state');
    await db.query(`CREATE TABLE bench (id int PRIMARY KEY); INSERT INTO bench SELECT generate_series(1, ${total})`);
    const start = (name: string): Promise<TestStepgate> =>
      startStepgate(t, db, {
        rulesDir: path.join(REPO_ROOT, 'fixtures', 'rules', 'console'),
        users: [ALICE],
        configYaml: `state:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: ${name}\n`,
      });
    const a = await start('bench-a');
    const b = await start('bench-b');
    await a.identity.addPasskey({ id: 'cred-alice', user: ALICE.name, publicKey: new Uint8Array(32), counter: 0, transports: [], name: 'k', deviceType: null, backedUp: false });

    const createdAt = new Map<string, number>();
    let onPeer: ((c: Challenge, at: number) => void) | null = null;
    a.broker!.addListener({ challengeCreated: (c) => void createdAt.set(c.id, performance.now()), challengeUpdated() {}, challengeResolved() {}, grantsChanged() {} });
    b.broker!.addListener({ challengeCreated: (c) => onPeer?.(c, performance.now()), challengeUpdated() {}, challengeResolved() {}, grantsChanged() {} });

    const raw = await RawClient.connect({ host: a.host, port: a.port });
    t.teardown(() => raw.socket.destroy());
    await raw.login({ user: ALICE.name, password: ALICE.password, database: 'postgres' });
    const dataTimes: number[] = [];
    raw.socket.on('data', () => dataTimes.push(performance.now()));

    const heldMs: number[] = [];
    const approvalMs: number[] = [];
    for (let i = 1; i <= total; i++) {
      dataTimes.length = 0;
      const seen = new Promise<{ c: Challenge; at: number }>((resolve) => (onPeer = (c, at) => resolve({ c, at })));
      raw.send(m.query(`DELETE FROM bench WHERE id = ${i}`));
      const { c, at } = await seen;
      const held = at - createdAt.get(c.id)!;
      const askedAt = performance.now();
      const r = await b.broker!.approve(c.id, ALICE.name, 'cred-alice');
      if (!r.ok || r.status !== 'approved') throw new Error(`sample ${i}: approval on B failed: ${JSON.stringify(r)}`);
      const replies = await raw.untilReady();
      if (!replies.some((msg) => msg.type === 'C' && msg.tag === 'DELETE 1')) throw new Error(`sample ${i}: the DELETE did not run`);
      const firstAfter = dataTimes.find((time) => time >= askedAt);
      if (firstAfter === undefined) throw new Error(`sample ${i}: no result byte`);
      if (i > warmup) {
        heldMs.push(held);
        approvalMs.push(firstAfter - askedAt);
      }
      log(`sample ${i}${i <= warmup ? ' (warm-up)' : ''}: held → on B ${held.toFixed(2)} ms, approval on B → result on A ${(firstAfter - askedAt).toFixed(2)} ms`);
    }
    return {
      heldP50Ms: round2(percentile(heldMs, 50)),
      heldP99Ms: round2(percentile(heldMs, 99)),
      approvalP50Ms: round2(percentile(approvalMs, 50)),
      approvalP99Ms: round2(percentile(approvalMs, 99)),
      samples: heldMs.length,
    };
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { samples: { type: 'string', default: '30' }, verbose: { type: 'boolean', default: false } } });
  const r = await benchShared({ samples: Number(values.samples), log: values.verbose ? (line) => console.log(line) : undefined });
  const mark = (value: number, target: number): string => (value <= target ? 'ok' : 'OVER TARGET');
  console.log(`shared state, ${r.samples} samples, two stepgates on one state database`);
  console.log(`  held on A → shown on B        p50 ${r.heldP50Ms} ms  p99 ${r.heldP99Ms} ms  (target p50 <= ${HELD_TARGET_MS} ms: ${mark(r.heldP50Ms, HELD_TARGET_MS)})`);
  console.log(`  approval on B → result on A   p50 ${r.approvalP50Ms} ms  p99 ${r.approvalP99Ms} ms  (target p50 <= ${APPROVAL_TARGET_MS} ms: ${mark(r.approvalP50Ms, APPROVAL_TARGET_MS)})`);
}
