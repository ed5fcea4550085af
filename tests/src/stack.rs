//! The HYOK stack of one test: dev PKI, ekm on a fresh SoftHSM token, xki-proxy with a remote
//! EKM backend, kms-connector. Configs are the shapes `scripts/quickstart.sh` writes, on free
//! loopback ports, in the test's temp dir.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::kms::KmsClient;
use crate::service::{Service, binary, free_port, run};

/// Region of every test stack.
pub const REGION: &str = "cn-hangzhou";
/// Account of every test stack.
pub const ACCOUNT_ID: &str = "1234567890123456";
/// How long a server may take to answer its ready endpoint (debug builds, 2 cores, tests in
/// parallel).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
}

/// A random lower-case alphanumeric token of `n` characters (ids, secrets).
pub fn random_token(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    random_bytes(n)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A fresh `kst-hzz…` instance id.
pub fn instance_id() -> String {
    format!("kst-hzz{}", random_token(18))
}

/// Writes a file readable by its owner only: several hold secrets, and the servers warn about
/// shared root key files.
fn write(path: &Path, contents: impl AsRef<[u8]>) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_ref()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The dev PKI (`hyok-dev-pki init --out <dir>`).
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Writes the PKI into `dir`.
    pub fn init(dir: &Path) -> Self {
        let out = dir.to_str().expect("UTF-8 path");
        run(&binary("hyok-dev-pki"), &["init", "--out", out], &[]);
        Self {
            dir: dir.to_owned(),
        }
    }

    /// A file of the PKI (`ca.pem`, `ekm.key`, …).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A running ekm on its own SoftHSM token.
#[derive(Debug)]
pub struct Ekm {
    /// The process.
    pub service: Service,
    /// EKM API (HTTPS, mTLS) port.
    pub port: u16,
    live_port: u16,
    config: PathBuf,
    softhsm_conf: PathBuf,
    dir: PathBuf,
}

impl Ekm {
    /// Initialises a token under `dir/softhsm` and starts `ekm serve`.
    pub async fn start(dir: &Path, pki: &Pki) -> Self {
        let tokens = dir.join("softhsm/tokens");
        std::fs::create_dir_all(&tokens).expect("creating the token directory");
        let softhsm_conf = dir.join("softhsm/softhsm2.conf");
        write(
            &softhsm_conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        );
        write(&dir.join("ekm-user-pin"), random_token(32));
        write(&dir.join("ekm-so-pin"), random_token(32));
        let (port, live_port) = (free_port(), free_port());
        let config = dir.join("ekm.toml");
        write(
            &config,
            format!(
                r#"[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "e2e"
pin_file = "{dir}/ekm-user-pin"
vendor = "softhsm"

[server]
listen = "127.0.0.1:{port}"
liveness_listen = "127.0.0.1:{live_port}"
tls_cert_file = "{ekm_pem}"
tls_key_file = "{ekm_key}"
client_ca_file = "{ca}"
allowed_client_names = ["xki-proxy"]
"#,
                dir = dir.display(),
                ekm_pem = pki.file("ekm.pem").display(),
                ekm_key = pki.file("ekm.key").display(),
                ca = pki.file("ca.pem").display(),
            ),
        );
        let ekm = binary("ekm");
        let config_arg = config.to_str().expect("UTF-8 path");
        let so_pin = dir.join("ekm-so-pin");
        let env = [("SOFTHSM2_CONF", softhsm_conf.as_path())];
        run(
            &ekm,
            &[
                "--config",
                config_arg,
                "init-token",
                "--so-pin-file",
                so_pin.to_str().expect("UTF-8 path"),
            ],
            &env,
        );
        let mut ekm = Self {
            service: Service::spawn("ekm", &ekm, &["--config", config_arg, "serve"], &env, dir),
            port,
            live_port,
            config: config.clone(),
            softhsm_conf: softhsm_conf.clone(),
            dir: dir.to_owned(),
        };
        ekm.wait_ready().await;
        ekm
    }

    /// Starts `ekm serve` again on the same token, config and ports (after a kill).
    pub async fn restart(&mut self) {
        let config = self.config.to_str().expect("UTF-8 path");
        let env = [("SOFTHSM2_CONF", self.softhsm_conf.as_path())];
        self.service = Service::spawn(
            "ekm",
            &binary("ekm"),
            &["--config", config, "serve"],
            &env,
            &self.dir,
        );
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        self.service
            .wait_http(
                &format!("http://127.0.0.1:{}/ready", self.live_port),
                START_TIMEOUT,
            )
            .await;
    }
}

/// An xki-proxy configuration (remote EKM backend) and the connection settings its
/// credential gives a KMS external instance.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `xki-proxy.toml`.
    pub config: PathBuf,
    /// KMS-facing HTTPS port.
    pub port: u16,
    /// Ops (ready, admin) port.
    pub ops_port: u16,
    /// The JSON `xki-proxy credentials new --out` wrote.
    pub settings_file: PathBuf,
    dir: PathBuf,
}

