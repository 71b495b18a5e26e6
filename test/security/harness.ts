/**
 * The attack suite's harness (test/security/). Every attack is proven three ways, on one real PostgreSQL
 * and one stepgate per test file:
 *
 * 1. **Direct proof** (never todo): the attack sent to the server directly, as the same upstream user stepgate
 *    uses (the superuser here), really changes the database: the probe (by default the number of rows in the
 *    marker table `pwned`) reads differently afterwards. If this fails, the attack is wrong, not stepgate.
 *    Then the state is restored.
 * 2. **Read-only mode alone** (information only, a comment): the same attack on a direct connection started
 *    with `default_transaction_read_only=on`. It tells which layer must stop the attack: when read-only mode
 *    does not stop it (dblink, COPY TO PROGRAM, pg_terminate_backend, NOTIFY, PREPARE TRANSACTION, settings
 *    that turn read-write back on ...), only the classifier can.
 * 3. **Through stepgate** under fixtures/rules/reads-only (allow only statements whose every class is read,
 *    session or transaction; deny the rest): the probe reads the same as before; the attack was refused with
 *    42501 (stepgate denied it, or found it unknown) or 25006 (the server refused a write in read-only mode),
 *    and the assertion message says which, because that tells which layer stopped it; the connection neither
 *    died nor hung; afterwards it is still usable (a transaction left open or aborted is rolled back with
 *    ROLLBACK, which must leave ReadyForQuery status I; then SELECT 1 answers 1).
 *
 * Attacks that get through today carry `todo: 'why'`: their stepgate assertions are tap todo assertions, so
 * CI stays green while the assertions stay real (tap does not run subtests marked todo, so the flag is put on
 * each assertion, not on the subtest). When a fix lands, the assertions pass, the harness says so in a
 * comment, and the flag should be removed.
 *
 * With STEPGATE_SECURITY_REPORT=FILE every attack appends one JSON line (file, attack, direct proof, read-only
 * mode alone, outcome through stepgate) to FILE.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import pg from 'pg';
import type { Test } from 'tap';
import { startPostgres, type StartOptions, type TestPostgres } from '../helpers/postgres.js';
import { ClosedError, m, RawClient, ServerError, type Msg, type Target } from '../helpers/raw-client.js';
import { ALICE, REPO_ROOT, startStepgate, type StepgateOptions, type TestStepgate } from '../helpers/stepgate.js';

export { m, type Msg };

/** Allow only statements whose every class is read, session or transaction; deny everything else. */
export const READS_ONLY_RULES = path.join(REPO_ROOT, 'fixtures', 'rules', 'reads-only');

/** How long one exchange may take before the attack counts as a hang. */
export const EXCHANGE_TIMEOUT_MS = 8_000;

/** The marker table and the functions that write to it, in every lab's database. */
export const BASE_SETUP = `
CREATE TABLE pwned (id serial PRIMARY KEY, what text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
-- The attacker's payload: a volatile function that writes. Calling it by name is procedural (refused);
-- every attack makes the server run it without naming it. (Qualified: postgres_fdw runs remote SQL with
-- search_path = pg_catalog.)
CREATE FUNCTION evil(what text) RETURNS int LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO public.pwned(what) VALUES (what); RETURN 1; END $$;
CREATE FUNCTION evil_bool(what text) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO public.pwned(what) VALUES (what); RETURN true; END $$;
CREATE VIEW v_evil AS SELECT public.evil('view') AS x;
`;

export interface Lab {
  t: Test;
  /** The test file's attack kind, for the report. */
  kind: string;
  db: TestPostgres;
  sg: TestStepgate;
  /** A direct superuser connection for setup, probes and restores. */
  admin: pg.Client;
  directTarget: Target;
  proxyTarget: Target;
  /** Values the setup looked up (type OIDs ...). */
  vars: Map<string, string>;
}

export interface LabOptions {
  kind: string;
  postgres?: StartOptions;
  /**
   * SQL run as the superuser before stepgate starts (the attacker's objects, created "earlier"); a list runs
   * as separate queries (for CREATE DATABASE, which cannot run in the implicit transaction of a multi-statement
   * query).
   */
  setup?: string | string[] | ((db: TestPostgres) => string | string[]);
  stepgate?: StepgateOptions;
}

