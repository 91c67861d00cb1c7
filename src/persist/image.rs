//! What a log's records add up to: the persistent sessions (with their subscriptions,
//! outgoing flows and incoming QoS 2 ids), the messages they hold and the retained
//! messages a shard restores at start, and what a compaction writes back as a snapshot
//! (the shortest list of records that gives the same state).
//!
//! Pure data: the broker turns an [`Image`] into sessions and stores (see
//! `broker::recovery`), and builds one from its memory for a compaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use bytestring::ByteString;

use super::record::Record;

/// The name `seen` knows the retained store by (no client identifier starts with `$`
/// here: the broker assigns none such, and a session's image is keyed by its client id).
pub const RETAIN_STORE: &str = "$retained";

/// One outgoing QoS 1/2 delivery of a session, in the session's order (those with a
/// packet id were sent, the others wait in its queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowImage {
    /// The message ([`Image::messages`]); a released flow no longer needs it.
    pub msg: u64,
    /// QoS it is sent with.
    pub qos: u8,
    /// RETAIN as sent.
    pub retain: bool,
    /// 5.0 Subscription Identifiers.
    pub identifiers: Vec<u32>,
    /// The shared subscription it came through, or empty.
    pub share: ByteString,
    /// Its packet id once sent.
    pub packet_id: Option<u16>,
    /// PUBREC received: only the PUBREL is owed.
    pub released: bool,
    /// The ingress of its message (see [`Record::Ingress`]), 0: none.
    pub ingress: u64,
}

/// What the log says about one persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionImage {
    /// Seconds it is kept after its connection ends (`u32::MAX`: never).
    pub expiry: u32,
    /// When it went offline (wall-clock ms since the Unix epoch); None while a connection
    /// served it (the broker stopped with it online).
    pub offline: Option<u64>,
    /// Its subscriptions: filter -> (5.0 options byte, subscription identifier or 0).
    pub subscriptions: BTreeMap<ByteString, (u8, u32)>,
    /// Its outgoing deliveries, in order: sent ones first, then queued ones.
    pub flows: Vec<FlowImage>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: BTreeSet<u16>,
    /// Its delayed will: when it is due (wall-clock ms) and the message.
    pub will: Option<(u64, u64)>,
    /// The user name of the connection that last served it.
    pub username: Option<ByteString>,
}

impl SessionImage {
    /// Whether its expiry has run out at `now_ms` (an offline session kept `u32::MAX`
    /// seconds never expires; one that was online when the log ends counts as offline
    /// from the restart).
    pub fn expired(&self, now_ms: u64) -> bool {
        match (self.offline, self.expiry) {
            (None, _) | (_, u32::MAX) => false,
            (Some(since), expiry) => now_ms >= since.saturating_add(u64::from(expiry) * 1000),
        }
    }
}

/// A message the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageImage {
    /// When its 5.0 Message Expiry Interval runs out (wall-clock ms), 0: never.
    pub expires_ms: u64,
    /// The message as a 5.0 PUBLISH packet.
    pub publish: Bytes,
}

/// Everything a shard's log holds, replayed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// The persistent sessions by client identifier.
    pub sessions: BTreeMap<ByteString, SessionImage>,
    /// The messages that a flow or the retained store still needs, by id.
    pub messages: HashMap<u64, MessageImage>,
    /// The retained messages: topic -> message id.
    pub retained: BTreeMap<ByteString, u64>,
    /// The largest message id the log used (new ones must be larger).
    pub last_message_id: u64,
    /// QoS 2 messages of persistent publishers not yet known to be delivered durably
    /// everywhere: ingress -> (publisher, message id).
    pub inbound: BTreeMap<u64, (ByteString, u64)>,
    /// Wills due now (their delay passed, or their session expired, while the broker was
    /// down): message ids, published by the shard at start. Not written to a log.
    pub due_wills: Vec<u64>,
    /// Who had a delivery of which ingress: sessions (by client id), share groups (by
    /// their `$share/...` filter) and the retained store ([`RETAIN_STORE`]).
    pub seen: BTreeSet<(u64, ByteString)>,
}

