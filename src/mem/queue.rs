//! A byte queue made of chunks from the core's [`Memory`]: a connection's
//! pending output, or the input bytes it has read but not yet applied.
//!
//! Frames are appended whole and may span chunks. Each chunk remembers
//! where the first frame starting in it begins, so the queue can find the
//! frame boundary after the bytes already on the wire without reading
//! every length prefix as it writes: that is what lets a closing connection
//! drop what has not started going out and still end on a whole frame.
//!
//! An output queue also carries messages whose body is shared with other
//! subscribers ([`super::splice`]): each goes out between the queue's own
//! bytes at the position it was queued, its header and body gathered into
//! the same `sendmsg`.

use std::{collections::VecDeque, io::IoSlice, ops::Range};

use corecast_proto::{opcode, Msg, LEN_PREFIX};

use super::{
    prefetch,
    splice::{Head, Splice, Splices, HEADER},
    Blob, Charge, ChunkId, Memory, CHUNK,
};

/// No frame starts in this chunk.
const NO_START: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
struct Link {
    id: ChunkId,
    /// Offset of the first frame that starts in this chunk, or `NO_START`.
    first_start: u16,
}

/// A frame to queue: bytes to copy in, or a message in a shared chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Item<'a> {
    Bytes(&'a [u8]),
    /// A frame in two parts, copied in back to back: its head, then its
    /// payload from wherever the publish lies.
    Parts {
        head: &'a [u8],
        payload: &'a [u8],
    },
    /// The subscriber's own header, then a shared body.
    Shared {
        header: [u8; HEADER],
        blob: Blob,
    },
    /// `count` whole shared frames, back to back in one chunk, that
    /// already carry the subscriber's `sid`.
    Frames {
        sid: u32,
        frames: Blob,
        count: u16,
    },
}

impl Item<'_> {
    /// Bytes it takes on the wire.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Parts { head, payload } => head.len() + payload.len(),
            Self::Shared { blob, .. } => HEADER + usize::from(blob.len),
            Self::Frames { frames, .. } => usize::from(frames.len),
        }
    }
}

/// Queued bytes in chunks; see the module docs. `OUTPUT` queues count their
/// bytes in the core's pending-output gauge.
#[derive(Debug, Default)]
pub(crate) struct ChunkQueue<const OUTPUT: bool> {
    chunks: VecDeque<Link>,
    /// Offset of the first queued byte in the first chunk.
    head: usize,
    /// Bytes filled in the last chunk.
    tail: usize,
    /// The last chunk (when there is one), and whether a frame starts in
    /// it: kept here, beside `tail`, so appending and prefetching do not
    /// read the deque's buffer, a cache miss per subscriber in a fan-out.
    last: ChunkId,
    last_has_start: bool,
    /// Own bytes queued (shared messages not included).
    len: usize,
    /// Own bytes ever consumed (wrapping): the position [`Splice::at`]
    /// counts in.
    consumed: u32,
    /// Messages with shared bodies, in order.
    splices: Splices,
    /// Bytes of the first shared message already written.
    sent: usize,
    /// Bytes of shared messages still to write.
    shared_len: usize,
}

impl<const OUTPUT: bool> ChunkQueue<OUTPUT> {
    /// Bytes queued, shared messages included.
    pub(crate) fn len(&self) -> usize {
        self.len + self.shared_len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chunks held, each charged to the budget.
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len() + self.splices.chunks()
    }

    /// Memory this queue keeps from the pool: its own chunks, plus the
    /// shared bodies it still has to send (others may hold those too).
    pub(crate) fn held(&self) -> usize {
        self.chunks() * CHUNK + self.shared_len
    }

    /// Hints the CPU to fetch the line the next frame (or, for a shared
    /// message, the next record) will be written at.
    pub(crate) fn prefetch_tail(&self, mem: &Memory, shared: bool) {
        if shared {
            self.splices.prefetch_tail(mem);
        } else if !self.chunks.is_empty() && self.tail < CHUNK {
            prefetch::line(mem.chunk(self.last)[self.tail..].as_ptr());
        }
    }

    /// Budget bytes appending `len` more bytes would take.
    fn cost_of(&self, len: usize) -> usize {
        let room = if self.chunks.is_empty() { 0 } else { CHUNK - self.tail };
        len.saturating_sub(room).div_ceil(CHUNK) * CHUNK
    }

