//! One task per connection: read, decode, hand packets to the session, write.
//!
//! A connection is accepted on any shard. Once its CONNECT is decoded it either stays
//! (this shard is the client id's home) or moves home with the bytes already read
//! ([`super::ShardMsg::Adopt`]). From then on one task owns the socket and alternates
//! between writing what was queued for the client (one `write` for everything pending)
//! and reading (every complete frame of a read is processed before the next read).
//! Deliveries from other connections or shards append to the connection's write buffer and
//! wake the task; they never wait for the socket.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::shard::{write_connack, CloseReason, ConnShared, Shard};
use super::{home_shard, net, Adopt, ShardMsg};
use crate::protocol::{
    decode, Connect, DecodeError, DecodeOptions, Disconnect, Packet, Properties, ProtocolVersion,
    QoS, ReasonCode, Will,
};
use crate::session::Action;

/// Largest read chunk; reads start at `read_buffer_size` and double while they fill it.
const MAX_CHUNK: usize = 64 * 1024;
/// First read chunk of a new connection, before CONNECT.
const CONNECT_CHUNK: usize = 256;

enum ReadEv {
    Data(usize),
    Eof,
    Woken,
}

/// One read into `into`, or an early return when the connection is woken (output to
/// write, or a close request). Dropping the read is safe: glommio reads without a
/// submitted buffer (readiness, then a non-blocking `recv`).
async fn read_or_wake(stream: &mut TcpStream, into: &mut [u8], conn: &ConnShared) -> ReadEv {
    read_or_wake_or(stream, into, conn, futures::future::pending::<()>()).await
}

/// Like [`read_or_wake`], and also returns `Woken` when `also` completes.
async fn read_or_wake_or(
    stream: &mut TcpStream,
    into: &mut [u8],
    conn: &ConnShared,
    also: impl std::future::Future,
) -> ReadEv {
    let read = stream.read(into);
    let wake = conn.wake.notified();
    futures::pin_mut!(read, wake, also);
    match select(read, select(wake, also)).await {
        Either::Left((Ok(0), _)) | Either::Left((Err(_), _)) => ReadEv::Eof,
        Either::Left((Ok(n), _)) => ReadEv::Data(n),
        Either::Right(_) => ReadEv::Woken,
    }
}

/// Reads once into the spare end of `buf`, or returns early when the connection is woken
/// (output to write, or a close request).
async fn read_some(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    chunk: usize,
    conn: &ConnShared,
) -> ReadEv {
    read_some_or(stream, buf, chunk, conn, futures::future::pending::<()>()).await
}

/// Like [`read_some`], and also returns `Woken` when `also` completes.
async fn read_some_or(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    chunk: usize,
    conn: &ConnShared,
    also: impl std::future::Future,
) -> ReadEv {
    let len = buf.len();
    // glommio reads into initialised memory only.
    buf.resize(len + chunk, 0);
    let ev = read_or_wake_or(stream, &mut buf[len..], conn, also).await;
    match ev {
        ReadEv::Data(n) => buf.truncate(len + n),
        _ => buf.truncate(len),
    }
    ev
}

/// Writes `data` completely, unless the connection is asked to close meanwhile.
async fn write_out(
    shard: &Shard,
    stream: &mut TcpStream,
    data: &[u8],
    conn: &ConnShared,
) -> Result<(), CloseReason> {
    let mut pos = 0;
    while pos < data.len() {
        if let Some(r) = conn.close.get() {
            return Err(r);
        }
        let ev = {
            let write = stream.write(&data[pos..]);
            let wake = conn.wake.notified();
            futures::pin_mut!(write, wake);
            match select(write, wake).await {
                Either::Left((Ok(0), _)) | Either::Left((Err(_), _)) => {
                    Err(CloseReason::SocketClosed)
                }
                Either::Left((Ok(n), _)) => Ok(Some(n)),
                // Woken for more output or a close request. The flag is not set again:
                // new output is picked up by `flush`, which loops while `out` has data,
                // and setting it here would make the next select return at once, a busy
                // loop for as long as the socket stays full (a stuck subscriber would take
                // its whole shard down with it).
                Either::Right(_) => Ok(None),
            }
        };
        match ev? {
            Some(n) => {
                pos += n;
                conn.writing.set(data.len() - pos);
                shard.note_drained(conn);
            }
            None => {
                if let Some(r) = conn.close.get() {
                    return Err(r);
                }
            }
        }
    }
    Ok(())
}

