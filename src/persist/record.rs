//! The records of a shard's log that describe its persistent sessions, each the payload
//! of one [`frame`](super::frame) whose kind says which record it is.
//!
//! Records name sessions by client identifier (stable across restarts, unlike a shard's
//! slot ids) and times as wall-clock milliseconds since the Unix epoch (an offline
//! session's expiry must survive a restart). Strings are UTF-8 with a 16-bit length, as
//! in MQTT; a record that does not decode is reported, never trusted.

use bytestring::ByteString;

/// One change to the persistent sessions of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session was created (empty).
    SessionCreated {
        /// Its client identifier.
        client_id: ByteString,
    },
    /// The session and everything in it are gone.
    SessionRemoved {
        /// Its client identifier.
        client_id: ByteString,
    },
    /// It lost its connection at `since_ms` and expires `expiry` seconds later
    /// (`u32::MAX`: never).
    SessionOffline {
        /// Its client identifier.
        client_id: ByteString,
        /// Wall-clock milliseconds since the Unix epoch.
        since_ms: u64,
        /// Seconds it is kept after `since_ms`.
        expiry: u32,
    },
    /// A connection resumed it.
    SessionOnline {
        /// Its client identifier.
        client_id: ByteString,
    },
    /// A subscription was added or replaced.
    Subscribed {
        /// The session's client identifier.
        client_id: ByteString,
        /// The filter's full text.
        filter: ByteString,
        /// The SUBSCRIBE's options byte as on the wire (5.0 §3.8.3.1).
        options: u8,
        /// The 5.0 Subscription Identifier, 0 for none.
        identifier: u32,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// The session's client identifier.
        client_id: ByteString,
        /// The filter's full text.
        filter: ByteString,
    },
}

/// Why a record's payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The frame's kind is not a record kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The payload ends before the record does, or goes on after it.
    #[error("record {0} has the wrong length")]
    Length(u8),
    /// A string is not UTF-8.
    #[error("record {0} holds a string that is not UTF-8")]
    Utf8(u8),
}

const SESSION_CREATED: u8 = 1;
const SESSION_REMOVED: u8 = 2;
const SESSION_OFFLINE: u8 = 3;
const SESSION_ONLINE: u8 = 4;
const SUBSCRIBED: u8 = 5;
const UNSUBSCRIBED: u8 = 6;

impl Record {
    /// The frame kind it is written with.
    pub fn kind(&self) -> u8 {
        match self {
            Record::SessionCreated { .. } => SESSION_CREATED,
            Record::SessionRemoved { .. } => SESSION_REMOVED,
            Record::SessionOffline { .. } => SESSION_OFFLINE,
            Record::SessionOnline { .. } => SESSION_ONLINE,
            Record::Subscribed { .. } => SUBSCRIBED,
            Record::Unsubscribed { .. } => UNSUBSCRIBED,
        }
    }

    /// Appends it as one frame (see [`frame::encode`](super::frame::encode)).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut p = Vec::new();
        match self {
            Record::SessionCreated { client_id }
            | Record::SessionRemoved { client_id }
            | Record::SessionOnline { client_id } => put_str(&mut p, client_id),
            Record::SessionOffline {
                client_id,
                since_ms,
                expiry,
            } => {
                put_str(&mut p, client_id);
                p.extend_from_slice(&since_ms.to_le_bytes());
                p.extend_from_slice(&expiry.to_le_bytes());
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                identifier,
            } => {
                put_str(&mut p, client_id);
                put_str(&mut p, filter);
                p.push(*options);
                p.extend_from_slice(&identifier.to_le_bytes());
            }
            Record::Unsubscribed { client_id, filter } => {
                put_str(&mut p, client_id);
                put_str(&mut p, filter);
            }
        }
        // Every field is bounded (strings by their 16-bit length): always within a frame.
        let _ = super::frame::encode(self.kind(), &p, out);
    }

    /// Reads the record a frame of `kind` carries.
    pub fn read(kind: u8, payload: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { buf: payload, kind };
        let record = match kind {
            SESSION_CREATED => Record::SessionCreated {
                client_id: r.str()?,
            },
            SESSION_REMOVED => Record::SessionRemoved {
                client_id: r.str()?,
            },
            SESSION_ONLINE => Record::SessionOnline {
                client_id: r.str()?,
            },
            SESSION_OFFLINE => Record::SessionOffline {
                client_id: r.str()?,
                since_ms: u64::from_le_bytes(r.array()?),
                expiry: u32::from_le_bytes(r.array()?),
            },
            SUBSCRIBED => Record::Subscribed {
                client_id: r.str()?,
                filter: r.str()?,
                options: r.array::<1>()?[0],
                identifier: u32::from_le_bytes(r.array()?),
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                client_id: r.str()?,
                filter: r.str()?,
            },
            other => return Err(RecordError::UnknownKind(other)),
        };
        if !r.buf.is_empty() {
            return Err(RecordError::Length(kind));
        }
        Ok(record)
    }
}

