//! Delivery accounting of the benchmark runner: payload stamps, loss / duplicate /
//! reorder detection, latency histograms. Pure data, no I/O: unit-tested alone.

use hdrhistogram::Histogram;

/// Bytes of the stamp at the start of every benchmark payload.
pub const STAMP_LEN: usize = 24;
const MAGIC: u32 = 0x5347_4d51; // "SGMQ"

/// What a publisher writes at the start of each payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher in the run.
    pub publisher: u32,
    /// Sequence number, from 0, per publisher.
    pub seq: u64,
    /// Send time in ns since the run's common time base (intended send time in open loop).
    pub sent_ns: u64,
}

impl Stamp {
    /// Writes the stamp into the first [`STAMP_LEN`] bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        if let Some(b) = buf.get_mut(..STAMP_LEN) {
            b[..4].copy_from_slice(&MAGIC.to_le_bytes());
            b[4..8].copy_from_slice(&self.publisher.to_le_bytes());
            b[8..16].copy_from_slice(&self.seq.to_le_bytes());
            b[16..24].copy_from_slice(&self.sent_ns.to_le_bytes());
        }
    }

    /// Reads a stamp; None for a payload that is not ours.
    pub fn read(buf: &[u8]) -> Option<Stamp> {
        let b = buf.get(..STAMP_LEN)?;
        fn arr<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
            b.get(at..at + N)?.try_into().ok()
        }
        if u32::from_le_bytes(arr(b, 0)?) != MAGIC {
            return None;
        }
        Some(Stamp {
            publisher: u32::from_le_bytes(arr(b, 4)?),
            seq: u64::from_le_bytes(arr(b, 8)?),
            sent_ns: u64::from_le_bytes(arr(b, 16)?),
        })
    }
}

/// Per-subscriber record of what arrived from each publisher.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    /// One bit per (publisher, seq) seen.
    seen: Vec<Vec<u64>>,
    /// Highest seq seen per publisher (+1), for reorder detection.
    next: Vec<u64>,
    /// Deliveries counted (including duplicates).
    pub received: u64,
    /// Distinct messages received.
    pub distinct: u64,
    /// Deliveries of a message already received.
    pub duplicates: u64,
    /// Deliveries that arrived after a later message of the same publisher.
    pub reordered: u64,
    /// Payloads without a valid stamp.
    pub foreign: u64,
}

impl SeqTracker {
    /// A tracker for `publishers` publishers.
    pub fn new(publishers: usize) -> SeqTracker {
        SeqTracker {
            seen: vec![Vec::new(); publishers],
            next: vec![0; publishers],
            received: 0,
            distinct: 0,
            duplicates: 0,
            reordered: 0,
            foreign: 0,
        }
    }

    /// Records one delivery.
    pub fn record(&mut self, stamp: Option<Stamp>) {
        self.received += 1;
        let Some(s) = stamp else {
            self.foreign += 1;
            return;
        };
        let p = s.publisher as usize;
        let (Some(bits), Some(next)) = (self.seen.get_mut(p), self.next.get_mut(p)) else {
            self.foreign += 1;
            return;
        };
        let word = (s.seq / 64) as usize;
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        let mask = 1u64 << (s.seq % 64);
        let Some(w) = bits.get_mut(word) else {
            return;
        };
        if *w & mask != 0 {
            self.duplicates += 1;
            return;
        }
        *w |= mask;
        self.distinct += 1;
        if s.seq + 1 < *next {
            self.reordered += 1;
        } else {
            *next = s.seq + 1;
        }
    }

    /// Messages expected but not received.
    pub fn lost(&self, expected: u64) -> u64 {
        expected.saturating_sub(self.distinct)
    }
}

/// A latency histogram in microseconds (1 µs .. 100 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("fixed, valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(publisher: u32, seq: u64) -> Option<Stamp> {
        Some(Stamp {
            publisher,
            seq,
            sent_ns: 0,
        })
    }

    #[test]
    fn stamp_round_trip() {
        let s = Stamp {
            publisher: 7,
            seq: 123_456_789,
            sent_ns: 42,
        };
        let mut buf = [0u8; 64];
        s.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(Stamp::read(&buf[..10]), None);
        assert_eq!(Stamp::read(&[0u8; 24]), None);
    }

    #[test]
    fn in_order_is_clean() {
        let mut t = SeqTracker::new(2);
        for seq in 0..100 {
            t.record(st(0, seq));
            t.record(st(1, seq));
        }
        assert_eq!(
            (t.received, t.distinct, t.duplicates, t.reordered),
            (200, 200, 0, 0)
        );
        assert_eq!(t.lost(200), 0);
    }

    #[test]
    fn loss_duplicates_and_reorder() {
        let mut t = SeqTracker::new(1);
        for seq in [0, 1, 3, 2, 3, 5] {
            t.record(st(0, seq));
        }
        assert_eq!(t.received, 6);
        assert_eq!(t.distinct, 5);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.reordered, 1); // 2 after 3
        assert_eq!(t.lost(6), 1); // 4 never came
        t.record(None);
        t.record(st(9, 0));
        assert_eq!(t.foreign, 2);
    }

    #[test]
    fn histograms_merge() {
        let mut a = histogram();
        let mut b = histogram();
        a.record(10).unwrap();
        b.record(1000).unwrap();
        a.add(&b).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.max() >= 1000);
    }
}
