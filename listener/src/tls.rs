//! TLS on a listener: the configuration in force (swapped whole on reload, so a certificate and
//! its client verifier always change together), and a handshake that, when it refuses a client,
//! still delivers the alert.
//!
//! Under TLS 1.3 the server checks a client certificate after the client has sent its
//! `Finished`, and a client such as curl writes its request right behind it. Closing the socket
//! with that request unread makes the kernel answer with a reset, which throws away the alert
//! before the client reads it (it sees only "broken pipe"). So a refused handshake writes its
//! alert, shuts down the write side, and reads and discards what the client sends for a moment
//! ([`linger`]) before closing.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::server::Stats;

/// Longest a refused connection is kept to deliver its last words.
pub const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and thrown away while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// The TLS configuration a listener uses for its next handshakes. Connections keep the one
/// they were made with.
#[derive(Debug)]
pub struct Tls {
    current: RwLock<Configs>,
}

#[derive(Debug, Clone)]
struct Configs {
    full: Arc<ServerConfig>,
    /// The same with HTTP/1.1 as the only ALPN protocol: the overload answer is a raw
    /// HTTP/1.1 response.
    http1: Arc<ServerConfig>,
}

impl Configs {
    fn new(config: ServerConfig) -> Self {
        let mut http1 = config.clone();
        if !http1.alpn_protocols.is_empty() {
            http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Self {
            full: Arc::new(config),
            http1: Arc::new(http1),
        }
    }
}

impl Tls {
    /// Serves `config`: its certificates, client verifier, versions and ALPN protocols exactly
    /// (nothing is added).
    pub fn new(config: ServerConfig) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Configs::new(config)),
        })
    }

    /// Replaces the whole configuration for the next handshakes.
    pub fn replace(&self, config: ServerConfig) {
        let next = Configs::new(config);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    /// The configuration in force.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.read().full)
    }

    pub(crate) fn http1_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.read().http1)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Configs> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Completes a server handshake within `timeout`. A refused one (bad or missing client
/// certificate, no common version or suite, garbage) gets its alert delivered before the
/// connection closes; a slow one is dropped.
pub(crate) async fn handshake(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
    stats: &Stats,
    peer: Option<SocketAddr>,
) -> Option<TlsStream<TcpStream>> {
    let accept = TlsAcceptor::from(config).accept(tcp).into_fallible();
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err((error, tcp))) => {
            stats.failed_handshake();
            tracing::debug!(target: "listener::tls", peer = ?peer, %error, "TLS handshake refused");
            // tokio-rustls wrote the alert ("last-gasp write") before handing the socket back.
            linger(tcp).await;
            None
        }
        Err(_) => {
            stats.failed_handshake();
            tracing::debug!(target: "listener::tls", peer = ?peer, "TLS handshake timed out");
            None
        }
    }
}

/// Closes gracefully: shuts down the write side (after what was written: an alert, an
/// answer), then reads and discards what the peer still sends, until it closes, for at most
/// [`LINGER`] and 64 KiB, so the close is not a reset that destroys what we sent.
pub(crate) async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    let drain = async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
