//! The other nodes as this node sees them: their interest (in the view's
//! index, with each node as a holder), the frame being filled for each,
//! and what arrived from each.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use slab::Slab;

use super::{
    interest::{Interest, Total},
    names::Names,
    wire::{self, FrameHeader, NodeId, Record},
};

/// One other node, as long as it counts.
#[derive(Debug)]
pub(crate) struct Peer {
    name: String,
    incarnation: u64,
    /// Its inbox channel, which this run of it reads.
    inbox: String,
    /// The largest message its clients accept.
    max_frame: u32,
    /// The last frame or announcement from this run.
    last_seen: Instant,
    /// Its interest sequence this node applied up to.
    applied_seq: u64,
    /// Its interest as known here, by snapshot field ([`Names::field`]):
    /// what leaves the view when it goes.
    items: HashMap<Box<str>, u32>,
    /// While its snapshot is read: the deltas that arrived meanwhile,
    /// applied after the snapshot. `None` when no read is under way.
    loading: Option<Vec<Delta>>,
    /// Its sequence ran ahead of what was applied: read the snapshot again.
    stale: bool,
    /// Redis said in a row that nobody reads its inbox.
    unreceived: u32,
    out: OutPath,
    /// Frames and messages seen from it: the next `path_seq` and message
    /// count, to count what got lost.
    in_frames: u64,
    in_msgs: u64,
    /// Bytes of its path to this node taken in (delivered, dropped or
    /// lost on the way), and the limit last granted it: the flow control.
    consumed: u64,
    granted: Option<u64>,
}

/// An interest change a peer announced, owned while its snapshot loads.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub seq: u64,
    pub pattern: Box<str>,
    pub group: Option<Box<str>>,
    pub value: u32,
}

/// The frame being filled for one peer, and the path's counts.
#[derive(Debug, Default)]
struct OutPath {
    open: BytesMut,
    open_msgs: u64,
    frames: u64,
    msgs: u64,
    /// Bytes of the frames closed on this path: the next frame's
    /// `bytes_before`.
    bytes: u64,
    /// Bytes of the frames sent, and how far the peer lets this node go.
    sent: u64,
    credit: u64,
    /// Since when frames wait for credit that does not come.
    stalled_since: Option<Instant>,
}

/// Bytes a node may send on a new path before its receiver said anything:
/// enough for a few full frames, small next to any receiver's queue.
pub(crate) const INITIAL_CREDIT: u64 = 256 << 10;

/// Every peer, by holder index (its key here) and by name.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    slab: Slab<Peer>,
    by_name: HashMap<String, usize>,
    /// Runs known to be over, newest last: their late frames and
    /// announcements do not bring them back.
    gone_runs: std::collections::VecDeque<(String, u64)>,
    /// Messages and bytes of the open frames dropped with peers since the
    /// bridge last asked ([`Self::take_dropped`]).
    dropped: (u64, usize),
    /// Their interest: holder = peer key.
    pub interest: Interest,
}

/// What became of a frame or an announcement from a peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A peer this node knows.
    Known(usize),
    /// New (or a new run of a known name, which replaced the old one):
    /// read its snapshot.
    New(usize),
    /// A run this node knows to be over (it said goodbye, a newer run
    /// replaced it, or nobody reads its inbox), or, for a frame, another
    /// run than the one known: ignored.
    Stale,
}

/// Whether a sign of life may make or replace a peer: an announcement may,
/// a frame may only make one for a name not known at all (in sharded mode
/// a frame can overtake the hello of its run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sign {
    Announcement,
    Frame,
}

/// Most other nodes this node keeps track of.
pub(crate) const MAX_PEERS: usize = 1024;

/// Most runs remembered as over.
const GONE_RUNS: usize = 64;

impl Peer {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn max_frame(&self) -> u32 {
        self.max_frame
    }

    pub(crate) fn needs_load(&self) -> bool {
        self.stale && self.loading.is_none()
    }
}

impl Peers {
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn get(&self, key: usize) -> Option<&Peer> {
        self.slab.get(key)
    }

