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

/// A connection's byte stream (see the module docs).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The socket underneath.
    fn socket(&self) -> RawFd;

    /// Plain data that can move to another shard. The caller drops `self` afterwards,
    /// which releases this shard's reactor registrations.
    fn to_moving(&self) -> io::Result<Moving>;
}

/// A transport on its way to another shard: plain `Send` data.
#[derive(Debug)]
pub(crate) enum Moving {
    /// Plain TCP: a duplicate of the socket.
    Tcp(OwnedFd),
}

impl Transport for TcpStream {
    fn socket(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn to_moving(&self) -> io::Result<Moving> {
        net::dup(self).map(Moving::Tcp)
    }
}

impl Moving {
    /// Becomes a plain TCP transport on the calling shard.
    pub(crate) fn into_tcp(self) -> TcpStream {
        match self {
            Moving::Tcp(fd) => {
                let stream = net::adopt(fd);
                let _ = stream.set_nodelay(true);
                stream
            }
        }
    }
}
