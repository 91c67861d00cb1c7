//! MQTT over WebSockets (RFC 6455, MQTT §6): the HTTP upgrade, then a [`Transport`] that
//! carries the MQTT byte stream in binary frames over another transport (TCP or TLS).
//!
//! The frame state (bytes read and not yet parsed, the frame being read, frames waiting to
//! be sent) is plain data, so a connection moves to its session's home shard after
//! CONNECT like any other ([`super::transport::Moving::Ws`]). tungstenite parses and
//! formats the frame headers and derives the handshake's accept key; httparse reads the
//! request.
//!
//! Rules kept:
//! - the upgrade: `GET`, the configured path (any when empty), `Upgrade: websocket`,
//!   `Sec-WebSocket-Version: 13`, a key; the subprotocol `mqtt` (or 3.1's `mqttv3.1`) is
//!   chosen when offered [MQTT-6.0.0-3]; anything else gets `400 Bad Request` and a close;
//! - client frames must be masked (RFC 6455 §5.1); data only in binary frames and their
//!   continuations: a text frame closes the connection [MQTT-6.0.0-1]; a frame longer
//!   than the listener's limit closes it (1009);
//! - ping is answered with pong, close with close; packets may span frames and a frame may
//!   hold several packets [MQTT-6.0.0-2] (the MQTT layer sees a byte stream).
//!
//! Writes: each `poll_write` becomes one binary frame (at most [`MAX_OUT_FRAME`] bytes of
//! payload), taken only when the previous frame is out, and callers flush after writing
//! (as for TLS).
//!
//! **Owns:** the WebSocket framing of one connection. **Must not touch:** MQTT, sessions.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::transport::{Moving, Transport};

/// The largest payload of a frame the server sends.
const MAX_OUT_FRAME: usize = 64 * 1024;
/// Control frames (pongs) owed beyond which the connection is not read until they are
/// sent.
const MAX_CTRL: usize = 4096;
/// The largest HTTP upgrade request read.
const MAX_REQUEST: usize = 8 * 1024;
/// The most one read from the transport takes in, and the least: a read starts at the
/// least and doubles while reads fill it, as the plain path's buffer does. Held only
/// while data is buffered or arriving: an idle connection holds none.
const MAX_READ_CHUNK: usize = 16 * 1024;
const MIN_READ_CHUNK: usize = 1024;
/// An emptied write buffer larger than this is given back rather than kept.
const KEPT_WRITE_BUFFER: usize = 4 * 1024;

/// Why an upgrade or a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WsError {
    /// Not an HTTP request, or too long.
    #[error("not an HTTP upgrade request: {0}")]
    NotUpgrade(&'static str),
    /// A frame broke RFC 6455 or MQTT §6.
    #[error("{0}")]
    Frame(&'static str),
}

impl WsError {
    /// What was wrong, for the log.
    pub(crate) fn why(&self) -> &'static str {
        match self {
            WsError::NotUpgrade(why) | WsError::Frame(why) => why,
        }
    }
}

/// The framing state of one connection (plain data: it moves with the connection).
#[derive(Debug)]
pub(crate) struct WsState {
    /// Bytes read from the transport and not parsed yet.
    rbuf: BytesMut,
    /// Payload bytes left in the data frame being read.
    left: u64,
    /// Its mask, and how far into its payload we are (mask index).
    mask: [u8; 4],
    pos: usize,
    /// Frames the server owes (pong, close), sent before more data.
    ctrl: BytesMut,
    /// The data frame being sent (header and payload).
    wbuf: BytesMut,
    /// Inside a fragmented message (a binary frame without FIN was read): only
    /// continuations may follow until the final one.
    in_message: bool,
    /// A close frame arrived (or was sent): reads end.
    closed: bool,
    /// The transport ended.
    eof: bool,
    /// The longest frame payload accepted.
    max_frame: u64,
    /// Why reading failed, if a frame broke the rules.
    failed: Option<&'static str>,
    /// How much the next read from the transport takes in (see [`MAX_READ_CHUNK`]).
    chunk: usize,
}

