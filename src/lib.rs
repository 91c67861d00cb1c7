//! # SurgeMQ
//!
//! A thread-per-core MQTT broker and client library. This page is the map; each module's
//! own documentation says what it owns and what it must not touch.
//!
//! ## The one idea
//!
//! Every CPU core runs one [glommio] executor, a *shard*. A shard owns its connections,
//! the sessions that live on it and its part of the topic index. Shards share no mutable
//! state: they exchange plain `Send` messages over bounded single-producer single-consumer
//! channels, one per ordered pair of shards, in batches. There are no locks on the data
//! path, and a core never waits for another core.
//!
//! ## Where things live
//!
//! - A session lives on its *home shard*, `fixed_hash(client_id) % shards` (a hash with
//!   fixed seeds, so every shard computes the same home). Any shard may accept a TCP
//!   connection; once CONNECT has been decoded the connection moves home, carrying the bytes
//!   already read. Takeover of a client id, the offline queue and in-flight state are then
//!   local to one core.
//! - Each shard keeps a trie of its own subscribers' filters and a replica of which shards
//!   have subscribers for each filter. SUBACK goes out only when every shard routes the new
//!   filter, so a PUBLISH accepted after SUBACK reaches the subscriber.
//! - A retained message lives on `fixed_hash(topic) % shards`, in that shard's topic trie.
//!   A new subscription gets the matches of every shard merged into one stream in
//!   topic-tree order (a parent level before its children), fetched in bounded batches and
//!   sent as fast as the subscriber drains, never all at once.
//!
//! ## The data path of a PUBLISH
//!
//! 1. Shard A reads from the socket into the connection's buffer and decodes every
//!    complete frame with [`protocol::decode`]. Topic and payload are `Bytes` slices of that
//!    buffer: nothing is copied.
//! 2. The session state machine on A validates the packet and acknowledges it.
//! 3. A matches the topic once. Local subscribers get the message at once; every other
//!    interested shard gets one item in its outbox (one per shard, not per subscriber).
//!    A share group `$share/{group}/{filter}` is one more choice at this step: A picks one
//!    shard with members, and that shard picks one member.
//! 4. Outboxes are flushed as one batch per destination at the end of the read turn. When a
//!    channel is full the batch waits and A stops reading from its publishers, which is TCP
//!    back-pressure; no other shard waits.
//! 5. Shard B matches its local trie and encodes for each subscriber: the payload is shared,
//!    and only a small header (packet id, QoS, DUP) is written per subscriber with
//!    [`protocol::encode_publish_header`]. QoS 1/2 deliveries take a packet id and an
//!    in-flight slot from the subscriber's session.
//! 6. B writes each connection's buffer with one system call per turn.
//!
//! Order is kept per publisher per subscriber because each channel is FIFO.
//!
//! ## Layers
//!
//! | module | owns | never touches |
//! |---|---|---|
//! | [`protocol`] | packets of 3.1 / 3.1.1 / 5.0, decode, encode, topic rules | I/O, time, state |
//! | [`session`] | one client's QoS flows, window, queue, packet ids | sockets, other sessions |
//! | [`index`] | topic tries: local subscribers, shard interest | sessions, runtime |
//! | [`mesh`] | the grid of channels between shards, batching, overflow | MQTT |
//! | [`persist`] | the on-disk format of a shard's durable state: frames, records, images | files, runtimes |
//! | [`security`] | password and ACL files in mosquitto's formats, per-client rights, TLS settings as rustls configs | files, sockets |
//! | [`observe`] | a shard's report (traffic, gauges, counters), their sum, the `$SYS` tree and its load averages | sockets, shards, routing |
//! | `broker` | shards, connection tasks, routing, retained, wills, keep alive | another shard's state |
//! | [`server`], [`config`] | start-up, shutdown, embedding; documented configuration | connection state |
//! | [`client`] | the client library: sans-I/O [`client::state`] plus an async driver over any transport | the broker (speaks MQTT only) |
//! | [`bench`](mod@bench) | the load runner behind `surgemq-bench` | broker internals (speaks MQTT only) |
//!
//! Only `broker`, the client's driver and the runner touch sockets, timers and task spawning; what crosses
//! between shards is plain data ([`session::Message`], a few control messages, and a
//! connection moving home after CONNECT: its socket and its TLS / WebSocket state). What
//! shards share beyond that is read-mostly and touched outside the message path: the
//! security files in force, one hook stack per listener's pair of files (read at CONNECT;
//! a session keeps its listener's stack for its rights), atomics (persistence pressure,
//! listener connection counts) and one mutex for the per-IP connection count (at accept
//! and close).
//!
//! ## Durability
//!
//! With `persistence.mode` set, each shard keeps one log of what its persistent sessions
//! and its retained topics hold ([`persist`] is the format; `broker::durable` the writing).
//! A shard turn's changes go out as one sealed commit, one `write` and one `fdatasync`
//! through io_uring, while the shard goes on (group commit). In mode `sync` an answer to a
//! client (PUBACK, PUBREC, PUBCOMP, SUBACK, UNSUBACK, CONNACK) waits until what it
//! acknowledges is on disk, on this shard and on every shard the message reached (step 3
//! above asks them to confirm; the ack waits in the acknowledgement gate); a QoS 2 message
//! from a persistent publisher reaches other shards only once its own record is durable, and
//! carries an ingress number that recovery uses to deliver it exactly once after a crash.
//! At start the logs are read in parallel, re-homed onto the shard count of the run and
//! written back as a new epoch (`broker::recovery`). Clean sessions never touch the disk.
//!
//! ## Flow control
//!
//! Every buffer is bounded, and the bound is enforced by slowing producers down before
//! anything is dropped: when a connection's pending output or its session queue passes
//! half its limit, its shard stops reading from publishers and from other shards, whose
//! channels then fill so that they stop reading theirs; TCP carries the pressure back to
//! the publishing clients. A subscriber that does not drain for a second is marked slow and
//! stops holding others back; from then on its own limits apply and what exceeds them is
//! dropped and counted.
//!
//! [glommio]: https://docs.rs/glommio
#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

#[cfg(feature = "bench")]
pub mod bench;
pub(crate) mod broker;
pub mod client;
pub mod config;
pub mod index;
pub mod mesh;
pub(crate) mod notify;
pub mod observe;
pub mod persist;
pub mod protocol;
pub mod security;
pub mod server;
pub mod session;
