//! Session lifecycle on a shard: registering a connection, attaching it to its session
//! (new, resumed or taken over), the end of a connection (will, detach or discard), keep
//! alive and connect timeouts, and the expiry of offline sessions.
//!
//! **Owns:** the rules that decide when a session begins and ends and when a will is
//! published.
//!
//! **Must not touch:** sockets (the connection task owns them), the routing of messages
//! (it calls [`Shard::route`]), the subscription index (it calls the subscribe module to
//! drop a discarded session's filters).

use std::rc::Rc;
use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use bytes::{BufMut, BytesMut};

use bytestring::ByteString;

use super::connection::{CloseReason, ConnShared};
use super::shard::{Entry, Shard};
use crate::protocol::*;
use crate::session::*;

impl Shard {
    /// Registers a new connection; None when the shard is at its connection limit.
    pub(crate) fn register_conn(
        &self,
        fd: RawFd,
        connect_timeout: u16,
    ) -> Option<(usize, Rc<ConnShared>)> {
        let mut st = self.state.borrow_mut();
        if st.conns.len() >= self.max_connections || self.stopping.get() {
            self.count(|m| m.connections_refused_limit += 1);
            return None;
        }
        let conn = Rc::new(ConnShared::new(fd, connect_timeout));
        let key = st.conns.insert(conn.clone());
        Some((key, conn))
    }

