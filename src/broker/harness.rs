//! A deterministic harness for the shards' logic without sockets, threads or an executor
//! (test builds only), beside the TCP tests in `tests/`.
//!
//! Every shard of a [`Harness`] lives on the test's thread; their mesh ends are
//! [`MeshTx::captured`], so what one shard sends another waits in the harness until the
//! test delivers it, in any order it chooses (the data and control planes are separate
//! channels in the broker, so their relative order is not fixed there either). A client is
//! a [`ConnShared`] with no socket: the test feeds it encoded packets through the same
//! `process` a connection task runs, reads what the broker wrote to its output buffer, and
//! ends it with `connection_closed`. Races that need luck over TCP (a reply arriving after
//! its requester left, a live message overtaking a snapshot) are written out step by step.
//!
//! **Must not touch:** anything outside test builds.

use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;

use super::connection::{CloseReason, ConnId, ConnShared};
use super::hooks::AllowAll;
use super::negotiated::Negotiated;
use super::process::process;
use super::shard::Shard;
use super::store::SessionId;
use super::ShardMsg;
use crate::config::Config;
use crate::mesh::MeshTx;
use crate::protocol::*;

/// Which plane a captured message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    Data,
    Control,
}

/// A message one shard sent another, not delivered yet.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub to: usize,
    pub plane: Plane,
    pub msg: ShardMsg,
}

/// Shards on one thread with a hand-driven mesh.
pub(crate) struct Harness {
    pub shards: Vec<Rc<Shard>>,
    data: Vec<Rc<MeshTx<ShardMsg>>>,
    control: Vec<Rc<MeshTx<ShardMsg>>>,
    /// Sent and not delivered, in the order they were flushed.
    pub mesh: Vec<InFlight>,
}

/// A client of the harness.
pub(crate) struct Client {
    pub shard: usize,
    pub key: ConnId,
    pub conn: Rc<ConnShared>,
    pub session: SessionId,
    pub version: ProtocolVersion,
    /// Output not yet decoded.
    out: BytesMut,
}

impl Harness {
    /// `shards` shards with the default configuration adjusted by `tweak`.
    pub(crate) fn new(shards: usize, tweak: impl FnOnce(&mut Config)) -> Harness {
        let mut cfg = Config {
            shards,
            ..Config::default()
        };
        tweak(&mut cfg);
        let cfg = Arc::new(cfg);
        let data: Vec<_> = (0..shards).map(|s| MeshTx::captured(s, shards)).collect();
        let control: Vec<_> = (0..shards).map(|s| MeshTx::captured(s, shards)).collect();
        let shards = (0..shards)
            .map(|s| {
                Rc::new(Shard::new(
                    s,
                    cfg.clone(),
                    data[s].clone(),
                    control[s].clone(),
                    Arc::new(super::hooks::Domains::single(Arc::new(AllowAll))),
                ))
            })
            .collect();
        Harness {
            shards,
            data,
            control,
            mesh: Vec::new(),
        }
    }

    /// Moves what the shards flushed into [`Harness::mesh`].
    fn collect(&mut self) {
        for (d, c) in self.data.iter().zip(&self.control) {
            d.flush();
            c.flush();
            for (plane, tx) in [(Plane::Data, d), (Plane::Control, c)] {
                for (to, batch) in tx.take_captured() {
                    self.mesh
                        .extend(batch.into_iter().map(|msg| InFlight { to, plane, msg }));
                }
            }
        }
    }

    /// A client with `client_id` whose session lives on `shard` (CONNECT accepted there);
    /// not `clean`: a session kept after the connection (5.0: Session Expiry Interval
    /// 0xFFFFFFFF).
    pub(crate) fn connect(
        &mut self,
        shard: usize,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
    ) -> Client {
        let s = &self.shards[shard];
        let (key, conn) = s.register_conn(-1, 60).expect("room for a connection");
        let mut properties = Properties::new();
        if version.is_v5() && !clean {
            // A persistent session, as clean session 0 is for 3.x.
            properties.get_mut().session_expiry_interval = Some(crate::session::NEVER_EXPIRES);
        }
        let connect = Connect {
            version,
            clean_start: clean,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties,
        };
        let terms = Negotiated::new(&connect, &s.cfg, s.limits, false);
        let (session, _) = s.attach(&conn, &terms).expect("CONNECT accepted");
        let mut c = Client {
            shard,
            key,
            conn,
            session,
            version,
            out: BytesMut::new(),
        };
        match self.output(&mut c).first() {
            Some(Packet::ConnAck(_)) => {}
            other => panic!("expected CONNACK, got {other:?}"),
        }
        self.collect();
        c
    }

    /// The client sends `packet`; the shard handles it as a connection task would.
    pub(crate) fn send(&mut self, c: &Client, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(c.version, &mut buf).expect("encodes");
        let opts = DecodeOptions::new(c.version);
        let r = process(&self.shards[c.shard], &c.conn, c.session, &mut buf, &opts);
        assert!(matches!(r, Ok(false)), "process: {r:?}");
        self.collect();
    }

