//! The broker runtime: shards, connections, routing. The only layer that touches sockets,
//! timers and task spawning.
//!
//! **Owns:** per shard, the connections, the sessions whose home it is, its part of the
//! topic index (local subscribers, and the replica of which shards are interested in which
//! filters), its share of the retained messages, and the tasks that move bytes between
//! sockets and state machines.
//!
//! **Must not touch:** another shard's state. Shards exchange [`ShardMsg`] values (plain
//! data) over the [`crate::mesh`] grid and nothing else.
//!
//! Files, one concern each:
//!
//! | file | owns |
//! |---|---|
//! | [`shard`] | a shard's state and counters; dispatch of mesh messages |
//! | [`runtime`] | a shard's main loop: accept, mesh receivers, sweeps, shutdown |
//! | [`conn_log`] | connection lifecycle log lines (connected, disconnected) |
//! | [`connection`] | what the shard knows of one connection (output, close, congestion) |
//! | [`connect`] | the CONNECT phase: checks, authentication hook, moving home |
//! | [`auth`] | 5.0 enhanced authentication: AUTH at CONNECT and re-authentication |
//! | [`negotiated`] | a connection's terms, decided once at CONNECT; the CONNACK |
//! | [`serve`] | the connection task after CONNECT: socket reads and writes |
//! | [`process`] | decoding and handling a connection's packets, holds |
//! | [`lifecycle`] | attach, takeover, close, keep alive, session expiry |
//! | [`will`] | when a will is published: now, or after its 5.0 Will Delay Interval |
//! | [`routing`] | where a PUBLISH goes; delivery to local sessions |
//! | [`shared`] | shared subscriptions: one member per message, across shards |
//! | [`gate`] | acknowledgements in order, waiting for tokens |
//! | [`flow`] | congestion, hold-back of publishers, slow consumers |
//! | [`subscribe`] | SUBSCRIBE / UNSUBSCRIBE and the interest protocol |
//! | [`retained`] | the retained store of the topics this shard owns |
//! | [`retained_stream`] | retained messages for new subscriptions: merged from every shard, paced |
//! | [`store`] | the sessions of a shard, behind the seam a persistent store replaces |
//! | [`journal`] | a shard's log file: sealed commits appended with direct I/O |
//! | [`durable`] | what a shard logs, group commit, acks waiting for the disk |
//! | [`recovery`] | reading logs back at start, re-homing, restoring, compaction |
//! | [`hooks`] | authentication and authorization extension points, one stack per listener's files |
//! | [`stats`] | a shard's traffic counters and report; gathering them for `$SYS` and `/metrics` (shard 0) |
//! | [`metrics_http`] | the `[metrics]` HTTP endpoint on shard 0: `/metrics`, `/health` |
//! | [`transport`] | the transport seam: what a connection needs from its byte stream |
//! | [`net`] | listeners, socket options, moving a socket to another shard |
//! | `harness` | (tests) shards on one thread with a hand-driven mesh, no sockets |

pub(crate) mod admission;
pub(crate) mod auth;
pub(crate) mod conn_log;
pub(crate) mod connect;
pub(crate) mod connection;
#[cfg(test)]
mod core_tests;
pub(crate) mod durable;
pub(crate) mod flow;
pub(crate) mod gate;
#[cfg(test)]
pub(crate) mod harness;
pub mod hooks;
pub(crate) mod journal;
pub(crate) mod lifecycle;
pub(crate) mod metrics_http;
pub(crate) mod negotiated;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod recovery;
pub(crate) mod retained;
pub(crate) mod retained_stream;
pub(crate) mod routing;
pub(crate) mod runtime;
pub(crate) mod serve;
pub(crate) mod shard;
pub(crate) mod shared;
#[cfg(test)]
mod shared_tests;
pub(crate) mod stats;
pub(crate) mod store;
pub(crate) mod subscribe;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod will;
pub(crate) mod ws;

use bytes::BytesMut;

use crate::protocol::{Connect, TopicFilter};
use crate::session::Message;

/// Runs one step of a shard's long-lived loop (a mesh batch item, a keep-alive sweep). A
/// panic in it (a bug) is caught and logged, and the loop goes on with the next item,
/// instead of unwinding through the executor and stopping the whole shard.
pub(crate) fn guarded(what: &'static str, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let why = panic_message(&*panic);
        tracing::error!(panic = %why, step = what, "shard step panicked; skipped");
    }
}

/// The text a panic was raised with, if it was a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The session home of a client id: `fixed_hash(client_id) % shards`. Every shard and every
/// process of the same build computes the same value (fixed hash seeds), so a client's
/// connections always end up on one shard, where its session lives.
pub fn home_shard(client_id: &str, shards: usize) -> usize {
    const SEEDS: (u64, u64, u64, u64) = (
        0x5375_7267_654d_5131,
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
    );
    let state = ahash::RandomState::with_seeds(SEEDS.0, SEEDS.1, SEEDS.2, SEEDS.3);
    (state.hash_one(client_id) % shards.max(1) as u64) as usize
}

