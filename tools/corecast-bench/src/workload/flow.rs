//! Throughput workloads: `fanout` (P publishers, S subscribers, one
//! topic), `pairs` (K publishers each to its own topic, K subscribers),
//! `stalled` (one publisher, readers, and subscribers that never read),
//! `scraped` (a fan-out with or without a scraper polling corecast's
//! monitoring port: see [`super::scraped`]), and
//! the routing cases of [`super::routing`]: `wildcard` (patterns),
//! `queue` (one queue group) and `topics` (many topics, one subscriber
//! each).
//!
//! A publisher spreads its messages round-robin over its topics (one, in
//! most cases). Every subscription is confirmed before the first
//! publication. A few reader threads (one per allowed CPU, at most 4)
//! multiplex the reading subscribers with `mio` (edge-triggered,
//! non-blocking reads), taking turns: a subscriber reads a few times, then
//! waits behind the others that have data, so that none is starved while
//! another's socket keeps refilling. Publishers write batches as fast as
//! their sockets take them. The run ends when everything owed was
//! delivered or every subscriber has everything owed to it or was cut by
//! the broker, when deliveries stop for `idle` after the publishers are
//! done, or at the run's timeout.
//!
//! What is owed follows from the topics each publisher sent to (see
//! [`super::owed`]): each subscriber outside a queue group is owed every
//! message that one of its subscriptions matches; a queue group is owed
//! each such message once, in all, and the bench checks that no message
//! reached two of its members.
use std::{
    collections::{HashSet, VecDeque},
    net::SocketAddr,
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

use super::{owed, scraped::Scraper, Meter, Target};
use crate::{
    driver::{Driver, Recv, Subscription},
    payload::{Seen, Stamp, Tally, HEADER},
    result::{Flow, Params, RunResult, StalledFigures, SubsMemory},
    sys::{self, Proc},
};

/// Bytes of publications encoded before one write.
const BATCH_BYTES: usize = 64 << 10;
/// Reads a subscriber does in one turn before the next one with data.
const TURN_READS: usize = 4;

/// A reading subscriber connection and what it subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// Its subscriptions: topics, or patterns in NATS syntax. A message
    /// that two of them match arrives twice and the second copy counts as
    /// a duplicate, so they should not overlap.
    pub topics: Vec<String>,
    /// The queue group every one of its subscriptions joins, if any.
    pub group: Option<String>,
}

impl Subscriber {
    /// One subscription to `topic`, outside any queue group.
    pub fn on(topic: impl Into<String>) -> Self {
        Self { topics: vec![topic.into()], group: None }
    }

    /// Its topics and patterns, borrowed.
    fn topic_strs(&self) -> Vec<&str> {
        self.topics.iter().map(String::as_str).collect()
    }

    /// Its subscription requests.
    fn subscriptions(&self) -> Vec<Subscription<'_>> {
        let group = self.group.as_deref();
        self.topics.iter().map(|topic| Subscription { topic: topic.as_str(), group }).collect()
    }
}

/// What a throughput run does.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    /// `fanout`, `pairs`, `stalled`, `scraped`, `wildcard`, `queue` or
    /// `topics`.
    pub workload: &'static str,
    /// Human name of the case.
    pub case: String,
    /// The topics of each publisher: its message `seq` goes to
    /// `topics[seq % topics.len()]`.
    pub publishers: Vec<Arc<[String]>>,
    /// The subscribers that read.
    pub subscribers: Vec<Subscriber>,
    /// Subscribers of the first publisher's first topic that subscribe and
    /// then never read (none outside `stalled`).
    pub stalled: usize,
    /// Messages each publisher sends.
    pub msgs: u64,
    /// Payload bytes (at least the stamp header).
    pub size: usize,
    /// End early once deliveries stop for this long after publishing.
    pub idle: Duration,
    /// Measure the broker's RSS per subscription: its growth from every
    /// connection open to every subscription confirmed (and settled).
    pub subs_memory: bool,
    /// Scrape corecast's monitoring port this often while publishing and
    /// delivering (`scraped`; `None` elsewhere, and in the `scraped` run
    /// without a scraper).
    pub scrape: Option<Duration>,
    /// Which node of a cluster each connection goes to (`None`: every
    /// connection to the target's address).
    pub nodes: Option<Arc<Nodes>>,
}

/// Where the connections of a run on a cluster go: node addresses, and
/// each publisher's and each subscriber's node (an index into `addrs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    /// Each node's client address.
    pub addrs: Vec<SocketAddr>,
    /// The node of each publisher, in [`FlowSpec::publishers`]' order.
    pub publishers: Vec<usize>,
    /// The node of each subscriber, in [`FlowSpec::subscribers`]' order.
    pub subscribers: Vec<usize>,
}

