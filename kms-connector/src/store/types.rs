//! Value types of the store: the enumerations it persists as their wire names, times, paging.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use schemas::kms::KeyState;

use super::error::StoreError;

schemas::wire_enum! {
    /// The kind of a KMS instance: where its keys' material lives.
    InstanceKind {
        /// Material sealed under the connector's root key, stored in `key_versions`.
        Software => "software",
        /// Material inside a PKCS#11 HSM.
        Hardware => "hardware",
        /// Metadata only; crypto through an XKI proxy.
        External => "external",
    }
}

schemas::wire_enum! {
    /// The connection state of an instance to its key store (external: the XKI proxy).
    ConnectionState {
        /// Never connected.
        Uninitialized => "Uninitialized",
        /// A connection attempt is in progress.
        Connecting => "Connecting",
        /// Reachable and healthy.
        Connected => "Connected",
        /// Disconnected on purpose.
        Disconnected => "Disconnected",
        /// Failed; see `connection_error_code`.
        Error => "Error",
    }
}

impl ConnectionState {
    /// The states in which the operator wants the connection up (it connected, and has not
    /// disconnected since); `Disconnected` and `Uninitialized` mean down.
    pub const WANTED_UP: &'static [Self] = &[Self::Connecting, Self::Connected, Self::Error];

    /// Whether the operator wants the connection up in this state.
    pub fn wanted_up(self) -> bool {
        Self::WANTED_UP.contains(&self)
    }
}

schemas::wire_enum! {
    /// `AutomaticRotation` of a key.
    AutomaticRotation {
        /// Rotates every `rotation_interval_secs`.
        Enabled => "Enabled",
        /// Never rotates automatically.
        Disabled => "Disabled",
        /// Rotation configured but paused (e.g. while the key is disabled).
        Suspended => "Suspended",
    }
}

/// Parses a stored key state.
pub(crate) fn parse_key_state(text: &str) -> Result<KeyState, StoreError> {
    [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::PendingImport,
        KeyState::Unavailable,
    ]
    .into_iter()
    .find(|state| state.as_str() == text)
    .ok_or_else(|| StoreError::Corrupt(format!("unknown key state {text:?}")))
}

/// Parses a stored [`text_enum!`] value, naming the column when it is unknown.
pub(crate) fn parse_stored<T>(
    parse: fn(&str) -> Option<T>,
    column: &str,
    text: &str,
) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("unknown {column} {text:?}")))
}

/// A point in time: Unix milliseconds, UTC. This is what every time column holds (`BIGINT`),
/// identical on SQLite and PostgreSQL and ordered by plain integer comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current time (clock before 1970 → 0).
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Whole seconds since the epoch, `t` → `t` × 1000 ms (saturating).
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Whole seconds since the epoch (rounded down).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This time plus `secs` seconds (saturating).
    pub const fn plus_secs(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs.saturating_mul(1000)))
    }
}

impl From<SystemTime> for UnixMillis {
    fn from(time: SystemTime) -> Self {
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self(millis)
    }
}

impl From<UnixMillis> for SystemTime {
    fn from(time: UnixMillis) -> Self {
        let since_epoch = Duration::from_millis(time.0.unsigned_abs());
        if time.0 >= 0 {
            UNIX_EPOCH + since_epoch
        } else {
            UNIX_EPOCH - since_epoch
        }
    }
}

/// A page request: `number` ≥ 1, `size` 1–100 (the OpenAPI `PageNumber` / `PageSize` rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    number: u32,
    size: u32,
}

impl Page {
    /// Largest page size the store serves.
    pub const MAX_SIZE: u32 = 100;

    /// A page, or `InvalidArgument` outside the ranges above.
    pub fn new(number: u32, size: u32) -> Result<Self, StoreError> {
        if number == 0 {
            return Err(StoreError::InvalidArgument(
                "page number must be ≥ 1".to_owned(),
            ));
        }
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(StoreError::InvalidArgument(format!(
                "page size must be 1–{}",
                Self::MAX_SIZE
            )));
        }
        Ok(Self { number, size })
    }

    /// The first page of `size` items.
    pub fn first(size: u32) -> Result<Self, StoreError> {
        Self::new(1, size)
    }

    /// The 1-based page number.
    pub const fn number(self) -> u32 {
        self.number
    }

    /// Items per page.
    pub const fn size(self) -> u32 {
        self.size
    }

    /// Rows to skip: `(number − 1) × size` (cannot overflow an `i64`).
    pub(crate) fn offset(self) -> i64 {
        (i64::from(self.number) - 1) * i64::from(self.size)
    }

    pub(crate) fn limit(self) -> i64 {
        i64::from(self.size)
    }
}

impl Default for Page {
    /// Page 1 of 10, the OpenAPI default.
    fn default() -> Self {
        Self {
            number: 1,
            size: 10,
        }
    }
}

/// One page of results and the total number of matching rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T> {
    /// The rows of this page, in the listing's stable order.
    pub items: Vec<T>,
    /// Rows matching the query across all pages.
    pub total_count: u64,
    /// The page these items are.
    pub page: Page,
}

pub(crate) fn count_to_u64(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for kind in InstanceKind::ALL {
            assert_eq!(InstanceKind::parse(kind.as_str()), Some(*kind));
        }
        for state in ConnectionState::ALL {
            assert_eq!(ConnectionState::parse(state.as_str()), Some(*state));
        }
        assert_eq!(AutomaticRotation::ALL.len(), 3);
        for state in [
            "Enabled",
            "Disabled",
            "PendingDeletion",
            "PendingImport",
            "Unavailable",
        ] {
            assert_eq!(parse_key_state(state).unwrap().as_str(), state);
        }
        assert!(parse_key_state("enabled").is_err());
    }

    #[test]
    fn page_rules_and_offsets() {
        assert!(Page::new(0, 10).is_err());
        assert!(Page::new(1, 0).is_err());
        assert!(Page::new(1, 101).is_err());
        assert_eq!(Page::new(3, 25).unwrap().offset(), 50);
        assert_eq!(
            Page::new(u32::MAX, 100).unwrap().offset(),
            (i64::from(u32::MAX) - 1) * 100
        );
        assert_eq!(Page::default().size(), 10);
    }

    #[test]
    fn unix_millis() {
        assert_eq!(UnixMillis::from_secs(2).plus_secs(3), UnixMillis(5000));
        assert_eq!(UnixMillis(-1).as_secs(), -1);
        let now = UnixMillis::now();
        assert_eq!(UnixMillis::from(SystemTime::from(now)), now);
        assert_eq!(
            UnixMillis::from(SystemTime::from(UnixMillis(-1500))),
            UnixMillis(0)
        );
    }
}
