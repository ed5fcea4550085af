//! The SigV4 verifier and its bounded, secret-aware signing-key cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use super::canonical::{
    Authorization, canonical_request, parse_amz_date, signing_key, string_to_sign,
};
use super::{DEFAULT_MAX_CLOCK_SKEW, DEFAULT_SERVICE, SigV4Error};
use crate::http::{CredentialLookup, RequestParts, hmac_sha256};

/// Headers every accepted request must sign, whatever else it signs.
const REQUIRED_SIGNED_HEADERS: [&str; 2] = ["host", "x-amz-date"];

/// What a successfully verified request was signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The access key id of the credential scope.
    pub access_key_id: String,
    /// The region of the credential scope (one of the allowed ones).
    pub region: String,
    /// The service of the credential scope.
    pub service: String,
    /// The request time (`x-amz-date`).
    pub request_time: OffsetDateTime,
    /// The signed header names, lower-case and sorted.
    pub signed_headers: Vec<String>,
}

/// Verifies SigV4 requests for one service and a set of regions.
///
/// `Send + Sync`: one verifier (and its signing-key cache) can serve every worker of a server.
#[derive(Debug)]
pub struct Verifier {
    service: String,
    allowed_regions: Vec<String>,
    max_clock_skew: Duration,
    cache: SigningKeyCache,
}

impl Verifier {
    /// Default number of cached signing keys before the cache is emptied.
    pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

    /// A verifier for service `kms-xks-proxy`, ±5 minutes of skew, accepting the given regions
    /// (an empty set accepts none).
    pub fn new<I, S>(allowed_regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            service: DEFAULT_SERVICE.to_owned(),
            allowed_regions: allowed_regions.into_iter().map(Into::into).collect(),
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            cache: SigningKeyCache::new(Self::DEFAULT_CACHE_CAPACITY),
        }
    }

    /// Expects another service name in the credential scope.
    #[must_use]
    pub fn with_service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// Accepts request times up to `max_clock_skew` away from `now`, either way.
    #[must_use]
    pub fn with_max_clock_skew(mut self, max_clock_skew: Duration) -> Self {
        self.max_clock_skew = max_clock_skew.abs();
        self
    }

    /// Caches at most `capacity` signing keys (0 disables the cache).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = SigningKeyCache::new(capacity);
        self
    }

    /// The service name the credential scope must carry.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The regions the credential scope may carry.
    pub fn allowed_regions(&self) -> &[String] {
        &self.allowed_regions
    }

    /// The largest accepted distance between `x-amz-date` and the verifier's clock.
    pub fn max_clock_skew(&self) -> Duration {
        self.max_clock_skew
    }

    /// Checks everything of `request` that does not need its body, at time `now`: the
    /// `Authorization` shape, the signed-header set, `x-amz-date` and the skew, the credential
    /// scope (date, service, region) and that `credentials` know the access key. A server calls
    /// it before reading a body, so unauthenticated clients cannot make it wait for or buffer
    /// one; [`Verifier::verify`] still runs every check, with the signature over the body hash.
    pub fn check_headers<C>(
        &self,
        request: &RequestParts<'_>,
        credentials: C,
        now: OffsetDateTime,
    ) -> Result<(), SigV4Error>
    where
        C: CredentialLookup,
    {
        let (authorization, _, _) = self.check_scope(request, now)?;
        match credentials.secret(&authorization.access_key_id) {
            Some(_) => Ok(()),
            None => Err(SigV4Error::UnknownAccessKey(authorization.access_key_id)),
        }
    }

    /// Verifies `request` against the secret `credentials` holds for its access key id, at time
    /// `now`. Cheap checks run first; the secret is looked up only for a well-formed, fresh
    /// request in an allowed scope.
    pub fn verify<C>(
        &self,
        request: &RequestParts<'_>,
        credentials: C,
        now: OffsetDateTime,
    ) -> Result<Verified, SigV4Error>
    where
        C: CredentialLookup,
    {
        let (authorization, amz_date, request_time) = self.check_scope(request, now)?;
        let canonical = canonical_request(request, &authorization.signed_headers)?;

        let Some(secret) = credentials.secret(&authorization.access_key_id) else {
            return Err(SigV4Error::UnknownAccessKey(authorization.access_key_id));
        };
        let key = self.cache.get_or_derive(
            &authorization.access_key_id,
            &authorization.scope_date,
            &authorization.region,
            &authorization.service,
            secret.expose(),
        );
        let string_to_sign = string_to_sign(
            amz_date,
            &authorization.scope_date,
            &authorization.region,
            &authorization.service,
            &canonical,
        );
        let expected = Zeroizing::new(hmac_sha256(&*key, string_to_sign.as_bytes()));
        if !bool::from(expected.ct_eq(&authorization.signature)) {
            return Err(SigV4Error::SignatureMismatch);
        }
        Ok(Verified {
            access_key_id: authorization.access_key_id,
            region: authorization.region,
            service: authorization.service,
            request_time,
            signed_headers: authorization.signed_headers,
        })
    }

    /// The checks of the `Authorization` header, `x-amz-date` and the credential scope.
    fn check_scope<'a>(
        &self,
        request: &RequestParts<'a>,
        now: OffsetDateTime,
    ) -> Result<(Authorization, &'a str, OffsetDateTime), SigV4Error> {
        let authorization = match request.single_header("authorization") {
            Ok(value) => Authorization::parse(value)?,
            Err(0) => return Err(SigV4Error::MissingAuthorization),
            Err(_) => return Err(SigV4Error::MalformedAuthorization("repeated header")),
        };
        for required in REQUIRED_SIGNED_HEADERS {
            if authorization
                .signed_headers
                .binary_search_by(|h| h.as_str().cmp(required))
                .is_err()
            {
                return Err(SigV4Error::RequiredHeaderNotSigned(required));
            }
        }
        let amz_date = match request.single_header("x-amz-date") {
            Ok(value) => value,
            Err(0) => return Err(SigV4Error::MissingDate),
            Err(_) => return Err(SigV4Error::MalformedDate),
        };
        let request_time = parse_amz_date(amz_date)?;
        if authorization.scope_date != amz_date[..8] {
            return Err(SigV4Error::CredentialScopeMismatch);
        }
        if authorization.service != self.service {
            return Err(SigV4Error::WrongService(authorization.service));
        }
        if !self.allowed_regions.contains(&authorization.region) {
            return Err(SigV4Error::RegionNotAllowed(authorization.region));
        }
        let skew = request_time - now;
        if skew.abs() > self.max_clock_skew {
            return Err(SigV4Error::ClockSkew {
                skew_seconds: skew.whole_seconds(),
            });
        }
        Ok((authorization, amz_date, request_time))
    }
}

