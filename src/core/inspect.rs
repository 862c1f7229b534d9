//! Questions from outside the cores (the monitoring port, a reload) and
//! the core's answers. Each core has an inbox; one task of the core takes
//! what arrives there and answers from the core's own state, so nothing
//! outside a core ever reads that state, and the data path takes no lock
//! for it. A question costs the core the time to build its answer, only
//! when one is asked.

use std::{
    collections::HashMap, future::poll_fn, net::SocketAddr, rc::Rc, sync::Arc, task::Poll,
    time::Instant,
};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::{
    closed::ClosedConn,
    shard::Shard,
    slot::{Phase, Slot, Traffic},
};
use crate::auth::Authenticator;
use crate::{
    config::Config,
    counters::{HistogramSnapshot, PENDING_BYTES_BUCKETS},
    route::sublist,
};

/// Questions waiting per core; past this, asking fails at once.
const INBOX: usize = 16;
/// Distinct patterns a core lists in `/subsz`, at most.
pub const MAX_PATTERNS: usize = 100_000;
/// Receivers of one topic a core lists in `/subsz?topic=`, at most.
pub const MAX_RECEIVERS: usize = 10_000;

/// Where an answer goes: any thread may wait on it.
pub(crate) type Reply<T> = tokio::sync::oneshot::Sender<T>;

/// What a core can be asked.
#[derive(Debug)]
pub(crate) enum Query {
    /// Answered at once: the core's tasks run.
    Ping(Reply<()>),
    /// Open connections: the first `keep` by `sort`.
    Conns { sort: SortKey, keep: usize, subs: bool, reply: Reply<Vec<ConnInfo>> },
    /// The newest `keep` closed connections, and how many the core keeps.
    Closed { keep: usize, reply: Reply<(usize, Vec<ClosedConn>)> },
    /// Subscription counts, and who would receive a publish to `topic`.
    Subs { topic: Option<String>, reply: Reply<CoreSubs> },
    /// Bytes queued per connection, as a histogram.
    Pending(Reply<HistogramSnapshot>),
    /// Settings to put in force (already checked by the broker); told
    /// once they are.
    Reload(Box<Reload>, std::sync::mpsc::SyncSender<()>),
}

/// What a reload puts in force on a core.
#[derive(Debug)]
pub(crate) struct Reload {
    /// The settings, merged with those fixed at start.
    pub config: Config,
    /// What new TLS connections are served with from now on; `None` keeps
    /// what the core has (no TLS, or files that did not load).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Who may connect and what they may do, from now on.
    pub auth: Arc<Authenticator>,
}

/// How `/connz` orders open connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// By id, ascending: the order they were accepted on each core.
    #[default]
    Id,
    /// Most bytes queued first.
    Pending,
    /// Most messages queued to it first.
    MsgsOut,
    /// Most messages published first.
    MsgsIn,
    /// Most bytes written to it first.
    BytesOut,
    /// Most bytes read from it first.
    BytesIn,
    /// Longest silent first.
    Idle,
    /// Oldest first.
    Uptime,
}

impl SortKey {
    /// The value to sort by, larger first (ids: smaller first).
    fn value(self, slot: &Slot, now: Instant) -> u64 {
        let t = slot.traffic();
        match self {
            Self::Id => u64::MAX - slot.id(),
            Self::Pending => slot.out().len() as u64,
            Self::MsgsOut => t.msgs_out,
            Self::MsgsIn => t.msgs_in,
            Self::BytesOut => t.bytes_out,
            Self::BytesIn => t.bytes_in,
            Self::Idle => millis(now.saturating_duration_since(slot.last_inbound())),
            Self::Uptime => millis(now.saturating_duration_since(slot.accepted_at())),
        }
    }

    /// Orders two answers as the core ordered its own.
    pub fn compare(self, a: &ConnInfo, b: &ConnInfo) -> std::cmp::Ordering {
        let value = |c: &ConnInfo| match self {
            Self::Id => u64::MAX - c.id,
            Self::Pending => c.pending_bytes as u64,
            Self::MsgsOut => c.traffic.msgs_out,
            Self::MsgsIn => c.traffic.msgs_in,
            Self::BytesOut => c.traffic.bytes_out,
            Self::BytesIn => c.traffic.bytes_in,
            Self::Idle => c.idle_ms,
            Self::Uptime => c.uptime_ms,
        };
        value(b).cmp(&value(a)).then(a.id.cmp(&b.id))
    }
}

