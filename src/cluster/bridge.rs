//! The bridge's state and what it does with each record, from a core or
//! from another node. No I/O here: `redis` moves the bytes, `run` the
//! links to the cores.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    task::Waker,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{
    interest::{Interest, Total},
    names::Names,
    peers::{self, Delta, Peers, Seen, Sign, Snapshot},
    wire::{self, Announce, Frame, NodeId, Presence, WireMessage},
    Backpressure, ClusterConfig, ClusterCounters,
};
use crate::{
    counters::CoreCounters,
    mesh::{
        record::{GroupNames, Handoff, Record},
        staging::Outbound,
    },
    route::Message,
};

/// Who this node is in the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub name: String,
    pub incarnation: u64,
    /// The largest message this node's clients accept.
    pub max_frame: u32,
}

impl Me {
    fn id(&self) -> NodeId<'_> {
        NodeId { name: &self.name, incarnation: self.incarnation }
    }
}

/// A closed frame waiting for the sender.
#[derive(Debug)]
pub(crate) struct Ready {
    pub channel: String,
    /// The run of the peer it goes to: a peer replaced by a new run at the
    /// same key is not charged with the old run's frames.
    pub incarnation: u64,
    pub frame: Bytes,
    pub msgs: u64,
    /// The peer it goes to, which Redis's answer is about.
    pub peer: usize,
}

/// What the sender writes in one round: the snapshot's changes first, then
/// the frames, so that a node reading the snapshot after a frame arrived
/// finds at least what the frame's deltas said.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Write the whole snapshot (after a reconnect, or Redis lost it).
    pub rewrite: Option<Vec<(String, u32)>>,
    /// Changed snapshot fields; 0 deletes the field.
    pub changes: Vec<(String, u32)>,
    /// The meta field's value.
    pub meta: String,
    pub frames: Vec<Ready>,
    pub bytes: usize,
}

/// The bridge.
#[derive(Debug)]
pub(crate) struct Bridge {
    cfg: ClusterConfig,
    me: Me,
    names: Names,
    counters: Arc<ClusterCounters>,
    /// This node's interest, by core.
    local: Interest,
    /// This node's interest sequence: one more per change of `local`'s
    /// totals.
    seq: u64,
    /// Snapshot fields changed since the last round.
    changes: HashMap<String, u32>,
    rewrite: bool,
    peers: Peers,
    /// Records for the cores.
    cores: Outbound,
    core_count: usize,
    connected: bool,
    ready: VecDeque<Ready>,
    /// Bytes in `ready`, in open frames, and sent but not answered.
    ready_bytes: usize,
    open_bytes: usize,
    in_flight: usize,
    /// Core receivers waiting for the window to open (`hold`).
    held: Vec<Waker>,
    /// Wakes the sender: something is ready.
    sender: Option<Waker>,
    /// Wakes the loader: a peer's snapshot must be read.
    loader: Option<Waker>,
    /// When the node last lost Redis (or started without it).
    down_since: Option<Instant>,
    /// The run of another process using this node's name, once warned of.
    twin: Option<u64>,
    /// Credit to grant each peer, sent aside in the next round.
    credits: Vec<(usize, u64)>,
    /// The nodes one message goes to, reused from message to message: the
    /// node, whether for its subscribers without a group, the groups drawn.
    targets: Vec<(usize, bool, Vec<u8>)>,
}

impl Bridge {
    pub(crate) fn new(
        cfg: ClusterConfig,
        me: Me,
        counters: Arc<ClusterCounters>,
        cores: usize,
        staging_limit: usize,
    ) -> Self {
        Self {
            names: Names::new(&cfg.name),
            cfg,
            me,
            counters,
            local: Interest::default(),
            seq: 0,
            changes: HashMap::new(),
            rewrite: true,
            peers: Peers::default(),
            cores: Outbound::new(cores, cores + 1, staging_limit),
            core_count: cores,
            connected: false,
            ready: VecDeque::new(),
            ready_bytes: 0,
            open_bytes: 0,
            in_flight: 0,
            held: Vec::new(),
            sender: None,
            loader: None,
            down_since: Some(Instant::now()),
            targets: Vec::new(),
            credits: Vec::new(),
            twin: None,
        }
    }

