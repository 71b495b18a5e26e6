/**
 * `stepgate audit verify|sessions|replay|export|pubkey`: reading, checking and exporting the audit trail.
 * Every subcommand reads DATA/audit.db, or with a state database (`--state URL`, or `state:` in the
 * `--config` file) every instance's trail shipped there (audit/shared-read.ts), and may run while stepgate
 * writes to it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import pg from 'pg';
import { resolveDataDir, resolveStateUrl } from '../config.js';
import { AuditDbMissing, openAuditDbForReading } from '../audit/db.js';
import { csvField, csvHeader, csvRow, exportRecord } from '../audit/export.js';
import { dataDirPublicKey, PUBLIC_KEY_FILE, publicKeyPem, readPublicKey, type PublicKey } from '../audit/keys.js';
import { exportEvents, findSession, passkeyNames, formatTime, listSessions, parseTime, SessionFacts, SessionLookupError, sessionEvents, shortId, type SessionRow } from '../audit/read.js';
import { replaySteps } from '../audit/replay.js';
import { copyInstance, sessionInstance, SharedSessionError, sharedInstances, verifyShared, type SharedInstance } from '../audit/shared-read.js';
import { verifyAudit, type VerifyReport } from '../audit/verify.js';
import { redactUrl } from '../state/database.js';
import { parse, println, UsageError, type CommandIO } from './io.js';

export const AUDIT_HELP = `Usage: stepgate audit <verify|sessions|replay|export|pubkey> [options]

The audit trail (DATA/audit.db): every connection, statement, decision, approval and outcome,
hash-chained (SHA-256) and sealed by checkpoints signed with an Ed25519 key. Passwords and other
secrets are masked before anything is stored. See docs/audit.md.

  stepgate audit verify [--pubkey FILE]
      Walk the hash chain and check every signed checkpoint. Names the first event that was
      altered, deleted or inserted. Warns (WARNING lines) about what an intact chain can still
      lack: a run that ended without audit.close (stepgate killed: its last events may be
      missing), two runs interleaved, events the store had to drop. Exit status 0 when the
      trail is intact, 1 on any break, 3 when intact but with warnings.
      --pubkey FILE: check the signatures with this public key (a JWK or PEM kept from
      "stepgate audit pubkey") instead of the one in the data directory.
  stepgate audit sessions [--user U] [--since T] [--until T] [--json]
      List sessions (connections) active in the period: id, user, database, client,
      application, start, end, statements, denied and held counts.
  stepgate audit replay SESSION [--speed N | --instant] [--json]
      Replay a session as a psql-like transcript: statements, decisions and rules, approvals
      (who, with which passkey) and outcomes, with the pauses between them (real time; pauses
      over 5 s are shortened and marked). --speed 10 plays ten times faster, --instant does not
      wait, --json prints the session's events as export records. SESSION: an id as listed by
      "stepgate audit sessions" or a unique prefix of it (like git), or #NUMBER.
  stepgate audit export [--format jsonl|csv] [--since T] [--until T] [--user U] [--session ID]
      Events for a SIEM, oldest first, on standard output. jsonl: one object per event with the
      stored body under "data" and the chain hashes (re-verifiable); csv: one row per event with
      a header. Field names are stable (docs/audit.md).
  stepgate audit pubkey [--format jwk|pem]
      Print the public key that verifies the checkpoints (default jwk). Keep a copy where the
      stepgate host cannot change it, and verify with --pubkey.

Options:
  --data DIR          data directory (default ./.stepgate)
  --config FILE       take the data directory from this config file, and its state database
                      (state:) if it has one
  --state URL         read every instance's trail from this state database (postgres://...)
  --local             with a --config that has state:, read the local DATA/audit.db instead
  --instance NAME     with a state database: only this instance's trail

With a state database, verify checks each instance's chain with the key pinned to it (or --pubkey,
with --instance), sessions lists every instance's sessions (INSTANCE column), and replay and export
take a session as its id (unique across instances) or INSTANCE/ID, INSTANCE/#NUMBER.

Times (T): ISO 8601 (2025-11-24, 2025-11-24T10:00:00Z) or a time ago: 90s, 30m, 2h, 7d.
`;

const OPTIONS = {
  data: { type: 'string' },
  config: { type: 'string' },
  pubkey: { type: 'string' },
  user: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  json: { type: 'boolean' },
  speed: { type: 'string' },
  instant: { type: 'boolean' },
  format: { type: 'string' },
  session: { type: 'string' },
  state: { type: 'string' },
  local: { type: 'boolean' },
  instance: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parse<typeof OPTIONS>>['values'];

/** Longest pause replay waits (after --speed); longer ones are shortened and marked. */
const MAX_PAUSE_MS = 5000;

