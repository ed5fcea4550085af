//! The PKCS#11 `KeyManager`: the EKM's key directory on the workspace's PKCS#11 core
//! ([`crate::hsm`]). Keys and their records live in one token (see [`keys`] for why); every
//! PKCS#11 call runs on the core's fixed pool of HSM worker threads, each with one logged-in
//! session and a handle cache.
//!
//! **Key state on the hot path.** Crypto operations check the key's record from an in-memory
//! copy. This process refreshes the copy whenever it changes a key; otherwise a copy older than
//! [`Pkcs11Config::state_ttl`] (default 5 s) is re-read from the HSM first, so a key disabled by
//! another replica or by the CLI stops working here within that bound.

pub mod config;
mod health;
pub mod keys;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use schemas::xki::ExternalKeyId;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::hsm::{Hsm, HsmConfig, HsmSession, KeyOpError, hsm_error, pool};
pub use crate::hsm::{find_token, init_token, library};
pub use config::{DeletionWindow, IvSource, Pkcs11Config, TokenSelector, VendorProfile};
use keys::{KeyRecord, Stored};

use crate::ciphertext::{CiphertextMetadata, Limits};
use crate::error::{Error, Operation, Result};
use crate::manager::{
    AdoptKey, CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Health, KeyInfo,
    KeyManager, KeyOrigin, OpContext, generate_key_id,
};

struct Cached {
    record: Option<Arc<KeyRecord>>,
    fetched: Instant,
}

/// Unknown ids remembered at most (negative entries are dropped past this).
const MAX_DIRECTORY: usize = 100_000;
/// Most attempts of an admin change that keeps meeting concurrent writers (another replica,
/// the admin CLI; see `keys::store`) before it gives up with `Throttled`.
const MAX_ATTEMPTS: u32 = 8;

struct Inner {
    hsm: Hsm,
    config: Pkcs11Config,
    directory: RwLock<HashMap<ExternalKeyId, Cached>>,
    /// Serialises this process's admin changes. The guard travels into the worker job, so a
    /// change whose caller stopped waiting still holds it until the HSM work is done.
    admin: Arc<tokio::sync::Mutex<()>>,
    health: Mutex<Option<Health>>,
}

/// The PKCS#11 key manager.
pub struct Pkcs11KeyManager {
    inner: Arc<Inner>,
    housekeeping: Option<health::Housekeeping>,
}

impl std::fmt::Debug for Pkcs11KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11KeyManager")
            .field("hsm", &self.inner.hsm)
            .finish_non_exhaustive()
    }
}

impl Pkcs11KeyManager {
    /// Loads the library, finds the token, logs in once, starts the workers, makes sure the
    /// health-probe key exists, runs a first probe, and (if configured) starts the background
    /// probe and deletion reaper. Blocks the calling thread for the PKCS#11 start-up calls.
    pub async fn open(config: Pkcs11Config) -> Result<Self> {
        config.check()?;
        let hsm = Hsm::open(HsmConfig {
            module: config.module.clone(),
            token: config.token.clone(),
            pin: config.pin.clone(),
            profile: config.profile.clone(),
            workers: config.workers,
            queue_capacity: config.queue_capacity,
            thread_name: "ekm-hsm",
            interchangeable_labels: vec![keys::PROBE_LABEL.to_owned()],
        })?;
        let background = config.background;
        let inner = Arc::new(Inner {
            hsm,
            config,
            directory: RwLock::new(HashMap::new()),
            admin: Arc::new(tokio::sync::Mutex::new(())),
            health: Mutex::new(None),
        });
        inner.ensure_probe_key().await?;
        let first = inner.probe().await;
        *inner.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
        let housekeeping = background.then(|| health::Housekeeping::start(Arc::clone(&inner)));
        Ok(Self {
            inner,
            housekeeping: housekeeping.transpose()?,
        })
    }

    /// Destroys the HSM objects of every key whose deletion date is at or before `now`; returns
    /// their ids. The background reaper calls this every minute with the current time.
    pub async fn purge_expired(&self, now: OffsetDateTime) -> Result<Vec<ExternalKeyId>> {
        self.inner.purge_expired(now).await
    }

