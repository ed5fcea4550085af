//! The XKI side for the external backend's tests: the real proxy (`xki_proxy::Application::
//! build_with_backend`) in-process on 127.0.0.1, over real TLS with a certificate from a test CA,
//! in front of a real `ekm::pkcs11::Pkcs11KeyManager` on a SoftHSM2 token. Keys are created,
//! disabled and enabled through that same manager ("the XKI side").
//!
//! The process runs with a private SoftHSM2 token directory ([`isolated_env`], see
//! `ekm::testing`); the re-run test process also gets [`ROOT_KEY_VAR`] for the software
//! backend's `RootKey::from_env` test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use ekm::pkcs11::{Pkcs11Config, Pkcs11KeyManager, TokenSelector};
use ekm::{CreateKey, KeyManager, KeyUsage, OpContext};
use kms_connector::backend::external::{ExternalInstanceConfig, SecretRef};
use schemas::xki::ExternalKeyId;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use xki_proxy::credentials::NewCredential;
use xki_proxy::{Application, Config};

const MODULE: &str = ekm::testing::SOFTHSM_MODULE;
const PIN: &str = "kms-connector-test-pin";
const SO_PIN: &str = "kms-connector-so-pin";
const TOKEN_LABEL: &str = "kms-connector-tests";
const MARKER: &str = "KMS_CONNECTOR_TEST_SOFTHSM_DIR";
/// Holds [`ROOT_KEY`] in Base64 in the re-run test process.
pub const ROOT_KEY_VAR: &str = "KMS_CONNECTOR_TEST_ROOT_KEY";
/// The root key behind [`ROOT_KEY_VAR`].
pub const ROOT_KEY: [u8; 32] = *b"kms-connector root key for tests";
/// The connector's region (and the only one the test proxy accepts).
pub const REGION: &str = "cn-hangzhou";
/// The key store prefix of the test proxy.
pub const PREFIX: &str = "/kms-connector-test";
/// The name the proxy's certificate carries.
pub const HOST: &str = "localhost";

/// Makes sure this process runs with its own SoftHSM configuration and [`ROOT_KEY_VAR`].
pub fn isolated_env() {
    let root_key = schemas::b64::encode(ROOT_KEY);
    ekm::testing::isolated_softhsm(MARKER, &[(ROOT_KEY_VAR, &root_key)]);
}

/// The key manager of this process, on a token initialised once, shared by every test and every
/// proxy.
pub fn ekm() -> Arc<Pkcs11KeyManager> {
    static MANAGER: OnceLock<Arc<Pkcs11KeyManager>> = OnceLock::new();
    MANAGER
        .get_or_init(|| {
            isolated_env();
            ekm::pkcs11::init_token(
                Path::new(MODULE),
                TOKEN_LABEL,
                &SecretString::from(SO_PIN),
                &SecretString::from(PIN),
            )
            .expect("init token");
            let mut config = Pkcs11Config::new(
                PathBuf::from(MODULE),
                TokenSelector::Label(TOKEN_LABEL.into()),
                SecretString::from(PIN),
            );
            config.workers = 2;
            config.queue_capacity = 64;
            // A debug build on a shared 2-core box: slow probes are noise here.
            config.degraded_latency = Duration::from_secs(2);
            Arc::new(ekm::testing::open_blocking(config).expect("open the token"))
        })
        .clone()
}

/// A context with a generous deadline, for direct manager calls.
pub fn ctx() -> OpContext {
    OpContext::new("kms-connector-test", Duration::from_secs(10))
}

