//! Decoding and handling the packets a connection has read: the session state machine,
//! then the shard's routing, subscribe and gate; flow-control holds while publishers are
//! held back.
//!
//! **Owns:** the per-packet loop and the hold rules.
//!
//! **Must not touch:** the socket: it works on bytes already read and appends output to
//! the connection's buffer.

use std::rc::Rc;

use bytes::BytesMut;

use super::connection::{CloseReason, ConnShared};
use super::shard::Shard;
use super::store::SessionId;
use crate::protocol::*;
use crate::session::{Action, Handled, Response};

/// Decodes and handles every complete packet in `buf`.
/// The connection's output or queue is above its watermark (or it was marked slow): it
/// needs its acks read to drain.
pub(crate) fn is_behind(conn: &ConnShared) -> bool {
    conn.congested.get() || conn.slow.get()
}

/// The connection holds as many packets as it may while publishers are held back.
pub(crate) fn held_full(shard: &Shard, conn: &ConnShared) -> bool {
    conn.held_bytes() >= shard.cfg.limits.max_write_buffer
}

/// Packets that never wait behind a held PUBLISH: acks of server-to-client flows and
/// PINGREQ. None of them can refer to a held packet (a PUBREL follows our PUBREC, which a
/// held PUBLISH has not had), and processing them is what drains a connection.
fn bypasses_hold(p: &Packet) -> bool {
    matches!(
        p,
        Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::PubRel(_)
            | Packet::PingReq
    )
}

/// What a held packet costs: its slot in the hold queue plus its encoded size, which
/// bounds what it holds (topic, payload and properties of a PUBLISH, the filters of a
/// SUBSCRIBE or UNSUBSCRIBE). Only computed while packets are held.
fn held_cost(p: &Packet, version: ProtocolVersion) -> usize {
    let size = match p {
        Packet::Publish(p) => publish_len(
            version,
            &p.topic,
            p.packet_id.is_some(),
            &p.properties,
            p.payload.len(),
        ),
        other => other.encoded_len(version),
    };
    // A packet that decoded always encodes; if not, count the largest packet allowed.
    std::mem::size_of::<Packet>() + size.unwrap_or(VARINT_MAX as usize)
}

/// Decodes and handles every complete packet in `buf`, after the packets held while
/// publishers were held back. Returns `Ok(true)` when it stopped for flow control with
/// work left (in `buf` or held).
pub(crate) fn process(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    slot: SessionId,
    buf: &mut BytesMut,
    opts: &DecodeOptions,
) -> Result<bool, CloseReason> {
    process_with(shard, conn, slot, buf, opts, false)
}

