/**
 * The classification worker thread: classifies large texts (and texts too deep for the main thread's stack)
 * off the event loop, with a context replayed from the answers the main thread recorded (replay.ts). Loads
 * each grammar on first use. Protocol: worker-protocol.ts.
 *
 * After a job that left the parser's WebAssembly memory large (it grows with the largest text parsed and never
 * shrinks) or overflowed a stack, the worker says it retires and exits: a fresh worker starts with fresh
 * memory on the next job.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parentPort } from 'node:worker_threads';
import { classifyTracked } from './classify.js';
import { loadGrammar, type Grammar, type GrammarVersion, type ParseOutcome } from './grammar.js';
import { replayContext } from './replay.js';
import type { StatementInfo } from './types.js';
import type { FromWorker, StatementWithoutText, ToWorker } from './worker-protocol.js';

/** Retire once this isolate's external memory (mostly WebAssembly memories) exceeds this. */
const RETIRE_EXTERNAL_BYTES = 640 * 1024 * 1024;

const port = parentPort!;

/**
 * Below the main thread in the scheduler (Linux: nice 10 for this thread only): on a machine with few
 * cores the worker competes with the proxy's event loop for CPU, and the event loop must win.
 */
function lowerPriority(): void {
  try {
    const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) os.setPriority(tid, 10);
  } catch {
    // Not Linux, or not allowed: the default priority.
  }
}
lowerPriority();

let pieces: string[] = [];
/** The current text, kept between rounds of a job (and for a later job on the same text). */
let text: string | null = null;
/** The parse of `text` with one grammar, reused by later rounds. */
let parsed: { version: GrammarVersion; sql: string; outcome: ParseOutcome } | null = null;

/** The rest of the current result, sent a chunk per `next`. */
let sending: { id: number; chunks: FromWorker[] } | null = null;

function post(message: FromWorker): void {
  port.postMessage(message);
}

/** The grammar, with the parse of the current text remembered for the next round. */
function remembering(grammar: Grammar): Grammar {
  return {
    version: grammar.version,
    parse(sql: string): ParseOutcome {
      if (parsed !== null && parsed.version === grammar.version && parsed.sql === sql) return parsed.outcome;
      const outcome = grammar.parse(sql);
      parsed = { version: grammar.version, sql, outcome };
      return outcome;
    },
  };
}

async function classifyRound(m: Extract<ToWorker, { type: 'classify' }>): Promise<void> {
  if (m.piece !== null) {
    pieces.push(m.piece);
    text = pieces.length === 1 ? pieces[0]! : pieces.join('');
    pieces = [];
    if (parsed !== null && parsed.sql !== text) parsed = null;
  }
  if (text === null) {
    post({ type: 'failed', id: m.id, message: 'the worker has no text for this round' });
    return;
  }
  const sql = text;
  const grammar = await loadGrammar(m.snapshot.grammar);
  // The 18 package also scans PREPARE's inner text and parses PL/pgSQL function bodies (parser.ts).
  if (m.snapshot.grammar !== 18) await loadGrammar(18);
  const { ctx, used, missing } = replayContext(m.snapshot, new Map(m.answers), { grammar: remembering(grammar) });
  const tracked = classifyTracked(sql, ctx);
  if (missing.size > 0) {
    post({ type: 'missing', id: m.id, lookups: [...missing.values()] });
    return;
  }
  const result = tracked.result;
  const retiring = result.error?.stackExhausted === true || process.memoryUsage().external > RETIRE_EXTERNAL_BYTES;
  // A result with unresolved functions is asked again once the main thread has looked them up: keep the parse.
  if ((result.unresolvedFunctions.length === 0 && result.unresolvedLookups === undefined) || retiring) parsed = null;
  const chunks: FromWorker[] = [];
  const statements = result.statements;
  const spans = tracked.spans;
  // A chunk ends after chunkStatements statements or chunkKinds new classifications, whichever comes first:
  // what the main thread spends on a chunk is about proportional to both.
  const maxStatements = Math.max(1, m.chunkStatements);
  const maxKinds = Math.max(1, m.chunkKinds);
  const kindIndex = new Map<string, number>();
  let from = 0;
  let kinds: StatementWithoutText[] = [];
  let refs: number[] = [];
  for (let i = 0; i < statements.length; i++) {
    const info = withoutText(statements[i]!);
    const key = JSON.stringify(info);
    let k = kindIndex.get(key);
    if (k === undefined) {
      k = kindIndex.size;
      kindIndex.set(key, k);
      kinds.push(info);
    }
    refs.push(k);
    if (refs.length >= maxStatements || kinds.length >= maxKinds) {
      chunks.push({ type: 'chunk', id: m.id, kinds, refs, spans: spans.slice(2 * from, 2 * (i + 1)), last: null });
      from = i + 1;
      kinds = [];
      refs = [];
    }
  }
  if (refs.length > 0 || chunks.length === 0) {
    chunks.push({ type: 'chunk', id: m.id, kinds, refs, spans: spans.slice(2 * from), last: null });
  }
  const lastChunk = chunks[chunks.length - 1] as Extract<FromWorker, { type: 'chunk' }>;
  lastChunk.last = {
    unresolvedFunctions: result.unresolvedFunctions,
    ...(result.unresolvedLookups ? { unresolvedLookups: result.unresolvedLookups } : {}),
    shapeSafe: result.shapeSafe,
    ...(result.error ? { error: result.error } : {}),
    used: [...used],
    retiring,
  };
  sending = { id: m.id, chunks };
  sendNext(m.id);
}

function withoutText(s: StatementInfo): StatementWithoutText {
  const { sql: _sql, ...rest } = s;
  return rest;
}

function sendNext(id: number): void {
  if (sending === null || sending.id !== id) return;
  const chunk = sending.chunks.shift();
  if (chunk === undefined) {
    sending = null;
    return;
  }
  post(chunk);
  if (sending.chunks.length === 0) {
    sending = null;
    if ((chunk as Extract<FromWorker, { type: 'chunk' }>).last?.retiring) {
      // Let the message leave before the thread ends.
      setImmediate(() => process.exit(0));
    }
  }
}

let queue: Promise<void> = Promise.resolve();

port.on('message', (m: ToWorker) => {
  switch (m.type) {
    case 'text':
      pieces.push(m.piece);
      return;
    case 'classify':
      queue = queue.then(() =>
        classifyRound(m).catch((err: unknown) => post({ type: 'failed', id: m.id, message: err instanceof Error ? err.message : String(err) })),
      );
      return;
    case 'next':
      sendNext(m.id);
      return;
    case 'forget':
      text = null;
      parsed = null;
      pieces = [];
      return;
  }
});