impl WsState {
    /// After an upgrade: `rest` is what the client sent behind its request.
    pub(crate) fn new(rest: BytesMut, max_frame: u64) -> WsState {
        WsState {
            rbuf: rest,
            left: 0,
            mask: [0; 4],
            pos: 0,
            ctrl: BytesMut::new(),
            wbuf: BytesMut::new(),
            in_message: false,
            closed: false,
            eof: false,
            max_frame,
            failed: None,
            chunk: MIN_READ_CHUNK,
        }
    }
}

/// A WebSocket connection over the transport `S`.
pub(crate) struct WsStream<S> {
    inner: S,
    st: Box<WsState>,
}

impl<S: Transport> WsStream<S> {
    pub(crate) fn new(inner: S, st: Box<WsState>) -> WsStream<S> {
        WsStream { inner, st }
    }

    /// Sends what is owed: the data frame under way first (a control frame must not land
    /// inside it), then the control frames. Each buffer holds whole frames only.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        for which in [0, 1] {
            loop {
                let buf = if which == 0 {
                    &mut self.st.wbuf
                } else {
                    &mut self.st.ctrl
                };
                if buf.is_empty() {
                    break;
                }
                match Pin::new(&mut self.inner).poll_write(cx, buf) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        buf.advance(n);
                        // Sent whole: a buffer grown for a large frame is given back, so
                        // a connection that was once sent 64 KiB does not keep it. (An
                        // emptied buffer's `capacity()` is 0 whatever it holds; whether
                        // its allocation could take more than the kept size says.)
                        if buf.is_empty() && buf.try_reclaim(KEPT_WRITE_BUFFER + 1) {
                            *buf = BytesMut::new();
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads more from the transport into `rbuf`; Ready(0) at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let len = self.st.rbuf.len();
        let chunk = self.st.chunk;
        self.st.rbuf.resize(len + chunk, 0);
        let r = Pin::new(&mut self.inner).poll_read(cx, &mut self.st.rbuf[len..]);
        match r {
            Poll::Ready(Ok(n)) => {
                self.st.rbuf.truncate(len + n);
                if n == chunk {
                    self.st.chunk = (chunk * 2).min(MAX_READ_CHUNK);
                }
                Poll::Ready(Ok(n))
            }
            other => {
                self.st.rbuf.truncate(len);
                // Nothing buffered and nothing to read: an idle connection gives the
                // buffer back (it is allocated again, small, when data comes) instead
                // of keeping up to 16 KiB per idle WebSocket connection.
                if len == 0 && other.is_pending() {
                    self.st.rbuf = BytesMut::new();
                    self.st.chunk = MIN_READ_CHUNK;
                }
                other
            }
        }
    }

    /// Queues a close frame with `code` and ends reading.
    fn close_with(&mut self, code: u16) {
        if !self.st.closed {
            self.st.closed = true;
            push_frame(
                &mut self.st.ctrl,
                OpCode::Control(Control::Close),
                &code.to_be_bytes(),
            );
        }
    }

    /// Handles the frames at the front of `rbuf` until a data frame's payload is there
    /// (Ready(true)), reading ends (Ready(false)), or more bytes are needed (Pending via
    /// the caller's fill). Returns Err for a frame that breaks the rules (the close frame
    /// is queued).
    fn next_frame(&mut self) -> Result<Option<bool>, WsError> {
        loop {
            if self.st.left > 0 {
                return Ok(Some(true));
            }
            if self.st.closed {
                return Ok(Some(false));
            }
            let mut cursor = Cursor::new(&self.st.rbuf[..]);
            let Ok(parsed) = FrameHeader::parse(&mut cursor) else {
                self.close_with(1002);
                return Err(WsError::Frame("malformed frame header"));
            };
            let Some((header, len)) = parsed else {
                return Ok(None);
            };
            let head = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
            let Some(mask) = header.mask else {
                self.close_with(1002);
                return Err(WsError::Frame("unmasked client frame (RFC 6455 §5.1)"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                self.close_with(1002);
                return Err(WsError::Frame(
                    "reserved bits set (no extension was agreed)",
                ));
            }
            match header.opcode {
                OpCode::Data(d @ (Data::Binary | Data::Continue)) => {
                    // RFC 6455 §5.4: a message starts with one binary frame and goes on with
                    // continuations until FIN.
                    if (d == Data::Binary) == self.st.in_message {
                        self.close_with(1002);
                        return Err(WsError::Frame("fragments out of order"));
                    }
                    self.st.in_message = !header.is_final;
                    if len > self.st.max_frame {
                        self.close_with(1009);
                        return Err(WsError::Frame("frame longer than the listener allows"));
                    }
                    self.st.rbuf.advance(head);
                    self.st.left = len;
                    self.st.mask = mask;
                    self.st.pos = 0;
                }
                OpCode::Data(_) => {
                    self.close_with(1003);
                    return Err(WsError::Frame(
                        "MQTT over WebSockets takes binary frames only [MQTT-6.0.0-1]",
                    ));
                }
                OpCode::Control(c) => {
                    // Control frames are short (RFC 6455 §5.5) and read whole.
                    if len > 125 || !header.is_final {
                        self.close_with(1002);
                        return Err(WsError::Frame("control frame too long or fragmented"));
                    }
                    let total = head + len as usize;
                    if self.st.rbuf.len() < total {
                        return Ok(None);
                    }
                    let mut payload = self.st.rbuf.split_to(total).split_off(head);
                    unmask(&mut payload, mask, 0);
                    match c {
                        Control::Ping => {
                            push_frame(&mut self.st.ctrl, OpCode::Control(Control::Pong), &payload)
                        }
                        Control::Pong => {}
                        Control::Close => {
                            // Answered (RFC 6455 §5.5.1: normal closure); reading ends.
                            self.close_with(1000);
                            return Ok(Some(false));
                        }
                        Control::Reserved(_) => {
                            self.close_with(1002);
                            return Err(WsError::Frame("unknown control frame"));
                        }
                    }
                }
            }
        }
    }
}

/// Appends an unmasked server frame (RFC 6455 §5.1: server frames are not masked).
fn push_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Straight into the output buffer (writing into memory cannot fail).
    let _ = header.format(payload.len() as u64, &mut (&mut *out).writer());
    out.extend_from_slice(payload);
}

/// Unmasks `buf`, which starts `pos` bytes into its frame's payload.
fn unmask(buf: &mut [u8], mask: [u8; 4], pos: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(pos + i) & 3];
    }
}

