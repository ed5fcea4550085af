//! The TLS step: the instance's own rustls configuration on the TCP step's socket, the proxy's
//! leaf described (subject, issuer, SANs, expiry), and a refused handshake named: unknown CA,
//! expired, wrong name, pin mismatch, or the proxy's alert about our client certificate.

use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;

use super::super::config::ExternalSettings;
use super::super::tls::{TlsDiagnostics, client_config};
use super::{Failure, STEP_TIMEOUT, config_failure, fail, millis};

/// A certificate expiring sooner is flagged in the TLS step's detail (it still passes).
const RENEW_WITHIN_DAYS: i64 = 30;

/// The handshake with the instance's own TLS configuration, over the connection of the TCP step.
pub(super) async fn handshake(
    settings: &ExternalSettings,
    host: &str,
    tcp: TcpStream,
) -> Result<String, Failure> {
    let diagnostics = Arc::new(TlsDiagnostics::recording());
    let config = client_config(settings, &diagnostics).map_err(|e| config_failure(&e))?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        fail(
            format!("{host} is not a TLS server name: {e}"),
            "use a DNS name or an IP address in the endpoint",
        )
    })?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    let handshake = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp)).await;
    let leaf = diagnostics.server_certificate();
    let certificate = leaf.as_ref().and_then(|der| Certificate::parse(der));
    let mut stream = match handshake {
        Err(_) => {
            return Err(fail(
                format!("no TLS handshake within {} s", STEP_TIMEOUT.as_secs()),
                "the port answers TCP but not TLS: is it the proxy's HTTPS port (not a plain \
                 HTTP or ops port)?",
            ));
        }
        Ok(Err(e)) => {
            return Err(tls_failure(
                &e,
                settings,
                host,
                certificate.as_ref(),
                &diagnostics,
            ));
        }
        Ok(Ok(stream)) => stream,
    };
    let elapsed = started.elapsed();
    let version = match stream.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
        _ => "TLS",
    };

    // Over TLS 1.3 the proxy judges the client certificate after the client's handshake is
    // done: one request over this connection brings its verdict (an answer, or an alert).
    let client_auth = if diagnostics.client_certificate_requested() {
        let probe = format!(
            "GET {}/health HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            settings.path, settings.authority
        );
        let mut buffer = [0u8; 64];
        let answer = tokio::time::timeout(STEP_TIMEOUT, async {
            stream.write_all(probe.as_bytes()).await?;
            stream.read(&mut buffer).await
        })
        .await;
        match answer {
            Ok(Ok(n)) if n > 0 => "requested by the proxy and accepted",
            Ok(Ok(_)) | Err(_) => {
                return Err(client_certificate_refused(
                    None,
                    settings,
                    &diagnostics,
                    "the proxy closed the connection after the handshake",
                ));
            }
            Ok(Err(e)) => {
                return Err(tls_failure(
                    &e,
                    settings,
                    host,
                    certificate.as_ref(),
                    &diagnostics,
                ));
            }
        }
    } else {
        "not requested"
    };

    let trust = match (
        settings.ca_certs.is_empty(),
        settings.certificate_sha256.is_some(),
    ) {
        (false, true) => "chain verified against ca_file, pin matches",
        (false, false) => "chain verified against ca_file",
        _ => "pin matches (no ca_file: the pin is the trust anchor)",
    };
    let mut parts = vec![
        format!("{version} in {}", millis(elapsed)),
        trust.to_owned(),
    ];
    if let Some(cert) = &certificate {
        parts.push(format!("subject {}, issuer {}", cert.subject, cert.issuer));
        let name = if cert.names(host) {
            format!("name {host} matches")
        } else if settings.ca_certs.is_empty() {
            format!("name {host} not in the certificate (not checked with a pin only)")
        } else {
            format!("name {host} not in the certificate")
        };
        parts.push(format!("{name} (SANs: {})", cert.sans.join(", ")));
        let days_left = cert.days_left();
        let soon = if days_left < RENEW_WITHIN_DAYS {
            ": renew it soon"
        } else {
            ""
        };
        parts.push(format!(
            "expires {} ({days_left} days left{soon})",
            cert.not_after_text
        ));
    }
    parts.push(format!("client certificate {client_auth}"));
    Ok(parts.join("; "))
}

