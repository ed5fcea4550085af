//! The OpenAPI test harness: the real `Application` on 127.0.0.1 port 0 (its own thread and
//! actix System, as the binary runs it), SQLite in a temp dir, a software instance with a root
//! key file, AccessKeys for four principals, a clock the deletion sweeper reads that tests can
//! move, and a client signing with `schemas::acs::sign_acs3` (as the Tea SDK: parameters in the
//! query) or `sign_rpc` (as the RPC SDK: parameters in a form body, or the query for GET).
#![allow(
    dead_code,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kms_connector::app::{AppHandle, AppOptions, Application};
use kms_connector::config::Config;
use kms_connector::instances::BackendOverride;
use kms_connector::store::UnixMillis;
use schemas::acs::{Acs3Request, Credential, RpcRequest, encode_parameters, sign_acs3, sign_rpc};
use serde_json::Value;
use time::OffsetDateTime;

pub const ACCOUNT: &str = "1540355698848";
pub const REGION: &str = "cn-hangzhou";
/// The software instance every test app serves (and its default instance).
pub const SOFTWARE: &str = "kst-hzz68d1fd85software01";
/// A second instance whose backend a test may replace (fault injection).
pub const SPARE: &str = "kst-hzz68d1fd85spareinst1";
pub const SECRET_PREFIX: &str = "test-secret-value-of-";

/// Who signs a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// `acs:ram::ACCOUNT:root`.
    Root,
    /// `acs:ram::ACCOUNT:user/app` (the seeds' "user").
    App,
    /// `acs:ram::ACCOUNT:user/admin` (the seeds' "administrator").
    Admin,
    /// `acs:ram::999999999:root`, another account.
    Stranger,
}

impl Who {
    pub const ALL: [Who; 4] = [Who::Root, Who::App, Who::Admin, Who::Stranger];

    pub fn access_key_id(self) -> &'static str {
        match self {
            Who::Root => "LTAI5tRootAccessKey01",
            Who::App => "LTAI5tAppUserKey0001",
            Who::Admin => "LTAI5tAdminUserKey01",
            Who::Stranger => "LTAI5tStrangerKey001",
        }
    }

    pub fn principal(self) -> String {
        match self {
            Who::Root => format!("acs:ram::{ACCOUNT}:root"),
            Who::App => format!("acs:ram::{ACCOUNT}:user/app"),
            Who::Admin => format!("acs:ram::{ACCOUNT}:user/admin"),
            Who::Stranger => "acs:ram::999999999:root".to_owned(),
        }
    }

    pub fn secret(self) -> String {
        format!("{SECRET_PREFIX}{}", self.access_key_id())
    }
}

/// What a test app looks like beyond the defaults.
#[derive(Default)]
pub struct Setup {
    /// Requests per second per account (default 1000).
    pub qps: Option<u32>,
    /// Extra TOML appended to the configuration (more `[[instances]]`).
    pub extra_toml: String,
    /// Backends replacing configured ones.
    pub backends: BTreeMap<String, BackendOverride>,
    /// Serve HTTPS too.
    pub tls: bool,
    /// Files to write into the app's directory before it starts (name, contents).
    pub files: Vec<(String, String)>,
    /// The clock request timestamps are checked against (default: the system clock).
    pub request_clock: Option<kms_connector::api::RequestClock>,
    /// More lines of the `[kms]` section.
    pub kms_toml: String,
    /// More access keys: (access key id, principal, identity policy); their secrets are
    /// `SECRET_PREFIX` + id (see [`TestApp::client_for`]).
    pub access_keys: Vec<(String, String, Option<String>)>,
}

