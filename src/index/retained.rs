//! [`RetainedTrie<T>`]: the retained messages of the topics one shard owns, one node per
//! topic level, matched against a filter in topic-tree order and in bounded, resumable
//! steps.
//!
//! ## Order
//! A walk yields topics in pre-order with children sorted by their level's bytes: a
//! parent level before its children (`a` before `a/b` before `a/b/c` before `a/c`), as
//! mosquitto sends them. It is the order of [`tree_order`] on topic names, so walks of
//! several shards' tries merge into one stream in the same order.
//!
//! ## Resuming
//! [`RetainedTrie::matching`] stops after `max` matches or after visiting `budget`
//! nodes and returns a cursor, the topic of the last node it visited; a later call with
//! that cursor continues strictly after it. A cursor is only a position in the order, so
//! the trie may change between calls: topics added behind the cursor are not seen,
//! topics ahead of it are, and a removed cursor topic is no obstacle.
//!
//! ## Invariants
//! - A node has a value or a child, except the root: removing a value frees the nodes
//!   that only led to it.
//! - Every walk, insert, removal and drop is iterative, so a topic of 32,768 levels cannot
//!   overflow a stack.

use std::cmp::Ordering;
use std::collections::btree_map::{self, BTreeMap};
use std::ops::Bound;

/// Compares topic names in the order a walk yields them (see the module docs).
pub fn tree_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Topic name -> value, in topic-tree order.
#[derive(Debug)]
pub struct RetainedTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
struct Node<T> {
    value: Option<T>,
    children: BTreeMap<Box<str>, Node<T>>,
}

impl<T> Node<T> {
    fn new() -> Node<T> {
        Node {
            value: None,
            children: BTreeMap::new(),
        }
    }
}

impl<T> Drop for Node<T> {
    fn drop(&mut self) {
        // Children are dropped one at a time from a heap stack, each with no children
        // left, so a deep chain does not recurse.
        let mut stack: Vec<Node<T>> = std::mem::take(&mut self.children).into_values().collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(std::mem::take(&mut n.children).into_values());
        }
    }
}

/// What one step of a walk found.
#[derive(Debug, PartialEq, Eq)]
pub struct Matches<T> {
    /// Matching values, in topic-tree order.
    pub values: Vec<T>,
    /// Where to continue (the topic of the last node visited); `None`: the walk is complete.
    pub resume: Option<String>,
}

impl<T> Default for RetainedTrie<T> {
    fn default() -> Self {
        RetainedTrie {
            root: Node::new(),
            len: 0,
        }
    }
}

/// One node on a walk's stack.
struct Frame<'a, T> {
    /// Filter levels this node has consumed (a `#` is never consumed).
    fi: usize,
    /// Depth of the node (its number of topic levels).
    depth: usize,
    /// The node's path is the cursor's first `depth` levels.
    on_cursor: bool,
    children: btree_map::Range<'a, Box<str>, Node<T>>,
}

