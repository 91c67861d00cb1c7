//! The CONNECT phase of a connection: accepted on any shard, the first packet must be
//! CONNECT; it is checked (client identifier, authentication hook), then the connection
//! either stays (this shard is the client id's home) or moves home with the bytes already
//! read ([`super::ShardMsg::Adopt`]).
//!
//! **Owns:** everything before a session is attached.
//!
//! **Must not touch:** sessions (attaching is [`super::lifecycle`]'s job).

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use bytestring::ByteString;
use glommio::net::TcpStream;

use super::admission::Admitted;
use super::auth::{ConnectAuth, ConnectStep};
use super::connection::{CloseReason, ConnId, ConnShared};
use super::serve::{read_some, serve, write_within, ReadEv, CONNECT_CHUNK, MAX_CHUNK};
use super::shard::Shard;
use super::tls::TlsStream;
use super::transport::{Listening, Transport};
use super::{home_shard, Adopt, ShardMsg};
use crate::protocol::*;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Spawns the task of a connection accepted on this shard. The connection is registered
/// here, before the task exists, so that the task is wrapped in one place
/// ([`spawn_serving`], [`guard_end`]): a panic in it (a bug; bad input never panics) is
/// caught, counted and logged, and the connection is unregistered and closed like any
/// other, at no memory cost per connection beyond the references the task already holds.
pub(crate) fn spawn_accepted(shard: Rc<Shard>, stream: TcpStream, listening: Arc<Listening>) {
    let _ = stream.set_nodelay(true);
    // Only a per-IP cap needs the address. An IPv4 client is one address however it
    // arrives (an IPv4-mapped IPv6 one included).
    let peer = listening
        .caps
        .per_ip
        .as_ref()
        .and_then(|_| stream.peer_addr().ok())
        .map(|a| a.ip().to_canonical());
    let admitted = match listening.caps.admit(peer) {
        Ok(a) => a,
        Err(refused) => {
            // Closed at once, before any byte is read: the caps are about how many
            // sockets a client holds, and an answer would cost what they guard.
            match refused {
                super::admission::Refused::Ip => {
                    shard.count(|m| m.connections_refused_ip += 1);
                    shard.log_transport_failure("connection over max_connections_per_ip");
                }
                super::admission::Refused::Listener => {
                    shard.count(|m| m.connections_refused_limit += 1);
                    shard.log_transport_failure("connection over the listener's max_connections");
                }
            }
            return;
        }
    };
    let timeout = u16::try_from(shard.cfg.limits.connect_timeout).unwrap_or(u16::MAX);
    let Some((key, conn)) = shard.register_conn(stream.socket(), timeout) else {
        // "Server busy" is answered in MQTT, so only where MQTT is spoken from the first
        // byte; a TLS connection beyond the limit is closed.
        if listening.tls.is_none() && listening.websocket.is_none() {
            refuse_busy(&shard, stream, listening.index);
        }
        return;
    };
    shard.count(|m| m.connections_accepted += 1);
    match listening.tls.as_ref().map(|c| c.get()) {
        None => accepted(shard, stream, key, conn, listening, admitted),
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(tls) => accepted(
                shard,
                TlsStream::new(stream, tls),
                key,
                conn,
                listening,
                admitted,
            ),
            Err(e) => {
                tracing::error!(error = %e, "TLS connection state not created: closed");
                shard.connection_closed(key, &conn, CloseReason::ServerShutdown);
            }
        },
    }
}

