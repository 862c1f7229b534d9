//! Throughput workloads: `fanout` (P publishers, S subscribers, one
//! topic), `pairs` (K publishers each to its own topic, K subscribers) and
//! `stalled` (one publisher, readers, and subscribers that never read).
//!
//! Every subscription is confirmed before the first publication. A few
//! reader threads (one per allowed CPU, at most 4) multiplex the reading
//! subscribers with `mio` (edge-triggered, non-blocking reads), taking
//! turns: a subscriber reads a few times, then waits behind the others that
//! have data, so that none is starved while another's socket keeps
//! refilling. Publishers write batches as fast as their sockets take them.
//! The run ends when every subscriber has everything owed to it or was cut
//! by the broker, when deliveries stop for `idle` after the publishers are
//! done, or at the run's timeout.
use std::{
    collections::VecDeque,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use mio::{unix::SourceFd, Events, Interest, Poll, Token};

use super::{Meter, Target};
use crate::{
    driver::{Driver, Recv},
    payload::{Stamp, Tally, HEADER},
    result::{Flow, Params, RunResult, StalledFigures},
    sys,
};

/// Bytes of publications encoded before one write.
const BATCH_BYTES: usize = 64 << 10;
/// Reads a subscriber does in one turn before the next one with data.
const TURN_READS: usize = 4;

/// What a throughput run does.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// `fanout`, `pairs` or `stalled`.
    pub workload: &'static str,
    /// Human name of the case.
    pub case: String,
    /// The topic of each publisher.
    pub publishers: Vec<String>,
    /// The topic of each subscriber that reads.
    pub subscribers: Vec<String>,
    /// Subscribers of the first publisher's topic that subscribe and then
    /// never read (none outside `stalled`).
    pub stalled: usize,
    /// Messages each publisher sends.
    pub msgs: u64,
    /// Payload bytes (at least the stamp header).
    pub size: usize,
    /// End early once deliveries stop for this long after publishing.
    pub idle: Duration,
}

impl FlowSpec {
    /// P publishers and S subscribers on one topic.
    pub fn fanout(pubs: usize, subs: usize, msgs: u64, size: usize) -> Self {
        let topic = "bench.fanout".to_owned();
        Self {
            workload: "fanout",
            case: format!("fanout {pubs}->{subs} {size}B"),
            publishers: vec![topic.clone(); pubs],
            subscribers: vec![topic; subs],
            stalled: 0,
            msgs,
            size,
            idle: Duration::from_secs(3),
        }
    }

    /// One publisher, `readers` subscribers that read and `stalled` that
    /// never do, all on one topic.
    pub fn stalled(readers: usize, stalled: usize, msgs: u64, size: usize) -> Self {
        let topic = "bench.stalled".to_owned();
        Self {
            workload: "stalled",
            case: format!("stalled 1->{readers} +{stalled} stalled {size}B"),
            publishers: vec![topic.clone()],
            subscribers: vec![topic; readers],
            stalled,
            msgs,
            size,
            idle: Duration::from_secs(3),
        }
    }

    /// K publisher/subscriber pairs, each on its own topic.
    pub fn pairs(k: usize, msgs: u64, size: usize) -> Self {
        let topics: Vec<String> = (0..k).map(|i| format!("bench.pair.{i}")).collect();
        Self {
            workload: "pairs",
            case: format!("pairs K={k} {size}B"),
            publishers: topics.clone(),
            subscribers: topics,
            stalled: 0,
            msgs,
            size,
            idle: Duration::from_secs(3),
        }
    }

    /// The parameters a run of this spec records.
    pub fn params(&self) -> Params {
        Params {
            publishers: Some(self.publishers.len()),
            subscribers: Some(self.subscribers.len()),
            stalled: (self.workload == "stalled").then_some(self.stalled),
            msgs: Some(self.msgs),
            size: Some(self.size),
            ..Params::default()
        }
    }

    /// Messages owed to a subscriber of `topic` if every publisher sends
    /// all of its `msgs`.
    fn owed(&self, topic: &str) -> u64 {
        self.msgs * self.publishers.iter().filter(|t| *t == topic).count() as u64
    }

    /// Deliveries owed over all subscribers when publisher `i` actually sent
    /// `sent[i]` messages: each subscriber, the sum over its topic's
    /// publishers.
    fn expected(&self, sent: &[u64]) -> u64 {
        self.subscribers
            .iter()
            .map(|topic| {
                self.publishers
                    .iter()
                    .zip(sent)
                    .filter(|(t, _)| *t == topic)
                    .map(|(_, n)| n)
                    .sum::<u64>()
            })
            .sum()
    }
}

