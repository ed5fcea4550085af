//! The external instance: KMS keys whose material stays in the customer's key manager, reached
//! through an XKI proxy (`spec/xki-protocol.md`). The connector keeps metadata only; every
//! cryptographic call is one signed HTTPS request to the proxy.
//!
//! - [`config`]: what an operator configures ([`ExternalInstanceConfig`]) and its checked form.
//! - `client`: the pooled, signing, strictly parsing XKI client.
//! - `tls`: server-certificate pinning and/or CA trust.
//! - `state`: the connection state machine.
//! - [`check`]: the connectivity checker (`kms-connector instances check`, `check-endpoint`).
//!
//! # Running an instance
//!
//! ```text
//! let backend = ExternalBackend::from_config(&config, region, config_dir)?;
//! backend.restore(stored_status);            // from the store, after a restart
//! let mut changes = backend.subscribe();    // persist each change with Store::update_instance_connection
//! let _checks = backend.start();            // background health checks; stop when dropped
//! backend.connect().await;                  // ConnectKmsInstance (spawn it: it waits for the proxy)
//! ```
//!
//! Health checks: every `health_interval_secs` a signed GetHealthStatus (`KmsHealthCheck`) runs
//! for an instance that is `Connected` or in `Error`. A failure moves `Connected` to
//! `Error(code)`; a success moves `Error` back to `Connected` on its own; `Disconnected` and
//! `Uninitialized` are never checked. **Bound:** a proxy that becomes unreachable takes the
//! instance out of `Connected` within one `health_interval_secs` plus one `timeout_ms` (the
//! configuration keeps `timeout_ms` ≤ the interval so that checks never overlap), and at once if
//! a cryptographic call meets the failure first (TLS, authentication, no TCP, bad path).
//!
//! While the instance is not `Connected` every operation is refused with
//! [`BackendError::Unavailable`], whatever the API layer checks.
//!
//! # Ciphertexts
//!
//! The payload is [`XkiPayload`] (what the proxy returned). The AAD sent to the proxy is
//! `key_id ‖ 0x00 ‖ version_id ‖ caller AAD`: several KMS keys may share one external key, and
//! without the binding a payload of one KMS key would decrypt under another.

pub mod check;
pub mod config;

mod client;
mod state;
mod tls;

use schemas::kms::{KeySpec, ProtectionLevel};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use schemas::xki::{
    ErrorName, ExternalKeyId, IV_LENGTHS, MAX_CIPHERTEXT_METADATA_BYTES, RequestMetadata, TAG_BYTES,
};
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use self::client::{CallError, Transport, XkiClient};
pub use self::config::{
    ClientIdentity, ConfigError, Connectivity, ExternalInstanceConfig, ExternalSettings, SecretRef,
};
use self::state::{ConnectionMonitor, Ticket};
use super::{
    BackendError, Capabilities, ConnectionError, Families, InstanceStatus, KeyBackend, KeyContext,
    NewVersion, VersionMaterial,
};
use crate::blob::XkiPayload;
use crate::ids::{KeyId, KeyVersionId};
use crate::store::{ConnectionState, InstanceKind};

/// The one key spec external keys have.
/// The one key spec this backend makes.
pub const AES_256: KeySpec = KeySpec::Aes256;
/// `kmsOperation` of the health call made by [`ExternalBackend::connect`].
pub const CONNECT_OPERATION: &str = "ConnectCustomKeyStore";
/// `kmsOperation` of the periodic health call.
pub const HEALTH_CHECK_OPERATION: &str = "KmsHealthCheck";

/// An external instance's backend. Cheap to clone (one shared client and state).
#[derive(Debug, Clone)]
pub struct ExternalBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: XkiClient,
    monitor: ConnectionMonitor,
    endpoint: String,
    path: String,
    connectivity: Connectivity,
    health_interval: Duration,
    timeout: Duration,
    /// Wakes the health loop for a probe now (a call met a failure that may be the link's).
    probe: Arc<Notify>,
    /// Call timeouts in a row (reset by any success).
    timeouts: AtomicU32,
}

