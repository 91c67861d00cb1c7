//! The retained store of the topics this shard owns (`fixed_hash(topic) % shards`): a
//! [`RetainedTrie`](crate::index::RetainedTrie) of messages that own their bytes.
//!
//! **Owns:** retained messages and their limits (`retained_max_messages`, split evenly
//! between shards, and `retained_max_payload`).
//!
//! **Must not touch:** connections and sessions: [`super::retained_stream`] walks the
//! store and delivers.

use super::shard::Shard;
use crate::index::{Matches, RetainedTrie};
use crate::session::*;

impl Shard {
    /// Stores `msg` (detached from any read buffer) as the retained message of its topic,
    /// or clears the topic for an empty payload [MQTT-3.3.1-10].
    ///
    /// With a log, the change is written down (the message once, then the topic's new
    /// value); the caller makes the publisher's ack wait for it.
    pub(crate) fn store_retained(&self, msg: Message) {
        if super::stats::is_sys(&msg.topic) {
            // The broker's own `$SYS` values: a fixed set of topics that describes this
            // run, so kept in memory only and outside `retained_max_messages` (they must
            // not take the clients' room).
            let topic = msg.topic.clone();
            if self
                .state
                .borrow_mut()
                .retained
                .insert(&topic, msg)
                .is_none()
            {
                self.sys_retained.set(self.sys_retained.get() + 1);
            }
            return;
        }
        let durable = self.durable();
        // The owner has seen this ingress, whatever it does with it (store, clear, refuse):
        // recovery must not apply it again over a later change.
        if let Some(d) = durable {
            let ingress = d.routing_ingress.get();
            if ingress != 0 {
                let store =
                    bytestring::ByteString::from_static(crate::persist::image::RETAIN_STORE);
                d.seen(ingress, &store);
                d.append(&crate::persist::record::Record::IngressSeen {
                    ingress,
                    client_id: store,
                });
            }
        }
        let mut st = self.state.borrow_mut();
        let topic = msg.topic.clone();
        let cleared = || crate::persist::record::Record::RetainCleared {
            topic: bytestring::ByteString::from(topic.as_str()),
        };
        if msg.payload.is_empty() {
            if st.retained.remove(&topic).is_some() {
                if let Some(d) = durable {
                    d.append(&cleared());
                }
            }
            return;
        }
        if msg.payload.len() > self.cfg.limits.retained_max_payload {
            if st.retained.remove(&topic).is_some() {
                if let Some(d) = durable {
                    d.append(&cleared());
                }
            }
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, size = msg.payload.len(), "retained payload over retained_max_payload: not stored");
            return;
        }
        if st.retained.len() - self.sys_retained.get() >= self.max_retained
            && st.retained.get(&topic).is_none()
        {
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, "retained store full: message not stored");
            return;
        }
        let mut msg = msg;
        msg.retain = true;
        if let Some(d) = durable {
            let id = d.message(&msg);
            if id != 0 {
                d.append(&crate::persist::record::Record::RetainSet {
                    topic: bytestring::ByteString::from(topic.as_str()),
                    msg: id,
                    ingress: d.routing_ingress.get(),
                });
            }
        }
        st.retained.insert(&topic, msg);
    }

    /// The store's next matches of `filter` after `after` (see
    /// [`RetainedTrie::matching`]), without messages whose 5.0 Message Expiry Interval has
    /// run out: those are removed from the store as they are met, and counted
    /// [MQTT-3.3.2-5]. (A store with no expiring message never checks the time.)
    pub(crate) fn retained_matching(
        &self,
        store: &mut RetainedTrie<Message>,
        filter: &str,
        after: Option<&str>,
        max: usize,
        budget: usize,
    ) -> Matches<Message> {
        let mut m = store.matching(filter, after, max, budget);
        if m.values.iter().any(|v| v.expires.is_some()) {
            let now = std::time::Instant::now();
            m.values.retain(|v| {
                if !v.expired(now) {
                    return true;
                }
                store.remove(&v.topic);
                self.count(|c| c.dropped_expired += 1);
                false
            });
        }
        m
    }
}