/// [`process`]; with `release` (the connection is ending) nothing is held or paused: what
/// was read is handled, as it would have been without flow control.
pub(crate) fn process_with(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    slot: SessionId,
    buf: &mut BytesMut,
    opts: &DecodeOptions,
    release: bool,
) -> Result<bool, CloseReason> {
    loop {
        let holding_back = !release && shard.holding_back();
        // Flow control: stop between packets while a subscriber on this shard is behind,
        // so one read turn cannot push it far past its soft watermark. Returns true with
        // the rest left in `buf`. A connection that is itself behind goes on reading (for
        // its acks) and holds what it must not process now.
        if !release
            && shard.output_congested()
            && (!is_behind(conn) || held_full(shard, conn))
            && (!buf.is_empty() || conn.holding())
        {
            return Ok(true);
        }
        let held_next = if holding_back {
            None
        } else {
            conn.unhold(|p| held_cost(p, opts.version))
        };
        let packet = match held_next {
            Some(p) => p,
            None => {
                if holding_back && held_full(shard, conn) {
                    return Ok(!buf.is_empty());
                }
                let before = buf.len();
                let packet = match decode(buf, opts) {
                    Ok(Some(p)) => {
                        shard.count_received(&p, before - buf.len());
                        p
                    }
                    Ok(None) => return Ok(false),
                    Err(e) => {
                        shard.count(|m| m.malformed_packets += 1);
                        tracing::info!(error = %e, kind = e.kind(), "malformed packet: connection closed");
                        disconnect_v5(shard, conn, opts.version, e.reason_code(), &e.to_string());
                        return Err(CloseReason::ProtocolError);
                    }
                };
                // Re-authentication goes on beside the session's traffic (5.0 §4.12.1).
                let packet = match packet {
                    Packet::Auth(a) if opts.version.is_v5() => {
                        if let Err((code, why)) = super::auth::on_auth(shard, conn, a) {
                            shard.count(|m| m.auth_refused += 1);
                            tracing::info!(reason = %code, "{why}: connection closed");
                            disconnect_v5(shard, conn, opts.version, code, why);
                            return Err(CloseReason::ProtocolError);
                        }
                        conn.wake.notify();
                        continue;
                    }
                    p => p,
                };
                let mut packet = packet;
                if let Packet::Publish(p) = &mut packet {
                    shard.count(|m| m.publishes_received += 1);
                    if opts.version.is_v5() {
                        if let Err((code, why)) = publisher_properties(shard, conn, p) {
                            shard.count(|m| m.protocol_errors += 1);
                            tracing::info!(reason = %code, "{why}: connection closed");
                            disconnect_v5(shard, conn, opts.version, code, why);
                            return Err(CloseReason::ProtocolError);
                        }
                    }
                    if p.topic.levels().count() > shard.cfg.limits.max_topic_levels {
                        tracing::info!(topic = %p.topic, "topic deeper than max_topic_levels: connection closed");
                        disconnect_v5(
                            shard,
                            conn,
                            opts.version,
                            ReasonCode::TOPIC_NAME_INVALID,
                            "topic deeper than max_topic_levels",
                        );
                        return Err(CloseReason::ProtocolError);
                    }
                }
                // Checked only while holding back: nothing extra per packet otherwise.
                if holding_back
                    && !bypasses_hold(&packet)
                    && (matches!(packet, Packet::Publish(_)) || conn.holding())
                {
                    // Unacknowledged while held: a QoS 1/2 publisher's window fills and it
                    // stops sending, which is MQTT's own back-pressure.
                    let cost = held_cost(&packet, opts.version);
                    conn.hold(packet, cost);
                    continue;
                }
                packet
            }
        };
        // The ack of a retained PUBLISH whose topic another shard stores waits for that
        // shard, and with persistence mode `sync` the ack of any QoS 1/2 PUBLISH waits for
        // the other shards it reaches to make their deliveries durable; responses after it
        // wait too, to keep their order.
        let defer_ack = matches!(&packet, Packet::Publish(p)
            if p.qos != QoS::AtMostOnce
                && ((p.retain && shard.retained_elsewhere(&p.topic))
                    || (shard.shards > 1 && shard.durable().is_some_and(|d| d.is_sync()))));
        // What this packet writes to the log: the connection's output waits for it.
        let before = shard.log_marks();
        let is_publish = matches!(packet, Packet::Publish(_));
        let ingress_logged: bool;
        let frees_window = matches!(
            packet,
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)
        );
        let handled = {
            let mut st = shard.state.borrow_mut();
            // Only the connection serving the session acts on it: one taken over (or whose
            // session is gone) stops here, so its last acks cannot move the session's
            // window into a connection that is closing.
            if !st.links.get(slot).is_some_and(|c| Rc::ptr_eq(c, conn)) {
                // Its DISCONNECT still says how it ends (no will), session untouched.
                if let Packet::Disconnect(d) = &packet {
                    return Err(CloseReason::ClientDisconnect {
                        publish_will: d.reason == ReasonCode::DISCONNECT_WITH_WILL,
                    });
                }
                return Err(conn.close.get().unwrap_or(CloseReason::TakenOver));
            }
            shard.journal_changes(&mut st.sessions);
            let Some(session) = st.sessions.get_mut(slot) else {
                return Err(CloseReason::ProtocolError);
            };
            // The session's own output (deliveries an ack lets into the window) goes
            // straight to the connection; the answer goes through the gate below.
            let pre = shard.appended();
            let h = shard.with_flows(session, |session, log| {
                session.handle_logged(packet, &mut conn.out.borrow_mut(), log)
            });
            // A PUBLISH writes to the log only its QoS 2 id: other shards must not
            // deliver the message before that is durable (see `Shard::hold_data`).
            ingress_logged = is_publish && shard.appended() != pre;
            conn.queued.set(session.queued_len());
            let expired = session.take_expired_drops();
            let denied = session.take_denied_drops();
            if expired > 0 || denied > 0 {
                shard.count(|m| {
                    m.dropped_expired += u64::from(expired);
                    m.read_denied += u64::from(denied);
                });
            }
            // An ack may let a paused stream of retained messages go on.
            if frees_window && !st.streams.is_empty() && st.streams.contains_key(&slot) {
                shard.pump_retained(&mut st, slot);
            }
            h
        };
        // Acks move queued messages into the window.
        shard.note_drained(conn);
        let Handled { action, response } = match handled {
            Ok(h) => h,
            Err(e) => {
                shard.count(|m| m.protocol_errors += 1);
                tracing::info!(error = %e, "protocol violation: connection closed");
                disconnect_v5(shard, conn, opts.version, e.reason_code(), &e.to_string());
                return Err(CloseReason::ProtocolError);
            }
        };
        // Whether the client waits for an answer to this packet: what the packet wrote
        // to the log must be on disk before it (see `Shard::durable_point`).
        let answers = response.is_some()
            || matches!(
                action,
                Some(Action::Subscribe { .. } | Action::Unsubscribe(_))
            );
        match action {
            Some(Action::Route(m))
                if m.qos != QoS::AtMostOnce && shard.durable().is_some_and(|d| d.refusing()) =>
            {
                // The log is over `max_disk_bytes` or failing: not accepted, never lost.
                // 5.0 says so (0x97, which ends a QoS 2 flow); 3.x is not acknowledged,
                // so the client keeps it and sends it again.
                shard.persist_refused("PUBLISH");
                if let Some(mut r) = response {
                    if let Response::PubRec(id, _) = r {
                        if let Some(s) = shard.state.borrow_mut().sessions.get_mut(slot) {
                            shard.with_flows(s, |s, log| s.forget_incoming_qos2(id, log));
                        }
                    }
                    if opts.version.is_v5() {
                        r.refuse(ReasonCode::QUOTA_EXCEEDED);
                        shard.respond(conn, &r);
                    }
                }
            }
            Some(Action::Route(m)) if !shard.may_publish(slot, &m.topic) => {
                // Not routed; 5.0 says why (5.0 §3.4.2.1: PUBACK / PUBREC 0x87; it ends a QoS 2
                // flow: its id is not kept awaiting a PUBREL); 3.x is acknowledged as usual.
                shard.count(|c| c.publish_denied += 1);
                let client_id = shard
                    .state
                    .borrow()
                    .sessions
                    .get(slot)
                    .map(|s| s.client_id().clone())
                    .unwrap_or_default();
                shard.log_denied("PUBLISH", &client_id, &m.topic);
                if let Some(mut r) = response {
                    if opts.version.is_v5() {
                        r.refuse(ReasonCode::NOT_AUTHORIZED);
                        if let Response::PubRec(id, _) = r {
                            if let Some(s) = shard.state.borrow_mut().sessions.get_mut(slot) {
                                shard.with_flows(s, |s, log| s.forget_incoming_qos2(id, log));
                            }
                        }
                    }
                    shard.respond(conn, &r);
                }
            }
            Some(Action::Route(m)) if defer_ack => {
                // A QoS 2 message whose id the publisher's session wrote down: it is
                // written down too, with an ingress its deliveries carry, and no other
                // shard delivers it before that is durable (see `super::durable`).
                let hold = shard.durable().filter(|d| ingress_logged && d.is_sync());
                let ingress = match hold {
                    Some(d) => {
                        let client_id = shard
                            .state
                            .borrow()
                            .sessions
                            .get(slot)
                            .map(|s| s.client_id().clone());
                        d.hold_sends.set(true);
                        client_id.map_or(0, |c| d.ingress(&c, &m))
                    }
                    None => 0,
                };
                shard.with_ingress(ingress, || {
                    shard.route_deferring_ack(m, conn, response, ingress)
                });
                if let Some(d) = hold {
                    d.hold_sends.set(false);
                }
            }
            Some(Action::Route(m)) => {
                // The ack goes out before any delivery; a 5.0 one says whether anyone
                // subscribed (0x10), known once the topic is matched.
                let v5 = opts.version.is_v5();
                shard.route_from(m, slot, |matched| {
                    if let Some(mut r) = response {
                        if v5 && !matched {
                            r.no_matching_subscribers();
                        }
                        shard.respond(conn, &r);
                    }
                });
            }
            Some(Action::Subscribe {
                packet_id,
                added,
                codes,
            }) => shard.subscribe(conn, slot, packet_id, added, codes),
            Some(Action::Unsubscribe(filters)) => {
                shard.unsubscribe(slot, &filters);
                if let Some(r) = &response {
                    shard.respond(conn, r);
                }
            }
            Some(Action::Disconnect {
                publish_will,
                session_expiry,
            }) => {
                if let Some(seconds) = session_expiry {
                    shard.change_session_expiry(conn, slot, seconds)?;
                }
                return Err(CloseReason::ClientDisconnect { publish_will });
            }
            None => {
                if let Some(r) = &response {
                    if matches!(r, Response::PubAck(_, c) | Response::PubRec(_, c) if *c == ReasonCode::PAYLOAD_FORMAT_INVALID)
                    {
                        shard.count(|m| m.payload_format_invalid += 1);
                        tracing::debug!("PUBLISH payload is not the UTF-8 its format indicator says: not routed (0x99)");
                    }
                    shard.respond(conn, r);
                }
            }
        }
        shard.durable_point(conn, before, answers);
        // Acks and deliveries written so far go out with this read turn.
        if !conn.out.borrow().is_empty() {
            conn.wake.notify();
        }
    }
}

