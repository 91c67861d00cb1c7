//! Record framing for a shard's log: `[len: u32 LE][crc: u32 LE][kind: u8][payload]`,
//! where `len` counts `kind` and `payload` and `crc` is CRC-32 (IEEE) of them. A `len` of
//! 0 is padding: the rest of the block is zeros and the next frame starts on the next
//! block boundary (commits are padded to the block size for direct I/O).
//!
//! [`scan`] reads a log back and stops at the first frame it cannot trust, saying where
//! and why: what follows a torn or corrupt frame is never used, and the caller truncates
//! the log there (a torn tail is what a crash during a write leaves; damage before the
//! last commit is reported with its offset).

/// Bytes before a frame's payload: length, checksum, kind.
pub const HEADER: usize = 9;

/// The largest payload a frame may carry (a retained message or a queued PUBLISH is at
/// most the broker's `max_packet_size`, itself at most 256 MiB).
pub const MAX_PAYLOAD: usize = 1 << 28;

/// Appends one frame of `kind` carrying `payload`.
///
/// # Panics
///
/// If `payload` is larger than [`MAX_PAYLOAD`] (a caller bug: records are bounded by the
/// broker's own limits).
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= MAX_PAYLOAD,
        "record larger than MAX_PAYLOAD"
    );
    let len = (1 + payload.len()) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// Pads `out` with zeros to a multiple of `block` (a power of two), so the next commit
/// starts on a fresh block. Returns the bytes added.
pub fn pad(out: &mut Vec<u8>, block: usize) -> usize {
    let rem = out.len() % block;
    if rem == 0 {
        return 0;
    }
    let n = block - rem;
    out.resize(out.len() + n, 0);
    n
}

/// Why [`scan`] stopped before the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A frame runs past the end of what was read: a write that did not finish.
    Torn,
    /// A frame's checksum does not match its contents, or its length is impossible.
    Corrupt,
}

/// What [`scan`] found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// (kind, payload range in the scanned bytes) of every frame that can be trusted, in
    /// order.
    pub records: Vec<(u8, std::ops::Range<usize>)>,
    /// Bytes up to the end of the last trusted frame (or padding block): where the log
    /// must be truncated before anything is appended.
    pub valid: usize,
    /// Where and why the scan stopped before the end, if it did.
    pub stopped: Option<(usize, Stop)>,
}

/// Reads the frames of `log` (a whole log, blocks of `block` bytes, a power of two) up to
/// the first one that cannot be trusted.
pub fn scan(log: &[u8], block: usize) -> Scan {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let stopped = loop {
        let Some(header) = log.get(pos..pos + HEADER) else {
            // Fewer bytes than a header: the end, or a header torn off (zeros are padding
            // the writer left, anything else is a torn write).
            let rest = log.get(pos..).unwrap_or_default();
            break rest.iter().any(|b| *b != 0).then_some((pos, Stop::Torn));
        };
        let word = |at: usize| -> u32 {
            let mut b = [0u8; 4];
            b.copy_from_slice(header.get(at..at + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let len = word(0) as usize;
        if len == 0 {
            // Padding to the end of the block; a block that is not all zeros after a zero
            // length was not written by us.
            let next = (pos / block + 1) * block;
            let pad = log.get(pos..next.min(log.len())).unwrap_or_default();
            if pad.iter().any(|b| *b != 0) {
                break Some((pos, Stop::Corrupt));
            }
            if next >= log.len() {
                pos = log.len();
                break None;
            }
            pos = next;
            continue;
        }
        if len > MAX_PAYLOAD + 1 {
            break Some((pos, Stop::Corrupt));
        }
        let Some(body) = log.get(pos + 8..pos + 8 + len) else {
            break Some((pos, Stop::Torn));
        };
        if crc32fast::hash(body) != word(4) {
            break Some((pos, Stop::Corrupt));
        }
        let kind = body.first().copied().unwrap_or(0);
        records.push((kind, pos + HEADER..pos + 8 + len));
        pos += 8 + len;
    };
    let valid = match stopped {
        Some((at, _)) => at,
        None => pos.min(log.len()),
    };
    Scan {
        records,
        valid,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 64;

    /// A log of two commits: frames, padded to the block.
    fn log() -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let records: Vec<(u8, Vec<u8>)> = (0..7u8)
            .map(|i| (i % 3 + 1, vec![i; usize::from(i) * 5]))
            .collect();
        let mut out = Vec::new();
        for (i, (k, p)) in records.iter().enumerate() {
            encode(*k, p, &mut out);
            if i == 3 {
                pad(&mut out, BLOCK);
            }
        }
        pad(&mut out, BLOCK);
        (out, records)
    }

    fn payloads(log: &[u8], s: &Scan) -> Vec<(u8, Vec<u8>)> {
        s.records
            .iter()
            .map(|(k, r)| (*k, log[r.clone()].to_vec()))
            .collect()
    }

    #[test]
    fn frames_round_trip_across_padding() {
        let (log, records) = log();
        assert_eq!(log.len() % BLOCK, 0);
        let s = scan(&log, BLOCK);
        assert_eq!(s.stopped, None);
        assert_eq!(s.valid, log.len());
        assert_eq!(payloads(&log, &s), records);
        assert_eq!(scan(&[], BLOCK).records, []);
    }

    #[test]
    fn a_torn_tail_keeps_every_whole_frame_before_it() {
        let (log, records) = log();
        let ends: Vec<usize> = scan(&log, BLOCK)
            .records
            .iter()
            .map(|(_, r)| r.end)
            .collect();
        for cut in 0..log.len() {
            let s = scan(&log[..cut], BLOCK);
            let whole = ends.iter().filter(|e| **e <= cut).count();
            assert_eq!(payloads(&log[..cut], &s), records[..whole], "cut at {cut}");
            assert!(s.valid <= cut);
            if let Some((at, why)) = s.stopped {
                assert_eq!(why, Stop::Torn, "cut at {cut}");
                assert_eq!(at, s.valid);
            }
        }
    }

    #[test]
    fn a_corrupt_byte_stops_the_scan_at_its_frame() {
        let (log, records) = log();
        let clean = scan(&log, BLOCK);
        for (i, (_, range)) in clean.records.iter().enumerate() {
            if range.is_empty() {
                continue;
            }
            let mut bad = log.clone();
            bad[range.start] ^= 0x40;
            let s = scan(&bad, BLOCK);
            assert_eq!(payloads(&bad, &s), records[..i], "record {i}");
            assert_eq!(s.stopped, Some((range.start - HEADER, Stop::Corrupt)));
        }
        // Garbage where padding should be (after a zero length: padding that is not).
        let mut bad = log.clone();
        let pad_at = clean.records[3].1.end + 5;
        bad[pad_at] = 7;
        let s = scan(&bad, BLOCK);
        assert_eq!(s.records.len(), 4);
        assert_eq!(s.stopped.map(|(_, w)| w), Some(Stop::Corrupt));
        // An impossible length.
        let mut bad = log;
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(scan(&bad, BLOCK).stopped, Some((0, Stop::Corrupt)));
    }
}
