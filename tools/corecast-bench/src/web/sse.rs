//! Server-Sent Events on corecast's web port: `GET /sse?topic=T` held open
//! by plain HTTP/1.1 clients on TCP (the response head parsed with
//! httparse). Skipped, saying so, while the broker answers `404`.
//!
//! Measured: the broker's RSS per open stream (its growth from before the
//! first stream to every stream open, settled, over the streams); that one
//! message published over WebSocket reaches every stream; and how long a
//! closed stream holds its slot. For that the streams are closed in
//! batches, each at once (a FIN, after reading what the stream had sent,
//! as a browser leaving a page), and `/stats` is polled every millisecond
//! from the last close until `slots_in_use` and `web_connections` have
//! both come down by the batch: the k-th slot freed counts as freed at the
//! first poll that shows k fewer, timed from the batch's last close (the
//! time the bench takes to close the batch is reported apart).

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{counters, Sizes};
use crate::{
    servers::Server,
    sys::Proc,
    workload::{settle_rss, wait_until, Target},
};

/// The topic every stream follows.
const TOPIC: &str = "bench.sse";
/// Longest wait for the event to reach every stream.
const LIMIT: Duration = Duration::from_secs(20);
/// Pause between `/stats` reads while a batch's slots come free.
const POLL: Duration = Duration::from_millis(1);
/// Longest wait for a batch's slots: longer than a keep-alive interval, in
/// case a close is only noticed when a keep-alive cannot be written.
const FREE_LIMIT: Duration = Duration::from_secs(45);
/// The most bytes of a response head.
const MAX_HEAD: usize = 16 << 10;

/// One batch of streams closed at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FreeBatch {
    /// Streams closed, and slots freed within [`FREE_LIMIT`].
    pub closed: usize,
    pub freed: usize,
    /// Milliseconds the bench took to close the batch's sockets (first
    /// close to last).
    pub closing_ms: f64,
    /// The batch's last close to the first `/stats` read showing a slot
    /// freed: the median and the last slot of the batch, ms.
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// `/stats` reads.
    pub polls: usize,
}

/// What the SSE case measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SseRun {
    /// Why the case did not run (no SSE in this broker).
    pub skipped: Option<String>,
    /// Streams asked for, and opened (`200`, `text/event-stream`).
    pub streams: usize,
    pub opened: usize,
    /// Broker RSS before the first stream and with every stream open,
    /// settled, KiB; the growth per stream, bytes.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub rss_per_stream_bytes: f64,
    /// `web_connections` with every stream open.
    pub web_connections: u64,
    /// Streams the published event reached, and how long the last took.
    pub event_reached: usize,
    pub event_s: f64,
    /// Each batch closed, and last close to slot free over every batch,
    /// ms (median of the batches' medians; the largest maximum).
    pub batches: Vec<FreeBatch>,
    pub free_median_ms: Option<f64>,
    pub free_max_ms: Option<f64>,
    /// Problems seen.
    pub errors: Vec<String>,
}

/// An open stream, and the body bytes it has brought so far.
struct Stream {
    sock: TcpStream,
    body: Vec<u8>,
}

/// What `GET /sse` was answered with.
enum Answer {
    Stream(Stream),
    NotFound,
}

/// Opens one stream of `topic` at `addr`.
fn open(addr: SocketAddr, topic: &str, timeout: Duration) -> anyhow::Result<Answer> {
    let mut sock = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    sock.set_read_timeout(Some(timeout))?;
    write!(
        sock,
        "GET /sse?topic={topic} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).context("read the response head")?;
        anyhow::ensure!(n > 0, "closed before the end of the response head");
        head.extend_from_slice(&chunk[..n]);
        if let Some((used, status)) = parse_head(&head)? {
            return Ok(match status {
                Status::Events => Answer::Stream(Stream { sock, body: head.split_off(used) }),
                Status::NotFound => Answer::NotFound,
            });
        }
        anyhow::ensure!(head.len() <= MAX_HEAD, "response head over {MAX_HEAD} bytes");
    }
}

/// What a complete response head says.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// `200` with `Content-Type: text/event-stream`.
    Events,
    NotFound,
}

/// The response head at the front of `buf`: `None` until complete, then
/// its length and what it says; anything but a stream or a `404` is an
/// error.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(usize, Status)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(used) = response.parse(buf).context("SSE response head")? else {
        return Ok(None);
    };
    match response.code {
        Some(404) => return Ok(Some((used, Status::NotFound))),
        Some(200) => {}
        code => bail!("GET /sse answered {code:?} {}", response.reason.unwrap_or("")),
    }
    let content_type = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    if !content_type.as_deref().is_some_and(|t| t.starts_with("text/event-stream")) {
        bail!("GET /sse answered 200 with Content-Type {content_type:?}");
    }
    Ok(Some((used, Status::Events)))
}

/// Runs the SSE case against `server`.
pub fn run(server: &Server, target: &Target, sizes: &Sizes) -> SseRun {
    let mut out = SseRun { streams: sizes.sse_streams, ..SseRun::default() };
    if let Err(e) = measure(server, target, sizes, &mut out) {
        out.errors.push(format!("{e:#}"));
    }
    out
}

