//! Shared subscriptions `$share/{group}/{filter}` (5.0 §4.8.2; 3.1 and 3.1.1 clients may
//! join groups too, as mosquitto, EMQX and HiveMQ allow): each message matching a group
//! goes to one member of it, whichever shard the member's session lives on.
//!
//! ## Selection policy
//! - The publishing shard picks one shard per matching group, among those its interest
//!   replica says have members, in rotation (a cursor per group, kept in the replica), and
//!   sends the message there naming the group: one mesh item per shard carries both the
//!   plain delivery (if that shard has plain subscribers) and the groups chosen there.
//! - That shard picks one of its members in rotation (a cursor per group, kept in its
//!   index), taking the first, from the cursor on, that can take the message now
//!   (connected, nothing queued, room in its window and its write buffer); failing that,
//!   the first connected member. A shard whose members are all offline hands the message
//!   on to another shard with members (some may be connected there), unless it is the
//!   last hop (see below); then the next offline member takes it (its kept session
//!   queues QoS 1/2 messages for its return, as its queue limits allow; QoS 0 is dropped
//!   for it, counted).
//! - So rotation is over shards first, then members: when members are spread unevenly
//!   over shards, each shard gets an even share of the group's messages.
//! - A shard chosen for a group it has no member of any more (an unsubscribe crossing the
//!   message) hands the message to another shard its own replica names, for at most as
//!   many hops as there are shards; a message no member can get is dropped and counted
//!   (`shared_undeliverable`).
//! - A member's delivery is its own: a client with a plain subscription that also matches
//!   gets a second copy when it is the group's choice (5.0 §4.8.2).
//!
//! ## A member that leaves
//! When a member's session ends (its connection closes with expiry 0, it expires, or a
//! clean start replaces it), the messages it holds through the group that its client has
//! not acknowledged (sent without PUBACK or PUBREC yet, or queued) go to another member,
//! at that member's granted QoS (§4.8.2: "SHOULD send the Application Message to another
//! Client"); they are counted in `shared_redelivered`. A member that only goes offline
//! keeps what it holds for its return (the specification's "MAY wait for the Client to
//! reconnect"). A message the client answered with PUBACK or PUBREC, whatever the reason
//! code, is finished with: it is never sent to another member [MQTT-4.8.2-5].
//!
//! New shared subscriptions get no retained messages: §3.3.1.3 sends them for "a new
//! Non‑shared Subscription". No Local on a shared subscription is a protocol error
//! [MQTT-3.8.3-4] (checked by the session).
//!
//! **Owns:** the choice of shard and member, and moving messages to them.
//! **Must not touch:** sockets; sessions beyond asking whether one can take a message now
//! and offering it one.

use std::cell::Cell;

use super::shard::{Links, Shard};
use super::store::{SessionId, SessionStore};
use super::ShardMsg;
use crate::index::ShardMask;
use crate::protocol::TopicName;
use crate::session::{Message, Subscribed};

/// A message for some of a shard's share groups (and maybe its plain subscribers too).
#[derive(Debug)]
pub(crate) struct SharedPublish {
    pub msg: Message,
    /// Deliver to the shard's plain subscribers as well.
    pub plain: bool,
    /// The share groups (full `$share/...` text) this shard is to give it to one member
    /// of.
    pub groups: Vec<Box<str>>,
    /// Times it was handed on because the chosen shard had no member: it is handed on
    /// again only while this is below the shard count.
    pub hops: u8,
    /// Persistence mode `sync`: answer `RetainStored` with this token to this shard once
    /// what the delivery changed is durable.
    pub ack: Option<(usize, u64)>,
    /// The message's ingress (see [`super::durable`]), 0: none.
    pub ingress: u64,
}

/// The `n`th shard of `mask`, counting round (None for an empty mask).
fn nth_shard(mask: ShardMask, n: u32) -> Option<usize> {
    let len = mask.len();
    if len == 0 {
        return None;
    }
    mask.iter().nth(n as usize % len)
}

/// How a member can take a message: now, once its window or buffer drains, or when its
/// client comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Readiness {
    Now,
    Connected,
    Offline,
}

/// Picks the member of a share group that gets the next message to `topic` (module docs),
/// among those that may read it, and moves the group's cursor past it.
pub(crate) fn pick_member(
    members: &[(SessionId, Subscribed)],
    cursor: &Cell<u32>,
    sessions: &SessionStore,
    links: &Links,
    max_write: usize,
    topic: &str,
) -> Option<(SessionId, Subscribed, Readiness)> {
    let n = members.len();
    if n == 0 {
        return None;
    }
    let start = cursor.get() as usize % n;
    let mut best: Option<(usize, Readiness)> = None;
    for k in 0..n {
        let at = (start + k) % n;
        let Some((slot, _)) = members.get(at) else {
            continue;
        };
        // A member that may not read the topic is not a candidate: the message goes to
        // one that may (here or on another shard), not to a refusal.
        let Some(session) = sessions.get(*slot).filter(|s| s.may_read(topic)) else {
            continue;
        };
        let rank = match links.get(*slot) {
            Some(c)
                if c.is_live()
                    && !c.congested.get()
                    && c.pending_output() < max_write
                    && session.has_room() =>
            {
                Readiness::Now
            }
            Some(_) => Readiness::Connected,
            None => Readiness::Offline,
        };
        if best.map_or(true, |(_, r)| rank < r) {
            best = Some((at, rank));
            if rank == Readiness::Now {
                break;
            }
        }
    }
    let (at, rank) = best?;
    cursor.set(u32::try_from(at + 1).unwrap_or(0));
    members.get(at).map(|(slot, sub)| (*slot, *sub, rank))
}

