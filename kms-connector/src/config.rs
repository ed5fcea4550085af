//! The kms-connector configuration: one TOML file, every key overridable by an environment
//! variable `KMS_CONNECTOR__<SECTION>__<KEY>` (`schemas::config::overlay_env`), relative paths
//! resolved against the file's directory, secrets only by reference (`{ file = … }` or
//! `{ env = … }`), never inline.
//!
//! ```toml
//! default_instance = "kst-hzz68d1fd85abcdefghij"
//!
//! [server]
//! listen = "127.0.0.1:8080"          # plain HTTP; leave it out to serve HTTPS only
//! [server.tls]                      # optional HTTPS listener
//! listen = "0.0.0.0:8443"
//! cert_file = "tls/server.pem"
//! key_file = "tls/server.key"
//! [server.limits]                   # optional; listener::LimitsConfig
//! max_connections = 4096
//! body_timeout_ms = 10000
//!
//! [kms]
//! region = "cn-hangzhou"
//! account_id = "1234567890123456"
//! max_clock_skew_secs = 900
//! qps = 1000
//!
//! [database]
//! url = "sqlite://kms-connector.db" # default: kms-connector.db next to this file
//!
//! [audit]
//! retention_days = 180              # older events are purged hourly; 0 keeps everything
//!
//! [root_key]                        # software instances
//! file = "root.key"                 # or env = "VAR", or token = { token_label, pin } (PKCS#11)
//! # previous = [{ file = "old-root.key" }]   # during a root key rotation
//!
//! [[access_keys]]
//! access_key_id = "LTAI5tExampleAccessKey"
//! secret = { file = "secrets/ak.secret" }
//! principal = "acs:ram::1234567890123456:root"
//!
//! [[access_keys]]                   # a crypto-only key
//! access_key_id = "LTAI5tExampleAppKey"
//! secret = { env = "APP_AK_SECRET" }
//! principal = "acs:ram::1234567890123456:user/app"
//! policy = '{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:Encrypt","kms:Decrypt"],"Resource":["acs:kms:cn-hangzhou:1234567890123456:key/*"]}]}'
//!
//! [[instances]]
//! id = "kst-hzz68d1fd85abcdefghij"
//! kind = "software"
//! name = "default"
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use schemas::config::SecretRef;
use serde::Deserialize;

use crate::api::auth::Principal;
use crate::api::policy::IdentityPolicy;
use crate::backend::external::ExternalInstanceConfig;
use crate::backend::software::RootKey;
use crate::ids::InstanceId;
use crate::store::InstanceKind;

/// Environment prefix of every override.
pub const ENV_PREFIX: &str = "KMS_CONNECTOR";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The instance `CreateKey` uses when the request names none (optional when there is one
    /// instance only).
    #[serde(default)]
    pub default_instance: Option<String>,
    /// Listeners.
    pub server: ServerConfig,
    /// Account, region and request limits.
    pub kms: KmsConfig,
    /// The metadata store.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The root key sealing software keys.
    #[serde(default)]
    pub root_key: Option<RootKeyConfig>,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditConfig,
    /// AccessKey pairs that may call the OpenAPI.
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
    /// The KMS instances this connector serves.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Directory relative paths were resolved against (the config file's).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP listen address (port 0 picks a free port); leave it out to serve HTTPS only.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Optional HTTPS listener.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// HTTP worker threads (default: one per core).
    #[serde(default)]
    pub workers: Option<usize>,
    /// `[server.limits]` (both listeners together): connections, TLS handshake, head and body
    /// deadlines, header bytes, HTTP/2 streams; see `listener::Limits`.
    #[serde(default)]
    pub limits: listener::LimitsConfig,
}

/// The HTTPS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

