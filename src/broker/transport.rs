//! The transport seam: what a connection task needs from the byte stream under MQTT.
//!
//! A transport is a value with read and write (`futures::AsyncRead + AsyncWrite`), the
//! socket underneath (for the takeover shutdown and the keep-alive probe), and a way to
//! become plain `Send` data ([`Moving`]) that travels to the session's home shard in a
//! [`super::ShardMsg::Adopt`] and becomes a transport again there. Routing, sessions and
//! flow control never see which transport a connection uses.
//!
//! ## Moving an encrypted connection home (decision)
//! A TLS connection is terminated where its session lives, like a plain one: after the
//! handshake and the CONNECT are read on the accepting shard, the socket moves home as a
//! `dup`ed fd together with the rustls connection state (`rustls::ServerConnection` is plain
//! `Send` data, and holds whatever it has decrypted or buffered). The home shard wraps the
//! fd and that state in a new stream and goes on. So sessions stay shard-local, no shard
//! relays another's bytes, and no kernel TLS module is needed (kTLS can later be a fast
//! path for the same move: the keys are in the rustls state). WebSockets move the same
//! way, with their frame decoder state.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use futures::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::net;

/// A listener's TLS settings, replaced as a whole by a reload (new connections get them).
pub(crate) type TlsInForce = std::sync::Arc<crate::security::InForce<rustls::ServerConfig>>;

/// What the connections of one listener get (from its `[[listener]]` settings, or the top
/// level for `listeners`).
#[derive(Debug)]
pub(crate) struct Listening {
    /// TLS: connections are wrapped in a [`super::tls::TlsStream`] with the config in
    /// force (a reload of the CA file replaces it for new connections).
    pub tls: Option<TlsInForce>,
    /// Whether a CONNECT without a user name is admitted.
    pub allow_anonymous: bool,
    /// The client certificate's Common Name is the user name.
    pub identity_as_username: bool,
    /// Its hook stack (its own security files, or the top level's): see
    /// [`super::hooks::Domains`].
    pub domain: u16,
    /// Its place in the configuration (`listeners` first, then `[[listener]]` tables),
    /// for statistics.
    pub index: usize,
    /// Connection caps (per listener, per IP).
    pub caps: super::admission::Caps,
    /// New connections per second this listener accepts (over all shards); 0: no pace.
    pub rate: u32,
    /// MQTT over WebSockets: the path accepted (any when empty) and the longest frame.
    pub websocket: Option<(String, u64)>,
}

/// A connection's byte stream (see the module docs).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The socket underneath.
    fn socket(&self) -> RawFd;

    /// The identity a client certificate gives (its subject Common Name), if any.
    fn peer_identity(&self) -> Option<String> {
        None
    }

    /// Whether the transport frames the bytes on the socket (TLS records, WebSocket
    /// frames), so none may be written to it directly and its writes end with a flush.
    fn framed(&self) -> bool {
        false
    }

    /// Why the transport itself failed (a WebSocket frame that broke the rules), if it did.
    fn failure(&self) -> Option<&'static str> {
        None
    }

    /// Whether the transport's own handshake (TLS) never completed: a failure before
    /// MQTT, counted and logged apart.
    fn handshake_incomplete(&self) -> bool {
        false
    }

    /// Plain data that can move to another shard; this shard's reactor lets go of the
    /// socket before it returns.
    fn into_moving(self) -> io::Result<Moving>
    where
        Self: Sized;
}

/// A transport on its way to another shard: plain `Send` data.
#[derive(Debug)]
pub(crate) enum Moving {
    /// Plain TCP: a duplicate of the socket.
    Tcp(OwnedFd),
    /// TLS: a duplicate of the socket and everything rustls holds for it.
    Tls(OwnedFd, Box<rustls::ServerConnection>),
    /// WebSockets: the framing state over one of the others.
    Ws(Box<super::ws::WsState>, Box<Moving>),
}

impl Transport for TcpStream {
    fn socket(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn into_moving(self) -> io::Result<Moving> {
        let fd = net::dup(&self)?;
        drop(self);
        Ok(Moving::Tcp(fd))
    }
}

/// A moved transport, again a stream on the calling shard.
pub(crate) enum Arrived {
    Tcp(TcpStream),
    Tls(super::tls::TlsStream),
    WsTcp(super::ws::WsStream<TcpStream>),
    WsTls(super::ws::WsStream<super::tls::TlsStream>),
}

impl Moving {
    /// Becomes a transport on the calling shard.
    pub(crate) fn arrive(self) -> Arrived {
        let tcp = |fd| {
            let stream = net::adopt(fd);
            let _ = stream.set_nodelay(true);
            stream
        };
        match self {
            Moving::Tcp(fd) => Arrived::Tcp(tcp(fd)),
            Moving::Tls(fd, tls) => Arrived::Tls(super::tls::TlsStream::resume(tcp(fd), tls)),
            Moving::Ws(st, inner) => match inner.arrive() {
                Arrived::Tcp(s) => Arrived::WsTcp(super::ws::WsStream::new(s, st)),
                Arrived::Tls(s) => Arrived::WsTls(super::ws::WsStream::new(s, st)),
                // WebSockets over WebSockets is never built.
                nested => nested,
            },
        }
    }
}
