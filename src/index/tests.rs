//! Tests of both tries: spec tables, insert / replace / remove / prune, and property tests
//! against the reference matcher `protocol::matches` (through `TopicFilter::matches`, which
//! applies it to a shared subscription's filter part).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::protocol::{matches, TopicFilter};

/// (filter, topic, matches?) from MQTT 3.1.1 / 5.0 §4.7 and the edge cases around them.
const CASES: &[(&str, &str, bool)] = &[
    // §4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/tennis/player1/#", "sport/tennis/player2", false),
    ("sport/tennis/player1/#", "sport/tennis", false),
    ("sport/#", "sport", true),
    ("sport/#", "sport/", true),
    ("sport/#", "sports", false),
    ("#", "sport", true),
    ("#", "a/b/c", true),
    ("#", "/", true),
    ("#", "/a", true),
    // §4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player2", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/tennis/+", "sport/tennis", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+", "a", true),
    ("+", "/finance", false),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+/tennis/#", "sport/tennis", true),
    ("+/tennis/#", "sport/tennis/x/y", true),
    ("sport/+/player1", "sport/tennis/player1", true),
    ("sport/+/player1", "sport//player1", true),
    ("+/+/+", "a/b", false),
    ("+/#", "a", true),
    ("+/#", "a/b/c", true),
    // §4.7.2 topics beginning with $
    ("#", "$SYS", false),
    ("#", "$SYS/monitor/Clients", false),
    ("+", "$SYS", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("+/#", "$SYS/x", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("$SYS/+", "$SYS/", true),
    ("a/+", "a/$x", true), // the $ rule is about the first level only
    ("a/#", "a/$x/y", true),
    ("$", "$", true),
    // empty levels are levels, literal levels compare exactly
    ("a//b", "a//b", true),
    ("a//b", "a/b", false),
    ("a/+/b", "a//b", true),
    ("/", "/", true),
    ("/", "", false),
    ("//", "/", false),
    ("/#", "/", true),
    ("/#", "", true),
    ("a/b", "a/b/c", false),
    ("a/b/c", "a/b", false),
    ("A", "a", false),
    ("a", "a/", false),
    ("a/", "a/", true),
    // shared subscriptions match on their filter part
    ("$share/g/sport/+", "sport/tennis", true),
    ("$share/g/sport/+", "$share/g/sport/tennis", false),
    ("$share/g/#", "a/b", true),
    ("$share/g/#", "$SYS/x", false),
    ("$share/g/$SYS/#", "$SYS/x", true),
    ("$share/g//a", "/a", true),
];

/// The (filter, key, value) triples `t` reports for `topic`, sorted.
fn matched<V: Copy + Ord>(t: &SubscriptionTrie<u8, V>, topic: &str) -> Vec<(String, u8, V)> {
    let mut out = Vec::new();
    t.for_each_match(topic, |f, k, v| out.push((f.to_string(), k, *v)));
    out.sort();
    out
}

fn reference(filter: &str, topic: &str) -> bool {
    TopicFilter::try_from(filter)
        .unwrap_or_else(|e| panic!("{filter:?} is not a valid filter: {e}"))
        .matches(topic)
}

#[test]
fn spec_table_one_filter_at_a_time() {
    for &(filter, topic, expect) in CASES {
        assert_eq!(
            reference(filter, topic),
            expect,
            "reference: {filter} vs {topic}"
        );
        let mut t = SubscriptionTrie::new();
        t.insert(filter, 1u8, ());
        let got = !matched(&t, topic).is_empty();
        assert_eq!(got, expect, "trie: {filter} vs {topic}");
        let mut i = InterestTrie::new();
        i.add(filter, 5);
        let expect_mask = if expect {
            ShardMask::single(5)
        } else {
            ShardMask::EMPTY
        };
        assert_eq!(
            i.match_mask(topic),
            expect_mask,
            "interest: {filter} vs {topic}"
        );
    }
}

#[test]
fn spec_table_all_filters_together() {
    let filters: BTreeSet<&str> = CASES.iter().map(|c| c.0).collect();
    let mut t = SubscriptionTrie::new();
    let mut interest = InterestTrie::new();
    for (key, filter) in filters.iter().enumerate() {
        t.insert(filter, key as u8, ());
        interest.add(filter, key % 64);
    }
    assert_eq!(t.filter_count(), filters.len());
    for &(_, topic, _) in CASES {
        let expect: Vec<_> = filters
            .iter()
            .enumerate()
            .filter(|(_, f)| reference(f, topic))
            .map(|(k, f)| (f.to_string(), k as u8, ()))
            .collect();
        assert_eq!(matched(&t, topic), expect, "topic {topic:?}");
        let mask: ShardMask = expect
            .iter()
            .map(|(_, k, _)| usize::from(*k) % 64)
            .collect();
        assert_eq!(interest.match_mask(topic), mask, "topic {topic:?}");
    }
}

#[test]
fn split_shared_agrees_with_topic_filter() {
    for filter in [
        "a",
        "$share/g/a/+",
        "$share/g/#",
        "$share/g//",
        "$shared/g/a",
        "$SYS/#",
        "a/$share/g/b",
    ] {
        let tf = TopicFilter::try_from(filter).unwrap();
        let expected = tf.shared().map_or((None, filter), |(g, f)| (Some(g), f));
        assert_eq!(split_shared(filter), expected, "{filter}");
    }
}

#[test]
fn insert_replace_get_remove() {
    let mut t: SubscriptionTrie<u32, &str> = SubscriptionTrie::new();
    assert!(t.is_empty());
    assert_eq!(t.insert("a/+", 1, "qos0"), None);
    assert_eq!(t.insert("a/+", 1, "qos1"), Some("qos0")); // re-subscribe replaces
    assert_eq!(t.insert("a/+", 2, "qos2"), None);
    assert_eq!(t.insert("$share/g/a/+", 1, "shared"), None);
    assert_eq!((t.filter_count(), t.subscription_count()), (2, 3));
    assert_eq!(t.get("a/+", 1), Some(&"qos1"));
    assert_eq!(t.get("$share/g/a/+", 1), Some(&"shared"));
    assert_eq!(t.get("$share/h/a/+", 1), None);
    assert_eq!(t.get("a/#", 1), None);
    assert_eq!(t.get("a/+", 3), None);
    let mut subs: Vec<_> = t.subscribers("a/+").collect();
    subs.sort();
    assert_eq!(subs, [(1, &"qos1"), (2, &"qos2")]);
    assert_eq!(t.subscribers("nope").count(), 0);

    assert_eq!(t.remove("a/+", 3), None);
    assert_eq!(t.remove("b", 1), None);
    assert_eq!(t.remove("a/+", 1), Some("qos1"));
    assert_eq!(t.remove("a/+", 1), None);
    // The plain filter and the shared one live on the same node: removing one keeps
    // the other.
    assert_eq!(t.get("$share/g/a/+", 1), Some(&"shared"));
    assert_eq!(t.remove("a/+", 2), Some("qos2"));
    assert_eq!((t.filter_count(), t.subscription_count()), (1, 1));
    assert_eq!(
        matched_str(&t, "a/x"),
        [("$share/g/a/+".to_string(), 1, "shared")]
    );
    assert_eq!(t.remove("$share/g/a/+", 1), Some("shared"));
    assert!(t.is_empty());
    assert_eq!((t.filter_count(), t.node_count()), (0, 1));
}

fn matched_str<'a>(t: &SubscriptionTrie<u32, &'a str>, topic: &str) -> Vec<(String, u32, &'a str)> {
    let mut out = Vec::new();
    t.for_each_match(topic, |f, k, v| out.push((f.to_string(), k, *v)));
    out.sort();
    out
}

#[test]
fn overlapping_filters_of_one_key_are_all_reported() {
    let mut t = SubscriptionTrie::new();
    for (i, f) in [
        "#",
        "a/#",
        "a/+/c",
        "a/b/c",
        "+/b/#",
        "$share/g/a/b/c",
        "a/b/c/#",
    ]
    .iter()
    .enumerate()
    {
        t.insert(f, 7u8, i as u8);
    }
    t.insert("a/b", 8, 100);
    let got = matched(&t, "a/b/c");
    let expect: Vec<(String, u8, u8)> = [
        ("#", 0),
        ("$share/g/a/b/c", 5),
        ("+/b/#", 4),
        ("a/#", 1),
        ("a/+/c", 2),
        ("a/b/c", 3),
        ("a/b/c/#", 6),
    ]
    .iter()
    .map(|(f, v)| (f.to_string(), 7, *v))
    .collect();
    assert_eq!(got, expect);
    let mut all = Vec::new();
    t.for_each(|f, k, v| all.push((f.to_string(), k, *v)));
    assert_eq!(all.len(), 8);
}

#[test]
fn subscribers_of_one_filter_are_consecutive() {
    let mut t = SubscriptionTrie::new();
    for k in 0..5u8 {
        t.insert("$share/g/a", k, ());
        t.insert("$share/h/a", k, ());
        t.insert("a", k, ());
    }
    let mut order = Vec::new();
    t.for_each_match("a", |f, _, _| order.push(f.to_string()));
    order.dedup();
    assert_eq!(order.len(), 3, "{order:?}");
}

#[test]
fn pruning_frees_every_node() {
    let mut t = SubscriptionTrie::new();
    let filters = [
        "a/b/c/d", "a/b", "a/+/c", "a/#", "#", "+", "/", "a//", "$SYS/#",
    ];
    for f in filters {
        t.insert(f, 1u8, ());
    }
    assert!(t.node_count() > 1);
    for f in filters.iter().rev() {
        assert_eq!(t.remove(f, 1), Some(()));
    }
    assert_eq!(t.node_count(), 1);

    let mut i = InterestTrie::new();
    for (n, f) in filters.iter().enumerate() {
        assert!(i.add(f, n));
        assert!(i.add(f, 63));
        assert!(!i.add(f, n));
    }
    assert_eq!(i.filter_count(), filters.len());
    for (n, f) in filters.iter().enumerate() {
        assert!(i.remove(f, n));
        assert!(!i.remove(f, n));
        assert_eq!(i.mask(f), ShardMask::single(63));
        assert!(i.remove(f, 63));
        assert_eq!(i.mask(f), ShardMask::EMPTY);
    }
    assert!(!i.remove("a", 64)); // out of range: never set, no panic
    assert!(i.is_empty());
    assert_eq!(i.node_count(), 1);
}

#[test]
fn churn_does_not_grow_the_trie() {
    let mut t = SubscriptionTrie::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base: Vec<String> = (0..50).map(|i| format!("stable/{i}/+")).collect();
    for f in &base {
        t.insert(f, 0u32, ());
    }
    let baseline = t.node_count();
    for round in 0..20 {
        let mut live = Vec::new();
        for _ in 0..500 {
            let n = next();
            let f = format!("churn/{}/{}/{}", n % 17, (n >> 8) % 31, round);
            let key = (n >> 20) as u32 % 1000;
            t.insert(&f, key, ());
            live.push((f, key));
        }
        for (f, key) in &live {
            t.remove(f, *key);
        }
        assert_eq!(t.node_count(), baseline, "round {round}");
        assert_eq!(t.subscription_count(), base.len());
    }
}

#[test]
fn many_subscribers_on_one_filter_use_the_key_index() {
    let mut t = SubscriptionTrie::new();
    for k in 0..1000u32 {
        assert_eq!(t.insert("news", k, k), None);
    }
    assert_eq!(t.insert("news", 500, 0), Some(500));
    // Remove in an order that moves entries around (swap_remove) and crosses both
    // thresholds on the way down.
    for k in (0..1000u32).filter(|k| k % 3 == 0) {
        assert_eq!(t.remove("news", k), Some(if k == 500 { 0 } else { k }));
    }
    for k in 0..1000u32 {
        let expect = (k % 3 != 0).then_some(if k == 500 { 0 } else { k });
        assert_eq!(t.get("news", k).copied(), expect, "key {k}");
    }
    for k in (0..1000u32).filter(|k| k % 3 != 0) {
        assert!(t.remove("news", k).is_some(), "key {k}");
        assert_eq!(t.get("news", k), None);
    }
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 1);
}