/// Account, region and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsConfig {
    /// Region of every key (`cn-hangzhou`); ARNs of other regions name no key.
    pub region: String,
    /// The account (UID) owning every key.
    pub account_id: String,
    /// Accepted distance between a request's timestamp and the clock, seconds (Alibaba: 900).
    #[serde(default = "default_skew")]
    pub max_clock_skew_secs: u64,
    /// Requests per second per account before `Rejected.Throttling`.
    #[serde(default = "default_qps")]
    pub qps: u32,
    /// How often keys whose deletion window ended are deleted, and keys whose rotation is due
    /// rotated, seconds.
    #[serde(default = "default_sweep")]
    pub deletion_sweep_secs: u64,
    /// Host names (optionally `:port`) this server answers to: an ACS3 request signed for
    /// another host is refused. Empty (the default): any host.
    #[serde(default)]
    pub expected_hosts: Vec<String>,
}

fn default_skew() -> u64 {
    900
}
fn default_qps() -> u32 {
    1000
}
fn default_sweep() -> u64 {
    60
}

/// The metadata store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` or `postgres://…`; default `sqlite://<config dir>/kms-connector.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// The longest one database call may take before the request fails with the retryable
    /// `ServiceUnavailableTemporary` (a locked or stalled database), milliseconds; 1–30000,
    /// default 1000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl DatabaseConfig {
    /// The store's options.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            operation_timeout: self.timeout_ms.map_or(
                crate::store::DEFAULT_OPERATION_TIMEOUT,
                std::time::Duration::from_millis,
            ),
            ..crate::store::StoreOptions::default()
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Events older than this many days are deleted (hourly); 0 keeps them forever.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: default_retention(),
        }
    }
}

fn default_retention() -> u32 {
    180
}

/// Where the root key of software instances is read from (exactly one of `file`, `env` and
/// `token`), and the previous root keys still needed to unseal rows sealed before a rotation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKeyConfig {
    /// File holding the root key.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Environment variable holding the root key.
    #[serde(default)]
    pub env: Option<String>,
    /// A PKCS#11 token holding the root key as a non-extractable AES-256 object (made by
    /// `kms-connector root-key create-in-token`): data keys are sealed and unsealed inside it.
    #[serde(default)]
    pub token: Option<HardwareInstanceConfig>,
    /// The root key object's label in `token` (default `kms-connector-root-key`).
    #[serde(default)]
    pub key_label: Option<String>,
    /// Root keys that sealed rows before the current one (until `kms-connector root-key
    /// rotate` has re-sealed every row under the current key).
    #[serde(default)]
    pub previous: Vec<RootKeySource>,
}

/// One root key's source (exactly one of `file`, `env` and `token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKeySource {
    /// File holding the root key.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Environment variable holding the root key.
    #[serde(default)]
    pub env: Option<String>,
    /// A PKCS#11 token holding the root key object.
    #[serde(default)]
    pub token: Option<HardwareInstanceConfig>,
    /// The root key object's label in `token` (default `kms-connector-root-key`).
    #[serde(default)]
    pub key_label: Option<String>,
}

/// The label of a root key object in a token when `key_label` is not given.
pub const DEFAULT_ROOT_KEY_LABEL: &str = "kms-connector-root-key";

impl RootKeyConfig {
    /// The current root key's source.
    pub fn current(&self) -> RootKeySource {
        RootKeySource {
            file: self.file.clone(),
            env: self.env.clone(),
            token: self.token.clone(),
            key_label: self.key_label.clone(),
        }
    }

    /// Every source with its name in errors, current first.
    fn sources(&self) -> Vec<(String, RootKeySource)> {
        std::iter::once(("root_key".to_owned(), self.current()))
            .chain(
                self.previous
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("root_key.previous[{i}]"), p.clone())),
            )
            .collect()
    }

    /// Reads the current and the previous root keys (a token source opens its token).
    pub fn load(&self) -> Result<(RootKey, Vec<RootKey>), ConfigError> {
        let mut keys = self
            .sources()
            .into_iter()
            .map(|(what, source)| source.load(&what))
            .collect::<Result<Vec<_>, _>>()?;
        let current = keys.remove(0);
        Ok((current, keys))
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.sources()
            .iter()
            .try_for_each(|(what, source)| source.check(what))
    }
}

impl RootKeySource {
    /// The object label of a token source.
    pub fn label(&self) -> &str {
        self.key_label.as_deref().unwrap_or(DEFAULT_ROOT_KEY_LABEL)
    }

