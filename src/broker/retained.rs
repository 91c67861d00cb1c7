//! The retained store of the topics this shard owns (`fixed_hash(topic) % shards`).
//!
//! **Owns:** retained messages, their limits and the matching of filters against them.
//!
//! **Must not touch:** connections and sessions: matches are handed to the subscribe
//! module, which delivers them.

use super::shard::{Shard, State};
use crate::protocol::*;
use crate::session::*;

impl Shard {
    pub(crate) fn store_retained(&self, msg: Message) {
        let mut st = self.state.borrow_mut();
        let key = msg.topic.as_bytestring().clone();
        if msg.payload.is_empty() {
            st.retained.remove(&key);
            return;
        }
        if msg.payload.len() > self.cfg.limits.retained_max_payload {
            st.retained.remove(&key);
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, size = msg.payload.len(), "retained payload over retained_max_payload: not stored");
            return;
        }
        if !st.retained.contains_key(&key) && st.retained.len() >= self.max_retained {
            self.count(|m| m.retained_dropped += 1);
            tracing::warn!(topic = %msg.topic, "retained store full: message not stored");
            return;
        }
        let mut msg = msg;
        msg.retain = true;
        st.retained.insert(key, msg);
    }

    pub(crate) fn retained_matching(st: &State, filters: &[TopicFilter]) -> Vec<Message> {
        st.retained
            .values()
            .filter(|m| filters.iter().any(|f| f.matches(&m.topic)))
            .cloned()
            .collect()
    }
}
