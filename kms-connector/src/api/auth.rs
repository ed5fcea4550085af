//! Who is calling: the request signature (ACS3-HMAC-SHA256 or the HMAC-SHA1 RPC signature, via
//! `schemas::acs::Verifier`), the clock-skew window, nonce replay through the store (so every
//! replica sees every nonce), and the AccessKey → principal table of the configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use schemas::acs::{AcsSignatureError, RequestParts, Secret, Verifier};
use time::OffsetDateTime;

use super::error::ApiError;
use super::policy::{Identity, IdentityPolicy};
use crate::config::{AccessKeyConfig, ConfigError};
use crate::store::{Store, UnixMillis};

/// A RAM principal: `acs:ram::<account>:root`, `…:user/<name>` or `…:role/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    arn: String,
    account: String,
}

impl Principal {
    /// Parses a principal ARN; the error completes "principal …".
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = || {
            Err(format!(
                "{text:?} must be acs:ram::<account>:root, …:user/<name> or …:role/<name>"
            ))
        };
        let Some((account, resource)) = text
            .strip_prefix("acs:ram::")
            .and_then(|rest| rest.split_once(':'))
        else {
            return refuse();
        };
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return refuse();
        }
        let name_ok = |name: &str| {
            (1..=128).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'/')
                })
        };
        let valid = resource == "root"
            || resource.strip_prefix("user/").is_some_and(name_ok)
            || resource.strip_prefix("role/").is_some_and(name_ok);
        if !valid {
            return refuse();
        }
        Ok(Self {
            arn: text.to_owned(),
            account: account.to_owned(),
        })
    }

    /// The ARN, as key policies name it.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The account (UID).
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Whether this is the account root.
    pub fn is_root(&self) -> bool {
        self.arn.ends_with(":root")
    }
}

struct AccessKey {
    secret: Secret,
    principal: Principal,
    identity: Arc<Identity>,
}

/// The AccessKey pairs of the configuration. `Debug` shows the ids only.
#[derive(Default)]
pub struct AccessKeys {
    keys: HashMap<String, AccessKey>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&String> = self.keys.keys().collect();
        f.debug_struct("AccessKeys").field("ids", &ids).finish()
    }
}

impl AccessKeys {
    /// Reads every configured secret.
    pub fn from_config(configs: &[AccessKeyConfig]) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        for config in configs {
            let principal = Principal::parse(&config.principal).map_err(|reason| {
                ConfigError::Invalid(format!(
                    "access_keys {}: principal {reason}",
                    config.access_key_id
                ))
            })?;
            let secret = config.secret.resolve()?;
            let identity = match config.policy_text()? {
                Some(text) => Identity::Policy(IdentityPolicy::parse(&text).map_err(|reason| {
                    ConfigError::Invalid(format!(
                        "access_keys {}: policy: {reason}",
                        config.access_key_id
                    ))
                })?),
                None if principal.is_root() => Identity::Root,
                None => Identity::Member,
            };
            keys.insert(
                config.access_key_id.clone(),
                AccessKey {
                    secret,
                    principal,
                    identity: Arc::new(identity),
                },
            );
        }
        Ok(Self { keys })
    }

    /// Adds a pair without an identity policy (tests, tools).
    pub fn insert(&mut self, access_key_id: &str, secret: Secret, principal: Principal) {
        let identity = Arc::new(if principal.is_root() {
            Identity::Root
        } else {
            Identity::Member
        });
        self.keys.insert(
            access_key_id.to_owned(),
            AccessKey {
                secret,
                principal,
                identity,
            },
        );
    }

    /// The secret of an access key id.
    pub fn secret(&self, access_key_id: &str) -> Option<Secret> {
        self.keys.get(access_key_id).map(|k| k.secret.clone())
    }

    /// The principal an access key id authenticates.
    pub fn principal(&self, access_key_id: &str) -> Option<&Principal> {
        self.keys.get(access_key_id).map(|k| &k.principal)
    }

    /// What an access key id may do by itself.
    pub fn identity(&self, access_key_id: &str) -> Option<Arc<Identity>> {
        self.keys
            .get(access_key_id)
            .map(|k| Arc::clone(&k.identity))
    }
}

/// A request whose signature verified and whose nonce was fresh.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The AccessKey id that signed.
    pub access_key_id: String,
    /// Who it is.
    pub principal: Principal,
    /// What its access key may do (identity policy).
    pub identity: Arc<Identity>,
    /// The signed action (ACS3 header or RPC parameter).
    pub action: Option<String>,
    /// The signed version.
    pub version: Option<String>,
}

