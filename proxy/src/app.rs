//! Build, then run: [`Application::build`] binds the listeners (KMS-facing, ops, and admin when
//! it has a token; port 0 works, the real ports are readable), [`Application::run_until_stopped`]
//! serves until the process is told to stop. Every listener is the workspace's `listener`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use listener::HttpServer;

use crate::admin::AdminState;
use crate::config::{BackendConfig, Config, ConfigError};
use crate::health::HealthCache;
use crate::metrics::Metrics;
use crate::ops::OpsState;
use crate::remote::RemoteKeyManager;
use crate::tenancy::{KeyStores, Tenancy};
use crate::tls::{TlsError, TlsState, admin_server_config};
use crate::xki::{Refused, XkiState, handle};

/// Shortest admin bearer token accepted (`xki-proxy` refuses to start with a shorter one).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// Largest body the ops and admin listeners accept (an admin create request is tiny).
const OPS_MAX_BODY_BYTES: usize = 64 * 1024;

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
    /// The admin listener's TLS, when it has TLS.
    admin_tls: Option<Arc<listener::Tls>>,
    config_path: Option<PathBuf>,
    /// What only a restart changes, as started ([`restart_only`]).
    started_with: Arc<str>,
}

/// The parts of a configuration a reload cannot change (listeners, limits, health, cache,
/// backend), printed for comparison: a reload that changes them says so instead of dropping
/// the change silently. (Paths and addresses only: no secret is in there.)
fn restart_only(config: &Config) -> String {
    let server = &config.server;
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
        server.listen,
        server.workers,
        server.keep_alive_secs,
        server.limits,
        config.ops.listen,
        config.admin.listen,
        config.admin.token.is_some(),
        config.limits,
        config.health,
        config.cache,
        config.backend,
    )
}