fn measure(
    server: &Server,
    target: &Target,
    sizes: &Sizes,
    out: &mut SseRun,
) -> anyhow::Result<()> {
    match open(server.addr, TOPIC, target.timeout)? {
        Answer::NotFound => {
            out.skipped = Some("GET /sse on the web port answered 404 Not Found: this corecast has no Server-Sent Events".into());
            return Ok(());
        }
        Answer::Stream(probe) => drop(probe),
    }
    if !wait_until(Duration::from_secs(5), || {
        counters(target).is_ok_and(|c| c.get("web_connections") == Some(&0))
    }) {
        out.errors.push("web_connections not back to 0 within 5 s of the probe's close".into());
    }
    let idle = counters(target)?;
    let proc = Proc { pid: server.pid };
    out.rss_before_kib = settle_rss(proc, Duration::from_secs(1))?.last().copied().unwrap_or(0);
    let mut streams = open_all(server.addr, sizes.sse_streams, target.timeout, &mut out.errors);
    out.opened = streams.len();
    out.rss_after_kib = settle_rss(proc, target.settle)?.last().copied().unwrap_or(0);
    let grown = out.rss_after_kib.saturating_sub(out.rss_before_kib) as f64 * 1024.0;
    out.rss_per_stream_bytes = grown / out.opened.max(1) as f64;
    out.web_connections = counters(target)?.get("web_connections").copied().unwrap_or(0);
    (out.event_reached, out.event_s) = deliver(target, &mut streams)?;
    // The publisher's slot, freed meanwhile, must not count as a stream's.
    let streams_only = |(_, web): (u64, u64)| web == out.opened as u64;
    if !wait_until(Duration::from_secs(5), || open_counts(target).is_ok_and(streams_only)) {
        out.errors.push(format!(
            "web_connections not down to the {} open streams within 5 s of the publisher's close",
            out.opened
        ));
    }
    out.batches = close_in_batches(target, streams, sizes.sse_batch)?;
    (out.free_median_ms, out.free_max_ms) = overall(&out.batches);
    let after = counters(target)?;
    if after.get("slots_in_use") != idle.get("slots_in_use") {
        out.errors.push(format!(
            "slots_in_use {:?} after every stream closed, {:?} before",
            after.get("slots_in_use"),
            idle.get("slots_in_use")
        ));
    }
    Ok(())
}

/// Opens `count` streams; stops at the first failure (recorded).
fn open_all(
    addr: SocketAddr,
    count: usize,
    timeout: Duration,
    errors: &mut Vec<String>,
) -> Vec<Stream> {
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        match open(addr, TOPIC, timeout) {
            Ok(Answer::Stream(s)) => streams.push(s),
            Ok(Answer::NotFound) => {
                errors.push(format!("404 after {} streams", streams.len()));
                break;
            }
            Err(e) => {
                errors.push(format!("after {} streams: {e:#}", streams.len()));
                break;
            }
        }
    }
    streams
}

/// Reads what `s` has (without blocking) into its body; whether it is
/// still open.
fn drain(s: &mut Stream) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match s.sock.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                // Only the tail is looked at; keep the body short.
                if s.body.len() > 64 << 10 {
                    s.body.drain(..s.body.len() - 1024);
                }
                s.body.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Publishes one message over WebSocket and reads every stream until each
/// has its payload: the streams it reached, and seconds until the last.
fn deliver(target: &Target, streams: &mut [Stream]) -> anyhow::Result<(usize, f64)> {
    for s in streams.iter_mut() {
        s.sock.set_nonblocking(true)?;
        drain(s);
        s.body.clear();
    }
    let payload = format!("sse-{}", std::process::id());
    let mut publisher = target.connect("sse-publisher", 64 << 10)?;
    let mut batch = Vec::new();
    publisher.encode_publish(TOPIC, payload.as_bytes(), &mut batch);
    let start = Instant::now();
    publisher.publish_batch(&batch)?;
    publisher.flush()?;
    let mut reached = vec![false; streams.len()];
    wait_until(LIMIT, || {
        for (s, got) in streams.iter_mut().zip(reached.iter_mut()).filter(|(_, g)| !**g) {
            drain(s);
            *got = memchr::memmem::find(&s.body, payload.as_bytes()).is_some();
        }
        reached.iter().all(|&g| g)
    });
    Ok((reached.iter().filter(|&&g| g).count(), start.elapsed().as_secs_f64()))
}

/// `slots_in_use` and `web_connections`, the two counts a closed stream
/// must leave.
fn open_counts(target: &Target) -> anyhow::Result<(u64, u64)> {
    let c: BTreeMap<String, u64> = counters(target)?;
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    Ok((get("slots_in_use"), get("web_connections")))
}