    fn check(&self, what: &str) -> Result<(), ConfigError> {
        let given = [
            self.file.is_some(),
            self.env.is_some(),
            self.token.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(ConfigError::Invalid(format!(
                "{what}: give exactly one of file, env or token"
            )));
        }
        if self.key_label.is_some() && self.token.is_none() {
            return Err(ConfigError::Invalid(format!(
                "{what}: key_label goes with token"
            )));
        }
        let label = self.label();
        if label.is_empty() || label.len() > 64 || !label.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Invalid(format!(
                "{what}: key_label must be 1–64 printable ASCII characters"
            )));
        }
        Ok(())
    }

    /// Reads the key (a token source opens its token: blocking PKCS#11 calls).
    pub fn load(&self, what: &str) -> Result<RootKey, ConfigError> {
        self.check(what)?;
        let loaded = match (&self.file, &self.env, &self.token) {
            (Some(path), None, None) => RootKey::from_file(path),
            (None, Some(var), None) => RootKey::from_env(var),
            (None, None, Some(token)) => {
                let hsm = crate::backend::hardware::open_hsm(token, "kms-root-key")
                    .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
                return Ok(RootKey::in_token(
                    std::sync::Arc::new(hsm),
                    self.label(),
                    std::time::Duration::from_millis(token.timeout_ms),
                ));
            }
            _ => unreachable!("checked: exactly one source"),
        };
        loaded.map_err(|e| ConfigError::Secret(format!("{what}: {e}")))
    }
}

/// One AccessKey pair and the principal it authenticates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// The public id.
    pub access_key_id: String,
    /// The secret, by reference.
    pub secret: SecretRef,
    /// `acs:ram::<account>:root`, `acs:ram::<account>:user/<name>` or `…:role/<name>`.
    pub principal: String,
    /// Identity policy (RAM statement grammar, JSON) limiting what this key may do, inline.
    /// Without one, the account root may do everything and other principals everything but
    /// connect or disconnect instances; key policies apply on top either way.
    #[serde(default)]
    pub policy: Option<String>,
    /// The identity policy, from a file (instead of `policy`).
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
}

impl AccessKeyConfig {
    /// The identity policy text, when one is configured.
    pub fn policy_text(&self) -> Result<Option<String>, ConfigError> {
        match (&self.policy, &self.policy_file) {
            (Some(text), None) => Ok(Some(text.clone())),
            (None, Some(path)) => {
                std::fs::read_to_string(path)
                    .map(Some)
                    .map_err(|source| ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
            }
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
                "access_keys {}: give policy or policy_file, not both",
                self.access_key_id
            ))),
        }
    }
}

/// A KMS instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// `kst-…`.
    pub id: String,
    /// `software`, `hardware` or `external`.
    pub kind: String,
    /// Display name (`[A-Za-z0-9_/+=.@-]`).
    pub name: String,
    /// External instances: the XKI proxy connection.
    #[serde(default)]
    pub external: Option<ExternalInstanceConfig>,
    /// Hardware instances: their PKCS#11 token.
    #[serde(default)]
    pub hardware: Option<HardwareInstanceConfig>,
}

/// The PKCS#11 token of a hardware instance (its own, not the EKM's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareInstanceConfig {
    /// The PKCS#11 module (default: SoftHSM2).
    #[serde(default = "default_module")]
    pub module: PathBuf,
    /// The token's label (or give `token_serial`).
    #[serde(default)]
    pub token_label: Option<String>,
    /// The token's serial number.
    #[serde(default)]
    pub token_serial: Option<String>,
    /// The user PIN, by reference.
    pub pin: SecretRef,
    /// Vendor profile: `softhsm` (default), `nshield`, `luna`, `cloudhsm`, `generic`.
    #[serde(default = "default_vendor")]
    pub vendor: String,
    /// HSM worker threads (one session each; default 2).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Operations waiting at most before `Rejected.Throttling` (default 256).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Budget of one token operation, milliseconds (default 1000).
    #[serde(default = "default_hsm_timeout")]
    pub timeout_ms: u64,
}

