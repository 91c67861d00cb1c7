//! The connection task after CONNECT: one task owns the socket and alternates between
//! writing what was queued for the client (one `write` for everything pending) and
//! reading (every complete frame of a read is processed before the next read).
//! Deliveries from other connections or shards append to the connection's write buffer
//! and wake the task; they never wait for the socket.
//!
//! **Owns:** the socket's reads and writes, the read buffer, and the task's loop.
//!
//! **Must not touch:** session or routing state directly: packets go to
//! [`super::process`], which calls the shard.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};

use super::connection::ConnId;
use super::connection::{CloseReason, ConnShared};
use super::negotiated::Negotiated;
use super::process::{held_full, is_behind, process, process_with};
use super::shard::Shard;
use super::transport::Transport;
use crate::protocol::*;

/// Largest read chunk; reads start at `read_buffer_size` and double while they fill it.
pub(crate) const MAX_CHUNK: usize = 64 * 1024;
/// First read chunk of a new connection, before CONNECT.
pub(crate) const CONNECT_CHUNK: usize = 256;

pub(crate) enum ReadEv {
    Data(usize),
    Eof,
    Woken,
}

/// One read into `into`, or an early return when the connection is woken (output to
/// write, or a close request). Dropping the read is safe: glommio reads without a
/// submitted buffer (readiness, then a non-blocking `recv`).
pub(crate) async fn read_or_wake<S: Transport>(
    stream: &mut S,
    into: &mut [u8],
    conn: &ConnShared,
) -> ReadEv {
    read_or_wake_or(stream, into, conn, futures::future::pending::<()>()).await
}

