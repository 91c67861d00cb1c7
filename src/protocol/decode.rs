//! Decoding: bytes in, packets out, nothing else.
//!
//! [`decode`] looks at the fixed header first: it rejects a bad packet type, bad flags or
//! an oversized frame before the body has arrived, so a peer cannot make us buffer a frame
//! we will refuse anyway. Once the whole frame is buffered it is split off the read
//! buffer as one `Bytes`, and topic, payload and strings become slices of it.

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::*;
use super::properties::{Properties, PropertyContext};
use super::reason::{self, CodeSet, ReasonCode};
use super::topic::{TopicFilter, TopicName};
use super::wire::{parse_varint, Reader, VarInt, VARINT_MAX};

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The connection's protocol version. A CONNECT carries its own version and is decoded
    /// whatever this says; a server sets it from that CONNECT for every later packet.
    pub version: ProtocolVersion,
    /// Largest whole frame (fixed header included) accepted. Larger frames are refused as
    /// soon as their fixed header is read.
    pub max_packet_size: u32,
}

impl DecodeOptions {
    /// Options for `version` with the largest size the protocol allows.
    pub fn new(version: ProtocolVersion) -> Self {
        DecodeOptions {
            version,
            max_packet_size: VARINT_MAX + 5,
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// - `Ok(Some(p))`: a packet; its bytes were removed from `buf`.
/// - `Ok(None)`: `buf` holds no complete frame yet; nothing was consumed.
/// - `Err(e)`: the stream is invalid and the connection must be closed. Errors in the
///   fixed header leave `buf` as it was; errors in the body are found after the frame was
///   split off, so those bytes are gone (nothing more can be read from the stream anyway).
#[inline]
pub fn decode(buf: &mut BytesMut, opts: &DecodeOptions) -> Result<Option<Packet>, DecodeError> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    check_header(header, opts.version)?;
    let (remaining, len_bytes) = match parse_varint(buf.get(1..).unwrap_or_default())? {
        VarInt::Done(v, n) => (v as usize, n),
        VarInt::Incomplete => return Ok(None),
    };
    let total = 1 + len_bytes + remaining;
    if total > opts.max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size: total,
            max: opts.max_packet_size,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    // Frame-less packets need no buffer split at all.
    if remaining == 0 {
        if let Some(p) = decode_empty(header, opts.version)? {
            let _ = buf.split_to(total);
            return Ok(Some(p));
        }
    }
    // A bare ack (3.x, or 5.0 with Success and no properties) is read in place: no frame
    // is split off, so no reference count is touched.
    if remaining == 2 && (4..=7).contains(&(header >> 4)) {
        if let Some(&[a, b]) = buf.get(2..4) {
            let ack = Ack::new(
                PacketId::new(u16::from_be_bytes([a, b]))
                    .ok_or(DecodeError::ZeroPacketId(ack_type(header)))?,
            );
            buf.advance(4);
            return Ok(Some(match header >> 4 {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }));
        }
    }
    let mut frame = buf.split_to(total);
    if header >> 4 == 3 {
        frame.advance(1 + len_bytes);
        return publish_fast(header, frame, opts.version).map(|p| Some(Packet::Publish(p)));
    }
    let frame = frame.freeze();
    decode_frame(header, &frame, 1 + len_bytes, opts.version).map(Some)
}

fn ack_type(header: u8) -> PacketType {
    match header >> 4 {
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        _ => PacketType::PubComp,
    }
}

/// PUBLISH straight from the split-off frame: the topic is split from the front and the
/// payload is what remains, so a PUBLISH costs two reference-count increments and no copy
/// (the general path slices a frozen frame three times).
#[inline]
fn publish_fast(
    header: u8,
    mut body: BytesMut,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = match (header >> 1) & 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce, // 3 was refused by check_header
    };
    let tlen = match body.get(..2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]) as usize,
        _ => return Err(DecodeError::Truncated("topic name")),
    };
    if body.len() < 2 + tlen {
        return Err(DecodeError::Truncated("topic name"));
    }
    body.advance(2);
    let topic = TopicName::from_wire(body.split_to(tlen).freeze())?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => {
            let id = match body.get(..2) {
                Some(&[a, b]) => u16::from_be_bytes([a, b]),
                _ => return Err(DecodeError::Truncated("packet identifier")),
            };
            body.advance(2);
            Some(PacketId::new(id).ok_or(DecodeError::ZeroPacketId(PacketType::Publish))?)
        }
    };
    let mut payload = body.freeze();
    let properties = if !version.is_v5() {
        Properties::new()
    } else if payload.first() == Some(&0) {
        payload.advance(1);
        Properties::new()
    } else {
        let mut r = Reader::new(&payload, 0, payload.len());
        let props = Properties::decode(&mut r, PropertyContext::Publish)?;
        let used = payload.len() - r.remaining();
        payload.advance(used);
        props
    };
    // An empty topic is allowed only when a 5.0 topic alias stands for it (§3.3.2.3.4).
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::EmptyTopicName);
    }
    Ok(Publish {
        dup: header & 0b1000 != 0,
        qos,
        retain: header & 1 != 0,
        topic,
        packet_id,
        properties,
        payload,
    })
}