    pub(crate) fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(k, _)| k).collect()
    }

    /// Notes a sign of life from `node`; a new name or a new run of a
    /// known one gets a fresh entry (the old run's interest leaves first,
    /// through `gone`).
    pub(crate) fn seen(
        &mut self,
        names: &Names,
        (node, sign): (NodeId<'_>, Sign),
        max_frame: u32,
        now: Instant,
        gone: &mut impl FnMut(Total, &str, Option<&str>),
    ) -> Seen {
        if self.gone_runs.iter().any(|(n, inc)| n == node.name && *inc == node.incarnation) {
            return Seen::Stale;
        }
        if let Some(&key) = self.by_name.get(node.name) {
            let peer = &mut self.slab[key];
            if peer.incarnation == node.incarnation {
                peer.last_seen = now;
                if max_frame > 0 {
                    peer.max_frame = max_frame;
                }
                return Seen::Known(key);
            }
            if sign == Sign::Frame {
                return Seen::Stale;
            }
            self.remove(key, true, gone);
        }
        if self.slab.len() >= MAX_PEERS {
            // Bounded whatever shows up on Redis: a node past this many
            // is not taken in (and counted as stale by the caller).
            return Seen::Stale;
        }
        let peer = Peer {
            name: node.name.to_string(),
            incarnation: node.incarnation,
            inbox: names.inbox(node.name, node.incarnation),
            max_frame,
            last_seen: now,
            applied_seq: 0,
            items: HashMap::new(),
            loading: None,
            stale: true,
            unreceived: 0,
            out: OutPath { credit: INITIAL_CREDIT, ..OutPath::default() },
            in_frames: 0,
            in_msgs: 0,
            consumed: 0,
            granted: None,
        };
        let key = self.slab.insert(peer);
        self.by_name.insert(node.name.to_string(), key);
        Seen::New(key)
    }

    /// Forgets a peer: its interest leaves the view (each total that
    /// changes goes to `gone`) and its open frame is dropped; returns the
    /// messages that frame held.
    pub(crate) fn remove(
        &mut self,
        key: usize,
        over: bool,
        gone: &mut impl FnMut(Total, &str, Option<&str>),
    ) {
        let Some(peer) = self.slab.try_remove(key) else { return };
        if self.by_name.get(&peer.name) == Some(&key) {
            self.by_name.remove(&peer.name);
        }
        if over {
            if self.gone_runs.len() == GONE_RUNS {
                self.gone_runs.pop_front();
            }
            self.gone_runs.push_back((peer.name.clone(), peer.incarnation));
        }
        self.dropped.0 += peer.out.open_msgs;
        self.dropped.1 += peer.out.open.len();
        for (field, _) in peer.items {
            let Some((pattern, group)) = Names::parse_field(&field) else { continue };
            let total = match group {
                None => self.interest.set_plain(key, pattern, false),
                Some(group) => self.interest.set_members(key, pattern, group, 0),
            };
            if let Some(total) = total {
                gone(total, pattern, group);
            }
        }
        if self.slab.is_empty() {
            self.slab.shrink_to_fit();
        }
    }

    /// Messages and bytes of the open frames dropped with peers since the
    /// last call.
    pub(crate) fn take_dropped(&mut self) -> (u64, usize) {
        std::mem::take(&mut self.dropped)
    }

    /// Peer `key`, if it is still run `incarnation`: what Redis says about
    /// a frame concerns the run it was for.
    fn run_mut(&mut self, key: usize, incarnation: u64) -> Option<&mut Peer> {
        self.slab.get_mut(key).filter(|p| p.incarnation == incarnation)
    }

    /// The key of the peer named `name`, if it is this run.
    pub(crate) fn key_of(&self, node: NodeId<'_>) -> Option<usize> {
        let key = *self.by_name.get(node.name)?;
        (self.slab[key].incarnation == node.incarnation).then_some(key)
    }

    /// Peers silent since `deadline`.
    pub(crate) fn silent_since(&self, deadline: Instant) -> Vec<usize> {
        self.slab.iter().filter(|(_, p)| p.last_seen < deadline).map(|(k, _)| k).collect()
    }

    /// Peers whose snapshot must be read.
    pub(crate) fn to_load(&self) -> Vec<usize> {
        self.slab.iter().filter(|(_, p)| p.needs_load()).map(|(k, _)| k).collect()
    }

    /// Applies one delta from peer `key`, in sequence; a gap marks it stale.
    /// While its snapshot loads, the delta waits.
    pub(crate) fn delta(
        &mut self,
        key: usize,
        delta: Delta,
        changed: &mut impl FnMut(Total, &str, Option<&str>),
    ) {
        let peer = &mut self.slab[key];
        if let Some(waiting) = &mut peer.loading {
            // Bounded: a peer that changes this much while one read is
            // under way is read again.
            if waiting.len() < MAX_WAITING_DELTAS {
                waiting.push(delta);
            } else {
                peer.stale = true;
            }
            return;
        }
        if delta.seq <= peer.applied_seq {
            return;
        }
        if delta.seq != peer.applied_seq + 1 {
            peer.stale = true;
            return;
        }
        self.apply(key, &delta, changed);
    }

    fn apply(
        &mut self,
        key: usize,
        d: &Delta,
        changed: &mut impl FnMut(Total, &str, Option<&str>),
    ) {
        let peer = &mut self.slab[key];
        peer.applied_seq = d.seq;
        let field = Names::field(&d.pattern, d.group.as_deref());
        if d.value == 0 {
            peer.items.remove(field.as_str());
        } else {
            peer.items.insert(field.into(), d.value);
        }
        let total = match &d.group {
            None => self.interest.set_plain(key, &d.pattern, d.value > 0),
            Some(group) => self.interest.set_members(key, &d.pattern, group, d.value),
        };
        if let Some(total) = total {
            changed(total, &d.pattern, d.group.as_deref());
        }
    }

    /// The header of a frame from peer `key` says its interest is at
    /// `seq`: if this node applied less, it missed something.
    pub(crate) fn check_seq(&mut self, key: usize, seq: u64) {
        let peer = &mut self.slab[key];
        if peer.loading.is_none() && peer.applied_seq < seq {
            peer.stale = true;
        }
    }

    /// A snapshot read starts: deltas wait from now on.
    pub(crate) fn start_load(&mut self, key: usize) {
        if let Some(peer) = self.slab.get_mut(key) {
            // A read already under way keeps the deltas it buffered.
            peer.loading.get_or_insert_with(Vec::new);
            peer.stale = false;
        }
    }

    /// The snapshot read for peer `key` came back (`None`: it failed, or
    /// the key was gone): the view takes its content, then the deltas that
    /// waited.
    pub(crate) fn finish_load(
        &mut self,
        key: usize,
        snapshot: Option<Snapshot>,
        changed: &mut impl FnMut(Total, &str, Option<&str>),
    ) -> bool {
        let Some(peer) = self.slab.get_mut(key) else { return false };
        let waiting = peer.loading.take().unwrap_or_default();
        let Some(snapshot) = snapshot.filter(|s| s.incarnation == peer.incarnation) else {
            peer.stale = true;
            return false;
        };
        if snapshot.seq < peer.applied_seq {
            // Older than what is applied (a second read that came back
            // late): the view is ahead already.
            for delta in waiting {
                self.delta(key, delta, changed);
            }
            return true;
        }
        let old = std::mem::take(&mut peer.items);
        for field in old.keys() {
            if !snapshot.items.contains_key(field) {
                let Some((pattern, group)) = Names::parse_field(field) else { continue };
                let delta = Delta {
                    seq: 0,
                    pattern: pattern.into(),
                    group: group.map(Into::into),
                    value: 0,
                };
                self.apply_untracked(key, &delta, changed);
            }
        }
        self.slab[key].items = old;
        for (field, &value) in &snapshot.items {
            let Some((pattern, group)) = Names::parse_field(field) else { continue };
            let delta =
                Delta { seq: 0, pattern: pattern.into(), group: group.map(Into::into), value };
            self.apply_untracked(key, &delta, changed);
        }
        let peer = &mut self.slab[key];
        peer.items = snapshot.items;
        peer.applied_seq = snapshot.seq;
        for delta in waiting {
            self.delta(key, delta, changed);
        }
        true
    }

    /// Applies a value without touching the sequence (a snapshot's).
    fn apply_untracked(
        &mut self,
        key: usize,
        d: &Delta,
        changed: &mut impl FnMut(Total, &str, Option<&str>),
    ) {
        let seq = self.slab[key].applied_seq;
        self.apply(key, d, changed);
        self.slab[key].applied_seq = seq;
    }

    /// Counts a frame from peer `key`: returns the frames and messages
    /// lost before it on the path.
    pub(crate) fn count_in(&mut self, key: usize, h: &FrameHeader<'_>) -> (u64, u64) {
        let peer = &mut self.slab[key];
        let lost = if peer.in_frames == 0 && peer.in_msgs == 0 {
            (0, 0)
        } else {
            (h.path_seq.saturating_sub(peer.in_frames), h.msgs_before.saturating_sub(peer.in_msgs))
        };
        peer.in_frames = h.path_seq.saturating_add(1);
        peer.in_msgs = h.msgs_before;
        lost
    }

    /// Counts a message received from peer `key`.
    pub(crate) fn count_in_msg(&mut self, key: usize) {
        let peer = &mut self.slab[key];
        peer.in_msgs = peer.in_msgs.saturating_add(1);
    }

    /// Appends a record to peer `key`'s open frame, starting one if
    /// needed. Returns the bytes the frame grew by.
    pub(crate) fn append(
        &mut self,
        key: usize,
        me: NodeId<'_>,
        seq: u64,
        record: &Record<'_>,
    ) -> usize {
        let peer = &mut self.slab[key];
        let path = &mut peer.out;
        let before = path.open.len();
        if path.open.is_empty() {
            let header = FrameHeader {
                origin: me,
                in_path: true,
                to_incarnation: peer.incarnation,
                path_seq: path.frames,
                msgs_before: path.msgs,
                bytes_before: path.bytes,
                interest_seq: seq,
            };
            path.open.reserve(wire::header_len(me.name) + record.encoded_len());
            wire::put_header(&mut path.open, &header);
        }
        record.encode(&mut path.open);
        if matches!(record, Record::Message(_)) {
            path.open_msgs += 1;
        }
        path.open.len() - before
    }

    /// A frame aside for peer `key` granting it `limit`: its channel and
    /// bytes.
    pub(crate) fn credit_frame(
        &self,
        key: usize,
        me: NodeId<'_>,
        limit: u64,
    ) -> Option<(String, u64, Bytes)> {
        let peer = self.slab.get(key)?;
        let header = FrameHeader {
            origin: me,
            in_path: false,
            to_incarnation: peer.incarnation,
            path_seq: 0,
            msgs_before: 0,
            bytes_before: 0,
            interest_seq: 0,
        };
        let record = Record::Credit { limit };
        let mut frame = BytesMut::with_capacity(wire::header_len(me.name) + record.encoded_len());
        wire::put_header(&mut frame, &header);
        record.encode(&mut frame);
        Some((peer.inbox.clone(), peer.incarnation, frame.freeze()))
    }

    /// Bytes in peer `key`'s open frame.
    pub(crate) fn open_len(&self, key: usize) -> usize {
        self.slab[key].out.open.len()
    }

    /// Closes peer `key`'s open frame, patching in the interest sequence
    /// it ends at: the frame to send, its channel and its messages.
    pub(crate) fn take_frame(&mut self, key: usize, seq: u64) -> Option<(String, u64, Bytes, u64)> {
        let peer = &mut self.slab[key];
        let path = &mut peer.out;
        if path.open.is_empty() {
            return None;
        }
        let mut frame = path.open.split();
        patch_seq(&mut frame, seq);
        let msgs = std::mem::take(&mut path.open_msgs);
        path.frames += 1;
        path.msgs += msgs;
        path.bytes += frame.len() as u64;
        Some((peer.inbox.clone(), peer.incarnation, frame.freeze(), msgs))
    }

    /// Drops every open frame (Redis is gone); returns the messages they
    /// held.
    pub(crate) fn drop_frames(&mut self) -> u64 {
        let mut msgs = 0;
        for (_, peer) in &mut self.slab {
            peer.out.open.clear();
            msgs += std::mem::take(&mut peer.out.open_msgs);
        }
        msgs
    }

    /// Redis said how many read peer `key`'s inbox: true once nobody has,
    /// twice in a row (the peer is gone).
    pub(crate) fn received(&mut self, (key, incarnation): (usize, u64), readers: i64) -> bool {
        let Some(peer) = self.run_mut(key, incarnation) else { return false };
        if readers > 0 {
            peer.unreceived = 0;
            return false;
        }
        peer.unreceived += 1;
        peer.unreceived >= 2
    }

    /// After a reconnect every peer is read anew, and every path may send
    /// again: credits sent during the outage are lost.
    pub(crate) fn reconnected(&mut self) {
        for (_, peer) in &mut self.slab {
            peer.stale = true;
            peer.out.credit = peer.out.sent.saturating_add(INITIAL_CREDIT);
            peer.out.stalled_since = None;
        }
    }

    /// Whether a frame may go to peer `key` now (`None`: it is gone).
    /// A frame goes while the bytes sent are below the credit, so one
    /// frame larger than the credit still goes.
    pub(crate) fn may_send(
        &mut self,
        (key, incarnation): (usize, u64),
        now: Instant,
    ) -> Option<bool> {
        let path = &mut self.run_mut(key, incarnation)?.out;
        let ok = path.sent < path.credit;
        if !ok {
            path.stalled_since.get_or_insert(now);
        }
        Some(ok)
    }

    /// A frame of `len` bytes goes to peer `key`.
    pub(crate) fn sending(&mut self, (key, incarnation): (usize, u64), len: usize) {
        if let Some(peer) = self.run_mut(key, incarnation) {
            peer.out.sent = peer.out.sent.saturating_add(len as u64);
        }
    }

    /// Peer `key` lets this node send up to `limit`.
    pub(crate) fn credit(&mut self, key: usize, limit: u64) {
        let path = &mut self.slab[key].out;
        if limit > path.credit {
            path.credit = limit;
            path.stalled_since = None;
        }
    }

    /// Paths stalled for credit since before `deadline`: their credit is
    /// taken as lost (a Redis outage, a dropped frame), and they may send
    /// `INITIAL_CREDIT` more. Returns how many.
    pub(crate) fn unstall(&mut self, deadline: Instant) -> u64 {
        let mut n = 0;
        for (_, peer) in &mut self.slab {
            let path = &mut peer.out;
            if path.stalled_since.is_some_and(|since| since < deadline) {
                path.credit = path.sent.saturating_add(INITIAL_CREDIT);
                path.stalled_since = None;
                n += 1;
            }
        }
        n
    }

    /// Peer `key`'s path has been taken in up to `end`: the limit to grant
    /// it now, when half the last grant is used (or none was sent yet).
    pub(crate) fn consumed(&mut self, key: usize, end: u64, window: u64) -> Option<u64> {
        let peer = &mut self.slab[key];
        peer.consumed = peer.consumed.max(end);
        let limit = peer.consumed.saturating_add(window);
        match peer.granted {
            Some(granted) if granted > peer.consumed.saturating_add(window / 2) => None,
            _ => {
                peer.granted = Some(limit);
                Some(limit)
            }
        }
    }
}

/// Most deltas kept for a peer while its snapshot loads.
const MAX_WAITING_DELTAS: usize = 16 << 10;

/// A peer's snapshot, as read from Redis.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub incarnation: u64,
    pub seq: u64,
    pub max_frame: u32,
    pub items: HashMap<Box<str>, u32>,
}

/// Writes the closing interest sequence into a frame's header: the last
/// eight bytes of the header.
fn patch_seq(frame: &mut BytesMut, seq: u64) {
    let name_len = usize::from(frame[4]);
    let at = wire::header_len_for(name_len) - 8;
    frame[at..at + 8].copy_from_slice(&seq.to_le_bytes());
}

/// How long a peer counts without a sign of life.
pub(crate) fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_sub(ttl).unwrap_or(now)
}
