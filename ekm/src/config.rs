//! The EKM configuration: one TOML file, every key overridable by an environment variable
//! `EKM__<SECTION>__<KEY>` (for example `EKM__HSM__TOKEN_LABEL=prod`, `EKM__SERVER__LISTEN=…`).
//! The PIN is never in the file: `pin_file` (a path) or `pin_env` (the name of a variable).
//!
//! ```toml
//! [hsm]
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "ekm"          # or token_serial
//! pin_file = "/run/secrets/ekm-pin"
//! vendor = "softhsm"           # softhsm | nshield | luna | cloudhsm | generic
//! workers = 2
//! queue_capacity = 1024
//! state_ttl_ms = 5000
//!
//! [server]
//! listen = "0.0.0.0:8443"
//! liveness_listen = "0.0.0.0:8080"   # "" switches the plain-HTTP liveness port off
//! tls_cert_file = "ekm.pem"
//! tls_key_file = "ekm-key.pem"
//! client_ca_file = "proxy-ca.pem"  # mTLS; omit only with allow_unauthenticated_clients = true
//! allowed_client_names = ["xki-proxy"]  # CN or DNS SAN; empty: anyone the CA certified
//!
//! [server.limits]                  # listener::Limits; every key optional
//! max_connections = 4096
//! body_timeout_ms = 10000
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::ciphertext::{AadFormat, Limits};
use crate::error::{Error, Result};
use crate::pkcs11::{DeletionWindow, Pkcs11Config, TokenSelector, VendorProfile};
use crate::server::ServerSettings;

/// Prefix of the environment overrides.
pub const ENV_PREFIX: &str = "EKM__";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The token.
    pub hsm: HsmSection,
    /// The HTTPS server.
    #[serde(default)]
    pub server: ServerSection,
    /// Key lifecycle.
    #[serde(default)]
    pub keys: KeysSection,
    /// Deep health.
    #[serde(default)]
    pub health: HealthSection,
}

/// `[hsm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// PKCS#11 module path.
    #[serde(default = "default_module")]
    pub module: PathBuf,
    /// Token label (this or `token_serial`).
    pub token_label: Option<String>,
    /// Token serial number.
    pub token_serial: Option<String>,
    /// File holding the user PIN (trailing newline ignored).
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Vendor profile name.
    #[serde(default = "default_vendor")]
    pub vendor: String,
    /// HSM worker threads (default: CPU count).
    pub workers: Option<usize>,
    /// Queue capacity in front of the workers.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Longest a key's state is served from memory, ms.
    #[serde(default = "default_state_ttl")]
    pub state_ttl_ms: u64,
    /// AAD construction of new ciphertexts.
    #[serde(default)]
    pub aad_format: AadFormat,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// API listen address.
    pub listen: SocketAddr,
    /// Liveness listen address (plain HTTP); an empty string disables it.
    #[serde(deserialize_with = "optional_address")]
    pub liveness_listen: Option<SocketAddr>,
    /// PEM certificate chain of the server.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the server.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA(s) that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    /// Client certificate names (CN or DNS SAN) allowed to call the EKM, e.g. `["xki-proxy"]`;
    /// empty: any certificate from `client_ca_file` (a warning at start).
    pub allowed_client_names: Vec<String>,
    /// Must be set to serve without client authentication.
    pub allow_unauthenticated_clients: bool,
    /// Default crypto deadline, ms.
    pub default_deadline_ms: u64,
    /// Default admin deadline, ms.
    pub admin_deadline_ms: u64,
    /// Cap on the caller's deadline, ms.
    pub max_deadline_ms: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// Keep-alive idle timeout, s.
    pub keep_alive_secs: u64,
    /// `[server.limits]`: connections, head and body deadlines, header bytes, HTTP/2 streams.
    pub limits: listener::LimitsConfig,
}

/// `""` → `None`, otherwise a socket address.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

