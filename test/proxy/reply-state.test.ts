/**
 * The reply state machine (src/proxy/reply-state.ts) on its own: message sequences in, actions out, no
 * sockets and no server. The same sequences against a real server are in raw-protocol.test.ts.
 */
import t from 'tap';
import type { ErrorFields } from '../../src/protocol/backend-messages.js';
import { Action, Capture, Entry, ReadOnlyCause, ReplyState, type ReplyObserver, type ReplyTracker, type ServerMessage } from '../../src/proxy/reply-state.js';

const Z = 0x5a, E = 0x45, C = 0x43, D = 0x44, N = 0x4e, S = 0x53, A = 0x41, T = 0x54, G = 0x47;
const PARSE_COMPLETE = 0x31, BIND_COMPLETE = 0x32, CLOSE_COMPLETE = 0x33, PARAMETER_DESCRIPTION = 0x74, NO_DATA = 0x6e, PORTAL_SUSPENDED = 0x73;

function msg(type: number, extra: { status?: string; tag?: string; error?: Partial<ErrorFields>; rows?: (string | null)[][] } = {}): ServerMessage {
  return {
    type,
    status: () => (extra.status ?? 'I').charCodeAt(0),
    tag: () => extra.tag ?? 'SELECT 1',
    error: () => ({ severity: 'ERROR', code: 'XX000', message: 'boom', ...extra.error }),
    rows: () => extra.rows ?? [],
  };
}

class Log implements ReplyTracker {
  events: string[] = [];
  onComplete(tag: string | null): void {
    this.events.push(`complete ${tag}`);
  }
  onError(sqlstate: string, _message: string, readOnly?: boolean): void {
    this.events.push(`error ${sqlstate}${readOnly ? ' read-only' : ''}`);
  }
  onSkipped(): void {
    this.events.push('skipped');
  }
}

function setup(): { rs: ReplyState; ready: { status: number; drained: boolean; batch: number }[]; refusals: ReadOnlyCause[] } {
  const ready: { status: number; drained: boolean; batch: number }[] = [];
  const refusals: ReadOnlyCause[] = [];
  const observer: ReplyObserver = {
    onReadyForQuery: (status, drained, batch) => ready.push({ status, drained, batch }),
    onReadOnlyRefusal: (cause) => refusals.push(cause),
  };
  return { rs: new ReplyState(observer), ready, refusals };
}

const feed = (rs: ReplyState, ...msgs: ServerMessage[]): Action[] => msgs.map((m) => rs.onServerMessage(m));

t.test('a simple Query: its replies are relayed and its statements tracked one by one', async (t) => {
  const { rs, ready } = setup();
  const a = new Log();
  const b = new Log();
  rs.expect(Entry.query([a, b], null), true);
  t.equal(rs.batch, 1, 'a Query ends a batch');
  t.same(feed(rs, msg(T), msg(D), msg(C, { tag: 'SELECT 1' }), msg(C, { tag: 'UPDATE 2' }), msg(Z)), [Action.Forward, Action.Forward, Action.Forward, Action.Forward, Action.Forward]);
  t.same([a.events, b.events], [['complete SELECT 1'], ['complete UPDATE 2']]);
  t.same(ready, [{ status: 0x49, drained: true, batch: 0 }]);
  t.ok(rs.idle);
});

t.test('an error in a multi-statement Query: the rest is skipped and its registry changes undone', async (t) => {
  const { rs } = setup();
  const trackers = [new Log(), new Log(), new Log()];
  const undone: number[] = [];
  const query = Entry.query(trackers, null);
  query.statementUndos = [
    { index: 0, undo: () => undone.push(0) },
    { index: 2, undo: () => undone.push(2) },
  ];
  rs.expect(query, true);
  feed(rs, msg(C), msg(E, { error: { code: '22012' } }), msg(Z));
  t.same(trackers.map((x) => x.events), [['complete SELECT 1'], ['error 22012'], ['skipped']]);
  t.same(undone, [2], 'the statement that ran keeps its change');
});

