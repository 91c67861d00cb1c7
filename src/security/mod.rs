//! Security files in mosquitto's formats, and what a client may do: [`password`] files
//! (`password_file`, made by `mosquitto_passwd` or `surgemq passwd`) and [`acl`] files
//! (`acl_file`), with the hooks that put them in front of an embedder's
//! ([`password::PasswordAuth`], [`acl_auth::AclAuth`]), and listeners' [`tls`] settings. Pure: parsing, hashing and
//! checking; the server reads the files, and the broker's hooks
//! ([`crate::server::Authenticator`]) are how they take effect.
//!
//! **Must not touch:** sockets, runtimes, broker state.

use std::sync::{Arc, RwLock};

pub mod acl;
pub mod acl_auth;
pub mod password;
pub mod tls;

/// What one client may do, resolved once for it when it connects
/// ([`crate::server::Authenticator::client_rights`]) and kept with its session, so that
/// the checks on the hot path (every PUBLISH it sends, every message delivered to it) ask
/// an answer prepared for it rather than a shared hook.
pub trait ClientRights: Send + Sync + 'static {
    /// Whether it may publish to `topic` (its PUBLISHes and its will).
    fn publish(&self, topic: &str) -> bool;
    /// Whether it may subscribe to `filter` (the filter part of a `$share/...` one).
    fn subscribe(&self, filter: &str) -> bool;
    /// Whether a message to `topic` may be delivered to it (retained ones included).
    fn read(&self, topic: &str) -> bool;
}

impl std::fmt::Debug for dyn ClientRights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientRights")
    }
}

/// Two sets of rights at once: allowed only what both allow (stacked hooks).
#[derive(Debug, Clone)]
pub struct BothRights(pub Arc<dyn ClientRights>, pub Arc<dyn ClientRights>);

impl ClientRights for BothRights {
    fn publish(&self, topic: &str) -> bool {
        self.0.publish(topic) && self.1.publish(topic)
    }
    fn subscribe(&self, filter: &str) -> bool {
        self.0.subscribe(filter) && self.1.subscribe(filter)
    }
    fn read(&self, topic: &str) -> bool {
        self.0.read(topic) && self.1.read(topic)
    }
}

/// The rights of two stacked hooks (None: that hook restricts nothing).
pub fn both(
    a: Option<Arc<dyn ClientRights>>,
    b: Option<Arc<dyn ClientRights>>,
) -> Option<Arc<dyn ClientRights>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Arc::new(BothRights(a, b))),
        (a, b) => a.or(b),
    }
}

/// A parsed security file in force, replaced as a whole by a reload. Readers take an
/// `Arc` of it (once per CONNECT, never per message); a writer that panicked still left a
/// whole file behind (the swap is one assignment), so a poisoned lock is used as is.
#[derive(Debug, Default)]
pub(crate) struct InForce<T>(RwLock<Arc<T>>);

impl<T> InForce<T> {
    pub(crate) fn new(value: impl Into<Arc<T>>) -> InForce<T> {
        InForce(RwLock::new(value.into()))
    }

    pub(crate) fn get(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn replace(&self, value: impl Into<Arc<T>>) {
        let value = value.into();
        match self.0.write() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}
