//! Broker configuration: one [`Config`] struct, read from TOML, overridden by flags,
//! validated before any shard starts.
//!
//! ## What this module owns
//!
//! - [`Config`] and its sections [`Limits`] and [`Mesh`]: every setting of the broker, each
//!   with a doc comment that states its meaning, unit, default and what happens when the
//!   limit is reached. The doc comment is the documentation: [`Config::print_documented`]
//!   prints the effective configuration as TOML with each field's doc text above it, and
//!   the same text is what rustdoc shows.
//! - Parsing ([`Config::from_toml_str`], [`Config::load`]): unknown keys are an error that
//!   names the key; a missing key takes its default.
//! - Validation ([`Config::validate`]): every bound, with a [`ConfigError`] naming the field
//!   (`limits.max_inflight`, not "invalid value").
//! - The command line (`Cli`, `from_args`, with the `cli` feature): defaults < `--config`
//!   file < flags.
//!
//! ## What it must not touch
//!
//! No glommio, no sockets, no threads, no timers, no global state, and no installing of a
//! tracing subscriber (the binary does that with [`Config::log_level`], which is only
//! checked here). The layers that enforce a limit read it from here; this module enforces
//! nothing at run time.
//!
//! ## Keeping the docs in one place
//!
//! Each section struct is declared through the `config_section!` macro, which takes the
//! fields together with their doc comments and defaults and generates the struct, its
//! `Default` and a `FIELD_DOCS` table from the same tokens. A field without a doc comment
//! does not compile, and the tests check that every serialized key has a doc that states
//! its actual default.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

#[cfg(feature = "cli")]
use clap::Parser;
use serde::{Deserialize, Serialize};

/// Most shards a broker can run: a filter's set of interested shards is a 64-bit mask.
pub const MAX_SHARDS: usize = 64;

/// Smallest accepted `limits.max_packet_size`, in bytes.
pub const MIN_PACKET_SIZE: u32 = 64;

/// Largest MQTT packet the protocol can express, in bytes: a remaining length of
/// 268_435_455 plus one fixed-header byte and four length bytes.
pub const MAX_PACKET_SIZE: u32 = 268_435_460;

/// The doc lines of every key of one section, in declaration order: `(key, lines)`, each
/// line as rustdoc stores it (usually with one leading space).
pub type FieldDocs = &'static [(&'static str, &'static [&'static str])];

/// Declares one configuration struct from fields written as
/// `/// doc lines` `name: Type = default_expr,` and generates, from those same tokens, the
/// struct (serde, unknown keys rejected, missing keys defaulted), its `Default`, and its
/// `FIELD_DOCS` table. The doc comment is mandatory: without one a field does not match.
macro_rules! config_section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// Every key of this section in declaration order, with the lines of its doc
            /// comment (the text [`Config::print_documented`] writes above the key).
            pub const FIELD_DOCS: FieldDocs = &[
                $((stringify!($field), &[$($doc),+]),)*
            ];
        }
    };
}

/// How accepted TCP connections are spread over the shards before each moves to its
/// session's home shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptMode {
    /// Every shard binds every listener with `SO_REUSEPORT`; the kernel hashes new
    /// connections between the shards.
    #[default]
    ReusePort,
    /// Shard 0 alone binds and accepts, and hands connections to the shards in turn
    /// (0, 1, 2, ...), so placement is predictable. Used by tests.
    RoundRobin,
}

config_section! {
    /// The broker's whole configuration. Every key is optional in the TOML file; a missing
    /// key takes the default stated in its doc, an unknown key is an error.
    ///
    /// Build one with [`Config::default`], [`Config::from_toml_str`], [`Config::load`] or
    /// `Cli::into_config`, then call [`Config::validate`] before starting any shard
    /// (`Cli::into_config` does).
    pub struct Config {
        /// Addresses to accept MQTT connections on (plain TCP), each "IP:PORT"; IPv6 as
        /// `"[::]:1883"`. Must not be empty or list an address twice. Port 0 picks a free
        /// port once, at start-up; with reuse_port every shard then binds that same port.
        /// Default: `["0.0.0.0:1883"]`.
        listeners: Vec<SocketAddr> = vec![SocketAddr::from(([0, 0, 0, 0], 1883))],

        /// More listeners, each with its own transport and settings: `[[listener]]` tables
        /// (see the keys below). When the file has `[[listener]]` tables and no
        /// `listeners` key, only the tables are bound (the default `listeners` is not).
        /// Every address must be distinct over `listeners` and `[[listener]]`.
        /// Default: `[]`.
        listener: Vec<Listener> = Vec::new(),

        /// Number of shards: executor threads, one per core, each owning its connections,
        /// sessions and part of the topic index. 0 means one per entry of cpus when that is
        /// set, else one per available core (at most 64). At most 64, because a filter's
        /// set of interested shards is a 64-bit mask. Default: `0`.
        shards: usize = 0,

        /// CPU ids to run the shards on, one shard per entry in order, e.g. `[0, 2, 4, 6]`.
        /// No duplicates, at most 64 entries, and exactly `shards` entries when shards is
        /// not 0. Unset: see pin_shards.
        /// Default: unset.
        cpus: Option<Vec<usize>> = None,

        /// With cpus unset: pin shard i to the i-th CPU this process may run on (so
        /// `taskset -c 2,3 surgemq` puts shard 0 on CPU 2 and shard 1 on CPU 3), when there
        /// are at least as many such CPUs as shards; otherwise, or when false, shards are not
        /// pinned and the OS places (and moves) them. Default: `true`.
        pin_shards: bool = true,

        /// How new TCP connections are spread over shards before each moves to its
        /// session's home shard. "reuse_port": every shard binds every listener with
        /// SO_REUSEPORT and the kernel hashes connections between them (uneven with few
        /// connections). "round_robin": shard 0 alone accepts and hands connections to the
        /// shards in turn, which makes placement predictable (used by tests).
        /// Default: `"reuse_port"`.
        accept_mode: AcceptMode = AcceptMode::ReusePort,

        /// Whether a client may connect without a user name. When false, a CONNECT without
        /// a user name is refused with CONNACK "not authorized" (0x05 in 3.1 / 3.1.1, 0x87
        /// in 5.0) and the connection is closed. There is no password check: any user name
        /// is accepted either way. Default: `true`.
        allow_anonymous: bool = true,

        /// A password file in mosquitto's format (`username:hash` lines, `$6$` or `$7$`, as
        /// `mosquitto_passwd` or `surgemq passwd` write them). Set: a CONNECT with a user name
        /// must give that user's password, or it is refused with CONNACK 0x86 (3.x: 0x04);
        /// one without a user name is anonymous (see allow_anonymous). Read at start (a line
        /// that does not parse stops it with its number) and again on SIGHUP. A
        /// `[[listener]]` may have its own instead. Default: unset.
        password_file: Option<PathBuf> = None,

        /// An ACL file in mosquitto's syntax (`user NAME`, `topic [read|write|readwrite|deny]
        /// FILTER`, `pattern ...` with `%c` / `%u`). Set: a client may publish, subscribe
        /// and receive only what its rules grant. A denied PUBLISH is not routed (5.0: PUBACK
        /// / PUBREC 0x87; 3.x: acknowledged as usual), a denied filter gets SUBACK 0x87
        /// (3.x: 0x80), a denied delivery (retained included) is not made; all counted and
        /// logged at most once a second. Read at start (a bad line stops it with its
        /// number) and again on SIGHUP. A `[[listener]]` may have its own instead.
        /// Default: unset (everything allowed).
        acl_file: Option<PathBuf> = None,

        /// Seconds between updates of the `$SYS/broker/...` topics (mosquitto's
        /// sys_interval and names: clients, messages, bytes, publish counts, store,
        /// subscriptions, retained, load averages; SurgeMQ's own per shard under
        /// `$SYS/broker/shards/N/...`). Shard 0 gathers every shard's counters over the mesh
        /// and publishes the values that changed, retained, at QoS 0 (with retain_available
        /// false, every value every time); clients may read them (subject to the ACL) but
        /// never publish to `$SYS`. 0: no `$SYS` topics. Default: `10`.
        sys_interval: u32 = 10,

        /// Whether retained messages are supported. When false, 5.0 clients are told so in
        /// CONNACK (Retain Available = 0) and a 5.0 PUBLISH with RETAIN set is answered with
        /// DISCONNECT 0x9A (Retain not supported); from 3.1 / 3.1.1 clients the RETAIN flag
        /// is ignored: the message is delivered as a normal one and not stored.
        /// Default: `true`.
        retain_available: bool = true,

        /// 5.0 Response Information: what CONNACK tells a client that asks for it (Request
        /// Response Information 1), as the basis of its response topics (5.0 §4.10). `%c`
        /// is replaced by the client identifier, e.g. `"response/%c"`. Empty: none is sent
        /// (the specification lets the server send none; EMQX's default too). At most 256
        /// bytes, no wildcard characters. Default: `""`.
        response_information: String = String::new(),

        /// Log filter: a level name ("off", "error", "warn", "info", "debug", "trace") or
        /// tracing EnvFilter directives such as "warn,surgemq=debug". A bare word that is
        /// not a level name is rejected (a target needs a level: "surgemq=debug").
        /// Default: `"info"`.
        log_level: String = "info".to_owned(),

        /// How log lines are written: "text" (one human-readable line per event) or
        /// "json" (one JSON object per line: `timestamp`, `level`, `message` and the
        /// event's fields as top-level keys, for log collectors). At `info`, clients connecting (address, client id, protocol
        /// version, clean start, keep alive, user name) and disconnecting (why) are
        /// logged, as mosquitto does. Default: `"text"`.
        log_format: LogFormat = LogFormat::Text,

        /// Limits on connections, packets, sessions, subscriptions and retained messages.
        /// Each key states what happens when its limit is reached.
        limits: Limits = Limits::default(),

        /// Channels between shards. Tuning only: the defaults suit most loads.
        mesh: Mesh = Mesh::default(),

        /// Durable sessions and retained messages: whether and how the broker keeps them
        /// on disk so that they survive a restart, a crash and a power loss.
        persistence: Persistence = Persistence::default(),

        /// The Prometheus endpoint: off unless `listen` is set.
        metrics: Metrics = Metrics::default(),
    }
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What a `[[listener]]` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// MQTT over TCP, or over TLS when `certfile` is set.
    #[default]
    Mqtt,
    /// MQTT over WebSockets (MQTT §6), or over secure WebSockets when `certfile` is set.
    Websockets,
}

