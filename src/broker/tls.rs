//! MQTT over TLS: a [`Transport`] that runs a `rustls::ServerConnection` over a glommio
//! TCP stream.
//!
//! Why not futures-rustls: its stream cannot be rebuilt from a socket and a rustls state,
//! and a connection must move to its session's home shard after CONNECT with everything
//! rustls holds (decrypted bytes not read yet, records not sent yet, the keys): see
//! [`super::transport`]. So this adapter keeps the `ServerConnection` itself (plain `Send`
//! data) and does what futures-rustls does around it: TLS records in through
//! `read_tls` / `process_new_packets`, plaintext out through `reader()`, plaintext in
//! through `writer()`, records out through `write_tls`.
//!
//! The handshake needs no separate step: the first reads drive it (the CONNECT read, so
//! the connect timeout bounds the handshake too), and a client that does not speak TLS
//! fails it with a logged error and a counter.
//!
//! Writes: [`AsyncWrite::poll_write`] accepts plaintext only when no records wait to be
//! sent, so a full socket holds the writer back (the broker's output accounting stays
//! true), and callers flush after writing (see `serve::write_out`) so that the last
//! records go out.
//!
//! **Owns:** the TLS state of one connection. **Must not touch:** MQTT, sessions.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::ServerConnection;

use super::transport::{Moving, Transport};

/// A TLS connection (see the module docs).
pub(crate) struct TlsStream {
    tcp: TcpStream,
    tls: Box<ServerConnection>,
    /// The peer closed the TCP stream.
    eof: bool,
}

impl TlsStream {
    /// A new server side over `tcp` (the handshake runs with the first reads).
    pub(crate) fn new(tcp: TcpStream, tls: ServerConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls: Box::new(tls),
            eof: false,
        }
    }

    /// A connection moved here (see [`Moving::Tls`]).
    pub(crate) fn resume(tcp: TcpStream, tls: Box<ServerConnection>) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            eof: false,
        }
    }

    /// Sends what rustls has for the peer; Ready(Ok) once nothing waits.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut io = SyncIo {
                tcp: &mut self.tcp,
                cx,
            };
            match self.tls.write_tls(&mut io) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The TCP stream as blocking `Read` / `Write` for rustls, `WouldBlock` standing for
/// `Pending` (the waker is registered by the poll underneath).
struct SyncIo<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.tcp).poll_flush(self.cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.tls.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end like any other here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            // Handshake messages (and alerts) go out before more is read; a full socket
            // does not stop reading.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            let mut io = SyncIo {
                tcp: &mut this.tcp,
                cx,
            };
            match this.tls.read_tls(&mut io) {
                Ok(0) => this.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = this.tls.process_new_packets() {
                // Tell the peer why (the alert rustls queued), as far as the socket takes
                // it now.
                let _ = this.poll_send(cx);
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Nothing new is taken while records wait: the socket's back-pressure reaches the
        // writer, and what was taken is never taken twice.
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let n = this.tls.writer().write(buf)?;
        // Best effort now; what the socket does not take goes with the next write or the
        // flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        futures::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_close(cx)
    }
}

impl Transport for TlsStream {
    fn socket(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }

    fn peer_identity(&self) -> Option<String> {
        let leaf = self.tls.peer_certificates()?.first()?;
        crate::security::tls::common_name(leaf)
    }

    fn framed(&self) -> bool {
        true
    }

    fn handshake_incomplete(&self) -> bool {
        self.tls.is_handshaking()
    }

    fn into_moving(self) -> io::Result<Moving> {
        let fd = super::net::dup(&self.tcp)?;
        // This shard's reactor lets go of the socket before the home shard reads it.
        drop(self.tcp);
        Ok(Moving::Tls(fd, self.tls))
    }
}
