//! The conformance harness: the real proxy (`Application::build_with_backend`) in-process on
//! 127.0.0.1 port 0, with a TLS server certificate from a test CA and a real PKCS#11 key manager
//! on SoftHSM (`hsm`), and clients that talk to it over real TLS and sign like KMS or curl
//! (`client`, `raw`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod curl;
pub mod h2raw;
pub mod hsm;
pub mod raw;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use ekm::{CreateKey, KeyManager as _, KeyUsage};
use schemas::sigv4::Credential;
use xki_proxy::credentials::NewCredential;
use xki_proxy::{Application, Config, Reloader};

use client::Xki;
pub use hsm::{Backend, ctx, unique_key_id};

/// The proxy's DNS name (an FQDN, as KMS requires); clients resolve it to 127.0.0.1.
pub const HOST: &str = "xks.test.example";
/// The region every default key store accepts.
pub const REGION: &str = "us-east-1";
/// The configuration file in a proxy's directory.
pub const CONFIG_FILE: &str = "xki-proxy.toml";
/// The CN KMS presents in mTLS.
pub const KMS_CLIENT_NAME: &str = "cks.kms.us-east-1.amazonaws.com";

/// A fresh SigV4 credential in the shape KMS accepts.
pub fn new_credential() -> Credential {
    let c = NewCredential::generate();
    Credential::new(c.access_key_id, c.secret.as_str())
}

/// One `[[key_store]]`.
#[derive(Debug, Clone)]
pub struct Store {
    /// `""` or `/a/b`.
    pub prefix: String,
    /// Accepted credentials.
    pub credentials: Vec<Credential>,
    /// Accepted regions.
    pub regions: Vec<String>,
    /// Key allow-list (`*` = all).
    pub keys: Vec<String>,
    /// `(per_second, burst)`.
    pub quota: Option<(u32, u32)>,
    /// Raw TOML appended to the store (its `[[key_store.rule]]` tables).
    pub rules: String,
    /// Host names requests must be signed for (empty: any).
    pub hosts: Vec<String>,
}

impl Store {
    /// A store with one fresh credential, region [`REGION`], every key, no quota, no rules.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
            credentials: vec![new_credential()],
            regions: vec![REGION.into()],
            keys: vec!["*".into()],
            quota: None,
            rules: String::new(),
            hosts: Vec::new(),
        }
    }

    /// Adds secondary-authorization rules (TOML of `[[key_store.rule]]` tables).
    pub fn with_rules(mut self, rules: &str) -> Self {
        self.rules = rules.into();
        self
    }
}

/// Mutual TLS settings.
#[derive(Debug, Clone)]
pub struct Mtls {
    /// PEM of each accepted client CA.
    pub ca_pems: Vec<String>,
    /// Accepted client names (CN or DNS SAN); empty needs `allow_any_client_name`.
    pub allowed_names: Vec<String>,
}

/// Everything a test may vary in the proxy's configuration.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Key stores.
    pub stores: Vec<Store>,
    /// Lines of the `[limits]` table.
    pub limits: String,
    /// `[health] interval_secs`.
    pub health_interval_secs: u64,
    /// `[server.mtls]`.
    pub mtls: Option<Mtls>,
    /// Lines of the `[server.limits]` table.
    pub server_limits: String,
    /// Raw TOML of the `[admin]` table after `listen` and `token` (e.g. a `[admin.tls]`).
    pub admin: String,
    /// `[admin] listen`.
    pub admin_listen: String,
    /// `[server] keep_alive_secs` (default: the proxy's).
    pub keep_alive_secs: Option<u64>,
}

impl Setup {
    /// Two stores: the root prefix and `/tenant-a`. The backend deadline is 2 s instead of the
    /// default 200 ms: a debug build on a loaded 2-core box must not turn into
    /// DependencyTimeoutException in tests that are not about deadlines (`faults.rs` is).
    pub fn new() -> Self {
        Self {
            stores: vec![Store::new(""), Store::new("/tenant-a")],
            limits: "deadline_ms = 2000\n".into(),
            health_interval_secs: 15,
            mtls: None,
            server_limits: String::new(),
            admin: String::new(),
            admin_listen: "127.0.0.1:0".into(),
            keep_alive_secs: None,
        }
    }

    /// Only these stores.
    pub fn with_stores(stores: Vec<Store>) -> Self {
        Self {
            stores,
            ..Self::new()
        }
    }

    /// The store of `prefix`.
    pub fn store(&self, prefix: &str) -> &Store {
        self.stores
            .iter()
            .find(|s| s.prefix == prefix)
            .expect("no such store")
    }

