//! What one client may hold of a server: connections, time to finish a TLS handshake, a request
//! head and a body, header bytes, HTTP/2 streams. Every service reads it from the same
//! `[server.limits]` table ([`LimitsConfig`], overridable like any key:
//! `XKI_PROXY__SERVER__LIMITS__…`, `EKM__SERVER__LIMITS__…`, `KMS_CONNECTOR__SERVER__LIMITS__…`)
//! and fills what the table leaves out from its own defaults ([`LimitsConfig::resolve`]): the
//! kms-connector, whose SDK clients put every parameter (a 32 KB policy too) in the query
//! string, allows a longer request head than the others.

use std::time::Duration;

use serde::Deserialize;

/// Limits of one server (all its listeners together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once. One more gets the protocol's overload answer (bounded, see
    /// [`crate::OVERLOAD_ANSWERS`]) and is closed, instead of queueing until descriptors run out.
    pub max_connections: usize,
    /// Time to complete a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to send the first request head, from the connection's first byte (HTTP/1.1) or
    /// from the connection (HTTP/2 preface and settings). A connection with no request in
    /// progress for the keep-alive time plus this is closed, whatever it sends meanwhile.
    pub header_timeout: Duration,
    /// Time to send a whole request body, counted from its head.
    pub body_timeout: Duration,
    /// Largest header list, counted as HTTP/2 does (name + value + 32 bytes per field, plus the
    /// request line). HTTP/2 advertises it in `SETTINGS_MAX_HEADER_LIST_SIZE`; over HTTP/1.1 a
    /// larger head gets `431`.
    pub max_header_bytes: usize,
    /// HTTP/2 streams one connection may have open (`SETTINGS_MAX_CONCURRENT_STREAMS`); more are
    /// refused with `REFUSED_STREAM`.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(3),
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_concurrent_streams: 128,
        }
    }
}

impl Limits {
    /// Refuses values no server can work with.
    pub fn checked(self) -> Result<Self, String> {
        let problem = if self.max_connections == 0 {
            "max_connections must be at least 1"
        } else if self.handshake_timeout.is_zero()
            || self.header_timeout.is_zero()
            || self.body_timeout.is_zero()
        {
            "handshake_timeout_ms, header_timeout_ms and body_timeout_ms must be positive"
        } else if self.max_header_bytes < 1024 || self.max_header_bytes > 1024 * 1024 {
            "max_header_bytes must be 1024 to 1048576"
        } else if self.max_concurrent_streams == 0 {
            "max_concurrent_streams must be at least 1"
        } else {
            return Ok(self);
        };
        Err(format!("server.limits: {problem}"))
    }
}

/// `[server.limits]` as written: durations in milliseconds, every key optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// [`Limits::max_connections`].
    pub max_connections: Option<usize>,
    /// [`Limits::handshake_timeout`], ms.
    pub handshake_timeout_ms: Option<u64>,
    /// [`Limits::header_timeout`], ms.
    pub header_timeout_ms: Option<u64>,
    /// [`Limits::body_timeout`], ms.
    pub body_timeout_ms: Option<u64>,
    /// [`Limits::max_header_bytes`].
    pub max_header_bytes: Option<usize>,
    /// [`Limits::max_concurrent_streams`].
    pub max_concurrent_streams: Option<u32>,
}

impl LimitsConfig {
    /// The limits this table sets, `defaults` for the rest, checked.
    pub fn resolve(&self, defaults: Limits) -> Result<Limits, String> {
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        Limits {
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            handshake_timeout: ms(self.handshake_timeout_ms, defaults.handshake_timeout),
            header_timeout: ms(self.header_timeout_ms, defaults.header_timeout),
            body_timeout: ms(self.body_timeout_ms, defaults.body_timeout),
            max_header_bytes: self.max_header_bytes.unwrap_or(defaults.max_header_bytes),
            max_concurrent_streams: self
                .max_concurrent_streams
                .unwrap_or(defaults.max_concurrent_streams),
        }
        .checked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(default)]
        limits: LimitsConfig,
    }

    fn parse(text: &str) -> Result<Limits, String> {
        toml::from_str::<Section>(text)
            .map_err(|e| e.to_string())?
            .limits
            .resolve(Limits::default())
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse("").unwrap(), Limits::default());
        let l = parse("[limits]\nbody_timeout_ms = 1500\nmax_connections = 8\n").unwrap();
        assert_eq!(l.body_timeout, Duration::from_millis(1500));
        assert_eq!(l.max_connections, 8);
        assert_eq!(l.max_header_bytes, Limits::default().max_header_bytes);
    }

    #[test]
    fn unusable_values_and_unknown_keys_are_refused() {
        for bad in [
            "max_connections = 0",
            "body_timeout_ms = 0",
            "handshake_timeout_ms = 0",
            "max_header_bytes = 100",
            "max_concurrent_streams = 0",
            "max_body = 3",
        ] {
            assert!(parse(&format!("[limits]\n{bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn what_the_table_leaves_out_comes_from_the_service_defaults() {
        let defaults = Limits {
            max_header_bytes: 128 * 1024,
            ..Limits::default()
        };
        let table: Section = toml::from_str("[limits]\nmax_connections = 8\n").unwrap();
        let limits = table.limits.resolve(defaults).unwrap();
        assert_eq!(limits.max_header_bytes, 128 * 1024);
        assert_eq!(limits.max_connections, 8);
    }
}