async fn flush(
    shard: &Shard,
    stream: &mut TcpStream,
    conn: &ConnShared,
) -> Result<(), CloseReason> {
    loop {
        let data = std::mem::take(&mut *conn.out.borrow_mut());
        if data.is_empty() {
            shard.note_drained(conn);
            return Ok(());
        }
        let mut data = data;
        conn.writing.set(data.len());
        let r = write_out(shard, stream, &data, conn).await;
        conn.writing.set(0);
        r?;
        shard.note_drained(conn);
        data.clear();
        // Keep a modest buffer for the next round; give a big one back.
        let mut out = conn.out.borrow_mut();
        if out.is_empty() && data.capacity() <= 16 * 1024 {
            *out = data;
        }
    }
}

/// A connection accepted on this shard.
pub(crate) async fn accepted(shard: Rc<Shard>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let timeout = u16::try_from(shard.cfg.limits.connect_timeout).unwrap_or(u16::MAX);
    let Some((key, conn)) = shard.register_conn(stream.as_raw_fd(), timeout) else {
        tracing::warn!(
            shard = shard.id,
            "connection limit reached: connection closed"
        );
        return;
    };
    shard.count(|m| m.connections_accepted += 1);
    let mut stream = stream;
    let mut buf = BytesMut::new();
    let opts = DecodeOptions {
        version: ProtocolVersion::V3_1_1,
        max_packet_size: shard.cfg.limits.max_packet_size,
    };
    // CONNECT packets are small (typically under 100 bytes) and a burst of new
    // connections holds one of these buffers each: start small, double while reads fill it.
    let mut chunk = CONNECT_CHUNK.min(shard.cfg.limits.read_buffer_size);
    // The first packet must be CONNECT [MQTT-3.1.0-1].
    let first = loop {
        match decode(&mut buf, &opts) {
            Ok(Some(p)) => break Ok(p),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        match read_some(&mut stream, &mut buf, chunk, &conn).await {
            ReadEv::Data(n) => {
                if n == chunk {
                    chunk = (chunk * 2).min(MAX_CHUNK);
                }
            }
            ReadEv::Eof => {
                shard.connection_closed(key, &conn, CloseReason::SocketClosed);
                return;
            }
            ReadEv::Woken => {
                if let Some(r) = conn.close.get() {
                    shard.connection_closed(key, &conn, r);
                    return;
                }
            }
        }
    };
    let connect = match first {
        Ok(Packet::Connect(c)) => c,
        Ok(other) => {
            shard.count(|m| m.protocol_errors += 1);
            tracing::info!(packet = ?other.packet_type(), "first packet is not CONNECT [MQTT-3.1.0-1]: closed");
            shard.connection_closed(key, &conn, CloseReason::ProtocolError);
            return;
        }
        Err(e) => {
            shard.count(|m| m.malformed_packets += 1);
            tracing::info!(error = %e, kind = e.kind(), "bad CONNECT: closed");
            // [MQTT-3.1.2-2]: an unsupported protocol level is answered with CONNACK 0x01
            // (5.0: 0x84) before closing; other CONNECT errors just close, except that a
            // 5.0 client is told the reason code.
            let mut out = BytesMut::new();
            match (e, connect_level(&buf)) {
                (DecodeError::UnsupportedProtocolLevel(_), Some(5)) | (_, Some(5)) => {
                    write_connack(&mut out, ProtocolVersion::V5, false, e.reason_code())
                }
                (DecodeError::UnsupportedProtocolLevel(_), _) => write_connack(
                    &mut out,
                    ProtocolVersion::V3_1_1,
                    false,
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ),
                _ => {}
            }
            if !out.is_empty() {
                let _ = stream.write_all(&out).await;
            }
            shard.connection_closed(key, &conn, CloseReason::ProtocolError);
            return;
        }
    };
    let mut connect = connect;
    // Identify the client; refusals get CONNACK with the code and a close.
    match check_connect(&shard, &mut connect) {
        Ok(()) => {}
        Err(code) => {
            let mut out = BytesMut::new();
            write_connack(&mut out, connect.version, false, code);
            let _ = stream.write_all(&out).await;
            tracing::info!(client_id = %connect.client_id, code = %code, "CONNECT refused");
            shard.connection_closed(key, &conn, CloseReason::Refused);
            return;
        }
    }
    let home = home_shard(&connect.client_id, shard.shards);
    if home != shard.id {
        // Move to the home shard with whatever the client sent after CONNECT.
        match net::dup(&stream) {
            Ok(fd) => {
                shard.connection_closed(key, &conn, CloseReason::Migrated);
                drop(stream);
                shard.count(|m| m.connections_migrated += 1);
                shard.mesh.push(
                    home,
                    ShardMsg::Adopt(Box::new(Adopt {
                        fd,
                        connect,
                        rest: buf,
                    })),
                );
                shard.mesh.flush();
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move a connection to its home shard: closed");
                shard.connection_closed(key, &conn, CloseReason::ServerShutdown);
            }
        }
        return;
    }
    // The serving task is spawned on its own: this task's state (sized for the CONNECT
    // phase) is freed instead of being carried for the life of the connection.
    super::spawn_connection(serve(shard, stream, key, conn, connect, buf));
}

/// A connection moved here from the shard that accepted it.
pub(crate) async fn adopted(shard: Rc<Shard>, a: Adopt) {
    let stream = net::adopt(a.fd);
    let _ = stream.set_nodelay(true);
    let Some((key, conn)) = shard.register_conn(stream.as_raw_fd(), 0) else {
        return;
    };
    serve(shard, stream, key, conn, a.connect, a.rest).await;
}

/// The protocol level byte of a CONNECT whose body failed to decode, if it got that far.
fn connect_level(buf: &[u8]) -> Option<u8> {
    // Fixed header (1 byte + 1..4 length bytes), then a 2-byte name length and the name.
    let mut i = 1;
    while buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let name_len = u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]) as usize;
    buf.get(i + 2 + name_len).copied()
}