export async function startLab(t: Test, options: LabOptions): Promise<Lab> {
  const db = await startPostgres(t, options.postgres);
  const admin = await db.client();
  t.teardown(() => admin.end().catch(() => {}));
  await admin.query(BASE_SETUP);
  const setup = typeof options.setup === 'function' ? options.setup(db) : options.setup;
  for (const sql of typeof setup === 'string' ? [setup] : (setup ?? [])) await admin.query(sql);
  const sg = await startStepgate(t, db, { rulesDir: READS_ONLY_RULES, ...options.stepgate });
  return {
    t,
    kind: options.kind,
    db,
    sg,
    admin,
    directTarget: { path: `${db.socketDir}/.s.PGSQL.${db.port}` },
    proxyTarget: { host: sg.host, port: sg.port },
    vars: new Map(),
  };
}

// ───────────────────────────── connections ─────────────────────────────

/** One connection of an attack: every reply is kept, in order. */
export class Conn {
  readonly replies: Msg[] = [];
  constructor(
    readonly raw: RawClient,
    readonly where: 'direct' | 'stepgate',
  ) {}

  /** A simple Query; resolves with its replies up to ReadyForQuery. */
  query(sql: string): Promise<Msg[]> {
    return this.send(m.query(sql));
  }

  /** Several simple Queries, one after the other. */
  async queries(...sqls: string[]): Promise<Msg[]> {
    const out: Msg[] = [];
    for (const sql of sqls) out.push(...(await this.query(sql)));
    return out;
  }

  /**
   * Sends messages in one write and reads until as many ReadyForQuery as the messages ask for (one per Query,
   * Sync and FunctionCall), unless `readies` says otherwise.
   */
  async send(...messages: Buffer[]): Promise<Msg[]> {
    return this.sendExpecting(countReadies(messages), ...messages);
  }

  async sendExpecting(readies: number, ...messages: Buffer[]): Promise<Msg[]> {
    this.raw.send(...messages);
    const out: Msg[] = [];
    for (let i = 0; i < readies; i++) {
      const got = await this.raw.untilReady(EXCHANGE_TIMEOUT_MS);
      out.push(...got);
      this.replies.push(...got);
      if (got.some(isFatal)) break;
    }
    return out;
  }

  /** ReadyForQuery status of the last reply: I, T or E. */
  get status(): string {
    for (let i = this.replies.length - 1; i >= 0; i--) if (this.replies[i]!.type === 'Z') return this.replies[i]!.status as string;
    return 'I';
  }
}

function countReadies(messages: Buffer[]): number {
  let n = 0;
  for (const b of messages) {
    // A Buffer may hold several messages (m.typed output is one message each; be general anyway).
    let pos = 0;
    while (pos + 5 <= b.length) {
      const type = String.fromCharCode(b[pos]!);
      const len = b.readInt32BE(pos + 1);
      if (type === 'Q' || type === 'S' || type === 'F') n++;
      pos += 1 + len;
    }
  }
  return n;
}

export function isFatal(msg: Msg): boolean {
  return msg.type === 'E' && (msg.severity === 'FATAL' || msg.severity === 'PANIC');
}

export function errorsIn(msgs: Msg[]): { code: string; message: string; severity: string }[] {
  return msgs.filter((x) => x.type === 'E').map((x) => ({ code: x.code as string, message: x.message as string, severity: x.severity as string }));
}

/** The values of every DataRow among `msgs`. */
export function rowsIn(msgs: Msg[]): (string | null)[][] {
  return msgs.filter((x) => x.type === 'D').map((x) => x.values as (string | null)[]);
}

/** Opens a raw connection directly to the server (as its superuser) or through stepgate (as alice). */
export async function connect(lab: Lab, where: 'direct' | 'stepgate', params: Record<string, string> = {}, database = 'postgres'): Promise<Conn> {
  const raw = await RawClient.connect(where === 'direct' ? lab.directTarget : lab.proxyTarget);
  raw.socket.on('error', () => {});
  try {
    if (where === 'direct') await raw.login({ user: lab.db.user, password: lab.db.password, database, params });
    else await raw.login({ user: ALICE.name, password: ALICE.password, database, params });
  } catch (err) {
    raw.destroy();
    throw err;
  }
  return new Conn(raw, where);
}

