//! The MQTT wire protocol: packets of 3.1, 3.1.1 and 5.0, their decoding and encoding,
//! and the topic name and filter rules.
//!
//! **Owns:** the byte format and every rule that can be checked by looking at one packet
//! (reserved bits, lengths, UTF-8, wildcards, property placement, reason code sets).
//!
//! **Must not touch:** I/O, time, runtimes, or any broker or session state. A rule that
//! needs history (a second CONNECT, a packet id already in use, a topic alias beyond the
//! negotiated maximum) belongs to the session layer. This keeps the codec testable with
//! bytes alone and usable by the client library unchanged.
//!
//! The entry points are [`decode`] (bytes to [`Packet`], `Ok(None)` for "need more"),
//! [`Packet::encode`], and [`encode_publish_header`] for encoding one payload for many
//! subscribers. Topic and payload of a decoded PUBLISH are `Bytes` slices of the read
//! buffer: no copy is made until something decides to keep them long-term.
//!
//! ```
//! use bytes::BytesMut;
//! use surgemq::protocol::{decode, DecodeOptions, Packet, ProtocolVersion};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A QoS 0 PUBLISH to "a/b" with payload "hello", and half of the next frame.
//! let mut buf = BytesMut::from(&b"\x30\x0a\x00\x03a/bhello\x30"[..]);
//! let opts = DecodeOptions { version: ProtocolVersion::V3_1_1, max_packet_size: 1 << 20 };
//! let Some(Packet::Publish(p)) = decode(&mut buf, &opts)? else { panic!("a PUBLISH") };
//! assert_eq!((&*p.topic, &p.payload[..]), ("a/b", &b"hello"[..]));
//! assert_eq!(decode(&mut buf, &opts)?, None); // need more bytes
//!
//! let mut out = BytesMut::new();
//! Packet::Publish(p).encode(ProtocolVersion::V3_1_1, &mut out)?;
//! assert_eq!(&out[..], b"\x30\x0a\x00\x03a/bhello");
//! # Ok(())
//! # }
//! ```
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod alias;
mod decode;
mod encode;
mod error;
mod packet;
pub mod properties;
pub(crate) mod reason;
mod topic;
pub(crate) mod wire;

pub use alias::{ProcessHasher, TopicAliases};
pub use decode::{decode, decode_frame_bytes, DecodeOptions};
pub use encode::{encode_publish_header, encode_publish_header_aliased, publish_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::{Properties, PropertyContext, PropertySet};
pub use reason::ReasonCode;
pub use topic::{matches, TopicFilter, TopicName};
pub use wire::VARINT_MAX;