    /// Runs a deep-health probe now (the CLI's `health`), updating the cached result.
    pub async fn probe_now(&self) -> Health {
        let health = self.inner.probe().await;
        *self.inner.health.lock().unwrap_or_else(|p| p.into_inner()) = Some(health.clone());
        health
    }

    /// Labels of the secret key objects of a key's versions (for tests and audits).
    pub async fn version_labels(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<Vec<String>> {
        let record = self.inner.fresh_record(ctx, id).await?;
        Ok(record.versions.iter().map(|v| v.label.clone()).collect())
    }

    /// The worker pool's sizes and counters.
    pub fn pool_stats(&self) -> (usize, usize, &pool::PoolStats) {
        let pool = &self.inner.hsm.pool();
        (pool.workers(), pool.capacity(), pool.stats())
    }
}

impl Drop for Pkcs11KeyManager {
    fn drop(&mut self) {
        if let Some(housekeeping) = self.housekeeping.take() {
            housekeeping.stop();
        }
    }
}

fn log_timing(ctx: &OpContext, op: &'static str, id: &ExternalKeyId, q: Duration, b: Duration) {
    ctx.timings.record(q, b);
    tracing::debug!(
        request_id = %ctx.request_id,
        op,
        key_id = %id,
        queue_us = q.as_micros() as u64,
        hsm_us = b.as_micros() as u64,
        "hsm op"
    );
}

impl Inner {
    /// The key's record for a crypto operation: from memory when fresh enough.
    async fn record(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<Arc<KeyRecord>> {
        {
            let directory = self.directory.read().unwrap_or_else(|p| p.into_inner());
            if let Some(cached) = directory.get(id) {
                if cached.fetched.elapsed() < self.config.state_ttl {
                    return cached
                        .record
                        .clone()
                        .ok_or_else(|| Error::KeyNotFound(id.clone()));
                }
            }
        }
        self.fresh_record(ctx, id).await
    }

    /// The key's record read from the HSM now.
    async fn fresh_record(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<Arc<KeyRecord>> {
        let lookup = id.clone();
        let record = self
            .on_worker(ctx.deadline, move |s| keys::load(s.session()?, &lookup))
            .await?
            .value
            .map(Arc::new);
        self.remember(id, record.clone());
        record.ok_or_else(|| Error::KeyNotFound(id.clone()))
    }

    /// Caches `record` (`None`: no such key). A record read before a newer one was cached (a
    /// slow read overtaken by a local change) does not replace it.
    fn remember(&self, id: &ExternalKeyId, record: Option<Arc<KeyRecord>>) {
        let mut directory = self.directory.write().unwrap_or_else(|p| p.into_inner());
        if let (
            Some(new),
            Some(Cached {
                record: Some(held), ..
            }),
        ) = (&record, directory.get(id))
        {
            if held.revision > new.revision {
                return;
            }
        }
        if directory.len() >= MAX_DIRECTORY {
            directory.retain(|_, c| c.record.is_some());
        }
        directory.insert(
            id.clone(),
            Cached {
                record,
                fetched: Instant::now(),
            },
        );
    }

    /// Runs `job` on an HSM worker. A job that finds the HSM unavailable (session lost,
    /// device error) drops the worker's session, so that the next job opens a new one.
    async fn on_worker<T, F>(&self, deadline: Instant, job: F) -> Result<pool::Timed<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut HsmSession) -> Result<T> + Send + 'static,
    {
        self.hsm
            .pool()
            .run(deadline, move |s| {
                let result = job(s);
                if let Err(Error::HsmUnavailable(_)) = &result {
                    s.reset();
                }
                result
            })
            .await
    }

    /// Applies `change` to the key's freshly read record and stores it when `change` returns
    /// true, inside one worker job; refreshes the in-memory copy. A concurrent writer's change
    /// is never overwritten: on a conflict the new versions `change` made are destroyed and the
    /// change is applied again to the newer record.
    async fn mutate<F>(&self, ctx: &OpContext, id: &ExternalKeyId, change: F) -> Result<KeyInfo>
    where
        F: Fn(&mut HsmSession, &mut KeyRecord) -> Result<bool> + Send + 'static,
    {
        let admin = Arc::clone(&self.admin).lock_owned().await;
        let key = id.clone();
        let deadline = ctx.deadline;
        let record = self
            .on_worker(deadline, move |s| {
                let _admin = admin;
                for attempt in 1..=MAX_ATTEMPTS {
                    let base = keys::load(s.session()?, &key)?
                        .ok_or_else(|| Error::KeyNotFound(key.clone()))?;
                    let mut record = base.clone();
                    if !change(s, &mut record)? {
                        return Ok(record);
                    }
                    record.revision = base.revision + 1;
                    match keys::store(s.session()?, &record)? {
                        Stored::Done => return Ok(record),
                        Stored::Conflict => {
                            discard_new_versions(s, Some(&base), &record)?;
                            back_off(attempt, deadline)?;
                        }
                    }
                }
                Err(too_contended(&key))
            })
            .await?
            .value;
        let info = record.info();
        self.remember(id, Some(Arc::new(record)));
        Ok(info)
    }

    /// Creates a brand-new record, with `make` producing the version-1 label inside the job.
    /// Two writers creating the same id at once: one stores it, the other gets
    /// `KeyAlreadyExists` (and its generated key object is destroyed).
    async fn insert<F>(&self, ctx: &OpContext, id: ExternalKeyId, make: F) -> Result<KeyInfo>
    where
        F: Fn(&mut HsmSession, &ExternalKeyId) -> Result<KeyRecord> + Send + 'static,
    {
        let admin = Arc::clone(&self.admin).lock_owned().await;
        let key = id.clone();
        let deadline = ctx.deadline;
        let record = self
            .on_worker(deadline, move |s| {
                let _admin = admin;
                for attempt in 1..=MAX_ATTEMPTS {
                    if keys::load(s.session()?, &key)?.is_some() {
                        return Err(Error::KeyAlreadyExists(key.to_string()));
                    }
                    let record = make(s, &key)?;
                    match keys::store(s.session()?, &record)? {
                        Stored::Done => return Ok(record),
                        Stored::Conflict => {
                            if record.origin == KeyOrigin::Generated {
                                discard_new_versions(s, None, &record)?;
                            }
                            back_off(attempt, deadline)?;
                        }
                    }
                }
                Err(too_contended(&key))
            })
            .await?
            .value;
        let info = record.info();
        self.remember(&id, Some(Arc::new(record)));
        tracing::info!(request_id = %ctx.request_id, key_id = %id, "key created");
        Ok(info)
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<Vec<ExternalKeyId>> {
        let admin = Arc::clone(&self.admin).lock_owned().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let now = now.unix_timestamp();
        let purged = self
            .on_worker(deadline, move |s| {
                let _admin = admin;
                let mut purged = Vec::new();
                for record in keys::load_all(s.session()?)? {
                    if !record.deletion_due(now) {
                        continue;
                    }
                    for version in &record.versions {
                        if let Some(object) = s.find_secret_key_opt(&version.label)? {
                            let _exclusive = keys::writing();
                            keys::destroy_if_present(s.session()?, object)?;
                        }
                        s.destroyed(&version.label);
                    }
                    keys::remove(s.session()?, &record.id)?;
                    purged.push(record.id);
                }
                Ok(purged)
            })
            .await?
            .value;
        for id in &purged {
            self.remember(id, None);
            tracing::info!(key_id = %id, "key destroyed at the end of its deletion window");
        }
        Ok(purged)
    }
}

/// Destroys the key objects of the versions `record` has and `base` has not (all of them
/// without a base): what a change made before its write lost to a concurrent one.
fn discard_new_versions(
    s: &mut HsmSession,
    base: Option<&KeyRecord>,
    record: &KeyRecord,
) -> Result<()> {
    let known = |label: &str| base.is_some_and(|b| b.versions.iter().any(|v| v.label == label));
    for version in record.versions.iter().filter(|v| !known(&v.label)) {
        if let Some(object) = s.find_secret_key_opt(&version.label)? {
            let _exclusive = keys::writing();
            keys::destroy_if_present(s.session()?, object)?;
        }
        s.destroyed(&version.label);
    }
    Ok(())
}

/// Waits a little before attempt `attempt + 1` of a change that met a concurrent writer: a
/// random 1 to 2^attempt ms (at most 64), on the worker (admin changes are rare). Gives up
/// when that would pass the deadline.
fn back_off(attempt: u32, deadline: Instant) -> Result<()> {
    use rand::Rng as _;
    let cap = 1u64 << attempt.min(6);
    let wait = Duration::from_millis(rand::rng().random_range(1..=cap));
    if Instant::now() + wait >= deadline {
        return Err(Error::DeadlineExceeded);
    }
    std::thread::sleep(wait);
    Ok(())
}

fn too_contended(id: &ExternalKeyId) -> Error {
    tracing::warn!(key_id = %id, "admin change gave up after {MAX_ATTEMPTS} concurrent writes");
    Error::Throttled
}

#[async_trait::async_trait]
impl KeyManager for Pkcs11KeyManager {
    async fn create_key(&self, ctx: &OpContext, request: CreateKey) -> Result<KeyInfo> {
        let description = crate::manager::check_description(request.description)?;
        let id = request.id.unwrap_or_else(generate_key_id);
        let usage = request.usage;
        self.inner
            .insert(ctx, id, move |s, id| {
                let label = keys::version_label(id, 1);
                keys::generate_key(s.session()?, &label, usage)?;
                Ok(KeyRecord::new(
                    id.clone(),
                    usage,
                    label,
                    KeyOrigin::Generated,
                    description.clone(),
                ))
            })
            .await
    }

    async fn adopt_key(&self, ctx: &OpContext, request: AdoptKey) -> Result<KeyInfo> {
        let description = crate::manager::check_description(request.description)?;
        if !keys::adoptable_label(&request.hsm_label) {
            return Err(Error::Validation(
                "this label is empty or belongs to the EKM itself".into(),
            ));
        }
        let id = request.id.unwrap_or_else(generate_key_id);
        let (label, usage) = (request.hsm_label, request.usage);
        self.inner
            .insert(ctx, id, move |s, id| {
                let label = label.clone();
                let object = match s.find_secret_key_opt(&label) {
                    Ok(Some(object)) => object,
                    Ok(None) => {
                        return Err(Error::Validation(
                            "no secret key object has this label".into(),
                        ));
                    }
                    // Several objects share the label: the caller must make it unique first.
                    Err(Error::Internal(reason)) => return Err(Error::Validation(reason)),
                    Err(e) => return Err(e),
                };
                let session = s.session()?;
                keys::check_adoptable(session, object)?;
                let managed = keys::load_all(session)?;
                if managed
                    .iter()
                    .any(|r| r.versions.iter().any(|v| v.label == label))
                {
                    return Err(Error::KeyAlreadyExists(format!("HSM key {label:?}")));
                }
                let _exclusive = keys::writing();
                session
                    .update_attributes(object, &keys::adopted_attributes(usage))
                    .map_err(hsm_error)?;
                Ok(KeyRecord::new(
                    id.clone(),
                    usage,
                    label,
                    KeyOrigin::Adopted,
                    description.clone(),
                ))
            })
            .await
    }

    async fn describe_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        Ok(self.inner.fresh_record(ctx, id).await?.info())
    }

    async fn list_keys(&self, ctx: &OpContext) -> Result<Vec<KeyInfo>> {
        let records = self
            .inner
            .on_worker(ctx.deadline, |s| keys::load_all(s.session()?))
            .await?
            .value;
        Ok(records.iter().map(KeyRecord::info).collect())
    }

    async fn enable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.mutate(ctx, id, |_, r| r.enable()).await
    }

