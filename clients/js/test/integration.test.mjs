// Integration tests against a real corecast broker, over its own WebSocket
// port: a broker started here with `--web` on a free loopback port, or the
// one at CORECAST_WS_URL when that is set.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  connect, BufferFullError, NoRespondersError, TimeoutError, InvalidTopicError, FrameTooLargeError,
  ServerError, encodeFrame, ClosedError,
} from '../index.js';
import { setup, freePort, freePorts, startBroker } from './support/broker.mjs';
import { chunkedWebSocket, countingWebSocket } from './support/chunked-websocket.mjs';
import { AuthError } from '../index.js';

const hasWebSocket = typeof globalThis.WebSocket === 'function';
const skip = hasWebSocket ? false : 'needs a global WebSocket: run node with --experimental-websocket';

const once = (client, event, timeout = 10000) => new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`no ${event} event within ${timeout} ms`)), timeout);
  const fn = (arg) => { clearTimeout(t); client.off(event, fn); resolve(arg); };
  client.on(event, fn);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function collect(client, topic, opts = {}) {
  const got = [];
  const sub = client.subscribe(topic, opts, (m) => got.push(m));
  return { sub, got };
}

async function until(cond, timeout = 5000, what = 'condition') {
  const end = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('against a real broker', { skip }, () => {
  let env;
  const clients = [];
  const open = async (opts = {}) => {
    const c = await connect(env.url, { name: 'js-test', ...opts });
    clients.push(c);
    return c;
  };

  before(async () => { env = await setup(); });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await env?.stop();
  });

  test('HELLO / WELCOME: a 1.1 session', async () => {
    const c = await open();
    assert.equal(c.info.v11, true);
    assert.equal(c.info.version, 1);
    assert.ok(c.info.maxFrame >= 1024);
    assert.equal(typeof c.info.connectionId, 'bigint');
    await c.flush();
  });

  test('publish / subscribe: strings, bytes, empty payloads, async iterator', async () => {
    const a = await open();
    const b = await open();
    const { got } = collect(b, 'ps.one');
    const sub = b.subscribe('ps.two');
    await b.flush();
    a.publish('ps.one', 'héllo');
    a.publish('ps.one', new Uint8Array([0, 1, 255]));
    a.publish('ps.one');
    a.publish('ps.two', 'via iterator');
    await a.flush();
    await until(() => got.length === 3, 5000, 'three messages');
    assert.equal(got[0].text(), 'héllo');
    assert.deepEqual([...got[1].payload], [0, 1, 255]);
    assert.equal(got[2].payload.length, 0);
    assert.equal(got[0].topic, 'ps.one');
    assert.equal(got[0].headers, null);
    for await (const m of sub) {
      assert.equal(m.text(), 'via iterator');
      assert.equal(m.sid, sub.sid);
      break; // ends the iteration: unsubscribes
    }
    assert.equal(sub.closed, true);
  });

  test('wildcards: * one token, > the rest', async () => {
    const c = await open();
    const star = collect(c, 'wc.*');
    const gt = collect(c, 'wc.>');
    const mid = collect(c, 'wc.*.paid');
    await c.flush();
    for (const t of ['wc.eu', 'wc.eu.42', 'wc.eu.paid', 'wc', 'other.eu']) c.publish(t, t);
    await c.flush();
    await until(() => gt.got.length === 3 && star.got.length === 1 && mid.got.length === 1, 5000, 'wildcard deliveries');
    await sleep(50);
    assert.deepEqual(star.got.map((m) => m.topic), ['wc.eu']);
    assert.deepEqual(gt.got.map((m) => m.topic).sort(), ['wc.eu', 'wc.eu.42', 'wc.eu.paid']);
    assert.deepEqual(mid.got.map((m) => m.topic), ['wc.eu.paid']);
  });

  test('queue groups: each message to exactly one member', async () => {
    const p = await open();
    const m1 = await open();
    const m2 = await open();
    const plain = collect(p, 'q.jobs');
    const a = collect(m1, 'q.jobs', { queue: 'workers' });
    const b = collect(m2, 'q.*', { queue: 'workers' });
    await Promise.all([p.flush(), m1.flush(), m2.flush()]);
    const N = 60;
    for (let i = 0; i < N; i++) p.publish('q.jobs', String(i));
    await p.flush();
    await until(() => a.got.length + b.got.length === N && plain.got.length === N, 5000, 'queue deliveries');
    await sleep(100);
    assert.equal(a.got.length + b.got.length, N);
    const seen = [...a.got, ...b.got].map((m) => Number(m.text())).sort((x, y) => x - y);
    assert.deepEqual(seen, Array.from({ length: N }, (_, i) => i), 'each message once');
    assert.ok(a.got.length > 0 && b.got.length > 0, `both members served (${a.got.length}/${b.got.length})`);
  });

  test('request / reply, NO_RESPONDERS, timeout', async () => {
    const server = await open();
    const client = await open();
    server.subscribe('svc.echo', (m) => m.respond(`echo: ${m.text()}`, { headers: { status: '200' } }));
    server.subscribe('svc.silent', () => {});
    await server.flush();
    const reply = await client.request('svc.echo', 'ping', { timeout: 3000 });
    assert.equal(reply.text(), 'echo: ping');
    assert.deepEqual(reply.headers.get('status'), ['200']);
    const replies = await Promise.all([1, 2, 3].map((i) => client.request('svc.echo', `n${i}`)));
    assert.deepEqual(replies.map((r) => r.text()), ['echo: n1', 'echo: n2', 'echo: n3']);
    await assert.rejects(client.request('svc.nobody', 'x', { timeout: 3000 }), NoRespondersError);
    const t0 = Date.now();
    await assert.rejects(client.request('svc.silent', 'x', { timeout: 300 }), TimeoutError);
    assert.ok(Date.now() - t0 >= 250);
  });

  test('headers round trip: Map, object, repeated names, order', async () => {
    const c = await open();
    const { got } = collect(c, 'hdr.t');
    await c.flush();
    const headers = new Map([['trace-id', '7f3a'], ['x-multi', ['1', '2']], ['content-type', 'text/plain; charset=utf-8'], ['empty', '']]);
    c.publish('hdr.t', 'with headers', { headers });
    c.publish('hdr.t', 'object', { headers: { a: 'é ü', b: ['x', 'y'] } });
    c.publish('hdr.t', 'no headers but a block', { headers: {} });
    await c.flush();
    await until(() => got.length === 3, 5000, 'three messages');
    assert.deepEqual(got[0].headerList, [['trace-id', '7f3a'], ['x-multi', '1'], ['x-multi', '2'], ['content-type', 'text/plain; charset=utf-8'], ['empty', '']]);
    assert.deepEqual(got[0].headers.get('x-multi'), ['1', '2']);
    assert.deepEqual(got[1].headerList, [['a', 'é ü'], ['b', 'x'], ['b', 'y']]);
    assert.deepEqual(got[2].headerList, []);
    assert.equal(got[0].text(), 'with headers');
  });

  test('checks before sending: bad topics, max_frame', async () => {
    const c = await open();
    for (const t of ['', 'a..b', 'a b', 'a.*', 'a.>', '$SYS.x', 'x'.repeat(256)]) {
      assert.throws(() => c.publish(t, 'x'), InvalidTopicError, t);
    }
    assert.throws(() => c.publish('ok', 'x', { replyTo: 'bad reply' }), InvalidTopicError);
    assert.throws(() => c.subscribe('a.>.b'), InvalidTopicError);
    assert.throws(() => c.subscribe('a', { queue: 'a.b' }), InvalidTopicError);
    const big = new Uint8Array(c.info.maxFrame);
    assert.throws(() => c.publish('big', big), FrameTooLargeError);
    // Exactly at the limit: len = 4 + t + r + p.
    const { got } = collect(c, 'big');
    await c.flush();
    c.publish('big', new Uint8Array(c.info.maxFrame - 4 - 3));
    await c.flush();
    await until(() => got.length === 1, 5000, 'the maximal message');
    assert.equal(got[0].payload.length, c.info.maxFrame - 7);
  });

  test('a non-fatal ERR surfaces as a ServerError event; the session goes on', async () => {
    const c = await open();
    const errored = once(c, 'error');
    c._send(encodeFrame({ type: 'UNSUB', sid: 987654 }), 'unsub', true); // unknown sid: 103
    const err = await errored;
    assert.ok(err instanceof ServerError);
    assert.equal(err.code, 103);
    assert.equal(err.fatal, false);
    await c.flush();
    assert.equal(c.state, 'open');
  });

  test('frames cut into WebSocket messages of at most 7 bytes are put back together by the broker', async () => {
    const { WebSocket: Chunked, stats } = chunkedWebSocket(7);
    const c = await connect(env.url, { WebSocket: Chunked }); // HELLO too goes out in pieces
    try {
      const { got } = collect(c, 'split.t');
      await c.flush();
      const sizes = Array.from({ length: 20 }, (_, i) => i * 13);
      for (const [i, n] of sizes.entries()) c.publish('split.t', 'x'.repeat(n), { headers: i % 2 ? { i: String(i) } : undefined });
      await c.flush();
      await until(() => got.length === 20, 5000, '20 messages');
      assert.deepEqual(got.map((m) => m.payload.length), sizes);
      assert.deepEqual(got.map((m) => m.headers?.get('i')?.[0] ?? null), sizes.map((_, i) => (i % 2 ? String(i) : null)));
      assert.ok(stats.pieces > stats.messages * 2, `frames were cut (${stats.messages} frames in ${stats.pieces} messages)`);
      // The session is still a normal one: a request and its reply.
      c.subscribe('split.svc', (m) => m.respond(`re: ${m.text()}`));
      await c.flush();
      assert.equal((await c.request('split.svc', 'q'.repeat(50))).text(), `re: ${'q'.repeat(50)}`);
    } finally {
      await c.close();
    }
  });

  test('close() leaves nothing running: a child process exits on its own', async () => {
    const deadPort = await freePort();
    const script = fileURLToPath(new URL('./support/exit-check.mjs', import.meta.url));
    const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', script, env.url, `ws://127.0.0.1:${deadPort}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const code = await new Promise((resolve, reject) => {
      const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`the child did not exit within 15 s:\n${out}`)); }, 15000);
      child.on('exit', (c) => { clearTimeout(t); resolve(c); });
    });
    assert.equal(code, 0, out);
    assert.match(out, /exit-check done/);
  });

  describe('broker restart (local broker only)', { skip: process.env.CORECAST_WS_URL ? 'CORECAST_WS_URL is set' : false }, () => {
    test('GOAWAY, reconnect with backoff, subscriptions restored under the same sids, buffered publications sent, buffer full', async () => {
      const fast = { minDelay: 50, maxDelay: 500 };
      const a = await open({ reconnect: fast, maxBufferBytes: 4096 });
      const b = await open({ reconnect: fast });
      const onA = collect(a, 'rs.to-a');
      const onB = collect(b, 'rs.>');
      const ownBuffered = collect(a, 'rs.buffered'); // restored before the buffered publications go out
      const sidA = onA.sub.sid;
      await Promise.all([a.flush(), b.flush()]);
      b.publish('rs.to-a', 'before');
      await until(() => onA.got.length === 1, 5000, 'a message before the restart');

      const goaway = once(a, 'goaway');
      const gone = once(a, 'disconnect');
      await env.stopBroker();
      assert.equal((await goaway).reason, 1);
      await gone;
      assert.notEqual(a.state, 'open');

      // While disconnected publications are buffered, up to maxBufferBytes.
      const payload = new Uint8Array(1000);
      let buffered = 0;
      let full = null;
      for (let i = 0; i < 10; i++) {
        try {
          a.publish('rs.buffered', payload);
          buffered++;
        } catch (e) {
          full = e;
          break;
        }
      }
      assert.ok(full instanceof BufferFullError, String(full));
      assert.match(full.message, /maxBufferBytes/);
      assert.equal(buffered, 4);
      assert.ok(a.bufferedBytes <= 4096);
      const flushed = a.flush(20000); // waits across the reconnection

      const backA = once(a, 'reconnect', 20000);
      const backB = once(b, 'reconnect', 20000);
      await env.startAgain();
      await Promise.all([backA, backB]);
      await flushed;
      assert.equal(a.bufferedBytes, 0);
      assert.equal(a.subscriptions.get(sidA), onA.sub);
      await b.flush();
      b.publish('rs.to-a', 'after');
      await until(() => onA.got.length === 2, 5000, 'a message after the restart');
      assert.equal(onA.got[1].sid, sidA);
      assert.equal(onA.got[1].text(), 'after');
      // The publications buffered during the outage went out after the
      // restored subscriptions of the same connection.
      await until(() => ownBuffered.got.length === 4, 5000, 'the buffered publications');
      assert.ok(onB.got.some((m) => m.text() === 'after'));
    });

    test('gives up after maxAttempts and closes', async () => {
      const c = await open({ reconnect: { minDelay: 20, maxDelay: 50, maxAttempts: 2 } });
      const closed = once(c, 'close', 15000);
      await env.stopBroker();
      const err = await closed;
      assert.match(err.message, /gave up after 2/);
      assert.equal(c.state, 'closed');
      assert.throws(() => c.publish('x', 'y'), ClosedError);
      await env.startAgain();
    });
  });

  describe('a broker with a shared token (local broker only)', { skip: process.env.CORECAST_WS_URL ? 'CORECAST_WS_URL is set' : false }, () => {
    test('the right token connects; a wrong one is refused with AuthError, without reconnecting', async () => {
      const broker = await startBroker({ ...(await freePorts()), args: ['--auth-token', 's3cret'] });
      const { WebSocket: Counting, stats } = countingWebSocket();
      try {
        const ok = await connect(broker.url, { token: 's3cret', WebSocket: Counting });
        await ok.flush();
        await ok.close();
        const before = stats.opened;
        await assert.rejects(connect(broker.url, { token: 'wrong', WebSocket: Counting, reconnect: { minDelay: 10, maxDelay: 20 } }), (e) => {
          assert.ok(e instanceof AuthError, String(e));
          assert.equal(e.code, 7);
          return true;
        });
        await sleep(200);
        assert.equal(stats.opened - before, 1, 'no second attempt');
      } finally {
        await broker.stop();
      }
    });
  });
});
