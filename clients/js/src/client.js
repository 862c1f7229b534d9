// The corecast client over WebSocket: one binary byte stream, the same as
// over TCP (PROTOCOL.md), carried in binary WebSocket messages.

import {
  DEFAULT_MAX_FRAME, Decoder, ERR, checkPublishTopic, checkQueueGroup, checkTopic, encodeCredential,
  encodeFrame, headerPairs, headersToMap, utf8,
} from './codec.js';
import {
  AuthError, BufferFullError, ClosedError, ConnectionError, FrameTooLargeError, NoRespondersError,
  ProtocolError, ServerError, TimeoutError, UnsupportedError,
} from './errors.js';

const MiB = 1 << 20;
const textDecoder = new TextDecoder();

const DEFAULTS = {
  name: 'corecast-js',
  token: undefined,
  credentials: undefined,
  noEcho: false,
  protocol11: true,
  connectTimeout: 5000,
  flushTimeout: 10000,
  requestTimeout: 5000,
  closeTimeout: 2000,
  maxBufferBytes: 8 * MiB,
  bufferedAmountLimit: 1 * MiB,
  subscriptionCapacity: 65536,
  reconnect: { minDelay: 100, maxDelay: 5000, maxAttempts: Infinity },
};

/** Capped exponential backoff with "equal jitter", as the Rust client's `Backoff`. */
export function backoffDelay(attempt, { minDelay, maxDelay }) {
  const ceiling = Math.min(minDelay * 2 ** Math.min(attempt, 30), maxDelay);
  const half = ceiling / 2;
  return Math.round(half + Math.random() * (ceiling - half));
}

/**
 * The largest WebSocket message the broker takes (64 KiB): a larger frame
 * goes as several messages, whose payloads the broker reads as one stream.
 */
export const MAX_WS_MESSAGE = 64 * 1024;

/** Sends `bytes` in messages of at most MAX_WS_MESSAGE bytes. */
function sendChunked(ws, bytes) {
  if (bytes.length <= MAX_WS_MESSAGE) {
    ws.send(bytes);
    return;
  }
  for (let at = 0; at < bytes.length; at += MAX_WS_MESSAGE) {
    ws.send(bytes.subarray(at, Math.min(at + MAX_WS_MESSAGE, bytes.length)));
  }
}