impl Nodes {
    /// The pairs (publisher's node, subscriber's node) of different nodes
    /// where a publisher of `spec` sends to a topic that a subscriber
    /// subscribes to (literally: patterns are not looked at), in order.
    pub fn crossings(&self, spec: &FlowSpec) -> Vec<(usize, usize)> {
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        for (topics, &p) in spec.publishers.iter().zip(&self.publishers) {
            for (sub, &s) in spec.subscribers.iter().zip(&self.subscribers) {
                let reaches = sub.topics.iter().any(|t| topics.contains(t));
                if p != s && reaches && !pairs.contains(&(p, s)) {
                    pairs.push((p, s));
                }
            }
        }
        pairs.sort_unstable();
        pairs
    }

    /// Waits until a message published on each publishing node reaches a
    /// subscriber on each other node that the run's subscribers are on.
    /// Each probe subscribes after every subscriber of the run was
    /// confirmed on its node, and a node tells the others of its
    /// subscriptions in order (corecast in band in its Redis stream, with
    /// one core per node; nats-server on its route), so once a probe
    /// arrives the publishing node knows of the run's subscribers too.
    /// Returns how long it took.
    pub fn await_interest(&self, target: &Target, spec: &FlowSpec) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let deadline = start + target.timeout;
        let payload = [0x70u8; HEADER];
        for (p, s) in self.crossings(spec) {
            let topic = format!("bench.probe.{p}.{s}");
            let mut sub = target.at(self.addrs[s]).connect(&format!("probe-sub-{s}"), 64 << 10)?;
            sub.subscribe(&topic)?;
            sub.confirm()?;
            sub.stream().set_nonblocking(true)?;
            let mut publisher =
                target.at(self.addrs[p]).connect(&format!("probe-pub-{p}"), 64 << 10)?;
            let mut batch = Vec::new();
            publisher.encode_publish(&topic, &payload, &mut batch);
            let mut arrived = false;
            while !arrived {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no message from node {} reached node {} within {:?}",
                    p + 1,
                    s + 1,
                    target.timeout
                );
                publisher.publish_batch(&batch)?;
                publisher.flush()?;
                thread::sleep(Duration::from_millis(5));
                while let Recv::Data = sub.receive(&mut |_| arrived = true)? {}
            }
        }
        Ok(start.elapsed())
    }
}

