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

use std::rc::{Rc, Weak};

use bytes::BytesMut;

use super::connection::{ConnShared, Deferred};
use super::shard::Shard;
use crate::session::{Message, Response};

/// An ack waiting for answers from other shards (see [`Shard::route_deferring_ack`]).
#[derive(Debug)]
pub(crate) struct Awaiting {
    /// The connection whose ack it is (none: a shard's own confirmation waits).
    pub conn: Weak<ConnShared>,
    /// Answers still to come.
    pub answers: u32,
    /// The ingress written down as routed once they came (0: none).
    pub ingress: u64,
    /// Then answer this shard's token, once this shard's own batch (0: none) is durable.
    pub then: Option<(usize, u64, u64)>,
}

impl Shard {
    /// A fresh token for something an answer waits for.
    pub(crate) fn next_token(&self) -> u64 {
        let mut st = self.state.borrow_mut();
        let token = st.next_token;
        st.next_token += 1;
        token
    }

    /// Routes a message published by `conn` whose ack must wait for other shards: for a
    /// retained message, until the owner shard stored it (a SUBSCRIBE that follows the
    /// ack, on any shard, then finds it, and updates from different shards cannot be
    /// applied out of order [MQTT-3.3.1-5]); with persistence mode `sync`, until every
    /// shard it was delivered to made its deliveries durable. A 5.0 ack still says
    /// whether anyone subscribed (0x10).
    ///
    /// `ingress` (0: none) is the message's ingress (see [`super::durable`]): it is
    /// written down as routed once every answer came.
    pub(crate) fn route_deferring_ack(
        &self,
        msg: Message,
        conn: &Rc<ConnShared>,
        ack: Option<Response>,
        ingress: u64,
    ) {
        let token = self.next_token();
        let version = conn.version.get();
        // Its place in the gate is taken now; its bytes are known once the topic is
        // matched.
        self.defer(conn, token, BytesMut::new());
        let answers = self.route_with_ack(msg, Some(token), conn.session.get(), |matched| {
            if let Some(mut r) = ack {
                if version.is_v5() && !matched {
                    r.no_matching_subscribers();
                }
                let mut d = conn.deferred.borrow_mut();
                if let Some(e) = d.iter_mut().find(|e| e.token == Some(token)) {
                    r.encode(version, &mut e.bytes);
                }
            }
        });
        if answers == 0 {
            if let Some(d) = self.durable() {
                d.routed(ingress);
            }
            self.release_deferred(conn, token);
        } else {
            self.state.borrow_mut().awaiting.insert(
                token,
                Awaiting {
                    conn: Rc::downgrade(conn),
                    answers,
                    ingress,
                    then: None,
                },
            );
        }
    }

    /// One of the answers pending ack `token` waits for arrived (see
    /// [`Shard::route_deferring_ack`]); the last one releases it.
    pub(crate) fn answer_arrived(&self, token: u64) {
        let done = {
            let mut st = self.state.borrow_mut();
            match st.awaiting.get_mut(&token) {
                Some(a) if a.answers > 1 => {
                    a.answers -= 1;
                    return;
                }
                Some(_) => st.awaiting.remove(&token),
                None => None,
            }
        };
        let Some(done) = done else {
            return;
        };
        if let Some(d) = self.durable() {
            d.routed(done.ingress);
        }
        if let Some((from, token, batch)) = done.then {
            self.confirm_after(from, token, batch);
        }
        if let Some(conn) = done.conn.upgrade() {
            self.release_deferred(&conn, token);
            // A stream of retained messages waits while the gate holds anything.
            self.resume_retained(conn.session.get());
        }
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
