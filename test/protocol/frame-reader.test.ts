/**
 * FrameReader: message boundaries in a byte stream however it is chunked; buffered types come whole,
 * others may come in parts, runs of relay-only types come as one frame; malformed lengths are refused.
 */
import t from 'tap';
import { FrameError, FrameReader, HEAD, PART, TAIL, typeSet, WHOLE, type FrameKind } from '../../src/protocol/frame-reader.js';

function message(type: string, payload: Buffer | string): Buffer {
  const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

interface Frame {
  type: string;
  kind: FrameKind;
  bytes: Buffer;
}

function reader(options: { buffered?: string; runs?: string; maxLength?: number } = {}): { feed(chunk: Buffer): Frame[] } {
  const r = new FrameReader({
    maxLength: options.maxLength ?? 1 << 20,
    buffered: typeSet(options.buffered ?? 'ZC'),
    runs: options.runs === undefined ? undefined : typeSet(options.runs),
  });
  return {
    feed(chunk) {
      const frames: Frame[] = [];
      // A copy: the reader may keep views of its input only as its docs allow.
      r.read(chunk, (type, buf, start, end, kind) => frames.push({ type: String.fromCharCode(type), kind, bytes: Buffer.from(buf.subarray(start, end)) }));
      return frames;
    },
  };
}

/** Splits whole frames (which may hold runs) back into messages. */
function messagesOf(frames: Frame[]): Buffer[] {
  const out: Buffer[] = [];
  let partial: Buffer[] = [];
  for (const f of frames) {
    if (f.kind === HEAD || f.kind === PART) {
      partial.push(f.bytes);
      continue;
    }
    if (f.kind === TAIL) {
      out.push(Buffer.concat([...partial, f.bytes]));
      partial = [];
      continue;
    }
    for (let pos = 0; pos < f.bytes.length; ) {
      const total = f.bytes.readInt32BE(pos + 1) + 1;
      out.push(f.bytes.subarray(pos, pos + total));
      pos += total;
    }
  }
  return out;
}

t.test('whole messages in one chunk are whole frames', async (t) => {
  const stream = Buffer.concat([message('T', 'rowdesc'), message('D', 'row1'), message('C', 'SELECT 1'), message('Z', 'I')]);
  const frames = reader().feed(stream);
  t.same(
    frames.map((f) => [f.type, f.kind]),
    [
      ['T', WHOLE],
      ['D', WHOLE],
      ['C', WHOLE],
      ['Z', WHOLE],
    ],
  );
  t.same(Buffer.concat(frames.map((f) => f.bytes)), stream);
});

t.test('a run of relay-only messages is one frame; other types stay separate', async (t) => {
  const rows = [message('D', 'a'), message('D', 'bb'), message('D', 'ccc')];
  const stream = Buffer.concat([message('T', 'x'), ...rows, message('C', 'SELECT 3'), message('d', '1'), message('d', '2'), message('Z', 'I')]);
  const frames = reader({ runs: 'Dd' }).feed(stream);
  t.same(
    frames.map((f) => f.type),
    ['T', 'D', 'C', 'd', 'Z'],
  );
  t.same(frames[1].bytes, Buffer.concat(rows), 'the three rows in one frame');
  t.equal(frames[1].kind, WHOLE);
  t.same(messagesOf(frames), [message('T', 'x'), ...rows, message('C', 'SELECT 3'), message('d', '1'), message('d', '2'), message('Z', 'I')]);
});

t.test('a run ends before a message that is not complete; the rest follows with the next chunk', async (t) => {
  const r = reader({ runs: 'D' });
  const rows = [message('D', 'first'), message('D', 'second'), message('D', 'third row is longer')];
  const stream = Buffer.concat(rows);
  const cut = rows[0].length + rows[1].length + 3; // inside the third row's header
  const frames = [...r.feed(stream.subarray(0, cut)), ...r.feed(stream.subarray(cut))];
  t.same(frames[0].bytes, Buffer.concat([rows[0], rows[1]]), 'the complete rows come at once');
  t.same(messagesOf(frames), rows);
});

t.test('buffered messages split across chunks come whole; others come in parts', async (t) => {
  const big = message('D', Buffer.alloc(1000, 7));
  const complete = message('C', 'SELECT 1');
  const r = reader();
  const frames = [...r.feed(big.subarray(0, 10)), ...r.feed(big.subarray(10, 600)), ...r.feed(Buffer.concat([big.subarray(600), complete.subarray(0, 4)])), ...r.feed(complete.subarray(4))];
  t.same(
    frames.map((f) => f.kind),
    [HEAD, PART, TAIL, WHOLE],
  );
  t.same(messagesOf(frames), [big, complete]);
});

t.test('any chunking of a stream gives back the same messages', async (t) => {
  let seed = 42;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const types = 'DDDdCZTE';
  const messages = Array.from({ length: 300 }, () => message(types[random(types.length)], Buffer.alloc(random(40), random(256))));
  const stream = Buffer.concat(messages);
  for (let trial = 0; trial < 50; trial++) {
    const r = reader({ buffered: 'CZTE', runs: trial % 2 === 0 ? 'Dd' : undefined });
    const frames: Frame[] = [];
    for (let pos = 0; pos < stream.length; ) {
      const n = 1 + random(trial < 25 ? 8 : 200);
      frames.push(...r.feed(stream.subarray(pos, pos + n)));
      pos += n;
    }
    const got = messagesOf(frames);
    if (got.length !== messages.length || !got.every((m, i) => m.equals(messages[i]))) {
      t.fail(`trial ${trial}: messages differ`);
      return;
    }
  }
  t.pass('50 random chunkings, with and without runs');
});

t.test('malformed lengths are refused with 08P01, also inside a run', async (t) => {
  const refusal = (options: Parameters<typeof reader>[0], chunk: Buffer): unknown => {
    try {
      reader(options).feed(chunk);
    } catch (err) {
      return err;
    }
    return null;
  };
  const bad = Buffer.from([0x44, 0, 0, 0, 3]); // length 3 < 4
  for (const [what, err] of [
    ['a length below 4', refusal({}, bad)],
    ['a length below 4 after a run', refusal({ runs: 'D' }, Buffer.concat([message('D', 'ok'), bad]))],
    ['a buffered message over the limit', refusal({ maxLength: 1024 }, Buffer.from([0x43, 0x00, 0x10, 0x00, 0x00]))],
  ] as const) {
    t.type(err, FrameError, what);
    t.equal((err as FrameError).sqlstate, '08P01', what);
  }
  t.match((refusal({ maxLength: 1024 }, Buffer.from([0x43, 0x00, 0x10, 0x00, 0x00])) as Error).message, /exceeds the limit of 1024 bytes/);
});