impl Shard {
    /// The shards a message to `topic` goes to: those with plain subscribers, and one
    /// shard per matching share group with the group's text (module docs). Without
    /// shared subscriptions anywhere this is the plain walk and nothing else.
    pub(crate) fn match_shards(&self, topic: &TopicName) -> (ShardMask, Vec<(usize, Box<str>)>) {
        let st = self.state.borrow();
        if !st.interest.has_shared() {
            return (st.interest.match_mask(topic), Vec::new());
        }
        let mut plain = ShardMask::EMPTY;
        let mut picks = Vec::new();
        st.interest
            .for_each_match(topic, |share, mask| match share {
                None => plain |= mask,
                Some((group, cursor)) => {
                    let n = cursor.get();
                    cursor.set(n.wrapping_add(1));
                    if let Some(shard) = nth_shard(mask, n) {
                        picks.push((shard, Box::from(group)));
                    }
                }
            });
        (plain, picks)
    }

    /// Sends a message for share groups to shard `dest`, on the data plane (in order with
    /// the plain deliveries routed before it).
    pub(crate) fn send_shared(&self, dest: usize, p: SharedPublish) {
        let Some(m) = self.hold_data(dest, ShardMsg::SharedPublish(Box::new(p))) else {
            return;
        };
        if let Err(msg) = self.mesh.push(dest, m) {
            self.undeliverable(dest, &msg);
        }
    }

    /// Another shard chose this one for some share groups of a message.
    ///
    /// With an ack to give (persistence mode `sync`), groups handed on to other shards ask
    /// them for answers under a token of this shard's: returned with their number, so that
    /// the caller answers only once they did.
    pub(crate) fn on_shared_publish(&self, p: SharedPublish) -> Option<(u64, u32)> {
        let unserved = self.deliver_here(&p.msg, None, p.plain, &p.groups, p.hops);
        let token = (p.ack.is_some() && !unserved.is_empty()).then(|| self.next_token());
        let n = self.forward_shared(&p.msg, unserved, p.hops.saturating_add(1), token);
        token.filter(|_| n > 0).map(|t| (t, n))
    }

    /// Hands each of `groups`, for which this shard has no member, to another shard its
    /// replica says has members, or drops the message for that group (counted) when there
    /// is none or it has been through as many shards as there are.
    ///
    /// With `ack`, each shard it goes to answers that token of this shard's once its
    /// delivery is durable; returns how many answers that asks for (0 without `ack`).
    pub(crate) fn forward_shared(
        &self,
        msg: &Message,
        groups: Vec<Box<str>>,
        hops: u8,
        ack: Option<u64>,
    ) -> u32 {
        if groups.is_empty() {
            return 0;
        }
        let mut sent = 0;
        // It may be a slice of a read buffer (a local QoS 0 delivery is not copied).
        let msg = msg.detached();
        for group in groups {
            let mut mask = self.state.borrow().interest.mask(&group);
            mask.clear(self.id);
            let turn = self.share_turn.get();
            self.share_turn.set(turn.wrapping_add(1));
            match nth_shard(mask, turn) {
                Some(dest) if usize::from(hops) < self.shards => {
                    sent += 1;
                    self.send_shared(
                        dest,
                        SharedPublish {
                            msg: msg.clone(),
                            plain: false,
                            groups: vec![group],
                            hops,
                            ack: ack.map(|t| (self.id, t)),
                            ingress: self.routing_ingress(),
                        },
                    )
                }
                _ => {
                    self.count(|m| m.shared_undeliverable += 1);
                    tracing::debug!(group = %group, topic = %msg.topic, "no member of the share group left: message dropped");
                }
            }
        }
        if ack.is_some() {
            sent
        } else {
            0
        }
    }

    /// Gives the messages of ended sessions' shared subscriptions (collected by
    /// `remove_session` in `State::shared_orphans`) to other members of their groups.
    pub(crate) fn redeliver_shared(&self) {
        let orphans = std::mem::take(&mut self.state.borrow_mut().shared_orphans);
        if orphans.is_empty() {
            return;
        }
        for (group, msg) in orphans {
            self.count(|m| m.shared_redelivered += 1);
            let group: Box<str> = Box::from(group.as_str());
            let here = self.state.borrow().interest.mask(&group).contains(self.id);
            let unserved = if here {
                self.deliver_here(&msg, None, false, std::slice::from_ref(&group), 0)
            } else {
                vec![group]
            };
            self.forward_shared(&msg, unserved, 1, None);
        }
        // Sessions end outside a read turn too (a connection's last call, the expiry
        // sweep): nothing else would flush what was handed to other shards.
        self.flush_mesh();
    }
}