impl<T: Clone> RetainedTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value stored for `topic`.
    pub fn get(&self, topic: &str) -> Option<&T> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Stores `value` for `topic`, returning the value it replaces.
    pub fn insert(&mut self, topic: &str, value: T) -> Option<T> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::new());
            }
            node = node.children.get_mut(level)?;
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the value of `topic` and the nodes that only led to it.
    pub fn remove(&mut self, topic: &str) -> Option<T> {
        // First pass: the deepest node on the path that stays (the root, or one with a
        // value or another child) and the level below it where the dead branch starts.
        let mut cut: Option<(usize, &str)> = None;
        let mut node = &self.root;
        let levels: Vec<&str> = topic.split('/').collect();
        for (depth, level) in levels.iter().enumerate() {
            let child = node.children.get(*level)?;
            let keep = depth == 0 || node.value.is_some() || node.children.len() > 1;
            if keep {
                cut = Some((depth, level));
            }
            node = child;
        }
        node.value.as_ref()?;
        let leaf = node.children.is_empty();
        // Second pass: take the value; free the dead branch if the node has no children.
        let mut node = &mut self.root;
        let value = match (leaf, cut) {
            (true, Some((cut_depth, cut_level))) => {
                for level in levels.iter().take(cut_depth) {
                    node = node.children.get_mut(*level)?;
                }
                let mut branch = node.children.remove(cut_level)?;
                let mut n = &mut branch;
                for level in levels.iter().skip(cut_depth + 1) {
                    n = n.children.get_mut(*level)?;
                }
                n.value.take()
            }
            _ => {
                for level in &levels {
                    node = node.children.get_mut(*level)?;
                }
                node.value.take()
            }
        };
        if value.is_some() {
            self.len -= 1;
        }
        value
    }

    /// Calls `f` with every stored value (in no particular order): for a compaction.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        let mut stack = vec![&self.root];
        while let Some(n) = stack.pop() {
            if let Some(v) = &n.value {
                f(v);
            }
            stack.extend(n.children.values());
        }
    }

    /// Up to `max` values whose topics match `filter` (a valid topic filter; for a shared
    /// subscription, its filter part), strictly after `after` in topic-tree order,
    /// visiting at most `budget` nodes.
    pub fn matching(
        &self,
        filter: &str,
        after: Option<&str>,
        max: usize,
        budget: usize,
    ) -> Matches<T> {
        let filter: Vec<&str> = super::split_shared(filter).1.split('/').collect();
        let cursor: Vec<&str> = after.map(|c| c.split('/').collect()).unwrap_or_default();
        let has_cursor = after.is_some();
        let mut values = Vec::new();
        let mut visited = 0usize;
        // The levels of the path to the top frame's node.
        let mut path: Vec<&str> = Vec::new();
        let mut stack: Vec<Frame<'_, T>> = Vec::new();
        if let Some(root) = frame(&self.root, 0, 0, has_cursor, &filter, &cursor) {
            stack.push(root);
        }
        while let Some(top) = stack.last_mut() {
            let Some((key, child)) = top.children.next() else {
                stack.pop();
                path.pop();
                continue;
            };
            let (fi, depth, on_cursor) = (top.fi, top.depth, top.on_cursor);
            // The `$` rule [MQTT-4.7.2-1]: a wildcard first level does not match `$...`.
            if depth == 0 && key.starts_with('$') && is_wildcard(filter.first()) {
                // Skipped, but visited: a store of many `$` topics still answers in steps.
                // (The cursor itself, re-entered on resuming, does not count.)
                let is_cursor = on_cursor && cursor.first() == Some(&&**key);
                if !is_cursor {
                    visited += 1;
                    if visited >= budget {
                        return Matches {
                            values,
                            resume: Some(key.to_string()),
                        };
                    }
                }
                continue;
            }
            // The child's position relative to the cursor.
            let (child_on_cursor, before_cursor) = if on_cursor {
                match cursor.get(depth) {
                    Some(c) => match (**key).cmp(*c) {
                        Ordering::Less => (false, true),
                        Ordering::Equal => (true, false),
                        Ordering::Greater => (false, false),
                    },
                    None => (false, false),
                }
            } else {
                (false, false)
            };
            if before_cursor {
                continue;
            }
            let child_fi = if filter.get(fi) == Some(&"#") {
                fi
            } else {
                fi + 1
            };
            path.push(key);
            // A node on the cursor's path is the cursor or one of its parents: walked past
            // already, and re-entered only to get back to the cursor (it neither matches
            // nor counts against the budget, or a resumed walk could end before it moved).
            if !child_on_cursor {
                visited += 1;
                if matches_here(&filter, child_fi) {
                    if let Some(v) = &child.value {
                        values.push(v.clone());
                    }
                }
            }
            if !child_on_cursor && (values.len() >= max || visited >= budget) {
                return Matches {
                    values,
                    resume: Some(path.join("/")),
                };
            }
            match frame(
                child,
                child_fi,
                depth + 1,
                child_on_cursor,
                &filter,
                &cursor,
            ) {
                Some(f) => stack.push(f),
                None => {
                    path.pop();
                }
            }
        }
        Matches {
            values,
            resume: None,
        }
    }
}

/// The frame for `node`, or `None` when none of its children can match.
fn frame<'a, T>(
    node: &'a Node<T>,
    fi: usize,
    depth: usize,
    on_cursor: bool,
    filter: &[&str],
    cursor: &[&str],
) -> Option<Frame<'a, T>> {
    let level = *filter.get(fi)?;
    // Below a node on the cursor's path, children before the cursor's level are
    // skipped without visiting them.
    let lower: Bound<&str> = match (on_cursor, cursor.get(depth)) {
        (true, Some(c)) => Bound::Included(c),
        _ => Bound::Unbounded,
    };
    let children = match level {
        "#" | "+" => node.children.range::<str, _>((lower, Bound::Unbounded)),
        literal => {
            let lower = match lower {
                Bound::Included(c) if c > literal => return None,
                _ => literal,
            };
            node.children
                .range::<str, _>((Bound::Included(lower), Bound::Included(literal)))
        }
    };
    Some(Frame {
        fi,
        depth,
        on_cursor,
        children,
    })
}

fn is_wildcard(level: Option<&&str>) -> bool {
    matches!(level, Some(&"#") | Some(&"+"))
}