/// The task of an accepted connection (see [`spawn_accepted`]).
fn accepted<S: Transport>(
    shard: Rc<Shard>,
    stream: S,
    key: ConnId,
    conn: Rc<ConnShared>,
    listening: Arc<Listening>,
    admitted: Admitted,
) {
    glommio::spawn_local(async move {
        let phase = async {
            let Some((path, max_frame)) = &listening.websocket else {
                return connect_phase(&shard, stream, key, &conn, &listening, admitted).await;
            };
            let mut stream = stream;
            // The upgrade (and, for WSS, the TLS handshake inside it) has the connect
            // timeout too: a client that sends nothing, or trickles, is closed.
            let limit = std::time::Duration::from_secs(shard.cfg.limits.connect_timeout.max(1));
            let upgraded = {
                let upgrade = Box::pin(super::ws::upgrade(&mut stream, path));
                let timer = Box::pin(glommio::timer::sleep(limit));
                match futures::future::select(upgrade, timer).await {
                    futures::future::Either::Left((r, _)) => r,
                    futures::future::Either::Right(_) => Err(super::ws::WsError::NotUpgrade(
                        "no WebSocket upgrade within the connect timeout",
                    )),
                }
            };
            match upgraded {
                Ok(rest) => {
                    let st = Box::new(super::ws::WsState::new(rest, *max_frame));
                    let ws = super::ws::WsStream::new(stream, st);
                    connect_phase(&shard, ws, key, &conn, &listening, admitted).await
                }
                Err(e) => {
                    if stream.handshake_incomplete() {
                        shard.tls_failed();
                    } else {
                        shard.ws_failed(e.why());
                    }
                    shard.connection_closed(key, &conn, CloseReason::ProtocolError);
                }
            }
        };
        if let Err(panic) = AssertUnwindSafe(phase).catch_unwind().await {
            guard_end(&shard, key, &conn, &*panic);
        }
    })
    .detach();
}

/// The CONNECT phase of an accepted connection, then its serving task when it stays here
/// (the serving task is spawned on its own, so this task's state, sized for the CONNECT
/// phase, is freed instead of being carried for the life of the connection).
async fn connect_phase<S: Transport>(
    shard: &Rc<Shard>,
    stream: S,
    key: ConnId,
    conn: &Rc<ConnShared>,
    listening: &Listening,
    admitted: Admitted,
) {
    let mut admitted = admitted;
    let phase = accept_phase(shard, stream, key, conn, listening, &mut admitted).await;
    if let Some((stream, connect, buf, assigned_id)) = phase {
        let terms = Admit {
            assigned_id,
            domain: listening.domain,
            listener: listener_index(listening),
        };
        spawn_serving(
            shard.clone(),
            stream,
            key,
            conn.clone(),
            connect,
            buf,
            terms,
            admitted,
        )
    }
}

/// Spawns the task of a connection moved here from the shard that accepted it.
pub(crate) fn spawn_adopted(shard: Rc<Shard>, a: Adopt) {
    let Adopt {
        transport,
        connect,
        rest,
        admitted,
        domain,
        listener,
    } = a;
    // A moved connection's id was the client's own: assigned ids hash to the shard that
    // accepted the connection, so they never move.
    let terms = Admit {
        assigned_id: false,
        domain,
        listener,
    };
    use super::transport::Arrived;
    match transport.arrive() {
        Arrived::Tcp(s) => adopted(shard, s, connect, rest, admitted, terms),
        Arrived::Tls(s) => adopted(shard, s, connect, rest, admitted, terms),
        Arrived::WsTcp(s) => adopted(shard, s, connect, rest, admitted, terms),
        Arrived::WsTls(s) => adopted(shard, s, connect, rest, admitted, terms),
    }
}

/// What the CONNECT phase decided that serving needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admit {
    /// The server assigned the client identifier (the CONNECT's was empty).
    pub assigned_id: bool,
    /// The hook stack of the listener that admitted the client.
    pub domain: u16,
    /// That listener's place in the configuration.
    pub listener: u16,
}

/// A listener's place as connections carry it (the configuration has far fewer than
/// 65,535 listeners; a larger index would only merge gauges).
fn listener_index(listening: &Listening) -> u16 {
    u16::try_from(listening.index).unwrap_or(u16::MAX)
}

