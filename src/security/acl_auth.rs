//! The ACL file as a hook: [`AclAuth`] puts an [`Acl`] in front of an embedder's
//! authenticator. Each client's rules are resolved once, at CONNECT, into a [`ClientAcl`]
//! its session keeps ([`ClientRights`]); a reload swaps the file and bumps a generation,
//! on which every shard resolves its sessions' rules again.
//!
//! **Owns:** the file in force and its generation. **Must not touch:** files, the broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::acl::{Access, Acl, ClientAcl};
use super::ClientRights;
use crate::broker::hooks::{AuthExchange, Authenticator, ClientInfo};
use crate::protocol::ReasonCode;

impl ClientRights for ClientAcl {
    fn publish(&self, topic: &str) -> bool {
        self.may(topic, Access::Write)
    }
    fn subscribe(&self, filter: &str) -> bool {
        self.may_subscribe(filter)
    }
    fn read(&self, topic: &str) -> bool {
        self.may(topic, Access::Read)
    }
}

/// An ACL file in front of another authenticator (an embedder's hooks, or
/// [`AllowAll`](crate::broker::hooks::AllowAll)): a client may do what both allow.
pub struct AclAuth<A> {
    /// Replaced as a whole by [`AclAuth::replace`]; read once per CONNECT (and per
    /// session after a reload), never per message.
    acl: super::InForce<Acl>,
    generation: AtomicU64,
    inner: A,
}

impl<A> std::fmt::Debug for AclAuth<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclAuth")
            .field("rules", &self.acl().len())
            .finish()
    }
}

impl<A: Authenticator> AclAuth<A> {
    /// Enforces `acl`, then asks `inner`.
    pub fn new(acl: Acl, inner: A) -> AclAuth<A> {
        AclAuth {
            acl: super::InForce::new(acl),
            generation: AtomicU64::new(0),
            inner,
        }
    }
}

impl<A> AclAuth<A> {
    /// The file in force.
    pub fn acl(&self) -> Arc<Acl> {
        self.acl.get()
    }

    /// From now on, `acl` (a reload): connected clients get their rules from it too, as
    /// soon as their shard next routes a message or handles one of their packets.
    pub fn replace(&self, acl: Acl) {
        self.acl.replace(acl);
        // After the swap: a shard that sees the new generation reads the new file.
        self.generation.fetch_add(1, Ordering::Release);
    }
}

impl<A: Authenticator> Authenticator for AclAuth<A> {
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), ReasonCode> {
        self.inner.authenticate(client_id, username, password)
    }

    fn start_auth(
        &self,
        client_id: &str,
        username: Option<&str>,
        method: &str,
    ) -> Option<Box<dyn AuthExchange>> {
        self.inner.start_auth(client_id, username, method)
    }

    fn authorize_publish(&self, client: &ClientInfo<'_>, topic: &str) -> bool {
        self.inner.authorize_publish(client, topic)
    }

    fn authorize_subscribe(&self, client: &ClientInfo<'_>, filter: &str) -> bool {
        self.inner.authorize_subscribe(client, filter)
    }

    fn client_rights(&self, client: &ClientInfo<'_>) -> Option<Arc<dyn ClientRights>> {
        let own: Arc<dyn ClientRights> =
            Arc::new(self.acl().client(client.client_id, client.username));
        super::both(Some(own), self.inner.client_rights(client))
    }

    fn rights_generation(&self) -> u64 {
        self.generation
            .load(Ordering::Acquire)
            .wrapping_add(self.inner.rights_generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::hooks::AllowAll;

    #[test]
    fn rights_follow_the_file_and_its_reload() {
        let auth = AclAuth::new(Acl::parse("topic read a/#\n").unwrap(), AllowAll);
        let who = ClientInfo {
            client_id: "c",
            username: None,
        };
        let r = auth.client_rights(&who).unwrap();
        assert!(r.read("a/x") && !r.publish("a/x") && !r.read("b"));
        assert!(r.subscribe("a/+") && !r.subscribe("#"));
        let g = auth.rights_generation();
        auth.replace(Acl::parse("topic readwrite b\n").unwrap());
        assert_ne!(auth.rights_generation(), g);
        // Rights resolved before keep the old file; asked again, the new one.
        assert!(r.read("a/x"));
        let r = auth.client_rights(&who).unwrap();
        assert!(!r.read("a/x") && r.publish("b") && r.read("b"));
    }
}
