//! rustls plumbing shared by the integration tests: verifiers and configs built only from
//! PEM text, the way the services will build them from the files.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;

use certs::CertifiedKey;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn cert_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a CERTIFICATE block")
}

pub fn key_der(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("a PRIVATE KEY block")
}

pub fn roots(ca_pem: &str) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(cert_der(ca_pem))
        .expect("CA accepted as trust anchor");
    Arc::new(roots)
}

pub fn server_verifier(ca_pem: &str) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("server verifier")
}

pub fn client_verifier(ca_pem: &str) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("client verifier")
}

/// A server that requires a client certificate chaining to `client_ca_pem`.
pub fn mtls_server_config(client_ca_pem: &str, server: &CertifiedKey) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(client_verifier(client_ca_pem))
        .with_single_cert(vec![cert_der(&server.cert_pem)], key_der(&server.key_pem))
        .expect("server certificate and key match");
    Arc::new(config)
}

/// A client trusting `ca_pem`, showing `client` if given.
pub fn client_config(ca_pem: &str, client: Option<&CertifiedKey>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots(ca_pem));
    let config = match client {
        Some(client) => builder
            .with_client_auth_cert(vec![cert_der(&client.cert_pem)], key_der(&client.key_pem))
            .expect("client certificate and key match"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The certificate error inside a rustls result, or a panic saying what came instead.
pub fn certificate_error<T: std::fmt::Debug>(result: Result<T, rustls::Error>) -> CertificateError {
    match result {
        Err(rustls::Error::InvalidCertificate(err)) => err,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

pub fn is_expired(err: &CertificateError) -> bool {
    matches!(
        err,
        CertificateError::Expired | CertificateError::ExpiredContext { .. }
    )
}

pub fn is_wrong_name(err: &CertificateError) -> bool {
    matches!(
        err,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
    )
}

pub fn is_wrong_purpose(err: &CertificateError) -> bool {
    matches!(
        err,
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
    )
}