    /// The client sends these packets in one read (so every message decoded from it is a
    /// slice of one buffer); returns the buffer's address range.
    pub(crate) fn send_in_one_read(
        &mut self,
        c: &Client,
        packets: &[Packet],
    ) -> std::ops::Range<usize> {
        let mut buf = BytesMut::new();
        for p in packets {
            p.encode(c.version, &mut buf).expect("encodes");
        }
        let start = buf.as_ptr() as usize;
        let range = start..start + buf.len();
        let opts = DecodeOptions::new(c.version);
        let r = process(&self.shards[c.shard], &c.conn, c.session, &mut buf, &opts);
        assert!(matches!(r, Ok(false)), "process: {r:?}");
        self.collect();
        range
    }

    /// Everything the client receives until the broker has nothing more for it: output
    /// is taken (as a connection task writes it), which lets paused streams of retained
    /// messages go on.
    pub(crate) fn drain(&mut self, c: &mut Client) -> Vec<Packet> {
        let mut all = Vec::new();
        loop {
            self.deliver_all();
            let got = self.output(c);
            if got.is_empty() {
                return all;
            }
            all.extend(got);
            self.shards[c.shard].resume_retained(Some(c.session));
            self.collect();
        }
    }

    /// The connection ends without DISCONNECT.
    pub(crate) fn drop_client(&mut self, c: Client) {
        self.shards[c.shard].connection_closed(c.key, &c.conn, CloseReason::SocketClosed);
        self.collect();
    }

    /// Everything the broker wrote to the client so far, decoded.
    pub(crate) fn output(&mut self, c: &mut Client) -> Vec<Packet> {
        c.out
            .extend_from_slice(&std::mem::take(&mut *c.conn.out.borrow_mut()));
        let opts = DecodeOptions::new(c.version);
        let mut got = Vec::new();
        while let Some(p) = decode(&mut c.out, &opts).expect("the broker wrote a valid packet") {
            got.push(p);
        }
        got
    }

    /// Delivers the first undelivered message matching `pick`; false if there is none.
    pub(crate) fn deliver_one(&mut self, pick: impl Fn(&InFlight) -> bool) -> bool {
        let Some(i) = self.mesh.iter().position(pick) else {
            return false;
        };
        let m = self.mesh.remove(i);
        self.deliver_held(m);
        true
    }

    /// Delivers everything, including what deliveries send, until the mesh is quiet and
    /// no shard has a retained walk to go on with (the runtime's task does that between
    /// turns in the broker).
    pub(crate) fn deliver_all(&mut self) {
        loop {
            while self.deliver_one(|_| true) {}
            if !self.run_later() {
                break;
            }
        }
    }

    /// One step of every retained walk a shard goes on with later; false if there was
    /// none.
    pub(crate) fn run_later(&mut self) -> bool {
        let mut any = false;
        for s in &self.shards {
            if !s.state.borrow().retained_later.is_empty() {
                any = true;
                s.continue_retained();
            }
        }
        self.collect();
        any
    }

    /// Takes the first undelivered message matching `pick` out of the mesh (to deliver
    /// later with [`Harness::deliver_held`]).
    pub(crate) fn hold(&mut self, pick: impl Fn(&InFlight) -> bool) -> InFlight {
        let i = self
            .mesh
            .iter()
            .position(pick)
            .expect("a matching message in the mesh");
        self.mesh.remove(i)
    }

    /// A publisher on `shard` that has stored `payload` as the retained message of `topic`.
    pub(crate) fn retained_on(
        &mut self,
        shard: usize,
        version: ProtocolVersion,
        topic: &str,
        payload: &[u8],
    ) -> Client {
        let p = self.connect(shard, version, "pub", true);
        self.send(&p, publish(topic, payload, QoS::AtLeastOnce, true, 1));
        self.deliver_all();
        p
    }

    /// Stores a retained message on the topic's owner shard directly, as a publisher would
    /// have: for tests that need many of them.
    pub(crate) fn store(&mut self, topic: &str, payload: &'static [u8], qos: QoS) {
        let owner = super::home_shard(topic, self.shards.len());
        self.shards[owner].store_retained(crate::session::Message {
            topic: TopicName::new(topic).expect("valid topic"),
            payload: bytes::Bytes::from_static(payload),
            qos,
            retain: true,
            properties: Properties::new(),
            expires: None,
        });
    }

    pub(crate) fn deliver_held(&mut self, m: InFlight) {
        self.shards[m.to].on_mesh(m.msg);
        self.collect();
    }
}

/// PUBLISH packets among `packets`, as (topic, payload).
pub(crate) fn publishes(packets: &[Packet]) -> Vec<(String, Vec<u8>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.payload.to_vec())),
            _ => None,
        })
        .collect()
}

pub(crate) fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(id).expect("non-zero"),
        subscriptions: vec![Subscription {
            filter: TopicFilter::new(filter).expect("valid filter"),
            options: SubscriptionOptions::new(qos),
        }],
        properties: Properties::new(),
    })
}

pub(crate) fn unsubscribe(id: u16, filter: &str) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: PacketId::new(id).expect("non-zero"),
        filters: vec![TopicFilter::new(filter).expect("valid filter")],
        properties: Properties::new(),
    })
}

pub(crate) fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: TopicName::new(topic).expect("valid topic"),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).expect("non-zero")),
        properties: Properties::new(),
        payload: bytes::Bytes::copy_from_slice(payload),
    })
}
