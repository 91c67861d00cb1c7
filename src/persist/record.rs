//! The records of a shard's log that describe its persistent sessions, each the payload
//! of one [`frame`](super::frame) whose kind says which record it is.
//!
//! Records name sessions by client identifier (stable across restarts, unlike a shard's
//! slot ids) and times as wall-clock milliseconds since the Unix epoch (an offline
//! session's expiry must survive a restart). Strings are UTF-8 with a 16-bit length, as
//! in MQTT; a record that does not decode is reported, never trusted.

use bytes::Bytes;
use bytestring::ByteString;

/// One change to what a shard keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent session was created (empty), kept `expiry` seconds after its
    /// connection ends (`u32::MAX`: never).
    SessionCreated {
        /// Its client identifier.
        client_id: ByteString,
        /// Its expiry interval, seconds.
        expiry: u32,
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
    /// A connection resumed it, with this expiry interval from now on.
    SessionOnline {
        /// Its client identifier.
        client_id: ByteString,
        /// Its expiry interval, seconds.
        expiry: u32,
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
    /// An application message that sessions (or the retained store) of the shard hold,
    /// written once however many of them hold it; `id` is unique in the shard's log.
    Message {
        /// The shard's number for it.
        id: u64,
        /// When its 5.0 Message Expiry Interval runs out (wall-clock ms), 0: never.
        expires_ms: u64,
        /// The message as a 5.0 PUBLISH packet (topic, payload, QoS, RETAIN and
        /// properties; the packet id means nothing).
        publish: Bytes,
    },
    /// Message `msg` joined the end of the session's outgoing flows, to be sent at `qos`
    /// with `retain`, with these subscription identifiers and through this share group
    /// (empty: none).
    Delivered {
        /// The session's client identifier.
        client_id: ByteString,
        /// The message ([`Record::Message`]).
        msg: u64,
        /// QoS it is sent with (1 or 2).
        qos: u8,
        /// RETAIN as sent.
        retain: bool,
        /// 5.0 Subscription Identifiers sent with it.
        identifiers: Vec<u32>,
        /// The shared subscription it came through, or empty.
        share: ByteString,
        /// The ingress of the message ([`Record::Ingress`]), 0: none.
        ingress: u64,
    },
    /// The session's first unsent delivery of `msg` was sent with `packet_id`.
    Sent {
        /// The session's client identifier.
        client_id: ByteString,
        /// The message.
        msg: u64,
        /// Its packet identifier from now on.
        packet_id: u16,
    },
    /// The client acknowledged QoS 2 delivery `packet_id` with PUBREC: PUBREL is owed.
    Released {
        /// The session's client identifier.
        client_id: ByteString,
        /// The flow's packet identifier.
        packet_id: u16,
    },
    /// Outgoing flow `packet_id` ended (PUBACK, PUBCOMP, a PUBREC with an error, or
    /// discarded).
    Finished {
        /// The session's client identifier.
        client_id: ByteString,
        /// The flow's packet identifier.
        packet_id: u16,
    },
    /// The session's first unsent delivery of `msg` left without being sent (expired,
    /// too large, handed to another member of a share group).
    Unqueued {
        /// The session's client identifier.
        client_id: ByteString,
        /// The message.
        msg: u64,
    },
    /// An incoming QoS 2 PUBLISH `packet_id` was acknowledged with PUBREC: a resend of it
    /// must not be forwarded again until its PUBREL [MQTT-4.3.3-2].
    Qos2Received {
        /// The session's client identifier.
        client_id: ByteString,
        /// The client's packet identifier.
        packet_id: u16,
    },
    /// The incoming QoS 2 flow `packet_id` ended (PUBREL, or refused).
    Qos2Ended {
        /// The session's client identifier.
        client_id: ByteString,
        /// The client's packet identifier.
        packet_id: u16,
    },
    /// Message `msg` is the retained message of `topic`.
    RetainSet {
        /// The topic.
        topic: ByteString,
        /// The message.
        msg: u64,
        /// The ingress it came with ([`Record::Ingress`]), 0: none.
        ingress: u64,
    },
    /// `topic` has no retained message any more.
    RetainCleared {
        /// The topic.
        topic: ByteString,
    },
    /// A QoS 2 message a persistent session published (and got PUBREC for): until
    /// [`Record::Routed`] says every shard made its deliveries durable, recovery delivers it
    /// to the sessions that have no delivery of this ingress yet, so that a crash between
    /// this shard's commit and another's neither loses it nor delivers it twice.
    Ingress {
        /// Unique over shards and restarts.
        ingress: u64,
        /// The publisher (its own subscriptions with No Local do not get it).
        client_id: ByteString,
        /// The message ([`Record::Message`]).
        msg: u64,
    },
    /// Every delivery of the ingress is durable.
    Routed {
        /// The ingress.
        ingress: u64,
    },
    /// The session's will waits for its 5.0 Will Delay Interval: published at `due_ms`
    /// (wall clock), or when the session ends, unless a connection resumes it first.
    WillDelayed {
        /// The session.
        client_id: ByteString,
        /// When it is due (wall-clock ms).
        due_ms: u64,
        /// The will as a message ([`Record::Message`]).
        msg: u64,
    },
    /// The session's delayed will was published or cancelled.
    WillCleared {
        /// The session.
        client_id: ByteString,
    },
    /// The user name of the connection that last served the session (what its
    /// authorization rules are resolved for after a restart, before it reconnects).
    SessionUser {
        /// The session.
        client_id: ByteString,
        /// The user name, None for an anonymous client.
        username: Option<ByteString>,
    },
    /// Session `client_id` had a delivery of `ingress` (a compaction's note of a delivery
    /// that has ended, kept while its ingress may still be unrouted).
    IngressSeen {
        /// The ingress.
        ingress: u64,
        /// The session.
        client_id: ByteString,
    },
}

/// Why a record's payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The frame's kind is not a record kind this version knows: a log written by a newer
    /// version, which this one must not cut.
    #[error("unknown record kind {0} (a log written by a newer version?)")]
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
const MESSAGE: u8 = 7;
const DELIVERED: u8 = 8;
const SENT: u8 = 9;
const RELEASED: u8 = 10;
const FINISHED: u8 = 11;
const UNQUEUED: u8 = 12;
const QOS2_RECEIVED: u8 = 13;
const QOS2_ENDED: u8 = 14;
const RETAIN_SET: u8 = 15;
const RETAIN_CLEARED: u8 = 16;
const INGRESS: u8 = 17;
const ROUTED: u8 = 18;
const INGRESS_SEEN: u8 = 19;
const WILL_DELAYED: u8 = 20;
const WILL_CLEARED: u8 = 21;
const SESSION_USER: u8 = 22;

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
            Record::Message { .. } => MESSAGE,
            Record::Delivered { .. } => DELIVERED,
            Record::Sent { .. } => SENT,
            Record::Released { .. } => RELEASED,
            Record::Finished { .. } => FINISHED,
            Record::Unqueued { .. } => UNQUEUED,
            Record::Qos2Received { .. } => QOS2_RECEIVED,
            Record::Qos2Ended { .. } => QOS2_ENDED,
            Record::RetainSet { .. } => RETAIN_SET,
            Record::RetainCleared { .. } => RETAIN_CLEARED,
            Record::Ingress { .. } => INGRESS,
            Record::Routed { .. } => ROUTED,
            Record::IngressSeen { .. } => INGRESS_SEEN,
            Record::WillDelayed { .. } => WILL_DELAYED,
            Record::WillCleared { .. } => WILL_CLEARED,
            Record::SessionUser { .. } => SESSION_USER,
        }
    }

    /// Appends it as one frame (see [`frame::encode`](super::frame::encode)). Fails only
    /// for a message larger than a frame allows (nothing is written then).
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), super::frame::TooLarge> {
        // The payload is written in place, after the frame's header.
        let start = super::frame::begin(out);
        let p = &mut *out;
        match self {
            Record::SessionRemoved { client_id } => put_str(p, client_id),
            Record::SessionCreated { client_id, expiry }
            | Record::SessionOnline { client_id, expiry } => {
                put_str(p, client_id);
                p.extend_from_slice(&expiry.to_le_bytes());
            }
            Record::SessionOffline {
                client_id,
                since_ms,
                expiry,
            } => {
                put_str(p, client_id);
                p.extend_from_slice(&since_ms.to_le_bytes());
                p.extend_from_slice(&expiry.to_le_bytes());
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                identifier,
            } => {
                put_str(p, client_id);
                put_str(p, filter);
                p.push(*options);
                p.extend_from_slice(&identifier.to_le_bytes());
            }
            Record::Unsubscribed { client_id, filter } => {
                put_str(p, client_id);
                put_str(p, filter);
            }
            Record::Message {
                id,
                expires_ms,
                publish,
            } => {
                p.reserve(16 + publish.len());
                p.extend_from_slice(&id.to_le_bytes());
                p.extend_from_slice(&expires_ms.to_le_bytes());
                p.extend_from_slice(publish);
            }
            Record::Delivered {
                client_id,
                msg,
                qos,
                retain,
                identifiers,
                share,
                ingress,
            } => {
                put_str(p, client_id);
                p.extend_from_slice(&msg.to_le_bytes());
                p.push(*qos);
                p.push(u8::from(*retain));
                put_str(p, share);
                p.extend_from_slice(&ingress.to_le_bytes());
                // At most one identifier per subscription of one client: far below 2^16.
                let n = identifiers.len().min(usize::from(u16::MAX));
                p.extend_from_slice(&(n as u16).to_le_bytes());
                for i in identifiers.iter().take(n) {
                    p.extend_from_slice(&i.to_le_bytes());
                }
            }
            Record::Sent {
                client_id,
                msg,
                packet_id,
            } => {
                put_str(p, client_id);
                p.extend_from_slice(&msg.to_le_bytes());
                p.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::Released {
                client_id,
                packet_id,
            }
            | Record::Finished {
                client_id,
                packet_id,
            }
            | Record::Qos2Received {
                client_id,
                packet_id,
            }
            | Record::Qos2Ended {
                client_id,
                packet_id,
            } => {
                put_str(p, client_id);
                p.extend_from_slice(&packet_id.to_le_bytes());
            }
            Record::Unqueued { client_id, msg } => {
                put_str(p, client_id);
                p.extend_from_slice(&msg.to_le_bytes());
            }
            Record::RetainSet {
                topic,
                msg,
                ingress,
            } => {
                put_str(p, topic);
                p.extend_from_slice(&msg.to_le_bytes());
                p.extend_from_slice(&ingress.to_le_bytes());
            }
            Record::RetainCleared { topic } => put_str(p, topic),
            Record::Ingress {
                ingress,
                client_id,
                msg,
            } => {
                p.extend_from_slice(&ingress.to_le_bytes());
                put_str(p, client_id);
                p.extend_from_slice(&msg.to_le_bytes());
            }
            Record::Routed { ingress } => p.extend_from_slice(&ingress.to_le_bytes()),
            Record::IngressSeen { ingress, client_id } => {
                p.extend_from_slice(&ingress.to_le_bytes());
                put_str(p, client_id);
            }
            Record::WillDelayed {
                client_id,
                due_ms,
                msg,
            } => {
                put_str(p, client_id);
                p.extend_from_slice(&due_ms.to_le_bytes());
                p.extend_from_slice(&msg.to_le_bytes());
            }
            Record::WillCleared { client_id } => put_str(p, client_id),
            Record::SessionUser {
                client_id,
                username,
            } => {
                put_str(p, client_id);
                if let Some(u) = username {
                    p.push(1);
                    put_str(p, u);
                } else {
                    p.push(0);
                }
            }
        }
        let kind = self.kind();
        super::frame::finish(out, start, kind)
    }

    /// Appends a [`Record::Message`] frame without building the record (the PUBLISH
    /// bytes are copied once, into the frame).
    pub fn write_message(
        out: &mut Vec<u8>,
        id: u64,
        expires_ms: u64,
        publish: &[u8],
    ) -> Result<(), super::frame::TooLarge> {
        let start = super::frame::begin(out);
        out.reserve(16 + publish.len());
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&expires_ms.to_le_bytes());
        out.extend_from_slice(publish);
        super::frame::finish(out, start, MESSAGE)
    }

    /// Reads the record a frame of `kind` carries.
    pub fn read(kind: u8, payload: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader { buf: payload, kind };
        let record = match kind {
            SESSION_CREATED => Record::SessionCreated {
                client_id: r.str()?,
                expiry: r.u32()?,
            },
            SESSION_REMOVED => Record::SessionRemoved {
                client_id: r.str()?,
            },
            SESSION_ONLINE => Record::SessionOnline {
                client_id: r.str()?,
                expiry: r.u32()?,
            },
            SESSION_OFFLINE => Record::SessionOffline {
                client_id: r.str()?,
                since_ms: r.u64()?,
                expiry: r.u32()?,
            },
            SUBSCRIBED => Record::Subscribed {
                client_id: r.str()?,
                filter: r.str()?,
                options: r.array::<1>()?[0],
                identifier: r.u32()?,
            },
            UNSUBSCRIBED => Record::Unsubscribed {
                client_id: r.str()?,
                filter: r.str()?,
            },
            MESSAGE => Record::Message {
                id: r.u64()?,
                expires_ms: r.u64()?,
                publish: Bytes::copy_from_slice(r.take(r.buf.len())?),
            },
            DELIVERED => {
                let client_id = r.str()?;
                let msg = r.u64()?;
                let qos = r.array::<1>()?[0];
                let retain = r.array::<1>()?[0] != 0;
                let share = r.str()?;
                let ingress = r.u64()?;
                let n = usize::from(u16::from_le_bytes(r.array()?));
                let mut identifiers = Vec::with_capacity(n.min(r.buf.len() / 4));
                for _ in 0..n {
                    identifiers.push(r.u32()?);
                }
                Record::Delivered {
                    client_id,
                    msg,
                    qos,
                    retain,
                    identifiers,
                    share,
                    ingress,
                }
            }
            SENT => Record::Sent {
                client_id: r.str()?,
                msg: r.u64()?,
                packet_id: r.u16()?,
            },
            RELEASED => {
                let (client_id, packet_id) = r.client_and_id()?;
                Record::Released {
                    client_id,
                    packet_id,
                }
            }
            FINISHED => {
                let (client_id, packet_id) = r.client_and_id()?;
                Record::Finished {
                    client_id,
                    packet_id,
                }
            }
            UNQUEUED => Record::Unqueued {
                client_id: r.str()?,
                msg: r.u64()?,
            },
            QOS2_RECEIVED => {
                let (client_id, packet_id) = r.client_and_id()?;
                Record::Qos2Received {
                    client_id,
                    packet_id,
                }
            }
            QOS2_ENDED => {
                let (client_id, packet_id) = r.client_and_id()?;
                Record::Qos2Ended {
                    client_id,
                    packet_id,
                }
            }
            RETAIN_SET => Record::RetainSet {
                topic: r.str()?,
                msg: r.u64()?,
                ingress: r.u64()?,
            },
            RETAIN_CLEARED => Record::RetainCleared { topic: r.str()? },
            INGRESS => Record::Ingress {
                ingress: r.u64()?,
                client_id: r.str()?,
                msg: r.u64()?,
            },
            ROUTED => Record::Routed { ingress: r.u64()? },
            INGRESS_SEEN => Record::IngressSeen {
                ingress: r.u64()?,
                client_id: r.str()?,
            },
            WILL_DELAYED => Record::WillDelayed {
                client_id: r.str()?,
                due_ms: r.u64()?,
                msg: r.u64()?,
            },
            WILL_CLEARED => Record::WillCleared {
                client_id: r.str()?,
            },
            SESSION_USER => Record::SessionUser {
                client_id: r.str()?,
                username: match r.array::<1>()?[0] {
                    0 => None,
                    1 => Some(r.str()?),
                    _ => return Err(RecordError::Length(kind)),
                },
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

    /// A client identifier and a packet id (four records are just that).
    fn client_and_id(&mut self) -> Result<(ByteString, u16), RecordError> {
        Ok((self.str()?, self.u16()?))
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
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
            Record::SessionCreated {
                client_id: id(),
                expiry: 30,
            },
            Record::SessionOffline {
                client_id: id(),
                since_ms: 1_764_900_000_000,
                expiry: u32::MAX,
            },
            Record::SessionOnline {
                client_id: id(),
                expiry: u32::MAX,
            },
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
            Record::Message {
                id: u64::MAX - 3,
                expires_ms: 17,
                publish: Bytes::from_static(b"\x32\x05\x00\x01a\x00\x01"),
            },
            Record::Delivered {
                client_id: id(),
                msg: 9,
                qos: 2,
                retain: true,
                identifiers: vec![1, 268_435_455],
                share: ByteString::from("$share/g/a"),
                ingress: 5,
            },
            Record::Delivered {
                client_id: id(),
                msg: 10,
                qos: 1,
                retain: false,
                identifiers: vec![],
                share: ByteString::new(),
                ingress: 0,
            },
            Record::Sent {
                client_id: id(),
                msg: 9,
                packet_id: 65_535,
            },
            Record::Released {
                client_id: id(),
                packet_id: 1,
            },
            Record::Finished {
                client_id: id(),
                packet_id: 2,
            },
            Record::Unqueued {
                client_id: id(),
                msg: 10,
            },
            Record::Qos2Received {
                client_id: id(),
                packet_id: 3,
            },
            Record::Qos2Ended {
                client_id: id(),
                packet_id: 3,
            },
            Record::RetainSet {
                topic: ByteString::from("a/b"),
                msg: 9,
                ingress: 3,
            },
            Record::RetainCleared {
                topic: ByteString::from("a/b"),
            },
            Record::Ingress {
                ingress: u64::MAX,
                client_id: id(),
                msg: 9,
            },
            Record::Routed { ingress: 1 },
            Record::IngressSeen {
                ingress: 2,
                client_id: id(),
            },
            Record::WillDelayed {
                client_id: id(),
                due_ms: 1_764_900_000_000,
                msg: 4,
            },
            Record::WillCleared { client_id: id() },
            Record::SessionUser {
                client_id: id(),
                username: Some(ByteString::from("alice")),
            },
            Record::SessionUser {
                client_id: id(),
                username: None,
            },
        ]
    }

    #[test]
    fn records_round_trip_through_frames() {
        let mut log = Vec::new();
        for r in all() {
            r.write(&mut log).unwrap();
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
            expiry: 0,
        }
        .write(&mut p)
        .unwrap();
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