    /// The store of `prefix`, mutable.
    pub fn store_mut(&mut self, prefix: &str) -> &mut Store {
        self.stores
            .iter_mut()
            .find(|s| s.prefix == prefix)
            .expect("no such store")
    }

    /// Writes the referenced files into `dir` and returns the TOML text.
    fn render(&self, dir: &std::path::Path) -> String {
        let mut t = String::new();
        t.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
        t.push_str("cert_file = \"server.pem\"\nkey_file = \"server.key\"\nworkers = 2\n");
        if let Some(secs) = self.keep_alive_secs {
            writeln!(t, "keep_alive_secs = {secs}").unwrap();
        }
        writeln!(t, "[server.limits]\n{}", self.server_limits).unwrap();
        if let Some(mtls) = &self.mtls {
            let mut files = Vec::new();
            for (i, pem) in mtls.ca_pems.iter().enumerate() {
                let name = format!("client-ca-{i}.pem");
                std::fs::write(dir.join(&name), pem).unwrap();
                files.push(name);
            }
            writeln!(
                t,
                "[server.mtls]\nca_files = {files:?}\nallowed_names = {:?}",
                mtls.allowed_names
            )
            .unwrap();
        }
        t.push_str("[ops]\nlisten = \"127.0.0.1:0\"\n");
        writeln!(
            t,
            "[admin]\nlisten = {:?}\ntoken = {{ file = \"admin.token\" }}\n{}",
            self.admin_listen, self.admin
        )
        .unwrap();
        writeln!(t, "[limits]\n{}", self.limits).unwrap();
        writeln!(t, "[health]\ninterval_secs = {}", self.health_interval_secs).unwrap();
        // Ignored by `build_with_backend` (the test injects the backend), required by the file.
        t.push_str("[backend]\nkind = \"in-process\"\nekm_config = \"unused-ekm.toml\"\n");
        for store in &self.stores {
            writeln!(
                t,
                "[[key_store]]\nprefix = {:?}\nregions = {:?}\nkeys = {:?}\nhosts = {:?}",
                store.prefix, store.regions, store.keys, store.hosts
            )
            .unwrap();
            if let Some((per_second, burst)) = store.quota {
                writeln!(
                    t,
                    "quota = {{ per_second = {per_second}, burst = {burst} }}"
                )
                .unwrap();
            }
            t.push_str("credentials = [\n");
            for c in &store.credentials {
                let file = format!("secret-{}", c.access_key_id);
                std::fs::write(dir.join(&file), c.secret.expose()).unwrap();
                writeln!(
                    t,
                    "  {{ access_key_id = {:?}, secret = {{ file = {file:?} }} }},",
                    c.access_key_id
                )
                .unwrap();
            }
            t.push_str("]\n");
            t.push_str(&store.rules);
            t.push('\n');
        }
        t
    }

    fn config(&self, dir: &std::path::Path) -> Config {
        self.try_config(dir)
            .unwrap_or_else(|e| panic!("test configuration refused: {e}"))
    }

    fn try_config(&self, dir: &std::path::Path) -> Result<Config, String> {
        let text = self.render(dir);
        Config::from_toml(&text, std::iter::empty(), dir).map_err(|e| format!("{e}\n{text}"))
    }

    /// Writes the configuration file the proxy reloads from (`/admin/reload`, SIGHUP).
    pub fn write_config(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join(CONFIG_FILE);
        std::fs::write(&path, self.render(dir)).unwrap();
        path
    }
}

impl Default for Setup {
    fn default() -> Self {
        Self::new()
    }
}