impl FlowSpec {
    /// A spec with `publishers` and `subscribers` and the usual rest.
    pub fn new(
        (workload, case): (&'static str, String),
        publishers: Vec<Arc<[String]>>,
        subscribers: Vec<Subscriber>,
        msgs: u64,
        size: usize,
    ) -> Self {
        Self {
            workload,
            case,
            publishers,
            subscribers,
            stalled: 0,
            msgs,
            size,
            idle: Duration::from_secs(3),
            subs_memory: false,
            scrape: None,
            nodes: None,
        }
    }

    /// The address the connection of subscriber `i` goes to.
    fn subscriber_addr(&self, target: &Target, i: usize) -> SocketAddr {
        self.nodes.as_ref().map_or(target.addr, |n| n.addrs[n.subscribers[i]])
    }

    /// The address the connection of publisher `i` goes to.
    fn publisher_addr(&self, target: &Target, i: usize) -> SocketAddr {
        self.nodes.as_ref().map_or(target.addr, |n| n.addrs[n.publishers[i]])
    }

    /// P publishers and S subscribers on one topic.
    pub fn fanout(pubs: usize, subs: usize, msgs: u64, size: usize) -> Self {
        let topic = "bench.fanout";
        let case = format!("fanout {pubs}->{subs} {size}B");
        let publishers = vec![one_topic(topic); pubs];
        Self::new(("fanout", case), publishers, vec![Subscriber::on(topic); subs], msgs, size)
    }

    /// One publisher, `readers` subscribers that read and `stalled` that
    /// never do, all on one topic.
    pub fn stalled(readers: usize, stalled: usize, msgs: u64, size: usize) -> Self {
        let topic = "bench.stalled";
        let case = format!("stalled 1->{readers} +{stalled} stalled {size}B");
        let subscribers = vec![Subscriber::on(topic); readers];
        Self {
            stalled,
            ..Self::new(("stalled", case), vec![one_topic(topic)], subscribers, msgs, size)
        }
    }

    /// K publisher/subscriber pairs, each on its own topic.
    pub fn pairs(k: usize, msgs: u64, size: usize) -> Self {
        let topics: Vec<String> = (0..k).map(|i| format!("bench.pair.{i}")).collect();
        let case = format!("pairs K={k} {size}B");
        let publishers = topics.iter().map(|t| one_topic(t)).collect();
        let subscribers = topics.into_iter().map(Subscriber::on).collect();
        Self::new(("pairs", case), publishers, subscribers, msgs, size)
    }

    /// The parameters a run of this spec records. The figures of topics,
    /// subscriptions and queue groups appear only when they say more than
    /// one of each per connection.
    pub fn params(&self) -> Params {
        let topics = self.publishers.iter().flat_map(|t| t.iter()).collect::<HashSet<_>>().len();
        let subscriptions = self.subscribers.iter().map(|s| s.topics.len()).sum::<usize>();
        let groups = self.groups().len();
        Params {
            publishers: Some(self.publishers.len()),
            subscribers: Some(self.subscribers.len()),
            stalled: (self.workload == "stalled").then_some(self.stalled),
            msgs: Some(self.msgs),
            size: Some(self.size),
            topics: self.publishers.iter().any(|t| t.len() > 1).then_some(topics),
            subscriptions: (subscriptions != self.subscribers.len()).then_some(subscriptions),
            groups: (groups > 0).then_some(groups),
            scrape_ms: (self.workload == "scraped")
                .then(|| self.scrape.map_or(0, |d| d.as_millis() as u64)),
            ..Params::default()
        }
    }

    /// Whether corecast needs protocol 1.1 for it (patterns or queue
    /// groups); its connections then all ask for a 1.1 session.
    pub fn needs_v1_1(&self) -> bool {
        self.subscribers
            .iter()
            .flat_map(|s| s.subscriptions())
            .any(|s| s.group.is_some() || s.is_pattern())
    }

    /// The queue groups, in order of first appearance.
    fn groups(&self) -> Vec<&str> {
        crate::report::distinct(self.subscribers.iter().filter_map(|s| s.group.as_deref()))
    }

    /// Deliveries owed when publisher `i` actually sent `sent[i]` messages.
    fn owed(&self, sent: &[u64]) -> Owed {
        let counts = owed::per_topic(&self.publishers, sent);
        let each: Vec<Option<u64>> = self
            .subscribers
            .iter()
            .map(|s| s.group.is_none().then(|| owed::reaching(&counts, &s.topic_strs())))
            .collect();
        let groups: Vec<u64> = self
            .groups()
            .iter()
            .map(|g| {
                let members = self.subscribers.iter().filter(|s| s.group.as_deref() == Some(*g));
                owed::reaching(
                    &counts,
                    &members.flat_map(Subscriber::topic_strs).collect::<Vec<_>>(),
                )
            })
            .collect();
        let total = each.iter().flatten().sum::<u64>() + groups.iter().sum::<u64>();
        Owed { each, groups, total }
    }

    /// For each subscriber, whether it is owed every message of each
    /// publisher that reaches it at all, so that a sequence number skipped
    /// is a gap (not so for a queue group member, or a subscriber to some
    /// of a publisher's topics).
    fn contiguous(&self) -> Vec<bool> {
        let each: Vec<_> = self
            .publishers
            .iter()
            .map(|t| owed::per_topic(std::slice::from_ref(t), &[self.msgs]))
            .collect();
        self.subscribers
            .iter()
            .map(|s| {
                let topics = s.topic_strs();
                s.group.is_none()
                    && each.iter().all(|counts| {
                        let n = owed::reaching(counts, &topics);
                        n == 0 || n == self.msgs
                    })
            })
            .collect()
    }

    /// Deliveries owed over all subscribers when publisher `i` actually
    /// sent `sent[i]` messages.
    pub(crate) fn expected(&self, sent: &[u64]) -> u64 {
        self.owed(sent).total
    }
}

/// The deliveries a run owes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owed {
    /// Each subscriber outside a queue group: its own count (`None` for a
    /// member, who shares its group's).
    each: Vec<Option<u64>>,
    /// Each queue group (see [`FlowSpec::groups`]): the messages that
    /// reach one of its members, each owed to one member.
    groups: Vec<u64>,
    /// Everything: each subscriber's and each group's.
    total: u64,
}

/// A publisher's topic list of one topic.
fn one_topic(topic: &str) -> Arc<[String]> {
    Arc::from(vec![topic.to_owned()])
}

/// One subscriber as its reader thread sees it.
struct Sub {
    /// Its index in [`FlowSpec::subscribers`].
    index: usize,
    conn: Box<dyn Driver>,
    tally: Tally,
    /// Messages owed to it; `None` for a queue group member, owed what
    /// its group is drawn for it.
    owed: Option<u64>,
    /// A queue group member's group (index into [`FlowSpec::groups`]) and
    /// the messages it received.
    member: Option<(usize, Seen)>,
    last: Option<Instant>,
    /// Why the broker ended the connection, if it did.
    ended: Option<String>,
}

