//! SUBSCRIBE and UNSUBSCRIBE: limits per filter, the local index, and the interest
//! protocol (a shard's first subscriber to a filter tells every other shard, and SUBACK
//! waits until all of them route it), then SUBACK and the retained messages.
//!
//! **Owns:** pending subscribes and the shard's local filter counts.
//!
//! **Must not touch:** sockets, the retained store's contents (it asks for matches).

use std::rc::Rc;

use super::connection::ConnShared;
use super::shard::{Shard, State};
use super::ShardMsg;
use crate::protocol::*;
use crate::session::*;

/// A SUBSCRIBE waiting for every other shard to route its filters.
#[derive(Debug)]
pub(crate) struct PendingSub {
    pub(crate) conn: Rc<ConnShared>,
    pub(crate) session: usize,
    pub(crate) packet_id: PacketId,
    pub(crate) codes: Vec<ReasonCode>,
    pub(crate) filters: Vec<(TopicFilter, SubscriptionOptions)>,
    pub(crate) waiting: usize,
    pub(crate) retained: Vec<Message>,
}

impl Shard {
    /// Applies a SUBSCRIBE the session accepted: index, interest broadcast, and SUBACK
    /// plus retained messages once every shard routes the filters.
    pub(crate) fn subscribe(
        &self,
        conn: &Rc<ConnShared>,
        slot: usize,
        packet_id: PacketId,
        added: Vec<(TopicFilter, SubscriptionOptions)>,
        mut codes: Vec<ReasonCode>,
    ) {
        let version = conn.version.get();
        let l = &self.cfg.limits;
        let mut accepted: Vec<(TopicFilter, SubscriptionOptions)> = Vec::with_capacity(added.len());
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        for (i, (filter, opts)) in added.into_iter().enumerate() {
            let (exists, count) = st.sessions.get(slot).map_or((false, 0), |e| {
                (
                    e.session.has_subscription(&filter),
                    e.session.subscription_count(),
                )
            });
            // A refused filter changes nothing: an existing subscription to it stays as it
            // was.
            let refuse = if i >= l.max_filters_per_subscribe {
                Some(ReasonCode::QUOTA_EXCEEDED)
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
            if let Some(e) = st.sessions.get_mut(slot) {
                e.session.add_subscription(filter.clone(), opts);
            }
            if st.subs.insert(&filter, slot, opts).is_none() {
                let n = st.local_filters.entry(filter.clone()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    st.interest.add(&filter, self.id);
                }
            }
            accepted.push((filter, opts));
        }
        let filters: Vec<TopicFilter> = accepted.iter().map(|(f, _)| f.clone()).collect();
        let retained = if self.cfg.retain_available {
            Self::retained_matching(st, &filters)
        } else {
            Vec::new()
        };
        let token = st.next_token;
        st.next_token += 1;
        let pending = PendingSub {
            conn: conn.clone(),
            session: slot,
            packet_id,
            codes,
            filters: accepted,
            waiting: self.shards - 1,
            retained,
        };
        if pending.waiting == 0 || filters.is_empty() {
            drop(filters);
            self.complete_subscribe(st, pending);
            return;
        }
        st.pending.insert(token, pending);
        for shard in (0..self.shards).filter(|&s| s != self.id) {
            self.mesh.push(
                shard,
                ShardMsg::InterestAdd {
                    from: self.id,
                    token,
                    filters: filters.clone(),
                },
            );
        }
        // Sent now, not at the end of the read turn: SUBACK waits for the answers.
        self.mesh.flush();
    }

    pub(crate) fn complete_subscribe(&self, st: &mut State, p: PendingSub) {
        let conn = p.conn;
        // A connection that closed meanwhile gets nothing; the subscriptions stay with
        // its (persistent) session.
        if conn.close.get().is_some() {
            return;
        }
        let version = conn.version.get();
        let mut out = conn.out.borrow_mut();
        let ack = Packet::SubAck(SubAck {
            packet_id: p.packet_id,
            codes: p.codes,
            properties: Properties::new(),
        });
        if let Err(e) = ack.encode(version, &mut out) {
            tracing::error!(error = %e, "SUBACK encode failed");
        }
        // [MQTT-3.8.4-3]: retained messages matching the filters follow the SUBACK, with
        // RETAIN set [MQTT-3.3.1-8], at the lower of their QoS and the granted QoS.
        if let Some(entry) = st.sessions.get_mut(p.session) {
            for m in &p.retained {
                let granted = p
                    .filters
                    .iter()
                    .filter(|(f, o)| {
                        f.matches(&m.topic)
                            && o.retain_handling != crate::protocol::RetainHandling::DoNotSend
                    })
                    .map(|(_, o)| o.qos)
                    .max();
                if let Some(g) = granted {
                    entry.session.deliver(m, m.qos.min(g), true, Some(&mut out));
                }
            }
        }
        drop(out);
        self.note_output(&conn);
        conn.wake.notify();
    }

    /// Removes the session's subscriptions to these filters from the index.
    pub(crate) fn unsubscribe(&self, slot: usize, filters: &[TopicFilter]) {
        let mut st = self.state.borrow_mut();
        for f in filters {
            Self::unsubscribe_one(self, &mut st, f, slot);
        }
    }

    pub(crate) fn unsubscribe_one(&self, st: &mut State, filter: &TopicFilter, slot: usize) {
        if st.subs.remove(filter, slot).is_none() {
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
                self.mesh.push(
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
