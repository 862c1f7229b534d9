//! Fixed connection buffers and the per-core pools they come from.
//!
//! A buffer is allocated once, zeroed lazily by the kernel, and then passes
//! between the pool and connection slots for the life of the core. Nothing
//! here grows: a full write buffer is the caller's signal to apply its
//! slow-consumer policy.

use corecast_proto::{ServerFrame, LEN_PREFIX};

/// A pool of equally sized buffers, bounded by the slots that can hold them.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// Size of every buffer in this pool.
    size: usize,
    /// Buffers given back, ready for the next connection.
    free: Vec<Box<[u8]>>,
}

impl BufferPool {
    pub(crate) fn new(size: usize) -> Self {
        Self { size, free: Vec::new() }
    }

    /// A buffer from the pool, or a new one. The second value says whether it
    /// was newly allocated.
    pub(crate) fn take(&mut self) -> (Box<[u8]>, bool) {
        match self.free.pop() {
            Some(buf) => (buf, false),
            // vec![0; n] comes from calloc: pages are mapped on first touch.
            None => (vec![0; self.size].into_boxed_slice(), true),
        }
    }

    pub(crate) fn give(&mut self, buf: Box<[u8]>) {
        debug_assert_eq!(buf.len(), self.size);
        self.free.push(buf);
    }
}

/// The bytes read from a socket and not yet decoded.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    buf: Box<[u8]>,
    /// First byte not yet consumed.
    start: usize,
    /// One past the last byte read.
    end: usize,
}

impl ReadBuf {
    pub(crate) fn new(buf: Box<[u8]>) -> Self {
        Self { buf, start: 0, end: 0 }
    }

    pub(crate) fn into_inner(self) -> Box<[u8]> {
        self.buf
    }

    /// The bytes read and not consumed.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Room to read into, moving unconsumed bytes to the front if the end
    /// of the buffer has been reached.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    pub(crate) fn filled_by(&mut self, n: usize) {
        self.end += n;
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// Frames queued for a socket: a fixed buffer written from `head` to `tail`.
#[derive(Debug)]
pub(crate) struct WriteBuf {
    buf: Box<[u8]>,
    /// First byte not yet written to the socket.
    head: usize,
    /// One past the last queued byte.
    tail: usize,
    /// A frame boundary that is either at or before `head`, or the first one
    /// after it; walking forward from here finds where whole frames resume.
    boundary: usize,
}

impl WriteBuf {
    pub(crate) fn new(buf: Box<[u8]>) -> Self {
        Self { buf, head: 0, tail: 0, boundary: 0 }
    }

    pub(crate) fn into_inner(self) -> Box<[u8]> {
        self.buf
    }

    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// `n` bytes went out on the socket.
    pub(crate) fn consume(&mut self, n: usize) {
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
            self.boundary = 0;
        }
    }

    /// Queues `frame` if the pending bytes stay within `limit`; false when
    /// it does not fit.
    pub(crate) fn push(&mut self, frame: &ServerFrame<'_>, limit: usize) -> bool {
        let len = frame.encoded_len();
        if self.tail - self.head + len > limit.min(self.buf.len()) {
            return false;
        }
        if self.tail + len > self.buf.len() {
            self.compact();
        }
        let mut dst = &mut self.buf[self.tail..self.tail + len];
        frame.encode(&mut dst);
        self.tail += len;
        true
    }

    /// Drops every queued frame that has not started going out, keeping the
    /// one the socket is in the middle of, so a final frame can follow at
    /// once on a consistent stream.
    pub(crate) fn drop_unstarted(&mut self) {
        self.seek_boundary();
        self.tail = self.boundary.max(self.head);
        if self.head == self.tail {
            self.consume(0);
        }
    }

    fn frame_len_at(&self, at: usize) -> usize {
        let p = &self.buf[at..at + LEN_PREFIX];
        LEN_PREFIX + u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize
    }

    /// Moves `boundary` to the first frame boundary at or after `head`.
    fn seek_boundary(&mut self) {
        while self.boundary < self.head {
            self.boundary += self.frame_len_at(self.boundary);
        }
    }

    fn compact(&mut self) {
        self.seek_boundary();
        self.buf.copy_within(self.head..self.tail, 0);
        self.tail -= self.head;
        self.boundary -= self.head;
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(n: u64) -> ServerFrame<'static> {
        ServerFrame::Ping { nonce: n }
    }

    #[test]
    fn push_respects_limit_and_compacts() {
        let mut w = WriteBuf::new(vec![0; 40].into_boxed_slice());
        // each PING is 14 bytes
        assert!(w.push(&ping(1), 40));
        assert!(w.push(&ping(2), 40));
        assert!(!w.push(&ping(3), 40));
        w.consume(14);
        assert!(w.push(&ping(3), 40), "compaction makes room");
        assert_eq!(w.pending().len(), 28);
        assert!(!w.push(&ping(4), 30), "a lower limit refuses");
    }

    #[test]
    fn drop_unstarted_keeps_the_partial_frame() {
        let mut w = WriteBuf::new(vec![0; 100].into_boxed_slice());
        for n in 0..5 {
            assert!(w.push(&ping(n), 100));
        }
        w.consume(20); // one whole frame and 6 bytes of the second
        w.drop_unstarted();
        assert_eq!(w.pending(), &[1, 0, 0, 0, 0, 0, 0, 0], "the rest of frame two stays");
    }

    #[test]
    fn drop_unstarted_on_a_boundary_empties() {
        let mut w = WriteBuf::new(vec![0; 100].into_boxed_slice());
        for n in 0..3 {
            assert!(w.push(&ping(n), 100));
        }
        w.consume(14);
        w.drop_unstarted();
        assert!(w.is_empty());
    }

    #[test]
    fn boundary_survives_compaction() {
        let mut w = WriteBuf::new(vec![0; 42].into_boxed_slice());
        for n in 0..3 {
            assert!(w.push(&ping(n), 42));
        }
        w.consume(20);
        assert!(w.push(&ping(9), 42)); // compacts: 22 pending + 14
        w.drop_unstarted();
        assert_eq!(w.pending().len(), 8);
    }

    #[test]
    fn read_buf_compacts_when_full() {
        let mut r = ReadBuf::new(vec![0; 8].into_boxed_slice());
        r.spare()[..8].copy_from_slice(b"abcdefgh");
        r.filled_by(8);
        r.consume(5);
        assert_eq!(r.spare().len(), 5);
        assert_eq!(r.filled(), b"fgh");
    }
}
