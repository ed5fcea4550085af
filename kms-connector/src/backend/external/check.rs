//! The connectivity checker of an external instance: the path a connector takes to its XKI
//! proxy, one step at a time, each with a verdict and a detail, the first failure with a hint an
//! operator can act on and every later step skipped.
//!
//! DNS → TCP → TLS (the instance's own rustls configuration: CA chain and/or pin, validity,
//! name, client certificate) → SigV4 (a signed GetHealthStatus through the instance's own XKI
//! client) → health (ACTIVE / DEGRADED / UNAVAILABLE per HSM) → one key's metadata (optional).
//!
//! ```text
//! let settings = config.resolve(region, base_dir)?;
//! let report = check::run(&settings, key_id.as_ref()).await;
//! print!("{report}");  // or serde_json::to_string(&report)
//! std::process::exit(if report.passed() { 0 } else { 1 });
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use schemas::xki::{
    ErrorName, ExternalKeyId, HealthResponse, HealthStatus, MetadataResponse, RequestMetadata,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;

use super::client::{CallError, Transport, XkiClient};
use super::config::ExternalSettings;
use super::tls::{TlsDiagnostics, client_config};
use super::{ConfigError, HEALTH_CHECK_OPERATION};

/// Budget of the DNS, TCP and TLS steps (the XKI calls keep the instance's `timeout_ms`).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate expiring sooner is flagged in the TLS step's detail (it still passes).
const RENEW_WITHIN_DAYS: i64 = 30;
/// `kmsOperation` of the key metadata step.
const DESCRIBE_OPERATION: &str = "DescribeKey";
/// `awsPrincipalArn` of the key metadata step (what the proxy's authorization rules see).
pub const CHECK_PRINCIPAL: &str = "kms-connector/connectivity-check";

/// One step of the path, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Step {
    /// The endpoint's host resolves.
    Dns,
    /// A TCP connection opens.
    Tcp,
    /// The TLS handshake passes the instance's trust and the proxy takes the client certificate.
    Tls,
    /// The proxy accepts the SigV4 signature at the configured path.
    Sigv4,
    /// GetHealthStatus: the proxy's key managers.
    Health,
    /// GetKeyMetadata of the test key.
    KeyMetadata,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 6] = [
        Step::Dns,
        Step::Tcp,
        Step::Tls,
        Step::Sigv4,
        Step::Health,
        Step::KeyMetadata,
    ];

    /// The name printed and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Dns => "dns",
            Step::Tcp => "tcp",
            Step::Tls => "tls",
            Step::Sigv4 => "sigv4",
            Step::Health => "health",
            Step::KeyMetadata => "key-metadata",
        }
    }
}

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works.
    Pass,
    /// The first failing step.
    Fail,
    /// Not run: an earlier step failed, or nothing to check (no test key).
    Skip,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// Which step.
    pub step: Step,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was seen (never a secret).
    pub detail: String,
    /// For a failure: what to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The outcome of a whole check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `https://host[:port]` checked.
    pub endpoint: String,
    /// The URI path (`[/prefix]/kms/xks/v1`).
    pub path: String,
    /// True when every step passed (a skipped test key counts as passed).
    pub passed: bool,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
}

impl Report {
    /// True when no step failed.
    pub fn passed(&self) -> bool {
        self.passed
    }

    /// The first failing step.
    pub fn failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.verdict == Verdict::Fail)
    }

    /// The report of `step`.
    pub fn step(&self, step: Step) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step == step)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checking {}{}", self.endpoint, self.path)?;
        for step in &self.steps {
            let verdict = match step.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            // One part of the detail a line: the TLS step has several.
            let mut parts = step.detail.split("; ");
            let first = parts.next().unwrap_or_default();
            writeln!(f, "  {:<13} {verdict}  {first}", step.step.as_str())?;
            for part in parts {
                writeln!(f, "  {:<13}       {part}", "")?;
            }
            if let Some(hint) = &step.hint {
                writeln!(f, "  {:<13}       hint: {hint}", "")?;
            }
        }
        match self.failure() {
            None => writeln!(f, "result: pass"),
            Some(failed) => writeln!(f, "result: FAIL at {}", failed.step.as_str()),
        }
    }
}

/// A step that failed: what was seen and what to do.
struct Failure {
    detail: String,
    hint: String,
}

