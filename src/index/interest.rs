//! [`InterestTrie`]: which shards have subscribers for which filters, and [`ShardMask`].

use std::cell::Cell;
use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use super::split_shared;
use super::trie::{Slot, Trie};

/// A set of shard indexes `0..64`, as a bitmask.
///
/// # Panics
///
/// The methods that take a shard index panic when it is 64 or more: the shard count is
/// validated once at start-up, so an index out of range is a bug, and ignoring it would
/// silently stop routing to that shard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ShardMask(u64);

impl ShardMask {
    /// The most shards a mask can hold.
    pub const MAX_SHARDS: usize = 64;

    /// The empty set.
    pub const EMPTY: ShardMask = ShardMask(0);

    /// The set whose bit `i` is bit `i` of `bits`.
    pub const fn from_bits(bits: u64) -> ShardMask {
        ShardMask(bits)
    }

    /// The bits (bit `i` set when shard `i` is in the set).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The set holding only `shard`.
    pub fn single(shard: usize) -> ShardMask {
        ShardMask(Self::bit(shard))
    }

    fn bit(shard: usize) -> u64 {
        assert!(
            shard < Self::MAX_SHARDS,
            "shard index {shard} out of range (max {} shards)",
            Self::MAX_SHARDS
        );
        1u64 << shard
    }

    /// Adds `shard`; true if it was not in the set.
    pub fn set(&mut self, shard: usize) -> bool {
        let bit = Self::bit(shard);
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }

    /// Removes `shard`; true if it was in the set.
    pub fn clear(&mut self, shard: usize) -> bool {
        let bit = Self::bit(shard);
        let had = self.0 & bit != 0;
        self.0 &= !bit;
        had
    }

    /// Whether `shard` is in the set (false for any index of 64 or more).
    pub fn contains(self, shard: usize) -> bool {
        shard < Self::MAX_SHARDS && self.0 & (1u64 << shard) != 0
    }

    /// True for the empty set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of shards in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The shards in the set, in ascending order.
    pub fn iter(self) -> ShardIter {
        ShardIter(self.0)
    }
}

impl BitOr for ShardMask {
    type Output = ShardMask;
    fn bitor(self, rhs: ShardMask) -> ShardMask {
        ShardMask(self.0 | rhs.0)
    }
}

impl BitOrAssign for ShardMask {
    fn bitor_assign(&mut self, rhs: ShardMask) {
        self.0 |= rhs.0;
    }
}

impl IntoIterator for ShardMask {
    type Item = usize;
    type IntoIter = ShardIter;
    fn into_iter(self) -> ShardIter {
        self.iter()
    }
}

impl FromIterator<usize> for ShardMask {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> ShardMask {
        let mut mask = ShardMask::EMPTY;
        for shard in iter {
            mask.set(shard);
        }
        mask
    }
}

impl fmt::Debug for ShardMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The shards of a [`ShardMask`] in ascending order.
#[derive(Clone, Debug)]
pub struct ShardIter(u64);

impl Iterator for ShardIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let shard = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1; // clear the lowest set bit
        Some(shard)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ShardIter {}

/// The masks of one trie node: its plain filter and the shared subscriptions on the same
/// filter part, which are kept apart because they are different filters (unsubscribing
/// `a/+` on a shard must not clear that shard's `$share/g/a/+`).
///
/// Invariant: `shared` is `None` or non-empty, and holds no empty mask.
#[derive(Default)]
struct Masks {
    plain: ShardMask,
    /// (full `$share/...` text, mask); boxed because shared subscriptions are rare and a
    /// `None` costs one word in every slot.
    shared: Option<Box<SharedMasks>>,
}

/// The shared subscriptions on one filter part.
type SharedMasks = Vec<Shared>;

/// One shared subscription's shards.
struct Shared {
    /// Its full `$share/{group}/{filter}` text.
    filter: Box<str>,
    mask: ShardMask,
    /// Kept for the caller, which rotates through the group's shards with it (see
    /// [`InterestTrie::for_each_match`]).
    cursor: Cell<u32>,
}

impl Slot for Masks {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.shared.is_none()
    }
}

impl Masks {
    fn union(&self) -> ShardMask {
        let mut mask = self.plain;
        for s in self.shared.iter().flat_map(|s| s.iter()) {
            mask |= s.mask;
        }
        mask
    }
}

/// "Which shards have at least one subscriber for filter F": every shard keeps a replica
/// and matches a PUBLISH against it once to find the shards to forward to.
///
/// Filters follow the same rules as in [`SubscriptionTrie`](super::SubscriptionTrie),
/// including shared subscriptions, which match on their filter part but are separate
/// filters with their own masks. Nodes are pruned when their last bit is cleared.
///
/// Costs: [`add`](Self::add) and [`remove`](Self::remove) are O(levels);
/// [`match_mask`](Self::match_mask) is the same walk as
/// [`SubscriptionTrie::for_each_match`](super::SubscriptionTrie::for_each_match) with an
/// OR per matching filter.
///
/// ```
/// use surgemq::index::{InterestTrie, ShardMask};
///
/// let mut interest = InterestTrie::new();
/// assert!(interest.add("a/+", 1));
/// assert!(!interest.add("a/+", 1)); // already set
/// assert!(interest.add("#", 3));
/// assert_eq!(interest.match_mask("a/b"), ShardMask::from_iter([1, 3]));
/// assert_eq!(interest.match_mask("$SYS/x"), ShardMask::EMPTY); // [MQTT-4.7.2-1]
/// assert!(interest.remove("#", 3));
/// assert_eq!(interest.match_mask("a/b").iter().collect::<Vec<_>>(), [1]);
/// ```
#[derive(Default)]
pub struct InterestTrie {
    trie: Trie<Masks>,
    filters: usize,
    /// How many of `filters` are shared subscriptions.
    shared: usize,
}