fn default_module() -> PathBuf {
    PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
}
fn default_vendor() -> String {
    "softhsm".to_owned()
}
fn default_workers() -> usize {
    2
}
fn default_queue() -> usize {
    256
}
fn default_hsm_timeout() -> u64 {
    1000
}

impl HardwareInstanceConfig {
    fn fix_paths(&mut self, fix: impl Fn(&mut PathBuf) + Copy) {
        fix(&mut self.module);
        self.pin.file.iter_mut().for_each(fix);
    }
}

impl InstanceConfig {
    /// The parsed kind.
    pub fn kind(&self) -> Result<InstanceKind, ConfigError> {
        InstanceKind::parse(&self.kind).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "instance {}: kind must be software, hardware or external",
                self.id
            ))
        })
    }
}

/// Why a configuration cannot be used.
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
    /// TOML, field or semantic error.
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
    /// Reads `path` and applies `KMS_CONNECTOR__…` overrides from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
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
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.server.tls {
            fix(&mut tls.cert_file);
            fix(&mut tls.key_file);
        }
        if let Some(root) = self.root_key.as_mut() {
            root.file.iter_mut().for_each(fix);
            if let Some(token) = root.token.as_mut() {
                token.fix_paths(fix);
            }
            for previous in &mut root.previous {
                previous.file.iter_mut().for_each(fix);
                if let Some(token) = previous.token.as_mut() {
                    token.fix_paths(fix);
                }
            }
        }
        self.access_keys
            .iter_mut()
            .filter_map(|a| a.secret.file.as_mut())
            .for_each(fix);
        self.access_keys
            .iter_mut()
            .filter_map(|a| a.policy_file.as_mut())
            .for_each(fix);
        for hardware in self
            .instances
            .iter_mut()
            .filter_map(|i| i.hardware.as_mut())
        {
            hardware.fix_paths(fix);
        }
        self.database.url = Some(database_url(self.database.url.as_deref(), &base));
        self.base_dir = base;
    }

    /// The store URL (absolute SQLite path or PostgreSQL URL).
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| database_url(None, &self.base_dir))
    }

    /// The instance CreateKey uses without `DKMSInstanceId`: the configured one, or the only
    /// instance.
    pub fn default_instance_id(&self) -> Option<&str> {
        match (&self.default_instance, self.instances.as_slice()) {
            (Some(id), _) => Some(id.as_str()),
            (None, [only]) => Some(only.id.as_str()),
            _ => None,
        }
    }

    /// Semantic checks the types cannot express, with messages naming the key at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let kms = &self.kms;
        let region_ok = |r: &str| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !region_ok(&kms.region) {
            return invalid("kms.region must be a region id such as cn-hangzhou".into());
        }
        if kms.account_id.is_empty() || !kms.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return invalid("kms.account_id must be the account UID (digits)".into());
        }
        if !(1..=3600).contains(&kms.max_clock_skew_secs) {
            return invalid("kms.max_clock_skew_secs must be 1–3600".into());
        }
        if kms.qps == 0 {
            return invalid("kms.qps must be at least 1".into());
        }
        if kms.deletion_sweep_secs == 0 {
            return invalid("kms.deletion_sweep_secs must be positive".into());
        }
        if let Err(reason) = schemas::http::ExpectedHosts::new(&kms.expected_hosts) {
            return invalid(format!("kms.expected_hosts: {reason}"));
        }
        if self.audit.retention_days > 36_600 {
            return invalid("audit.retention_days must be 0 (forever) to 36600".into());
        }
        if let Some(ms) = self.database.timeout_ms
            && !(1..=30_000).contains(&ms)
        {
            return invalid("database.timeout_ms must be 1–30000".into());
        }
        if self.server.listen.is_none() && self.server.tls.is_none() {
            return invalid("server: give listen (HTTP), [server.tls] (HTTPS) or both".into());
        }
        self.check_access_keys()?;
        self.check_instances()?;
        if let Some(root) = &self.root_key {
            root.check()?;
        }
        Ok(())
    }

    fn check_access_keys(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for key in &self.access_keys {
            let id = &key.access_key_id;
            if id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            {
                return Err(ConfigError::Invalid(format!(
                    "access_keys: access_key_id {id:?} must be 1–128 of [A-Za-z0-9._]"
                )));
            }
            if !seen.insert(id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "access_keys: access_key_id {id} appears twice"
                )));
            }
            if key.secret.file.is_some() == key.secret.env.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "access_keys {id}: secret needs exactly one of file or env"
                )));
            }
            Principal::parse(&key.principal).map_err(|reason| {
                ConfigError::Invalid(format!("access_keys {id}: principal {reason}"))
            })?;
            if key.policy.is_some() && key.policy_file.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "access_keys {id}: give policy or policy_file, not both"
                )));
            }
            if let Some(text) = &key.policy {
                IdentityPolicy::parse(text).map_err(|reason| {
                    ConfigError::Invalid(format!("access_keys {id}: policy: {reason}"))
                })?;
            }
        }
        Ok(())
    }

    fn check_instances(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let mut seen = HashSet::new();
        let mut software = false;
        for instance in &self.instances {
            let id = &instance.id;
            if InstanceId::parse(id).is_err() {
                return invalid(format!(
                    "instances: id {id:?} is not kst-<3-letter region><18 [0-9a-z]>"
                ));
            }
            if !seen.insert(id.as_str()) {
                return invalid(format!("instances: id {id} appears twice"));
            }
            let name_ok = |n: &str| {
                (1..=128).contains(&n.len())
                    && n.bytes().all(|b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b'_' | b'/' | b'+' | b'=' | b'.' | b'@' | b'-')
                    })
            };
            if !name_ok(&instance.name) {
                return invalid(format!(
                    "instances {id}: name must be 1–128 of letters, digits and _/+=.@-"
                ));
            }
            let kind = instance.kind()?;
            if (kind == InstanceKind::Hardware) != instance.hardware.is_some() {
                return invalid(format!(
                    "instances {id}: a hardware instance needs an [instances.hardware] table, and only hardware instances take one"
                ));
            }
            if let Some(hardware) = &instance.hardware {
                if hardware.token_label.is_some() == hardware.token_serial.is_some() {
                    return invalid(format!(
                        "instances {id}: hardware: give exactly one of token_label or token_serial"
                    ));
                }
                if hardware.workers == 0 || hardware.queue_capacity == 0 || hardware.timeout_ms == 0
                {
                    return invalid(format!(
                        "instances {id}: hardware: workers, queue_capacity and timeout_ms must be positive"
                    ));
                }
            }
            match (kind, instance.external.is_some()) {
                (InstanceKind::Hardware, true) => {
                    return invalid(format!(
                        "instances {id}: only external instances take [instances.external]"
                    ));
                }
                (InstanceKind::Hardware, false) => {}
                (InstanceKind::External, false) => {
                    return invalid(format!(
                        "instances {id}: an external instance needs an [instances.external] table"
                    ));
                }
                (InstanceKind::Software, true) => {
                    return invalid(format!(
                        "instances {id}: only external instances take [instances.external]"
                    ));
                }
                (InstanceKind::Software, false) => software = true,
                (InstanceKind::External, true) => {}
            }
        }
        if software && self.root_key.is_none() {
            return invalid("software instances need a [root_key] (file, env or token)".into());
        }
        if let Some(default) = &self.default_instance
            && !seen.contains(default.as_str())
        {
            return invalid(format!(
                "default_instance {default} is not one of [[instances]]"
            ));
        }
        Ok(())
    }
}

