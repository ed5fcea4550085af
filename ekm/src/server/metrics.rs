//! Prometheus metrics of the EKM server, served at `/metrics` on the liveness port: latency per
//! API operation (end to end, waiting for an HSM worker, inside the HSM), errors by EKM error
//! code, the HSM queue and the deep-health state. Labels carry operation and error names only,
//! never key ids.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::manager::{HealthStatus, KeyManager, OpContext};

/// Label: the API operation (`encrypt`, `create-key`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// The operation.
    pub op: &'static str,
}

/// Labels: operation and EKM error code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The operation.
    pub op: &'static str,
    /// The error code (`Throttled`, `KeyNotFound`, …).
    pub error: String,
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    request_seconds: Family<OpLabel, Histogram>,
    queue_seconds: Family<OpLabel, Histogram>,
    hsm_seconds: Family<OpLabel, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    queue_depth: Gauge<i64, AtomicI64>,
    queue_capacity: Gauge<i64, AtomicI64>,
    health: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    // 25 µs .. ~0.8 s, doubling: SoftHSM answers in tens of µs, network HSMs in ms.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ekm");
        let request_seconds = Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram);
        let queue_seconds = Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram);
        let hsm_seconds = Family::<OpLabel, Histogram>::new_with_constructor(latency_histogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        let queue_capacity = Gauge::<i64, AtomicI64>::default();
        let health = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "request_duration_seconds",
            "EKM API request latency",
            request_seconds.clone(),
        );
        registry.register(
            "hsm_queue_wait_seconds",
            "Time a request's HSM work waited for a worker",
            queue_seconds.clone(),
        );
        registry.register(
            "hsm_duration_seconds",
            "Time a request's HSM work spent in PKCS#11",
            hsm_seconds.clone(),
        );
        registry.register(
            "errors",
            "API error responses by EKM error code",
            errors.clone(),
        );
        registry.register(
            "hsm_queue_depth",
            "Jobs waiting for an HSM worker (sampled at scrape time)",
            queue_depth.clone(),
        );
        registry.register(
            "hsm_queue_capacity",
            "HSM queue capacity",
            queue_capacity.clone(),
        );
        registry.register(
            "health",
            "Cached deep health (2 active, 1 degraded, 0 unavailable)",
            health.clone(),
        );
        Self {
            registry,
            request_seconds,
            queue_seconds,
            hsm_seconds,
            errors,
            queue_depth,
            queue_capacity,
            health,
        }
    }
}

impl Metrics {
    /// Records one API call: its latency, its HSM queue and PKCS#11 time (zero when it did not
    /// reach the HSM) and, for a failure, its error code.
    pub fn observe(
        &self,
        op: &'static str,
        latency: Duration,
        queue: Duration,
        hsm: Duration,
        error: Option<schemas::ekm::ErrorCode>,
    ) {
        let label = OpLabel { op };
        self.request_seconds
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
        if !hsm.is_zero() {
            self.queue_seconds
                .get_or_create(&label)
                .observe(queue.as_secs_f64());
            self.hsm_seconds
                .get_or_create(&label)
                .observe(hsm.as_secs_f64());
        }
        if let Some(code) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    op,
                    error: format!("{code:?}"),
                })
                .inc();
        }
    }

    /// OpenMetrics text, with the queue and health sampled from `manager` now.
    pub async fn encode(&self, manager: &dyn KeyManager) -> String {
        if let Some(depth) = manager.queue_depth() {
            self.queue_depth
                .set(i64::try_from(depth.queued).unwrap_or(i64::MAX));
            self.queue_capacity
                .set(i64::try_from(depth.capacity).unwrap_or(i64::MAX));
        }
        let ctx = OpContext::new("metrics", Duration::from_secs(1));
        let health = match manager.health(&ctx).await.map(|h| h.status) {
            Ok(HealthStatus::Active) => 2,
            Ok(HealthStatus::Degraded) => 1,
            Ok(HealthStatus::Unavailable) | Err(_) => 0,
        };
        self.health.set(health);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