impl Default for ServerSection {
    fn default() -> Self {
        let s = ServerSettings::default();
        Self {
            listen: s.listen,
            liveness_listen: s.liveness_listen,
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            allowed_client_names: Vec::new(),
            allow_unauthenticated_clients: false,
            default_deadline_ms: s.default_deadline.as_millis() as u64,
            admin_deadline_ms: s.admin_deadline.as_millis() as u64,
            max_deadline_ms: s.max_deadline.as_millis() as u64,
            max_body_bytes: s.max_body_bytes,
            http_workers: s.http_workers,
            keep_alive_secs: s.keep_alive.as_secs(),
            limits: listener::LimitsConfig::default(),
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// Default deletion window, days.
    pub default_pending_window_days: u32,
    /// Shortest deletion window, days.
    pub min_pending_window_days: u32,
    /// Longest deletion window, days.
    pub max_pending_window_days: u32,
    /// Input limits.
    pub limits: Limits,
}

impl Default for KeysSection {
    fn default() -> Self {
        let w = DeletionWindow::default();
        Self {
            default_pending_window_days: w.default_days,
            min_pending_window_days: w.min_days,
            max_pending_window_days: w.max_days,
            limits: Limits::default(),
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Probe interval, s.
    pub interval_secs: u64,
    /// Probe latency above which the HSM is DEGRADED, ms.
    pub degraded_latency_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval_secs: 15,
            degraded_latency_ms: 100,
        }
    }
}

fn default_module() -> PathBuf {
    PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
}
fn default_vendor() -> String {
    "softhsm".into()
}
fn default_queue() -> usize {
    1024
}
fn default_state_ttl() -> u64 {
    5000
}

impl Config {
    /// Reads `path` (optional: everything may come from the environment) and applies the
    /// process environment's overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?,
            None => String::new(),
        };
        Self::parse(&text, std::env::vars())
    }

    /// Parses TOML text with the given environment overrides.
    pub fn parse(text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| Error::Config(format!("TOML: {e}")))?;
        schemas::config::overlay_env(&mut value, ENV_PREFIX.trim_end_matches('_'), env)
            .map_err(|e| Error::Config(e.to_string()))?;
        let config: Self = value
            .try_into()
            .map_err(|e| Error::Config(format!("{e}")))?;
        config.server_settings()?;
        Ok(config)
    }

    /// The PKCS#11 manager configuration (reads the PIN).
    pub fn pkcs11(&self) -> Result<Pkcs11Config> {
        let hsm = &self.hsm;
        let token = match (&hsm.token_label, &hsm.token_serial) {
            (Some(label), None) => TokenSelector::Label(label.clone()),
            (None, Some(serial)) => TokenSelector::Serial(serial.clone()),
            _ => {
                return Err(Error::Config(
                    "set exactly one of hsm.token_label and hsm.token_serial".into(),
                ));
            }
        };
        let mut config = Pkcs11Config::new(hsm.module.clone(), token, self.pin()?);
        if let Some(workers) = hsm.workers {
            config.workers = workers;
        }
        config.queue_capacity = hsm.queue_capacity;
        config.profile = VendorProfile::by_name(&hsm.vendor)?;
        config.state_ttl = Duration::from_millis(hsm.state_ttl_ms);
        config.aad_format = hsm.aad_format;
        config.limits = self.keys.limits;
        config.deletion_window = DeletionWindow {
            default_days: self.keys.default_pending_window_days,
            min_days: self.keys.min_pending_window_days,
            max_days: self.keys.max_pending_window_days,
        };
        config.health_interval = Duration::from_secs(self.health.interval_secs);
        config.degraded_latency = Duration::from_millis(self.health.degraded_latency_ms);
        config.check()?;
        Ok(config)
    }

    /// The user PIN, from `pin_file` or `pin_env`.
    pub fn pin(&self) -> Result<SecretString> {
        secret_from(
            self.hsm.pin_file.as_deref(),
            self.hsm.pin_env.as_deref(),
            "hsm.pin",
        )
    }

    /// The server settings.
    pub fn server_settings(&self) -> Result<ServerSettings> {
        let s = &self.server;
        let limits = s
            .limits
            .resolve(listener::Limits::default())
            .map_err(Error::Config)?;
        Ok(ServerSettings {
            listen: s.listen,
            liveness_listen: s.liveness_listen,
            default_deadline: Duration::from_millis(s.default_deadline_ms),
            admin_deadline: Duration::from_millis(s.admin_deadline_ms),
            max_deadline: Duration::from_millis(s.max_deadline_ms),
            max_body_bytes: s.max_body_bytes,
            http_workers: s.http_workers,
            keep_alive: Duration::from_secs(s.keep_alive_secs),
            limits,
        })
    }

    /// The TLS configuration; mTLS unless explicitly waived.
    pub fn tls(&self) -> Result<rustls::ServerConfig> {
        let s = &self.server;
        let read = |path: &Option<PathBuf>, what: &str| -> Result<Vec<u8>> {
            let path = path
                .as_ref()
                .ok_or_else(|| Error::Config(format!("server.{what} is required")))?;
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
        };
        let ca = match (&s.client_ca_file, s.allow_unauthenticated_clients) {
            (Some(_), _) => Some(read(&s.client_ca_file, "client_ca_file")?),
            (None, true) => None,
            (None, false) => {
                return Err(Error::Config(
                    "server.client_ca_file is required (mTLS); set \
                     server.allow_unauthenticated_clients = true to serve without it"
                        .into(),
                ));
            }
        };
        let cert = read(&s.tls_cert_file, "tls_cert_file")?;
        let key = zeroize::Zeroizing::new(read(&s.tls_key_file, "tls_key_file")?);
        if ca.is_some() && s.allowed_client_names.is_empty() {
            tracing::warn!(
                "server.allowed_client_names is empty: any certificate issued by the client CA \
                 may call the EKM"
            );
        }
        crate::server::tls::server_config(&cert, &key, ca.as_deref(), &s.allowed_client_names)
    }
}