/// Creates an external key with `usage` in the EKM; returns its id.
pub async fn create_key(tag: &str, usage: KeyUsage) -> ExternalKeyId {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let id =
        ExternalKeyId::parse(&format!("{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed))).unwrap();
    ekm()
        .create_key(
            &ctx(),
            CreateKey {
                id: Some(id.clone()),
                usage,
                description: None,
            },
        )
        .await
        .unwrap();
    id
}

/// Mutual TLS on the proxy: the client CA it trusts and the name it accepts.
#[derive(Debug, Clone)]
pub struct Mtls {
    /// PEM of the client CA.
    pub ca_pem: String,
    /// Accepted client name (CN or DNS SAN).
    pub allowed_name: String,
}

/// A running (or stopped) proxy with its TLS material and credential, in its own directory.
pub struct TestProxy {
    /// The KMS-facing port (kept across restarts).
    pub port: u16,
    /// The CA that issued the server certificate.
    pub ca: certs::Authority,
    /// Lower-case hex SHA-256 of the server certificate.
    pub fingerprint: String,
    /// The credential the key store accepts.
    pub access_key_id: String,
    dir: tempfile::TempDir,
    mtls: Option<Mtls>,
    backend: Option<Arc<dyn KeyManager>>,
    running: Option<Running>,
}

/// How a proxy departs from the default one (for deliberately broken set-ups).
#[derive(Default)]
pub struct ProxyOptions {
    /// Mutual TLS.
    pub mtls: Option<Mtls>,
    /// The server certificate's spec (default: [`HOST`] and 127.0.0.1, valid), issued by the
    /// proxy's CA.
    pub server_cert: Option<certs::LeafSpec>,
    /// The key manager behind the proxy (default: [`ekm`]).
    pub backend: Option<Arc<dyn KeyManager>>,
}

struct Running {
    handles: (ServerHandle, ServerHandle),
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy")
            .field("port", &self.port)
            .field("running", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl TestProxy {
    /// Starts a proxy on a free port (no mTLS).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a proxy on a free port, with mutual TLS when `mtls` is given.
    pub async fn start_with(mtls: Option<Mtls>) -> Self {
        Self::start_custom(ProxyOptions {
            mtls,
            ..ProxyOptions::default()
        })
        .await
    }

    /// Starts a proxy on a free port with `options`.
    pub async fn start_custom(options: ProxyOptions) -> Self {
        let ProxyOptions {
            mtls,
            server_cert,
            backend,
        } = options;
        let dir = tempfile::Builder::new()
            .prefix("kms-connector-xki-")
            .tempdir()
            .unwrap();
        let ca = certs::Authority::new("kms-connector test proxy CA").unwrap();
        let spec = server_cert.unwrap_or_else(|| {
            certs::LeafSpec::server(HOST, &[HOST], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        });
        let server = ca.issue(&spec).unwrap();
        let fingerprint = certs::sha256_fingerprint(&server.cert_pem)
            .unwrap()
            .to_ascii_lowercase();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
        let credential = NewCredential::generate();
        std::fs::write(dir.path().join("xki-secret"), credential.secret.as_str()).unwrap();
        if let Some(mtls) = &mtls {
            std::fs::write(dir.path().join("client-ca.pem"), &mtls.ca_pem).unwrap();
        }
        let mut proxy = Self {
            port: 0,
            ca,
            fingerprint,
            access_key_id: credential.access_key_id.clone(),
            dir,
            mtls,
            backend,
            running: None,
        };
        proxy
            .launch(0)
            .await
            .unwrap_or_else(|e| panic!("proxy did not start: {e}"));
        proxy
    }

    /// The proxy's directory (secret, CA and certificates live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file into the proxy's directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// An instance configuration that reaches this proxy: CA and pin, secret file, a generous
    /// call budget for a debug build (5 s) and a 10 s health interval.
    pub fn instance_config(&self) -> ExternalInstanceConfig {
        ExternalInstanceConfig {
            endpoint: Some(format!("https://{HOST}:{}", self.port)),
            path: Some(format!("{PREFIX}/kms/xks/v1")),
            access_key_id: Some(self.access_key_id.clone()),
            secret: Some(SecretRef {
                env: None,
                file: Some("xki-secret".into()),
            }),
            ca_file: Some("ca.pem".into()),
            certificate_sha256: Some(self.fingerprint.clone()),
            health_interval_secs: Some(10),
            timeout_ms: Some(5000),
            ..ExternalInstanceConfig::default()
        }
    }

    fn render(&self, port: u16) -> String {
        let mut t = String::new();
        writeln!(t, "[server]\nlisten = \"127.0.0.1:{port}\"").unwrap();
        // One worker: the canary of `stop` shares it with every client connection.
        t.push_str("cert_file = \"server.pem\"\nkey_file = \"server.key\"\nworkers = 1\n");
        if let Some(mtls) = &self.mtls {
            writeln!(
                t,
                "[server.mtls]\nca_files = [\"client-ca.pem\"]\nallowed_names = [{:?}]",
                mtls.allowed_name
            )
            .unwrap();
        }
        t.push_str("[ops]\nlisten = \"127.0.0.1:0\"\n");
        // KMS Encrypt takes 6 KB; the spec's minimum is 4300 bytes.
        t.push_str("[limits]\ndeadline_ms = 2000\nmax_data_bytes = 6144\n");
        t.push_str("[backend]\nkind = \"in-process\"\nekm_config = \"unused-ekm.toml\"\n");
        writeln!(
            t,
            "[[key_store]]\nprefix = {PREFIX:?}\nregions = [{REGION:?}]\nkeys = [\"*\"]\ncredentials = [{{ access_key_id = {:?}, secret = {{ file = \"xki-secret\" }} }}]",
            self.access_key_id
        )
        .unwrap();
        t
    }

    /// Builds and runs the proxy on `port` (0: any); returns once it is bound.
    async fn launch(&mut self, port: u16) -> Result<(), String> {
        let text = self.render(port);
        let config = Config::from_toml(&text, std::iter::empty(), self.dir.path())
            .map_err(|e| format!("configuration refused: {e}\n{text}"))?;
        let backend: Arc<dyn KeyManager> = self.backend.clone().unwrap_or_else(|| ekm());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("xki-proxy-under-test".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    match Application::build_with_backend(config, None, backend) {
                        Ok(app) => {
                            let _ = started_tx.send(Ok((app.port(), app.handles())));
                            let _ = app.run_until_stopped().await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .unwrap();
        let (bound, handles) = started_rx.await.map_err(|e| e.to_string())??;
        self.port = bound;
        self.running = Some(Running { handles, thread });
        Ok(())
    }

    /// Stops the proxy as a crash would: listeners closed, every connection dropped. Returns
    /// once that is so (the proxy's thread has ended and its worker has closed a canary
    /// connection, so kept-alive client connections are gone too).
    pub async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // (With mTLS the canary would need a client certificate; no such test stops a proxy.)
        let canary = match self.mtls {
            None => Some(self.canary().await.expect("canary connection to the proxy")),
            Some(_) => None,
        };
        // Only the KMS-facing server: `run_until_stopped` then stops the ops server itself.
        // Stopping both races its `select!`, which may drop the main server before it has told
        // its workers, leaving them serving kept-alive connections. Non-graceful: the workers
        // drop their connections, as a dead process would.
        running.handles.0.stop(false).await;
        tokio::task::spawn_blocking(move || running.thread.join())
            .await
            .unwrap()
            .unwrap();
        // The server reports "stopped" once its workers are told; they drop their connections
        // a moment later. The canary is one of them.
        let Some(mut canary) = canary else {
            return;
        };
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buffer = [0u8; 512];
            while let Ok(n) = canary.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the proxy's worker kept its connections open after stop"
        );
    }

    /// A kept-alive HTTPS connection that a proxy worker has served once.
    async fn canary(&self) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert_der().clone()).ok()?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .await
            .ok()?;
        let name = rustls::pki_types::ServerName::try_from(HOST).ok()?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .ok()?;
        tls.write_all(b"GET /canary HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut buffer = [0u8; 512];
        let n = tls.read(&mut buffer).await.ok()?;
        (n > 0).then_some(tls)
    }

    /// Starts the proxy again on the same port (retrying while the port is being released).
    pub async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch(self.port).await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline && e.contains("cannot listen") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("proxy did not restart on port {}: {e}", self.port),
            }
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            // The command is sent at once; the proxy thread winds down on its own.
            drop(running.handles.0.stop(false));
        }
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    listener.local_addr().unwrap().port()
}

/// A TCP server on 127.0.0.1 that accepts connections and never says a word.
pub async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

/// Polls `probe` every 20 ms until it returns `Some` or `within` passes.
pub async fn poll<T>(within: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Encrypt+decrypt usage.
pub const BOTH: KeyUsage = KeyUsage::BOTH;
/// Encrypt only.
pub const ENCRYPT_ONLY: KeyUsage = KeyUsage {
    encrypt: true,
    decrypt: false,
};

/// The token of hardware instances in tests: a second token (not the EKM's) in this process's
/// SoftHSM directory, initialised once; its user PIN in a file.
pub fn hardware_token() -> kms_connector::config::HardwareInstanceConfig {
    const HW_LABEL: &str = "kms-connector-hardware";
    const HW_PIN: &str = "kms-connector-hardware-pin";
    static PIN_FILE: OnceLock<PathBuf> = OnceLock::new();
    let pin_file = PIN_FILE
        .get_or_init(|| {
            isolated_env();
            ekm::pkcs11::init_token(
                Path::new(MODULE),
                HW_LABEL,
                &SecretString::from(SO_PIN),
                &SecretString::from(HW_PIN),
            )
            .expect("init the hardware token");
            let dir = std::env::temp_dir().join(format!("kms-hw-pin-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("pin");
            std::fs::write(&file, HW_PIN).unwrap();
            file
        })
        .clone();
    kms_connector::config::HardwareInstanceConfig {
        module: PathBuf::from(MODULE),
        token_label: Some(HW_LABEL.to_owned()),
        token_serial: None,
        pin: SecretRef {
            file: Some(pin_file),
            env: None,
        },
        vendor: "softhsm".to_owned(),
        workers: 2,
        queue_capacity: 64,
        timeout_ms: 5000,
    }
}

/// A hardware backend on [`hardware_token`].
pub fn hardware_backend() -> kms_connector::backend::hardware::HardwareBackend {
    static BACKEND: OnceLock<kms_connector::backend::hardware::HardwareBackend> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            kms_connector::backend::hardware::HardwareBackend::open(&hardware_token())
                .expect("open the hardware token")
        })
        .clone()
}