/// The background health checks started by [`ExternalBackend::start`]; dropping this stops them.
#[derive(Debug)]
pub struct HealthChecks(tokio::task::JoinHandle<()>);

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ExternalBackend {
    /// A backend for checked settings, `Uninitialized`. Builds the TLS client; connects nothing.
    pub fn new(settings: &ExternalSettings) -> Result<Self, ConfigError> {
        let client = XkiClient::new(settings)?;
        tracing::info!(
            target: "kms_connector::external",
            endpoint = %settings.endpoint,
            path = %settings.path,
            connectivity = settings.connectivity.as_str(),
            region = %settings.region,
            pinned = settings.certificate_sha256.is_some(),
            ca = !settings.ca_certs.is_empty(),
            mtls = settings.client_identity.is_some(),
            "external instance configured"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                monitor: ConnectionMonitor::new(format!("{}{}", settings.endpoint, settings.path)),
                endpoint: settings.endpoint.clone(),
                path: settings.path.clone(),
                connectivity: settings.connectivity,
                health_interval: settings.health_interval,
                timeout: settings.timeout,
                probe: Arc::new(Notify::new()),
                timeouts: AtomicU32::new(0),
            }),
        })
    }

    /// [`ExternalInstanceConfig::resolve`] then [`Self::new`].
    pub fn from_config(
        config: &ExternalInstanceConfig,
        default_region: &str,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        Self::new(&config.resolve(default_region, base)?)
    }

    /// Sets the state persisted before a restart. `Connected` and `Error` are re-checked by the
    /// first health check (immediately after [`Self::start`]); a `Connecting` left by a crash is
    /// finished by it.
    pub fn restore(&self, status: InstanceStatus) {
        self.inner.monitor.restore(status);
    }

    /// The current connection epoch (a connect, disconnect or restore starts a new one).
    pub fn epoch(&self) -> u64 {
        self.inner.monitor.epoch()
    }

    /// [`Self::restore`] unless a connect, disconnect or restore came after epoch `seen`.
    pub fn restore_at(&self, seen: u64, status: InstanceStatus) -> bool {
        self.inner.monitor.restore_at(seen, status)
    }

    /// `ConnectKmsInstance`: `Connecting`, one signed health call (`ConnectCustomKeyStore`), then
    /// `Connected` or `Error(code)`. Returns the state it ended in (`Disconnected` if a
    /// disconnect came meanwhile). Waits for the proxy (at most one `timeout_ms`).
    pub async fn connect(&self) -> InstanceStatus {
        let ticket = self.inner.monitor.begin_connect();
        self.run_connect(ticket).await
    }

    /// [`Self::connect`] unless a connect, disconnect or restore came after epoch `seen`
    /// (a replica following the stored state: what came after its read wins).
    pub async fn connect_at(&self, seen: u64) -> InstanceStatus {
        match self.inner.monitor.begin_connect_at(seen) {
            Some(ticket) => self.run_connect(ticket).await,
            None => self.status(),
        }
    }

    async fn run_connect(&self, ticket: Ticket) -> InstanceStatus {
        let inner = &self.inner;
        tracing::info!(target: "kms_connector::external", endpoint = %inner.endpoint, path = %inner.path, connectivity = inner.connectivity.as_str(), "connecting external instance");
        let mut attempt = ConnectAttempt {
            monitor: &inner.monitor,
            ticket: Some(ticket),
        };
        let result = inner.client.health(CONNECT_OPERATION).await;
        let outcome = health_outcome(result).unwrap_or(Err(ConnectionError::NotReachable));
        if let Some(ticket) = attempt.ticket.take() {
            inner.monitor.end_connect(ticket, Some(outcome));
        }
        self.status()
    }

    /// `DisconnectKmsInstance`: `Disconnected` at once; no calls until the next `connect()`.
    pub fn disconnect(&self) -> InstanceStatus {
        self.inner.monitor.disconnect();
        self.status()
    }

    /// Every state change, for the API layer to persist (`Store::update_instance_connection`)
    /// and to watch. The current value is the current state.
    pub fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.inner.monitor.subscribe()
    }

    /// The health-check loop, for a server that spawns its own tasks: checks at once, then
    /// every `health_interval_secs` while `Connected`, and while in `Error` (or finishing a
    /// restored `Connecting`) every [`RETRY_MIN`] doubling to [`RETRY_MAX`], so that the
    /// instance is back within about a second of the proxy; a call that met a failure of the
    /// link wakes it early. Ends when the last handle on this backend is dropped.
    pub fn health_checks(&self) -> impl Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.health_interval;
        let probe = Arc::clone(&self.inner.probe);
        health_loop(weak, interval, probe)
    }

    /// Spawns [`Self::health_checks`] on the current tokio runtime.
    pub fn start(&self) -> HealthChecks {
        HealthChecks(tokio::spawn(self.health_checks()))
    }

    /// Runs one periodic check now (what the loop does each interval).
    pub async fn check_health(&self) -> InstanceStatus {
        self.inner.check().await;
        self.status()
    }

    /// The configured interval between health checks.
    pub fn health_interval(&self) -> Duration {
        self.inner.health_interval
    }

    /// The budget of one XKI call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The documented bound within which an unreachable proxy takes the instance out of
    /// `Connected`: one interval plus one call budget.
    pub fn detection_bound(&self) -> Duration {
        self.inner.health_interval + self.inner.timeout
    }

    fn ensure_connected(&self) -> Result<(), BackendError> {
        let status = self.status();
        if status.state == ConnectionState::Connected {
            return Ok(());
        }
        let detail = status
            .error
            .map_or(String::new(), |code| format!(" ({})", code.as_str()));
        let message = format!("the external key instance is {}{detail}", status.state);
        if status.error.is_some_and(ConnectionError::is_transient) {
            Err(BackendError::TemporarilyUnavailable(message))
        } else {
            Err(BackendError::Unavailable(message))
        }
    }

    /// Maps a failed cryptographic or metadata call onto the caller's error, and lets the
    /// failure act on the connection only when it can be the whole link's ([`link_effect`]).
    fn call_error(&self, error: CallError) -> BackendError {
        let inner = &self.inner;
        match link_effect(&error) {
            LinkEffect::None => {}
            LinkEffect::Broken(code) => {
                inner.monitor.report_failure(code);
                inner.probe.notify_one();
            }
            LinkEffect::Suspect => inner.probe.notify_one(),
            LinkEffect::Slow => {
                let timeouts = inner.timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                if timeouts >= TIMEOUTS_BEFORE_PROBE {
                    inner.probe.notify_one();
                }
            }
        }
        match error {
            CallError::Transport(Transport::Timeout) => BackendError::Timeout,
            CallError::Transport(Transport::Tls) => {
                BackendError::Unavailable("the TLS handshake with the XKI proxy failed".into())
            }
            CallError::Transport(Transport::Unreachable) => {
                BackendError::TemporarilyUnavailable("the XKI proxy is not reachable".into())
            }
            CallError::Transport(Transport::Other) => BackendError::TemporarilyUnavailable(
                "the connection to the XKI proxy failed".into(),
            ),
            CallError::Refused { status, name } => match (name, status) {
                (Some(ErrorName::KeyNotFoundException), _) => BackendError::ExternalKeyNotFound,
                (Some(ErrorName::InvalidStateException), _) => BackendError::ExternalKeyDisabled,
                (Some(ErrorName::InvalidCiphertextException), _) => BackendError::InvalidCiphertext,
                (Some(ErrorName::ThrottlingException), _) | (None, 429) => BackendError::Throttled,
                (Some(ErrorName::DependencyTimeoutException), _) | (None, 503) => {
                    BackendError::Timeout
                }
                (Some(ErrorName::AuthenticationFailedException), _) | (None, 401) => {
                    BackendError::Unavailable(
                        "the XKI proxy refused the instance's credentials".into(),
                    )
                }
                (Some(ErrorName::InvalidUriPathException), _) => BackendError::Unavailable(
                    "the XKI proxy does not know the route of this key".into(),
                ),
                // Secondary authorization judges one request (principal, key), not the link.
                (Some(ErrorName::AccessDeniedException), _) | (None, 403) => {
                    BackendError::Unavailable("the XKI proxy denied the request".into())
                }
                (Some(ErrorName::InvalidKeyUsageException), _) => {
                    BackendError::ExternalKeyUnusable(
                        "the external key's usage does not permit the operation".into(),
                    )
                }
                (Some(ErrorName::UnsupportedOperationException), _) => BackendError::Unsupported(
                    "the XKI proxy does not support this operation or input size",
                ),
                // The proxy's own dependency (its key manager) failed: a retry may work.
                (Some(ErrorName::InternalException), _) | (None, 500 | 502 | 504) => {
                    BackendError::TemporarilyUnavailable(
                        "the XKI proxy or its key manager failed".into(),
                    )
                }
                (name, status) => BackendError::Internal(format!(
                    "the XKI proxy answered {status} {}",
                    name.map_or("without an error body", ErrorName::as_str)
                )),
            },
            CallError::BadAnswer(why) => {
                tracing::error!(target: "kms_connector::external", endpoint = %inner.endpoint, why, "unusable answer from the XKI proxy");
                BackendError::Internal(format!("unusable answer from the XKI proxy: {why}"))
            }
            CallError::Local(why) => BackendError::Internal(why.to_owned()),
        }
    }

    /// A call succeeded: the link works, whatever earlier timeouts suggested.
    fn call_succeeded(&self) {
        self.inner.timeouts.store(0, Ordering::Relaxed);
    }
}