fn adopted<S: Transport>(
    shard: Rc<Shard>,
    stream: S,
    connect: Box<Connect>,
    rest: BytesMut,
    admitted: Admitted,
    terms: Admit,
) {
    let Some((key, conn)) = shard.register_conn(stream.socket(), 0) else {
        // Its CONNECT is known: it is told at once.
        let Some(slot) = BusySlot::take(&shard) else {
            return;
        };
        let mut out = BytesMut::new();
        shard.refusal(
            &mut out,
            connect.version,
            ReasonCode::SERVER_BUSY,
            client_max(&connect),
        );
        let mut stream = stream;
        shard.count_sent(&out, false);
        glommio::spawn_local(async move {
            let _slot = slot;
            let _ = write_within(&mut stream, &out, BUSY_WAIT).await;
        })
        .detach();
        return;
    };
    spawn_serving(shard, stream, key, conn, connect, rest, terms, admitted);
}

/// Spawns the task that serves an accepted CONNECT on the session's home shard.
#[allow(clippy::too_many_arguments)]
fn spawn_serving<S: Transport>(
    shard: Rc<Shard>,
    stream: S,
    key: ConnId,
    conn: Rc<ConnShared>,
    connect: Box<Connect>,
    buf: BytesMut,
    terms: Admit,
    admitted: Admitted,
) {
    conn.framed.set(stream.framed());
    conn.listener.set(terms.listener);
    glommio::spawn_local(async move {
        // Its places under the listener's caps, given back when the task ends.
        let _admitted = admitted;
        let mut stream = stream;
        let r = AssertUnwindSafe(serve(&shard, &mut stream, key, &conn, connect, buf, terms))
            .catch_unwind()
            .await;
        if let Err(panic) = r {
            guard_end(&shard, key, &conn, &*panic);
        }
        // The socket closes only now, after the connection was unregistered.
        drop(stream);
    })
    .detach();
}

/// A connection task panicked: the connection is closed and unregistered as if its socket
/// had failed (its will is published), so it holds nothing and counts for nothing.
fn guard_end(
    shard: &Shard,
    key: ConnId,
    conn: &Rc<ConnShared>,
    panic: &(dyn std::any::Any + Send),
) {
    shard.count(|m| m.connection_panics += 1);
    tracing::error!(panic = %super::panic_message(panic), "connection task panicked; connection closed");
    super::guarded("panicked connection cleanup", || {
        shard.connection_closed(key, conn, CloseReason::SocketClosed)
    });
}

