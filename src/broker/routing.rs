//! Routing a PUBLISH: the retained store's owner shard, local subscribers, and one mesh
//! item per other interested shard; delivery to this shard's matching sessions.
//!
//! **Owns:** the fan-out decision for a message and the per-session delivery rules
//! (highest granted QoS once per session, drop policies at the limits).
//!
//! ## Memory held by messages
//! A decoded PUBLISH is a zero-copy slice of its publisher's read buffer (a chunk of up to
//! 64 KiB, or more for a larger packet). Anything that keeps a slice beyond the read turn
//! (an in-flight or queued QoS 1/2 delivery, a batch to another shard, a retained store)
//! would pin that whole buffer while the limits count only the message. So a message that
//! will be kept is copied once, here, into one allocation of its own (topic and payload),
//! shared by every subscriber on every shard; a message nobody keeps (QoS 0 to this
//! shard's subscribers only, or no subscriber at all) is not copied. What a kept message
//! holds is then exactly what `Message::cost` counts, whatever its size, and sessions and
//! queues never copy again (an offline queue included).
//!
//! **Must not touch:** sockets, the subscription index's contents (it only reads matches),
//! acknowledgements to the publisher (the gate does that).

use std::rc::Rc;

use super::connection::ConnShared;
use super::home_shard;
use super::shard::Shard;
use super::shared::SharedPublish;
use super::store::SessionId;
use crate::protocol::*;
use crate::session::*;

impl Shard {
    /// Routes a message published on this shard: retained store, local subscribers, and
    /// one mesh item per other interested shard.
    pub(crate) fn route(&self, msg: Message) {
        self.route_with_ack(msg, None, None, |_| ());
    }

    /// Routes a message session `origin` of this shard published (its own subscriptions
    /// with No Local do not get it back). `before` runs once it is known whether any shard
    /// has a subscriber for it, before anything is delivered (so the publisher's ack,
    /// which may say "no matching subscribers", still goes out before a delivery of its
    /// own message to itself).
    pub(crate) fn route_from(&self, msg: Message, origin: SessionId, before: impl FnOnce(bool)) {
        self.route_with_ack(msg, None, Some(origin), before);
    }

    /// Whether a retained message to `topic` is stored on another shard (so its ack must
    /// wait for that shard: see [`ConnShared::deferred`]).
    pub(crate) fn retained_elsewhere(&self, topic: &str) -> bool {
        self.cfg.retain_available && home_shard(topic, self.shards) != self.id
    }

    /// Routes `msg`; with `ack`, the owner shard of its retained topic answers
    /// `RetainStored` with that token, and so (persistence mode `sync`, QoS 1/2) does
    /// every other shard it is delivered to once its deliveries are durable; returns how
    /// many answers that asks for. `origin` is the publishing session, if on this shard
    /// (see [`Shard::deliver_local`]). `before` is told whether any shard has a subscriber
    /// for it (the interest replica knows every shard's filters), before delivery.
    pub(crate) fn route_with_ack(
        &self,
        msg: Message,
        ack: Option<u64>,
        origin: Option<SessionId>,
        before: impl FnOnce(bool),
    ) -> u32 {
        let mut answers = 0;
        let durable_ack = ack
            .filter(|_| msg.qos != QoS::AtMostOnce && self.durable().is_some_and(|d| d.is_sync()))
            .map(|t| (self.id, t));
        let retained = msg.retain && self.cfg.retain_available;
        // `plain`: the shards with plain subscribers; `picks`: one shard per matching share
        // group (see `shared`), only when shared subscriptions exist anywhere.
        let (plain, picks) = self.match_shards(&msg.topic);
        let mut mask = plain;
        for (shard, _) in &picks {
            mask.set(*shard);
        }
        // Kept beyond this turn: in the retained store, by a QoS 1/2 delivery, or in a
        // batch to another shard (nothing is kept when no shard has a subscriber). One
        // copy serves all of them (module docs).
        let kept = retained
            || mask.iter().any(|s| s != self.id)
            || (msg.qos != QoS::AtMostOnce && !mask.is_empty());
        let msg = if kept { msg.detached() } else { msg };
        before(!mask.is_empty());
        if retained {
            let owner = home_shard(&msg.topic, self.shards);
            if owner == self.id {
                self.store_retained(msg.clone());
            } else {
                let ack = ack.map(|t| (self.id, t));
                answers += u32::from(ack.is_some());
                self.send_retain(owner, msg.clone(), ack);
            }
        }
        for shard in mask.iter() {
            let groups: Vec<Box<str>> = picks
                .iter()
                .filter(|(s, _)| *s == shard)
                .map(|(_, g)| g.clone())
                .collect();
            match (shard == self.id, groups.is_empty()) {
                (true, true) => self.deliver_local(&msg, origin),
                (false, true) => {
                    answers += u32::from(durable_ack.is_some());
                    self.send_publish(shard, msg.clone(), durable_ack)
                }
                (true, false) => {
                    let unserved =
                        self.deliver_here(&msg, origin, plain.contains(shard), &groups, 0);
                    answers += self.forward_shared(&msg, unserved, 1, durable_ack.map(|(_, t)| t));
                }
                (false, false) => {
                    answers += u32::from(durable_ack.is_some());
                    self.send_shared(
                        shard,
                        SharedPublish {
                            msg: msg.clone(),
                            plain: plain.contains(shard),
                            groups,
                            hops: 0,
                            ack: durable_ack,
                            ingress: self.routing_ingress(),
                        },
                    )
                }
            }
        }
        answers
    }