/// CONNECT rules that need configuration: client identifier, anonymous access,
/// authentication. Assigns an identifier where the protocol allows an empty one.
fn check_connect(shard: &Shard, c: &mut Connect) -> Result<(), ReasonCode> {
    if c.client_id.is_empty() {
        // 3.1.1 [MQTT-3.1.3-6]/[MQTT-3.1.3-8]: an empty id is allowed with clean session
        // only; 3.1 requires 1..23 characters; 5.0 always assigns.
        let allowed = match c.version {
            ProtocolVersion::V3_1 => false,
            ProtocolVersion::V3_1_1 => c.clean_start,
            ProtocolVersion::V5 => true,
        };
        if !allowed {
            return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        }
        c.client_id = assign_client_id(shard);
    } else if c.version == ProtocolVersion::V3_1 && c.client_id.len() > 23 {
        // MQTT 3.1 §3.1: "Client Identifier ... between 1 and 23 characters" (mosquitto
        // refuses longer ones the same way).
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    if c.username.is_none() && !shard.cfg.allow_anonymous {
        return Err(ReasonCode::NOT_AUTHORIZED);
    }
    shard
        .auth
        .authenticate(&c.client_id, c.username.as_deref(), c.password.as_deref())
}

/// An identifier that hashes to this shard, so the session is local.
fn assign_client_id(shard: &Shard) -> ByteString {
    let rs = ahash::RandomState::new();
    let mut n: u64 = rs.hash_one(Instant::now());
    loop {
        let id = format!("surgemq-{n:016x}");
        if home_shard(&id, shard.shards) == shard.id {
            return ByteString::from(id);
        }
        n = rs.hash_one(n);
    }
}

/// Serves an accepted CONNECT on the session's home shard until the connection ends.
async fn serve(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    key: usize,
    conn: Rc<ConnShared>,
    connect: Box<Connect>,
    mut buf: BytesMut,
) {
    let version = connect.version;
    conn.keep_alive.set(connect.keep_alive);
    conn.last_read.set(Instant::now());
    // The client id and the will live as long as the session and the connection: copy
    // them out of the read buffer they were decoded from, which would otherwise stay
    // pinned (a whole read chunk per connection).
    *conn.will.borrow_mut() = connect.will.as_ref().map(|w| {
        Box::new(Will {
            topic: w.topic.detached(),
            payload: Bytes::copy_from_slice(&w.payload),
            qos: w.qos,
            retain: w.retain,
            properties: w.properties.clone(),
        })
    });
    let (slot, _present) = shard.attach(
        &conn,
        ByteString::from(&*connect.client_id),
        version,
        connect.clean_start,
    );
    // Nothing of the CONNECT is needed any more; it must not stay in this task's state
    // for the life of the connection (its fields are slices of the first read buffer).
    drop(connect);
    let opts = DecodeOptions {
        version,
        max_packet_size: shard.cfg.limits.max_packet_size,
    };
    let mut chunk = shard.cfg.limits.read_buffer_size.min(MAX_CHUNK);
    // Packets the client sent right behind CONNECT.
    let mut result = process(&shard, &conn, slot, &mut buf, &opts);
    shard.mesh.flush();
    if buf.is_empty() {
        buf = BytesMut::new();
    }
    let mut reason = loop {
        let paused = match result {
            Err(r) => break r,
            Ok(paused) => paused,
        };
        if let Some(r) = conn.close.get() {
            break r;
        }
        // Boxed: the write path's state exists only while writing, so an idle
        // connection's task stays small.
        if !conn.out.borrow().is_empty() || conn.writing.get() > 0 {
            if let Err(r) = Box::pin(flush(&shard, &mut stream, &conn)).await {
                break r;
            }
        } else {
            shard.note_drained(&conn);
        }
        // A connection that is behind keeps being read while publishers are held back:
        // its acks free its window, which is what drains it. Its own PUBLISHes are held
        // (see `process`) until its held budget is full.
        let reads_while_held = is_behind(&conn) && !held_full(&shard, &conn);
        if shard.output_congested() && !reads_while_held {
            // Flow control: a subscriber on this shard is behind; stop reading publishers
            // until it catches up (its own task keeps writing meanwhile).
            let drained = shard.output_drained.wait();
            let wake = conn.wake.notified();
            futures::pin_mut!(drained, wake);
            let _ = select(drained, wake).await;
            continue;
        }
        if shard.mesh.congested() && !reads_while_held {
            // Back-pressure: this publisher waits until the other shards drain.
            let drained = shard.mesh.wait_uncongested();
            let wake = conn.wake.notified();
            futures::pin_mut!(drained, wake);
            let _ = select(drained, wake).await;
            continue;
        }
        let holding = conn.holding();
        if paused || (holding && !shard.holding_back()) {
            // Packets left over from before a flow-control pause, or held while it lasted.
            result = process(&shard, &conn, slot, &mut buf, &opts);
            shard.mesh.flush();
            continue;
        }
        if buf.capacity() == 0 {
            // Idle: wait for data holding no read buffer. The first byte is read into the
            // task's own one-byte array (glommio waits for readiness without a buffer);
            // only then is a buffer allocated, so an idle connection costs no buffer
            // memory. (glommio's `peek` would allocate a page-aligned buffer per call.)
            let mut one = [0u8; 1];
            match read_or_wake(&mut stream, &mut one, &conn).await {
                ReadEv::Eof => break CloseReason::SocketClosed,
                ReadEv::Woken => {
                    result = Ok(false);
                    continue;
                }
                ReadEv::Data(_) => {
                    buf.reserve(chunk);
                    buf.extend_from_slice(&one);
                    conn.last_read.set(Instant::now());
                }
            }
        }
        let ev = if holding {
            // Also wake when the hold ends, to process what is held: the client may be
            // waiting for those acks before it sends anything more.
            Box::pin(read_some_or(
                &mut stream,
                &mut buf,
                chunk,
                &conn,
                shard.until_released(),
            ))
            .await
        } else {
            Box::pin(read_some(&mut stream, &mut buf, chunk, &conn)).await
        };
        match ev {
            ReadEv::Data(n) => {
                conn.last_read.set(Instant::now());
                if n == chunk {
                    chunk = (chunk * 2).min(MAX_CHUNK);
                } else if buf.is_empty() {
                    chunk = shard.cfg.limits.read_buffer_size.min(MAX_CHUNK);
                }
                result = process(&shard, &conn, slot, &mut buf, &opts);
                shard.mesh.flush();
                // A quiet connection gives its read buffer back.
                if buf.is_empty() && n < chunk {
                    buf = BytesMut::new();
                }
            }
            ReadEv::Eof => break CloseReason::SocketClosed,
            ReadEv::Woken => result = Ok(false),
        }
    };
    if reason == CloseReason::SocketClosed && conn.holding() {
        // The client is gone; what it sent before leaving is still handled (its QoS 0
        // publishes, its DISCONNECT), as it would have been without the hold.
        let mut rest = BytesMut::new();
        if let Err(r) = process_with(&shard, &conn, slot, &mut rest, &opts, true) {
            // A held DISCONNECT (no will) or a protocol error decides how it ends.
            reason = r;
        }
        shard.mesh.flush();
    }
    conn.clear_held();
    if version.is_v5() {
        let code = match reason {
            CloseReason::TakenOver => Some(ReasonCode::SESSION_TAKEN_OVER),
            CloseReason::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            CloseReason::ServerShutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            _ => None,
        };
        if let Some(code) = code {
            let mut out = conn.out.borrow_mut();
            let _ = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::new(),
            })
            .encode(version, &mut out);
        }
    }
    if matches!(
        reason,
        CloseReason::ProtocolError
            | CloseReason::ServerShutdown
            | CloseReason::ClientDisconnect { .. }
    ) {
        // Best effort: what was queued before the end (acks, a 5.0 DISCONNECT).
        let data = std::mem::take(&mut *conn.out.borrow_mut());
        if !data.is_empty() && reason != CloseReason::ProtocolError {
            let _ = futures::future::select(
                Box::pin(stream.write_all(&data)),
                Box::pin(glommio::timer::sleep(std::time::Duration::from_millis(100))),
            )
            .await;
        }
    }
    shard.connection_closed(key, &conn, reason);
}

