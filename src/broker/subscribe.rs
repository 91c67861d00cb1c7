//! SUBSCRIBE and UNSUBSCRIBE: limits per filter, the local index, and the interest
//! protocol (a shard's first subscriber to a filter tells every other shard, and SUBACK
//! waits until all of them route it), then SUBACK and the retained messages.
//!
//! ## Invariants
//! - A pending SUBSCRIBE names its session by [`SessionId`] (slot plus generation) and its
//!   connection by handle: when it completes after the session is gone, or after another
//!   connection took the session over, it delivers nothing to anyone.
//! - A connection that has ended is never written to (and so never marked congested).
//! - The SUBACK waits in the acknowledgement gate under the pending token, so answers to
//!   packets pipelined behind the SUBSCRIBE (an UNSUBACK, a PUBACK) stay behind it.
//! - Retained messages are sent only for filters the session still holds when the SUBACK
//!   goes out (an UNSUBSCRIBE pipelined behind the SUBSCRIBE stops them [MQTT-3.10.4-2]).
//! - A retained message that reached the session live while the SUBSCRIBE was pending is
//!   newer than (or the same as) any snapshot of that topic taken for it, so the snapshot's
//!   copy of that topic is not delivered after it.
//!
//! **Owns:** pending subscribes and the shard's local filter counts; the shard's side of
//! the interest protocol.
//!
//! **Must not touch:** sockets, the retained store's contents (it asks for matches).

use std::rc::Rc;

use ahash::AHashSet;
use bytes::BytesMut;

use super::connection::ConnShared;
use super::retained_stream::{first_batch, FirstBatch};
use super::shard::{Shard, State};
use super::store::SessionId;
use super::ShardMsg;
use crate::protocol::{
    Packet, PacketId, Properties, ReasonCode, RetainHandling, SubAck, TopicFilter, TopicName,
};
use crate::session::Subscribed;

/// A SUBSCRIBE waiting for every other shard to route its filters.
#[derive(Debug)]
pub(crate) struct PendingSub {
    pub(crate) conn: Rc<ConnShared>,
    pub(crate) session: SessionId,
    /// The accepted filters whose retained messages follow the SUBACK, in the order of
    /// the other shards' first batches.
    pub(crate) filters: Vec<(TopicFilter, Subscribed)>,
    pub(crate) waiting: usize,
    /// Other shards' first batches of those, by shard.
    pub(crate) first: Vec<(usize, FirstBatch)>,
    /// Topics of retained messages delivered live to the session meanwhile.
    pub(crate) seen_live: AHashSet<TopicName>,
    /// Filters of `filters` unsubscribed meanwhile: their retained messages are not sent.
    /// (`filters` itself stays as it is: the other shards' first batches are in its
    /// order.)
    pub(crate) gone: Vec<TopicFilter>,
}

