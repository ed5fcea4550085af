//! What the PKCS#11 key manager needs to know: which library and token, the PIN, pool sizes,
//! and the vendor profile.
//!
//! Vendor differences live in [`VendorProfile`] and nowhere else. `ulIvBits` is not in the
//! profile: cryptoki (≥ 0.7, rust-cryptoki #247) always sets it to `ulIvLen * 8`, which Luna in
//! FIPS mode requires and every other known token ignores, so there is nothing left to choose.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use crate::hsm::{IvSource, TokenSelector, VendorProfile};

use crate::ciphertext::{AadFormat, Limits};
use crate::error::{Error, Result};

/// Longest configurable deletion window (Alibaba Cloud KMS accepts up to 366 days).
pub const MAX_DELETION_DAYS: u32 = 366;
/// Longest probe interval: a health result is served for at most 60 s, and a probe interval, a
/// reaper pass and a probe must fit in that with room to spare.
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// Deletion waiting periods, in days (7 to 30 unless configured otherwise; at least one day:
/// a deletion always waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionWindow {
    /// Used when the request names none.
    pub default_days: u32,
    /// Shortest accepted.
    pub min_days: u32,
    /// Longest accepted.
    pub max_days: u32,
}

impl Default for DeletionWindow {
    fn default() -> Self {
        Self {
            default_days: 30,
            min_days: 7,
            max_days: 30,
        }
    }
}

impl DeletionWindow {
    /// Resolves a requested window against the bounds.
    pub fn resolve(&self, requested: Option<u32>) -> Result<u32> {
        let days = requested.unwrap_or(self.default_days);
        if days < self.min_days || days > self.max_days {
            return Err(Error::Validation(format!(
                "pending window must be {} to {} days",
                self.min_days, self.max_days
            )));
        }
        Ok(days)
    }
}

/// Everything [`super::Pkcs11KeyManager::open`] needs.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Which token.
    pub token: TokenSelector,
    /// User PIN (never printed).
    pub pin: SecretString,
    /// HSM worker threads, each with one session.
    pub workers: usize,
    /// Jobs that may wait for a worker; one more is refused as `Throttled`.
    pub queue_capacity: usize,
    /// Vendor quirks.
    pub profile: VendorProfile,
    /// How long a key's state may be served from memory before it is re-read from the HSM:
    /// the bound within which another replica's disable takes effect here.
    pub state_ttl: Duration,
    /// AAD construction for new ciphertexts.
    pub aad_format: AadFormat,
    /// Input limits.
    pub limits: Limits,
    /// Deletion waiting periods.
    pub deletion_window: DeletionWindow,
    /// Interval of the background deep-health probe (≤ 30 s recommended).
    pub health_interval: Duration,
    /// Probe latency above which the HSM is reported DEGRADED.
    pub degraded_latency: Duration,
    /// Run the health probe and the deletion reaper in a background thread (off for the CLI).
    pub background: bool,
}

impl Pkcs11Config {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(module: impl Into<PathBuf>, token: TokenSelector, pin: SecretString) -> Self {
        Self {
            module: module.into(),
            token,
            pin,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 1024,
            profile: VendorProfile::SOFTHSM,
            state_ttl: Duration::from_secs(5),
            aad_format: AadFormat::Raw,
            limits: Limits::default(),
            deletion_window: DeletionWindow::default(),
            health_interval: Duration::from_secs(15),
            degraded_latency: Duration::from_millis(100),
            background: true,
        }
    }

    /// Refuses nonsensical sizes.
    pub fn check(&self) -> Result<()> {
        if self.workers == 0 || self.workers > 256 {
            return Err(Error::Config("workers must be 1 to 256".into()));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be positive".into()));
        }
        let w = self.deletion_window;
        if w.min_days < 1
            || w.max_days > MAX_DELETION_DAYS
            || w.min_days > w.max_days
            || w.default_days < w.min_days
            || w.default_days > w.max_days
        {
            return Err(Error::Config(format!(
                "deletion window: need 1 ≤ min_days ≤ default_days ≤ max_days ≤ {MAX_DELETION_DAYS}"
            )));
        }
        if self.health_interval > MAX_HEALTH_INTERVAL || self.health_interval.is_zero() {
            return Err(Error::Config(format!(
                "health interval must be positive and at most {} s",
                MAX_HEALTH_INTERVAL.as_secs()
            )));
        }
        self.limits.check().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletion_window() {
        let w = DeletionWindow::default();
        assert_eq!(w.resolve(None).unwrap(), 30);
        assert_eq!(w.resolve(Some(7)).unwrap(), 7);
        assert!(w.resolve(Some(6)).is_err());
        assert!(w.resolve(Some(31)).is_err());
    }

    #[test]
    fn pin_not_in_debug() {
        let c = Pkcs11Config::new(
            "/x.so",
            TokenSelector::Label("t".into()),
            SecretString::from("123456-secret"),
        );
        assert!(!format!("{c:?}").contains("123456-secret"));
        assert!(c.check().is_ok());
    }

    #[test]
    fn bounds_are_checked() {
        let base = Pkcs11Config::new("/x.so", TokenSelector::Label("t".into()), "p".into());
        let with = |f: &dyn Fn(&mut Pkcs11Config)| {
            let mut c = base.clone();
            f(&mut c);
            c.check()
        };
        assert!(with(&|c| c.deletion_window.min_days = 0).is_err());
        assert!(with(&|c| c.deletion_window.max_days = MAX_DELETION_DAYS + 1).is_err());
        assert!(with(&|c| c.deletion_window.default_days = 31).is_err());
        assert!(
            with(&|c| {
                c.deletion_window = DeletionWindow {
                    default_days: 1,
                    min_days: 1,
                    max_days: MAX_DELETION_DAYS,
                }
            })
            .is_ok()
        );
        assert!(with(&|c| c.health_interval = Duration::from_secs(31)).is_err());
        assert!(with(&|c| c.health_interval = Duration::ZERO).is_err());
        assert!(with(&|c| c.health_interval = MAX_HEALTH_INTERVAL).is_ok());
    }
}