/// Decodes one complete frame (fixed header included) held in `frame`. For callers that
/// already framed the stream; `decode` is the usual entry.
pub fn decode_frame_bytes(frame: &Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let Some(&header) = frame.first() else {
        return Err(DecodeError::Truncated("fixed header"));
    };
    check_header(header, version)?;
    let (remaining, len_bytes) = match parse_varint(frame.get(1..).unwrap_or_default())? {
        VarInt::Done(v, n) => (v as usize, n),
        VarInt::Incomplete => return Err(DecodeError::Truncated("remaining length")),
    };
    match frame.len().cmp(&(1 + len_bytes + remaining)) {
        std::cmp::Ordering::Less => return Err(DecodeError::Truncated("frame")),
        std::cmp::Ordering::Greater => {
            return Err(DecodeError::TrailingBytes(
                frame.len() - 1 - len_bytes - remaining,
            ))
        }
        std::cmp::Ordering::Equal => {}
    }
    decode_frame(header, frame, 1 + len_bytes, version)
}

/// Packet type and reserved flag checks of the first byte ([MQTT-2.2.2-1], [MQTT-2.2.2-2];
/// 5.0 [MQTT-2.1.3-1]). MQTT 3.1 did not require the flags of PUBREL, SUBSCRIBE and
/// UNSUBSCRIBE to be exactly 0b0010, and 3.1 clients exist that send other values, so they
/// are not checked on a 3.1 connection (as in mosquitto).
#[inline]
fn check_header(header: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let kind = header >> 4;
    let flags = header & 0x0F;
    let packet = match kind {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => {
            if flags & 0b0110 == 0b0110 {
                return Err(DecodeError::InvalidQoS);
            }
            if flags & 0b1110 == 0b1000 && version != ProtocolVersion::V3_1 {
                return Err(DecodeError::DupAtQoS0);
            }
            return Ok(());
        }
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 if version == ProtocolVersion::V5 => PacketType::Auth,
        _ => return Err(DecodeError::InvalidPacketType(kind)),
    };
    let expected = match packet {
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if version == ProtocolVersion::V3_1 {
                return Ok(());
            }
            0b0010
        }
        _ => 0,
    };
    if flags != expected {
        return Err(DecodeError::InvalidHeaderFlags { packet, flags });
    }
    Ok(())
}

/// Packets whose whole body may be empty, decoded without touching the buffer.
#[inline]
fn decode_empty(header: u8, version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    Ok(Some(match header >> 4 {
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(Disconnect::default()),
        15 if version.is_v5() => Packet::Auth(Auth::default()),
        _ => return Ok(None),
    }))
}

