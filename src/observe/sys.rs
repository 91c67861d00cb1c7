//! mosquitto's `$SYS/broker/...` tree, from the shards' reports: the same topic names and
//! meanings where mosquitto has them, SurgeMQ's own per shard under
//! `$SYS/broker/shards/<n>/...`. Like mosquitto, a value is published (retained) only when
//! it changed since the last update, the uptime every update, the version once, and the
//! load averages (per minute, over 1, 5 and 15 minutes, as mosquitto computes them) when
//! they moved by 0.01 or more.
//!
//! **Owns:** the topics, their values and what was published last. **Must not touch:**
//! the routing of what it returns (the broker publishes it).

use std::collections::HashMap;

use super::ShardStats;

/// How a counter is read from the sum of the reports.
type Read = fn(&ShardStats) -> u64;

/// The counters load averages are kept for: the `$SYS/broker/load/<name>/<window>` name
/// and how to read it.
const LOADS: [(&str, Read); 9] = [
    ("messages/received", |s| s.traffic.packets_in_total()),
    ("messages/sent", |s| s.traffic.packets_out_total()),
    ("publish/dropped", |s| s.publish_dropped()),
    ("publish/received", |s| s.traffic.packets_in[3]),
    ("publish/sent", |s| s.traffic.packets_out[3]),
    ("bytes/received", |s| s.traffic.bytes_in),
    ("bytes/sent", |s| s.traffic.bytes_out),
    ("sockets", |s| s.counters.connections_accepted),
    ("connections", |s| s.traffic.packets_in[1]),
];

/// The load windows, with their length in seconds.
const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

/// The `$SYS` tree's state between updates.
#[derive(Debug, Default)]
pub struct SysTree {
    /// The value last published per topic (a topic is published again only when its value
    /// changes).
    published: HashMap<String, String>,
    /// Load averages, per [`LOADS`] entry and [`WINDOWS`] entry.
    loads: [[f64; 3]; LOADS.len()],
    /// The time (seconds since start) and the [`LOADS`] counters of the last update.
    last: Option<(f64, [u64; LOADS.len()])>,
    /// The most clients connected at once, as seen by the updates.
    maximum: u64,
}

impl SysTree {
    /// A tree that has published nothing yet.
    pub fn new() -> SysTree {
        SysTree::default()
    }

    /// What to publish for these reports (one per shard), made `now` seconds after the
    /// broker started: every topic whose value changed since the last update (all of
    /// them the first time, and every time with `every`: a broker that keeps no retained
    /// messages, whose later subscribers would otherwise never see a value that does not
    /// change), as (topic, payload) pairs to publish retained.
    pub fn update(
        &mut self,
        now: f64,
        version: &str,
        shards: &[ShardStats],
        every: bool,
    ) -> Vec<(String, String)> {
        let total = ShardStats::sum(shards);
        let mut out = Vec::new();
        let first = self.last.is_none();
        if first || every {
            out.push((
                "$SYS/broker/version".to_owned(),
                format!("surgemq version {version}"),
            ));
        }
        // Whole seconds, as mosquitto.
        out.push((
            "$SYS/broker/uptime".to_owned(),
            format!("{} seconds", now as u64),
        ));
        self.loads(now, &total, first || every, &mut out);
        for (topic, value) in values(&total, shards, &mut self.maximum) {
            if every || self.published.get(&topic) != Some(&value) {
                self.published.insert(topic.clone(), value.clone());
                out.push((topic, value));
            }
        }
        out
    }

    /// Updates the load averages and adds those that moved (all of them the first time,
    /// at 0.00 as mosquitto starts them).
    fn loads(&mut self, now: f64, total: &ShardStats, all: bool, out: &mut Vec<(String, String)>) {
        let counts = LOADS.map(|(_, read)| read(total));
        if let Some((then, before)) = self.last {
            let elapsed = now - then;
            if elapsed <= 0.0 {
                return;
            }
            // mosquitto's sys_tree.c: the last interval's count scaled to a minute, then
            // an exponentially weighted average over the window.
            let per_minute = 60.0 / elapsed;
            for (i, (name, _)) in LOADS.iter().enumerate() {
                let rate = counts[i].saturating_sub(before[i]) as f64 * per_minute;
                for (w, (window, secs)) in WINDOWS.iter().enumerate() {
                    let exponent = (-elapsed / secs).exp();
                    let old = self.loads[i][w];
                    let new = rate + exponent * (old - rate);
                    if all || (new - old).abs() >= 0.01 {
                        out.push((
                            format!("$SYS/broker/load/{name}/{window}"),
                            format!("{new:.2}"),
                        ));
                    }
                    self.loads[i][w] = new;
                }
            }
        } else {
            for (name, _) in LOADS {
                for (window, _) in WINDOWS {
                    out.push((
                        format!("$SYS/broker/load/{name}/{window}"),
                        "0.00".to_owned(),
                    ));
                }
            }
        }
        self.last = Some((now, counts));
    }
}