/// The lowest TLS version a listener accepts (`tls_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "tlsv1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "tlsv1.3")]
    Tls13,
}

config_section! {
    /// One `[[listener]]` table: an address with its own transport and settings, with
    /// mosquitto's names for them. Keys it leaves unset are the top level's.
    pub struct Listener {
        /// "IP:PORT" to accept on (IPv6 as `"[::]:8883"`); port 0 picks a free one at start.
        /// Required: Default: unset, which is refused.
        address: Option<SocketAddr> = None,

        /// "mqtt": MQTT over TCP, or over TLS when certfile is set. "websockets": MQTT
        /// over WebSockets (binary frames, subprotocol `mqtt`), or over WSS when certfile
        /// is set. Default: `"mqtt"`.
        protocol: ListenerProtocol = ListenerProtocol::Mqtt,

        /// WebSockets: the HTTP path of the upgrade request, e.g. "/mqtt"; empty: any path
        /// (as mosquitto). A request for another path gets 400 Bad Request. Default: `""`.
        http_path: String = String::new(),

        /// WebSockets: the longest frame payload accepted; 0: `limits.max_packet_size`
        /// plus 5 (one whole packet per frame). A longer frame closes the connection with
        /// close code 1009 (counted in `websocket_errors`). Default: `0`.
        websockets_max_frame_size: u64 = 0,

        /// PEM file with the server's certificate chain (leaf first). Set, with keyfile:
        /// the listener speaks TLS (rustls; no kernel TLS needed). Read at start and again
        /// on SIGHUP (new connections get the new certificate). Default: unset (plain TCP).
        certfile: Option<PathBuf> = None,

        /// PEM file with the private key of certfile (PKCS#8, PKCS#1 or SEC1).
        /// Default: unset.
        keyfile: Option<PathBuf> = None,

        /// PEM file with the certificate authorities that client certificates must chain
        /// to: a client that presents one is checked against it; with require_certificate
        /// every client must present one. Read at start and again on SIGHUP (new
        /// connections are checked against the new file). Default: unset.
        cafile: Option<PathBuf> = None,

        /// Whether a client must present a certificate that chains to cafile (mutual
        /// TLS); without one the handshake fails. Needs cafile. Default: `false`.
        require_certificate: bool = false,

        /// The lowest TLS version accepted: "tlsv1.2" or "tlsv1.3". Default: `"tlsv1.2"`.
        tls_version: TlsVersion = TlsVersion::Tls12,

        /// Use the client certificate's subject Common Name as the user name, whatever the
        /// CONNECT says: the certificate is the authentication, so neither the password
        /// file nor an embedder's authenticate hook is asked for these clients (as
        /// mosquitto skips the password check); the ACL file and the authorization hooks
        /// apply to that user. Needs require_certificate. Default: `false`.
        use_identity_as_username: bool = false,

        /// Whether a client of this listener may connect without a user name; unset: the
        /// top-level allow_anonymous. Default: unset.
        allow_anonymous: Option<bool> = None,

        /// This listener's password file (mosquitto's format, as the top-level
        /// password_file); unset: the top-level one, if any. Read at start and again on
        /// SIGHUP. Default: unset.
        password_file: Option<PathBuf> = None,

        /// This listener's ACL file (mosquitto's syntax, as the top-level acl_file); unset:
        /// the top-level one, if any. A session keeps the rights of the listener its client
        /// last connected through, offline included; after a restart, when listeners'
        /// ACL files differ, from when its client reconnects (see the README). Read at
        /// start and again on SIGHUP. Default: unset.
        acl_file: Option<PathBuf> = None,

        /// Most connections open at once on this listener, over all shards; 0: no limit
        /// but `limits.max_connections`. A connection beyond it is closed at once (counted
        /// in `connections_refused_limit`). Default: `0`.
        max_connections: usize = 0,

        /// New connections this listener accepts per second (see
        /// `limits.max_connection_rate`); unset: that one. Default: unset.
        max_connection_rate: Option<u32> = None,
    }
}

impl Listener {
    /// Whether clients of this listener speak TLS.
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    fn validate(&self, i: usize, seen: &mut HashSet<SocketAddr>) -> Result<(), ConfigError> {
        let bad = |field, reason: String| {
            Err(ConfigError::invalid(
                field,
                format!("[[listener]] #{}: {reason}", i + 1),
            ))
        };
        let Some(addr) = self.address else {
            return bad("listener.address", "is required".into());
        };
        if addr.port() != 0 && !seen.insert(addr) {
            return bad("listener.address", format!("{addr} is listed twice"));
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            return bad(
                "listener.keyfile",
                "certfile and keyfile go together".into(),
            );
        }
        if !self.is_tls()
            && (self.cafile.is_some() || self.require_certificate || self.use_identity_as_username)
        {
            return bad(
                "listener.certfile",
                "cafile, require_certificate and use_identity_as_username need TLS (certfile and keyfile)".into(),
            );
        }
        if self.require_certificate && self.cafile.is_none() {
            return bad("listener.cafile", "require_certificate needs cafile".into());
        }
        if self.use_identity_as_username && !self.require_certificate {
            return bad(
                "listener.use_identity_as_username",
                "needs require_certificate (no certificate, no identity)".into(),
            );
        }
        Ok(())
    }
}

