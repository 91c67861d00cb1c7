//! Where a shard keeps the sessions whose home it is.
//!
//! **Owns:** the sessions of one shard, their lookup by client id, their ids (slot plus
//! generation), the `max_sessions` bound, and which of them are offline since when (a
//! deadline heap for `session_expiry_max`, so expiry is not a scan of every session).
//!
//! **Must not touch:** the topic index, other shards, sockets. The broker reaches sessions
//! only through this type, so the on-disk store planned for persistence replaces it behind
//! the same methods: an implementation keeps `Session`s (which hold the subscriptions, the
//! in-flight window and the queue) and can rebuild the topic index from
//! `Session::subscriptions` at start-up. Today everything is in memory. (An `Entry` still
//! carries the handle of the connection serving it; moving that link out of the store is
//! part of the persistence work.)
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

use super::shard::Entry;

/// A session of this shard: slot and generation (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId {
    slot: u32,
    generation: u32,
}

#[cfg(test)]
impl SessionId {
    /// The slab slot (tests check that a slot is reused).
    pub(crate) fn slot(self) -> u32 {
        self.slot
    }
}

/// The sessions of one shard.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    slots: slab::Slab<(u32, Entry)>,
    by_client: AHashMap<ByteString, SessionId>,
    /// Persistent sessions without a connection, and since when.
    offline: AHashMap<SessionId, Instant>,
    /// `offline` by time, oldest first; entries whose session came back (or went offline
    /// again later) are skipped when they surface, and the heap is rebuilt when such stale
    /// entries outnumber the live ones.
    by_time: BinaryHeap<Reverse<(Instant, SessionId)>>,
    next_generation: u32,
}

impl SessionStore {
    /// The session `id`, if it still exists.
    pub fn get(&self, id: SessionId) -> Option<&Entry> {
        match self.slots.get(id.slot as usize) {
            Some((g, e)) if *g == id.generation => Some(e),
            _ => None,
        }
    }

    /// The session `id`, mutably, if it still exists.
    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut Entry> {
        match self.slots.get_mut(id.slot as usize) {
            Some((g, e)) if *g == id.generation => Some(e),
            _ => None,
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
    pub fn insert(&mut self, entry: Entry) -> SessionId {
        let client_id = entry.session.client_id().clone();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.slots.insert((generation, entry));
        let id = SessionId {
            // Slabs never reach 2^32 slots: sessions are bounded by `max_sessions`.
            slot: u32::try_from(slot).unwrap_or(u32::MAX),
            generation,
        };
        self.by_client.insert(client_id, id);
        id
    }

    /// Removes a session and everything that points at it.
    pub fn remove(&mut self, id: SessionId) -> Option<Entry> {
        self.get(id)?;
        let (_, entry) = self.slots.try_remove(id.slot as usize)?;
        self.by_client.remove(entry.session.client_id());
        self.offline.remove(&id);
        Some(entry)
    }

    /// The session lost its connection at `since` and is kept.
    pub fn mark_offline(&mut self, id: SessionId, since: Instant) {
        self.offline.insert(id, since);
        self.by_time.push(Reverse((since, id)));
        if self.by_time.len() > 2 * self.offline.len() + 1024 {
            self.by_time = self
                .offline
                .iter()
                .map(|(id, since)| Reverse((*since, *id)))
                .collect();
        }
    }

    /// The session has a connection again.
    pub fn mark_online(&mut self, id: SessionId) {
        self.offline.remove(&id);
    }

    /// Takes the sessions offline for at least `max`, oldest first.
    pub fn take_expired(&mut self, now: Instant, max: Duration) -> Vec<SessionId> {
        let mut due = Vec::new();
        while let Some(Reverse((since, id))) = self.by_time.peek().copied() {
            if now.saturating_duration_since(since) < max {
                break;
            }
            self.by_time.pop();
            if self.offline.get(&id) == Some(&since) {
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

    fn entry(id: &str) -> Entry {
        Entry {
            session: Box::new(Session::new(
                ByteString::from(id),
                ProtocolVersion::V3_1_1,
                true,
                SessionLimits::default(),
            )),
            conn: None,
        }
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
        assert_eq!(s.get(b).unwrap().session.client_id(), "b");
    }

    #[test]
    fn expiry_comes_from_the_deadline_heap() {
        let mut s = SessionStore::default();
        let t0 = Instant::now();
        let a = s.insert(entry("a"));
        let b = s.insert(entry("b"));
        s.mark_offline(a, t0);
        s.mark_offline(b, t0 + Duration::from_secs(5));
        // `a` came back and left again later: only its second departure counts.
        s.mark_online(a);
        s.mark_offline(a, t0 + Duration::from_secs(8));
        let max = Duration::from_secs(10);
        assert!(s.take_expired(t0 + Duration::from_secs(9), max).is_empty());
        assert_eq!(s.take_expired(t0 + Duration::from_secs(15), max), vec![b]);
        assert_eq!(s.take_expired(t0 + Duration::from_secs(18), max), vec![a]);
    }
}