#[test]
fn shard_mask_basics() {
    let mut m = ShardMask::EMPTY;
    assert!(m.is_empty());
    assert!(m.set(0));
    assert!(m.set(63));
    assert!(!m.set(63));
    assert!(m.contains(63) && m.contains(0) && !m.contains(1) && !m.contains(64));
    assert_eq!(m.iter().collect::<Vec<_>>(), [0, 63]);
    assert_eq!(m.len(), 2);
    assert!(m.clear(0));
    assert!(!m.clear(0));
    assert_eq!(m.bits(), 1 << 63);
    assert_eq!(format!("{m:?}"), "{63}");
    assert_eq!(
        ShardMask::from_iter([1, 2]) | ShardMask::single(5),
        ShardMask::from_bits(0b100110)
    );
}

#[test]
#[should_panic(expected = "out of range")]
fn shard_mask_rejects_shard_64() {
    let mut m = ShardMask::EMPTY;
    m.set(64);
}

#[test]
fn interest_for_each_match_separates_share_groups() {
    let mut i = InterestTrie::new();
    i.add("a/+", 1);
    i.add("$share/g/a/+", 2);
    i.add("$share/g/a/+", 3);
    i.add("$share/g/a/#", 4);
    let mut seen = Vec::new();
    assert!(i.has_shared());
    i.for_each_match("a/b", |share, mask| {
        seen.push((share.map(|(f, _)| f.to_string()), mask.bits()))
    });
    seen.sort();
    assert_eq!(
        seen,
        [
            (None, 0b10),
            (Some("$share/g/a/#".to_string()), 0b10000),
            (Some("$share/g/a/+".to_string()), 0b1100),
        ]
    );
    // Unsubscribing the plain filter on a shard leaves its shared one alone.
    i.add("a/+", 2);
    assert!(i.remove("a/+", 2));
    assert_eq!(i.match_mask("a/b"), ShardMask::from_bits(0b11110));
    assert_eq!(i.filter_count(), 3);
    // Each share group keeps its own cursor, across walks, until it is gone.
    let bump = |i: &InterestTrie| {
        i.for_each_match("a/b", |share, _| {
            if let Some((f, c)) = share.filter(|(f, _)| *f == "$share/g/a/+") {
                assert_eq!(f, "$share/g/a/+");
                c.set(c.get() + 1);
            }
        })
    };
    bump(&i);
    bump(&i);
    let mut cursor = 0;
    i.for_each_match("a/b", |share, _| {
        if let Some((f, c)) = share {
            if f == "$share/g/a/+" {
                cursor = c.get();
            }
        }
    });
    assert_eq!(cursor, 2);
    assert!(i.remove("$share/g/a/+", 2));
    assert!(i.remove("$share/g/a/+", 3));
    assert!(i.remove("$share/g/a/#", 4));
    assert!(!i.has_shared());
}