impl Sub {
    fn complete(&self) -> bool {
        self.owed.is_some_and(|owed| self.tally.unique >= owed)
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
            let (tally, member) = (&mut self.tally, &mut self.member);
            let outcome = self.conn.receive(&mut |m| {
                let stamp = tally.count(m.payload);
                if let (Some(stamp), Some((_, seen))) = (stamp, member.as_mut()) {
                    seen.insert(&stamp);
                }
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
#[derive(Default)]
struct ReaderOutcome {
    tally: Tally,
    /// Each subscriber outside a queue group: (index, distinct messages).
    received: Vec<(usize, u64)>,
    /// Each queue group (by index): what its members here received, and
    /// how many messages two of them received.
    groups: Vec<(Seen, u64)>,
    last: Option<Instant>,
    /// Why each subscriber the broker cut was cut.
    cut: Vec<String>,
    /// Subscribers cut before they had everything.
    cut_short: usize,
    broker_dropped: u64,
}

impl ReaderOutcome {
    /// Adds one subscriber's figures.
    fn add(&mut self, sub: &Sub) {
        self.tally.absorb(&sub.tally);
        self.last = self.last.max(sub.last);
        self.broker_dropped += sub.conn.dropped();
        match &sub.member {
            Some((group, seen)) => {
                if self.groups.len() <= *group {
                    self.groups.resize_with(group + 1, Default::default);
                }
                let (all, twice) = &mut self.groups[*group];
                *twice += all.merge(seen);
            }
            None => self.received.push((sub.index, sub.tally.unique)),
        }
        if let Some(why) = &sub.ended {
            self.cut.push(why.clone());
            self.cut_short += usize::from(!sub.complete());
        }
    }

    /// Adds another reader's figures.
    fn absorb(&mut self, other: ReaderOutcome) {
        self.tally.absorb(&other.tally);
        self.received.extend(other.received);
        if self.groups.len() < other.groups.len() {
            self.groups.resize_with(other.groups.len(), Default::default);
        }
        for ((all, twice), (seen, theirs)) in self.groups.iter_mut().zip(&other.groups) {
            *twice += theirs + all.merge(seen);
        }
        self.last = self.last.max(other.last);
        self.cut.extend(other.cut);
        self.cut_short += other.cut_short;
        self.broker_dropped += other.broker_dropped;
    }
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
    let mut out = ReaderOutcome::default();
    subs.iter().for_each(|sub| out.add(sub));
    Ok(out)
}

/// The subscribers of a run: the readers and the stalled connections.
type Subscribers = (Vec<Sub>, Vec<Box<dyn Driver>>);

/// Opens every subscriber's connection (the stalled ones interleaved with
/// the readers), then sends every subscription, then confirms them all (so
/// the round trips overlap). With `memory`, the broker's RSS is read
/// between the connections and the subscriptions, and once settled after.
fn connect_subscribers(
    target: &Target,
    spec: &FlowSpec,
    memory: Option<Proc>,
) -> anyhow::Result<(Subscribers, Option<SubsMemory>)> {
    let (mut subs, mut stalled) = open_subscribers(target, spec)?;
    let rss_before_kib = match memory {
        Some(proc) => {
            thread::sleep(Duration::from_millis(300));
            Some(proc.rss_kib()?)
        }
        None => None,
    };
    for sub in subs.iter_mut() {
        sub.conn.subscribe_all(&spec.subscribers[sub.index].subscriptions())?;
    }
    let stalled_topic = spec.publishers.first().and_then(|t| t.first()).cloned();
    for conn in stalled.iter_mut() {
        conn.subscribe(stalled_topic.as_deref().unwrap_or("bench.stalled"))?;
    }
    for sub in subs.iter_mut() {
        sub.conn.confirm()?;
    }
    for conn in stalled.iter_mut() {
        conn.confirm()?;
    }
    let figures = match (memory, rss_before_kib) {
        (Some(proc), Some(before)) => Some(subs_memory(target, spec, proc, before)?),
        _ => None,
    };
    Ok(((subs, stalled), figures))
}

/// Connects the readers and the stalled subscribers, nothing subscribed.
fn open_subscribers(target: &Target, spec: &FlowSpec) -> anyhow::Result<Subscribers> {
    let read_buffer = match spec.subscribers.len() {
        n if n > 1000 => 16 << 10,
        n if n > 32 => 64 << 10,
        _ => 1 << 20,
    };
    let v1_1 = spec.needs_v1_1();
    let owed = spec.owed(&vec![spec.msgs; spec.publishers.len()]).each;
    let contiguous = spec.contiguous();
    let groups = spec.groups();
    let mut subs = Vec::with_capacity(spec.subscribers.len());
    let mut stalled = Vec::with_capacity(spec.stalled);
    for i in 0..spec.subscribers.len().max(spec.stalled) {
        if let Some(s) = spec.subscribers.get(i) {
            let at = target.at(spec.subscriber_addr(target, i));
            let conn = at.connect_as(&format!("sub-{i}"), read_buffer, v1_1)?;
            let group = s.group.as_deref().and_then(|g| groups.iter().position(|x| *x == g));
            let publishers = spec.publishers.len();
            subs.push(Sub {
                index: i,
                conn,
                tally: if contiguous[i] {
                    Tally::new(publishers)
                } else {
                    Tally::sparse(publishers)
                },
                owed: owed[i],
                member: group.map(|g| (g, Seen::new(publishers, spec.msgs))),
                last: None,
                ended: None,
            });
        }
        if i < spec.stalled {
            stalled.push(target.connect_as(&format!("stalled-{i}"), 4096, v1_1)?);
        }
    }
    Ok((subs, stalled))
}

/// The broker's RSS per subscription: its growth since `before` (every
/// connection open, nothing subscribed) once settled.
fn subs_memory(
    target: &Target,
    spec: &FlowSpec,
    proc: Proc,
    before: u64,
) -> anyhow::Result<SubsMemory> {
    let samples = super::settle_rss(proc, target.settle)?;
    let after = samples.last().copied().unwrap_or(before);
    let subscriptions: usize = spec.subscribers.iter().map(|s| s.topics.len()).sum();
    let grown = after.saturating_sub(before) as f64 * 1024.0;
    Ok(SubsMemory {
        subscriptions,
        rss_before_kib: before,
        rss_after_kib: after,
        rss_per_sub_bytes: grown / subscriptions.max(1) as f64,
        rss_samples_kib: samples,
    })
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

/// Sends `msgs` stamped payloads round-robin over `topics` in batches,
/// then flushes; stops early at `deadline` or on an error.
fn publish(
    mut conn: Box<dyn Driver>,
    id: u32,
    topics: &[String],
    (msgs, size): (u64, usize),
    deadline: Instant,
) -> Published {
    let mut sent = 0;
    let outcome = publish_until(conn.as_mut(), id, topics, (msgs, size), deadline, &mut sent);
    Published { sent, end: Instant::now(), error: outcome.err() }
}

/// [`publish`]'s loop; `sent` counts the messages of every batch written.
fn publish_until(
    conn: &mut dyn Driver,
    id: u32,
    topics: &[String],
    (msgs, size): (u64, usize),
    deadline: Instant,
    sent: &mut u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!topics.is_empty(), "publisher {id} has no topic");
    let mut payload = vec![0x5a; size];
    let mut batch = Vec::with_capacity(BATCH_BYTES + size + 512);
    let mut encoded = 0;
    while encoded < msgs {
        Stamp { publisher: id, seq: encoded, sent_ns: 0, intended_ns: 0 }.write(&mut payload);
        let topic = &topics[(encoded % topics.len() as u64) as usize];
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

/// A reader thread.
type ReaderHandle = thread::JoinHandle<anyhow::Result<ReaderOutcome>>;

/// Starts the reader threads (one per allowed CPU, at most 4).
fn spawn_readers(subs: Vec<Sub>, shared: &Arc<Shared>) -> Vec<ReaderHandle> {
    let threads = sys::allowed_cpus().clamp(1, 4).min(subs.len().max(1));
    deal(subs, threads)
        .into_iter()
        .map(|group| {
            let shared = Arc::clone(shared);
            thread::spawn(move || reader(group, &shared))
        })
        .collect()
}

/// Starts one thread per publisher, each waiting at `barrier` before its
/// first message.
fn spawn_publishers(
    pubs: Vec<Box<dyn Driver>>,
    spec: &FlowSpec,
    barrier: &Arc<Barrier>,
    deadline: Instant,
) -> Vec<thread::JoinHandle<Published>> {
    pubs.into_iter()
        .zip(spec.publishers.clone())
        .enumerate()
        .map(|(i, (conn, topics))| {
            let barrier = Arc::clone(barrier);
            let load = (spec.msgs, spec.size);
            thread::spawn(move || {
                barrier.wait();
                publish(conn, i as u32, &topics, load, deadline)
            })
        })
        .collect()
}

/// Waits for the publishers: what each sent, and when the last one's flush
/// came back (`start` if none did). Failures go to `errors`.
fn join_publishers(
    publishers: Vec<thread::JoinHandle<Published>>,
    spec: &FlowSpec,
    start: Instant,
    errors: &mut Vec<String>,
) -> (Vec<u64>, Instant) {
    let mut pub_end = start;
    let mut sent_by = vec![0; publishers.len()];
    for (i, handle) in publishers.into_iter().enumerate() {
        let Ok(p) = handle.join() else {
            errors.push(format!("publisher {i}: thread panicked"));
            continue;
        };
        sent_by[i] = p.sent;
        pub_end = pub_end.max(p.end);
        match p.error {
            Some(e) => errors.push(format!("publisher {i} after {} messages: {e:#}", p.sent)),
            None if p.sent < spec.msgs => errors.push(format!(
                "publisher {i} stopped at the run's deadline after {} of {} messages",
                p.sent, spec.msgs
            )),
            None => {}
        }
    }
    (sent_by, pub_end)
}

/// Waits for the readers and adds up what they saw; failures, cuts and
/// foreign payloads go to `errors`.
fn join_readers(readers: Vec<ReaderHandle>, errors: &mut Vec<String>) -> ReaderOutcome {
    let mut all = ReaderOutcome::default();
    for handle in readers {
        match handle.join() {
            Ok(Ok(out)) => all.absorb(out),
            Ok(Err(e)) => errors.push(format!("reader: {e:#}")),
            Err(_) => errors.push("reader thread panicked".into()),
        }
    }
    if let Some(first) = all.cut.first() {
        errors.push(format!(
            "{} subscriber(s) cut by the broker ({} before they had everything): {first}",
            all.cut.len(),
            all.cut_short
        ));
    }
    if all.tally.foreign > 0 {
        errors.push(format!("{} payloads without a valid stamp", all.tally.foreign));
    }
    all
}

/// The delivery figures of a run whose publishers sent `sent_by`: what
/// each subscriber outside a queue group received and lacks, and each
/// group's distinct messages (a message two members received counts once
/// as delivered and once as a duplicate).
fn delivery_figures(spec: &FlowSpec, sent_by: &[u64], out: &ReaderOutcome) -> Flow {
    let owed = spec.owed(sent_by);
    let mut got = vec![0; spec.subscribers.len()];
    for &(i, n) in &out.received {
        got[i] = n;
    }
    let mut flow = Flow {
        published: sent_by.iter().sum(),
        expected: owed.total,
        duplicates: out.tally.duplicates,
        gaps: out.tally.gaps,
        broker_dropped: out.broker_dropped,
        cut: out.cut.len(),
        ..Flow::default()
    };
    for (owed, got) in owed.each.iter().zip(&got) {
        if let Some(owed) = owed {
            flow.delivered += got;
            flow.lost += owed.saturating_sub(*got);
        }
    }
    for (g, owed) in owed.groups.iter().enumerate() {
        let (seen, twice) = out.groups.get(g).map_or((0, 0), |(s, t)| (s.count(), *t));
        flow.delivered += seen;
        flow.lost += owed.saturating_sub(seen);
        flow.duplicates += twice;
    }
    flow
}

/// Runs a throughput workload.
pub fn run(target: &Target, spec: &FlowSpec) -> anyhow::Result<RunResult> {
    anyhow::ensure!(spec.size >= HEADER, "payload size must be at least {HEADER} bytes");
    let mut result = target.result(spec.workload, spec.case.clone(), spec.params());
    let memory = if spec.subs_memory { Some(target.require_proc(spec.workload)?) } else { None };
    let ((subs, stalled), memory_figures) = connect_subscribers(target, spec, memory)?;
    result.subs_memory = memory_figures;
    if let Some(nodes) = &spec.nodes {
        nodes.await_interest(target, spec)?;
    }
    let v1_1 = spec.needs_v1_1();
    let pubs: Vec<Box<dyn Driver>> = (0..spec.publishers.len())
        .map(|i| {
            let at = target.at(spec.publisher_addr(target, i));
            at.connect_as(&format!("pub-{i}"), 64 << 10, v1_1)
        })
        .collect::<anyhow::Result<_>>()?;
    let shared = Arc::new(Shared {
        progress: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        deadline: Instant::now() + target.timeout,
    });
    // A `scraped` run's scraper: its first GETs go out as the publishers
    // start, and it stops once delivery ends.
    let scraper = spec.scrape.map(|every| Scraper::start(target, every)).transpose()?;
    let readers = spawn_readers(subs, &shared);
    let barrier = Arc::new(Barrier::new(pubs.len() + 1));
    let publishers = spawn_publishers(pubs, spec, &barrier, shared.deadline);
    let meter = Meter::start(target);
    barrier.wait();
    let start = meter.started();
    let (sent_by, pub_end) = join_publishers(publishers, spec, start, &mut result.errors);
    wait_for_deliveries(&shared, spec.idle, spec.expected(&sent_by), &readers);
    result.scrape = scraper.map(|s| s.stop(&mut result.errors));
    shared.stop.store(true, Relaxed);
    let outcome = join_readers(readers, &mut result.errors);
    let mut flow = delivery_figures(spec, &sent_by, &outcome);
    flow.published_per_s = flow.published as f64 / (pub_end - start).as_secs_f64().max(1e-9);
    let delivered_secs = outcome.last.map_or(0.0, |l: Instant| (l - start).as_secs_f64());
    flow.delivered_per_s =
        if delivered_secs > 0.0 { flow.delivered as f64 / delivered_secs } else { 0.0 };
    result.seconds = delivered_secs.max((pub_end - start).as_secs_f64());
    meter.finish(&mut result);
    if flow.lost > 0 {
        result.errors.push(format!("{} deliveries missing when the run ended", flow.lost));
    }
    let twice: u64 = outcome.groups.iter().map(|(_, t)| t).sum();
    if twice > 0 {
        result.errors.push(format!("{twice} messages went to two members of a queue group"));
    }
    result.flow = Some(flow);
    if spec.workload == "stalled" {
        result.stalled = Some(stalled_figures(target, &stalled, &mut result.errors));
    }
    drop(stalled);
    target.totals_into(&mut result);
    Ok(result)
}

/// Merges the rounds of one broker and case (each run against a freshly
/// started broker) into one result: the round with the median delivered/s
/// (the middle one of an odd count, the lower middle one of an even count;
/// a round that measured nothing counts as 0), with what no round may
/// hide. Lost, cut, duplicates, gaps and broker-dropped are the most of any
/// round, the errors are every round's (prefixed with their round), and the
/// broker's peak RSS is the largest of any round, so a round that lost
/// messages fails the case and a memory figure never comes from the
/// leanest round. A scraper's counts add up over the rounds (see
/// [`super::scraped::add_up`]). The rest (rates, seconds, CPU, the stalled
/// subscribers' figures, corecast's counters) is the median round's, so
/// the figures of one run stay together. `None` when there are no rounds.
pub fn merge_rounds(rounds: &[RunResult]) -> Option<RunResult> {
    let rate = |r: &RunResult| r.flow.as_ref().map_or(0.0, |f| f.delivered_per_s);
    let mut merged = super::median_round(rounds, rate)?;
    if let Some(flow) = merged.flow.as_mut() {
        for f in rounds.iter().filter_map(|r| r.flow.as_ref()) {
            flow.lost = flow.lost.max(f.lost);
            flow.cut = flow.cut.max(f.cut);
            flow.duplicates = flow.duplicates.max(f.duplicates);
            flow.gaps = flow.gaps.max(f.gaps);
            flow.broker_dropped = flow.broker_dropped.max(f.broker_dropped);
        }
    }
    if let Some(usage) = merged.broker_usage.as_mut() {
        for u in rounds.iter().filter_map(|r| r.broker_usage.as_ref()) {
            usage.peak_rss_kib = usage.peak_rss_kib.max(u.peak_rss_kib);
        }
    }
    merged.scrape = super::scraped::add_up(rounds.iter().filter_map(|r| r.scrape.as_ref()));
    Some(merged)
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

/// Waits after publishing until every reader is done, every delivery owed
/// (`expected`) arrived (a queue group's members never know they are
/// done), deliveries stall for `idle`, or the deadline passes.
fn wait_for_deliveries<T>(
    shared: &Shared,
    idle: Duration,
    expected: u64,
    readers: &[thread::JoinHandle<T>],
) {
    let (mut seen, mut since) = (shared.progress.load(Relaxed), Instant::now());
    while Instant::now() < shared.deadline && !readers.iter().all(|r| r.is_finished()) {
        let now = shared.progress.load(Relaxed);
        if now >= expected {
            return;
        }
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= idle {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round of `fanout 1->10` on nats-server at `per_s` delivered/s, the
    /// broker peaking at `peak` KiB.
    fn round(per_s: f64, peak: u64) -> RunResult {
        let spec = FlowSpec::fanout(1, 10, 100, 64);
        let target = Target::for_tests(crate::driver::Kind::Nats);
        let mut r = target.result(spec.workload, spec.case.clone(), spec.params());
        r.seconds = 1000.0 / per_s;
        r.flow = Some(Flow {
            published_per_s: per_s / 10.0,
            delivered_per_s: per_s,
            published: 100,
            expected: 1000,
            delivered: 1000,
            ..Flow::default()
        });
        r.broker_usage = Some(crate::result::BrokerUsage {
            pid: per_s as u32,
            peak_rss_kib: peak,
            rss_kib: peak / 2,
            ..Default::default()
        });
        r.params.rounds = Some(3);
        r
    }

    #[test]
    fn rounds_report_the_median_round_and_the_largest_peak_rss() {
        let rounds = [round(2e6, 300), round(1e6, 900), round(3e6, 100)];
        let m = merge_rounds(&rounds).expect("three rounds");
        let f = m.flow.as_ref().expect("flow");
        assert_eq!(f.delivered_per_s, 2e6, "the middle one of three");
        assert_eq!((f.published_per_s, m.seconds), (2e5, 1000.0 / 2e6));
        assert_eq!((f.lost, f.cut, f.delivered), (0, 0, 1000));
        assert_eq!((m.params.rounds, m.params.round), (Some(3), None));
        assert_eq!(m.params.subscribers, Some(10));
        let u = m.broker_usage.as_ref().expect("usage");
        assert_eq!((u.pid, u.rss_kib), (2_000_000, 150), "the median round's");
        assert_eq!(u.peak_rss_kib, 900, "the largest of any round");
        assert!(m.errors.is_empty());

        // An even count takes the lower middle round; a round that measured
        // nothing counts as 0 and carries its error.
        let mut failed = round(0.0, 0);
        (failed.flow, failed.broker_usage) = (None, None);
        failed.errors.push("nats-server exited at start-up".into());
        let m = merge_rounds(&[round(4e6, 10), failed, round(5e6, 10), round(3e6, 10)])
            .expect("four rounds");
        assert_eq!(m.flow.as_ref().map(|f| f.delivered_per_s), Some(3e6));
        assert_eq!(m.params.rounds, Some(4));
        assert_eq!(m.errors, ["round 2: nats-server exited at start-up"]);
        let m = merge_rounds(&[round(4e6, 10), round(5e6, 10)]).expect("two rounds");
        assert_eq!(m.flow.as_ref().map(|f| f.delivered_per_s), Some(4e6));

        // One round is itself; none is nothing.
        let one = merge_rounds(&rounds[..1]).expect("one round");
        assert_eq!(one.params.rounds, Some(1));
        assert_eq!(one.flow.as_ref().map(|f| f.delivered_per_s), Some(2e6));
        assert!(merge_rounds(&[]).is_none());
    }

    #[test]
    fn a_loss_in_any_round_shows_in_the_merged_result() {
        // The fastest round lost messages and had subscribers cut; the
        // median round was clean.
        let mut lossy = round(3e6, 100);
        let f = lossy.flow.as_mut().expect("flow");
        (f.lost, f.cut, f.delivered, f.duplicates, f.gaps) = (30, 2, 970, 1, 4);
        lossy.errors.push("30 deliveries missing when the run ended".into());
        let mut dropped = round(1e6, 100);
        dropped.flow.as_mut().expect("flow").broker_dropped = 7;
        let m = merge_rounds(&[round(2e6, 100), dropped, lossy]).expect("three rounds");
        let f = m.flow.as_ref().expect("flow");
        assert_eq!(f.delivered_per_s, 2e6);
        assert_eq!((f.lost, f.cut, f.duplicates, f.gaps, f.broker_dropped), (30, 2, 1, 4, 7));
        assert_eq!(m.errors, ["round 3: 30 deliveries missing when the run ended"]);

        // A cut without a recorded error shows all the same.
        let mut quiet = round(1e6, 100);
        quiet.flow.as_mut().expect("flow").cut = 1;
        let m = merge_rounds(&[round(2e6, 100), round(3e6, 100), quiet]).expect("three rounds");
        assert_eq!(m.flow.as_ref().map(|f| (f.delivered_per_s, f.cut)), Some((2e6, 1)));
    }

    #[test]
    fn expected_counts_what_was_sent() {
        // Every subscriber of the topic is owed what both publishers sent.
        assert_eq!(FlowSpec::fanout(2, 3, 100, 64).expected(&[5, 7]), 36);
        // Each subscriber is owed only its own publisher's messages.
        assert_eq!(FlowSpec::pairs(2, 100, 64).expected(&[5, 7]), 12);
        assert_eq!(FlowSpec::pairs(2, 100, 64).expected(&[0, 0]), 0);
    }

    #[test]
    fn owed_by_topic_and_by_group() {
        let spec = crate::workload::routing::queue(3, 100, 64);
        let owed = spec.owed(&[40]);
        assert_eq!(owed, Owed { each: vec![None; 3], groups: vec![40], total: 40 });
        // 6 topics, 100 messages: topics 0-3 get 17 each, 4-5 get 16; each
        // connection has every other topic.
        let spec = crate::workload::routing::topics(2, 3, 100, 64);
        assert_eq!(spec.owed(&[100]).each, [Some(50), Some(50)]);
        assert_eq!(spec.owed(&[7]).total, 7);
        assert_eq!(spec.contiguous(), [false, false], "some of the publisher's topics");
        assert_eq!(FlowSpec::fanout(2, 3, 10, 64).contiguous(), [true; 3]);
        assert_eq!(FlowSpec::pairs(2, 10, 64).contiguous(), [true; 2]);
        let wildcard = crate::workload::routing::wildcard(2, 1000, 10, 64);
        assert_eq!(wildcard.contiguous(), [true; 2]);
        assert_eq!(wildcard.owed(&[10]).each, [Some(10), Some(10)]);
    }

    #[test]
    fn shortfalls_are_lost_and_messages_two_members_got_are_duplicates() {
        let spec = FlowSpec::fanout(1, 2, 10, 64);
        let out = ReaderOutcome { received: vec![(0, 10), (1, 7)], ..Default::default() };
        let f = delivery_figures(&spec, &[10], &out);
        assert_eq!((f.published, f.expected, f.delivered, f.lost), (10, 20, 17, 3));

        let spec = crate::workload::routing::queue(2, 10, 64);
        let stamp = |seq| Stamp { publisher: 0, seq, sent_ns: 0, intended_ns: 0 };
        let (mut a, mut b) = (Seen::new(1, 10), Seen::new(1, 10));
        (0..6).for_each(|seq| assert!(a.insert(&stamp(seq))));
        (5..9).for_each(|seq| assert!(b.insert(&stamp(seq))));
        let mut out = ReaderOutcome { groups: vec![(a, 0)], ..Default::default() };
        out.absorb(ReaderOutcome { groups: vec![(b, 0)], ..Default::default() });
        let f = delivery_figures(&spec, &[10], &out);
        // 0-8 arrived (5 at both members), 9 at none.
        assert_eq!((f.expected, f.delivered, f.lost, f.duplicates), (10, 9, 1, 1));
        // A group none of whose members reported owes everything.
        let f = delivery_figures(&spec, &[10], &ReaderOutcome::default());
        assert_eq!((f.delivered, f.lost), (0, 10));
    }
}
