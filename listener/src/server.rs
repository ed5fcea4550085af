//! The server: an actix-web application factory served on plain and TLS listeners through
//! actix-server and actix-http, with our own accept path in front (connection cap with an
//! overload answer, TLS handshake with graceful refusal, exactly the configured ALPN protocols)
//! and the [`crate::gate`] between the HTTP dispatcher and the application.

use std::fmt;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_http::body::MessageBody;
use actix_http::{HttpServiceBuilder, Protocol, Request, Response};
use actix_server::ServerBuilder;
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, fn_service, map_config,
};
use actix_web::dev::AppConfig;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::conn::{Conn, Stream};
use crate::gate::{GateFactory, Refusal, Refusals};
use crate::tls::{Tls, handshake, linger};
use crate::{Limits, OVERLOAD_ANSWERS};

/// HTTP/2 flow-control windows: a stream may send 256 KiB (more than any body these servers
/// accept) and a connection 1 MiB before the server reads, bounding what one connection
/// buffers (actix's defaults are 1 and 2 MiB).
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// How long an HTTP/1.1 connection is kept, after an answer that left a body unread, for the
/// client to take the answer and close (actix's "linger").
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most one overload warning per this many seconds (the refusals are counted meanwhile).
const WARN_EVERY_SECS: u64 = 10;

/// How a server treats its clients.
#[derive(Clone)]
pub struct Settings {
    /// Connection, time and size limits.
    pub limits: Limits,
    /// Idle time before a keep-alive connection is closed (HTTP/1.1) or pinged (HTTP/2).
    pub keep_alive: Duration,
    /// The protocol's answers to refusals.
    pub refusals: Arc<dyn Refusals>,
    /// `Some(cap)`: the gate reads every body (at most `cap` bytes, within
    /// [`Limits::body_timeout`]) before the application sees the request. `None`: the
    /// application reads bodies itself, with [`crate::body`].
    pub buffer_body: Option<usize>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("limits", &self.limits)
            .field("keep_alive", &self.keep_alive)
            .field("buffer_body", &self.buffer_body)
            .finish_non_exhaustive()
    }
}

/// What a server's listeners counted.
#[derive(Debug)]
pub struct Stats {
    max_connections: usize,
    slots: Arc<Semaphore>,
    refused_connections: AtomicU64,
    refused_requests: AtomicU64,
    failed_handshakes: AtomicU64,
    last_warning: AtomicU64,
}

impl Stats {
    fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            refused_connections: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.slots.available_permits())
    }

    /// Connections refused because [`Limits::max_connections`] were open.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections.load(Ordering::Relaxed)
    }

    /// Requests refused by the gate (header list, body size, body deadline, framing).
    pub fn refused_requests(&self) -> u64 {
        self.refused_requests.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed or timed out.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::Relaxed)
    }

    pub(crate) fn refused_request(&self) {
        self.refused_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed_handshake(&self) {
        self.failed_handshakes.fetch_add(1, Ordering::Relaxed);
    }

    fn refused_connection(&self, peer: Option<SocketAddr>) {
        let refused = self.refused_connections.fetch_add(1, Ordering::Relaxed) + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                target: "listener",
                max_connections = self.max_connections,
                refused_total = refused,
                peer = ?peer,
                "connection limit reached: refusing new connections with an overload answer"
            );
        }
    }
}

/// What every listener and gate of one server shares.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) stats: Arc<Stats>,
    answering: Arc<Semaphore>,
}