impl Proxy {
    /// Mints a credential and writes the configuration (nothing starts).
    pub fn configure(dir: &Path, pki: &Pki, ekm_port: u16) -> Self {
        let (port, ops_port) = (free_port(), free_port());
        let settings_file = dir.join("xki-connection.json");
        let secret_file = dir.join("xki-secret");
        let admin_token = dir.join("proxy-admin-token");
        write(&admin_token, random_token(48));
        let endpoint = format!("https://localhost:{port}");
        let server_cert = pki.file("xki-proxy.pem");
        run(
            &binary("xki-proxy"),
            &[
                "credentials",
                "new",
                "--endpoint",
                &endpoint,
                "--prefix",
                "",
                "--server-cert",
                server_cert.to_str().expect("UTF-8 path"),
                "--secret-out",
                secret_file.to_str().expect("UTF-8 path"),
                "--out",
                settings_file.to_str().expect("UTF-8 path"),
            ],
            &[],
        );
        let settings: Value = serde_json::from_slice(
            &std::fs::read(&settings_file).expect("reading the connection settings"),
        )
        .expect("the connection settings are JSON");
        let access_key_id = settings["XksProxyAuthenticationCredential"]["AccessKeyId"]
            .as_str()
            .expect("AccessKeyId in the connection settings");
        let config = dir.join("xki-proxy.toml");
        write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{port}"
cert_file = "{cert}"
key_file = "{key}"

[limits]
# KMS Encrypt takes up to 6 KB of plaintext.
max_data_bytes = 6144

[ops]
listen = "127.0.0.1:{ops_port}"
admin_token = {{ file = "{admin_token}" }}

[backend]
kind = "remote"
url = "https://localhost:{ekm_port}"
ca_file = "{ca}"
cert_file = "{client_cert}"
key_file = "{client_key}"

[[key_store]]
prefix = ""
regions = ["{REGION}"]
credentials = [{{ access_key_id = "{access_key_id}", secret = {{ file = "{secret}" }} }}]
"#,
                cert = server_cert.display(),
                key = pki.file("xki-proxy.key").display(),
                admin_token = admin_token.display(),
                ca = pki.file("ca.pem").display(),
                client_cert = pki.file("xki-proxy-client.pem").display(),
                client_key = pki.file("xki-proxy-client.key").display(),
                secret = secret_file.display(),
            ),
        );
        Self {
            config,
            port,
            ops_port,
            settings_file,
            dir: dir.to_owned(),
        }
    }

    /// Starts `xki-proxy serve` (again: same config, same ports) and waits for `/ready`.
    pub async fn start(&self) -> Service {
        let config = self.config.to_str().expect("UTF-8 path");
        let mut service = Service::spawn(
            "xki-proxy",
            &binary("xki-proxy"),
            &["serve", "--config", config],
            &[],
            &self.dir,
        );
        service
            .wait_http(
                &format!("http://127.0.0.1:{}/ready", self.ops_port),
                START_TIMEOUT,
            )
            .await;
        service
    }

    /// `xki-proxy keys --config … --json <args>`: the admin answer.
    pub fn keys(&self, args: &[&str]) -> Value {
        let mut all = vec![
            "keys",
            "--config",
            self.config.to_str().expect("UTF-8 path"),
            "--json",
        ];
        all.extend_from_slice(args);
        let out = run(&binary("xki-proxy"), &all, &[]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("keys {args:?} printed {out:?}: {e}"))
    }
}

/// The external instance of a connector.
#[derive(Debug, Clone)]
pub struct ExternalInstance {
    /// `settings_file` (the credentials JSON).
    pub settings_file: PathBuf,
    /// `ca_file` (the dev CA).
    pub ca_file: PathBuf,
    /// `health_interval_secs`.
    pub health_interval_secs: u64,
    /// `timeout_ms`.
    pub timeout_ms: u64,
}

/// A further access key of a connector: its principal and identity policy.
#[derive(Debug, Clone)]
pub struct ExtraAccessKey {
    /// `acs:ram::<account>:user/<name>`.
    pub principal: String,
    /// The identity policy (JSON), if any.
    pub policy: Option<String>,
}

/// A kms-connector configuration with one software instance (the default) and optionally one
/// external instance.
#[derive(Debug, Clone)]
pub struct Connector {
    /// `kms-connector.toml`.
    pub config: PathBuf,
    /// OpenAPI HTTP port.
    pub port: u16,
    /// The store URL.
    pub database_url: String,
    /// The root key file (32 raw bytes).
    pub root_key_file: PathBuf,
    /// The software instance (default).
    pub software_instance: String,
    /// The external instance, if configured.
    pub external_instance: Option<String>,
    access_key_id: String,
    secret: String,
    extra_keys: Vec<(String, String)>,
    dir: PathBuf,
}

