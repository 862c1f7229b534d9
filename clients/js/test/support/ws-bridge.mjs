// A test-only WebSocket -> TCP bridge: accepts WebSocket connections on a
// local port (any path) and pipes the payload bytes of binary messages to
// the broker's TCP port, and the broker's bytes back as binary messages.
// It implements just enough of RFC 6455 on the server side for the tests:
// the handshake, unmasking client frames, fragments, ping/pong, close, and
// refusing text messages. Not for production use.
import { createServer } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { createHash } from 'node:crypto';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function wsFrame(opcode, payload) {
  const n = payload.length;
  let head;
  if (n < 126) head = Buffer.from([0x80 | opcode, n]);
  else if (n < 65536) {
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode; head[1] = 126; head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[0] = 0x80 | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

function closeFrame(code, reason = '') {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code, 0);
  b.write(reason, 2);
  return wsFrame(0x8, b);
}

/**
 * Starts a bridge to `target` ({ host, port }, or a function returning it).
 * `maxMessage`: cut the broker's bytes into binary messages of at most this
 * many bytes (to exercise frames split across messages). Returns
 * { url, port, close(), dropAll(), connections }.
 */
export async function startBridge({ target, maxMessage = 0, host = '127.0.0.1' } = {}) {
  const sockets = new Set();
  const server = createServer((req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' });
    res.end('WebSocket only\n');
  });

  server.on('upgrade', (req, socket, head) => {
    const key = req.headers['sec-websocket-key'];
    if (!key || String(req.headers.upgrade).toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\n\r\n');
      return;
    }
    const accept = createHash('sha1').update(key + GUID).digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    socket.setNoDelay(true);
    sockets.add(socket);
    const { host: th, port: tp } = typeof target === 'function' ? target() : target;
    const tcp = tcpConnect({ host: th, port: tp });
    tcp.setNoDelay(true);
    let closeSent = false;
    const sendClose = (code, reason) => {
      if (closeSent || socket.destroyed) return;
      closeSent = true;
      socket.write(closeFrame(code, reason));
      socket.end();
    };
    tcp.on('data', (data) => {
      if (closeSent || socket.destroyed) return;
      if (maxMessage > 0) {
        for (let i = 0; i < data.length; i += maxMessage) socket.write(wsFrame(0x2, data.subarray(i, i + maxMessage)));
      } else {
        socket.write(wsFrame(0x2, data));
      }
    });
    tcp.on('error', () => sendClose(1011, 'broker unreachable'));
    tcp.on('close', () => sendClose(1000, 'broker closed'));

    let buf = head && head.length ? Buffer.from(head) : Buffer.alloc(0);
    let fragmentsText = false;
    const onData = (chunk) => {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        if (buf.length < 2) return;
        const fin = (buf[0] & 0x80) !== 0;
        const opcode = buf[0] & 0x0f;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let o = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2); o = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2)); o = 10;
        }
        if (!masked) { sendClose(1002, 'client frames must be masked'); tcp.destroy(); return; }
        if (buf.length < o + 4 + len) return;
        const mask = buf.subarray(o, o + 4);
        const payload = Buffer.from(buf.subarray(o + 4, o + 4 + len));
        for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
        buf = buf.subarray(o + 4 + len);
        if (opcode === 0x1 || (opcode === 0x0 && fragmentsText)) {
          fragmentsText = opcode === 0x1 ? !fin : fragmentsText && !fin;
          sendClose(1003, 'text messages are not accepted');
          tcp.destroy();
          return;
        }
        if (opcode === 0x2 || opcode === 0x0) {
          if (payload.length) tcp.write(payload);
        } else if (opcode === 0x8) {
          // Answer the close handshake, then end both sides.
          const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1000;
          sendClose(code === 1005 ? 1000 : code);
          tcp.end();
          return;
        } else if (opcode === 0x9) {
          socket.write(wsFrame(0xa, payload));
        }
        // 0xA (pong): ignored.
      }
    };
    socket.on('data', onData);
    socket.on('error', () => {});
    tcp.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      tcp.destroy();
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  const { port } = server.address();
  return {
    port,
    url: `ws://${host}:${port}/`,
    get connections() { return sockets.size; },
    /** Cuts every WebSocket connection at once (no close handshake). */
    dropAll() {
      for (const s of sockets) s.destroy();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