/// 5.0: the properties of a client's PUBLISH that are about the client's connection, not
/// the message. A topic alias is resolved (an empty topic takes its alias's topic; a topic
/// with an alias sets it) and removed, so neither an empty topic nor the alias is ever
/// routed or forwarded; a Subscription Identifier is the server's to send
/// [MQTT-3.3.4-6]. Checked in arrival order, before any hold, so an alias is set before
/// a later PUBLISH uses it.
fn publisher_properties(
    shard: &Shard,
    conn: &ConnShared,
    p: &mut Publish,
) -> Result<(), (ReasonCode, &'static str)> {
    if !p.properties.subscription_identifiers.is_empty() {
        return Err((
            ReasonCode::PROTOCOL_ERROR,
            "PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]",
        ));
    }
    let Some(alias) = p.properties.topic_alias else {
        return Ok(());
    };
    if alias == 0 || alias > shard.cfg.limits.max_topic_alias {
        return Err((
            ReasonCode::TOPIC_ALIAS_INVALID,
            "topic alias 0 or above the Topic Alias Maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9]",
        ));
    }
    if p.topic.is_empty() {
        p.topic = conn.topic_alias(alias).ok_or((
            ReasonCode::PROTOCOL_ERROR,
            "empty topic with a topic alias never set on this connection (5.0 §3.3.2.3.4)",
        ))?;
    } else if !conn.topic_alias_is(alias, &p.topic) {
        conn.set_topic_alias(alias, p.topic.detached());
    }
    p.properties.get_mut().topic_alias = None;
    Ok(())
}

