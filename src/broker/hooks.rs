//! Hooks: the extension points an embedder plugs into the broker: authentication (with 5.0
//! enhanced authentication) and authorization of publishes, subscriptions and deliveries
//! ([`ClientRights`], prepared per client). They are
//! called on the shard's thread, so they must be quick.
//!
//! **Owns:** the hook traits and their default implementations.
//!
//! **Must not touch:** broker state: a hook sees what it is asked about and answers.

use std::sync::Arc;

use crate::protocol::ReasonCode;
pub use crate::security::ClientRights;

/// Decides whether a client may connect. Called on the client's home shard for every
/// accepted CONNECT; it must be quick (it runs on the shard's thread) and is shared by
/// all shards.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(())` admits the client; `Err(code)` refuses it with that 5.0 reason code (mapped
    /// to the nearest 3.x CONNACK code for 3.x clients). Not asked for clients of a
    /// listener with `use_identity_as_username`: their verified certificate authenticated
    /// them.
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), ReasonCode>;

    /// Enhanced authentication (5.0 §4.12): an exchange for a client whose CONNECT names
    /// Authentication Method `method`, or None when the method is not supported (the
    /// client gets CONNACK 0x8C, Bad authentication method). Re-authentication
    /// (AUTH 0x19) starts a new exchange with the same method. The broker runs the
    /// exchange (AUTH packets, the connect timeout); the exchange decides. [`authenticate`]
    /// still runs for the CONNECT's user name and password. The default supports no
    /// method.
    ///
    /// [`authenticate`]: Authenticator::authenticate
    fn start_auth(
        &self,
        client_id: &str,
        username: Option<&str>,
        method: &str,
    ) -> Option<Box<dyn AuthExchange>> {
        let _ = (client_id, username, method);
        None
    }

    /// Authorization: whether `client` may publish to `topic`. Asked for every PUBLISH
    /// and, at CONNECT, for the will (a will it may not publish refuses the CONNECT with
    /// Not authorized), then again when the will is due (a will no longer allowed is not
    /// published). A denied PUBLISH is not routed: 5.0 answers QoS 1/2 with PUBACK /
    /// PUBREC 0x87; 3.x has no way to say so and is acknowledged as usual (mosquitto does
    /// the same); QoS 0 is dropped. Counted in `publish_denied`. Default: allowed.
    fn authorize_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        let _ = (client, topic);
        true
    }

    /// Authorization: whether `client` may subscribe to `filter` (the full text, a
    /// `$share/...` one included). Denied: that filter's SUBACK code is 0x87 Not
    /// authorized (3.x: 0x80 Failure), the others go on. Default: allowed.
    fn authorize_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        let _ = (client, filter);
        true
    }

    /// Authorization prepared per client: what it may publish, subscribe to and receive,
    /// resolved once when it connects (after [`authenticate`]) and kept with its
    /// session, so the checks on the hot path ask something made for this client. The
    /// broker asks it for every PUBLISH the client sends and its will (with
    /// [`authorize_publish`]), every SUBSCRIBE filter (with [`authorize_subscribe`]) and
    /// every message delivered to it, retained ones included (a denied delivery is not
    /// made and is counted in `read_denied`). None (the default): nothing beyond the two
    /// hooks above, and no cost per delivery.
    ///
    /// [`authenticate`]: Authenticator::authenticate
    /// [`authorize_publish`]: Authenticator::authorize_publish
    /// [`authorize_subscribe`]: Authenticator::authorize_subscribe
    fn client_rights(&self, client: &ClientInfo<'_>) -> Option<Arc<dyn ClientRights>> {
        let _ = client;
        None
    }

    /// A number that changes whenever [`client_rights`] would answer differently for
    /// clients already connected (a reload of the rules): each shard then asks again for
    /// every session it holds, before its next delivery or check. Asked once per routed
    /// message, so it must be a plain atomic load. Default: 0, never changes.
    ///
    /// [`client_rights`]: Authenticator::client_rights
    fn rights_generation(&self) -> u64 {
        0
    }
}

/// Who asks, for the authorization hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo<'a> {
    /// The client identifier (the assigned one if the server chose it).
    pub client_id: &'a str,
    /// The user name of its CONNECT, if any.
    pub username: Option<&'a str>,
}

/// One step of an enhanced authentication exchange, as the hook decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// More is needed: the server sends AUTH "Continue authentication" (0x18) with this
    /// Authentication Data, and the client answers with AUTH 0x18.
    Continue(Option<bytes::Bytes>),
    /// Authenticated: CONNACK (or, for a re-authentication, AUTH 0x00) carries this
    /// Authentication Data.
    Success(Option<bytes::Bytes>),
    /// Refused with this reason code (5.0, 0x80 or above): CONNACK with it at connect, a
    /// DISCONNECT with it on re-authentication [MQTT-4.12.1-2].
    Fail(ReasonCode),
}

