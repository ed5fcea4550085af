//! The EKM server: the `/v1` JSON API over HTTPS (mTLS by default) in front of an
//! `Arc<dyn KeyManager>`, and a plain-HTTP liveness port (`/ping`, `/ready`, `/metrics`), both
//! on the workspace's `listener` (connection cap, TLS refusals that reach the client, head and
//! body deadlines, header cap; exactly the ALPN protocols the TLS configuration names).
//!
//! `Application::build` binds both listeners (port 0 works; read the real ports back), then
//! `run_until_stopped` serves. Each API call gets a request id (the caller's `x-request-id` if
//! well-formed) and a deadline (the caller's `x-ekm-deadline-ms`, capped); the manager drops
//! queued work past the deadline and the server answers `DeadlineExceeded` at the deadline
//! whatever the manager does. One JSON log line per request: request id, op, key id, status,
//! error code, latency. Never plaintext, AAD or key material.

pub mod error;
pub mod metrics;
mod routes;
pub mod tls;

pub use routes::{health_body, metadata as key_metadata};

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, web};
use listener::{HttpServer, Tls};

use crate::error::{Error, Result};
use crate::manager::KeyManager;

/// Server settings (the `[server]` section minus TLS files).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// API (TLS) listen address.
    pub listen: SocketAddr,
    /// Plain-HTTP liveness listen address; `None` to disable.
    pub liveness_listen: Option<SocketAddr>,
    /// Deadline of a crypto call that names none.
    pub default_deadline: Duration,
    /// Deadline of an admin call (create, rotate, …) that names none.
    pub admin_deadline: Duration,
    /// Longest deadline a caller may ask for.
    pub max_deadline: Duration,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// Keep-alive idle timeout (longer than any load balancer's, e.g. NLB 350 s).
    pub keep_alive: Duration,
    /// What one client may hold (connections, head and body deadlines, header bytes).
    pub limits: listener::Limits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            liveness_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            default_deadline: Duration::from_millis(200),
            admin_deadline: Duration::from_secs(10),
            max_deadline: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            http_workers: 2,
            keep_alive: Duration::from_secs(400),
            limits: listener::Limits::default(),
        }
    }
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub manager: Arc<dyn KeyManager>,
    pub settings: ServerSettings,
    pub metrics: metrics::Metrics,
}

/// The bound, not yet running, server.
pub struct Application {
    api: Server,
    liveness: Option<Server>,
    port: u16,
    liveness_port: Option<u16>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("liveness_port", &self.liveness_port)
            .finish()
    }
}

fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address).map_err(|e| Error::Config(format!("cannot bind {address}: {e}")))
}

fn port_of(listener: &TcpListener) -> Result<u16> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::Internal(format!("local address: {e}")))
}

impl Application {
    /// Binds the listeners and prepares both servers. Must be called within an actix/tokio
    /// runtime.
    pub fn build(
        settings: ServerSettings,
        tls: rustls::ServerConfig,
        manager: Arc<dyn KeyManager>,
    ) -> Result<Self> {
        let api_listener = bind(settings.listen)?;
        let port = port_of(&api_listener)?;
        let state = web::Data::new(AppState {
            manager,
            settings: settings.clone(),
            metrics: metrics::Metrics::default(),
        });
        // Bodies are read whole by the listener (within `max_body_bytes` and the body
        // deadline) before the JSON extractor sees them.
        let listening = |buffer_body| listener::Settings {
            limits: settings.limits,
            keep_alive: settings.keep_alive,
            refusals: Arc::new(routes::Refused(state.clone())),
            buffer_body,
        };
        let api_state = state.clone();
        let api = HttpServer::new(listening(Some(settings.max_body_bytes)), move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(routes::log_refused))
                .app_data(api_state.clone())
                .app_data(routes::json_config(api_state.settings.max_body_bytes))
                .configure(routes::api)
                .default_service(web::to(routes::unknown_path))
        })
        .workers(settings.http_workers)
        .disable_signals()
        .listen_tls(api_listener, Tls::new(tls))
        .map_err(|e| Error::Config(format!("TLS listener: {e}")))?
        .run();
        let (liveness, liveness_port) = match settings.liveness_listen {
            Some(address) => {
                let listener = bind(address)?;
                let liveness_port = port_of(&listener)?;
                let server = HttpServer::new(listening(Some(settings.max_body_bytes)), move || {
                    App::new()
                        .app_data(state.clone())
                        .configure(routes::liveness)
                        .default_service(web::to(routes::unknown_path))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .map_err(|e| Error::Config(format!("liveness listener: {e}")))?
                .run();
                (Some(server), Some(liveness_port))
            }
            None => (None, None),
        };
        Ok(Self {
            api,
            liveness,
            port,
            liveness_port,
        })
    }

    /// The API port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The liveness port actually bound.
    pub fn liveness_port(&self) -> Option<u16> {
        self.liveness_port
    }

    /// Handles to stop the servers (graceful when `stop(true)`).
    pub fn handles(&self) -> Vec<ServerHandle> {
        let mut handles = vec![self.api.handle()];
        handles.extend(self.liveness.as_ref().map(Server::handle));
        handles
    }

    /// Serves until both servers stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        match self.liveness {
            Some(liveness) => tokio::try_join!(self.api, liveness).map(|_| ()),
            None => self.api.await,
        }
    }
}
