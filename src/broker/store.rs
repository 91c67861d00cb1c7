//! Where a shard keeps the sessions whose home it is: the seam a persistent store plugs
//! in behind.
//!
//! **Owns:** the sessions of one shard, their lookup by client id, their ids (slot plus
//! generation), the `max_sessions` bound, which of them are offline and until when (each
//! session's own expiry interval from the moment its connection ended, in a deadline
//! heap, so expiry is not a scan of every session), and the record of changes a
//! persistent store needs.
//!
//! **Must not touch:** connections (which connection serves a session is the shard's
//! [`Links`](super::shard::Links), not stored here), the topic index, other shards,
//! sockets.
//!
//! ## The seam
//! Everything here is plain data a store can write down: a [`Session`] holds its
//! subscriptions, in-flight window, queue and incoming QoS 2 ids, and no handle to a
//! connection or a socket. A session's stable key is its client id; a [`SessionId`] names
//! it in memory only, for this run. The operations that change what outlives a connection
//! go through this type (create, remove, offline since, online again, subscribe,
//! unsubscribe), and with [`SessionStore::record_changes`] each of a persistent session's
//! changes is also recorded as a [`Change`] keyed by client id, for a store to take once
//! per turn ([`SessionStore::take_changes`]) and write in one group commit. Clean sessions
//! record nothing: they never touch a disk. The message flows inside a session (in
//! flight, queued, acknowledged) are the session state machine's and are recorded by the
//! persistence work through the acknowledgement gate; at start-up a store rebuilds the
//! topic index from `Session::subscriptions`.
//!
//! ## Ids
//! A [`SessionId`] is a slab slot plus a generation taken from a per-shard counter when the
//! session is created. Anything that names a session across an `.await`, a mesh round trip
//! or a timer (a pending SUBSCRIBE, an expiry deadline, a subscriber in the index) holds the
//! id, and every lookup checks the generation: once the slot is reused by a newer session,
//! the old id finds nothing instead of the newcomer. The counter is 32 bits; a false match
//! would need the same slot to come round to the same generation after 2^32 sessions were
//! created on the shard.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytestring::ByteString;

use crate::protocol::TopicFilter;
use crate::session::{Session, Subscribed};

/// A session of this shard: slot and generation (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId {
    slot: u32,
    generation: u32,
}

impl SessionId {
    /// The slab slot (reused by a later session: compare generations too).
    pub(crate) fn slot(self) -> u32 {
        self.slot
    }
}

/// A change to what a persistent store keeps, keyed by client id (stable across restarts,
/// unlike a [`SessionId`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// A persistent session was created (empty), with this expiry interval.
    Created { client_id: ByteString, expiry: u32 },
    /// The session and everything in it are gone.
    Removed { client_id: ByteString },
    /// It lost its connection at this wall-clock time and expires `expiry` seconds later
    /// ([`crate::session::NEVER_EXPIRES`]: never).
    Offline {
        client_id: ByteString,
        since: std::time::SystemTime,
        expiry: u32,
    },
    /// A connection resumed it (or took it over), with this expiry interval from now on.
    Online { client_id: ByteString, expiry: u32 },
    /// A connection with this user name serves it from now on.
    User {
        client_id: ByteString,
        username: Option<Box<str>>,
    },
    /// A subscription was added or replaced.
    Subscribed {
        client_id: ByteString,
        filter: TopicFilter,
        sub: Subscribed,
    },
    /// A subscription was removed.
    Unsubscribed {
        client_id: ByteString,
        filter: TopicFilter,
    },
}

