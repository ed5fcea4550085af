//! Logical key stores: URI prefixes, each with its own credentials, regions, key allow-list,
//! quota and rules. The whole set is swapped atomically on reload; a request keeps the `Arc`
//! it started with, so a reload never drops one in flight.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use schemas::sigv4::{Secret, Verifier};
use schemas::xki::{API_BASE, ExternalKeyId};

use crate::config::{Config, ConfigError, KeyStoreConfig, QuotaConfig};
use crate::policy::Rule;

/// A prefix: empty, or `/segment[/segment…]` from `[A-Za-z0-9_-]`, such that the whole path
/// stays within the spec's 128 characters.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Ok(());
    }
    if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        return Err("key store prefix must be empty or look like /a/b (no trailing slash)");
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err("key store prefix may only contain A-Z a-z 0-9 / _ -");
    }
    if prefix.len() + API_BASE.len() > 128 {
        return Err("key store prefix makes the URI path longer than 128 characters");
    }
    Ok(())
}

/// One key store, ready to serve.
pub struct KeyStore {
    /// Its prefix.
    pub prefix: String,
    credentials: HashMap<String, Secret>,
    /// SigV4 verifier for its regions (holds the signing-key cache).
    pub verifier: Verifier,
    all_keys: bool,
    keys: std::collections::HashSet<String>,
    quota: Option<(QuotaConfig, Arc<DefaultDirectRateLimiter>)>,
    /// Secondary authorization rules.
    pub rules: Vec<Rule>,
    /// Host names requests must be signed for (empty: any).
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("prefix", &self.prefix)
            .field(
                "access_key_ids",
                &self.credentials.keys().collect::<Vec<_>>(),
            )
            .field("regions", &self.verifier.allowed_regions())
            .field("all_keys", &self.all_keys)
            .field("keys", &self.keys.len())
            .field("quota", &self.quota.as_ref().map(|q| q.0))
            .field("rules", &self.rules.len())
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl KeyStore {
    fn build(
        config: &KeyStoreConfig,
        max_skew: time::Duration,
        previous: Option<&KeyStore>,
    ) -> Result<Self, ConfigError> {
        let mut credentials = HashMap::new();
        for c in &config.credentials {
            let secret = c.secret.resolve()?;
            crate::credentials::check_secret(secret.expose())
                .map_err(|m| ConfigError::Invalid(format!("{}: {m}", c.access_key_id)))?;
            if credentials
                .insert(c.access_key_id.clone(), secret)
                .is_some()
            {
                return Err(ConfigError::Invalid(format!(
                    "access key {} appears twice in one key store",
                    c.access_key_id
                )));
            }
        }
        let quota = config.quota.map(|q| {
            // Keep the bucket (and its state) when the quota did not change.
            let reuse = previous
                .and_then(|p| p.quota.as_ref())
                .filter(|(old, _)| *old == q);
            match reuse {
                Some((_, limiter)) => (q, limiter.clone()),
                None => (q, Arc::new(RateLimiter::direct(quota_of(q)))),
            }
        });
        Ok(Self {
            prefix: config.prefix.clone(),
            credentials,
            verifier: Verifier::new(config.regions.iter().cloned()).with_max_clock_skew(max_skew),
            all_keys: config.keys.iter().any(|k| k == "*"),
            keys: config.keys.iter().filter(|k| *k != "*").cloned().collect(),
            quota,
            rules: config.rules.clone(),
            hosts: config.hosts.clone(),
        })
    }

    /// The secret of an access key of this store.
    pub fn secret(&self, access_key_id: &str) -> Option<Secret> {
        self.credentials.get(access_key_id).cloned()
    }

    /// Whether the store may use this key.
    pub fn allows_key(&self, key: &ExternalKeyId) -> bool {
        self.all_keys || self.keys.contains(key.as_str())
    }

    /// Takes one request from the quota; false when the bucket is empty.
    pub fn admit(&self) -> bool {
        self.quota
            .as_ref()
            .is_none_or(|(_, limiter)| limiter.check().is_ok())
    }
}

fn quota_of(q: QuotaConfig) -> Quota {
    let rate = NonZeroU32::new(q.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = q.burst.and_then(NonZeroU32::new).unwrap_or(rate);
    Quota::per_second(rate).allow_burst(burst)
}

/// All key stores, by prefix.
#[derive(Debug, Default)]
pub struct KeyStores {
    by_prefix: HashMap<String, Arc<KeyStore>>,
}

impl KeyStores {
    /// Builds the stores of `config`, reusing quota buckets of `previous` where unchanged.
    pub fn build(config: &Config, previous: Option<&KeyStores>) -> Result<Self, ConfigError> {
        let skew = time::Duration::seconds(
            i64::try_from(config.limits.max_clock_skew_secs).unwrap_or(i64::MAX),
        );
        let mut by_prefix = HashMap::new();
        for store in &config.key_stores {
            let old = previous
                .and_then(|p| p.by_prefix.get(&store.prefix))
                .map(Arc::as_ref);
            by_prefix.insert(
                store.prefix.clone(),
                Arc::new(KeyStore::build(store, skew, old)?),
            );
        }
        Ok(Self { by_prefix })
    }

    /// The store serving `prefix`.
    pub fn get(&self, prefix: &str) -> Option<Arc<KeyStore>> {
        self.by_prefix.get(prefix).cloned()
    }

    /// Number of stores.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// The live, reloadable set of key stores.
#[derive(Debug, Default)]
pub struct Tenancy {
    current: RwLock<Arc<KeyStores>>,
}

impl Tenancy {
    /// Starts with `stores`.
    pub fn new(stores: KeyStores) -> Self {
        Self {
            current: RwLock::new(Arc::new(stores)),
        }
    }

    /// The stores a request should use from now on.
    pub fn snapshot(&self) -> Arc<KeyStores> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in `next` (built with [`KeyStores::build`] against the current snapshot so quota
    /// buckets carry over). Requests in flight keep the stores they started with.
    pub fn replace(&self, next: KeyStores) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

/// A request path, routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `…/health`.
    Health {
        /// The key store prefix.
        prefix: &'a str,
    },
    /// `…/keys/{id}/{op}`.
    Key {
        /// The key store prefix.
        prefix: &'a str,
        /// The id as written (validated later: a bad id is a ValidationException).
        key_id: &'a str,
        /// The operation.
        op: KeyOp,
    },
}

/// Key operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOp {
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

impl KeyOp {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

/// Splits a path into prefix and API route; `None` = not an XKI path (InvalidUriPathException).
pub fn route(path: &str) -> Option<Route<'_>> {
    let at = path.rfind(API_BASE)?;
    let (prefix, rest) = (&path[..at], &path[at + API_BASE.len()..]);
    if rest == "/health" {
        return Some(Route::Health { prefix });
    }
    let rest = rest.strip_prefix("/keys/")?;
    let (key_id, op) = rest.rsplit_once('/')?;
    let op = match op {
        "metadata" => KeyOp::Metadata,
        "encrypt" => KeyOp::Encrypt,
        "decrypt" => KeyOp::Decrypt,
        _ => return None,
    };
    if key_id.is_empty() || key_id.contains('/') {
        return None;
    }
    Some(Route::Key { prefix, key_id, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/kms/xks/v1/health"),
            Some(Route::Health { prefix: "" })
        );
        assert_eq!(
            route("/a/b/kms/xks/v1/health"),
            Some(Route::Health { prefix: "/a/b" })
        );
        assert_eq!(
            route("/t/kms/xks/v1/keys/k.1_-x/encrypt"),
            Some(Route::Key {
                prefix: "/t",
                key_id: "k.1_-x",
                op: KeyOp::Encrypt
            })
        );
        for bad in [
            "/kms/xks/v1/healthz",
            "/kms/xks/v1/keys/k/sign",
            "/kms/xks/v1/keys//encrypt",
            "/kms/xks/v1/keys/a/b/encrypt",
            "/kms/xks/v2/health",
            "/",
            "/kms/xks/v1/keys/k/metadata/",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["", "/a", "/tenant-1/x_y"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "/a/",
            "//a",
            "/a b",
            "/a.b",
            &format!("/{}", "a".repeat(120)),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
