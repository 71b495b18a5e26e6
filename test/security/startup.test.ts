/**
 * Attacks through the startup packet. PostgreSQL treats every startup parameter other than user, database,
 * options and replication as a setting, and reads `options` with pg_split_opts (spaces separate, backslash
 * escapes) into -c name=value, -cname=value and --name=value. stepgate judges each setting like the SET it
 * amounts to and sends the server only what it judged, one startup parameter per setting.
 *
 * For each attack: the direct proof connects to the server with the startup parameters that carry the
 * attack's effect (for smuggled parameters: what stepgate would send upstream; the comment says what the
 * server does with the attacker's own packet) and shows the effect (current_user, session_user,
 * current_database(), backend_type, SHOW ...); through stepgate the connection must be refused at login, or
 * the same check must show no effect.
 *
 * TODO today: a setting named `options` is judged as an ordinary setting and relayed as the startup parameter
 * options, so `-c options=-c\ role=x` (or session_authorization, log_statement ...) nests a refused setting
 * inside an allowed one; `-c replication=database` and `-c database=other` are relayed as the startup
 * parameters replication and database (a walsender; another database than the rules and the audit saw);
 * superuser-backend settings (log_disconnections) are judged as ordinary settings; and a hidden write after
 * default_transaction_read_only=off (reads do not run read-only yet).
 * Stopped today: -c role, -crole, --role, role=, superuser-only settings,
 * search_path before pg_catalog, replication=database as a parameter of its own, -c user (stepgate always
 * sends its own upstream user).
 *
 * Not an attack: -c session_authorization=x. The server accepts it at startup but cannot look the role up
 * outside a transaction, so it has no effect (session_user stays the login user); stepgate refuses it anyway.
 *
 * Not an attack: non-ASCII whitespace. JavaScript's \s (stepgate's split) is a superset of C's isspace()
 * (ASCII only for single bytes in a UTF-8 database), so stepgate splits in more places than the server; and
 * since it relays the settings it judged, one by one, its own reading is what the server applies. The last
 * two tests check that this stays so, for non-ASCII whitespace and for backslash escapes.
 */
import t from 'tap';
import { ServerError } from '../helpers/raw-client.js';
import { connect, report, rowsIn, errorsIn, stepsAttack, startLab, type Conn, type Lab } from './harness.js';

const lab: Lab = await startLab(t, {
  kind: 'startup',
  // The server logs every statement and every disconnection: turning that off is what an attacker wants.
  postgres: { settings: { log_statement: 'all', log_disconnections: 'on' } },
  setup: ['CREATE ROLE attacker_role NOLOGIN', `CREATE ROLE other_login LOGIN PASSWORD 'pg-test-password'`, 'CREATE DATABASE other'],
});


interface StartupAttack {
  name: string;
  /** What the client sends to stepgate. */
  params: Record<string, string>;
  /** What the direct proof sends (default: params). */
  proofParams?: Record<string, string>;
  /** One query whose single value shows whether the attack took effect. */
  check: string;
  /** The value that means it did. */
  effect: string;
  todo?: string;
}

async function value(c: Conn, sql: string): Promise<string> {
  const r = await c.query(sql);
  const e = errorsIn(r)[0];
  if (e) return `error ${e.code}: ${e.message}`;
  return String(rowsIn(r)[0]?.[0]);
}