function randomToken(bytes = 8) {
  const b = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function unrefTimer(t) {
  if (t && typeof t === 'object' && typeof t.unref === 'function') t.unref();
  return t;
}

/** A message received on a subscription. */
export class Message {
  constructor(client, sub, frame) {
    this._client = client;
    this.subscription = sub;
    this.sid = frame.sid;
    this.topic = frame.topic;
    this.replyTo = frame.reply_to || null;
    this.payload = frame.payload;
    /** Header pairs in their order, or null for a message without a header block. */
    this.headerList = frame.headers ?? null;
    /** Headers as a Map of name -> values, or null. */
    this.headers = frame.headers ? headersToMap(frame.headers) : null;
  }

  /** The payload as UTF-8 text. */
  text() {
    return textDecoder.decode(this.payload);
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }

  /** Publishes an answer to the message's reply-to. */
  respond(payload, options = {}) {
    if (!this.replyTo) throw new TypeError('the message has no reply-to');
    this._client.publish(this.replyTo, payload, options);
  }
}

/** A subscription: a callback receives its messages, or it is an async iterator. */
export class Subscription {
  constructor(client, sid, topic, { queue = '', lossy = false } = {}, callback = null) {
    this._client = client;
    this.sid = sid;
    this.topic = topic;
    this.queue = queue;
    this.lossy = lossy;
    this.callback = callback;
    /** Messages the broker reported dropped for this subscription (DROPPED). */
    this.dropped = 0n;
    /** Messages the client discarded because the iterator's queue was full. */
    this.discarded = 0;
    /** Messages delivered so far. */
    this.received = 0;
    this.closed = false;
    this._pending = [];
    this._waiting = [];
    this._capacity = client.options.subscriptionCapacity;
  }

  /** Removes the subscription (UNSUB); an iterator ends. */
  unsubscribe() {
    this._client._unsubscribe(this);
  }

  _deliver(msg) {
    if (this.closed) return;
    this.received++;
    if (this.callback) {
      try {
        const r = this.callback(msg);
        if (r && typeof r.catch === 'function') r.catch((e) => this._client._emit('error', e));
      } catch (e) {
        this._client._emit('error', e);
      }
      return;
    }
    const w = this._waiting.shift();
    if (w) w.resolve({ value: msg, done: false });
    else if (this._pending.length < this._capacity) this._pending.push(msg);
    else {
      this.discarded++;
      this._client._emit('dropped', { sid: this.sid, count: 1n, subscription: this, site: 'client' });
    }
  }

  _end() {
    if (this.closed) return;
    this.closed = true;
    for (const w of this._waiting.splice(0)) w.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    if (this.callback) throw new TypeError('a subscription with a callback is not iterable');
    return {
      next: () => {
        if (this._pending.length) return Promise.resolve({ value: this._pending.shift(), done: false });
        if (this.closed) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this._waiting.push({ resolve }));
      },
      return: () => {
        this.unsubscribe();
        this._pending.length = 0;
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}

/** A connection to a corecast broker over WebSocket, reconnecting on its own. */
export class Client {
  constructor(url, options = {}) {
    const reconnect = options.reconnect === false
      ? false
      : { ...DEFAULTS.reconnect, ...(typeof options.reconnect === 'object' ? options.reconnect : {}) };
    this.options = { ...DEFAULTS, ...options, reconnect };
    this.urls = Array.isArray(url) ? url.map(String) : [String(url)];
    if (this.urls.length === 0) throw new TypeError('no URL to connect to');
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no WebSocket constructor: pass options.WebSocket, or on Node.js 20 run with --experimental-websocket');
    }
    const name = utf8(this.options.name, 'name');
    if (name.length > 64) throw new TypeError('the client name is longer than 64 bytes');
    if (this.options.credentials) {
      if (!this.options.protocol11) throw new TypeError('typed credentials need protocol 1.1');
      this._token = encodeCredential(this.options.credentials);
    } else {
      this._token = this.options.token == null ? new Uint8Array(0) : utf8(this.options.token, 'token');
    }
    /** What the broker said in its latest WELCOME. */
    this.info = null;
    /** 'connecting' | 'open' | 'draining' | 'disconnected' | 'closed' */
    this.state = 'connecting';
    this.ws = null;
    this._urlIndex = 0;
    this._attempts = 0;
    this._everConnected = false;
    this._v1Only = !this.options.protocol11;
    this._subs = new Map();
    this._nextSid = 1;
    this._queue = [];
    this._queueBytes = 0;
    this._pings = new Map();
    this._nextNonce = 1n;
    this._requests = new Map();
    this._inboxPrefix = `_INBOX.${randomToken()}`;
    this._inboxSub = null;
    this._reqSeq = 0;
    this._listeners = new Map();
    this._timers = { connect: null, reconnect: null, drain: null, heartbeat: null, goaway: null };
    this._lastRx = 0;
    this._closeWaiters = [];
    this._first = {};
    this._first.promise = new Promise((resolve, reject) => Object.assign(this._first, { resolve, reject }));
    this._open();
  }

  // ---------------------------------------------------------------- events

  /** Adds a listener: connect, reconnect, disconnect, reconnecting, error, dropped, goaway, close. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
    return this;
  }

  _emit(event, arg) {
    for (const fn of this._listeners.get(event) ?? []) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
      }
    }
  }

  // ------------------------------------------------------------ connection

  get isClosed() {
    return this.state === 'closed';
  }

  /** Bytes of frames waiting in the client's send buffer. */
  get bufferedBytes() {
    return this._queueBytes;
  }

  _open() {
    const url = this.urls[this._urlIndex++ % this.urls.length];
    this.state = this._everConnected ? 'disconnected' : 'connecting';
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (e) {
      this._afterLoss(new ConnectionError(`cannot open ${url}: ${e.message}`, { cause: e }));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this._welcomed = false;
    this._url = url;
    this._decoder = new Decoder({ direction: 'server', maxFrame: DEFAULT_MAX_FRAME + 4 });
    this._lastError = null;
    this._timers.connect = setTimeout(() => {
      this._timers.connect = null;
      this._lose(new TimeoutError(`no WELCOME from ${url} within ${this.options.connectTimeout} ms`));
    }, this.options.connectTimeout);
    let opened = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      opened = true;
      const v11 = !this._v1Only;
      const hello = encodeFrame({
        type: 'HELLO', version: 1, name: this.options.name, token: this._token,
        v1_1: v11, no_echo: v11 && !!this.options.noEcho, credential: v11 && !!this.options.credentials,
      });
      ws.send(hello);
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this._onData(ev.data);
    };
    ws.onerror = (ev) => {
      if (ws !== this.ws) return;
      this._lastError = ev?.error ?? new ConnectionError(ev?.message || `WebSocket error on ${url}`);
      if (opened) return; // the close event follows
      // The connection failed before opening (refused, unreachable, a
      // handshake refused). Browsers fire close right after error, but
      // Node 20's WebSocket fires error alone and stays CONNECTING: act now,
      // not when connectTimeout runs out; a close event that follows is
      // ignored.
      this.ws = null;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
      const why = this._lastError.message ?? String(this._lastError);
      this._afterLoss(new ConnectionError(`cannot connect to ${url}: ${why}`, { cause: this._lastError }));
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      const why = this._lastError ? `: ${this._lastError.message ?? this._lastError}` : '';
      this._afterLoss(new ConnectionError(`connection to ${url} closed (code ${ev?.code ?? '?'})${why}`, { cause: this._lastError ?? undefined }));
    };
  }

  /** Abandons the current socket (closing it) and goes on as if it had closed. */
  _lose(err) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this._closeSocket(ws);
    this._afterLoss(err);
  }

  _closeSocket(ws) {
    ws.onopen = ws.onmessage = ws.onerror = null;
    ws.onclose = () => this._socketClosed(ws);
    this._closing = (this._closing ?? new Set()).add(ws);
    try {
      ws.close(1000);
    } catch {
      this._socketClosed(ws);
    }
  }

  _socketClosed(ws) {
    this._closing?.delete(ws);
    if (this.state === 'closed' && !this._closing?.size) this._resolveCloseWaiters();
  }

  _clearConnectionTimers() {
    for (const k of ['connect', 'drain', 'heartbeat', 'goaway']) {
      clearTimeout(this._timers[k]);
      this._timers[k] = null;
    }
  }

  _afterLoss(err) {
    this._clearConnectionTimers();
    if (this.state === 'closed') return;
    // Frames that belong to the lost connection go; SUBs are restored from
    // the subscription table and flushes are sent again after WELCOME.
    this._queue = this._queue.filter((item) => item.kind === 'pub');
    this._queueBytes = this._queue.reduce((s, item) => s + item.bytes.length, 0);
    const wasOpen = this._welcomed;
    this._welcomed = false;
    if (!this._everConnected && !this._immediate) {
      this._shutdown(err);
      return;
    }
    if (wasOpen) this._emit('disconnect', err);
    if (this._immediate) {
      this._immediate = false;
      this._open();
      return;
    }
    const rc = this.options.reconnect;
    if (!rc) {
      this._shutdown(err);
      return;
    }
    if (this._attempts >= rc.maxAttempts) {
      this._shutdown(new ConnectionError(`gave up after ${this._attempts} reconnection attempts: ${err.message}`, { cause: err }));
      return;
    }
    const delay = backoffDelay(this._attempts, rc);
    this._attempts++;
    this.state = 'disconnected';
    this._emit('reconnecting', { attempt: this._attempts, delay, error: err });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this.state !== 'closed') this._open();
    }, delay);
  }

  _onData(data) {
    if (typeof data === 'string') {
      this._protocolError(new ProtocolError('TextMessage', 1, { message: 'the server sent a text WebSocket message' }));
      return;
    }
    this._lastRx = Date.now();
    this._decoder.push(data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    const ws = this.ws;
    while (ws === this.ws && this.state !== 'closed') {
      let frame;
      try {
        frame = this._decoder.next();
      } catch (e) {
        this._protocolError(e);
        return;
      }
      if (frame === null) return;
      this._handle(frame);
    }
  }

  _protocolError(e) {
    this._emit('error', e);
    this._lose(e);
  }

  _handle(f) {
    if (!this._welcomed && f.type !== 'WELCOME' && f.type !== 'ERR') {
      this._protocolError(new ProtocolError('UnexpectedFrame', 1, { message: `${f.type} before WELCOME` }));
      return;
    }
    switch (f.type) {
      case 'WELCOME': return this._onWelcome(f);
      case 'PING': return this._sendDirect(encodeFrame({ type: 'PONG', nonce: f.nonce }));
      case 'PONG': {
        const p = this._pings.get(f.nonce);
        if (p) {
          this._pings.delete(f.nonce);
          clearTimeout(p.timer);
          p.resolve();
        }
        return;
      }
      case 'MSG':
      case 'HMSG': {
        const sub = this._subs.get(f.sid);
        if (sub) sub._deliver(new Message(this, sub, f));
        return;
      }
      case 'DROPPED': {
        const sub = this._subs.get(f.sid);
        if (sub) sub.dropped += f.count;
        this._emit('dropped', { sid: f.sid, count: f.count, subscription: sub ?? null, site: 'server' });
        return;
      }
      case 'NO_RESPONDERS': {
        const r = this._requests.get(f.reply_to);
        if (r) r.fail(new NoRespondersError(f.topic));
        return;
      }
      case 'ERR': return this._onErr(f);
      case 'GOAWAY': return this._onGoaway(f);
      case 'STATS_REPLY': return undefined;
      default:
        this._protocolError(new ProtocolError('UnexpectedFrame', 1, { message: `unexpected ${f.type}` }));
        return undefined;
    }
  }

  _onWelcome(f) {
    if (this._welcomed) {
      this._protocolError(new ProtocolError('UnexpectedFrame', 1, { message: 'second WELCOME' }));
      return;
    }
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this._welcomed = true;
    this.info = {
      version: f.version, maxFrame: f.max_frame, pingIntervalMs: f.ping_interval_ms, coreId: f.core_id,
      connectionId: f.connection_id, serverName: f.server_name, v11: f.v1_1, url: this._url,
    };
    this._decoder.maxFrame = Math.min(f.max_frame + 4, 0xffffffff);
    this.state = 'open';
    this._attempts = 0;
    const ws = this.ws;
    // Subscriptions first, under their sids, then what was buffered, then
    // the flushes still waiting for an answer.
    for (const sub of this._subs.values()) {
      sendChunked(ws, this._subFrame(sub));
    }
    for (const nonce of this._pings.keys()) this._queuePush({ kind: 'ping', bytes: encodeFrame({ type: 'PING', nonce }) });
    this._drain();
    this._startHeartbeat();
    const first = !this._everConnected;
    this._everConnected = true;
    if (first) {
      this._emit('connect', this.info);
      this._first.resolve(this);
    } else {
      this._emit('reconnect', this.info);
    }
  }

  _onErr(f) {
    const err = f.code === ERR.AUTH_FAILED ? new AuthError(f.code, f.fatal, f.text) : new ServerError(f.code, f.fatal, f.text);
    if (!f.fatal) {
      this._emit('error', err);
      return;
    }
    if (f.code === ERR.AUTH_FAILED) {
      // Permanent (PROTOCOL.md 14.3): no reconnection with the same credential.
      this._emit('error', err);
      this._shutdown(err);
      return;
    }
    if (!this._welcomed && f.code === ERR.MALFORMED_FRAME && !this._v1Only && !this.options.credentials) {
      // A version 1 server refuses the 1.1 HELLO (13.1): connect again as version 1.
      this._v1Only = true;
      this._immediate = true;
      this._lose(err);
      return;
    }
    this._emit('error', err);
    this._lose(err);
  }

  _onGoaway(f) {
    this.state = 'draining';
    this._emit('goaway', { reason: f.reason, graceMs: f.grace_ms });
    // Keep reading until the server closes; give up waiting after the grace.
    clearTimeout(this._timers.goaway);
    this._timers.goaway = setTimeout(() => {
      this._timers.goaway = null;
      this._lose(new ConnectionError(`server went away (GOAWAY reason ${f.reason})`));
    }, f.grace_ms + 1000);
  }

  _startHeartbeat() {
    const interval = this.info.pingIntervalMs;
    if (!interval) return;
    this._lastRx = Date.now();
    const tick = () => {
      this._timers.heartbeat = null;
      if (this.state !== 'open' && this.state !== 'draining') return;
      const silent = Date.now() - this._lastRx;
      if (silent > 2 * interval) {
        this._lose(new ConnectionError(`the broker was silent for ${silent} ms`));
        return;
      }
      if (silent >= interval) this._sendDirect(encodeFrame({ type: 'PING', nonce: 0n }));
      this._timers.heartbeat = setTimeout(tick, interval);
    };
    this._timers.heartbeat = setTimeout(tick, interval);
  }

  // --------------------------------------------------------------- sending

  _sendDirect(bytes) {
    try {
      if (this.ws) sendChunked(this.ws, bytes);
    } catch (e) {
      this._lose(new ConnectionError(`send failed: ${e.message}`, { cause: e }));
    }
  }

  _queuePush(item) {
    this._queue.push(item);
    this._queueBytes += item.bytes.length;
  }

  /**
   * Sends a frame now when the connection is open and takes it, else
   * buffers it. `essential` frames (flushes, SUB, UNSUB) are never refused.
   */
  _send(bytes, kind, essential = false) {
    if (this.state === 'closed') throw new ClosedError('the client is closed');
    const ws = this.ws;
    if (this.state === 'open' && this._queue.length === 0 && ws && ws.bufferedAmount <= this.options.bufferedAmountLimit) {
      sendChunked(ws, bytes);
      return;
    }
    if (!essential && this._queueBytes + bytes.length > this.options.maxBufferBytes) {
      throw new BufferFullError(
        `send buffer full: ${this._queueBytes} bytes buffered, ${bytes.length} more would pass maxBufferBytes (${this.options.maxBufferBytes})`,
      );
    }
    this._queuePush({ kind, bytes });
    this._scheduleDrain();
  }

  _scheduleDrain() {
    if (this.state === 'open' && !this._timers.drain) {
      this._timers.drain = setTimeout(() => {
        this._timers.drain = null;
        this._drain();
      }, 5);
    }
  }

  _drain() {
    const ws = this.ws;
    if (this.state !== 'open' || !ws) return;
    const limit = this.options.bufferedAmountLimit;
    while (this._queue.length && ws.bufferedAmount <= limit) {
      const item = this._queue.shift();
      this._queueBytes -= item.bytes.length;
      sendChunked(ws, item.bytes);
    }
    if (this._queue.length) this._scheduleDrain();
    else this._resolveDrained();
  }

  _resolveDrained() {
    const waiters = this._drainWaiters;
    this._drainWaiters = null;
    for (const w of waiters ?? []) w();
  }

  _checkSize(bytes) {
    const max = this.info?.maxFrame ?? DEFAULT_MAX_FRAME;
    if (bytes.length - 4 > max) {
      throw new FrameTooLargeError(`frame of ${bytes.length - 4} bytes is above the broker's max_frame (${max})`);
    }
  }

  // ------------------------------------------------------------------ API

  /**
   * Publishes `payload` (Uint8Array or string, sent as UTF-8) to `topic`.
   * Throws InvalidTopicError, FrameTooLargeError, BufferFullError or ClosedError.
   */
  publish(topic, payload = new Uint8Array(0), { headers, replyTo } = {}) {
    this._publish(topic, payload, { headers, replyTo, request: false });
  }

  _publish(topic, payload, { headers, replyTo, request }) {
    if (this.state === 'closed') throw new ClosedError('the client is closed');
    checkPublishTopic(topic, 'topic');
    if (replyTo) checkPublishTopic(replyTo, 'reply-to');
    const body = payload == null ? new Uint8Array(0) : utf8(payload, 'payload');
    const v11 = this.info ? this.info.v11 : !this._v1Only;
    let bytes;
    if (headers != null) {
      if (!v11) throw new UnsupportedError('headers need a protocol 1.1 session');
      bytes = encodeFrame({ type: 'HPUB', topic, reply_to: replyTo ?? '', headers: headerPairs(headers), payload: body, request: request && v11 });
    } else {
      bytes = encodeFrame({ type: 'PUB', topic, reply_to: replyTo ?? '', payload: body, request: request && v11 });
    }
    this._checkSize(bytes);
    this._send(bytes, 'pub');
  }

  /**
   * Subscribes to a topic or pattern (`*`, `>`). `options.queue` makes it a
   * member of a queue group, `options.lossy` lets the broker drop (and
   * report) rather than close a slow connection. With a callback each
   * message is passed to it; without one the subscription is an async
   * iterator.
   */
  subscribe(topic, options, callback) {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    options ??= {};
    if (this.state === 'closed') throw new ClosedError('the client is closed');
    const t = checkTopic(topic, 'subscription topic');
    const queue = options.queue ?? '';
    if (queue !== '') checkQueueGroup(queue);
    const v11 = this.info ? this.info.v11 : !this._v1Only;
    if ((t.wildcard || queue) && !v11) throw new UnsupportedError('patterns and queue groups need a protocol 1.1 session');
    const sid = this._nextSid;
    this._nextSid = this._nextSid >= 0xffffffff ? 1 : this._nextSid + 1;
    const sub = new Subscription(this, sid, topic, { queue, lossy: !!options.lossy }, callback ?? null);
    this._subs.set(sid, sub);
    if (this.state === 'open') this._send(this._subFrame(sub), 'sub', true);
    return sub;
  }

  _subFrame(sub) {
    return encodeFrame({ type: 'SUB', sid: sub.sid, topic: sub.topic, queue_group: sub.queue, lossy: sub.lossy });
  }

  /** Removes a subscription (or a sid). */
  unsubscribe(sub) {
    const s = typeof sub === 'number' ? this._subs.get(sub) : sub;
    if (s) this._unsubscribe(s);
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.sid) !== sub) {
      sub._end();
      return;
    }
    this._subs.delete(sub.sid);
    sub._end();
    if (this.state === 'open') this._send(encodeFrame({ type: 'UNSUB', sid: sub.sid }), 'unsub', true);
  }

  /**
   * Resolves once the broker has applied everything sent before (a PING
   * answered by its PONG). Waits across reconnections, up to `timeout` ms.
   */
  flush(timeout = this.options.flushTimeout) {
    if (this.state === 'closed') return Promise.reject(new ClosedError('the client is closed'));
    const nonce = this._nextNonce++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pings.delete(nonce);
        reject(new TimeoutError(`flush: no PONG within ${timeout} ms`));
      }, timeout);
      this._pings.set(nonce, { resolve, reject, timer });
      if (this.state === 'open') this._send(encodeFrame({ type: 'PING', nonce }), 'ping', true);
    });
  }

  /**
   * Sends a request and resolves with the first reply (a Message). Rejects
   * with NoRespondersError when the broker says nobody listens (1.1), or
   * TimeoutError after `timeout` ms.
   */
  request(topic, payload, { timeout = this.options.requestTimeout, headers } = {}) {
    if (this.state === 'closed') return Promise.reject(new ClosedError('the client is closed'));
    return new Promise((resolve, reject) => {
      const v11 = this.info ? this.info.v11 : !this._v1Only;
      const replyTo = `${this._inboxPrefix}.${++this._reqSeq}`;
      let own = null;
      const entry = {};
      const done = () => {
        this._requests.delete(replyTo);
        clearTimeout(entry.timer);
        if (own) own.unsubscribe();
      };
      entry.ok = (msg) => { done(); resolve(msg); };
      entry.fail = (err) => { done(); reject(err); };
      entry.timer = setTimeout(() => entry.fail(new TimeoutError(`request to "${topic}": no reply within ${timeout} ms`)), timeout);
      this._requests.set(replyTo, entry);
      try {
        if (v11) this._ensureInbox();
        else own = this.subscribe(replyTo, (m) => entry.ok(m));
        this._publish(topic, payload, { headers, replyTo, request: true });
      } catch (e) {
        entry.fail(e);
      }
    });
  }

  _ensureInbox() {
    if (this._inboxSub && !this._inboxSub.closed) return;
    this._inboxSub = this.subscribe(`${this._inboxPrefix}.*`, (msg) => this._requests.get(msg.topic)?.ok(msg));
  }

  /** Live subscriptions by sid. */
  get subscriptions() {
    return new Map(this._subs);
  }

  /**
   * Closes the client: sends what is buffered (for `closeTimeout` ms at
   * most), closes the connection, fails pending requests and flushes with
   * ClosedError, ends every subscription, and leaves no timer running.
   */
  async close() {
    if (this.state === 'closed') return this._waitSocketsClosed();
    if (this.state === 'open' && this._queue.length) {
      await new Promise((resolve) => {
        const t = unrefTimer(setTimeout(resolve, this.options.closeTimeout));
        (this._drainWaiters ??= []).push(() => { clearTimeout(t); resolve(); });
      });
    }
    this._shutdown(null);
    return this._waitSocketsClosed();
  }

  _waitSocketsClosed() {
    if (!this._closing?.size) return Promise.resolve();
    return new Promise((resolve) => {
      const t = unrefTimer(setTimeout(() => this._resolveCloseWaiters(), this.options.closeTimeout));
      this._closeWaiters.push(() => { clearTimeout(t); resolve(); });
    });
  }

  _resolveCloseWaiters() {
    for (const w of this._closeWaiters.splice(0)) w();
  }

  _shutdown(err) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this._clearConnectionTimers();
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) this._closeSocket(ws);
    const closed = err ?? new ClosedError('the client is closed');
    for (const p of this._pings.values()) {
      clearTimeout(p.timer);
      p.reject(closed);
    }
    this._pings.clear();
    for (const r of [...this._requests.values()]) r.fail(closed);
    for (const sub of this._subs.values()) sub._end();
    this._subs.clear();
    this._queue = [];
    this._queueBytes = 0;
    this._resolveDrained();
    if (!this._everConnected) this._first.reject(err ?? closed);
    this._emit('close', err);
  }
}

/**
 * Connects to a corecast broker's WebSocket listener and resolves once the
 * broker has answered HELLO with WELCOME. `url` is a ws:// or wss:// URL,
 * or an array of them (tried in turn when reconnecting).
 */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  return client._first.promise;
}
