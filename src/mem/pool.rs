//! A core's memory for connection data: fixed-size chunks carved from one
//! mapping, the per-core budget they are charged to, and the large buffers
//! that hold frames too big for the read scratch.
//!
//! Every byte a connection holds beyond its slot comes from here: output
//! waiting for the socket, input bytes of a frame not yet complete. A chunk
//! goes back to the core's pool the moment its bytes are written (or the
//! connection closes); the pool keeps a few resident for reuse and hands the
//! rest back to the kernel on the sweeper's next tick. An idle connection
//! therefore holds no chunk at all.
//!
//! Message bodies shared by many output queues ([`Blob`]) go to a "shared
//! chunk": a block of [`BLOCK`] bytes from a mapping of its own or, when
//! none is left, a chunk. Its first bytes count the references to it, and
//! the last queue to let go gives it back.
//!
//! One mapping per size, not one per buffer: the kernel's map count
//! (65 530 by default) does not limit the number of connections. The
//! mappings are reserved, not committed: pages exist only while a chunk or
//! block is in use or warm in the pool.

use std::{
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::Arc,
};

use crate::counters::CoreCounters;

/// Bytes in a chunk: one page, so an idle or nearly idle subscriber pins at
/// most a page of output, and a chunk is released with one `madvise`.
pub(crate) const CHUNK: usize = 4096;

/// Bytes in a block for shared message bodies. Eight pages: frames written
/// one after another to a block go to a subscriber with their sid as one
/// item and one slice of a `sendmsg`, about 30 messages of 1 KiB, where a
/// chunk would hold 3. Offsets within it fit the `u16` of a [`Blob`].
pub(crate) const BLOCK: usize = 32 << 10;

/// Free chunks the pool keeps resident across a sweeper tick, so steady
/// traffic does not fault pages in and out; free blocks are kept up to the
/// same bytes.
pub(crate) const WARM_KEEP: usize = 256;

/// A zeroed anonymous mapping: pages are mapped on first touch and can be
/// handed back to the kernel at any time.
#[derive(Debug)]
pub(crate) struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// The mapping's length: `len` rounded up to whole pages.
    map_len: usize,
}

impl PageBuf {
    /// Maps `len` bytes, reserved but not committed; `None` when the kernel
    /// refuses (address space or map count exhausted).
    pub(crate) fn new(len: usize) -> Option<Self> {
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
            tracing::warn!(error = %std::io::Error::last_os_error(), len, "cannot map memory");
            return None;
        }
        let buf = Self { ptr: NonNull::new(raw.cast::<u8>())?, len, map_len };
        // Transparent huge pages would make one touched chunk cost 2 MiB.
        buf.advise(0, map_len, libc::MADV_NOHUGEPAGE);
        Some(buf)
    }

    /// The bytes reserved, pages included.
    pub(crate) fn mapped(&self) -> usize {
        self.map_len
    }

    /// Gives the pages of `[start, start + len)` back to the kernel; they
    /// read as zero afterwards. Both ends must be page-aligned.
    fn release(&self, start: usize, len: usize) {
        self.advise(start, len, libc::MADV_DONTNEED);
    }

    fn advise(&self, start: usize, len: usize, advice: libc::c_int) {
        debug_assert!(start + len <= self.map_len);
        // SAFETY: the range lies inside our own mapping; these advices only
        // change how its pages are backed (DONTNEED zeroes them, and no
        // reference into the range is alive when it is released).
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().add(start).cast(), len, advice) };
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

pub(crate) fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    })
}

/// A chunk's index in its core's chunk mapping or, counted on past the
/// chunks, a block's in the block mapping.
pub(crate) type ChunkId = u32;

/// Bytes at the start of a shared chunk that hold its reference count.
pub(crate) const REFCOUNT: usize = 4;

/// Bytes inside a shared chunk: the body of one message that many output
/// queues send without copying it. The chunk is counted once against the
/// budget and goes back to the pool when its last reference is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blob {
    pub chunk: ChunkId,
    pub off: u16,
    pub len: u16,
}

/// Whether an allocation may use memory past the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Within the budget, or not at all.
    Budget,
    /// A session's final frame (`ERR`, `GOAWAY`): small, once per
    /// connection, and taken from the reserve past the budget.
    Reserve,
}