/// A running application.
pub struct TestApp {
    pub port: u16,
    pub tls_port: Option<u16>,
    pub handle: AppHandle,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub ca_pem: Option<String>,
    /// Added to the system clock by the deletion sweeper, in seconds.
    pub clock_offset: Arc<AtomicI64>,
    http: reqwest::Client,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn config_text(setup: &Setup, tls: Option<(&Path, &Path)>) -> String {
    let mut text = format!(
        "default_instance = \"{SOFTWARE}\"\n\n[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n"
    );
    if let Some((cert, key)) = tls {
        text += &format!(
            "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        );
    }
    text += &format!(
        "\n[kms]\nregion = \"{REGION}\"\naccount_id = \"{ACCOUNT}\"\nqps = {}\n{}\n\n[database]\nurl = \"kms.db\"\n\n[root_key]\nfile = \"root.key\"\n",
        setup.qps.unwrap_or(1000),
        setup.kms_toml
    );
    for who in Who::ALL {
        text += &format!(
            "\n[[access_keys]]\naccess_key_id = \"{}\"\nsecret = {{ file = \"secrets/{}\" }}\nprincipal = \"{}\"\n",
            who.access_key_id(),
            who.access_key_id(),
            who.principal()
        );
    }
    for (id, principal, policy) in &setup.access_keys {
        text += &format!(
            "\n[[access_keys]]\naccess_key_id = \"{id}\"\nsecret = {{ file = \"secrets/{id}\" }}\nprincipal = \"{principal}\"\n"
        );
        if let Some(policy) = policy {
            text += &format!("policy = {}\n", toml::Value::String(policy.clone()));
        }
    }
    text += &format!(
        "\n[[instances]]\nid = \"{SOFTWARE}\"\nkind = \"software\"\nname = \"software\"\n\n[[instances]]\nid = \"{SPARE}\"\nkind = \"software\"\nname = \"spare\"\n"
    );
    text + &setup.extra_toml
}

impl TestApp {
    /// The default app.
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    /// Starts an app; returns once its listeners are bound.
    pub async fn start_with(mut setup: Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kms-api-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("root.key"), schemas::b64::encode([7u8; 32])).unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        for who in Who::ALL {
            std::fs::write(
                dir.path().join("secrets").join(who.access_key_id()),
                who.secret() + "\n",
            )
            .unwrap();
        }
        for (id, _, _) in &setup.access_keys {
            std::fs::write(
                dir.path().join("secrets").join(id),
                format!("{SECRET_PREFIX}{id}\n"),
            )
            .unwrap();
        }
        for (name, contents) in &setup.files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let mut ca_pem = None;
        let tls_files = if setup.tls {
            let ca = certs::Authority::new("kms-connector test CA").unwrap();
            let leaf = ca
                .issue_server(
                    "localhost",
                    &["localhost"],
                    &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                )
                .unwrap();
            std::fs::write(dir.path().join("server.pem"), &leaf.cert_pem).unwrap();
            std::fs::write(dir.path().join("server.key"), &leaf.key_pem).unwrap();
            ca_pem = Some(ca.cert_pem().to_owned());
            Some((PathBuf::from("server.pem"), PathBuf::from("server.key")))
        } else {
            None
        };
        let text = config_text(
            &setup,
            tls_files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        );
        let config_path = dir.path().join("kms-connector.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::from_toml(&text, std::iter::empty(), dir.path()).unwrap();

        let clock_offset = Arc::new(AtomicI64::new(0));
        let offset = clock_offset.clone();
        let options = AppOptions {
            backends: std::mem::take(&mut setup.backends),
            clock: Some(Arc::new(move || {
                UnixMillis::now().plus_secs(offset.load(Ordering::SeqCst))
            })),
            deletion_sweep_interval: Some(Duration::from_millis(50)),
            request_clock: setup.request_clock.take(),
            audit_purge_interval: Some(Duration::from_millis(50)),
        };
        let (port, tls_port, handle) = spawn(config, options);
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(pem) = &ca_pem {
            http =
                http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
        }
        Self {
            port,
            tls_port,
            handle,
            dir,
            config_path,
            ca_pem,
            clock_offset,
            http: http.build().unwrap(),
        }
    }

    /// A client signing as `who` with ACS3-HMAC-SHA256.
    pub fn client(&self, who: Who) -> Client {
        Client {
            http: self.http.clone(),
            base: format!("http://127.0.0.1:{}", self.port),
            host: format!("127.0.0.1:{}", self.port),
            credential: Credential::new(who.access_key_id(), who.secret()),
            signing: Signing::Acs3,
        }
    }

    /// A client signing with one of `Setup::access_keys`.
    pub fn client_for(&self, access_key_id: &str) -> Client {
        let mut client = self.root();
        client.credential =
            Credential::new(access_key_id, format!("{SECRET_PREFIX}{access_key_id}"));
        client
    }

    /// An unsigned request.
    pub async fn raw(&self, method: &str, target: &str) -> Reply {
        let mut client = self.root();
        client.credential = Credential::new("unused", "unused");
        let request = Prepared {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        client.send(&request).await
    }

    /// A second application on the same configuration and database (another replica).
    pub async fn replica(&self) -> TestApp {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let config = Config::from_toml(&text, std::iter::empty(), self.dir.path()).unwrap();
        let (port, tls_port, handle) = spawn(config, AppOptions::default());
        let dir = tempfile::Builder::new()
            .prefix("kms-api-replica-")
            .tempdir()
            .unwrap();
        TestApp {
            port,
            tls_port,
            handle,
            config_path: self.config_path.clone(),
            dir,
            ca_pem: None,
            clock_offset: Arc::new(AtomicI64::new(0)),
            http: self.http.clone(),
        }
    }

    /// A root client.
    pub fn root(&self) -> Client {
        self.client(Who::Root)
    }

    /// Every file of the SQLite database (main file, WAL, shared memory), concatenated.
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("kms.db") {
                bytes.extend(std::fs::read(&path).unwrap());
            }
        }
        bytes
    }

    /// Moves the sweeper's clock and waits for two more sweeps (one may have begun before).
    pub async fn advance_clock_and_sweep(&self, secs: i64) {
        self.clock_offset.fetch_add(secs, Ordering::SeqCst);
        let mut sweeps = self.handle.sweeps();
        let start = *sweeps.borrow_and_update();
        while *sweeps.borrow_and_update() < start + 2 {
            tokio::time::timeout(Duration::from_secs(10), sweeps.changed())
                .await
                .expect("the sweeper runs")
                .unwrap();
        }
    }
}

/// Runs an application with a plain HTTP listener on its own thread and actix System (as the
/// binary does); returns once its listeners are bound.
pub fn spawn(config: Config, options: AppOptions) -> (u16, Option<u16>, AppHandle) {
    let (port, tls_port, handle) = spawn_listeners(config, options);
    (
        port.expect("the configuration has server.listen"),
        tls_port,
        handle,
    )
}

/// [`spawn`] for any listeners: the HTTP and the HTTPS port, each if configured.
pub fn spawn_listeners(
    config: Config,
    options: AppOptions,
) -> (Option<u16>, Option<u16>, AppHandle) {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kms-connector-under-test".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match Application::build_with(config, options).await {
                    Ok(app) => {
                        started_tx
                            .send(Ok((app.port(), app.tls_port(), app.handle())))
                            .unwrap();
                        app.run_until_stopped().await.unwrap();
                    }
                    Err(e) => started_tx.send(Err(e.to_string())).unwrap(),
                }
            });
        })
        .unwrap();
    started_rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("kms-connector did not start: {e}"))
}

