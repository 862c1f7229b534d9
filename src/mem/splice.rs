//! The messages an output queue sends from shared chunks: for each, the
//! subscriber's own frame header and a reference to the body that every
//! subscriber of the message shares. Records sit in order in chunks of the
//! core's [`Memory`], like the queue's own bytes, so they are charged to
//! the budget and go back to the pool as they are sent.
//!
//! A subscriber that stops reading then holds 24 bytes per message instead
//! of a copy of it; the bodies are held once, however many hold them.

use std::collections::VecDeque;

use corecast_proto::Msg;

use super::{prefetch, Blob, Charge, ChunkId, Memory, CHUNK};

/// Bytes of a `MSG` frame before its body: length, opcode, flags and sid.
pub(crate) const HEADER: usize = Msg::SID_AT + 4;

/// Bytes of one record in a chunk.
const STRIDE: usize = 24;

/// Records in one chunk.
const PER_CHUNK: usize = CHUNK / STRIDE;

/// One message sent from a shared chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Splice {
    /// The position in the queue's own byte stream (counted from its first
    /// byte ever, wrapping) that the message goes out before.
    pub at: u32,
    /// The subscriber's frame header, its sid stamped in.
    pub header: [u8; HEADER],
    /// The body, shared with the message's other subscribers.
    pub blob: Blob,
}

impl Splice {
    /// Bytes the message takes on the wire.
    pub(crate) fn len(&self) -> usize {
        HEADER + usize::from(self.blob.len)
    }

    /// The subscription it is for.
    pub(crate) fn sid(&self) -> u32 {
        let s = &self.header[Msg::SID_AT..];
        u32::from_le_bytes([s[0], s[1], s[2], s[3]])
    }

    fn write(&self, dst: &mut [u8]) {
        dst[..4].copy_from_slice(&self.at.to_le_bytes());
        dst[4..4 + HEADER].copy_from_slice(&self.header);
        let b = &mut dst[4 + HEADER..];
        b[..4].copy_from_slice(&self.blob.chunk.to_le_bytes());
        b[4..6].copy_from_slice(&self.blob.off.to_le_bytes());
        b[6..8].copy_from_slice(&self.blob.len.to_le_bytes());
    }

    fn read(src: &[u8]) -> Self {
        let mut header = [0; HEADER];
        header.copy_from_slice(&src[4..4 + HEADER]);
        let b = &src[4 + HEADER..];
        Self {
            at: u32::from_le_bytes([src[0], src[1], src[2], src[3]]),
            header,
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

    /// Record `i`'s header, where it is stored.
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

    /// Keeps the first `keep` records; each one removed is shown to
    /// `dropped` and its body released.
    pub(crate) fn truncate(
        &mut self,
        mem: &mut Memory,
        keep: usize,
        mut dropped: impl FnMut(&Splice),
    ) {
        for i in keep..self.len {
            let s = self.get(mem, i);
            dropped(&s);
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

    /// Hints the CPU to fetch the line the next record will be written at.
    pub(crate) fn prefetch_tail(&self, mem: &Memory) {
        let p = self.head + self.len;
        if p < self.chunks.len() * PER_CHUNK {
            prefetch::line(mem.chunk(self.last)[p % PER_CHUNK * STRIDE..].as_ptr());
        }
    }
}