/// When the broker makes what it acknowledges durable (`persistence.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistMode {
    /// Nothing is written to disk: a restart loses every session and retained message.
    #[default]
    Off,
    /// A PUBACK, PUBREC, PUBCOMP, SUBACK or UNSUBACK (and any PUBLISH or PUBREL sent to a
    /// persistent session) leaves only once the change it reflects is on disk
    /// (`fdatasync`); one write and one sync per shard for everything acknowledged
    /// meanwhile (group commit). Nothing acknowledged is lost by a crash or power loss.
    Sync,
    /// The same log, synced every `sync_interval` ms; acknowledgements do not wait. A
    /// crash or power loss loses at most the last `sync_interval` ms of changes.
    Periodic,
}

config_section! {
    /// The `[persistence]` section: persistent sessions (subscriptions, queued and
    /// in-flight QoS 1/2 messages, incoming QoS 2 ids) and retained messages on disk,
    /// in one log per shard. Clean sessions never touch the disk.
    pub struct Persistence {
        /// "off": keep nothing on disk (as mosquitto's default `persistence false`; the
        /// broker runs without a writable directory). "sync": acknowledge only what is on
        /// disk (fdatasync, group commit per shard); nothing acknowledged is ever lost.
        /// "periodic": the same log synced every sync_interval ms, acknowledgements do
        /// not wait; a crash loses at most that much. Default: `"off"`.
        mode: PersistMode = PersistMode::Off,

        /// Directory for the logs (mosquitto: persistence_location): a `CURRENT` file
        /// and one subdirectory per shard, created if missing. A restart with another
        /// shard count moves every session to its new home shard. Must be set (non-empty)
        /// when mode is not "off". Default: `""`.
        dir: PathBuf = PathBuf::new(),

        /// With mode "periodic": milliseconds between syncs of each shard's log
        /// (mosquitto's autosave_interval is in seconds and rewrites the whole state;
        /// here only the changes are written). 1 ..= 3600000. Default: `1000`.
        sync_interval: u64 = 1000,

        /// Bytes of log a shard may write before it compacts (rewrites its live state as
        /// a snapshot and drops the rest): a log is compacted when it is larger than this
        /// and than twice its last snapshot. At least 1 MiB. Default: `268435456`.
        compact_bytes: u64 = 256 << 20,

        /// Most bytes of log over all shards (each shard gets an equal share, at least 1
        /// MiB); 0: no limit
        /// beyond what the session limits allow. A shard whose log is over its share after
        /// compaction refuses what would grow it: QoS 1/2 PUBLISHes (5.0: PUBACK / PUBREC
        /// 0x97 Quota exceeded; 3.x: not acknowledged, so the client keeps the message and
        /// sends it again later) and SUBSCRIBEs of persistent sessions (0x97; 3.x 0x80),
        /// each counted (`persist_refused`) and logged; deliveries already accepted by
        /// other shards are still kept. Nothing acknowledged is dropped. The same happens
        /// while a commit fails (disk full, I/O error). Default: `0`.
        max_disk_bytes: u64 = 0,
    }
}