export async function auditCommand(args: string[], io: CommandIO): Promise<number> {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    println(sub ? io.stdout : io.stderr, AUDIT_HELP);
    return sub ? 0 : 2;
  }
  const { values, positionals } = parse(rest, OPTIONS);
  if (values.help) {
    println(io.stdout, AUDIT_HELP);
    return 0;
  }
  const dataDir = resolveDataDir(values);
  const allowed: Record<string, (keyof Values)[]> = {
    verify: ['pubkey', 'instance', 'state', 'local'],
    sessions: ['user', 'since', 'until', 'json', 'instance', 'state', 'local'],
    replay: ['speed', 'instant', 'json', 'instance', 'state', 'local'],
    export: ['format', 'since', 'until', 'user', 'session', 'instance', 'state', 'local'],
    pubkey: ['format'],
  };
  const own = allowed[sub];
  if (!own) throw new UsageError(`unknown audit command "${sub}"; use verify, sessions, replay, export or pubkey`);
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined || k === 'data' || k === 'config' || k === 'help') continue;
    if (!own.includes(k as keyof Values)) throw new UsageError(`--${k} does not apply to "audit ${sub}"`);
  }
  if (sub === 'pubkey') return pubkeyCommand(dataDir, values, positionals, io);
  if (values.local && values.state !== undefined) throw new UsageError('--local and --state exclude each other');
  const stateUrl = values.local || values.data !== undefined ? (values.state ?? null) : (values.state ?? (values.config ? resolveStateUrl(values.config) : null));
  if (stateUrl !== null) {
    try {
      return await sharedCommand(sub, stateUrl, values, positionals, io);
    } catch (err) {
      if (err instanceof SessionLookupError || err instanceof SharedSessionError) throw new UsageError(err.message);
      throw err;
    }
  }
  if (values.instance !== undefined) throw new UsageError('--instance needs a state database (--state URL, or a --config with state:)');

  let db: Database.Database;
  try {
    db = openAuditDbForReading(dataDir);
  } catch (err) {
    if (err instanceof AuditDbMissing) {
      println(io.stderr, `stepgate audit ${sub}: ${err.message}`);
      return 1;
    }
    throw err;
  }
  try {
    switch (sub) {
      case 'verify':
        noPositionals(positionals, 'audit verify');
        return await verifyCommand(db, dataDir, values, io);
      case 'sessions':
        noPositionals(positionals, 'audit sessions');
        return sessionsCommand(db, values, io);
      case 'replay':
        return await replayCommand(db, values, positionals, io);
      default:
        noPositionals(positionals, 'audit export');
        return await exportCommand(db, values, io);
    }
  } catch (err) {
    if (err instanceof SessionLookupError) throw new UsageError(err.message);
    throw err;
  } finally {
    db.close();
  }
}

function noPositionals(positionals: string[], what: string): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}" for ${what}`);
}

function time(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const t = parseTime(value);
  if (t === null) throw new UsageError(`${flag} "${value}" is not a time: use ISO 8601 (2025-11-24T10:00:00Z) or a time ago (30m, 2h, 7d)`);
  return t;
}

