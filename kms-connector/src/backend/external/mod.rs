//! The external instance: KMS keys whose material stays in the customer's key manager, reached
//! through an XKI proxy (`spec/xki-protocol.md`). The connector keeps metadata only; every
//! cryptographic call is one signed HTTPS request to the proxy.
//!
//! - [`config`]: what an operator configures ([`ExternalInstanceConfig`]) and its checked form.
//! - `client`: the pooled, signing, strictly parsing XKI client.
//! - `tls`: server-certificate pinning and/or CA trust.
//! - `state`: the connection state machine.
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

pub mod config;

mod client;
mod state;
mod tls;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use schemas::xki::{
    ErrorName, ExternalKeyId, IV_LENGTHS, MAX_CIPHERTEXT_METADATA_BYTES, RequestMetadata, TAG_BYTES,
};
use tokio::sync::watch;
use zeroize::Zeroizing;

use self::client::{CallError, Transport, XkiClient};
pub use self::config::{
    ClientIdentity, ConfigError, Connectivity, ExternalInstanceConfig, ExternalSettings, SecretRef,
};
use self::state::{ConnectionMonitor, Ticket};
use super::{
    BackendError, Capabilities, ConnectionError, InstanceStatus, KeyBackend, KeyContext,
    NewVersion, VersionMaterial,
};
use crate::blob::XkiPayload;
use crate::ids::{KeyId, KeyVersionId};
use crate::store::{ConnectionState, InstanceKind};

/// The one key spec external keys have.
pub const AES_256: &str = "Aliyun_AES_256";
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

    /// `ConnectKmsInstance`: `Connecting`, one signed health call (`ConnectCustomKeyStore`), then
    /// `Connected` or `Error(code)`. Returns the state it ended in (`Disconnected` if a
    /// disconnect came meanwhile). Waits for the proxy (at most one `timeout_ms`).
    pub async fn connect(&self) -> InstanceStatus {
        let inner = &self.inner;
        tracing::info!(target: "kms_connector::external", endpoint = %inner.endpoint, path = %inner.path, connectivity = inner.connectivity.as_str(), "connecting external instance");
        let mut attempt = ConnectAttempt {
            monitor: &inner.monitor,
            ticket: Some(inner.monitor.begin_connect()),
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

    /// The health-check loop, for a server that spawns its own tasks: runs one check per
    /// `health_interval_secs` (the first at once) and ends when the last handle on this backend
    /// is dropped.
    pub fn health_checks(&self) -> impl Future<Output = ()> + Send + 'static {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.health_interval;
        health_loop(weak, interval)
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
        Err(BackendError::Unavailable(format!(
            "the external key instance is {}{detail}",
            status.state
        )))
    }

    /// Maps a failed cryptographic or metadata call, moving the instance to `Error` when the
    /// failure is the connection's, not the key's.
    fn call_error(&self, error: CallError) -> BackendError {
        let monitor = &self.inner.monitor;
        let unavailable = |code: ConnectionError, message: &str| {
            monitor.report_failure(code);
            BackendError::Unavailable(message.to_owned())
        };
        match error {
            CallError::Transport(Transport::Timeout) => BackendError::Timeout,
            CallError::Transport(Transport::Tls) => unavailable(
                ConnectionError::InvalidTlsConfiguration,
                "the TLS handshake with the XKI proxy failed",
            ),
            CallError::Transport(Transport::Unreachable) => unavailable(
                ConnectionError::NotReachable,
                "the XKI proxy is not reachable",
            ),
            // A broken pooled connection is not yet a broken proxy: the checks decide.
            CallError::Transport(Transport::Other) => {
                BackendError::Unavailable("the connection to the XKI proxy failed".into())
            }
            CallError::Refused { status, name } => match (name, status) {
                (Some(ErrorName::KeyNotFoundException), _) => BackendError::ExternalKeyNotFound,
                (Some(ErrorName::InvalidStateException), _) => BackendError::ExternalKeyDisabled,
                (Some(ErrorName::InvalidCiphertextException), _) => BackendError::InvalidCiphertext,
                (Some(ErrorName::ThrottlingException), _) | (None, 429) => BackendError::Throttled,
                (Some(ErrorName::DependencyTimeoutException), _) | (None, 503) => {
                    BackendError::Timeout
                }
                (Some(ErrorName::AuthenticationFailedException), _) | (None, 401) => unavailable(
                    ConnectionError::InvalidCredentials,
                    "the XKI proxy refused the instance's credentials",
                ),
                (Some(ErrorName::InvalidUriPathException), _) => unavailable(
                    ConnectionError::InvalidConfiguration,
                    "the XKI proxy does not know the instance's path",
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
                (name, status) => BackendError::Internal(format!(
                    "the XKI proxy answered {status} {}",
                    name.map_or("without an error body", ErrorName::as_str)
                )),
            },
            CallError::BadAnswer(why) => {
                tracing::error!(target: "kms_connector::external", endpoint = %self.inner.endpoint, why, "unusable answer from the XKI proxy");
                BackendError::Internal(format!("unusable answer from the XKI proxy: {why}"))
            }
            CallError::Local(why) => BackendError::Internal(why.to_owned()),
        }
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
        self.monitor.end_check(ticket, health_outcome(result));
    }
}

async fn health_loop(inner: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.check().await;
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
            key_specs: &[AES_256],
            protection_level: "HSM",
            rotation: false,
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
        self.inner
            .client
            .decrypt(
                &external_key_id,
                crypto_metadata(&key),
                &payload,
                &bound_aad(key.key_id, key.version_id, aad),
            )
            .await
            .map_err(|e| self.call_error(e))
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
    fn aad_binding_is_unambiguous() {
        let (k, v) = (KeyId::generate("cn-hangzhou"), KeyVersionId::generate());
        let other = KeyVersionId::generate();
        assert_ne!(bound_aad(&k, &v, b""), bound_aad(&k, &other, b""));
        assert!(bound_aad(&k, &v, b"ctx").ends_with(b"ctx"));
        assert_eq!(bound_aad(&k, &v, b"").len(), k.as_str().len() + 1 + 36);
    }
}
