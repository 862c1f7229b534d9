//! Software prefetch, for the fan-out loop: with hundreds of subscribers,
//! each delivery lands in a different slot and a different buffer, too many
//! streams for the hardware prefetcher, so the loop asks for the lines it
//! will touch a few subscribers ahead.

/// Hints the CPU to bring the cache line holding `ptr` into its caches. A
/// hint only: any address is allowed, nothing is read or written.
#[inline(always)]
pub(crate) fn line<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and has no observable effect but timing.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
