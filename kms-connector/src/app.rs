//! The application: [`Application::build`] opens the store, builds the instances, binds the
//! listeners (port 0 works; the real ports are readable; both on the workspace's `listener`:
//! connection cap, head and body deadlines, header and HTTP/2 limits, refusals in Alibaba's
//! error shape), and [`Application::run_until_stopped`]
//! serves with its background tasks: the deletion sweeper (keys whose window ended), the nonce
//! purge, the external instances' health checks and the persistence of their state changes.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use listener::HttpServer;
use schemas::acs::{ExpectedHosts, Verifier};
use schemas::kms::{ErrorBody, ErrorCode};
use tokio::sync::watch;

use crate::api::auth::AccessKeys;
use crate::api::{ApiState, RequestClock, handle, limiter};
use crate::backend::VersionMaterial;
use crate::config::{Config, ConfigError, TlsConfig};
use crate::instances::{BackendOverride, InstanceError, InstanceHandle, Instances};
use crate::store::{AuditEvent, Store, StoreError, UnixMillis};

/// The clock the deletion sweeper reads (injectable so tests can move past a window).
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// Largest request body (a 32 KB policy, percent-encoded, fits).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Idle time before a keep-alive connection is closed (HTTP/1.1) or pinged (HTTP/2).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How often expired nonces are forgotten.
const NONCE_PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Keys purged per sweep and instance at most (the next sweep takes the rest).
const SWEEP_BATCH: u32 = 100;
/// How often audit events past their retention are deleted.
const AUDIT_PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Audit events deleted per transaction.
const AUDIT_PURGE_BATCH: u32 = 5000;

/// The listener limits `[server.limits]` does not set: the workspace's, with room for a
/// request head carrying every parameter in its query (the ACS3 SDKs do, a 32 KB policy
/// percent-encoded included; actix reads at most 128 KiB of head anyway).
fn listener_defaults() -> listener::Limits {
    listener::Limits {
        max_header_bytes: 128 * 1024,
        ..listener::Limits::default()
    }
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Bad configuration or unreadable secret.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store cannot be opened.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// An instance cannot be built.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// What tests and embedders may change.
#[derive(Default)]
pub struct AppOptions {
    /// Backends to use instead of the configured ones, by instance id.
    pub backends: BTreeMap<String, BackendOverride>,
    /// The sweeper's clock (default: the system clock).
    pub clock: Option<Clock>,
    /// The sweeper's interval (default: `kms.deletion_sweep_secs`).
    pub deletion_sweep_interval: Option<Duration>,
    /// The clock request timestamps are checked against (default: the system clock).
    pub request_clock: Option<RequestClock>,
    /// How often old audit events are purged (default: hourly).
    pub audit_purge_interval: Option<Duration>,
}

impl std::fmt::Debug for AppOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppOptions")
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .field("clock", &self.clock.is_some())
            .field("deletion_sweep_interval", &self.deletion_sweep_interval)
            .field("request_clock", &self.request_clock.is_some())
            .field("audit_purge_interval", &self.audit_purge_interval)
            .finish()
    }
}

/// A handle on a running application.
#[derive(Clone, Debug)]
pub struct AppHandle {
    server: ServerHandle,
    sweeps: watch::Receiver<u64>,
}

impl AppHandle {
    /// Stops the listeners (`graceful`: let requests in flight finish). The stop is sent at
    /// once; await the future to wait for it.
    pub fn stop(&self, graceful: bool) -> impl std::future::Future<Output = ()> + use<> {
        self.server.stop(graceful)
    }

    /// Counts completed deletion sweeps: wait for it to move to know a sweep ran.
    pub fn sweeps(&self) -> watch::Receiver<u64> {
        self.sweeps.clone()
    }
}