/// Consecutive call timeouts after which the health probe runs at once.
const TIMEOUTS_BEFORE_PROBE: u32 = 3;

/// What a failed crypto or metadata call says about the link to the proxy. Only the health
/// probe, which names no key, decides that a proxy that answers is unusable: a request names
/// a key and carries the caller's data, so anything it provokes must stay its own error, or
/// one low-privilege caller could take every external key offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkEffect {
    /// The request's own failure (its key, its data, its principal): the link is fine.
    None,
    /// No request can get through (no TCP connection, TLS refused): `Error` at once; the
    /// probe brings the instance back.
    Broken(ConnectionError),
    /// Could be the link's (a refused signature, an unknown route, a 5xx): probe now.
    Suspect,
    /// A timeout: probe once several came in a row.
    Slow,
}

fn link_effect(error: &CallError) -> LinkEffect {
    match error {
        CallError::Transport(Transport::Timeout) => LinkEffect::Slow,
        CallError::Transport(Transport::Tls) => {
            LinkEffect::Broken(ConnectionError::InvalidTlsConfiguration)
        }
        CallError::Transport(Transport::Unreachable) => {
            LinkEffect::Broken(ConnectionError::NotReachable)
        }
        CallError::Transport(Transport::Other) => LinkEffect::Suspect,
        CallError::Refused { status, name } => match (name, status) {
            (Some(ErrorName::AuthenticationFailedException), _)
            | (None, 401)
            | (Some(ErrorName::InvalidUriPathException), _)
            | (Some(ErrorName::InternalException), _)
            | (None, 500..=599) => LinkEffect::Suspect,
            (Some(ErrorName::DependencyTimeoutException), _) => LinkEffect::Slow,
            _ => LinkEffect::None,
        },
        CallError::BadAnswer(_) | CallError::Local(_) => LinkEffect::None,
    }
}

