//! The acknowledgement gate: answers to a client's packets leave in the order the packets
//! arrived [MQTT-4.6.0-2] [MQTT-4.6.0-3], even when one of them must wait: the ack of a
//! retained PUBLISH until the topic's owner shard has stored it, a SUBACK until every shard
//! routes the new filters (so an UNSUBACK pipelined behind it cannot overtake it and no
//! retained message of the filter follows the UNSUBACK [MQTT-3.10.4-2]); later, an ack
//! until what it acknowledges is on disk, or a 5.0 reason code from the authorization hook.
//!
//! An entry either waits for a token or is ready; ready entries at the front are written
//! at once. Tokens are unique per shard and never reused, so a late release for a
//! connection that is gone finds nothing (the connection is held weakly or by value).
//!
//! **Owns:** a connection's deferred answers and the tokens they wait for.
//!
//! **Must not touch:** deliveries to the client: server-initiated PUBLISH frames (and our
//! PUBRELs) never wait here, so a held ack cannot reorder them [MQTT-4.6.0-6]. Nor routing
//! or the session state machine.

use std::rc::Rc;

use bytes::BytesMut;

use super::connection::{ConnShared, Deferred};
use super::shard::Shard;
use crate::session::{Message, Response};

impl Shard {
    /// A fresh token for something an answer waits for.
    pub(crate) fn next_token(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        let token = st.next_token;
        st.next_token += 1;
        token
    }

    /// Routes a retained message published by `conn` whose ack must not go out before the
    /// owner shard stored the message: a SUBSCRIBE that follows the ack, on any shard, then
    /// finds it, and updates from different shards cannot be applied out of order
    /// [MQTT-3.3.1-5].
    pub(crate) fn route_deferring_ack(
        &self,
        msg: Message,
        conn: &Rc<ConnShared>,
        ack: Option<Response>,
    ) {
        let token = self.next_token();
        self.state
            .borrow_mut()
            .retain_acks
            .insert(token, Rc::downgrade(conn));
        let mut bytes = BytesMut::new();
        if let Some(ack) = ack {
            ack.encode(conn.version.get(), &mut bytes);
        }
        self.defer(conn, token, bytes);
        self.route_with_ack(msg, Some(token), conn.session.get(), |_| ());
    }

    /// Writes an answer behind whatever the gate holds back for `conn`.
    pub(crate) fn respond(&self, conn: &ConnShared, response: &Response) {
        let version = conn.version.get();
        let mut d = conn.deferred.borrow_mut();
        if d.is_empty() {
            drop(d);
            response.encode(version, &mut conn.out.borrow_mut());
        } else {
            let mut bytes = BytesMut::new();
            response.encode(version, &mut bytes);
            d.push_back(Deferred {
                token: None,
                ready: true,
                bytes,
            });
        }
    }

    /// Holds `bytes` (an encoded answer) until `token` is released.
    pub(crate) fn defer(&self, conn: &ConnShared, token: u64, bytes: BytesMut) {
        conn.deferred.borrow_mut().push_back(Deferred {
            token: Some(token),
            ready: false,
            bytes,
        });
    }

    /// `token` is done: writes the answers that no longer wait.
    pub(crate) fn release_deferred(&self, conn: &ConnShared, token: u64) {
        let mut d = conn.deferred.borrow_mut();
        for entry in d.iter_mut() {
            if entry.token == Some(token) {
                entry.ready = true;
            }
        }
        let mut out = conn.out.borrow_mut();
        while d.front().is_some_and(|e| e.ready) {
            if let Some(e) = d.pop_front() {
                out.unsplit(e.bytes);
            }
        }
        drop(out);
        drop(d);
        conn.wake.notify();
    }
}
