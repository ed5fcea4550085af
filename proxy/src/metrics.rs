//! Prometheus metrics served on the ops port: latency per operation, errors by XKI error name,
//! requests in flight, metadata cache hits, deep-health state per HSM, connections of the
//! KMS-facing listener.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label: the XKI operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// `health`, `metadata`, `encrypt`, `decrypt`, `other`.
    pub op: &'static str,
}

/// Labels: operation and error name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The operation.
    pub op: &'static str,
    /// The XKI error name.
    pub error_name: &'static str,
}

/// Label: cache lookup result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// Label: one HSM of the fleet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HsmLabel {
    /// Fleet entry id.
    pub hsm: String,
}

/// Every metric of the proxy.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// End-to-end request latency, seconds.
    pub request_seconds: Family<OpLabel, Histogram>,
    /// Backend (queue + HSM, or EKM round trip) latency, seconds.
    pub backend_seconds: Family<OpLabel, Histogram>,
    /// Errors by name.
    pub errors: Family<ErrorLabels, Counter>,
    /// Requests being served.
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Metadata cache lookups.
    pub cache: Family<CacheLabel, Counter>,
    /// 2 = ACTIVE, 1 = DEGRADED, 0 = UNAVAILABLE.
    pub hsm_health: Family<HsmLabel, Gauge<i64, AtomicI64>>,
    /// Jobs waiting in the in-process HSM queue (sampled at scrape time).
    pub hsm_queue_depth: Gauge<i64, AtomicI64>,
    /// Capacity of that queue.
    pub hsm_queue_capacity: Gauge<i64, AtomicI64>,
    /// KMS-facing connections open (sampled at scrape time).
    pub connections_open: Gauge<i64, AtomicI64>,
    /// KMS-facing connections refused at the connection cap since start (sampled).
    pub connections_refused: Gauge<i64, AtomicI64>,
    /// KMS-facing TLS handshakes that failed or timed out since start (sampled).
    pub tls_handshakes_failed: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s, doubling: the interesting range is well under KMS's 250 ms budget.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("xki");
        let request_seconds = Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram);
        let backend_seconds = Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let cache = Family::<CacheLabel, Counter>::default();
        let hsm_health = Family::<HsmLabel, Gauge<i64, AtomicI64>>::default();
        let hsm_queue_depth = Gauge::<i64, AtomicI64>::default();
        let hsm_queue_capacity = Gauge::<i64, AtomicI64>::default();
        let connections_open = Gauge::<i64, AtomicI64>::default();
        let connections_refused = Gauge::<i64, AtomicI64>::default();
        let tls_handshakes_failed = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "connections_open",
            "Connections open on the KMS-facing listener",
            connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at server.limits.max_connections since start",
            connections_refused.clone(),
        );
        registry.register(
            "tls_handshakes_failed",
            "TLS handshakes on the KMS-facing listener that failed or timed out since start",
            tls_handshakes_failed.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "XKI request latency",
            request_seconds.clone(),
        );
        registry.register(
            "backend_duration_seconds",
            "Key manager latency",
            backend_seconds.clone(),
        );
        registry.register(
            "errors",
            "XKI error responses by error name",
            errors.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "metadata_cache_lookups",
            "Key metadata cache lookups",
            cache.clone(),
        );
        registry.register(
            "hsm_health",
            "Deep health per HSM (2 active, 1 degraded, 0 unavailable)",
            hsm_health.clone(),
        );
        registry.register(
            "hsm_queue_depth",
            "Jobs waiting for an HSM worker (in-process backend)",
            hsm_queue_depth.clone(),
        );
        registry.register(
            "hsm_queue_capacity",
            "HSM queue capacity (in-process backend)",
            hsm_queue_capacity.clone(),
        );
        Self {
            registry,
            request_seconds,
            backend_seconds,
            errors,
            in_flight,
            cache,
            hsm_health,
            hsm_queue_depth,
            hsm_queue_capacity,
            connections_open,
            connections_refused,
            tls_handshakes_failed,
        }
    }
}

impl Metrics {
    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
