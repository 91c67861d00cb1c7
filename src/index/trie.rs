//! The one trie both indexes are built on: a tree of topic-filter levels with a payload
//! slot per filter, MQTT matching, and pruning of empty nodes.
//!
//! The payload type `P` is what a filter maps to (subscribers, a shard mask); the trie
//! only needs to know whether a slot is empty ([`Slot::is_empty`]) so it can prune.
//!
//! # Shape
//!
//! A [`Node`] is one filter level. Literal child levels live in a hash map keyed by the
//! level text; `+` has its own child pointer and `#` its own payload slot (a `#` is always
//! the last level, so it never needs children). Matching therefore hashes only the topic's
//! own levels, never a wildcard.
//!
//! # No recursion
//!
//! A valid filter may be 65535 bytes long, which is up to 32768 levels. Every walk here
//! (insert, lookup, match, prune, drop) is a loop with an explicit stack whose size is the
//! depth of the trie, so a hostile filter cannot overflow a shard's call stack.

use std::collections::hash_map::IntoIter;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::mem;

use ahash::AHasher;
use smallvec::SmallVec;

/// The hasher of the child maps: aHash with the process-wide keys.
///
/// `BuildHasherDefault<AHasher>` is zero-sized, where `ahash::RandomState` is 32 bytes in
/// every map, so in every node: a third of a leaf node for nothing. With ahash's default
/// `runtime-rng` feature the "fixed" keys are drawn from the OS once per process, so level
/// strings chosen by clients still cannot be precomputed into collisions.
type LevelHasher = BuildHasherDefault<AHasher>;

type Children<P> = HashMap<Box<str>, Node<P>, LevelHasher>;

/// A payload stored per filter.
pub(crate) trait Slot: Default {
    /// True when the slot holds nothing, so that the trie may prune its node.
    fn is_empty(&self) -> bool;
}

/// One level of the trie.
///
/// Invariant: every node other than the root is non-empty (see [`Node::is_empty`]); the
/// operations that may empty one ([`Trie::modify`]) remove it at once together with its
/// ancestors that became empty.
#[derive(Default)]
pub(crate) struct Node<P> {
    /// Literal next levels (including the empty level).
    children: Children<P>,
    /// The `+` next level.
    plus: Option<Box<Node<P>>>,
    /// The payload of the filter that ends with `#` right after this level.
    hash: P,
    /// The payload of the filter that ends at this level.
    here: P,
}

impl<P: Slot> Node<P> {
    fn is_empty(&self) -> bool {
        self.here.is_empty()
            && self.hash.is_empty()
            && self.plus.is_none()
            && self.children.is_empty()
    }

    /// Whether this node must stay when the one child on some path through it goes away.
    fn needed_without_one_child(&self) -> bool {
        !self.here.is_empty()
            || !self.hash.is_empty()
            || self.children.len() + usize::from(self.plus.is_some()) > 1
    }
}

/// What one filter level means for the walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step<'a> {
    Literal(&'a str),
    Plus,
    /// `#` as the last level. A `#` anywhere else (an invalid filter) is a literal level,
    /// which no valid topic name contains, so it never matches.
    Hash,
}

/// The steps of a filter path (the filter part of a shared subscription).
fn steps(path: &str) -> impl Iterator<Item = Step<'_>> {
    let mut levels = path.split('/').peekable();
    std::iter::from_fn(move || {
        let level = levels.next()?;
        Some(match level {
            "+" => Step::Plus,
            "#" if levels.peek().is_none() => Step::Hash,
            literal => Step::Literal(literal),
        })
    })
}

/// The first level of `topic` and the rest after its `/`, if there is one.
#[inline]
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// A topic-filter trie with payload `P` per filter.
pub(crate) struct Trie<P: Slot> {
    root: Node<P>,
    /// Nodes other than the root, for memory accounting and the pruning tests.
    nodes: usize,
}

impl<P: Slot> Default for Trie<P> {
    fn default() -> Self {
        Trie {
            root: Node::default(),
            nodes: 0,
        }
    }
}

impl<P: Slot> Trie<P> {
    /// Number of nodes, the root included (1 for an empty trie).
    pub(crate) fn node_count(&self) -> usize {
        self.nodes + 1
    }

    /// The slot of the filter `path`, if its node exists. O(levels).
    pub(crate) fn get(&self, path: &str) -> Option<&P> {
        let mut cur = &self.root;
        for step in steps(path) {
            cur = match step {
                Step::Literal(level) => cur.children.get(level)?,
                Step::Plus => cur.plus.as_deref()?,
                Step::Hash => return Some(&cur.hash),
            };
        }
        Some(&cur.here)
    }

