//! [`SubscriptionTrie`]: a shard's own subscribers, filter -> set of (key, value).

use std::cell::Cell;
use std::fmt;
use std::hash::Hash;
use std::mem;

use ahash::AHashMap;
use smallvec::SmallVec;

use super::split_shared;
use super::trie::{Slot, Trie};

/// Above this many subscribers on one filter, a hash index of keys is kept beside the
/// vector. Below it a linear scan of a few cache lines beats hashing.
const INDEX_ABOVE: usize = 16;
/// The index is dropped again when the filter falls below this many subscribers (half of
/// [`INDEX_ABOVE`], so that a filter oscillating around the threshold does not rebuild it on
/// every change).
const INDEX_DROP_BELOW: usize = INDEX_ABOVE / 2;

/// The subscribers of one filter text.
///
/// Invariant: `index`, when present, maps every key of `entries` to its position and
/// nothing else; keys in `entries` are distinct.
struct Subscribers<K, V> {
    entries: SmallVec<[(K, V); 1]>,
    index: Option<Box<AHashMap<K, usize>>>,
}

impl<K: Copy + Eq + Hash, V> Subscribers<K, V> {
    fn new() -> Self {
        Subscribers {
            entries: SmallVec::new(),
            index: None,
        }
    }

    fn position(&self, key: K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&key).copied(),
            None => self.entries.iter().position(|(k, _)| *k == key),
        }
    }

    fn get(&self, key: K) -> Option<&V> {
        let at = self.position(key)?;
        self.entries.get(at).map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(at) = self.position(key) {
            if let Some((_, v)) = self.entries.get_mut(at) {
                return Some(mem::replace(v, value));
            }
        }
        self.entries.push((key, value));
        let len = self.entries.len();
        match &mut self.index {
            Some(index) => {
                index.insert(key, len - 1);
            }
            None if len > INDEX_ABOVE => {
                let index = self
                    .entries
                    .iter()
                    .enumerate()
                    .map(|(at, (k, _))| (*k, at))
                    .collect();
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        None
    }

    fn remove(&mut self, key: K) -> Option<V> {
        let at = self.position(key)?;
        if at >= self.entries.len() {
            return None;
        }
        // O(1): the last entry moves into the hole (order is not part of the contract).
        let (_, value) = self.entries.swap_remove(at);
        if let Some(index) = &mut self.index {
            index.remove(&key);
            if let Some((moved, _)) = self.entries.get(at) {
                index.insert(*moved, at);
            }
            if self.entries.len() < INDEX_DROP_BELOW {
                self.index = None;
            } else if index.capacity() > 4 * index.len() {
                let len = index.len();
                index.shrink_to(2 * len);
            }
        }
        // Vectors keep their peak capacity; give it back once it is mostly unused, so a
        // filter that once had many subscribers does not pin the memory. Shrinking only
        // below a quarter keeps pushes and removes amortised O(1).
        if self.entries.capacity() > 4 * self.entries.len().max(2) {
            self.entries.shrink_to_fit();
        }
        Some(value)
    }
}

/// One filter text and its subscribers. Several filter texts share a trie node when they
/// are shared subscriptions with the same filter part (`a/+`, `$share/g/a/+`,
/// `$share/h/a/+`).
struct Group<K, V> {
    filter: Box<str>,
    subs: Subscribers<K, V>,
    /// Kept for the caller, which rotates through a share group's members with it (see
    /// [`SubscriptionTrie::for_each_matching_filter`]).
    cursor: Cell<u32>,
}

/// The payload of a trie slot: its filter texts. Boxed so that the many slots without
/// subscribers (inner nodes, and every `#` slot not in use) cost one pointer.
///
/// Invariant: `Some` only with at least one group, and every group has a subscriber.
struct Groups<K, V>(Option<Box<GroupVec<K, V>>>);

/// The filter texts of one slot: almost always exactly one, so it is kept inline.
type GroupVec<K, V> = SmallVec<[Group<K, V>; 1]>;

impl<K, V> Default for Groups<K, V> {
    fn default() -> Self {
        Groups(None)
    }
}

impl<K, V> Slot for Groups<K, V> {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl<K, V> Groups<K, V> {
    fn iter(&self) -> impl Iterator<Item = &Group<K, V>> {
        self.0.iter().flat_map(|groups| groups.iter())
    }

    fn find(&self, filter: &str) -> Option<&Group<K, V>> {
        self.iter().find(|g| &*g.filter == filter)
    }
}

/// A shard's subscriptions: topic filter -> set of (key, value).
///
/// `K` identifies a subscriber (a session slot id, say) and `V` is what the subscription
/// carries (its options). A key has at most one value per filter text; a key subscribed
/// to several overlapping filters is reported once per matching filter, which is what
/// MQTT 5.0 wants when subscription identifiers differ (§3.3.4) and lets the caller merge
/// otherwise.
///
/// Filters are the text of valid [`TopicFilter`](crate::protocol::TopicFilter)s. A shared
/// subscription `$share/{group}/{filter}` is stored under its full text but matches on
/// `{filter}`, as [`TopicFilter::shared`](crate::protocol::TopicFilter::shared) splits it.
/// An invalid filter is stored without panicking but what it matches is unspecified.
///
/// # Costs
///
/// With `L` the number of levels of the filter or topic, `G` the filter texts on one trie
/// node (1 unless shared subscriptions use the same filter part) and `S` the subscribers of
/// one filter text:
/// - [`insert`](Self::insert), [`remove`](Self::remove), [`get`](Self::get):
///   O(L + G) hash lookups and comparisons, plus O(S) for `S <= 16` (a linear scan) or O(1)
///   expected above (a hash index of keys is kept for that filter).
/// - [`for_each_match`](Self::for_each_match): O(L) lookups per trie path the topic
///   follows, plus O(1) per reported subscription; no allocation for topics up to 15 levels.
/// - Memory: O(total filter levels + subscriptions); nodes and subscriber vectors are
///   freed when their last subscription goes, so churn does not accumulate.
///
/// ```
/// use surgemq::index::SubscriptionTrie;
///
/// let mut subs: SubscriptionTrie<u32, u8> = SubscriptionTrie::new();
/// subs.insert("sport/tennis/+", 1, 0);
/// subs.insert("sport/#", 2, 1);
/// subs.insert("$share/g/sport/tennis/player1", 3, 1);
///
/// let mut seen = Vec::new();
/// subs.for_each_match("sport/tennis/player1", |filter, key, qos| {
///     seen.push((filter.to_string(), key, *qos))
/// });
/// seen.sort();
/// assert_eq!(seen, [
///     ("$share/g/sport/tennis/player1".to_string(), 3, 1),
///     ("sport/#".to_string(), 2, 1),
///     ("sport/tennis/+".to_string(), 1, 0),
/// ]);
///
/// assert_eq!(subs.remove("sport/#", 2), Some(1));
/// assert_eq!(subs.subscription_count(), 2);
/// ```
pub struct SubscriptionTrie<K, V> {
    trie: Trie<Groups<K, V>>,
    filters: usize,
    subscriptions: usize,
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        SubscriptionTrie {
            trie: Trie::default(),
            filters: 0,
            subscriptions: 0,
        }
    }
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("filters", &self.filters)
            .field("subscriptions", &self.subscriptions)
            .field("nodes", &self.trie.node_count())
            .finish()
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTrie<K, V> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `key` to `filter` with `value`. Returns the previous value when `key`
    /// was already subscribed to this exact filter text (a re-subscribe replaces it).
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        let (_, part) = split_shared(filter);
        let slot = self.trie.get_or_create(part);
        let groups = slot.0.get_or_insert_with(Box::default);
        if let Some(group) = groups.iter_mut().find(|g| &*g.filter == filter) {
            let previous = group.subs.insert(key, value);
            if previous.is_none() {
                self.subscriptions += 1;
            }
            return previous;
        }
        let mut subs = Subscribers::new();
        subs.insert(key, value);
        groups.push(Group {
            filter: Box::from(filter),
            subs,
            cursor: Cell::new(0),
        });
        self.filters += 1;
        self.subscriptions += 1;
        None
    }

    /// Unsubscribes `key` from `filter`, returning its value if it was subscribed. Frees
    /// the filter's nodes when this was their last subscription.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<V> {
        let (_, part) = split_shared(filter);
        let filters = &mut self.filters;
        let subscriptions = &mut self.subscriptions;
        self.trie
            .modify(part, |slot| {
                let groups = slot.0.as_mut()?;
                let at = groups.iter().position(|g| &*g.filter == filter)?;
                let group = groups.get_mut(at)?;
                let value = group.subs.remove(key)?;
                *subscriptions -= 1;
                if group.subs.entries.is_empty() {
                    groups.swap_remove(at);
                    *filters -= 1;
                    if groups.is_empty() {
                        slot.0 = None;
                    }
                }
                Some(value)
            })
            .flatten()
    }

    /// The value of `key`'s subscription to exactly `filter`.
    pub fn get(&self, filter: &str, key: K) -> Option<&V> {
        let (_, part) = split_shared(filter);
        self.trie.get(part)?.find(filter)?.subs.get(key)
    }

    /// The subscribers of exactly `filter` (not of the filters that overlap it), in no
    /// particular order. O(L + G) to find them.
    pub fn subscribers<'a>(&'a self, filter: &str) -> impl Iterator<Item = (K, &'a V)> + 'a {
        let (_, part) = split_shared(filter);
        self.trie
            .get(part)
            .and_then(|slot| slot.find(filter))
            .into_iter()
            .flat_map(|group| group.subs.entries.iter().map(|(k, v)| (*k, v)))
    }

    /// Calls `f(filter, key, value)` for every subscription whose filter matches the topic
    /// name `topic` (MQTT §4.7, see [`matches`](crate::protocol::matches)); a shared
    /// subscription matches on its filter part and is reported with its full text.
    ///
    /// The subscriptions of one filter text are visited consecutively, so a caller can
    /// pick one member of a share group without collecting. Otherwise the order is
    /// unspecified.
    #[inline]
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, K, &V)) {
        self.trie.for_each_match(topic, |slot| {
            for group in slot.iter() {
                for (key, value) in &group.subs.entries {
                    f(&group.filter, *key, value);
                }
            }
        });
    }

    /// Calls `f(filter, subscribers, cursor)` once for every filter text matching the topic
    /// name `topic` (as [`for_each_match`](Self::for_each_match) matches), with its
    /// subscribers (in no particular order) and a counter of its own that the caller may
    /// use to rotate through them, e.g. to pick one member of a share group per message.
    /// The counter lives as long as the filter has subscribers.
    #[inline]
    pub fn for_each_matching_filter(
        &self,
        topic: &str,
        mut f: impl FnMut(&str, &[(K, V)], &Cell<u32>),
    ) {
        self.trie.for_each_match(topic, |slot| {
            for group in slot.iter() {
                f(&group.filter, &group.subs.entries, &group.cursor);
            }
        });
    }

    /// Calls `f(filter, key, value)` for every subscription, in no particular order.
    /// O(nodes + subscriptions): for snapshots and diagnostics, not the data path.
    pub fn for_each(&self, mut f: impl FnMut(&str, K, &V)) {
        self.trie.for_each_slot(|slot| {
            for group in slot.iter() {
                for (key, value) in &group.subs.entries {
                    f(&group.filter, *key, value);
                }
            }
        });
    }

    /// Number of distinct filter texts with at least one subscriber.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Number of (filter, key) subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    /// True when there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.subscriptions == 0
    }

    /// Number of trie nodes, the root included: 1 when empty. For memory accounting.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}