impl Image {
    /// Applies one record (in log order).
    pub fn apply(&mut self, r: &Record) {
        fn flows<'a>(
            s: &'a mut BTreeMap<ByteString, SessionImage>,
            c: &ByteString,
        ) -> Option<&'a mut Vec<FlowImage>> {
            s.get_mut(c).map(|s| &mut s.flows)
        }
        match r {
            Record::SessionCreated { client_id, expiry } => {
                self.sessions.insert(
                    client_id.clone(),
                    SessionImage {
                        expiry: *expiry,
                        ..SessionImage::default()
                    },
                );
            }
            Record::SessionRemoved { client_id } => {
                self.sessions.remove(client_id);
            }
            Record::SessionOffline {
                client_id,
                since_ms,
                expiry,
            } => {
                let s = self.sessions.entry(client_id.clone()).or_default();
                s.offline = Some(*since_ms);
                s.expiry = *expiry;
            }
            Record::SessionOnline { client_id, expiry } => {
                let s = self.sessions.entry(client_id.clone()).or_default();
                s.offline = None;
                s.expiry = *expiry;
            }
            Record::Subscribed {
                client_id,
                filter,
                options,
                identifier,
            } => {
                self.sessions
                    .entry(client_id.clone())
                    .or_default()
                    .subscriptions
                    .insert(filter.clone(), (*options, *identifier));
            }
            Record::Unsubscribed { client_id, filter } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.subscriptions.remove(filter);
                }
            }
            Record::Message {
                id,
                expires_ms,
                publish,
            } => {
                self.last_message_id = self.last_message_id.max(*id);
                self.messages.insert(
                    *id,
                    MessageImage {
                        expires_ms: *expires_ms,
                        publish: publish.clone(),
                    },
                );
            }
            Record::Delivered {
                client_id,
                msg,
                qos,
                retain,
                identifiers,
                share,
                ingress,
            } => {
                self.last_message_id = self.last_message_id.max(*msg);
                if *ingress != 0 {
                    self.seen.insert((*ingress, client_id.clone()));
                    if !share.is_empty() {
                        self.seen.insert((*ingress, share.clone()));
                    }
                }
                if let Some(f) = flows(&mut self.sessions, client_id) {
                    f.push(FlowImage {
                        msg: *msg,
                        qos: *qos,
                        retain: *retain,
                        identifiers: identifiers.clone(),
                        share: share.clone(),
                        packet_id: None,
                        released: false,
                        ingress: *ingress,
                    });
                }
            }
            Record::Sent {
                client_id,
                msg,
                packet_id,
            } => {
                if let Some(f) = flows(&mut self.sessions, client_id).and_then(|f| {
                    f.iter_mut()
                        .find(|f| f.msg == *msg && f.packet_id.is_none())
                }) {
                    f.packet_id = Some(*packet_id);
                }
            }
            Record::Released {
                client_id,
                packet_id,
            } => {
                if let Some(f) = flows(&mut self.sessions, client_id)
                    .and_then(|f| f.iter_mut().find(|f| f.packet_id == Some(*packet_id)))
                {
                    f.released = true;
                }
            }
            Record::Finished {
                client_id,
                packet_id,
            } => {
                if let Some(f) = flows(&mut self.sessions, client_id) {
                    if let Some(at) = f.iter().position(|f| f.packet_id == Some(*packet_id)) {
                        f.remove(at);
                    }
                }
            }
            Record::Unqueued { client_id, msg } => {
                if let Some(f) = flows(&mut self.sessions, client_id) {
                    if let Some(at) = f
                        .iter()
                        .position(|f| f.msg == *msg && f.packet_id.is_none())
                    {
                        f.remove(at);
                    }
                }
            }
            Record::Qos2Received {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.incoming_qos2.insert(*packet_id);
                }
            }
            Record::Qos2Ended {
                client_id,
                packet_id,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.incoming_qos2.remove(packet_id);
                }
            }
            Record::RetainSet {
                topic,
                msg,
                ingress,
            } => {
                if *ingress != 0 {
                    self.seen
                        .insert((*ingress, ByteString::from_static(RETAIN_STORE)));
                }
                self.retained.insert(topic.clone(), *msg);
            }
            Record::RetainCleared { topic } => {
                self.retained.remove(topic);
            }
            Record::Ingress {
                ingress,
                client_id,
                msg,
            } => {
                self.inbound.insert(*ingress, (client_id.clone(), *msg));
            }
            Record::Routed { ingress } => {
                self.inbound.remove(ingress);
            }
            Record::IngressSeen { ingress, client_id } => {
                self.seen.insert((*ingress, client_id.clone()));
            }
            Record::WillDelayed {
                client_id,
                due_ms,
                msg,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.will = Some((*due_ms, *msg));
                }
            }
            Record::WillCleared { client_id } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.will = None;
                }
            }
            Record::SessionUser {
                client_id,
                username,
            } => {
                if let Some(s) = self.sessions.get_mut(client_id) {
                    s.username = username.clone();
                }
            }
        }
    }

    /// Forgets the messages nothing refers to any more (a flow not yet released, or the
    /// retained store).
    pub fn collect_garbage(&mut self) {
        let mut live: std::collections::HashSet<u64> = self.retained.values().copied().collect();
        live.extend(self.inbound.values().map(|(_, m)| *m));
        live.extend(
            self.sessions
                .values()
                .filter_map(|s| s.will.map(|(_, m)| m)),
        );
        for s in self.sessions.values() {
            live.extend(s.flows.iter().filter(|f| !f.released).map(|f| f.msg));
        }
        self.messages.retain(|id, _| live.contains(id));
    }

    /// The records that recreate this image from nothing (a compaction's snapshot), each
    /// needed message once, before the flows that refer to it.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        let mut written = std::collections::HashSet::new();
        let mut message = |out: &mut Vec<Record>, id: u64| {
            if let (Some(m), true) = (self.messages.get(&id), !written.contains(&id)) {
                written.insert(id);
                out.push(Record::Message {
                    id,
                    expires_ms: m.expires_ms,
                    publish: m.publish.clone(),
                });
            }
        };
        for (topic, id) in &self.retained {
            message(&mut out, *id);
            out.push(Record::RetainSet {
                topic: topic.clone(),
                msg: *id,
                ingress: 0,
            });
        }
        for (ingress, (client_id, msg)) in &self.inbound {
            message(&mut out, *msg);
            out.push(Record::Ingress {
                ingress: *ingress,
                client_id: client_id.clone(),
                msg: *msg,
            });
        }
        for (client_id, s) in &self.sessions {
            let c = || client_id.clone();
            out.push(Record::SessionCreated {
                client_id: c(),
                expiry: s.expiry,
            });
            if s.username.is_some() {
                out.push(Record::SessionUser {
                    client_id: c(),
                    username: s.username.clone(),
                });
            }
            for (filter, (options, identifier)) in &s.subscriptions {
                out.push(Record::Subscribed {
                    client_id: c(),
                    filter: filter.clone(),
                    options: *options,
                    identifier: *identifier,
                });
            }
            for f in &s.flows {
                if !f.released {
                    message(&mut out, f.msg);
                }
                out.push(Record::Delivered {
                    client_id: c(),
                    msg: f.msg,
                    qos: f.qos,
                    retain: f.retain,
                    identifiers: f.identifiers.clone(),
                    share: f.share.clone(),
                    ingress: f.ingress,
                });
                if let Some(packet_id) = f.packet_id {
                    out.push(Record::Sent {
                        client_id: c(),
                        msg: f.msg,
                        packet_id,
                    });
                    if f.released {
                        out.push(Record::Released {
                            client_id: c(),
                            packet_id,
                        });
                    }
                }
            }
            for packet_id in &s.incoming_qos2 {
                out.push(Record::Qos2Received {
                    client_id: c(),
                    packet_id: *packet_id,
                });
            }
            if let Some((due_ms, msg)) = s.will {
                message(&mut out, msg);
                out.push(Record::WillDelayed {
                    client_id: c(),
                    due_ms,
                    msg,
                });
            }
            if let Some(since_ms) = s.offline {
                out.push(Record::SessionOffline {
                    client_id: c(),
                    since_ms,
                    expiry: s.expiry,
                });
            }
        }
        // Deliveries of an ingress that have ended (those in flows are in `Delivered`).
        for (ingress, client_id) in &self.seen {
            out.push(Record::IngressSeen {
                ingress: *ingress,
                client_id: client_id.clone(),
            });
        }
        out
    }

    /// Delivers every ingress still in `inbound` (a QoS 2 message acknowledged to its
    /// publisher whose routing was not known to be durable everywhere when the logs
    /// ended) to each session whose subscriptions match it and that has no delivery of it
    /// yet (`seen`), as routing would have: once per session at the highest granted QoS
    /// with the identifiers of its matching subscriptions, to one member per share group,
    /// not to the publisher's own subscriptions with No Local. QoS 0 grants drop it (the
    /// sessions are offline), and so does a share group that had it already. A retained
    /// message goes to the retained store unless its owner had stored it. Then `inbound`
    /// and `seen` are empty. `decode` gives a message's (topic, QoS, RETAIN, empty
    /// payload) from its image.
    pub fn resolve_inbound(
        &mut self,
        decode: impl Fn(&MessageImage) -> Option<(String, u8, bool, bool)>,
    ) {
        let inbound = std::mem::take(&mut self.inbound);
        let seen = std::mem::take(&mut self.seen);
        for (ingress, (publisher, msg)) in inbound {
            let Some((topic, qos, retain, empty)) = self.messages.get(&msg).and_then(&decode)
            else {
                continue;
            };
            // The retained store, if its owner had not stored it (an empty payload clears
            // the topic [MQTT-3.3.1-10]).
            if retain && !seen.contains(&(ingress, ByteString::from_static(RETAIN_STORE))) {
                if empty {
                    self.retained.remove(topic.as_str());
                } else {
                    self.retained.insert(ByteString::from(topic.as_str()), msg);
                }
            }
            // Share groups that had it already (through any member) do not get it again.
            let mut groups: BTreeSet<String> = seen
                .range((ingress, ByteString::new())..)
                .take_while(|(i, _)| *i == ingress)
                .filter(|(_, g)| g.starts_with("$share/"))
                .map(|(_, g)| g.to_string())
                .collect();
            for (client_id, s) in self.sessions.iter_mut() {
                if seen.contains(&(ingress, client_id.clone())) {
                    continue;
                }
                let mut plain: Option<(u8, bool, Vec<u32>)> = None;
                let mut shared: Vec<(ByteString, u8, bool, u32)> = Vec::new();
                for (filter, (options, identifier)) in &s.subscriptions {
                    let Some(o) = crate::protocol::SubscriptionOptions::from_byte(*options) else {
                        continue;
                    };
                    let Ok(f) = crate::protocol::TopicFilter::new(filter.clone()) else {
                        continue;
                    };
                    if !f.matches(&topic) {
                        continue;
                    }
                    let granted = (o.qos as u8).min(qos);
                    if f.shared().is_some() {
                        if groups.insert(filter.to_string()) {
                            shared.push((
                                filter.clone(),
                                granted,
                                o.retain_as_published,
                                *identifier,
                            ));
                        }
                        continue;
                    }
                    if o.no_local && *client_id == publisher {
                        continue;
                    }
                    let p = plain.get_or_insert((0, false, Vec::new()));
                    p.0 = p.0.max(granted);
                    p.1 |= o.retain_as_published;
                    if *identifier != 0 && !p.2.contains(identifier) {
                        p.2.push(*identifier);
                    }
                }
                let mut add = |qos: u8, rap: bool, identifiers: Vec<u32>, share: ByteString| {
                    if qos > 0 {
                        s.flows.push(FlowImage {
                            msg,
                            qos,
                            retain: rap && retain,
                            identifiers,
                            share,
                            packet_id: None,
                            released: false,
                            ingress,
                        });
                    }
                };
                if let Some((q, rap, ids)) = plain {
                    add(q, rap, ids, ByteString::new());
                }
                for (filter, q, rap, id) in shared {
                    add(q, rap, if id == 0 { vec![] } else { vec![id] }, filter);
                }
            }
        }
    }
}