/// 5.0: tells the client why the server closes, with `why` as the Reason String (3.x
/// simply closes).
pub(crate) fn disconnect_v5(
    shard: &Shard,
    conn: &ConnShared,
    version: ProtocolVersion,
    reason: ReasonCode,
    why: &str,
) {
    if version.is_v5() {
        // A code DISCONNECT cannot carry would not encode and the client would be told
        // nothing: a bug, reported, and the generic code sent instead.
        let reason = if crate::protocol::reason::DISCONNECT_CODES.contains(reason.0) {
            reason
        } else {
            tracing::error!(code = %reason, "not a DISCONNECT reason code: sending 0x80");
            ReasonCode::UNSPECIFIED_ERROR
        };
        let mut out = conn.out.borrow_mut();
        out.clear();
        write_disconnect(&mut out, reason, why, shard.client_max(conn));
    }
}

/// Appends a 5.0 DISCONNECT with `reason` and `why` as its Reason String, which is left
/// out when it would take the packet beyond `client_max`, the client's Maximum Packet
/// Size [MQTT-3.14.2-3]. DISCONNECT may carry one whatever the client's Request Problem
/// Information [MQTT-3.1.2-29].
pub(crate) fn write_disconnect(out: &mut BytesMut, reason: ReasonCode, why: &str, client_max: u32) {
    let mut properties = Properties::new();
    // Fixed header (up to 3 bytes for these sizes), code, property length (up to 2),
    // identifier and string length.
    if why.len() + 10 <= client_max as usize && why.len() <= 1024 {
        properties.get_mut().reason_string = Some(bytestring::ByteString::from(why));
    }
    let _ = Packet::Disconnect(Disconnect { reason, properties }).encode(ProtocolVersion::V5, out);
}