// ───────────────────────────── verify ─────────────────────────────

/** What verify found of the approvals (TOTP and unsigned ones are counted apart, not as failures). */
function approvalsLine(a: VerifyReport['approvals']): string {
  const parts = [`${a.verified} passkey approval${a.verified === 1 ? '' : 's'} signature-checked`];
  if (a.failed) parts[0] += `, ${a.failed} FAILED`;
  if (a.codes) parts.push(`${a.codes} by authenticator app or recovery code (no signature to check)`);
  if (a.noKey) parts.push(`${a.noKey} signed, but whose passkey key or statement is not in the trail (not checked, see the warnings)`);
  if (a.unsigned) parts.push(`${a.unsigned} recorded before stepgate kept approval signatures (not checked)`);
  return parts.join('; ');
}

/** `audit verify` exit status when the chain is intact but the trail may be incomplete (warnings). */
export const VERIFY_WARNINGS = 3;

async function verifyCommand(db: Database.Database, dataDir: string, values: Values, io: CommandIO): Promise<number> {
  let key: PublicKey;
  try {
    key = values.pubkey ? await readPublicKey(path.resolve(values.pubkey)) : await dataDirPublicKey(dataDir);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') {
      println(io.stderr, `stepgate audit verify: no public key: ${values.pubkey ? values.pubkey : path.join(dataDir, PUBLIC_KEY_FILE)} not found`);
      return 1;
    }
    if (values.pubkey) throw new UsageError(e.message);
    throw err;
  }
  return printVerify(await verifyAudit(db, key), path.join(dataDir, 'audit.db'), '', io);
}

/** Prints a verify report (`prefix` goes before the verdict lines: which instance); returns the exit status. */
function printVerify(r: VerifyReport, what: string, prefix: string, io: CommandIO): number {
  const out = io.stdout;
  println(out, `stepgate audit verify: ${what}`);
  if (r.events === 0) println(out, 'events:       none');
  else println(out, `events:       ${r.firstSeq} to ${r.lastSeq} (${r.events.toLocaleString('en')} events, ${r.sessions} sessions), ${formatTime(r.firstTime)} to ${formatTime(r.lastTime)} UTC`);
  if (r.anchor) println(out, `retention:    events up to ${r.anchor.seq} were pruned; the chain continues from the hash signed by checkpoint ${r.anchor.checkpoint}`);
  const invalid = r.checkpoints.total - r.checkpoints.valid;
  println(
    out,
    `checkpoints:  ${r.checkpoints.total}${r.checkpoints.total ? (invalid ? `, ${invalid} NOT VALID` : ', all signatures valid') : ''} (key ${r.key.kid} from ${r.key.source})${r.checkpoints.lastSeq !== null ? `; the last covers event ${r.checkpoints.lastSeq}` : ''}`,
  );
  if (r.unsealed > 0) println(out, `not sealed:   ${r.unsealed} event(s) after the last checkpoint (a running stepgate signs one every 10,000 events or 5 minutes, and at shutdown)`);
  if (r.runs.length > 0) {
    const running = r.runs.filter((run) => run.running);
    const unclosed = r.runs.filter((run) => !run.closed && !run.running).length;
    println(
      out,
      `runs:         ${r.runs.length} (${r.runs.length - unclosed - running.length} closed cleanly${unclosed ? `, ${unclosed} without audit.close` : ''}${running.map((run) => `, 1 running: ${run.id ?? '?'} pid ${run.pid}`).join('')})`,
    );
  }
  if (r.dropped > 0) println(out, `dropped:      ${r.dropped} event(s) the store could not keep (see audit.gap)`);
  println(out, `approvals:    ${approvalsLine(r.approvals)}`);
  const errors = r.problems.filter((p) => p.severity === 'error');
  const warnings = r.problems.filter((p) => p.severity === 'warning');
  for (const p of warnings) println(out, `WARNING: ${prefix}${p.message}`);
  if (errors.length === 0) {
    if (warnings.length === 0) {
      println(out, `OK: ${prefix}the audit trail is intact.`);
      return 0;
    }
    println(out, `INTACT WITH WARNINGS: ${prefix}nothing in the chain was altered, deleted or inserted, but it may be incomplete (${warnings.length} warning${warnings.length === 1 ? '' : 's'} above).`);
    return VERIFY_WARNINGS;
  }
  println(out, `FAILED: ${prefix}${errors[0]!.message}`);
  if (errors.length > 1) {
    println(out, 'Other problems:');
    for (const p of errors.slice(1)) println(out, `  - ${p.message}`);
  }
  return 1;
}