// ---------------------------------------------------------------------------------------
// Property tests against the reference matcher.

fn level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("$"), Just("$a"), Just("")]
}

/// Filters over a small alphabet: 0..4 levels of {a, b, $, $a, "", +}, maybe `#`, maybe a
/// share prefix. Small, so random filters overlap and collide often.
fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![3 => level(), 1 => Just("+")], 0..4),
        any::<bool>(),
        prop_oneof![4 => Just(""), 1 => Just("$share/g/"), 1 => Just("$share/h/")],
    )
        .prop_map(|(mut levels, hash, prefix)| {
            if hash || levels.is_empty() {
                levels.push("#");
            }
            let body = levels.join("/");
            // A single empty level is the empty filter, which is invalid.
            let body = if body.is_empty() {
                "#".to_string()
            } else {
                body
            };
            format!("{prefix}{body}")
        })
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

#[derive(Clone, Debug)]
enum Op {
    Insert(usize, u8, u8),
    Remove(usize, u8),
}

fn ops(pool: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0..pool, 0..5u8, any::<u8>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
            2 => (0..pool, 0..5u8).prop_map(|(f, k)| Op::Remove(f, k)),
        ],
        0..80,
    )
}

fn scenario() -> impl Strategy<Value = (Vec<String>, Vec<Op>, Vec<String>)> {
    prop::collection::vec(filter(), 1..12).prop_flat_map(|pool| {
        let n = pool.len();
        (Just(pool), ops(n), prop::collection::vec(topic(), 1..10))
    })
}