impl Reloader {
    /// Applies a new configuration: key stores (credentials, regions, hosts, keys, quotas,
    /// rules) and TLS material (certificate and client CAs and names together, and the admin
    /// certificate). Switching mTLS or admin TLS on or off needs a restart and is refused;
    /// changes to listeners, limits, health, cache or backend also wait for a restart, which a
    /// warning says. On error nothing changes.
    pub fn apply(&self, config: &Config) -> Result<(), StartError> {
        // Build everything first so a bad file leaves the running state untouched.
        let stores = KeyStores::build(config, Some(&self.tenancy.snapshot()))?;
        let main_tls = self.tls.prepare(&config.server)?;
        let admin_tls = match (&self.admin_tls, &config.admin.tls) {
            (Some(_), Some(t)) => Some(admin_server_config(&t.cert_file, &t.key_file)?),
            (None, None) => None,
            (current, _) => {
                return Err(ConfigError::Invalid(format!(
                    "[admin.tls] cannot be switched {} by a reload: restart the proxy",
                    if current.is_some() { "off" } else { "on" }
                ))
                .into());
            }
        };
        self.tls.commit(main_tls);
        if let (Some(tls), Some(next)) = (&self.admin_tls, admin_tls) {
            tls.replace(next);
        }
        self.tenancy.replace(stores);
        if *restart_only(config) != *self.started_with {
            tracing::warn!(
                target: "xki_proxy::reload",
                "listeners, limits, health, cache or backend changed in the configuration: \
                 those changes take effect at the next restart"
            );
        }
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
    admin_port: Option<u16>,
    server: Server,
    ops_server: Server,
    admin_server: Option<Server>,
    reloader: Reloader,
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
            .field("admin_port", &self.admin_port)
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
        let admin_token = config
            .admin
            .token
            .as_ref()
            .map(|t| t.resolve().map_err(ConfigError::from))
            .transpose()?;
        if let Some(token) = &admin_token {
            if token.expose().len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "admin.token must be at least {MIN_ADMIN_TOKEN_BYTES} characters"
                ))
                .into());
            }
        }
        let admin_tls = match (&admin_token, &config.admin.tls) {
            (Some(_), Some(t)) => Some(listener::Tls::new(admin_server_config(
                &t.cert_file,
                &t.key_file,
            )?)),
            _ => None,
        };
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(HealthCache::new(config.health.fleet_size));
        let metadata_cache = moka::sync::Cache::builder()
            .time_to_live(Duration::from_millis(config.cache.metadata_ttl_ms))
            .max_capacity(100_000)
            .build();
        let limits = config.server.listener_limits()?;
        let settings =
            |refusals: Arc<dyn listener::Refusals>, keep_alive, buffer_body| listener::Settings {
                limits,
                keep_alive,
                refusals,
                buffer_body,
            };

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
            body_timeout: limits.body_timeout,
        });
        let (listener, port) = bind(config.server.listen)?;
        // Load balancers need a probe; on the main port only when it does not demand client
        // certificates (spec §4.3), otherwise on the ops port alone. The handler reads bodies
        // itself (after the checks that need none), so the listener does not buffer them.
        let main_probes = config.server.mtls.is_none();
        let health_data = web::Data::from(health.clone());
        let refused = Arc::new(Refused {
            metrics: metrics.clone(),
        });
        let keep_alive = Duration::from_secs(config.server.keep_alive_secs);
        let mut server = HttpServer::new(settings(refused, keep_alive, None), move || {
            let app = App::new().app_data(xki_state.clone());
            let app = if main_probes {
                app.app_data(health_data.clone())
                    .route("/ping", web::get().to(crate::ops::ping))
                    .route("/ready", web::get().to(crate::ops::ready_public))
            } else {
                app
            };
            app.default_service(web::to(handle))
        })
        .shutdown_timeout(10);
        if let Some(workers) = config.server.workers {
            server = server.workers(workers);
        }
        let listener_stats = server.stats();
        let server = server
            .listen_tls(listener, tls.listener_tls())
            .map_err(|source| StartError::Bind {
                addr: config.server.listen,
                source,
            })?
            .run();

        // The ops and admin ports answer small requests; five seconds of idle keep-alive.
        let short_keep_alive = Duration::from_secs(5);
        let ops_state = web::Data::new(OpsState {
            health: health.clone(),
            metrics: metrics.clone(),
            backend: backend.clone(),
            listener: listener_stats,
        });
        let (ops_listener, ops_port) = bind(config.ops.listen)?;
        let ops_health = web::Data::from(health.clone());
        let plain = Arc::new(listener::PlainRefusals);
        let ops_server = HttpServer::new(
            settings(plain.clone(), short_keep_alive, Some(OPS_MAX_BODY_BYTES)),
            move || {
                App::new()
                    .app_data(ops_state.clone())
                    .app_data(ops_health.clone())
                    .configure(crate::ops::configure)
            },
        )
        .workers(1)
        .shutdown_timeout(5)
        .listen(ops_listener)
        .map_err(|source| StartError::Bind {
            addr: config.ops.listen,
            source,
        })?
        .run();

        let reloader = Reloader {
            tenancy,
            tls,
            admin_tls: admin_tls.clone(),
            config_path,
            started_with: restart_only(&config).into(),
        };
        let (admin_server, admin_port) = match admin_token {
            Some(token) => {
                let admin_state = web::Data::new(AdminState {
                    backend: backend.clone(),
                    metadata_cache,
                    token,
                    reloader: reloader.clone(),
                });
                let (admin_listener, admin_port) = bind(config.admin.listen)?;
                let admin = HttpServer::new(
                    settings(plain, short_keep_alive, Some(OPS_MAX_BODY_BYTES)),
                    move || {
                        App::new()
                            .app_data(admin_state.clone())
                            .configure(crate::admin::configure)
                    },
                )
                .workers(1)
                .shutdown_timeout(5);
                let admin = match admin_tls {
                    Some(tls) => admin.listen_tls(admin_listener, tls),
                    None => admin.listen(admin_listener),
                }
                .map_err(|source| StartError::Bind {
                    addr: config.admin.listen,
                    source,
                })?;
                (Some(admin.run()), Some(admin_port))
            }
            None => (None, None),
        };

        Ok(Self {
            port,
            ops_port,
            admin_port,
            server,
            ops_server,
            admin_server,
            reloader,
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

    /// Port of the admin listener, when the admin API is on.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// What reloads configuration into the running proxy.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Handles to stop the KMS-facing and the ops listener; stopping either stops every
    /// listener (the admin one too) once [`Application::run_until_stopped`] notices.
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
        let reload_task = tokio::spawn(reload_loop(self.reloader.clone()));
        let handles = [
            Some(self.server.handle()),
            Some(self.ops_server.handle()),
            self.admin_server.as_ref().map(Server::handle),
        ];
        let admin = async {
            match self.admin_server {
                Some(server) => server.await,
                None => std::future::pending().await,
            }
        };
        // Whichever listener stops first (a signal stops them all), the others follow.
        let result = tokio::select! {
            r = self.server => r,
            r = self.ops_server => r,
            r = admin => r,
        };
        for handle in handles.into_iter().flatten() {
            handle.stop(true).await;
        }
        health_task.abort();
        reload_task.abort();
        result
    }
}

/// Binds `addr`; the port actually bound (port 0 picks one).
fn bind(addr: SocketAddr) -> Result<(TcpListener, u16), StartError> {
    let error = |source| StartError::Bind { addr, source };
    let listener = TcpListener::bind(addr).map_err(error)?;
    let port = listener.local_addr().map_err(error)?.port();
    Ok((listener, port))
}

/// SIGHUP reloads the configuration file (`/admin/reload` does the same and answers how it
/// went).
async fn reload_loop(reloader: Reloader) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!(target: "xki_proxy::reload", "cannot listen for SIGHUP: reload through the admin API only");
        return;
    };
    while hup.recv().await.is_some() {
        match reloader.reload_file() {
            Ok(()) => tracing::info!(target: "xki_proxy::reload", "configuration reloaded"),
            Err(e) => {
                tracing::error!(target: "xki_proxy::reload", error = %e, "reload refused; previous configuration stays in force")
            }
        }
    }
}