impl Shared {
    /// Answers a connection over the cap, within a bounded effort: at most
    /// [`OVERLOAD_ANSWERS`] at once (the rest are closed at once), each within the handshake
    /// timeout plus [`crate::tls::LINGER`].
    async fn overloaded(&self, mut tcp: TcpStream, tls: Option<&Tls>, peer: Option<SocketAddr>) {
        self.stats.refused_connection(peer);
        let Ok(_answering) = Arc::clone(&self.answering).try_acquire_owned() else {
            return;
        };
        let answer = self
            .settings
            .refusals
            .answer(Refusal::Overloaded, None)
            .http1_bytes();
        let limits = &self.settings.limits;
        let budget = limits.handshake_timeout + crate::tls::LINGER;
        let answer_it = async {
            match tls {
                None => {
                    if tcp.write_all(&answer).await.is_ok() {
                        linger(tcp).await;
                    }
                }
                Some(tls) => {
                    let config = tls.http1_config();
                    let timeout = limits.handshake_timeout;
                    if let Some(mut stream) =
                        handshake(tcp, config, timeout, &self.stats, peer).await
                    {
                        if stream.write_all(&answer).await.is_ok() {
                            linger(stream).await;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(budget, answer_it).await;
    }
}

/// Takes one connection: a slot (or the overload answer), then TLS if the listener has it.
async fn accept(
    tcp: TcpStream,
    shared: Arc<Shared>,
    tls: Option<Arc<Tls>>,
) -> Result<(Conn, Protocol, Option<SocketAddr>), ()> {
    let peer = tcp.peer_addr().ok();
    // Small requests and answers: do not wait for more to fill a segment (spec §4.2).
    let _ = tcp.set_nodelay(true);
    let Ok(slot) = Arc::clone(&shared.stats.slots).try_acquire_owned() else {
        shared.overloaded(tcp, tls.as_deref(), peer).await;
        return Err(());
    };
    let limits = &shared.settings.limits;
    let idle_limit = shared.settings.keep_alive + limits.header_timeout;
    let Some(tls) = tls else {
        let conn = Conn::new(Stream::Plain(tcp), slot, idle_limit);
        return Ok((conn, Protocol::Http1, peer));
    };
    let timeout = limits.handshake_timeout;
    let stream = handshake(tcp, tls.server_config(), timeout, &shared.stats, peer)
        .await
        .ok_or(())?;
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    let conn = Conn::new(Stream::Tls(Box::new(stream)), slot, idle_limit);
    Ok((conn, protocol, peer))
}

/// The server's application types, without owning any (the server stays `Send`).
type Types<I, S, B> = fn() -> (I, S, B);

/// An HTTP server: like `actix_web::HttpServer`, with this crate's accept path and gate.
pub struct HttpServer<F, I, S, B> {
    factory: F,
    shared: Arc<Shared>,
    builder: ServerBuilder,
    _types: PhantomData<Types<I, S, B>>,
}

impl<F, I, S, B> fmt::Debug for HttpServer<F, I, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

impl<F, I, S, B> HttpServer<F, I, S, B>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Future: 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    /// A server for the applications `factory` makes (one per worker).
    pub fn new(settings: Settings, factory: F) -> Self {
        let stats = Arc::new(Stats::new(settings.limits.max_connections));
        Self {
            factory,
            shared: Arc::new(Shared {
                settings,
                stats,
                answering: Arc::new(Semaphore::new(OVERLOAD_ANSWERS)),
            }),
            builder: ServerBuilder::new(),
            _types: PhantomData,
        }
    }

    /// Worker threads (default: one per core).
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.builder = self.builder.workers(workers);
        self
    }

    /// Seconds a graceful stop waits for requests in flight.
    #[must_use]
    pub fn shutdown_timeout(mut self, secs: u64) -> Self {
        self.builder = self.builder.shutdown_timeout(secs);
        self
    }

    /// Leaves SIGINT/SIGTERM to the caller.
    #[must_use]
    pub fn disable_signals(mut self) -> Self {
        self.builder = self.builder.disable_signals();
        self
    }

    /// The counters of this server's listeners.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves plain HTTP/1.1 on `listener`.
    pub fn listen(self, listener: TcpListener) -> std::io::Result<Self> {
        self.serve(listener, None)
    }

    /// Serves TLS on `listener`: HTTP/2 or HTTP/1.1 as ALPN decides, with the configuration
    /// `tls` holds at each handshake.
    pub fn listen_tls(self, listener: TcpListener, tls: Arc<Tls>) -> std::io::Result<Self> {
        self.serve(listener, Some(tls))
    }

    fn serve(mut self, listener: TcpListener, tls: Option<Arc<Tls>>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let factory = self.factory.clone();
        let shared = Arc::clone(&self.shared);
        let name = format!("listener-{addr}");
        self.builder = self.builder.listen(name, listener, move || {
            let app = map_config(
                factory()
                    .into_factory()
                    .map_err(|e| e.into().error_response()),
                |_| AppConfig::default(),
            );
            let settings = &shared.settings;
            let limits = &settings.limits;
            let mut http = HttpServiceBuilder::<Conn, _>::default()
                .keep_alive(settings.keep_alive)
                .client_request_timeout(limits.header_timeout)
                .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                .h2_initial_window_size(H2_STREAM_WINDOW)
                .h2_initial_connection_window_size(H2_CONNECTION_WINDOW)
                .h2_max_concurrent_streams(limits.max_concurrent_streams)
                .h2_max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .local_addr(addr)
                .on_connect_ext(|conn: &Conn, data| {
                    data.insert(conn.activity());
                });
            if tls.is_some() {
                http = http.secure();
            }
            let http = http.finish(GateFactory::<_, B>::new(app, Arc::clone(&shared)));
            let (shared, tls) = (Arc::clone(&shared), tls.clone());
            fn_service(move |tcp: TcpStream| accept(tcp, Arc::clone(&shared), tls.clone()))
                .and_then(http.map_err(|e| {
                tracing::debug!(target: "listener", error = %e, "connection ended with an error");
            }))
        })?;
        Ok(self)
    }

    /// Starts serving (within an actix/tokio runtime).
    pub fn run(self) -> actix_server::Server {
        self.builder.run()
    }
}
