//! TLS settings of a listener as a rustls `ServerConfig`: the certificate and key from PEM
//! (swappable, so a reload gives new connections the new certificate), the client
//! certificate verifier for mutual TLS, the lowest protocol version, and the client's
//! identity (its certificate's subject Common Name) for `use_identity_as_username`.
//! Crypto: rustls with ring.
//!
//! **Owns:** turning PEM bytes into rustls objects. **Must not touch:** files, sockets.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::InForce;
use crate::config::TlsVersion;

/// Why TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no PEM certificate, or one that does not parse.
    #[error("no certificate could be read: {0}")]
    Certificate(String),
    /// The key file holds no private key rustls can use.
    #[error("no usable private key: {0}")]
    Key(String),
    /// The CA file holds no usable certificate authority.
    #[error("no usable certificate authority: {0}")]
    Ca(String),
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate a listener serves, replaced as a whole by a reload.
#[derive(Debug)]
pub struct ServerCert(InForce<CertifiedKey>);

impl ServerCert {
    /// From the PEM text of the chain (leaf first) and of its key.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<ServerCert, TlsError> {
        Ok(ServerCert(InForce::new(certified_key(cert, key)?)))
    }

    /// New connections get `new`'s certificate from now on.
    pub fn replace(&self, new: ServerCert) {
        self.0.replace(new.0.get());
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

/// ring as the crypto provider: rustls marks its constructor deprecated because ring has
/// no post-quantum key exchange; aws-lc-rs has one but needs cmake and a C toolchain to
/// build, which a fresh machine may not have. Swapping is this one function.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn certified_key(cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match()?;
    Ok(certified)
}

/// A listener's rustls configuration: `cert` (kept by the caller for reloads), client
/// certificates checked against `ca` when given (PEM) and, with `require`, mandatory
/// (without it a client may present none, as with mosquitto's cafile alone), and the
/// lowest version accepted.
pub fn server_config(
    cert: Arc<ServerCert>,
    ca: Option<&[u8]>,
    require: bool,
    min_version: TlsVersion,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
    let builder = match ca {
        Some(ca) => {
            let roots = roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if require {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| TlsError::Ca(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(cert))
}

/// The certificate authorities of a PEM file (at least one).
fn roots(ca: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        let c = c.map_err(|e| TlsError::Ca(e.to_string()))?;
        roots.add(c).map_err(|e| TlsError::Ca(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Ca("no CERTIFICATE block".into()));
    }
    Ok(roots)
}

/// A client configuration that trusts the certificate authorities in `ca` (PEM): what
/// `surgemq-bench --tls-ca` and the client library's TLS helper use.
pub fn client_config(ca: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let roots = roots(ca)?;
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The subject Common Name of a client certificate (DER), for `use_identity_as_username`;
/// None when it has none (or does not parse).
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