// ───────────────────────────── attacks ─────────────────────────────

export type Probe = (lab: Lab) => Promise<unknown>;

export interface Attack {
  name: string;
  /** The attack as sent through stepgate (and, without `proof`, directly). */
  run(c: Conn, lab: Lab): Promise<unknown>;
  /** The direct proof, when it must differ from `run` (e.g. it simulates a naive read-only enforcement). */
  proof?(c: Conn, lab: Lab): Promise<unknown>;
  /** Startup parameters of the attack's connections. */
  params?: Record<string, string>;
  /** Startup parameters of the direct proof's connection (default: params). */
  proofParams?: Record<string, string>;
  /** What the attack changes, read directly; default: the number of rows in pwned. */
  probe?: Probe;
  /**
   * For attacks on the session's own state (a role or setting changed behind stepgate's back): a query whose
   * single value is read on the attack's connection afterwards, and compared with a fresh connection's.
   */
  sessionProbe?: string;
  /** Puts the database back; default: TRUNCATE pwned. */
  restore?(lab: Lab): Promise<void>;
  /** Set while the attack gets through stepgate today: its stepgate assertions are todo. */
  todo?: string;
  /**
   * Which refusals count. 'write' (default): 42501 or 25006. 'stepgate': only 42501 (disclosure: read-only
   * mode does not stop a read, so only stepgate can).
   */
  refusal?: 'write' | 'stepgate';
  /** Skip the read-only-mode-alone information run (when the proof already simulates an enforcement). */
  noReadOnlyRun?: boolean;
  /** Extra note for the report. */
  note?: string;
}

export const countPwned: Probe = async (lab) => Number((await lab.admin.query('SELECT count(*) AS n FROM pwned')).rows[0].n);

async function defaultRestore(lab: Lab): Promise<void> {
  await lab.admin.query('TRUNCATE pwned');
}

export interface RunOutcome {
  /** The attack itself threw (timeout, closed connection, a login refused ...). */
  thrown: Error | null;
  died: boolean;
  hang: boolean;
  /** Refused at login (the startup packet). */
  loginRefused: { code: string; message: string } | null;
  replies: Msg[];
  errors: { code: string; message: string; severity: string }[];
  after: unknown;
  /** Usability check (stepgate only): what went wrong, or null. */
  unusable: string | null;
  rollbackStatus: string | null;
}

/** Runs one attack function on a fresh connection; probes before closing it. */
export async function runOn(
  lab: Lab,
  where: 'direct' | 'stepgate',
  fn: (c: Conn, lab: Lab) => Promise<unknown>,
  params: Record<string, string> | undefined,
  probe: Probe,
  checkUsable: boolean,
  sessionProbe?: string,
): Promise<RunOutcome> {
  const out: RunOutcome = { thrown: null, died: false, hang: false, loginRefused: null, replies: [], errors: [], after: undefined, unusable: null, rollbackStatus: null };
  let c: Conn;
  try {
    c = await connect(lab, where, params);
  } catch (err) {
    out.thrown = err as Error;
    if (err instanceof ServerError) out.loginRefused = { code: err.code, message: String(err.msg.message) };
    else if (err instanceof ClosedError) out.died = true;
    else if (/timed out/.test(String(err))) out.hang = true;
    out.after = await probe(lab);
    return out;
  }
  try {
    await fn(c, lab);
  } catch (err) {
    out.thrown = err as Error;
    if (err instanceof ClosedError) out.died = true;
    else if (/timed out/.test(String(err))) out.hang = true;
  }
  out.replies = c.replies;
  out.errors = errorsIn(c.replies);
  if (c.replies.some(isFatal)) out.died = true;
  if (checkUsable && !out.died && !out.hang) {
    try {
      if (c.status !== 'I') {
        const r = await c.query('ROLLBACK');
        out.rollbackStatus = String(r.find((x) => x.type === 'Z')?.status);
        if (out.rollbackStatus !== 'I') out.unusable = `ROLLBACK left status ${out.rollbackStatus}`;
      }
      const r = await c.query('SELECT 1');
      const rows = rowsIn(r);
      if (!(rows.length === 1 && rows[0]![0] === '1')) out.unusable = `SELECT 1 answered ${JSON.stringify(errorsIn(r).length ? errorsIn(r) : rows)}`;
    } catch (err) {
      out.unusable = `the connection no longer answers: ${String(err)}`;
      if (err instanceof ClosedError) out.died = true;
    }
  }
  out.after = await probe(lab);
  if (sessionProbe && !out.died && !out.hang) {
    try {
      if (c.status !== 'I') await c.query('ROLLBACK');
      out.after = { state: out.after, session: await sessionValue(c, sessionProbe) };
    } catch (err) {
      out.after = { state: out.after, session: `no answer: ${String(err)}` };
    }
  } else if (sessionProbe) out.after = { state: out.after, session: 'the connection is gone' };
  c.raw.destroy();
  return out;
}

