//! Configuration of an external key instance: where its XKI proxy is, how to authenticate, what
//! to trust. [`ExternalInstanceConfig`] is what an operator writes (TOML or the JSON the store
//! keeps as the instance spec; it references secrets, it never holds them);
//! [`ExternalInstanceConfig::resolve`] reads the referenced files and variables and checks
//! everything once, into [`ExternalSettings`].
//!
//! Two shapes:
//! - explicit: `endpoint`, `path`, `access_key_id`, `secret = { file = … }` or `{ env = … }`,
//!   `certificate_sha256` and/or `ca_file`;
//! - `settings_file`: the JSON `xki-proxy credentials new` prints (`XksProxyUriEndpoint`,
//!   `XksProxyUriPath`, `XksProxyAuthenticationCredential`, `ServerCertificateSha256`,
//!   `Connectivity`), optionally with `ca_file`. A setting may come from the file or from this
//!   configuration, never from both.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
pub use schemas::config::SecretRef;
use schemas::sigv4::{Credential, Secret};
use serde::{Deserialize, Serialize};

/// Default interval of the background health check, seconds.
pub const DEFAULT_HEALTH_INTERVAL_SECS: u64 = 10;
/// Default budget of one XKI call, milliseconds (what KMS allows a proxy).
pub const DEFAULT_TIMEOUT_MS: u64 = 250;
const MAX_HEALTH_INTERVAL_SECS: u64 = 3600;
const MIN_TIMEOUT_MS: u64 = 10;
const MAX_PATH_CHARS: usize = 128;

/// How the connector reaches the proxy. Informational: logged, and kept for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connectivity {
    /// Over the internet.
    #[default]
    Public,
    /// Over a VPC endpoint service (private link).
    PrivateLink,
}

impl Connectivity {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::PrivateLink => "private-link",
        }
    }
}

/// Reads the proxy secret (a relative file against `base`) and checks that it is a usable
/// SigV4 secret: non-empty printable ASCII without spaces.
fn resolve_secret(reference: &SecretRef, base: &Path) -> Result<Secret, ConfigError> {
    let secret = reference
        .relative_to(base)
        .resolve()
        .map_err(|e| ConfigError::Secret(e.0))?;
    if secret.expose().is_empty() || secret.expose().bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(ConfigError::Secret(
            "the secret must be non-empty printable ASCII without spaces".into(),
        ));
    }
    Ok(secret)
}

/// What an operator configures for one external key instance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalInstanceConfig {
    /// `https://host[:port]` of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `[/prefix]/kms/xks/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// SigV4 access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// SigV4 secret, by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// The connection-settings JSON instead of the four fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_file: Option<PathBuf>,
    /// SigV4 region; the connector's region when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// PEM bundle of the CAs the proxy's certificate must chain to (with a name check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Hex SHA-256 of the proxy's leaf certificate (DER); colons allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    /// `public` (default) or `private-link`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<Connectivity>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Background health check interval, seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_secs: Option<u64>,
    /// Budget of one XKI call including connect and TLS, milliseconds (default 250).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The JSON of `xki-proxy credentials new` (and the XKS console file, which has a subset).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SettingsFile {
    #[serde(default)]
    xks_proxy_uri_endpoint: Option<String>,
    xks_proxy_uri_path: String,
    xks_proxy_authentication_credential: SettingsCredential,
    #[serde(default)]
    server_certificate_sha256: Option<String>,
    #[serde(default)]
    connectivity: Option<Connectivity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SettingsCredential {
    access_key_id: String,
    raw_secret_access_key: String,
}

/// Why a configuration was refused. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is missing, or given twice.
    #[error("{0}")]
    Shape(String),
    /// A setting has an invalid value.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A secret cannot be read.
    #[error("secret: {0}")]
    Secret(String),
    /// A file cannot be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS client cannot be built.
    #[error("TLS: {0}")]
    Tls(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A client certificate and key for mutual TLS. `Debug` shows neither.
pub struct ClientIdentity {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientIdentity {{ chain: {} certificate(s), key: [redacted] }}",
            self.chain.len()
        )
    }
}

