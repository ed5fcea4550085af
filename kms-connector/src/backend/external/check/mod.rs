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
//!
//! - this file: the report, the steps in order, DNS and TCP;
//! - `tls`: the handshake and what a refused one means;
//! - `xki`: what the signed calls' answers mean (SigV4, health, key metadata).

mod tls;
mod xki;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use schemas::xki::{ExternalKeyId, RequestMetadata};
use serde::Serialize;
use tokio::net::TcpStream;

use super::client::XkiClient;
use super::config::ExternalSettings;
use super::{ConfigError, HEALTH_CHECK_OPERATION};

/// Budget of the DNS, TCP and TLS steps (the XKI calls keep the instance's `timeout_ms`).
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
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
#[derive(Debug)]
pub(super) struct Failure {
    detail: String,
    hint: String,
}

pub(super) fn fail(detail: impl Into<String>, hint: impl Into<String>) -> Failure {
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

    if !steps.record(Step::Tls, tls::handshake(settings, host, tcp).await) {
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
    if !steps.record(Step::Sigv4, xki::sigv4(settings, &health)) {
        return finish(steps);
    }
    if !steps.record(Step::Health, xki::health(health, settings)) {
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
            let outcome = xki::metadata(key, client.metadata(key, metadata).await, settings);
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

pub(super) fn config_failure(error: &ConfigError) -> Failure {
    fail(
        error.to_string(),
        "the instance's TLS settings cannot be used: check ca_file, the pin and the client certificate files",
    )
}

pub(super) fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_split() {
        assert_eq!(host_and_port("localhost:8443"), ("localhost", 8443));
        assert_eq!(host_and_port("xki.example.com"), ("xki.example.com", 443));
    }
}
