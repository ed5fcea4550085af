//! Server trust for the XKI client: a rustls `ServerCertVerifier` that enforces the configured
//! SHA-256 pin of the proxy's leaf certificate (constant-time compare) and, when CAs are
//! configured, the usual WebPKI chain, validity and name checks as well.
//!
//! With a pin and no CA (the Alibaba console's "certificate fingerprint" model) the pin is the
//! trust anchor: the name is not checked, the validity period is, and the handshake signature
//! still proves that the server holds the pinned certificate's key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::config::{ConfigError, ExternalSettings};

/// The verifier: pin and/or WebPKI.
#[derive(Debug)]
pub(crate) struct PinningVerifier {
    pin: Option<[u8; 32]>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Where the presented leaf certificate is recorded (the connectivity checker's).
    diagnostics: Option<Arc<TlsDiagnostics>>,
}

impl PinningVerifier {
    fn new(
        pin: Option<[u8; 32]>,
        ca_certs: &[CertificateDer<'static>],
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, ConfigError> {
        let webpki = if ca_certs.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            for cert in ca_certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| ConfigError::Tls(format!("unusable CA certificate: {e}")))?;
            }
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ConfigError::Tls(e.to_string()))?;
            Some(verifier)
        };
        if pin.is_none() && webpki.is_none() {
            return Err(ConfigError::Tls(
                "neither a CA nor a certificate pin".into(),
            ));
        }
        Ok(Self {
            pin,
            webpki,
            algorithms: provider.signature_verification_algorithms,
            diagnostics: None,
        })
    }

    /// The same verifier, recording each presented leaf certificate in `diagnostics` (kept
    /// only by recording diagnostics, [`TlsDiagnostics::recording`]).
    fn observed_by(mut self, diagnostics: &Arc<TlsDiagnostics>) -> Self {
        self.diagnostics = Some(diagnostics.clone());
        self
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(diagnostics) = &self.diagnostics {
            diagnostics.record_server_certificate(end_entity);
        }
        if let Some(pin) = &self.pin {
            let digest = Sha256::digest(end_entity.as_ref());
            if !bool::from(digest.as_slice().ct_eq(pin)) {
                tracing::warn!(target: "kms_connector::external", server = ?server_name, "the XKI proxy's certificate does not match the configured SHA-256 pin");
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ));
            }
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => {
                check_validity(end_entity, now)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Pin-only mode still refuses a certificate outside its validity period.
fn check_validity(der: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// What the handshakes taught: whether the proxy asked for a client certificate (and whether
/// this instance had none). Over TLS 1.3 the proxy refuses such a client only after the client's
/// handshake is done, and whether the client then reads the alert or meets a reset connection
/// is a race; the flag turns the reset into the TLS failure it is. The connectivity checker
/// ([`super::check`]) also asks for the proxy's leaf certificate, recorded only when it asks
/// (a recording diagnostics), so that a refused certificate can be described.
#[derive(Debug, Default)]
pub(crate) struct TlsDiagnostics {
    client_certificate_requested: AtomicBool,
    client_certificate_missing: AtomicBool,
    /// `Some` when recording: the last leaf certificate the proxy presented.
    server_certificate: Option<Mutex<Option<CertificateDer<'static>>>>,
}

impl TlsDiagnostics {
    /// Diagnostics that also keep the proxy's leaf certificate.
    pub(crate) fn recording() -> Self {
        Self {
            server_certificate: Some(Mutex::new(None)),
            ..Self::default()
        }
    }

    /// The proxy asked for a client certificate and got none.
    pub(crate) fn client_certificate_missing(&self) -> bool {
        self.client_certificate_missing.load(Ordering::Relaxed)
    }

    /// The proxy asked for a client certificate.
    pub(crate) fn client_certificate_requested(&self) -> bool {
        self.client_certificate_requested.load(Ordering::Relaxed)
    }

    /// The last leaf certificate the proxy presented (recording diagnostics only).
    pub(crate) fn server_certificate(&self) -> Option<CertificateDer<'static>> {
        let slot = self.server_certificate.as_ref()?;
        slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record_server_certificate(&self, der: &CertificateDer<'_>) {
        if let Some(slot) = &self.server_certificate {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(der.clone().into_owned());
        }
    }
}

/// The client-certificate resolver of an instance without an identity: answers "none", and
/// records that the proxy asked.
#[derive(Debug)]
struct NoClientCertificate(Arc<TlsDiagnostics>);

impl ResolvesClientCert for NoClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0
            .client_certificate_requested
            .store(true, Ordering::Relaxed);
        if !self
            .0
            .client_certificate_missing
            .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(target: "kms_connector::external", "the XKI proxy asks for a client certificate and this instance has none (client_cert_file, client_key_file)");
        }
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// The client-certificate resolver of an instance with an identity: always that identity, and
/// records that the proxy asked (rustls' own `with_client_auth_cert` resolver, observed).
#[derive(Debug)]
struct ClientCertificate {
    key: Arc<rustls::sign::CertifiedKey>,
    diagnostics: Arc<TlsDiagnostics>,
}

impl ResolvesClientCert for ClientCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.diagnostics
            .client_certificate_requested
            .store(true, Ordering::Relaxed);
        Some(self.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client TLS configuration of an instance: TLS 1.2 and 1.3 (ring), our verifier, the mTLS
/// identity if any, session resumption on (rustls' default cache, which keeps reconnects within
/// the 250 ms budget), and ALPN `http/1.1` only: KMS speaks HTTP/1.1 and signs `host`, and over
/// HTTP/1.1 a TLS alert after the handshake (a refused client certificate) reaches the request
/// that met it, where HTTP/2 reports a closed channel.
pub(crate) fn client_config(
    settings: &ExternalSettings,
    diagnostics: &Arc<TlsDiagnostics>,
) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        PinningVerifier::new(settings.certificate_sha256, &settings.ca_certs, &provider)?
            .observed_by(diagnostics);
    let identity = match &settings.client_identity {
        None => None,
        Some(identity) => Some(
            rustls::sign::CertifiedKey::from_der(
                identity.chain.clone(),
                identity.key.clone_key(),
                &provider,
            )
            .map_err(|e| ConfigError::Tls(format!("client certificate: {e}")))?,
        ),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        None => {
            builder.with_client_cert_resolver(Arc::new(NoClientCertificate(diagnostics.clone())))
        }
        Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCertificate {
            key: Arc::new(key),
            diagnostics: diagnostics.clone(),
        })),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(pin: Option<[u8; 32]>, ca: Option<&certs::Authority>) -> PinningVerifier {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cas: Vec<_> = ca.map(|ca| ca.cert_der().clone()).into_iter().collect();
        PinningVerifier::new(pin, &cas, &provider).unwrap()
    }

    fn check(
        v: &PinningVerifier,
        leaf: &certs::CertifiedKey,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let der = leaf.cert_der().unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        v.verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn pin_of(leaf: &certs::CertifiedKey) -> [u8; 32] {
        Sha256::digest(leaf.cert_der().unwrap().as_ref()).into()
    }

    #[test]
    fn pin_and_chain() {
        let ca = certs::Authority::new("verifier test CA").unwrap();
        let leaf = ca.issue_server("xki.test", &["xki.test"], &[]).unwrap();
        let other = ca.issue_server("xki.test", &["xki.test"], &[]).unwrap();
        let pin = pin_of(&leaf);

        // Pin only: the name does not matter, the pin does.
        check(&verifier(Some(pin), None), &leaf, "anything.example").unwrap();
        assert!(check(&verifier(Some(pin), None), &other, "xki.test").is_err());
        // CA only: chain and name.
        check(&verifier(None, Some(&ca)), &other, "xki.test").unwrap();
        assert!(check(&verifier(None, Some(&ca)), &leaf, "other.test").is_err());
        let stranger = certs::Authority::new("another CA").unwrap();
        assert!(check(&verifier(None, Some(&stranger)), &leaf, "xki.test").is_err());
        // Both: both must pass.
        check(&verifier(Some(pin), Some(&ca)), &leaf, "xki.test").unwrap();
        assert!(check(&verifier(Some(pin), Some(&ca)), &other, "xki.test").is_err());
        assert!(check(&verifier(Some(pin), Some(&ca)), &leaf, "other.test").is_err());
        assert!(check(&verifier(Some(pin), Some(&stranger)), &leaf, "xki.test").is_err());

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        assert!(PinningVerifier::new(None, &[], &provider).is_err());
    }

    #[test]
    fn pin_only_still_checks_validity() {
        let ca = certs::Authority::new("verifier test CA").unwrap();
        let expired = ca
            .issue(&certs::LeafSpec::server("xki.test", &["xki.test"], &[]).expired())
            .unwrap();
        let result = check(
            &verifier(Some(pin_of(&expired)), None),
            &expired,
            "xki.test",
        );
        assert_eq!(
            result,
            Err(rustls::Error::InvalidCertificate(CertificateError::Expired))
        );
    }
}