function startupAttack(s: StartupAttack): void {
  t.test(s.name, async (t) => {
    const base = await connect(lab, 'direct');
    const baseline = await value(base, s.check);
    base.raw.destroy();
    const proofParams = s.proofParams ?? s.params;
    const proof = await connect(lab, 'direct', proofParams);
    const proven = await value(proof, s.check);
    proof.raw.destroy();
    t.equal(proven, s.effect, `direct proof: with ${JSON.stringify(proofParams)} the server answers ${s.check} with ${s.effect} (without: ${baseline})`);
    t.not(baseline, s.effect, 'and without them it does not');
    if (s.proofParams) {
      // What the server itself does with the attacker's packet (for information).
      try {
        const same = await connect(lab, 'direct', s.params);
        t.comment(`the server itself, given ${JSON.stringify(s.params)}: ${s.check} = ${await value(same, s.check)}`);
        same.raw.destroy();
      } catch (err) {
        t.comment(`the server itself refuses ${JSON.stringify(s.params)}: ${String(err)}`);
      }
    }

    const extra = s.todo ? { todo: s.todo } : {};
    let label: string;
    let c: Conn | null = null;
    try {
      c = await connect(lab, 'stepgate', s.params);
    } catch (err) {
      if (!(err instanceof ServerError)) {
        label = `connection died or hung at login: ${String(err)}`;
        t.fail(`through stepgate the login is answered: ${label}`, extra);
      } else {
        label = `refused at login (${err.code}: ${String(err.msg.message)})`;
        t.pass(`through stepgate the connection is refused: ${label}`, extra);
        t.equal(err.msg.severity, 'FATAL', 'with a FATAL error', extra);
      }
    }
    if (c) {
      const got = await value(c, s.check);
      label = got === s.effect ? `NOT stopped (${s.check} = ${got})` : `setting not in effect (${s.check} = ${got})`;
      t.not(got, s.effect, `through stepgate the setting does not take effect: ${label}`, extra);
      const one = rowsIn(await c.query('SELECT 1'));
      t.same(one, [['1']], 'and the connection is usable', extra);
      c.raw.destroy();
    }
    if (s.todo && !label!.startsWith('NOT stopped') && !label!.startsWith('connection died')) t.comment(`"${s.name}" is stopped now (${label!}): remove its todo flag`);
    report({ file: 'startup', attack: s.name, direct: proven === s.effect, readOnlyAlone: 'n/a', stepgate: label!, todo: s.todo ?? null });
  });
}

const ROLE = { check: 'SELECT current_user', effect: 'attacker_role' };
const LOG_STATEMENT = { check: 'SHOW log_statement', effect: 'none' };
const WALSENDER = { check: 'SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()', effect: 'walsender' };

// ───────────────────────────── role and identity ─────────────────────────────

startupAttack({ name: 'options=-c role=x', params: { options: '-c role=attacker_role' }, ...ROLE });
startupAttack({ name: 'options=-crole=x', params: { options: '-crole=attacker_role' }, ...ROLE });
startupAttack({ name: 'options=--role=x', params: { options: '--role=attacker_role' }, ...ROLE });
startupAttack({ name: 'role=x as a startup parameter of its own', params: { role: 'attacker_role' }, ...ROLE });
startupAttack({
  name: 'options=-c options=-c\\ role=x (a role change nested in an options setting)',
  params: { options: '-c options=-c\\ role=attacker_role' },
  proofParams: { options: '-c role=attacker_role' },
  ...ROLE,
});
startupAttack({
  name: 'options=--options=-c\\ role=x',
  params: { options: '--options=-c\\ role=attacker_role' },
  proofParams: { options: '-c role=attacker_role' },
  ...ROLE,
});
startupAttack({
  name: 'options=-c user=other_login (the server connection as another user)',
  params: { options: '-c user=other_login' },
  proofParams: { user: 'other_login' },
  check: 'SELECT session_user',
  effect: 'other_login',
});

// ───────────────────────────── logging and superuser settings ─────────────────────────────

startupAttack({ name: 'options=-c log_statement=none (a superuser-only setting)', params: { options: '-c log_statement=none' }, ...LOG_STATEMENT });
startupAttack({
  name: 'options=-c options=-c\\ log_statement=none (nested)',
  params: { options: '-c options=-c\\ log_statement=none' },
  proofParams: { options: '-c log_statement=none' },
  ...LOG_STATEMENT,
});
startupAttack({
  name: 'options=-c log_disconnections=off (a superuser-backend setting)',
  params: { options: '-c log_disconnections=off' },
  check: 'SHOW log_disconnections',
  effect: 'off',
});
startupAttack({
  name: 'options=-c session_replication_role=replica (triggers and foreign keys off)',
  params: { options: '-c session_replication_role=replica' },
  check: 'SHOW session_replication_role',
  effect: 'replica',
});
startupAttack({
  name: 'options=-c search_path=public,pg_catalog',
  params: { options: '-c search_path=public,pg_catalog' },
  check: 'SHOW search_path',
  effect: 'public,pg_catalog',
});