    /// The slot of the filter `path`, creating its nodes. O(levels).
    ///
    /// The caller must leave the slot non-empty (or call [`Trie::modify`] to empty it), or
    /// the created nodes would stay behind as empty nodes.
    pub(crate) fn get_or_create(&mut self, path: &str) -> &mut P {
        let Trie { root, nodes } = self;
        let mut cur = root;
        for step in steps(path) {
            cur = match step {
                Step::Literal(level) => {
                    // Look up before inserting: the entry API would allocate the key on
                    // every level of every subscribe, even for existing levels.
                    if !cur.children.contains_key(level) {
                        cur.children.insert(Box::from(level), Node::default());
                        *nodes += 1;
                    }
                    match cur.children.get_mut(level) {
                        Some(next) => next,
                        None => unreachable!("the level was inserted above"),
                    }
                }
                Step::Plus => {
                    if cur.plus.is_none() {
                        *nodes += 1;
                    }
                    cur.plus.get_or_insert_with(Box::default)
                }
                Step::Hash => return &mut cur.hash,
            };
        }
        &mut cur.here
    }

    /// Applies `f` to the slot of the filter `path` if its node exists, then prunes the
    /// node and every ancestor that became empty. `None` if the node does not exist
    /// (nothing is created). O(levels), plus O(levels) once more when pruning.
    pub(crate) fn modify<R>(&mut self, path: &str, f: impl FnOnce(&mut P) -> R) -> Option<R> {
        // Depth of the deepest node on the path that must survive if the target node goes
        // away: the root, or a node with a payload or another child. Everything below it
        // on the path is a chain that exists only for the target.
        let mut keep = 0usize;
        let mut depth = 0usize;
        let mut cur = &mut self.root;
        let mut steps = steps(path);
        let (result, target_empty) = loop {
            let needed = cur.needed_without_one_child();
            cur = match steps.next() {
                None => {
                    let result = f(&mut cur.here);
                    break (result, cur.is_empty());
                }
                Some(Step::Hash) => {
                    let result = f(&mut cur.hash);
                    break (result, cur.is_empty());
                }
                Some(Step::Literal(level)) => cur.children.get_mut(level)?,
                Some(Step::Plus) => cur.plus.as_deref_mut()?,
            };
            if needed {
                keep = depth;
            }
            depth += 1;
        };
        if target_empty && depth > 0 {
            self.cut(path, keep);
            self.nodes -= depth - keep;
        }
        Some(result)
    }

    /// Removes the child of the node at depth `keep` on `path` (and so the chain below it).
    fn cut(&mut self, path: &str, keep: usize) {
        let mut cur = &mut self.root;
        let mut steps = steps(path);
        for _ in 0..keep {
            cur = match steps.next() {
                Some(Step::Literal(level)) => match cur.children.get_mut(level) {
                    Some(next) => next,
                    None => return,
                },
                Some(Step::Plus) => match cur.plus.as_deref_mut() {
                    Some(next) => next,
                    None => return,
                },
                Some(Step::Hash) | None => return,
            };
        }
        let removed = match steps.next() {
            Some(Step::Literal(level)) => {
                let removed = cur.children.remove(level);
                // A map keeps its peak capacity; give memory back after a burst of
                // unsubscribes so that churn cannot pin it.
                let len = cur.children.len();
                if cur.children.capacity() > 4 * len.max(8) {
                    cur.children.shrink_to(2 * len);
                }
                removed
            }
            Some(Step::Plus) => cur.plus.take().map(|b| *b),
            Some(Step::Hash) | None => None,
        };
        if let Some(node) = removed {
            dismantle(node);
        }
    }

    /// Calls `f` with every non-empty slot whose filter matches `topic` (MQTT §4.7):
    /// `+` is one level (possibly empty), `#` the parent level and every descendant, a
    /// filter starting with a wildcard does not match a topic starting with `$`
    /// [MQTT-4.7.2-1], and levels compare byte for byte.
    ///
    /// Cost: one hash lookup per topic level per path followed; the number of paths is
    /// bounded by the wildcard nodes the topic meets (a `+` node at every level doubles
    /// it, as it must). Allocation-free unless the search stack exceeds 16 entries.
    #[inline]
    pub(crate) fn for_each_match<'a>(&'a self, topic: &'a str, mut f: impl FnMut(&'a P)) {
        // Pending (node, rest of the topic after this node's level). Depth-first: every
        // pop pushes at most two entries, so the stack holds at most levels + 1 entries.
        let mut stack: SmallVec<[(&'a Node<P>, Option<&'a str>); 16]> = SmallVec::new();
        let root = &self.root;
        let (level, rest) = split_level(topic);
        // [MQTT-4.7.2-1]: the root's wildcards do not see `$` topics.
        if !topic.starts_with('$') {
            if !root.hash.is_empty() {
                f(&root.hash);
            }
            if let Some(plus) = root.plus.as_deref() {
                stack.push((plus, rest));
            }
        }
        if let Some(child) = root.children.get(level) {
            stack.push((child, rest));
        }
        while let Some((node, rest)) = stack.pop() {
            // `#` matches this level's topic ("a/#" matches "a") and everything below.
            if !node.hash.is_empty() {
                f(&node.hash);
            }
            match rest {
                None => {
                    if !node.here.is_empty() {
                        f(&node.here);
                    }
                }
                Some(rest) => {
                    let (level, rest) = split_level(rest);
                    if let Some(plus) = node.plus.as_deref() {
                        stack.push((plus, rest));
                    }
                    if let Some(child) = node.children.get(level) {
                        stack.push((child, rest));
                    }
                }
            }
        }
    }

    /// Calls `f` with every non-empty slot, in no particular order. O(nodes).
    pub(crate) fn for_each_slot<'a>(&'a self, mut f: impl FnMut(&'a P)) {
        let mut stack: Vec<&'a Node<P>> = vec![&self.root];
        while let Some(node) = stack.pop() {
            for slot in [&node.here, &node.hash] {
                if !slot.is_empty() {
                    f(slot);
                }
            }
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
    }
}

