//! Password files in mosquitto's format, so that files made by `mosquitto_passwd` work
//! unchanged: one `username:hash` line per user, where the hash is
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 over the password with the salt,
//!   `ITERATIONS` rounds, 64 bytes (mosquitto 2.0 writes 101 rounds and a 12-byte salt;
//!   later versions a 64-byte salt: both are read);
//! - `$6$SALT$HASH`: SHA-512 of the password followed by the salt (older mosquitto).
//!
//! Salts and hashes are standard base64. Blank lines and `#` comments are skipped. A line
//! that does not parse is an error naming its line number (a broker must not start with a
//! half-read password file). New entries ([`hash_password`]) are `$7$` with a 12-byte
//! random salt and [`ITERATIONS`] rounds. Comparison is constant-time.
//!
//! **Owns:** parsing, hashing and checking. **Must not touch:** files (the caller reads and
//! writes them), the broker.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::broker::hooks::Authenticator;
use crate::protocol::ReasonCode;

/// PBKDF2 rounds of new entries: mosquitto 2.0's default.
pub const ITERATIONS: u32 = 101;

/// The most PBKDF2 rounds accepted from a file: each CONNECT pays for them on its shard.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// The salt.
        salt: Vec<u8>,
        /// The digest.
        hash: Vec<u8>,
    },
    /// `$7$`: PBKDF2-HMAC-SHA512(password, salt, iterations).
    Pbkdf2Sha512 {
        /// Rounds.
        iterations: u32,
        /// The salt.
        salt: Vec<u8>,
        /// The derived key (64 bytes as mosquitto writes it).
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash itself in a log line.
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash($6$)"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash($7$, {iterations} rounds)")
            }
        }
    }
}

/// Why a password file line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The line has no `:` between user and hash, or an empty user.
    #[error("line {0}: expected `username:hash`")]
    Line(usize),
    /// The hash is not `$6$salt$hash` or `$7$iterations$salt$hash`.
    #[error("line {0}: the hash is not in mosquitto's $6$ or $7$ format")]
    Format(usize),
    /// Base64 that does not decode, or a digest of the wrong length.
    #[error("line {0}: the salt or hash is not valid base64 of the right length")]
    Encoding(usize),
    /// Iterations of 0 or above [`MAX_ITERATIONS`].
    #[error("line {0}: iterations must be 1 ..= {MAX_ITERATIONS}")]
    Iterations(usize),
    /// The same user twice.
    #[error("line {0}: user {1:?} appears twice")]
    Duplicate(usize, String),
}

impl PasswordHash {
    /// Parses `$6$...` or `$7$...` (`line` is for the error).
    pub fn parse(text: &str, line: usize) -> Result<PasswordHash, PasswordError> {
        let b64 = |s: &str| B64.decode(s).map_err(|_| PasswordError::Encoding(line));
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "6", salt, hash] => {
                let hash = b64(hash)?;
                if hash.len() != 64 {
                    return Err(PasswordError::Encoding(line));
                }
                Ok(PasswordHash::Sha512 {
                    salt: b64(salt)?,
                    hash,
                })
            }
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .map_err(|_| PasswordError::Format(line))?;
                if iterations == 0 || iterations > MAX_ITERATIONS {
                    return Err(PasswordError::Iterations(line));
                }
                let hash = b64(hash)?;
                if hash.is_empty() || hash.len() > 64 {
                    return Err(PasswordError::Encoding(line));
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: b64(salt)?,
                    hash,
                })
            }
            _ => Err(PasswordError::Format(line)),
        }
    }

    /// Whether `password` matches (constant-time in the comparison).
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            PasswordHash::Sha512 { salt, .. } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().to_vec()
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = vec![0u8; hash.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out
            }
        };
        let stored = match self {
            PasswordHash::Sha512 { hash, .. } | PasswordHash::Pbkdf2Sha512 { hash, .. } => hash,
        };
        computed.ct_eq(stored).into()
    }

    /// The `$6$` / `$7$` text of this hash.
    pub fn to_line(&self) -> String {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash)),
        }
    }
}