/// A checked, loaded configuration: everything the XKI client needs.
#[derive(Debug, Clone)]
pub struct ExternalSettings {
    /// `https://host[:port]`, no trailing slash.
    pub endpoint: String,
    /// `host` or `host:port`: the signed `host` header, as the HTTP client sends it.
    pub authority: String,
    /// `[/prefix]/kms/xks/v1`.
    pub path: String,
    /// SigV4 credential (the secret is redacted in `Debug`).
    pub credential: Credential,
    /// SigV4 region.
    pub region: String,
    /// CA certificates the proxy's chain must lead to (empty: pin only).
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// SHA-256 of the proxy's leaf certificate.
    pub certificate_sha256: Option<[u8; 32]>,
    /// Public endpoint or private link.
    pub connectivity: Connectivity,
    /// Mutual TLS identity.
    pub client_identity: Option<ClientIdentity>,
    /// Background health check interval.
    pub health_interval: Duration,
    /// Budget of one call.
    pub timeout: Duration,
}

impl ExternalInstanceConfig {
    /// Reads what the configuration references (relative paths are taken from `base`) and checks
    /// every value. `default_region` is the connector's region.
    pub fn resolve(
        &self,
        default_region: &str,
        base: &Path,
    ) -> Result<ExternalSettings, ConfigError> {
        let from_file = match &self.settings_file {
            Some(path) => Some(read_settings_file(&rooted(base, path))?),
            None => None,
        };
        let (endpoint, path, credential, pin, connectivity) = match from_file {
            Some(file) => {
                for (given, name) in [
                    (self.path.is_some(), "path"),
                    (self.access_key_id.is_some(), "access_key_id"),
                    (self.secret.is_some(), "secret"),
                ] {
                    if given {
                        return Err(ConfigError::Shape(format!(
                            "{name} comes from settings_file; do not give it as well"
                        )));
                    }
                }
                let endpoint = one_of(
                    "endpoint",
                    file.xks_proxy_uri_endpoint,
                    self.endpoint.clone(),
                )?;
                let pin = either(
                    "certificate_sha256",
                    file.server_certificate_sha256,
                    self.certificate_sha256.clone(),
                )?;
                let connectivity = either("connectivity", file.connectivity, self.connectivity)?;
                let secret = Secret::new(
                    file.xks_proxy_authentication_credential
                        .raw_secret_access_key,
                );
                let credential = Credential::new(
                    file.xks_proxy_authentication_credential.access_key_id,
                    secret,
                );
                (
                    endpoint,
                    file.xks_proxy_uri_path,
                    credential,
                    pin,
                    connectivity,
                )
            }
            None => {
                let require = |value: &Option<String>, name: &str| {
                    value.clone().ok_or_else(|| {
                        ConfigError::Shape(format!("{name} is required (or give settings_file)"))
                    })
                };
                let endpoint = require(&self.endpoint, "endpoint")?;
                let path = require(&self.path, "path")?;
                let access_key_id = require(&self.access_key_id, "access_key_id")?;
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or_else(|| {
                        ConfigError::Shape("secret is required (or give settings_file)".into())
                    })
                    .and_then(|reference| resolve_secret(reference, base))?;
                let credential = Credential::new(access_key_id, secret);
                (
                    endpoint,
                    path,
                    credential,
                    self.certificate_sha256.clone(),
                    self.connectivity,
                )
            }
        };

        let (endpoint, authority) = check_endpoint(&endpoint)?;
        check_path(&path)?;
        check_access_key_id(&credential.access_key_id)?;
        if credential.secret.expose().is_empty() {
            return Err(ConfigError::Secret("the secret is empty".into()));
        }
        let region = self
            .region
            .clone()
            .unwrap_or_else(|| default_region.to_owned());
        check_region(&region)?;
        let certificate_sha256 = pin.as_deref().map(parse_fingerprint).transpose()?;
        let ca_certs = match &self.ca_file {
            Some(path) => read_certs(&rooted(base, path))?,
            None => Vec::new(),
        };
        if ca_certs.is_empty() && certificate_sha256.is_none() {
            return Err(ConfigError::Shape(
                "give ca_file and/or certificate_sha256: the proxy's certificate must be trusted somehow".into(),
            ));
        }
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some(read_identity(&rooted(base, cert), &rooted(base, key))?)
            }
            _ => {
                return Err(ConfigError::Shape(
                    "client_cert_file and client_key_file go together".into(),
                ));
            }
        };
        let health_interval_secs = self
            .health_interval_secs
            .unwrap_or(DEFAULT_HEALTH_INTERVAL_SECS);
        if !(1..=MAX_HEALTH_INTERVAL_SECS).contains(&health_interval_secs) {
            return Err(invalid(
                "health_interval_secs",
                format!("must be 1 to {MAX_HEALTH_INTERVAL_SECS}"),
            ));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        // A check must end before the next one starts, or the documented detection bound
        // (one interval plus one timeout) would not hold.
        if timeout_ms < MIN_TIMEOUT_MS || timeout_ms > health_interval_secs * 1000 {
            return Err(invalid(
                "timeout_ms",
                format!("must be {MIN_TIMEOUT_MS} ms to health_interval_secs"),
            ));
        }
        Ok(ExternalSettings {
            endpoint,
            authority,
            path,
            credential,
            region,
            ca_certs,
            certificate_sha256,
            connectivity: connectivity.unwrap_or_default(),
            client_identity,
            health_interval: Duration::from_secs(health_interval_secs),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

fn rooted(base: &Path, path: &Path) -> PathBuf {
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_owned()
    }
}

/// The value when exactly one source gives it.
fn one_of(
    name: &str,
    from_file: Option<String>,
    from_config: Option<String>,
) -> Result<String, ConfigError> {
    either(name, from_file, from_config)?
        .ok_or_else(|| ConfigError::Shape(format!("{name} is required (in settings_file or here)")))
}

/// The value from whichever source gives it; both is ambiguous.
fn either<T>(
    name: &str,
    from_file: Option<T>,
    from_config: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match (from_file, from_config) {
        (Some(_), Some(_)) => Err(ConfigError::Shape(format!(
            "{name} is in settings_file; do not give it as well"
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

fn read_settings_file(path: &Path) -> Result<SettingsFile, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?,
    );
    // serde's message may quote a value; the file holds a secret, so keep only the position.
    serde_json::from_str(&text).map_err(|e| {
        file_error(format!(
            "not connection settings JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// `https://host[:port]` → (normalised endpoint, authority as sent in `host`).
fn check_endpoint(endpoint: &str) -> Result<(String, String), ConfigError> {
    let endpoint = endpoint.trim_end_matches('/');
    let Some(authority) = endpoint.strip_prefix("https://") else {
        return Err(invalid("endpoint", "must start with https://"));
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("endpoint", "the port must be 1 to 65535"))?;
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-']);
    if !host_ok {
        return Err(invalid(
            "endpoint",
            "https://host[:port] with a DNS name or IPv4 address, nothing after it",
        ));
    }
    let host = host.to_ascii_lowercase();
    // The HTTP client leaves the default port out of `host`; the signature must match.
    let authority = match port {
        Some(port) if port != 443 => format!("{host}:{port}"),
        _ => host,
    };
    Ok((format!("https://{authority}"), authority))
}

/// `^(/[A-Za-z0-9/_-]+)?/kms/xks/v\d{1,2}$`, at most 128 characters (the KMS SDK's rule).
fn check_path(path: &str) -> Result<(), ConfigError> {
    let bad = || {
        invalid(
            "path",
            "must be [/prefix]/kms/xks/v<1-2 digits>, prefix of A-Z a-z 0-9 / _ -",
        )
    };
    if path.len() > MAX_PATH_CHARS {
        return Err(invalid("path", "at most 128 characters"));
    }
    let (head, version) = path.rsplit_once("/kms/xks/v").ok_or_else(bad)?;
    if version.is_empty() || version.len() > 2 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix_ok = head.is_empty()
        || (head.starts_with('/')
            && head.len() > 1
            && head[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')));
    if !prefix_ok {
        return Err(bad());
    }
    Ok(())
}

fn check_access_key_id(id: &str) -> Result<(), ConfigError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b',')
    {
        return Err(invalid(
            "access_key_id",
            "1 to 128 printable characters, no '/' or ','",
        ));
    }
    Ok(())
}

fn check_region(region: &str) -> Result<(), ConfigError> {
    if region.is_empty()
        || region.len() > 64
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("region", "lower-case letters, digits and '-'"));
    }
    Ok(())
}

/// 64 hex digits, any case, with or without `:` separators.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], ConfigError> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes =
        hex::decode(&digits).map_err(|_| invalid("certificate_sha256", "not hexadecimal"))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        invalid(
            "certificate_sha256",
            "a SHA-256 fingerprint is 32 bytes (64 hex digits)",
        )
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

fn read_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, ConfigError> {
    let chain = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ConfigError::File {
        path: key.to_owned(),
        reason: format!("no usable private key ({e})"),
    })?;
    Ok(ClientIdentity { chain, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "XkiVectorSecretOfLength43To64CharactersPad+/=";

    /// A valid configuration; its secret file lives in a directory leaked for the test's life.
    fn base() -> ExternalInstanceConfig {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        ExternalInstanceConfig {
            endpoint: Some("https://xki.example.com".into()),
            path: Some("/tenant-a/kms/xks/v1".into()),
            access_key_id: Some("AKIAXKIVECTORS2345672ABC".into()),
            secret: Some(SecretRef {
                env: None,
                file: Some(secret),
            }),
            certificate_sha256: Some("AB".repeat(32)),
            ..ExternalInstanceConfig::default()
        }
    }

    #[test]
    fn resolves_defaults() {
        let s = base().resolve("cn-hangzhou", Path::new("/")).unwrap();
        assert_eq!(s.endpoint, "https://xki.example.com");
        assert_eq!(s.authority, "xki.example.com");
        assert_eq!(s.region, "cn-hangzhou");
        assert_eq!(s.certificate_sha256, Some([0xab; 32]));
        assert_eq!(s.connectivity, Connectivity::Public);
        assert_eq!(s.health_interval, Duration::from_secs(10));
        assert_eq!(s.timeout, Duration::from_millis(250));
        assert_eq!(
            s.credential.secret.expose(),
            SECRET,
            "trailing newline dropped"
        );
        assert!(!format!("{s:?}").contains(SECRET));
    }

    #[test]
    fn endpoint_and_path_rules() {
        for (endpoint, authority) in [
            ("https://Xki.Example.com:8443/", "xki.example.com:8443"),
            ("https://localhost:443", "localhost"),
            ("https://127.0.0.1:9000", "127.0.0.1:9000"),
        ] {
            assert_eq!(check_endpoint(endpoint).unwrap().1, authority);
        }
        for bad in [
            "http://xki.example.com",
            "https://",
            "https://xki.example.com/path",
            "https://user@xki.example.com",
            "https://xki.example.com:0",
            "https://xki.example.com:99999",
            "https://[::1]:443",
            "https://xki.example.com?x=1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        for good in ["/kms/xks/v1", "/a/b_c-d/kms/xks/v1", "/x/kms/xks/v12"] {
            check_path(good).unwrap();
        }
        for bad in [
            "kms/xks/v1",
            "/kms/xks/v",
            "/kms/xks/v123",
            "/a b/kms/xks/v1",
            "//kms/xks/v1x",
            "/a/kms/xks/v1/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path(&format!("/{}/kms/xks/v1", "a".repeat(120))).is_err());
    }

    #[test]
    fn refusals() {
        let json = r#"{"endpoint":"https://x.example","path":"/kms/xks/v1","access_key_id":"A","secret":"inline"}"#;
        assert!(
            serde_json::from_str::<ExternalInstanceConfig>(json).is_err(),
            "inline secret"
        );
        let json = r#"{"endpoint":"https://x.example","unknown":1}"#;
        assert!(
            serde_json::from_str::<ExternalInstanceConfig>(json).is_err(),
            "unknown field"
        );
        let json = r#"{"secret":{"env":"A","file":"b"}}"#;
        let both: ExternalInstanceConfig = serde_json::from_str(json).unwrap();
        assert!(matches!(
            ExternalInstanceConfig {
                secret: both.secret,
                ..base()
            }
            .resolve("r", Path::new("/")),
            Err(ConfigError::Secret(_))
        ));
        let no_trust = ExternalInstanceConfig {
            certificate_sha256: None,
            ..base()
        };
        assert!(matches!(
            no_trust.resolve("r", Path::new("/")),
            Err(ConfigError::Shape(_))
        ));
        let bad_pin = ExternalInstanceConfig {
            certificate_sha256: Some("abcd".into()),
            ..base()
        };
        assert!(bad_pin.resolve("r", Path::new("/")).is_err());
        let slow = ExternalInstanceConfig {
            health_interval_secs: Some(1),
            timeout_ms: Some(1500),
            ..base()
        };
        assert!(matches!(
            slow.resolve("r", Path::new("/")),
            Err(ConfigError::Invalid {
                field: "timeout_ms",
                ..
            })
        ));
        let half_mtls = ExternalInstanceConfig {
            client_cert_file: Some("c.pem".into()),
            ..base()
        };
        assert!(matches!(
            half_mtls.resolve("r", Path::new("/")),
            Err(ConfigError::Shape(_))
        ));
        assert!(base().resolve("Bad Region", Path::new("/")).is_err());
        assert_eq!(
            parse_fingerprint(&format!("{}AB", "ab:".repeat(31))).unwrap(),
            [0xab; 32]
        );
    }

    #[test]
    fn settings_file_shape() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings.json");
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA==";
        std::fs::write(
            &file,
            format!(
                r#"{{"XksProxyUriEndpoint":"https://localhost:8443","XksProxyUriPath":"/kms/xks/v1",
                "XksProxyAuthenticationCredential":{{"AccessKeyId":"AKIAXKIVECTORS2345672ABC","RawSecretAccessKey":"{secret}"}},
                "ServerCertificateSha256":"{}","Connectivity":"private-link"}}"#,
                "0f".repeat(32)
            ),
        )
        .unwrap();
        let config = ExternalInstanceConfig {
            settings_file: Some("settings.json".into()),
            region: Some("cn-shanghai".into()),
            ..ExternalInstanceConfig::default()
        };
        let s = config.resolve("cn-hangzhou", dir.path()).unwrap();
        assert_eq!(
            (s.authority.as_str(), s.path.as_str()),
            ("localhost:8443", "/kms/xks/v1")
        );
        assert_eq!(s.credential.secret.expose(), secret);
        assert_eq!(s.connectivity, Connectivity::PrivateLink);
        assert_eq!(s.region, "cn-shanghai");
        assert_eq!(s.certificate_sha256, Some([0x0f; 32]));
        let twice = ExternalInstanceConfig {
            certificate_sha256: Some("0f".repeat(32)),
            ..config.clone()
        };
        assert!(matches!(
            twice.resolve("r", dir.path()),
            Err(ConfigError::Shape(_))
        ));
        let also_path = ExternalInstanceConfig {
            path: Some("/kms/xks/v1".into()),
            ..config
        };
        assert!(matches!(
            also_path.resolve("r", dir.path()),
            Err(ConfigError::Shape(_))
        ));
        std::fs::write(
            &file,
            format!(r#"{{"XksProxyUriPath":1,"Secret":"{secret}"}}"#),
        )
        .unwrap();
        let err = ExternalInstanceConfig {
            settings_file: Some(file),
            ..ExternalInstanceConfig::default()
        }
        .resolve("r", dir.path())
        .unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
    }
}
