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
            if stamp.seq > *next {
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
}
