// Client behaviour against a scripted fake WebSocket (options.WebSocket):
// what is sent, when it is buffered, and how the client reacts to each
// server frame. No network, no broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  connect, Decoder, encodeFrame, parseCredential, AuthError, BufferFullError, ProtocolError,
  UnsupportedError, ServerError, backoffDelay,
} from '../index.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A fake WebSocket class; `sockets` lists every instance in order. */
/**
 * `refuse(n)`: for the nth socket (from 0), how its connection fails:
 * 'error' (error alone, still CONNECTING, as Node 20's WebSocket does),
 * 'error+close' (as browsers do), or false (it opens).
 */
function fake({ autoWelcome = true, v11 = true, maxFrame = 1048576, onHello, refuse = () => false } = {}) {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.bufferedAmount = 0;
      this.frames = [];
      this.decoder = new Decoder({ direction: 'client', maxFrame: 0xffffffff });
      sockets.push(this);
      const how = refuse(sockets.length - 1);
      if (how) {
        setTimeout(() => {
          if (how === 'error+close') this.readyState = 3;
          this.onerror?.({ message: 'connection refused' });
          if (how === 'error+close') this.onclose?.({ code: 1006 });
        }, 0);
        return;
      }
      setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 0);
    }
    send(data) {
      this.decoder.push(data);
      for (let f; (f = this.decoder.next()) !== null;) {
        this.frames.push(f);
        if (f.type === 'HELLO') {
          if (onHello) onHello(this, f);
          else if (autoWelcome) this.welcome();
        }
      }
    }
    close(code = 1000) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code }), 0);
    }
    // The server side.
    deliver(bytes) { this.onmessage?.({ data: bytes.slice().buffer }); }
    serverSend(frame) { this.deliver(encodeFrame(frame, 'server')); }
    welcome(v = v11) {
      this.serverSend({ type: 'WELCOME', version: 1, max_frame: maxFrame, ping_interval_ms: 0, core_id: 0, connection_id: 7n, server_name: 'fake', v1_1: v });
    }
    serverClose(code = 1006) { this.readyState = 3; this.onclose?.({ code }); }
    types() { return this.frames.map((f) => f.type); }
  }
  return { WebSocket: FakeWS, sockets };
}

test('needs a WebSocket constructor', async () => {
  await assert.rejects(connect('ws://x/', { WebSocket: 42 }), /WebSocket/);
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  if (saved && !saved.configurable) return;
  delete globalThis.WebSocket;
  try {
    await assert.rejects(connect('ws://x/'), /--experimental-websocket/);
  } finally {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
  }
});

test('HELLO: name, 1.1, typed credential; connect resolves on WELCOME', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket, name: 'app', credentials: { kind: 'password', user: 'ann', password: 'p:w d' } });
  const hello = f.sockets[0].frames[0];
  assert.equal(hello.type, 'HELLO');
  assert.equal(hello.name, 'app');
  assert.equal(hello.v1_1, true);
  assert.equal(hello.credential, true);
  const cred = parseCredential(hello.token);
  assert.equal(cred.user, 'ann');
  assert.equal(new TextDecoder().decode(cred.password), 'p:w d');
  assert.equal(c.info.serverName, 'fake');
  assert.equal(c.info.v11, true);
  await c.close();
});

test('plain token, bearer and jwt credentials', async () => {
  for (const [opts, check] of [
    [{ token: 's3cret' }, (h) => { assert.equal(h.credential, false); assert.equal(new TextDecoder().decode(h.token), 's3cret'); }],
    [{ credentials: { kind: 'bearer', token: 'abc' } }, (h) => assert.equal(new TextDecoder().decode(h.token), 'bearer abc')],
    [{ credentials: { kind: 'jwt', jwt: 'a.b.c' } }, (h) => assert.deepEqual(parseCredential(h.token), { kind: 'jwt', jwt: 'a.b.c' })],
  ]) {
    const f = fake();
    const c = await connect('ws://fake/', { WebSocket: f.WebSocket, ...opts });
    check(f.sockets[0].frames[0]);
    await c.close();
  }
});

test('auth failed is permanent: connect rejects, no reconnection', async () => {
  const f = fake({ onHello: (ws) => { ws.serverSend({ type: 'ERR', code: 7, fatal: true, text: 'auth failed' }); ws.serverClose(1000); } });
  await assert.rejects(connect('ws://fake/', { WebSocket: f.WebSocket, credentials: { kind: 'bearer', token: 'x' } }), AuthError);
  await sleep(50);
  assert.equal(f.sockets.length, 1);
});

