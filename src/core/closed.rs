//! The record of closed connections: a bounded ring per core of who left,
//! when and why, for `/connz?state=closed`. Written once per close and
//! never per message.

use std::{collections::VecDeque, net::SocketAddr, time::SystemTime};

use serde::Serialize;

use super::slot::{Slot, Traffic};

/// One closed connection.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedConn {
    /// Its broker-wide id; none for a connection refused before it had one.
    pub id: Option<u64>,
    /// The core that served it.
    pub core: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// The name it gave in `HELLO`.
    pub name: Option<Box<str>>,
    /// Why it closed, in words.
    pub reason: String,
    /// The code of the fatal `ERR` it was sent, if any.
    pub error_code: Option<u16>,
    /// When it was accepted.
    #[serde(with = "rfc3339")]
    pub opened_at: SystemTime,
    /// When its slot was freed.
    #[serde(with = "rfc3339")]
    pub closed_at: SystemTime,
    /// Subscriptions it held when it left.
    pub subscriptions: usize,
    /// Its final counters.
    #[serde(flatten)]
    pub traffic: Traffic,
}

impl ClosedConn {
    /// The record of `slot`, freed now, serving on `core`.
    pub(crate) fn of(slot: &Slot, core: usize) -> Self {
        let closed_at = SystemTime::now();
        let exit = slot.exit();
        Self {
            id: Some(slot.id()),
            core,
            peer: slot.peer(),
            name: slot.name().map(Box::from),
            reason: exit.map_or_else(|| "closed".into(), |e| e.describe()),
            error_code: exit.and_then(|e| e.code()),
            opened_at: closed_at - slot.accepted_at().elapsed(),
            closed_at,
            subscriptions: slot.subs_at_exit(),
            traffic: slot.traffic(),
        }
    }

    /// A connection refused at once because the core had no slot left.
    pub(crate) fn refused(peer: SocketAddr, core: usize, code: u16) -> Self {
        let now = SystemTime::now();
        Self {
            id: None,
            core,
            peer,
            name: None,
            reason: "server full".into(),
            error_code: Some(code),
            opened_at: now,
            closed_at: now,
            subscriptions: 0,
            traffic: Traffic::default(),
        }
    }
}

/// The last closed connections of one core, newest last.
#[derive(Debug)]
pub(crate) struct ClosedRing {
    entries: VecDeque<ClosedConn>,
    capacity: usize,
}

impl ClosedRing {
    /// A ring keeping at most `capacity` records (0: none).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::new(), capacity }
    }

    /// Keeps `conn`, forgetting the oldest record when full.
    pub(crate) fn record(&mut self, conn: ClosedConn) {
        if self.capacity == 0 {
            return;
        }
        let len = self.entries.len();
        if len == self.capacity {
            self.entries.pop_front();
        } else if len == self.entries.capacity() {
            // Grows by doubling as usual, but never past the bound.
            self.entries.reserve_exact(len.max(16).min(self.capacity - len));
        }
        self.entries.push_back(conn);
    }

    /// Records kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `n` newest records, newest first.
    pub(crate) fn newest(&self, n: usize) -> Vec<ClosedConn> {
        self.entries.iter().rev().take(n).cloned().collect()
    }
}

/// Wall-clock times as RFC 3339 text.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`crate::config::CLOSED_RECORD`], which the memory bound counts per
    /// record, holds the longest record.
    #[test]
    fn a_record_fits_the_memory_the_bound_counts() {
        let longest_reason = "protocol error 65535 (unsupported version)".len() + 16;
        let record =
            std::mem::size_of::<ClosedConn>() + corecast_proto::MAX_CLIENT_NAME + longest_reason;
        assert!(record as u64 <= crate::config::CLOSED_RECORD, "{record}");
    }

    #[test]
    fn the_ring_allocates_no_more_than_its_capacity() {
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let mut ring = ClosedRing::new(100);
        for code in 0..1000 {
            ring.record(ClosedConn::refused(peer, 0, code));
            assert!(ring.entries.capacity() <= 100, "{}", ring.entries.capacity());
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_within_its_capacity() {
        let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
        let mut ring = ClosedRing::new(3);
        for code in 0..5 {
            ring.record(ClosedConn::refused(peer, 0, code));
        }
        assert_eq!(ring.len(), 3);
        let codes: Vec<_> = ring.newest(10).iter().map(|c| c.error_code).collect();
        assert_eq!(codes, [Some(4), Some(3), Some(2)]);
        let mut off = ClosedRing::new(0);
        off.record(ClosedConn::refused(peer, 0, 1));
        assert_eq!(off.len(), 0);
    }
}