// ───────────────────────────── sessions ─────────────────────────────

function sessionsCommand(db: Database.Database, values: Values, io: CommandIO): number {
  return printSessions(listSessions(db, sessionFilter(values)), values, io);
}

function sessionFilter(values: Values): Parameters<typeof listSessions>[1] {
  return { user: values.user, since: time(values.since, '--since'), until: time(values.until, '--until') };
}

/** Rows with `instance` come from a state database: an INSTANCE column (and field) says whose they are. */
function printSessions(rows: (SessionRow & { instance?: string })[], values: Values, io: CommandIO): number {
  const shared = rows.some((r) => r.instance !== undefined);
  if (values.json) {
    println(io.stdout, JSON.stringify(rows.map((r) => (r.instance !== undefined ? { instance: r.instance, ...sessionJson(r) } : sessionJson(r)))));
    return 0;
  }
  if (rows.length === 0) {
    println(io.stdout, 'no sessions');
    return 0;
  }
  const table = rows.map((r) => [
    ...(shared ? [r.instance ?? ''] : []),
    shortId(r.connection, r.session),
    r.user ?? '?',
    r.database ?? '?',
    r.client ?? '?',
    r.application ?? '',
    formatTime(r.start_time),
    r.end_time === null ? '-' : formatTime(r.end_time),
    String(r.statements),
    String(r.denied),
    String(r.held),
  ]);
  const head = [...(shared ? ['INSTANCE'] : []), 'SESSION', 'USER', 'DATABASE', 'CLIENT', 'APPLICATION', 'START (UTC)', 'END (UTC)', 'STATEMENTS', 'DENIED', 'HELD'];
  const counts = head.length - 3;
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i >= counts ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  println(io.stdout, line(head));
  for (const row of table) println(io.stdout, line(row));
  return 0;
}

function sessionJson(r: SessionRow): Record<string, unknown> {
  return {
    id: r.connection,
    session_no: r.session,
    user: r.user,
    database: r.database,
    client_address: r.client,
    application: r.application,
    tls: r.tls === null ? null : r.tls === 1,
    server_pid: r.server_pid,
    start: r.start_time === null ? null : new Date(r.start_time).toISOString(),
    end: r.end_time === null ? null : new Date(r.end_time).toISOString(),
    end_reason: r.end_reason,
    duration_ms: r.duration_ms,
    bytes_in: r.bytes_in,
    bytes_out: r.bytes_out,
    statements: r.statements,
    denied: r.denied,
    held: r.held,
  };
}

// ───────────────────────────── replay ─────────────────────────────