/// Whether a node that consumed `fi` filter levels matches: all of them, or the rest is
/// `#` (which also matches its parent level [MQTT-4.7.1-2]).
fn matches_here(filter: &[&str], fi: usize) -> bool {
    fi == filter.len() || filter.get(fi) == Some(&"#")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(topics: &[&str]) -> RetainedTrie<String> {
        let mut t = RetainedTrie::new();
        for topic in topics {
            t.insert(topic, (*topic).to_string());
        }
        t
    }

    fn all(t: &RetainedTrie<String>, filter: &str) -> Vec<String> {
        t.matching(filter, None, usize::MAX, usize::MAX).values
    }

    /// Walks in steps of `max` matches / `budget` nodes, resuming each time.
    fn stepped(t: &RetainedTrie<String>, filter: &str, max: usize, budget: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let m = t.matching(filter, after.as_deref(), max, budget);
            assert!(m.values.len() <= max);
            out.extend(m.values);
            match m.resume {
                Some(r) => after = Some(r),
                None => return out,
            }
        }
        panic!("walk did not end");
    }

    #[test]
    fn topic_tree_order_parent_before_children() {
        let t = trie(&["a/c", "a/b/c", "a", "a-b", "b", "a/b", "a/b-x"]);
        assert_eq!(
            all(&t, "#"),
            ["a", "a/b", "a/b/c", "a/b-x", "a/c", "a-b", "b"]
        );
        let mut sorted = all(&t, "#");
        sorted.sort_by(|a, b| tree_order(a, b));
        assert_eq!(sorted, all(&t, "#"));
    }

    #[test]
    fn wildcards_and_the_dollar_rule() {
        let t = trie(&[
            "sport",
            "sport/tennis",
            "sport/tennis/p1",
            "$SYS/x",
            "/x",
            "a//b",
        ]);
        assert_eq!(
            all(&t, "sport/#"),
            ["sport", "sport/tennis", "sport/tennis/p1"]
        );
        assert_eq!(all(&t, "sport/+"), ["sport/tennis"]);
        assert_eq!(all(&t, "+/+"), ["/x", "sport/tennis"]);
        assert_eq!(
            all(&t, "#"),
            ["/x", "a//b", "sport", "sport/tennis", "sport/tennis/p1"]
        );
        assert_eq!(all(&t, "$SYS/#"), ["$SYS/x"]);
        assert_eq!(all(&t, "+/x"), ["/x"]);
        assert_eq!(all(&t, "a/+/b"), ["a//b"]);
        assert_eq!(all(&t, "sport/tennis/p1"), ["sport/tennis/p1"]);
        assert!(all(&t, "nothing/#").is_empty());
    }

    #[test]
    fn resumed_walks_yield_the_same_sequence() {
        let mut topics = Vec::new();
        for a in 0..7 {
            topics.push(format!("t/{a}"));
            for b in 0..5 {
                topics.push(format!("t/{a}/{b}"));
                topics.push(format!("u/{a}/{b}"));
            }
        }
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let t = trie(&refs);
        for filter in ["#", "t/#", "+/+/3", "t/+", "u/4/#", "t/5/2"] {
            let whole = all(&t, filter);
            for (max, budget) in [
                (1, usize::MAX),
                (3, usize::MAX),
                (usize::MAX, 1),
                (2, 3),
                (5, 7),
            ] {
                assert_eq!(
                    stepped(&t, filter, max, budget),
                    whole,
                    "{filter} {max} {budget}"
                );
            }
        }
    }

    #[test]
    fn a_cursor_survives_changes() {
        let mut t = trie(&["a", "a/b", "a/c", "d"]);
        let m = t.matching("#", None, 2, usize::MAX);
        assert_eq!(m.values, ["a", "a/b"]);
        let after = m.resume.unwrap();
        t.remove("a/b");
        t.insert("a/bb", "a/bb".into());
        t.insert("0", "0".into());
        let m = t.matching("#", Some(&after), usize::MAX, usize::MAX);
        assert_eq!(m.values, ["a/bb", "a/c", "d"]);
    }

    #[test]
    fn remove_frees_dead_branches_and_keeps_live_ones() {
        let mut t = trie(&["a/b/c/d", "a/b", "a/x"]);
        assert_eq!(t.remove("a/b/c/d").as_deref(), Some("a/b/c/d"));
        assert_eq!(t.len(), 2);
        assert!(t.root.children["a"].children["b"].children.is_empty());
        assert_eq!(t.remove("a/b").as_deref(), Some("a/b"));
        assert_eq!(t.remove("a/b"), None);
        assert_eq!(t.remove("a"), None);
        assert_eq!(t.root.children["a"].children.len(), 1);
        assert_eq!(t.remove("a/x").as_deref(), Some("a/x"));
        assert!(t.root.children.is_empty());
        assert!(t.is_empty());
        // A value with children stays a node.
        let mut t = trie(&["p", "p/q"]);
        assert_eq!(t.remove("p").as_deref(), Some("p"));
        assert_eq!(all(&t, "#"), ["p/q"]);
        assert_eq!(t.get("p/q").map(String::as_str), Some("p/q"));
    }

    #[test]
    fn replace_keeps_the_count() {
        let mut t = RetainedTrie::new();
        assert_eq!(t.insert("a", 1), None);
        assert_eq!(t.insert("a", 2), Some(1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("a"), Some(&2));
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let deep = vec!["x"; 40_000].join("/");
        let mut t = RetainedTrie::new();
        t.insert(&deep, 1u8);
        assert_eq!(t.matching("#", None, 10, usize::MAX).values, [1]);
        assert_eq!(t.remove(&deep), Some(1));
        t.insert(&deep, 2u8);
        drop(t);
    }
}