    /// Appends one frame; false (and nothing appended) when the chunks it
    /// needs cannot be had under `charge`.
    pub(crate) fn push_item(&mut self, mem: &mut Memory, item: Item<'_>, charge: Charge) -> bool {
        match item {
            Item::Bytes(frame) => self.push(mem, frame, charge),
            Item::Parts { head, payload } => self.push_parts(mem, &[head, payload], charge),
            Item::Shared { header, blob } => self.push_shared(mem, Head::Own(header), blob, charge),
            Item::Frames { sid, frames, count } => {
                let at = self.own_end();
                if self.splices.extend_run(mem, at, (sid, frames, count)) {
                    self.count_shared(mem, usize::from(frames.len));
                    return true;
                }
                self.push_shared(mem, Head::Run { sid, count }, frames, charge)
            }
        }
    }

    /// The position in the own byte stream after the last own byte queued.
    fn own_end(&self) -> u32 {
        self.consumed.wrapping_add(self.len as u32)
    }

    /// Appends a record for a message in a shared chunk, taking a reference
    /// to the chunk.
    fn push_shared(&mut self, mem: &mut Memory, head: Head, blob: Blob, charge: Charge) -> bool {
        let splice = Splice { at: self.own_end(), head, blob };
        if !self.splices.push(mem, splice, charge) {
            return false;
        }
        self.count_shared(mem, splice.len());
        true
    }

    fn count_shared(&mut self, mem: &mut Memory, len: usize) {
        self.shared_len += len;
        self.note(mem, len as isize);
    }

    /// Appends one whole frame; false (and nothing appended) when the
    /// chunks it needs cannot be had under `charge`.
    pub(crate) fn push(&mut self, mem: &mut Memory, frame: &[u8], charge: Charge) -> bool {
        self.push_parts(mem, &[frame], charge)
    }

