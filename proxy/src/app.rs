//! Build, then run: [`Application::build`] binds both listeners (port 0 works; the real ports are
//! readable), [`Application::run_until_stopped`] serves until the process is told to stop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};

use crate::config::{BackendConfig, Config, ConfigError};
use crate::health::HealthCache;
use crate::metrics::Metrics;
use crate::ops::OpsState;
use crate::remote::RemoteKeyManager;
use crate::tenancy::{KeyStores, Tenancy};
use crate::tls::{TlsError, TlsState};
use crate::xki::{XkiState, handle};

/// Shortest admin bearer token accepted (`xki-proxy` refuses to start with a shorter one).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The key manager cannot start.
    #[error("key manager: {0}")]
    Backend(String),
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Live, reloadable parts of a running proxy.
#[derive(Debug, Clone)]
pub struct Reloader {
    tenancy: Arc<Tenancy>,
    tls: TlsState,
    config_path: Option<PathBuf>,
}

impl Reloader {
    /// Applies a new configuration: key stores (credentials, regions, keys, quotas, rules) and
    /// TLS material. Listeners, backend and limits need a restart. On error nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), StartError> {
        // Build everything first so a bad file leaves the running state untouched.
        let stores = KeyStores::build(config, Some(&self.tenancy.snapshot()))?;
        self.tls.reload(&config.server)?;
        self.tenancy.replace(stores);
        Ok(())
    }

    /// Re-reads the configuration file (SIGHUP, `/admin/reload`).
    pub fn reload_file(&self) -> Result<(), StartError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let config = Config::load(path)?;
        self.apply(&config)
    }
}

/// A bound, not yet serving, proxy.
pub struct Application {
    port: u16,
    ops_port: u16,
    server: Server,
    ops_server: Server,
    reloader: Reloader,
    reload_signal: Arc<tokio::sync::Notify>,
    health: Arc<HealthCache>,
    backend: Arc<dyn ekm::KeyManager>,
    metrics: Arc<Metrics>,
    health_interval: Duration,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("ops_port", &self.ops_port)
            .finish_non_exhaustive()
    }
}

/// Builds the key manager the configuration names.
pub async fn build_backend(config: &Config) -> Result<Arc<dyn ekm::KeyManager>, StartError> {
    match &config.backend {
        BackendConfig::Remote {
            url,
            ca_file,
            cert_file,
            key_file,
            pool_max_idle,
        } => Ok(Arc::new(RemoteKeyManager::new(
            url,
            ca_file,
            cert_file,
            key_file,
            *pool_max_idle,
        )?)),
        BackendConfig::InProcess { ekm_config } => {
            let backend = |e: ekm::Error| StartError::Backend(e.to_string());
            let config = ekm::config::Config::load(Some(ekm_config)).map_err(backend)?;
            let manager = ekm::pkcs11::Pkcs11KeyManager::open(config.pkcs11().map_err(backend)?)
                .await
                .map_err(backend)?;
            Ok(Arc::new(manager))
        }
    }
}

impl Application {
    /// Binds the listeners with the backend the configuration names.
    pub async fn build(config: Config, config_path: Option<PathBuf>) -> Result<Self, StartError> {
        let backend = build_backend(&config).await?;
        Self::build_with_backend(config, config_path, backend)
    }

