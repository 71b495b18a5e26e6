/**
 * Step-up latency with a real console: a real PostgreSQL, stepgate in this process, and the console open
 * in Chromium with a virtual passkey. Per sample, a client sends a DELETE that a rule holds, and we measure:
 *
 *  - challenge: from the moment the client writes the statement to stepgate until its card is in the
 *    console page's DOM (a MutationObserver in the page stamps it with performance.timeOrigin + now(),
 *    the same clock as ours; target p50 ≤ 50 ms);
 *  - release: from the verified approval (the broker resolving the hold, right after the passkey assertion
 *    was checked) until the first byte of the statement's result reaches the client (target p50 ≤ 10 ms).
 *
 * The passkey ceremony itself (browser round trips) is not part of either number.
 *
 *   const r = await benchStepUp({ samples: 30 });
 *   node dist/bench/stepup.js            # prints the numbers (--verbose: every sample;
 *                                        # --without-audit: release without the audit commit, to diagnose)
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Challenge } from '../src/stepup/broker.js';
import { NoAudit } from '../src/audit/types.js';
import { approveOnPage, enroll, launchBrowser, newPerson } from '../test/console/browser.js';
import { enrollmentLink } from '../src/console/url.js';
import { startPostgres } from '../test/helpers/postgres.js';
import { m, RawClient } from '../test/helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate } from '../test/helpers/stepgate.js';
import { percentile } from './lib/stats.js';
import { round2, withTeardown } from './lib/teardown.js';

export interface StepUpBenchOptions {
  /** Measured samples (default 30). */
  samples?: number;
  /** Samples run first and not counted (default 3). */
  warmup?: number;
  /** Progress lines. */
  log?: (line: string) => void;
  /**
   * Diagnosis only: run without the audit trail. Normally a released statement waits for the audit
   * trail's fsync'd commit (the session answers only what is durably recorded), which is part of release.
   */
  withoutAudit?: boolean;
}

export interface StepUpBenchResult {
  challengeP50Ms: number;
  challengeP99Ms: number;
  releaseP50Ms: number;
  releaseP99Ms: number;
  samples: number;
}

export const CHALLENGE_TARGET_MS = 50;
export const RELEASE_TARGET_MS = 10;

// Browser globals, used only inside page.evaluate callbacks (the project compiles without DOM types).
declare const document: { getElementById(id: string): unknown };
declare const window: { __seen: Record<string, number> };
declare const MutationObserver: new (cb: (records: { addedNodes: ArrayLike<{ nodeType: number; getAttribute?(n: string): string | null }> }[]) => void) => {
  observe(target: unknown, options: Record<string, boolean>): void;
};

