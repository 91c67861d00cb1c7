//! The security files a broker runs with: each listener's hook stack (its password and
//! ACL files, its own or the top level's, in front of the embedder's hooks) and its TLS
//! certificate and client CA, read at start and again by a reload.
//!
//! **Owns:** reading and parsing the files, building the stacks ([`Domains`]) and
//! swapping what a reload read. **Must not touch:** sockets, shards: the stacks are
//! shared with the shards, which see a reload through them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::StartError;
use crate::broker::hooks::{Authenticator, Domains};
use crate::broker::transport::TlsInForce;
use crate::config::Config;
use crate::security::acl::Acl;
use crate::security::acl_auth::AclAuth;
use crate::security::password::{PasswordAuth, PasswordFile};
use crate::security::tls::ServerCert;

/// A password file's layer of a hook stack.
type PasswordLayer = Arc<PasswordAuth<Arc<dyn Authenticator>>>;

/// An ACL file's layer of a hook stack (shared by the stacks that use the file).
type AclLayer = Arc<AclAuth<Arc<dyn Authenticator>>>;

/// The files in force and where each is read from, for a reload.
#[derive(Debug, Default)]
pub(super) struct SecurityFiles {
    passwords: Vec<(PathBuf, PasswordLayer)>,
    acls: Vec<(PathBuf, AclLayer)>,
    /// Each TLS listener's certificate and key files and what it serves.
    certs: Vec<(PathBuf, PathBuf, Arc<ServerCert>)>,
    /// Each TLS listener with a `cafile`: its TLS settings, rebuilt when the CA file is
    /// read again.
    client_cas: Vec<ClientCa>,
}

/// A TLS listener that checks client certificates against a CA file.
#[derive(Debug)]
struct ClientCa {
    cafile: PathBuf,
    require: bool,
    version: crate::config::TlsVersion,
    served: Arc<ServerCert>,
    config: TlsInForce,
}

/// The TLS settings of a listener: its certificate (through `served`, which a reload
/// updates in place) and, with `cafile`, the CA its clients' certificates must chain to.
fn tls_config(
    cert: &Path,
    served: &Arc<ServerCert>,
    cafile: Option<&Path>,
    require: bool,
    version: crate::config::TlsVersion,
) -> Result<rustls::ServerConfig, StartError> {
    let ca = match cafile {
        Some(ca) => Some(read_file(ca)?),
        None => None,
    };
    crate::security::tls::server_config(served.clone(), ca.as_deref(), require, version).map_err(
        |e| StartError::Security {
            path: cafile.unwrap_or(cert).to_owned(),
            message: e.to_string(),
        },
    )
}

/// The hook stacks of a configuration, and which one each `[[listener]]` uses.
pub(super) struct Stacks {
    pub domains: Domains,
    /// The domain of `cfg.listener[i]` (plain `listeners` use domain 0).
    pub listener_domains: Vec<u16>,
    pub files: SecurityFiles,
}

/// A listener's pair of security files, after inheriting the top level's.
type FilePair = (Option<PathBuf>, Option<PathBuf>);