    /// Attaches a connection that sent an accepted CONNECT to its session (taking over an
    /// older connection of the same client id), writes CONNACK and, for a resumed session,
    /// the resent in-flight messages. Returns the session slot and session-present.
    pub(crate) fn attach(
        &self,
        conn: &Rc<ConnShared>,
        client_id: ByteString,
        version: ProtocolVersion,
        clean_start: bool,
    ) -> (usize, bool) {
        let mut removed: Vec<TopicFilter> = Vec::new();
        let (slot, present) = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let existing = st.sessions.find(&client_id);
            let mut reuse = None;
            if let Some(slot) = existing {
                if let Some(entry) = st.sessions.get_mut(slot) {
                    if let Some(old) = entry.conn.take() {
                        // [MQTT-3.1.4-2]: the existing connection is closed first. The old
                        // task still owns its socket; shutting it down now makes the close
                        // visible to that client before the new one gets CONNACK.
                        self.count(|m| m.takeovers += 1);
                        old.request_close(CloseReason::TakenOver);
                        if old.open.get() {
                            super::net::shutdown(old.fd);
                        }
                    }
                    if clean_start || !entry.session.is_persistent() {
                        removed.extend(entry.session.subscriptions().map(|(f, _)| f.clone()));
                    } else {
                        reuse = Some(slot);
                    }
                }
                if reuse.is_none() {
                    st.sessions.remove(slot);
                    for f in &removed {
                        Self::unsubscribe_one(self, st, f, slot);
                    }
                }
            }
            match reuse {
                Some(slot) => {
                    st.sessions.mark_online(slot);
                    (slot, true)
                }
                None => {
                    let session = Box::new(Session::new(
                        client_id.clone(),
                        version,
                        !clean_start,
                        self.limits,
                    ));
                    let slot = st.sessions.insert(Entry {
                        session,
                        conn: None,
                    });
                    (slot, false)
                }
            }
        };
        conn.session.set(Some(slot));
        conn.version.set(version);
        // CONNACK goes first, then whatever the resumed session must resend.
        {
            let mut out = conn.out.borrow_mut();
            write_connack(&mut out, version, present, ReasonCode::SUCCESS);
        }
        let mut st = self.state.borrow_mut();
        if let Some(entry) = st.sessions.get_mut(slot) {
            entry.conn = Some(conn.clone());
            if present {
                entry.session.resume(version, &mut conn.out.borrow_mut());
            }
        }
        drop(st);
        conn.wake.notify();
        (slot, present)
    }

    /// The connection task is ending. Publishes the will if the reason calls for it and
    /// detaches or removes the session.
    pub(crate) fn connection_closed(&self, key: usize, conn: &Rc<ConnShared>, reason: CloseReason) {
        conn.open.set(false);
        self.clear_congested(conn);
        let will = conn.will.borrow_mut().take();
        if let (Some(w), true) = (will, reason.publishes_will()) {
            let w = *w;
            self.route(Message {
                topic: w.topic,
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: Properties::new(),
            });
        }
        let mut removed: Vec<TopicFilter> = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            st.conns.try_remove(key);
            if let Some(slot) = conn.session.get() {
                let mut remove = false;
                if let Some(entry) = st.sessions.get_mut(slot) {
                    // Only the connection that currently serves the session may end it: a
                    // taken-over connection closes after its successor attached.
                    if entry.conn.as_ref().is_some_and(|c| Rc::ptr_eq(c, conn)) {
                        entry.conn = None;
                        let keep = entry.session.is_persistent()
                            && self.cfg.limits.session_expiry_max != Some(0);
                        if keep {
                            entry.session.detach();
                            st.sessions.mark_offline(slot, Instant::now());
                        } else {
                            remove = true;
                            removed.extend(entry.session.subscriptions().map(|(f, _)| f.clone()));
                        }
                    }
                }
                if remove {
                    st.sessions.remove(slot);
                    for f in &removed {
                        Self::unsubscribe_one(self, st, f, slot);
                    }
                }
            }
        }
        self.mesh.flush();
    }

    /// Closes connections silent for 1.5 times their keep alive [MQTT-3.1.2-24] (and those
    /// that did not send CONNECT within the connect timeout). Runs about once a second
    /// for the whole shard rather than one timer per connection.
    pub(crate) fn sweep(&self, now: Instant) {
        let st = self.state.borrow();
        for (_, conn) in st.conns.iter() {
            if conn.congested.get()
                && now.duration_since(conn.congested_since.get()) > Duration::from_secs(1)
            {
                tracing::warn!(pending = conn.pending_output(), "slow consumer: no longer holding back publishers; QoS 0 beyond max_write_buffer is dropped for it");
                conn.slow.set(true);
                self.clear_congested(conn);
            }
            let ka = conn.keep_alive.get();
            if ka == 0 || conn.close.get().is_some() {
                continue;
            }
            let limit = if conn.session.get().is_some() {
                Duration::from_millis(u64::from(ka) * 1500)
            } else {
                Duration::from_secs(u64::from(ka))
            };
            if now.duration_since(conn.last_read.get()) > limit {
                if conn.session.get().is_some() {
                    self.count(|m| m.keepalive_timeouts += 1);
                    conn.request_close(CloseReason::KeepAliveTimeout);
                } else {
                    conn.request_close(CloseReason::ConnectTimeout);
                }
            }
        }
    }

    /// Removes persistent sessions offline for longer than `session_expiry_max`, with
    /// their subscriptions and queued messages.
    pub(crate) fn expire_sessions(&self, now: Instant) {
        let Some(max) = self.cfg.limits.session_expiry_max else {
            return;
        };
        let max = Duration::from_secs(max);
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for slot in st.sessions.offline_longer_than(now, max) {
            let Some(entry) = st.sessions.remove(slot) else {
                continue;
            };
            let filters: Vec<TopicFilter> = entry
                .session
                .subscriptions()
                .map(|(f, _)| f.clone())
                .collect();
            for f in &filters {
                Self::unsubscribe_one(self, st, f, slot);
            }
            tracing::debug!(client_id = %entry.session.client_id(), "persistent session expired");
        }
    }
}

/// Writes CONNACK for `version`.
pub(crate) fn write_connack(
    out: &mut BytesMut,
    version: ProtocolVersion,
    session_present: bool,
    reason: ReasonCode,
) {
    match version {
        ProtocolVersion::V5 => {
            let p = Packet::ConnAck(crate::protocol::ConnAck {
                session_present,
                reason,
                properties: Properties::new(),
            });
            if let Err(e) = p.encode(version, out) {
                tracing::error!(error = %e, "CONNACK encode failed");
            }
        }
        _ => {
            let sp = version == ProtocolVersion::V3_1_1 && session_present && reason.is_success();
            out.put_slice(&[0x20, 0x02, u8::from(sp), reason.to_connack_v3()]);
        }
    }
}