/// Every value of the tree but the uptime, version and loads, as (topic, value).
fn values(total: &ShardStats, shards: &[ShardStats], maximum: &mut u64) -> Vec<(String, String)> {
    let g = &total.gauges;
    let t = &total.traffic;
    let c = &total.counters;
    *maximum = (*maximum).max(g.sessions_online);
    let mut v: Vec<(String, String)> = Vec::with_capacity(40 + 16 * shards.len());
    let mut put = |topic: String, value: u64| v.push((topic, value.to_string()));
    let b = |name: &str| format!("$SYS/broker/{name}");
    put(b("clients/total"), g.sessions);
    put(b("clients/connected"), g.sessions_online);
    put(b("clients/active"), g.sessions_online);
    put(
        b("clients/disconnected"),
        g.sessions - g.sessions_online.min(g.sessions),
    );
    put(
        b("clients/inactive"),
        g.sessions - g.sessions_online.min(g.sessions),
    );
    put(b("clients/maximum"), *maximum);
    put(b("clients/expired"), c.sessions_expired);
    put(b("messages/stored"), g.inflight + g.queued + g.retained);
    put(
        b("store/messages/count"),
        g.inflight + g.queued + g.retained,
    );
    put(b("store/messages/bytes"), g.held_bytes + g.retained_bytes);
    put(b("subscriptions/count"), g.subscriptions);
    put(b("shared_subscriptions/count"), g.shared_subscriptions);
    put(b("retained messages/count"), g.retained);
    put(b("messages/received"), t.packets_in_total());
    put(b("messages/sent"), t.packets_out_total());
    put(b("bytes/received"), t.bytes_in);
    put(b("bytes/sent"), t.bytes_out);
    put(b("publish/messages/received"), t.packets_in[3]);
    put(b("publish/messages/sent"), t.packets_out[3]);
    put(b("publish/messages/dropped"), total.publish_dropped());
    put(b("publish/bytes/received"), t.publish_payload_in);
    put(b("publish/bytes/sent"), t.publish_payload_out);
    // SurgeMQ's own, per shard.
    for s in shards {
        let n = s.shard;
        let sh = |name: &str| format!("$SYS/broker/shards/{n}/{name}");
        let (g, c, m) = (&s.gauges, &s.counters, &s.mesh);
        put(sh("connections"), g.connections);
        put(sh("sessions"), g.sessions);
        put(sh("sessions/online"), g.sessions_online);
        put(sh("subscriptions"), g.subscriptions);
        put(sh("retained"), g.retained);
        put(sh("messages/inflight"), g.inflight);
        put(sh("messages/queued"), g.queued);
        put(sh("mesh/batches"), m.batches);
        put(sh("mesh/messages"), m.items);
        put(sh("mesh/overflow"), m.overflowed);
        put(sh("congestion/episodes"), m.congestion_episodes);
        put(sh("dropped/queue_full"), c.dropped_queue_full);
        put(sh("dropped/write_buffer"), c.dropped_qos0_write_buffer);
        put(sh("dropped/offline_qos0"), c.dropped_offline_qos0);
        put(sh("dropped/too_large"), c.dropped_too_large);
        put(sh("dropped/expired"), c.dropped_expired);
        put(sh("dropped/read_denied"), c.read_denied);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(n: usize, publishes: u64, online: u64) -> ShardStats {
        let mut s = ShardStats {
            shard: n,
            ..ShardStats::default()
        };
        s.traffic.packets_in[3] = publishes;
        s.gauges.sessions = online + 1;
        s.gauges.sessions_online = online;
        s
    }

    fn get<'a>(out: &'a [(String, String)], topic: &str) -> Option<&'a str> {
        out.iter()
            .find(|(t, _)| t == topic)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn first_update_publishes_everything_then_only_changes() {
        let mut tree = SysTree::new();
        let out = tree.update(0.0, "1.2.3", &[shard(0, 5, 2), shard(1, 7, 1)], false);
        assert_eq!(
            get(&out, "$SYS/broker/version"),
            Some("surgemq version 1.2.3")
        );
        assert_eq!(get(&out, "$SYS/broker/uptime"), Some("0 seconds"));
        assert_eq!(
            get(&out, "$SYS/broker/publish/messages/received"),
            Some("12")
        );
        assert_eq!(get(&out, "$SYS/broker/clients/connected"), Some("3"));
        assert_eq!(get(&out, "$SYS/broker/clients/disconnected"), Some("2"));
        assert_eq!(get(&out, "$SYS/broker/clients/total"), Some("5"));
        assert_eq!(get(&out, "$SYS/broker/shards/1/sessions/online"), Some("1"));
        assert_eq!(
            get(&out, "$SYS/broker/load/publish/received/1min"),
            Some("0.00")
        );
        // Nothing changed but the uptime.
        let out = tree.update(10.0, "1.2.3", &[shard(0, 5, 2), shard(1, 7, 1)], false);
        assert_eq!(
            out,
            [("$SYS/broker/uptime".to_owned(), "10 seconds".to_owned())]
        );
        // One shard saw 6 more publishes in 10 s: 36 a minute.
        let out = tree.update(20.0, "1.2.3", &[shard(0, 5, 0), shard(1, 13, 1)], false);
        assert_eq!(
            get(&out, "$SYS/broker/publish/messages/received"),
            Some("18")
        );
        assert_eq!(get(&out, "$SYS/broker/shards/1/sessions/online"), None);
        assert_eq!(get(&out, "$SYS/broker/shards/0/sessions/online"), Some("0"));
        // The maximum stays at its peak.
        assert_eq!(get(&out, "$SYS/broker/clients/maximum"), None);
        assert_eq!(get(&out, "$SYS/broker/clients/connected"), Some("1"));
        let one_min = 36.0 * (1.0 - (-10.0f64 / 60.0).exp());
        assert_eq!(
            get(&out, "$SYS/broker/load/publish/received/1min"),
            Some(format!("{one_min:.2}").as_str())
        );
        assert_eq!(get(&out, "$SYS/broker/version"), None);
        // Without retained messages, every value goes out every time.
        let out = tree.update(30.0, "1.2.3", &[shard(0, 5, 0), shard(1, 13, 1)], true);
        assert_eq!(
            get(&out, "$SYS/broker/version"),
            Some("surgemq version 1.2.3")
        );
        assert_eq!(get(&out, "$SYS/broker/clients/maximum"), Some("3"));
        assert_eq!(get(&out, "$SYS/broker/load/bytes/sent/15min"), Some("0.00"));
    }
}
