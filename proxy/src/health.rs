//! Deep health, refreshed in the background and answered from memory. The key manager runs an
//! encrypt+decrypt round trip on its probe key per HSM; this module asks it every
//! `health.interval_secs` (≤ 30 s) and never serves a result older than 60 s as healthy.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ekm::{HealthStatus as EkmStatus, KeyManager, OpContext};
use schemas::xki::{EkmFleetEntry, HealthResponse, HealthStatus};

use crate::metrics::{HsmLabel, Metrics};

/// Oldest health result served as is (spec: "no older than 1 minute").
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// Identity strings of the health response.
pub const VENDOR: &str = "HYOK project";
/// Product and version.
pub const MODEL: &str = concat!("xki-proxy ", env!("CARGO_PKG_VERSION"));
/// Key manager vendor.
pub const EKM_VENDOR: &str = "HYOK ekm (PKCS#11)";

#[derive(Debug, Clone)]
struct Snapshot {
    fleet: Vec<EkmFleetEntry>,
    taken: Instant,
}

/// The cached deep health.
#[derive(Debug)]
pub struct HealthCache {
    fleet_size: u32,
    latest: RwLock<Option<Snapshot>>,
}

impl HealthCache {
    /// An empty cache (everything UNAVAILABLE until the first probe).
    pub fn new(fleet_size: u32) -> Self {
        Self {
            fleet_size,
            latest: RwLock::new(None),
        }
    }

    /// The health response, from memory.
    pub fn response(&self) -> HealthResponse {
        let fleet = match &*self.latest.read().unwrap_or_else(|e| e.into_inner()) {
            Some(s) if s.taken.elapsed() <= MAX_AGE => s.fleet.clone(),
            Some(s) => s
                .fleet
                .iter()
                .map(|e| EkmFleetEntry {
                    health_status: HealthStatus::Unavailable,
                    ..e.clone()
                })
                .collect(),
            None => vec![unavailable_entry()],
        };
        HealthResponse {
            xks_proxy_fleet_size: self.fleet_size,
            xks_proxy_vendor: VENDOR.into(),
            xks_proxy_model: MODEL.into(),
            ekm_vendor: EKM_VENDOR.into(),
            ekm_fleet_details: fleet,
        }
    }

    /// True when at least one HSM is ACTIVE or DEGRADED (the `/ready` answer).
    pub fn ready(&self) -> bool {
        !self.response().all_unavailable()
    }

    /// Runs one probe now and stores its result.
    pub async fn refresh(&self, backend: &dyn KeyManager, metrics: &Metrics) {
        let ctx = OpContext::new("health-probe", Duration::from_secs(5));
        let result = backend.health(&ctx).await;
        // The key manager may answer from its own cache: the snapshot is as old as its probe.
        let age = result
            .as_ref()
            .ok()
            .and_then(|h| Duration::try_from(time::OffsetDateTime::now_utc() - h.checked_at).ok())
            .unwrap_or_default();
        let fleet = match result {
            Ok(h) if !h.hsms.is_empty() => h
                .hsms
                .iter()
                .take(HealthResponse::MAX_FLEET_ENTRIES)
                .map(|hsm| EkmFleetEntry {
                    id: hsm.id.clone(),
                    model: hsm.model.clone(),
                    health_status: match hsm.status {
                        EkmStatus::Active => HealthStatus::Active,
                        EkmStatus::Degraded => HealthStatus::Degraded,
                        EkmStatus::Unavailable => HealthStatus::Unavailable,
                    },
                })
                .collect(),
            Ok(_) => vec![unavailable_entry()],
            Err(e) => {
                tracing::warn!(error = %e, "deep health probe failed");
                vec![unavailable_entry()]
            }
        };
        for entry in &fleet {
            let level = match entry.health_status {
                HealthStatus::Active => 2,
                HealthStatus::Degraded => 1,
                HealthStatus::Unavailable => 0,
            };
            metrics
                .hsm_health
                .get_or_create(&HsmLabel {
                    hsm: entry.id.clone(),
                })
                .set(level);
        }
        let now = Instant::now();
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(Snapshot {
            fleet,
            taken: now.checked_sub(age).unwrap_or(now),
        });
    }

    /// Refreshes forever every `interval`.
    pub async fn run(
        self: Arc<Self>,
        backend: Arc<dyn KeyManager>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh(backend.as_ref(), &metrics).await;
        }
    }
}

fn unavailable_entry() -> EkmFleetEntry {
    EkmFleetEntry {
        id: "ekm".into(),
        model: "unknown".into(),
        health_status: HealthStatus::Unavailable,
    }
}