/// A new `$7$` hash of `password` with a fresh 12-byte random salt (as `mosquitto_passwd`
/// writes). Fails only if the system has no randomness to give.
pub fn hash_password(password: &[u8]) -> Result<PasswordHash, getrandom::Error> {
    let mut salt = vec![0u8; 12];
    getrandom::getrandom(&mut salt)?;
    let mut hash = vec![0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, ITERATIONS, &mut hash);
    Ok(PasswordHash::Pbkdf2Sha512 {
        iterations: ITERATIONS,
        salt,
        hash,
    })
}

/// The users of a password file, in file order (kept for rewriting the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    entries: Vec<(String, PasswordHash)>,
    by_user: HashMap<String, usize>,
}

impl PasswordFile {
    /// Parses a whole file's text.
    pub fn parse(text: &str) -> Result<PasswordFile, PasswordError> {
        let mut file = PasswordFile::default();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (user, hash) = line.split_once(':').ok_or(PasswordError::Line(n))?;
            if user.is_empty() {
                return Err(PasswordError::Line(n));
            }
            let hash = PasswordHash::parse(hash.trim(), n)?;
            if file.by_user.contains_key(user) {
                return Err(PasswordError::Duplicate(n, user.to_owned()));
            }
            file.by_user.insert(user.to_owned(), file.entries.len());
            file.entries.push((user.to_owned(), hash));
        }
        Ok(file)
    }

    /// Whether `user` exists and `password` is theirs.
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        self.by_user
            .get(user)
            .and_then(|&i| self.entries.get(i))
            .is_some_and(|(_, h)| h.verify(password))
    }

    /// Sets (adds or replaces) `user`'s hash.
    pub fn set(&mut self, user: &str, hash: PasswordHash) {
        match self.by_user.get(user) {
            Some(&i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.1 = hash;
                }
            }
            None => {
                self.by_user.insert(user.to_owned(), self.entries.len());
                self.entries.push((user.to_owned(), hash));
            }
        }
    }

    /// Removes `user`; false if there was none.
    pub fn remove(&mut self, user: &str) -> bool {
        let Some(i) = self.by_user.remove(user) else {
            return false;
        };
        self.entries.remove(i);
        for (j, (u, _)) in self.entries.iter().enumerate().skip(i) {
            self.by_user.insert(u.clone(), j);
        }
        true
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The file's text, one `user:hash` line each, in order.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (u, h) in &self.entries {
            out.push_str(u);
            out.push(':');
            out.push_str(&h.to_line());
            out.push('\n');
        }
        out
    }
}

/// Admits a client whose CONNECT names a user of the password file with its password;
/// refuses every other one with 0x86 Bad user name or password (3.x: 0x04). A CONNECT
/// without a user name is the anonymous case, which `allow_anonymous` decides before this
/// runs: admitted here. Authorization is the wrapped authenticator's.
pub struct PasswordAuth<A> {
    /// Replaced as a whole by [`PasswordAuth::replace`] (a reload); read per CONNECT.
    file: super::InForce<PasswordFile>,
    inner: A,
}

impl<A> std::fmt::Debug for PasswordAuth<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordAuth")
            .field("users", &self.file().len())
            .finish()
    }
}

impl<A: Authenticator> PasswordAuth<A> {
    /// Checks passwords against `file`, then asks `inner` (an embedder's hooks, or
    /// [`AllowAll`](crate::broker::hooks::AllowAll)). An `Arc` of a file may be shared by
    /// several of these (listeners with the same password file).
    pub fn new(file: impl Into<std::sync::Arc<PasswordFile>>, inner: A) -> PasswordAuth<A> {
        PasswordAuth {
            file: super::InForce::new(file),
            inner,
        }
    }
}

impl<A> PasswordAuth<A> {
    /// The users in force.
    pub fn file(&self) -> std::sync::Arc<PasswordFile> {
        self.file.get()
    }

    /// From now on, `file`'s users (a reload: connections already admitted stay).
    pub fn replace(&self, file: impl Into<std::sync::Arc<PasswordFile>>) {
        self.file.replace(file);
    }
}