/// The CONNECT phase. Returns the CONNECT, the bytes read after it and whether the server
/// assigned the client identifier, when the connection is to be served on this shard;
/// None when it ended or moved home.
async fn accept_phase<S: Transport>(
    shard: &Rc<Shard>,
    mut stream: S,
    key: ConnId,
    conn: &Rc<ConnShared>,
    listening: &Listening,
    admitted: &mut Admitted,
) -> Option<(S, Box<Connect>, BytesMut, bool)> {
    let mut buf = BytesMut::new();
    let opts = DecodeOptions {
        version: ProtocolVersion::V3_1_1,
        max_packet_size: shard.cfg.limits.max_packet_size,
    };
    // CONNECT packets are small (typically under 100 bytes) and a burst of new
    // connections holds one of these buffers each: start small, double while reads fill it.
    let mut chunk = CONNECT_CHUNK.min(shard.cfg.limits.read_buffer_size);
    // The first packet must be CONNECT [MQTT-3.1.0-1].
    let first = match next_packet(shard, &mut stream, &mut buf, &opts, conn, &mut chunk).await {
        Ok(p) => p,
        Err(r) => {
            if stream.handshake_incomplete() {
                // Not TLS, a certificate refused, garbage, or too slow: the connection
                // never reached MQTT.
                shard.tls_failed();
            }
            if let Some(why) = stream.failure() {
                shard.ws_failed(why);
            }
            shard.connection_closed(key, conn, r);
            return None;
        }
    };
    let connect = match first {
        Ok(Packet::Connect(c)) => {
            shard.count_connect(listening.index, c.version);
            c
        }
        Ok(other) => {
            shard.count(|m| m.protocol_errors += 1);
            tracing::info!(packet = ?other.packet_type(), "first packet is not CONNECT [MQTT-3.1.0-1]: closed");
            shard.connection_closed(key, conn, CloseReason::ProtocolError);
            return None;
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
                    // The client's Maximum Packet Size is unknown: no Reason String.
                    shard.refusal(&mut out, ProtocolVersion::V5, e.reason_code(), 0)
                }
                (DecodeError::UnsupportedProtocolLevel(_), _) => shard.refusal(
                    &mut out,
                    ProtocolVersion::V3_1_1,
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                    0,
                ),
                _ => {}
            }
            if !out.is_empty() {
                let _ = write_bounded(&mut stream, &out, shard).await;
            }
            shard.connection_closed(key, conn, CloseReason::ProtocolError);
            return None;
        }
    };
    let mut connect = connect;
    // Identify the client; refusals get CONNACK with the code and a close.
    if listening.identity_as_username {
        // The certificate authenticated the client: its Common Name is the user name.
        match stream.peer_identity() {
            Some(cn) => {
                connect.username = Some(ByteString::from(cn));
                connect.password = None;
            }
            None => {
                // A verified certificate without a Common Name: no identity to use.
                shard.count(|m| m.auth_refused += 1);
                tracing::info!("client certificate without a Common Name: refused");
                let mut out = BytesMut::new();
                shard.refusal(
                    &mut out,
                    connect.version,
                    ReasonCode::NOT_AUTHORIZED,
                    client_max(&connect),
                );
                let _ = write_bounded(&mut stream, &out, shard).await;
                shard.connection_closed(key, conn, CloseReason::Refused);
                return None;
            }
        }
    }
    let assigned = match check_connect(shard, &mut connect, listening) {
        Ok(assigned) => assigned,
        Err(code) => {
            let mut out = BytesMut::new();
            shard.refusal(&mut out, connect.version, code, client_max(&connect));
            let _ = write_bounded(&mut stream, &out, shard).await;
            shard.count(|m| m.connects_refused += 1);
            shard.log_refused_connect(&connect.client_id, code);
            shard.connection_closed(key, conn, CloseReason::Refused);
            return None;
        }
    };
    // 5.0 enhanced authentication runs here, before CONNACK (see `super::auth`).
    if let Some(mut exchange) = ConnectAuth::new(shard.auth(listening.domain), &connect) {
        let opts = DecodeOptions {
            version: ProtocolVersion::V5,
            ..opts
        };
        let mut step = exchange.start(&mut connect);
        loop {
            let refused = match step {
                ConnectStep::Done => break,
                ConnectStep::Refused(code) => code,
                ConnectStep::Continue(out) => {
                    if !write_bounded(&mut stream, &out, shard).await {
                        shard.connection_closed(key, conn, CloseReason::SocketClosed);
                        return None;
                    }
                    match next_packet(shard, &mut stream, &mut buf, &opts, conn, &mut chunk).await {
                        Ok(Ok(p)) => {
                            step = exchange.next(p, &mut connect);
                            continue;
                        }
                        Ok(Err(e)) => {
                            shard.count(|m| m.malformed_packets += 1);
                            e.reason_code()
                        }
                        Err(r) => {
                            shard.connection_closed(key, conn, r);
                            return None;
                        }
                    }
                }
            };
            let mut out = BytesMut::new();
            shard.refusal(&mut out, connect.version, refused, client_max(&connect));
            let _ = write_bounded(&mut stream, &out, shard).await;
            shard.count(|m| m.auth_refused += 1);
            tracing::info!(client_id = %connect.client_id, code = %refused, "enhanced authentication refused");
            shard.connection_closed(key, conn, CloseReason::Refused);
            return None;
        }
    }
    let home = home_shard(&connect.client_id, shard.shards);
    if home != shard.id {
        // Move to the home shard with whatever the client sent after CONNECT.
        // The original goes before the home shard starts reading the duplicate: this
        // shard's reactor lets go of the socket first.
        match stream.into_moving() {
            Ok(transport) => {
                shard.connection_closed(key, conn, CloseReason::Migrated);
                shard.count(|m| m.connections_migrated += 1);
                shard.send_control(
                    home,
                    ShardMsg::Adopt(Box::new(Adopt {
                        transport,
                        connect,
                        rest: buf,
                        admitted: std::mem::take(admitted),
                        domain: listening.domain,
                        listener: listener_index(listening),
                    })),
                );
                shard.control.flush();
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move a connection to its home shard: closed");
                shard.connection_closed(key, conn, CloseReason::ServerShutdown);
            }
        }
        return None;
    }
    Some((stream, connect, buf, assigned))
}