/// Closes `streams` `batch` at a time and times each batch's slots; stops
/// timing after a batch whose slots were not all freed within
/// [`FREE_LIMIT`].
fn close_in_batches(
    target: &Target,
    mut streams: Vec<Stream>,
    batch: usize,
) -> anyhow::Result<Vec<FreeBatch>> {
    let mut out = Vec::new();
    while !streams.is_empty() {
        let closing = streams.split_off(streams.len().saturating_sub(batch.max(1)));
        let b = close_batch(target, closing)?;
        let whole = b.freed == b.closed;
        out.push(b);
        if !whole {
            break;
        }
    }
    Ok(out)
}

fn close_batch(target: &Target, mut closing: Vec<Stream>) -> anyhow::Result<FreeBatch> {
    let (slots, web) = open_counts(target)?;
    closing.iter_mut().for_each(|s| {
        drain(s);
    });
    let n = closing.len();
    let start = Instant::now();
    drop(closing);
    // Every socket is closed: the broker's part is timed from here.
    let closed = Instant::now();
    let closing_ms = closed.duration_since(start).as_secs_f64() * 1e3;
    let mut freed_at: Vec<f64> = Vec::with_capacity(n);
    let mut polls = 0;
    while freed_at.len() < n && closed.elapsed() < FREE_LIMIT {
        let (s, w) = open_counts(target)?;
        polls += 1;
        let freed = slots.saturating_sub(s).min(web.saturating_sub(w)) as usize;
        record(&mut freed_at, freed.min(n), closed.elapsed().as_secs_f64() * 1e3);
        if freed_at.len() < n {
            std::thread::sleep(POLL);
        }
    }
    let median_ms = freed_at.get(n.saturating_sub(1) / 2).copied().filter(|_| freed_at.len() == n);
    Ok(FreeBatch {
        closed: n,
        freed: freed_at.len(),
        closing_ms,
        median_ms,
        max_ms: freed_at.last().copied().filter(|_| freed_at.len() == n),
        polls,
    })
}

/// Notes that `freed` slots are free at `t`: each one not noted before
/// was freed by then.
fn record(freed_at: &mut Vec<f64>, freed: usize, t: f64) {
    if freed > freed_at.len() {
        freed_at.resize(freed, t);
    }
}

/// Close to slot free over every batch: the median of the batches'
/// medians, and the largest maximum.
fn overall(batches: &[FreeBatch]) -> (Option<f64>, Option<f64>) {
    let mut medians: Vec<f64> = batches.iter().filter_map(|b| b.median_ms).collect();
    medians.sort_by(f64::total_cmp);
    let max = batches.iter().filter_map(|b| b.max_ms).reduce(f64::max);
    (medians.get(medians.len().saturating_sub(1) / 2).copied(), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads_are_read() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n: hi\n\n";
        let head_len = ok.len() - 6;
        assert_eq!(parse_head(&ok[..30]).expect("partial"), None);
        assert_eq!(parse_head(ok).expect("whole"), Some((head_len, Status::Events)));
        let missing = b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\nno\n";
        assert_eq!(parse_head(missing).expect("404").map(|h| h.1), Some(Status::NotFound));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 503 Busy\r\n\r\n").is_err());
    }

    #[test]
    fn each_slot_is_freed_at_the_first_poll_that_shows_it() {
        let mut at = Vec::new();
        for (freed, t) in [(0, 1.0), (3, 2.0), (2, 3.0), (5, 4.0), (5, 5.0)] {
            record(&mut at, freed, t);
        }
        assert_eq!(at, [2.0, 2.0, 2.0, 4.0, 4.0]);
    }

    /// A stand-in web port: answers each connection with `head`, then
    /// sends `body`.
    fn stand_in(head: &'static str, body: &'static str) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in listener.incoming().take(1) {
                let mut conn = conn.expect("accept");
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).expect("request");
                conn.write_all(head.as_bytes()).expect("head");
                std::thread::sleep(Duration::from_millis(20));
                conn.write_all(body.as_bytes()).expect("body");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        addr
    }

    #[test]
    fn streams_are_opened_and_read_and_a_404_is_told_apart() {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        let addr = stand_in(head, ": keep-alive\n\nid: 1\nevent: bench.sse\ndata: sse-7\n\n");
        let Answer::Stream(mut s) = open(addr, TOPIC, Duration::from_secs(5)).expect("open") else {
            panic!("a 200 with text/event-stream is a stream");
        };
        s.sock.set_nonblocking(true).expect("nonblocking");
        assert!(wait_until(Duration::from_secs(5), || {
            drain(&mut s);
            memchr::memmem::find(&s.body, b"data: sse-7").is_some()
        }));
        let addr = stand_in("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "");
        let answer = open(addr, TOPIC, Duration::from_secs(5)).expect("answered");
        assert!(matches!(answer, Answer::NotFound));
    }

    #[test]
    fn the_overall_figures_are_the_median_batch_and_the_slowest_slot() {
        let b = |m, x| FreeBatch { median_ms: Some(m), max_ms: Some(x), ..FreeBatch::default() };
        assert_eq!(overall(&[b(3.0, 9.0), b(1.0, 4.0), b(2.0, 30.0)]), (Some(2.0), Some(30.0)));
        assert_eq!(overall(&[]), (None, None));
    }
}
