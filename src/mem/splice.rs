//! The messages an output queue sends from shared chunks. A record is one
//! of two kinds:
//!
//! - the subscriber's own frame header and a reference to a body every
//!   subscriber of the message shares ([`Head::Own`]);
//! - a run of whole frames that were written to the shared chunk with this
//!   subscriber's sid already in them ([`Head::Run`]). Consecutive messages
//!   extend the run in place, so they cost the queue no record at all.
//!
//! Records sit in order in chunks of the core's [`Memory`], like the
//! queue's own bytes, so they are charged to the budget and go back to the
//! pool as they are sent. A subscriber that stops reading holds at most 24
//! bytes per message instead of a copy of it, and nothing per message
//! while it is in a run; the bodies are held once, however many hold them.

use std::collections::VecDeque;

use corecast_proto::{Msg, LEN_PREFIX};

use super::{prefetch, Blob, Charge, ChunkId, Memory, CHUNK};

/// Bytes of a `MSG` frame before its body: length, opcode, flags and sid.
pub(crate) const HEADER: usize = Msg::SID_AT + 4;

/// Bytes of one record in a chunk.
const STRIDE: usize = 24;

/// Records in one chunk.
const PER_CHUNK: usize = CHUNK / STRIDE;

/// How a record's bytes begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// One message: this header, the subscriber's own with its sid stamped
    /// in, goes out before the shared body.
    Own([u8; HEADER]),
    /// `count` whole `MSG` frames, written to the shared chunk with `sid`
    /// in them, that go out as they lie there.
    Run { sid: u32, count: u16 },
}

/// One record: messages sent from a shared chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Splice {
    /// The position in the queue's own byte stream (counted from its first
    /// byte ever, wrapping) that the messages go out before.
    pub at: u32,
    pub head: Head,
    /// The shared bytes: a body for [`Head::Own`], whole frames for a run.
    pub blob: Blob,
}

impl Splice {
    /// Bytes the messages take on the wire.
    pub(crate) fn len(&self) -> usize {
        self.header_len() + usize::from(self.blob.len)
    }

    /// Bytes of the record's own header that go out before the blob.
    pub(crate) fn header_len(&self) -> usize {
        match self.head {
            Head::Own(_) => HEADER,
            Head::Run { .. } => 0,
        }
    }

    /// The subscription its messages are for.
    pub(crate) fn sid(&self) -> u32 {
        match self.head {
            Head::Own(h) => {
                let s = &h[Msg::SID_AT..];
                u32::from_le_bytes([s[0], s[1], s[2], s[3]])
            }
            Head::Run { sid, .. } => sid,
        }
    }

    /// Messages in the record.
    pub(crate) fn messages(&self) -> usize {
        match self.head {
            Head::Own(_) => 1,
            Head::Run { count, .. } => usize::from(count),
        }
    }

    /// Stored as the 10 header bytes; a run as a zero length prefix (no
    /// frame has one), its count, then its sid.
    fn write(&self, dst: &mut [u8]) {
        dst[..4].copy_from_slice(&self.at.to_le_bytes());
        let h = &mut dst[4..4 + HEADER];
        match self.head {
            Head::Own(header) => h.copy_from_slice(&header),
            Head::Run { sid, count } => {
                h[..4].fill(0);
                h[4..6].copy_from_slice(&count.to_le_bytes());
                h[Msg::SID_AT..].copy_from_slice(&sid.to_le_bytes());
            }
        }
        let b = &mut dst[4 + HEADER..];
        b[..4].copy_from_slice(&self.blob.chunk.to_le_bytes());
        b[4..6].copy_from_slice(&self.blob.off.to_le_bytes());
        b[6..8].copy_from_slice(&self.blob.len.to_le_bytes());
    }

    fn read(src: &[u8]) -> Self {
        let h = &src[4..4 + HEADER];
        let head = if h[..4] == [0; 4] {
            let s = &h[Msg::SID_AT..];
            let count = u16::from_le_bytes([h[4], h[5]]);
            Head::Run { sid: u32::from_le_bytes([s[0], s[1], s[2], s[3]]), count }
        } else {
            let mut header = [0; HEADER];
            header.copy_from_slice(h);
            Head::Own(header)
        };
        let b = &src[4 + HEADER..];
        Self {
            at: u32::from_le_bytes([src[0], src[1], src[2], src[3]]),
            head,
            blob: Blob {
                chunk: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                off: u16::from_le_bytes([b[4], b[5]]),
                len: u16::from_le_bytes([b[6], b[7]]),
            },
        }
    }
}

/// The records, oldest first. Each holds a reference to its body's chunk.
#[derive(Debug, Default)]
pub(crate) struct Splices {
    chunks: VecDeque<ChunkId>,
    /// Index of the first record in the first chunk.
    head: usize,
    /// Records held.
    len: usize,
    /// The last chunk, when there is one: appending and prefetching read
    /// it here rather than from the deque's buffer.
    last: ChunkId,
}

