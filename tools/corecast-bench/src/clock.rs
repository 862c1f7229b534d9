//! A monotonic nanosecond clock shared by every thread of the bench, and
//! absolute sleeps on it (so a paced publisher does not drift).

use std::time::Duration;

use nix::{
    errno::Errno,
    sys::{prctl, time::TimeSpec},
    time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags},
};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("Linux has CLOCK_MONOTONIC");
    Duration::from(now).as_nanos() as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reads `deadline_ns` (returns at once if
/// it already has).
pub fn sleep_until(deadline_ns: u64) {
    let deadline = TimeSpec::from(Duration::from_nanos(deadline_ns));
    let (clock, flags) = (ClockId::CLOCK_MONOTONIC, ClockNanosleepFlags::TIMER_ABSTIME);
    while clock_nanosleep(clock, flags, &deadline) == Err(Errno::EINTR) {}
}

/// Asks the kernel for 1 µs timer slack on this thread (the default 50 µs
/// would blur a 20 µs send interval).
pub fn tight_timer_slack() {
    let _ = prctl::set_timerslack(1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_until_deadline() {
        let start = now_ns();
        sleep_until(start + 2_000_000);
        assert!(now_ns() >= start + 2_000_000);
        sleep_until(start);
    }
}
