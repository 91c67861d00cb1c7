//! Topic index micro-benchmark: match, insert and remove costs of `SubscriptionTrie` and
//! `InterestTrie` with 1k, 10k, 100k and 1M filters of IoT shapes.
//!
//! `cargo bench --bench topic_index` prints a table and one JSON line per case:
//! `{"case":"match_100k","ns_per_op":..,"filters":..,...}`. Cases:
//! - `insert_N`: ns per `SubscriptionTrie::insert` while building an index of N filters;
//! - `match_N`: ns per `for_each_match` on a mix of topics (hits on one device, alarms
//!   that also hit the fleet-wide filters, and misses); `matches_per_op` says how many
//!   subscriptions one call reported on average;
//! - `mask_N`: ns per `InterestTrie::match_mask` (8 shards) on the same topics;
//! - `remove_N`: ns per `SubscriptionTrie::remove` while emptying the index;
//! - `fanout_10k`: one topic matching one filter with 10k subscribers: ns per call and
//!   per reported subscription.
//!
//! Memory is the growth of the resident set while the index is built (`rss_bytes` and
//! `bytes_per_filter`, Linux only): an estimate, as the allocator may reuse memory freed
//! by earlier cases; it is meaningful for the large cases.
//!
//! Filters: per site 1000 devices; 90% `site/{s}/device/{d}/+`, 7%
//! `site/{s}/device/{d}/cmd/#`, 2% `site/{s}/+/{d}/status`, 1% `site/{s}/device/{d}/#`
//! (each filter text distinct, each with its own key), plus a few
//! fleet-wide wildcards (`+/+/device/+/alarm`, `$SYS/#`, a shared subscription).
//! Set `TOPIC_INDEX_BENCH_QUICK=1` for a short smoke run (no 1M case, fewer rounds).

use std::hint::black_box;
use std::time::Instant;

use surgemq::index::{InterestTrie, ShardMask, SubscriptionTrie};

const DEVICES_PER_SITE: usize = 1000;
const TOPICS: usize = 4096;
const SHARDS: usize = 8;

fn quick() -> bool {
    std::env::var_os("TOPIC_INDEX_BENCH_QUICK").is_some()
}

/// xorshift64: deterministic, so every run measures the same topics.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The i-th filter of the IoT population.
fn filter(i: usize) -> String {
    let (site, dev) = (i / DEVICES_PER_SITE, i % DEVICES_PER_SITE);
    match i % 100 {
        0..=89 => format!("site/{site}/device/{dev}/+"),
        90..=96 => format!("site/{site}/device/{dev}/cmd/#"),
        97..=98 => format!("site/{site}/+/{dev}/status"),
        _ => format!("site/{site}/device/{dev}/#"),
    }
}

/// Filters every deployment has a few of, whatever its size.
const FLEET_FILTERS: &[&str] = &[
    "+/+/device/+/alarm",
    "site/+/device/+/alarm",
    "$SYS/#",
    "$share/ops/site/+/device/+/alarm",
];

fn filters(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n.saturating_sub(FLEET_FILTERS.len()))
        .map(filter)
        .collect();
    v.extend(FLEET_FILTERS.iter().map(|f| f.to_string()));
    v
}

/// Topics published by the devices of an index of `n` filters.
fn topics(n: usize, rng: &mut Rng) -> Vec<String> {
    (0..TOPICS)
        .map(|_| {
            let i = rng.below(n);
            let (site, dev) = (i / DEVICES_PER_SITE, i % DEVICES_PER_SITE);
            match rng.below(10) {
                0..=4 => format!("site/{site}/device/{dev}/temperature"),
                5..=6 => format!("site/{site}/device/{dev}/status"),
                7 => format!("site/{site}/device/{dev}/cmd/reboot"),
                8 => format!("site/{site}/device/{dev}/alarm"),
                _ => format!("site/{}/device/{dev}/temperature", site + 1_000_000),
            }
        })
        .collect()
}

/// Resident set size in bytes (0 where /proc is unavailable).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median ns per call of `f` over the topics, in `rounds` rounds of one pass each.
fn per_topic(rounds: usize, topics: &[String], mut f: impl FnMut(&str)) -> f64 {
    for t in topics {
        f(t); // warm up
    }
    let samples = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for t in topics {
                f(t);
            }
            start.elapsed().as_nanos() as f64 / topics.len() as f64
        })
        .collect();
    median(samples)
}

