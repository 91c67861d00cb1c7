//! Session lifecycle on a shard: registering a connection, attaching it to its session
//! (new, resumed or taken over), the end of a connection (will, detach or discard), keep
//! alive and connect timeouts, and the expiry of offline sessions.
//!
//! ## Invariants
//! - A connection is registered under a [`ConnId`] (slot plus generation); only the id it
//!   was given removes it, once.
//! - When a connection ends it is detached from its session and from the shard *before*
//!   its will is routed, and its congestion mark is cleared after: a closed connection holds
//!   nothing and counts for nothing, so it can never keep the shard's publishers held back.
//! - A will belongs to the end of a session's connection, not to a takeover that keeps the
//!   session: when a 3.1 / 3.1.1 persistent session is taken over by a connection that also
//!   keeps it (clean session 0 on both), the old connection's will is not published; when
//!   either side is clean it is (mosquitto 2.0 does the same).
//!
//! **Owns:** the rules that decide when a session begins and ends and when a will is
//! published.
//!
//! **Must not touch:** sockets beyond the shutdown of a taken-over connection and the
//! liveness probe (the connection task owns them), the routing of messages (it calls
//! [`Shard::route`]), the subscription index (it calls the subscribe module to drop a
//! discarded session's filters).

use std::rc::Rc;
use std::time::{Duration, Instant};

use std::os::fd::RawFd;

use super::connection::{CloseReason, ConnId, ConnShared};
use super::negotiated::Negotiated;
use super::shard::{Shard, State};
use super::store::SessionId;
use crate::protocol::ReasonCode;
use crate::session::Session;

impl Shard {
    /// Registers a new connection; None when the shard is at its connection limit.
    pub(crate) fn register_conn(
        &self,
        fd: RawFd,
        connect_timeout: u16,
    ) -> Option<(ConnId, Rc<ConnShared>)> {
        let mut st = self.state.borrow_mut();
        if st.conns.len() >= self.max_connections || self.stopping.get() {
            self.count(|m| m.connections_refused_limit += 1);
            return None;
        }
        let conn = Rc::new(ConnShared::new(fd, connect_timeout));
        let generation = st.next_conn_generation;
        st.next_conn_generation = generation.wrapping_add(1);
        let slot = st.conns.insert((generation, conn.clone()));
        Some((ConnId::new(slot, generation), conn))
    }