/// Clears the "connect under way" mark if `connect()` is dropped before it ends.
struct ConnectAttempt<'a> {
    monitor: &'a ConnectionMonitor,
    ticket: Option<Ticket>,
}

impl Drop for ConnectAttempt<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.monitor.end_connect(ticket, None);
        }
    }
}

impl Inner {
    /// One periodic check, when the state calls for one.
    async fn check(&self) {
        let Some(ticket) = self.monitor.begin_check() else {
            return;
        };
        let result = self.client.health(HEALTH_CHECK_OPERATION).await;
        let outcome = health_outcome(result);
        if matches!(outcome, Some(Ok(()))) {
            self.timeouts.store(0, Ordering::Relaxed);
        }
        self.monitor.end_check(ticket, outcome);
    }
}

/// First retry delay of a failed link.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay of a failed link.
const RETRY_MAX: Duration = Duration::from_secs(1);

async fn health_loop(inner: Weak<Inner>, interval: Duration, probe: Arc<Notify>) {
    let mut retry = RETRY_MIN;
    loop {
        let wait = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            inner.check().await;
            match inner.monitor.current().state {
                ConnectionState::Error | ConnectionState::Connecting => {
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
                _ => {
                    retry = RETRY_MIN;
                    interval
                }
            }
        };
        // At most one probe per RETRY_MIN however many calls ask for one.
        tokio::time::sleep(RETRY_MIN.min(wait)).await;
        let rest = wait.saturating_sub(RETRY_MIN);
        tokio::select! {
            () = tokio::time::sleep(rest) => {}
            () = probe.notified() => {}
        }
    }
}