struct Row {
    case: String,
    filters: usize,
    ns_per_op: f64,
    extra: Vec<(&'static str, f64)>,
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn run_size(n: usize, rows: &mut Vec<Row>) {
    let rounds = match (quick(), n) {
        (true, _) => 3,
        (false, n) if n >= 1_000_000 => 15,
        (false, _) => 51,
    };
    let name = label(n);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64);
    let filters = filters(n);
    let topics = topics(n, &mut rng);

    // Build: time and memory.
    let rss_before = rss();
    let mut subs: SubscriptionTrie<u32, u8> = SubscriptionTrie::new();
    let start = Instant::now();
    for (i, f) in filters.iter().enumerate() {
        subs.insert(f, i as u32, (i % 3) as u8);
    }
    let insert_ns = start.elapsed().as_nanos() as f64 / n as f64;
    let rss_bytes = rss().saturating_sub(rss_before);
    assert_eq!(subs.filter_count(), n);
    rows.push(Row {
        case: format!("insert_{name}"),
        filters: n,
        ns_per_op: insert_ns,
        extra: vec![
            ("rss_bytes", rss_bytes as f64),
            ("bytes_per_filter", rss_bytes as f64 / n as f64),
            ("nodes", subs.node_count() as f64),
        ],
    });

    let mut reported = 0usize;
    let match_ns = per_topic(rounds, &topics, |t| {
        subs.for_each_match(black_box(t), |_, k, v| {
            reported += 1;
            black_box((k, v));
        })
    });
    let calls = topics.len() * (rounds + 1);
    rows.push(Row {
        case: format!("match_{name}"),
        filters: n,
        ns_per_op: match_ns,
        extra: vec![("matches_per_op", reported as f64 / calls as f64)],
    });

    let mut interest = InterestTrie::new();
    for (i, f) in filters.iter().enumerate() {
        interest.add(f, i % SHARDS);
    }
    let mut union = ShardMask::EMPTY;
    let mask_ns = per_topic(rounds, &topics, |t| {
        union |= black_box(interest.match_mask(black_box(t)));
    });
    black_box(union);
    rows.push(Row {
        case: format!("mask_{name}"),
        filters: n,
        ns_per_op: mask_ns,
        extra: vec![],
    });
    drop(interest);

    let start = Instant::now();
    for (i, f) in filters.iter().enumerate() {
        black_box(subs.remove(f, i as u32));
    }
    let remove_ns = start.elapsed().as_nanos() as f64 / n as f64;
    assert!(subs.is_empty());
    assert_eq!(subs.node_count(), 1, "every node pruned");
    rows.push(Row {
        case: format!("remove_{name}"),
        filters: n,
        ns_per_op: remove_ns,
        extra: vec![],
    });
}

fn run_fanout(rows: &mut Vec<Row>) {
    const SUBSCRIBERS: u32 = 10_000;
    let mut subs: SubscriptionTrie<u32, u8> = SubscriptionTrie::new();
    for k in 0..SUBSCRIBERS {
        subs.insert("news/+", k, 1);
    }
    let topics = vec!["news/today".to_string(); 64];
    let rounds = if quick() { 3 } else { 51 };
    let ns = per_topic(rounds, &topics, |t| {
        subs.for_each_match(black_box(t), |_, k, v| {
            black_box((k, v));
        })
    });
    rows.push(Row {
        case: "fanout_10k".to_string(),
        filters: 1,
        ns_per_op: ns,
        extra: vec![("ns_per_subscriber", ns / f64::from(SUBSCRIBERS))],
    });
}

fn main() {
    let sizes: &[usize] = if quick() {
        &[1_000, 10_000, 100_000]
    } else {
        &[1_000, 10_000, 100_000, 1_000_000]
    };
    let mut rows = Vec::new();
    let start = Instant::now();
    for &n in sizes {
        run_size(n, &mut rows);
    }
    run_fanout(&mut rows);

    println!("{:<14} {:>9} {:>12}  extra", "case", "filters", "ns/op");
    for r in &rows {
        let extra: Vec<String> = r.extra.iter().map(|(k, v)| format!("{k}={v:.1}")).collect();
        println!(
            "{:<14} {:>9} {:>12.1}  {}",
            r.case,
            r.filters,
            r.ns_per_op,
            extra.join(" ")
        );
    }
    for r in &rows {
        let mut json = format!(
            "{{\"case\":\"{}\",\"ns_per_op\":{:.1},\"filters\":{}",
            r.case, r.ns_per_op, r.filters
        );
        for (k, v) in &r.extra {
            json.push_str(&format!(",\"{k}\":{v:.2}"));
        }
        json.push('}');
        println!("{json}");
    }
    eprintln!("topic_index bench: {:.1} s", start.elapsed().as_secs_f64());
}