async function replayCommand(db: Database.Database, values: Values, positionals: string[], io: CommandIO): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('usage: stepgate audit replay SESSION [--speed N | --instant] [--json]');
  if (values.speed !== undefined && values.instant) throw new UsageError('--speed and --instant exclude each other');
  let speed = 1;
  if (values.speed !== undefined) {
    speed = Number(values.speed);
    if (!Number.isFinite(speed) || speed <= 0) throw new UsageError(`--speed must be a positive number, not "${values.speed}"`);
  }
  const session = findSession(db, positionals[0]!);
  const events = sessionEvents(db, session.session);
  if (values.json) {
    const facts = new SessionFacts(db);
    const prevOf = db.prepare('SELECT hash FROM events WHERE seq = ?');
    for (const e of events) {
      const prevHash = (prevOf.get(e.seq - 1) as { hash: string } | undefined)?.hash ?? null;
      await write(io.stdout, JSON.stringify(exportRecord({ ...e, prevHash }, facts)) + '\n');
    }
    return 0;
  }
  const steps = replaySteps(session, events, passkeyNames(db));
  let previous: number | null = null;
  for (const step of steps) {
    if (!values.instant && previous !== null) {
      const wait = Math.max(0, step.time - previous) / speed;
      if (wait > MAX_PAUSE_MS) {
        await write(io.stdout, `-- (paused ${Math.round(wait / 1000)} s here; shortened to ${MAX_PAUSE_MS / 1000} s)\n`);
        await sleep(MAX_PAUSE_MS);
      } else if (wait > 0) {
        await sleep(wait);
      }
    }
    previous = step.time;
    await write(io.stdout, step.lines.join('\n') + '\n');
  }
  return 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  if (stream.write(text)) return Promise.resolve();
  return new Promise((resolve) => stream.once('drain', () => resolve()));
}

// ───────────────────────────── export ─────────────────────────────

function exportFormat(values: Values): 'jsonl' | 'csv' {
  const format = values.format ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'csv') throw new UsageError(`--format must be jsonl or csv, not "${format}"`);
  return format;
}

async function exportCommand(db: Database.Database, values: Values, io: CommandIO): Promise<number> {
  const format = exportFormat(values);
  if (format === 'csv') await write(io.stdout, csvHeader() + '\n');
  return exportFrom(db, values, values.session, null, io);
}

/**
 * Writes the events of one trail. `instance` (a state database): each record says whose it is (the
 * first field of a jsonl object, the first CSV column); `session`: only that session's.
 */
async function exportFrom(db: Database.Database, values: Values, session: string | undefined, instance: string | null, io: CommandIO): Promise<number> {
  const format = exportFormat(values);
  const sessions = session !== undefined ? [findSession(db, session).session] : undefined;
  const facts = new SessionFacts(db);
  const who = instance === null ? '' : `${csvField(instance)},`;
  let chunk = '';
  for (const e of exportEvents(db, { since: time(values.since, '--since'), until: time(values.until, '--until'), user: values.user, sessions })) {
    const record = exportRecord(e, facts);
    chunk += (format === 'csv' ? who + csvRow(record) : JSON.stringify(instance === null ? record : { instance, ...record })) + '\n';
    if (chunk.length > 64 * 1024) {
      await write(io.stdout, chunk);
      chunk = '';
    }
  }
  if (chunk) await write(io.stdout, chunk);
  return 0;
}

// ───────────────────────────── a state database ─────────────────────────────

