//! The plain-HTTP operations listener: `/ping` (liveness), `/ready` (deep health not all
//! UNAVAILABLE, with the HSM details), `/metrics` (Prometheus); and the load balancer's probes
//! on the KMS-facing port when mTLS is off, which say ready or not and nothing about the HSMs.
//! It listens on loopback by default. The admin API has its own listener (`admin.rs`).

use std::sync::Arc;

use actix_web::{HttpResponse, web};

use crate::health::HealthCache;
use crate::metrics::Metrics;

/// State of the ops listener.
pub struct OpsState {
    /// Deep health.
    pub health: Arc<HealthCache>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The key manager.
    pub backend: Arc<dyn ekm::KeyManager>,
    /// The KMS-facing listener's counters.
    pub listener: Arc<listener::Stats>,
}

impl std::fmt::Debug for OpsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsState").finish_non_exhaustive()
    }
}

/// Routes of the ops listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ping", web::get().to(ping))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// `/ready` on the ops port: 200 while at least one HSM is ACTIVE or DEGRADED, 503 otherwise;
/// the body is the cached deep health either way (HSM ids, models, states).
pub async fn ready(health: web::Data<HealthCache>) -> HttpResponse {
    if health.ready() {
        HttpResponse::Ok().json(health.response())
    } else {
        HttpResponse::ServiceUnavailable().json(health.response())
    }
}

/// `/ready` on the KMS-facing port (reachable by anyone who can connect): the same decision,
/// but the body names no vendor, model or firmware.
pub async fn ready_public(health: web::Data<HealthCache>) -> HttpResponse {
    if health.ready() {
        HttpResponse::Ok().json(serde_json::json!({"status": "READY"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "UNAVAILABLE"}))
    }
}

/// `/ping`: the process answers.
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().body("pong")
}

async fn metrics(state: web::Data<OpsState>) -> HttpResponse {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let listener = &state.listener;
    (state.metrics.connections_open).set(gauge(listener.open_connections()));
    (state.metrics.connections_refused).set(count(listener.refused_connections()));
    (state.metrics.tls_handshakes_failed).set(count(listener.failed_handshakes()));
    if let Some(depth) = state.backend.queue_depth() {
        state.metrics.hsm_queue_depth.set(gauge(depth.queued));
        state.metrics.hsm_queue_capacity.set(gauge(depth.capacity));
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
