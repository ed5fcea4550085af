//! Deep health (an encrypt + decrypt round trip on the dedicated probe key, through the same
//! queue as real work) and the background housekeeping thread that runs it and the deletion
//! reaper.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, after, select};
use time::OffsetDateTime;

use super::Inner;
use super::keys::{self, PROBE_LABEL};
use crate::ciphertext::AadFormat;
use crate::error::{Error, Result};
use crate::hsm::KeyOpError;
use crate::manager::{Health, HealthStatus, HsmHealth, KeyUsage};

/// A cached result older than this is reported UNAVAILABLE (XKS: ≤ 60 s).
const MAX_HEALTH_AGE: Duration = Duration::from_secs(60);
/// Budget of one probe, queue included.
const PROBE_BUDGET: Duration = Duration::from_secs(2);
/// How often expired deletions are purged.
const REAP_INTERVAL: Duration = Duration::from_secs(60);
/// Longest a reaper pass may hold up the next probe (it waits for admin changes to finish).
const REAP_BUDGET: Duration = Duration::from_secs(10);

impl Inner {
    /// Creates the probe key if the token lacks it.
    pub(super) async fn ensure_probe_key(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        self.on_worker(deadline, |s| {
            if s.find_secret_key_opt(PROBE_LABEL)?.is_none() {
                keys::generate_key(s.session()?, PROBE_LABEL, KeyUsage::BOTH)?;
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// One probe: encrypt and decrypt a fixed message on the probe key.
    pub(super) async fn probe(&self) -> Health {
        let started = Instant::now();
        let queued_before = self.hsm.pool().queued();
        let result = self
            .hsm
            .pool()
            .run(started + PROBE_BUDGET, |s| {
                let message = b"ekm deep health probe";
                let aad = AadFormat::Raw.gcm_aad(b"probe", &[])?;
                let op = |e: KeyOpError| match e {
                    KeyOpError::Other(e) => e,
                    KeyOpError::BadTag => Error::Internal("probe tag mismatch".into()),
                    KeyOpError::Pkcs11(rv, f) => Error::HsmUnavailable(format!("{f:?}: {rv:?}")),
                };
                let sealed = s.encrypt(PROBE_LABEL, &aad, message).map_err(op)?;
                let back = s
                    .decrypt(
                        PROBE_LABEL,
                        &sealed.iv,
                        &aad,
                        &sealed.ciphertext,
                        &sealed.tag,
                    )
                    .map_err(op)?;
                if back.as_slice() != message {
                    return Err(Error::Internal("probe round trip mismatch".into()));
                }
                Ok(())
            })
            .await;
        let latency = started.elapsed();
        let (status, detail) = match result {
            Ok(_) if latency > self.config.degraded_latency => (
                HealthStatus::Degraded,
                Some("probe slower than threshold".to_owned()),
            ),
            Ok(_) if self.hsm.pool().queued() * 5 >= self.hsm.pool().capacity() * 4 => (
                HealthStatus::Degraded,
                Some("HSM queue over 80 %".to_owned()),
            ),
            Ok(_) => (HealthStatus::Active, None),
            Err(Error::Throttled) => (HealthStatus::Degraded, Some("HSM queue full".to_owned())),
            // Out of time behind other work: the HSM is busy, not gone.
            Err(Error::DeadlineExceeded) if queued_before > 0 => (
                HealthStatus::Degraded,
                Some("probe waited behind a busy HSM queue past its budget".to_owned()),
            ),
            Err(e) => (HealthStatus::Unavailable, Some(e.to_string())),
        };
        if status != HealthStatus::Active {
            tracing::warn!(?status, detail = detail.as_deref(), "deep health probe");
        }
        Health {
            status,
            checked_at: OffsetDateTime::now_utc(),
            hsms: vec![HsmHealth {
                id: self.hsm.token().label.clone(),
                model: self.hsm.token().model.clone(),
                status,
                probe_latency: Some(latency),
                detail,
            }],
        }
    }

    /// The last probe's result; UNAVAILABLE when it is missing or too old.
    pub(super) fn cached_health(&self) -> Health {
        let cached = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = OffsetDateTime::now_utc();
        match cached {
            Some(h) if now - h.checked_at <= MAX_HEALTH_AGE => h,
            _ => Health {
                status: HealthStatus::Unavailable,
                checked_at: now,
                hsms: vec![HsmHealth {
                    id: self.hsm.token().label.clone(),
                    model: self.hsm.token().model.clone(),
                    status: HealthStatus::Unavailable,
                    probe_latency: None,
                    detail: Some("no recent probe result".to_owned()),
                }],
            },
        }
    }
}

/// The background thread: a probe every `health_interval`, the reaper every minute.
pub(super) struct Housekeeping {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Housekeeping {
    pub(super) fn start(inner: Arc<Inner>) -> Result<Self> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Internal(format!("housekeeping runtime: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("ekm-housekeeping".into())
            .spawn(move || {
                let mut next_reap = Instant::now();
                loop {
                    if Instant::now() >= next_reap {
                        next_reap = Instant::now() + REAP_INTERVAL;
                        let reap = async {
                            let now = OffsetDateTime::now_utc();
                            tokio::time::timeout(REAP_BUDGET, inner.purge_expired(now)).await
                        };
                        match runtime.block_on(reap) {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => tracing::warn!(error = %e, "deletion reaper"),
                            Err(_) => tracing::warn!("deletion reaper: over budget, next pass"),
                        }
                    }
                    select! {
                        recv(stopped) -> _ => return,
                        recv(after(inner.config.health_interval)) -> _ => {}
                    }
                    let health = runtime.block_on(inner.probe());
                    *inner.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(health);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot spawn housekeeping: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Stops and joins the thread (dropping the sender wakes it).
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