    pub(crate) fn cfg(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub(crate) fn me(&self) -> &Me {
        &self.me
    }

    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    pub(crate) fn counters(&self) -> &Arc<ClusterCounters> {
        &self.counters
    }

    /// Gives the staging for core `core` its link.
    pub(crate) fn connect_core(&mut self, core: usize, link: crate::mesh::link::LinkTx) {
        self.cores.connect(core, link);
    }

    /// Lets the forwarders to the cores finish once their staging is sent.
    pub(crate) fn close_cores(&mut self) {
        self.cores.close();
    }

    /// For the forwarder of core `core` ([`Outbound::poll_forward`]).
    pub(crate) fn poll_forward(
        &mut self,
        core: usize,
        cx: &std::task::Context<'_>,
    ) -> std::task::Poll<crate::mesh::staging::Forwarded> {
        self.cores.poll_forward(core, cx)
    }

    /// Whether every core's staging has room; if not, `waker` is woken
    /// when a batch leaves.
    pub(crate) fn cores_have_room(&mut self, waker: &Waker) -> bool {
        let mut all = crate::mesh::coreset::CoreSet::default();
        (0..self.core_count).for_each(|c| all.insert(c));
        if self.cores.has_room(&all) {
            return true;
        }
        self.cores.wait_for_room(waker);
        false
    }

    /// The sender waits for the next round.
    pub(crate) fn park_sender(&mut self, waker: &Waker) {
        self.sender = Some(waker.clone());
    }

    /// The loader waits for a peer to read.
    pub(crate) fn park_loader(&mut self, waker: &Waker) {
        self.loader = Some(waker.clone());
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    fn set(&self, gauge: &std::sync::atomic::AtomicU64, value: u64) {
        CoreCounters::set(gauge, value);
    }

    fn add(&self, counter: &std::sync::atomic::AtomicU64, n: u64) {
        CoreCounters::add(counter, n);
    }

    /// A record from core `core`.
    pub(crate) fn on_core_record(&mut self, core: usize, record: Record<'_>) {
        match record {
            Record::InterestAdd { topic } | Record::InterestRemove { topic } => {
                let on = matches!(record, Record::InterestAdd { .. });
                if let Some(total) = self.local.set_plain(core, topic, on) {
                    self.announce(topic, None, total);
                }
            }
            Record::QueueInterest { topic, group, members } => {
                if let Some(total) = self.local.set_members(core, topic, group, members) {
                    self.announce(topic, Some(group), total);
                }
            }
            Record::Barrier { seq } => self.cores.stage(core, Record::BarrierAck { seq }),
            Record::BarrierAck { .. } => {}
            Record::Publish { topic, reply_to, requester, payload } => {
                let msg = Message { topic, reply_to, headers: None, payload, requester };
                self.forward(msg, true, GroupNames::default());
            }
            Record::HPublish { topic, reply_to, requester, headers, payload } => {
                let msg = Message { topic, reply_to, headers: Some(headers), payload, requester };
                self.forward(msg, true, GroupNames::default());
            }
            Record::QueuePublish { topic, reply_to, requester, headers, handoff, payload } => {
                let msg = Message { topic, reply_to, headers, payload, requester };
                self.forward(msg, !handoff.redrawn, handoff.groups);
            }
        }
    }

    /// This node's total for a pattern changed: every peer hears of it in
    /// its stream, and the next round writes it to the snapshot.
    fn announce(&mut self, pattern: &str, group: Option<&str>, total: Total) {
        self.seq += 1;
        let value = match total {
            Total::Plain(on) => u32::from(on),
            Total::Members(n) => n,
        };
        self.changes.insert(Names::field(pattern, group), value);
        let seq = self.seq;
        let record = match group {
            None => wire::Record::Plain { seq, pattern, on: value > 0 },
            Some(group) => wire::Record::Members { seq, pattern, group, members: value },
        };
        if self.connected {
            for key in self.peers.keys() {
                self.append(key, &record);
            }
        }
        self.wake_sender();
    }

    /// Sends a message on to the nodes that want it: every node with
    /// subscribers without a group (when `plain`), and for each group one
    /// node drawn by its members.
    fn forward(&mut self, msg: Message<'_>, plain: bool, groups: GroupNames<'_>) {
        let Self { peers, targets, .. } = self;
        targets.clear();
        let Some(holders) = peers.interest.lookup(msg.topic) else {
            // The node that wanted it left while the message was on its way.
            let groups = groups.iter().count() as u64;
            CoreCounters::add(&self.counters.queue_undeliverable, groups);
            return;
        };
        {
            if plain {
                targets.extend(holders.plain().iter().map(|&h| (h, true, Vec::new())));
            }
            for group in groups.iter() {
                let Some(h) = holders.draw(group, |n| fastrand::u64(..n)) else {
                    CoreCounters::add(&self.counters.queue_undeliverable, 1);
                    continue;
                };
                match targets.iter_mut().find(|(t, ..)| *t == h) {
                    Some((_, _, names)) => GroupNames::push(names, group),
                    None => {
                        let mut names = Vec::new();
                        GroupNames::push(&mut names, group);
                        targets.push((h, false, names));
                    }
                }
            }
        }
        let targets = std::mem::take(&mut self.targets);
        for (peer, plain, groups) in &targets {
            self.send_to(*peer, msg, *plain, groups);
        }
        self.targets = targets;
        self.wake_sender();
    }

    fn send_to(&mut self, peer: usize, msg: Message<'_>, plain: bool, groups: &[u8]) {
        if !self.connected {
            CoreCounters::add(&self.counters.out_dropped_down, 1);
            return;
        }
        let size = msg.payload.len() + msg.headers.map_or(0, <[u8]>::len);
        let max_frame = self.peers.get(peer).map_or(0, |p| p.max_frame() as usize);
        if max_frame > 0 && size > max_frame {
            CoreCounters::add(&self.counters.out_dropped_too_large, 1);
            return;
        }
        if self.cfg.backpressure == Backpressure::Drop && self.window_full() {
            CoreCounters::add(&self.counters.out_dropped_full, 1);
            return;
        }
        let m = WireMessage {
            topic: msg.topic,
            reply_to: msg.reply_to,
            requester: msg.requester,
            headers: msg.headers,
            payload: msg.payload,
            plain,
            groups,
        };
        self.append(peer, &wire::Record::Message(m));
        CoreCounters::add(&self.counters.out_msgs, 1);
    }

    fn append(&mut self, peer: usize, record: &wire::Record<'_>) {
        let Self { peers, me, seq, .. } = self;
        self.open_bytes += peers.append(peer, me.id(), *seq, record);
        if self.peers.open_len(peer) >= self.cfg.max_batch {
            self.close_frame(peer);
        }
    }

    fn close_frame(&mut self, peer: usize) {
        if let Some((channel, incarnation, frame, msgs)) = self.peers.take_frame(peer, self.seq) {
            self.open_bytes = self.open_bytes.saturating_sub(frame.len());
            self.ready_bytes += frame.len();
            self.ready.push_back(Ready { channel, incarnation, frame, msgs, peer });
        }
    }

    /// Whether the bytes on their way to Redis reached `out_window`.
    pub(crate) fn window_full(&self) -> bool {
        self.connected && self.ready_bytes + self.open_bytes + self.in_flight >= self.cfg.out_window
    }

    /// A core receiver waits for the window (`hold`).
    pub(crate) fn hold(&mut self, waker: &Waker) {
        if !self.held.iter().any(|w| w.will_wake(waker)) {
            self.held.push(waker.clone());
        }
    }

    fn release_held(&mut self) {
        if !self.window_full() {
            for w in self.held.drain(..) {
                w.wake();
            }
        }
        self.update_window_gauge();
    }

    fn update_window_gauge(&self) {
        let bytes = self.ready_bytes + self.open_bytes + self.in_flight;
        self.set(&self.counters.out_window_bytes, bytes as u64);
    }

    pub(crate) fn wake_sender(&mut self) {
        self.update_window_gauge();
        if let Some(w) = self.sender.take() {
            w.wake();
        }
    }

    fn wake_loader(&mut self) {
        if let Some(w) = self.loader.take() {
            w.wake();
        }
    }

    /// What the sender writes next: every open frame closes. `None` when
    /// there is nothing to write or Redis is away.
    pub(crate) fn next_round(&mut self) -> Option<Round> {
        if !self.connected {
            return None;
        }
        for key in self.peers.keys() {
            self.close_frame(key);
        }
        let rewrite = std::mem::take(&mut self.rewrite).then(|| {
            // A new sequence: peers that read a partial or older snapshot
            // see they are behind and read this one.
            self.seq += 1;
            self.snapshot_items()
        });
        if rewrite.is_some() {
            self.changes.clear();
        }
        if rewrite.is_none()
            && self.changes.is_empty()
            && self.ready.is_empty()
            && self.credits.is_empty()
        {
            return None;
        }
        let (mut frames, bytes) = self.sendable(Instant::now());
        self.credit_frames(&mut frames);
        if rewrite.is_none() && self.changes.is_empty() && frames.is_empty() {
            return None;
        }
        let changes = self.changes.drain().collect();
        self.ready_bytes -= bytes;
        self.in_flight += bytes;
        let meta = format!("{} {} {}", self.me.incarnation, self.seq, self.me.max_frame);
        Some(Round { rewrite, changes, meta, frames, bytes })
    }

    /// The ready frames whose peer has credit for them, in order per peer;
    /// those of a peer without stay, with every later one of that peer.
    /// Frames for a peer that left are dropped and counted.
    fn sendable(&mut self, now: Instant) -> (Vec<Ready>, usize) {
        let mut blocked: Vec<usize> = Vec::new();
        let mut frames = Vec::new();
        let mut bytes = 0;
        let mut gone = (0, 0);
        for ready in std::mem::take(&mut self.ready) {
            let run = (ready.peer, ready.incarnation);
            let may = if blocked.contains(&ready.peer) {
                Some(false)
            } else {
                self.peers.may_send(run, now)
            };
            match may {
                Some(true) => {
                    self.peers.sending(run, ready.frame.len());
                    bytes += ready.frame.len();
                    frames.push(ready);
                }
                Some(false) => {
                    blocked.push(ready.peer);
                    self.ready.push_back(ready);
                }
                None => {
                    gone.0 += ready.frame.len();
                    gone.1 += ready.msgs;
                }
            }
        }
        self.ready_bytes -= gone.0;
        CoreCounters::add(&self.counters.out_dropped_peer_gone, gone.1);
        (frames, bytes)
    }

    /// The credits due, as frames aside at the front of the round: they
    /// pass while the paths wait, so two nodes waiting for each other's
    /// credit still hear it.
    fn credit_frames(&mut self, frames: &mut Vec<Ready>) {
        let me = self.me.id();
        let aside: Vec<Ready> = self
            .credits
            .drain(..)
            .filter_map(|(peer, limit)| {
                let (channel, incarnation, frame) = self.peers.credit_frame(peer, me, limit)?;
                Some(Ready { channel, incarnation, frame, msgs: 0, peer })
            })
            .collect();
        frames.splice(0..0, aside);
    }

    fn snapshot_items(&self) -> Vec<(String, u32)> {
        self.local.totals().map(|(p, g, n)| (Names::field(p, g), n)).collect()
    }

    /// Redis answered a round: `readers` per frame.
    /// `kept`: the snapshot was there to change; else Redis lost it and it
    /// is written whole next.
    pub(crate) fn round_done(&mut self, round: &Round, (kept, readers): (bool, &[i64])) {
        if !kept {
            tracing::warn!("cluster: Redis lost this node's snapshot; writing it again");
            self.rewrite = true;
        }
        let c = Arc::clone(&self.counters);
        self.in_flight = self.in_flight.saturating_sub(round.bytes);
        self.add(&c.out_frames, round.frames.len() as u64);
        self.add(&c.out_bytes, round.bytes as u64);
        if round.rewrite.is_some() || !round.changes.is_empty() {
            self.add(&c.snapshot_writes, 1);
        }
        let mut gone = Vec::new();
        for (ready, &n) in round.frames.iter().zip(readers) {
            if n <= 0 {
                self.add(&c.out_unreceived, 1);
            }
            let run = (ready.peer, ready.incarnation);
            if self.peers.received(run, n) && !gone.contains(&ready.peer) {
                gone.push(ready.peer);
            }
        }
        for key in gone {
            // Not over for sure: it may be reconnecting, and its next
            // announcement brings it back.
            if let Some(p) = self.peers.get(key) {
                tracing::info!(node = p.name(), "cluster node gone: nobody reads its inbox");
            }
            self.forget_peer(key, false);
        }
        self.release_held();
    }

    /// A round failed: its frames are lost with the connection.
    pub(crate) fn round_failed(&mut self, round: &Round) {
        self.in_flight = self.in_flight.saturating_sub(round.bytes);
        let msgs: u64 = round.frames.iter().map(|r| r.msgs).sum();
        self.add(&self.counters.out_dropped_down, msgs);
        self.release_held();
    }

    /// Bytes from this node's inbox: a frame from another node.
    /// A frame the cores had no room for: its messages are dropped (the
    /// caller counted them), the rest of it applies, and its bytes count
    /// as taken in.
    pub(crate) fn skip_frame(&mut self, bytes: &[u8], now: Instant) {
        self.take_frame(bytes, now, false);
    }

    pub(crate) fn on_frame(&mut self, bytes: &[u8], now: Instant) {
        self.take_frame(bytes, now, true);
    }

    fn take_frame(&mut self, bytes: &[u8], now: Instant, deliver: bool) {
        let c = Arc::clone(&self.counters);
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(error = %e, "a frame from Redis did not decode");
                self.add(&c.in_dropped_malformed, 1);
                return;
            }
        };
        let h = frame.header;
        if h.origin.name == self.me.name || h.to_incarnation != self.me.incarnation {
            self.add(&c.in_dropped_stale, 1);
            return;
        }
        self.add(&c.in_frames, 1);
        let Some(key) = self.peer_seen((h.origin, Sign::Frame), 0, now) else {
            self.add(&c.in_dropped_stale, 1);
            return;
        };
        if h.in_path {
            let (lost_frames, lost_msgs) = self.peers.count_in(key, &h);
            self.add(&c.in_lost_frames, lost_frames);
            self.add(&c.in_lost_msgs, lost_msgs);
        }
        for record in frame.records() {
            match record {
                Ok(wire::Record::Message(m)) => {
                    self.peers.count_in_msg(key);
                    if deliver {
                        self.add(&c.in_msgs, 1);
                        self.deliver(&m);
                    }
                }
                Ok(wire::Record::Credit { limit }) => {
                    self.peers.credit(key, limit);
                    self.wake_sender();
                }
                Ok(wire::Record::Plain { seq, pattern, on }) => {
                    let d =
                        Delta { seq, pattern: pattern.into(), group: None, value: u32::from(on) };
                    self.peer_delta(key, d);
                }
                Ok(wire::Record::Members { seq, pattern, group, members }) => {
                    let d = Delta {
                        seq,
                        pattern: pattern.into(),
                        group: Some(group.into()),
                        value: members,
                    };
                    self.peer_delta(key, d);
                }
                Err(e) => {
                    tracing::debug!(error = %e, from = h.origin.name, "a record from Redis did not decode");
                    self.add(&c.in_dropped_malformed, 1);
                }
            }
        }
        if h.in_path {
            self.peers.check_seq(key, h.interest_seq);
            let end = h.bytes_before.saturating_add(bytes.len() as u64);
            if let Some(limit) = self.peers.consumed(key, end, self.grant()) {
                match self.credits.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, l)) => *l = (*l).max(limit),
                    None => self.credits.push((key, limit)),
                }
                self.wake_sender();
            }
        }
        self.after_peer_change();
    }

    /// The bytes each peer may have on its way to this node: the inbound
    /// queue shared among the peers, so that together they do not overfill
    /// it.
    fn grant(&self) -> u64 {
        // Half a share: a sender may start one frame just below its limit,
        // and a new peer may arrive before the others' grants shrink.
        let share = self.cfg.in_queue / self.peers.len().max(1) / 2;
        share.max(2 * self.cfg.max_batch) as u64
    }

    /// A peer showed a sign of life; a new one is read from its snapshot.
    fn peer_seen(
        &mut self,
        (node, sign): (NodeId<'_>, Sign),
        max_frame: u32,
        now: Instant,
    ) -> Option<usize> {
        let mut changes = Vec::new();
        let seen = self.peers.seen(&self.names, (node, sign), max_frame, now, &mut |t, p, g| {
            changes.push((t, p.to_string(), g.map(str::to_string)))
        });
        self.tell_cores(changes);
        self.count_dropped_with_peers();
        match seen {
            Seen::Known(key) => Some(key),
            Seen::New(key) => {
                self.add(&self.counters.peers_joined, 1);
                tracing::info!(node = node.name, "cluster node joined");
                Some(key)
            }
            Seen::Stale => None,
        }
    }

    /// The open frames dropped with peers leave the window, counted.
    fn count_dropped_with_peers(&mut self) {
        let (msgs, bytes) = self.peers.take_dropped();
        self.open_bytes = self.open_bytes.saturating_sub(bytes);
        CoreCounters::add(&self.counters.out_dropped_peer_gone, msgs);
    }

    fn peer_delta(&mut self, key: usize, delta: Delta) {
        let mut changes = Vec::new();
        self.peers.delta(key, delta, &mut |t, p, g| {
            changes.push((t, p.to_string(), g.map(str::to_string)))
        });
        self.tell_cores(changes);
    }

    /// The view's totals changed: the cores hear it as from one more core.
    fn tell_cores(&mut self, changes: Vec<(Total, String, Option<String>)>) {
        for (total, pattern, group) in changes {
            let record = match (total, group.as_deref()) {
                (Total::Plain(true), _) => Record::InterestAdd { topic: &pattern },
                (Total::Plain(false), _) => Record::InterestRemove { topic: &pattern },
                (Total::Members(members), Some(group)) => {
                    Record::QueueInterest { topic: &pattern, group, members }
                }
                (Total::Members(_), None) => continue,
            };
            self.cores.stage_all(record);
        }
    }

    fn after_peer_change(&mut self) {
        self.set(&self.counters.peers, self.peers.len() as u64);
        self.set(&self.counters.remote_patterns, self.peers.interest.patterns() as u64);
        if !self.peers.to_load().is_empty() {
            self.wake_loader();
        }
    }

    /// A message from another node, for this node's cores: a copy for
    /// each core with subscribers without a group (when it says so), and
    /// for each group one core drawn by its members, which serves the
    /// group and never hands the message on.
    fn deliver(&mut self, m: &WireMessage<'_>) {
        let msg = Message {
            topic: m.topic,
            reply_to: m.reply_to,
            headers: m.headers,
            payload: m.payload,
            requester: m.requester,
        };
        let Self { local, cores, counters, .. } = self;
        let Some(holders) = local.lookup(m.topic) else {
            let groups = GroupNames::from_encoded(m.groups).iter().count() as u64;
            CoreCounters::add(&counters.queue_undeliverable, groups);
            return;
        };
        let mut drawn: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut undeliverable = 0;
        for group in GroupNames::from_encoded(m.groups).iter() {
            match holders.draw(group, |n| fastrand::u64(..n)) {
                Some(core) => match drawn.iter_mut().find(|(c, _)| *c == core) {
                    Some((_, names)) => GroupNames::push(names, group),
                    None => {
                        let mut names = Vec::new();
                        GroupNames::push(&mut names, group);
                        drawn.push((core, names));
                    }
                },
                None => undeliverable += 1,
            }
        }
        if m.plain {
            for &core in holders.plain() {
                cores.stage(core, Record::publish(msg));
            }
        }
        for (core, names) in &drawn {
            let handoff =
                Handoff { groups: GroupNames::from_encoded(names), redrawn: true, no_echo: None };
            cores.stage(*core, Record::queue_publish(msg, handoff));
        }
        if undeliverable > 0 {
            CoreCounters::add(&counters.queue_undeliverable, undeliverable);
        }
    }

    /// Bytes from the control channel.
    pub(crate) fn on_announce(&mut self, bytes: &[u8], now: Instant) {
        let announce = match Announce::decode(bytes) {
            Ok(a) => a,
            Err(_) => {
                self.add(&self.counters.in_dropped_malformed, 1);
                return;
            }
        };
        let p = *announce.presence();
        if p.node.name == self.me.name {
            if p.node.incarnation != self.me.incarnation && self.twin != Some(p.node.incarnation) {
                self.twin = Some(p.node.incarnation);
                tracing::error!(
                    node = p.node.name,
                    "another process runs as this node's name in the cluster: give every node a \
                     name of its own (cluster.node)"
                );
            }
            return;
        }
        match announce {
            Announce::Hello(_) | Announce::Alive(_) => {
                let seen = self.peer_seen((p.node, Sign::Announcement), p.max_frame, now);
                if let Some(key) = seen {
                    self.peers.check_seq(key, p.interest_seq);
                }
            }
            Announce::Bye(_) => {
                if let Some(key) = self.peers.key_of(p.node) {
                    tracing::info!(node = p.node.name, "cluster node left");
                    self.forget_peer(key, true);
                }
            }
        }
        self.after_peer_change();
    }

    /// What this node announces.
    pub(crate) fn presence(&self) -> Presence<'_> {
        Presence { node: self.me.id(), interest_seq: self.seq, max_frame: self.me.max_frame }
    }

    /// Forgets a peer: its interest leaves the cores' view.
    /// `over`: the run is known to have ended (not merely silent), and its
    /// late frames are ignored.
    pub(crate) fn forget_peer(&mut self, key: usize, over: bool) {
        let mut changes = Vec::new();
        self.peers.remove(key, over, &mut |t, p, g| {
            changes.push((t, p.to_string(), g.map(str::to_string)))
        });
        self.count_dropped_with_peers();
        self.add(&self.counters.peers_expired, 1);
        self.tell_cores(changes);
        self.after_peer_change();
    }

    /// Forgets the peers silent for longer than the TTL, and updates how
    /// long Redis has been away.
    pub(crate) fn expire(&mut self, now: Instant) {
        let timeout = Duration::from_millis(self.cfg.command_timeout_ms);
        let unstalled = self.peers.unstall(peers::deadline(now, timeout));
        if unstalled > 0 {
            CoreCounters::add(&self.counters.credit_resets, unstalled);
            self.wake_sender();
        }
        let outage =
            self.down_since.map_or(0, |since| now.duration_since(since).as_millis() as u64);
        self.set(&self.counters.outage_ms, outage);
        let ttl = Duration::from_millis(self.cfg.ttl_ms);
        for key in self.peers.silent_since(peers::deadline(now, ttl)) {
            if let Some(p) = self.peers.get(key) {
                tracing::info!(node = p.name(), "cluster node silent past the TTL; forgotten");
            }
            self.forget_peer(key, false);
        }
    }

    /// A peer's snapshot read begins; returns the key to read and the
    /// peer's name, or `None` when no peer needs one.
    pub(crate) fn next_load(&mut self) -> Option<(usize, String)> {
        let key = *self.peers.to_load().first()?;
        self.peers.start_load(key);
        let name = self.peers.get(key)?.name().to_string();
        Some((key, self.names.snapshot(&name)))
    }

    /// A snapshot read came back; whether the view took it.
    pub(crate) fn loaded(&mut self, key: usize, snapshot: Option<Snapshot>) -> bool {
        let mut changes = Vec::new();
        let applied = self.peers.finish_load(key, snapshot, &mut |t, p, g| {
            changes.push((t, p.to_string(), g.map(str::to_string)))
        });
        if applied {
            self.add(&self.counters.resyncs, 1);
        }
        self.tell_cores(changes);
        self.after_peer_change();
        applied
    }

    /// A peer found in the registry with its snapshot, at join.
    pub(crate) fn joined_from_registry(&mut self, name: &str, snapshot: Snapshot, now: Instant) {
        if name == self.me.name {
            return;
        }
        let node = NodeId { name, incarnation: snapshot.incarnation };
        let Some(key) = self.peer_seen((node, Sign::Announcement), snapshot.max_frame, now) else {
            return;
        };
        self.peers.start_load(key);
        self.loaded(key, Some(snapshot));
    }

    /// Redis is reachable again: the snapshot is written whole, and every
    /// peer is read again.
    pub(crate) fn up(&mut self) {
        self.connected = true;
        self.down_since = None;
        self.set(&self.counters.outage_ms, 0);
        self.rewrite = true;
        self.peers.reconnected();
        self.set(&self.counters.connected, 1);
        self.wake_sender();
    }

    /// Redis went away: what waits for it is dropped and counted, and the
    /// held publishers go on (their copies are dropped from now on).
    pub(crate) fn down(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.down_since = Some(Instant::now());
        let msgs = self.peers.drop_frames() + self.ready.iter().map(|r| r.msgs).sum::<u64>();
        self.ready.clear();
        self.ready_bytes = 0;
        self.open_bytes = 0;
        self.add(&self.counters.out_dropped_down, msgs);
        self.add(&self.counters.disconnects, 1);
        self.set(&self.counters.connected, 0);
        for w in self.held.drain(..) {
            w.wake();
        }
        self.update_window_gauge();
    }

    /// Redis asked to rewrite the snapshot (it lost the key).
    pub(crate) fn rewrite_snapshot(&mut self) {
        self.rewrite = true;
        self.wake_sender();
    }
}

#[cfg(test)]
mod tests;
