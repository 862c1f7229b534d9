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
    use rlimit::{getrlimit, setrlimit, Resource};
    // Unknown: glommio will tell.
    let Ok((soft, hard)) = getrlimit(Resource::MEMLOCK) else { return Ok(()) };
    if soft >= MEMLOCK_NEEDED {
        return Ok(());
    }
    if hard >= MEMLOCK_NEEDED && setrlimit(Resource::MEMLOCK, hard, hard).is_ok() {
        return Ok(());
    }
    Err(soft)
}
