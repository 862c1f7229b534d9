//! What every published payload starts with, so subscribers can count
//! losses, duplicates and gaps, and measure latency:
//! publisher id (u32), sequence (u64), actual send time (u64 ns), intended
//! send time (u64 ns), little-endian, then padding up to the payload size.

/// Bytes of the header; the smallest payload the bench sends.
pub const HEADER: usize = 4 + 8 + 8 + 8;

/// The header of one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which publisher sent it (index within the run).
    pub publisher: u32,
    /// Its sequence number within that publisher, from 0.
    pub seq: u64,
    /// When it was handed to the socket ([`crate::clock::now_ns`]), or 0.
    pub sent_ns: u64,
    /// When the schedule wanted it sent, or 0.
    pub intended_ns: u64,
}

impl Stamp {
    /// Writes the header into the front of `payload` (at least [`HEADER`]).
    pub fn write(&self, payload: &mut [u8]) {
        payload[0..4].copy_from_slice(&self.publisher.to_le_bytes());
        payload[4..12].copy_from_slice(&self.seq.to_le_bytes());
        payload[12..20].copy_from_slice(&self.sent_ns.to_le_bytes());
        payload[20..28].copy_from_slice(&self.intended_ns.to_le_bytes());
    }

    /// Reads the header, `None` if the payload is too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?))
        };
        Some(Self {
            publisher: u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?),
            seq: u64_at(4)?,
            sent_ns: u64_at(12)?,
            intended_ns: u64_at(20)?,
        })
    }
}

/// Counts one subscriber's messages per publisher: in order, duplicates
/// (a sequence already passed) and gaps (a sequence skipped ahead).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    next: Vec<u64>,
    /// The subscriber is owed only some of each publisher's messages (a
    /// queue member, one of many topics): a skip ahead is no gap.
    sparse: bool,
    /// Messages seen for the first time.
    pub unique: u64,
    /// Messages whose sequence was already passed.
    pub duplicates: u64,
    /// Jumps forward in a publisher's sequence.
    pub gaps: u64,
    /// Payloads without a valid header, or from an unknown publisher.
    pub foreign: u64,
}

impl Tally {
    /// A tally for `publishers` publishers.
    pub fn new(publishers: usize) -> Self {
        Self { next: vec![0; publishers], ..Self::default() }
    }

    /// A tally for a subscriber owed only some of the messages of each of
    /// `publishers` publishers: it counts no gaps.
    pub fn sparse(publishers: usize) -> Self {
        Self { sparse: true, ..Self::new(publishers) }
    }

    /// Counts one received payload; returns its stamp if it was valid.
    pub fn count(&mut self, payload: &[u8]) -> Option<Stamp> {
        let Some(stamp) = Stamp::read(payload) else {
            self.foreign += 1;
            return None;
        };
        let Some(next) = self.next.get_mut(stamp.publisher as usize) else {
            self.foreign += 1;
            return None;
        };
        if stamp.seq < *next {
            self.duplicates += 1;
        } else {
            if stamp.seq > *next && !self.sparse {
                self.gaps += 1;
            }
            *next = stamp.seq + 1;
            self.unique += 1;
        }
        Some(stamp)
    }

    /// Adds another tally's counts (not its positions).
    pub fn absorb(&mut self, other: &Tally) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        self.foreign += other.foreign;
    }
}

/// The messages (publisher, sequence) that the members of one queue group
/// received, one bit each: members' sets merged tell a message that went
/// to two members from one that went to one.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    bits: Vec<u64>,
    /// Publishers.
    publishers: u64,
    /// Messages per publisher.
    msgs: u64,
}

impl Seen {
    /// Room for `msgs` messages from each of `publishers` publishers.
    pub fn new(publishers: usize, msgs: u64) -> Self {
        let total = publishers as u64 * msgs;
        Self { bits: vec![0; total.div_ceil(64) as usize], publishers: publishers as u64, msgs }
    }

    /// Marks `stamp`'s message; `false` if it is outside the room given.
    pub fn insert(&mut self, stamp: &Stamp) -> bool {
        if stamp.seq >= self.msgs || u64::from(stamp.publisher) >= self.publishers {
            return false;
        }
        let i = u64::from(stamp.publisher) * self.msgs + stamp.seq;
        self.bits[(i / 64) as usize] |= 1 << (i % 64);
        true
    }

    /// Adds `other`'s messages; returns how many of them were here already
    /// (each one delivered twice). Both must have the same room, or this
    /// one none yet.
    pub fn merge(&mut self, other: &Seen) -> u64 {
        if self.bits.is_empty() {
            *self = Self { bits: vec![0; other.bits.len()], ..*other };
        }
        let mut both = 0;
        for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
            both += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        both
    }

    /// Distinct messages marked.
    pub fn count(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(publisher: u32, seq: u64) -> Vec<u8> {
        let mut p = vec![0; 64];
        Stamp { publisher, seq, sent_ns: 5, intended_ns: 4 }.write(&mut p);
        p
    }

    #[test]
    fn stamps_round_trip() {
        let s = Stamp { publisher: 3, seq: 1 << 40, sent_ns: 9, intended_ns: 8 };
        let mut p = vec![0; HEADER];
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(Stamp::read(&p[..HEADER - 1]), None);
    }

    #[test]
    fn tally_counts_gaps_and_duplicates() {
        let mut t = Tally::new(2);
        for (p, s) in [(0, 0), (0, 1), (1, 0), (0, 4), (0, 2), (0, 5), (1, 1)] {
            t.count(&payload(p, s));
        }
        t.count(b"short");
        t.count(&payload(7, 0));
        assert_eq!((t.unique, t.duplicates, t.gaps, t.foreign), (6, 1, 1, 2));
    }

    #[test]
    fn sparse_tallies_count_no_gaps() {
        let mut t = Tally::sparse(1);
        for s in [0, 3, 7, 7, 2, 9] {
            t.count(&payload(0, s));
        }
        assert_eq!((t.unique, t.duplicates, t.gaps), (4, 2, 0));
    }

    #[test]
    fn seen_sets_tell_messages_delivered_twice() {
        let stamp = |publisher, seq| Stamp { publisher, seq, sent_ns: 0, intended_ns: 0 };
        let (mut a, mut b) = (Seen::new(2, 100), Seen::new(2, 100));
        for seq in 0..60 {
            assert!(a.insert(&stamp(0, seq)));
        }
        for seq in 50..100 {
            assert!(b.insert(&stamp(0, seq)));
        }
        assert!(b.insert(&stamp(1, 99)));
        assert!(!b.insert(&stamp(1, 100)), "past the room given");
        assert!(!b.insert(&stamp(2, 0)), "no such publisher");
        assert_eq!((a.count(), b.count()), (60, 51));
        assert_eq!(a.merge(&b), 10, "50..60 went to both");
        assert_eq!(a.count(), 101);
        // Merging into an empty set copies.
        let mut all = Seen::default();
        assert_eq!(all.merge(&a), 0);
        assert_eq!(all.count(), 101);
    }
}