/// Names a failed handshake and what to do about it.
fn tls_failure(
    error: &std::io::Error,
    settings: &ExternalSettings,
    host: &str,
    certificate: Option<&Certificate>,
    diagnostics: &TlsDiagnostics,
) -> Failure {
    let Some(tls) = rustls_error(error) else {
        if diagnostics.client_certificate_missing() {
            return client_certificate_refused(None, settings, diagnostics, &error.to_string());
        }
        return fail(
            format!("TLS handshake failed: {error}"),
            "the port does not speak TLS as the proxy does: is it the proxy's HTTPS port?",
        );
    };
    let detail = format!("TLS handshake failed: {tls}");
    let sha256 = certificate.map_or_else(|| "?".to_owned(), |c| c.sha256.clone());
    match tls {
        rustls::Error::InvalidCertificate(reason) => match reason {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => fail(
                match certificate {
                    Some(c) => format!(
                        "{detail}; the proxy's certificate is issued by {}",
                        c.issuer
                    ),
                    None => detail,
                },
                "the proxy's certificate is not signed by the CA in ca_file: check ca_file or the pin",
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => fail(
                detail,
                match certificate {
                    Some(c) => format!(
                        "certificate expired on {}: renew the proxy's certificate (and update the pin if one is set)",
                        c.not_after_text
                    ),
                    None => "the proxy's certificate has expired: renew it".to_owned(),
                },
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => fail(
                detail,
                match certificate {
                    Some(c) => format!(
                        "the certificate is valid only from {}: check this machine's clock and the proxy's",
                        c.not_before_text
                    ),
                    None => "the certificate is not valid yet: check the clocks".to_owned(),
                },
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                fail(
                    detail,
                    format!(
                        "the name {host} is not in the certificate (SANs: {}): use one of those names in the endpoint, or reissue the certificate with {host}",
                        certificate.map_or_else(|| "?".to_owned(), |c| c.sans.join(", "))
                    ),
                )
            }
            CertificateError::ApplicationVerificationFailure => fail(
                format!("{detail}; the proxy's certificate has SHA-256 {sha256}"),
                "the proxy's certificate does not match the pinned ServerCertificateSha256 \
                 (certificate_sha256): check the pin, or the proxy's certificate has changed",
            ),
            _ => fail(
                detail,
                "the proxy's certificate was refused: check ca_file, the pin and the certificate",
            ),
        },
        rustls::Error::AlertReceived(alert) => {
            client_certificate_refused(Some(*alert), settings, diagnostics, &detail)
        }
        _ if diagnostics.client_certificate_missing() => {
            client_certificate_refused(None, settings, diagnostics, &detail)
        }
        _ => fail(
            detail,
            "the TLS handshake failed: check that the endpoint is the proxy's HTTPS port and that \
             it offers TLS 1.2 or 1.3",
        ),
    }
}

/// A handshake the proxy ended: mostly its verdict on our client certificate.
fn client_certificate_refused(
    alert: Option<AlertDescription>,
    settings: &ExternalSettings,
    diagnostics: &TlsDiagnostics,
    detail: &str,
) -> Failure {
    let name = alert.map(alert_name);
    let detail = match &name {
        Some(name) => format!("{detail} (TLS alert {name} from the proxy)"),
        None => detail.to_owned(),
    };
    if settings.client_identity.is_none() && diagnostics.client_certificate_requested() {
        return fail(
            detail,
            "the proxy requires a client certificate and none is configured: give \
             client_cert_file and client_key_file (--client-cert, --client-key)",
        );
    }
    let sent = settings.client_identity.is_some() && diagnostics.client_certificate_requested();
    let hint = match alert {
        Some(AlertDescription::CertificateRequired) => {
            "the proxy requires a client certificate: give client_cert_file and client_key_file \
             (--client-cert, --client-key)"
        }
        Some(AlertDescription::UnknownCA) => {
            "the proxy does not trust the CA of the client certificate: add its CA to the proxy's \
             [server.mtls] ca_files, or use a client certificate from that CA"
        }
        Some(
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied,
        ) => {
            "the proxy refused the client certificate: check that it is a client certificate \
             from a CA in the proxy's [server.mtls] ca_files, with a name it allows"
        }
        Some(AlertDescription::CertificateExpired) => {
            "the client certificate has expired: renew client_cert_file"
        }
        // A server that refuses a client certificate it asked for often says no more than this.
        Some(AlertDescription::HandshakeFailure) | None if sent => {
            "the proxy refused the client certificate: check that it is a client certificate \
             from a CA in the proxy's [server.mtls] ca_files, with a name it allows"
        }
        Some(AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure) => {
            "no common TLS version or cipher suite with the proxy: it must offer TLS 1.2 or 1.3"
        }
        _ => {
            "the proxy ended the TLS handshake: check its log, and the client certificate if it asks for one"
        }
    };
    fail(detail, hint)
}

/// The RFC 8446 name of an alert (`bad_certificate`).
fn alert_name(alert: AlertDescription) -> String {
    let camel = format!("{alert:?}");
    let mut snake = String::with_capacity(camel.len() + 4);
    let mut previous_upper = true;
    for c in camel.chars() {
        let upper = c.is_ascii_uppercase();
        // `UnknownCA` → `unknown_ca`: a run of capitals is one word.
        if upper && !previous_upper {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
        previous_upper = upper;
    }
    snake
}

/// The rustls error inside an I/O error, if any.
fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner: Option<&(dyn std::error::Error + 'static)> = error
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = inner {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        inner = e.source();
    }
    None
}

/// What the checker shows of the proxy's leaf certificate.
struct Certificate {
    subject: String,
    issuer: String,
    sans: Vec<String>,
    not_after: i64,
    not_after_text: String,
    not_before_text: String,
    sha256: String,
}

impl Certificate {
    fn parse(der: &CertificateDer<'_>) -> Option<Self> {
        use sha2::Digest as _;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(extension)) = cert.subject_alternative_name() {
            for name in &extension.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => sans.push((*dns).to_owned()),
                    GeneralName::IPAddress(bytes) => sans.push(ip_text(bytes)),
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        Some(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_after: validity.not_after.timestamp(),
            not_after_text: date_text(validity.not_after.timestamp()),
            not_before_text: date_text(validity.not_before.timestamp()),
            sha256: hex::encode(sha2::Sha256::digest(der.as_ref())),
        })
    }

    /// Whether `host` is among the SANs (exact, or under a `*.` wildcard).
    fn names(&self, host: &str) -> bool {
        self.sans.iter().any(|san| {
            san.eq_ignore_ascii_case(host)
                || san.strip_prefix("*.").is_some_and(|suffix| {
                    host.split_once('.')
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix))
                })
        })
    }

    fn days_left(&self) -> i64 {
        (self.not_after - time::OffsetDateTime::now_utc().unix_timestamp()).div_euclid(86_400)
    }
}

fn date_text(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            std::net::Ipv4Addr::from(octets).to_string()
        }
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => hex::encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_rfc_names() {
        assert_eq!(
            alert_name(AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
    }
}
