//! TLS for the KMS-facing listener: the spec's cipher suites on TLS 1.2/1.3, a server
//! certificate and client-CA set that reload together without restart (one new configuration
//! for the `listener` to use at the next handshakes), and mTLS that accepts a client when its
//! chain ends at a configured CA *and* its CN or a DNS SAN is an allowed name.
//!
//! Any client-certificate failure aborts the handshake with an opaque `handshake_failure` alert
//! (unless `precise_alerts`), so a prober learns nothing about the configured CA or names.
//! A client that sends no certificate at all gets TLS 1.3's `certificate_required` alert.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::config::{MtlsConfig, ServerConfig as ListenerConfig};

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file cannot be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier cannot be built (e.g. an empty CA set).
    #[error("client CA: {0}")]
    ClientCa(String),
    /// A reload would switch mutual TLS on or off.
    #[error(
        "server.mtls cannot be switched {} by a reload: restart the proxy",
        if *.on { "on" } else { "off" }
    )]
    MtlsSwitch {
        /// Whether the new configuration has mTLS.
        on: bool,
    },
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The crypto provider restricted to the spec's suites.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    Arc::new(provider)
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in file"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, "no private key in file"))
}

/// Builds a root store from PEM CA files.
pub fn read_roots(paths: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| file_err(path, e))?;
        }
    }
    Ok(roots)
}

fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(cert_file)?;
    let key = read_key(key_file)?;
    let certified = CertifiedKey::from_der(certs, key, &provider())?;
    Ok(certified)
}

/// mTLS verifier: CA chain + allowed names, opaque failures. Immutable: a reload builds a new
/// one and swaps it in with the certificate, in one new server configuration.
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Empty only with `allow_any_client_name`.
    allowed_names: Vec<String>,
    precise_alerts: bool,
}

impl ClientVerifier {
    /// Builds the verifier from the mTLS section.
    pub fn new(config: &MtlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            inner: webpki_verifier(&config.ca_files)?,
            allowed_names: config.allowed_names.clone(),
            precise_alerts: config.precise_alerts,
        })
    }

    fn fail(&self, precise: rustls::Error, reason: &str) -> rustls::Error {
        tracing::warn!(target: "xki_proxy::tls", reason, "client certificate refused");
        if self.precise_alerts {
            precise
        } else {
            rustls::Error::General("client certificate refused".into())
        }
    }
}

fn webpki_verifier(ca_files: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = read_roots(ca_files)?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would tell a prober which CA we trust; send none.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| {
                let reason = e.to_string();
                self.fail(e, &reason)
            })?;
        if self.allowed_names.is_empty()
            || ekm::server::tls::names_allowed(end_entity, &self.allowed_names)
        {
            Ok(verified)
        } else {
            Err(self.fail(
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
                "client certificate name not allowed",
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The live TLS of the KMS-facing listener, kept to reload it. A reload builds a whole new
/// server configuration (certificate and client verifier together) and swaps it in, or
/// changes nothing.
#[derive(Debug, Clone)]
pub struct TlsState {
    tls: Arc<listener::Tls>,
    mtls: bool,
    leaf: Arc<RwLock<CertificateDer<'static>>>,
}

impl TlsState {
    /// Loads everything the listener needs.
    pub fn load(listener: &ListenerConfig) -> Result<Self, TlsError> {
        let (config, leaf) = server_config(listener)?;
        Ok(Self {
            tls: listener::Tls::new(config),
            mtls: listener.mtls.is_some(),
            leaf: Arc::new(RwLock::new(leaf)),
        })
    }

    /// Builds the configuration of `listener` for [`TlsState::commit`], changing nothing yet.
    /// Switching mTLS on or off is refused (it needs a restart: connections made without a
    /// client certificate would stay open, and `/ping` and `/ready` move off the port).
    pub fn prepare(&self, listener: &ListenerConfig) -> Result<PreparedTls, TlsError> {
        if listener.mtls.is_some() != self.mtls {
            return Err(TlsError::MtlsSwitch {
                on: listener.mtls.is_some(),
            });
        }
        let (config, leaf) = server_config(listener)?;
        Ok(PreparedTls { config, leaf })
    }

    /// Swaps a prepared certificate and client verifier in, together, for new connections.
    pub fn commit(&self, prepared: PreparedTls) {
        self.tls.replace(prepared.config);
        *self.leaf.write().unwrap_or_else(|e| e.into_inner()) = prepared.leaf;
    }

    /// What the listener hands its handshakes.
    pub fn listener_tls(&self) -> Arc<listener::Tls> {
        Arc::clone(&self.tls)
    }

    /// The leaf certificate in force (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.leaf.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A whole new TLS configuration, built and not yet in force.
#[derive(Debug)]
pub struct PreparedTls {
    config: ServerConfig,
    leaf: CertificateDer<'static>,
}

/// The rustls configuration of the KMS-facing listener (TLS 1.2 + 1.3, spec suites, ALPN h2
/// and http/1.1; session tickets unless mTLS is on) and its leaf certificate.
pub fn server_config(
    listener: &ListenerConfig,
) -> Result<(ServerConfig, CertificateDer<'static>), TlsError> {
    let certified = Arc::new(load_certified_key(&listener.cert_file, &listener.key_file)?);
    let leaf = certified
        .cert
        .first()
        .cloned()
        .ok_or_else(|| file_err(&listener.cert_file, "no certificate in file"))?;
    let client = listener
        .mtls
        .as_ref()
        .map(ClientVerifier::new)
        .transpose()?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client {
        Some(v) => builder.with_client_cert_verifier(Arc::new(v)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCert(certified)));
    if listener.mtls.is_some() {
        // A resumed session skips client-certificate verification: with mTLS, a reload that
        // drops a CA or a name must end access at once, so no session is ever resumed
        // (KMS keeps its connections alive; full handshakes are rare).
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    } else {
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    }
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, leaf))
}

/// The admin listener's rustls configuration: the spec's versions and suites, HTTP/1.1.
pub fn admin_server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, TlsError> {
    let certified = Arc::new(load_certified_key(cert_file, key_file)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCert(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One certificate for every client hello.
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// SHA-256 fingerprint of a certificate: lower-case hex of its DER (what a KMS instance pins).
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}