    /// Appends one whole frame given as parts that go back to back; false
    /// (and nothing appended) when the chunks it needs cannot be had under
    /// `charge`.
    #[inline]
    pub(crate) fn push_parts<const N: usize>(
        &mut self,
        mem: &mut Memory,
        parts: &[&[u8]; N],
        charge: Charge,
    ) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        let cost = self.cost_of(len);
        if cost > 0 && !mem.can_take(cost / CHUNK, charge) {
            return false;
        }
        let mut starts_here = true;
        for &part in parts {
            self.copy_in(mem, part, &mut starts_here, charge);
        }
        self.len += len;
        self.note(mem, len as isize);
        true
    }

    /// Copies `src` to the end of the queue, taking chunks as it goes (the
    /// caller checked they can be had); marks where a frame starts at the
    /// first byte copied while `starts_here`.
    fn copy_in(
        &mut self,
        mem: &mut Memory,
        mut src: &[u8],
        starts_here: &mut bool,
        charge: Charge,
    ) {
        while !src.is_empty() {
            if self.chunks.is_empty() || self.tail == CHUNK {
                let Some(id) = mem.take(charge) else {
                    unreachable!("can_take promised the chunks")
                };
                self.chunks.push_back(Link { id, first_start: NO_START });
                (self.last, self.last_has_start, self.tail) = (id, false, 0);
            }
            if std::mem::take(starts_here) && !self.last_has_start {
                let link = self.chunks.back_mut().expect("a chunk was just ensured");
                link.first_start = self.tail as u16;
                self.last_has_start = true;
            }
            let n = (CHUNK - self.tail).min(src.len());
            mem.chunk_mut(self.last)[self.tail..self.tail + n].copy_from_slice(&src[..n]);
            self.tail += n;
            src = &src[n..];
        }
    }

    /// The queued bytes as slices, in the order they go out, as many as
    /// `out` holds; returns how many it filled.
    pub(crate) fn slices<'m>(&self, mem: &'m Memory, out: &mut [IoSlice<'m>]) -> usize {
        let mut n = 0;
        let mut from = 0;
        for i in 0..self.splices.len() {
            let splice = self.splices.get(mem, i);
            let upto = splice.at.wrapping_sub(self.consumed) as usize;
            n = self.own_slices(mem, from..upto, out, n);
            from = upto;
            let skip = if i == 0 { self.sent } else { 0 };
            let header = splice.header_len();
            if skip < header {
                if n == out.len() {
                    return n;
                }
                out[n] = IoSlice::new(&self.splices.header(mem, i)[skip..]);
                n += 1;
            }
            if n == out.len() {
                return n;
            }
            out[n] = IoSlice::new(&mem.blob(splice.blob)[skip.saturating_sub(header)..]);
            n += 1;
        }
        self.own_slices(mem, from..self.len, out, n)
    }

    /// Slices of the own bytes in `range` (offsets from the head) into
    /// `out[n..]`; returns the new count.
    fn own_slices<'m>(
        &self,
        mem: &'m Memory,
        range: Range<usize>,
        out: &mut [IoSlice<'m>],
        mut n: usize,
    ) -> usize {
        let (mut pos, end) = (self.head + range.start, self.head + range.end);
        while pos < end && n < out.len() {
            let (index, off) = (pos / CHUNK, pos % CHUNK);
            let stop = end.min((index + 1) * CHUNK);
            out[n] = IoSlice::new(&mem.chunk(self.chunks[index].id)[off..off + stop - pos]);
            n += 1;
            pos = stop;
        }
        n
    }

    /// Copies every queued byte into `dst` (which must hold them) and empties
    /// the queue. Input queues only: they hold no shared messages.
    pub(crate) fn move_into(&mut self, mem: &mut Memory, dst: &mut [u8]) -> usize {
        debug_assert!(self.splices.is_empty());
        let len = self.len;
        self.read_at(mem, 0, &mut dst[..len]);
        self.clear(mem);
        len
    }

    /// `n` bytes left the front of the queue; chunks emptied and shared
    /// bodies sent go back at once.
    pub(crate) fn consume(&mut self, mem: &mut Memory, n: usize) {
        debug_assert!(n <= self.len());
        self.note(mem, -(n as isize));
        let mut left = n;
        while left > 0 {
            let due = (!self.splices.is_empty())
                .then(|| self.splices.get(mem, 0))
                .map(|s| (s.at.wrapping_sub(self.consumed) as usize, s.len()));
            match due {
                Some((0, whole)) => {
                    let step = left.min(whole - self.sent);
                    self.sent += step;
                    self.shared_len -= step;
                    left -= step;
                    if self.sent == whole {
                        self.sent = 0;
                        self.splices.pop_front(mem);
                    }
                }
                due => {
                    let step = left.min(due.map_or(self.len, |(upto, _)| upto));
                    self.consume_own(mem, step);
                    left -= step;
                }
            }
        }
    }

    /// `n` of the own bytes left the front.
    fn consume_own(&mut self, mem: &mut Memory, n: usize) {
        self.len -= n;
        self.consumed = self.consumed.wrapping_add(n as u32);
        let mut left = n;
        while left > 0 {
            let end = if self.chunks.len() == 1 { self.tail } else { CHUNK };
            let avail = end - self.head;
            if left < avail {
                self.head += left;
                break;
            }
            left -= avail;
            self.pop_front(mem);
        }
        if self.len == 0 {
            self.clear_own(mem);
        }
    }

    fn pop_front(&mut self, mem: &mut Memory) {
        if let Some(link) = self.chunks.pop_front() {
            mem.give(link.id);
        }
        self.head = 0;
    }

    /// Gives every chunk and shared body back.
    pub(crate) fn clear(&mut self, mem: &mut Memory) {
        self.note(mem, -(self.len() as isize));
        self.clear_own(mem);
        self.splices.truncate(mem, 0, |_| {});
        self.sent = 0;
        self.shared_len = 0;
    }

    /// Gives the own chunks back.
    fn clear_own(&mut self, mem: &mut Memory) {
        while !self.chunks.is_empty() {
            self.pop_front(mem);
        }
        self.tail = 0;
        self.len = 0;
    }

    fn note(&self, mem: &mut Memory, delta: isize) {
        if OUTPUT {
            mem.note_pending(delta);
        }
    }

    /// Drops every queued frame that has not started going out, keeping the
    /// rest of the one the socket is in the middle of, so a final frame can
    /// follow on a consistent stream.
    pub(crate) fn drop_unstarted(&mut self, mem: &mut Memory) {
        let keep = self.keep_started(mem, |_| {});
        self.truncate(mem, keep);
    }

    /// Like [`Self::drop_unstarted`], but drops only `MSG` frames, telling
    /// `dropped` each one's sid, and keeps every other frame in order.
    /// Returns how many messages it dropped.
    pub(crate) fn shed_messages(&mut self, mem: &mut Memory, mut dropped: impl FnMut(u32)) -> u64 {
        let mut shed = 0;
        let started = self.keep_started(mem, |sid| {
            dropped(sid);
            shed += 1;
        });
        let mut kept: Vec<(usize, usize)> = Vec::new();
        let mut own_shed = 0;
        let mut at = started;
        while at < self.len {
            let mut head = [0u8; HEADER];
            let got = self.read_at(mem, at, &mut head);
            let frame_len =
                LEN_PREFIX + u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if got == head.len() && head[LEN_PREFIX] == opcode::MSG {
                let sid = &head[Msg::SID_AT..];
                dropped(u32::from_le_bytes([sid[0], sid[1], sid[2], sid[3]]));
                own_shed += 1;
            } else {
                kept.push((at, frame_len));
            }
            at += frame_len;
        }
        if own_shed > 0 {
            let frames: Vec<Vec<u8>> = kept
                .into_iter()
                .map(|(at, len)| {
                    let mut frame = vec![0; len];
                    self.read_at(mem, at, &mut frame);
                    frame
                })
                .collect();
            self.truncate(mem, started);
            for frame in frames {
                // Room was just freed; the reserve covers the rare case it is not.
                self.push(mem, &frame, Charge::Reserve);
            }
        }
        shed + own_shed
    }

    /// Drops the shared messages that have not started going out, telling
    /// `dropped` each one's sid, and returns how many own bytes belong to a
    /// frame already started (none when a shared message is the one
    /// started).
    fn keep_started(&mut self, mem: &mut Memory, mut dropped: impl FnMut(u32)) -> usize {
        let in_progress = self.sent > 0;
        self.splices.truncate(mem, usize::from(in_progress), &mut dropped);
        let mut left = 0;
        if in_progress {
            left = self.splices.cut_first_run(mem, self.sent, &mut dropped) - self.sent;
            if left == 0 {
                // The run was cut right where the socket stands.
                self.splices.pop_front(mem);
                self.sent = 0;
            }
        }
        self.note(mem, left as isize - self.shared_len as isize);
        self.shared_len = left;
        if in_progress {
            0
        } else {
            self.started_len(mem)
        }
    }

    /// Own bytes from the front up to the first frame boundary: the rest of
    /// the frame the socket is in the middle of (0 when it is between
    /// frames).
    fn started_len(&self, mem: &Memory) -> usize {
        let Some(first) = self.chunks.front() else { return 0 };
        if first.first_start != NO_START && usize::from(first.first_start) <= self.head {
            // Walk whole frames from a known start up to the head.
            let mut at = usize::from(first.first_start);
            while at < self.head {
                let mut prefix = [0u8; LEN_PREFIX];
                self.read_raw(mem, at, &mut prefix);
                at += LEN_PREFIX + u32::from_le_bytes(prefix) as usize;
            }
            return at - self.head;
        }
        // The frame at the head began in a chunk already given back: the
        // next boundary is the first frame start after it.
        self.chunks
            .iter()
            .enumerate()
            .find(|(_, l)| l.first_start != NO_START)
            .map_or(self.len, |(i, l)| i * CHUNK + usize::from(l.first_start) - self.head)
    }

    /// Keeps the first `keep` own bytes and gives back the chunks past
    /// them.
    fn truncate(&mut self, mem: &mut Memory, keep: usize) {
        if keep == 0 {
            self.note(mem, -(self.len as isize));
            self.clear_own(mem);
            return;
        }
        let end = self.head + keep;
        let last = (end - 1) / CHUNK;
        while self.chunks.len() > last + 1 {
            if let Some(link) = self.chunks.pop_back() {
                mem.give(link.id);
            }
        }
        self.tail = end - last * CHUNK;
        if let Some(link) = self.chunks.back_mut() {
            if link.first_start != NO_START && usize::from(link.first_start) >= self.tail {
                link.first_start = NO_START;
            }
            (self.last, self.last_has_start) = (link.id, link.first_start != NO_START);
        }
        self.note(mem, keep as isize - self.len as isize);
        self.len = keep;
    }

    /// Copies own bytes from `at` (relative to the head) into `dst`; returns
    /// how many there were.
    fn read_at(&self, mem: &Memory, at: usize, dst: &mut [u8]) -> usize {
        let want = dst.len().min(self.len.saturating_sub(at));
        self.read_raw(mem, self.head + at, &mut dst[..want]);
        want
    }

    /// Copies bytes from `pos` (relative to the first chunk's start).
    fn read_raw(&self, mem: &Memory, pos: usize, dst: &mut [u8]) {
        let mut done = 0;
        while done < dst.len() {
            let p = pos + done;
            let chunk = mem.chunk(self.chunks[p / CHUNK].id);
            let off = p % CHUNK;
            let n = (CHUNK - off).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&chunk[off..off + n]);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use corecast_proto::ServerFrame;

    use super::*;

    fn encoded(frame: &ServerFrame<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        frame.encode(&mut v);
        v
    }

    fn ping(n: u64) -> Vec<u8> {
        encoded(&ServerFrame::Ping { nonce: n })
    }

    fn msg(sid: u32, payload: &[u8]) -> Vec<u8> {
        encoded(&ServerFrame::Msg(Msg { sid, topic: "t", reply_to: "", payload }))
    }

    fn contents(q: &ChunkQueue<true>, mem: &Memory) -> Vec<u8> {
        let mut out = vec![0; q.len()];
        q.read_at(mem, 0, &mut out);
        out
    }

    fn memory() -> Memory {
        Memory::new(64 * crate::mem::pool::BLOCK, 4, usize::MAX, Default::default())
            .expect("mapped")
    }

    #[test]
    fn frames_span_chunks_and_chunks_return_as_they_are_written() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let big = msg(1, &[7; 6000]);
        assert!(q.push(&mut mem, &ping(1), Charge::Budget));
        assert!(q.push(&mut mem, &big, Charge::Budget));
        assert_eq!(q.chunks(), 2);
        let mut want = ping(1);
        want.extend_from_slice(&big);
        assert_eq!(contents(&q, &mem), want);
        q.consume(&mut mem, CHUNK);
        assert_eq!(q.chunks(), 1, "the first chunk went back");
        q.consume(&mut mem, q.len());
        assert_eq!((q.chunks(), mem.used()), (0, 0));
    }

    #[test]
    fn a_full_budget_refuses_without_appending() {
        let mut mem = Memory::new(CHUNK, 0, usize::MAX, Default::default()).expect("mapped");
        let mut q = ChunkQueue::<true>::default();
        assert!(!q.push(&mut mem, &msg(1, &[0; 5000]), Charge::Budget));
        assert!(q.is_empty());
        assert!(q.push(&mut mem, &msg(1, &[0; 100]), Charge::Budget));
    }

    #[test]
    fn drop_unstarted_keeps_the_partial_frame() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        for n in 0..5 {
            assert!(q.push(&mut mem, &ping(n), Charge::Budget));
        }
        q.consume(&mut mem, 20); // one whole PING (14 bytes) and 6 of the next
        q.drop_unstarted(&mut mem);
        assert_eq!(contents(&q, &mem), &1u64.to_le_bytes());
    }

    #[test]
    fn drop_unstarted_finds_the_boundary_after_a_chunk_went_back() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let big = msg(1, &[1; 3 * CHUNK]);
        assert!(q.push(&mut mem, &big, Charge::Budget));
        assert!(q.push(&mut mem, &ping(9), Charge::Budget));
        q.consume(&mut mem, CHUNK + 10);
        q.drop_unstarted(&mut mem);
        assert_eq!(q.len(), big.len() - CHUNK - 10);
        q.consume(&mut mem, big.len() - CHUNK - 10);
        assert!(q.is_empty());
    }

    #[test]
    fn shed_messages_counts_each_sid_and_keeps_other_frames() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        for n in 0..200u32 {
            assert!(q.push(&mut mem, &msg(n % 3, &[0; 90]), Charge::Budget));
            if n % 50 == 0 {
                assert!(q.push(&mut mem, &ping(u64::from(n)), Charge::Budget));
            }
        }
        let head = msg(0, &[0; 90]).len() / 2;
        q.consume(&mut mem, head);
        let mut by_sid = [0u32; 3];
        let shed = q.shed_messages(&mut mem, |sid| by_sid[sid as usize] += 1);
        assert_eq!(shed, 199);
        assert_eq!(by_sid.iter().sum::<u32>(), 199);
        let mut want = msg(0, &[0; 90])[head..].to_vec();
        for n in [0u64, 50, 100, 150] {
            want.extend_from_slice(&ping(n));
        }
        assert_eq!(contents(&q, &mem), want);
        assert_eq!(q.chunks(), 1);
    }

    /// A shared copy of `frame`'s body in a fresh chunk, and the header the
    /// queue would get for it.
    fn share(mem: &mut Memory, frame: &[u8]) -> (Item<'static>, ChunkId) {
        let id = mem.take_shared().expect("chunk");
        let body = &frame[HEADER..];
        mem.chunk_mut(id)[4..4 + body.len()].copy_from_slice(body);
        let mut header = [0; HEADER];
        header.copy_from_slice(&frame[..HEADER]);
        let blob = Blob { chunk: id, off: 4, len: body.len() as u16 };
        (Item::Shared { header, blob }, id)
    }

    /// What the queue would write, gathered the way the socket gets it.
    fn wire(q: &ChunkQueue<true>, mem: &Memory) -> Vec<u8> {
        let mut parts = vec![IoSlice::new(&[]); 4096];
        let n = q.slices(mem, &mut parts);
        let bytes: Vec<u8> = parts[..n].iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(bytes.len(), q.len(), "every queued byte is in the slices");
        bytes
    }

    /// Own frames and shared messages interleaved, 40 of them.
    fn mixed(mem: &mut Memory, q: &mut ChunkQueue<true>) -> (Vec<u8>, Vec<ChunkId>) {
        let (mut want, mut shared) = (Vec::new(), Vec::new());
        for n in 0..40u32 {
            let frame = msg(n, &vec![n as u8; 300 + n as usize * 13]);
            if n % 3 == 0 {
                assert!(q.push(mem, &ping(u64::from(n)), Charge::Budget));
                want.extend_from_slice(&ping(u64::from(n)));
                assert!(q.push(mem, &frame, Charge::Budget));
            } else {
                let (item, id) = share(mem, &frame);
                assert!(q.push_item(mem, item, Charge::Budget));
                shared.push(id);
            }
            want.extend_from_slice(&frame);
        }
        (want, shared)
    }

    #[test]
    fn shared_messages_go_out_in_order_and_release_their_bodies() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let (want, shared) = mixed(&mut mem, &mut q);
        for &id in &shared {
            assert_eq!(mem.refs(id), 2, "the writer's reference and the queue's");
            mem.release(id);
        }
        assert_eq!(wire(&q, &mem), want);
        // Consumed in uneven steps, the rest is always the tail of `want`.
        let mut at = 0;
        for step in [1, 9, 10, 4090, 7, 333, 1000, 5].iter().cycle() {
            let step = (*step).min(q.len());
            q.consume(&mut mem, step);
            at += step;
            assert_eq!(wire(&q, &mem), want[at..]);
            if q.is_empty() {
                break;
            }
        }
        assert_eq!((q.chunks(), mem.used()), (0, 0), "bodies and records all back");
    }

    #[test]
    fn drop_unstarted_keeps_a_shared_message_in_progress() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let first = msg(7, &[1; 500]);
        let (item, id) = share(&mut mem, &first);
        assert!(q.push_item(&mut mem, item, Charge::Budget));
        mem.release(id);
        let (want, shared) = mixed(&mut mem, &mut q);
        shared.iter().for_each(|&id| mem.release(id));
        q.consume(&mut mem, 3);
        assert_eq!(q.len(), first.len() - 3 + want.len(), "all queued before the drop");
        q.drop_unstarted(&mut mem);
        assert_eq!(wire(&q, &mem), first[3..]);
        assert!(q.push(&mut mem, &ping(1), Charge::Reserve));
        let mut rest = first[3..].to_vec();
        rest.extend_from_slice(&ping(1));
        assert_eq!(wire(&q, &mem), rest, "a final frame follows the partial one");
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }

    #[test]
    fn drop_unstarted_drops_shared_messages_behind_an_own_frame_in_progress() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        assert!(q.push(&mut mem, &ping(5), Charge::Budget));
        let (_, shared) = mixed(&mut mem, &mut q);
        shared.iter().for_each(|&id| mem.release(id));
        q.consume(&mut mem, 4);
        q.drop_unstarted(&mut mem);
        assert_eq!(wire(&q, &mem), ping(5)[4..], "only the rest of the PING is left");
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0, "the dropped records released their bodies");
    }

    #[test]
    fn shed_messages_drops_shared_ones_too() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let (_, shared) = mixed(&mut mem, &mut q);
        shared.iter().for_each(|&id| mem.release(id));
        let mut sids = Vec::new();
        assert_eq!(q.shed_messages(&mut mem, |sid| sids.push(sid)), 40);
        sids.sort_unstable();
        assert_eq!(sids, (0..40).collect::<Vec<_>>());
        let pings: Vec<u8> = (0..40).step_by(3).flat_map(ping).collect();
        assert_eq!(wire(&q, &mem), pings, "only the other frames are left");
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }

    /// `frames` written back to back to a fresh shared chunk, as the
    /// fan-out writes them; returns each one's place.
    fn share_frames(mem: &mut Memory, frames: &[Vec<u8>]) -> (Vec<Blob>, ChunkId) {
        let id = mem.take_shared().expect("chunk");
        let mut at = 4;
        let blobs = frames
            .iter()
            .map(|f| {
                mem.chunk_mut(id)[at..at + f.len()].copy_from_slice(f);
                let blob = Blob { chunk: id, off: at as u16, len: f.len() as u16 };
                at += f.len();
                blob
            })
            .collect();
        (blobs, id)
    }

    fn frame_item(sid: u32, frame: Blob) -> Item<'static> {
        Item::Frames { sid, frames: frame, count: 1 }
    }

    /// A fresh queue holding one run of `count` messages for `sid` with
    /// `pad`-byte payloads, the writer's reference to their chunk already
    /// dropped; returns the queue and the frames.
    fn queued_run(
        mem: &mut Memory,
        sid: u32,
        count: u8,
        pad: usize,
    ) -> (ChunkQueue<true>, Vec<Vec<u8>>) {
        let mut q = ChunkQueue::<true>::default();
        let frames: Vec<Vec<u8>> = (0..count).map(|n| msg(sid, &vec![n; pad])).collect();
        let (blobs, id) = share_frames(mem, &frames);
        for &b in &blobs {
            assert!(q.push_item(mem, frame_item(sid, b), Charge::Budget));
        }
        assert_eq!(q.splices.len(), 1, "one run");
        mem.release(id);
        (q, frames)
    }

    #[test]
    fn consecutive_shared_frames_extend_one_run() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let frames: Vec<Vec<u8>> = (0..6u8).map(|n| msg(5, &[n; 100])).collect();
        let (blobs, id) = share_frames(&mut mem, &frames);
        for &b in &blobs[..3] {
            assert!(q.push_item(&mut mem, frame_item(5, b), Charge::Budget));
        }
        assert_eq!((q.splices.len(), mem.refs(id)), (1, 2), "one record, one reference");
        assert!(q.push(&mut mem, &ping(1), Charge::Budget));
        assert!(q.push_item(&mut mem, frame_item(5, blobs[3]), Charge::Budget));
        assert!(q.push_item(&mut mem, frame_item(6, blobs[4]), Charge::Budget));
        assert!(q.push_item(&mut mem, frame_item(6, blobs[5]), Charge::Budget));
        assert_eq!(q.splices.len(), 3, "own bytes and another sid start new runs");
        mem.release(id);
        let mut want: Vec<u8> = frames[..3].concat();
        want.extend_from_slice(&ping(1));
        want.extend_from_slice(&frames[3..].concat());
        assert_eq!(wire(&q, &mem), want);
        let mut at = 0;
        for step in [1, 99, 120, 3, 240, 14].iter().cycle() {
            let step = (*step).min(q.len());
            q.consume(&mut mem, step);
            at += step;
            assert_eq!(wire(&q, &mem), want[at..]);
            if q.is_empty() {
                break;
            }
        }
        assert_eq!(mem.used(), 0, "the run's chunk went back with its last byte");
    }

    /// `blobs`, back to back in one chunk, as one item.
    fn frames_item(sid: u32, blobs: &[Blob]) -> Item<'static> {
        let (first, last) = (blobs[0], blobs[blobs.len() - 1]);
        let frames = Blob { len: last.off + last.len - first.off, ..first };
        Item::Frames { sid, frames, count: blobs.len() as u16 }
    }

    #[test]
    fn several_frames_go_in_as_one_item_and_extend_a_run_like_single_ones() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let frames: Vec<Vec<u8>> = (0..7u8).map(|n| msg(4, &[n; 60])).collect();
        let (blobs, id) = share_frames(&mut mem, &frames);
        assert!(q.push_item(&mut mem, frames_item(4, &blobs[..3]), Charge::Budget));
        assert!(q.push_item(&mut mem, frame_item(4, blobs[3]), Charge::Budget));
        assert!(q.push_item(&mut mem, frames_item(4, &blobs[4..]), Charge::Budget));
        assert_eq!((q.splices.len(), mem.refs(id)), (1, 2), "one run, one reference");
        mem.release(id);
        assert_eq!(wire(&q, &mem), frames.concat());
        let mut sids = Vec::new();
        q.consume(&mut mem, frames[0].len() + 1);
        assert_eq!(q.shed_messages(&mut mem, |sid| sids.push(sid)), 5, "all but the one begun");
        assert_eq!(sids, [4; 5]);
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }

    #[test]
    fn a_run_that_does_not_follow_its_chunk_starts_a_new_record() {
        let mut mem = memory();
        let mut q = ChunkQueue::<true>::default();
        let frames: Vec<Vec<u8>> = (0..3u8).map(|n| msg(1, &[n; 50])).collect();
        let (blobs, id) = share_frames(&mut mem, &frames);
        assert!(q.push_item(&mut mem, frame_item(1, blobs[0]), Charge::Budget));
        assert!(q.push_item(&mut mem, frame_item(1, blobs[2]), Charge::Budget));
        assert_eq!(q.splices.len(), 2, "the frame between was not this queue's");
        mem.release(id);
        assert_eq!(wire(&q, &mem), [frames[0].clone(), frames[2].clone()].concat());
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }

    #[test]
    fn drop_unstarted_cuts_a_run_after_the_frame_in_progress() {
        let mut mem = memory();
        let (mut q, frames) = queued_run(&mut mem, 3, 4, 70);
        let into_second = frames[0].len() + 5;
        q.consume(&mut mem, into_second);
        q.drop_unstarted(&mut mem);
        assert_eq!(wire(&q, &mem), frames[1][5..], "the rest of the second frame only");
        assert!(q.push(&mut mem, &ping(2), Charge::Reserve));
        assert_eq!(wire(&q, &mem), [&frames[1][5..], &ping(2)[..]].concat());
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }

    #[test]
    fn drop_unstarted_on_a_frame_boundary_inside_a_run_leaves_nothing() {
        let mut mem = memory();
        let (mut q, frames) = queued_run(&mut mem, 3, 3, 70);
        q.consume(&mut mem, frames[0].len());
        q.drop_unstarted(&mut mem);
        assert!(q.is_empty());
        assert_eq!(mem.used(), 0, "the run and its chunk are gone");
        assert!(q.push(&mut mem, &ping(2), Charge::Reserve));
        assert_eq!(wire(&q, &mem), ping(2));
        q.clear(&mut mem);
    }

    #[test]
    fn shed_messages_counts_every_message_of_a_run() {
        let mut mem = memory();
        let (mut q, frames) = queued_run(&mut mem, 9, 5, 40);
        q.consume(&mut mem, 3);
        let mut sids = Vec::new();
        assert_eq!(q.shed_messages(&mut mem, |sid| sids.push(sid)), 4);
        assert_eq!(sids, [9; 4]);
        assert_eq!(wire(&q, &mem), frames[0][3..]);
        q.clear(&mut mem);
        assert_eq!(mem.used(), 0);
    }
}