/** The single value a query answers on this connection (or its error). */
export async function sessionValue(c: Conn, sql: string): Promise<string> {
  const r = await c.query(sql);
  const e = errorsIn(r)[0];
  return e ? `error ${e.code}` : String(rowsIn(r)[0]?.[0]);
}

/** What happened through stepgate, as one label for messages and the report. */
export function outcomeLabel(o: RunOutcome, changed: boolean): string {
  if (changed) return 'NOT stopped (the attack changed the database)';
  if (o.loginRefused) return `refused at login (${o.loginRefused.code})`;
  if (o.died) return 'connection died';
  if (o.hang) return 'hang';
  const first = o.errors[0];
  if (!first) return 'NOT refused (nothing changed, but no error either)';
  const later = [...new Set(o.errors.slice(1).map((e) => e.code))].filter((c) => c !== first.code);
  const also = later.length ? `; later errors ${later.join(', ')}` : '';
  if (first.code === '42501') return `stopped by 42501 (stepgate refused it${also})`;
  if (first.code === '25006') return `stopped by 25006 (the server refused a write in read-only mode${also})`;
  return `failed with ${first.code} (${first.message}), not refused${also}`;
}

export interface AttackResult {
  file: string;
  attack: string;
  direct: boolean;
  readOnlyAlone: string;
  stepgate: string;
  todo: string | null;
  note?: string;
}

export function report(result: AttackResult): void {
  const file = process.env.STEPGATE_SECURITY_REPORT;
  if (file) fs.appendFileSync(file, JSON.stringify(result) + '\n');
}

function describeChange(before: unknown, after: unknown): string {
  return `${JSON.stringify(before)} → ${JSON.stringify(after)}`;
}

