//! The async half of the client: handles, the message stream and the driver future.
//!
//! **Owns:** the transport, the read and write buffers, timers and every waker. All
//! protocol decisions are the sans-I/O [`ClientState`]'s; this file only moves bytes and
//! wakes tasks.
//!
//! Handles ([`Client`], [`Messages`]) and the [`Driver`] share one `Mutex<Inner>`. The lock
//! is never held across an `.await` or a user callback, and each holder does a few
//! field updates under it, so it is uncontended in practice. Wake-ups are edge-triggered:
//! the driver parks its waker in `Inner` and the first handle that gives it work takes and
//! wakes it; later publishes in the same turn only append bytes.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use ahash::{HashMap, HashMapExt};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures::future::{self, Either};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, Stream};

use super::state::{ClientState, Event, HandleError, Phase, PublishError, StateOptions, Token};
use super::{topic_filter, Backoff, ClientError, ConnectOptions, IntoTopicName, Message};
use crate::protocol::{
    decode, Connect, DecodeOptions, Properties, Publish, QoS, ReasonCode, Subscription,
    SubscriptionOptions, TopicFilter, Will,
};

/// Opens a transport; called once per connection attempt. Implemented for every
/// `FnMut() -> impl Future<Output = io::Result<Io>>`.
pub trait Connector {
    /// The transport.
    type Io: AsyncRead + AsyncWrite + Unpin;
    /// The connection attempt.
    type Future: Future<Output = io::Result<Self::Io>>;
    /// Starts one attempt.
    fn connect(&mut self) -> Self::Future;
}

impl<F, Fut, Io> Connector for F
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<Io>>,
    Io: AsyncRead + AsyncWrite + Unpin,
{
    type Io = Io;
    type Future = Fut;
    fn connect(&mut self) -> Fut {
        self()
    }
}

/// The executor's timer, for keep alive, timeouts and back-off.
pub trait Timer {
    /// A future that completes at (or after) a deadline.
    type Sleep: Future;
    /// Sleeps until `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;
}

/// glommio's timer (the executor's own timer wheel; no extra thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlommioTimer;

impl Timer for GlommioTimer {
    type Sleep = glommio::timer::Timer;
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        glommio::timer::Timer::new(deadline.saturating_duration_since(Instant::now()))
    }
}

/// The executor-independent timer of the `futures-timer` crate (one helper thread per
/// process), for tokio, smol, async-std or anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuturesTimer;

impl Timer for FuturesTimer {
    type Sleep = futures_timer::Delay;
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        futures_timer::Delay::new(deadline.saturating_duration_since(Instant::now()))
    }
}

enum Completion {
    Waiting(Option<Waker>),
    Done(Result<Outcome, ClientError>),
}

enum Outcome {
    /// With the PUBACK's success code (QoS 0 and PUBCOMP: 0x00).
    Published(ReasonCode),
    SubAck(Vec<ReasonCode>),
    UnsubAck,
}

#[derive(Debug, Clone)]
enum Status {
    /// A connection is up.
    Up,
    /// Between connections, reconnecting.
    Down,
    /// Ended for good; the cause.
    Closed(ClientError),
}

type Callback = Arc<Mutex<dyn FnMut(Message) + Send>>;

struct Inner {
    state: ClientState,
    status: Status,
    /// Set by `disconnect` or when the last `Client` is dropped.
    closing: bool,
    handles: usize,
    max_buffered: usize,
    driver_waker: Option<Waker>,
    /// Publishers and requesters waiting for window, buffer space or a connection.
    writers: Vec<Waker>,
    completions: HashMap<Token, Completion>,
    incoming: VecDeque<Message>,
    incoming_cap: usize,
    messages_waker: Option<Waker>,
    /// The `Messages` stream was dropped: unmatched messages are discarded.
    messages_dropped: bool,
    callbacks: Vec<(u64, TopicFilter, Callback)>,
    next_callback: u64,
    /// Granted subscriptions (options with the granted QoS, 5.0 identifier or 0),
    /// renewed when a reconnect finds the session gone.
    subscriptions: Vec<(TopicFilter, SubscriptionOptions, u32)>,
    connected_once: bool,
    /// Session Present of the latest CONNACK.
    session_present: bool,
    /// The latest CONNACK's 5.0 properties (Assigned Client Identifier, Response
    /// Information, the server's limits...).
    connack: Properties,
    /// Requests waiting for their response, by correlation data (see `Client::request`).
    responses: HashMap<Bytes, futures::channel::oneshot::Sender<Message>>,
    /// The topic prefix responses to this client's requests come back under, once its
    /// subscription is made.
    response_base: Option<String>,
    next_request: u64,
    /// The client identifier of the CONNECT (empty when the broker assigns one).
    client_id: ByteString,
    closed_waiters: Vec<Waker>,
}

impl Inner {
    fn wake_writers(&mut self) {
        for w in self.writers.drain(..) {
            w.wake();
        }
    }

    fn take_driver_waker(&mut self) -> Option<Waker> {
        self.driver_waker.take()
    }

    /// Takes every queued message (into `into`, or dropped), waking the driver if it had
    /// stopped reading because the queue was full.
    fn take_incoming(&mut self, into: Option<&mut VecDeque<Message>>) {
        let was_full = self.incoming.len() >= self.incoming_cap;
        match into {
            Some(into) => std::mem::swap(into, &mut self.incoming),
            None => self.incoming.clear(),
        }
        if was_full {
            if let Some(w) = self.driver_waker.take() {
                w.wake();
            }
        }
    }

    fn complete(&mut self, token: Token, result: Result<Outcome, ClientError>) {
        // No entry means nobody waits (a dropped future, or a renewal we issued).
        if let Some(c) = self.completions.get_mut(&token) {
            if let Completion::Waiting(Some(w)) = std::mem::replace(c, Completion::Done(result)) {
                w.wake();
            }
        }
    }

