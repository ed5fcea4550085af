//! Proxy configuration: one TOML file, every key overridable by `XKI_PROXY__<SECTION>__<KEY>`
//! environment variables; secrets only by reference (`*_env` or `*_file`), never inline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use schemas::config::SecretRef;
use serde::Deserialize;

use crate::policy::Rule;

/// Environment prefix of every override.
pub const ENV_PREFIX: &str = "XKI_PROXY";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The KMS-facing HTTPS listener.
    pub server: ServerConfig,
    /// The plain-HTTP operations listener (`/ping`, `/ready`, `/metrics`).
    #[serde(default)]
    pub ops: OpsConfig,
    /// The admin API's own listener (`/admin/*`), off without a token.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// What the health response says about this proxy.
    #[serde(default)]
    pub health: HealthConfig,
    /// Key metadata cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Where keys live.
    pub backend: BackendConfig,
    /// The logical key stores (URI prefixes) this proxy serves.
    #[serde(rename = "key_store", default)]
    pub key_stores: Vec<KeyStoreConfig>,
}

/// The KMS-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM, PKCS#8 or SEC1/PKCS#1).
    pub key_file: PathBuf,
    /// Optional mutual TLS.
    #[serde(default)]
    pub mtls: Option<MtlsConfig>,
    /// Worker threads (default: one per core).
    #[serde(default)]
    pub workers: Option<usize>,
    /// Keep-alive idle timeout; longer than a cloud load balancer's 350 s.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// `[server.limits]`: connections, TLS handshake, head and body deadlines, header bytes,
    /// HTTP/2 streams (shared by the ops and admin listeners).
    #[serde(default)]
    pub limits: listener::LimitsConfig,
}

impl ServerConfig {
    /// The listener limits: `[server.limits]` over the workspace defaults.
    pub fn listener_limits(&self) -> Result<listener::Limits, ConfigError> {
        self.limits
            .resolve(listener::Limits::default())
            .map_err(ConfigError::Invalid)
    }
}

fn default_keep_alive_secs() -> u64 {
    400
}

/// Mutual TLS on the KMS-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// CA certificates (PEM) client certificates must chain to.
    pub ca_files: Vec<PathBuf>,
    /// Accepted client names: a client passes when its CN or one of its DNS SANs is listed
    /// (e.g. `cks.kms.<region>.amazonaws.com`). Must not be empty unless
    /// `allow_any_client_name` says so.
    #[serde(default)]
    pub allowed_names: Vec<String>,
    /// Accept any certificate from the CAs (an empty `allowed_names` is refused otherwise: a
    /// public CA certifies anybody).
    #[serde(default)]
    pub allow_any_client_name: bool,
    /// Send precise TLS alerts instead of an opaque `handshake_failure` (debugging only).
    #[serde(default)]
    pub precise_alerts: bool,
}

/// The operations listener: liveness, readiness and metrics for load balancers and monitoring.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Listen address (plain HTTP; loopback by default).
    #[serde(default = "default_ops_listen")]
    pub listen: SocketAddr,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            listen: default_ops_listen(),
        }
    }
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9180))
}

/// The admin API's listener (the `xki-proxy keys …` commands: create, enable, disable keys;
/// reload). It creates and disables keys, so it is loopback-only unless it has TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address; a non-loopback one needs `[admin.tls]`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token (env or file). Without it the admin API is off and nothing listens.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// HTTPS instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<AdminTlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token: None,
            tls: None,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9181))
}

/// The admin listener's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

/// Request limits.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest plaintext/ciphertext in bytes (≥ 4300).
    #[serde(default = "default_max_data")]
    pub max_data_bytes: usize,
    /// Largest AAD in bytes (8192..=65535).
    #[serde(default = "default_max_aad")]
    pub max_aad_bytes: usize,
    /// Per-request deadline for the backend (queue + HSM), in milliseconds. KMS gives up after
    /// 250 ms; answering a clean retryable error before that is the point.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Allowed clock skew of signed requests, in seconds.
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Backend calls in flight at once. A request waits at most `admission_wait_ms` for a slot,
    /// then gets a retryable `ThrottlingException`: bursts queue briefly, sustained overload is
    /// shed instead of queueing into 503s.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Longest wait for a backend slot, in milliseconds (counted in `deadline_ms`).
    #[serde(default = "default_admission_wait")]
    pub admission_wait_ms: u64,
}

