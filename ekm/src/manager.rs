//! The `KeyManager` seam: the operations of an external key manager and their value types.
//!
//! The trait is object safe (`Arc<dyn KeyManager>` is what the server and the proxy hold) and
//! async through `async-trait`. Every operation takes an [`OpContext`] with the caller's request
//! id and deadline, so that an implementation can drop work whose caller has given up.

use std::time::{Duration, Instant};

use schemas::xki::ExternalKeyId;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::ciphertext::Limits;
use crate::error::{Error, Operation, Result};

/// Per-request context: who asked, until when the answer is useful, and (filled in by the
/// implementation) where the time went.
#[derive(Debug, Clone)]
pub struct OpContext {
    /// Request id for logs (validated by the caller; never secret).
    pub request_id: String,
    /// Past this instant the caller no longer waits: queued work is dropped.
    pub deadline: Instant,
    /// Time spent waiting for an HSM worker and inside the HSM, for the caller's log line.
    pub timings: std::sync::Arc<OpTimings>,
}

/// Where an operation's time went, in microseconds (0 = not measured, e.g. remote managers).
#[derive(Debug, Default)]
pub struct OpTimings {
    /// Waiting in the HSM queue.
    pub queue_us: std::sync::atomic::AtomicU64,
    /// Inside PKCS#11.
    pub hsm_us: std::sync::atomic::AtomicU64,
}

impl OpTimings {
    /// Records one operation's split.
    pub fn record(&self, queue: Duration, hsm: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.queue_us.store(
            u64::try_from(queue.as_micros()).unwrap_or(u64::MAX),
            Relaxed,
        );
        self.hsm_us
            .store(u64::try_from(hsm.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// `(queue_us, hsm_us)`.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.queue_us.load(Relaxed), self.hsm_us.load(Relaxed))
    }
}

/// Fill level of an implementation's HSM queue, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Queue capacity (beyond it: `Throttled`).
    pub capacity: usize,
}

impl OpContext {
    /// A context whose deadline is `budget` from now.
    pub fn new(request_id: impl Into<String>, budget: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: Instant::now() + budget,
            timings: std::sync::Arc::default(),
        }
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Permitted cryptographic uses, mirrored into `CKA_ENCRYPT` / `CKA_DECRYPT`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct KeyUsage {
    /// May encrypt.
    pub encrypt: bool,
    /// May decrypt.
    pub decrypt: bool,
}

impl KeyUsage {
    /// Encrypt and decrypt.
    pub const BOTH: Self = Self {
        encrypt: true,
        decrypt: true,
    };

    /// Whether the usage permits `operation`.
    pub fn permits(self, operation: Operation) -> bool {
        match operation {
            Operation::Encrypt => self.encrypt,
            Operation::Decrypt => self.decrypt,
        }
    }
}

/// Lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Refuses cryptographic operations.
    Disabled,
    /// Refuses cryptographic operations; destroyed at `delete_at`.
    PendingDeletion {
        /// When the HSM objects are destroyed.
        delete_at: OffsetDateTime,
    },
}

/// Where the key material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyOrigin {
    /// Generated in the HSM by the EKM.
    Generated,
    /// An existing HSM key taken under management by label.
    Adopted,
}

/// What the manager knows about a key. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id.
    pub id: ExternalKeyId,
    /// Permitted uses.
    pub usage: KeyUsage,
    /// Lifecycle state.
    pub state: KeyState,
    /// The version that encrypts (1 until the first rotation).
    pub current_version: u32,
    /// Creation or adoption time.
    pub created_at: OffsetDateTime,
    /// Where the material came from.
    pub origin: KeyOrigin,
    /// Operator's description.
    pub description: Option<String>,
}

impl KeyInfo {
    /// Refuses the operation unless the key is enabled and its usage permits it.
    pub fn check_crypto(&self, operation: Operation) -> Result<()> {
        match self.state {
            KeyState::Enabled => {}
            KeyState::Disabled => return Err(Error::KeyDisabled(self.id.clone())),
            KeyState::PendingDeletion { .. } => {
                return Err(Error::KeyPendingDeletion(self.id.clone()));
            }
        }
        if !self.usage.permits(operation) {
            return Err(Error::KeyUsageNotPermitted {
                key: self.id.clone(),
                operation,
            });
        }
        Ok(())
    }

    /// Refuses an encrypt the key cannot serve. With an integrity value asked for
    /// (`want_cdiv`), the key must also decrypt: KMS takes a matching CDIV as the promise that
    /// Decrypt will work (spec §1.4), and the value is only given after a verification decrypt.
    pub fn check_encrypt(&self, want_cdiv: bool) -> Result<()> {
        self.check_crypto(Operation::Encrypt)?;
        if want_cdiv {
            self.check_crypto(Operation::Decrypt)?;
        }
        Ok(())
    }
}

/// Longest operator description.
pub const MAX_DESCRIPTION_CHARS: usize = 256;

/// Create a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateKey {
    /// Caller-chosen id, or `None` for an EKM-generated one.
    pub id: Option<ExternalKeyId>,
    /// Permitted uses.
    pub usage: KeyUsage,
    /// Operator's description.
    pub description: Option<String>,
}

/// Take an existing HSM AES-256 key under management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptKey {
    /// The id to manage it under, or `None` for an EKM-generated one.
    pub id: Option<ExternalKeyId>,
    /// `CKA_LABEL` of the secret key object.
    pub hsm_label: String,
    /// Permitted uses.
    pub usage: KeyUsage,
    /// Operator's description.
    pub description: Option<String>,
}

