//! Record framing for a shard's log: frames `[len: u32 LE][crc: u32 LE][kind: u8][payload]`
//! (`len` counts `kind` and `payload`; `crc` is CRC-32 (IEEE) of them), grouped into
//! commits. A commit is the frames one shard turn produced, then a [`COMMIT`] frame
//! sealing them (their length and CRC-32), then zeros to the next block boundary (direct
//! I/O writes whole blocks; the next commit starts on a fresh block).
//!
//! [`scan`] reads a log back and keeps only sealed commits: the frames of a commit count
//! all together or not at all, so a crash in the middle of a commit's write never replays
//! half of it. It stops at the first commit it cannot trust, saying where and why: the
//! caller truncates the log there (a torn tail is what a crash during a write leaves;
//! damage before the last commit is reported with its offset). A block of zeros where a
//! commit would start is the end of the log (the writer's padding never fills a block).

/// The block size of every log: commits start and end on a multiple of it. Fixed (not
/// the device's), so that a log moved to a device with other blocks still reads; 4 KiB is
/// a multiple of every direct-I/O alignment in use.
pub const BLOCK: usize = 4096;

/// Bytes before a frame's payload: length, checksum, kind.
pub const HEADER: usize = 9;

/// The kind of the frame that seals a commit; records use the other kinds.
pub const COMMIT: u8 = 0;

/// The largest payload a frame may carry: a queued PUBLISH or a retained message is at most
/// the broker's `max_packet_size` (at most 268,435,455 bytes), with room for what a record
/// adds around it.
pub const MAX_PAYLOAD: usize = (1 << 28) + (1 << 20);

/// A record too large for a frame (see [`MAX_PAYLOAD`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record of {0} bytes is larger than a log frame allows")]
pub struct TooLarge(pub usize);

/// Appends one frame of `kind` (not [`COMMIT`]) carrying `payload`. On error nothing is
/// written.
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), TooLarge> {
    let start = begin(out);
    out.extend_from_slice(payload);
    finish(out, start, kind)
}

/// Starts a frame whose payload the caller appends to `out` in place (no intermediate
/// buffer); [`finish`] completes it. Returns where it starts.
pub fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    start
}

/// Completes the frame [`begin`] started at `start` as one of `kind`:
/// its payload is everything appended since. A payload over [`MAX_PAYLOAD`] is taken back
/// (nothing is written).
pub fn finish(out: &mut Vec<u8>, start: usize, kind: u8) -> Result<(), TooLarge> {
    let payload = out.len().saturating_sub(start + HEADER);
    if payload > MAX_PAYLOAD {
        out.truncate(start);
        return Err(TooLarge(payload));
    }
    let len = (1 + payload) as u32;
    if let Some(k) = out.get_mut(start + 8) {
        *k = kind;
    }
    let crc = crc32fast::hash(out.get(start + 8..).unwrap_or_default());
    if let Some(h) = out.get_mut(start..start + 8) {
        h[..4].copy_from_slice(&len.to_le_bytes());
        h[4..].copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

/// Seals the frames written to `out` since `start` (where this commit began) into one
/// commit, and pads `out` with zeros to a multiple of `block` (a power of two) so the next
/// commit starts on a fresh block.
pub fn seal(out: &mut Vec<u8>, start: usize, block: usize) {
    let body = out.get(start..).unwrap_or_default();
    let mut p = [0u8; 12];
    p[..8].copy_from_slice(&(body.len() as u64).to_le_bytes());
    p[8..].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let start = begin(out);
    out.extend_from_slice(&p);
    // Twelve bytes: never over the limit.
    let _ = finish(out, start, COMMIT);
    let block = block.max(1);
    let rem = out.len() % block;
    if rem != 0 {
        out.resize(out.len() + block - rem, 0);
    }
}

/// Why [`scan`] stopped before the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A commit runs past the end of what was read: a write that did not finish.
    Torn,
    /// A frame or commit does not check out (checksum, length, a hole in a commit, bytes
    /// where padding should be): damage, or a write that did not finish. Either way what
    /// follows cannot be trusted; the label is for the log line, not for recovery policy.
    Corrupt,
}

/// What [`scan`] found in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// (kind, payload range in the scanned bytes) of every record of every sealed commit,
    /// in order.
    pub records: Vec<(u8, std::ops::Range<usize>)>,
    /// Bytes up to the end of the last sealed commit (and its padding, when that was read):
    /// where the log must be truncated; the next commit starts at the next block boundary.
    pub valid: usize,
    /// Where (the start of the first untrusted commit) and why the scan stopped before the
    /// end, if it did.
    pub stopped: Option<(usize, Stop)>,
    /// Sealed commits read.
    pub commits: usize,
}