config_section! {
    /// The `[limits]` section: every bound on what clients can make the broker hold, and
    /// what happens when it is reached.
    pub struct Limits {
        /// Most client connections open at once, over all listeners. Shards share nothing,
        /// so each enforces its share (this divided by the number of shards, rounded up),
        /// both for connections it accepts and for those that move to it after CONNECT. A
        /// TCP connection beyond it is counted and refused: when it sends its CONNECT
        /// within a second it gets CONNACK "server busy" (5.0: 0x89; 3.x: 0x03 Server
        /// unavailable), while at most 64 such answers per shard are under way; otherwise
        /// it is closed at once. At least 1. Default: `100000`.
        max_connections: usize = 100_000,

        /// Most connections open at once from one IP address, over every listener and
        /// shard (counted from accept to close); 0: no limit. A connection beyond it is
        /// closed at once, before any byte is read (counted in `connections_refused_ip`,
        /// logged at most once a second per shard). Default: `0`.
        max_connections_per_ip: usize = 0,

        /// New connections each listener accepts per second; 0: no limit. Beyond it the
        /// listener pauses: new connections wait in the kernel's accept queue (and, when
        /// that is full, in the client's SYN retries) rather than being refused, so a
        /// reconnect storm is spread out instead of taking the shards' CPU from
        /// connected clients. With reuse_port each shard accepts its share (this divided
        /// by the number of shards, rounded up, so the total may exceed it by up to one
        /// per shard; and the kernel's uneven spread can leave it below), with
        /// round_robin shard 0 all of it. Connections later refused (per-IP cap, CONNECT
        /// checks) count against it too. A `[[listener]]` may set its own. Default: `0`.
        max_connection_rate: u32 = 0,

        /// Most sessions kept at once, online and offline (a persistent session outlives
        /// its connection, so client-id churn with clean session 0 would otherwise grow
        /// without end). Each shard enforces its share (this divided by the number of
        /// shards, rounded up) for the sessions whose home it is. A CONNECT that would
        /// create a session beyond it is refused (3.x: CONNACK 0x03 Server unavailable;
        /// 5.0: 0x97 Quota exceeded) and counted; existing sessions are never evicted to
        /// make room, and a client resuming its own session is always admitted.
        /// At least 1. Default: `1000000`.
        max_sessions: usize = 1_000_000,

        /// Seconds a new connection has to deliver its complete CONNECT packet after
        /// accept. A connection that has not is closed without CONNACK and counted.
        /// At least 1. Default: `10`.
        connect_timeout: u64 = 10,

        /// Largest packet accepted from a client, in bytes, fixed header included; sent to
        /// 5.0 clients in CONNACK as Maximum Packet Size. A larger packet closes the
        /// connection (5.0: after DISCONNECT 0x95 Packet too large); a read buffer never
        /// grows beyond it. 64 ..= 268435460 (the largest packet MQTT can express).
        /// Default: `1048576` (1 MiB).
        max_packet_size: u32 = 1 << 20,

        /// Topic aliases a 5.0 client may use when it publishes (Topic Alias Maximum in
        /// CONNACK), per connection; each holds a copy of its topic name for the life of
        /// the connection. 0 disables them. An alias of 0 or above this closes the
        /// connection with DISCONNECT 0x94 (Topic Alias invalid), an alias never set with
        /// 0x82 (Protocol Error). The table grows to the highest alias a client uses (8
        /// bytes a slot): keep this small. mosquitto's `max_topic_alias`. Default: `10`.
        max_topic_alias: u16 = 10,

        /// Topic aliases the broker uses towards a 5.0 client that allows them (its Topic
        /// Alias Maximum caps this further), per connection: each delivered topic takes
        /// the next free alias, and once all are taken the least recently used is given to
        /// the new topic; a topic the client knows by alias is sent without its name.
        /// Each alias holds a copy of its topic for the life of the connection, and giving
        /// one away scans the table: keep this small. 0: the broker sends no aliases.
        /// Default: `10`.
        max_topic_alias_out: u16 = 10,

        /// Lowest keep alive a client may use, in seconds; 0 = no lower bound. A 5.0
        /// client asking for less (or for 0, no keep alive) is told to use this value in
        /// CONNACK (Server Keep Alive); a 3.1 / 3.1.1 client cannot be told and keeps its
        /// own value. Default: `0`.
        keepalive_min: u16 = 0,

        /// Highest keep alive a client may use, in seconds; 0 = no upper bound. A 5.0
        /// client asking for more is told to use this value in CONNACK (Server Keep Alive);
        /// a 3.1 / 3.1.1 client cannot be told and is accepted with its own value. A client
        /// silent for 1.5 times its keep alive is disconnected (the protocol's rule, not a
        /// setting). Must be >= keepalive_min when both are not 0. Default: `0`.
        keepalive_max: u16 = 0,

        /// Longest time, in seconds, a disconnected persistent session is kept (a 3.1 /
        /// 3.1.1 session with clean session 0, or a 5.0 session with a Session Expiry
        /// Interval); then it is removed with its subscriptions and queued messages. A 5.0
        /// client asking for longer, or for "never", is given this value in CONNACK. 0 ends
        /// every session at disconnect; 4294967295 or more is the same as unset. Unset:
        /// 3.x persistent sessions never expire and 5.0 intervals are kept as asked (each
        /// kept session holds up to max_queued_bytes). Default: unset.
        session_expiry_max: Option<u64> = None,

        /// Most QoS 1 and 2 messages sent to one client and not yet acknowledged (the
        /// outgoing in-flight window); a 5.0 client's Receive Maximum lowers it for that
        /// client. When the window is full, further messages wait in the session queue
        /// (max_queued_messages, max_queued_bytes). The window divided by the round trip
        /// time caps one subscriber's QoS 1/2 rate (128 messages per 0.2 ms is 640k/s).
        /// 1 ..= 65535. Default: `128`.
        max_inflight: u16 = 128,

        /// Most QoS 1 and 2 messages queued for one session beyond its in-flight window,
        /// while the client is connected or while its persistent session is offline. A new
        /// message arriving when the queue holds this many is dropped for that session
        /// (queued ones are kept), counted and logged. QoS 0 messages are never queued:
        /// they go to the write buffer (max_write_buffer) or, for an offline session, are
        /// dropped. At least 1. Default: `1000`.
        max_queued_messages: usize = 1000,

        /// Most bytes (topic, payload and properties, plus a fixed overhead per message for
        /// the queue entry: `surgemq::session::QUEUE_ENTRY_OVERHEAD`, about 100 bytes)
        /// queued for one session, counted like max_queued_messages: a new QoS 1 or 2 message arriving when the queue already
        /// holds this many bytes or more is dropped for that session, counted and logged.
        /// At least 1.
        /// Default: `16777216` (16 MiB).
        max_queued_bytes: usize = 16 << 20,

        /// Bytes of encoded packets waiting to be written to one connection. A QoS 0
        /// message for a connection whose buffer already holds this many bytes or more is
        /// dropped for that client and counted; QoS 1 and 2 messages are never dropped for
        /// this, they wait in the session queue. The buffer is allocated when there is data
        /// and released when it drains. At least 64. Default: `1048576` (1 MiB).
        max_write_buffer: usize = 1 << 20,

        /// First read buffer of a connection, in bytes; it grows as needed up to
        /// max_packet_size for a large packet and is released when the connection goes
        /// quiet. 64 ..= 16777216. Default: `4096` (4 KiB).
        read_buffer_size: usize = 4096,

        /// Most retained messages stored, over all topics. Topics are spread over shards
        /// by hash, and each shard stores at most its share (this divided by the number of
        /// shards, rounded up). A retained PUBLISH to a new topic beyond it is delivered but
        /// not stored, counted and logged; replacing or clearing an existing retained
        /// message always works. At least 1 (to turn retained messages off, set
        /// retain_available = false). Default: `100000`.
        retained_max_messages: usize = 100_000,

        /// Largest retained payload stored, in bytes. A retained PUBLISH with a larger
        /// payload is delivered but not stored, and the topic's earlier retained message is
        /// cleared so that no stale one is served; counted and logged. Worst-case retained
        /// memory is about retained_max_messages times this. Default: `262144` (256 KiB).
        retained_max_payload: usize = 256 << 10,

        /// Most subscriptions one session may hold. A SUBSCRIBE filter that would add one
        /// more is refused in SUBACK (0x80 in 3.1 / 3.1.1, 0x97 Quota exceeded in 5.0);
        /// replacing an existing subscription always works. At least 1. Default: `1000`.
        max_subscriptions_per_client: usize = 1000,

        /// Most filters handled from one SUBSCRIBE packet. Filters after the first this
        /// many are refused in SUBACK (0x80 in 3.1 / 3.1.1, 0x97 Quota exceeded in 5.0)
        /// and not subscribed; the connection stays open. At least 1. Default: `100`.
        max_filters_per_subscribe: usize = 100,

        /// Most levels (parts between "/") in a topic name or topic filter. A PUBLISH to a
        /// deeper topic closes the connection (5.0: after DISCONNECT 0x90 Topic Name
        /// invalid); a deeper filter is refused in SUBACK (0x80 in 3.1 / 3.1.1, 0x8F Topic
        /// Filter invalid in 5.0). 1 ..= 256. Default: `32`.
        max_topic_levels: usize = 32,
    }
}

impl Limits {
    /// `session_expiry_max` in seconds as a session expiry interval (unset, or 4294967295
    /// and more: never expires).
    pub fn session_expiry_cap(&self) -> u32 {
        self.session_expiry_max
            .map_or(u32::MAX, |m| u32::try_from(m).unwrap_or(u32::MAX))
    }
}

config_section! {
    /// The `[mesh]` section: the bounded channels between shards, one per ordered pair.
    pub struct Mesh {
        /// Batches that can wait in the channel from one shard to another (one channel per
        /// ordered pair of shards). When a channel is full, batches wait in the sender's
        /// overflow queue and the sender stops reading from its publishers until it
        /// drains (TCP back-pressure); nothing is dropped. 1 ..= 65536. Default: `256`.
        channel_capacity: usize = 256,

        /// Most messages in one batch between shards. A batch is sent when it is full or
        /// at the end of the sender's read turn, whichever comes first. 1 ..= 65536.
        /// Default: `64`.
        batch_size: usize = 64,
    }
}

config_section! {
    /// The `[metrics]` section: an HTTP endpoint for Prometheus, served by shard 0.
    pub struct Metrics {
        /// "IP:PORT" of the HTTP listener serving `GET /metrics` (every counter and gauge
        /// of every shard, in the OpenMetrics text format, with a `shard` label) and
        /// `GET /health` (200 when every shard answers, 503 otherwise). Unset: no
        /// endpoint. Off by default, as mosquitto has none and a fixed port would collide
        /// when several brokers run on one host; when set, prefer a loopback address
        /// ("127.0.0.1:9883"): the numbers tell who connects how often. A scrape costs each
        /// shard one walk of its sessions. Default: unset.
        listen: Option<SocketAddr> = None,
    }
}

/// Why a configuration could not be read or is not valid. Every variant names the file or
/// the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has a value of the wrong type, or has an unknown key. The
    /// message names the key and shows the line.
    #[error("invalid config {origin}: {source}")]
    Parse {
        /// Where the TOML came from: the file path, or `<string>`.
        origin: String,
        /// The TOML / serde error; its message names the key.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of its bounds or inconsistent with another.
    #[error("invalid config value `{field}`: {reason}")]
    Invalid {
        /// The key, with its section: `shards`, `limits.max_inflight`, `mesh.batch_size`.
        field: &'static str,
        /// What is wrong, with the value found.
        reason: String,
    },
}