    /// Turns state events into completions, queued messages and callback calls (returned
    /// for the caller to run after unlocking).
    fn dispatch(&mut self, calls: &mut Vec<(Callback, Message)>) {
        let mut woke_window = false;
        while let Some(ev) = self.state.poll_event() {
            match ev {
                Event::Message(p) => {
                    let msg = Message::from_publish(p);
                    if !self.callbacks.is_empty() {
                        let mut matched = false;
                        for (_, f, cb) in &self.callbacks {
                            if f.matches(&msg.topic) {
                                calls.push((cb.clone(), msg.clone()));
                                matched = true;
                            }
                        }
                        if matched {
                            continue;
                        }
                    }
                    if self.messages_dropped {
                        // Nobody reads the stream: queueing would stop the driver reading
                        // the socket (and so its acks) once the queue is full.
                        continue;
                    }
                    self.incoming.push_back(msg);
                    if let Some(w) = self.messages_waker.take() {
                        w.wake();
                    }
                }
                Event::PublishDone { token, result } => {
                    woke_window = true;
                    self.complete(
                        token,
                        result
                            .map(Outcome::Published)
                            .map_err(ClientError::PublishRefused),
                    );
                }
                Event::SubAck { token, codes } => {
                    // A request slot is free: requesters waiting in `writers` may go on.
                    woke_window = true;
                    self.complete(token, Ok(Outcome::SubAck(codes)))
                }
                Event::UnsubAck { token, .. } => {
                    woke_window = true;
                    self.complete(token, Ok(Outcome::UnsubAck))
                }
                Event::Connected(ack) => {
                    self.status = Status::Up;
                    self.session_present = ack.session_present;
                    self.connack = ack.properties;
                    if self.connected_once && !ack.session_present && !self.subscriptions.is_empty()
                    {
                        // The broker has no record of our subscriptions: renew them, one
                        // SUBSCRIBE per 5.0 identifier (an identifier is per packet).
                        // Nobody waits on these requests' tokens: their SUBACKs are dropped.
                        let mut idents: Vec<u32> = self.subscriptions.iter().map(|s| s.2).collect();
                        idents.sort_unstable();
                        idents.dedup();
                        for ident in idents {
                            let subs = self
                                .subscriptions
                                .iter()
                                .filter(|s| s.2 == ident)
                                .map(|(f, o, _)| Subscription {
                                    filter: f.clone(),
                                    options: *o,
                                })
                                .collect();
                            let _ = self.state.subscribe_with(subs, identifier_property(ident));
                        }
                        tracing::debug!(
                            "renewed {} subscriptions after reconnect",
                            self.subscriptions.len()
                        );
                    }
                    self.connected_once = true;
                    woke_window = true;
                }
            }
        }
        if woke_window {
            self.wake_writers();
        }
    }

    fn finish(&mut self, cause: ClientError) {
        if matches!(self.status, Status::Closed(_)) {
            return;
        }
        self.status = Status::Closed(cause.clone());
        self.state.drain_requests();
        for c in self.completions.values_mut() {
            if let Completion::Waiting(Some(w)) =
                std::mem::replace(c, Completion::Done(Err(cause.clone())))
            {
                w.wake();
            }
        }
        self.wake_writers();
        if let Some(w) = self.messages_waker.take() {
            w.wake();
        }
        for w in self.closed_waiters.drain(..) {
            w.wake();
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Held while the first `Client::request` subscribes to the response topics, so two
    /// concurrent first requests make one subscription.
    response_setup: futures::lock::Mutex<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under this lock (only possible in our own code) must not take every
        // other handle down with a poison error; the state is still consistent field-wise.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

/// The result of a successful [`connect`].
pub struct Connected<C: Connector, T: Timer> {
    /// Handle for publishing, subscribing and disconnecting; clone it freely.
    pub client: Client,
    /// Messages for which no per-subscription callback matched.
    pub messages: Messages,
    /// The CONNACK's Session Present flag.
    pub session_present: bool,
    /// Spawn `driver.run()` on the executor; nothing moves until it runs.
    pub driver: Driver<C, T>,
}

impl<C: Connector, T: Timer> std::fmt::Debug for Connected<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("session_present", &self.session_present)
            .finish_non_exhaustive()
    }
}

/// Connects: opens a transport with `connector`, sends CONNECT and waits for CONNACK
/// (within `options.connect_timeout`). A refusal is [`ClientError::Refused`] with the
/// broker's code. The returned [`Driver`] must then be spawned.
pub async fn connect<C: Connector, T: Timer>(
    connector: C,
    timer: T,
    options: ConnectOptions,
) -> Result<Connected<C, T>, ClientError> {
    options.validate()?;
    let will = match &options.will {
        Some(w) => Some(Will {
            topic: w
                .topic
                .as_str()
                .into_topic_name()
                .map_err(ClientError::InvalidTopic)?,
            payload: w.payload.clone(),
            qos: w.qos,
            retain: w.retain,
            properties: if options.version.is_v5() {
                w.properties.clone()
            } else {
                Properties::new()
            },
        }),
        None => None,
    };
    let keep_alive_secs = options.keep_alive.as_secs() as u16;
    let connect = Connect {
        version: options.version,
        clean_start: options.clean_session,
        keep_alive: keep_alive_secs,
        client_id: ByteString::from(options.client_id.as_str()),
        will,
        username: options.username.as_deref().map(ByteString::from),
        password: options.password.clone(),
        properties: {
            let mut p = options.properties.clone();
            if let (Some(a), true) = (&options.authentication, options.version.is_v5()) {
                p.get_mut().authentication_method = Some(a.method.clone());
                p.get_mut().authentication_data = options.authentication_data.clone();
            }
            if options.version.is_v5() && p.maximum_packet_size.is_none() {
                // What the client decodes: a larger packet is not sent to it (5.0
                // §3.1.2.11.4) instead of failing its decode.
                p.get_mut().maximum_packet_size = Some(options.max_packet_size);
            }
            p
        },
    };
    let keep_alive = std::time::Duration::from_secs(u64::from(keep_alive_secs));
    let state = ClientState::new(StateOptions {
        version: options.version,
        keep_alive,
        ping_timeout: options.ping_timeout.unwrap_or(keep_alive),
        max_inflight: options.max_inflight,
        max_pending_requests: 1024,
        auth: options.authentication.clone(),
    });
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            state,
            status: Status::Down,
            closing: false,
            handles: 1,
            max_buffered: options.max_buffered_bytes,
            driver_waker: None,
            writers: Vec::new(),
            completions: HashMap::new(),
            incoming: VecDeque::new(),
            incoming_cap: options.incoming_capacity,
            messages_waker: None,
            messages_dropped: false,
            callbacks: Vec::new(),
            next_callback: 0,
            subscriptions: Vec::new(),
            connected_once: false,
            session_present: false,
            connack: Properties::new(),
            responses: HashMap::new(),
            response_base: None,
            next_request: 0,
            client_id: ByteString::from(options.client_id.as_str()),
            closed_waiters: Vec::new(),
        }),
        response_setup: futures::lock::Mutex::new(()),
    });
    let mut driver = Driver {
        shared: shared.clone(),
        connector,
        timer,
        connect,
        decode: DecodeOptions {
            version: options.version,
            max_packet_size: options.max_packet_size,
        },
        connect_timeout: options.connect_timeout,
        reconnect: options.reconnect,
        io: None,
        rbuf: BytesMut::with_capacity(READ_CHUNK),
        wbuf: BytesMut::with_capacity(4096),
        need_flush: false,
        sleep: None,
        close_deadline: None,
        calls: Vec::new(),
    };
    let io = driver.establish().await?;
    driver.io = Some(io);
    let session_present = {
        let mut g = shared.lock();
        let mut calls = Vec::new();
        g.dispatch(&mut calls);
        g.session_present
    };
    Ok(Connected {
        client: Client {
            shared: shared.clone(),
        },
        messages: Messages {
            shared,
            local: VecDeque::new(),
        },
        session_present,
        driver,
    })
}

