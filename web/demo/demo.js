// The demo page: a chat lobby on `demo.chat` and a live game-state panel on
// `demo.game.state`, over the broker's WebSocket port that served the page.
import { connect } from './corecast/index.js';

const CHAT = 'demo.chat';
const GAME = 'demo.game.state';
const MAX_MESSAGES = 200;
const MAX_PLAYERS = 16;

const $ = (id) => document.getElementById(id);
const arrivals = [];
let updates = 0;

function setState(state, text) {
  document.body.dataset.state = state;
  $('status').textContent = text;
}

function parse(msg) {
  try {
    return msg.json();
  } catch {
    return null;
  }
}

function showChat(msg) {
  const said = parse(msg);
  if (typeof said?.name !== 'string' || typeof said?.text !== 'string') return;
  const list = $('messages');
  const item = document.createElement('li');
  if (said.name === $('name').value) item.className = 'mine';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = said.name.slice(0, 24);
  item.append(who, said.text.slice(0, 500));
  list.append(item);
  while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function players(state) {
  if (!Array.isArray(state?.players)) return [];
  return state.players.slice(0, MAX_PLAYERS).filter(
    (p) => typeof p?.name === 'string' && Number.isFinite(p.x) && Number.isFinite(p.y),
  );
}

function draw(list) {
  const canvas = $('board');
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.font = '12px sans-serif';
  for (const p of list) {
    const x = 12 + p.x * (canvas.width - 24);
    const y = 12 + p.y * (canvas.height - 24);
    g.fillStyle = typeof p.color === 'string' ? p.color : '#ccc';
    g.beginPath();
    g.arc(x, y, 9, 0, 2 * Math.PI);
    g.fill();
    g.fillText(p.name.slice(0, 12), x + 12, y + 4);
  }
}

function table(list) {
  const rows = list.map((p) => {
    const row = document.createElement('tr');
    for (const value of [p.name.slice(0, 12), p.x.toFixed(3), p.y.toFixed(3), Number(p.score) || 0]) {
      const cell = document.createElement('td');
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  });
  $('players').replaceChildren(...rows);
}

function showGame(msg) {
  const state = parse(msg);
  const list = players(state);
  if (list.length === 0) return;
  updates++;
  arrivals.push(performance.now());
  $('updates').textContent = updates;
  $('tick').textContent = Number.isSafeInteger(state.tick) ? state.tick : '–';
  draw(list);
  table(list);
}

/** Updates that arrived within the last second, four times a second. */
function countRate() {
  const since = performance.now() - 1000;
  while (arrivals.length && arrivals[0] < since) arrivals.shift();
  $('rate').textContent = arrivals.length;
}

function wire(client) {
  client.on('disconnect', () => setState('connecting', 'reconnecting…'));
  client.on('reconnect', () => setState('open', 'connected'));
  client.on('close', () => setState('closed', 'closed'));
  client.subscribe(CHAT, showChat);
  client.subscribe(GAME, showGame);
  $('say').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('message').value.trim();
    const name = $('name').value.trim() || 'guest';
    if (!text || client.isClosed) return;
    client.publish(CHAT, JSON.stringify({ name, text }));
    $('message').value = '';
  });
}

async function main() {
  $('name').value = `guest-${Math.floor(Math.random() * 9000) + 1000}`;
  setInterval(countRate, 250);
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  try {
    const client = await connect(`${scheme}://${location.host}/ws`, { name: 'demo-page' });
    wire(client);
    setState('open', 'connected');
  } catch (e) {
    setState('closed', `could not connect: ${e.message}`);
  }
}

main();
