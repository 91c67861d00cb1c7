//! Hooks: the extension points an embedder plugs into the broker (authentication now,
//! authorization next). They are called on the shard's thread, so they must be quick.
//!
//! **Owns:** the hook traits and their default implementations.
//!
//! **Must not touch:** broker state: a hook sees what it is asked about and answers.

use crate::protocol::ReasonCode;

/// Decides whether a client may connect. Called on the client's home shard for every
/// accepted CONNECT; it must be quick (it runs on the shard's thread) and is shared by
/// all shards.
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(())` admits the client; `Err(code)` refuses it with that 5.0 reason code (mapped
    /// to the nearest 3.x CONNACK code for 3.x clients).
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), ReasonCode>;
}

/// Admits every client (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &str, _: Option<&str>, _: Option<&[u8]>) -> Result<(), ReasonCode> {
        Ok(())
    }
}