fn default_max_data() -> usize {
    schemas::xki::SPEC_MIN_DATA_BYTES
}
fn default_max_aad() -> usize {
    schemas::xki::SPEC_MIN_AAD_BYTES
}
fn default_deadline_ms() -> u64 {
    200
}
fn default_skew() -> u64 {
    300
}
fn default_in_flight() -> usize {
    // Enough to keep a few HSM workers (or a remote EKM) busy; beyond it queueing only adds
    // latency until the 200 ms deadline turns it into 503s.
    64
}
fn default_admission_wait() -> u64 {
    50
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_data_bytes: default_max_data(),
            max_aad_bytes: default_max_aad(),
            deadline_ms: default_deadline_ms(),
            max_clock_skew_secs: default_skew(),
            max_in_flight: default_in_flight(),
            admission_wait_ms: default_admission_wait(),
        }
    }
}

impl LimitsConfig {
    /// The protocol limits.
    pub fn xki(&self) -> schemas::xki::Limits {
        schemas::xki::Limits {
            max_data_bytes: self.max_data_bytes,
            max_aad_bytes: self.max_aad_bytes,
        }
    }

    /// The backend deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

/// Health response settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// `xksProxyFleetSize`: proxies behind the load balancer.
    #[serde(default = "one")]
    pub fleet_size: u32,
    /// How often the deep health is refreshed, in seconds (≤ 30).
    #[serde(default = "default_health_interval")]
    pub interval_secs: u64,
}

fn one() -> u32 {
    1
}
fn default_health_interval() -> u64 {
    15
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            fleet_size: 1,
            interval_secs: default_health_interval(),
        }
    }
}

/// Metadata cache settings.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Time a key's metadata is served from cache, in milliseconds. A key disabled through
    /// another proxy or directly at the EKM reports DISABLED in metadata within this bound.
    #[serde(default = "default_cache_ttl")]
    pub metadata_ttl_ms: u64,
}

fn default_cache_ttl() -> u64 {
    5_000
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            metadata_ttl_ms: default_cache_ttl(),
        }
    }
}

/// Where the proxy finds its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BackendConfig {
    /// A remote EKM over HTTPS with mutual TLS (the default deployment).
    Remote {
        /// Base URL, e.g. `https://ekm:9443`.
        url: String,
        /// CA (PEM) that issued the EKM's server certificate.
        ca_file: PathBuf,
        /// Client certificate (PEM) the proxy presents.
        cert_file: PathBuf,
        /// Its private key.
        key_file: PathBuf,
        /// Pooled idle connections per host.
        #[serde(default = "default_pool")]
        pool_max_idle: usize,
    },
    /// The EKM library in this process (one binary, small sites and benchmarks).
    InProcess {
        /// The EKM's own configuration file.
        ekm_config: PathBuf,
    },
}

fn default_pool() -> usize {
    64
}

/// One logical key store: a URI path prefix with its own credentials and rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStoreConfig {
    /// Path prefix before `/kms/xks/v1` (`""` or e.g. `/tenant-a`).
    #[serde(default)]
    pub prefix: String,
    /// SigV4 credentials; two or more at once for rotation.
    pub credentials: Vec<CredentialConfig>,
    /// Regions whose signatures are accepted.
    pub regions: Vec<String>,
    /// External key ids this store may use; `["*"]` (the default) = every key in the EKM.
    #[serde(default = "all_keys")]
    pub keys: Vec<String>,
    /// Requests per second for this prefix (token bucket); none = unlimited.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// Secondary authorization rules (health is always exempt); none = trust KMS.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Host names requests must be signed for (the SigV4 `host`, port ignored, ASCII
    /// case-insensitive), e.g. `["xki.example.com"]`; empty: any.
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn all_keys() -> Vec<String> {
    vec!["*".into()]
}

/// A SigV4 credential.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// AccessKeyId, `[A-Z2-7]{20,30}`.
    pub access_key_id: String,
    /// Where the secret is.
    pub secret: SecretRef,
}

/// Token-bucket quota.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst size (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML or field error.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A secret cannot be read.
    #[error("secret: {0}")]
    Secret(String),
}

impl From<schemas::config::SecretError> for ConfigError {
    fn from(e: schemas::config::SecretError) -> Self {
        Self::Secret(e.0)
    }
}

