// Replays proto/vectors/v1.json (PROTOCOL.md section 12) against the codec:
// every frame vector decodes (whole, byte by byte, and from every strict
// prefix as incomplete) and re-encodes to the same bytes; every error vector
// is refused with its error, code, field and detail; every incomplete vector
// asks for more bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  Decoder, encodeFrame, parseCredential, encodeCredential, checkTopic, checkPublishTopic,
  checkQueueGroup, encodeHeaderBlock, decodeHeaderBlock, headerPairs, DEFAULT_MAX_FRAME,
} from '../src/codec.js';
import { ProtocolError, InvalidTopicError, InvalidHeaderError } from '../src/errors.js';

const vectorsPath = fileURLToPath(new URL('../../../proto/vectors/v1.json', import.meta.url));
// u64 fields reach 2^64 - 1: read long integers as strings before JSON.parse.
const text = readFileSync(vectorsPath, 'utf8').replace(/(:\s*)(\d{16,})(?=\s*[,}\]])/g, '$1"$2"');
const { vectors } = JSON.parse(text);

const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const U64 = new Set(['nonce', 'connection_id', 'count']);
const BYTES = new Set(['token', 'payload']);
const FLAGS = new Set(['v1_1', 'no_echo', 'credential', 'request', 'lossy']);

// The vector's frame object in the codec's own form.
function fromVector(f) {
  const out = {};
  for (const [k, v] of Object.entries(f)) {
    if (k === 'credential_value') continue;
    if (U64.has(k)) out[k] = BigInt(v);
    else if (BYTES.has(k)) out[k] = unhex(v);
    else out[k] = v;
  }
  return out;
}

// A decoded frame as plain comparable JSON.
function comparable(f) {
  const out = {};
  for (const [k, v] of Object.entries(f)) {
    if (typeof v === 'bigint') out[k] = v.toString();
    else if (v instanceof Uint8Array) out[k] = hex(v);
    else if (FLAGS.has(k) && v === false) continue; // absent means clear
    else out[k] = v;
  }
  return out;
}

function maxFrameOf(v) {
  return v.max_frame ?? DEFAULT_MAX_FRAME;
}

function decodeAll(v, bytes, chunk = bytes.length) {
  const d = new Decoder({ direction: v.direction, maxFrame: maxFrameOf(v) });
  let frame = null;
  for (let i = 0; i < bytes.length; i += chunk) {
    d.push(bytes.subarray(i, i + chunk));
    if (i + chunk < bytes.length) assert.equal(d.next(), null, 'a strict prefix is incomplete');
  }
  frame = d.next();
  return { frame, d };
}

test('the vectors file is loaded', () => {
  assert.ok(vectors.length > 300, `${vectors.length} vectors`);
});

let frames = 0, errors = 0, incompletes = 0, credentials = 0;
for (const v of vectors) {
  test(`vector: ${v.name}`, () => {
    const bytes = unhex(v.hex);
    if (v.frame) {
      frames++;
      const { frame, d } = decodeAll(v, bytes);
      assert.notEqual(frame, null);
      assert.equal(d.buffered, 0, 'consumes every byte');
      const expected = comparable(fromVector(v.frame));
      assert.deepEqual(comparable(frame), expected);
      // Incremental: one byte at a time gives the same frame.
      assert.deepEqual(comparable(decodeAll(v, bytes, 1).frame), expected);
      // Re-encoding gives the bytes back.
      assert.equal(hex(encodeFrame(fromVector(v.frame), v.direction)), v.hex);
      assert.equal(hex(encodeFrame(frame, v.direction)), v.hex);
      // Typed credentials (section 14.5).
      if (v.frame.credential) {
        credentials++;
        const got = parseCredential(frame.token);
        const want = v.frame.credential_value;
        if (want === null) {
          assert.equal(got, null);
        } else {
          const norm = { ...got };
          if (norm.password) norm.password = hex(norm.password);
          if (norm.token) norm.token = hex(norm.token);
          assert.deepEqual(norm, want);
          assert.equal(hex(encodeCredential(got)), hex(frame.token));
        }
      }
    } else if (v.error) {
      errors++;
      const d = new Decoder({ direction: v.direction, maxFrame: maxFrameOf(v) });
      d.push(bytes);
      assert.throws(() => d.next(), (e) => {
        assert.ok(e instanceof ProtocolError, String(e));
        assert.equal(e.kind, v.error);
        assert.equal(e.code, v.code);
        assert.equal(e.field, v.field);
        assert.equal(e.detail, v.detail);
        return true;
      });
      if (v.error === 'FrameTooShort' || v.error === 'FrameTooLarge') {
        assert.equal(d.buffered, bytes.length, 'prefix errors consume nothing');
      }
    } else {
      assert.equal(v.incomplete, true);
      incompletes++;
      const d = new Decoder({ direction: v.direction, maxFrame: maxFrameOf(v) });
      d.push(bytes);
      assert.equal(d.next(), null);
      assert.equal(d.buffered, bytes.length, 'consumes nothing');
    }
  });
}