fn decode_frame(
    header: u8,
    frame: &Bytes,
    start: usize,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    if header >> 4 == 3 {
        // One PUBLISH decoder: the copy into a `BytesMut` happens only on this path
        // (already-framed input), never on the `decode` hot path.
        let body = BytesMut::from(frame.get(start..).unwrap_or_default());
        return publish_fast(header, body, version).map(Packet::Publish);
    }
    let mut r = Reader::new(frame, start, frame.len());
    let v5 = version.is_v5();
    let packet = match header >> 4 {
        4 => Packet::PubAck(ack(&mut r, v5, &reason::PUBACK_CODES, PacketType::PubAck)?),
        5 => Packet::PubRec(ack(&mut r, v5, &reason::PUBACK_CODES, PacketType::PubRec)?),
        6 => Packet::PubRel(ack(&mut r, v5, &reason::PUBREL_CODES, PacketType::PubRel)?),
        7 => Packet::PubComp(ack(&mut r, v5, &reason::PUBREL_CODES, PacketType::PubComp)?),
        1 => Packet::Connect(Box::new(connect(&mut r)?)),
        2 => Packet::ConnAck(connack(&mut r, version)?),
        8 => Packet::Subscribe(subscribe(&mut r, v5)?),
        9 => Packet::SubAck(suback(&mut r, version)?),
        10 => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        11 => Packet::UnsubAck(unsuback(&mut r, v5)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => {
            let (reason, properties) = reason_and_props(
                &mut r,
                v5,
                &reason::DISCONNECT_CODES,
                PacketType::Disconnect,
                PropertyContext::Disconnect,
            )?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        15 => {
            let (reason, properties) = reason_and_props(
                &mut r,
                v5,
                &reason::AUTH_CODES,
                PacketType::Auth,
                PropertyContext::Auth,
            )?;
            Packet::Auth(Auth { reason, properties })
        }
        t => return Err(DecodeError::InvalidPacketType(t)),
    };
    r.finish()?;
    Ok(packet)
}

#[inline]
fn packet_id(r: &mut Reader<'_>, packet: PacketType) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16("packet identifier")?).ok_or(DecodeError::ZeroPacketId(packet))
}

#[inline]
fn ack(
    r: &mut Reader<'_>,
    v5: bool,
    codes: &CodeSet,
    packet: PacketType,
) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r, packet)?;
    let (reason, properties) = if v5 {
        reason_and_props(r, true, codes, packet, PropertyContext::Ack)?
    } else {
        (ReasonCode::SUCCESS, Properties::new())
    };
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// The optional reason code and properties that end 5.0 acks, DISCONNECT and AUTH: both
/// may be omitted when the code is 0x00 and there are no properties, and the property
/// length may be omitted after a code (§3.4.2.1, §3.14.2.1, §3.15.2.1).
fn reason_and_props(
    r: &mut Reader<'_>,
    v5: bool,
    codes: &CodeSet,
    packet: PacketType,
    ctx: PropertyContext,
) -> Result<(ReasonCode, Properties), DecodeError> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::SUCCESS, Properties::new()));
    }
    let code = r.u8("reason code")?;
    if !codes.contains(code) {
        return Err(DecodeError::InvalidReasonCode { packet, code });
    }
    let properties = if r.remaining() == 0 {
        Properties::new()
    } else {
        Properties::decode(r, ctx)?
    };
    Ok((ReasonCode(code), properties))
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", l) | (b"MQIsdp", l) => return Err(DecodeError::UnsupportedProtocolLevel(l)),
        _ => return Err(DecodeError::UnsupportedProtocolName),
    };
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 3;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::WillFlagsWithoutWill);
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidWillQoS)?;
    if version != ProtocolVersion::V5 && password_flag && !username_flag {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let v5 = version.is_v5();
    let properties = if v5 {
        Properties::decode(r, PropertyContext::Connect)?
    } else {
        Properties::new()
    };
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let properties = if v5 {
            Properties::decode(r, PropertyContext::Will)?
        } else {
            Properties::new()
        };
        let topic = r.binary("will topic")?;
        if topic.is_empty() {
            return Err(DecodeError::EmptyTopicName);
        }
        let topic = TopicName::from_wire(topic)?;
        let payload = r.binary("will payload")?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn connack(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connack flags")?;
    let code = r.u8("connack code")?;
    let invalid = DecodeError::InvalidReasonCode {
        packet: PacketType::ConnAck,
        code,
    };
    let (session_present, reason, properties) = match version {
        // 3.1 has no session-present flag: the byte is reserved and unused.
        ProtocolVersion::V3_1 => (
            false,
            ReasonCode::from_connack_v3(code).ok_or(invalid)?,
            Properties::new(),
        ),
        ProtocolVersion::V3_1_1 => {
            if flags & 0xFE != 0 {
                return Err(DecodeError::InvalidConnAckFlags(flags));
            }
            (
                flags == 1,
                ReasonCode::from_connack_v3(code).ok_or(invalid)?,
                Properties::new(),
            )
        }
        ProtocolVersion::V5 => {
            if flags & 0xFE != 0 {
                return Err(DecodeError::InvalidConnAckFlags(flags));
            }
            if !reason::CONNACK_CODES.contains(code) {
                return Err(invalid);
            }
            let properties = if r.remaining() == 0 {
                Properties::new()
            } else {
                Properties::decode(r, PropertyContext::ConnAck)?
            };
            (flags == 1, ReasonCode(code), properties)
        }
    };
    if session_present && !reason.is_success() {
        return Err(DecodeError::SessionPresentOnFailure);
    }
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Subscribe)?;
    let properties = if v5 {
        Properties::decode(r, PropertyContext::Subscribe)?
    } else {
        Properties::new()
    };
    let mut subscriptions = Vec::new();
    while r.remaining() > 0 {
        let filter = TopicFilter::from_bytes(r.binary("topic filter")?)?;
        let o = r.u8("subscription options")?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if o & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions(o));
        }
        let qos = QoS::from_u8(o & 3).ok_or(DecodeError::InvalidSubscriptionQoS)?;
        let options = if v5 {
            let retain_handling = match (o >> 4) & 3 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(DecodeError::InvalidRetainHandling),
            };
            let no_local = o & 0x04 != 0;
            if no_local && filter.shared().is_some() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            }
        } else {
            SubscriptionOptions::new(qos)
        };
        subscriptions.push(Subscription { filter, options });
    }
    if subscriptions.is_empty() {
        return Err(DecodeError::NoSubscriptions);
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

fn suback(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::SubAck)?;
    let properties = if version.is_v5() {
        Properties::decode(r, PropertyContext::SubAck)?
    } else {
        Properties::new()
    };
    let mut codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("suback return code")?;
        let ok = match version {
            ProtocolVersion::V5 => reason::SUBACK_CODES.contains(code),
            // [MQTT-3.9.3-2]: 0x00, 0x01, 0x02 and 0x80 only. 3.1 had no failure code, but
            // 3.1 brokers send 0x80 too.
            _ => matches!(code, 0 | 1 | 2 | 0x80),
        };
        if !ok {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            });
        }
        codes.push(ReasonCode(code));
    }
    if codes.is_empty() {
        return Err(DecodeError::NoSubAckCodes);
    }
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

fn unsubscribe(r: &mut Reader<'_>, v5: bool) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Unsubscribe)?;
    let properties = if v5 {
        Properties::decode(r, PropertyContext::Unsubscribe)?
    } else {
        Properties::new()
    };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(TopicFilter::from_bytes(r.binary("topic filter")?)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::NoUnsubscriptions);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn unsuback(r: &mut Reader<'_>, v5: bool) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::UnsubAck)?;
    if !v5 {
        return Ok(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: Properties::new(),
        });
    }
    let properties = Properties::decode(r, PropertyContext::UnsubAck)?;
    let mut codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8("unsuback reason code")?;
        if !reason::UNSUBACK_CODES.contains(code) {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::UnsubAck,
                code,
            });
        }
        codes.push(ReasonCode(code));
    }
    Ok(UnsubAck {
        packet_id,
        codes,
        properties,
    })
}
