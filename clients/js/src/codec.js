// The corecast wire codec (PROTOCOL.md): frames of both directions, header
// blocks (13.6), typed credentials (14), and the topic rules (7, 13.4).
// No I/O: `encodeFrame` makes bytes, `Decoder` takes bytes in any chunks and
// gives whole frames back.

import { InvalidHeaderError, InvalidTopicError, ProtocolError } from './errors.js';

export const DEFAULT_MAX_FRAME = 1048576;

export const OP = Object.freeze({
  HELLO: 0x01, PING: 0x02, PONG: 0x03, SUB: 0x10, UNSUB: 0x11, PUB: 0x20, HPUB: 0x22, STATS: 0x30,
  WELCOME: 0x81, SPING: 0x82, SPONG: 0x83, MSG: 0x90, DROPPED: 0x91, HMSG: 0x92, NO_RESPONDERS: 0x93,
  STATS_REPLY: 0xa0, ERR: 0xe0, GOAWAY: 0xe1,
});

/** Error codes of PROTOCOL.md section 9 and 13.8. */
export const ERR = Object.freeze({
  MALFORMED_FRAME: 1, UNKNOWN_OPCODE: 2, FRAME_TOO_LARGE: 3, HANDSHAKE_REQUIRED: 4,
  HANDSHAKE_TIMEOUT: 5, UNSUPPORTED_VERSION: 6, AUTH_FAILED: 7, SERVER_FULL: 8, SLOW_CONSUMER: 9,
  STALE_CONNECTION: 10, SHUTTING_DOWN: 11, OUT_OF_MEMORY: 12, BAD_HEADER: 13, BAD_TOPIC: 100,
  TOO_MANY_SUBSCRIPTIONS: 101, DUPLICATE_SID: 102, UNKNOWN_SID: 103, PERMISSION_DENIED: 104,
  UNSUPPORTED: 105, BAD_QUEUE_GROUP: 106,
});

const encoder = new TextEncoder();
// fatal: refuse bad UTF-8; ignoreBOM: keep a leading U+FEFF (no stripping).
const strictDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

const isWellFormed = (s) =>
  typeof s.isWellFormed === 'function'
    ? s.isWellFormed()
    : !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);

/** UTF-8 bytes of a string (refusing lone surrogates), or the bytes themselves. */
export function utf8(value, what = 'string') {
  if (value instanceof Uint8Array) return value;
  if (typeof value !== 'string') throw new TypeError(`${what} must be a string or a Uint8Array`);
  if (!isWellFormed(value)) throw new TypeError(`${what} holds a lone surrogate (not encodable as UTF-8)`);
  return encoder.encode(value);
}