/// Writes what the CONNECT phase answers (a refusal, an AUTH), for at most the connect
/// timeout: a client that does not read cannot hold the connection (and its slot) open.
/// True when everything was written.
async fn write_bounded<S: Transport>(stream: &mut S, bytes: &[u8], shard: &Shard) -> bool {
    let limit = std::time::Duration::from_secs(shard.cfg.limits.connect_timeout.max(1));
    // CONNACK refusals and AUTH: no PUBLISH, so the protocol version does not matter.
    shard.count_sent(bytes, false);
    write_within(stream, bytes, limit).await
}

/// Connections beyond `max_connections` a shard reads the CONNECT of at once, to answer
/// "server busy" (CONNACK 0x89; 3.x: 0x03 Server unavailable) rather than a bare close;
/// beyond it they are closed at once. Each holds a socket for at most [`BUSY_WAIT`] and a
/// CONNECT-sized buffer.
const MAX_BUSY_REFUSALS: usize = 64;

/// How long a refused connection has to send its CONNECT and read the answer.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection beyond `max_connections` (counted in `connections_refused_limit`): told
/// "server busy" when its CONNECT arrives within [`BUSY_WAIT`], while at most
/// [`MAX_BUSY_REFUSALS`] such answers are under way; otherwise closed at once.
/// Its CONNECT is counted under `listener` like any other.
fn refuse_busy(shard: &Rc<Shard>, stream: TcpStream, listener: usize) {
    let Some(slot) = BusySlot::take(shard) else {
        return;
    };
    glommio::spawn_local(async move {
        // Held for the task's life, released however it ends.
        let busy = slot;
        let mut stream = stream;
        let connect = {
            let read = async {
                let mut buf = BytesMut::new();
                let opts = DecodeOptions {
                    version: ProtocolVersion::V3_1_1,
                    max_packet_size: CONNECT_CHUNK as u32 * 4,
                };
                loop {
                    let before = buf.len();
                    match decode(&mut buf, &opts) {
                        Ok(Some(Packet::Connect(c))) => return Some((c, before - buf.len())),
                        // The buffer bound applies to an incomplete CONNECT only: bytes
                        // pipelined after a whole one do not matter.
                        Ok(None) if buf.len() < CONNECT_CHUNK * 4 => {}
                        _ => return None,
                    }
                    let mut chunk = [0u8; 512];
                    match futures::AsyncReadExt::read(&mut stream, &mut chunk).await {
                        Ok(n) if n > 0 => {
                            busy.0.count_read(n);
                            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                        }
                        _ => return None,
                    }
                }
            };
            let timer = glommio::timer::sleep(BUSY_WAIT);
            futures::pin_mut!(read, timer);
            match futures::future::select(read, timer).await {
                futures::future::Either::Left((c, _)) => c,
                futures::future::Either::Right(_) => None,
            }
        };
        if let Some((connect, len)) = connect {
            let mut out = BytesMut::new();
            busy.0.refusal(
                &mut out,
                connect.version,
                ReasonCode::SERVER_BUSY,
                client_max(&connect),
            );
            busy.0.count_connect(listener, connect.version);
            busy.0.count_received(&Packet::Connect(connect), len);
            busy.0.count_sent(&out, false);
            let _ = write_within(&mut stream, &out, BUSY_WAIT).await;
        }
    })
    .detach();
}

