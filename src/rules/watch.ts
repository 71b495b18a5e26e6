/**
 * Hot reload: watch the rules directory and swap in a new rule set when files change. An edit that
 * breaks the rules keeps the last valid set in force (fail closed to what was vetted) and reports the
 * errors through `onInvalid`.
 *
 * The directory is watched, not the files: editors save by writing a temporary file and renaming it over
 * the original, and Kubernetes ConfigMaps swap a `..data` symlink, both of which a watch on the old file
 * would miss. Any event reloads the whole directory (filenames in events are unreliable across platforms);
 * identical content is recognised and ignored.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { StatementInfo } from '../sql/types.js';
import type { RuleError } from './errors.js';
import { compileRuleSources, readRuleSources, RuleLoadError, type LoadedRules, type RuleSource } from './load.js';
import type { Decision, RowsFact, RuleSet, Subject } from './types.js';

export interface WatchOptions {
  /** After a change took effect (not for the initial load). */
  onReload?(rules: LoadedRules): void;
  /** After a change that made the rules invalid; the previous rules stay in force. */
  onInvalid?(errors: RuleError[]): void;
  /** Quiet time after the last file event before reloading (ms); default 100. */
  debounceMs?: number;
}

export type ReloadOutcome = 'unchanged' | 'reloaded' | 'invalid';

export interface RuleWatcher {
  /** Always decides with the latest valid rules: give it to the proxy once. */
  readonly ruleSet: RuleSet;
  /** The rules in force now. */
  readonly current: LoadedRules;
  /** Re-reads the directory now (e.g. on SIGHUP); the file watcher calls this too. */
  reload(): Promise<ReloadOutcome>;
  /** Stops watching; `ruleSet` keeps deciding with the last rules. */
  close(): void;
}

/** How often to look for a rules directory that has disappeared (ms). */
const MISSING_DIRECTORY_RETRY_MS = 1_000;

/**
 * Loads `dir` and keeps it loaded. Rejects with RuleLoadError when the rules are invalid at start:
 * a proxy without valid rules must not start.
 */
export async function watchRules(dir: string, options: WatchOptions = {}): Promise<RuleWatcher> {
  const read = await readRuleSources(dir);
  const initial = read.ok ? compileRuleSources(dir, read.sources) : read;
  if (!initial.ok) throw new RuleLoadError(initial.errors);
  const watcher = new DirectoryRuleWatcher(dir, initial.rules, fingerprint(read.ok ? read.sources : []), options);
  await watcher.start();
  return watcher;
}

class DirectoryRuleWatcher implements RuleWatcher {
  readonly ruleSet: RuleSet;
  private rules: LoadedRules;
  /** Content last processed (valid or not), to ignore events that changed nothing. */
  private lastSeen: string;
  private fsWatcher: FSWatcher | null = null;
  private watchedInode: number | null = null;
  private debounceTimer: NodeJS.Timeout | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private running: Promise<ReloadOutcome> | null = null;
  private rerun = false;
  private closed = false;

  constructor(
    private readonly dir: string,
    rules: LoadedRules,
    seen: string,
    private readonly options: WatchOptions,
  ) {
    this.rules = rules;
    this.lastSeen = seen;
    // A stable object for the proxy; each call reads the rules in force at that moment.
    this.ruleSet = {
      decide: (statements: StatementInfo[], subject: Subject, rows?: RowsFact | null): Decision => this.rules.ruleSet.decide(statements, subject, rows),
      decideConnect: (subject: Subject): Decision | null => this.rules.ruleSet.decideConnect(subject),
    };
  }

  get current(): LoadedRules {
    return this.rules;
  }

  async start(): Promise<void> {
    await this.ensureWatching();
  }

  close(): void {
    this.closed = true;
    this.fsWatcher?.close();
    this.fsWatcher = null;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.debounceTimer = this.retryTimer = null;
  }

  reload(): Promise<ReloadOutcome> {
    // One reload at a time; events during a reload trigger exactly one more afterwards.
    if (this.running) {
      this.rerun = true;
      return this.running;
    }
    this.running = this.reloadOnce().finally(() => {
      this.running = null;
      if (this.rerun && !this.closed) {
        this.rerun = false;
        void this.reload();
      }
    });
    return this.running;
  }

  private scheduleReload(): void {
    if (this.closed) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = null;
      void this.reload();
    }, this.options.debounceMs ?? 100);
  }

  private async reloadOnce(): Promise<ReloadOutcome> {
    const read = await readRuleSources(this.dir);
    await this.ensureWatching();
    if (this.closed) return 'unchanged';
    const seen = read.ok ? fingerprint(read.sources) : `error:${read.errors.map((e) => e.message).join('\n')}`;
    if (seen === this.lastSeen) return 'unchanged';
    this.lastSeen = seen;
    const result = read.ok ? compileRuleSources(this.dir, read.sources) : read;
    if (!result.ok) {
      this.options.onInvalid?.(result.errors);
      return 'invalid';
    }
    this.rules = result.rules;
    this.options.onReload?.(result.rules);
    return 'reloaded';
  }

  /**
   * Watches the directory, again if it was replaced (new inode) or came back after being removed. While
   * it is missing (or cannot be watched), looks again every second.
   */
  private async ensureWatching(): Promise<void> {
    if (this.closed) return;
    let inode: number | null = null;
    try {
      const info = await stat(this.dir);
      inode = info.isDirectory() ? info.ino : null;
    } catch {
      inode = null;
    }
    if (this.closed) return;
    if (inode === null) {
      this.stopWatcher();
      this.retryLater();
      return;
    }
    if (this.fsWatcher && this.watchedInode === inode) return;
    this.stopWatcher();
    try {
      const watcher = watch(this.dir, () => this.scheduleReload());
      watcher.on('error', () => {
        // The directory went away under the watcher: look again.
        this.stopWatcher();
        this.scheduleReload();
      });
      this.fsWatcher = watcher;
      this.watchedInode = inode;
    } catch {
      this.retryLater();
    }
  }

  private retryLater(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.reload();
    }, MISSING_DIRECTORY_RETRY_MS);
  }

  private stopWatcher(): void {
    this.fsWatcher?.close();
    this.fsWatcher = null;
    this.watchedInode = null;
  }
}

function fingerprint(sources: readonly RuleSource[]): string {
  const hash = createHash('sha256');
  for (const { file, source } of sources) hash.update(file).update('\0').update(source).update('\0');
  return hash.digest('hex');
}
