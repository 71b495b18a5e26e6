/**
 * The classification engine: parse a text with the PostgreSQL grammar and say what each statement does.
 * Pure functions, no I/O. Await initParser() once before anything else.
 */
export { initParser, isParserReady, splitStatements } from './parser.js';
export { classify } from './classify.js';
export { ClassificationCache, type ClassificationCacheOptions, type ClassificationCacheStats } from './cache.js';
export * from './types.js';