/// Decodes and handles every complete packet in `buf`.
/// The connection's output or queue is above its watermark (or it was marked slow): it
/// needs its acks read to drain.
fn is_behind(conn: &ConnShared) -> bool {
    conn.congested.get() || conn.slow.get()
}

/// The connection holds as many packets as it may while publishers are held back.
fn held_full(shard: &Shard, conn: &ConnShared) -> bool {
    conn.held_bytes() >= shard.cfg.limits.max_write_buffer
}

/// Packets that never wait behind a held PUBLISH: acks of server-to-client flows and
/// PINGREQ. None of them can refer to a held packet (a PUBREL follows our PUBREC, which a
/// held PUBLISH has not had), and processing them is what drains a connection.
fn bypasses_hold(p: &Packet) -> bool {
    matches!(
        p,
        Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::PubRel(_)
            | Packet::PingReq
    )
}

fn held_cost(p: &Packet) -> usize {
    match p {
        Packet::Publish(p) => p.topic.len() + p.payload.len(),
        _ => 64,
    }
}

/// Decodes and handles every complete packet in `buf`, after the packets held while
/// publishers were held back. Returns `Ok(true)` when it stopped for flow control with
/// work left (in `buf` or held).
fn process(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    slot: usize,
    buf: &mut BytesMut,
    opts: &DecodeOptions,
) -> Result<bool, CloseReason> {
    process_with(shard, conn, slot, buf, opts, false)
}