impl<A: Authenticator> Authenticator for PasswordAuth<A> {
    fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), ReasonCode> {
        if let Some(user) = username {
            if !self.file().check(user, password.unwrap_or_default()) {
                return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
            }
        }
        self.inner.authenticate(client_id, username, password)
    }

    fn start_auth(
        &self,
        client_id: &str,
        username: Option<&str>,
        method: &str,
    ) -> Option<Box<dyn crate::broker::hooks::AuthExchange>> {
        self.inner.start_auth(client_id, username, method)
    }

    fn authorize_publish(
        &self,
        client: &crate::broker::hooks::ClientInfo<'_>,
        topic: &str,
    ) -> bool {
        self.inner.authorize_publish(client, topic)
    }

    fn authorize_subscribe(
        &self,
        client: &crate::broker::hooks::ClientInfo<'_>,
        filter: &str,
    ) -> bool {
        self.inner.authorize_subscribe(client, filter)
    }

    fn client_rights(
        &self,
        client: &crate::broker::hooks::ClientInfo<'_>,
    ) -> Option<std::sync::Arc<dyn crate::security::ClientRights>> {
        self.inner.client_rights(client)
    }

    fn rights_generation(&self) -> u64 {
        self.inner.rights_generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Python's hashlib for the password "secret" (salts "0123456789ab" and 64
    // times "x", 1000 rounds), and one line from mosquitto_passwd 2.0.11.
    const SHA512: &str = "$6$MDEyMzQ1Njc4OWFi$qEXipeLbgxRlwd06QHfY5WITkUZg0jLg9SZbXzq3ifXjfj+v3GbJGrSfC5PAg3UNCS+UFfbhUIZX4bmIAs330w==";
    const PBKDF2_64: &str = "$7$1000$eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eA==$1A7zG5ITisqlgikQW0FKDCDfP4dx3f54vGYPf/2KxgcReaO0lS50ngnoqQ9KQaVRaTAm2qmhIBdPOYqjO2q1Sw==";
    const MOSQUITTO: &str = "alice:$7$101$sTb6yLebzcfnuvll$EuugAkc43w+vYfAS0ynaVGx3sLILsp1d/5PK3/igd0H2X+jMgArpxsWT7X2nMlTGyNleyCwOgaWVKJK+mOOwkw==";

    #[test]
    fn mosquitto_hashes_verify() {
        for h in [SHA512, PBKDF2_64] {
            let h = PasswordHash::parse(h, 1).unwrap();
            assert!(h.verify(b"secret"), "{h:?}");
            assert!(!h.verify(b"Secret"));
            assert!(!h.verify(b""));
        }
        let f = PasswordFile::parse(&format!("# users\n\n{MOSQUITTO}\r\n")).unwrap();
        assert!(f.check("alice", b"secret"));
        assert!(!f.check("alice", b"secret "));
        assert!(!f.check("bob", b"secret"));
    }

    #[test]
    fn new_entries_are_pbkdf2_and_round_trip() {
        let mut f = PasswordFile::parse(MOSQUITTO).unwrap();
        f.set("bob", hash_password(b"pw").unwrap());
        let text = f.to_text();
        assert!(text.contains("bob:$7$101$"), "{text}");
        let back = PasswordFile::parse(&text).unwrap();
        assert!(back.check("bob", b"pw") && back.check("alice", b"secret"));
        let mut back = back;
        assert!(back.remove("alice"));
        assert!(!back.remove("alice"));
        assert!(back.check("bob", b"pw") && !back.check("alice", b"secret"));
        assert_eq!(back.len(), 1);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, want) in [
            ("alice", PasswordError::Line(1)),
            (":$6$a$b", PasswordError::Line(1)),
            ("a:$5$x$y", PasswordError::Format(1)),
            ("a:plaintext", PasswordError::Format(1)),
            ("a:$7$abc$eA==$eA==", PasswordError::Format(1)),
            ("a:$7$0$eA==$eA==", PasswordError::Iterations(1)),
            ("a:$7$2000000$eA==$eA==", PasswordError::Iterations(1)),
            ("a:$6$!!!$eA==", PasswordError::Encoding(1)),
            ("a:$6$eA==$eA==", PasswordError::Encoding(1)),
        ] {
            assert_eq!(PasswordFile::parse(text), Err(want), "{text}");
        }
        assert_eq!(
            PasswordFile::parse(&format!("{MOSQUITTO}\n{MOSQUITTO}")),
            Err(PasswordError::Duplicate(2, "alice".into()))
        );
        // The hash is never printed.
        let h = PasswordHash::parse(SHA512, 1).unwrap();
        assert!(!format!("{h:?}").contains("qEX"));
    }
}
