//! The topic index: which subscriptions and which shards a PUBLISH goes to.
//!
//! **Owns:** two tries over topic-filter levels and MQTT topic matching on them (§4.7:
//! `+`, `#`, empty levels, the `$` rule [MQTT-4.7.2-1], and shared subscriptions
//! `$share/{group}/{filter}` matching on their filter part, 5.0 §4.8.2):
//! - [`SubscriptionTrie<K, V>`]: a shard's own subscriptions, filter -> set of (key,
//!   value), where a key identifies a subscriber (a session slot) and a value carries the
//!   subscription's options;
//! - [`InterestTrie`]: the replica of "which shards have at least one subscriber for
//!   filter F", as a [`ShardMask`] per filter, so a shard forwards a PUBLISH once per
//!   interested shard.
//!
//! **Must not touch:** I/O, time, runtimes (glommio), sessions or messages. It knows keys
//! and values only: what a key means, which subscriber of a share group gets a message,
//! and how subscription options (no-local, QoS, identifiers) apply is the caller's. It is
//! single-threaded: each shard owns its own instances and nothing here is shared.
//!
//! Both tries are the same code (the private `trie::Trie<P>`) with a different payload per filter,
//! so matching is written once. Their design in short:
//! - one node per filter level; literal children in a hash map (aHash, zero-sized hasher),
//!   `+` and `#` in dedicated slots, so matching hashes only the topic's own levels;
//! - every walk is iterative, so filters of 32768 levels cannot overflow a stack;
//! - removing the last subscription of a filter frees its nodes up to the nearest shared
//!   ancestor, and maps and vectors give back capacity after mass unsubscribes, so memory
//!   tracks the live subscriptions, not their history.
//!
//! Filters given to the index must be valid topic filters (as
//! [`TopicFilter`](crate::protocol::TopicFilter) checks) and topics valid topic names; the
//! index does not re-validate them on the data path. An invalid filter is stored without
//! panicking, but what it matches is unspecified.
//!
//! # Limits
//!
//! - At most 64 shards ([`ShardMask`] is one `u64`).
//! - Matching visits every trie path the topic can follow: a topic meeting `+` nodes at
//!   many levels explores each branch (as any MQTT trie must); cost is per matching path,
//!   not per filter.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod interest;
mod retained;
mod subscriptions;
mod trie;

#[cfg(test)]
mod tests;

pub use interest::{InterestTrie, ShardIter, ShardMask};
pub use retained::{tree_order, Matches, RetainedTrie};
pub use subscriptions::SubscriptionTrie;
pub(crate) use trie::{Slot, Trie};

/// Whether `filter` is a shared subscription `$share/{group}/{filter}` (as
/// [`TopicFilter::shared`](crate::protocol::TopicFilter::shared) says), which the index
/// matches on its filter part.
#[inline]
pub fn is_shared(filter: &str) -> bool {
    split_shared(filter).0.is_some()
}

/// Splits a filter into (share name, filter part) the way
/// [`TopicFilter::shared`](crate::protocol::TopicFilter::shared) does: `$share/g/a/+` is
/// `(Some("g"), "a/+")`, anything else is `(None, filter)`.
#[inline]
fn split_shared(filter: &str) -> (Option<&str>, &str) {
    match filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
    {
        Some((share, part)) => (Some(share), part),
        None => (None, filter),
    }
}
