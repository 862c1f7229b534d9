//! Fixed connection buffers and the per-core pools they come from.
//!
//! A buffer is allocated once, zeroed lazily by the kernel, and then passes
//! between the pool and connection slots for the life of the core. Nothing
//! here grows: a full write buffer is the caller's signal to apply its
//! slow-consumer policy.
//!
//! Memory is only resident where it was touched. An idle connection's
//! buffers, and every buffer given back to the pool, hand their touched pages
//! back to the kernel ([`PageBuf::release`]), so thousands of idle
//! connections, or a storm of short ones, cost little more than their slots.

use std::{
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::OnceLock,
};

use corecast_proto::{Msg, ServerFrame, LEN_PREFIX};

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

/// A zeroed buffer in its own anonymous mapping: pages are mapped on first
/// touch and can be handed back to the kernel at any time without touching
/// an allocator's bookkeeping.
#[derive(Debug)]
pub(crate) struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// The mapping's length: `len` rounded up to whole pages.
    map_len: usize,
    /// One past the highest byte touched since the last release.
    touched: usize,
}

impl PageBuf {
    /// Maps `len` bytes; `None` when the kernel refuses (address space or
    /// map count exhausted), which callers treat like a full server.
    fn new(len: usize) -> Option<Self> {
        let map_len = len.max(1).div_ceil(page_size()) * page_size();
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked before use.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            tracing::warn!(error = %std::io::Error::last_os_error(), len, "cannot map a buffer");
            return None;
        }
        let ptr = NonNull::new(raw.cast::<u8>())?;
        Some(Self { ptr, len, map_len, touched: 0 })
    }

    /// Notes that bytes up to `end` may have been written.
    fn touch(&mut self, end: usize) {
        self.touched = self.touched.max(end);
    }

    /// Gives the touched pages back to the kernel; they read as zero after.
    /// The caller must hold no data in the buffer.
    pub(crate) fn release(&mut self) {
        let end = (self.touched.div_ceil(page_size()) * page_size()).min(self.map_len);
        self.touched = 0;
        if end == 0 {
            return;
        }
        // SAFETY: [ptr, ptr + end) lies inside our own mapping; MADV_DONTNEED
        // on private anonymous memory only replaces its contents with zeros.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().cast(), end, libc::MADV_DONTNEED) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "madvise failed");
        }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours, unmapped once, and no slice of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.map_len);
        }
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` readable bytes for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A pool of equally sized buffers, bounded by the slots that can hold them.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// Size of every buffer in this pool.
    size: usize,
    /// Buffers given back, ready for the next connection, their pages
    /// already released.
    free: Vec<PageBuf>,
}

impl BufferPool {
    pub(crate) fn new(size: usize) -> Self {
        Self { size, free: Vec::new() }
    }

    /// A buffer from the pool, or a new one (`true` when newly mapped);
    /// `None` when no memory can be had.
    pub(crate) fn take(&mut self) -> Option<(PageBuf, bool)> {
        match self.free.pop() {
            Some(buf) => Some((buf, false)),
            None => PageBuf::new(self.size).map(|buf| (buf, true)),
        }
    }

    pub(crate) fn give(&mut self, mut buf: PageBuf) {
        debug_assert_eq!(buf.len(), self.size);
        buf.release();
        self.free.push(buf);
    }
}

/// The bytes read from a socket and not yet decoded.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    buf: PageBuf,
    /// First byte not yet consumed.
    start: usize,
    /// One past the last byte read.
    end: usize,
}

impl ReadBuf {
    pub(crate) fn new(buf: PageBuf) -> Self {
        Self { buf, start: 0, end: 0 }
    }

    pub(crate) fn into_inner(self) -> PageBuf {
        self.buf
    }

    /// Releases the touched pages if nothing is buffered.
    pub(crate) fn trim(&mut self) {
        if self.start == self.end && self.buf.touched > 0 {
            self.buf.release();
        }
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
        self.buf.touch(self.end);
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
    buf: PageBuf,
    /// First byte not yet written to the socket.
    head: usize,
    /// One past the last queued byte.
    tail: usize,
    /// A frame boundary that is either at or before `head`, or the first one
    /// after it; walking forward from here finds where whole frames resume.
    boundary: usize,
}

impl WriteBuf {
    pub(crate) fn new(buf: PageBuf) -> Self {
        Self { buf, head: 0, tail: 0, boundary: 0 }
    }

    pub(crate) fn into_inner(self) -> PageBuf {
        self.buf
    }

    /// Releases the touched pages if nothing is queued.
    pub(crate) fn trim(&mut self) {
        if self.is_empty() && self.buf.touched > 0 {
            self.buf.release();
        }
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
    /// Hints the CPU to fetch the cache line the next frame will start in.
    pub(crate) fn prefetch_tail(&self) {
        if self.tail < self.buf.len() {
            crate::prefetch::line(self.buf.ptr.as_ptr().wrapping_add(self.tail));
        }
    }

    pub(crate) fn push(&mut self, frame: &ServerFrame<'_>, limit: usize) -> bool {
        let Some(mut dst) = self.append(frame.encoded_len(), limit) else { return false };
        frame.encode(&mut dst);
        true
    }

    /// Queues an already encoded `MSG` frame with `sid` stamped in: fan-out
    /// encodes a message once and copies it to every subscriber.
    pub(crate) fn push_msg(&mut self, encoded: &[u8], sid: u32, limit: usize) -> bool {
        let Some(dst) = self.append(encoded.len(), limit) else { return false };
        dst.copy_from_slice(encoded);
        dst[Msg::SID_AT..Msg::SID_AT + 4].copy_from_slice(&sid.to_le_bytes());
        true
    }

    /// Room for `len` more bytes at the tail, within `limit` queued bytes;
    /// `None` when they do not fit.
    fn append(&mut self, len: usize, limit: usize) -> Option<&mut [u8]> {
        if self.tail - self.head + len > limit.min(self.buf.len()) {
            return None;
        }
        if self.tail + len > self.buf.len() {
            self.compact();
        }
        let start = self.tail;
        self.tail += len;
        self.buf.touch(self.tail);
        Some(&mut self.buf[start..self.tail])
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
        let mut w = WriteBuf::new(PageBuf::new(40).expect("mapped"));
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
        let mut w = WriteBuf::new(PageBuf::new(100).expect("mapped"));
        for n in 0..5 {
            assert!(w.push(&ping(n), 100));
        }
        w.consume(20); // one whole frame and 6 bytes of the second
        w.drop_unstarted();
        assert_eq!(w.pending(), &[1, 0, 0, 0, 0, 0, 0, 0], "the rest of frame two stays");
    }

    #[test]
    fn drop_unstarted_on_a_boundary_empties() {
        let mut w = WriteBuf::new(PageBuf::new(100).expect("mapped"));
        for n in 0..3 {
            assert!(w.push(&ping(n), 100));
        }
        w.consume(14);
        w.drop_unstarted();
        assert!(w.is_empty());
    }

    #[test]
    fn boundary_survives_compaction() {
        let mut w = WriteBuf::new(PageBuf::new(42).expect("mapped"));
        for n in 0..3 {
            assert!(w.push(&ping(n), 42));
        }
        w.consume(20);
        assert!(w.push(&ping(9), 42)); // compacts: 22 pending + 14
        w.drop_unstarted();
        assert_eq!(w.pending().len(), 8);
    }

    #[test]
    fn release_zeroes_touched_pages_and_keeps_the_rest_usable() {
        let mut w = WriteBuf::new(PageBuf::new(3 * page_size()).expect("mapped"));
        assert!(w.push(&ping(7), usize::MAX));
        w.trim();
        assert_eq!(w.pending().len(), 14, "a buffer holding data is not trimmed");
        w.consume(14);
        w.trim();
        assert!(w.buf.iter().all(|&b| b == 0), "released pages read as zero");
        assert_eq!(w.buf.touched, 0);
        assert!(w.push(&ping(8), usize::MAX));
        assert_eq!(&w.pending()[6..], &8u64.to_le_bytes());
    }

    #[test]
    fn page_buf_starts_on_a_page() {
        let b = PageBuf::new(100).expect("mapped");
        assert_eq!(b.as_ptr() as usize % page_size(), 0);
        assert_eq!(b.len(), 100);
    }

    #[test]
    fn read_buf_compacts_when_full() {
        let mut r = ReadBuf::new(PageBuf::new(8).expect("mapped"));
        r.spare()[..8].copy_from_slice(b"abcdefgh");
        r.filled_by(8);
        r.consume(5);
        assert_eq!(r.spare().len(), 5);
        assert_eq!(r.filled(), b"fgh");
    }
}
