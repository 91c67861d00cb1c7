//! Property tests of the codec, for every packet type and protocol version:
//! - `decode(encode(p)) == p`;
//! - every strict prefix of a valid frame is "need more" (never an error, never a panic);
//! - random and mutated bytes never panic, and whatever decodes re-encodes to a frame
//!   that decodes to the same packet.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use surgemq::protocol::*;

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V3_1),
        Just(ProtocolVersion::V3_1_1),
        Just(ProtocolVersion::V5),
    ]
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = PacketId> {
    (1u16..=u16::MAX).prop_map(|v| NonZeroU16::new(v).unwrap())
}

/// UTF-8 text without U+0000, including multi-byte characters.
fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 _/é€😀-]{0,24}".prop_map(ByteString::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9$é]{1,6}(/[a-z0-9 é]{0,6}){0,4}".prop_map(|s| TopicName::new(s).unwrap())
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9é]{0,5}"];
    (vec(level, 1..5), any::<bool>(), any::<bool>()).prop_map(|(levels, hash, shared)| {
        let mut s = levels.join("/");
        if s.is_empty() {
            s.push('x');
        }
        if hash {
            s.push_str("/#");
        }
        if shared {
            s = format!("$share/grp/{s}");
        }
        TopicFilter::new(s).unwrap()
    })
}

fn one_of_codes(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(codes).prop_map(ReasonCode)
}

/// Properties allowed in `ctx`, with legal values only.
fn props(ctx: PropertyContext) -> BoxedStrategy<Properties> {
    let allowed = ctx.allowed();
    let o = move |id: u8| allowed & (1 << id) != 0;
    use surgemq::protocol::properties::id::*;
    let many_subids = ctx == PropertyContext::Publish;
    (
        (
            option::of(any::<bool>()).prop_map(move |v| v.filter(|_| o(PAYLOAD_FORMAT_INDICATOR))),
            option::of(any::<u32>()).prop_map(move |v| v.filter(|_| o(MESSAGE_EXPIRY_INTERVAL))),
            option::of(text()).prop_map(move |v| v.filter(|_| o(CONTENT_TYPE))),
            option::of(topic()).prop_map(move |v| {
                v.filter(|_| o(RESPONSE_TOPIC))
                    .map(|t| t.as_bytestring().clone())
            }),
            option::of(binary()).prop_map(move |v| v.filter(|_| o(CORRELATION_DATA))),
            vec(1u32..=268_435_455, 0..if many_subids { 3 } else { 2 }).prop_map(move |v| {
                if o(SUBSCRIPTION_IDENTIFIER) {
                    v
                } else {
                    vec![]
                }
            }),
            option::of(any::<u32>()).prop_map(move |v| v.filter(|_| o(SESSION_EXPIRY_INTERVAL))),
            option::of(text()).prop_map(move |v| v.filter(|_| o(ASSIGNED_CLIENT_IDENTIFIER))),
            option::of(any::<u16>()).prop_map(move |v| v.filter(|_| o(SERVER_KEEP_ALIVE))),
        ),
        (
            option::of(text()).prop_map(move |v| v.filter(|_| o(AUTHENTICATION_METHOD))),
            option::of(binary()).prop_map(move |v| v.filter(|_| o(AUTHENTICATION_DATA))),
            option::of(any::<bool>())
                .prop_map(move |v| v.filter(|_| o(REQUEST_PROBLEM_INFORMATION))),
            option::of(any::<u32>()).prop_map(move |v| v.filter(|_| o(WILL_DELAY_INTERVAL))),
            option::of(any::<bool>())
                .prop_map(move |v| v.filter(|_| o(REQUEST_RESPONSE_INFORMATION))),
            option::of(text()).prop_map(move |v| v.filter(|_| o(RESPONSE_INFORMATION))),
            option::of(text()).prop_map(move |v| v.filter(|_| o(SERVER_REFERENCE))),
            option::of(text()).prop_map(move |v| v.filter(|_| o(REASON_STRING))),
            option::of(1u16..).prop_map(move |v| v.filter(|_| o(RECEIVE_MAXIMUM))),
        ),
        (
            option::of(any::<u16>()).prop_map(move |v| v.filter(|_| o(TOPIC_ALIAS_MAXIMUM))),
            option::of(1u16..).prop_map(move |v| v.filter(|_| o(TOPIC_ALIAS))),
            option::of(prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)])
                .prop_map(move |v| v.filter(|_| o(MAXIMUM_QOS))),
            option::of(any::<bool>()).prop_map(move |v| v.filter(|_| o(RETAIN_AVAILABLE))),
            vec((text(), text()), 0..3)
                .prop_map(move |v| if o(USER_PROPERTY) { v } else { vec![] }),
            option::of(1u32..).prop_map(move |v| v.filter(|_| o(MAXIMUM_PACKET_SIZE))),
            option::of(any::<bool>())
                .prop_map(move |v| v.filter(|_| o(WILDCARD_SUBSCRIPTION_AVAILABLE))),
            option::of(any::<bool>())
                .prop_map(move |v| v.filter(|_| o(SUBSCRIPTION_IDENTIFIER_AVAILABLE))),
            option::of(any::<bool>())
                .prop_map(move |v| v.filter(|_| o(SHARED_SUBSCRIPTION_AVAILABLE))),
        ),
    )
        .prop_map(|(a, b, c)| {
            let set = PropertySet {
                payload_format_indicator: a.0,
                message_expiry_interval: a.1,
                content_type: a.2,
                response_topic: a.3,
                correlation_data: a.4,
                subscription_identifiers: a.5,
                session_expiry_interval: a.6,
                assigned_client_identifier: a.7,
                server_keep_alive: a.8,
                authentication_method: b.0,
                authentication_data: b.1,
                request_problem_information: b.2,
                will_delay_interval: b.3,
                request_response_information: b.4,
                response_information: b.5,
                server_reference: b.6,
                reason_string: b.7,
                receive_maximum: b.8,
                topic_alias_maximum: c.0,
                topic_alias: c.1,
                maximum_qos: c.2,
                retain_available: c.3,
                user_properties: c.4,
                maximum_packet_size: c.5,
                wildcard_subscription_available: c.6,
                subscription_identifier_available: c.7,
                shared_subscription_available: c.8,
            };
            Properties::from(set)
        })
        .boxed()
}