/// Encrypt input (XKS semantics).
pub struct EncryptRequest {
    /// Plaintext, wiped on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Caller's additional authenticated data (may be empty).
    pub aad: Vec<u8>,
    /// Compute the ciphertext data integrity value (and verify by decrypting).
    pub want_cdiv: bool,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("plaintext_len", &self.plaintext.len())
            .field("aad_len", &self.aad.len())
            .field("want_cdiv", &self.want_cdiv)
            .finish()
    }
}

/// Encrypt output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptOutput {
    /// Ciphertext, as long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// 12-byte IV.
    pub iv: Vec<u8>,
    /// 16-byte GCM tag.
    pub tag: Vec<u8>,
    /// Metadata to hand back to decrypt (format and key version), ≤ 20 bytes.
    pub ciphertext_metadata: Vec<u8>,
    /// SHA-256 integrity value, when asked for.
    pub cdiv: Option<[u8; 32]>,
    /// The key version that encrypted.
    pub key_version: u32,
}

/// Decrypt input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptRequest {
    /// Ciphertext (without the tag).
    pub ciphertext: Vec<u8>,
    /// 12- or 16-byte IV.
    pub iv: Vec<u8>,
    /// 16-byte GCM tag.
    pub tag: Vec<u8>,
    /// Metadata returned by encrypt.
    pub ciphertext_metadata: Vec<u8>,
    /// AAD given to encrypt.
    pub aad: Vec<u8>,
}

/// Health of the EKM or of one HSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Probe round trip works within the latency threshold.
    Active,
    /// Probe works, slowly, or the queue is saturated.
    Degraded,
    /// Probe fails or is stale.
    Unavailable,
}

/// One HSM's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmHealth {
    /// Token label.
    pub id: String,
    /// Manufacturer, model and firmware.
    pub model: String,
    /// Outcome of the last probe.
    pub status: HealthStatus,
    /// Duration of the last probe.
    pub probe_latency: Option<Duration>,
    /// Short reason when not active.
    pub detail: Option<String>,
}

/// The deep health of the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Overall status (the best HSM's).
    pub status: HealthStatus,
    /// When the probe ran.
    pub checked_at: OffsetDateTime,
    /// One entry per HSM.
    pub hsms: Vec<HsmHealth>,
}

/// An external key manager: key lifecycle and AES-256-GCM, key material never leaving it.
#[async_trait::async_trait]
pub trait KeyManager: Send + Sync + 'static {
    /// Creates a key (version 1) with a generated or caller-chosen id.
    async fn create_key(&self, ctx: &OpContext, request: CreateKey) -> Result<KeyInfo>;
    /// Takes an existing HSM AES-256 key under management.
    async fn adopt_key(&self, ctx: &OpContext, request: AdoptKey) -> Result<KeyInfo>;
    /// Describes one key.
    async fn describe_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo>;
    /// Lists every managed key, sorted by id.
    async fn list_keys(&self, ctx: &OpContext) -> Result<Vec<KeyInfo>>;
    /// Enables a disabled key (idempotent).
    async fn enable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo>;
    /// Disables an enabled key (idempotent).
    async fn disable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo>;
    /// Schedules a disabled key for deletion after `pending_window_days` (or the default).
    async fn schedule_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        pending_window_days: Option<u32>,
    ) -> Result<KeyInfo>;
    /// Cancels a scheduled deletion; the key comes back disabled.
    async fn cancel_key_deletion(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo>;
    /// Adds a new key version; encrypt uses it from now on, old versions still decrypt.
    async fn rotate_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo>;
    /// AES-256-GCM encryption under the key's current version.
    async fn encrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: EncryptRequest,
    ) -> Result<EncryptOutput>;
    /// AES-256-GCM decryption under the version named by the ciphertext metadata.
    async fn decrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: DecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>>;
    /// The last deep health result (never older than 60 s).
    async fn health(&self, ctx: &OpContext) -> Result<Health>;
    /// The input limits this manager enforces.
    fn limits(&self) -> Limits;

    /// The HSM queue's fill level, when this manager has one in this process.
    fn queue_depth(&self) -> Option<QueueDepth> {
        None
    }
}

/// A fresh External Key ID: `ekm-` and 128 random bits in hex (36 URL-safe characters), so
/// collisions are out of reach without coordination between replicas.
pub fn generate_key_id() -> ExternalKeyId {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ExternalKeyId::parse(&format!("ekm-{hex}")).unwrap_or_else(|_| unreachable!("hex id"))
}

/// Checks an operator description: at most [`MAX_DESCRIPTION_CHARS`] printable characters.
pub fn check_description(description: Option<String>) -> Result<Option<String>> {
    if let Some(text) = &description {
        if text.chars().count() > MAX_DESCRIPTION_CHARS || text.chars().any(char::is_control) {
            return Err(Error::Validation(format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} printable characters"
            )));
        }
    }
    Ok(description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = generate_key_id();
        let b = generate_key_id();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert!(a.as_str().starts_with("ekm-"));
    }

    #[test]
    fn crypto_checks() {
        let mut info = KeyInfo {
            id: ExternalKeyId::parse("k").unwrap(),
            usage: KeyUsage {
                encrypt: true,
                decrypt: false,
            },
            state: KeyState::Enabled,
            current_version: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            origin: KeyOrigin::Generated,
            description: None,
        };
        assert!(info.check_crypto(Operation::Encrypt).is_ok());
        assert!(matches!(
            info.check_crypto(Operation::Decrypt),
            Err(Error::KeyUsageNotPermitted { .. })
        ));
        info.state = KeyState::Disabled;
        assert!(matches!(
            info.check_crypto(Operation::Encrypt),
            Err(Error::KeyDisabled(_))
        ));
    }

    #[test]
    fn descriptions() {
        assert!(check_description(Some("ok".into())).is_ok());
        assert!(check_description(Some("x".repeat(257))).is_err());
        assert!(check_description(Some("a\nb".into())).is_err());
    }
}