export async function benchStepUp(opts: StepUpBenchOptions = {}): Promise<StepUpBenchResult> {
  const samples = opts.samples ?? 30;
  const warmup = opts.warmup ?? 3;
  const log = opts.log ?? (() => {});
  return withTeardown(async (t) => {
    const db = await startPostgres(t);
    const total = samples + warmup;
    await db.query(`CREATE TABLE bench (id int PRIMARY KEY); INSERT INTO bench SELECT generate_series(1, ${total})`);
    const sg = await startStepgate(t, db, { rulesDir: path.join(REPO_ROOT, 'fixtures', 'rules', 'console'), users: [ALICE], ...(opts.withoutAudit ? { audit: new NoAudit() } : {}) });
    const browser = await launchBrowser(t);
    const alice = await newPerson(browser, 'alice');
    await enroll(alice, enrollmentLink(sg.consoleUrl!, (await sg.identity.issueEnrollment('alice')).token));
    const page = alice.page;
    // Stamp each card the moment it enters the DOM.
    await page.evaluate(() => {
      window.__seen = {};
      const list = document.getElementById('pending');
      new MutationObserver((records) => {
        const at = performance.timeOrigin + performance.now();
        for (const r of records) {
          for (const n of Array.from(r.addedNodes)) {
            const id = n.nodeType === 1 ? n.getAttribute?.('data-challenge-id') : null;
            if (id && !(id in window.__seen)) window.__seen[id] = at;
          }
        }
      }).observe(list, { childList: true });
    });

    let resolvedAt = 0;
    let heldId = '';
    sg.broker!.addListener({
      challengeCreated: (c: Challenge) => void (heldId = c.id),
      challengeUpdated: () => {},
      challengeResolved: () => void (resolvedAt = performance.now()),
      grantsChanged: () => {},
    });

    const raw = await RawClient.connect({ host: sg.host, port: sg.port });
    t.teardown(() => raw.socket.destroy());
    await raw.login({ user: ALICE.name, password: ALICE.password, database: 'postgres' });
    let lastData = 0;
    const dataTimes: number[] = [];
    raw.socket.on('data', () => {
      lastData = performance.now();
      dataTimes.push(lastData);
    });

    const challengeMs: number[] = [];
    const releaseMs: number[] = [];
    for (let i = 1; i <= total; i++) {
      dataTimes.length = 0;
      resolvedAt = 0;
      heldId = '';
      const sentAt = performance.timeOrigin + performance.now();
      raw.send(m.query(`DELETE FROM bench WHERE id = ${i}`));
      await raw.until((msg) => msg.type === 'N');
      const id = heldId;
      await page.locator(`[data-challenge-id="${id}"]`).waitFor({ state: 'attached' });
      const seenAt = await page.evaluate((cid) => window.__seen[cid]!, id);
      const outcome = await approveOnPage(page, id);
      if (outcome !== 'approved') throw new Error(`sample ${i}: approval failed: ${outcome}`);
      const replies = await raw.untilReady();
      if (!replies.some((msg) => msg.type === 'C' && msg.tag === 'DELETE 1')) throw new Error(`sample ${i}: the DELETE did not run`);
      const firstAfter = dataTimes.find((time) => time >= resolvedAt);
      if (!resolvedAt || firstAfter === undefined) throw new Error(`sample ${i}: no approval time or result byte`);
      if (i > warmup) {
        challengeMs.push(seenAt - sentAt);
        releaseMs.push(firstAfter - resolvedAt);
      }
      log(`sample ${i}${i <= warmup ? ' (warm-up)' : ''}: challenge ${(seenAt - sentAt).toFixed(2)} ms, release ${(firstAfter - resolvedAt).toFixed(2)} ms`);
    }
    return {
      challengeP50Ms: round2(percentile(challengeMs, 50)),
      challengeP99Ms: round2(percentile(challengeMs, 99)),
      releaseP50Ms: round2(percentile(releaseMs, 50)),
      releaseP99Ms: round2(percentile(releaseMs, 99)),
      samples: challengeMs.length,
    };
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const verbose = process.argv.includes('--verbose');
  const withoutAudit = process.argv.includes('--without-audit');
  const r = await benchStepUp({ log: verbose ? (line) => console.log(line) : undefined, withoutAudit });
  const mark = (value: number, target: number): string => (value <= target ? 'ok' : 'OVER TARGET');
  console.log(`step-up, ${r.samples} samples, real Chromium console with a virtual passkey${withoutAudit ? ', WITHOUT the audit trail' : ''}`);
  console.log(`  challenge on the console  p50 ${r.challengeP50Ms} ms  p99 ${r.challengeP99Ms} ms  (target p50 <= ${CHALLENGE_TARGET_MS} ms: ${mark(r.challengeP50Ms, CHALLENGE_TARGET_MS)})`);
  console.log(`  release after approval    p50 ${r.releaseP50Ms} ms  p99 ${r.releaseP99Ms} ms  (target p50 <= ${RELEASE_TARGET_MS} ms: ${mark(r.releaseP50Ms, RELEASE_TARGET_MS)})`);
}