/// The built, bound application.
pub struct Application {
    port: Option<u16>,
    tls_port: Option<u16>,
    server: Server,
    state: web::Data<ApiState>,
    clock: Clock,
    sweep_interval: Duration,
    sweeps: watch::Sender<u64>,
    audit_retention: Option<Duration>,
    audit_purge_interval: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds from the configuration alone.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with(config, AppOptions::default()).await
    }

    /// Builds with test or embedding options.
    pub async fn build_with(config: Config, options: AppOptions) -> Result<Self, StartError> {
        let store =
            Store::open_with(&config.database_url(), config.database.store_options()).await?;
        let instances = Arc::new(Instances::build(&config, &store, options.backends).await?);
        let access_keys = AccessKeys::from_config(&config.access_keys)?;
        let skew =
            time::Duration::seconds(i64::try_from(config.kms.max_clock_skew_secs).unwrap_or(900));
        let state = web::Data::new(ApiState {
            store,
            instances,
            access_keys,
            verifier: Verifier::new()
                .with_max_clock_skew(skew)
                .with_expected_hosts(ExpectedHosts::new(&config.kms.expected_hosts).map_err(
                    |reason| ConfigError::Invalid(format!("kms.expected_hosts: {reason}")),
                )?),
            limiter: limiter(config.kms.qps),
            region: config.kms.region.clone(),
            account_id: config.kms.account_id.clone(),
            clock: options
                .request_clock
                .unwrap_or_else(|| Arc::new(time::OffsetDateTime::now_utc)),
        });

        let http = match config.server.listen {
            Some(addr) => {
                let listener = bind(addr)?;
                let port = local_port(&listener, addr)?;
                Some((listener, addr, port))
            }
            None => None,
        };
        let tls = match &config.server.tls {
            Some(tls) => {
                let listener = bind(tls.listen)?;
                let port = local_port(&listener, tls.listen)?;
                Some((listener, tls.listen, port, server_config(tls)?))
            }
            None => None,
        };
        // Every body is read whole by the listener (within MAX_BODY_BYTES and the body
        // deadline) before the handler's extractor sees it.
        let limits = config
            .server
            .limits
            .resolve(listener_defaults())
            .map_err(ConfigError::Invalid)?;
        let settings = listener::Settings {
            limits,
            keep_alive: KEEP_ALIVE,
            refusals: Arc::new(Refusals),
            buffer_body: Some(MAX_BODY_BYTES),
        };
        let app_state = state.clone();
        let mut server = HttpServer::new(settings, move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .default_service(web::to(handle))
        })
        .shutdown_timeout(10);
        if let Some(workers) = config.server.workers {
            server = server.workers(workers);
        }
        let mut port = None;
        if let Some((listener, addr, http_port)) = http {
            server = server
                .listen(listener)
                .map_err(|source| StartError::Bind { addr, source })?;
            port = Some(http_port);
        }
        let mut tls_port = None;
        if let Some((listener, addr, port, tls_config)) = tls {
            server = server
                .listen_tls(listener, listener::Tls::new(tls_config))
                .map_err(|source| StartError::Bind { addr, source })?;
            tls_port = Some(port);
        }
        let (sweeps, _) = watch::channel(0);
        Ok(Self {
            port,
            tls_port,
            server: server.run(),
            state,
            clock: options.clock.unwrap_or_else(|| Arc::new(UnixMillis::now)),
            sweep_interval: options
                .deletion_sweep_interval
                .unwrap_or(Duration::from_secs(config.kms.deletion_sweep_secs)),
            sweeps,
            audit_retention: (config.audit.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(config.audit.retention_days) * 86_400)),
            audit_purge_interval: options.audit_purge_interval.unwrap_or(AUDIT_PURGE_INTERVAL),
        })
    }

    /// The plain HTTP port, unless `server.listen` is left out.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The HTTPS port, when configured.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// A handle to stop the server and watch the sweeper.
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            server: self.server.handle(),
            sweeps: self.sweeps.subscribe(),
        }
    }

    /// Serves until stopped, running the background tasks meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let sweeper = tokio::spawn(sweep_loop(
            state.clone(),
            self.clock.clone(),
            self.sweep_interval,
            self.sweeps,
        ));
        let purger = tokio::spawn(nonce_loop(state.clone()));
        let interval = self.audit_purge_interval;
        let audit_purger = self.audit_retention.map(|retention| {
            tokio::spawn(audit_loop(
                state.clone(),
                self.clock.clone(),
                retention,
                interval,
            ))
        });
        let instance_tasks: Vec<_> = state
            .instances
            .background_tasks()
            .into_iter()
            .map(tokio::spawn)
            .collect();
        let result = self.server.await;
        sweeper.abort();
        purger.abort();
        if let Some(task) = audit_purger {
            task.abort();
        }
        instance_tasks.iter().for_each(|t| t.abort());
        result
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

fn local_port(listener: &TcpListener, addr: SocketAddr) -> Result<u16, StartError> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| StartError::Bind { addr, source })
}

fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, StartError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))
    };
    let cert_pem = read(&tls.cert_file)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.cert_file.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{}: no certificate",
            tls.cert_file.display()
        )));
    }
    let key_pem = zeroize::Zeroizing::new(read(&tls.key_file)?);
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| StartError::Tls(format!("{}: {e}", tls.key_file.display())))?
        .ok_or_else(|| StartError::Tls(format!("{}: no private key", tls.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The OpenAPI's answers to what the listener refuses before a handler runs, in Alibaba's
/// error shape with the listener's status: a body over the cap (413), a body or head that does
/// not arrive in time (408) or a header list over the cap (431) as `InvalidParameter`, broken
/// framing (400) as `ParseRequestParameterException`, a connection over the cap (503) as
/// `ServiceUnavailableTemporary` (retryable). Each answer carries a request id, logged.
#[derive(Debug, Clone, Copy)]
struct Refusals;

impl listener::Refusals for Refusals {
    fn answer(
        &self,
        refusal: listener::Refusal,
        request: Option<&listener::RequestHead>,
    ) -> listener::Answer {
        use listener::Refusal as R;
        let code = match refusal {
            R::BodyTooLarge { .. } | R::BodyTimeout { .. } | R::HeadersTooLarge { .. } => {
                ErrorCode::InvalidParameter
            }
            R::BadBody => ErrorCode::ParseRequestParameterException,
            R::Overloaded => ErrorCode::ServiceUnavailableTemporary,
            _ => ErrorCode::InternalFailure,
        };
        let status = refusal.status();
        let request_id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
        let message = format!("The request was refused: {}.", refusal.message());
        // Connections refused at the cap are counted and warned about by the listener.
        if let Some(head) = request {
            tracing::info!(
                target: "kms_connector::api",
                request_id = %request_id,
                method = %head.method,
                refusal = refusal.as_str(),
                code = code.code(),
                status,
                "request refused before the handler"
            );
        }
        let body = ErrorBody {
            http_status: status,
            ..ErrorBody::new(code, Some(&message), &request_id)
        };
        listener::Answer::json(status, &body).with_header(crate::api::REQUEST_ID_HEADER, request_id)
    }
}

async fn sweep_loop(
    state: web::Data<ApiState>,
    clock: Clock,
    interval: Duration,
    sweeps: watch::Sender<u64>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = clock();
        let deleted = sweep_deletions(&state, now).await;
        if deleted > 0 {
            tracing::info!(deleted, "deleted keys whose deletion window ended");
        }
        let mut rotated = 0;
        for instance in state.instances.all() {
            rotated += crate::rotation::rotate_due(&state.store, instance, now, SWEEP_BATCH).await;
        }
        if rotated > 0 {
            tracing::info!(rotated, "rotated keys whose rotation was due");
        }
        sweeps.send_modify(|n| *n += 1);
    }
}

/// Deletes every key whose deletion window ended by `now`, with everything it owns, and lets
/// its backend destroy the version material. Each served instance gets its own batch (keys of
/// instances not served here are left to the replica that serves them, and a backlog in one
/// instance does not starve another). Returns how many keys were deleted.
pub async fn sweep_deletions(state: &ApiState, now: UnixMillis) -> usize {
    let mut deleted = 0;
    for instance in state.instances.all() {
        let due = match state
            .store
            .keys_due_for_deletion(&instance.id, now, SWEEP_BATCH)
            .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(instance = %instance.id, %error, "cannot list keys due for deletion");
                continue;
            }
        };
        for key_id in due {
            if delete_key(state, instance, &key_id, now).await {
                deleted += 1;
            }
        }
    }
    deleted
}

/// Deletes one due key; whether it was this call that deleted it.
async fn delete_key(
    state: &ApiState,
    instance: &InstanceHandle,
    key_id: &str,
    now: UnixMillis,
) -> bool {
    let Ok(key) = state.store.get_key(key_id).await else {
        return false;
    };
    let versions = match state.store.purge_key(key_id, now).await {
        Ok(versions) => versions,
        // Cancelled, or purged by another replica meanwhile.
        Err(
            StoreError::StateMismatch { .. } | StoreError::Conflict(_) | StoreError::NotFound(_),
        ) => {
            return false;
        }
        Err(error) => {
            tracing::warn!(key_id = %key_id, %error, "cannot delete key");
            return false;
        }
    };
    for version in versions {
        let material = VersionMaterial {
            sealed: version.sealed_material,
            backend_ref: version.backend_ref,
        };
        if let Err(error) = instance.backend.destroy_version(&material).await {
            tracing::warn!(key_id = %key_id, %error, "cannot destroy the material of a deleted key version");
        }
    }
    let event = AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        time: UnixMillis::now(),
        request_id: uuid::Uuid::new_v4().to_string().to_ascii_uppercase(),
        principal: "kms-connector".to_owned(),
        account_id: key.account_id.clone(),
        action: "DeleteKey".to_owned(),
        key_id: Some(key_id.to_owned()),
        result: AuditEvent::SUCCESS.to_owned(),
        source_ip: None,
        detail: Some("deletion window ended".to_owned()),
    };
    if let Err(error) = state.store.append_audit(event).await {
        tracing::error!(key_id = %key_id, %error, "cannot append the audit event");
    }
    true
}

/// Deletes audit events older than the retention, at start and then every `interval` (an
/// hour), in batches, by the sweeper's clock.
async fn audit_loop(
    state: web::Data<ApiState>,
    clock: Clock,
    retention: Duration,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let retention_secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    loop {
        ticker.tick().await;
        let before = clock().plus_secs(-retention_secs);
        let mut purged = 0;
        loop {
            match state
                .store
                .purge_audit_before(before, AUDIT_PURGE_BATCH)
                .await
            {
                Ok(n) => {
                    purged += n;
                    if n < AUDIT_PURGE_BATCH as usize {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot purge old audit events");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "deleted audit events past their retention");
        }
    }
}

/// Forgets nonces whose request timestamps have left the skew window, by the same clock the
/// timestamps are checked against (so a nonce is never forgotten while its request is fresh).
async fn nonce_loop(state: web::Data<ApiState>) {
    let mut ticker = tokio::time::interval(NONCE_PURGE_INTERVAL);
    loop {
        ticker.tick().await;
        let now = UnixMillis::from(std::time::SystemTime::from((state.clock)()));
        if let Err(error) = state.store.purge_expired_nonces(now).await {
            tracing::warn!(%error, "cannot purge expired nonces");
        }
    }
}