test('a version 1 server: the 1.1 HELLO is refused, the client connects again as version 1', async () => {
  const f = fake({
    onHello: (ws, hello) => {
      if (hello.v1_1) { ws.serverSend({ type: 'ERR', code: 1, fatal: true, text: 'malformed frame' }); ws.serverClose(1000); } else ws.welcome(false);
    },
  });
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  assert.equal(f.sockets.length, 2);
  assert.equal(f.sockets[1].frames[0].v1_1, false);
  assert.equal(c.info.v11, false);
  assert.throws(() => c.publish('a', 'b', { headers: { k: 'v' } }), UnsupportedError);
  assert.throws(() => c.subscribe('a.*'), UnsupportedError);
  await c.close();
});

test('server PING is answered with PONG; flush waits for its PONG', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  const ws = f.sockets[0];
  ws.serverSend({ type: 'PING', nonce: 0xfffffffffffffffen });
  assert.deepEqual(ws.frames.at(-1), { type: 'PONG', nonce: 0xfffffffffffffffen });
  let done = false;
  const p = c.flush().then(() => { done = true; });
  const ping = ws.frames.at(-1);
  assert.equal(ping.type, 'PING');
  await sleep(5);
  assert.equal(done, false);
  ws.serverSend({ type: 'PONG', nonce: ping.nonce });
  await p;
  await c.close();
});

test('bufferedAmount over the limit: publications wait in the buffer, up to maxBufferBytes, in order', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket, maxBufferBytes: 100, bufferedAmountLimit: 1000 });
  const ws = f.sockets[0];
  c.publish('t', 'direct');
  assert.equal(ws.frames.at(-1).type, 'PUB');
  ws.bufferedAmount = 5000;
  const before = ws.frames.length;
  c.publish('t', '1'.repeat(40)); // 49 bytes
  c.publish('t', '2'.repeat(40)); // 98
  assert.throws(() => c.publish('t', '3'.repeat(40)), BufferFullError);
  assert.equal(c.bufferedBytes, 98);
  assert.equal(ws.frames.length, before);
  ws.bufferedAmount = 0;
  await sleep(30);
  assert.equal(c.bufferedBytes, 0);
  assert.deepEqual(ws.frames.slice(before).map((x) => new TextDecoder().decode(x.payload)[0]), ['1', '2']);
  await c.close();
});

test('frames split across messages and several frames in one message', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  const ws = f.sockets[0];
  const got = [];
  const sub = c.subscribe('s.>', (m) => got.push(m));
  const msg = (i) => encodeFrame({ type: 'HMSG', sid: sub.sid, topic: `s.${i}`, reply_to: '', headers: [['k', String(i)]], payload: new Uint8Array([i]) }, 'server');
  const all = new Uint8Array([...msg(1), ...msg(2), ...msg(3)]);
  for (let i = 0; i < all.length; i++) ws.deliver(all.subarray(i, i + 1));
  ws.deliver(all);
  assert.deepEqual(got.map((m) => m.topic), ['s.1', 's.2', 's.3', 's.1', 's.2', 's.3']);
  assert.deepEqual(got[1].headers.get('k'), ['2']);
  await c.close();
});

test('a protocol error closes the connection; reconnection restores subscriptions under the same sids', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket, reconnect: { minDelay: 1, maxDelay: 5 } });
  const s1 = c.subscribe('a.b', () => {});
  const s2 = c.subscribe('q.*', { queue: 'g', lossy: true }, () => {});
  const errors = [];
  c.on('error', (e) => errors.push(e));
  const back = new Promise((r) => c.on('reconnect', r));
  f.sockets[0].deliver(new Uint8Array([2, 0, 0, 0, 0x7f, 0])); // unknown server opcode
  await back;
  assert.ok(errors[0] instanceof ProtocolError);
  assert.equal(errors[0].kind, 'UnknownOpcode');
  const subs = f.sockets[1].frames.filter((x) => x.type === 'SUB');
  assert.deepEqual(subs.map((x) => [x.sid, x.topic, x.queue_group, x.lossy]), [[s1.sid, 'a.b', '', false], [s2.sid, 'q.*', 'g', true]]);
  await c.close();
});

test('a text WebSocket message is a protocol error', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket, reconnect: false });
  const closed = new Promise((r) => c.on('close', r));
  f.sockets[0].onmessage({ data: 'hello' });
  assert.ok((await closed) instanceof ProtocolError);
});