/// One open connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnInfo {
    /// Broker-wide id, as sent in `WELCOME`.
    pub id: u64,
    /// The core serving it.
    pub core: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// The name it gave in `HELLO`.
    pub name: Option<String>,
    /// The user it authenticated as, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How it proved who it is: `none`, `token`, `password`, `bearer`,
    /// `jwt` or `tls`.
    pub credential: &'static str,
    /// `handshake`, `open`, `draining` or `closed`.
    pub state: &'static str,
    /// Time since it was accepted, ms.
    pub uptime_ms: u64,
    /// Time since bytes last arrived, ms (to the sweeper's tick).
    pub idle_ms: u64,
    /// Bytes queued for it.
    pub pending_bytes: usize,
    /// Subscriptions it holds.
    pub subscriptions: usize,
    /// Whether it came in on the TLS port.
    pub tls: bool,
    /// The TLS version, once the handshake completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    /// The verified client certificate's subject (RFC 4514), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_subject: Option<String>,
    /// What it sent and received.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Its subscriptions, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subs: Option<Vec<SubInfo>>,
}

/// One subscription.
#[derive(Debug, Clone, Serialize)]
pub struct SubInfo {
    /// The connection's id for it.
    pub sid: u32,
    /// Its topic or pattern.
    pub topic: String,
    /// Its queue group, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Whether it drops rather than disconnects when slow.
    pub lossy: bool,
}

/// One subscription that a publish would reach, with its connection.
#[derive(Debug, Clone, Serialize)]
pub struct SubMatch {
    /// The connection's id.
    pub conn: u64,
    /// The core serving it.
    pub core: usize,
    /// The name the connection gave.
    pub name: Option<String>,
    /// The subscription.
    #[serde(flatten)]
    pub sub: SubInfo,
}

/// One core's subscriptions.
#[derive(Debug, Default)]
pub(crate) struct CoreSubs {
    /// Subscriptions held by its connections.
    pub subscriptions: usize,
    /// Subscriptions per topic or pattern (at most [`MAX_PATTERNS`]).
    pub patterns: HashMap<String, usize>,
    /// Whether some patterns, or receivers past [`MAX_RECEIVERS`], were
    /// left out.
    pub truncated: bool,
    /// Subscriptions a publish to the topic asked about would reach.
    pub matches: Vec<SubMatch>,
}

/// A core's inbox: a bounded queue any thread may put questions in, and
/// the waker of the task that answers them.
#[derive(Debug)]
pub(crate) struct Inbox {
    tx: Sender<Query>,
    rx: Receiver<Query>,
    waker: AtomicWaker,
}

impl Default for Inbox {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(INBOX);
        Self { tx, rx, waker: AtomicWaker::new() }
    }
}

impl Inbox {
    /// Hands `query` to the core; false when its inbox is full.
    pub(crate) fn ask(&self, query: Query) -> bool {
        let sent = self.tx.try_send(query).is_ok();
        self.waker.wake();
        sent
    }

    /// Hands `query` to the core, waiting a moment for room; false when
    /// the core took nothing for that long (it is stuck or gone).
    pub(crate) fn tell(&self, query: Query) -> bool {
        let sent = self.tx.send_timeout(query, std::time::Duration::from_secs(1)).is_ok();
        self.waker.wake();
        sent
    }

    async fn next(&self) -> Query {
        poll_fn(|cx| {
            if let Ok(query) = self.rx.try_recv() {
                return Poll::Ready(query);
            }
            self.waker.register(cx.waker());
            match self.rx.try_recv() {
                Ok(query) => Poll::Ready(query),
                Err(_) => Poll::Pending,
            }
        })
        .await
    }
}

/// The task that answers a core's questions, until it is cancelled at the
/// end of the core.
pub(crate) async fn answer_queries(shard: Rc<Shard>, inbox: Arc<Inbox>) {
    loop {
        let query = inbox.next().await;
        answer(&shard, query);
    }
}