/// Reads the sealed commits of `log` (blocks of `block` bytes, a power of two) up to the
/// first one that cannot be trusted.
pub fn scan(log: &[u8], block: usize) -> Scan {
    let block = block.max(1);
    let mut records = Vec::new();
    let mut pending: Vec<(u8, std::ops::Range<usize>)> = Vec::new();
    let mut commits = 0;
    let mut pos = 0usize;
    // Where the commit being read began, and the end of the last sealed one.
    let mut start = 0usize;
    let mut valid = 0usize;
    let stop = |at: usize, why: Stop| Some((at, why));
    let stopped = loop {
        let Some(header) = log.get(pos..pos + HEADER) else {
            // Fewer bytes than a header: the end, if nothing of a commit was begun.
            let rest = log.get(pos..).unwrap_or_default();
            if pending.is_empty() && rest.iter().all(|b| *b == 0) {
                break None;
            }
            break stop(start, Stop::Torn);
        };
        let word = |at: usize| -> u32 {
            let mut b = [0u8; 4];
            b.copy_from_slice(header.get(at..at + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let len = word(0) as usize;
        if len == 0 {
            if !pending.is_empty() || pos % block != 0 {
                // Zeros inside a commit: a hole where a frame should be.
                break stop(start, Stop::Corrupt);
            }
            // A block of zeros where a commit would start: the end of the log (anything
            // after it was not written by a finished commit).
            let rest = log.get(pos..).unwrap_or_default();
            if rest.iter().all(|b| *b == 0) {
                break None;
            }
            break stop(pos, Stop::Corrupt);
        }
        if len > MAX_PAYLOAD + 1 {
            break stop(start, Stop::Corrupt);
        }
        let Some(body) = log.get(pos + 8..pos + 8 + len) else {
            break stop(start, Stop::Torn);
        };
        if crc32fast::hash(body) != word(4) {
            break stop(start, Stop::Corrupt);
        }
        let kind = body.first().copied().unwrap_or(0);
        if kind == COMMIT {
            let sealed = log.get(start..pos).unwrap_or_default();
            let mut bytes = [0u8; 8];
            let mut crc = [0u8; 4];
            let ok = match body.get(1..) {
                Some(p) if p.len() == 12 => {
                    bytes.copy_from_slice(p.get(..8).unwrap_or(&[0; 8]));
                    crc.copy_from_slice(p.get(8..).unwrap_or(&[0; 4]));
                    u64::from_le_bytes(bytes) == sealed.len() as u64
                        && u32::from_le_bytes(crc) == crc32fast::hash(sealed)
                }
                _ => false,
            };
            if !ok {
                break stop(start, Stop::Corrupt);
            }
            records.append(&mut pending);
            commits += 1;
            // The next commit starts on the next block boundary; the padding is not read
            // (the seal vouches for the commit, whatever the padding holds).
            pos = ((pos + 8 + len).div_ceil(block) * block).min(log.len());
            valid = pos;
            start = pos;
        } else {
            pending.push((kind, pos + HEADER..pos + 8 + len));
            pos += 8 + len;
        }
    };
    Scan {
        records,
        valid,
        stopped,
        commits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 64;

    /// A log of two commits (records 0-3, then 4-6), each sealed and padded.
    fn log() -> (Vec<u8>, Vec<(u8, Vec<u8>)>) {
        let records: Vec<(u8, Vec<u8>)> = (0..7u8)
            .map(|i| (i % 3 + 1, vec![i; usize::from(i) * 5]))
            .collect();
        let mut out = Vec::new();
        let mut start = 0;
        for (i, (k, p)) in records.iter().enumerate() {
            encode(*k, p, &mut out).unwrap();
            if i == 3 || i == 6 {
                seal(&mut out, start, BLOCK);
                start = out.len();
            }
        }
        (out, records)
    }

    fn payloads(log: &[u8], s: &Scan) -> Vec<(u8, Vec<u8>)> {
        s.records
            .iter()
            .map(|(k, r)| (*k, log[r.clone()].to_vec()))
            .collect()
    }

    /// Where each commit ends (its COMMIT frame's last byte + 1).
    fn commit_ends(log: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut pos = 0;
        while pos + HEADER <= log.len() {
            let len = u32::from_le_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
            if len == 0 {
                pos = (pos / BLOCK + 1) * BLOCK;
                continue;
            }
            if log[pos + 8] == COMMIT {
                ends.push(pos + 8 + len);
            }
            pos += 8 + len;
        }
        ends
    }

    #[test]
    fn sealed_commits_round_trip_across_padding() {
        let (log, records) = log();
        assert_eq!(log.len() % BLOCK, 0);
        let s = scan(&log, BLOCK);
        assert_eq!((s.stopped, s.commits, s.valid), (None, 2, log.len()));
        assert_eq!(payloads(&log, &s), records);
        assert_eq!(scan(&[], BLOCK).records, []);
        // A zero block after the last commit (a preallocated file) is the end.
        let mut longer = log.clone();
        longer.resize(log.len() + 3 * BLOCK, 0);
        let s = scan(&longer, BLOCK);
        assert_eq!((s.stopped, s.valid), (None, log.len()));
        assert_eq!(payloads(&longer, &s), records);
    }

    #[test]
    fn a_torn_tail_keeps_exactly_the_commits_sealed_before_it() {
        let (log, records) = log();
        let ends = commit_ends(&log);
        for cut in 0..log.len() {
            let s = scan(&log[..cut], BLOCK);
            let sealed = ends.iter().filter(|e| **e <= cut).count();
            let want = match sealed {
                0 => 0,
                1 => 4,
                _ => 7,
            };
            assert_eq!(payloads(&log[..cut], &s), records[..want], "cut at {cut}");
            assert!(s.valid <= cut, "cut at {cut}");
        }
    }

    #[test]
    fn damage_anywhere_in_a_commit_drops_the_whole_commit() {
        let (log, records) = log();
        let ends = commit_ends(&log);
        for at in 0..log.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = log.clone();
                bad[at] ^= flip;
                let s = scan(&bad, BLOCK);
                // A flip inside a commit drops it and all after it; the padding after a
                // sealed commit is not read (its seal vouches for it).
                let second = ends[0].div_ceil(BLOCK) * BLOCK;
                let (want, stops) = if at < ends[0] {
                    (0, true)
                } else if at < second {
                    (7, false)
                } else if at < ends[1] {
                    (4, true)
                } else {
                    (7, false)
                };
                assert_eq!(payloads(&bad, &s), records[..want], "flip at {at}");
                assert_eq!(s.stopped.is_some(), stops, "flip at {at}");
                // Whatever was flipped, what is kept stays kept when scanned again after
                // the cut (the padding no longer matters).
                let again = scan(&bad[..s.valid], BLOCK);
                assert_eq!(again.records.len(), s.records.len(), "flip at {at}");
                assert_eq!(again.stopped, None, "flip at {at}");
            }
        }
    }

    #[test]
    fn a_hole_in_a_commit_drops_the_commit() {
        let (log, records) = log();
        let clean = scan(&log, BLOCK);
        // Zero the frame of record 5 (header and payload) in the second commit.
        let r = clean.records[5].1.clone();
        let mut bad = log.clone();
        bad[r.start - HEADER..r.end].fill(0);
        let s = scan(&bad, BLOCK);
        assert_eq!(payloads(&bad, &s), records[..4]);
        assert_eq!(s.stopped.map(|(_, w)| w), Some(Stop::Corrupt));
    }

    #[test]
    fn records_too_large_are_refused_without_writing() {
        let mut out = vec![1, 2, 3];
        let big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(encode(1, &big, &mut out), Err(TooLarge(MAX_PAYLOAD + 1)));
        assert_eq!(out, [1, 2, 3]);
    }
}
