/**
 * Tamper evidence: `stepgate audit verify` on a trail written through stepgate, and on copies of it where
 * rows were changed, deleted or inserted with better-sqlite3 directly, or checkpoints forged.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import pg from 'pg';
import { CompactSign } from 'jose';
import { canonical, chainHash, type EventRow } from '../../src/audit/format.js';
import { startPostgres } from '../helpers/postgres.js';
import { startStepgate } from '../helpers/stepgate.js';
import { cli, copyDataDir, openDb, readEvents, tamper, writeRules } from './helpers.js';

t.test('verify detects changed, deleted and inserted events and forged checkpoints', async (t) => {
  const db = await startPostgres(t);
  // Checkpoints every 5 events, so there are several along the chain.
  const sg = await startStepgate(t, db, { rulesDir: writeRules(t), configYaml: 'audit:\n  checkpoint_every: 5\n' });
  const client = new pg.Client(sg.pgConfig());
  await client.connect();
  for (let i = 0; i < 12; i++) await client.query(`SELECT ${i} AS n`);
  await t.rejects(client.query('DROP TABLE nothing_here'), { code: '42501' });
  await client.end();
  const dataDir = sg.dataDir;
  // Keep the data directory: app.close() does not remove it, the helper's close() would.
  await sg.app.close();

  const clean = await cli(['audit', 'verify', '--data', dataDir]);
  t.equal(clean.code, 0, clean.stdout);
  t.match(clean.stdout, /checkpoints: {2}\d+, all signatures valid/);
  const events = readEvents(dataDir);
  const statements = events.filter((e) => e.kind === 'statement');
  const target = statements[3]!; // SELECT 3
  t.equal(target.data.sql, 'SELECT 3 AS n');

  await t.test('the append-only triggers refuse changes', async (t) => {
    const copy = copyDataDir(t, dataDir);
    const raw = openDb(copy);
    t.throws(() => raw.prepare('UPDATE events SET body = ? WHERE seq = ?').run('{}', target.seq), /append-only/);
    t.throws(() => raw.prepare('DELETE FROM events WHERE seq = ?').run(target.seq), /append-only/);
    raw.close();
  });

  await t.test('a changed event is named', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => d.prepare('UPDATE events SET body = replace(body, ?, ?) WHERE seq = ?').run('SELECT 3 AS n', 'SELECT 4 AS n', target.seq));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, new RegExp(`FAILED: event ${target.seq} \\(statement, session \\d+ #\\d+, [^)]+\\) was altered: its content does not match its hash`));
  });

  await t.test('a changed time or session is named too', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => d.prepare('UPDATE events SET time = time - 3600000 WHERE seq = ?').run(target.seq));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, new RegExp(`FAILED: event ${target.seq} .* was altered`));
  });

  await t.test('a deleted event is named', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => d.prepare('DELETE FROM events WHERE seq = ?').run(target.seq));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, `FAILED: event ${target.seq} is missing (deleted): the chain jumps from ${target.seq - 1} to ${target.seq + 1}`);
  });

  await t.test('a deleted event with the rest renumbered is found', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => {
      d.prepare('DELETE FROM events WHERE seq = ?').run(target.seq);
      d.prepare('UPDATE events SET seq = -(seq - 1) WHERE seq > ?').run(target.seq);
      d.prepare('UPDATE events SET seq = -seq WHERE seq < 0').run();
    });
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, new RegExp(`FAILED: the event before ${target.seq} \\(.*\\) was deleted and the events after it renumbered`));
  });

  await t.test('an inserted event is named (the rest renumbered, its hash made up)', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => {
      d.prepare('UPDATE events SET seq = -(seq + 1) WHERE seq >= ?').run(target.seq);
      d.prepare('UPDATE events SET seq = -seq WHERE seq < 0').run();
      d.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
        target.seq,
        target.session,
        target.sseq,
        target.time,
        'statement',
        target.body.replace('SELECT 3 AS n', 'SELECT pg_sleep(0)'),
        crypto.randomBytes(32).toString('hex'),
      );
    });
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, new RegExp(`FAILED: event ${target.seq} \\(statement, .*\\) was inserted`));
  });

  await t.test('an inserted event with a correctly chained hash is named', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => {
      const prev = d.prepare('SELECT hash FROM events WHERE seq = ?').get(target.seq - 1) as { hash: string };
      d.prepare('UPDATE events SET seq = -(seq + 1) WHERE seq >= ?').run(target.seq);
      d.prepare('UPDATE events SET seq = -seq WHERE seq < 0').run();
      const row = { ...target, body: target.body.replace('SELECT 3 AS n', 'SELECT 33 AS n') };
      const hash = chainHash(prev.hash, canonical(target.seq, row.session, row.sseq, row.time, row.kind, row.body));
      d.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)').run(target.seq, row.session, row.sseq, row.time, row.kind, row.body, hash);
    });
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, new RegExp(`FAILED: event ${target.seq} \\(statement, .*\\) was inserted: it is not part of the chain \\(the events after it were renumbered\\)`));
  });

  await t.test('an event appended after the end with a made-up hash is named', async (t) => {
    const copy = copyDataDir(t, dataDir);
    const last = events[events.length - 1]!;
    tamper(copy, (d) =>
      d.prepare('INSERT INTO events (seq, session, sseq, time, kind, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)').run(last.seq + 1, target.session, 99, last.time + 1, 'statement', target.body, 'f'.repeat(64)),
    );
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, `FAILED: event ${last.seq + 1} (statement`);
    t.match(r.stdout, /\(the last one\) does not match the chain/);
  });

  await t.test('a session left out of the replay index is found', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => d.prepare('DELETE FROM session_spans WHERE session = ? AND first_seq <= ? AND last_seq >= ?').run(target.session, target.seq, target.seq));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /FAILED: event \d+ \(.*\) is not in the session_spans index: replay of session \d+ would not show it/);
  });

  await t.test('a session whose index entry lies about its user is found', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => d.prepare("UPDATE sessions SET user = 'mallory'").run());
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /FAILED: the sessions index says user "mallory" for session \d+, its events say "alice"/);
  });

  await t.test('a chain rewritten from an altered event on is caught by the signed checkpoints', async (t) => {
    const copy = copyDataDir(t, dataDir);
    tamper(copy, (d) => {
      const rows = d.prepare('SELECT * FROM events WHERE seq >= ? ORDER BY seq').all(target.seq - 1) as EventRow[];
      let prev = rows[0]!.hash;
      const update = d.prepare('UPDATE events SET body = ?, hash = ? WHERE seq = ?');
      for (const row of rows.slice(1)) {
        const body = row.seq === target.seq ? row.body.replace('SELECT 3 AS n', 'SELECT 4 AS n') : row.body;
        prev = chainHash(prev, canonical(row.seq, row.session, row.sseq, row.time, row.kind, body));
        update.run(body, prev, row.seq);
      }
    });
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /FAILED: checkpoint \d+ signed event \d+ with hash [0-9a-f]{12}…, but the stored event's hash is [0-9a-f]{12}…: the chain was rewritten/);
  });

  await t.test('events cut from the end are caught by the last checkpoint', async (t) => {
    const copy = copyDataDir(t, dataDir);
    const last = events[events.length - 1]!;
    tamper(copy, (d) => d.prepare('DELETE FROM events WHERE seq > ?').run(last.seq - 3));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /checkpoint \d+ vouches for event \d+, but the chain ends at \d+: events were deleted from its end/);
  });

  await t.test('a forged checkpoint signature is detected', async (t) => {
    const copy = copyDataDir(t, dataDir);
    // Move the checkpoint to a rewritten head and keep the old signature bytes.
    tamper(copy, (d) => {
      const cp = d.prepare('SELECT * FROM checkpoints ORDER BY id LIMIT 1').get() as { id: number; jws: string };
      const [header, payload, signature] = cp.jws.split('.');
      const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
      claims.hash = 'a'.repeat(64);
      const forged = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
      d.prepare('UPDATE checkpoints SET jws = ?, hash = ? WHERE id = ?').run(forged, claims.hash, cp.id);
    });
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /checkpoint 1 \(event \d+\): the signature is not valid/);
  });

  await t.test('a checkpoint signed with another key is detected, with the data directory key and with --pubkey', async (t) => {
    const copy = copyDataDir(t, dataDir);
    const other = crypto.generateKeyPairSync('ed25519');
    const raw = openDb(copy);
    const cp = raw.prepare('SELECT * FROM checkpoints ORDER BY id LIMIT 1').get() as { id: number; jws: string };
    raw.close();
    const forged = await new CompactSign(Buffer.from(cp.jws.split('.')[1]!, 'base64url'))
      .setProtectedHeader({ alg: 'EdDSA', typ: 'stepgate-audit-checkpoint', kid: 'attacker' })
      .sign(other.privateKey);
    tamper(copy, (d) => d.prepare('UPDATE checkpoints SET jws = ? WHERE id = ?').run(forged, cp.id));
    const r = await cli(['audit', 'verify', '--data', copy]);
    t.equal(r.code, 1);
    t.match(r.stdout, /the signature is not valid \(signed with key attacker, not /);

    // An attacker who also replaced the data directory's public key fools the local check, not --pubkey.
    const mine = await cli(['audit', 'pubkey', '--data', dataDir]);
    const saved = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-pub-')), 'audit.jwk');
    fs.writeFileSync(saved, mine.stdout);
    t.teardown(() => fs.rmSync(path.dirname(saved), { recursive: true, force: true }));
    fs.writeFileSync(path.join(copy, 'audit-signing.pub'), other.publicKey.export({ type: 'spki', format: 'pem' }));
    const fooled = await cli(['audit', 'verify', '--data', copy]);
    t.match(fooled.stdout, /signatures? is not valid|NOT VALID/, 'the other checkpoints still fail with the attacker key');
    const withCopy = await cli(['audit', 'verify', '--data', copy, '--pubkey', saved]);
    t.equal(withCopy.code, 1);
    t.match(withCopy.stdout, /checkpoint 1 \(event \d+\): the signature is not valid/);
  });

  await t.test('pubkey exports JWK and PEM; --pubkey verifies with either', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'stepgate-pub-'));
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const jwk = await cli(['audit', 'pubkey', '--data', dataDir]);
    t.equal(jwk.code, 0);
    t.match(JSON.parse(jwk.stdout), { kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', kid: String });
    const pem = await cli(['audit', 'pubkey', '--format', 'pem', '--data', dataDir]);
    t.match(pem.stdout, /^-----BEGIN PUBLIC KEY-----\n/);
    fs.writeFileSync(path.join(dir, 'k.jwk'), jwk.stdout);
    fs.writeFileSync(path.join(dir, 'k.pem'), pem.stdout);
    for (const f of ['k.jwk', 'k.pem']) {
      const r = await cli(['audit', 'verify', '--data', dataDir, '--pubkey', path.join(dir, f)]);
      t.equal(r.code, 0, `${f}: ${r.stdout}`);
    }
    const wrong = crypto.generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' });
    fs.writeFileSync(path.join(dir, 'wrong.pem'), wrong);
    const r = await cli(['audit', 'verify', '--data', dataDir, '--pubkey', path.join(dir, 'wrong.pem')]);
    t.equal(r.code, 1);
    t.match(r.stdout, /NOT VALID/);
    // The private key file stays private.
    t.equal(fs.statSync(path.join(dataDir, 'audit-signing.key')).mode & 0o777, 0o600);
    t.equal(fs.statSync(path.join(dataDir, 'audit.db')).mode & 0o777, 0o600);
  });

  await t.test('usage errors exit 2', async (t) => {
    t.equal((await cli(['audit', 'verify', '--data', dataDir, '--speed', '2'])).code, 2);
    t.equal((await cli(['audit', 'frobnicate', '--data', dataDir])).code, 2);
    t.equal((await cli(['audit', 'sessions', '--data', dataDir, '--since', 'yesterday'])).code, 2);
    t.equal((await cli(['audit'])).code, 2);
    const help = await cli(['audit', '--help']);
    t.equal(help.code, 0);
    t.match(help.stdout, /stepgate audit replay SESSION \[--speed N \| --instant\] \[--json\]/);
    const missing = await cli(['audit', 'verify', '--data', path.join(os.tmpdir(), 'no-such-stepgate-dir')]);
    t.equal(missing.code, 1);
    t.match(missing.stderr, /no audit trail in/);
  });
  fs.rmSync(dataDir, { recursive: true, force: true });
});
