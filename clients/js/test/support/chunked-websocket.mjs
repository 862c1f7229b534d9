// A test-only WebSocket constructor for the client's `options.WebSocket`:
// the global WebSocket, except that every outgoing binary message is sent
// as several WebSocket messages of at most `maxMessage` bytes. The broker
// treats the payloads of a session's binary messages as one byte stream,
// so it must put the frames back together. It also counts the connections
// it opens (`opened`).
export function chunkedWebSocket(maxMessage, Base = globalThis.WebSocket) {
  if (!(maxMessage > 0)) throw new RangeError('maxMessage must be positive');
  const stats = { opened: 0, messages: 0, pieces: 0 };
  class ChunkedWebSocket extends Base {
    constructor(...args) {
      super(...args);
      stats.opened++;
    }

    send(data) {
      if (typeof data === 'string') return super.send(data);
      let bytes;
      if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
      else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      else return super.send(data); // a Blob: not used by the client
      stats.messages++;
      if (bytes.length === 0) {
        stats.pieces++;
        return super.send(bytes);
      }
      for (let i = 0; i < bytes.length; i += maxMessage) {
        stats.pieces++;
        super.send(bytes.slice(i, i + maxMessage));
      }
      return undefined;
    }
  }
  return { WebSocket: ChunkedWebSocket, stats };
}

/** The global WebSocket, counting the connections it opens. */
export function countingWebSocket(Base = globalThis.WebSocket) {
  const stats = { opened: 0 };
  class CountingWebSocket extends Base {
    constructor(...args) {
      super(...args);
      stats.opened++;
    }
  }
  return { WebSocket: CountingWebSocket, stats };
}