/// What a health answer means for the connection. `None`: inconclusive (the proxy throttled the
/// check; an overloaded proxy must not be cut off by its own health probe).
fn health_outcome(
    result: Result<schemas::xki::HealthResponse, CallError>,
) -> Option<Result<(), ConnectionError>> {
    let error = match result {
        Ok(health) if health.all_unavailable() => ConnectionError::NotReachable,
        Ok(_) => return Some(Ok(())),
        Err(CallError::Transport(Transport::Timeout)) => ConnectionError::TimedOut,
        Err(CallError::Transport(Transport::Tls)) => ConnectionError::InvalidTlsConfiguration,
        Err(CallError::Transport(Transport::Unreachable | Transport::Other)) => {
            ConnectionError::NotReachable
        }
        Err(CallError::Refused { status, name }) => match (name, status) {
            (Some(ErrorName::ThrottlingException), _) | (None, 429) => return None,
            (Some(ErrorName::AuthenticationFailedException), _) | (None, 401) => {
                ConnectionError::InvalidCredentials
            }
            (Some(ErrorName::AccessDeniedException), _) | (None, 403) => {
                ConnectionError::AccessDenied
            }
            (Some(ErrorName::InvalidUriPathException), _) => ConnectionError::InvalidConfiguration,
            (Some(ErrorName::DependencyTimeoutException), _) | (None, 503) => {
                ConnectionError::TimedOut
            }
            (Some(ErrorName::InternalException), _) => ConnectionError::InternalError,
            _ => ConnectionError::InvalidResponse,
        },
        Err(CallError::BadAnswer(_)) => ConnectionError::InvalidResponse,
        Err(CallError::Local(_)) => ConnectionError::InternalError,
    };
    Some(Err(error))
}

/// `key_id ‖ 0x00 ‖ version_id ‖ aad`: key ids never contain NUL, version ids have a fixed
/// length, so the caller's AAD cannot be confused with the binding.
fn bound_aad(key_id: &KeyId, version_id: &KeyVersionId, aad: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(key_id.as_str().len() + 1 + KeyVersionId::LEN + aad.len());
    bound.extend_from_slice(key_id.as_str().as_bytes());
    bound.push(0);
    bound.extend_from_slice(version_id.as_str().as_bytes());
    bound.extend_from_slice(aad);
    bound
}

/// The external key of an operation: the context's, which must agree with the one the version
/// was bound to.
fn external_key(key: &KeyContext<'_>) -> Result<ExternalKeyId, BackendError> {
    match (key.external_key_id, key.material.backend_ref.as_deref()) {
        (Some(id), Some(bound)) if id.as_str() != bound => Err(BackendError::Internal(
            "the key version is bound to another external key".into(),
        )),
        (Some(id), _) => Ok(id.clone()),
        (None, Some(bound)) => ExternalKeyId::parse(bound)
            .map_err(|_| BackendError::Internal("stored external key reference is invalid".into())),
        (None, None) => Err(BackendError::Internal(
            "no external key id for an external key".into(),
        )),
    }
}

fn crypto_metadata(key: &KeyContext<'_>) -> RequestMetadata {
    RequestMetadata {
        aws_principal_arn: Some(key.principal.to_owned()),
        kms_key_arn: Some(key.key_arn.to_owned()),
        kms_operation: Some(key.operation.to_owned()),
        kms_request_id: Some(key.request_id.to_owned()),
        ..RequestMetadata::default()
    }
}