/// Connects over glommio TCP and spawns the driver on the current glommio executor.
/// Returns the handle, the message stream and the CONNACK's Session Present flag.
pub async fn glommio_connect(
    addr: &str,
    options: ConnectOptions,
) -> Result<(Client, Messages, bool), ClientError> {
    let addr = addr.to_owned();
    let connector = move || {
        let addr = addr.clone();
        async move {
            let s = glommio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(io::Error::from)?;
            s.set_nodelay(true).map_err(io::Error::from)?;
            Ok::<_, io::Error>(s)
        }
    };
    let c = connect(connector, GlommioTimer, options).await?;
    glommio::spawn_local(async move {
        if let Err(e) = c.driver.run().await {
            tracing::debug!("mqtt client ended: {e}");
        }
    })
    .detach();
    Ok((c.client, c.messages, c.session_present))
}

/// [`glommio_connect`] over TLS (rustls): the broker's certificate must be valid for
/// `server_name` and chain to a root `tls` trusts (for example
/// [`crate::security::tls::client_config`] with the broker's CA). Any other executor can
/// do the same with its own stream and `futures_rustls::TlsConnector` in a [`Connector`].
pub async fn glommio_connect_tls(
    addr: &str,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    options: ConnectOptions,
) -> Result<(Client, Messages, bool), ClientError> {
    let addr = addr.to_owned();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| ClientError::from(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let tls = futures_rustls::TlsConnector::from(tls);
    let connector = move || {
        let (addr, name, tls) = (addr.clone(), name.clone(), tls.clone());
        async move {
            let s = glommio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(io::Error::from)?;
            s.set_nodelay(true).map_err(io::Error::from)?;
            tls.connect(name, s).await
        }
    };
    let c = connect(connector, GlommioTimer, options).await?;
    glommio::spawn_local(async move {
        if let Err(e) = c.driver.run().await {
            tracing::debug!("mqtt client ended: {e}");
        }
    })
    .detach();
    Ok((c.client, c.messages, c.session_present))
}

const READ_CHUNK: usize = 16 * 1024;
/// Turns of the serve loop before yielding to the executor, so a busy connection does
/// not starve other tasks.
const BUDGET: u32 = 64;

/// The future that owns the transport. Spawn [`Driver::run`]; it returns when the client
/// disconnects (`Ok`) or the connection is lost for good (`Err`, also given to every
/// pending operation).
pub struct Driver<C: Connector, T: Timer> {
    shared: Arc<Shared>,
    connector: C,
    timer: T,
    connect: Connect,
    decode: DecodeOptions,
    connect_timeout: std::time::Duration,
    reconnect: Option<Backoff>,
    io: Option<C::Io>,
    rbuf: BytesMut,
    /// Bytes being written; swapped with the state's output buffer when empty.
    wbuf: BytesMut,
    need_flush: bool,
    sleep: Option<(Instant, Pin<Box<T::Sleep>>)>,
    /// Set when closing starts: past it the connection is dropped even if the DISCONNECT
    /// could not be written (a peer that stopped reading).
    close_deadline: Option<Instant>,
    calls: Vec<(Callback, Message)>,
}

impl<C: Connector, T: Timer> Drop for Driver<C, T> {
    /// A driver that is dropped (never spawned, its task cancelled, or `run` ended) ends
    /// the session for every handle, so nothing waits for a driver that no longer exists.
    fn drop(&mut self) {
        self.shared.lock().finish(ClientError::Closed);
    }
}

impl<C: Connector, T: Timer> std::fmt::Debug for Driver<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl<C: Connector, T: Timer> Driver<C, T> {
    /// Runs the connection (and reconnections) until the client disconnects or the
    /// connection is lost without reconnect.
    pub async fn run(mut self) -> Result<(), ClientError> {
        loop {
            let result = match self.io.take() {
                Some(mut io) => {
                    // Packets that arrived with the CONNACK (queued messages of a resumed
                    // session) are already in the read buffer.
                    let r = match self.process_input(Instant::now()) {
                        Ok(()) => future::poll_fn(|cx| self.poll_serve(cx, &mut io)).await,
                        Err(e) => Err(e),
                    };
                    if r.is_ok() {
                        // A peer that stopped reading must not hold the close forever.
                        let wait = std::time::Duration::from_secs(1).min(self.connect_timeout);
                        let deadline = Instant::now() + wait;
                        let close = io.close();
                        let sleep = self.timer.sleep_until(deadline);
                        futures::pin_mut!(close, sleep);
                        let _ = future::select(close, sleep).await;
                    }
                    // Nothing of this connection may leak into the next: a partly written
                    // packet at the head of `wbuf` would corrupt the new stream.
                    self.wbuf.clear();
                    self.need_flush = false;
                    self.sleep = None;
                    self.close_deadline = None;
                    r
                }
                None => Err(ClientError::ConnectionClosed),
            };
            let err = match result {
                Ok(()) => {
                    self.shared.lock().finish(ClientError::Closed);
                    return Ok(());
                }
                Err(e) => e,
            };
            {
                let mut g = self.shared.lock();
                // A 5.0 broker that said why it closed: that is the cause, not the close.
                let err = match (err, g.state.disconnect_reason()) {
                    (ClientError::ConnectionClosed | ClientError::Io(_), Some(r)) => {
                        ClientError::Disconnected(r)
                    }
                    (e, _) => e,
                };
                g.state.connection_lost();
                if g.closing {
                    g.finish(ClientError::Closed);
                    return Ok(());
                }
                match self.reconnect {
                    Some(_) if err.is_transient() => {
                        g.status = Status::Down;
                        tracing::debug!("connection lost ({err}); reconnecting");
                    }
                    _ => {
                        g.finish(err.clone());
                        return Err(err);
                    }
                }
            }
            let backoff = self.reconnect.unwrap_or_default();
            let mut delay = backoff.initial;
            loop {
                if self.sleep_or_close(Instant::now() + delay).await {
                    self.shared.lock().finish(ClientError::Closed);
                    return Ok(());
                }
                match self.establish().await {
                    Ok(io) => {
                        self.io = Some(io);
                        let mut g = self.shared.lock();
                        g.dispatch(&mut self.calls);
                        drop(g);
                        run_calls(&mut self.calls);
                        break;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::debug!("reconnect failed ({e}); next try in {delay:?}");
                        delay = (delay * 2).min(backoff.max);
                    }
                    Err(e) => {
                        self.shared.lock().finish(e.clone());
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Sleeps until `deadline`; true if the client started closing meanwhile.
    async fn sleep_or_close(&mut self, deadline: Instant) -> bool {
        let mut sleep = Box::pin(self.timer.sleep_until(deadline));
        let shared = self.shared.clone();
        future::poll_fn(|cx| {
            let mut g = shared.lock();
            if g.closing || g.handles == 0 {
                return Poll::Ready(true);
            }
            g.driver_waker = Some(cx.waker().clone());
            drop(g);
            sleep.as_mut().poll(cx).map(|_| false)
        })
        .await
    }

    /// Opens a transport, sends CONNECT and reads CONNACK, within the connect timeout.
    async fn establish(&mut self) -> Result<C::Io, ClientError> {
        let deadline = Instant::now() + self.connect_timeout;
        let sleep = self.timer.sleep_until(deadline);
        let attempt = Self::handshake(
            &mut self.connector,
            &self.shared,
            &self.connect,
            &self.decode,
            &mut self.rbuf,
        );
        futures::pin_mut!(sleep);
        futures::pin_mut!(attempt);
        match future::select(attempt, sleep).await {
            Either::Left((r, _)) => r,
            Either::Right(_) => {
                self.shared.lock().state.connection_lost();
                Err(ClientError::Timeout("CONNACK"))
            }
        }
    }

    async fn handshake(
        connector: &mut C,
        shared: &Shared,
        connect: &Connect,
        opts: &DecodeOptions,
        rbuf: &mut BytesMut,
    ) -> Result<C::Io, ClientError> {
        let mut io = connector.connect().await?;
        rbuf.clear();
        let bytes = {
            let mut g = shared.lock();
            g.state
                .start_connect(connect)
                .map_err(ClientError::Encode)?;
            g.state.output().split()
        };
        io.write_all(&bytes).await?;
        io.flush().await?;
        loop {
            match decode(rbuf, opts) {
                Ok(Some(p)) => {
                    // CONNACK ends the handshake; a 5.0 AUTH challenge before it is answered
                    // (the state wrote the answer) and the wait goes on.
                    let answer = {
                        let mut g = shared.lock();
                        match g.state.handle(p, Instant::now()) {
                            Ok(()) if g.state.phase() == Phase::Connected => {
                                g.state.note_write(Instant::now());
                                return Ok(io);
                            }
                            Ok(()) => g.state.output().split(),
                            Err(HandleError::Refused(r)) => return Err(ClientError::Refused(r.0)),
                            Err(HandleError::Protocol(v)) => return Err(ClientError::Protocol(v)),
                        }
                    };
                    if !answer.is_empty() {
                        io.write_all(&answer).await?;
                        io.flush().await?;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Decode(e)),
            }
            let n = read_some(&mut io, rbuf).await?;
            if n == 0 {
                return Err(ClientError::ConnectionClosed);
            }
        }
    }

    fn poll_serve(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut C::Io,
    ) -> Poll<Result<(), ClientError>> {
        let mut budget = BUDGET;
        loop {
            let mut progress = false;
            let now = Instant::now();
            let (read_ok, next_timeout) = {
                let mut g = self.shared.lock();
                if !g
                    .driver_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    g.driver_waker = Some(cx.waker().clone());
                }
                if (g.closing || g.handles == 0) && g.state.phase() == Phase::Connected {
                    g.closing = true;
                    g.state.disconnect();
                }
                if self.wbuf.is_empty() && !g.state.output().is_empty() {
                    std::mem::swap(&mut self.wbuf, g.state.output());
                    g.wake_writers();
                }
                if g.closing && self.close_deadline.is_none() {
                    self.close_deadline = Some(now + self.connect_timeout);
                }
                if self.close_deadline.is_some_and(|d| now >= d) {
                    // The DISCONNECT did not get out in time: give up on a clean close.
                    return Poll::Ready(Ok(()));
                }
                if g.closing && self.wbuf.is_empty() && g.state.output().is_empty() {
                    drop(g);
                    return match Pin::new(&mut *io).poll_flush(cx) {
                        Poll::Ready(_) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
                let room = g.incoming.len() < g.incoming_cap;
                let next = g.state.next_timeout();
                if next.is_some_and(|t| now >= t) {
                    g.state
                        .handle_timeout(now)
                        .map_err(|_| ClientError::Timeout("PINGRESP"))?;
                    if self.wbuf.is_empty() {
                        std::mem::swap(&mut self.wbuf, g.state.output());
                    }
                }
                let next = match (g.state.next_timeout(), self.close_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (room, next)
            };

            if !self.wbuf.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, &self.wbuf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.wbuf.advance(n);
                        if self.wbuf.is_empty() {
                            self.wbuf.clear();
                        }
                        self.shared.lock().state.note_write(now);
                        self.need_flush = true;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if self.wbuf.is_empty() && self.need_flush {
                match Pin::new(&mut *io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.need_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }

            if read_ok {
                if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                    self.rbuf.reserve(READ_CHUNK);
                }
                let len = self.rbuf.len();
                // Zero-fill (futures' read needs initialised memory) at most one chunk, not
                // the whole spare capacity a large frame left behind.
                let cap = self.rbuf.capacity().min(len + READ_CHUNK);
                self.rbuf.resize(cap, 0);
                let r = Pin::new(&mut *io).poll_read(cx, &mut self.rbuf[len..]);
                match r {
                    Poll::Ready(Ok(0)) => {
                        self.rbuf.truncate(len);
                        return Poll::Ready(Err(ClientError::ConnectionClosed));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.rbuf.truncate(len + n);
                        self.process_input(now)?;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        self.rbuf.truncate(len);
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Pending => self.rbuf.truncate(len),
                }
            }

            match next_timeout {
                Some(t) => {
                    // The deadline moves later with every packet; a timer is only re-armed
                    // when it must fire earlier. One that fires early just leads to a
                    // re-check and a new timer for the later deadline.
                    if self.sleep.as_ref().map_or(true, |(d, _)| t < *d) {
                        self.sleep = Some((t, Box::pin(self.timer.sleep_until(t))));
                    }
                    if let Some((_, s)) = self.sleep.as_mut() {
                        if s.as_mut().poll(cx).is_ready() {
                            self.sleep = None;
                            progress = true;
                        }
                    }
                }
                None => self.sleep = None,
            }

            if !progress {
                return Poll::Pending;
            }
            budget -= 1;
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }

    /// Decodes every complete frame in the read buffer and feeds the state.
    fn process_input(&mut self, now: Instant) -> Result<(), ClientError> {
        let mut g = self.shared.lock();
        let mut result = Ok(());
        loop {
            match decode(&mut self.rbuf, &self.decode) {
                Ok(Some(p)) => match g.state.handle(p, now) {
                    Ok(()) => {}
                    Err(HandleError::Protocol(v)) => {
                        result = Err(ClientError::Protocol(v));
                        break;
                    }
                    Err(HandleError::Refused(r)) => {
                        result = Err(ClientError::Refused(r.0));
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    result = Err(ClientError::Decode(e));
                    break;
                }
            }
        }
        // What the packets before a bad one completed still completes: an acknowledged
        // publish must not be reported failed because a later packet was malformed.
        g.dispatch(&mut self.calls);
        drop(g);
        run_calls(&mut self.calls);
        result
    }
}

fn run_calls(calls: &mut Vec<(Callback, Message)>) {
    for (cb, msg) in calls.drain(..) {
        let mut f = cb.lock().unwrap_or_else(|e| e.into_inner());
        f(msg);
    }
}

async fn read_some<Io: AsyncRead + Unpin>(io: &mut Io, rbuf: &mut BytesMut) -> io::Result<usize> {
    use futures::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    let n = io.read(&mut chunk).await?;
    rbuf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A handle to a client session. Cheap to clone and `Send + Sync`; every clone talks to
/// the same driver. When the last clone is dropped the client disconnects.
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Clone for Client {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.handles -= 1;
        if g.handles == 0 {
            g.closing = true;
            let w = g.take_driver_waker();
            drop(g);
            wake(w);
        }
    }
}

impl Shared {
    /// Polls the completion of `token`: its result once (the entry is then removed), or
    /// Pending with `cx`'s waker parked. A missing entry means the session ended.
    fn poll_completion(
        &self,
        token: Token,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Outcome, ClientError>> {
        let mut g = self.lock();
        match g.completions.get_mut(&token) {
            Some(Completion::Waiting(w)) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            Some(Completion::Done(_)) => match g.completions.remove(&token) {
                Some(Completion::Done(r)) => Poll::Ready(r),
                _ => Poll::Ready(Err(ClientError::Closed)),
            },
            None => Poll::Ready(Err(ClientError::Closed)),
        }
    }

    /// Nobody waits for `token` any more.
    fn forget_completion(&self, token: Token) {
        self.lock().completions.remove(&token);
    }
}

/// Waits for a request's completion; forgets the request if dropped first.
struct CompletionFuture<'a> {
    shared: &'a Shared,
    token: Token,
}

impl Future for CompletionFuture<'_> {
    type Output = Result<Outcome, ClientError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.shared.poll_completion(self.token, cx)
    }
}

impl Drop for CompletionFuture<'_> {
    fn drop(&mut self) {
        self.shared.forget_completion(self.token);
    }
}

/// The acknowledgement of a message handed over with [`Client::submit`]: resolves when
/// its flow completes (immediately for QoS 0, which holds nothing).
pub struct Delivery {
    pending: Option<(Arc<Shared>, Token)>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("token", &self.pending.as_ref().map(|(_, t)| *t))
            .finish()
    }
}

impl Future for Delivery {
    type Output = Result<(), ClientError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some((shared, token)) = &this.pending else {
            return Poll::Ready(Ok(()));
        };
        let r = std::task::ready!(shared.poll_completion(*token, cx));
        this.pending = None;
        Poll::Ready(r.map(|_| ()))
    }
}

impl Delivery {
    /// Resolves like the `Delivery` itself, with the broker's success code: 0x00, or on
    /// 5.0 0x10 (no matching subscribers) for a QoS 1 message (QoS 0 and QoS 2: 0x00).
    pub async fn reason(mut self) -> Result<ReasonCode, ClientError> {
        let Some((shared, token)) = self.pending.take() else {
            return Ok(ReasonCode::SUCCESS);
        };
        let r = CompletionFuture {
            shared: &shared,
            token,
        }
        .await;
        match r? {
            Outcome::Published(code) => Ok(code),
            _ => Ok(ReasonCode::SUCCESS),
        }
    }
}

/// SUBSCRIBE properties carrying a 5.0 Subscription Identifier (none for 0).
fn identifier_property(ident: u32) -> Properties {
    let mut p = Properties::new();
    if ident != 0 {
        p.get_mut().subscription_identifiers = vec![ident];
    }
    p
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some((shared, token)) = &self.pending {
            shared.forget_completion(*token);
        }
    }
}

impl Client {
    /// Publishes. Completes at QoS 0 when the message is buffered for writing, at QoS 1 on
    /// PUBACK, at QoS 2 on PUBCOMP. Waits while the in-flight window or the output buffer
    /// is full, and (QoS 0) while reconnecting. A QoS 1/2 message survives reconnects: it
    /// is resent until acknowledged.
    pub async fn publish(
        &self,
        topic: impl IntoTopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), ClientError> {
        self.submit(topic, payload, qos, retain).await?.await
    }

    /// Hands a message over without waiting for its acknowledgement: returns once the
    /// message has a place in the window (waiting while it is full, exactly like
    /// [`Client::publish`]) with a [`Delivery`] that resolves on PUBACK / PUBCOMP. This is
    /// how one task keeps a whole window of QoS 1/2 messages in flight. Dropping the
    /// `Delivery` does not recall the message; it is still delivered and resent as needed.
    pub async fn submit(
        &self,
        topic: impl IntoTopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<Delivery, ClientError> {
        self.submit_with(topic, payload, qos, retain, Properties::new())
            .await
    }

    /// 5.0: publishes with properties (Message Expiry Interval, Content Type, Payload
    /// Format Indicator, Response Topic, Correlation Data, User Properties) and returns the
    /// broker's success code: 0x00, or 0x10 when nobody subscribed (QoS 1). A refusal is
    /// [`ClientError::PublishRefused`].
    pub async fn publish_with(
        &self,
        topic: impl IntoTopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Result<ReasonCode, ClientError> {
        self.submit_with(topic, payload, qos, retain, properties)
            .await?
            .reason()
            .await
    }

    /// [`Client::submit`] with 5.0 properties (see [`Client::publish_with`]).
    pub async fn submit_with(
        &self,
        topic: impl IntoTopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Result<Delivery, ClientError> {
        let topic = topic.into_topic_name().map_err(ClientError::InvalidTopic)?;
        if !properties.is_empty() && !self.shared.lock().state.options().version.is_v5() {
            return Err(ClientError::InvalidOptions(
                "PUBLISH properties need MQTT 5.0",
            ));
        }
        if !properties.subscription_identifiers.is_empty() || properties.topic_alias.is_some() {
            // The broker's to send [MQTT-3.3.4-6]; aliases are the client's own business.
            return Err(ClientError::InvalidOptions(
                "a PUBLISH may not carry a Subscription Identifier or Topic Alias",
            ));
        }
        let mut msg = Some(Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id: None,
            properties,
            payload: payload.into(),
        });
        let token = future::poll_fn(|cx| self.try_publish(&mut msg, cx)).await?;
        Ok(Delivery {
            pending: token.map(|t| (self.shared.clone(), t)),
        })
    }

    fn try_publish(
        &self,
        msg: &mut Option<Publish>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Token>, ClientError>> {
        let mut g = self.shared.lock();
        if let Some(e) = g.closed_error() {
            return Poll::Ready(Err(e));
        }
        let Some(p) = msg.take() else {
            return Poll::Ready(Err(ClientError::Closed));
        };
        if g.state.output().len() >= g.max_buffered {
            *msg = Some(p);
            g.writers.push(cx.waker().clone());
            return Poll::Pending;
        }
        match g.state.publish(p) {
            Ok(token) => {
                if let Some(t) = token {
                    g.completions.insert(t, Completion::Waiting(None));
                }
                let w = g.take_driver_waker();
                drop(g);
                wake(w);
                Poll::Ready(Ok(token))
            }
            Err(PublishError::WindowFull(p)) | Err(PublishError::NotConnected(p)) => {
                *msg = Some(p);
                g.writers.push(cx.waker().clone());
                Poll::Pending
            }
            Err(PublishError::Encode(e, _)) => Poll::Ready(Err(ClientError::Encode(e))),
            Err(PublishError::NotAllowed(code, _)) => {
                Poll::Ready(Err(ClientError::PublishRefused(code)))
            }
        }
    }

    /// Subscribes to one filter; returns the QoS the broker granted, or
    /// [`ClientError::SubscriptionRefused`].
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<QoS, ClientError> {
        let codes = self.subscribe_many([(filter, qos)]).await?;
        match codes.into_iter().next() {
            Some(Ok(q)) => Ok(q),
            Some(Err(code)) => Err(ClientError::SubscriptionRefused(code)),
            None => Err(ClientError::Closed),
        }
    }

    /// Subscribes to several filters in one SUBSCRIBE; one result per filter, in order:
    /// the granted QoS or the failure code.
    pub async fn subscribe_many<'f>(
        &self,
        filters: impl IntoIterator<Item = (&'f str, QoS)>,
    ) -> Result<Vec<Result<QoS, ReasonCode>>, ClientError> {
        let filters: Vec<(&str, SubscriptionOptions)> = filters
            .into_iter()
            .map(|(f, q)| (f, SubscriptionOptions::new(q)))
            .collect();
        self.subscribe_opts(&filters, None).await
    }

    /// Subscribes to several filters in one SUBSCRIBE with every option chosen (5.0: No
    /// Local, Retain As Published, Retain Handling) and, on 5.0, a Subscription
    /// Identifier that the broker sends back with every message these filters match
    /// (see `Message::properties.subscription_identifiers`). Shared subscriptions are
    /// filters `$share/{group}/{filter}`. One result per filter, in order: the granted QoS
    /// or the failure code.
    pub async fn subscribe_opts(
        &self,
        filters: &[(&str, SubscriptionOptions)],
        identifier: Option<u32>,
    ) -> Result<Vec<Result<QoS, ReasonCode>>, ClientError> {
        let mut subs = Vec::new();
        for (f, o) in filters {
            subs.push(Subscription {
                filter: topic_filter(f)?,
                options: *o,
            });
        }
        if subs.is_empty() {
            return Ok(Vec::new());
        }
        let ident = identifier.unwrap_or(0);
        if ident > 268_435_455 {
            return Err(ClientError::InvalidOptions(
                "a subscription identifier is 1 to 268,435,455",
            ));
        }
        if identifier.is_some() && !self.shared.lock().state.options().version.is_v5() {
            return Err(ClientError::InvalidOptions(
                "subscription identifiers need MQTT 5.0",
            ));
        }
        let wanted: Vec<(TopicFilter, SubscriptionOptions)> =
            subs.iter().map(|s| (s.filter.clone(), s.options)).collect();
        let mut req = Some(subs);
        let token = future::poll_fn(|cx| {
            self.try_request(cx, |state| {
                let subs = req.take().unwrap_or_default();
                state.subscribe_with(subs, identifier_property(ident)).ok()
            })
        })
        .await?;
        let Outcome::SubAck(codes) = (CompletionFuture {
            shared: &self.shared,
            token,
        })
        .await?
        else {
            return Err(ClientError::Closed);
        };
        let results: Vec<Result<QoS, ReasonCode>> = codes
            .iter()
            .map(|c| QoS::from_u8(c.0).filter(|_| c.0 <= 2).ok_or(*c))
            .collect();
        let mut g = self.shared.lock();
        for ((f, mut o), r) in wanted.into_iter().zip(&results) {
            if let Ok(q) = r {
                o.qos = *q;
                g.subscriptions.retain(|s| s.0 != f);
                g.subscriptions.push((f, o, ident));
            }
        }
        Ok(results)
    }

    /// Subscribes and calls `callback` for every message matching `filter` (the form of
    /// the original SurgeMQ's `Subscribe(msg, onComplete, onPublish)`). Messages matched
    /// by a callback do not appear on [`Messages`]. The callback runs on the driver's task:
    /// keep it short, and do not block on this client inside it.
    pub async fn subscribe_with(
        &self,
        filter: &str,
        qos: QoS,
        callback: impl FnMut(Message) + Send + 'static,
    ) -> Result<QoS, ClientError> {
        let f = topic_filter(filter)?;
        let id = {
            let mut g = self.shared.lock();
            g.next_callback += 1;
            let id = g.next_callback;
            g.callbacks.push((id, f, Arc::new(Mutex::new(callback))));
            id
        };
        let r = self.subscribe(filter, qos).await;
        if r.is_err() {
            self.shared.lock().callbacks.retain(|(i, _, _)| *i != id);
        }
        r
    }

    /// Unsubscribes from filters (and drops their callbacks).
    pub async fn unsubscribe(&self, filters: &[&str]) -> Result<(), ClientError> {
        let mut fs = Vec::with_capacity(filters.len());
        for f in filters {
            fs.push(topic_filter(f)?);
        }
        if fs.is_empty() {
            return Ok(());
        }
        {
            let mut g = self.shared.lock();
            g.callbacks.retain(|(_, f, _)| !fs.contains(f));
            g.subscriptions.retain(|s| !fs.contains(&s.0));
        }
        let mut req = Some(fs);
        let token = future::poll_fn(|cx| {
            self.try_request(cx, |state| {
                state.unsubscribe(req.take().unwrap_or_default()).ok()
            })
        })
        .await?;
        CompletionFuture {
            shared: &self.shared,
            token,
        }
        .await
        .map(|_| ())
    }

    fn try_request(
        &self,
        cx: &mut Context<'_>,
        issue: impl FnOnce(&mut ClientState) -> Option<Token>,
    ) -> Poll<Result<Token, ClientError>> {
        let mut g = self.shared.lock();
        if let Some(e) = g.closed_error() {
            return Poll::Ready(Err(e));
        }
        if !g.state.requests_open() {
            g.writers.push(cx.waker().clone());
            return Poll::Pending;
        }
        let Some(token) = issue(&mut g.state) else {
            return Poll::Ready(Err(ClientError::Closed));
        };
        g.completions.insert(token, Completion::Waiting(None));
        let w = g.take_driver_waker();
        drop(g);
        wake(w);
        Poll::Ready(Ok(token))
    }

    /// Sends DISCONNECT (so the broker discards the will), closes the connection and
    /// waits for the driver to end. Pending operations fail with [`ClientError::Closed`];
    /// with a persistent session the broker keeps what is unacknowledged.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        {
            let mut g = self.shared.lock();
            if matches!(g.status, Status::Closed(_)) {
                return Ok(());
            }
            g.closing = true;
            let w = g.take_driver_waker();
            drop(g);
            wake(w);
        }
        future::poll_fn(|cx| {
            let mut g = self.shared.lock();
            if matches!(g.status, Status::Closed(_)) {
                Poll::Ready(Ok(()))
            } else {
                g.closed_waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// What the broker of the current (or last) connection said it allows (5.0 CONNACK:
    /// Receive Maximum, Maximum Packet Size, Maximum QoS, Retain Available, Server Keep
    /// Alive); the client keeps within it. Defaults on 3.x.
    pub fn server_terms(&self) -> super::state::ServerTerms {
        *self.shared.lock().state.server()
    }

    /// The latest CONNACK's 5.0 properties (e.g. the Assigned Client Identifier, or
    /// Response Information).
    pub fn connack_properties(&self) -> Properties {
        self.shared.lock().connack.clone()
    }

    /// 5.0 request / response (§4.10): publishes `payload` to `topic` with a Response
    /// Topic and Correlation Data, and resolves with the response, which a responder sends
    /// with [`Client::respond`]. The first request subscribes the client to its response
    /// topics: under the broker's Response Information when it gave one (see
    /// [`ConnectOptions::request_response_information`]), otherwise under
    /// `surgemq/response/{client id}`. Responses that match no waiting request (late ones,
    /// after the caller gave up and dropped the future) are dropped. The caller bounds the
    /// wait (e.g. with its executor's timeout).
    pub async fn request(
        &self,
        topic: impl IntoTopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<Message, ClientError> {
        if !self.shared.lock().state.options().version.is_v5() {
            return Err(ClientError::InvalidOptions(
                "request / response needs MQTT 5.0",
            ));
        }
        let base = self.response_base().await?;
        let (tx, rx) = futures::channel::oneshot::channel();
        let correlation = {
            let mut g = self.shared.lock();
            g.next_request += 1;
            let c = Bytes::from(g.next_request.to_string());
            g.responses.insert(c.clone(), tx);
            c
        };
        // Dropped unanswered (the caller gave up, or the publish failed): no entry stays.
        struct Forget<'a>(&'a Shared, Bytes);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.lock().responses.remove(&self.1);
            }
        }
        let _forget = Forget(&self.shared, correlation.clone());
        let mut properties = Properties::new();
        let p = properties.get_mut();
        p.response_topic = Some(ByteString::from(format!(
            "{base}/{}",
            String::from_utf8_lossy(&correlation)
        )));
        p.correlation_data = Some(correlation);
        self.publish_with(topic, payload, qos, false, properties)
            .await?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Answers a request received as `request`: publishes `payload` to its Response Topic
    /// with its Correlation Data (5.0 §4.10). `Ok(false)` when the message asked for no
    /// response.
    pub async fn respond(
        &self,
        request: &Message,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<bool, ClientError> {
        let Some(topic) = request.properties.response_topic.clone() else {
            return Ok(false);
        };
        let mut properties = Properties::new();
        properties.get_mut().correlation_data = request.properties.correlation_data.clone();
        self.publish_with(&*topic, payload, qos, false, properties)
            .await?;
        Ok(true)
    }

    /// The prefix of this client's response topics, subscribing to them the first time.
    async fn response_base(&self) -> Result<String, ClientError> {
        let _setup = self.shared.response_setup.lock().await;
        let (base, have) = {
            let g = self.shared.lock();
            match &g.response_base {
                Some(b) => (b.clone(), true),
                None => {
                    let base = match &g.connack.response_information {
                        Some(r) => r.trim_end_matches('/').to_string(),
                        None => {
                            let id = g
                                .connack
                                .assigned_client_identifier
                                .as_deref()
                                .unwrap_or(&g.client_id);
                            // A topic level: no wildcard or separator of the id's.
                            let id: String = id
                                .chars()
                                .map(|c| if matches!(c, '+' | '#' | '/') { '_' } else { c })
                                .collect();
                            format!("surgemq/response/{id}")
                        }
                    };
                    (base, false)
                }
            }
        };
        if have {
            return Ok(base);
        }
        let shared = Arc::downgrade(&self.shared);
        self.subscribe_with(&format!("{base}/+"), QoS::AtLeastOnce, move |m: Message| {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let Some(c) = m.properties.correlation_data.clone() else {
                return;
            };
            let waiting = shared.lock().responses.remove(&c);
            if let Some(tx) = waiting {
                let _ = tx.send(m);
            }
        })
        .await?;
        self.shared.lock().response_base = Some(base.clone());
        Ok(base)
    }

    /// 5.0: re-authenticates with the method of [`ConnectOptions::authentication`] and
    /// `data`; the broker's challenges go to the same responder, and a failure ends the
    /// connection (the broker's DISCONNECT, as [`ClientError::Disconnected`]). Returns
    /// false when there is no connection or no method.
    pub fn reauthenticate(&self, data: Option<Bytes>) -> bool {
        let mut g = self.shared.lock();
        let sent = g.state.reauthenticate(data);
        let w = g.take_driver_waker();
        drop(g);
        wake(w);
        sent
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        matches!(self.shared.lock().status, Status::Up)
    }

    /// QoS 1/2 publishes not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.shared.lock().state.inflight()
    }
}

impl Inner {
    fn closed_error(&self) -> Option<ClientError> {
        match &self.status {
            Status::Closed(e) => Some(e.clone()),
            _ if self.closing => Some(ClientError::Closed),
            _ => None,
        }
    }
}

/// Received messages (those no per-subscription callback took), in arrival order. Ends
/// when the client has closed and every message has been taken.
pub struct Messages {
    shared: Arc<Shared>,
    /// Taken from the shared queue in one batch, to lock once per batch.
    local: VecDeque<Message>,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").finish_non_exhaustive()
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.messages_dropped = true;
        g.take_incoming(None);
    }
}

impl Stream for Messages {
    type Item = Message;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = self.get_mut();
        if let Some(m) = this.local.pop_front() {
            return Poll::Ready(Some(m));
        }
        let mut g = this.shared.lock();
        if g.incoming.is_empty() {
            if matches!(g.status, Status::Closed(_)) {
                return Poll::Ready(None);
            }
            g.messages_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        g.take_incoming(Some(&mut this.local));
        Poll::Ready(this.local.pop_front())
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Client>();
    is::<Messages>();
}