/// One subscriber as its reader thread sees it.
struct Sub {
    conn: Box<dyn Driver>,
    tally: Tally,
    owed: u64,
    last: Option<Instant>,
    /// Why the broker ended the connection, if it did.
    ended: Option<String>,
}

impl Sub {
    fn complete(&self) -> bool {
        self.tally.unique >= self.owed
    }

    fn finished(&self) -> bool {
        self.complete() || self.ended.is_some()
    }

    /// One turn: up to [`TURN_READS`] reads. Returns whether the socket may
    /// hold more (every read brought data), so the subscriber should queue
    /// for another turn; after a read that found nothing, edge-triggered
    /// polling reports the next data.
    fn turn(&mut self, progress: &AtomicU64) -> bool {
        for _ in 0..TURN_READS {
            let before = self.tally.unique;
            let tally = &mut self.tally;
            let outcome = self.conn.receive(&mut |_, payload| {
                tally.count(payload);
            });
            let gained = self.tally.unique - before;
            if gained > 0 {
                progress.fetch_add(gained, Relaxed);
                self.last = Some(Instant::now());
            }
            match outcome {
                Ok(Recv::Data) => continue,
                Ok(Recv::Idle) => return false,
                Ok(Recv::Closed) => {
                    self.ended =
                        Some("broker closed the connection (end of stream or reset)".into())
                }
                Err(e) => self.ended = Some(format!("{e:#}")),
            }
            return false;
        }
        true
    }
}

/// What a reader thread hands back.
struct ReaderOutcome {
    tally: Tally,
    last: Option<Instant>,
    /// Why each subscriber the broker cut was cut.
    cut: Vec<String>,
    /// Subscribers cut before they had everything.
    cut_short: usize,
    broker_dropped: u64,
}

/// Shared between the coordinator and the reader threads.
struct Shared {
    progress: AtomicU64,
    stop: AtomicBool,
    deadline: Instant,
}

/// Reads `subs` until each is finished, `stop` or the deadline. Subscribers
/// with data wait in a queue and read [`TURN_READS`] times per turn.
fn reader(mut subs: Vec<Sub>, shared: &Shared) -> anyhow::Result<ReaderOutcome> {
    let mut poll = Poll::new().context("create poller")?;
    for (i, sub) in subs.iter().enumerate() {
        sub.conn.stream().set_nonblocking(true)?;
        let fd = sub.conn.stream().as_raw_fd();
        poll.registry().register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
    }
    // Data that arrived with the confirmations is already buffered: every
    // subscriber gets a first turn before waiting for edges.
    let mut ready: VecDeque<usize> = (0..subs.len()).collect();
    let mut queued = vec![true; subs.len()];
    let mut finished = subs.iter().filter(|s| s.finished()).count();
    let mut events = Events::with_capacity(1024);
    while finished < subs.len() && !shared.stop.load(Relaxed) && Instant::now() < shared.deadline {
        let wait = if ready.is_empty() { Duration::from_millis(50) } else { Duration::ZERO };
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("poll"),
        }
        for event in events.iter() {
            let i = event.token().0;
            if i < subs.len() && !queued[i] {
                queued[i] = true;
                ready.push_back(i);
            }
        }
        for _ in 0..ready.len() {
            let Some(i) = ready.pop_front() else { break };
            queued[i] = false;
            let sub = &mut subs[i];
            if sub.finished() {
                continue;
            }
            let more = sub.turn(&shared.progress);
            if sub.finished() {
                finished += 1;
            } else if more {
                queued[i] = true;
                ready.push_back(i);
            }
        }
    }
    let mut out = ReaderOutcome {
        tally: Tally::default(),
        last: None,
        cut: Vec::new(),
        cut_short: 0,
        broker_dropped: 0,
    };
    for sub in &subs {
        out.tally.absorb(&sub.tally);
        out.last = out.last.max(sub.last);
        out.broker_dropped += sub.conn.dropped();
        if let Some(why) = &sub.ended {
            out.cut.push(why.clone());
            out.cut_short += usize::from(!sub.complete());
        }
    }
    Ok(out)
}

/// The subscribers of a run: the readers and the stalled connections.
type Subscribers = (Vec<Sub>, Vec<Box<dyn Driver>>);