test('every kind of vector was replayed', () => {
  assert.ok(frames > 50 && errors > 100 && incompletes > 10 && credentials > 5, JSON.stringify({ frames, errors, incompletes, credentials }));
});

test('a bad topic UTF-8 refuses one frame; decoding goes on after it', () => {
  const d = new Decoder({ direction: 'client' });
  // PUB with topic bytes ff, then a PING.
  d.push(unhex('050000002000' + '01ff' + '00'));
  d.push(encodeFrame({ type: 'PING', nonce: 5n }));
  assert.throws(() => d.next(), (e) => e.kind === 'BadUtf8' && e.code === 100);
  assert.deepEqual(d.next(), { type: 'PING', nonce: 5n });
  assert.equal(d.next(), null);
});

test('several frames in one chunk, and frames split across chunks', () => {
  const a = encodeFrame({ type: 'MSG', sid: 1, topic: 'a.b', reply_to: '', payload: unhex('0102') }, 'server');
  const b = encodeFrame({ type: 'PING', nonce: 9n }, 'server');
  const all = new Uint8Array([...a, ...b, ...a]);
  for (const cut of [1, 3, 5, 7, 11, all.length]) {
    const d = new Decoder();
    const got = [];
    for (let i = 0; i < all.length; i += cut) {
      d.push(all.subarray(i, i + cut));
      for (let f; (f = d.next()) !== null;) got.push(f.type);
    }
    assert.deepEqual(got, ['MSG', 'PING', 'MSG'], `cut ${cut}`);
  }
});

test('UTF-8 keeps a leading BOM and refuses surrogates', () => {
  const f = encodeFrame({ type: 'MSG', sid: 1, topic: '\uFEFFa', reply_to: '', payload: new Uint8Array() }, 'server');
  const d = new Decoder();
  d.push(f);
  assert.equal(d.next().topic, '\uFEFFa');
  const d2 = new Decoder();
  d2.push(unhex('0b000000900001000000' + '03eda080' + '00'));
  assert.throws(() => d2.next(), (e) => e.kind === 'BadUtf8' && e.field === 'Topic');
});

test('topic rules (section 7)', () => {
  for (const t of ['orders', 'orders.eu.42', 'é.ü', '_INBOX.x1', '$SYS.x']) assert.equal(checkTopic(t).wildcard, false, t);
  for (const t of ['*', 'orders.*', 'orders.*.paid', '>', 'orders.>', '*.>']) assert.equal(checkTopic(t).wildcard, true, t);
  for (const t of ['', 'x'.repeat(256), '.a', 'a.', 'a..b', 'a b', 'a\tb', 'a\u00a0b', 'a*b', 'a.b>', 'a.>.b', 'a\u3000b', 'a\u2028']) {
    assert.throws(() => checkTopic(t), InvalidTopicError, JSON.stringify(t));
  }
  assert.equal(checkTopic('x'.repeat(255)).bytes.length, 255);
  assert.throws(() => checkPublishTopic('a.*'), InvalidTopicError);
  assert.throws(() => checkPublishTopic('$SYS.x'), InvalidTopicError);
  assert.doesNotThrow(() => checkQueueGroup('workers'));
  for (const q of ['', 'a.b', 'a*', 'x>', 'a b', 'x'.repeat(256)]) assert.throws(() => checkQueueGroup(q), InvalidTopicError, q);
});

test('header blocks: Map, object and pairs; limits', () => {
  const block = encodeHeaderBlock(headerPairs(new Map([['trace-id', '7f3a'], ['x', ['1', '2']]])));
  assert.deepEqual(decodeHeaderBlock(block), [['trace-id', '7f3a'], ['x', '1'], ['x', '2']]);
  assert.deepEqual(headerPairs({ a: 'b', c: ['d', 'e'] }), [['a', 'b'], ['c', 'd'], ['c', 'e']]);
  assert.equal(hex(encodeHeaderBlock([])), '00');
  assert.throws(() => encodeHeaderBlock([['a:b', 'x']]), InvalidHeaderError);
  assert.throws(() => encodeHeaderBlock([['', 'x']]), InvalidHeaderError);
  assert.throws(() => encodeHeaderBlock([['k'.repeat(65), 'x']]), InvalidHeaderError);
  assert.throws(() => encodeHeaderBlock([['k', 'v'.repeat(4097)]]), InvalidHeaderError);
  assert.throws(() => encodeHeaderBlock([['k', 'a\nb']]), InvalidHeaderError);
  assert.throws(() => encodeHeaderBlock(Array.from({ length: 65 }, (_, i) => [`k${i}`, ''])), InvalidHeaderError);
  assert.equal(decodeHeaderBlock(encodeHeaderBlock([['k'.repeat(64), 'é'.repeat(2048)]]))[0][1].length, 2048);
});