/// One enhanced authentication exchange (5.0 §4.12): created by
/// [`Authenticator::start_auth`] for a CONNECT or a re-authentication, and fed each
/// Authentication Data the client sends, the first being the CONNECT's (or the
/// re-authenticating AUTH's).
pub trait AuthExchange: 'static {
    /// The client sent `data` (None when its packet had no Authentication Data).
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// A shared authenticator is one too (so hooks can be stacked: the password file in front
/// of an embedder's).
impl Authenticator for Arc<dyn Authenticator> {
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), ReasonCode> {
        (**self).authenticate(client_id, username, password)
    }

    fn start_auth(
        &self,
        client_id: &str,
        username: Option<&str>,
        method: &str,
    ) -> Option<Box<dyn AuthExchange>> {
        (**self).start_auth(client_id, username, method)
    }

    fn authorize_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        (**self).authorize_publish(client, topic)
    }

    fn authorize_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        (**self).authorize_subscribe(client, filter)
    }

    fn client_rights(&self, client: &ClientInfo<'_>) -> Option<Arc<dyn ClientRights>> {
        (**self).client_rights(client)
    }

    fn rights_generation(&self) -> u64 {
        (**self).rights_generation()
    }
}

/// Admits every client (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<(), ReasonCode> {
        Ok(())
    }
}

/// The hook stacks in force, one per distinct pair of security files a listener uses
/// (its own `password_file` / `acl_file`, or the top level's): a client is authenticated
/// by its listener's stack and keeps that stack's rights for the life of its session.
/// Shared read-only by all shards; each stack swaps its files on a reload by itself.
pub(crate) struct Domains {
    /// Index 0: the top level's files (plain `listeners`, and sessions whose listener is
    /// not known). Never empty.
    stacks: Box<[Arc<dyn Authenticator>]>,
    /// Whether every stack resolves rights from the same ACL source (one ACL file or
    /// none), so a session's rights do not depend on which listener served it.
    one_rights_source: bool,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains")
            .field("stacks", &self.stacks.len())
            .field("one_rights_source", &self.one_rights_source)
            .finish()
    }
}

/// The domain of a session restored from disk whose rights depend on the listener its
/// client comes back through: no rights are resolved for it until then (see
/// [`Domains::rights`]).
pub(crate) const UNKNOWN_DOMAIN: u16 = u16::MAX;

impl Domains {
    /// One stack for every listener (an embedder's hooks, or the top-level files).
    #[cfg(test)]
    pub(crate) fn single(auth: Arc<dyn Authenticator>) -> Domains {
        Domains {
            stacks: Box::new([auth]),
            one_rights_source: true,
        }
    }

    /// `stacks` (index 0 the top level's; at most [`UNKNOWN_DOMAIN`] of them, and at least
    /// one), `one_rights_source` as [`Domains::one_rights_source`] says.
    pub(crate) fn new(stacks: Vec<Arc<dyn Authenticator>>, one_rights_source: bool) -> Domains {
        assert!(!stacks.is_empty() && stacks.len() < usize::from(UNKNOWN_DOMAIN));
        Domains {
            stacks: stacks.into_boxed_slice(),
            one_rights_source,
        }
    }

    /// The stack of domain `d` (the top level's for [`UNKNOWN_DOMAIN`]: the hooks an
    /// embedder gave are in every stack).
    pub(crate) fn get(&self, d: u16) -> &dyn Authenticator {
        match self.stacks.get(usize::from(d)).or(self.stacks.first()) {
            Some(a) => &**a,
            None => &AllowAll,
        }
    }

    /// The domain a session restored from disk gets: the top level's when rights do not
    /// depend on the listener; otherwise unknown until its client reconnects (its queued
    /// messages are checked against its rights then, before any is sent).
    pub(crate) fn restored(&self) -> u16 {
        if self.one_rights_source {
            0
        } else {
            UNKNOWN_DOMAIN
        }
    }

    /// The rights domain `d` gives `client` (None for [`UNKNOWN_DOMAIN`]).
    pub(crate) fn rights(&self, d: u16, client: &ClientInfo<'_>) -> Option<Arc<dyn ClientRights>> {
        if d == UNKNOWN_DOMAIN {
            return None;
        }
        self.get(d).client_rights(client)
    }

    /// A number that moves whenever any stack's rights generation does. One atomic load
    /// per stack (listeners with their own files are few).
    pub(crate) fn rights_generation(&self) -> u64 {
        self.stacks
            .iter()
            .fold(0u64, |g, a| g.wrapping_add(a.rights_generation()))
    }
}