/// `postgres://…` as is; SQLite paths made absolute against `base`; none → the default file.
fn database_url(url: Option<&str>, base: &Path) -> String {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return format!("sqlite://{}", base.join("kms-connector.db").display());
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return url.to_owned();
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = Path::new(path);
    let path = if path.is_relative() {
        base.join(path)
    } else {
        path.to_owned()
    };
    format!("sqlite://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [kms]
        region = "cn-hangzhou"
        account_id = "1234567890"
        [root_key]
        file = "root.key"
        [[access_keys]]
        access_key_id = "LTAI5tTest"
        secret = { env = "KMS_TEST_SECRET" }
        principal = "acs:ram::1234567890:root"
        [[instances]]
        id = "kst-hzz68d1fd85abcdefghij"
        kind = "software"
        name = "default"
    "#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::from_toml(text, env, Path::new("/etc/kms"))
    }

    #[test]
    fn minimal_config_defaults_and_paths() {
        let config = parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.kms.max_clock_skew_secs, 900);
        assert_eq!(config.kms.qps, 1000);
        assert_eq!(config.database_url(), "sqlite:///etc/kms/kms-connector.db");
        assert_eq!(
            config.root_key.as_ref().unwrap().file.as_ref().unwrap(),
            &PathBuf::from("/etc/kms/root.key")
        );
        assert_eq!(
            config.default_instance_id(),
            Some("kst-hzz68d1fd85abcdefghij")
        );
    }

    #[test]
    fn env_overrides() {
        let config = parse(
            MINIMAL,
            &[
                ("KMS_CONNECTOR__KMS__QPS", "7"),
                ("KMS_CONNECTOR__DATABASE__URL", "sqlite:data/x.db"),
                (
                    "KMS_CONNECTOR__DEFAULT_INSTANCE",
                    "kst-hzz68d1fd85abcdefghij",
                ),
            ],
        )
        .unwrap();
        assert_eq!(config.kms.qps, 7);
        assert_eq!(config.database_url(), "sqlite:///etc/kms/data/x.db");
        assert_eq!(
            config.default_instance_id(),
            Some("kst-hzz68d1fd85abcdefghij")
        );
        let pg = parse(
            MINIMAL,
            &[("KMS_CONNECTOR__DATABASE__URL", "postgres://u@h/db")],
        )
        .unwrap();
        assert_eq!(pg.database_url(), "postgres://u@h/db");
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            (
                "region = \"cn-hangzhou\"",
                "region = \"CN HZ\"",
                "kms.region",
            ),
            (
                "account_id = \"1234567890\"",
                "account_id = \"abc\"",
                "account_id",
            ),
            (
                "kind = \"software\"",
                "kind = \"hardware\"",
                "needs an [instances.hardware] table",
            ),
            (
                "kind = \"software\"",
                "kind = \"external\"",
                "[instances.external]",
            ),
            ("kind = \"software\"", "kind = \"cloud\"", "kind must be"),
            (
                "id = \"kst-hzz68d1fd85abcdefghij\"",
                "id = \"kst-1\"",
                "kst-",
            ),
            (
                "principal = \"acs:ram::1234567890:root\"",
                "principal = \"root\"",
                "principal",
            ),
            (
                "secret = { env = \"KMS_TEST_SECRET\" }",
                "secret = { }",
                "exactly one",
            ),
            ("[root_key]\n        file = \"root.key\"", "", "root_key"),
            (
                "file = \"root.key\"",
                "file = \"root.key\"\n        env = \"ROOT\"",
                "root_key: give exactly one of file, env or token",
            ),
            (
                "file = \"root.key\"",
                "file = \"root.key\"\n        key_label = \"root\"",
                "key_label goes with token",
            ),
            (
                "file = \"root.key\"",
                "file = \"root.key\"\n        previous = [{ file = \"a\", token = { token_label = \"t\", pin = { env = \"P\" } } }]",
                "root_key.previous[0]: give exactly one of file, env or token",
            ),
            ("[server]", "[server]\n        bogus = 1", "bogus"),
        ];
        for (from, to, expected) in cases {
            let text = MINIMAL.replace(from, to);
            let error = parse(&text, &[]).unwrap_err().to_string();
            assert!(error.contains(expected), "{to}: {error}");
        }
        let error = parse(
            MINIMAL,
            &[(
                "KMS_CONNECTOR__DEFAULT_INSTANCE",
                "kst-hzz68d1fd85zzzzzzzzzz",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("default_instance"), "{error}");
    }

    #[test]
    fn secrets_resolve_and_stay_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ak.secret"), "s3cr3t-value\n").unwrap();
        let reference = SecretRef {
            file: Some(dir.path().join("ak.secret")),
            env: None,
        };
        let secret = reference.resolve().unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        assert!(
            SecretRef {
                file: None,
                env: None
            }
            .resolve()
            .is_err()
        );
    }
}