test('DROPPED is reported as an event and counted on the subscription; non-fatal ERR as an error event', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  const sub = c.subscribe('l', { lossy: true }, () => {});
  const events = [];
  c.on('dropped', (e) => events.push(e));
  const errors = [];
  c.on('error', (e) => errors.push(e));
  f.sockets[0].serverSend({ type: 'DROPPED', sid: sub.sid, count: 5n });
  f.sockets[0].serverSend({ type: 'ERR', code: 104, fatal: false, text: 'permission denied' });
  assert.equal(events[0].count, 5n);
  assert.equal(events[0].subscription, sub);
  assert.equal(sub.dropped, 5n);
  assert.ok(errors[0] instanceof ServerError && errors[0].code === 104 && !errors[0].fatal);
  assert.equal(c.state, 'open');
  await c.close();
});

test('GOAWAY: publications are held, the client reconnects after the close and sends them', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket, reconnect: { minDelay: 1, maxDelay: 5 } });
  const ws = f.sockets[0];
  const goaway = new Promise((r) => c.on('goaway', r));
  ws.serverSend({ type: 'GOAWAY', reason: 2, grace_ms: 100 });
  assert.deepEqual(await goaway, { reason: 2, graceMs: 100 });
  assert.equal(c.state, 'draining');
  c.publish('held', 'x');
  assert.notEqual(ws.frames.at(-1).type, 'PUB');
  const back = new Promise((r) => c.on('reconnect', r));
  ws.serverClose(1000);
  await back;
  await sleep(10);
  assert.deepEqual(f.sockets[1].types(), ['HELLO', 'PUB']);
  await c.close();
});

test('max_frame from WELCOME bounds publications', async () => {
  const f = fake({ maxFrame: 64 });
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  c.publish('t', 'x'.repeat(64 - 4 - 1));
  assert.throws(() => c.publish('t', 'x'.repeat(64 - 4)), /max_frame/);
  await c.close();
});

test('NO_RESPONDERS fails the matching request only', async () => {
  const f = fake();
  const c = await connect('ws://fake/', { WebSocket: f.WebSocket });
  const ws = f.sockets[0];
  const r1 = c.request('svc.a', 'x', { timeout: 2000 });
  const r2 = c.request('svc.b', 'y', { timeout: 2000 });
  const pubs = ws.frames.filter((x) => x.type === 'PUB');
  assert.ok(pubs.every((p) => p.request && p.reply_to.startsWith('_INBOX.')));
  const inbox = ws.frames.find((x) => x.type === 'SUB');
  assert.match(inbox.topic, /^_INBOX\.[0-9a-f]+\.\*$/);
  ws.serverSend({ type: 'NO_RESPONDERS', topic: 'svc.a', reply_to: pubs[0].reply_to });
  await assert.rejects(r1, { name: 'NoRespondersError' });
  ws.serverSend({ type: 'MSG', sid: inbox.sid, topic: pubs[1].reply_to, reply_to: '', payload: new TextEncoder().encode('ok') });
  assert.equal((await r2).text(), 'ok');
  await c.close();
});

test('a connection that fails before opening is retried at once, with or without a close event after the error', async () => {
  for (const how of ['error', 'error+close']) {
    const f = fake({ refuse: (n) => (n >= 1 && n <= 3 ? how : false) });
    const c = await connect('ws://fake/', { WebSocket: f.WebSocket, connectTimeout: 60000, reconnect: { minDelay: 1, maxDelay: 4 } });
    const attempts = [];
    c.on('reconnecting', (r) => attempts.push(r));
    const back = new Promise((resolve) => c.on('reconnect', resolve));
    f.sockets[0].serverClose(1006);
    const t0 = Date.now();
    await back;
    assert.ok(Date.now() - t0 < 2000, `${how}: reconnected without waiting for connectTimeout`);
    assert.equal(f.sockets.length, 5, how);
    assert.deepEqual(attempts.map((r) => r.attempt), [1, 2, 3, 4], `${how}: one attempt per failure`);
    assert.match(attempts[1].error.message, /cannot connect to ws:\/\/fake\/: connection refused/);
    await c.close();
  }
  // The first connection: connect rejects at once.
  const f = fake({ refuse: () => 'error' });
  const t0 = Date.now();
  await assert.rejects(connect('ws://fake/', { WebSocket: f.WebSocket, connectTimeout: 60000 }), /cannot connect/);
  assert.ok(Date.now() - t0 < 2000);
});

test('backoff: doubles from minDelay, capped at maxDelay, jittered in the upper half', () => {
  const o = { minDelay: 100, maxDelay: 2000 };
  for (let a = 0; a < 10; a++) {
    const ceiling = Math.min(100 * 2 ** a, 2000);
    for (let i = 0; i < 50; i++) {
      const d = backoffDelay(a, o);
      assert.ok(d >= ceiling / 2 && d <= ceiling, `${a}: ${d}`);
    }
  }
});
