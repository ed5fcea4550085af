//! `MemoryKeyManager`: AES-256-GCM in software, keys in process memory.
//!
//! **For other crates' unit tests only** (feature `memory`): its keys leave no HSM because they
//! were never in one. It shares the record, transitions, metadata format and limits with the
//! PKCS#11 manager, so its answers (and errors) are the same; the shared conformance suite in
//! `ekm/tests` runs against both.

use std::collections::HashMap;
use std::sync::Mutex;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use rand::RngCore as _;
use schemas::xki::ExternalKeyId;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::ciphertext::{AadFormat, CiphertextMetadata, IV_BYTES, Limits};
use crate::error::{Error, Operation, Result};
use crate::manager::{
    AdoptKey, CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Health, HealthStatus,
    HsmHealth, KeyInfo, KeyManager, KeyOrigin, OpContext, check_description, generate_key_id,
};
use crate::record::{KeyRecord, KeyVersion};

struct Entry {
    record: KeyRecord,
    ciphers: Vec<Aes256Gcm>,
}

/// In-memory key manager (tests only).
pub struct MemoryKeyManager {
    keys: Mutex<HashMap<ExternalKeyId, Entry>>,
    limits: Limits,
}

impl std::fmt::Debug for MemoryKeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryKeyManager").finish_non_exhaustive()
    }
}

impl Default for MemoryKeyManager {
    fn default() -> Self {
        Self::new()
    }
}

fn new_cipher() -> Aes256Gcm {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes.as_ref()))
}

impl MemoryKeyManager {
    /// An empty manager with default limits.
    pub fn new() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            limits: Limits::default(),
        }
    }

    fn with_entry<T>(
        &self,
        id: &ExternalKeyId,
        f: impl FnOnce(&mut Entry) -> Result<T>,
    ) -> Result<T> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys
            .get_mut(id)
            .ok_or_else(|| Error::KeyNotFound(id.clone()))?;
        f(entry)
    }

    fn change(
        &self,
        id: &ExternalKeyId,
        f: impl FnOnce(&mut KeyRecord) -> Result<bool>,
    ) -> Result<KeyInfo> {
        self.with_entry(id, |e| f(&mut e.record).map(|_| e.record.info()))
    }
}

#[async_trait::async_trait]
impl KeyManager for MemoryKeyManager {
    async fn create_key(&self, _ctx: &OpContext, request: CreateKey) -> Result<KeyInfo> {
        let description = check_description(request.description)?;
        let id = request.id.unwrap_or_else(generate_key_id);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.contains_key(&id) {
            return Err(Error::KeyAlreadyExists(id.to_string()));
        }
        let record = KeyRecord::new(
            id.clone(),
            request.usage,
            format!("memory:{id}:v1"),
            KeyOrigin::Generated,
            description,
        );
        let info = record.info();
        keys.insert(
            id,
            Entry {
                record,
                ciphers: vec![new_cipher()],
            },
        );
        Ok(info)
    }

    async fn adopt_key(&self, _ctx: &OpContext, _request: AdoptKey) -> Result<KeyInfo> {
        Err(Error::Validation(
            "the in-memory manager has no HSM keys to adopt".into(),
        ))
    }

    async fn describe_key(&self, _ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.with_entry(id, |e| Ok(e.record.info()))
    }

    async fn list_keys(&self, _ctx: &OpContext) -> Result<Vec<KeyInfo>> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = keys.values().map(|e| e.record.info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn enable_key(&self, _ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.change(id, KeyRecord::enable)
    }

    async fn disable_key(&self, _ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.change(id, KeyRecord::disable)
    }

    async fn schedule_key_deletion(
        &self,
        _ctx: &OpContext,
        id: &ExternalKeyId,
        pending_window_days: Option<u32>,
    ) -> Result<KeyInfo> {
        let days = crate::pkcs11::DeletionWindow::default().resolve(pending_window_days)?;
        self.change(id, |r| r.schedule_deletion(days))
    }

    async fn cancel_key_deletion(&self, _ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.change(id, KeyRecord::cancel_deletion)
    }

    async fn rotate_key(&self, _ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.with_entry(id, |e| {
            let version = e.record.next_version()?;
            e.record.versions.push(KeyVersion {
                version,
                label: format!("memory:{id}:v{version}"),
            });
            e.ciphers.push(new_cipher());
            Ok(e.record.info())
        })
    }

    async fn encrypt(
        &self,
        _ctx: &OpContext,
        id: &ExternalKeyId,
        request: EncryptRequest,
    ) -> Result<EncryptOutput> {
        self.limits.check_encrypt(&request)?;
        self.with_entry(id, |e| {
            e.record.info().check_encrypt(request.want_cdiv)?;
            let key_version = e.record.current()?.version;
            let metadata = CiphertextMetadata {
                aad_format: AadFormat::Raw,
                key_version,
            }
            .encode();
            let gcm_aad = AadFormat::Raw.gcm_aad(&request.aad, &metadata)?;
            let mut iv = [0u8; IV_BYTES];
            rand::rng().fill_bytes(&mut iv);
            let cipher = e
                .ciphers
                .last()
                .ok_or_else(|| Error::Internal("no key version".into()))?;
            let mut buffer = request.plaintext.to_vec();
            let tag = cipher
                .encrypt_in_place_detached(Nonce::from_slice(&iv), &gcm_aad, &mut buffer)
                .map_err(|_| Error::Internal("software AES-GCM failed".into()))?;
            let cdiv = request.want_cdiv.then(|| {
                schemas::xki::aad::cdiv(&request.aad, &metadata, &iv, &buffer, tag.as_slice())
            });
            Ok(EncryptOutput {
                ciphertext: buffer,
                iv: iv.to_vec(),
                tag: tag.to_vec(),
                ciphertext_metadata: metadata,
                cdiv,
                key_version,
            })
        })
    }

    async fn decrypt(
        &self,
        _ctx: &OpContext,
        id: &ExternalKeyId,
        request: DecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let metadata = self.limits.check_decrypt(&request)?;
        self.with_entry(id, |e| {
            e.record.info().check_crypto(Operation::Decrypt)?;
            let index = e
                .record
                .versions
                .iter()
                .position(|v| v.version == metadata.key_version)
                .ok_or(Error::InvalidCiphertext)?;
            let cipher = &e.ciphers[index];
            if request.iv.len() != IV_BYTES {
                return Err(Error::InvalidCiphertext);
            }
            let gcm_aad = metadata
                .aad_format
                .gcm_aad(&request.aad, &request.ciphertext_metadata)?;
            let mut buffer = Zeroizing::new(request.ciphertext.clone());
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(&request.iv),
                    &gcm_aad,
                    &mut buffer,
                    Tag::from_slice(&request.tag),
                )
                .map_err(|_| Error::InvalidCiphertext)?;
            Ok(buffer)
        })
    }

    async fn health(&self, _ctx: &OpContext) -> Result<Health> {
        Ok(Health {
            status: HealthStatus::Active,
            checked_at: OffsetDateTime::now_utc(),
            hsms: vec![HsmHealth {
                id: "memory".into(),
                model: "in-memory (tests only)".into(),
                status: HealthStatus::Active,
                probe_latency: None,
                detail: None,
            }],
        })
    }

    fn limits(&self) -> Limits {
        self.limits
    }
}
