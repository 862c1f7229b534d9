// Run as a child process by the tests: uses a client in several ways,
// closes it, and must then exit on its own (no timer or socket left).
// argv[2]: the URL of a broker; argv[3]: a URL where nothing listens.
import { connect, NoRespondersError, ClosedError } from '../../index.js';

const [url, deadUrl] = process.argv.slice(2);

// 1. Normal use, then close().
const c = await connect(url, { name: 'exit-check' });
const sub = c.subscribe('exit.check', () => {});
c.publish('exit.check', 'x');
await c.flush();
await c.request('exit.nobody', 'q', { timeout: 5000 }).catch((e) => {
  if (!(e instanceof NoRespondersError)) throw e;
});
const pending = c.request('exit.nobody.slow', 'q', { timeout: 60000 }); // fails at close at the latest
pending.catch(() => {});
sub.unsubscribe();
await c.close();

// 2. close() while waiting to reconnect (a long backoff timer pending).
const d = await connect(url, { reconnect: { minDelay: 30000, maxDelay: 60000 } });
const it = d.subscribe('exit.iter')[Symbol.asyncIterator]();
const iterDone = it.next();
const reconnecting = new Promise((resolve) => d.on('reconnecting', resolve));
d._lose(new Error('cut by the test'));
await reconnecting;
const flushing = d.flush(60000).then(() => 'flushed', (e) => e);
await d.close();
if (!((await flushing) instanceof ClosedError)) throw new Error('flush was not failed by close');
if (!(await iterDone).done) throw new Error('the iterator did not end');

// 3. A first connection that fails rejects, and leaves nothing behind.
await connect(deadUrl, { connectTimeout: 2000 }).then(
  () => { throw new Error('connected to a dead URL'); },
  () => {},
);
console.log('exit-check done');