t.test('an extended batch fails as a whole after an error, up to Sync', async (t) => {
  const { rs } = setup();
  const undone: string[] = [];
  const exec = new Log();
  rs.expect(Entry.parse('parse', () => undone.push('parse 1')));
  rs.expect(Entry.parse('bind', () => undone.push('bind 1')));
  rs.expect(Entry.parse('parse', () => undone.push('parse 2')));
  rs.expect(Entry.parse('bind', () => undone.push('bind 2')));
  rs.expect(Entry.execute(exec, ReadOnlyCause.None));
  t.notOk(rs.skipping);
  rs.expect(Entry.sync(), true);
  t.same(feed(rs, msg(PARSE_COMPLETE), msg(BIND_COMPLETE), msg(E), msg(Z)), [Action.Forward, Action.Forward, Action.Forward, Action.Forward]);
  t.same(undone, ['bind 2', 'parse 2'], 'the failed message and the skipped ones are undone, last first');
  t.same(exec.events, ['skipped']);
  t.ok(rs.idle);
});

t.test("a refusal: the server's error for stepgate's failing Execute is replaced by stepgate's", async (t) => {
  const { rs } = setup();
  const trackers = [new Log(), new Log()];
  const replacement = Buffer.from('replacement');
  rs.expect(Entry.parse('parse', null));
  rs.expect(Entry.refusal(replacement, { severity: 'ERROR', code: '42501', message: 'denied' }, trackers));
  rs.expect(Entry.execute(null, ReadOnlyCause.None));
  rs.expect(Entry.sync(), true);
  const actions = feed(rs, msg(PARSE_COMPLETE), msg(E, { error: { code: '34000' } }));
  t.same(actions, [Action.Forward, Action.Replace]);
  t.equal(rs.replacement, replacement);
  t.ok(rs.skipping === false, 'the batch counter moved on with the Sync');
  t.same(trackers.map((x) => x.events), [['error 42501'], ['skipped']]);
  t.same(feed(rs, msg(Z)), [Action.Forward]);
});

t.test("stepgate's own messages: everything they get is swallowed, notifications and settings are not", async (t) => {
  const { rs } = setup();
  rs.expect(Entry.ownMessage(BIND_COMPLETE, true, null));
  rs.expect(Entry.ownMessage(C, true, null));
  const q = new Log();
  rs.expect(Entry.query([q], null), true);
  t.ok(rs.swallowing);
  t.same(feed(rs, msg(BIND_COMPLETE), msg(N), msg(A), msg(S), msg(C, { tag: 'SET' })), [Action.Swallow, Action.Swallow, Action.Forward, Action.Forward, Action.Swallow]);
  t.notOk(rs.swallowing, "the client's Query is answered next");
  t.same(feed(rs, msg(T), msg(D), msg(C), msg(Z)), [Action.Forward, Action.Forward, Action.Forward, Action.Forward]);
  t.same(q.events, ['complete SELECT 1']);
  t.ok(rs.clientIdle);
});

t.test("an own message's error stands in for the client's next message, and the server skips it", async (t) => {
  const { rs } = setup();
  const errors: string[] = [];
  rs.expect(Entry.ownMessage(BIND_COMPLETE, true, (e) => errors.push(e.code)));
  rs.expect(Entry.ownMessage(C, true, null));
  const exec = new Log();
  rs.expect(Entry.parse('bind', null));
  rs.expect(Entry.execute(exec, ReadOnlyCause.None));
  rs.expect(Entry.sync(), true);
  t.same(feed(rs, msg(E, { error: { code: '25P02' } }), msg(Z, { status: 'E' })), [Action.Forward, Action.Forward]);
  t.same(errors, ['25P02']);
  t.same(exec.events, ['error 25P02'], "the client's statement is recorded with the error it saw");
});