    /// Attaches a connection that sent an accepted CONNECT to its session (taking over an
    /// older connection of the same client id), writes CONNACK and, for a resumed session,
    /// the resent in-flight messages. Returns the session and session-present, or the
    /// reason the CONNECT is refused (nothing changed then, CONNACK not written).
    pub(crate) fn attach(
        &self,
        conn: &Rc<ConnShared>,
        terms: &Negotiated,
    ) -> Result<(SessionId, bool), ReasonCode> {
        let client_id = &terms.client_id;
        let (version, clean_start) = (terms.version, terms.clean_start);
        let before = self.log_marks();
        let (id, present) = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let existing = st.sessions.find(client_id);
            if existing.is_none() && st.sessions.len() >= self.max_sessions {
                self.count(|m| m.sessions_refused_limit += 1);
                tracing::warn!(client_id = %client_id, "max_sessions reached: CONNECT refused");
                return Err(ReasonCode::QUOTA_EXCEEDED);
            }
            let mut reuse = None;
            if let Some(id) = existing {
                if let Some(session) = st.sessions.get(id) {
                    // A session is resumed only by the user it was serving: what it holds
                    // (queued and in-flight messages, subscriptions) was authorized for
                    // that user, and another user taking the client id over must not
                    // receive it. Otherwise it starts clean, as on Clean Start.
                    let same_user = session.username() == terms.username.as_deref();
                    if !clean_start && session.is_persistent() && !same_user {
                        tracing::info!(client_id = %client_id, "CONNECT with another user name: the session is not resumed");
                    }
                    let keep = !clean_start && session.is_persistent() && same_user;
                    let max_packet_out = session.max_packet_out();
                    if let Some(old) = st.links.take(id) {
                        // [MQTT-3.1.4-2]: the existing connection is closed first. The old
                        // task still owns its socket; shutting it down now makes the close
                        // visible to that client before the new one gets CONNACK.
                        self.count(|m| m.takeovers += 1);
                        let delayed = old
                            .will
                            .borrow()
                            .as_ref()
                            .is_some_and(|w| super::will::will_delay(w) > 0);
                        if keep && (!old.version.get().is_v5() || delayed) {
                            // The session goes on: its will is not due (module docs; 5.0:
                            // a will with a delay is not published when the session is
                            // resumed in time [MQTT-3.1.3-10], one without is).
                            old.will.borrow_mut().take();
                        }
                        // A will that stays is due when the old connection ends, and its
                        // session may be gone by then (or serve another listener): checked
                        // now, with the session as it was, and not again at that end. Not
                        // when the old connection already ends without its will (its
                        // DISCONNECT came first: that reason stands).
                        let topic = old.will.borrow().as_ref().map(|w| w.topic.clone());
                        let will_due = old.close.get().map_or(true, |r| r.publishes_will());
                        if topic.is_some_and(|t| {
                            will_due && !self.will_permitted(&mut st.sessions, id, &t)
                        }) {
                            old.will.borrow_mut().take();
                        }
                        old.request_close(CloseReason::TakenOver);
                        if old.open.get() {
                            // Logged here: the old connection's own end may come after
                            // its session is gone (a clean start replaces it).
                            super::conn_log::disconnected(client_id, CloseReason::TakenOver);
                            self.tell_taken_over(&old, max_packet_out);
                            super::net::shutdown(old.fd);
                        }
                    }
                    if keep {
                        reuse = Some(id);
                    }
                }
                if reuse.is_none() {
                    self.remove_session(st, id);
                }
            }
            match reuse {
                Some(id) => {
                    st.sessions.mark_online(id, terms.session_expiry);
                    // Resumed in time: its delayed will is not published [MQTT-3.1.3-10].
                    self.cancel_will(st, id);
                    (id, true)
                }
                None => {
                    let session = Box::new(Session::new(
                        client_id.clone(),
                        version,
                        !clean_start,
                        terms.limits,
                    ));
                    let mut session = session;
                    session.set_expiry(terms.session_expiry);
                    (st.sessions.insert(session), false)
                }
            }
        };
        conn.session.set(Some(id));
        conn.version.set(version);
        // CONNACK goes first, then whatever the resumed session must resend.
        {
            let mut out = conn.out.borrow_mut();
            terms.write_connack(&mut out, present);
        }
        let mut st = self.state.borrow_mut();
        let st_ = &mut *st;
        // Its user (recorded for a new persistent session; a resumed one served the same
        // user) and what the user may do.
        let rights = self.rights_for(terms.domain, client_id, terms.username.as_deref());
        st_.sessions
            .set_user(id, terms.username.clone(), terms.domain, rights);
        // What the resume writes follows the store's changes (removed, created, online,
        // its user).
        self.journal_changes(&mut st_.sessions);
        if let Some(session) = st_.sessions.get_mut(id) {
            st_.links.set(id, conn.clone());
            if present {
                // The new CONNECT's interval applies from now on (5.0 §3.1.2.11.2).
                session.set_expiry(terms.session_expiry);
                session.set_limits(terms.limits);
                self.with_flows(session, |session, log| {
                    session.resume_logged(version, &mut conn.out.borrow_mut(), log)
                });
                let expired = session.take_expired_drops();
                let denied = session.take_denied_drops();
                self.count(|m| {
                    m.dropped_expired += u64::from(expired);
                    m.read_denied += u64::from(denied);
                });
            }
        }
        // A stream of retained messages the session had not finished goes on.
        if present && st.streams.contains_key(&id) {
            self.pump_retained(&mut st, id);
        }
        drop(st);
        // CONNACK and the resent flows wait for what they reflect (a session created or
        // resumed, flows ended on resume) to be on disk.
        self.durable_point(conn, before, true);
        conn.wake.notify();
        // The delayed will of a session this CONNECT discarded is due now, and what it
        // held for share groups goes to other members.
        self.publish_due_wills(Instant::now());
        self.redeliver_shared();
        Ok((id, present))
    }

    /// A 5.0 client whose connection is taken over is told so (DISCONNECT 0x8E) before its
    /// socket is shut down, when the bytes can start at a packet boundary: nothing of its
    /// output is being written (what waits in its buffer is dropped: the session resends
    /// it to the new connection). Otherwise it only sees the close.
    fn tell_taken_over(&self, old: &ConnShared, client_max: u32) {
        // Over TLS the bytes would have to go through the task's stream (plain bytes in a
        // TLS stream are garbage to the client): it only sees the close.
        if !old.version.get().is_v5() || old.writing.get() != 0 || old.framed.get() {
            return;
        }
        let mut out = old.out.borrow_mut();
        out.clear();
        super::process::write_disconnect(
            &mut out,
            ReasonCode::SESSION_TAKEN_OVER,
            "another connection took the session over",
            client_max,
        );
        self.count_sent(&out, true);
        super::net::send_now(old.fd, &out);
        out.clear();
    }

    /// A 5.0 DISCONNECT sets the session's expiry interval (capped by
    /// `session_expiry_max`). A session that was to end with its connection cannot be
    /// made to outlive it this way [MQTT-3.14.2-2]: a Protocol Error, answered with
    /// DISCONNECT 0x82. (When `session_expiry_max` is 0 every session ends with its
    /// connection, and a non-zero interval is only capped: the client cannot tell.)
    pub(crate) fn change_session_expiry(
        &self,
        conn: &ConnShared,
        id: SessionId,
        seconds: u32,
    ) -> Result<(), CloseReason> {
        let cap = self.cfg.limits.session_expiry_cap();
        let mut st = self.state.borrow_mut();
        let Some(session) = st.sessions.get_mut(id) else {
            return Ok(());
        };
        if session.expiry() == 0 && seconds != 0 && cap != 0 {
            drop(st);
            self.count(|m| m.protocol_errors += 1);
            tracing::info!(
                "DISCONNECT sets a session expiry after 0 [MQTT-3.14.2-2]: protocol error"
            );
            super::process::disconnect_v5(
                self,
                conn,
                conn.version.get(),
                ReasonCode::PROTOCOL_ERROR,
                "DISCONNECT sets a session expiry after 0 [MQTT-3.14.2-2]",
            );
            return Err(CloseReason::ProtocolError);
        }
        session.set_expiry(seconds.min(cap));
        Ok(())
    }

    /// The connection task is ending (or has panicked). Detaches or removes the session,
    /// then publishes the will if the reason calls for it. Idempotent: only the first call
    /// for a connection does anything.
    pub(crate) fn connection_closed(
        &self,
        key: ConnId,
        conn: &Rc<ConnShared>,
        reason: CloseReason,
    ) {
        if !conn.open.replace(false) {
            return;
        }
        self.count_close(reason);
        // Checked while its session still exists (see `Shard::will_permitted`).
        let will_allowed = self.will_allowed(conn, reason);
        // The session, if it outlives this connection (a delayed will waits for it).
        let mut kept = None;
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            if st
                .conns
                .get(key.slot())
                .is_some_and(|(g, _)| *g == key.generation())
            {
                st.conns.remove(key.slot());
            }
            if let Some(id) = conn.session.get() {
                // A taken-over connection was logged when it was taken over.
                if conn.close.get() != Some(CloseReason::TakenOver) {
                    if let Some(s) = st.sessions.get(id) {
                        super::conn_log::disconnected(s.client_id(), reason);
                    }
                }
                let mut remove = false;
                // Only the connection that currently serves the session may end it: a
                // taken-over connection closes after its successor attached.
                let serves = st.links.get(id).is_some_and(|c| Rc::ptr_eq(c, conn));
                if let (Some(session), true) = (st.sessions.get_mut(id), serves) {
                    st.links.take(id);
                    // The expiry interval was decided at CONNECT (capped by
                    // `session_expiry_max`; 0 ends every session here) or changed by a
                    // 5.0 DISCONNECT.
                    if session.is_persistent() && self.cfg.limits.session_expiry_cap() != 0 {
                        session.detach();
                        st.sessions.mark_offline(id, Instant::now());
                        kept = Some(id);
                    } else {
                        remove = true;
                    }
                }
                // A connection that no longer serves its session (taken over) has no
                // session to delay its will for: the successor either resumed the session
                // (and `attach` dropped a delayed will) or ended it (its will is due now).
                if remove {
                    self.remove_session(st, id);
                }
            }
        }
        // Nothing routes to the connection any more; what it was holding is released.
        self.clear_congested(conn);
        conn.slow.set(false);
        conn.clear_held();
        conn.deferred.borrow_mut().clear();
        let will = conn.will.borrow_mut().take();
        if let (Some(w), true) = (will, will_allowed) {
            self.will_due(w, kept);
        }
        // Wills of sessions that ended here; their share groups' messages.
        self.publish_due_wills(Instant::now());
        self.redeliver_shared();
    }

    /// Whether the will of `conn`, ending for `reason`, is due: the reason calls for it
    /// and its client may still publish to the will's topic.
    fn will_allowed(&self, conn: &ConnShared, reason: CloseReason) -> bool {
        if !reason.publishes_will() {
            return false;
        }
        let (Some(id), Some(topic)) = (
            conn.session.get(),
            conn.will.borrow().as_ref().map(|w| w.topic.clone()),
        ) else {
            return true;
        };
        let mut st = self.state.borrow_mut();
        // Taken over: its will was checked at the takeover, with the session as it was.
        let serves = st.links.get(id).is_some_and(|c| std::ptr::eq(&**c, conn));
        !serves || self.will_permitted(&mut st.sessions, id, &topic)
    }

    /// Closes connections silent for 1.5 times their keep alive [MQTT-3.1.2-24] (and those
    /// that did not send CONNECT within the connect timeout), and marks as slow those that
    /// held publishers back for a second. Runs about twice a second for the whole shard
    /// rather than one timer per connection.
    ///
    /// Liveness is what the socket received, not what the task got round to reading: a
    /// connection whose task is busy writing, or held back by flow control, may have
    /// packets waiting unread. So before a connection is closed for keep alive, its socket
    /// is asked for unread bytes; if there are any, the client did send and the clock
    /// restarts.
    pub(crate) fn sweep(&self, now: Instant) {
        let st = self.state.borrow();
        for (_, (_, conn)) in st.conns.iter() {
            if conn.congested.get()
                && now.duration_since(conn.congested_since.get()) > Duration::from_secs(1)
            {
                tracing::warn!(pending = conn.pending_output(), "slow consumer: no longer holding back publishers; QoS 0 beyond max_write_buffer is dropped for it");
                conn.slow.set(true);
                self.clear_congested(conn);
            }
            let ka = conn.keep_alive.get();
            if ka == 0 || conn.close.get().is_some() || !conn.open.get() {
                continue;
            }
            let limit = if conn.session.get().is_some() {
                Duration::from_millis(u64::from(ka) * 1500)
            } else {
                Duration::from_secs(u64::from(ka))
            };
            if now.duration_since(conn.last_read.get()) <= limit {
                continue;
            }
            if conn.session.get().is_some() && super::net::unread_bytes(conn.fd) > 0 {
                conn.last_read.set(now);
                continue;
            }
            if conn.session.get().is_some() {
                self.count(|m| m.keepalive_timeouts += 1);
                conn.request_close(CloseReason::KeepAliveTimeout);
            } else {
                conn.request_close(CloseReason::ConnectTimeout);
            }
        }
    }

    /// Removes the offline sessions whose expiry interval has passed since their
    /// connection ended (each its own: 5.0 Session Expiry Interval, or a 3.x persistent
    /// session capped by `session_expiry_max`), with their subscriptions and queued
    /// messages [MQTT-4.1.0-2].
    pub(crate) fn expire_sessions(&self, now: Instant) {
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            for id in st.sessions.take_expired(now) {
                let Some(session) = self.remove_session(st, id) else {
                    continue;
                };
                self.count(|m| m.sessions_expired += 1);
                tracing::debug!(client_id = %session.client_id(), "session expired");
            }
        }
        // Delayed wills whose time came, and those of the sessions that just ended; their
        // share groups' messages.
        self.publish_due_wills(now);
        self.redeliver_shared();
    }

    /// Removes a session with everything that names it: its subscriptions in the index
    /// (and, for a filter's last subscriber, the other shards' interest) and its stream of
    /// retained messages.
    /// What it held through shared subscriptions and its client had not acknowledged goes
    /// to `State::shared_orphans`, for other members of the groups (`redeliver_shared`).
    fn remove_session(&self, st: &mut State, id: SessionId) -> Option<Box<Session>> {
        st.sessions.get(id)?;
        // Its delayed will is checked with the session still there.
        self.session_ended_will(st, id);
        let mut session = st.sessions.remove(id)?;
        st.links.take(id);
        st.streams.remove(&id);
        for (f, _) in session.subscriptions() {
            self.unsubscribe_one(st, f, id);
        }
        st.shared_orphans.extend(session.take_shared());
        Some(session)
    }
}
