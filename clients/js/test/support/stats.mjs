// A plain TCP session on the broker's client port that reads its live
// counters with the STATS extension (proto/PROTOCOL.md, section 10.1),
// which the client does not expose.
import { connect } from 'node:net';
import { Decoder, encodeFrame } from '../../index.js';

/** Opens the session: resolves to { counters(), close() } once WELCOME came. */
export async function statsSession(port, host = '127.0.0.1') {
  const socket = connect(port, host);
  const next = frames(socket);
  socket.write(encodeFrame({ type: 'HELLO', version: 1, name: 'stats-probe', token: new Uint8Array(0) }));
  const welcome = await next();
  if (welcome.type !== 'WELCOME') throw new Error(`expected WELCOME, got ${welcome.type}`);
  let nonce = 0n;
  return {
    /** The broker's totals (`connections_open`, `slots_in_use`, ...). */
    async counters() {
      nonce += 1n;
      socket.write(encodeFrame({ type: 'STATS', nonce }));
      for (;;) {
        const f = await next();
        if (f.type === 'PING') socket.write(encodeFrame({ type: 'PONG', nonce: f.nonce }));
        if (f.type === 'STATS_REPLY' && f.nonce === nonce) return JSON.parse(f.json).total;
      }
    },
    close() {
      socket.destroy();
    },
  };
}

/** The frames `socket` receives, one per call of the function returned. */
function frames(socket) {
  const decoder = new Decoder();
  const arrived = [];
  const waiting = [];
  let failure = null;
  const fail = (e) => {
    failure ??= e;
    for (const w of waiting.splice(0)) w.reject(failure);
  };
  socket.on('data', (chunk) => {
    decoder.push(chunk);
    try {
      for (let f = decoder.next(); f !== null; f = decoder.next()) {
        const w = waiting.shift();
        if (w) w.resolve(f);
        else arrived.push(f);
      }
    } catch (e) {
      fail(e);
      socket.destroy();
    }
  });
  socket.on('error', fail);
  socket.on('close', () => fail(new Error('the stats session closed')));
  return () => {
    if (arrived.length) return Promise.resolve(arrived.shift());
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
}
