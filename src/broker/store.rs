//! Where a shard keeps the sessions whose home it is.
//!
//! **Owns:** the sessions of one shard, their lookup by client id, and which of them are
//! offline since when (for `session_expiry_max`).
//!
//! **Must not touch:** connections, the topic index, other shards. The broker reaches
//! sessions only through this type, so the on-disk store planned for persistence replaces
//! it behind the same methods: an implementation keeps `Session`s (which hold the
//! subscriptions, the in-flight window and the queue) and can rebuild the topic index from
//! `Session::subscriptions` at start-up. Today everything is in memory.

use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytestring::ByteString;

use super::shard::Entry;

/// The sessions of one shard, addressed by slot.
#[derive(Debug, Default)]
pub(crate) struct SessionStore {
    slots: slab::Slab<Entry>,
    by_client: AHashMap<ByteString, usize>,
    /// Persistent sessions without a connection, and since when.
    offline: AHashMap<usize, Instant>,
}

impl SessionStore {
    /// The session in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot)
    }

    /// The session in `slot`, mutably.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.slots.get_mut(slot)
    }

    /// The slot of a client id's session.
    pub fn find(&self, client_id: &str) -> Option<usize> {
        self.by_client.get(client_id).copied()
    }

    /// Stores a new session (its client id must not have one yet); returns its slot.
    pub fn insert(&mut self, entry: Entry) -> usize {
        let client_id = entry.session.client_id().clone();
        let slot = self.slots.insert(entry);
        self.by_client.insert(client_id, slot);
        slot
    }

    /// Removes a session and everything that points at it.
    pub fn remove(&mut self, slot: usize) -> Option<Entry> {
        let entry = self.slots.try_remove(slot)?;
        self.by_client.remove(entry.session.client_id());
        self.offline.remove(&slot);
        Some(entry)
    }

    /// The session lost its connection at `since` and is kept.
    pub fn mark_offline(&mut self, slot: usize, since: Instant) {
        self.offline.insert(slot, since);
    }

    /// The session has a connection again.
    pub fn mark_online(&mut self, slot: usize) {
        self.offline.remove(&slot);
    }

    /// Slots of sessions offline for at least `max`.
    pub fn offline_longer_than(&self, now: Instant, max: Duration) -> Vec<usize> {
        self.offline
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= max)
            .map(|(slot, _)| *slot)
            .collect()
    }
}