/** Decodes strict UTF-8, or returns null. */
export function decodeUtf8(bytes) {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Topics (section 7), queue groups (13.4)

// White_Space and Cc characters, forbidden in topics and queue groups.
const FORBIDDEN_TOPIC_CHAR = /[\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;

/**
 * Checks a topic against section 7. Returns `{ bytes, wildcard, reserved }`,
 * or throws InvalidTopicError. `what` names it in the message.
 */
export function checkTopic(topic, what = 'topic') {
  if (typeof topic !== 'string') throw new InvalidTopicError(`${what} must be a string`);
  if (!isWellFormed(topic)) throw new InvalidTopicError(`${what} ${JSON.stringify(topic)} is not valid UTF-8`);
  const bytes = encoder.encode(topic);
  if (bytes.length === 0) throw new InvalidTopicError(`${what} is empty`);
  if (bytes.length > 255) throw new InvalidTopicError(`${what} is ${bytes.length} bytes long, more than 255`);
  if (FORBIDDEN_TOPIC_CHAR.test(topic)) {
    throw new InvalidTopicError(`${what} ${JSON.stringify(topic)} holds white space or a control character`);
  }
  const tokens = topic.split('.');
  let wildcard = false;
  tokens.forEach((token, i) => {
    if (token === '') throw new InvalidTopicError(`${what} ${JSON.stringify(topic)} has an empty token`);
    if (token === '*') wildcard = true;
    else if (token === '>') {
      if (i !== tokens.length - 1) throw new InvalidTopicError(`${what} ${JSON.stringify(topic)}: ">" must be the last token`);
      wildcard = true;
    } else if (token.includes('*') || token.includes('>')) {
      throw new InvalidTopicError(`${what} ${JSON.stringify(topic)}: "*" and ">" must stand as whole tokens`);
    }
  });
  return { bytes, wildcard, reserved: topic.startsWith('$') };
}

/** A topic one may publish to (or use as reply-to): literal, not reserved. */
export function checkPublishTopic(topic, what = 'topic') {
  const t = checkTopic(topic, what);
  if (t.wildcard) throw new InvalidTopicError(`${what} ${JSON.stringify(topic)} is a wildcard; publish to literal topics only`);
  if (t.reserved) throw new InvalidTopicError(`${what} ${JSON.stringify(topic)} is reserved for the server ("$")`);
  return t.bytes;
}

/** A queue group name (13.4): one literal token of 1-255 bytes. */
export function checkQueueGroup(name) {
  if (typeof name !== 'string' || !isWellFormed(name)) throw new InvalidTopicError('queue group must be a UTF-8 string');
  const bytes = encoder.encode(name);
  if (bytes.length < 1 || bytes.length > 255) throw new InvalidTopicError(`queue group must be 1-255 bytes, not ${bytes.length}`);
  if (/[.*>]/.test(name) || FORBIDDEN_TOPIC_CHAR.test(name)) {
    throw new InvalidTopicError(`queue group ${JSON.stringify(name)} is not one literal token`);
  }
  return bytes;
}

// ---------------------------------------------------------------------------
// Header blocks (13.6.3)

const HEADER_VALUE_CC = /[\u0000-\u001f\u007f-\u009f]/u;

/**
 * Turns headers given as a Map, a plain object (name -> string or string[])
 * or an array of [name, value] pairs into an ordered array of pairs.
 */
export function headerPairs(headers) {
  if (headers == null) return [];
  const pairs = [];
  const add = (k, v) => {
    if (Array.isArray(v)) for (const x of v) pairs.push([String(k), String(x)]);
    else pairs.push([String(k), String(v)]);
  };
  if (Array.isArray(headers)) for (const [k, v] of headers) add(k, v);
  else if (headers instanceof Map) for (const [k, v] of headers) add(k, v);
  else if (typeof headers === 'object') for (const k of Object.keys(headers)) add(k, headers[k]);
  else throw new InvalidHeaderError('headers must be a Map, an object or an array of [name, value] pairs');
  return pairs;
}

/** Encodes a header block (13.6.3) from pairs, checking every rule. */
export function encodeHeaderBlock(pairs) {
  if (pairs.length > 64) throw new InvalidHeaderError(`${pairs.length} headers, more than 64`);
  const parts = [];
  let size = 1;
  for (const [k, v] of pairs) {
    if (k.length < 1 || k.length > 64) throw new InvalidHeaderError(`header name ${JSON.stringify(k)} must be 1-64 bytes`);
    for (let i = 0; i < k.length; i++) {
      const c = k.charCodeAt(i);
      if (c < 0x21 || c > 0x7e || c === 0x3a) throw new InvalidHeaderError(`header name ${JSON.stringify(k)}: printable ASCII without ":" only`);
    }
    if (!isWellFormed(v)) throw new InvalidHeaderError(`header ${k}: value is not valid UTF-8`);
    if (HEADER_VALUE_CC.test(v)) throw new InvalidHeaderError(`header ${k}: value holds a control character`);
    const vb = encoder.encode(v);
    if (vb.length > 4096) throw new InvalidHeaderError(`header ${k}: value is ${vb.length} bytes, more than 4096`);
    parts.push(encoder.encode(k), vb);
    size += 3 + k.length + vb.length;
  }
  if (size > 65535) throw new InvalidHeaderError(`header block is ${size} bytes, more than 65535`);
  const out = new Uint8Array(size);
  out[0] = pairs.length;
  let o = 1;
  for (let i = 0; i < parts.length; i += 2) {
    const kb = parts[i], vb = parts[i + 1];
    out[o++] = kb.length;
    out.set(kb, o); o += kb.length;
    out[o++] = vb.length & 0xff; out[o++] = vb.length >> 8;
    out.set(vb, o); o += vb.length;
  }
  return out;
}

const badHeader = (detail) => new ProtocolError('BadHeader', 13, { detail });

/** Decodes a header block (13.6.4 order) into [name, value] pairs; throws ProtocolError BadHeader. */
export function decodeHeaderBlock(block) {
  const n = block.length;
  if (n === 0) throw badHeader('Truncated');
  const count = block[0];
  if (count > 64) throw badHeader('TooMany');
  let o = 1;
  const pairs = [];
  for (let i = 0; i < count; i++) {
    if (o >= n) throw badHeader('Truncated');
    const k = block[o++];
    if (k === 0) throw badHeader('EmptyKey');
    if (k > 64) throw badHeader('KeyTooLong');
    if (o + k > n) throw badHeader('Truncated');
    let key = '';
    for (let j = 0; j < k; j++) {
      const c = block[o + j];
      if (c < 0x21 || c > 0x7e || c === 0x3a) throw badHeader('BadKeyByte');
      key += String.fromCharCode(c);
    }
    o += k;
    if (o + 2 > n) throw badHeader('Truncated');
    const v = block[o] | (block[o + 1] << 8);
    o += 2;
    if (v > 4096) throw badHeader('ValueTooLong');
    if (o + v > n) throw badHeader('Truncated');
    const value = decodeUtf8(block.subarray(o, o + v));
    if (value === null) throw badHeader('BadValueUtf8');
    if (HEADER_VALUE_CC.test(value)) throw badHeader('BadValueChar');
    o += v;
    pairs.push([key, value]);
  }
  if (o !== n) throw badHeader('TrailingBytes');
  return pairs;
}

/** Header pairs as a Map of name -> values (in order). */
export function headersToMap(pairs) {
  const map = new Map();
  for (const [k, v] of pairs) {
    const list = map.get(k);
    if (list) list.push(v);
    else map.set(k, [v]);
  }
  return map;
}

// ---------------------------------------------------------------------------
// Typed credentials (section 14)

/**
 * Encodes a typed credential as the HELLO token field:
 * `{ kind: 'password', user, password }`, `{ kind: 'bearer', token }`, `{ kind: 'jwt', jwt }`.
 * Passwords and bearer tokens may be strings or bytes.
 */
export function encodeCredential(cred) {
  const cat = (kind, ...rest) => {
    const parts = [encoder.encode(kind + ' '), ...rest];
    const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    if (out.length > 65535) throw new TypeError('credential is longer than 65535 bytes');
    return out;
  };
  switch (cred?.kind) {
    case 'password': {
      if (typeof cred.user !== 'string' || cred.user === '' || cred.user.includes(':')) {
        throw new TypeError('password credential: user must be a non-empty string without ":"');
      }
      return cat('password', utf8(cred.user, 'user'), encoder.encode(':'), utf8(cred.password ?? '', 'password'));
    }
    case 'bearer': {
      const token = utf8(cred.token ?? '', 'token');
      if (token.length === 0) throw new TypeError('bearer credential: the token must not be empty');
      return cat('bearer', token);
    }
    case 'jwt': {
      if (typeof cred.jwt !== 'string' || cred.jwt === '') throw new TypeError('jwt credential: jwt must be a non-empty string');
      return cat('jwt', utf8(cred.jwt, 'jwt'));
    }
    default:
      throw new TypeError('credentials.kind must be "password", "bearer" or "jwt"');
  }
}

/** Reads a HELLO token field as a typed credential (14.1); null when malformed. Secrets are bytes. */
export function parseCredential(field) {
  const sp = field.indexOf(0x20);
  if (sp < 0) return null;
  const kind = String.fromCharCode(...field.subarray(0, sp));
  const value = field.subarray(sp + 1);
  if (kind === 'password') {
    const colon = value.indexOf(0x3a);
    if (colon <= 0) return null;
    const user = decodeUtf8(value.subarray(0, colon));
    if (user === null) return null;
    return { kind, user, password: value.slice(colon + 1) };
  }
  if (kind === 'bearer') return value.length ? { kind, token: value.slice() } : null;
  if (kind === 'jwt') {
    const jwt = decodeUtf8(value);
    return jwt ? { kind, jwt } : null;
  }
  return null;
}

// ---------------------------------------------------------------------------
// Frame layouts

// Field kinds: u8 u16 u32 u64 bool str8 str16 str32 bytes16 headers payload.
// A string field carries the `field` name used in the vectors' errors.
const F = (name, kind, field) => ({ name, kind, field });

const CLIENT = new Map([
  [OP.HELLO, { type: 'HELLO', flags: 0x0e, fields: [F('version', 'u16'), F('name', 'str8', 'ClientName'), F('token', 'bytes16')] }],
  [OP.PING, { type: 'PING', flags: 0, fields: [F('nonce', 'u64')] }],
  [OP.PONG, { type: 'PONG', flags: 0, fields: [F('nonce', 'u64')] }],
  [OP.SUB, { type: 'SUB', flags: 0x01, fields: [F('sid', 'u32'), F('topic', 'str8', 'Topic'), F('queue_group', 'str8', 'QueueGroup')] }],
  [OP.UNSUB, { type: 'UNSUB', flags: 0, fields: [F('sid', 'u32')] }],
  [OP.PUB, { type: 'PUB', flags: 0x02, fields: [F('topic', 'str8', 'Topic'), F('reply_to', 'str8', 'ReplyTo'), F('payload', 'payload')] }],
  [OP.HPUB, { type: 'HPUB', flags: 0x02, fields: [F('topic', 'str8', 'Topic'), F('reply_to', 'str8', 'ReplyTo'), F('headers', 'headers'), F('payload', 'payload')] }],
  [OP.STATS, { type: 'STATS', flags: 0, fields: [F('nonce', 'u64')] }],
]);

const SERVER = new Map([
  [OP.WELCOME, { type: 'WELCOME', flags: 0x02, fields: [F('version', 'u16'), F('max_frame', 'u32'), F('ping_interval_ms', 'u32'), F('core_id', 'u16'), F('connection_id', 'u64'), F('server_name', 'str8', 'ServerName')] }],
  [OP.SPING, { type: 'PING', flags: 0, fields: [F('nonce', 'u64')] }],
  [OP.SPONG, { type: 'PONG', flags: 0, fields: [F('nonce', 'u64')] }],
  [OP.MSG, { type: 'MSG', flags: 0, fields: [F('sid', 'u32'), F('topic', 'str8', 'Topic'), F('reply_to', 'str8', 'ReplyTo'), F('payload', 'payload')] }],
  [OP.DROPPED, { type: 'DROPPED', flags: 0, fields: [F('sid', 'u32'), F('count', 'u64')] }],
  [OP.HMSG, { type: 'HMSG', flags: 0, fields: [F('sid', 'u32'), F('topic', 'str8', 'Topic'), F('reply_to', 'str8', 'ReplyTo'), F('headers', 'headers'), F('payload', 'payload')] }],
  [OP.NO_RESPONDERS, { type: 'NO_RESPONDERS', flags: 0, fields: [F('topic', 'str8', 'Topic'), F('reply_to', 'str8', 'ReplyTo')] }],
  [OP.STATS_REPLY, { type: 'STATS_REPLY', flags: 0, fields: [F('nonce', 'u64'), F('json', 'str32', 'StatsJson')] }],
  [OP.ERR, { type: 'ERR', flags: 0, fields: [F('code', 'u16'), F('fatal', 'bool'), F('text', 'str16', 'ErrorText')] }],
  [OP.GOAWAY, { type: 'GOAWAY', flags: 0, fields: [F('reason', 'u16'), F('grace_ms', 'u32')] }],
]);

const BY_TYPE = { client: new Map(), server: new Map() };
for (const [dir, table] of [['client', CLIENT], ['server', SERVER]]) {
  for (const [op, layout] of table) BY_TYPE[dir].set(layout.type, { op, ...layout });
}

// Flag bits and the boolean each one maps to, per opcode.
const FLAG_NAMES = {
  [OP.HELLO]: [[0x02, 'v1_1'], [0x04, 'no_echo'], [0x08, 'credential']],
  [OP.SUB]: [[0x01, 'lossy']],
  [OP.PUB]: [[0x02, 'request']],
  [OP.HPUB]: [[0x02, 'request']],
  [OP.WELCOME]: [[0x02, 'v1_1']],
};

function flagsValid(dir, op, flags, layout) {
  if (flags & ~layout.flags) return false;
  // HELLO: no echo and credential are defined only together with v1.1.
  if (dir === 'client' && op === OP.HELLO && flags & 0x0c && !(flags & 0x02)) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Encoding

/**
 * Encodes a frame object (the field names of PROTOCOL.md and its vectors)
 * for `direction` 'client' (client -> server, the default) or 'server'.
 */
export function encodeFrame(frame, direction = 'client') {
  const layout = BY_TYPE[direction].get(frame.type);
  if (!layout) throw new TypeError(`no ${direction} frame of type ${frame.type}`);
  let flags = 0;
  for (const [bit, name] of FLAG_NAMES[layout.op] ?? []) if (frame[name]) flags |= bit;
  const parts = [];
  let size = 6;
  for (const f of layout.fields) {
    let v = frame[f.name];
    let b;
    switch (f.kind) {
      case 'u8': b = Uint8Array.of(Number(v ?? 0)); break;
      case 'bool': b = Uint8Array.of(v ? 1 : 0); break;
      case 'u16': b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, Number(v ?? 0), true); break;
      case 'u32': b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, Number(v ?? 0), true); break;
      case 'u64': b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(v ?? 0), true); break;
      case 'str8': case 'str16': case 'str32': case 'bytes16': {
        const s = utf8(v ?? '', f.name);
        const w = f.kind === 'str8' ? 1 : f.kind === 'str32' ? 4 : 2;
        if (s.length >= 2 ** (8 * w)) throw new RangeError(`${f.name} is too long (${s.length} bytes)`);
        b = new Uint8Array(w + s.length);
        const dv = new DataView(b.buffer);
        if (w === 1) dv.setUint8(0, s.length); else if (w === 2) dv.setUint16(0, s.length, true); else dv.setUint32(0, s.length, true);
        b.set(s, w);
        break;
      }
      case 'headers': {
        const block = v instanceof Uint8Array ? v : encodeHeaderBlock(headerPairs(v));
        b = new Uint8Array(2 + block.length);
        b[0] = block.length & 0xff; b[1] = block.length >> 8;
        b.set(block, 2);
        break;
      }
      case 'payload': b = v == null ? new Uint8Array(0) : utf8(v, 'payload'); break;
      default: throw new Error(`unknown field kind ${f.kind}`);
    }
    parts.push(b);
    size += b.length;
  }
  const len = size - 4;
  if (len > 0xffffffff) throw new RangeError('frame too large');
  const out = new Uint8Array(size);
  new DataView(out.buffer).setUint32(0, len, true);
  out[4] = layout.op;
  out[5] = flags;
  let o = 6;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// ---------------------------------------------------------------------------
// Decoding

function decodeBody(dir, bytes) {
  // bytes: the whole frame, prefix included.
  const op = bytes[4];
  const flags = bytes[5];
  const layout = (dir === 'client' ? CLIENT : SERVER).get(op);
  if (!layout) throw new ProtocolError('UnknownOpcode', 2, { message: `unknown ${dir} opcode 0x${op.toString(16).padStart(2, '0')}` });
  if (!flagsValid(dir, op, flags, layout)) throw new ProtocolError('ReservedFlags', 1);
  const frame = { type: layout.type };
  for (const [bit, name] of FLAG_NAMES[op] ?? []) frame[name] = (flags & bit) !== 0;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = bytes.length;
  let o = 6;
  const need = (n) => { if (o + n > end) throw new ProtocolError('Truncated', 1); };
  for (const f of layout.fields) {
    switch (f.kind) {
      case 'u8': need(1); frame[f.name] = bytes[o]; o += 1; break;
      case 'bool': {
        need(1);
        const b = bytes[o]; o += 1;
        if (b > 1) throw new ProtocolError('BadBool', 1);
        frame[f.name] = b === 1;
        break;
      }
      case 'u16': need(2); frame[f.name] = dv.getUint16(o, true); o += 2; break;
      case 'u32': need(4); frame[f.name] = dv.getUint32(o, true); o += 4; break;
      case 'u64': need(8); frame[f.name] = dv.getBigUint64(o, true); o += 8; break;
      case 'str8': case 'str16': case 'str32': case 'bytes16': {
        const w = f.kind === 'str8' ? 1 : f.kind === 'str32' ? 4 : 2;
        need(w);
        const n = w === 1 ? bytes[o] : w === 2 ? dv.getUint16(o, true) : dv.getUint32(o, true);
        o += w;
        need(n);
        const raw = bytes.subarray(o, o + n);
        o += n;
        if (f.kind === 'bytes16') { frame[f.name] = raw.slice(); break; }
        const s = decodeUtf8(raw);
        if (s === null) {
          const code = f.field === 'Topic' || f.field === 'ReplyTo' ? 100 : 1;
          throw new ProtocolError('BadUtf8', code, { field: f.field });
        }
        frame[f.name] = s;
        break;
      }
      case 'headers': {
        need(2);
        const h = dv.getUint16(o, true);
        o += 2;
        need(h);
        frame[f.name] = decodeHeaderBlock(bytes.subarray(o, o + h));
        o += h;
        break;
      }
      case 'payload': frame[f.name] = bytes.slice(o, end); o = end; break;
      default: throw new Error(`unknown field kind ${f.kind}`);
    }
  }
  if (o !== end) throw new ProtocolError('TrailingBytes', 1);
  if (dir === 'client' && op === OP.HELLO && encoder.encode(frame.name).length > 64) {
    throw new ProtocolError('TooLong', 1, { field: 'ClientName' });
  }
  return frame;
}

/**
 * Incremental frame decoder. `push(bytes)` appends input in chunks of any
 * size; `next()` returns the next whole frame, or `null` when more bytes
 * are needed, or throws ProtocolError. Length-prefix errors consume
 * nothing; any other error consumes the frame it concerns.
 *
 * `direction` is who sent the bytes: 'server' (what a client decodes, the
 * default) or 'client'. `maxFrame` bounds the length prefix.
 */
export class Decoder {
  constructor({ direction = 'server', maxFrame = DEFAULT_MAX_FRAME + 4 } = {}) {
    this.direction = direction;
    this.maxFrame = maxFrame;
    this.buf = new Uint8Array(0);
    this.start = 0;
    this.end = 0;
  }

  /** Bytes received and not yet consumed. */
  get buffered() {
    return this.end - this.start;
  }

  push(chunk) {
    const bytes = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
    if (bytes.length === 0) return;
    if (this.end + bytes.length > this.buf.length) {
      const live = this.end - this.start;
      if (live + bytes.length <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const next = new Uint8Array(Math.max(live + bytes.length, this.buf.length * 2, 4096));
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      }
      this.end = live;
      this.start = 0;
    }
    this.buf.set(bytes, this.end);
    this.end += bytes.length;
  }

  next() {
    const avail = this.end - this.start;
    if (avail < 4) return null;
    const b = this.buf;
    const s = this.start;
    const len = (b[s] | (b[s + 1] << 8) | (b[s + 2] << 16) | (b[s + 3] << 24)) >>> 0;
    if (len < 2) throw new ProtocolError('FrameTooShort', 1);
    if (len > this.maxFrame) throw new ProtocolError('FrameTooLarge', 3, { message: `frame of ${len} bytes above the limit of ${this.maxFrame}` });
    if (avail < 4 + len) return null;
    const frameBytes = b.subarray(s, s + 4 + len);
    this.start += 4 + len;
    if (this.start === this.end) { this.start = 0; this.end = 0; }
    return decodeBody(this.direction, frameBytes);
  }
}

/** Decodes exactly one whole frame from `bytes`; throws when incomplete or malformed. */
export function decodeFrame(bytes, direction = 'server', maxFrame = 0xffffffff) {
  const d = new Decoder({ direction, maxFrame });
  d.push(bytes);
  const f = d.next();
  if (f === null) throw new ProtocolError('Incomplete', 1, { message: 'incomplete frame' });
  if (d.buffered) throw new ProtocolError('TrailingBytes', 1);
  return f;
}