impl fmt::Debug for InterestTrie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterestTrie")
            .field("filters", &self.filters)
            .field("nodes", &self.trie.node_count())
            .finish()
    }
}

impl InterestTrie {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `shard` has a subscriber for `filter`. True if the bit was newly set
    /// (the first subscriber of that shard for that filter).
    ///
    /// # Panics
    ///
    /// If `shard` is 64 or more (see [`ShardMask`]).
    pub fn add(&mut self, filter: &str, shard: usize) -> bool {
        // Checked before creating nodes, so the panic leaves no empty node behind.
        assert!(
            shard < ShardMask::MAX_SHARDS,
            "shard index {shard} out of range (max {} shards)",
            ShardMask::MAX_SHARDS
        );
        let (share, part) = split_shared(filter);
        let slot = self.trie.get_or_create(part);
        let filters = &mut self.filters;
        let mut set = |mask: &mut ShardMask| {
            if mask.is_empty() {
                *filters += 1;
            }
            mask.set(shard)
        };
        match share {
            None => set(&mut slot.plain),
            Some(_) => {
                let shared = slot.shared.get_or_insert_with(Box::default);
                if let Some(s) = shared.iter_mut().find(|s| &*s.filter == filter) {
                    return set(&mut s.mask);
                }
                let mut mask = ShardMask::EMPTY;
                let new = set(&mut mask);
                shared.push(Shared {
                    filter: Box::from(filter),
                    mask,
                    cursor: Cell::new(0),
                });
                self.shared += 1;
                new
            }
        }
    }

    /// Records that `shard` no longer has subscribers for `filter`. True if the bit was
    /// set. Frees the filter's nodes when no shard is left.
    pub fn remove(&mut self, filter: &str, shard: usize) -> bool {
        if shard >= ShardMask::MAX_SHARDS {
            return false; // never set
        }
        let (share, part) = split_shared(filter);
        let filters = &mut self.filters;
        let shared_count = &mut self.shared;
        self.trie
            .modify(part, |slot| match share {
                None => {
                    let had = slot.plain.clear(shard);
                    if had && slot.plain.is_empty() {
                        *filters -= 1;
                    }
                    had
                }
                Some(_) => {
                    let Some(shared) = slot.shared.as_mut() else {
                        return false;
                    };
                    let Some(at) = shared.iter().position(|s| &*s.filter == filter) else {
                        return false;
                    };
                    let Some(Shared { mask, .. }) = shared.get_mut(at) else {
                        return false;
                    };
                    let had = mask.clear(shard);
                    if mask.is_empty() {
                        shared.swap_remove(at);
                        *filters -= 1;
                        *shared_count -= 1;
                        if shared.is_empty() {
                            slot.shared = None;
                        }
                    }
                    had
                }
            })
            .unwrap_or(false)
    }

    /// The shards with a subscriber for exactly `filter`.
    pub fn mask(&self, filter: &str) -> ShardMask {
        let (share, part) = split_shared(filter);
        let Some(slot) = self.trie.get(part) else {
            return ShardMask::EMPTY;
        };
        match share {
            None => slot.plain,
            Some(_) => slot
                .shared
                .iter()
                .flat_map(|s| s.iter())
                .find(|s| &*s.filter == filter)
                .map_or(ShardMask::EMPTY, |s| s.mask),
        }
    }

    /// The union of the masks of every filter matching the topic name `topic` (MQTT
    /// §4.7, see [`matches`](crate::protocol::matches)): the shards to forward it to.
    #[inline]
    pub fn match_mask(&self, topic: &str) -> ShardMask {
        let mut mask = ShardMask::EMPTY;
        self.trie.for_each_match(topic, |slot| mask |= slot.union());
        mask
    }

    /// Calls `f(shared, mask)` for every filter matching `topic`: `shared` is the full
    /// `$share/...` text of a shared subscription with a counter of its own that the caller
    /// may use to rotate through the group's shards, and `None` for the plain filters
    /// (whose text is not stored). For a caller that must treat share groups apart, e.g.
    /// deliver to one shard of the group rather than to all.
    pub fn for_each_match(
        &self,
        topic: &str,
        mut f: impl FnMut(Option<(&str, &Cell<u32>)>, ShardMask),
    ) {
        self.trie.for_each_match(topic, |slot| {
            if !slot.plain.is_empty() {
                f(None, slot.plain);
            }
            for s in slot.shared.iter().flat_map(|s| s.iter()) {
                f(Some((&s.filter, &s.cursor)), s.mask);
            }
        });
    }

    /// Whether any shared subscription matches `topic` (checked before
    /// [`for_each_match`](Self::for_each_match) only where that walk costs more than this
    /// one; a trie without shared subscriptions answers at once).
    pub fn has_shared(&self) -> bool {
        self.shared > 0
    }

    /// Number of filters with at least one shard.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// True when no shard has any filter.
    pub fn is_empty(&self) -> bool {
        self.filters == 0
    }

    /// Number of trie nodes, the root included: 1 when empty. For memory accounting.
    pub fn node_count(&self) -> usize {
        self.trie.node_count()
    }
}
