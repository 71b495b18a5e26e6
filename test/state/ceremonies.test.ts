/**
 * Passkey ceremonies in the shared state (the console's CeremonyStore with `state:`): a ceremony issued by
 * one instance is answered on another; it is used once, even when two instances are given the same answer
 * at the same moment; an expired one is never returned; the per-user and anonymous bounds hold.
 */
import t from 'tap';
import { silentLogger } from '../../src/log.js';
import { CEREMONY_LIMITS, type Ceremony } from '../../src/console/webauthn.js';
import { SharedCeremonies } from '../../src/state/ceremonies.js';
import { openStateDatabase } from '../../src/state/components.js';
import { startPostgres } from '../helpers/postgres.js';

const db = await startPostgres(t);
await db.query('CREATE DATABASE stepgate_state');
const state = { url: db.url('stepgate_state'), instance: null, leaseMs: 10_000 };
const dbA = await openStateDatabase(state, 'a', silentLogger);
const dbB = await openStateDatabase(state, 'b', silentLogger);
t.teardown(async () => {
  await dbA.close();
  await dbB.close();
});
const a = new SharedCeremonies(dbA);
const b = new SharedCeremonies(dbB);

const ceremony = (over: Partial<Ceremony> = {}): Ceremony => ({ purpose: 'approve', user: 'alice', challengeId: 'c1', digest: 'd', nonce: 'n', sid: 'sid-1', expiresAt: Date.now() + 60_000, ...over });

t.test('issued on A, answered on B, once', async (t) => {
  await a.put('ch-1', ceremony());
  t.match(await b.take('ch-1'), { purpose: 'approve', user: 'alice', challengeId: 'c1', sid: 'sid-1' }, 'B finds what A issued');
  t.equal(await a.take('ch-1'), null, 'used: gone on A too');
  t.equal(await b.take('ch-1'), null, 'and on B');
});

t.test('the same answer given to two instances at once: exactly one takes it', async (t) => {
  for (let i = 0; i < 20; i++) {
    await a.put(`race-${i}`, ceremony());
    const got = await Promise.all([a.take(`race-${i}`), b.take(`race-${i}`)]);
    t.equal(got.filter((x) => x !== null).length, 1, `round ${i}: one winner`);
  }
});

t.test('expired ceremonies are never returned', async (t) => {
  await a.put('old', ceremony({ expiresAt: Date.now() - 1 }));
  t.equal(await b.take('old'), null);
});

t.test('bounds: per signed-in user, and without a session', async (t) => {
  for (let i = 0; i < CEREMONY_LIMITS.perUser + 5; i++) await a.put(`u-${i}`, ceremony({ user: 'bob', sid: 'sid-bob' }));
  const bob = await dbA.query(`SELECT count(*)::int AS n FROM stepgate.ceremonies WHERE user_name = 'bob'`);
  t.equal(bob.rows[0].n, CEREMONY_LIMITS.perUser, `at most ${CEREMONY_LIMITS.perUser} per user`);
  t.equal(await b.take('u-0'), null, 'the oldest went first');
  t.ok(await b.take(`u-${CEREMONY_LIMITS.perUser + 4}`), 'the newest is there');
  await a.put('anon-1', ceremony({ purpose: 'signin', user: null, sid: null }));
  t.match(await b.take('anon-1'), { purpose: 'signin', user: null }, 'a sign-in ceremony (no session) is shared too');
});