/// A running proxy. Dropping it stops both listeners.
pub struct Proxy {
    /// KMS-facing HTTPS port.
    pub port: u16,
    /// Plain-HTTP ops port.
    pub ops_port: u16,
    /// Admin API port.
    pub admin_port: u16,
    /// The backend the proxy holds.
    pub backend: Arc<Backend>,
    /// The CA that issued the server certificate (what clients trust).
    pub ca: certs::Authority,
    /// The configuration in force.
    pub setup: Setup,
    /// Bearer token of the admin API.
    pub admin_token: String,
    reloader: Reloader,
    handles: (ServerHandle, ServerHandle),
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("ops_port", &self.ops_port)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts the proxy on the process's PKCS#11 manager. Returns once both ports are bound.
    pub async fn start(setup: Setup) -> Self {
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4());
        Self::try_start(setup, &admin_token)
            .await
            .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
    }

    /// Starts the proxy in front of `serving` instead of the process's manager (a remote
    /// EKM, say); `backend` still reaches the process's token directly.
    pub async fn start_serving(setup: Setup, serving: Arc<dyn ekm::KeyManager>) -> Self {
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4());
        Self::launch(setup, &admin_token, Some(serving))
            .await
            .unwrap_or_else(|e| panic!("proxy did not start: {e}"))
    }

    /// Starts the proxy with `admin_token` in its token file; the start error, if any.
    pub async fn try_start(setup: Setup, admin_token: &str) -> Result<Self, String> {
        Self::launch(setup, admin_token, None).await
    }

    async fn launch(
        setup: Setup,
        admin_token: &str,
        serving: Option<Arc<dyn ekm::KeyManager>>,
    ) -> Result<Self, String> {
        let admin_token = admin_token.to_owned();
        let backend = Arc::new(Backend::new());
        let dir = tempfile::Builder::new()
            .prefix("xki-proxy-test-")
            .tempdir()
            .unwrap();
        let ca = certs::Authority::new("XKI proxy test CA").unwrap();
        let server = ca
            .issue_server(HOST, &[HOST], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("admin.token"), &admin_token).unwrap();
        let config = setup.try_config(dir.path())?;
        let config_path = setup.write_config(dir.path());

        // The proxy gets its own thread and actix System, like the binary's main; `build`
        // binds both listeners before it returns, so no waiting is needed afterwards.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let dyn_backend: Arc<dyn ekm::KeyManager> = serving.unwrap_or_else(|| backend.clone());
        std::thread::Builder::new()
            .name("xki-proxy-under-test".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    match Application::build_with_backend(config, Some(config_path), dyn_backend) {
                        Ok(app) => {
                            let ports = (app.port(), app.ops_port(), app.admin_port());
                            let ready = (ports, app.reloader(), app.handles());
                            started_tx.send(Ok(ready)).unwrap();
                            app.run_until_stopped().await.unwrap();
                        }
                        Err(e) => started_tx.send(Err(e.to_string())).unwrap(),
                    }
                });
            })
            .unwrap();
        let ((port, ops_port, admin_port), reloader, handles) = started_rx.recv().unwrap()?;
        Ok(Self {
            port,
            ops_port,
            admin_port: admin_port.expect("the admin API is on"),
            backend,
            ca,
            setup,
            admin_token,
            reloader,
            handles,
            dir,
        })
    }

    /// Starts the proxy with [`Setup::new`].
    pub async fn default() -> Self {
        Self::start(Setup::new()).await
    }

    /// Applies a new configuration to the running proxy (what SIGHUP does).
    pub fn apply(&mut self, setup: Setup) -> Result<(), xki_proxy::StartError> {
        let config = setup.config(self.dir.path());
        self.reloader.apply(&config)?;
        self.setup = setup;
        Ok(())
    }

    /// Overwrites a file of the configuration directory (e.g. `server.pem` before a reload).
    pub fn write_file(&self, name: &str, contents: &str) {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
    }

    /// A client for `prefix`, signing KMS-style with the store's first credential, over
    /// HTTP/1.1 with keep-alive.
    pub fn client(&self, prefix: &str) -> Xki {
        let credential = self.setup.store(prefix).credentials[0].clone();
        Xki::new(self, prefix, Some(credential))
    }

    /// A client for `prefix` that does not sign.
    pub fn unsigned(&self, prefix: &str) -> Xki {
        Xki::new(self, prefix, None)
    }

    /// Creates a key with the given usage directly in the EKM; returns its id.
    pub async fn create_key(&self, tag: &str, usage: KeyUsage) -> String {
        let id = unique_key_id(tag);
        self.backend
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
        id.as_str().to_owned()
    }

    /// Creates an encrypt+decrypt key.
    pub async fn key(&self, tag: &str) -> String {
        self.create_key(tag, KeyUsage::BOTH).await
    }

    /// `http://127.0.0.1:<ops>/<path>`.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    /// GET on the ops port: status and body.
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.ops_url(path)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `http://127.0.0.1:<admin>/<path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The configuration directory (where the test's files are).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// GET on the admin port, no token.
    pub async fn admin_get_path(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.admin_url(path)).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// POST on the admin API with a bearer token.
    pub async fn admin_post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().post(self.admin_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Disables (`"disable"`) or enables (`"enable"`) a key through the admin API.
    pub async fn admin_key_action(&self, key: &str, action: &str) {
        let token = self.admin_token.clone();
        let (status, body) = self
            .admin_post(&format!("/admin/keys/{key}/{action}"), Some(&token))
            .await;
        assert_eq!(status, 200, "admin {action} {key}: {body}");
    }

    /// The value of a Prometheus sample line starting with `prefix`, if present.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.ops_get("/metrics").await;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The stop command is sent at once; the proxy thread winds down on its own.
        drop(self.handles.0.stop(false));
        drop(self.handles.1.stop(false));
    }
}

/// Polls `check` every 20 ms until it returns true or `within` passes; returns the last answer.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