impl Change {
    /// The log record that makes this change durable (see [`crate::persist::record`]).
    pub(crate) fn record(&self) -> crate::persist::record::Record {
        use crate::persist::record::Record;
        match self {
            Change::Created { client_id, expiry } => Record::SessionCreated {
                client_id: client_id.clone(),
                expiry: *expiry,
            },
            Change::Removed { client_id } => Record::SessionRemoved {
                client_id: client_id.clone(),
            },
            Change::Offline {
                client_id,
                since,
                expiry,
            } => Record::SessionOffline {
                client_id: client_id.clone(),
                since_ms: since
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                expiry: *expiry,
            },
            Change::Online { client_id, expiry } => Record::SessionOnline {
                client_id: client_id.clone(),
                expiry: *expiry,
            },
            Change::User {
                client_id,
                username,
            } => Record::SessionUser {
                client_id: client_id.clone(),
                username: username.as_deref().map(ByteString::from),
            },
            Change::Subscribed {
                client_id,
                filter,
                sub,
            } => Record::Subscribed {
                client_id: client_id.clone(),
                filter: filter.as_bytestring().clone(),
                options: sub.options.to_byte(),
                identifier: sub.identifier,
            },
            Change::Unsubscribed { client_id, filter } => Record::Unsubscribed {
                client_id: client_id.clone(),
                filter: filter.as_bytestring().clone(),
            },
        }
    }
}

/// The sessions of one shard.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    /// Boxed so that the slab (which grows by doubling) wastes 8 bytes per spare slot
    /// rather than a whole session.
    slots: slab::Slab<(u32, Box<Session>)>,
    by_client: AHashMap<ByteString, SessionId>,
    /// Persistent sessions without a connection, and when they expire (None: never).
    offline: AHashMap<SessionId, Option<Instant>>,
    /// The deadlines of `offline`, soonest first; entries whose session came back (or went
    /// offline again later) are skipped when they surface, and the heap is rebuilt when
    /// such stale entries outnumber the live ones.
    by_time: BinaryHeap<Reverse<(Instant, SessionId)>>,
    next_generation: u32,
    /// Changes of persistent sessions not taken yet; `None` while nobody records them.
    changes: Option<Vec<Change>>,
}

impl SessionStore {
    /// The session `id`, if it still exists.
    pub fn get(&self, id: SessionId) -> Option<&Session> {
        match self.slots.get(id.slot as usize) {
            Some((g, s)) if *g == id.generation => Some(s),
            _ => None,
        }
    }