/// Properties for `ctx` on 5.0, none on 3.x.
fn props_for(v: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if v.is_v5() {
        props(ctx)
    } else {
        Just(Properties::new()).boxed()
    }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        props_for(v, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary()),
        props_for(v, PropertyContext::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x: a password needs a user name [MQTT-3.1.2-22].
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    version: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

const CONNACK_V3: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_V5: &[u8] = &[0x00, 0x92];
const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_V5: &[u8] = &[0x00, 0x18, 0x19];

fn ack(v: ProtocolVersion, codes: &'static [u8]) -> BoxedStrategy<Ack> {
    if v.is_v5() {
        (pid(), one_of_codes(codes), props(PropertyContext::Ack))
            .prop_map(|(packet_id, reason, properties)| Ack {
                packet_id,
                reason,
                properties,
            })
            .boxed()
    } else {
        pid().prop_map(Ack::new).boxed()
    }
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        pid(),
        props_for(v, PropertyContext::Publish),
        prop_oneof![
            binary(),
            vec(any::<u8>(), 100..20_000).prop_map(Bytes::from)
        ],
    )
        .prop_map(move |(qos, dup, retain, topic, id, properties, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            // With a 5.0 topic alias the topic may be empty.
            let topic = if properties.topic_alias.is_some() && dup {
                TopicName::empty()
            } else {
                topic
            };
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: if qos0 { None } else { Some(id) },
                properties,
                payload,
            })
        })
}

fn subscription(v: ProtocolVersion) -> impl Strategy<Value = Subscription> {
    (filter(), qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        move |(filter, qos, nl, rap, rh)| {
            let mut options = SubscriptionOptions::new(qos);
            if v.is_v5() {
                options.no_local = nl && filter.shared().is_none();
                options.retain_as_published = rap;
                options.retain_handling = match rh {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendIfNew,
                    _ => RetainHandling::DoNotSend,
                };
            }
            Subscription { filter, options }
        },
    )
}