/// Runs the real `kms-connector` binary with `--config config` and `args`: whether it
/// succeeded, its stdout and its stderr.
pub fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kms-connector"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KMS_CONNECTOR_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Which signature a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// ACS3-HMAC-SHA256, POST, parameters in the query.
    Acs3,
    /// HMAC-SHA1 RPC, POST, parameters in a form body.
    RpcPost,
    /// HMAC-SHA1 RPC, GET, parameters in the query.
    RpcGet,
}

/// A signed request ready to send (again, for replay tests).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub request_id_header: Option<String>,
}

impl Reply {
    /// Asserts success and returns the body.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.body);
        assert!(self.body["RequestId"].is_string(), "{}", self.body);
        self.body
    }

    /// The error code (empty on success).
    pub fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or_default()
    }

    /// Asserts an error with this code and HTTP status (also repeated in the body).
    #[track_caller]
    pub fn expect(&self, code: &str, status: u16) -> &Self {
        assert_eq!((self.code(), self.status), (code, status), "{}", self.body);
        assert_eq!(
            self.body["HttpStatus"].as_u64(),
            Some(u64::from(status)),
            "{}",
            self.body
        );
        self
    }

    /// The message of an error.
    pub fn message(&self) -> &str {
        self.body["Message"].as_str().unwrap_or_default()
    }
}

/// A signing client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    host: String,
    credential: Credential,
    pub signing: Signing,
}

impl Client {
    /// The same client with another signature.
    pub fn signing(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    /// The same client with another secret (wrong-secret tests).
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.credential = Credential::new(self.credential.access_key_id.clone(), secret);
        self
    }

    /// The same client with another AccessKey id.
    pub fn with_access_key(mut self, id: &str) -> Self {
        self.credential = Credential::new(id, self.credential.secret.clone());
        self
    }

    /// The same client against another HTTP port.
    pub fn at_port(mut self, port: u16) -> Self {
        self.base = format!("http://127.0.0.1:{port}");
        self.host = format!("127.0.0.1:{port}");
        self
    }