/// Messages between shards. All plain `Send` data.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    /// Deliver to this shard's subscribers of the topic.
    Publish(Message),
    /// Deliver, then answer `RetainStored` to shard `ack.0` with token `ack.1` once what
    /// the deliveries changed is durable (persistence mode `sync`: the publisher's ack
    /// waits for it).
    /// `ingress`: see [`durable`] (0: none).
    PublishAcked {
        msg: Message,
        ack: (usize, u64),
        ingress: u64,
    },
    /// Deliver to one member of each of these share groups here (and maybe to the plain
    /// subscribers too): see [`shared`].
    SharedPublish(Box<shared::SharedPublish>),
    /// Store (or, with an empty payload, clear) a retained message: this shard owns the
    /// topic. With `ack`, answer `RetainStored` to that shard once stored.
    Retain {
        msg: Message,
        ack: Option<(usize, u64)>,
        ingress: u64,
    },
    /// The retained message sent with this token is stored, or the deliveries sent with
    /// it are durable: the publisher's PUBACK / PUBREC may go out once every answer it
    /// waits for came.
    RetainStored { token: u64 },
    /// A connection whose session lives here, with its CONNECT already decoded.
    Adopt(Box<Adopt>),
    /// Shard `from` has subscribers for these filters now. Answer with `InterestAck`,
    /// carrying the first batch of this shard's retained matches of each of `fetch`.
    InterestAdd {
        from: usize,
        token: u64,
        filters: Vec<TopicFilter>,
        fetch: Vec<TopicFilter>,
    },
    /// Reply to `InterestAdd` from shard `from`: the filters are routed here from now on.
    InterestAck {
        from: usize,
        token: u64,
        first: retained_stream::FirstBatch,
    },
    /// Shard `from` asks for this shard's next retained matches of `filter` after `after`
    /// (in topic-tree order) for a stream of its session `session` (see
    /// [`retained_stream`]). Answer with `RetainedBatch`.
    RetainedFetch(retained_stream::Fetch),
    /// Reply to `RetainedFetch` from shard `from`: up to a batch of matches, and where to
    /// continue (`None`: no more).
    RetainedBatch(retained_stream::Batch),
    /// Shard `from` has no subscriber for this filter any more.
    InterestRemove { from: usize, filter: TopicFilter },
    /// A connection accepted by shard 0 in round-robin mode, handed to this shard.
    Accepted(AcceptedConn),
    /// Shard `from` gathers the shards' reports (round `round`): answer `StatsReport`.
    StatsRequest { from: usize, round: u64 },
    /// A shard's report for gathering round `round` (see [`stats`]).
    StatsReport {
        round: u64,
        stats: Box<crate::observe::ShardStats>,
    },
}

impl ShardMsg {
    /// The message's name, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ShardMsg::Publish(_) => "Publish",
            ShardMsg::PublishAcked { .. } => "PublishAcked",
            ShardMsg::SharedPublish(_) => "SharedPublish",
            ShardMsg::Retain { .. } => "Retain",
            ShardMsg::RetainStored { .. } => "RetainStored",
            ShardMsg::Adopt(_) => "Adopt",
            ShardMsg::InterestAdd { .. } => "InterestAdd",
            ShardMsg::InterestAck { .. } => "InterestAck",
            ShardMsg::InterestRemove { .. } => "InterestRemove",
            ShardMsg::RetainedFetch(_) => "RetainedFetch",
            ShardMsg::RetainedBatch(_) => "RetainedBatch",
            ShardMsg::Accepted(_) => "Accepted",
            ShardMsg::StatsRequest { .. } => "StatsRequest",
            ShardMsg::StatsReport { .. } => "StatsReport",
        }
    }
}

/// An accepted socket not yet bound to an executor.
pub(crate) struct AcceptedConn(
    pub glommio::net::AcceptedTcpStream,
    pub std::sync::Arc<transport::Listening>,
);

impl std::fmt::Debug for AcceptedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptedConn")
    }
}

/// A connection moving to its home shard.
#[derive(Debug)]
pub(crate) struct Adopt {
    pub transport: transport::Moving,
    pub connect: Box<Connect>,
    /// Bytes read after the CONNECT (the client may pipeline).
    pub rest: BytesMut,
    /// Its places under the listener's caps, held until it closes.
    pub admitted: admission::Admitted,
    /// The hook stack of the listener that admitted it.
    pub domain: u16,
    /// That listener's place in the configuration.
    pub listener: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_spread() {
        assert_eq!(home_shard("a", 1), 0);
        assert_eq!(home_shard("client-7", 4), home_shard("client-7", 4));
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[home_shard(&format!("c{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