/// Connects every subscriber (the stalled ones interleaved with the
/// readers) and sends its subscription, then confirms them all (so the
/// round trips overlap).
fn connect_subscribers(target: &Target, spec: &FlowSpec) -> anyhow::Result<Subscribers> {
    let read_buffer = match spec.subscribers.len() {
        n if n > 1000 => 16 << 10,
        n if n > 32 => 64 << 10,
        _ => 1 << 20,
    };
    let stalled_topic = spec.publishers.first().cloned().unwrap_or_default();
    let mut subs = Vec::with_capacity(spec.subscribers.len());
    let mut stalled = Vec::with_capacity(spec.stalled);
    for i in 0..spec.subscribers.len().max(spec.stalled) {
        if let Some(topic) = spec.subscribers.get(i) {
            let mut conn = target.connect(&format!("sub-{i}"), read_buffer)?;
            conn.subscribe(topic)?;
            subs.push(Sub {
                conn,
                tally: Tally::new(spec.publishers.len()),
                owed: spec.owed(topic),
                last: None,
                ended: None,
            });
        }
        if i < spec.stalled {
            let mut conn = target.connect(&format!("stalled-{i}"), 4096)?;
            conn.subscribe(&stalled_topic)?;
            stalled.push(conn);
        }
    }
    for sub in subs.iter_mut() {
        sub.conn.confirm()?;
    }
    for conn in stalled.iter_mut() {
        conn.confirm()?;
    }
    Ok((subs, stalled))
}

/// What a publisher did.
struct Published {
    /// Messages written to its socket.
    sent: u64,
    /// When its flush came back (or it failed).
    end: Instant,
    /// Why it stopped, if it failed.
    error: Option<anyhow::Error>,
}

/// Sends `msgs` stamped payloads to `topic` in batches, then flushes; stops
/// early at `deadline` or on an error.
fn publish(
    mut conn: Box<dyn Driver>,
    id: u32,
    topic: &str,
    msgs: u64,
    size: usize,
    deadline: Instant,
) -> Published {
    let mut sent = 0;
    let outcome = publish_until(conn.as_mut(), id, topic, (msgs, size), deadline, &mut sent);
    Published { sent, end: Instant::now(), error: outcome.err() }
}