fn answer(shard: &Shard, query: Query) {
    // A reply nobody waits for any more (a timed-out request) is dropped.
    match query {
        Query::Ping(reply) => drop(reply.send(())),
        Query::Conns { sort, keep, subs, reply } => {
            drop(reply.send(conns(shard, sort, keep, subs)))
        }
        Query::Closed { keep, reply } => {
            let st = shard.state.borrow();
            drop(reply.send((st.closed.len(), st.closed.newest(keep))));
        }
        Query::Subs { topic, reply } => drop(reply.send(subs(shard, topic.as_deref()))),
        Query::Pending(reply) => drop(reply.send(pending(shard))),
        Query::Reload(reload, done) => {
            let Reload { config, tls, auth } = *reload;
            shard.set_cfg(config);
            shard.set_auth(auth);
            crate::cmd::recheck_access(shard);
            if let Some(tls) = tls {
                shard.set_tls_config(tls);
            }
            let _ = done.try_send(());
        }
    }
}

fn conns(shard: &Shard, sort: SortKey, keep: usize, with_subs: bool) -> Vec<ConnInfo> {
    let st = shard.state.borrow();
    let now = Instant::now();
    let mut order: Vec<(u64, u64, usize)> =
        st.slots.iter().map(|(key, slot)| (sort.value(slot, now), slot.id(), key)).collect();
    let by = |a: &(u64, u64, usize), b: &(u64, u64, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    if keep < order.len() {
        order.select_nth_unstable_by(keep, by);
        order.truncate(keep);
    }
    order.sort_unstable_by(by);
    let coarse = shard.clock.get();
    order
        .iter()
        .map(|&(_, _, key)| conn_info(shard.core, &st.slots[key], now, coarse, with_subs))
        .collect()
}

fn conn_info(core: usize, slot: &Slot, now: Instant, coarse: Instant, with_subs: bool) -> ConnInfo {
    ConnInfo {
        id: slot.id(),
        core,
        peer: slot.peer(),
        name: slot.name().map(String::from),
        user: slot.user().map(|u| u.to_string()),
        credential: slot.credential().as_str(),
        state: match slot.phase() {
            Phase::Handshake => "handshake",
            Phase::Open => "open",
            Phase::Draining { .. } => "draining",
            Phase::Closed => "closed",
        },
        uptime_ms: millis(now.saturating_duration_since(slot.accepted_at())),
        idle_ms: millis(coarse.max(now).saturating_duration_since(slot.last_inbound())),
        pending_bytes: slot.out().len(),
        subscriptions: slot.sub_count(),
        tls: slot.is_tls(),
        tls_version: slot.tls_version(),
        tls_subject: slot.tls_subject().map(String::from),
        traffic: slot.traffic(),
        subs: with_subs
            .then(|| slot.subscriptions().map(|(sid, sub)| sub_info(sid, sub)).collect()),
    }
}

fn sub_info(sid: u32, sub: &super::slot::SlotSub) -> SubInfo {
    SubInfo {
        sid,
        topic: sub.topic.to_string(),
        queue: sub.queue.as_deref().map(String::from),
        lossy: sub.lossy,
    }
}

fn subs(shard: &Shard, topic: Option<&str>) -> CoreSubs {
    let st = shard.state.borrow();
    let mut out = CoreSubs::default();
    for (_, slot) in st.slots.iter() {
        for (sid, sub) in slot.subscriptions() {
            out.subscriptions += 1;
            if let Some(n) = out.patterns.get_mut(&*sub.topic) {
                *n += 1;
            } else if out.patterns.len() < MAX_PATTERNS {
                out.patterns.insert(sub.topic.to_string(), 1);
            } else {
                out.truncated = true;
            }
            if topic.is_some_and(|t| slot.is_open() && sublist::matches(&sub.topic, t)) {
                if out.matches.len() == MAX_RECEIVERS {
                    out.truncated = true;
                    continue;
                }
                out.matches.push(SubMatch {
                    conn: slot.id(),
                    core: shard.core,
                    name: slot.name().map(String::from),
                    sub: sub_info(sid, sub),
                });
            }
        }
    }
    out
}

fn pending(shard: &Shard) -> HistogramSnapshot {
    let st = shard.state.borrow();
    let mut histogram = HistogramSnapshot::empty(PENDING_BYTES_BUCKETS);
    for (_, slot) in st.slots.iter() {
        histogram.observe(slot.out().len() as u64);
    }
    histogram
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