/** The subcommands over every instance's trail in the state database (one instance copied at a time). */
async function sharedCommand(sub: string, url: string, values: Values, positionals: string[], io: CommandIO): Promise<number> {
  const client = new pg.Client({ connectionString: url, application_name: 'stepgate audit' });
  try {
    await client.connect();
  } catch (err) {
    println(io.stderr, `stepgate audit ${sub}: cannot reach the state database ${redactUrl(url)}: ${(err as Error).message}`);
    return 1;
  }
  try {
    let instances: SharedInstance[];
    try {
      instances = await sharedInstances(client);
    } catch (err) {
      println(io.stderr, `stepgate audit ${sub}: ${redactUrl(url)} holds no stepgate audit trail (${(err as Error).message})`);
      return 1;
    }
    if (values.instance !== undefined) {
      instances = instances.filter((i) => i.instance === values.instance);
      if (instances.length === 0) {
        println(io.stderr, `stepgate audit ${sub}: no instance ${values.instance} in the state database ${redactUrl(url)}`);
        return 1;
      }
    }
    const each = async <T>(instance: string, sessionsOnly: boolean, fn: (db: Database.Database) => Promise<T> | T): Promise<T> => {
      const copy = await copyInstance(client, instance, { sessionsOnly });
      try {
        return await fn(copy.db);
      } finally {
        copy.db.close();
        copy.dispose();
      }
    };
    switch (sub) {
      case 'verify': {
        noPositionals(positionals, 'audit verify');
        if (values.pubkey !== undefined && instances.length !== 1) throw new UsageError('--pubkey checks one instance\'s checkpoints: name it with --instance');
        const pinned = values.pubkey !== undefined ? await readPublicKey(path.resolve(values.pubkey)).catch((err: Error) => Promise.reject(new UsageError(err.message))) : null;
        if (instances.length === 0) println(io.stdout, `stepgate audit verify: no instance has shipped a trail to ${redactUrl(url)}`);
        let status = 0;
        for (const i of instances) {
          const what = `instance ${i.instance} in the state database ${redactUrl(url)}`;
          const report = await verifyShared(client, i, pinned ?? i.key);
          if (report === null) {
            println(io.stdout, `stepgate audit verify: ${what}`);
            println(io.stdout, `FAILED: instance ${i.instance}: its events have no pinned key to check its checkpoints with`);
            status = 1;
            continue;
          }
          status = worse(status, printVerify(report, what, `instance ${i.instance}: `, io));
        }
        return status;
      }
      case 'sessions': {
        noPositionals(positionals, 'audit sessions');
        const rows: (SessionRow & { instance: string })[] = [];
        for (const i of instances) await each(i.instance, true, (db) => rows.push(...listSessions(db, sessionFilter(values)).map((r) => ({ ...r, instance: i.instance }))));
        rows.sort((a, b) => (a.start_time ?? 0) - (b.start_time ?? 0) || a.instance.localeCompare(b.instance) || a.session - b.session);
        return printSessions(rows, values, io);
      }
      case 'replay': {
        if (positionals.length !== 1) throw new UsageError('usage: stepgate audit replay SESSION [--speed N | --instant] [--json]');
        const target = await sessionInstance(client, positionals[0]!, values.instance ?? null);
        return await each(target.instance, false, (db) => replayCommand(db, values, [target.id], io));
      }
      default: {
        noPositionals(positionals, 'audit export');
        if (exportFormat(values) === 'csv') await write(io.stdout, `instance,${csvHeader()}\n`);
        if (values.session !== undefined) {
          const target = await sessionInstance(client, values.session, values.instance ?? null);
          return await each(target.instance, false, (db) => exportFrom(db, values, target.id, target.instance, io));
        }
        for (const i of instances) await each(i.instance, false, (db) => exportFrom(db, values, undefined, i.instance, io));
        return 0;
      }
    }
  } finally {
    await client.end().catch(() => {});
  }
}

/** The exit status of several verifications: a break (1) outweighs warnings (3), which outweigh OK (0). */
function worse(a: number, b: number): number {
  return a === 1 || b === 1 ? 1 : Math.max(a, b);
}

// ───────────────────────────── pubkey ─────────────────────────────

async function pubkeyCommand(dataDir: string, values: Values, positionals: string[], io: CommandIO): Promise<number> {
  noPositionals(positionals, 'audit pubkey');
  const format = values.format ?? 'jwk';
  if (format !== 'jwk' && format !== 'pem') throw new UsageError(`--format must be jwk or pem, not "${format}"`);
  const file = path.join(dataDir, PUBLIC_KEY_FILE);
  if (!fs.existsSync(file)) {
    println(io.stderr, `stepgate audit pubkey: no signing key in ${dataDir} (stepgate creates it when it first starts)`);
    return 1;
  }
  const key = await readPublicKey(file);
  if (format === 'pem') io.stdout.write(publicKeyPem(key.jwk));
  else println(io.stdout, JSON.stringify({ ...key.jwk, kid: key.kid, use: 'sig', alg: 'EdDSA' }, null, 2));
  return 0;
}