// ───────────────────────────── replication and database ─────────────────────────────

startupAttack({ name: 'replication=database as a startup parameter of its own', params: { replication: 'database' }, ...WALSENDER });
startupAttack({
  name: 'options=-c replication=database (a walsender smuggled inside options)',
  params: { options: '-c replication=database' },
  proofParams: { replication: 'database' },
  ...WALSENDER,
});
startupAttack({
  name: 'options=--replication=true',
  params: { options: '--replication=true' },
  proofParams: { replication: 'true' },
  // A physical walsender answers no SQL (only replication commands, SHOW among them): the check fails so.
  check: 'SELECT 1',
  effect: 'error 0A000: cannot execute SQL commands in WAL sender for physical replication',
});
startupAttack({
  name: 'options=-c database=other (the rules and the audit saw another database)',
  params: { options: '-c database=other' },
  proofParams: { database: 'other' },
  check: 'SELECT current_database()',
  effect: 'other',
});

// ───────────────────────────── read-only mode ─────────────────────────────

stepsAttack(lab, 'options=-c default_transaction_read_only=off, then a hidden write', ['SELECT * FROM v_evil'], {
  params: { options: '-c default_transaction_read_only=off' },
  // A proxy that puts its own -c default_transaction_read_only=on in front of the client's options loses:
  // the last -c of a name wins.
  proofParams: { options: '-c default_transaction_read_only=on -c default_transaction_read_only=off' },
});
stepsAttack(lab, 'default_transaction_read_only=off as a startup parameter, then a hidden write', ['SELECT * FROM v_evil'], {
  params: { default_transaction_read_only: 'off' },
  // A proxy that adds options=-c default_transaction_read_only=on loses: the server applies options first,
  // then the other startup parameters.
  proofParams: { options: '-c default_transaction_read_only=on', default_transaction_read_only: 'off' },
});

// ───────────────────────────── not an attack ─────────────────────────────

t.test('non-ASCII whitespace in options: the server does not split there, and stepgate never applies a reading the server would not', async (t) => {
  const params = { options: '-c application_name=a\u00a0-c\u00a0role=attacker_role' };
  const direct = await connect(lab, 'direct', params);
  // application_name keeps printable ASCII only: each byte of U+00A0 becomes '?'.
  t.equal(await value(direct, 'SHOW application_name'), 'a??-c??role=attacker_role', 'the server reads one setting: application_name');
  t.equal(await value(direct, 'SELECT current_user'), 'postgres', 'and no role');
  direct.raw.destroy();
  try {
    const c = await connect(lab, 'stepgate', params);
    t.not(await value(c, 'SELECT current_user'), 'attacker_role', 'through stepgate: no role change');
    c.raw.destroy();
  } catch (err) {
    t.type(err, ServerError, `through stepgate: refused at login (${String(err)})`);
  }
});

t.test('backslash escapes in options: stepgate reads them as the server does (an escaped space joins words)', async (t) => {
  const params = { options: '-c application_name=a\\ -c\\ role=attacker_role' };
  const direct = await connect(lab, 'direct', params);
  t.equal(await value(direct, 'SHOW application_name'), 'a -c role=attacker_role', 'the server reads one setting: application_name');
  t.equal(await value(direct, 'SELECT current_user'), 'postgres', 'and no role');
  direct.raw.destroy();
  try {
    const c = await connect(lab, 'stepgate', params);
    t.equal(await value(c, 'SELECT current_user'), 'postgres', 'through stepgate: no role change');
    t.equal(await value(c, 'SHOW application_name'), 'a -c role=attacker_role', 'through stepgate: the same application_name');
    c.raw.destroy();
  } catch (err) {
    t.type(err, ServerError, `through stepgate: refused at login (${String(err)})`);
  }
});