type Model = BTreeMap<(String, u8), u8>;

/// Checks both tries against the model on every topic.
fn check(
    t: &SubscriptionTrie<u8, u8>,
    interest: &InterestTrie,
    model: &Model,
    pool: &[String],
    topics: &[String],
) -> Result<(), TestCaseError> {
    for topic in topics {
        let expect: Vec<(String, u8, u8)> = model
            .iter()
            .filter(|((f, _), _)| reference(f, topic))
            .map(|((f, k), v)| (f.clone(), *k, *v))
            .collect();
        prop_assert_eq!(&matched(t, topic), &expect, "topic {:?}", topic);
        let mask: ShardMask = expect.iter().map(|(_, k, _)| usize::from(*k)).collect();
        prop_assert_eq!(interest.match_mask(topic), mask, "topic {:?}", topic);
    }
    for f in pool {
        let shards: ShardMask = (0..5u8)
            .filter(|k| model.contains_key(&(f.clone(), *k)))
            .map(usize::from)
            .collect();
        prop_assert_eq!(interest.mask(f), shards);
        for k in 0..5u8 {
            prop_assert_eq!(t.get(f, k), model.get(&(f.clone(), k)));
        }
    }
    let filters: BTreeSet<&String> = model.keys().map(|(f, _)| f).collect();
    prop_assert_eq!(t.filter_count(), filters.len());
    prop_assert_eq!(t.subscription_count(), model.len());
    prop_assert_eq!(interest.filter_count(), filters.len());
    // No empty node survives: the trie is exactly as big as one built from scratch.
    let mut fresh = SubscriptionTrie::new();
    for ((f, k), v) in model {
        fresh.insert(f, *k, *v);
    }
    prop_assert_eq!(t.node_count(), fresh.node_count());
    prop_assert_eq!(interest.node_count(), fresh.node_count());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tries_agree_with_reference_matcher((pool, ops, topics) in scenario()) {
        for f in &pool {
            prop_assert!(TopicFilter::try_from(f.as_str()).is_ok(), "generated {:?}", f);
        }
        let mut t = SubscriptionTrie::new();
        let mut interest = InterestTrie::new();
        let mut model = Model::new();
        for op in &ops {
            match *op {
                Op::Insert(f, k, v) => {
                    let filter = &pool[f];
                    let prev = model.insert((filter.clone(), k), v);
                    prop_assert_eq!(t.insert(filter, k, v), prev);
                    prop_assert_eq!(interest.add(filter, usize::from(k)), prev.is_none());
                }
                Op::Remove(f, k) => {
                    let filter = &pool[f];
                    let prev = model.remove(&(filter.clone(), k));
                    prop_assert_eq!(t.remove(filter, k), prev);
                    prop_assert_eq!(interest.remove(filter, usize::from(k)), prev.is_some());
                }
            }
            check(&t, &interest, &model, &pool, &topics)?;
        }
        // Removing everything returns both to a bare root.
        for (f, k) in model.keys() {
            prop_assert!(t.remove(f, *k).is_some());
            prop_assert!(interest.remove(f, usize::from(*k)));
        }
        prop_assert!(t.is_empty() && interest.is_empty());
        prop_assert_eq!(t.node_count(), 1);
        prop_assert_eq!(interest.node_count(), 1);
    }

    #[test]
    fn plain_matcher_agrees(filters in prop::collection::btree_set(filter(), 1..20), topic in topic()) {
        // Also the raw reference function on plain filters, independent of TopicFilter.
        let mut t = SubscriptionTrie::new();
        for f in &filters {
            t.insert(f, 0u8, 0u8);
        }
        let got: BTreeSet<String> = matched(&t, &topic).into_iter().map(|m| m.0).collect();
        let expect: BTreeSet<String> = filters
            .iter()
            .filter(|f| {
                let part = split_shared(f).1;
                matches(part, &topic)
            })
            .cloned()
            .collect();
        prop_assert_eq!(got, expect);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The retained trie yields exactly the topics the reference matcher accepts, in
    /// `tree_order`, whole or resumed in any step size, after any inserts and removals.
    #[test]
    fn retained_trie_agrees_with_reference_matcher(
        inserted in prop::collection::vec(topic(), 0..30),
        removed in prop::collection::vec(topic(), 0..10),
        filters in prop::collection::vec(filter(), 1..6),
        max in 1usize..5,
        budget in 1usize..8,
    ) {
        let mut t = RetainedTrie::new();
        let mut model = BTreeSet::new();
        for topic in &inserted {
            prop_assert_eq!(t.insert(topic, topic.clone()).is_some(), !model.insert(topic.clone()));
        }
        for topic in &removed {
            prop_assert_eq!(t.remove(topic).is_some(), model.remove(topic));
        }
        prop_assert_eq!(t.len(), model.len());
        for f in &filters {
            let part = split_shared(f).1;
            let mut expect: Vec<String> = model.iter().filter(|topic| matches(part, topic)).cloned().collect();
            expect.sort_by(|a, b| tree_order(a, b));
            let whole = t.matching(f, None, usize::MAX, usize::MAX);
            prop_assert_eq!(&whole.values, &expect);
            prop_assert_eq!(whole.resume, None);
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..1000 {
                let m = t.matching(f, after.as_deref(), max, budget);
                prop_assert!(m.values.len() <= max);
                got.extend(m.values);
                match m.resume {
                    Some(r) => after = Some(r),
                    None => break,
                }
            }
            prop_assert_eq!(got, expect);
        }
        for topic in &model {
            prop_assert!(t.remove(topic).is_some());
        }
        prop_assert!(t.is_empty());
    }
}
