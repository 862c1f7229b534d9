// The demo page in a real browser (Debian's chromium, driven by
// playwright-core): two pages served by a real broker chat with each other,
// watch the game state a publisher sends at 30 Hz, and the slot of a page
// that closes is returned. A screenshot goes to target/demo.png.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { freePorts, startBroker, stopProcess } from '../support/broker.mjs';
import { statsSession } from '../support/stats.mjs';

const repoRoot = fileURLToPath(new URL('../../../../', import.meta.url));
const publisherScript = fileURLToPath(new URL('../../examples/game-state.mjs', import.meta.url));
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const targetDir = process.env.CARGO_TARGET_DIR ?? `${repoRoot}target`;

let broker;
let publisher;
let browser;
let stats;
const pages = {};

/** Starts the game-state publisher; resolves once it publishes. */
function startPublisher(url) {
  const proc = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', publisherScript, url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`the publisher did not start within 10 s:\n${log}`));
    }, 10000);
    const onLog = (chunk) => {
      log += chunk;
      if (/publishing/.test(log)) {
        clearTimeout(timer);
        resolve(proc);
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onLog);
    proc.stderr.setEncoding('utf8').on('data', onLog);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the publisher exited with ${code}:\n${log}`));
    });
  });
}

async function openDemo(name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`http://127.0.0.1:${broker.webPort}/demo/`);
  await page.waitForFunction(() => document.body.dataset.state === 'open', null, { timeout: 10000 });
  await page.fill('#name', name);
  assert.deepEqual(errors, [], `errors on ${name}'s page`);
  return page;
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

/** Waits for `page` to list `text` said by `name`. */
async function heard(page, name, text) {
  const item = page.locator('#messages li', { hasText: text });
  await item.waitFor({ timeout: 5000 });
  assert.equal(await item.locator('.who').textContent(), name);
}

/** Polls the broker's counters until `cond` holds; fails after `ms`. */
async function countersUntil(what, cond, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const c = await stats.counters();
    if (cond(c)) return c;
    if (Date.now() > deadline) {
      const { connections_open, slots_in_use, web_connections } = c;
      assert.fail(`${what}: never within ${ms} ms; last ${JSON.stringify({ connections_open, slots_in_use, web_connections })}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  broker = await startBroker(await freePorts());
  publisher = await startPublisher(`ws://127.0.0.1:${broker.webPort}/ws`);
  browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  stats = await statsSession(broker.port);
  pages.alice = await openDemo('alice');
  pages.bob = await openDemo('bob');
}, { timeout: 60000 });

after(async () => {
  await browser?.close().catch(() => {});
  stats?.close();
  if (publisher) await stopProcess(publisher);
  await broker?.stop();
}, { timeout: 30000 });

test('the two pages chat with each other', { timeout: 30000 }, async () => {
  await say(pages.alice, 'hello from alice');
  await heard(pages.bob, 'alice', 'hello from alice');
  await say(pages.bob, 'hi alice, bob here');
  await heard(pages.alice, 'bob', 'hi alice, bob here');
  await heard(pages.bob, 'bob', 'hi alice, bob here');
});

test('the game panel follows the publisher at about 30 updates a second', { timeout: 30000 }, async () => {
  const read = () => pages.alice.evaluate(() => ({
    at: performance.now(),
    updates: Number(document.getElementById('updates').textContent),
    rate: Number(document.getElementById('rate').textContent),
    players: document.getElementById('players').textContent,
  }));
  await pages.alice.waitForFunction(() => Number(document.getElementById('updates').textContent) > 0);
  const first = await read();
  await new Promise((r) => setTimeout(r, 2000));
  const second = await read();
  const perSecond = ((second.updates - first.updates) * 1000) / (second.at - first.at);
  assert.ok(perSecond >= 20, `${perSecond.toFixed(1)} updates/s`);
  assert.ok(second.rate >= 20, `the page shows ${second.rate} updates/s`);
  assert.notEqual(second.players, first.players, 'the players did not move');
  mkdirSync(targetDir, { recursive: true });
  await pages.alice.screenshot({ path: `${targetDir}/demo.png` });
});

test('a closed page gives its slot back', { timeout: 30000 }, async () => {
  // The publisher, the two pages and this probe; the pages' file requests
  // have closed.
  const open = (c) => c.connections_open === 4 && c.slots_in_use === 4 && c.web_connections === 3;
  const before = await countersUntil('four connections with the pages open', open);
  await pages.bob.context().close();
  await countersUntil(
    'one connection fewer after a page closed',
    (c) => c.connections_open === before.connections_open - 1
      && c.slots_in_use === before.slots_in_use - 1
      && c.web_connections === before.web_connections - 1,
  );
});
