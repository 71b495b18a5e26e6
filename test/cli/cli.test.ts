/**
 * The `stepgate` command as people run it (bin/stepgate.js in a child process): help, configuration
 * errors with file:line:column and a fix, users, and `serve` itself with its connection log lines.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { startPostgres } from '../helpers/postgres.js';
import { run } from '../helpers/run.js';
import { REPO_ROOT } from '../helpers/stepgate.js';
import { spawn } from 'node:child_process';
import readline from 'node:readline';

const STEPGATE = path.join(REPO_ROOT, 'bin', 'stepgate.js');

// About 20 processes, each loading stepgate: 110-130 s on a loaded 2-core machine (before these changes too).
t.setTimeout(300_000);

function stepgate(tt: { teardown(fn: () => unknown): void }, args: string[], input?: string) {
  return run(tt, process.execPath, [STEPGATE, ...args], { env: process.env, input, timeoutMs: 30_000 });
}

function tempDir(tt: { teardown(fn: () => unknown): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-cli-'));
  tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('help: every command and its options', async (t) => {
  const top = await stepgate(t, ['--help']);
  t.equal(top.code, 0);
  for (const command of ['serve', 'demo', 'users', 'rules', 'audit']) t.match(top.stdout, new RegExp(`\\n  ${command}`), `lists ${command}`);
  t.equal((await stepgate(t, [])).code, 2, 'no command is a usage error');
  const unknown = await stepgate(t, ['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown command "frobnicate"/);

  const serve = await stepgate(t, ['serve', '--help']);
  t.equal(serve.code, 0);
  for (const flag of ['--config FILE', '--listen HOST:PORT', '--upstream URL', '--data DIR', '--rules DIR', '--tls-cert FILE', '--tls-key FILE', '--require-tls', '--console HOST:PORT']) {
    t.match(serve.stdout, flag, `serve --help documents ${flag}`);
  }
  for (const command of [['users'], ['rules', 'check'], ['rules', 'explain'], ['rules', 'test'], ['audit'], ['demo']]) {
    const help = await stepgate(t, [...command, '--help']);
    t.equal(help.code, 0, `${command.join(' ')} --help`);
    t.match(help.stdout, /Usage: stepgate/);
  }
  const wrong = await stepgate(t, ['serve', '--lisen', 'x']);
  t.equal(wrong.code, 2, 'an unknown flag is a usage error');
  t.match(wrong.stderr, /--lisen/);
});

t.test('a bad config file exits 2 naming file, line, column and the fix', async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, 'stepgate.yaml');
  fs.writeFileSync(
    file,
    ['listen: 127.0.0.1:99999', 'upstream: postgres://stepgate@localhost/postgres', 'limts:', '  max_connections: 10', 'limits:', '  startup_timeout: soon', 'auth: password', ''].join('\n'),
  );
  const r = await stepgate(t, ['serve', '--config', file]);
  t.equal(r.code, 2);
  t.match(r.stderr, `${file}:1:9: "127.0.0.1:99999" is not HOST:PORT`);
  t.match(r.stderr, `${file}:3:1: unknown key "limts": did you mean "limits"?`);
  t.match(r.stderr, `${file}:6:20: limits.startup_timeout: "soon" is not a duration (for example 30s)`);
  t.match(r.stderr, `${file}:7:7: auth must be scram-sha-256 or trust, not "password"`);

  fs.writeFileSync(file, 'listen: [1, 2\n');
  const syntax = await stepgate(t, ['serve', '--config', file]);
  t.equal(syntax.code, 2);
  t.match(syntax.stderr, new RegExp(`${file}:\\d+:\\d+: YAML syntax error`));

  const missing = await stepgate(t, ['serve', '--listen', '127.0.0.1:0', '--data', dir]);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /no upstream server: set "upstream: postgres:\/\/USER:PASSWORD@HOST:PORT\/DB" or pass --upstream/);

  const trust = await stepgate(t, ['serve', '--listen', '0.0.0.0:0', '--upstream', 'postgres://u@h/db', '--data', dir, '--config', writeConfig(dir, 'auth: trust\n')]);
  t.equal(trust.code, 2);
  t.match(trust.stderr, /auth: trust is only allowed when listening on a loopback address/);

  const badRules = tempDir(t);
  fs.writeFileSync(path.join(badRules, '00.yaml'), 'rules:\n  - name: x\n    match: {clas: write}\n    action: deny\n');
  const rules = await stepgate(t, ['serve', '--listen', '127.0.0.1:0', '--upstream', 'postgres://u@localhost/db', '--data', dir, '--rules', badRules]);
  t.equal(rules.code, 2);
  t.match(rules.stderr, /00\.yaml:3:13: unknown key `clas`/);
});

function writeConfig(dir: string, text: string): string {
  const file = path.join(dir, `extra-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

t.test('users add, list, passwd, remove; only a SCRAM verifier is stored', async (t) => {
  const dir = tempDir(t);
  const add = await stepgate(t, ['users', 'add', 'carol', '--groups', 'dba,dev', '--password-stdin', '--data', dir], 'Very-Secret-Pw1\n');
  t.equal(add.code, 0, add.stderr);
  t.match(add.stdout, /added user carol \(groups: dba, dev\)/);
  t.match(add.stdout, /enroll#token=/, 'prints an enrollment link');
  const again = await stepgate(t, ['users', 'add', 'carol', '--password-stdin', '--data', dir], 'x\n');
  t.equal(again.code, 2);
  t.match(again.stderr, /user "carol" already exists/);
  const list = await stepgate(t, ['users', 'list', '--json', '--data', dir]);
  t.match(JSON.parse(list.stdout), [{ name: 'carol', groups: ['dba', 'dev'] }]);
  t.equal((await stepgate(t, ['users', 'passwd', 'carol', '--password-stdin', '--data', dir], 'Another-Pw2\n')).code, 0);
  t.equal((await stepgate(t, ['users', 'groups', 'carol', 'auditors', '--data', dir])).code, 0);
  t.match(JSON.parse((await stepgate(t, ['users', 'list', '--json', '--data', dir])).stdout), [{ name: 'carol', groups: ['auditors'] }]);
  for (const file of fs.readdirSync(dir).filter((f) => f.startsWith('identity.db'))) {
    const bytes = fs.readFileSync(path.join(dir, file));
    t.notOk(bytes.includes('Very-Secret-Pw1') || bytes.includes('Another-Pw2'), `${file} holds no password`);
  }
  t.equal((await stepgate(t, ['users', 'remove', 'carol', '--data', dir])).code, 0);
  t.equal((await stepgate(t, ['users', 'remove', 'carol', '--data', dir])).code, 2);
});

t.test('serve: clients connect; one log line per connection start and end; SIGTERM stops it', async (t) => {
  const db = await startPostgres(t);
  const dir = tempDir(t);
  fs.chmodSync(dir, 0o755);
  t.equal((await stepgate(t, ['users', 'add', 'dave', '--password-stdin', '--data', dir], 'dave-Secret-9\n')).code, 0);
  const config = writeConfig(dir, `listen: 127.0.0.1:0\nconsole: 127.0.0.1:0\nupstream: ${JSON.stringify(db.url())}\ndata: ${JSON.stringify(dir)}\n`);
  const child = spawn(process.execPath, [STEPGATE, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const lines: Record<string, unknown>[] = [];
  const stderrLines = readline.createInterface({ input: child.stderr, crlfDelay: Infinity });
  stderrLines.on('line', (text) => lines.push(JSON.parse(text) as Record<string, unknown>));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  /** The first log line of `event`, as soon as serve writes it (rejects if serve exits first). */
  const logged = (event: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const seen = lines.find((l) => l.event === event);
      if (seen) return resolve(seen);
      const onLine = (): void => {
        const line = lines[lines.length - 1]!; // pushed by the listener registered first
        if (line.event !== event) return;
        stderrLines.off('line', onLine);
        resolve(line);
      };
      stderrLines.on('line', onLine);
      void exited.then((code) => reject(new Error(`serve exited with ${code} before logging ${event}`)));
    });
  const port = Number(String((await logged('stepgate.listening')).listen).split(':').pop());
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'dave', password: 'dave-Secret-9', database: 'postgres', application_name: 'cli-test' });
  await client.connect();
  t.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1);
  await client.end();
  // The end line is written when the session closes; wait for it before stopping.
  await logged('connection.end');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'SIGTERM stops serve cleanly');

  const start = lines.find((l) => l.event === 'connection.start');
  const end = lines.find((l) => l.event === 'connection.end');
  t.match(start, { user: 'dave', database: 'postgres', client: '127.0.0.1', application: 'cli-test', tls: false });
  t.match(end, { user: 'dave', database: 'postgres', application: 'cli-test' });
  t.type(end?.duration_ms, 'number');
  t.ok((end?.bytes_in as number) > 0 && (end?.bytes_out as number) > 0, 'bytes both ways');
  const everything = lines.map((l) => JSON.stringify(l)).join('\n');
  t.notMatch(everything, 'dave-Secret-9', 'the client password is not logged');
  t.notMatch(everything, db.password, 'the upstream password is not logged');
});