/// Verifies the signature and remembers the nonce until the request's timestamp leaves the
/// skew window (after that the timestamp check refuses a replay by itself).
pub async fn authenticate(
    verifier: &Verifier,
    keys: &AccessKeys,
    store: &Store,
    parts: &RequestParts<'_>,
    now: OffsetDateTime,
) -> Result<Caller, ApiError> {
    let verified = verifier.verify(parts, |id: &str| keys.secret(id), now)?;
    // The nonce is the caller's choice and is stored: bound what it may be.
    if !nonce_ok(&verified.nonce) {
        return Err(ApiError::invalid_because(
            "SignatureNonce",
            format!("it must be 1 to {MAX_NONCE_CHARS} printable ASCII characters"),
        ));
    }
    let (principal, identity) = keys
        .principal(&verified.access_key_id)
        .cloned()
        .zip(keys.identity(&verified.access_key_id))
        .ok_or_else(|| AcsSignatureError::UnknownAccessKey(verified.access_key_id.clone()))?;
    let expires = verified.timestamp + verifier.max_clock_skew();
    let expires = UnixMillis::from(std::time::SystemTime::from(expires));
    if !store
        .remember_nonce(&verified.access_key_id, &verified.nonce, expires)
        .await?
    {
        return Err(AcsSignatureError::NonceReused.into());
    }
    Ok(Caller {
        access_key_id: verified.access_key_id,
        principal,
        identity,
        action: verified.action,
        version: verified.version,
    })
}

/// Longest accepted `SignatureNonce` (Alibaba's SDKs send 32 or 36 characters).
pub const MAX_NONCE_CHARS: usize = 128;

fn nonce_ok(nonce: &str) -> bool {
    (1..=MAX_NONCE_CHARS).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_graphic())
}

/// The AccessKey id a request claims (for the audit trail of refused requests): the ACS3
/// `Credential=` or the RPC `AccessKeyId` parameter, cut to a printable 64 characters.
pub fn claimed_access_key(
    parts: &RequestParts<'_>,
    params: &BTreeMap<String, String>,
) -> Option<String> {
    let from_header = parts
        .header_values("authorization")
        .find_map(|v| v.split("Credential=").nth(1))
        .and_then(|rest| rest.split(',').next());
    let claimed = from_header.or_else(|| params.get("AccessKeyId").map(String::as_str))?;
    let printable: String = claimed
        .chars()
        .take(64)
        .filter(|c| c.is_ascii_graphic())
        .collect();
    (!printable.is_empty()).then_some(printable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals() {
        let root = Principal::parse("acs:ram::1234:root").unwrap();
        assert_eq!((root.account(), root.arn()), ("1234", "acs:ram::1234:root"));
        assert_eq!(
            Principal::parse("acs:ram::1234:user/alice")
                .unwrap()
                .account(),
            "1234"
        );
        assert!(Principal::parse("acs:ram::1234:role/app-role").is_ok());
        for bad in [
            "",
            "root",
            "acs:ram::abc:root",
            "acs:ram::1234:group/x",
            "acs:ram::1234:user/",
            "acs:ram:cn:1234:root",
            "acs:ram::1234:user/a b",
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn access_keys_hide_secrets() {
        let mut keys = AccessKeys::default();
        keys.insert(
            "AK1",
            Secret::new("super-secret"),
            Principal::parse("acs:ram::1:root").unwrap(),
        );
        let printed = format!("{keys:?}");
        assert!(
            printed.contains("AK1") && !printed.contains("super-secret"),
            "{printed}"
        );
        assert_eq!(keys.secret("AK1").unwrap().expose(), "super-secret");
        assert!(keys.secret("AK2").is_none());
    }

    #[test]
    fn nonces_are_bounded() {
        assert!(nonce_ok("3e0b4c5e-0a5a-4b4f-9a52-6a0f5f9d7c11"));
        assert!(nonce_ok(&"n".repeat(MAX_NONCE_CHARS)));
        for bad in ["", " ", "a b", "é", "\n"] {
            assert!(!nonce_ok(bad), "{bad:?}");
        }
        assert!(!nonce_ok(&"n".repeat(MAX_NONCE_CHARS + 1)));
        assert!(!nonce_ok(&"n".repeat(20_000)));
    }

    #[test]
    fn claimed_ids() {
        let headers = vec![(
            "Authorization".to_owned(),
            "ACS3-HMAC-SHA256 Credential=LTAI5t,SignedHeaders=host,Signature=00".to_owned(),
        )];
        let parts = RequestParts {
            method: "POST",
            target: "/",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            claimed_access_key(&parts, &BTreeMap::new()).as_deref(),
            Some("LTAI5t")
        );
        let parts = RequestParts {
            method: "GET",
            target: "/",
            headers: &[],
            body: b"",
        };
        let params = BTreeMap::from([("AccessKeyId".to_owned(), "AK\n2".to_owned())]);
        assert_eq!(claimed_access_key(&parts, &params).as_deref(), Some("AK2"));
        assert_eq!(claimed_access_key(&parts, &BTreeMap::new()), None);
    }
}