    /// Delivers to this shard's plain subscribers (see [`Shard::deliver_here`]).
    pub(crate) fn deliver_local(&self, msg: &Message, origin: Option<SessionId>) {
        self.deliver_here(msg, origin, true, &[], 0);
    }

    /// Delivers to this shard's subscribers: with `plain`, to every session with a
    /// matching plain subscription, once per session at the highest granted QoS of its
    /// matching subscriptions, with all their identifiers [MQTT-3.3.4-3]
    /// [MQTT-3.3.4-4]; and to one member of each share group in `groups` (the groups
    /// routing chose this shard for: see [`super::shared`]), a delivery of its own
    /// (5.0 §4.8.2). Returns the groups of `groups` with no member here, or only offline
    /// ones while another shard may still have a connected one (`hops`: times the
    /// message was handed on already).
    ///
    /// `origin` is the session that published it, when it lives here: a session's
    /// subscriptions live on its home shard, so only this shard can owe it No Local, and
    /// its subscriptions with No Local do not match its own messages [MQTT-3.8.3-3]
    /// (another of its subscriptions without it still does).
    pub(crate) fn deliver_here(
        &self,
        msg: &Message,
        origin: Option<SessionId>,
        plain: bool,
        groups: &[Box<str>],
        hops: u8,
    ) -> Vec<Box<str>> {
        let last_hop = usize::from(hops) + 1 >= self.shards;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        // The message's number in the log, once a persistent session takes it.
        let mut durable = 0u64;
        self.journal_changes(&mut st.sessions);
        self.refresh_rights(&mut st.sessions);
        let mut matches = std::mem::take(&mut st.matches);
        matches.clear();
        let mut shares: Vec<TopicFilter> = Vec::new();
        let mut unserved: Vec<Box<str>> = groups.to_vec();
        let max_write = self.cfg.limits.max_write_buffer;
        {
            let (sessions, links, interest) = (&st.sessions, &st.links, &st.interest);
            st.subs
                .for_each_matching_filter(&msg.topic, |filter, members, cursor| {
                    if !crate::index::is_shared(filter) {
                        if plain {
                            for (slot, sub) in members {
                                if !(sub.options.no_local && origin == Some(*slot)) {
                                    matches.push(Match::plain(*slot, sub));
                                }
                            }
                        }
                        return;
                    }
                    let Some(at) = unserved.iter().position(|g| &**g == filter) else {
                        return;
                    };
                    let Some((slot, sub, ready)) = super::shared::pick_member(
                        members, cursor, sessions, links, max_write, &msg.topic,
                    ) else {
                        return;
                    };
                    // All offline here: another shard with members may have a connected
                    // one (the replica cannot say), so it goes on there, unless this is
                    // its last chance.
                    if ready == super::shared::Readiness::Offline
                        && !last_hop
                        && interest.mask(filter).iter().any(|s| s != self.id)
                    {
                        return;
                    }
                    let Ok(share) = TopicFilter::new(filter.to_owned()) else {
                        return;
                    };
                    unserved.swap_remove(at);
                    matches.push(Match::shared(slot, &sub, shares.len()));
                    shares.push(share);
                });
        }
        if matches.len() > 1 {
            // Overlapping plain subscriptions of one client: one delivery (below); a share
            // group's delivery stays apart.
            matches.sort_unstable_by_key(|m| (m.slot, m.share));
        }
        let watch_pending = msg.retain && !(st.pending.is_empty() && st.streams.is_empty());
        let mut i = 0;
        while let Some(first) = matches.get(i).copied() {
            let (id, mut granted, mut rap) = (first.slot, first.qos, first.rap);
            let mut tags: Tagged = None;
            tag_identifier(&mut tags, first.identifier);
            i += 1;
            if first.share == Match::PLAIN {
                while let Some(m) = matches
                    .get(i)
                    .filter(|m| m.slot == id && m.share == Match::PLAIN)
                {
                    granted = granted.max(m.qos);
                    rap |= m.rap;
                    tag_identifier(&mut tags, m.identifier);
                    i += 1;
                }
            } else if let Some(share) = shares.get(first.share as usize) {
                tags.get_or_insert_with(Box::default).share = Some(share.clone());
            }
            // Only a plain subscription's delivery stands for a retained message its
            // pending SUBSCRIBE would send (a share group's is another subscription's).
            if watch_pending && first.share == Match::PLAIN {
                Self::note_live_retained(st, id, &msg.topic);
            }
            let Some(session) = st.sessions.get_mut(id) else {
                continue;
            };
            let conn = st.links.get(id);
            let qos = msg.qos.min(granted);
            let retain = rap && msg.retain;
            if qos == QoS::AtMostOnce && conn.is_some_and(|c| c.pending_output() >= max_write) {
                self.count(|m| m.dropped_qos0_write_buffer += 1);
                continue;
            }
            match self.offer(session, conn, msg, qos, retain, tags, &mut durable) {
                DeliverOutcome::Written | DeliverOutcome::Queued => {
                    self.count(|m| m.messages_delivered += 1)
                }
                DeliverOutcome::Dropped(DropReason::QueueFull) => {
                    self.count(|m| m.dropped_queue_full += 1);
                    // One line per client and second at most: a flood of drops must not
                    // become a flood of log lines (the counter has the total).
                    if self.drop_logged.due() {
                        let total = self.summary().dropped_queue_full;
                        tracing::warn!(client_id = %session.client_id(), topic = %msg.topic, dropped_total = total, "session queue full: message dropped (logged at most once a second per shard)");
                    }
                }
                // The broker's own `$SYS` values (QoS 0, replaced every interval) are not
                // counted: they would inflate the drops `$SYS` itself reports.
                DeliverOutcome::Dropped(DropReason::Offline) => {
                    if !super::stats::is_sys(&msg.topic) {
                        self.count(|m| m.dropped_offline_qos0 += 1)
                    }
                }
                // Counted by `offer`.
                DeliverOutcome::Dropped(
                    DropReason::TooLarge | DropReason::Expired | DropReason::NotAuthorized,
                ) => {}
            }
        }
        st.matches = matches;
        unserved
    }