fn packet_for(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = v.is_v5();
    let connack = (
        any::<bool>(),
        one_of_codes(if v5 { CONNACK_V5 } else { CONNACK_V3 }),
        props_for(v, PropertyContext::ConnAck),
    )
        .prop_map(move |(sp, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: sp && reason.is_success() && v != ProtocolVersion::V3_1,
                reason,
                properties,
            })
        });
    let subscribe = (
        pid(),
        vec(subscription(v), 1..4),
        props_for(v, PropertyContext::Subscribe),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        });
    let suback = (
        pid(),
        vec(one_of_codes(if v5 { SUBACK_V5 } else { SUBACK_V3 }), 1..4),
        props_for(v, PropertyContext::SubAck),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })
        });
    let unsubscribe = (
        pid(),
        vec(filter(), 1..4),
        props_for(v, PropertyContext::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let unsuback = (
        pid(),
        vec(one_of_codes(UNSUBACK_V5), if v5 { 1..4 } else { 0..1 }),
        props_for(v, PropertyContext::UnsubAck),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                codes,
                properties,
            })
        });
    let reason_props = |codes: &'static [u8], ctx| {
        if v5 {
            (one_of_codes(codes), props(ctx)).boxed()
        } else {
            Just((ReasonCode::SUCCESS, Properties::new())).boxed()
        }
    };
    let disconnect = reason_props(DISCONNECT_V5, PropertyContext::Disconnect)
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    let mut all = vec![
        connect(v).boxed(),
        connack.boxed(),
        publish(v).boxed(),
        ack(v, PUBACK_V5).prop_map(Packet::PubAck).boxed(),
        ack(v, PUBACK_V5).prop_map(Packet::PubRec).boxed(),
        ack(v, PUBREL_V5).prop_map(Packet::PubRel).boxed(),
        ack(v, PUBREL_V5).prop_map(Packet::PubComp).boxed(),
        subscribe.boxed(),
        suback.boxed(),
        unsubscribe.boxed(),
        unsuback.boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect.boxed(),
    ];
    if v5 {
        all.push(
            reason_props(AUTH_V5, PropertyContext::Auth)
                .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
                .boxed(),
        );
    }
    proptest::strategy::Union::new(all).boxed()
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet_for(v).prop_map(move |p| (v, p)))
}

fn encode(v: ProtocolVersion, p: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).expect("valid packet encodes");
    buf
}

/// Decodes everything in `bytes`; must never panic.
fn decode_all(v: ProtocolVersion, bytes: &[u8]) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let opts = DecodeOptions::new(v);
    let mut out = Vec::new();
    while let Ok(Some(p)) = decode(&mut buf, &opts) {
        out.push(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn decode_inverts_encode((v, p) in versioned_packet()) {
        let mut buf = encode(v, &p);
        let len = buf.len();
        prop_assert_eq!(p.encoded_len(v).unwrap(), len);
        // The already-framed entry point agrees with the streaming one.
        prop_assert_eq!(decode_frame_bytes(&buf.clone().freeze(), v), Ok(p.clone()));
        let decoded = decode(&mut buf, &DecodeOptions::new(v));
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_prefix_needs_more((v, p) in versioned_packet()) {
        let full = encode(v, &p);
        let opts = DecodeOptions::new(v);
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            prop_assert_eq!(decode(&mut buf, &opts), Ok(None), "prefix of {} bytes", cut);
            prop_assert_eq!(buf.len(), cut, "a partial frame must not be consumed");
        }
    }

    #[test]
    fn max_packet_size_is_enforced_before_the_body((v, p) in versioned_packet()) {
        let full = encode(v, &p);
        let opts = DecodeOptions { version: v, max_packet_size: full.len() as u32 - 1 };
        // Only the fixed header is present: the size is known, the body is not buffered.
        let header_len = 1 + full[1..].iter().take_while(|b| **b & 0x80 != 0).count() + 1;
        let mut buf = BytesMut::from(&full[..header_len]);
        let is_too_large = matches!(decode(&mut buf, &opts), Err(DecodeError::PacketTooLarge { .. }));
        prop_assert!(is_too_large);
        let exact = DecodeOptions { version: v, max_packet_size: full.len() as u32 };
        let mut buf = full.clone();
        prop_assert!(decode(&mut buf, &exact).unwrap().is_some());
    }

    #[test]
    fn random_bytes_never_panic(v in version(), bytes in vec(any::<u8>(), 0..300)) {
        for p in decode_all(v, &bytes) {
            // Whatever was accepted is a valid packet: it re-encodes and decodes the same.
            let again = decode_all(v, &encode(v, &p));
            prop_assert_eq!(again, vec![p]);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        (v, p) in versioned_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(v, &p).to_vec();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        for p in decode_all(v, &bytes) {
            let again = decode_all(v, &encode(v, &p));
            prop_assert_eq!(again, vec![p]);
        }
    }
}