impl<P: Slot> Drop for Trie<P> {
    fn drop(&mut self) {
        dismantle(mem::take(&mut self.root));
    }
}

/// Drops a subtree without recursion (the derived drop glue recurses once per level).
///
/// The stack holds one pending child iterator per level of the current path, so it is as
/// deep as the subtree, not as wide.
fn dismantle<P>(mut node: Node<P>) {
    struct Pending<P> {
        children: IntoIter<Box<str>, Node<P>>,
        plus: Option<Box<Node<P>>>,
    }
    let mut stack: Vec<Pending<P>> = Vec::new();
    loop {
        if !node.children.is_empty() || node.plus.is_some() {
            stack.push(Pending {
                children: mem::take(&mut node.children).into_iter(),
                plus: node.plus.take(),
            });
        }
        // `node` has no descendants left: dropping it is shallow.
        drop(node);
        node = loop {
            let Some(top) = stack.last_mut() else {
                return;
            };
            if let Some((_, child)) = top.children.next() {
                break child;
            }
            if let Some(plus) = top.plus.take() {
                break *plus;
            }
            stack.pop();
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Slot for u32 {
        fn is_empty(&self) -> bool {
            *self == 0
        }
    }

    #[test]
    fn steps_classify_levels() {
        let s: Vec<_> = steps("a/+//#").collect();
        assert_eq!(
            s,
            [
                Step::Literal("a"),
                Step::Plus,
                Step::Literal(""),
                Step::Hash
            ]
        );
        // A `#` before the end is not a multi-level wildcard.
        let s: Vec<_> = steps("#/a").collect();
        assert_eq!(s, [Step::Literal("#"), Step::Literal("a")]);
        assert_eq!(steps("#").collect::<Vec<_>>(), [Step::Hash]);
    }

    #[test]
    fn modify_prunes_only_the_private_chain() {
        let mut t: Trie<u32> = Trie::default();
        *t.get_or_create("a/b/c/d") = 1;
        *t.get_or_create("a/b") = 2;
        *t.get_or_create("a/b/x") = 3;
        assert_eq!(t.node_count(), 1 + 5); // a b c d x
        assert_eq!(t.modify("a/b/c/d", mem::take), Some(1));
        assert_eq!(t.node_count(), 1 + 3); // c and d pruned, b keeps x
        assert_eq!(t.modify("a/b", mem::take), Some(2));
        assert_eq!(t.node_count(), 1 + 3); // b still leads to x
        assert_eq!(t.modify("a/b/x", mem::take), Some(3));
        assert_eq!(t.node_count(), 1);
        assert_eq!(t.modify("a/b/x", mem::take), None);
        assert_eq!(t.node_count(), 1);
    }

    #[test]
    fn very_deep_filters_do_not_recurse() {
        // 40000 levels: well past what recursive walks and drop glue survive on a 2 MiB
        // test thread stack.
        let deep = "a/".repeat(40_000) + "+";
        let topic = "a/".repeat(40_000) + "z";
        let mut t: Trie<u32> = Trie::default();
        *t.get_or_create(&deep) = 7;
        *t.get_or_create("a/#") = 1;
        let mut seen = 0;
        t.for_each_match(&topic, |v| seen += *v);
        assert_eq!(seen, 8);
        let mut all = 0;
        t.for_each_slot(|v| all += *v);
        assert_eq!(all, 8);
        assert_eq!(t.modify(&deep, mem::take), Some(7));
        assert_eq!(t.node_count(), 2);
        *t.get_or_create(&deep) = 7;
        drop(t);
    }
}