impl ConfigError {
    /// The field an [`ConfigError::Invalid`] names; `None` for read and parse errors.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Fails with `field` unless `lo <= value <= hi`.
fn check_range<T>(field: &'static str, value: T, lo: T, hi: T) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if value < lo || value > hi {
        return Err(ConfigError::invalid(
            field,
            format!("must be between {lo} and {hi} (got {value})"),
        ));
    }
    Ok(())
}

/// Fails with `field` unless `value >= 1`.
fn check_positive<T>(field: &'static str, value: T) -> Result<(), ConfigError>
where
    T: PartialEq + Default + std::fmt::Display,
{
    if value == T::default() {
        return Err(ConfigError::invalid(field, "must be at least 1 (got 0)"));
    }
    Ok(())
}

/// Checks a `log_level` string: tracing EnvFilter syntax, and no bare word that is not a
/// level name (EnvFilter would read `debg` as "everything from target debg").
fn check_log_level(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty (use \"off\" to log nothing)".to_owned());
    }
    for directive in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(format!(
                "`{directive}` is not a level name (off, error, warn, info, debug, trace); \
                 a target needs a level, e.g. `{directive}=debug`"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(drop)
        .map_err(|e| format!("`{value}` is not a valid filter: {e}"))
}

/// The doc table of the section stored under `key` in [`Config`], if `key` is a section.
fn section_docs(key: &str) -> Option<FieldDocs> {
    match key {
        "limits" => Some(Limits::FIELD_DOCS),
        "mesh" => Some(Mesh::FIELD_DOCS),
        "persistence" => Some(Persistence::FIELD_DOCS),
        "metrics" => Some(Metrics::FIELD_DOCS),
        _ => None,
    }
}

/// Whether `value` is a non-empty array of tables (written as `[[key]]` blocks).
fn is_table_array(value: Option<&toml::Value>) -> bool {
    matches!(value, Some(toml::Value::Array(a))
        if !a.is_empty() && a.iter().all(|v| matches!(v, toml::Value::Table(_))))
}

/// Writes the non-table keys of `table` in `docs` order, each below its doc lines. A key
/// absent from `table` (an unset `Option`) is written as a comment.
fn write_fields(out: &mut String, table: &toml::Table, docs: FieldDocs) {
    for (key, lines) in docs {
        let value = table.get(*key);
        if matches!(value, Some(toml::Value::Table(_))) || is_table_array(value) {
            continue;
        }
        out.push('\n');
        for line in *lines {
            let _ = writeln!(out, "#{}", line.trim_end());
        }
        match value {
            Some(value) => {
                let _ = writeln!(out, "{key} = {value}");
            }
            None => {
                let _ = writeln!(out, "# {key} = (unset)");
            }
        }
    }
}

impl Config {
    /// How many listeners accept connections: `listeners`, then the `[[listener]]` tables
    /// (each has an address once validated). A listener's index in the statistics is its
    /// place in this order.
    pub fn listener_count(&self) -> usize {
        self.listeners.len() + self.listener.iter().filter(|l| l.address.is_some()).count()
    }

    /// Parses a TOML document. A missing key takes its default; an unknown key, in any
    /// section, is an error that names it. Does not [`validate`](Config::validate): flags
    /// may still override values.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<string>".to_owned())
    }

    /// Reads and parses a TOML file, as [`Config::from_toml_str`]. Does not validate.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path.display().to_string())
    }

    fn parse(text: &str, origin: String) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { origin, source })?;
        // `[[listener]]` tables without a `listeners` key: only the tables are bound (the
        // default plain listener on 1883 would be a surprise next to a TLS one).
        if !config.listener.is_empty() {
            let explicit = text
                .parse::<toml::Table>()
                .is_ok_and(|t| t.contains_key("listeners"));
            if !explicit {
                config.listeners.clear();
            }
        }
        Ok(config)
    }

    /// Checks every bound and every rule between fields; the error names the first field
    /// found wrong. Call it before starting any shard.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Listeners.
        if self.listeners.is_empty() && self.listener.is_empty() {
            return Err(ConfigError::invalid(
                "listeners",
                "must list at least one address (or have a [[listener]])",
            ));
        }
        let mut seen = HashSet::new();
        // Port 0 picks a free port per listener: never a duplicate.
        for addr in &self.listeners {
            if addr.port() != 0 && !seen.insert(*addr) {
                return Err(ConfigError::invalid(
                    "listeners",
                    format!("{addr} is listed twice"),
                ));
            }
        }
        for (i, l) in self.listener.iter().enumerate() {
            l.validate(i, &mut seen)?;
        }

        if self.response_information.len() > 256
            || self.response_information.contains(['+', '#', '\0'])
        {
            return Err(ConfigError::invalid(
                "response_information",
                "must be at most 256 bytes, without '+', '#' or NUL",
            ));
        }

        // Shards and CPUs.
        check_range("shards", self.shards, 0, MAX_SHARDS)?;
        if let Some(cpus) = &self.cpus {
            if cpus.is_empty() {
                return Err(ConfigError::invalid(
                    "cpus",
                    "must not be empty (leave it unset to let glommio choose)",
                ));
            }
            if cpus.len() > MAX_SHARDS {
                return Err(ConfigError::invalid(
                    "cpus",
                    format!("lists {} CPUs, at most {MAX_SHARDS}", cpus.len()),
                ));
            }
            let mut seen = HashSet::new();
            if let Some(cpu) = cpus.iter().find(|cpu| !seen.insert(**cpu)) {
                return Err(ConfigError::invalid(
                    "cpus",
                    format!("CPU {cpu} is listed twice"),
                ));
            }
            if self.shards != 0 && cpus.len() != self.shards {
                return Err(ConfigError::invalid(
                    "cpus",
                    format!(
                        "lists {} CPUs but shards = {}; give one CPU per shard or set shards = 0",
                        cpus.len(),
                        self.shards
                    ),
                ));
            }
        }

        if let Err(reason) = check_log_level(&self.log_level) {
            return Err(ConfigError::invalid("log_level", reason));
        }

        // [limits]
        let l = &self.limits;
        check_positive("limits.max_connections", l.max_connections)?;
        check_positive("limits.max_sessions", l.max_sessions)?;
        check_positive("limits.connect_timeout", l.connect_timeout)?;
        check_range(
            "limits.max_packet_size",
            l.max_packet_size,
            MIN_PACKET_SIZE,
            MAX_PACKET_SIZE,
        )?;
        if l.keepalive_min != 0 && l.keepalive_max != 0 && l.keepalive_min > l.keepalive_max {
            return Err(ConfigError::invalid(
                "limits.keepalive_min",
                format!(
                    "{} is above limits.keepalive_max = {}",
                    l.keepalive_min, l.keepalive_max
                ),
            ));
        }
        check_positive("limits.max_inflight", l.max_inflight)?;
        check_positive("limits.max_queued_messages", l.max_queued_messages)?;
        check_positive("limits.max_queued_bytes", l.max_queued_bytes)?;
        check_range(
            "limits.max_write_buffer",
            l.max_write_buffer,
            64,
            usize::MAX,
        )?;
        check_range("limits.read_buffer_size", l.read_buffer_size, 64, 16 << 20)?;
        check_positive("limits.retained_max_messages", l.retained_max_messages)?;
        check_positive(
            "limits.max_subscriptions_per_client",
            l.max_subscriptions_per_client,
        )?;
        check_positive(
            "limits.max_filters_per_subscribe",
            l.max_filters_per_subscribe,
        )?;
        check_range("limits.max_topic_levels", l.max_topic_levels, 1, 256)?;

        // [mesh]
        check_range(
            "mesh.channel_capacity",
            self.mesh.channel_capacity,
            1,
            65536,
        )?;
        check_range("mesh.batch_size", self.mesh.batch_size, 1, 65536)?;

        // [persistence]
        let p = &self.persistence;
        if p.mode != PersistMode::Off && p.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "persistence.dir",
                "must be set when persistence.mode is not \"off\"",
            ));
        }
        check_range("persistence.sync_interval", p.sync_interval, 1, 3_600_000)?;
        check_range(
            "persistence.compact_bytes",
            p.compact_bytes,
            1 << 20,
            u64::MAX,
        )?;
        let shards = self.shard_count() as u64;
        if p.max_disk_bytes != 0 && p.max_disk_bytes / shards.max(1) < 1 << 20 {
            return Err(ConfigError::invalid(
                "persistence.max_disk_bytes",
                format!(
                    "0 (no limit) or at least 1 MiB per shard ({shards} shards: {} bytes), got {}",
                    shards << 20,
                    p.max_disk_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The number of shards to start: `shards`, or when that is 0 the number of `cpus`, or
    /// else the available parallelism of this process (at most [`MAX_SHARDS`]).
    pub fn shard_count(&self) -> usize {
        if self.shards != 0 {
            return self.shards;
        }
        if let Some(cpus) = &self.cpus {
            return cpus.len();
        }
        std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_SHARDS)
    }

    /// The configuration as a TOML document with each key's doc text as `#` comment lines
    /// above it: what `--print-config` prints. It parses back with
    /// [`Config::from_toml_str`] to an equal `Config`. An unset optional key is shown as a
    /// comment.
    pub fn print_documented(&self) -> String {
        let table = toml::Table::try_from(self)
            .expect("every Config field serializes to TOML (a test checks this)");
        let mut out = String::from(
            "# SurgeMQ configuration (effective values).\n\
             # Every key is optional: a missing key takes the default stated above it.\n\
             # An unknown key is an error.\n",
        );
        write_fields(&mut out, &table, Config::FIELD_DOCS);
        for (key, lines) in Config::FIELD_DOCS {
            let (Some(toml::Value::Table(section)), Some(docs)) =
                (table.get(*key), section_docs(key))
            else {
                continue;
            };
            out.push('\n');
            for line in *lines {
                let _ = writeln!(out, "#{}", line.trim_end());
            }
            let _ = writeln!(out, "[{key}]");
            write_fields(&mut out, section, docs);
        }
        // `[[listener]]` tables, each with its keys' documentation; without any, the keys
        // a table may have, as comments.
        let docs = Config::FIELD_DOCS
            .iter()
            .find(|(k, _)| *k == "listener")
            .map_or(&[][..], |(_, d)| *d);
        match table.get("listener") {
            Some(toml::Value::Array(items)) if is_table_array(table.get("listener")) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        out.push('\n');
                        for line in docs {
                            let _ = writeln!(out, "#{}", line.trim_end());
                        }
                        out.push_str("[[listener]]\n");
                        write_fields(&mut out, t, Listener::FIELD_DOCS);
                    }
                }
            }
            _ => {
                let example = toml::Table::try_from(Listener::default())
                    .expect("a Listener serializes to TOML");
                let mut keys = String::new();
                write_fields(&mut keys, &example, Listener::FIELD_DOCS);
                out.push_str("\n# A [[listener]] table may set (shown with their defaults):\n# [[listener]]\n");
                for line in keys.lines().filter(|l| !l.is_empty()) {
                    let line = line.strip_prefix("# ").unwrap_or(line);
                    let _ = writeln!(out, "# {}", line.strip_prefix('#').unwrap_or(line));
                }
            }
        }
        out
    }
}