/// Reads every security file of `cfg` and builds one hook stack per distinct pair of
/// password and ACL files, each in front of `embedder`: the ACL file's rules in front of
/// the embedder's hooks, the password file in front of both. Stacks with the same ACL
/// file share it (one parse, one set of rights); domain 0 is the top level's pair.
pub(super) fn stacks(cfg: &Config, embedder: Arc<dyn Authenticator>) -> Result<Stacks, StartError> {
    let top: FilePair = (cfg.password_file.clone(), cfg.acl_file.clone());
    let mut pairs = vec![top.clone()];
    let mut listener_domains = Vec::with_capacity(cfg.listener.len());
    for l in &cfg.listener {
        let pair: FilePair = (
            l.password_file.clone().or_else(|| top.0.clone()),
            l.acl_file.clone().or_else(|| top.1.clone()),
        );
        let d = match pairs.iter().position(|p| *p == pair) {
            Some(d) => d,
            None => {
                pairs.push(pair);
                pairs.len() - 1
            }
        };
        // Listeners are far fewer than u16::MAX; a config that has that many is refused.
        let d = u16::try_from(d)
            .ok()
            .filter(|d| *d < crate::broker::hooks::UNKNOWN_DOMAIN)
            .ok_or_else(|| {
                StartError::Config(crate::config::ConfigError::Invalid {
                    field: "listener",
                    reason: "too many [[listener]] tables with their own security files".into(),
                })
            })?;
        listener_domains.push(d);
    }
    let mut files = SecurityFiles::default();
    let mut acl_layers: HashMap<PathBuf, AclLayer> = HashMap::new();
    let mut password_files: HashMap<PathBuf, Arc<PasswordFile>> = HashMap::new();
    let mut stacks = Vec::with_capacity(pairs.len());
    for (password_file, acl_file) in &pairs {
        let mut auth = embedder.clone();
        if let Some(path) = acl_file {
            let layer = match acl_layers.get(path) {
                Some(layer) => layer.clone(),
                None => {
                    let file = read_acl_file(path)?;
                    tracing::info!(path = %path.display(), rules = file.len(), "ACL file loaded");
                    let layer = Arc::new(AclAuth::new(file, embedder.clone()));
                    acl_layers.insert(path.clone(), layer.clone());
                    files.acls.push((path.clone(), layer.clone()));
                    layer
                }
            };
            auth = layer;
        }
        if let Some(path) = password_file {
            // One parse per file, shared by the stacks that use it.
            let file = match password_files.get(path) {
                Some(file) => file.clone(),
                None => {
                    let file = Arc::new(read_password_file(path)?);
                    tracing::info!(path = %path.display(), users = file.len(), "password file loaded");
                    password_files.insert(path.clone(), file.clone());
                    file
                }
            };
            let layer = Arc::new(PasswordAuth::new(file, auth));
            files.passwords.push((path.clone(), layer.clone()));
            auth = layer;
        }
        stacks.push(auth);
    }
    let one_rights_source = pairs.iter().all(|p| p.1 == top.1);
    Ok(Stacks {
        domains: Domains::new(stacks, one_rights_source),
        listener_domains,
        files,
    })
}

impl SecurityFiles {
    /// Reads a TLS listener's files (certificate, key and, if set, CA) and makes its
    /// TLS settings, kept for a reload.
    pub(super) fn listener_tls(
        &mut self,
        l: &crate::config::Listener,
        cert: &Path,
        key: &Path,
    ) -> Result<TlsInForce, StartError> {
        let served = Arc::new(read_server_cert(cert, key)?);
        self.certs
            .push((cert.to_owned(), key.to_owned(), served.clone()));
        let config = tls_config(
            cert,
            &served,
            l.cafile.as_deref(),
            l.require_certificate,
            l.tls_version,
        )?;
        let config = Arc::new(crate::security::InForce::new(config));
        if let Some(cafile) = &l.cafile {
            self.client_cas.push(ClientCa {
                cafile: cafile.clone(),
                require: l.require_certificate,
                version: l.tls_version,
                served,
                config: config.clone(),
            });
        }
        Ok(config)
    }

    /// Reads every file again and, when all of them read and parse, puts them in force;
    /// otherwise changes nothing (the error names the file).
    pub(super) fn reload(&self) -> Result<(), StartError> {
        // Each file once, however many stacks use it.
        let mut passwords: HashMap<&Path, Arc<PasswordFile>> = HashMap::new();
        for (path, _) in &self.passwords {
            if !passwords.contains_key(path.as_path()) {
                passwords.insert(path, Arc::new(read_password_file(path)?));
            }
        }
        let acls = self
            .acls
            .iter()
            .map(|(path, _)| read_acl_file(path))
            .collect::<Result<Vec<_>, _>>()?;
        let certs = self
            .certs
            .iter()
            .map(|(cert, key, _)| read_server_cert(cert, key))
            .collect::<Result<Vec<_>, _>>()?;
        let cas = self
            .client_cas
            .iter()
            .map(|c| tls_config(&c.cafile, &c.served, Some(&c.cafile), c.require, c.version))
            .collect::<Result<Vec<_>, _>>()?;
        // Everything was read and parsed: now it is replaced.
        for (path, file) in &passwords {
            tracing::info!(path = %path.display(), users = file.len(), "password file reloaded");
        }
        for (path, auth) in &self.passwords {
            if let Some(file) = passwords.get(path.as_path()) {
                auth.replace(file.clone());
            }
        }
        for ((path, auth), file) in self.acls.iter().zip(acls) {
            tracing::info!(path = %path.display(), rules = file.len(), "ACL file reloaded");
            auth.replace(file);
        }
        for ((path, _, served), new) in self.certs.iter().zip(certs) {
            served.replace(new);
            tracing::info!(path = %path.display(), "TLS certificate reloaded (new connections)");
        }
        for (ca, config) in self.client_cas.iter().zip(cas) {
            ca.config.replace(config);
            tracing::info!(path = %ca.cafile.display(), "TLS client CA reloaded (new connections)");
        }
        Ok(())
    }
}

