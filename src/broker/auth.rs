//! 5.0 enhanced authentication (§4.12): the AUTH exchange before CONNACK, and
//! re-authentication on a live connection. The hook's [`AuthExchange`] decides each step;
//! this module carries the packets and enforces the protocol around them.
//!
//! - At CONNECT, an Authentication Method the hook does not support is refused with
//!   CONNACK 0x8C (Bad authentication method). Otherwise the exchange runs: AUTH 0x18
//!   (Continue authentication) each way until the hook says success (CONNACK carries the
//!   method and its last data) or failure (CONNACK with its code). Anything but AUTH 0x18
//!   with the same method from the client meanwhile is a Protocol Error (CONNACK 0x82);
//!   the connect timeout bounds the whole exchange, as it bounds CONNECT.
//! - After CONNACK, a client that connected with a method may send AUTH 0x19
//!   (Re-authenticate) with the same method [MQTT-4.12.1-1]; the exchange runs again with
//!   AUTH packets, the connection going on meanwhile. Success is AUTH 0x00; failure is
//!   DISCONNECT with the hook's code [MQTT-4.12.1-2].
//! - AUTH from a client that connected without a method is a Protocol Error (5.0 §4.12:
//!   such a client "MUST NOT send an AUTH packet"), as are AUTH with another method, AUTH
//!   0x18 when no exchange is running, and AUTH 0x00 from a client: DISCONNECT 0x82.
//!
//! **Owns:** AUTH packets and a connection's running exchange.
//! **Must not touch:** sessions and routing.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::connection::ConnShared;
use super::hooks::{AuthExchange, AuthStep};
use super::shard::Shard;
use crate::protocol::reason::{CodeSet, CONNACK_CODES, DISCONNECT_CODES};
use crate::protocol::{Auth, Connect, Packet, Properties, ProtocolVersion, ReasonCode};

/// What a connection that authenticated with a method keeps for re-authentication.
pub(crate) struct AuthState {
    pub method: ByteString,
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    /// The hook stack of the listener that admitted it (which re-authenticates it).
    pub domain: u16,
    /// The re-authentication under way, if any.
    pub running: Option<Box<dyn AuthExchange>>,
}

impl AuthState {
    /// What a connection whose 5.0 CONNECT named an Authentication Method (and passed
    /// its exchange) keeps for re-authentication.
    pub(crate) fn of(connect: &Connect, domain: u16) -> Option<Box<AuthState>> {
        let method = connect
            .properties
            .authentication_method
            .as_ref()
            .filter(|_| connect.version.is_v5())?;
        Some(Box::new(AuthState {
            method: ByteString::from(&**method),
            client_id: ByteString::from(&*connect.client_id),
            username: connect.username.as_deref().map(ByteString::from),
            domain,
            running: None,
        }))
    }
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("method", &self.method)
            .field("running", &self.running.is_some())
            .finish()
    }
}

/// A failure the hook decided is reported with its code where the packet allows it
/// (CONNACK at connect, DISCONNECT on re-authentication); any other code, a success code
/// included, becomes Not authorized (0x87, valid in both).
fn failure(code: ReasonCode, allowed: &CodeSet) -> ReasonCode {
    if code.0 >= 0x80 && allowed.contains(code.0) {
        code
    } else {
        ReasonCode::NOT_AUTHORIZED
    }
}

/// Appends an AUTH packet.
pub(crate) fn write_auth(
    out: &mut BytesMut,
    reason: ReasonCode,
    method: &str,
    data: Option<Bytes>,
) {
    let mut properties = Properties::new();
    let p = properties.get_mut();
    p.authentication_method = Some(ByteString::from(method));
    p.authentication_data = data;
    if let Err(e) = Packet::Auth(Auth { reason, properties }).encode(ProtocolVersion::V5, out) {
        tracing::error!(error = %e, "AUTH encode failed");
    }
}

/// Where a CONNECT-time exchange stands after the client's latest data.
pub(crate) enum ConnectStep {
    /// Send this AUTH 0x18 and wait for the client's.
    Continue(BytesMut),
    /// Authenticated: the CONNECT now carries the exchange's last data for CONNACK.
    Done,
    /// Refused with this code (CONNACK).
    Refused(ReasonCode),
}

/// The exchange of a CONNECT (see the module docs), one step at a time: the connection
/// task sends what it says and reads the client's next packet. Created for a 5.0 CONNECT
/// with an Authentication Method.
pub(crate) struct ConnectAuth {
    method: ByteString,
    exchange: Option<Box<dyn AuthExchange>>,
}

impl ConnectAuth {
    /// The exchange for `connect`, None when it names no method (or is not 5.0).
    pub(crate) fn new(
        auth: &dyn super::hooks::Authenticator,
        connect: &Connect,
    ) -> Option<ConnectAuth> {
        let method = connect
            .properties
            .authentication_method
            .as_ref()
            .filter(|_| connect.version.is_v5())?;
        Some(ConnectAuth {
            method: ByteString::from(&**method),
            exchange: auth.start_auth(&connect.client_id, connect.username.as_deref(), method),
        })
    }