/// [`publish`]'s loop; `sent` counts the messages of every batch written.
fn publish_until(
    conn: &mut dyn Driver,
    id: u32,
    topic: &str,
    (msgs, size): (u64, usize),
    deadline: Instant,
    sent: &mut u64,
) -> anyhow::Result<()> {
    let mut payload = vec![0x5a; size];
    let mut batch = Vec::with_capacity(BATCH_BYTES + size + 512);
    let mut encoded = 0;
    while encoded < msgs {
        Stamp { publisher: id, seq: encoded, sent_ns: 0, intended_ns: 0 }.write(&mut payload);
        conn.encode_publish(topic, &payload, &mut batch);
        encoded += 1;
        if batch.len() >= BATCH_BYTES {
            conn.publish_batch(&batch)?;
            batch.clear();
            *sent = encoded;
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    if !batch.is_empty() {
        conn.publish_batch(&batch)?;
        *sent = encoded;
    }
    conn.flush()
}

/// Splits subscribers round-robin over `n` reader threads.
fn deal(subs: Vec<Sub>, n: usize) -> Vec<Vec<Sub>> {
    let mut groups: Vec<Vec<Sub>> = (0..n).map(|_| Vec::new()).collect();
    for (i, sub) in subs.into_iter().enumerate() {
        groups[i % n].push(sub);
    }
    groups
}

/// Runs a throughput workload.
pub fn run(target: &Target, spec: &FlowSpec) -> anyhow::Result<RunResult> {
    anyhow::ensure!(spec.size >= HEADER, "payload size must be at least {HEADER} bytes");
    let mut result = target.result(spec.workload, spec.case.clone(), spec.params());
    let (subs, stalled) = connect_subscribers(target, spec)?;
    let pubs: Vec<Box<dyn Driver>> = (0..spec.publishers.len())
        .map(|i| target.connect(&format!("pub-{i}"), 64 << 10))
        .collect::<anyhow::Result<_>>()?;
    let shared = Arc::new(Shared {
        progress: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        deadline: Instant::now() + target.timeout,
    });
    let threads = sys::allowed_cpus().clamp(1, 4).min(subs.len().max(1));
    let readers: Vec<_> = deal(subs, threads)
        .into_iter()
        .map(|group| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || reader(group, &shared))
        })
        .collect();
    let barrier = Arc::new(Barrier::new(pubs.len() + 1));
    let publishers: Vec<_> = pubs
        .into_iter()
        .zip(spec.publishers.clone())
        .enumerate()
        .map(|(i, (conn, topic))| {
            let (barrier, deadline) = (Arc::clone(&barrier), shared.deadline);
            let (msgs, size) = (spec.msgs, spec.size);
            thread::spawn(move || {
                barrier.wait();
                publish(conn, i as u32, &topic, msgs, size, deadline)
            })
        })
        .collect();
    let meter = Meter::start(target);
    barrier.wait();
    let start = meter.started();
    let mut flow = Flow::default();
    let mut pub_end = start;
    let mut sent_by = vec![0; spec.publishers.len()];
    for (i, handle) in publishers.into_iter().enumerate() {
        let Ok(p) = handle.join() else {
            result.errors.push(format!("publisher {i}: thread panicked"));
            continue;
        };
        sent_by[i] = p.sent;
        flow.published += p.sent;
        pub_end = pub_end.max(p.end);
        match p.error {
            Some(e) => {
                result.errors.push(format!("publisher {i} after {} messages: {e:#}", p.sent))
            }
            None if p.sent < spec.msgs => result.errors.push(format!(
                "publisher {i} stopped at the run's deadline after {} of {} messages",
                p.sent, spec.msgs
            )),
            None => {}
        }
    }
    wait_for_deliveries(&shared, spec, &readers);
    shared.stop.store(true, Relaxed);
    let mut last = None;
    for handle in readers {
        match handle.join() {
            Ok(Ok(out)) => {
                flow.delivered += out.tally.unique;
                flow.duplicates += out.tally.duplicates;
                flow.gaps += out.tally.gaps;
                flow.broker_dropped += out.broker_dropped;
                flow.cut += out.cut.len();
                last = last.max(out.last);
                if let Some(first) = out.cut.first() {
                    result.errors.push(format!(
                        "{} subscriber(s) cut by the broker ({} before they had everything): {first}",
                        out.cut.len(),
                        out.cut_short
                    ));
                }
                if out.tally.foreign > 0 {
                    result
                        .errors
                        .push(format!("{} payloads without a valid stamp", out.tally.foreign));
                }
            }
            Ok(Err(e)) => result.errors.push(format!("reader: {e:#}")),
            Err(_) => result.errors.push("reader thread panicked".into()),
        }
    }
    flow.expected = spec.expected(&sent_by);
    flow.lost = flow.expected.saturating_sub(flow.delivered);
    flow.published_per_s = flow.published as f64 / (pub_end - start).as_secs_f64().max(1e-9);
    let delivered_secs = last.map_or(0.0, |l: Instant| (l - start).as_secs_f64());
    flow.delivered_per_s =
        if delivered_secs > 0.0 { flow.delivered as f64 / delivered_secs } else { 0.0 };
    result.seconds = delivered_secs.max((pub_end - start).as_secs_f64());
    meter.finish(&mut result);
    if flow.lost > 0 {
        result.errors.push(format!("{} deliveries missing when the run ended", flow.lost));
    }
    result.flow = Some(flow);
    if spec.workload == "stalled" {
        result.stalled = Some(stalled_figures(target, &stalled, &mut result.errors));
    }
    drop(stalled);
    target.totals_into(&mut result);
    Ok(result)
}

/// How many of the stalled connections the broker closed by now.
fn stalled_figures(
    target: &Target,
    stalled: &[Box<dyn Driver>],
    errors: &mut Vec<String>,
) -> StalledFigures {
    let streams: Vec<&std::net::TcpStream> = stalled.iter().map(|c| c.stream()).collect();
    let stalled_cut = match sys::closed_by_server(&streams, target.addr.port()) {
        Ok(closed) => closed.iter().filter(|&&c| c).count(),
        Err(e) => {
            errors.push(format!("state of the stalled connections: {e:#}"));
            0
        }
    };
    StalledFigures { stalled: stalled.len(), stalled_cut, ..StalledFigures::default() }
}

/// Waits after publishing until every reader is done, deliveries stall for
/// `spec.idle`, or the deadline passes.
fn wait_for_deliveries<T>(shared: &Shared, spec: &FlowSpec, readers: &[thread::JoinHandle<T>]) {
    let (mut seen, mut since) = (shared.progress.load(Relaxed), Instant::now());
    while Instant::now() < shared.deadline && !readers.iter().all(|r| r.is_finished()) {
        thread::sleep(Duration::from_millis(10));
        let now = shared.progress.load(Relaxed);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= spec.idle {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_counts_what_was_sent() {
        // Every subscriber of the topic is owed what both publishers sent.
        assert_eq!(FlowSpec::fanout(2, 3, 100, 64).expected(&[5, 7]), 36);
        // Each subscriber is owed only its own publisher's messages.
        assert_eq!(FlowSpec::pairs(2, 100, 64).expected(&[5, 7]), 12);
        assert_eq!(FlowSpec::pairs(2, 100, 64).expected(&[0, 0]), 0);
    }
}
