// Starts and stops a real corecast broker (the workspace binary) for the
// integration tests, with its WebSocket port (`--web`) on a free loopback
// port, and gives the URL to connect to: CORECAST_WS_URL when set (a broker
// started elsewhere), else ws://127.0.0.1:PORT/ of the broker started here.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));

export function brokerBinary() {
  if (process.env.CORECAST_BIN) return process.env.CORECAST_BIN;
  const targetDir = process.env.CARGO_TARGET_DIR ?? `${repoRoot}target`;
  return `${targetDir}/debug/corecast`;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts the broker with its TCP port on 127.0.0.1:port and its WebSocket
 * port on 127.0.0.1:webPort, and resolves once it listens (the web port is
 * bound before the broker logs `corecast listening`). Resolves to
 * { proc, port, webPort, url, stop() }.
 */
export function startBroker({ port, webPort, args = [] }) {
  const bin = brokerBinary();
  if (!existsSync(bin)) throw new Error(`no broker binary at ${bin}: run cargo build -p corecast (or set CORECAST_BIN)`);
  const proc = spawn(bin, [
    '--listen', `127.0.0.1:${port}`, '--web', `127.0.0.1:${webPort}`, '--http', 'off', '--cores', '2',
    '--shutdown-grace', '300ms', '--log-level', 'info', ...args,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`broker did not start within 20 s:\n${log}`));
    }, 20000);
    const onLog = (chunk) => {
      log += chunk;
      if (log.length > 65536) log = log.slice(-32768);
      if (/corecast listening/.test(log)) {
        clearTimeout(timer);
        proc.stdout.off('data', onLog);
        proc.stderr.off('data', onLog);
        proc.stdout.resume();
        proc.stderr.resume();
        resolve({
          proc,
          port,
          webPort,
          url: `ws://127.0.0.1:${webPort}/`,
          stop: () => stopProcess(proc),
        });
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onLog);
    proc.stderr.setEncoding('utf8').on('data', onLog);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}:\n${log}`));
    });
  });
}

/** Two distinct free ports: the TCP port and the web port. */
export async function freePorts() {
  const port = await freePort();
  let webPort;
  do webPort = await freePort(); while (webPort === port);
  return { port, webPort };
}

/** Stops `proc` with SIGTERM (SIGKILL after 5 s); resolves once it exited. */
export function stopProcess(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

/**
 * The environment of an integration test file: `url` to connect to,
 * `stopBroker()` / `startAgain()` (local broker only) and `stop()`.
 */
export async function setup() {
  if (process.env.CORECAST_WS_URL) {
    return { url: process.env.CORECAST_WS_URL, external: true, stopBroker: null, startAgain: null, stop: async () => {} };
  }
  const { port, webPort } = await freePorts();
  let broker = await startBroker({ port, webPort });
  return {
    url: broker.url,
    external: false,
    port,
    webPort,
    /** Stops the broker (SIGTERM: GOAWAY to every client). */
    async stopBroker() {
      await broker.stop();
    },
    /** Starts it again on the same ports. */
    async startAgain() {
      broker = await startBroker({ port, webPort });
    },
    async stop() {
      await broker.stop();
    },
  };
}