/// Equal slots carved from one mapping, with the free ones split into
/// those whose pages are resident and those handed back to the kernel.
#[derive(Debug)]
struct Area {
    region: PageBuf,
    /// Bytes in a slot.
    size: usize,
    /// Slots in the mapping.
    slots: u32,
    /// Slots `[fresh, slots)` were never handed out.
    fresh: u32,
    /// Free slots whose pages are resident, most recently freed last.
    warm: Vec<u32>,
    /// Free slots whose pages went back to the kernel.
    cold: Vec<u32>,
}

impl Area {
    fn new(size: usize, slots: usize) -> Option<Self> {
        let slots = slots.min(u32::MAX as usize);
        let region = PageBuf::new(slots * size)?;
        let (warm, cold) = (Vec::new(), Vec::new());
        Some(Self { region, size, slots: slots as u32, fresh: 0, warm, cold })
    }

    fn free(&self) -> usize {
        self.warm.len() + self.cold.len() + (self.slots - self.fresh) as usize
    }

    fn take(&mut self) -> Option<u32> {
        match self.warm.pop().or_else(|| self.cold.pop()) {
            Some(i) => Some(i),
            None if self.fresh < self.slots => {
                self.fresh += 1;
                Some(self.fresh - 1)
            }
            None => None,
        }
    }

    fn bytes(&self, i: u32) -> &[u8] {
        let at = i as usize * self.size;
        &self.region[at..at + self.size]
    }

    fn bytes_mut(&mut self, i: u32) -> &mut [u8] {
        let at = i as usize * self.size;
        &mut self.region[at..at + self.size]
    }

    /// Hands the pages of free slots back to the kernel, keeping the
    /// `keep` most recently used resident. Runs of adjacent slots are
    /// released with one call.
    fn trim(&mut self, keep: usize) {
        if self.warm.len() <= keep {
            return;
        }
        let split = self.warm.len() - keep;
        let mut spare: Vec<u32> = self.warm.drain(..split).collect();
        spare.sort_unstable();
        let mut run_start = 0;
        for i in 1..=spare.len() {
            if i == spare.len() || spare[i] != spare[i - 1] + 1 {
                let first = spare[run_start] as usize * self.size;
                self.region.release(first, (i - run_start) * self.size);
                run_start = i;
            }
        }
        self.cold.extend(spare);
    }
}

/// One core's chunk pool and budget.
#[derive(Debug)]
pub(crate) struct Memory {
    /// Chunks: ids `0..chunks.slots`.
    chunks: Area,
    /// Blocks for shared bodies: ids `chunks.slots..`, after the chunks'.
    blocks: Area,
    /// Bytes connections may hold: `pending_budget`.
    limit: usize,
    /// Bytes connections hold: chunks and blocks in use, plus large input
    /// buffers.
    used: usize,
    /// Bytes queued for clients (a part of `used`).
    pending: usize,
    /// Most bytes one connection may have queued: `max_pending`.
    max_pending: usize,
    /// Where `used`, `pending` and the pool's size are published.
    counters: Arc<CoreCounters>,
}

impl Memory {
    /// Reserves the mappings for `limit` bytes of budget plus the reserve
    /// for final frames (`reserve_chunks`); `None` if the kernel refuses.
    pub(crate) fn new(
        limit: usize,
        reserve_chunks: usize,
        max_pending: usize,
        counters: Arc<CoreCounters>,
    ) -> Option<Self> {
        let chunks = Area::new(CHUNK, limit / CHUNK + reserve_chunks)?;
        let ids_left = (u32::MAX - chunks.slots) as usize;
        let blocks = Area::new(BLOCK, (limit / BLOCK).min(ids_left))?;
        Some(Self { chunks, blocks, limit, used: 0, pending: 0, max_pending, counters })
    }

    /// Most bytes one connection may have queued.
    pub(crate) fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Changes `max_pending` (a reload): queues past it take nothing more.
    pub(crate) fn set_max_pending(&mut self, max_pending: usize) {
        self.max_pending = max_pending;
    }

    /// Output queues report their growth and shrinkage here.
    pub(crate) fn note_pending(&mut self, delta: isize) {
        self.pending = self.pending.wrapping_add_signed(delta);
        CoreCounters::set(&self.counters.pending_bytes, self.pending as u64);
    }

    fn charge(&mut self, delta: isize) {
        self.used = self.used.wrapping_add_signed(delta);
        CoreCounters::set(&self.counters.memory_used, self.used as u64);
    }

