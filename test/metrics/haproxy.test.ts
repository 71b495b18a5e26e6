/**
 * Two stepgate instances (`stepgate serve` child processes, each with its own data directory, sharing
 * their state on PostgreSQL) behind HAProxy in TCP mode, health-checked on /readyz of their metrics
 * listeners, as operators run them. A client through HAProxy works and connections are spread over both;
 * a user made with `stepgate users add` on one instance enrolls a passkey in a real browser on the other's
 * console; a statement held through HAProxy (on whichever instance HAProxy picked) is approved in the
 * browser on the console of the other instance and runs; instance A killed with SIGKILL: HAProxy marks it
 * down and every new connection goes to B; the PostgreSQL behind them stopped: B's /readyz says 503 and
 * HAProxy takes B out too.
 *
 * Needs Debian's `haproxy` (/usr/sbin/haproxy); skipped with a hint when it is not installed.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { freePort, startPostgres } from '../helpers/postgres.js';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { approveOnPage, enroll, launchBrowser, newPerson, signIn, waitForChallenge } from '../console/browser.js';
import { killAtTeardown, serveSetup, startServe, STEPGATE_BIN, type ServeChild, type ServeSetup } from '../helpers/serve.js';
import { rulesDirWith } from '../helpers/stepgate.js';
import { waitFor } from '../helpers/wait.js';

const USER = { name: 'alice', password: 'alice-pw' };
const HAPROXY = ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy'].find((p) => fs.existsSync(p));

if (!HAPROXY) {
  console.error('# haproxy is not installed: apt-get install haproxy (Debian) to run the load balancer test');
  t.pass('skipped: haproxy not installed (apt-get install haproxy)');
} else {
  await main(HAPROXY);
}

interface Instance {
  name: string;
  setup: ServeSetup;
  child: ServeChild;
  metricsPort: number;
  consoleUrl: string;
}


async function main(haproxy: string): Promise<void> {
  const db = await startPostgres(t);
  await db.query('CREATE DATABASE stepgate_state');
  await db.query('CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)');
  const rulesDir = rulesDirWith(t, 'default: allow\nrules:\n  - name: ask-for-deletes\n    match: {command: DELETE}\n    action: step-up\n    timeout: 60s\n');
  const start = async (name: string): Promise<Instance> => {
    const setup = await serveSetup(t, db, {
      rulesDir,
      configYaml: `metrics:\n  listen: 127.0.0.1:0\nstate:\n  url: ${JSON.stringify(db.url('stepgate_state'))}\n  instance: ${name}\n`,
    });
    const child = await startServe(t, ['--config', setup.configFile]);
    const metricsPort = await waitFor(`${name} to serve metrics`, () => {
      const line = child.logs.find((l) => l.event === 'metrics.listening');
      return line ? Number(String(line.listen).split(':').pop()) : null;
    });
    const consoleUrl = String(child.logs.find((l) => l.event === 'stepgate.listening')!.console);
    return { name, setup, child, metricsPort, consoleUrl };
  };
  const a = await start('a');
  const b = await start('b');

  // HAProxy cannot listen on port 0 and report it: a port free a moment ago.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-haproxy-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const frontPort = await freePort();
  const statsSocket = path.join(dir, 'admin.sock');
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(
    cfg,
    `global
  stats socket ${statsSocket} mode 600 level admin

defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check 1s

frontend postgres
  bind 127.0.0.1:${frontPort}
  default_backend stepgate

backend stepgate
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 200ms fall 2 rise 1
  server a 127.0.0.1:${a.child.port} check port ${a.metricsPort}
  server b 127.0.0.1:${b.child.port} check port ${b.metricsPort}
`,
  );
  const proxy = spawn(haproxy, ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let proxyErr = '';
  proxy.stderr!.on('data', (d: Buffer) => (proxyErr += d.toString()));
  killAtTeardown(t, proxy);

  /** HAProxy's view of a server: UP, DOWN, ... (from `show stat` on its admin socket). */
  const serverStatus = async (server: string): Promise<string | null> => {
    if (proxy.exitCode !== null) throw new Error(`haproxy exited: ${proxyErr}`);
    const csv = await new Promise<string>((resolve) => {
      const s = net.connect(statsSocket);
      let out = '';
      s.on('connect', () => s.write('show stat\n'));
      s.on('data', (d) => (out += d.toString()));
      s.on('error', () => resolve(''));
      s.on('close', () => resolve(out));
    });
    const lines = csv.split('\n');
    const header = (lines[0] ?? '').replace(/^# /, '').split(',');
    const col = header.indexOf('status');
    const row = lines.find((l) => l.startsWith(`stepgate,${server},`));
    return row && col >= 0 ? row.split(',')[col]! : null;
  };

  /** Connects through HAProxy, runs a query, disconnects; resolves with the instance that served it. */
  let n = 0;
  const viaHaproxy = async (): Promise<Instance> => {
    const application = `through-haproxy-${++n}`;
    const c = new pg.Client({ host: '127.0.0.1', port: frontPort, user: USER.name, password: USER.password, database: 'postgres', application_name: application });
    c.on('error', () => {});
    try {
      await c.connect();
      const r = await c.query('SELECT 41 + 1 AS answer');
      if (r.rows[0].answer !== 42) throw new Error('wrong answer');
    } finally {
      await c.end().catch(() => {});
    }
    const served = [a, b].filter((i) => i.child.logs.some((l) => l.event === 'connection.start' && l.application === application));
    if (served.length !== 1) throw new Error(`${application} was served by ${served.length} instances`);
    return served[0]!;
  };

  // The user, made on A with the CLI (the shared store), enrolls on B's console below.
  const added = execFileSync(process.execPath, [STEPGATE_BIN, 'users', 'add', USER.name, '--config', a.setup.configFile, '--password-stdin', '--console-url', b.consoleUrl, '--json'], {
    input: USER.password + '\n',
  }).toString();
  const enrollmentLink = (JSON.parse(added) as { enrollmentLink: string }).enrollmentLink;

  t.test('a client through HAProxy works; connections are spread over both instances', async (t) => {
    await waitFor('haproxy to mark both servers up', async () => (await serverStatus('a')) === 'UP' && (await serverStatus('b')) === 'UP', 10_000, 50);
    const served = new Set<string>();
    for (let i = 0; i < 4; i++) served.add((await viaHaproxy()).name);
    t.same([...served].sort(), ['a', 'b'], 'round robin over a and b');
  });

  t.test('a statement held through HAProxy is approved in a browser on the other instance’s console', async (t) => {
    const browser = await launchBrowser(t);
    const alice = await newPerson(browser, USER.name);
    await enroll(alice, enrollmentLink);

    const c = new pg.Client({ host: '127.0.0.1', port: frontPort, user: USER.name, password: USER.password, database: 'postgres' });
    c.on('error', () => {});
    await c.connect();
    t.teardown(() => c.end().catch(() => {}));
    const held = c.query('DELETE FROM t WHERE id = 1');
    const holder = await waitFor('the hold', async () => {
      const r = await db.query(`SELECT id, instance FROM stepgate.holds WHERE status = 'pending'`, 'stepgate_state');
      return r.rows[0] as { id: string; instance: string } | undefined;
    });
    const other = holder.instance === 'a' ? b : a;
    t.comment(`held on ${holder.instance}, approved on ${other.name}`);
    if (other === a) await signIn(alice, a.consoleUrl);
    const id = await waitForChallenge(alice.page, holder.id);
    t.equal(await approveOnPage(alice.page, id), 'approved', `approved on ${other.name}'s console`);
    t.equal((await held).rowCount, 1, `and the DELETE ran on ${holder.instance}`);
    const row = await db.query(`SELECT outcome->>'status' AS status, decided_by FROM stepgate.holds WHERE id = '${holder.id}'`, 'stepgate_state');
    t.same(row.rows[0], { status: 'approved', decided_by: other.name }, 'the shared state records who decided, where');
    t.same(alice.errors, [], 'no errors in the page');
    // The holder's own trail proves the approval, though the passkey was registered on the other instance.
    const holderInstance = holder.instance === 'a' ? a : b;
    const verified = await waitFor('the approval in the holder’s trail', () => {
      const r = spawnSync(process.execPath, [STEPGATE_BIN, 'audit', 'verify', '--data', holderInstance.setup.dataDir, '--local'], { encoding: 'utf8' });
      return /1 passkey approval signature-checked/.test(r.stdout) ? r : null;
    });
    t.notMatch(verified.stdout, /not in the trail|FAILED/, `${holder.instance}'s trail holds the passkey's key and the signature checks`);
  });

  t.test('instance A killed (SIGKILL): HAProxy marks it down, new connections go to B', async (t) => {
    a.child.process.kill('SIGKILL');
    t.match(await a.child.exited, { signal: 'SIGKILL' });
    await waitFor('haproxy to mark a down', async () => ((await serverStatus('a')) ?? '').startsWith('DOWN'), 10_000, 50);
    t.equal(await serverStatus('b'), 'UP');
    for (let i = 0; i < 6; i++) t.equal((await viaHaproxy()).name, 'b', `connection ${i + 1} served by b`);
  });

  t.test('the PostgreSQL behind them stopped: /readyz of B is 503 naming the server, and HAProxy takes B out', async (t) => {
    await db.stop();
    const report = await waitFor('b to be not ready', async () => {
      const res = await fetch(`http://127.0.0.1:${b.metricsPort}/readyz`);
      // The state database (on the same server) may be reported first: wait for the upstream's probe.
      const body = res.status === 503 ? ((await res.json()) as Record<string, any>) : null;
      return body?.upstream?.ok === false ? body : null;
    });
    t.match(report, { ready: false, upstream: { ok: false, servers: [{ ok: false, error: /could not connect/ }] }, audit: { ok: true }, state: { ok: false } });
    await waitFor('haproxy to mark b down', async () => ((await serverStatus('b')) ?? '').startsWith('DOWN'), 10_000, 50);
    t.pass('b is out of the pool');
    const health = await fetch(`http://127.0.0.1:${b.metricsPort}/healthz`);
    t.equal(health.status, 200, 'but alive');
  });
}