impl Connector {
    /// Writes the configuration; `database_url` defaults to `sqlite://<dir>/kms-connector.db`.
    pub fn configure(
        dir: &Path,
        database_url: Option<String>,
        external: Option<&ExternalInstance>,
    ) -> Self {
        Self::configure_with(dir, database_url, external, &[])
    }

    /// [`Self::configure`] with more access keys (see [`Self::extra_client`]).
    pub fn configure_with(
        dir: &Path,
        database_url: Option<String>,
        external: Option<&ExternalInstance>,
        extra: &[ExtraAccessKey],
    ) -> Self {
        let port = free_port();
        let database_url = database_url
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("kms-connector.db").display()));
        let root_key_file = dir.join("root.key");
        write(&root_key_file, random_bytes(32));
        let secret_file = dir.join("kms-access-key-secret");
        let secret = random_token(40);
        write(&secret_file, &secret);
        let access_key_id = format!("LTAI5t{}", random_token(18));
        let software_instance = instance_id();
        let mut text = format!(
            r#"default_instance = "{software_instance}"

[server]
listen = "127.0.0.1:{port}"

[kms]
region = "{REGION}"
account_id = "{ACCOUNT_ID}"

[database]
url = "{database_url}"

[root_key]
file = "{root_key}"

[[access_keys]]
access_key_id = "{access_key_id}"
secret = {{ file = "{secret_file}" }}
principal = "acs:ram::{ACCOUNT_ID}:root"

[[instances]]
id = "{software_instance}"
kind = "software"
name = "software-keys"
"#,
            root_key = root_key_file.display(),
            secret_file = secret_file.display(),
        );
        let mut extra_keys = Vec::new();
        for (i, key) in extra.iter().enumerate() {
            let id = format!("LTAI5t{}{i}", random_token(17));
            let secret = random_token(40);
            let file = dir.join(format!("kms-access-key-secret-{i}"));
            write(&file, &secret);
            text.push_str(&format!(
                "\n[[access_keys]]\naccess_key_id = \"{id}\"\nsecret = {{ file = \"{}\" }}\nprincipal = \"{}\"\n",
                file.display(),
                key.principal
            ));
            if let Some(policy) = &key.policy {
                text.push_str(&format!("policy = '{policy}'\n"));
            }
            extra_keys.push((id, secret));
        }
        let external_instance = external.map(|external| {
            let id = instance_id();
            text.push_str(&format!(
                r#"
[[instances]]
id = "{id}"
kind = "external"
name = "hyok-xki"
[instances.external]
settings_file = "{settings}"
ca_file = "{ca}"
health_interval_secs = {interval}
timeout_ms = {timeout}
"#,
                settings = external.settings_file.display(),
                ca = external.ca_file.display(),
                interval = external.health_interval_secs,
                timeout = external.timeout_ms,
            ));
            id
        });
        let config = dir.join("kms-connector.toml");
        write(&config, text);
        Self {
            config,
            port,
            database_url,
            root_key_file,
            software_instance,
            external_instance,
            access_key_id,
            secret,
            extra_keys,
            dir: dir.to_owned(),
        }
    }

    /// Starts `kms-connector serve` and waits until its listener answers.
    pub async fn start(&self) -> Service {
        let config = self.config.to_str().expect("UTF-8 path");
        let mut service = Service::spawn(
            "kms-connector",
            &binary("kms-connector"),
            &["--config", config, "serve"],
            &[],
            &self.dir,
        );
        service
            .wait_http(&format!("http://127.0.0.1:{}/", self.port), START_TIMEOUT)
            .await;
        service
    }

    /// `kms-connector sign-url <action> Name=Value…`: a presigned URL made by the CLI.
    pub fn sign_url(&self, action: &str, params: &[(&str, &str)]) -> String {
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec![
            "--config",
            self.config.to_str().expect("UTF-8 path"),
            "sign-url",
            action,
        ];
        args.extend(pairs.iter().map(String::as_str));
        run(&binary("kms-connector"), &args, &[]).trim().to_owned()
    }

    /// A client with the configured AccessKey.
    pub fn client(&self) -> KmsClient {
        KmsClient::new(self.port, &self.access_key_id, &self.secret)
    }

    /// A client with the `i`-th extra access key of [`Self::configure_with`].
    pub fn extra_client(&self, i: usize) -> KmsClient {
        let (id, secret) = &self.extra_keys[i];
        KmsClient::new(self.port, id, secret)
    }
}