/// Reads and parses a security file (a start or a reload): errors name the file.
fn read_parsed<T, E: std::fmt::Display>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, StartError> {
    let security = |message: String| StartError::Security {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| security(e.to_string()))?;
    parse(&text).map_err(|e| security(e.to_string()))
}

/// Reads and parses a password file.
fn read_password_file(path: &Path) -> Result<PasswordFile, StartError> {
    read_parsed(path, PasswordFile::parse)
}

/// Reads and parses an ACL file.
fn read_acl_file(path: &Path) -> Result<Acl, StartError> {
    read_parsed(path, Acl::parse)
}

/// Reads a whole security file (a certificate, a key, a CA).
fn read_file(path: &Path) -> Result<Vec<u8>, StartError> {
    std::fs::read(path).map_err(|e| StartError::Security {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads a listener's certificate chain and key (a start or a reload).
fn read_server_cert(cert: &Path, key: &Path) -> Result<ServerCert, StartError> {
    ServerCert::from_pem(&read_file(cert)?, &read_file(key)?).map_err(|e| StartError::Security {
        path: cert.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::hooks::AllowAll;
    use crate::config::Listener;

    /// A directory of security files for one test, removed after it.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("surgemq-stacks-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for f in ["acl-a", "acl-b"] {
            std::fs::write(d.join(f), "topic read t/#\n").unwrap();
        }
        std::fs::write(d.join("pw"), "").unwrap();
        Dir(d)
    }

    fn listener(pw: Option<PathBuf>, acl: Option<PathBuf>) -> Listener {
        Listener {
            address: Some("127.0.0.1:0".parse().unwrap()),
            password_file: pw,
            acl_file: acl,
            ..Listener::default()
        }
    }

    #[test]
    fn one_stack_per_pair_of_files_and_each_file_parsed_once() {
        let d = dir("pairs");
        let p = |f: &str| Some(d.0.join(f));
        let cfg = Config {
            acl_file: p("acl-a"),
            listener: vec![
                listener(None, None),
                listener(p("pw"), None),
                listener(None, p("acl-b")),
                listener(p("pw"), None),
                listener(None, p("acl-a")),
            ],
            ..Config::default()
        };
        let s = stacks(&cfg, Arc::new(AllowAll)).unwrap();
        // Inherited files make the same pair as the top level's.
        assert_eq!(s.listener_domains, [0, 1, 2, 1, 0]);
        assert_eq!(s.files.acls.len(), 2, "acl-a is shared by its stacks");
        assert_eq!(s.files.passwords.len(), 1);
        // A password file used with two ACL files: two layers, one parse.
        let cfg = Config {
            password_file: p("pw"),
            listener: vec![listener(None, p("acl-a")), listener(None, p("acl-b"))],
            ..Config::default()
        };
        let s = stacks(&cfg, Arc::new(AllowAll)).unwrap();
        assert_eq!(s.listener_domains, [1, 2]);
        let layers = &s.files.passwords;
        assert_eq!(layers.len(), 3);
        assert!(layers
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].1.file(), &w[1].1.file())));
        s.files.reload().unwrap();
        assert!(layers
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].1.file(), &w[1].1.file())));
        assert_eq!(s.domains.restored(), crate::broker::hooks::UNKNOWN_DOMAIN);
        // Only password files differ: rights do not depend on the listener.
        let cfg = Config {
            acl_file: p("acl-a"),
            listener: vec![listener(p("pw"), None)],
            ..Config::default()
        };
        let s = stacks(&cfg, Arc::new(AllowAll)).unwrap();
        assert_eq!(s.listener_domains, [1]);
        assert_eq!(s.domains.restored(), 0);
        // A missing listener file stops the start, naming it.
        let cfg = Config {
            listener: vec![listener(None, p("missing"))],
            ..Config::default()
        };
        let e = stacks(&cfg, Arc::new(AllowAll)).err().unwrap();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
