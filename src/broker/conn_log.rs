//! Connection lifecycle lines, as an operator used to mosquitto expects them: a client
//! connected (its address, client identifier, protocol version, clean start, keep alive,
//! user name) and a client disconnected (why). At `info`: each costs a check of the level
//! when it is off. Refused CONNECTs are logged by the shard, at most once a second, so a
//! flood of wrong passwords cannot flood the log (`Shard::log_refused_connect`).
//!
//! **Owns:** the wording and fields of these lines. **Must not touch:** broker state: it
//! formats what it is given.

use std::os::fd::RawFd;

use super::connection::CloseReason;
use crate::protocol::Connect;

/// A client was admitted on the socket `fd` (still open: its task calls this).
pub(crate) fn connected(fd: RawFd, connect: &Connect, session_present: bool) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    tracing::info!(
        address = %peer(fd),
        client_id = %connect.client_id,
        protocol = crate::observe::VERSIONS[crate::observe::version_index(connect.version)],
        clean = connect.clean_start,
        keep_alive = connect.keep_alive,
        username = connect.username.as_deref().unwrap_or(""),
        session_present,
        "client connected"
    );
}

/// The connection of `client_id` ended for `reason` (not called for one that moved to
/// its home shard: it has not ended).
pub(crate) fn disconnected(client_id: &str, reason: CloseReason) {
    let why = match reason {
        CloseReason::ClientDisconnect { .. } => "client sent DISCONNECT",
        CloseReason::SocketClosed => "connection closed by the client or lost",
        CloseReason::KeepAliveTimeout => "keep alive timed out",
        CloseReason::ConnectTimeout => "connect timeout",
        CloseReason::TakenOver => "session taken over by a new connection",
        CloseReason::ProtocolError => "protocol error",
        CloseReason::Refused => "CONNECT refused",
        CloseReason::Migrated => return,
        CloseReason::ServerShutdown => "server shutting down",
    };
    tracing::info!(client_id = %client_id, reason = why, "client disconnected");
}

/// The peer address of socket `fd`, or "unknown".
fn peer(fd: RawFd) -> String {
    super::net::peer_addr(fd).map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}