/** Registers one attack as a subtest of the lab's test file. */
export function attack(lab: Lab, a: Attack): void {
  lab.t.test(a.name, async (t) => {
    const probe = a.probe ?? countPwned;
    const restore = async (): Promise<void> => (a.restore ?? defaultRestore)(lab);
    await restore();
    let baseline = await probe(lab);
    if (a.sessionProbe) {
      const fresh = await connect(lab, 'direct', a.params);
      baseline = { state: baseline, session: await sessionValue(fresh, a.sessionProbe) };
      fresh.raw.destroy();
    }

    // 1. The direct proof.
    const direct = await runOn(lab, 'direct', a.proof ?? a.run, a.proofParams ?? a.params, probe, false, a.sessionProbe);
    const directOk = !isDeepStrictEqual(direct.after, baseline);
    t.ok(directOk, `direct proof: the attack changes the database when sent to the server itself (${describeChange(baseline, direct.after)})`, {
      errors: direct.errors,
      thrown: direct.thrown ? String(direct.thrown) : null,
    });
    if (directOk && (a.probe ?? countPwned) === countPwned) {
      const what = (await lab.admin.query('SELECT what, count(*)::int AS n FROM pwned GROUP BY what ORDER BY what')).rows;
      if (what.length) t.comment(`directly, the payload ran as: ${what.map((r) => `${r.what as string} ×${r.n as number}`).join(', ')}`);
    }
    await restore();
    if (!a.sessionProbe) t.same(await probe(lab), baseline, 'the state is restored after the direct proof');

    // 2. Read-only mode alone (information).
    let readOnlyAlone = a.proof || a.proofParams ? 'the direct proof already runs against read-only mode set the naive way' : 'not measured';
    if (!a.noReadOnlyRun && !a.proof && !a.proofParams) {
      const ro = await runOn(lab, 'direct', a.run, { ...a.params, default_transaction_read_only: 'on' }, probe, false, a.sessionProbe);
      const changed = !isDeepStrictEqual(ro.after, baseline);
      const code = ro.errors[0]?.code;
      readOnlyAlone = changed ? 'does NOT stop it' : code === '25006' ? 'stops it (25006)' : `nothing changed (${code ?? 'no error'})`;
      t.comment(`read-only mode alone (default_transaction_read_only=on, direct): ${readOnlyAlone}`);
      await restore();
    }

    // 3. Through stepgate.
    const through = await runOn(lab, 'stepgate', a.run, a.params, probe, true, a.sessionProbe);
    const changed = !isDeepStrictEqual(through.after, baseline);
    const label = outcomeLabel(through, changed);
    const extra = a.todo ? { todo: a.todo } : {};
    const refusals = a.refusal === 'stepgate' ? ['42501'] : ['42501', '25006'];
    const first = through.errors[0];
    const refused = !changed && (through.loginRefused !== null || (first !== undefined && refusals.includes(first.code)));
    t.notOk(changed, `through stepgate nothing changes: ${label} (${describeChange(baseline, through.after)})`, { ...extra, errors: through.errors });
    t.ok(refused, `through stepgate the attack is refused with ${refusals.join(' or ')}: ${label}`, { ...extra, errors: through.errors });
    t.notOk(through.died || through.hang, `through stepgate the connection neither dies nor hangs: ${label}`, {
      ...extra,
      thrown: through.thrown ? String(through.thrown) : null,
    });
    if (!through.loginRefused) {
      t.equal(through.unusable, null, `through stepgate the same connection is usable afterwards${through.rollbackStatus ? ' (ROLLBACK → ' + through.rollbackStatus + ')' : ''}`, extra);
    }
    if (a.todo && !changed && refused && !through.died && !through.hang && through.unusable === null) {
      t.comment(`"${a.name}" is stopped now (${label}): remove its todo flag`);
    }
    await restore();
    report({ file: lab.kind, attack: a.name, direct: directOk, readOnlyAlone, stepgate: label, todo: a.todo ?? null, ...(a.note ? { note: a.note } : {}) });
  });
}

/** Shorthand: an attack that is one simple Query. */
export function sqlAttack(lab: Lab, name: string, sql: string, options: Omit<Attack, 'name' | 'run'> = {}): void {
  attack(lab, { name, run: (c) => c.query(sql), ...options });
}

/** Shorthand: an attack that is several simple Queries, one after the other. */
export function stepsAttack(lab: Lab, name: string, sqls: string[], options: Omit<Attack, 'name' | 'run'> = {}): void {
  attack(lab, { name, run: (c) => c.queries(...sqls), ...options });
}

/** Looks up a value once, at setup (a type OID ...). */
export async function lookup(lab: Lab, key: string, sql: string): Promise<string> {
  const v = String(Object.values((await lab.admin.query(sql)).rows[0] as object)[0]);
  lab.vars.set(key, v);
  return v;
}

/** A FunctionCall message ('F'): function OID, text arguments, text result. */
export function functionCall(oid: number, args: (string | null)[]): Buffer {
  const parts: Buffer[] = [];
  const i32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };
  const i16 = (n: number): Buffer => {
    const b = Buffer.alloc(2);
    b.writeInt16BE(n);
    return b;
  };
  parts.push(i32(oid), i16(0), i16(args.length));
  for (const a of args) {
    if (a === null) parts.push(i32(-1));
    else parts.push(i32(Buffer.byteLength(a)), Buffer.from(a));
  }
  parts.push(i16(0));
  return m.typed('F', ...parts);
}