/// Reads a secret from a file (trailing newline stripped) or from a named variable.
pub fn secret_from(file: Option<&Path>, env: Option<&str>, what: &str) -> Result<SecretString> {
    if file.is_some() == env.is_some() {
        return Err(Error::Config(format!(
            "set exactly one of {what}_file and {what}_env"
        )));
    }
    let reference = schemas::config::SecretRef {
        file: file.map(Path::to_path_buf),
        env: env.map(str::to_owned),
    };
    let secret = reference
        .resolve()
        .map_err(|e| Error::Config(format!("{what}: {e}")))?;
    Ok(SecretString::from(secret.expose().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_and_env_overrides() {
        let text = r#"
            [hsm]
            token_label = "from-file"
            pin_env = "SOME_PIN"
            workers = 4
            [server]
            listen = "127.0.0.1:9443"
        "#;
        let c = Config::parse(
            text,
            env(&[
                ("EKM__HSM__TOKEN_LABEL", "from-env"),
                ("EKM__HSM__WORKERS", "3"),
                ("EKM__SERVER__ALLOW_UNAUTHENTICATED_CLIENTS", "true"),
                ("EKM__KEYS__LIMITS__MAX_AAD_BYTES", "1024"),
                ("OTHER", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.hsm.token_label.as_deref(), Some("from-env"));
        assert_eq!(c.hsm.workers, Some(3));
        assert!(c.server.allow_unauthenticated_clients);
        assert_eq!(c.server.listen.port(), 9443);
        assert_eq!(c.keys.limits.max_aad_bytes, 1024);
        assert_eq!(c.keys.min_pending_window_days, 7);
    }

    #[test]
    fn liveness_port_can_be_switched_off() {
        let hsm = "[hsm]\ntoken_label = \"t\"\n";
        let off = format!("{hsm}[server]\nliveness_listen = \"\"\n");
        assert_eq!(
            Config::parse(&off, env(&[]))
                .unwrap()
                .server
                .liveness_listen,
            None
        );
        let c =
            Config::parse(hsm, env(&[("EKM__SERVER__LIVENESS_LISTEN", "127.0.0.1:9")])).unwrap();
        assert_eq!(
            c.server.liveness_listen,
            Some("127.0.0.1:9".parse().unwrap())
        );
        let c = Config::parse(hsm, env(&[])).unwrap();
        assert!(c.server.liveness_listen.is_some(), "on by default");
        let bad = format!("{hsm}[server]\nliveness_listen = \"nope\"\n");
        assert!(Config::parse(&bad, env(&[])).is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_plain_pins() {
        let err = Config::parse("[hsm]\ntoken_label = \"t\"\npin = \"1234\"\n", env(&[]));
        assert!(err.is_err(), "a PIN in the file is not a recognised key");
        let c = Config::parse("[hsm]\ntoken_label = \"t\"\n", env(&[])).unwrap();
        assert!(matches!(c.pkcs11(), Err(Error::Config(_))), "no PIN source");
        let c = Config::parse("[hsm]\n", env(&[])).unwrap();
        assert!(matches!(c.pkcs11(), Err(Error::Config(_))), "no token");
    }

    #[test]
    fn pin_from_file_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "123456\n").unwrap();
        let text = format!("[hsm]\ntoken_label = \"t\"\npin_file = {:?}\n", path);
        let c = Config::parse(&text, env(&[])).unwrap();
        let pin = c.pin().unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pin), "123456");
        assert!(!format!("{:?}", c.pkcs11().unwrap()).contains("123456"));
    }

    #[test]
    fn mtls_required_unless_waived() {
        let c = Config::parse("[hsm]\ntoken_label = \"t\"\n", env(&[])).unwrap();
        let err = c.tls().unwrap_err().to_string();
        assert!(err.contains("client_ca_file"), "{err}");
        let waived = Config::parse(
            "[hsm]\ntoken_label = \"t\"\n[server]\nallow_unauthenticated_clients = true\n",
            env(&[]),
        )
        .unwrap();
        let err = waived.tls().unwrap_err().to_string();
        assert!(err.contains("tls_cert_file"), "{err}");
    }
}
