// Publishes the state of a small game to `demo.game.state` 30 times a
// second until stopped, for the demo page (`/demo/` on the web port).
//
//   node --experimental-websocket clients/js/examples/game-state.mjs ws://127.0.0.1:7480/ws
//
// (Node.js 22 and newer need no flag.) Each state is JSON:
// {"tick": n, "players": [{"name", "color", "x", "y", "score"}, ...]}
// with x and y between 0 and 1.
import { connect } from '../index.js';

const TOPIC = 'demo.game.state';
const HZ = 30;
const PLAYERS = [
  { name: 'red', color: '#e0524b', fx: 0.31, fy: 0.47, phase: 0 },
  { name: 'green', color: '#3fb26b', fx: 0.23, fy: 0.37, phase: 1.6 },
  { name: 'blue', color: '#4a8fe0', fx: 0.41, fy: 0.29, phase: 3.1 },
  { name: 'gold', color: '#e0b02f', fx: 0.17, fy: 0.53, phase: 4.4 },
];

/** The game at `tick`: each player on a curve of its own. */
function state(tick) {
  const t = tick / HZ;
  const players = PLAYERS.map((p, i) => ({
    name: p.name,
    color: p.color,
    x: round(0.5 + 0.45 * Math.sin(2 * Math.PI * p.fx * t + p.phase)),
    y: round(0.5 + 0.45 * Math.sin(2 * Math.PI * p.fy * t + 2 * p.phase)),
    score: Math.floor((tick + 37 * i) / (HZ * (2 + i))),
  }));
  return { tick, players };
}

function round(v) {
  return Math.round(v * 1000) / 1000;
}

async function main() {
  const url = process.argv[2];
  if (!url) {
    console.error('usage: game-state.mjs ws://HOST:PORT/ws');
    process.exit(2);
  }
  if (typeof globalThis.WebSocket !== 'function') {
    console.error('no global WebSocket: run Node.js 20 with --experimental-websocket, or Node.js 22+');
    process.exit(2);
  }
  const client = await connect(url, { name: 'game-state' });
  const started = performance.now();
  let tick = 0;
  const timer = setInterval(() => {
    // Ticks follow the clock, not the timer: a late timer skips none,
    // unless it is a second late (a stopped process), when old states are
    // of no use.
    const due = Math.floor(((performance.now() - started) * HZ) / 1000);
    for (tick = Math.max(tick, due - HZ); tick <= due; tick++) {
      try {
        client.publish(TOPIC, JSON.stringify(state(tick)));
      } catch (e) {
        // Disconnected with a full buffer: this state is stale anyway.
        if (e.name !== 'BufferFullError') throw e;
      }
    }
  }, 1000 / HZ);
  const stop = async () => {
    clearInterval(timer);
    await client.close();
    process.exit(0);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  console.log(`publishing ${TOPIC} at ${HZ} Hz to ${url}`);
}

main().catch((e) => {
  console.error(`game-state: ${e.message}`);
  process.exit(1);
});
