//! Below reqwest: TLS straight on tokio-rustls, to see TLS alerts, to choose versions, suites
//! and ALPN, and to send exact bytes (replayed captures, chunked bodies, several requests on one
//! connection).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::HOST;
use super::client::Reply;

/// What the client offers.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Protocol versions.
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// Cipher suites (`None`: ring's defaults).
    pub suites: Option<Vec<SupportedCipherSuite>>,
    /// ALPN protocols, in preference order.
    pub alpn: Vec<Vec<u8>>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            suites: None,
            alpn: vec![b"http/1.1".to_vec()],
        }
    }
}

/// A rustls client configuration trusting `ca_pem`, presenting `identity` if given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&certs::CertifiedKey>,
    options: &TlsOptions,
) -> ClientConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = &options.suites {
        provider.cipher_suites = suites.clone();
    }
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(provider) as Arc<CryptoProvider>)
        .with_protocol_versions(&options.versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der().unwrap()], id.key_der().unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn.clone();
    config
}

/// The rustls error inside an I/O error from tokio-rustls, if that is what it is.
pub fn rustls_error(error: &io::Error) -> Option<rustls::Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}

/// One TLS connection to the proxy.
#[derive(Debug)]
pub struct Conn {
    stream: TlsStream<TcpStream>,
    buffer: Vec<u8>,
}

/// A raw HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// As a [`Reply`], to use its checks.
    pub fn reply(&self) -> Reply {
        Reply {
            status: self.status,
            version: reqwest::Version::HTTP_11,
            content_type: self.header("content-type").map(str::to_owned),
            body: self.body.clone(),
        }
    }
}

impl Conn {
    /// Connects to 127.0.0.1:`port` with SNI [`HOST`] and completes the TLS handshake.
    pub async fn connect(port: u16, config: ClientConfig) -> io::Result<Self> {
        let tcp = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
        let connector = TlsConnector::from(Arc::new(config));
        let stream = connector
            .connect(ServerName::try_from(HOST).unwrap(), tcp)
            .await?;
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// The negotiated protocol version, cipher suite and ALPN protocol.
    pub fn negotiated(
        &self,
    ) -> (
        rustls::ProtocolVersion,
        rustls::CipherSuite,
        Option<Vec<u8>>,
    ) {
        let (_, session) = self.stream.get_ref();
        (
            session.protocol_version().unwrap(),
            session.negotiated_cipher_suite().unwrap().suite(),
            session.alpn_protocol().map(<[u8]>::to_vec),
        )
    }

    /// Writes bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response (body framed by `Content-Length`, or by the end of the connection).
    pub async fn read_response(&mut self) -> io::Result<RawResponse> {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).unwrap();
        self.buffer.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let body = match length {
            Some(length) => {
                while self.buffer.len() < length {
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                    }
                }
                self.buffer.drain(..length).collect()
            }
            None => {
                while matches!(self.fill().await, Ok(n) if n > 0) {}
                std::mem::take(&mut self.buffer)
            }
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Writes a request and reads its response.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<RawResponse> {
        self.write(request).await?;
        self.read_response().await
    }
}

/// An HTTP/1.1 request with exactly these headers (plus `Content-Length`), keep-alive.
pub fn http1_request(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Connects with `config` and sends an unsigned health request: `Ok(status)` when TLS let the
/// request through, the I/O error otherwise (handshake refused, or TLS 1.3's post-handshake
/// alert on the first read).
pub async fn attempt(port: u16, config: ClientConfig) -> io::Result<u16> {
    let mut conn = Conn::connect(port, config).await?;
    let request = http1_request(
        "POST",
        "/kms/xks/v1/health",
        &[
            ("Host".into(), format!("{HOST}:{port}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        b"{}",
    );
    Ok(conn.exchange(&request).await?.status)
}