    /// The same client signing for another `host` (the request still goes to the server).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = host.to_owned();
        self
    }

    /// The same client over HTTPS.
    pub fn https(mut self, port: u16) -> Self {
        self.base = format!("https://localhost:{port}");
        self.host = format!("localhost:{port}");
        self
    }

    /// Signs a call at `now` with `nonce`.
    pub fn prepare(
        &self,
        action: &str,
        params: &[(&str, &str)],
        now: OffsetDateTime,
        nonce: &str,
    ) -> Prepared {
        self.prepare_version(action, schemas::kms::API_VERSION, params, now, nonce)
    }

    /// [`Self::prepare`] with another API version.
    pub fn prepare_version(
        &self,
        action: &str,
        version: &str,
        params: &[(&str, &str)],
        now: OffsetDateTime,
        nonce: &str,
    ) -> Prepared {
        match self.signing {
            Signing::Acs3 => {
                let signed = sign_acs3(
                    &self.credential,
                    &Acs3Request {
                        method: "POST",
                        host: &self.host,
                        path: "/",
                        action,
                        version,
                        query: params,
                        body: b"",
                        content_type: None,
                        nonce,
                    },
                    now,
                )
                .unwrap();
                Prepared {
                    method: "POST".into(),
                    target: signed.target,
                    headers: signed.headers,
                    body: Vec::new(),
                }
            }
            Signing::RpcPost | Signing::RpcGet => {
                let method = if self.signing == Signing::RpcGet {
                    "GET"
                } else {
                    "POST"
                };
                let mut all = params.to_vec();
                all.push(("Format", "JSON"));
                all.push(("RegionId", REGION));
                let pairs = sign_rpc(
                    &self.credential,
                    &RpcRequest {
                        method,
                        action,
                        version,
                        params: &all,
                        nonce,
                    },
                    now,
                )
                .unwrap();
                let encoded = encode_parameters(pairs);
                if method == "GET" {
                    Prepared {
                        method: method.into(),
                        target: format!("/?{encoded}"),
                        headers: Vec::new(),
                        body: Vec::new(),
                    }
                } else {
                    let headers = vec![(
                        "content-type".to_owned(),
                        "application/x-www-form-urlencoded".to_owned(),
                    )];
                    Prepared {
                        method: method.into(),
                        target: "/".to_owned(),
                        headers,
                        body: encoded.into_bytes(),
                    }
                }
            }
        }
    }

    /// Sends a prepared request.
    pub async fn send(&self, request: &Prepared) -> Reply {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
        let mut builder = self
            .http
            .request(method, format!("{}{}", self.base, request.target));
        // `host` too: a request signed for one replica may be sent to another.
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let response = builder.body(request.body.clone()).send().await.unwrap();
        let status = response.status().as_u16();
        let request_id_header = response
            .headers()
            .get("x-acs-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        Reply {
            status,
            body,
            request_id_header,
        }
    }

    /// Signs now with a fresh nonce and sends.
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Reply {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let request = self.prepare(action, params, OffsetDateTime::now_utc(), &nonce);
        self.send(&request).await
    }

    /// `call` that must succeed.
    pub async fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let reply = self.call(action, params).await;
        assert_eq!(reply.status, 200, "{action} failed: {}", reply.body);
        reply.body
    }
}

/// Makes the extra CreateKey parameters of one new key.
pub type ExtraParams =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<(String, String)>> + Send>> + Send + Sync>;

/// How the instance suite makes keys on one instance kind.
pub struct Fixture {
    /// The instance (`DKMSInstanceId`).
    pub instance_id: String,
    /// Extra CreateKey parameters for each new key (external: a freshly minted `ExternalKeyId`).
    pub extra: ExtraParams,
    /// Whether KMS shows the keys' versions (external keys: no).
    pub versions: bool,
}

impl Fixture {
    /// The software instance of every test app.
    pub fn software() -> Self {
        Self {
            instance_id: SOFTWARE.to_owned(),
            extra: Arc::new(|| Box::pin(async { Vec::new() })),
            versions: true,
        }
    }

    /// Creates a key on the fixture's instance with `params`; returns its `KeyMetadata`.
    pub async fn create(&self, client: &Client, params: &[(&str, &str)]) -> Value {
        let extra = (self.extra)().await;
        let mut all: Vec<(&str, &str)> = vec![("DKMSInstanceId", &self.instance_id)];
        all.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.extend_from_slice(params);
        let body = client.call("CreateKey", &all).await.ok();
        body["KeyMetadata"].clone()
    }

    /// Creates a key and returns its id.
    pub async fn key(&self, client: &Client) -> String {
        self.create(client, &[]).await["KeyId"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}