impl Config {
    /// Reads `path` and applies `XKI_PROXY__…` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, std::env::vars(), base)
    }

    /// Parses TOML text with the given environment; relative paths resolve against `base`.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        schemas::config::overlay_env(&mut value, ENV_PREFIX, env)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        config.resolve_paths(base);
        config.check()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.cert_file);
        fix(&mut self.server.key_file);
        if let Some(m) = &mut self.server.mtls {
            m.ca_files.iter_mut().for_each(fix);
        }
        if let Some(tls) = &mut self.admin.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
        }
        match &mut self.backend {
            BackendConfig::Remote {
                ca_file,
                cert_file,
                key_file,
                ..
            } => {
                fix(ca_file);
                fix(cert_file);
                fix(key_file);
            }
            BackendConfig::InProcess { ekm_config } => fix(ekm_config),
        }
        let secret_files = self
            .key_stores
            .iter_mut()
            .flat_map(|s| {
                s.credentials
                    .iter_mut()
                    .filter_map(|c| c.secret.file.as_mut())
            })
            .chain(self.admin.token.iter_mut().filter_map(|t| t.file.as_mut()));
        secret_files.for_each(fix);
    }

    /// Semantic checks the types cannot express.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.server.listener_limits()?;
        self.limits
            .xki()
            .checked()
            .map_err(|m| ConfigError::Invalid(m.into()))?;
        if self.limits.admission_wait_ms >= self.limits.deadline_ms {
            return invalid("limits.admission_wait_ms must be below limits.deadline_ms".into());
        }
        if self.limits.max_in_flight == 0 {
            return invalid("limits.max_in_flight must be positive".into());
        }
        if self.limits.deadline_ms == 0 {
            return invalid("limits.deadline_ms must be positive".into());
        }
        if let BackendConfig::Remote { url, .. } = &self.backend {
            if !url.starts_with("https://") {
                return invalid(format!(
                    "backend.url {url:?} must be https:// (the EKM API is mTLS only)"
                ));
            }
        }
        if let Some(mtls) = &self.server.mtls {
            if mtls.allowed_names.is_empty() && !mtls.allow_any_client_name {
                return invalid(
                    "server.mtls.allowed_names is empty: name the client certificates to accept \
                     (KMS presents cks.kms.<region>.amazonaws.com), or set \
                     server.mtls.allow_any_client_name = true to accept any certificate the CAs \
                     issued"
                        .into(),
                );
            }
        }
        if self.admin.token.is_some()
            && self.admin.tls.is_none()
            && !self.admin.listen.ip().is_loopback()
        {
            return invalid(format!(
                "admin.listen {} is not a loopback address: the admin API creates and disables \
                 keys, so off loopback it needs [admin.tls]",
                self.admin.listen
            ));
        }
        if self.health.fleet_size == 0 {
            return invalid("health.fleet_size must be at least 1".into());
        }
        if !(1..=30).contains(&self.health.interval_secs) {
            return invalid("health.interval_secs must be 1 to 30".into());
        }
        if self.key_stores.is_empty() {
            return invalid("at least one [[key_store]] is required".into());
        }
        let mut prefixes = std::collections::HashSet::new();
        for store in &self.key_stores {
            crate::tenancy::check_prefix(&store.prefix)
                .map_err(|m| ConfigError::Invalid(m.into()))?;
            if !prefixes.insert(store.prefix.as_str()) {
                return invalid(format!("key store prefix {:?} appears twice", store.prefix));
            }
            if store.credentials.is_empty() {
                return invalid(format!("key store {:?} has no credentials", store.prefix));
            }
            if store.regions.is_empty() {
                return invalid(format!("key store {:?} has no regions", store.prefix));
            }
            for c in &store.credentials {
                crate::credentials::check_access_key_id(&c.access_key_id)
                    .map_err(|m| ConfigError::Invalid(format!("{}: {m}", c.access_key_id)))?;
            }
            if let Some(q) = store.quota {
                if q.per_second == 0 || q.burst == Some(0) {
                    return invalid(format!(
                        "key store {:?}: quota must be positive",
                        store.prefix
                    ));
                }
            }
            if let Some(bad) = store.hosts.iter().find(|h| !is_host_name(h)) {
                return invalid(format!(
                    "key store {:?}: hosts entry {bad:?} is not a host name (no port, no scheme)",
                    store.prefix
                ));
            }
            for k in &store.keys {
                if k != "*" && schemas::xki::ExternalKeyId::parse(k).is_err() {
                    return invalid(format!(
                        "key store {:?}: {k:?} is not an external key id",
                        store.prefix
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A DNS name or IP literal as it appears in a `Host` header without port.
fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_backend(backend: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n\
             [backend]\n{backend}\n\
             [[key_store]]\nprefix = \"\"\nregions = [\"r\"]\n\
             credentials = [{{ access_key_id = \"AKIDEXAMPLEEXAMPLEAB\", secret = {{ env = \"X\" }} }}]\n"
        );
        Config::from_toml(&text, std::iter::empty(), Path::new("/etc/xki"))
    }

    #[test]
    fn the_remote_ekm_is_https_only() {
        let files = "ca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"c.key\"";
        let ok = with_backend(&format!(
            "kind = \"remote\"\nurl = \"https://ekm:9443\"\n{files}"
        ));
        assert!(ok.is_ok(), "{:?}", ok.err());
        let plain = with_backend(&format!(
            "kind = \"remote\"\nurl = \"http://ekm:9443\"\n{files}"
        ));
        assert!(
            plain
                .as_ref()
                .is_err_and(|e| e.to_string().contains("https")),
            "{:?}",
            plain.err()
        );
    }

    fn with_sections(sections: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n\
             {sections}\n\
             [backend]\nkind = \"in-process\"\nekm_config = \"ekm.toml\"\n\
             [[key_store]]\nprefix = \"\"\nregions = [\"r\"]\n\
             credentials = [{{ access_key_id = \"AKIDEXAMPLEEXAMPLEAB\", secret = {{ env = \"X\" }} }}]\n"
        );
        Config::from_toml(&text, std::iter::empty(), Path::new("/etc/xki"))
    }

    #[test]
    fn mtls_without_allowed_names_needs_an_explicit_yes() {
        let empty = with_sections("[server.mtls]\nca_files = [\"ca.pem\"]\n");
        assert!(
            empty
                .as_ref()
                .is_err_and(|e| e.to_string().contains("allow_any_client_name")),
            "{:?}",
            empty.err()
        );
        let explicit =
            with_sections("[server.mtls]\nca_files = [\"ca.pem\"]\nallow_any_client_name = true\n");
        assert!(explicit.is_ok(), "{:?}", explicit.err());
        let named = with_sections(
            "[server.mtls]\nca_files = [\"ca.pem\"]\nallowed_names = [\"cks.kms.r.amazonaws.com\"]\n",
        );
        assert!(named.is_ok(), "{:?}", named.err());
    }

    #[test]
    fn a_plain_admin_listener_stays_on_loopback() {
        let token = "token = { env = \"T\" }";
        for listen in ["127.0.0.1:9181", "[::1]:9181"] {
            let ok = with_sections(&format!("[admin]\nlisten = \"{listen}\"\n{token}\n"));
            assert!(ok.is_ok(), "{listen}: {:?}", ok.err());
        }
        let open = with_sections(&format!("[admin]\nlisten = \"0.0.0.0:9181\"\n{token}\n"));
        assert!(
            open.as_ref()
                .is_err_and(|e| e.to_string().contains("admin.tls")),
            "{:?}",
            open.err()
        );
        let with_tls = with_sections(&format!(
            "[admin]\nlisten = \"0.0.0.0:9181\"\n{token}\n\
             [admin.tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\n"
        ));
        assert!(with_tls.is_ok(), "{:?}", with_tls.err());
        // Without a token nothing listens, wherever it would.
        assert!(with_sections("[admin]\nlisten = \"0.0.0.0:9181\"\n").is_ok());
        // The old place of the token is gone, loudly.
        assert!(with_sections(&format!("[ops]\nadmin_{token}\n")).is_err());
    }

    #[test]
    fn store_hosts_are_host_names() {
        let store = |hosts: &str| {
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\n\
                 [backend]\nkind = \"in-process\"\nekm_config = \"ekm.toml\"\n\
                 [[key_store]]\nprefix = \"\"\nregions = [\"r\"]\nhosts = {hosts}\n\
                 credentials = [{{ access_key_id = \"AKIDEXAMPLEEXAMPLEAB\", secret = {{ env = \"X\" }} }}]\n"
            );
            Config::from_toml(&text, std::iter::empty(), Path::new("/etc/xki"))
        };
        assert!(store("[\"xki.example.com\", \"10.0.0.1\"]").is_ok());
        for bad in ["[\"xki.example.com:443\"]", "[\"https://xki\"]", "[\"\"]"] {
            assert!(store(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listener_limits_are_a_server_section() {
        let c = with_sections("[server.limits]\nmax_connections = 10\nbody_timeout_ms = 500\n")
            .unwrap();
        let limits = c.server.listener_limits().unwrap();
        assert_eq!(limits.max_connections, 10);
        assert_eq!(limits.body_timeout, std::time::Duration::from_millis(500));
        assert!(with_sections("[server.limits]\nmax_connections = 0\n").is_err());
    }
}