t.test("a Sync after a client Query stands in for its ReadyForQuery only when the server skipped it", async (t) => {
  for (const failed of [false, true]) {
    const { rs } = setup();
    rs.expect(Entry.ownMessage(BIND_COMPLETE, true, null));
    rs.expect(Entry.ownMessage(C, true, null));
    const query = Entry.query([new Log()], null);
    rs.expect(query, true);
    rs.expect(Entry.ownSync(query), true);
    const actions = failed
      ? feed(rs, msg(E, { error: { code: '57014' } }), msg(Z))
      : feed(rs, msg(BIND_COMPLETE), msg(C, { tag: 'SET' }), msg(C), msg(Z), msg(Z));
    t.same(actions, failed ? [Action.Forward, Action.Forward] : [Action.Swallow, Action.Swallow, Action.Forward, Action.Forward, Action.Swallow], failed ? 'skipped' : 'answered');
    t.ok(rs.idle);
  }
});

t.test('an injected simple Query in a block: its error and ReadyForQuery are swallowed', async (t) => {
  const { rs } = setup();
  const errors: string[] = [];
  rs.expect(Entry.ownQuery({ onError: (e) => errors.push(e.code) }), true);
  const q = new Log();
  rs.expect(Entry.query([q], null), true);
  t.same(feed(rs, msg(E, { error: { code: '25P02' } }), msg(Z, { status: 'E' })), [Action.Swallow, Action.Swallow]);
  t.same(errors, ['25P02']);
  t.same(feed(rs, msg(E, { error: { code: '25P02' } }), msg(Z, { status: 'E' })), [Action.Forward, Action.Forward]);
  t.same(q.events, ['error 25P02']);
});

t.test('a read-only refusal of a statement stepgate ran read-only is reported with its cause', async (t) => {
  const { rs, refusals } = setup();
  const q = new Log();
  rs.expect(Entry.query([q], [ReadOnlyCause.EnforcedRead]), true);
  feed(rs, msg(E, { error: { code: '25006' } }));
  t.same(refusals, [ReadOnlyCause.EnforcedRead]);
  t.equal(rs.readOnlyRefusal, ReadOnlyCause.EnforcedRead, 'the session sends a notice before the error');
  t.same(q.events, ['error 25006 read-only']);
  const { rs: rs2, refusals: r2 } = setup();
  const q2 = new Log();
  rs2.expect(Entry.query([q2], null), true);
  feed(rs2, msg(E, { error: { code: '25006' } }));
  t.same(r2, [], "the client's own read-only transaction: not stepgate's doing");
  t.same(q2.events, ['error 25006']);
});

t.test('COPY IN: Syncs the client sent during the copy get no ReadyForQuery', async (t) => {
  const { rs } = setup();
  rs.expect(Entry.parse('parse', null));
  rs.expect(Entry.parse('bind', null));
  rs.expect(Entry.execute(null, ReadOnlyCause.None));
  rs.expect(Entry.sync(), true); // libpq sends it right after the Execute of a COPY
  feed(rs, msg(PARSE_COMPLETE), msg(BIND_COMPLETE), msg(G));
  t.ok(rs.copyIn);
  t.ok(rs.syncIgnored, 'a Sync now is not queued');
  rs.copyEnded();
  rs.expect(Entry.sync(), true);
  t.same(feed(rs, msg(C, { tag: 'COPY 2' }), msg(Z)), [Action.Forward, Action.Forward]);
  t.ok(rs.idle, 'the ignored Sync was dropped from the queue');
});

t.test('Describe of a statement completes at RowDescription or NoData after ParameterDescription', async (t) => {
  const { rs } = setup();
  rs.expect(Entry.describe(true));
  rs.expect(Entry.execute(null, ReadOnlyCause.None));
  feed(rs, msg(PARAMETER_DESCRIPTION), msg(NO_DATA));
  rs.expect(Entry.sync(), true);
  t.same(feed(rs, msg(PORTAL_SUSPENDED), msg(Z)), [Action.Forward, Action.Forward]);
  t.ok(rs.idle);
});

t.test('parsing uncertainty lasts until the reply that carries the change', async (t) => {
  const { rs } = setup();
  rs.expect(Entry.execute(null, ReadOnlyCause.None));
  rs.noteParsingChange();
  t.ok(rs.parsingUncertain);
  rs.expect(Entry.sync(), true);
  t.ok(rs.parsingUncertain, 'moved to the Sync');
  feed(rs, msg(C, { tag: 'SET' }));
  t.ok(rs.parsingUncertain);
  feed(rs, msg(Z));
  t.notOk(rs.parsingUncertain);
  void CLOSE_COMPLETE;
});