    /// The session `id`, mutably, if it still exists. Changes that outlive a connection
    /// (subscriptions) go through the store's own methods instead, so they are recorded.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        match self.slots.get_mut(id.slot as usize) {
            Some((g, s)) if *g == id.generation => Some(s),
            _ => None,
        }
    }

    /// Starts recording the changes of persistent sessions (a persistent store does, and
    /// takes them every turn).
    pub fn record_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// Whether changes were recorded and not taken yet.
    pub fn has_changes(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// Every session with its id (for a compaction).
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> {
        self.slots.iter().map(|(slot, (generation, s))| {
            (
                SessionId {
                    slot: u32::try_from(slot).unwrap_or(u32::MAX),
                    generation: *generation,
                },
                &**s,
            )
        })
    }

    /// Applies `f` to every session (for changes no log records: a session's rights).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut Session)) {
        for (_, (_, s)) in self.slots.iter_mut() {
            f(s);
        }
    }

    /// When an offline session expires: `Some(None)` never, `None` if it is online (or
    /// gone).
    pub fn offline_deadline(&self, id: SessionId) -> Option<Option<Instant>> {
        self.offline.get(&id).copied()
    }

    /// The changes recorded since the last call, oldest first.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn take_changes(&mut self) -> Vec<Change> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Records `change` if it concerns a persistent session and someone records.
    fn record(&mut self, persistent: bool, change: impl FnOnce() -> Change) {
        if let (Some(c), true) = (self.changes.as_mut(), persistent) {
            c.push(change());
        }
    }

    /// A connection with `username`, admitted by hook stack `domain`, serves the session
    /// from now on, with `rights` (the user name is recorded when it changes, so a restart
    /// resolves its rules for the right user).
    pub fn set_user(
        &mut self,
        id: SessionId,
        username: Option<Box<str>>,
        domain: u16,
        rights: Option<std::sync::Arc<dyn crate::security::ClientRights>>,
    ) {
        let Some(s) = self.get_mut(id) else {
            return;
        };
        s.set_domain(domain);
        s.set_rights(rights);
        if s.username() == username.as_deref() {
            return;
        }
        let (persistent, client_id) = (s.is_persistent(), s.client_id().clone());
        s.set_username(username.clone());
        self.record(persistent, || Change::User {
            client_id,
            username,
        });
    }

    /// Adds or replaces the session's subscription to `filter`; true if it is new.
    pub fn subscribe(&mut self, id: SessionId, filter: TopicFilter, sub: Subscribed) -> bool {
        let recording = self.changes.is_some();
        let Some(s) = self.get_mut(id) else {
            return false;
        };
        let (persistent, client_id) = (s.is_persistent(), s.client_id().clone());
        if !(recording && persistent) {
            return s.add_subscription(filter, sub);
        }
        let new = s.add_subscription(filter.clone(), sub);
        self.record(true, || Change::Subscribed {
            client_id,
            filter,
            sub,
        });
        new
    }

    /// The session no longer holds `filter` (its state machine removed it on
    /// UNSUBSCRIBE): recorded for a persistent store.
    pub fn unsubscribed(&mut self, id: SessionId, filter: &TopicFilter) {
        if let Some(s) = self.get(id) {
            let (persistent, client_id) = (s.is_persistent(), s.client_id().clone());
            self.record(persistent, || Change::Unsubscribed {
                client_id,
                filter: filter.clone(),
            });
        }
    }

    /// The session of a client id.
    pub fn find(&self, client_id: &str) -> Option<SessionId> {
        self.by_client.get(client_id).copied()
    }

    /// Number of sessions (online and offline).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Stores a new session (its client id must not have one yet); returns its id.
    pub fn insert(&mut self, mut session: Box<Session>) -> SessionId {
        let client_id = session.client_id().clone();
        if self.changes.is_some() && session.is_persistent() {
            session.set_logged();
        }
        self.record(session.is_persistent(), || Change::Created {
            client_id: client_id.clone(),
            expiry: session.expiry(),
        });
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.slots.insert((generation, session));
        let id = SessionId {
            // Slabs never reach 2^32 slots: sessions are bounded by `max_sessions`.
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            generation,
        };
        self.by_client.insert(client_id, id);
        id
    }

    /// Removes a session and everything that points at it.
    pub fn remove(&mut self, id: SessionId) -> Option<Box<Session>> {
        self.get(id)?;
        let (_, session) = self.slots.try_remove(id.slot as usize)?;
        self.by_client.remove(session.client_id());
        self.offline.remove(&id);
        // Recorded whatever the session's expiry is now when the log heard of it (it may
        // have been persistent when created: a later CONNECT or DISCONNECT can set its
        // expiry to 0); a session created clean never touches the disk.
        self.record(session.is_logged(), || Change::Removed {
            client_id: session.client_id().clone(),
        });
        Some(session)
    }

    /// The session lost its connection at `since` and is kept for its expiry interval.
    pub fn mark_offline(&mut self, id: SessionId, since: Instant) {
        let Some(s) = self.get(id) else {
            return;
        };
        let (client_id, expiry) = (s.client_id().clone(), s.expiry());
        // Wall-clock time for a store: `Instant` means nothing after a restart.
        let wall = std::time::SystemTime::now() - since.elapsed();
        self.record(true, || Change::Offline {
            client_id,
            since: wall,
            expiry,
        });
        let deadline = (expiry != crate::session::NEVER_EXPIRES)
            .then(|| since.checked_add(Duration::from_secs(u64::from(expiry))))
            .flatten();
        self.offline.insert(id, deadline);
        if let Some(d) = deadline {
            self.by_time.push(Reverse((d, id)));
        }
        if self.by_time.len() > 2 * self.offline.len() + 1024 {
            self.by_time = self
                .offline
                .iter()
                .filter_map(|(id, d)| d.map(|d| Reverse((d, *id))))
                .collect();
        }
    }

    /// The session has a connection again (or a new one took it over), kept `expiry`
    /// seconds after it ends.
    pub fn mark_online(&mut self, id: SessionId, expiry: u32) {
        self.offline.remove(&id);
        if let Some(s) = self.get_mut(id) {
            // A persistent session resumed with expiry 0 ends with this connection: the
            // log hears of it too, or a crash meanwhile would bring it back.
            let persistent = s.is_persistent() || expiry != 0;
            s.set_expiry(expiry);
            let client_id = s.client_id().clone();
            self.record(persistent, || Change::Online { client_id, expiry });
        }
    }

    /// Takes the offline sessions whose expiry is due at `now`, soonest first.
    pub fn take_expired(&mut self, now: Instant) -> Vec<SessionId> {
        let mut due = Vec::new();
        while let Some(Reverse((deadline, id))) = self.by_time.peek().copied() {
            if deadline > now {
                break;
            }
            self.by_time.pop();
            if self.offline.get(&id) == Some(&Some(deadline)) {
                due.push(id);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolVersion;
    use crate::session::{Session, SessionLimits};

    fn entry(id: &str) -> Box<Session> {
        session(id, true)
    }

    fn session(id: &str, persistent: bool) -> Box<Session> {
        Box::new(Session::new(
            ByteString::from(id),
            ProtocolVersion::V3_1_1,
            persistent,
            SessionLimits::default(),
        ))
    }

    #[test]
    fn a_reused_slot_is_not_its_previous_owner() {
        let mut s = SessionStore::default();
        let a = s.insert(entry("a"));
        assert!(s.remove(a).is_some());
        let b = s.insert(entry("b"));
        assert_eq!(a.slot, b.slot, "the slab reuses the freed slot");
        assert!(s.get(a).is_none() && s.get_mut(a).is_none());
        assert!(s.remove(a).is_none(), "a stale id removes nothing");
        assert_eq!(s.get(b).unwrap().client_id(), "b");
    }

    #[test]
    fn changes_of_persistent_sessions_are_recorded_by_client_id() {
        let mut s = SessionStore::default();
        let f = TopicFilter::new("a/#").unwrap();
        let opts = Subscribed::new(crate::protocol::SubscriptionOptions::new(
            crate::protocol::QoS::AtLeastOnce,
        ));
        // Nothing is kept while nobody records.
        let early = s.insert(session("early", true));
        s.subscribe(early, f.clone(), opts);
        s.record_changes();
        assert!(s.take_changes().is_empty());
        let clean = s.insert(session("clean", false));
        s.subscribe(clean, f.clone(), opts);
        s.unsubscribed(clean, &f);
        s.remove(clean);
        assert_eq!(
            s.take_changes(),
            vec![],
            "a clean session never touches the disk"
        );
        // Persistent when created, clean later (expiry 0): its end is written down.
        let was = s.insert(session("was", true));
        s.get_mut(was).unwrap().set_expiry(0);
        s.remove(was);
        assert_eq!(
            s.take_changes(),
            vec![
                Change::Created {
                    client_id: ByteString::from("was"),
                    expiry: crate::session::NEVER_EXPIRES,
                },
                Change::Removed {
                    client_id: ByteString::from("was")
                }
            ]
        );
        let p = s.insert(session("p", true));
        assert!(s.subscribe(p, f.clone(), opts));
        assert!(!s.subscribe(p, f.clone(), opts), "a replacement");
        let t0 = Instant::now();
        s.mark_offline(p, t0);
        s.mark_online(p, 5);
        s.mark_online(p, 6); // a takeover while online, with another interval
        s.unsubscribed(p, &f);
        s.remove(p);
        let id = |c: &str| ByteString::from(c);
        let got = s.take_changes();
        let sub = Change::Subscribed {
            client_id: id("p"),
            filter: f.clone(),
            sub: opts,
        };
        assert!(
            matches!(&got[3], Change::Offline { client_id, expiry, .. } if client_id == "p" && *expiry == crate::session::NEVER_EXPIRES)
        );
        let mut want = vec![
            Change::Created {
                client_id: id("p"),
                expiry: crate::session::NEVER_EXPIRES,
            },
            sub.clone(),
            sub,
            got[3].clone(),
            Change::Online {
                client_id: id("p"),
                expiry: 5,
            },
            Change::Online {
                client_id: id("p"),
                expiry: 6,
            },
            Change::Unsubscribed {
                client_id: id("p"),
                filter: f,
            },
            Change::Removed { client_id: id("p") },
        ];
        assert_eq!(got, want);
        want.clear();
        assert_eq!(s.take_changes(), want, "taken once");
    }

    #[test]
    fn expiry_comes_from_the_deadline_heap() {
        let mut s = SessionStore::default();
        let t0 = Instant::now();
        let a = s.insert(entry("a"));
        let b = s.insert(entry("b"));
        let c = s.insert(entry("c"));
        let never = s.insert(entry("never"));
        for id in [a, b] {
            s.get_mut(id).unwrap().set_expiry(10);
        }
        s.get_mut(c).unwrap().set_expiry(2);
        s.mark_offline(a, t0);
        s.mark_offline(b, t0 + Duration::from_secs(5));
        s.mark_offline(c, t0 + Duration::from_secs(5));
        s.mark_offline(never, t0);
        // `a` came back and left again later: only its second departure counts.
        s.mark_online(a, 10);
        s.mark_offline(a, t0 + Duration::from_secs(8));
        assert!(s.take_expired(t0 + Duration::from_secs(6)).is_empty());
        // Each session's own interval: c (2 s) before b (10 s), though it left with it.
        assert_eq!(s.take_expired(t0 + Duration::from_secs(7)), vec![c]);
        assert_eq!(s.take_expired(t0 + Duration::from_secs(15)), vec![b]);
        assert_eq!(s.take_expired(t0 + Duration::from_secs(18)), vec![a]);
        assert!(s.take_expired(t0 + Duration::from_secs(1 << 40)).is_empty());
    }

    #[test]
    fn recorded_changes_survive_the_log_format() {
        use crate::persist::{frame, record::Record};
        let mut s = SessionStore::default();
        s.record_changes();
        let f = TopicFilter::new("$share/g/a/#").unwrap();
        let mut options =
            crate::protocol::SubscriptionOptions::new(crate::protocol::QoS::ExactlyOnce);
        options.retain_as_published = true;
        options.retain_handling = crate::protocol::RetainHandling::DoNotSend;
        let sub = Subscribed {
            options,
            identifier: 77,
        };
        let p = s.insert(session("p", true));
        s.subscribe(p, f.clone(), sub);
        s.mark_offline(p, Instant::now());
        s.mark_online(p, 9);
        s.unsubscribed(p, &f);
        s.remove(p);
        let changes = s.take_changes();
        assert_eq!(changes.len(), 6, "{changes:?}");
        let mut log = Vec::new();
        for c in &changes {
            c.record().write(&mut log).unwrap();
        }
        frame::seal(&mut log, 0, 4096);
        let scanned = frame::scan(&log, 4096);
        assert_eq!(scanned.stopped, None);
        let (back, error) = crate::persist::record::read_all(&log, &scanned);
        assert_eq!(error, None);
        let want: Vec<Record> = changes.iter().map(Change::record).collect();
        assert_eq!(back, want);
        // Replayed: the session was removed in the end, so nothing is restored.
        assert!(crate::persist::image::replay(&back).sessions.is_empty());
        // One that stays offline comes back with its subscription and expiry.
        let q = s.insert(session("q", true));
        s.subscribe(q, f.clone(), sub);
        s.mark_offline(q, Instant::now());
        let kept: Vec<Record> = s.take_changes().iter().map(Change::record).collect();
        let image = crate::persist::image::replay(&kept);
        let q_image = &image.sessions[&bytestring::ByteString::from("q")];
        assert_eq!(
            q_image.subscriptions.get(f.as_str()),
            Some(&(options.to_byte(), 77))
        );
        assert!(q_image.offline.is_some());
        assert_eq!(q_image.expiry, crate::session::NEVER_EXPIRES);
        match &back[1] {
            Record::Subscribed {
                options: o,
                identifier,
                ..
            } => {
                assert_eq!(
                    crate::protocol::SubscriptionOptions::from_byte(*o),
                    Some(options)
                );
                assert_eq!(*identifier, 77);
            }
            other => panic!("{other:?}"),
        }
        match &back[2] {
            Record::SessionOffline {
                since_ms, expiry, ..
            } => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                assert!(now_ms.abs_diff(*since_ms) < 60_000);
                assert_eq!(*expiry, crate::session::NEVER_EXPIRES);
            }
            other => panic!("{other:?}"),
        }
    }
}