#[async_trait::async_trait]
impl KeyBackend for ExternalBackend {
    fn kind(&self) -> InstanceKind {
        InstanceKind::External
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            families: Families::default(),
            key_specs: &[AES_256],
            protection_level: ProtectionLevel::Hsm,
            rotation: false,
            versions: false,
            import: false,
            needs_external_key_id: true,
        }
    }

    fn status(&self) -> InstanceStatus {
        self.inner.monitor.current()
    }

    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError> {
        if request.key_spec != AES_256 {
            return Err(BackendError::Unsupported(
                "external keys are Aliyun_AES_256 only",
            ));
        }
        let Some(external_key_id) = request.external_key_id else {
            return Err(BackendError::InvalidParameter(
                "ExternalKeyId is required for a key of an external instance".into(),
            ));
        };
        self.ensure_connected()?;
        let metadata = RequestMetadata {
            aws_principal_arn: Some(request.principal.to_owned()),
            kms_operation: Some("CreateKey".to_owned()),
            kms_request_id: Some(request.request_id.to_owned()),
            ..RequestMetadata::default()
        };
        let answer = self
            .inner
            .client
            .metadata(external_key_id, metadata)
            .await
            .map_err(|e| self.call_error(e))?;
        self.call_succeeded();
        if let Some(reason) = answer.unusable_reason() {
            return Err(BackendError::ExternalKeyUnusable(reason.to_owned()));
        }
        Ok(VersionMaterial {
            sealed: None,
            backend_ref: Some(external_key_id.as_str().to_owned()),
        })
    }

    async fn encrypt(
        &self,
        key: KeyContext<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        self.ensure_connected()?;
        let external_key_id = external_key(&key)?;
        if plaintext.is_empty() {
            // The XKI protocol has no empty plaintext (the proxy answers ValidationException).
            return Err(BackendError::InvalidParameter(
                "an external key cannot encrypt an empty plaintext".into(),
            ));
        }
        let payload = self
            .inner
            .client
            .encrypt(
                &external_key_id,
                crypto_metadata(&key),
                plaintext,
                &bound_aad(key.key_id, key.version_id, aad),
            )
            .await
            .map_err(|e| self.call_error(e))?;
        self.call_succeeded();
        payload.pack().map_err(|_| {
            BackendError::Internal("the XKI answer does not fit the payload format".into())
        })
    }

    async fn decrypt(
        &self,
        key: KeyContext<'_>,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.ensure_connected()?;
        let external_key_id = external_key(&key)?;
        let payload = XkiPayload::unpack(payload).map_err(|_| BackendError::InvalidCiphertext)?;
        // Refuse locally what the proxy would refuse as a malformed request, so that a damaged
        // blob is InvalidCiphertext and not an internal error.
        if !IV_LENGTHS.contains(&payload.iv.len())
            || payload.tag.len() != TAG_BYTES
            || payload.ciphertext_metadata.len() > MAX_CIPHERTEXT_METADATA_BYTES
        {
            return Err(BackendError::InvalidCiphertext);
        }
        let plaintext = self
            .inner
            .client
            .decrypt(
                &external_key_id,
                crypto_metadata(&key),
                &payload,
                &bound_aad(key.key_id, key.version_id, aad),
            )
            .await
            .map_err(|e| self.call_error(e))?;
        self.call_succeeded();
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::xki::{EkmFleetEntry, HealthResponse, HealthStatus};

    fn health(statuses: &[HealthStatus]) -> HealthResponse {
        HealthResponse {
            xks_proxy_fleet_size: 1,
            xks_proxy_vendor: "v".into(),
            xks_proxy_model: "m".into(),
            ekm_vendor: "e".into(),
            ekm_fleet_details: statuses
                .iter()
                .map(|s| EkmFleetEntry {
                    id: "hsm".into(),
                    model: "m".into(),
                    health_status: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn health_answers_to_connection_codes() {
        use HealthStatus::{Active, Degraded, Unavailable};
        assert_eq!(health_outcome(Ok(health(&[Active]))), Some(Ok(())));
        assert_eq!(
            health_outcome(Ok(health(&[Unavailable, Degraded]))),
            Some(Ok(()))
        );
        assert_eq!(
            health_outcome(Ok(health(&[Unavailable, Unavailable]))),
            Some(Err(ConnectionError::NotReachable))
        );
        let refused = |status, name| Err(CallError::Refused { status, name });
        let table = [
            (
                refused(401, Some(ErrorName::AuthenticationFailedException)),
                Some(ConnectionError::InvalidCredentials),
            ),
            (
                refused(401, None),
                Some(ConnectionError::InvalidCredentials),
            ),
            (
                refused(403, Some(ErrorName::AccessDeniedException)),
                Some(ConnectionError::AccessDenied),
            ),
            (
                refused(404, Some(ErrorName::InvalidUriPathException)),
                Some(ConnectionError::InvalidConfiguration),
            ),
            (
                refused(503, Some(ErrorName::DependencyTimeoutException)),
                Some(ConnectionError::TimedOut),
            ),
            (
                refused(500, Some(ErrorName::InternalException)),
                Some(ConnectionError::InternalError),
            ),
            (
                refused(400, Some(ErrorName::ValidationException)),
                Some(ConnectionError::InvalidResponse),
            ),
            (refused(502, None), Some(ConnectionError::InvalidResponse)),
            (refused(429, Some(ErrorName::ThrottlingException)), None),
            (
                Err(CallError::BadAnswer("x")),
                Some(ConnectionError::InvalidResponse),
            ),
            (
                Err(CallError::Transport(Transport::Tls)),
                Some(ConnectionError::InvalidTlsConfiguration),
            ),
            (
                Err(CallError::Transport(Transport::Timeout)),
                Some(ConnectionError::TimedOut),
            ),
            (
                Err(CallError::Transport(Transport::Unreachable)),
                Some(ConnectionError::NotReachable),
            ),
        ];
        for (result, expected) in table {
            let shown = format!("{result:?}");
            assert_eq!(
                health_outcome(result).map(|o| o.unwrap_err()),
                expected,
                "{shown}"
            );
        }
    }

    #[test]
    fn only_link_failures_act_on_the_connection() {
        let refused = |status, name| CallError::Refused { status, name };
        // What a request can provoke with its key id, data or principal stays its own error.
        for per_request in [
            refused(404, Some(ErrorName::KeyNotFoundException)),
            refused(400, Some(ErrorName::InvalidStateException)),
            refused(400, Some(ErrorName::InvalidCiphertextException)),
            refused(400, Some(ErrorName::InvalidKeyUsageException)),
            refused(400, Some(ErrorName::ValidationException)),
            refused(501, Some(ErrorName::UnsupportedOperationException)),
            refused(403, Some(ErrorName::AccessDeniedException)),
            refused(403, None),
            refused(429, Some(ErrorName::ThrottlingException)),
            refused(413, None),
            CallError::BadAnswer("x"),
            CallError::Local("x"),
        ] {
            assert_eq!(
                link_effect(&per_request),
                LinkEffect::None,
                "{per_request:?}"
            );
        }
        // What might be the link's is checked by the probe, never decided by the call.
        for suspect in [
            refused(401, Some(ErrorName::AuthenticationFailedException)),
            refused(401, None),
            refused(404, Some(ErrorName::InvalidUriPathException)),
            refused(500, Some(ErrorName::InternalException)),
            refused(502, None),
            CallError::Transport(Transport::Other),
        ] {
            assert_eq!(link_effect(&suspect), LinkEffect::Suspect, "{suspect:?}");
        }
        assert_eq!(
            link_effect(&CallError::Transport(Transport::Timeout)),
            LinkEffect::Slow
        );
        assert_eq!(
            link_effect(&CallError::Transport(Transport::Unreachable)),
            LinkEffect::Broken(ConnectionError::NotReachable)
        );
        assert_eq!(
            link_effect(&CallError::Transport(Transport::Tls)),
            LinkEffect::Broken(ConnectionError::InvalidTlsConfiguration)
        );
    }

    #[test]
    fn aad_binding_is_unambiguous() {
        let (k, v) = (KeyId::generate("cn-hangzhou"), KeyVersionId::generate());
        let other = KeyVersionId::generate();
        assert_ne!(bound_aad(&k, &v, b""), bound_aad(&k, &other, b""));
        assert!(bound_aad(&k, &v, b"ctx").ends_with(b"ctx"));
        assert_eq!(bound_aad(&k, &v, b"").len(), k.as_str().len() + 1 + 36);
    }
}