impl Shard {
    /// Applies a SUBSCRIBE the session accepted: index, interest broadcast, and SUBACK
    /// plus retained messages once every shard routes the filters.
    pub(crate) fn subscribe(
        &self,
        conn: &Rc<ConnShared>,
        id: SessionId,
        packet_id: PacketId,
        added: Vec<(TopicFilter, Subscribed)>,
        mut codes: Vec<ReasonCode>,
    ) {
        let version = conn.version.get();
        let l = &self.cfg.limits;
        let mut filters: Vec<TopicFilter> = Vec::with_capacity(added.len());
        let mut retained: Vec<(TopicFilter, Subscribed)> = Vec::new();
        let token = self.next_token();
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        self.refresh_rights(&mut st.sessions);
        for (i, (filter, sub)) in added.into_iter().enumerate() {
            let (exists, count) = st.sessions.get(id).map_or((false, 0), |s| {
                (s.has_subscription(&filter), s.subscription_count())
            });
            // A refused filter changes nothing: an existing subscription to it stays as it
            // was.
            let s = st.sessions.get(id);
            let who = super::hooks::ClientInfo {
                client_id: s.map_or("", |s| s.client_id()),
                username: s.and_then(|s| s.username()),
            };
            let refuse = if i >= l.max_filters_per_subscribe {
                Some(ReasonCode::QUOTA_EXCEEDED)
            } else if s.is_some_and(|s| s.is_persistent())
                && self.durable().is_some_and(|d| d.refusing())
            {
                self.persist_refused("SUBSCRIBE");
                Some(ReasonCode::QUOTA_EXCEEDED)
            } else if s
                .and_then(|s| s.rights())
                .is_some_and(|r| !r.subscribe(filter.shared().map_or(&filter, |(_, f)| f)))
                || !self
                    .auth(s.map_or(0, |s| s.domain()))
                    .authorize_subscribe(&who, &filter)
            {
                self.count(|m| m.subscribe_denied += 1);
                self.log_denied("SUBSCRIBE", who.client_id, &filter);
                Some(ReasonCode::NOT_AUTHORIZED)
            } else if filter.levels().count() > l.max_topic_levels {
                Some(ReasonCode::TOPIC_FILTER_INVALID)
            } else if !exists && count >= l.max_subscriptions_per_client {
                Some(ReasonCode::QUOTA_EXCEEDED)
            } else {
                None
            };
            if let Some(code) = refuse {
                if let Some(c) = codes.get_mut(i) {
                    *c = if version.is_v5() {
                        code
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    };
                }
                continue;
            }
            // Kept for the life of the subscription: its own bytes, not a slice of the
            // SUBSCRIBE's read buffer.
            let filter = filter.detached();
            st.sessions.subscribe(id, filter.clone(), sub);
            if exists {
                if let Some(s) = st.streams.get_mut(&id) {
                    s.resubscribed(&filter, sub);
                }
            }
            if st.subs.insert(&filter, id, sub).is_none() {
                let n = st.local_filters.entry(filter.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    st.interest.add(&filter, self.id);
                }
            }
            // Retained messages follow the SUBACK unless the server keeps none, the
            // client asked for none, or only for a new subscription and this one replaces
            // an existing one [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11], or it is a
            // shared subscription (5.0 §3.3.1.3 sends them for "a new Non-shared
            // Subscription").
            let wants_retained = self.cfg.retain_available
                && filter.shared().is_none()
                && match sub.options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !exists,
                    RetainHandling::DoNotSend => false,
                };
            if wants_retained {
                retained.push((filter.clone(), sub));
            }
            filters.push(filter);
        }
        let fetch: Vec<TopicFilter> = retained.iter().map(|(f, _)| f.clone()).collect();
        let mut suback = BytesMut::new();
        let ack = Packet::SubAck(SubAck {
            packet_id,
            codes,
            properties: Properties::new(),
        });
        if let Err(e) = ack.encode(version, &mut suback) {
            tracing::error!(error = %e, "SUBACK encode failed");
        }
        // The SUBACK waits in the gate under `token` until every shard routes the filters.
        self.defer(conn, token, suback);
        let pending = PendingSub {
            conn: conn.clone(),
            session: id,
            filters: retained,
            waiting: if filters.is_empty() {
                0
            } else {
                self.shards - 1
            },
            first: Vec::new(),
            seen_live: AHashSet::new(),
            gone: Vec::new(),
        };
        if pending.waiting == 0 {
            self.complete_subscribe(st, token, pending);
            return;
        }
        st.pending.insert(token, pending);
        for shard in (0..self.shards).filter(|&s| s != self.id) {
            self.send_control(
                shard,
                ShardMsg::InterestAdd {
                    from: self.id,
                    token,
                    filters: filters.clone(),
                    fetch: fetch.clone(),
                },
            );
        }
        // Sent now, not at the end of the read turn: SUBACK waits for the answers.
        self.control.flush();
    }

    /// Another shard routes the filters of pending SUBSCRIBE `token` now.
    pub(crate) fn on_interest_ack(&self, from: usize, token: u64, first: FirstBatch) {
        let mut st = self.state.borrow_mut();
        let done = match st.pending.get_mut(&token) {
            Some(p) => {
                p.first.push((from, first));
                p.waiting = p.waiting.saturating_sub(1);
                p.waiting == 0
            }
            None => false,
        };
        if done {
            if let Some(p) = st.pending.remove(&token) {
                self.complete_subscribe(&mut st, token, p);
            }
        }
    }

    /// Shard `from` has a subscriber for `filters` now: route them there, and answer with
    /// the first batch of this shard's retained matches of `fetch`.
    pub(crate) fn on_interest_add(
        &self,
        from: usize,
        token: u64,
        filters: Vec<TopicFilter>,
        fetch: Vec<TopicFilter>,
    ) {
        let first = {
            let mut st = self.state.borrow_mut();
            for f in &filters {
                st.interest.add(f, from);
            }
            first_batch(self, &mut st.retained, &fetch)
        };
        self.send_control(
            from,
            ShardMsg::InterestAck {
                from: self.id,
                token,
                first,
            },
        );
    }

    /// Every shard routes the filters: SUBACK, then the retained messages.
    fn complete_subscribe(&self, st: &mut State, token: u64, p: PendingSub) {
        let conn = p.conn;
        // Nothing goes to a connection that has ended or no longer serves the session (it
        // was taken over, or the session is gone and its slot may belong to someone else):
        // the subscriptions stay with a persistent session, and that is all.
        let serves = st
            .links
            .get(p.session)
            .is_some_and(|c| Rc::ptr_eq(c, &conn));
        if st.sessions.get(p.session).is_none() || !serves || !conn.is_live() {
            return;
        }
        self.release_deferred(&conn, token);
        // [MQTT-3.8.4-3]: retained messages matching the filters follow the SUBACK,
        // streamed (see `retained_stream`).
        let wanted = p
            .filters
            .iter()
            .map(|(f, s)| ((f.clone(), *s), p.gone.contains(f)))
            .collect();
        self.stream_retained(st, p.session, token, wanted, p.first, p.seen_live);
    }

    /// Removes the session's subscriptions to these filters from the index.
    /// Its retained messages not yet sent stop too: a pending SUBSCRIBE of the session
    /// drops the filter, and a running stream forgets it (subscribing again starts anew).
    pub(crate) fn unsubscribe(&self, id: SessionId, filters: &[TopicFilter]) {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for f in filters {
            st.sessions.unsubscribed(id, f);
            self.unsubscribe_one(st, f, id);
            if let Some(s) = st.streams.get_mut(&id) {
                s.forget(f);
            }
            for p in st.pending.values_mut().filter(|p| p.session == id) {
                if p.filters.iter().any(|(g, _)| g == f) && !p.gone.contains(f) {
                    p.gone.push(f.detached());
                }
            }
        }
    }

    pub(crate) fn unsubscribe_one(&self, st: &mut State, filter: &TopicFilter, id: SessionId) {
        if st.subs.remove(filter, id).is_none() {
            return;
        }
        let last = match st.local_filters.get_mut(filter) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            st.local_filters.remove(filter);
            st.interest.remove(filter, self.id);
            for shard in (0..self.shards).filter(|&s| s != self.id) {
                self.send_control(
                    shard,
                    ShardMsg::InterestRemove {
                        from: self.id,
                        filter: filter.clone(),
                    },
                );
            }
        }
    }
}
