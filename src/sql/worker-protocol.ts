/**
 * Messages between the main thread (offload.ts) and the classification worker (classify-worker.ts).
 *
 * One job at a time. A job is one or more rounds: the main thread sends the text (in pieces when large) and
 * the context's recorded answers; the worker classifies and either lists lookups it had no answer for
 * (`missing`: the main thread asks its context and sends another round, and the worker reuses its parse of
 * the text) or sends the result in chunks, one after each `next` from the main thread, so that the main thread
 * never deserializes more than one chunk at a time.
 */
import type { ContextSnapshot } from './replay.js';
import type { ClassifyResult, StatementInfo } from './types.js';

export type ToWorker =
  /** A piece of the next round's text (texts over a megabyte travel in pieces). */
  | { type: 'text'; id: number; piece: string }
  | {
      type: 'classify';
      id: number;
      /** The text's last piece (or all of it); null: the same text as the worker's previous round. */
      piece: string | null;
      snapshot: ContextSnapshot;
      /** Recorded answers, by lookupKey(method, args). */
      answers: [string, unknown][];
      /** Most statements per result chunk. */
      chunkStatements: number;
      /** Most new distinct classifications per result chunk. */
      chunkKinds: number;
    }
  /** Send the next chunk of the current result. */
  | { type: 'next'; id: number }
  /** Forget the text and its parse (the main thread will send the next text in full). */
  | { type: 'forget' };

/** A result statement without its text (the main thread slices it from the text it has). */
export type StatementWithoutText = Omit<StatementInfo, 'sql'>;

export type FromWorker =
  | { type: 'missing'; id: number; lookups: [method: string, args: unknown[]][] }
  | {
      type: 'chunk';
      id: number;
      /**
       * Distinct statement classifications first used in this chunk; the round's list of them grows by
       * these. Texts of many statements repeat a few classifications (`SELECT 1;` × 450,000 has one): each
       * crosses once, and the statements share it (fewer objects to copy here and for the collector).
       */
      kinds: StatementWithoutText[];
      /** For each statement of this chunk, the index of its classification in the round's list. */
      refs: number[];
      /** [start, end) of each of these statements in the text, flattened. */
      spans: number[];
      /** Set on the last chunk. */
      last: null | {
        unresolvedFunctions: string[];
        /** Catalog keys the classification needed and the context did not know yet (ClassifyResult). */
        unresolvedLookups?: ClassifyResult['unresolvedLookups'];
        shapeSafe: boolean;
        error?: ClassifyResult['error'];
        /** Keys of the answers the classification used. */
        used: string[];
        /** The worker will exit after this job (its parser's memory grew, or its stack overflowed). */
        retiring: boolean;
      };
    }
  | { type: 'failed'; id: number; message: string };