    fn publish_cache(&self) {
        CoreCounters::set(&self.counters.memory_cached, self.cached() as u64);
    }

    /// Bytes held by connections, charged to the budget.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Budget bytes still free.
    pub(crate) fn room(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Bytes of free chunks and blocks kept resident.
    pub(crate) fn cached(&self) -> usize {
        self.chunks.warm.len() * CHUNK + self.blocks.warm.len() * BLOCK
    }

    /// Whether `bytes` more may be charged.
    pub(crate) fn fits(&self, bytes: usize, charge: Charge) -> bool {
        charge == Charge::Reserve || self.used + bytes <= self.limit
    }

    /// Whether `n` chunks can be had under `charge`.
    pub(crate) fn can_take(&self, n: usize, charge: Charge) -> bool {
        n <= self.chunks.free() && self.fits(n * CHUNK, charge)
    }

    /// A chunk for a connection, or `None` when the budget (or, for the
    /// reserve, the mapping) has no room.
    pub(crate) fn take(&mut self, charge: Charge) -> Option<ChunkId> {
        if !self.fits(CHUNK, charge) {
            return None;
        }
        let id = self.chunks.take()?;
        self.charge(CHUNK as isize);
        CoreCounters::add(&self.counters.buffers_out, 1);
        Some(id)
    }

    /// A chunk (or block) back.
    pub(crate) fn give(&mut self, id: ChunkId) {
        CoreCounters::sub(&self.counters.buffers_out, 1);
        match self.block_index(id) {
            Some(i) => {
                self.charge(-(BLOCK as isize));
                self.blocks.warm.push(i);
            }
            None => {
                self.charge(-(CHUNK as isize));
                self.chunks.warm.push(id);
            }
        }
    }

    /// The index among the blocks of `id`, when it names a block.
    fn block_index(&self, id: ChunkId) -> Option<u32> {
        id.checked_sub(self.chunks.slots)
    }

    /// A fresh block for shared message bodies (a chunk when no block is
    /// left), holding one reference (its writer's); `None` when the budget
    /// has no room.
    pub(crate) fn take_shared(&mut self) -> Option<ChunkId> {
        let block = self.fits(BLOCK, Charge::Budget).then(|| self.blocks.take()).flatten();
        let id = match block {
            Some(i) => {
                self.charge(BLOCK as isize);
                CoreCounters::add(&self.counters.buffers_out, 1);
                self.chunks.slots + i
            }
            None => self.take(Charge::Budget)?,
        };
        self.set_refs(id, 1);
        Some(id)
    }

    /// References to a shared chunk.
    pub(crate) fn refs(&self, id: ChunkId) -> u32 {
        let c = self.chunk(id);
        u32::from_ne_bytes([c[0], c[1], c[2], c[3]])
    }

    fn set_refs(&mut self, id: ChunkId, n: u32) {
        self.chunk_mut(id)[..REFCOUNT].copy_from_slice(&n.to_ne_bytes());
    }

    /// One more reference to a shared chunk.
    pub(crate) fn retain(&mut self, id: ChunkId) {
        self.set_refs(id, self.refs(id) + 1);
    }

    /// Drops a reference to a shared chunk; the last one gives it back.
    pub(crate) fn release(&mut self, id: ChunkId) {
        let n = self.refs(id) - 1;
        if n == 0 {
            self.give(id);
        } else {
            self.set_refs(id, n);
        }
    }

    /// The bytes of a shared message body.
    pub(crate) fn blob(&self, b: Blob) -> &[u8] {
        let off = usize::from(b.off);
        &self.chunk(b.chunk)[off..off + usize::from(b.len)]
    }

    /// The bytes of a chunk, or of a block: [`CHUNK`] or [`BLOCK`] of them.
    pub(crate) fn chunk(&self, id: ChunkId) -> &[u8] {
        match self.block_index(id) {
            Some(i) => self.blocks.bytes(i),
            None => self.chunks.bytes(id),
        }
    }

    pub(crate) fn chunk_mut(&mut self, id: ChunkId) -> &mut [u8] {
        match self.block_index(id) {
            Some(i) => self.blocks.bytes_mut(i),
            None => self.chunks.bytes_mut(id),
        }
    }

    /// A buffer of `len` bytes for one large input frame, charged to the
    /// budget; `None` when it does not fit.
    pub(crate) fn take_large(&mut self, len: usize) -> Option<PageBuf> {
        let rounded = len.div_ceil(page_size()) * page_size();
        if !self.fits(rounded, Charge::Budget) {
            return None;
        }
        let buf = PageBuf::new(len)?;
        self.charge(buf.mapped() as isize);
        CoreCounters::add(&self.counters.buffers_out, 1);
        Some(buf)
    }

    /// Unmaps a large buffer and gives its bytes back to the budget.
    pub(crate) fn give_large(&mut self, buf: PageBuf) {
        self.charge(-(buf.mapped() as isize));
        CoreCounters::sub(&self.counters.buffers_out, 1);
    }

    /// Hands the pages of free chunks back to the kernel, keeping the most
    /// `keep` most recently used resident, and of free blocks beyond the
    /// same bytes.
    pub(crate) fn trim(&mut self, keep: usize) {
        self.chunks.trim(keep);
        self.blocks.trim(keep * CHUNK / BLOCK);
        self.publish_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_chunks_and_the_reserve_goes_past_it() {
        let mut mem = Memory::new(2 * CHUNK, 1, usize::MAX, Default::default()).expect("mapped");
        let a = mem.take(Charge::Budget).expect("first");
        let b = mem.take(Charge::Budget).expect("second");
        assert!(mem.take(Charge::Budget).is_none(), "budget full");
        let c = mem.take(Charge::Reserve).expect("reserve");
        assert!(mem.take(Charge::Reserve).is_none(), "mapping exhausted");
        assert_eq!(mem.used(), 3 * CHUNK);
        for id in [a, b, c] {
            mem.give(id);
        }
        assert_eq!(mem.used(), 0);
        assert_eq!(mem.cached(), 3 * CHUNK);
    }

    #[test]
    fn trim_zeroes_released_chunks_and_keeps_them_usable() {
        let mut mem = Memory::new(8 * CHUNK, 0, usize::MAX, Default::default()).expect("mapped");
        let ids: Vec<_> = (0..5).map(|_| mem.take(Charge::Budget).expect("chunk")).collect();
        for &id in &ids {
            mem.chunk_mut(id).fill(0xAB);
        }
        for &id in &ids {
            mem.give(id);
        }
        mem.trim(1);
        assert_eq!(mem.cached(), CHUNK);
        mem.trim(0);
        assert_eq!(mem.cached(), 0);
        for &id in &ids {
            assert!(mem.chunk(id).iter().all(|&b| b == 0), "released pages read as zero");
        }
        let again = mem.take(Charge::Budget).expect("reused");
        assert!(ids.contains(&again));
    }

    /// Shared bodies go to blocks, charged at their size and given back
    /// with the last reference; when the budget has room for a chunk but
    /// not a block, to a chunk.
    #[test]
    fn shared_bodies_take_a_block_while_the_budget_has_room_for_one() {
        let mut mem =
            Memory::new(BLOCK + CHUNK, 0, usize::MAX, Default::default()).expect("mapped");
        let block = mem.take_shared().expect("a block");
        assert_eq!((mem.chunk(block).len(), mem.used(), mem.refs(block)), (BLOCK, BLOCK, 1));
        mem.chunk_mut(block)[BLOCK - 1] = 7;
        let chunk = mem.take_shared().expect("a chunk: no room for a second block");
        assert_eq!((mem.chunk(chunk).len(), mem.used()), (CHUNK, BLOCK + CHUNK));
        assert!(mem.take_shared().is_none(), "budget full");
        mem.retain(block);
        mem.release(block);
        assert_eq!(mem.used(), BLOCK + CHUNK, "one reference is left");
        mem.release(block);
        mem.release(chunk);
        assert_eq!((mem.used(), mem.cached()), (0, BLOCK + CHUNK));
        mem.trim(0);
        assert_eq!(mem.cached(), 0);
        let again = mem.take_shared().expect("the block again");
        assert_eq!(again, block);
        assert_eq!(mem.chunk(again)[BLOCK - 1], 0, "its pages went back to the kernel");
    }

    #[test]
    fn large_buffers_are_charged_to_the_budget() {
        let mut mem = Memory::new(16 * CHUNK, 0, usize::MAX, Default::default()).expect("mapped");
        let big = mem.take_large(10 * CHUNK).expect("fits");
        assert!(mem.take_large(10 * CHUNK).is_none(), "would pass the budget");
        assert_eq!(mem.used(), 10 * CHUNK);
        mem.give_large(big);
        assert_eq!(mem.used(), 0);
    }
}
