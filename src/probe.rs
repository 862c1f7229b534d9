//! A per-thread marker that is set while the broker's own task code runs
//! (connection polls, cross-core delivery and forwarding), so a counting
//! allocator can tell the broker's allocations from the runtime's reactor
//! bookkeeping around them. Costs one thread-local store per poll.

use std::cell::Cell;

thread_local! {
    static IN_BROKER_CODE: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is running the broker's own task code right now.
/// Reads a `const` thread-local: safe to call from inside an allocator.
#[doc(hidden)]
pub fn in_broker_code() -> bool {
    IN_BROKER_CODE.with(Cell::get)
}

/// Marks the current thread until dropped (and restores what was there).
pub(crate) struct Mark(bool);

pub(crate) fn mark() -> Mark {
    Mark(IN_BROKER_CODE.with(|m| m.replace(true)))
}

impl Drop for Mark {
    fn drop(&mut self) {
        IN_BROKER_CODE.with(|m| m.set(self.0));
    }
}