impl Splices {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunks held, each charged to the budget.
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }

    /// The chunk and offset of record `i`.
    fn place(&self, i: usize) -> (ChunkId, usize) {
        let p = self.head + i;
        (self.chunks[p / PER_CHUNK], p % PER_CHUNK * STRIDE)
    }

    pub(crate) fn get(&self, mem: &Memory, i: usize) -> Splice {
        let (id, off) = self.place(i);
        Splice::read(&mem.chunk(id)[off..off + STRIDE])
    }

    /// Record `i`'s header, where it is stored (meaningful for
    /// [`Head::Own`] only).
    pub(crate) fn header<'m>(&self, mem: &'m Memory, i: usize) -> &'m [u8] {
        let (id, off) = self.place(i);
        &mem.chunk(id)[off + 4..off + 4 + HEADER]
    }

    /// Appends a record, taking a reference to its body; false (and nothing
    /// appended) when a chunk for it cannot be had under `charge`.
    pub(crate) fn push(&mut self, mem: &mut Memory, s: Splice, charge: Charge) -> bool {
        let p = self.head + self.len;
        if p == self.chunks.len() * PER_CHUNK {
            let Some(id) = mem.take(charge) else { return false };
            self.chunks.push_back(id);
            self.last = id;
        }
        let off = p % PER_CHUNK * STRIDE;
        s.write(&mut mem.chunk_mut(self.last)[off..off + STRIDE]);
        mem.retain(s.blob.chunk);
        self.len += 1;
        true
    }

    /// Adds `count` more frames to the last record when it is a run for
    /// `sid` at position `at` that `frames` directly follow in the same
    /// shared chunk; false (and nothing changed) otherwise. The run already
    /// holds its reference to the chunk.
    pub(crate) fn extend_run(
        &mut self,
        mem: &mut Memory,
        at: u32,
        (sid, frames, count): (u32, Blob, u16),
    ) -> bool {
        let Some(i) = self.len.checked_sub(1) else { return false };
        let off = (self.head + i) % PER_CHUNK * STRIDE;
        let record = &mut mem.chunk_mut(self.last)[off..off + STRIDE];
        let mut s = Splice::read(record);
        let Head::Run { sid: run_sid, count: run_count } = s.head else { return false };
        let follows = s.blob.chunk == frames.chunk && s.blob.off + s.blob.len == frames.off;
        let Some(total) = run_count.checked_add(count) else { return false };
        if !follows || s.at != at || run_sid != sid {
            return false;
        }
        s.blob.len += frames.len;
        s.head = Head::Run { sid, count: total };
        s.write(record);
        true
    }

    /// Cuts the first record, a run the socket is `sent` bytes into, after
    /// the frame in progress, telling `dropped` the sid of each message cut.
    /// Returns the record's length now.
    pub(crate) fn cut_first_run(
        &mut self,
        mem: &mut Memory,
        sent: usize,
        mut dropped: impl FnMut(u32),
    ) -> usize {
        let mut s = self.get(mem, 0);
        let Head::Run { sid, count } = s.head else { return s.len() };
        let frames = mem.blob(s.blob);
        let (mut end, mut kept) = (0, 0u16);
        while end < sent {
            let prefix = [frames[end], frames[end + 1], frames[end + 2], frames[end + 3]];
            end += LEN_PREFIX + u32::from_le_bytes(prefix) as usize;
            kept += 1;
        }
        (kept..count).for_each(|_| dropped(sid));
        s.blob.len = end as u16;
        s.head = Head::Run { sid, count: kept };
        let (id, off) = self.place(0);
        s.write(&mut mem.chunk_mut(id)[off..off + STRIDE]);
        end
    }

    /// Removes the first record, releasing its body.
    pub(crate) fn pop_front(&mut self, mem: &mut Memory) {
        if self.len == 0 {
            return;
        }
        let s = self.get(mem, 0);
        mem.release(s.blob.chunk);
        self.head += 1;
        self.len -= 1;
        if self.len == 0 {
            self.free_chunks(mem, 0);
        } else if self.head == PER_CHUNK {
            if let Some(id) = self.chunks.pop_front() {
                mem.give(id);
            }
            self.head = 0;
        }
    }

    /// Keeps the first `keep` records; `dropped` is told the sid of each
    /// message removed, and their bodies are released.
    pub(crate) fn truncate(&mut self, mem: &mut Memory, keep: usize, mut dropped: impl FnMut(u32)) {
        for i in keep..self.len {
            let s = self.get(mem, i);
            (0..s.messages()).for_each(|_| dropped(s.sid()));
            mem.release(s.blob.chunk);
        }
        self.len = self.len.min(keep);
        let needed = if self.len == 0 { 0 } else { (self.head + self.len).div_ceil(PER_CHUNK) };
        self.free_chunks(mem, needed);
    }

    /// Gives back every chunk past the first `keep`.
    fn free_chunks(&mut self, mem: &mut Memory, keep: usize) {
        while self.chunks.len() > keep {
            if let Some(id) = self.chunks.pop_back() {
                mem.give(id);
            }
        }
        match self.chunks.back() {
            Some(&id) => self.last = id,
            None => self.head = 0,
        }
    }

    /// Hints the CPU to fetch the last record, which a run extends, and
    /// the line the next one will be written at.
    pub(crate) fn prefetch_tail(&self, mem: &Memory) {
        let p = self.head + self.len;
        let chunk = mem.chunk(self.last);
        if let Some(last) = p.checked_sub(1).filter(|_| self.len > 0) {
            prefetch::line(chunk[last % PER_CHUNK * STRIDE..].as_ptr());
        }
        if p < self.chunks.len() * PER_CHUNK {
            prefetch::line(chunk[p % PER_CHUNK * STRIDE..].as_ptr());
        }
    }
}