/// The `surgemq` command line. Precedence: defaults < `--config` file < flags.
/// (Feature `cli`, on by default.)
#[cfg(feature = "cli")]
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "surgemq", version, about, long_about = None)]
pub struct Cli {
    /// Read settings from this TOML file (unknown keys are an error; --print-config shows
    /// every key with its documentation)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Accept connections on ADDR:PORT; repeat for several. Replaces `listeners` from the
    /// file.
    #[arg(long = "listen", short = 'l', value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,

    /// Number of shards (0 = one per core, at most 64). Overrides `shards` from the file.
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Log filter, e.g. `info` or `warn,surgemq=debug`. Overrides `log_level` from the
    /// file.
    #[arg(long, value_name = "L")]
    pub log_level: Option<String>,

    /// Print the effective configuration as documented TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[cfg(feature = "cli")]
impl Cli {
    /// Builds the effective configuration: defaults, then the `--config` file, then the
    /// flags; then validates it. Returns it with `true` when `--print-config` was given (the
    /// caller prints [`Config::print_documented`] and exits).
    pub fn into_config(self) -> Result<(Config, bool), ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listeners = self.listen;
        }
        if let Some(shards) = self.shards {
            config.shards = shards;
        }
        if let Some(level) = self.log_level {
            config.log_level = level;
        }
        config.validate()?;
        Ok((config, self.print_config))
    }
}