    /// The first step, on the CONNECT's own data.
    pub(crate) fn start(&mut self, connect: &mut Connect) -> ConnectStep {
        let Some(exchange) = self.exchange.as_mut() else {
            return ConnectStep::Refused(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let step = exchange.step(connect.properties.authentication_data.as_deref());
        self.answer(step, connect)
    }

    /// The client answered with `packet`.
    pub(crate) fn next(&mut self, packet: Packet, connect: &mut Connect) -> ConnectStep {
        let data = match packet {
            Packet::Auth(a)
                if a.reason == ReasonCode::CONTINUE_AUTHENTICATION
                    && a.properties.authentication_method.as_deref() == Some(&*self.method) =>
            {
                a.properties.authentication_data.clone()
            }
            other => {
                tracing::info!(packet = ?other.packet_type(), "enhanced authentication: expected AUTH 0x18 with the same method");
                return ConnectStep::Refused(ReasonCode::PROTOCOL_ERROR);
            }
        };
        let Some(exchange) = self.exchange.as_mut() else {
            return ConnectStep::Refused(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let step = exchange.step(data.as_deref());
        self.answer(step, connect)
    }

    fn answer(&mut self, step: AuthStep, connect: &mut Connect) -> ConnectStep {
        match step {
            AuthStep::Continue(data) => {
                let mut out = BytesMut::new();
                write_auth(
                    &mut out,
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    &self.method,
                    data,
                );
                ConnectStep::Continue(out)
            }
            AuthStep::Success(data) => {
                // CONNACK echoes the method with the exchange's last data (see
                // `Negotiated::auth`).
                connect.properties.get_mut().authentication_data = data;
                ConnectStep::Done
            }
            AuthStep::Fail(code) => ConnectStep::Refused(failure(code, &CONNACK_CODES)),
        }
    }
}

/// An AUTH on a live connection (re-authentication). `Ok` when the connection goes on
/// (AUTH 0x18 or 0x00 written); `Err` with the code of the DISCONNECT that ends it.
pub(crate) fn on_auth(
    shard: &Shard,
    conn: &ConnShared,
    a: Auth,
) -> Result<(), (ReasonCode, &'static str)> {
    let Some(mut st) = conn.take_auth() else {
        return Err((
            ReasonCode::PROTOCOL_ERROR,
            "AUTH without an Authentication Method in CONNECT (5.0 §4.12)",
        ));
    };
    let r = reauth(shard, conn, &mut st, a);
    conn.put_auth(st);
    r
}

fn reauth(
    shard: &Shard,
    conn: &ConnShared,
    st: &mut AuthState,
    a: Auth,
) -> Result<(), (ReasonCode, &'static str)> {
    if a.properties.authentication_method.as_deref() != Some(&*st.method) {
        return Err((
            ReasonCode::PROTOCOL_ERROR,
            "AUTH with another Authentication Method than CONNECT's [MQTT-4.12.1-1]",
        ));
    }
    let data = a.properties.authentication_data.as_deref();
    let step = match a.reason {
        ReasonCode::REAUTHENTICATE => {
            let Some(mut exchange) =
                shard
                    .auth(st.domain)
                    .start_auth(&st.client_id, st.username.as_deref(), &st.method)
            else {
                return Err((
                    ReasonCode::BAD_AUTHENTICATION_METHOD,
                    "re-authentication with a method the hook no longer supports",
                ));
            };
            let step = exchange.step(data);
            st.running = Some(exchange);
            step
        }
        ReasonCode::CONTINUE_AUTHENTICATION => match st.running.as_mut() {
            Some(exchange) => exchange.step(data),
            None => {
                return Err((
                    ReasonCode::PROTOCOL_ERROR,
                    "AUTH 0x18 with no authentication exchange under way",
                ))
            }
        },
        _ => {
            return Err((
                ReasonCode::PROTOCOL_ERROR,
                "AUTH from a client with a reason other than 0x18 or 0x19",
            ))
        }
    };
    let mut out = conn.out.borrow_mut();
    match step {
        AuthStep::Continue(d) => {
            write_auth(&mut out, ReasonCode::CONTINUE_AUTHENTICATION, &st.method, d)
        }
        AuthStep::Success(d) => {
            st.running = None;
            write_auth(&mut out, ReasonCode::SUCCESS, &st.method, d);
        }
        AuthStep::Fail(code) => {
            st.running = None;
            return Err((
                failure(code, &DISCONNECT_CODES),
                "re-authentication failed [MQTT-4.12.1-2]",
            ));
        }
    }
    Ok(())
}
