//! The acknowledgement gate: responses to a client's packets leave in the order the
//! packets arrived, even when one of them must wait (the ack of a retained PUBLISH until
//! the topic's owner shard has stored it).
//!
//! **Owns:** a connection's deferred responses and the tokens they wait for.
//!
//! **Must not touch:** deliveries to the client (server-initiated PUBLISH frames never
//! wait here), routing, the session state machine.

use std::rc::Rc;

use bytes::BytesMut;

use super::connection::ConnShared;
use super::shard::Shard;
use crate::session::*;

impl Shard {
    /// Routes a retained message published by `conn` whose ack (already encoded in `ack`)
    /// must not go out before the owner shard stored the message: a SUBSCRIBE that follows
    /// the ack, on any shard, then finds it, and updates from different shards cannot be
    /// applied out of order [MQTT-3.3.1-5].
    pub(crate) fn route_deferring_ack(&self, msg: Message, conn: &Rc<ConnShared>, ack: BytesMut) {
        let token = {
            let mut st = self.state.borrow_mut();
            let token = st.next_token;
            st.next_token += 1;
            st.retain_acks.insert(token, Rc::downgrade(conn));
            token
        };
        conn.deferred.borrow_mut().push_back((Some(token), ack));
        self.route_with_ack(msg, Some(token));
    }

    /// Queues `bytes` behind held-back acks, or writes them if nothing is held back.
    pub(crate) fn respond(&self, conn: &ConnShared, bytes: BytesMut) {
        if bytes.is_empty() {
            return;
        }
        let mut d = conn.deferred.borrow_mut();
        if d.is_empty() {
            drop(d);
            conn.out.borrow_mut().unsplit(bytes);
        } else {
            d.push_back((None, bytes));
        }
    }

    /// Writes the held-back responses that are no longer waiting.
    pub(crate) fn release_deferred(&self, conn: &ConnShared, token: u64) {
        let mut d = conn.deferred.borrow_mut();
        for entry in d.iter_mut() {
            if entry.0 == Some(token) {
                entry.0 = None;
            }
        }
        let mut out = conn.out.borrow_mut();
        while d.front().is_some_and(|e| e.0.is_none()) {
            if let Some((_, bytes)) = d.pop_front() {
                out.unsplit(bytes);
            }
        }
        drop(out);
        drop(d);
        conn.wake.notify();
    }
}