/// Like [`read_or_wake`], and also returns `Woken` when `also` completes.
pub(crate) async fn read_or_wake_or<S: Transport>(
    stream: &mut S,
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
pub(crate) async fn read_some<S: Transport>(
    stream: &mut S,
    buf: &mut BytesMut,
    chunk: usize,
    conn: &ConnShared,
) -> ReadEv {
    read_some_or(stream, buf, chunk, conn, futures::future::pending::<()>()).await
}

/// Like [`read_some`], and also returns `Woken` when `also` completes.
pub(crate) async fn read_some_or<S: Transport>(
    stream: &mut S,
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
pub(crate) async fn write_out<S: Transport>(
    shard: &Shard,
    stream: &mut S,
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
                shard.traffic.borrow_mut().write_calls += 1;
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
    if !stream.framed() {
        // glommio's TCP flush is a no-op: nothing to wait for.
        return Ok(());
    }
    // Boxed: only framed transports pay for its state, not every connection's task.
    Box::pin(flush_framed(stream, conn)).await
}

/// A framed transport (TLS, WebSockets) sends its last records or frames on flush; bounded
/// like the writes, by a close request.
async fn flush_framed<S: Transport>(stream: &mut S, conn: &ConnShared) -> Result<(), CloseReason> {
    loop {
        if let Some(r) = conn.close.get() {
            return Err(r);
        }
        let done = {
            let flush = stream.flush();
            let wake = conn.wake.notified();
            futures::pin_mut!(flush, wake);
            match select(flush, wake).await {
                Either::Left((Ok(()), _)) => true,
                Either::Left((Err(_), _)) => return Err(CloseReason::SocketClosed),
                Either::Right(_) => false,
            }
        };
        if done {
            return Ok(());
        }
    }
}

/// Writes `bytes` and flushes, giving up after `limit`; true when everything went out.
pub(crate) async fn write_within<S: Transport>(
    stream: &mut S,
    bytes: &[u8],
    limit: std::time::Duration,
) -> bool {
    // Flushed too: a framed stream sends its last records on flush.
    let write = Box::pin(async {
        stream.write_all(bytes).await?;
        stream.flush().await
    });
    let timer = Box::pin(glommio::timer::sleep(limit));
    matches!(
        futures::future::select(write, timer).await,
        futures::future::Either::Left((Ok(()), _))
    )
}

pub(crate) async fn flush<S: Transport>(
    shard: &Shard,
    stream: &mut S,
    conn: &ConnShared,
) -> Result<(), CloseReason> {
    loop {
        // What waits for the disk is written once it is there (the commit wakes the task).
        if conn.durable_wait.get() != 0 {
            return Ok(());
        }
        let data = std::mem::take(&mut *conn.out.borrow_mut());
        if data.is_empty() {
            shard.note_drained(conn);
            return Ok(());
        }
        let mut data = data;
        shard.count_sent(&data, conn.version.get().is_v5());
        conn.writing.set(data.len());
        let r = write_out(shard, stream, &data, conn).await;
        // Interrupted (the connection is closing), `writing` keeps what was left: when a
        // packet was cut, nothing may follow it on the socket (see the end of `serve`
        // and `Shard::tell_taken_over`).
        if r.is_ok() {
            conn.writing.set(0);
        }
        r?;
        shard.note_drained(conn);
        // Room again for a stream of retained messages paused on this connection.
        shard.resume_retained(conn.session.get());
        data.clear();
        // Keep a modest buffer for the next round; give a big one back.
        let mut out = conn.out.borrow_mut();
        if out.is_empty() && data.capacity() <= 16 * 1024 {
            *out = data;
        }
    }
}

/// Waits (at most `limit`) until nothing in the connection's output waits for the disk;
/// false if something still does.
async fn wait_durable(conn: &ConnShared, limit: std::time::Duration) -> bool {
    let until = Instant::now() + limit;
    while conn.durable_wait.get() != 0 {
        if !woken_before(conn.wake.notified(), until).await {
            return false;
        }
    }
    true
}

/// Waits until `woken` completes or `deadline` passes, whichever is first; false, without
/// waiting, when the deadline has passed already. For loops that re-check a condition
/// after each wake-up within one time limit.
pub(crate) async fn woken_before(woken: impl std::future::Future, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let timer = glommio::timer::sleep(left);
    futures::pin_mut!(woken, timer);
    let _ = select(woken, timer).await;
    true
}

/// What the connection keeps of its CONNECT: the will, the user name, the enhanced
/// authentication method.
fn setup_connection(conn: &ConnShared, connect: &Connect, domain: u16) {
    // The will lives as long as the connection: copied out of the read buffer it was
    // decoded from, which would otherwise stay pinned (a whole read chunk per connection).
    *conn.will.borrow_mut() = connect.will.as_ref().map(|w| {
        Box::new(Will {
            topic: w.topic.detached(),
            payload: Bytes::copy_from_slice(&w.payload),
            qos: w.qos,
            retain: w.retain,
            properties: w.properties.detached(),
        })
    });
    // A client that authenticated with a method may re-authenticate with it.
    if let Some(state) = super::auth::AuthState::of(connect, domain) {
        conn.put_auth(state);
    }
}

/// Serves an accepted CONNECT on the session's home shard until the connection ends.
pub(crate) async fn serve<S: Transport>(
    shard: &Rc<Shard>,
    stream: &mut S,
    key: ConnId,
    conn: &Rc<ConnShared>,
    connect: Box<Connect>,
    mut buf: BytesMut,
    admit: super::connect::Admit,
) {
    // The terms live in this block only: a local that was borrowed stays in the task's
    // state until its scope ends, even once moved, so outside a block it would be carried
    // for the life of every connection.
    let (attached, version, max_packet_in) = {
        let mut terms = Negotiated::new(&connect, &shard.cfg, shard.limits, admit.assigned_id);
        terms.domain = admit.domain;
        conn.keep_alive.set(terms.keep_alive);
        conn.last_read.set(Instant::now());
        setup_connection(conn, &connect, terms.domain);
        (
            shard.attach(conn, &terms),
            terms.version,
            terms.max_packet_in,
        )
    };
    let (slot, present) = match attached {
        Ok(a) => a,
        Err(code) => {
            let mut out = BytesMut::new();
            shard.refusal(
                &mut out,
                version,
                code,
                super::connect::client_max(&connect),
            );
            // A client that does not read cannot hold the connection open.
            shard.count_sent(&out, version.is_v5());
            write_within(stream, &out, std::time::Duration::from_secs(1)).await;
            tracing::info!(client_id = %connect.client_id, code = %code, "CONNECT refused");
            shard.connection_closed(key, conn, CloseReason::Refused);
            return;
        }
    };
    super::conn_log::connected(stream.socket(), &connect, present);
    // Nothing of the CONNECT is needed any more; it must not stay in this task's state
    // for the life of the connection (its fields are slices of the first read buffer).
    drop(connect);
    let opts = DecodeOptions {
        version,
        max_packet_size: max_packet_in,
    };
    let mut chunk = shard.cfg.limits.read_buffer_size.min(MAX_CHUNK);
    // Packets the client sent right behind CONNECT.
    let mut result = process(shard, conn, slot, &mut buf, &opts);
    shard.flush_mesh();
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
        // connection's task stays small. Output that waits for the disk stays in `out`
        // until the commit wakes the task.
        if (!conn.out.borrow().is_empty() || conn.writing.get() > 0) && conn.durable_wait.get() == 0
        {
            if let Err(r) = Box::pin(flush(shard, stream, conn)).await {
                break r;
            }
        } else {
            shard.note_drained(conn);
        }
        // A connection that is behind keeps being read while publishers are held back:
        // its acks free its window, which is what drains it. Its own PUBLISHes are held
        // (see `process`) until its held budget is full.
        let reads_while_held = is_behind(conn) && !held_full(shard, conn);
        if shard.output_congested() && !reads_while_held {
            // Flow control: a subscriber on this shard is behind; stop reading publishers
            // until it catches up (its own task keeps writing meanwhile).
            let drained = shard.output_drained.wait();
            let wake = conn.wake.notified();
            futures::pin_mut!(drained, wake);
            let _ = select(drained, wake).await;
            continue;
        }
        if shard.data_congested() && !reads_while_held {
            // Back-pressure: this publisher waits until the other shards drain.
            let drained = shard.until_data_uncongested();
            let wake = conn.wake.notified();
            futures::pin_mut!(drained, wake);
            let _ = select(drained, wake).await;
            continue;
        }
        let holding = conn.holding();
        if paused || (holding && !shard.holding_back()) {
            // Packets left over from before a flow-control pause, or held while it lasted.
            result = process(shard, conn, slot, &mut buf, &opts);
            shard.flush_mesh();
            continue;
        }
        if buf.capacity() == 0 {
            // Idle: wait for data holding no read buffer. The first byte is read into the
            // task's own one-byte array (glommio waits for readiness without a buffer);
            // only then is a buffer allocated, so an idle connection costs no buffer
            // memory. (glommio's `peek` would allocate a page-aligned buffer per call.)
            let mut one = [0u8; 1];
            match read_or_wake(stream, &mut one, conn).await {
                ReadEv::Eof => break conn.close.get().unwrap_or(CloseReason::SocketClosed),
                ReadEv::Woken => {
                    result = Ok(false);
                    continue;
                }
                ReadEv::Data(_) => {
                    shard.count_read(1);
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
                stream,
                &mut buf,
                chunk,
                conn,
                shard.until_released(),
            ))
            .await
        } else {
            Box::pin(read_some(stream, &mut buf, chunk, conn)).await
        };
        match ev {
            ReadEv::Data(n) => {
                shard.count_read(n);
                conn.last_read.set(Instant::now());
                if n == chunk {
                    chunk = (chunk * 2).min(MAX_CHUNK);
                } else if buf.is_empty() {
                    chunk = shard.cfg.limits.read_buffer_size.min(MAX_CHUNK);
                }
                result = process(shard, conn, slot, &mut buf, &opts);
                shard.flush_mesh();
                // A quiet connection gives its read buffer back.
                if buf.is_empty() && n < chunk {
                    buf = BytesMut::new();
                }
            }
            ReadEv::Eof => break conn.close.get().unwrap_or(CloseReason::SocketClosed),
            ReadEv::Woken => result = Ok(false),
        }
    };
    if reason == CloseReason::SocketClosed && conn.holding() {
        // The client is gone; what it sent before leaving is still handled (its QoS 0
        // publishes, its DISCONNECT), as it would have been without the hold.
        let mut rest = BytesMut::new();
        if let Err(r) = process_with(shard, conn, slot, &mut rest, &opts, true) {
            // A held DISCONNECT (no will) or a protocol error decides how it ends.
            reason = r;
        }
        shard.flush_mesh();
    }
    conn.clear_held();
    if version.is_v5() {
        let code = match reason {
            CloseReason::TakenOver => Some((
                ReasonCode::SESSION_TAKEN_OVER,
                "another connection took the session over",
            )),
            CloseReason::KeepAliveTimeout => Some((
                ReasonCode::KEEP_ALIVE_TIMEOUT,
                "nothing received for 1.5 times the keep alive",
            )),
            CloseReason::ServerShutdown => {
                Some((ReasonCode::SERVER_SHUTTING_DOWN, "server shutting down"))
            }
            _ => None,
        };
        if let Some((code, why)) = code {
            let mut out = conn.out.borrow_mut();
            super::process::write_disconnect(&mut out, code, why, shard.client_max(conn));
        }
    }
    if matches!(
        reason,
        CloseReason::ProtocolError
            | CloseReason::ServerShutdown
            | CloseReason::KeepAliveTimeout
            | CloseReason::ClientDisconnect { .. }
    ) {
        // Best effort: what was queued before the end (acks, a 5.0 DISCONNECT). After a
        // protocol error a 3.x client gets nothing more; a 5.0 client gets only the
        // DISCONNECT with the reason (`disconnect_v5` leaves nothing else in `out`).
        // Acks that wait for the disk go only once it has them.
        if !wait_durable(conn, std::time::Duration::from_secs(1)).await {
            conn.out.borrow_mut().clear();
        }
        let data = std::mem::take(&mut *conn.out.borrow_mut());
        // Not after a packet cut short (its rest would be read as the next packet).
        let at_boundary = conn.writing.get() == 0;
        if at_boundary
            && !data.is_empty()
            && (reason != CloseReason::ProtocolError || version.is_v5())
        {
            // Marked as writing, so a takeover meanwhile does not slip its DISCONNECT
            // into these bytes.
            conn.writing.set(data.len());
            shard.count_sent(&data, version.is_v5());
            write_within(stream, &data, std::time::Duration::from_millis(100)).await;
        }
    }
    // A transport with its own end says it (TLS close_notify, a WebSocket Close frame), so
    // the client sees a clean close rather than a cut; bounded like the last write. Not
    // after the socket failed or was shut down (a takeover), and not for plain TCP, whose
    // close stays the socket's. (Both ends are whole records / frames of their own, valid
    // even after an MQTT packet cut short.)
    if stream.framed() && !matches!(reason, CloseReason::SocketClosed | CloseReason::TakenOver) {
        let _ = futures::future::select(
            Box::pin(stream.close()),
            Box::pin(glommio::timer::sleep(std::time::Duration::from_millis(100))),
        )
        .await;
    }
    if let Some(why) = stream.failure() {
        shard.ws_failed(why);
    }
    shard.connection_closed(key, conn, reason);
}