fn fail(detail: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure {
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// Collects step outcomes; after the first failure every later step is a skip.
struct Steps {
    steps: Vec<StepReport>,
}

impl Steps {
    fn record(&mut self, step: Step, outcome: Result<String, Failure>) -> bool {
        let report = match outcome {
            Ok(detail) => StepReport {
                step,
                verdict: Verdict::Pass,
                detail,
                hint: None,
            },
            Err(Failure { detail, hint }) => StepReport {
                step,
                verdict: Verdict::Fail,
                detail,
                hint: Some(hint),
            },
        };
        let passed = report.verdict == Verdict::Pass;
        self.steps.push(report);
        passed
    }

    fn skip(&mut self, step: Step, detail: &str) {
        self.steps.push(StepReport {
            step,
            verdict: Verdict::Skip,
            detail: detail.to_owned(),
            hint: None,
        });
    }

    fn finish(mut self, endpoint: &str, path: &str) -> Report {
        for step in Step::ALL {
            if self.steps.iter().all(|s| s.step != step) {
                self.skip(step, "an earlier step failed");
            }
        }
        Report {
            endpoint: endpoint.to_owned(),
            path: path.to_owned(),
            passed: self.steps.iter().all(|s| s.verdict != Verdict::Fail),
            steps: self.steps,
        }
    }
}

/// Runs every step against the proxy of `settings`; `key` adds the key metadata step.
pub async fn run(settings: &ExternalSettings, key: Option<&ExternalKeyId>) -> Report {
    let mut steps = Steps { steps: Vec::new() };
    let finish = |steps: Steps| steps.finish(&settings.endpoint, &settings.path);
    let (host, port) = host_and_port(&settings.authority);

    let addrs = match dns(host, port).await {
        Ok(addrs) => addrs,
        Err(failure) => {
            steps.record(Step::Dns, Err(failure));
            return finish(steps);
        }
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    steps.record(Step::Dns, Ok(format!("{host} → {}", shown.join(", "))));

    let tcp = match tcp(&addrs, host, port).await {
        Ok((stream, detail)) => {
            steps.record(Step::Tcp, Ok(detail));
            stream
        }
        Err(failure) => {
            steps.record(Step::Tcp, Err(failure));
            return finish(steps);
        }
    };

    if !steps.record(Step::Tls, tls(settings, host, tcp).await) {
        return finish(steps);
    }

    // The instance's own client from here on: the very requests the connector makes.
    let client = match XkiClient::new(settings) {
        Ok(client) => client,
        Err(e) => {
            steps.record(Step::Sigv4, Err(config_failure(&e)));
            return finish(steps);
        }
    };
    let health = client.health(HEALTH_CHECK_OPERATION).await;
    if !steps.record(Step::Sigv4, sigv4(settings, &health)) {
        return finish(steps);
    }
    if !steps.record(Step::Health, health_verdict(health, settings)) {
        return finish(steps);
    }
    match key {
        None => steps.skip(Step::KeyMetadata, "no test key given (--key-id)"),
        Some(key) => {
            let metadata = RequestMetadata {
                aws_principal_arn: Some(CHECK_PRINCIPAL.to_owned()),
                kms_operation: Some(DESCRIBE_OPERATION.to_owned()),
                kms_request_id: Some(uuid::Uuid::new_v4().to_string()),
                ..RequestMetadata::default()
            };
            let outcome = metadata_verdict(key, client.metadata(key, metadata).await, settings);
            steps.record(Step::KeyMetadata, outcome);
        }
    }
    finish(steps)
}

/// `host[:port]` → (host, port); 443 when the authority has none.
fn host_and_port(authority: &str) -> (&str, u16) {
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(443)),
        None => (authority, 443),
    }
}

async fn dns(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    let lookup = tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let hint = || {
        format!(
            "cannot resolve {host}: check the host name in the endpoint and this machine's DNS \
             (for a private link, the endpoint's private DNS name resolves only inside the VPC)"
        )
    };
    match lookup {
        Err(_) => Err(fail(
            format!("no answer for {host} within {} s", STEP_TIMEOUT.as_secs()),
            hint(),
        )),
        Ok(Err(e)) => Err(fail(format!("{host}: {e}"), hint())),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(fail(format!("{host} has no address"), hint()))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// Connects to the first address that answers (as the HTTP client does).
async fn tcp(addrs: &[SocketAddr], host: &str, port: u16) -> Result<(TcpStream, String), Failure> {
    let mut errors = Vec::new();
    let mut refused = false;
    for addr in addrs {
        let started = Instant::now();
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((
                    stream,
                    format!("connected to {addr} in {}", millis(started.elapsed())),
                ));
            }
            Ok(Err(e)) => {
                refused |= e.kind() == std::io::ErrorKind::ConnectionRefused;
                errors.push(format!("{addr}: {e}"));
            }
            Err(_) => errors.push(format!(
                "{addr}: no answer within {} s",
                STEP_TIMEOUT.as_secs()
            )),
        }
    }
    let hint = if refused {
        format!(
            "connection refused on {host}:{port}: is the proxy running, listening on that port, \
             and the port published?"
        )
    } else {
        format!(
            "no TCP connection to {host}:{port}: check the port, firewalls and security groups \
             (and, for a private link, the endpoint's network)"
        )
    };
    Err(fail(errors.join("; "), hint))
}

/// The handshake with the instance's own TLS configuration, over the connection of the TCP step.
async fn tls(settings: &ExternalSettings, host: &str, tcp: TcpStream) -> Result<String, Failure> {
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

fn config_failure(error: &ConfigError) -> Failure {
    fail(
        error.to_string(),
        "the instance's TLS settings cannot be used: check ca_file, the pin and the client certificate files",
    )
}

/// The SigV4 step, read off the signed GetHealthStatus.
fn sigv4(
    settings: &ExternalSettings,
    health: &Result<HealthResponse, CallError>,
) -> Result<String, Failure> {
    let accepted = || {
        format!(
            "signature of access key id {} (region {}) accepted at {}",
            settings.credential.access_key_id, settings.region, settings.path
        )
    };
    match health {
        Ok(_) => Ok(accepted()),
        Err(CallError::Refused { status, name }) => {
            let what = match name {
                Some(name) => format!("HTTP {status} {name}"),
                None => format!("HTTP {status}"),
            };
            match (name, status) {
                (Some(ErrorName::InvalidUriPathException), _) | (None, 404) => Err(fail(
                    format!("{what} for POST {}/health", settings.path),
                    format!(
                        "no route at {}: check the URI path prefix (XksProxyUriPath, path) against the proxy's key store prefix",
                        settings.path
                    ),
                )),
                (
                    Some(
                        ErrorName::AuthenticationFailedException | ErrorName::AccessDeniedException,
                    ),
                    _,
                )
                | (None, 401 | 403) => Err(fail(
                    what,
                    format!(
                        "the proxy refused the signature: check the access key id and secret (and that the key store accepts region {})",
                        settings.region
                    ),
                )),
                // Any other refusal comes after the proxy has checked the signature.
                _ => Ok(accepted()),
            }
        }
        Err(CallError::BadAnswer(_)) => Ok(accepted()),
        Err(CallError::Transport(transport)) => Err(transport_failure(*transport, settings)),
        Err(CallError::Local(reason)) => Err(fail(
            (*reason).to_owned(),
            "the request cannot be signed: check the access key id and secret",
        )),
    }
}

/// A signed call that got no HTTP answer although the TLS step passed.
fn transport_failure(transport: Transport, settings: &ExternalSettings) -> Failure {
    let budget = millis(settings.timeout);
    match transport {
        Transport::Timeout => fail(
            format!("no answer within timeout_ms ({budget})"),
            format!(
                "the proxy did not answer within the instance's budget ({budget}): check the proxy's load and its EKM's latency, or raise timeout_ms"
            ),
        ),
        Transport::Tls => fail(
            "the signed request met a TLS failure",
            "the proxy refused the connection at the TLS layer (client certificate?): check its log",
        ),
        Transport::Unreachable => fail(
            "the signed request found no connection",
            "the proxy went away between steps: run the check again",
        ),
        Transport::Other => fail(
            "the connection broke during the signed request",
            "check the proxy's log; a load balancer in front of it may be cutting connections",
        ),
    }
}

/// The health step: every HSM's verdict.
fn health_verdict(
    health: Result<HealthResponse, CallError>,
    settings: &ExternalSettings,
) -> Result<String, Failure> {
    let health = match health {
        Ok(health) => health,
        Err(CallError::Refused { status, name }) => {
            let what = name.map_or_else(
                || format!("HTTP {status}"),
                |n| format!("HTTP {status} {n}"),
            );
            let hint = match (name, status) {
                (Some(ErrorName::ThrottlingException), _) | (None, 429) => {
                    "the proxy throttled the check: try again, or look at its rate limits"
                }
                (Some(ErrorName::DependencyTimeoutException), _) | (None, 503) => {
                    "the proxy's key manager did not answer in time: check the EKM"
                }
                _ => "the proxy could not answer GetHealthStatus: check its log and its EKM",
            };
            return Err(fail(what, hint));
        }
        Err(CallError::BadAnswer(reason)) => {
            return Err(fail(
                format!("the answer is not a valid GetHealthStatus: {reason}"),
                "the endpoint is not an XKS v1 proxy, or a different version: check the endpoint and path",
            ));
        }
        Err(CallError::Transport(transport)) => return Err(transport_failure(transport, settings)),
        Err(CallError::Local(reason)) => return Err(fail(reason, "run the check again")),
    };
    let fleet: Vec<String> = health
        .ekm_fleet_details
        .iter()
        .map(|e| format!("{} ({}): {}", e.id, e.model, wire_name(&e.health_status)))
        .collect();
    let overall = if health.all_unavailable() {
        HealthStatus::Unavailable
    } else if health
        .ekm_fleet_details
        .iter()
        .all(|e| e.health_status == HealthStatus::Active)
    {
        HealthStatus::Active
    } else {
        HealthStatus::Degraded
    };
    let detail = format!(
        "{}: {} · proxy {} ({} in the fleet), EKM {}",
        wire_name(&overall),
        fleet.join(", "),
        health.xks_proxy_model,
        health.xks_proxy_fleet_size,
        health.ekm_vendor
    );
    match overall {
        HealthStatus::Unavailable => Err(fail(
            detail,
            "the proxy answers but every key manager (HSM) behind it is UNAVAILABLE: check that the \
             EKM is running, that the proxy reaches it, and the HSM token and PIN",
        )),
        // DEGRADED still serves (the connector stays connected); the detail says so.
        _ => Ok(detail),
    }
}

/// The key metadata step: is the test key usable for a KMS key?
fn metadata_verdict(
    key: &ExternalKeyId,
    answer: Result<MetadataResponse, CallError>,
    settings: &ExternalSettings,
) -> Result<String, Failure> {
    match answer {
        Ok(metadata) => {
            let usage: Vec<String> = metadata.key_usage.iter().map(wire_name).collect();
            let detail = format!(
                "{}: {}, {}, usage {}",
                key.as_str(),
                wire_name(&metadata.key_status),
                wire_name(&metadata.key_spec),
                usage.join("+")
            );
            match metadata.unusable_reason() {
                None => Ok(detail),
                Some(reason) => Err(fail(
                    detail,
                    format!("{reason}: enable the key in the EKM, or use another external key id"),
                )),
            }
        }
        Err(CallError::Refused {
            name: Some(ErrorName::KeyNotFoundException),
            status,
        }) => Err(fail(
            format!("HTTP {status} KeyNotFoundException"),
            format!(
                "no key {} behind this proxy: check the external key id (ekm keys list)",
                key.as_str()
            ),
        )),
        Err(CallError::Refused { status, name }) => Err(fail(
            name.map_or_else(
                || format!("HTTP {status}"),
                |n| format!("HTTP {status} {n}"),
            ),
            "the proxy refused GetKeyMetadata: check the key store's key list and its authorization rules",
        )),
        Err(CallError::BadAnswer(reason)) => Err(fail(
            format!("the answer is not a valid GetKeyMetadata: {reason}"),
            "the endpoint is not an XKS v1 proxy: check the endpoint and path",
        )),
        Err(CallError::Transport(transport)) => Err(transport_failure(transport, settings)),
        Err(CallError::Local(reason)) => Err(fail(reason, "run the check again")),
    }
}

/// The wire name of a schemas enum (`ACTIVE`, `ENABLED`, `AES_256`).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
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

    #[test]
    fn authority_split() {
        assert_eq!(host_and_port("localhost:8443"), ("localhost", 8443));
        assert_eq!(host_and_port("xki.example.com"), ("xki.example.com", 443));
    }
}