impl<S: Transport> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Reads per call without handing bytes up (control or empty frames): beyond it the
        // task yields, so a client streaming pings cannot hold the shard.
        let mut fills = 0;
        loop {
            // What the server owes goes out as the socket takes it. Reading goes on while
            // it waits (acks must still come in while output is backed up), except when
            // the control frames owed pass MAX_CTRL: a client that pings and never reads
            // cannot make the server queue pongs without end. The write's waker is
            // registered.
            match this.poll_send(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.st.ctrl.len() > MAX_CTRL => return Poll::Pending,
                _ => {}
            }
            match this.next_frame() {
                Err(e) => {
                    let why = e.why();
                    this.st.failed = Some(why);
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                Ok(Some(false)) => {
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Ok(0));
                }
                Ok(Some(true)) if !this.st.rbuf.is_empty() => {
                    let st = &mut this.st;
                    let n = buf
                        .len()
                        .min(st.rbuf.len())
                        .min(usize::try_from(st.left).unwrap_or(usize::MAX));
                    let out = &mut buf[..n];
                    out.copy_from_slice(&st.rbuf[..n]);
                    unmask(out, st.mask, st.pos);
                    st.rbuf.advance(n);
                    st.left -= n as u64;
                    st.pos += n;
                    return Poll::Ready(Ok(n));
                }
                Ok(_) => {}
            }
            // A ping just read is answered now, not with the next data out.
            match this.poll_send(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending if this.st.ctrl.len() > MAX_CTRL => return Poll::Pending,
                _ => {}
            }
            if this.st.eof {
                return Poll::Ready(Ok(0));
            }
            fills += 1;
            if fills > 16 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match futures::ready!(this.poll_fill(cx)) {
                Ok(0) => this.st.eof = true,
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: Transport> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // A new frame only once the last one is out: the socket's back-pressure reaches
        // the writer, and nothing taken is taken twice.
        futures::ready!(this.poll_send(cx))?;
        let n = buf.len().min(MAX_OUT_FRAME);
        push_frame(&mut this.st.wbuf, OpCode::Data(Data::Binary), &buf[..n]);
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.close_with(1000);
        futures::ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: Transport> Transport for WsStream<S> {
    fn socket(&self) -> std::os::fd::RawFd {
        self.inner.socket()
    }

    fn peer_identity(&self) -> Option<String> {
        self.inner.peer_identity()
    }

    fn framed(&self) -> bool {
        true
    }

    fn handshake_incomplete(&self) -> bool {
        self.inner.handshake_incomplete()
    }

    fn failure(&self) -> Option<&'static str> {
        self.st.failed
    }

    fn into_moving(self) -> io::Result<Moving> {
        let inner = self.inner.into_moving()?;
        Ok(Moving::Ws(self.st, Box::new(inner)))
    }
}

/// Reads the HTTP upgrade request from `stream` and answers it: `101 Switching Protocols`
/// (returns what the client sent behind the request), or `400 Bad Request` (returns why;
/// the caller closes). `path`: the one accepted, any when empty.
pub(crate) async fn upgrade<S: Transport>(stream: &mut S, path: &str) -> Result<BytesMut, WsError> {
    let mut buf = BytesMut::new();
    let (len, key, protocol) = loop {
        let at = buf.len();
        if at >= MAX_REQUEST {
            return Err(refuse(stream, "request too long").await);
        }
        buf.resize(at + 2048, 0);
        let n = match futures::AsyncReadExt::read(stream, &mut buf[at..]).await {
            Ok(n) => n,
            Err(_) => return Err(WsError::NotUpgrade("closed during the request")),
        };
        buf.truncate(at + n);
        if n == 0 {
            return Err(WsError::NotUpgrade("closed during the request"));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return Err(refuse(stream, "not HTTP").await),
            Ok(httparse::Status::Complete(len)) => match check(&req, path) {
                Ok((key, protocol)) => break (len, key, protocol),
                Err(why) => return Err(refuse(stream, why).await),
            },
        }
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    response.push_str("\r\n");
    let sent = async {
        stream.write_all(response.as_bytes()).await?;
        stream.flush().await
    };
    if sent.await.is_err() {
        return Err(WsError::NotUpgrade("closed during the response"));
    }
    Ok(buf.split_off(len))
}

/// The key and the subprotocol to answer with, or why the request is refused.
fn check(
    req: &httparse::Request<'_, '_>,
    path: &str,
) -> Result<(String, Option<&'static str>), &'static str> {
    if req.method != Some("GET") {
        return Err("not GET");
    }
    let target = req.path.unwrap_or("");
    let target = target.split('?').next().unwrap_or("");
    if !path.is_empty() && target != path {
        return Err("wrong path");
    }
    let header = |name: &'static str| header_values(req, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err("not a WebSocket upgrade");
    }
    if !has_token("sec-websocket-version", "13") {
        return Err("unsupported WebSocket version");
    }
    let key = header("sec-websocket-key")
        .next()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or("no Sec-WebSocket-Key")?;
    let protocol = if has_token("sec-websocket-protocol", "mqtt") {
        Some("mqtt")
    } else if has_token("sec-websocket-protocol", "mqttv3.1") {
        Some("mqttv3.1")
    } else if header("sec-websocket-protocol").next().is_some() {
        // Offered, but not MQTT [MQTT-6.0.0-3]... refusing would cut clients that list
        // several; none of them is MQTT, so the connection cannot be MQTT either.
        return Err("no MQTT subprotocol offered");
    } else {
        None
    };
    Ok((key, protocol))
}

/// The values of the request's headers called `name` (any case), as text.
fn header_values<'a>(
    req: &'a httparse::Request<'_, '_>,
    name: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// Answers `400 Bad Request` (best effort, briefly) and says why.
async fn refuse<S: Transport>(stream: &mut S, why: &'static str) -> WsError {
    let body = format!(
        "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{why}",
        why.len()
    );
    let limit = std::time::Duration::from_millis(500);
    super::serve::write_within(stream, body.as_bytes(), limit).await;
    WsError::NotUpgrade(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let header = FrameHeader {
            is_final: fin,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: Some(mask),
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        let mut p = payload.to_vec();
        unmask(&mut p, mask, 0);
        out.extend_from_slice(&p);
        out
    }

    #[test]
    fn frames_are_unmasked_and_controls_answered() {
        let mut st = WsState::new(BytesMut::new(), 1000);
        let mut bytes = client_frame(OpCode::Control(Control::Ping), b"hi", true);
        bytes.extend(client_frame(OpCode::Data(Data::Binary), b"abc", false));
        bytes.extend(client_frame(OpCode::Data(Data::Continue), b"de", true));
        st.rbuf.extend_from_slice(&bytes);
        // (The framing logic lives on WsStream; its state is tested through a fake read.)
        let mut payload = Vec::new();
        let mut s = Fake { st: Box::new(st) };
        while let Some(b) = s.next_byte().unwrap() {
            payload.push(b);
        }
        assert_eq!(payload, b"abcde");
        // The pong carries the ping's payload, unmasked.
        assert_eq!(&s.st.ctrl[..], &[0x8A, 0x02, b'h', b'i']);
    }

    #[test]
    fn bad_frames_close() {
        for (bytes, code) in [
            (client_frame(OpCode::Data(Data::Text), b"x", true), 1003u16),
            (
                client_frame(OpCode::Data(Data::Binary), &[0u8; 20], true),
                1009,
            ),
        ] {
            let mut st = WsState::new(BytesMut::new(), 10);
            st.rbuf.extend_from_slice(&bytes);
            let mut s = Fake { st: Box::new(st) };
            assert!(s.next_byte().is_err());
            assert_eq!(&s.st.ctrl[2..], &code.to_be_bytes());
        }
        // Unmasked.
        let mut st = WsState::new(BytesMut::new(), 10);
        st.rbuf.extend_from_slice(&[0x82, 0x01, b'x']);
        let mut s = Fake { st: Box::new(st) };
        assert!(s.next_byte().is_err());
    }

    /// A read that finds nothing with nothing buffered gives the read buffer back (an idle
    /// connection holds none); reads that fill their chunk double it, up to the most.
    #[test]
    fn an_idle_connection_holds_no_read_buffer() {
        let script = [MIN_READ_CHUNK, 2 * MIN_READ_CHUNK, 10].map(|n| Some(vec![7u8; n]));
        let mut ws = WsStream {
            inner: Scripted(script.into()),
            st: Box::new(WsState::new(BytesMut::new(), 1 << 20)),
        };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for (read, next_chunk) in [
            (MIN_READ_CHUNK, 2 * MIN_READ_CHUNK),
            (2 * MIN_READ_CHUNK, 4 * MIN_READ_CHUNK),
            (10, 4 * MIN_READ_CHUNK),
        ] {
            assert!(matches!(ws.poll_fill(&mut cx), Poll::Ready(Ok(n)) if n == read));
            assert_eq!(ws.st.chunk, next_chunk);
        }
        // Bytes still buffered: the buffer stays while the read waits.
        assert!(ws.poll_fill(&mut cx).is_pending());
        assert!(ws.st.rbuf.capacity() > 0);
        // All consumed, and nothing comes: it is given back, and the next read starts small.
        ws.st.rbuf.clear();
        assert!(ws.poll_fill(&mut cx).is_pending());
        assert_eq!(ws.st.rbuf.capacity(), 0);
        assert_eq!(ws.st.chunk, MIN_READ_CHUNK);
    }

    /// A frame whose payload arrives in two reads with nothing to read between them: the
    /// buffer is given back in the middle of the frame, and the rest is unmasked where
    /// the first part left off.
    #[test]
    fn a_frame_split_around_an_idle_read_arrives_whole() {
        let bytes = client_frame(OpCode::Data(Data::Binary), b"hello world", true);
        let (first, rest) = bytes.split_at(bytes.len() - 8);
        let mut ws = WsStream {
            inner: Scripted([Some(first.to_vec()), None, Some(rest.to_vec())].into()),
            st: Box::new(WsState::new(BytesMut::new(), 1 << 20)),
        };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        let mut idle = 0;
        for _ in 0..10 {
            let mut buf = [0u8; 64];
            match Pin::new(&mut ws).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => {
                    idle += 1;
                    // Nothing left to reclaim: the allocation was given back.
                    assert!(!ws.st.rbuf.try_reclaim(1), "given back while idle");
                }
            }
            if got.len() == 11 {
                break;
            }
        }
        assert_eq!(idle, 1);
        assert_eq!(got, b"hello world");
    }

    /// A write buffer grown for a large frame is given back once the frame is sent; a small
    /// one is kept for the next frame.
    #[test]
    fn a_large_frame_written_leaves_no_large_buffer() {
        let mut ws = WsStream {
            inner: Scripted(Default::default()),
            st: Box::new(WsState::new(BytesMut::new(), 1 << 20)),
        };
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let big = vec![1u8; 20_000];
        assert!(matches!(
            Pin::new(&mut ws).poll_write(&mut cx, &big),
            Poll::Ready(Ok(20_000))
        ));
        assert!(ws.st.wbuf.is_empty());
        // No allocation left to reclaim: it was given back.
        assert!(!ws.st.wbuf.try_reclaim(1));
        assert!(matches!(
            Pin::new(&mut ws).poll_write(&mut cx, b"small"),
            Poll::Ready(Ok(5))
        ));
        assert!(ws.st.wbuf.is_empty());
        // The small one is kept for the next frame.
        assert!(ws.st.wbuf.try_reclaim(1));
    }

    /// A transport that hands out its chunks (None: one read that finds nothing), then has
    /// nothing more to read (Pending).
    struct Scripted(std::collections::VecDeque<Option<Vec<u8>>>);
    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Some(Some(mut next)) = self.0.pop_front() else {
                return Poll::Pending;
            };
            let n = next.len().min(buf.len());
            buf[..n].copy_from_slice(&next[..n]);
            if n < next.len() {
                self.0.push_front(Some(next.split_off(n)));
            }
            Poll::Ready(Ok(n))
        }
    }
    impl AsyncWrite for Scripted {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    impl Transport for Scripted {
        fn socket(&self) -> std::os::fd::RawFd {
            -1
        }
        fn into_moving(self) -> io::Result<Moving> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    /// The read half of the framing without a transport.
    struct Fake {
        st: Box<WsState>,
    }

    impl Fake {
        fn next_byte(&mut self) -> Result<Option<u8>, WsError> {
            let mut ws = WsStream {
                inner: Scripted(Default::default()),
                st: std::mem::replace(&mut self.st, Box::new(WsState::new(BytesMut::new(), 0))),
            };
            let r = ws.next_frame();
            let out = match r {
                Ok(Some(true)) if !ws.st.rbuf.is_empty() => {
                    let mut b = [ws.st.rbuf[0]];
                    unmask(&mut b, ws.st.mask, ws.st.pos);
                    ws.st.rbuf.advance(1);
                    ws.st.left -= 1;
                    ws.st.pos += 1;
                    Ok(Some(b[0]))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            self.st = ws.st;
            out
        }
    }
}