    async fn disable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.mutate(ctx, id, |_, r| r.disable()).await
    }

    async fn schedule_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        pending_window_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let days = self
            .inner
            .config
            .deletion_window
            .resolve(pending_window_days)?;
        self.inner
            .mutate(ctx, id, move |_, r| r.schedule_deletion(days))
            .await
    }

    async fn cancel_key_deletion(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.mutate(ctx, id, |_, r| r.cancel_deletion()).await
    }

    async fn rotate_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner
            .mutate(ctx, id, |s, r| {
                let version = r.next_version()?;
                let label = keys::version_label(&r.id, version);
                keys::generate_key(s.session()?, &label, r.usage)?;
                r.versions.push(keys::KeyVersion { version, label });
                Ok(true)
            })
            .await
    }

    async fn encrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: EncryptRequest,
    ) -> Result<EncryptOutput> {
        let inner = &self.inner;
        inner.config.limits.check_encrypt(&request)?;
        let record = inner.record(ctx, id).await?;
        record.info().check_crypto(Operation::Encrypt)?;
        let version = record.current()?;
        let key_version = version.version;
        let metadata = CiphertextMetadata {
            aad_format: inner.config.aad_format,
            key_version,
        }
        .encode();
        let gcm_aad = inner.config.aad_format.gcm_aad(&request.aad, &metadata)?;
        // An encrypt-only key cannot run the verification decrypt; its CDIV stays unverified.
        let verify = request.want_cdiv && record.usage.decrypt;
        let label = version.label.clone();
        let key = id.clone();
        let timed = inner
            .hsm
            .pool()
            .run_with(
                ctx.deadline,
                (request, gcm_aad),
                move |s, (request, gcm_aad)| {
                    let op = |e: KeyOpError| e.into_error(&key, Operation::Encrypt);
                    let crate::hsm::aes::Sealed {
                        iv,
                        ciphertext,
                        tag,
                    } = s.encrypt(&label, gcm_aad, &request.plaintext).map_err(op)?;
                    // Spec §1.4: the CDIV is computed from the output in memory before the
                    // verification decrypt, which runs on the same session.
                    let cdiv = request.want_cdiv.then(|| {
                        schemas::xki::aad::cdiv(&request.aad, &metadata, &iv, &ciphertext, &tag)
                    });
                    if verify {
                        let check = s
                            .decrypt(&label, &iv, gcm_aad, &ciphertext, &tag)
                            .map_err(|e| e.into_error(&key, Operation::Decrypt))?;
                        if *check != *request.plaintext {
                            return Err(Error::Internal("verification decrypt mismatch".into()));
                        }
                    }
                    Ok(EncryptOutput {
                        ciphertext,
                        iv,
                        tag,
                        ciphertext_metadata: metadata,
                        cdiv,
                        key_version,
                    })
                },
            )
            .await?;
        log_timing(ctx, "encrypt", id, timed.queued, timed.busy);
        Ok(timed.value)
    }

    async fn decrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: DecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let inner = &self.inner;
        let metadata = inner.config.limits.check_decrypt(&request)?;
        let mut record = inner.record(ctx, id).await?;
        if metadata.key_version > record.current()?.version {
            // A version this process has not seen: the key may have been rotated by another
            // replica or the admin CLI since the record was cached. Read it again, once.
            record = inner.fresh_record(ctx, id).await?;
        }
        record.info().check_crypto(Operation::Decrypt)?;
        let label = record
            .version(metadata.key_version)
            .ok_or(Error::InvalidCiphertext)?
            .label
            .clone();
        let gcm_aad = metadata
            .aad_format
            .gcm_aad(&request.aad, &request.ciphertext_metadata)?;
        let key = id.clone();
        let timed = inner
            .hsm
            .pool()
            .run_with(
                ctx.deadline,
                (request, gcm_aad),
                move |s, (request, gcm_aad)| {
                    s.decrypt(
                        &label,
                        &request.iv,
                        gcm_aad,
                        &request.ciphertext,
                        &request.tag,
                    )
                    .map_err(|e| e.into_error(&key, Operation::Decrypt))
                },
            )
            .await?;
        log_timing(ctx, "decrypt", id, timed.queued, timed.busy);
        Ok(timed.value)
    }

    async fn health(&self, _ctx: &OpContext) -> Result<Health> {
        Ok(self.inner.cached_health())
    }

    fn queue_depth(&self) -> Option<crate::QueueDepth> {
        let pool = &self.inner.hsm.pool();
        Some(crate::QueueDepth {
            queued: pool.queued(),
            capacity: pool.capacity(),
        })
    }

    fn limits(&self) -> Limits {
        self.inner.config.limits
    }
}

impl KeyOpError {
    /// Maps onto the error enum, `operation` on `key` giving context for usage refusals.
    pub fn into_error(self, key: &ExternalKeyId, operation: Operation) -> Error {
        match self {
            Self::BadTag => Error::InvalidCiphertext,
            Self::Pkcs11(RvError::KeyFunctionNotPermitted, _) => Error::KeyUsageNotPermitted {
                key: key.clone(),
                operation,
            },
            Self::Pkcs11(rv, function) => hsm_error(CkError::Pkcs11(rv, function)),
            Self::Other(e) => e,
        }
    }
}
