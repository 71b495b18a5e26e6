/**
 * Shared pieces of the audit tests: rule files, a step-up broker that answers programmatically, running
 * `stepgate audit ...` in-process, and reading audit.db directly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import Database from 'better-sqlite3';
import { main } from '../../src/cli.js';
import type { AuditStore } from '../../src/audit/store.js';
import { createLogger, type Logger } from '../../src/log.js';
import type { EventRow } from '../../src/audit/format.js';
import type { Hold, HoldOutcome, HoldRequest, StepUpBroker } from '../../src/stepup/types.js';

/** Rules for the audit tests: DROP TABLE denied, TRUNCATE and DELETE without WHERE held, the rest allowed. */
export const AUDIT_RULES = `
default: allow
rules:
  - name: deny-drop
    match:
      command: DROP TABLE
    action: deny
    message: Dropping tables is refused here.
  - name: step-up-truncate
    match:
      command: TRUNCATE TABLE
    action: step-up
    message: Approve the TRUNCATE with your passkey.
  - name: step-up-unbounded
    match:
      class: write
      flags: no_where
    action: step-up
    approvers: {groups: [dba], count: 1}
`;

export function writeRules(t: { teardown(fn: () => unknown): void }, yaml = AUDIT_RULES): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-rules-'));
  fs.writeFileSync(path.join(dir, '10-audit.yaml'), yaml);
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Approves or rejects held statements by what they are, after a short delay. */
export class ScriptedBroker implements StepUpBroker {
  private n = 0;
  readonly requests: HoldRequest[] = [];
  constructor(private readonly answer: (request: HoldRequest) => HoldOutcome, private readonly delayMs = 30) {}

  hold(request: HoldRequest): Hold {
    this.requests.push(request);
    const challengeId = `ch-${++this.n}`;
    let finish!: (o: HoldOutcome) => void;
    const outcome = new Promise<HoldOutcome>((resolve) => (finish = resolve));
    const timer = setTimeout(() => finish(this.answer(request)), this.delayMs);
    return {
      challengeId,
      url: `http://console.test/c/${challengeId}`,
      outcome,
      end(status) {
        clearTimeout(timer);
        finish({ status });
      },
    };
  }

  connectionClosed(): void {}
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `stepgate ARGS` in this process. */
export async function cli(args: string[]): Promise<CliResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  stderr.on('data', (b: Buffer) => err.push(b));
  const code = await main(args, { stdout, stderr, stdin: new PassThrough() });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

export function openDb(dataDir: string): Database.Database {
  return new Database(path.join(dataDir, 'audit.db'));
}

export interface ParsedEvent extends EventRow {
  data: Record<string, any>;
}

export function readEvents(dataDir: string, where = '1 = 1'): ParsedEvent[] {
  const db = openDb(dataDir);
  try {
    return (db.prepare(`SELECT * FROM events WHERE ${where} ORDER BY seq`).all() as EventRow[]).map((r) => ({ ...r, data: JSON.parse(r.body) }));
  } finally {
    db.close();
  }
}

/**
 * Waits until the store has written an event matching `predicate`: reads the trail, and again after each
 * batch the store commits (AuditStore.onCommit), until one matches.
 */
export async function waitForEvent(store: AuditStore, dataDir: string, predicate: (e: ParsedEvent) => boolean, timeoutMs = 10_000): Promise<ParsedEvent> {
  let wake = (): void => {};
  const off = store.onCommit(() => wake());
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for an audit event`)), timeoutMs)));
  timedOut.catch(() => {});
  try {
    for (;;) {
      // Armed before reading: a commit while we read sends us round again.
      const committed = new Promise<void>((resolve) => (wake = resolve));
      await store.durable().catch(() => {});
      const found = readEvents(dataDir).find(predicate);
      if (found) return found;
      await Promise.race([committed, timedOut]);
    }
  } finally {
    off();
    clearTimeout(timer);
  }
}

/**
 * Resolves once Date.now() is past `time`, so that what is recorded next is stamped later than `time`
 * (event times have millisecond resolution). Waits a millisecond at most.
 */
export async function clockPast(time: number): Promise<void> {
  while (Date.now() <= time) await new Promise((resolve) => setImmediate(resolve));
}

export interface CapturedLog {
  log: Logger;
  /** Every line, parsed. */
  lines: Record<string, unknown>[];
  /** The first line of `event`: at once if it was logged already, else when it is. */
  logged(event: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

/** A logger (level debug) that keeps its lines, for tests that check or wait for what was logged. */
export function capturedLog(): CapturedLog {
  const lines: Record<string, unknown>[] = [];
  const waiting = new Set<{ event: string; resolve: (line: Record<string, unknown>) => void }>();
  const log = createLogger({
    level: 'debug',
    write: (text) => {
      const line = JSON.parse(text) as Record<string, unknown>;
      lines.push(line);
      for (const w of waiting) {
        if (w.event !== line.event) continue;
        waiting.delete(w);
        w.resolve(line);
      }
    },
  });
  const logged = (event: string, timeoutMs = 10_000): Promise<Record<string, unknown>> => {
    const already = lines.find((l) => l.event === event);
    if (already) return Promise.resolve(already);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(w);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for the log line ${event}`));
      }, timeoutMs);
      const w = {
        event,
        resolve: (line: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      waiting.add(w);
    });
  };
  return { log, lines, logged };
}

/** A copy of a data directory (to tamper with one copy per case). */
export function copyDataDir(t: { teardown(fn: () => unknown): void }, dataDir: string): string {
  const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-audit-copy-'));
  for (const f of fs.readdirSync(dataDir)) {
    if (f.startsWith('audit')) fs.copyFileSync(path.join(dataDir, f), path.join(copy, f));
  }
  t.teardown(() => fs.rmSync(copy, { recursive: true, force: true }));
  return copy;
}

/** Opens a copy for tampering the way an attacker would: without the append-only triggers. */
export function tamper(dataDir: string, fn: (db: Database.Database) => void): void {
  const db = openDb(dataDir);
  try {
    db.exec('DROP TRIGGER IF EXISTS events_append_only_update; DROP TRIGGER IF EXISTS events_append_only_delete; DROP TRIGGER IF EXISTS checkpoints_append_only;');
    fn(db);
  } finally {
    db.close();
  }
}

/** Replaces times, durations and sizes in a replay transcript so it can be compared with a golden text. */
export function normaliseReplay(text: string): string {
  return text
    .replace(/\[\d\d:\d\d:\d\d\.\d{3} \+\d+\.\d{3}s\]/g, '[T]')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, 'ISO')
    .replace(/(after |-- |within )\d+(\.\d+)? (ms|s|min|h)( \d+ (s|min))?\b/g, '$1D')
    .replace(/\d+(\.\d+)? (B|kB|MB) (in|out)/g, 'N $3')
    .replace(/server pid \d+/g, 'server pid P')
    .replace(/session [0-9a-f-]{36}/g, 'session ID');
}