/// Parses the process arguments (exiting with clap's message on a bad flag or `--help`)
/// and builds the validated configuration: see `Cli::into_config`.
#[cfg(feature = "cli")]
pub fn from_args() -> Result<(Config, bool), ConfigError> {
    Cli::parse().into_config()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A config with every field away from its default and every `Option` set.
    fn non_default() -> Config {
        Config {
            listeners: vec![addr("127.0.0.1:1884"), addr("[::1]:8883")],
            shards: 4,
            cpus: Some(vec![0, 2, 4, 6]),
            pin_shards: false,
            accept_mode: AcceptMode::RoundRobin,
            allow_anonymous: false,
            password_file: Some(PathBuf::from("/etc/surgemq/passwd")),
            acl_file: Some(PathBuf::from("/etc/surgemq/acl")),
            listener: vec![
                Listener {
                    address: Some(addr("0.0.0.0:8883")),
                    certfile: Some(PathBuf::from("/etc/surgemq/cert.pem")),
                    keyfile: Some(PathBuf::from("/etc/surgemq/key.pem")),
                    cafile: Some(PathBuf::from("/etc/surgemq/ca.pem")),
                    require_certificate: true,
                    tls_version: TlsVersion::Tls13,
                    use_identity_as_username: true,
                    allow_anonymous: Some(false),
                    password_file: Some(PathBuf::from("/etc/surgemq/passwd-ws")),
                    acl_file: Some(PathBuf::from("/etc/surgemq/acl-ws")),
                    protocol: ListenerProtocol::Websockets,
                    http_path: "/mqtt".into(),
                    websockets_max_frame_size: 65536,
                    max_connections: 10,
                    max_connection_rate: Some(100),
                },
                Listener {
                    address: Some(addr("127.0.0.1:1885")),
                    ..Listener::default()
                },
            ],
            retain_available: false,
            sys_interval: 3,
            response_information: "response/%c".to_owned(),
            log_level: "warn,surgemq=debug".to_owned(),
            log_format: LogFormat::Json,
            limits: Limits {
                max_connections: 7,
                max_sessions: 11,
                connect_timeout: 3,
                max_packet_size: 4096,
                max_topic_alias: 3,
                max_topic_alias_out: 4,
                keepalive_min: 5,
                keepalive_max: 600,
                session_expiry_max: Some(3600),
                max_inflight: 65535,
                max_queued_messages: 9,
                max_queued_bytes: 12345,
                max_write_buffer: 65,
                read_buffer_size: 512,
                retained_max_messages: 3,
                retained_max_payload: 0,
                max_subscriptions_per_client: 2,
                max_filters_per_subscribe: 1,
                max_topic_levels: 256,
                max_connections_per_ip: 5,
                max_connection_rate: 50,
            },
            mesh: Mesh {
                channel_capacity: 1,
                batch_size: 65536,
            },
            persistence: Persistence {
                mode: PersistMode::Sync,
                dir: PathBuf::from("/var/lib/surgemq"),
                sync_interval: 50,
                compact_bytes: 1 << 30,
                max_disk_bytes: 1 << 40,
            },
            metrics: Metrics {
                listen: Some(addr("127.0.0.1:9883")),
            },
        }
    }

    /// A unique temporary file holding `text`, removed on drop.
    struct TempFile(PathBuf);
    impl TempFile {
        fn new(text: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "surgemq-config-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[cfg(feature = "cli")]
    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("surgemq").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_validate_and_match_the_brief() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listeners, vec![addr("0.0.0.0:1883")]);
        assert_eq!(c.shards, 0);
        assert_eq!(c.cpus, None);
        assert_eq!(c.accept_mode, AcceptMode::ReusePort);
        assert!(c.allow_anonymous);
        assert!(c.retain_available);
        assert_eq!(c.log_level, "info");
        let l = &c.limits;
        assert_eq!(l.max_connections, 100_000);
        assert_eq!(l.connect_timeout, 10);
        assert_eq!(l.max_packet_size, 1 << 20);
        assert_eq!(l.max_inflight, 128);
        assert_eq!(l.max_queued_messages, 1000);
        assert_eq!(l.max_queued_bytes, 16 << 20);
        assert_eq!(l.max_write_buffer, 1 << 20);
        assert_eq!(l.read_buffer_size, 4096);
        assert_eq!(l.retained_max_messages, 100_000);
        assert_eq!(l.max_subscriptions_per_client, 1000);
        assert_eq!(l.max_filters_per_subscribe, 100);
        assert_eq!(l.max_topic_levels, 32);
        assert_eq!(l.session_expiry_max, None);
        assert_eq!(c.mesh.channel_capacity, 256);
        assert_eq!(c.mesh.batch_size, 64);
        non_default().validate().unwrap();
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
        assert_eq!(
            Config::from_toml_str("[limits]\n[mesh]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn partial_document_keeps_other_defaults() {
        let c = Config::from_toml_str(
            "shards = 2\naccept_mode = \"round_robin\"\n[limits]\nmax_inflight = 8\n",
        )
        .unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.accept_mode, AcceptMode::RoundRobin);
        assert_eq!(c.limits.max_inflight, 8);
        assert_eq!(c.limits.max_queued_messages, 1000);
        assert_eq!(c.mesh, Mesh::default());
    }

    /// Every serialized key, in every section, has a doc table entry and vice versa, and
    /// every doc states the field's actual default as "Default: `<toml value>`" (or
    /// "Default: unset" for an unset option). Fails when a field is added without a doc
    /// stating its default, or when a default changes and its doc does not.
    #[test]
    fn every_key_is_documented_with_its_real_default() {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let all_set = toml::Table::try_from(non_default()).unwrap();

        fn check(path: &str, defaults: &toml::Table, all_set: &toml::Table, docs: FieldDocs) {
            let doc_keys: Vec<&str> = docs.iter().map(|(k, _)| *k).collect();
            let mut keys: Vec<&str> = all_set.keys().map(String::as_str).collect();
            let mut sorted_docs = doc_keys.clone();
            keys.sort_unstable();
            sorted_docs.sort_unstable();
            assert_eq!(keys, sorted_docs, "serialized keys vs FIELD_DOCS in {path}");
            for (key, lines) in docs {
                let text = lines.concat();
                assert!(
                    lines.iter().all(|l| !l.trim().is_empty()) && text.len() > 40,
                    "{path}{key}: doc too thin"
                );
                match defaults.get(*key) {
                    Some(toml::Value::Table(sub)) => {
                        let sub_docs = section_docs(key)
                            .unwrap_or_else(|| panic!("section {key} not in section_docs"));
                        let toml::Value::Table(sub_set) = &all_set[*key] else {
                            unreachable!()
                        };
                        check(&format!("{path}{key}."), sub, sub_set, sub_docs);
                    }
                    Some(value) => {
                        let want = format!("Default: `{value}`");
                        assert!(
                            text.contains(&want),
                            "{path}{key}: doc must state `{want}`, has: {text}"
                        );
                    }
                    None => assert!(
                        text.contains("Default: unset"),
                        "{path}{key}: unset by default, doc must say `Default: unset`"
                    ),
                }
            }
        }
        check("", &defaults, &all_set, Config::FIELD_DOCS);
        let toml::Value::Array(listeners) = &all_set["listener"] else {
            unreachable!()
        };
        let toml::Value::Table(first) = &listeners[0] else {
            unreachable!()
        };
        let default = toml::Table::try_from(Listener::default()).unwrap();
        check("listener.", &default, first, Listener::FIELD_DOCS);
    }

    #[test]
    fn print_documented_round_trips() {
        for config in [Config::default(), non_default()] {
            let text = config.print_documented();
            let back = Config::from_toml_str(&text)
                .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{text}"));
            assert_eq!(back, config, "{text}");
        }
    }

    #[test]
    fn print_documented_comments_every_key() {
        let text = non_default().print_documented();
        let lines: Vec<&str> = text.lines().collect();
        let mut keys = 0;
        for (i, line) in lines.iter().enumerate() {
            let is_key = !line.starts_with('#') && line.contains(" = ");
            let is_header = line.starts_with('[');
            if is_key || is_header {
                keys += 1;
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "no comment above `{line}`"
                );
            }
        }
        // The two `[[listener]]` headers stand for the `listener` key; the first sets all
        // its keys, the second the 8 that are not options (its unset options are comments).
        let expected = Config::FIELD_DOCS.len()
            + 1
            + Listener::FIELD_DOCS.len()
            + 8
            + Limits::FIELD_DOCS.len()
            + Mesh::FIELD_DOCS.len()
            + Persistence::FIELD_DOCS.len()
            + Metrics::FIELD_DOCS.len();
        assert_eq!(keys, expected, "{text}");
        // The doc text is the field's doc comment, verbatim.
        assert!(text.contains("# Most QoS 1 and 2 messages sent to one client and not yet"));
        // An unset option is shown, commented out.
        let text = Config::default().print_documented();
        assert!(text.contains("# cpus = (unset)"), "{text}");
        assert!(text.contains("# session_expiry_max = (unset)"), "{text}");
    }

    #[test]
    fn unknown_top_level_key_is_rejected_by_name() {
        let err = Config::from_toml_str("shards = 2\nshardz = 3\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let msg = err.to_string();
        assert!(msg.contains("unknown field `shardz`"), "{msg}");
    }

    #[test]
    fn unknown_section_key_is_rejected_by_name() {
        let err =
            Config::from_toml_str("[limits]\nmax_inflight = 4\nmax_inflite = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown field `max_inflite`"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");

        let msg = Config::from_toml_str("[mesh]\nbatch = 1\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `batch`"), "{msg}");

        // An unknown section is an unknown key too.
        let msg = Config::from_toml_str("[limitz]\nmax_inflight = 4\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `limitz`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let msg = Config::from_toml_str("[limits]\nmax_inflight = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("max_inflight"), "{msg}");
        let msg = Config::from_toml_str("accept_mode = \"random\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("accept_mode"), "{msg}");
        assert!(msg.contains("reuse_port"), "{msg}");
    }

    #[test]
    fn each_validation_rule_names_its_field() {
        type Edit = fn(&mut Config);
        let cases: &[(&str, Edit)] = &[
            ("listeners", |c| c.listeners.clear()),
            ("listeners", |c| {
                c.listeners = vec![addr("127.0.0.1:1883"), addr("127.0.0.1:1883")]
            }),
            ("shards", |c| c.shards = 65),
            ("cpus", |c| c.cpus = Some(vec![])),
            ("cpus", |c| c.cpus = Some(vec![1, 2, 1])),
            ("cpus", |c| c.cpus = Some((0..65).collect())),
            ("cpus", |c| {
                c.shards = 2;
                c.cpus = Some(vec![0, 1, 2]);
            }),
            ("log_level", |c| c.log_level = String::new()),
            ("log_level", |c| c.log_level = "debg".to_owned()),
            ("log_level", |c| c.log_level = "surgemq=verbose".to_owned()),
            ("limits.max_connections", |c| c.limits.max_connections = 0),
            ("limits.max_sessions", |c| c.limits.max_sessions = 0),
            ("limits.connect_timeout", |c| c.limits.connect_timeout = 0),
            ("limits.max_packet_size", |c| c.limits.max_packet_size = 63),
            ("limits.max_packet_size", |c| {
                c.limits.max_packet_size = MAX_PACKET_SIZE + 1
            }),
            ("limits.keepalive_min", |c| {
                c.limits.keepalive_min = 61;
                c.limits.keepalive_max = 60;
            }),
            ("limits.max_inflight", |c| c.limits.max_inflight = 0),
            ("limits.max_queued_messages", |c| {
                c.limits.max_queued_messages = 0
            }),
            ("limits.max_queued_bytes", |c| c.limits.max_queued_bytes = 0),
            ("limits.max_write_buffer", |c| {
                c.limits.max_write_buffer = 63
            }),
            ("limits.read_buffer_size", |c| {
                c.limits.read_buffer_size = 63
            }),
            ("limits.read_buffer_size", |c| {
                c.limits.read_buffer_size = (16 << 20) + 1
            }),
            ("limits.retained_max_messages", |c| {
                c.limits.retained_max_messages = 0
            }),
            ("limits.max_subscriptions_per_client", |c| {
                c.limits.max_subscriptions_per_client = 0
            }),
            ("limits.max_filters_per_subscribe", |c| {
                c.limits.max_filters_per_subscribe = 0
            }),
            ("limits.max_topic_levels", |c| c.limits.max_topic_levels = 0),
            ("limits.max_topic_levels", |c| {
                c.limits.max_topic_levels = 257
            }),
            ("mesh.channel_capacity", |c| c.mesh.channel_capacity = 0),
            ("mesh.channel_capacity", |c| c.mesh.channel_capacity = 65537),
            ("mesh.batch_size", |c| c.mesh.batch_size = 0),
            ("mesh.batch_size", |c| c.mesh.batch_size = 65537),
        ];
        for (field, edit) in cases {
            let mut c = Config::default();
            edit(&mut c);
            let err = c.validate().expect_err(field);
            assert_eq!(err.field(), Some(*field), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn validation_accepts_the_edges() {
        type Edit = fn(&mut Config);
        let cases: &[Edit] = &[
            |c| c.shards = 64,
            |c| c.shards = 1,
            |c| c.cpus = Some(vec![3]),
            |c| {
                c.shards = 2;
                c.cpus = Some(vec![5, 1]);
            },
            // Port 0: one free port is picked at start-up and shared by every shard.
            |c| c.listeners = vec![addr("127.0.0.1:0")],
            |c| {
                c.listeners = vec![addr("127.0.0.1:0")];
                c.accept_mode = AcceptMode::RoundRobin;
            },
            |c| {
                c.listeners = vec![addr("127.0.0.1:0")];
                c.shards = 1;
            },
            |c| c.log_level = "TRACE".to_owned(),
            |c| c.log_level = "off".to_owned(),
            |c| c.log_level = "warn,surgemq=debug".to_owned(),
            |c| c.log_level = "surgemq::index=trace".to_owned(),
            |c| c.limits.max_packet_size = MIN_PACKET_SIZE,
            |c| c.limits.max_packet_size = MAX_PACKET_SIZE,
            // 0 means "no bound" on either side.
            |c| c.limits.keepalive_min = 600,
            |c| c.limits.keepalive_max = 1,
            |c| {
                c.limits.keepalive_min = 60;
                c.limits.keepalive_max = 60;
            },
            |c| c.limits.session_expiry_max = Some(0),
            |c| c.limits.read_buffer_size = 64,
            |c| c.limits.read_buffer_size = 16 << 20,
            |c| c.limits.retained_max_payload = 0,
            |c| c.limits.max_topic_levels = 1,
        ];
        for (i, edit) in cases.iter().enumerate() {
            let mut c = Config::default();
            edit(&mut c);
            if let Err(e) = c.validate() {
                panic!("case {i}: {e}");
            }
        }
    }

    #[cfg(feature = "cli")]
    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file = TempFile::new(
            "listeners = [\"127.0.0.1:1884\"]\nshards = 2\nlog_level = \"debug\"\n\
             [limits]\nmax_inflight = 7\n",
        );
        let path = file.0.to_str().unwrap();

        // File only: file values over defaults.
        let (c, print) = cli(&["--config", path]).into_config().unwrap();
        assert!(!print);
        assert_eq!(c.listeners, vec![addr("127.0.0.1:1884")]);
        assert_eq!(c.shards, 2);
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.limits.max_inflight, 7);
        assert_eq!(c.limits.max_queued_messages, 1000);

        // Flags over the file; what no flag sets stays from the file.
        let (c, print) = cli(&[
            "-c",
            path,
            "--listen",
            "127.0.0.1:2000",
            "--listen",
            "[::1]:2001",
            "--shards",
            "3",
            "--log-level",
            "warn",
            "--print-config",
        ])
        .into_config()
        .unwrap();
        assert!(print);
        assert_eq!(
            c.listeners,
            vec![addr("127.0.0.1:2000"), addr("[::1]:2001")]
        );
        assert_eq!(c.shards, 3);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.limits.max_inflight, 7);
    }

    #[cfg(feature = "cli")]
    #[test]
    fn flags_without_file_and_validation_after_flags() {
        let (c, print) = cli(&[]).into_config().unwrap();
        assert!(!print);
        assert_eq!(c, Config::default());

        // A file value out of bounds is fine when a flag replaces it...
        let file = TempFile::new("shards = 100\n");
        let path = file.0.to_str().unwrap();
        let (c, _) = cli(&["--config", path, "--shards", "8"])
            .into_config()
            .unwrap();
        assert_eq!(c.shards, 8);
        // ...and an error naming the field when none does.
        let err = cli(&["--config", path]).into_config().unwrap_err();
        assert_eq!(err.field(), Some("shards"));
        let err = cli(&["--log-level", "nonsense"]).into_config().unwrap_err();
        assert_eq!(err.field(), Some("log_level"));

        // Bad flag syntax is clap's error.
        assert!(Cli::try_parse_from(["surgemq", "--listen", "localhost"]).is_err());
        assert!(Cli::try_parse_from(["surgemq", "--shards", "-1"]).is_err());
    }

    #[test]
    fn file_errors_name_the_file() {
        let missing = std::env::temp_dir().join("surgemq-config-test-does-not-exist.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("does-not-exist"), "{err}");

        let file = TempFile::new("[limits]\nbogus = 1\n");
        let err = Config::load(&file.0).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(file.0.to_str().unwrap()), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
        assert_eq!(err.field(), None);
    }

    #[test]
    fn shard_count_resolves_zero() {
        let mut c = Config::default();
        let n = c.shard_count();
        assert!((1..=MAX_SHARDS).contains(&n));
        c.cpus = Some(vec![4, 5, 6]);
        assert_eq!(c.shard_count(), 3);
        c.shards = 3;
        assert_eq!(c.shard_count(), 3);
        c.cpus = None;
        c.shards = 9;
        assert_eq!(c.shard_count(), 9);
    }

    #[cfg(feature = "cli")]
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