t.test('undone in reverse order: a failed Parse followed by a skipped Parse of the same name leaves the first', async (t) => {
  const { StatementRegistry } = await import('../../src/proxy/statement-registry.js');
  const registry = new StatementRegistry();
  const { rs } = setup();
  const define = (sql: string): void => rs.expect(Entry.parse('parse', registry.defineStatement('', { sql, statements: [] })));
  define('A');
  define('B');
  define('C');
  rs.expect(Entry.sync(), true);
  feed(rs, msg(PARSE_COMPLETE), msg(E), msg(Z));
  t.equal(registry.statement('')?.sql, 'A', 'the server holds A: so does the registry');
});

t.test('a previewed Query: its replies up to its ReadyForQuery are captured, with tags, error, notices and status', async (t) => {
  const { rs, ready } = setup();
  const capture = new Capture(1 << 20);
  rs.expect(Entry.query([], null, capture), true);
  t.equal(rs.capturing, capture, 'the head captures');
  const actions = feed(rs, msg(N, { error: { message: 'cascading' } }), msg(C, { tag: 'DELETE 3' }), msg(A), msg(S), msg(Z, { status: 'T' }));
  t.same(actions, [Action.Capture, Action.Capture, Action.Forward, Action.Forward, Action.Capture], 'notifications and parameter reports still go to the client');
  t.same(capture.tags, ['DELETE 3']);
  t.same(capture.notices, ['cascading']);
  t.equal(capture.status, 'T'.charCodeAt(0));
  t.equal(capture.error, null);
  t.same(ready.map((r) => [String.fromCharCode(r.status), r.drained]), [['T', true]], 'the transaction model still hears the status');
  t.ok(rs.idle);
  t.equal(rs.capturing, null);

  const failed = new Capture(1 << 20);
  rs.expect(Entry.query([], null, failed), true);
  t.same(feed(rs, msg(E, { error: { code: '23503' } }), msg(Z, { status: 'E' })), [Action.Capture, Action.Capture]);
  t.equal(failed.error?.code, '23503');
});

t.test('a Capture keeps copies up to its limit, then only notes that it overflowed', async (t) => {
  const capture = new Capture(10);
  const chunk = Buffer.from('abcdef');
  capture.add(chunk, 0, 6);
  chunk[0] = 0x7a;
  t.equal(capture.chunks[0]!.toString(), 'abcdef', 'a copy, not a view of the socket buffer');
  capture.add(chunk, 0, 6);
  t.ok(capture.overflowed);
  t.equal(capture.chunks.length, 0, 'nothing half kept');
  const withReady = new Capture(100);
  withReady.add(Buffer.from('C-tag'), 0, 5);
  withReady.add(Buffer.from([0x5a, 0, 0, 0, 5, 0x49]), 0, 6);
  t.equal(withReady.replies().toString(), 'C-tag', 'replies() leaves the ReadyForQuery out');
});

t.test("stepgate's own Query: rows reach onRow, the end reaches onDone after the model heard it", async (t) => {
  const { rs, ready } = setup();
  const rows: (string | null)[][] = [];
  const done: [string, boolean, number][] = [];
  rs.expect(Entry.ownQuery({ onRow: (r) => rows.push(r), onDone: (status, failed) => done.push([String.fromCharCode(status), failed, ready.length]) }), true);
  t.same(feed(rs, msg(T), msg(D, { rows: [['orders'], [null]] }), msg(C), msg(Z, { status: 'T' })), [Action.Swallow, Action.Swallow, Action.Swallow, Action.Swallow]);
  t.same(rows, [['orders'], [null]]);
  t.same(done, [['T', false, 1]]);
  rs.expect(Entry.ownQuery({ onDone: (status, failed) => done.push([String.fromCharCode(status), failed, ready.length]) }), true);
  feed(rs, msg(E), msg(Z, { status: 'E' }));
  t.same(done[1], ['E', true, 2], 'a failure is reported');
});
