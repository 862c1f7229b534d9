//! glommio's requirement on locked memory, checked before anything listens.
//!
//! glommio 0.9 refuses to create an executor (`MemLockLimit`) when the soft
//! `RLIMIT_MEMLOCK` is below a fixed 512 KiB. Its `io_memory` setting does
//! not change that: the check comes first and ignores it, and that memory
//! serves storage I/O only (TCP does not use it); registering it with
//! io_uring is best effort, a warning when the limit leaves no room.

/// The soft `RLIMIT_MEMLOCK` glommio needs, bytes.
pub(crate) const MEMLOCK_NEEDED: u64 = 512 << 10;

/// Makes sure the soft locked-memory limit is at least [`MEMLOCK_NEEDED`],
/// raising it to the hard limit when that is enough. Otherwise returns the
/// soft limit in force, bytes.
pub(crate) fn ensure_memlock() -> Result<(), u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        // Unknown: glommio will tell.
        return Ok(());
    }
    if lim.rlim_cur >= MEMLOCK_NEEDED {
        return Ok(());
    }
    if lim.rlim_max >= MEMLOCK_NEEDED {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(lim.rlim_cur)
}