/// One of a shard's [`MAX_BUSY_REFUSALS`] places, given back on drop (a refusal task that
/// ends, however it ends).
struct BusySlot(Rc<Shard>);

impl BusySlot {
    /// A place for telling a connection beyond `max_connections` "server busy"; None (the
    /// connection is just closed) while stopping or when every place is taken. Logs which.
    fn take(shard: &Rc<Shard>) -> Option<BusySlot> {
        if shard.stopping.get() || shard.busy_refusals.get() >= MAX_BUSY_REFUSALS {
            tracing::warn!(
                shard = shard.id,
                "connection limit reached: connection closed"
            );
            return None;
        }
        tracing::warn!(
            shard = shard.id,
            "connection limit reached: connection refused (server busy)"
        );
        shard.busy_refusals.set(shard.busy_refusals.get() + 1);
        Some(BusySlot(shard.clone()))
    }
}

impl Drop for BusySlot {
    fn drop(&mut self) {
        let n = &self.0.busy_refusals;
        n.set(n.get().saturating_sub(1));
    }
}

/// The largest packet the client of `connect` accepts (5.0 Maximum Packet Size).
pub(crate) fn client_max(connect: &Connect) -> u32 {
    connect.properties.maximum_packet_size.unwrap_or(u32::MAX)
}

/// Reads until `buf` holds a whole packet and decodes it (a decode error is the caller's
/// to answer); `Err` with the reason when the connection ended or was told to close
/// (the connect timeout) first.
async fn next_packet<S: Transport>(
    shard: &Shard,
    stream: &mut S,
    buf: &mut BytesMut,
    opts: &DecodeOptions,
    conn: &ConnShared,
    chunk: &mut usize,
) -> Result<Result<Packet, DecodeError>, CloseReason> {
    loop {
        let before = buf.len();
        match decode(buf, opts) {
            Ok(Some(p)) => {
                shard.count_received(&p, before - buf.len());
                return Ok(Ok(p));
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(e)),
        }
        match read_some(stream, buf, *chunk, conn).await {
            ReadEv::Data(n) => {
                shard.count_read(n);
                if n == *chunk {
                    *chunk = (*chunk * 2).min(MAX_CHUNK);
                }
            }
            ReadEv::Eof => return Err(CloseReason::SocketClosed),
            ReadEv::Woken => {
                if let Some(r) = conn.close.get() {
                    return Err(r);
                }
            }
        }
    }
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
/// authentication. Assigns an identifier where the protocol allows an empty one (and
/// returns true then).
fn check_connect(
    shard: &Shard,
    c: &mut Connect,
    listening: &Listening,
) -> Result<bool, ReasonCode> {
    let mut assigned = false;
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
        assigned = true;
    } else if c.version == ProtocolVersion::V3_1 && c.client_id.len() > 23 {
        // MQTT 3.1 §3.1: "Client Identifier ... between 1 and 23 characters" (mosquitto
        // refuses longer ones the same way).
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    if c.username.is_none() && !listening.allow_anonymous {
        return Err(ReasonCode::NOT_AUTHORIZED);
    }
    // With the certificate's identity as user name, the certificate was the
    // authentication (mosquitto's use_identity_as_username: no password is checked).
    let auth = shard.auth(listening.domain);
    if !listening.identity_as_username {
        auth.authenticate(&c.client_id, c.username.as_deref(), c.password.as_deref())?;
    }
    if let Some(w) = &c.will {
        // A will the client may not publish is refused with the CONNECT, as mosquitto
        // does, rather than dropped silently when it is due.
        let who = super::hooks::ClientInfo {
            client_id: &c.client_id,
            username: c.username.as_deref(),
        };
        let rights = shard.rights_for(listening.domain, who.client_id, who.username);
        if super::stats::is_sys(&w.topic)
            || rights.is_some_and(|r| !r.publish(&w.topic))
            || !auth.authorize_publish(&who, &w.topic)
        {
            shard.count(|m| m.publish_denied += 1);
            shard.log_denied("will", who.client_id, &w.topic);
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(assigned)
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
