/**
 * Who a process is, in a way that survives pid reuse: its pid and its start time (field 22 of
 * /proc/PID/stat, clock ticks since boot). A pid alone can name another program once the first has died;
 * the pair cannot. Used by the owner locks (util/owner-lock.ts), the demo's postmaster clean-up and
 * `audit verify` (is the run without `audit.close` still running?).
 */
import fs from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  /** Start time from /proc/PID/stat; null where /proc is not available (then only the pid is checked). */
  start: string | null;
}

/** The start time of `pid` (clock ticks since boot, as text), or null when it is not running or unknown. */
export function processStartTime(pid: number): string | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null; // field 22 overall: starttime
}

export function currentProcess(): ProcessIdentity {
  return { pid: process.pid, start: processStartTime(process.pid) };
}

/**
 * True when `pid` runs (signal 0; EPERM means it exists but belongs to another user). A zombie (exited,
 * not yet reaped by its parent, which for a daemonized postmaster may be an init that never reaps) does
 * not count.
 */
export function pidExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true; // no /proc: signal 0 is all there is
  }
}

/** True when the process that `who` describes is still running (same pid and, where known, same start). */
export function isAlive(who: ProcessIdentity): boolean {
  if (!pidExists(who.pid)) return false;
  if (who.start === null) return true;
  const now = processStartTime(who.pid);
  // Without /proc now (a different system?) the pid is all there is to go by.
  return now === null || now === who.start;
}

/** The program a pid runs, from /proc/PID/cmdline (arguments joined by spaces); null when unreadable. */
export function commandLine(pid: number): string | null {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return null;
  }
}
