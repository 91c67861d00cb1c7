//! The sending side of 5.0 topic aliases (§3.3.2.3.4), shared by the broker's sessions
//! and the client: which alias a topic goes with on one connection.
//!
//! **Owns:** one connection's table of aliases it has given. **Must not touch:** I/O; the
//! caller decides whether aliases are allowed (the receiver's Topic Alias Maximum) and
//! whether a PUBLISH may grow by an alias (the receiver's Maximum Packet Size).

use std::collections::HashMap;

use super::TopicName;

/// The aliases a sender gives on one connection: aliases 1 ..= `max` (the receiver's Topic
/// Alias Maximum, capped by the sender) [MQTT-3.3.2-10] [MQTT-3.3.2-11], given to topics
/// as they are sent. When all are taken, the least recently used one is given to the new
/// topic (sent with its name, which remaps the alias for the receiver); a topic whose alias
/// the receiver knows is sent with an empty name. Each alias holds a copy of its topic;
/// the table lives as long as the connection [MQTT-3.3.2-7] and memory is at most `max`
/// topics. Giving one away when all are taken scans the table, so `max` should stay small.
///
/// ```
/// use surgemq::protocol::{TopicAliases, TopicName};
///
/// let mut t = TopicAliases::new(1);
/// let a = TopicName::new("a").unwrap();
/// let b = TopicName::new("b").unwrap();
/// assert_eq!(t.known(&a), None);
/// assert_eq!(t.assign(&a), 1); // sent as "a" with alias 1
/// assert_eq!(t.known(&a), Some(1)); // sent as "" with alias 1
/// assert_eq!(t.assign(&b), 1); // the only alias now stands for "b"
/// assert_eq!(t.known(&a), None);
/// ```
#[derive(Debug)]
pub struct TopicAliases {
    by_topic: HashMap<TopicName, u16, ProcessHasher>,
    /// (topic, last use) by alias - 1.
    slots: Vec<(TopicName, u64)>,
    max: u16,
    tick: u64,
}

impl TopicAliases {
    /// A table of at most `max` aliases (at least 1 is useful; 0 gives none).
    pub fn new(max: u16) -> TopicAliases {
        TopicAliases {
            by_topic: HashMap::default(),
            slots: Vec::new(),
            max,
            tick: 0,
        }
    }

    /// The alias the receiver knows `topic` by, if any (counted as a use).
    pub fn known(&mut self, topic: &TopicName) -> Option<u16> {
        let alias = *self.by_topic.get(topic)?;
        self.tick += 1;
        if let Some(slot) = self.slots.get_mut(usize::from(alias) - 1) {
            slot.1 = self.tick;
        }
        Some(alias)
    }

    /// Gives `topic` (not [`known`](Self::known)) an alias: a free one, or the least
    /// recently used. 0 only when the table allows none.
    pub fn assign(&mut self, topic: &TopicName) -> u16 {
        if self.max == 0 {
            return 0;
        }
        self.tick += 1;
        let tick = self.tick;
        // Kept beyond this send: its own bytes, not a slice of a read buffer.
        let topic = topic.detached();
        if self.slots.len() < usize::from(self.max) {
            self.slots.push((topic.clone(), tick));
            let alias = self.slots.len() as u16;
            self.by_topic.insert(topic, alias);
            return alias;
        }
        let Some((at, _)) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.1) else {
            return 0;
        };
        let alias = at as u16 + 1;
        if let Some(slot) = self.slots.get_mut(at) {
            let old = std::mem::replace(slot, (topic.clone(), tick));
            self.by_topic.remove(&old.0);
        }
        self.by_topic.insert(topic, alias);
        alias
    }
}

/// A hasher keyed once per process at random: no per-map key state (an `AHashMap` carries
/// 32 bytes of keys in every map), yet keys a peer cannot predict (maps keyed by text a
/// client chooses).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessHasher;

impl std::hash::BuildHasher for ProcessHasher {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        static KEYS: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        KEYS.get_or_init(ahash::RandomState::new).build_hasher()
    }
}