/// [`process`]; with `release` (the connection is ending) nothing is held or paused: what
/// was read is handled, as it would have been without flow control.
fn process_with(
    shard: &Rc<Shard>,
    conn: &Rc<ConnShared>,
    slot: usize,
    buf: &mut BytesMut,
    opts: &DecodeOptions,
    release: bool,
) -> Result<bool, CloseReason> {
    loop {
        let holding_back = !release && shard.holding_back();
        // Flow control: stop between packets while a subscriber on this shard is behind,
        // so one read turn cannot push it far past its soft watermark. Returns true with
        // the rest left in `buf`. A connection that is itself behind goes on reading (for
        // its acks) and holds what it must not process now.
        if !release
            && shard.output_congested()
            && (!is_behind(conn) || held_full(shard, conn))
            && (!buf.is_empty() || conn.holding())
        {
            return Ok(true);
        }
        let held_next = if holding_back {
            None
        } else {
            conn.unhold(held_cost)
        };
        let packet = match held_next {
            Some(p) => p,
            None => {
                if holding_back && held_full(shard, conn) {
                    return Ok(!buf.is_empty());
                }
                let packet = match decode(buf, opts) {
                    Ok(Some(p)) => p,
                    Ok(None) => return Ok(false),
                    Err(e) => {
                        shard.count(|m| m.malformed_packets += 1);
                        tracing::info!(error = %e, kind = e.kind(), "malformed packet: connection closed");
                        disconnect_v5(conn, opts.version, e.reason_code());
                        return Err(CloseReason::ProtocolError);
                    }
                };
                if let Packet::Publish(p) = &packet {
                    shard.count(|m| m.publishes_received += 1);
                    if p.topic.levels().count() > shard.cfg.limits.max_topic_levels {
                        tracing::info!(topic = %p.topic, "topic deeper than max_topic_levels: connection closed");
                        disconnect_v5(conn, opts.version, ReasonCode::TOPIC_NAME_INVALID);
                        return Err(CloseReason::ProtocolError);
                    }
                }
                // Checked only while holding back: nothing extra per packet otherwise.
                if holding_back
                    && !bypasses_hold(&packet)
                    && (matches!(packet, Packet::Publish(_)) || conn.holding())
                {
                    // Unacknowledged while held: a QoS 1/2 publisher's window fills and it
                    // stops sending, which is MQTT's own back-pressure.
                    let cost = held_cost(&packet);
                    conn.hold(packet, cost);
                    continue;
                }
                packet
            }
        };
        // The ack of a retained PUBLISH whose topic another shard stores waits for that
        // shard; responses after it wait too, to keep their order.
        let defer_ack = matches!(&packet, Packet::Publish(p)
            if p.retain && p.qos != QoS::AtMostOnce && shard.retained_elsewhere(&p.topic));
        let capture = defer_ack || !conn.deferred.borrow().is_empty();
        let mut scratch = BytesMut::new();
        let action = {
            let mut st = shard.state.borrow_mut();
            let Some(entry) = st.sessions.get_mut(slot) else {
                return Err(CloseReason::ProtocolError);
            };
            let a = if capture {
                entry.session.handle(packet, &mut scratch)
            } else {
                entry.session.handle(packet, &mut conn.out.borrow_mut())
            };
            conn.queued.set(entry.session.queued_len());
            a
        };
        // Acks move queued messages into the window.
        shard.note_drained(conn);
        let action = match action {
            Ok(Some(Action::Route(m))) if defer_ack => {
                shard.route_deferring_ack(m, conn, scratch);
                Ok(None)
            }
            other => {
                shard.respond(conn, scratch);
                other
            }
        };
        match action {
            Ok(None) => {}
            Ok(Some(Action::Route(m))) => shard.route(m),
            Ok(Some(Action::Subscribe {
                packet_id,
                added,
                codes,
            })) => shard.subscribe(conn, slot, packet_id, added, codes),
            Ok(Some(Action::Unsubscribe(filters))) => shard.unsubscribe(slot, &filters),
            Ok(Some(Action::Disconnect { publish_will })) => {
                return Err(CloseReason::ClientDisconnect { publish_will });
            }
            Err(e) => {
                shard.count(|m| m.protocol_errors += 1);
                tracing::info!(error = %e, "protocol violation: connection closed");
                disconnect_v5(conn, opts.version, e.reason_code());
                return Err(CloseReason::ProtocolError);
            }
        }
        // Acks and deliveries written so far go out with this read turn.
        if !conn.out.borrow().is_empty() {
            conn.wake.notify();
        }
    }
}

/// 5.0: tells the client why the server closes (3.x simply closes).
fn disconnect_v5(conn: &ConnShared, version: ProtocolVersion, reason: ReasonCode) {
    if version.is_v5() {
        let mut out = conn.out.borrow_mut();
        out.clear();
        let _ = Packet::Disconnect(Disconnect {
            reason,
            properties: Properties::new(),
        })
        .encode(version, &mut out);
    }
}