    /// Offers `msg` to a session: written to its connection (or queued behind its window),
    /// or, offline, queued or dropped by the session's rules; the connection's queue
    /// mirror and congestion mark follow. Drops that do not depend on who offers (too
    /// large for the client, expired, not authorized) are counted here; the caller counts the rest.
    ///
    /// With a log, a QoS 1/2 delivery to a persistent session is written down: the message
    /// once per routing (`durable`, 0 until then, is its number in the log), then what the
    /// session did with it; the connection's output then waits for the disk (mode `sync`).
    /// The caller has moved the store's changes into the log first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn offer(
        &self,
        session: &mut Session,
        conn: Option<&Rc<ConnShared>>,
        msg: &Message,
        qos: QoS,
        retain: bool,
        tags: Tagged,
        durable: &mut u64,
    ) -> DeliverOutcome {
        // Checked here, where every delivery passes (live, retained, a share group's,
        // a queue's), and before anything is written down for it.
        if !session.may_read(&msg.topic) {
            self.count(|m| m.read_denied += 1);
            self.log_denied("delivery", session.client_id(), &msg.topic);
            return DeliverOutcome::Dropped(DropReason::NotAuthorized);
        }
        let persistent = session.is_persistent();
        let before = self.log_marks();
        let id = match self.durable() {
            Some(d) if persistent && qos != QoS::AtMostOnce => {
                if *durable == 0 {
                    *durable = d.message(msg);
                }
                LogRef {
                    msg: *durable,
                    ingress: d.routing_ingress.get(),
                }
            }
            _ => LogRef::NONE,
        };
        let o = self.with_flows(session, |session, log| match conn {
            Some(conn) => {
                let o = session.deliver_logged(
                    msg,
                    qos,
                    retain,
                    tags,
                    id,
                    Some(&mut conn.out.borrow_mut()),
                    log,
                );
                conn.queued.set(session.queued_len());
                self.note_output(conn);
                conn.wake.notify();
                o
            }
            None => session.deliver_logged(msg, qos, retain, tags, id, None, log),
        });
        // A delivery waits only for what must precede it (see `Shard::durable_point`;
        // the state is borrowed here, so the store's changes wait for the caller's point).
        if let (Some(d), Some(conn)) = (self.durable(), conn) {
            if d.strict_marks() != before.1 {
                d.gate(conn);
            }
        }
        match o {
            DeliverOutcome::Dropped(DropReason::TooLarge) => {
                self.count(|m| m.dropped_too_large += 1)
            }
            DeliverOutcome::Dropped(DropReason::Expired) => self.count(|m| m.dropped_expired += 1),
            _ => {}
        }
        o
    }
}

/// One session's delivery of the message being routed, as collected from the index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Match {
    slot: SessionId,
    qos: QoS,
    rap: bool,
    /// The subscription's identifier (0: none).
    identifier: u32,
    /// [`Match::PLAIN`], or which share group (an index into the walk's list of them) it is
    /// the chosen member of.
    share: u32,
}

impl Match {
    const PLAIN: u32 = u32::MAX;

    fn plain(slot: SessionId, sub: &Subscribed) -> Match {
        Match {
            slot,
            qos: sub.options.qos,
            rap: sub.options.retain_as_published,
            identifier: sub.identifier,
            share: Match::PLAIN,
        }
    }

    fn shared(slot: SessionId, sub: &Subscribed, share: usize) -> Match {
        Match {
            share: u32::try_from(share).unwrap_or(Match::PLAIN - 1),
            ..Match::plain(slot, sub)
        }
    }
}
