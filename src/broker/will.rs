//! Wills: when a connection's will is published, now or after its 5.0 Will Delay
//! Interval.
//!
//! A will is due when its connection ends without a DISCONNECT (or with 5.0's "disconnect
//! with will") [MQTT-3.1.2-8]. It is published at once, unless it has a Will Delay
//! Interval and its session outlives the connection: then it waits, and is published at
//! the end of the delay or when the session ends, whichever comes first [MQTT-3.1.3-9],
//! and not at all if a connection resumes the session in time [MQTT-3.1.3-10].
//!
//! ## Invariants and limits
//! - At most one delayed will per session (a session has one connection at a time), so
//!   the table is bounded by the sessions of the shard; it names sessions by
//!   [`SessionId`] (with generation), and a deadline for a session whose will was
//!   cancelled or published is skipped when it comes up.
//! - A session that ends (expiry, a clean start discarding it) hands its delayed will to
//!   `State::wills_due`, published by the caller once it no longer borrows the state.
//!
//! **Owns:** delayed wills and their deadlines.
//!
//! **Must not touch:** sockets, sessions (it is told when one ends or resumes), the
//! routing of the message itself ([`Shard::route`]).

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::shard::{Shard, State};
use super::store::SessionId;
use crate::persist::record::Record;
use crate::protocol::Will;
use crate::session::Message;

/// A will as the application message it becomes. Its properties travel with it, except
/// the one about the will itself (5.0 §3.1.3.2: Will Delay Interval is not a PUBLISH
/// property); a Message Expiry Interval counts from now.
pub(crate) fn will_message(w: &Will) -> Message {
    let mut properties = w.properties.clone();
    if !properties.is_empty() {
        properties.get_mut().will_delay_interval = None;
    }
    Message {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        expires: Message::expiry_of(&properties),
        properties,
    }
}

/// A will's 5.0 Will Delay Interval in seconds (0: none; always 0 for 3.x).
pub(crate) fn will_delay(will: &Will) -> u32 {
    will.properties.will_delay_interval.unwrap_or(0)
}

impl Shard {
    /// A connection's will is due; `kept` is its session if the session outlives the
    /// connection (so a Will Delay Interval can apply).
    pub(crate) fn will_due(&self, will: Box<Will>, kept: Option<SessionId>) {
        let delay = will_delay(&will);
        let at = Instant::now().checked_add(Duration::from_secs(u64::from(delay)));
        match (kept, at) {
            (Some(id), Some(at)) if delay > 0 => {
                let mut st = self.state.borrow_mut();
                // Kept in the log with its session, so that a restart neither loses it
                // nor publishes it early.
                if let (Some(d), Some(s)) = (self.durable(), st.sessions.get(id)) {
                    if s.is_persistent() {
                        let client_id = s.client_id().clone();
                        self.journal_changes(&mut st.sessions);
                        let msg = d.message(&will_message(&will));
                        if msg != 0 {
                            let due = std::time::SystemTime::now()
                                + Duration::from_secs(u64::from(delay));
                            d.append(&Record::WillDelayed {
                                client_id,
                                due_ms: super::durable::wall_ms(due),
                                msg,
                            });
                        }
                    }
                }
                st.will_deadlines.push(Reverse((at, id)));
                st.delayed_wills.insert(id, (at, will));
            }
            _ => self.publish_will(*will),
        }
    }

    /// Publishes a will as an application message (see [`will_message`]).
    pub(crate) fn publish_will(&self, w: Will) {
        self.route(will_message(&w));
    }

    /// The shard stops. Without persistence sessions do not outlive it, so every delayed
    /// will is due now [MQTT-3.1.3-9]; with it, delayed wills stay in the log with their
    /// sessions and wait out their delay after the restart.
    pub(crate) fn publish_all_wills(&self) {
        if self.durable().is_none() {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let all: Vec<_> = st.delayed_wills.drain().collect();
            for (id, (_, w)) in all {
                if self.will_permitted(&mut st.sessions, id, &w.topic) {
                    st.wills_due.push(*w);
                }
            }
            st.will_deadlines.clear();
        }
        self.publish_due_wills(Instant::now());
    }

    /// A connection resumed session `id`: its delayed will, if any, is not published.
    pub(crate) fn cancel_will(&self, st: &mut State, id: SessionId) {
        if st.delayed_wills.remove(&id).is_some() {
            self.will_cleared(st, id);
        }
    }

    /// The log hears that session `id`'s delayed will is gone (published or cancelled).
    fn will_cleared(&self, st: &mut State, id: SessionId) {
        if let (Some(d), Some(s)) = (self.durable(), st.sessions.get(id)) {
            if s.is_logged() {
                let client_id = s.client_id().clone();
                self.journal_changes(&mut st.sessions);
                d.append(&Record::WillCleared { client_id });
            }
        }
    }

    /// Session `id` ends: its delayed will, if any, is due now (`State::wills_due`).
    /// Called while the session is still in the store.
    pub(crate) fn session_ended_will(&self, st: &mut State, id: SessionId) {
        if let Some((_, w)) = st.delayed_wills.remove(&id) {
            if self.will_permitted(&mut st.sessions, id, &w.topic) {
                st.wills_due.push(*w);
            }
        }
    }

    /// Whether session `id`'s client may publish its will to `topic` now that the will is
    /// due. A will is authorized at CONNECT and again here, with the rights in force at
    /// the time (a reload may have taken the right away since; mosquitto checks again
    /// when it sends a will too). Counted and logged like a denied PUBLISH when not.
    ///
    /// Every will is checked while its session is in the store: at the connection's end,
    /// at a takeover (before a clean start removes the session), when a delay ends and
    /// when a session with a delayed will ends. So a will whose session is already gone
    /// was checked as the session went, and is let through.
    pub(crate) fn will_permitted(
        &self,
        sessions: &mut super::store::SessionStore,
        id: SessionId,
        topic: &str,
    ) -> bool {
        if sessions.get(id).is_none() {
            return true;
        }
        if self.may_publish_in(sessions, id, topic) {
            return true;
        }
        self.count(|m| m.publish_denied += 1);
        let client_id = sessions.get(id).map_or("", |s| s.client_id());
        self.log_denied("will", client_id, topic);
        false
    }

    /// Publishes the wills whose delay has passed by `now`, and those of sessions that
    /// ended (run by the sweep, and after a session ends).
    pub(crate) fn publish_due_wills(&self, now: Instant) {
        let due = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            while let Some(Reverse((at, id))) = st.will_deadlines.peek().copied() {
                if at > now {
                    break;
                }
                st.will_deadlines.pop();
                if st.delayed_wills.get(&id).is_some_and(|(a, _)| *a == at) {
                    if let Some((_, w)) = st.delayed_wills.remove(&id) {
                        if self.will_permitted(&mut st.sessions, id, &w.topic) {
                            st.wills_due.push(*w);
                        }
                        self.will_cleared(st, id);
                    }
                }
            }
            if st.will_deadlines.len() > 2 * st.delayed_wills.len() + 1024 {
                st.will_deadlines = st
                    .delayed_wills
                    .iter()
                    .map(|(id, (at, _))| Reverse((*at, *id)))
                    .collect();
            }
            std::mem::take(&mut st.wills_due)
        };
        for w in due {
            self.publish_will(w);
        }
        self.flush_mesh();
    }
}