/// What `records` (in log order) add up to, without the messages nothing refers to.
pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> Image {
    let mut image = Image::default();
    for r in records {
        image.apply(r);
    }
    image.collect_garbage();
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ByteString {
        ByteString::from(s)
    }

    fn sub(c: &str, f: &str, o: u8, i: u32) -> Record {
        Record::Subscribed {
            client_id: id(c),
            filter: id(f),
            options: o,
            identifier: i,
        }
    }

    fn created(c: &str, expiry: u32) -> Record {
        Record::SessionCreated {
            client_id: id(c),
            expiry,
        }
    }

    fn message(n: u64) -> Record {
        Record::Message {
            id: n,
            expires_ms: 0,
            publish: Bytes::from(vec![n as u8; 3]),
        }
    }

    fn delivered(c: &str, msg: u64, qos: u8) -> Record {
        Record::Delivered {
            client_id: id(c),
            msg,
            qos,
            retain: false,
            identifiers: vec![],
            share: ByteString::new(),
            ingress: 0,
        }
    }

    fn sent(c: &str, msg: u64, packet_id: u16) -> Record {
        Record::Sent {
            client_id: id(c),
            msg,
            packet_id,
        }
    }

    #[test]
    fn records_add_up_to_the_sessions_and_a_snapshot_gives_them_back() {
        let log = vec![
            created("a", 60),
            sub("a", "x/#", 1, 0),
            sub("a", "y", 2, 7),
            sub("a", "x/#", 0x21, 9), // replaced
            created("b", 10),
            sub("b", "z", 1, 0),
            Record::Unsubscribed {
                client_id: id("a"),
                filter: id("y"),
            },
            Record::SessionOffline {
                client_id: id("a"),
                since_ms: 1_000,
                expiry: 60,
            },
            Record::SessionRemoved { client_id: id("b") },
            created("c", 5),
            Record::SessionOffline {
                client_id: id("c"),
                since_ms: 5,
                expiry: u32::MAX,
            },
            Record::SessionOnline {
                client_id: id("c"),
                expiry: 7,
            },
        ];
        let image = replay(&log);
        let sessions = &image.sessions;
        assert_eq!(sessions.len(), 2);
        let a = &sessions[&id("a")];
        assert_eq!((a.offline, a.expiry), (Some(1_000), 60));
        assert_eq!(
            a.subscriptions.iter().collect::<Vec<_>>(),
            [(&id("x/#"), &(0x21, 9))]
        );
        let c = &sessions[&id("c")];
        assert_eq!((c.offline, c.expiry), (None, 7));
        // Expiry: a at 1 s + 60 s; c is online: not expired however long ago.
        assert!(!a.expired(60_999));
        assert!(a.expired(61_000));
        assert!(!c.expired(u64::MAX));
        assert!(!SessionImage {
            offline: Some(0),
            expiry: u32::MAX,
            ..Default::default()
        }
        .expired(u64::MAX));
        // A snapshot is shorter and gives the same sessions.
        let snap = image.snapshot();
        assert!(snap.len() < log.len());
        assert_eq!(replay(&snap), image);
        // A session created again starts empty.
        let again = [log.clone(), vec![created("a", 3)]].concat();
        assert_eq!(
            replay(&again).sessions[&id("a")],
            SessionImage {
                expiry: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn flows_follow_their_records_and_messages_are_kept_while_needed() {
        let log = vec![
            created("s", u32::MAX),
            message(1),
            message(2),
            message(3),
            delivered("s", 1, 1),
            delivered("s", 2, 2),
            delivered("s", 3, 2),
            delivered("s", 1, 1), // the same message again (another share group)
            sent("s", 1, 10),
            sent("s", 2, 11),
            sent("s", 3, 12),
            Record::Finished {
                client_id: id("s"),
                packet_id: 10,
            },
            Record::Released {
                client_id: id("s"),
                packet_id: 11,
            },
            Record::Qos2Received {
                client_id: id("s"),
                packet_id: 5,
            },
            Record::Qos2Received {
                client_id: id("s"),
                packet_id: 6,
            },
            Record::Qos2Ended {
                client_id: id("s"),
                packet_id: 5,
            },
            message(4),
            Record::RetainSet {
                topic: id("t"),
                msg: 4,
                ingress: 0,
            },
            message(5),
            Record::RetainSet {
                topic: id("u"),
                msg: 5,
                ingress: 0,
            },
            Record::RetainCleared { topic: id("u") },
            message(6),
            delivered("s", 6, 1),
            Record::Unqueued {
                client_id: id("s"),
                msg: 6,
            },
        ];
        let image = replay(&log);
        let s = &image.sessions[&id("s")];
        let got: Vec<_> = s
            .flows
            .iter()
            .map(|f| (f.msg, f.packet_id, f.released))
            .collect();
        assert_eq!(
            got,
            [(2, Some(11), true), (3, Some(12), false), (1, None, false)]
        );
        assert_eq!(s.incoming_qos2.iter().collect::<Vec<_>>(), [&6]);
        assert_eq!(image.retained.iter().collect::<Vec<_>>(), [(&id("t"), &4)]);
        // 2 is released (no longer needed), 5 and 6 are gone: 1, 3 and 4 stay.
        let mut live: Vec<u64> = image.messages.keys().copied().collect();
        live.sort_unstable();
        assert_eq!(live, [1, 3, 4]);
        assert_eq!(image.last_message_id, 6);
        let snap = image.snapshot();
        let back = replay(&snap);
        assert_eq!(back.sessions, image.sessions);
        assert_eq!(back.messages, image.messages);
        assert_eq!(back.retained, image.retained);
        // Records of a session that is gone change nothing.
        let mut more = image.clone();
        more.apply(&delivered("nobody", 1, 1));
        more.apply(&sent("nobody", 1, 1));
        assert_eq!(more.sessions, image.sessions);
    }

    #[test]
    fn an_unrouted_ingress_reaches_the_sessions_that_lack_it_once() {
        let qos2 = 2u8; // options byte: QoS 2
        let no_local = 2u8 | 0b100;
        let mut log = vec![
            created("pub", u32::MAX),
            sub("pub", "t/#", no_local, 0),
            created("had", u32::MAX),
            sub("had", "t/#", qos2, 0),
            created("lacks", u32::MAX),
            sub("lacks", "t/+", 1, 4),
            sub("lacks", "t/x", qos2, 5),
            created("m1", u32::MAX),
            sub("m1", "$share/g/t/x", qos2, 0),
            created("m2", u32::MAX),
            sub("m2", "$share/g/t/x", qos2, 0),
            created("other", u32::MAX),
            sub("other", "u/#", qos2, 0),
            message(1),
            Record::Ingress {
                ingress: 77,
                client_id: id("pub"),
                msg: 1,
            },
        ];
        log.push(Record::Delivered {
            client_id: id("had"),
            msg: 1,
            qos: 2,
            retain: false,
            identifiers: vec![],
            share: ByteString::new(),
            ingress: 77,
        });
        let mut image = replay(&log);
        assert_eq!(image.inbound.len(), 1);
        image.resolve_inbound(|_| Some(("t/x".to_owned(), 2, true, false)));
        assert!(image.inbound.is_empty() && image.seen.is_empty());
        let flows = |c: &str| image.sessions[&id(c)].flows.clone();
        assert!(flows("pub").is_empty(), "No Local");
        assert_eq!(
            flows("had").len(),
            1,
            "delivered before the crash: not again"
        );
        let l = flows("lacks");
        assert_eq!(l.len(), 1, "once per session");
        assert_eq!((l[0].qos, l[0].ingress, l[0].msg), (2, 77, 1));
        assert_eq!(l[0].identifiers, vec![4, 5]);
        assert_eq!(
            flows("m1").len() + flows("m2").len(),
            1,
            "one member of the share group"
        );
        assert!(flows("other").is_empty());
        // It was retained, and the owner shard never stored it: the store gets it.
        assert_eq!(image.retained.get(&id("t/x")), Some(&1));
        // A routed ingress is left alone.
        let mut routed = log.clone();
        routed.push(Record::Routed { ingress: 77 });
        let mut image = replay(&routed);
        image.resolve_inbound(|_| Some(("t/x".to_owned(), 2, false, false)));
        assert!(image.sessions[&id("lacks")].flows.is_empty());
    }

    #[test]
    fn a_share_group_that_had_an_ingress_does_not_get_it_again() {
        let qos2 = 2u8;
        let mut log = vec![
            created("a", u32::MAX),
            sub("a", "$share/g/t", qos2, 0),
            created("b", u32::MAX),
            sub("b", "$share/g/t", qos2, 0),
            message(1),
            Record::Ingress {
                ingress: 9,
                client_id: id("p"),
                msg: 1,
            },
        ];
        // Member b (after a in order) had it, through the group.
        log.push(Record::Delivered {
            client_id: id("b"),
            msg: 1,
            qos: 2,
            retain: false,
            identifiers: vec![],
            share: id("$share/g/t"),
            ingress: 9,
        });
        let mut image = replay(&log);
        image.resolve_inbound(|_| Some(("t".to_owned(), 2, false, false)));
        assert!(image.sessions[&id("a")].flows.is_empty());
        assert_eq!(image.sessions[&id("b")].flows.len(), 1);
        // A retained clear (empty payload) the owner never applied clears the topic.
        let mut log = vec![
            message(1),
            Record::RetainSet {
                topic: id("t"),
                msg: 1,
                ingress: 0,
            },
            message(2),
            Record::Ingress {
                ingress: 10,
                client_id: id("p"),
                msg: 2,
            },
        ];
        log.push(Record::SessionCreated {
            client_id: id("x"),
            expiry: 1,
        });
        let mut image = replay(&log);
        image.resolve_inbound(|_| Some(("t".to_owned(), 2, true, true)));
        assert!(image.retained.is_empty());
    }
}