    /// Binds the listeners around a given key manager (tests inject fault-injecting ones).
    pub fn build_with_backend(
        config: Config,
        config_path: Option<PathBuf>,
        backend: Arc<dyn ekm::KeyManager>,
    ) -> Result<Self, StartError> {
        let tenancy = Arc::new(Tenancy::new(KeyStores::build(&config, None)?));
        let tls = TlsState::load(&config.server)?;
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(HealthCache::new(config.health.fleet_size));
        let metadata_cache = moka::sync::Cache::builder()
            .time_to_live(Duration::from_millis(config.cache.metadata_ttl_ms))
            .max_capacity(100_000)
            .build();
        let reload_signal = Arc::new(tokio::sync::Notify::new());

        let xki_state = web::Data::new(XkiState {
            tenancy: tenancy.clone(),
            backend: backend.clone(),
            metadata_cache: metadata_cache.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            limits: config.limits.xki(),
            deadline: config.limits.deadline(),
            in_flight: tokio::sync::Semaphore::new(config.limits.max_in_flight),
            admission_wait: Duration::from_millis(config.limits.admission_wait_ms),
        });
        let listener = bind(config.server.listen)?;
        let port = listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?
            .port();
        // Load balancers need a probe; on the main port only when it does not demand client
        // certificates (spec §4.3), otherwise on the ops port alone.
        let main_probes = config.server.mtls.is_none();
        let health_data = web::Data::from(health.clone());
        let mut server = HttpServer::new(move || {
            let app = App::new().app_data(xki_state.clone());
            let app = if main_probes {
                app.app_data(health_data.clone())
                    .route("/ping", web::get().to(crate::ops::ping))
                    .route("/ready", web::get().to(crate::ops::ready))
            } else {
                app
            };
            app.default_service(web::to(handle))
        })
        .keep_alive(Duration::from_secs(config.server.keep_alive_secs))
        .client_request_timeout(Duration::from_secs(5))
        .shutdown_timeout(10);
        if let Some(workers) = config.server.workers {
            server = server.workers(workers);
        }
        let server = server
            .listen_rustls_0_23(listener, tls.server_config()?)
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?
            .run();

        let admin_token = config
            .ops
            .admin_token
            .as_ref()
            .map(|t| t.resolve().map_err(ConfigError::from))
            .transpose()?;
        if let Some(token) = &admin_token {
            if token.expose().len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "ops.admin_token must be at least {MIN_ADMIN_TOKEN_BYTES} characters"
                ))
                .into());
            }
        }
        let ops_state = web::Data::new(OpsState {
            health: health.clone(),
            metrics: metrics.clone(),
            backend: backend.clone(),
            metadata_cache,
            admin_token,
            reload: reload_signal.clone(),
        });
        let ops_listener = bind(config.ops.listen)?;
        let ops_port = ops_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.ops.listen,
                source,
            })?
            .port();
        let ops_health = web::Data::from(health.clone());
        let ops_server = HttpServer::new(move || {
            App::new()
                .app_data(ops_state.clone())
                .app_data(ops_health.clone())
                .configure(crate::ops::configure)
        })
        .workers(1)
        .shutdown_timeout(5)
        .listen(ops_listener)
        .map_err(|source| StartError::Bind {
            addr: config.ops.listen,
            source,
        })?
        .run();

        Ok(Self {
            port,
            ops_port,
            server,
            ops_server,
            reloader: Reloader {
                tenancy,
                tls,
                config_path,
            },
            reload_signal,
            health,
            backend,
            metrics,
            health_interval: Duration::from_secs(config.health.interval_secs),
        })
    }

    /// Port of the KMS-facing listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the ops listener.
    pub fn ops_port(&self) -> u16 {
        self.ops_port
    }

    /// What reloads configuration into the running proxy.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Handles to stop both listeners.
    pub fn handles(&self) -> (ServerHandle, ServerHandle) {
        (self.server.handle(), self.ops_server.handle())
    }

    /// Serves until stopped (SIGINT/SIGTERM or a handle). SIGHUP reloads the configuration file.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // First probe before serving, so the first health answer is a real one.
        self.health
            .refresh(self.backend.as_ref(), &self.metrics)
            .await;
        let health_task = tokio::spawn(self.health.clone().run(
            self.backend.clone(),
            self.metrics.clone(),
            self.health_interval,
        ));
        let reload_task = tokio::spawn(reload_loop(
            self.reloader.clone(),
            self.reload_signal.clone(),
        ));
        let ops = self.ops_server;
        let main_handle = self.server.handle();
        let ops_handle = ops.handle();
        let result = tokio::select! {
            r = self.server => { ops_handle.stop(true).await; r }
            r = ops => { main_handle.stop(true).await; r }
        };
        health_task.abort();
        reload_task.abort();
        result
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

async fn reload_loop(reloader: Reloader, signal: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup_recv => {}
                () = signal.notified() => {}
            }
        }
        #[cfg(not(unix))]
        signal.notified().await;
        match reloader.reload_file() {
            Ok(()) => tracing::info!(target: "xki_proxy::reload", "configuration reloaded"),
            Err(e) => {
                tracing::error!(target: "xki_proxy::reload", error = %e, "reload refused; previous configuration stays in force")
            }
        }
    }
}