/// The records of the sealed commits a [`frame::scan`](super::frame::scan) of `log`
/// found, in order; a payload that does not decode as its kind stops the reading there
/// (with the records before it and the error).
pub fn read_all(log: &[u8], scan: &super::frame::Scan) -> (Vec<Record>, Option<RecordError>) {
    let mut out = Vec::with_capacity(scan.records.len());
    for (kind, range) in &scan.records {
        match Record::read(*kind, log.get(range.clone()).unwrap_or_default()) {
            Ok(r) => out.push(r),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Appends a string with its 16-bit length (longer ones are cut at 65,535 bytes: client
/// identifiers and filters never are, MQTT bounds them the same way).
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes().get(..n).unwrap_or_default());
}

struct Reader<'a> {
    buf: &'a [u8],
    kind: u8,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.buf.len() < n {
            return Err(RecordError::Length(self.kind));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn str(&mut self) -> Result<ByteString, RecordError> {
        let n = usize::from(u16::from_le_bytes(self.array()?));
        let kind = self.kind;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| RecordError::Utf8(kind))?;
        Ok(ByteString::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame;
    use super::*;

    fn all() -> Vec<Record> {
        let id = || ByteString::from("dev-ü-1");
        vec![
            Record::SessionCreated { client_id: id() },
            Record::SessionOffline {
                client_id: id(),
                since_ms: 1_764_900_000_000,
                expiry: u32::MAX,
            },
            Record::SessionOnline { client_id: id() },
            Record::Subscribed {
                client_id: id(),
                filter: ByteString::from("$share/g/a/+/#"),
                options: 0b0010_1110,
                identifier: 268_435_455,
            },
            Record::Unsubscribed {
                client_id: id(),
                filter: ByteString::from("a/+"),
            },
            Record::SessionRemoved {
                client_id: ByteString::from(""),
            },
        ]
    }

    #[test]
    fn records_round_trip_through_frames() {
        let mut log = Vec::new();
        for r in all() {
            r.write(&mut log);
        }
        frame::seal(&mut log, 0, 4096);
        let s = frame::scan(&log, 4096);
        assert_eq!(s.stopped, None);
        assert_eq!(read_all(&log, &s), (all(), None));
    }

    #[test]
    fn a_payload_that_does_not_fit_its_kind_is_refused() {
        let mut p = Vec::new();
        Record::SessionOnline {
            client_id: ByteString::from("c"),
        }
        .write(&mut p);
        let payload = &p[frame::HEADER..];
        assert_eq!(
            Record::read(SESSION_OFFLINE, payload),
            Err(RecordError::Length(SESSION_OFFLINE))
        );
        assert_eq!(
            Record::read(SESSION_ONLINE, &[payload, &[0]].concat()),
            Err(RecordError::Length(SESSION_ONLINE))
        );
        assert_eq!(Record::read(99, payload), Err(RecordError::UnknownKind(99)));
        assert_eq!(
            Record::read(SESSION_CREATED, &[1, 0, 0xff]),
            Err(RecordError::Utf8(SESSION_CREATED))
        );
        for n in 0..payload.len() {
            assert!(Record::read(SESSION_ONLINE, &payload[..n]).is_err());
        }
    }
}