/// Identifies one derived signing key. The secret's fingerprint is part of the key, so a key
/// derived from a secret that has since changed is never served again.
#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    /// `access key id \0 date \0 region \0 service`; none of them may contain NUL.
    scope: String,
    secret_fingerprint: [u8; 32],
}

/// Derived signing keys, bounded: when full it is emptied (keys change daily anyway).
struct SigningKeyCache {
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, Zeroizing<[u8; 32]>>>,
}

impl SigningKeyCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<CacheKey, Zeroizing<[u8; 32]>>> {
        // A panic while holding the lock cannot leave the map inconsistent: keep using it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get_or_derive(
        &self,
        access_key_id: &str,
        scope_date: &str,
        region: &str,
        service: &str,
        secret: &str,
    ) -> Zeroizing<[u8; 32]> {
        if self.capacity == 0 {
            return signing_key(secret, scope_date, region, service);
        }
        let key = CacheKey {
            scope: format!("{access_key_id}\0{scope_date}\0{region}\0{service}"),
            secret_fingerprint: Sha256::new()
                .chain_update(b"sigv4-signing-key-cache\0")
                .chain_update(secret.as_bytes())
                .finalize()
                .into(),
        };
        if let Some(found) = self.lock().get(&key) {
            return found.clone();
        }
        // Derive outside the lock; a concurrent miss derives the same key twice, harmlessly.
        let derived = signing_key(secret, scope_date, region, service);
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, derived.clone());
        derived
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl fmt::Debug for SigningKeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyCache")
            .field("capacity", &self.capacity)
            .field("entries", &self.lock().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn verifier_is_shareable() {
        assert_send_sync::<Verifier>();
    }

    #[test]
    fn cache_is_bounded_and_secret_aware() {
        let cache = SigningKeyCache::new(2);
        let a1 = cache.get_or_derive("AK", "20261123", "r", "s", "secret-1");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            *cache.get_or_derive("AK", "20261123", "r", "s", "secret-1"),
            *a1
        );
        assert_eq!(cache.len(), 1, "a hit does not add an entry");
        let a2 = cache.get_or_derive("AK", "20261123", "r", "s", "secret-2");
        assert_ne!(*a2, *a1, "a changed secret must give a fresh key");
        assert_eq!(*a2, *signing_key("secret-2", "20261123", "r", "s"));
        assert_eq!(cache.len(), 2);
        cache.get_or_derive("AK", "20261124", "r", "s", "secret-2");
        assert_eq!(cache.len(), 1, "a full cache is emptied before inserting");
    }

    #[test]
    fn debug_shows_no_keys() {
        let verifier = Verifier::new(["us-east-1"]);
        verifier
            .cache
            .get_or_derive("AK", "20261123", "r", "s", "secret");
        let printed = format!("{verifier:?}");
        assert!(printed.contains("entries: 1"), "{printed}");
        assert!(!printed.contains("secret\""), "{printed}");
    }
}
