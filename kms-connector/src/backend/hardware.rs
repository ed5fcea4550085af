//! The hardware instance: symmetric keys generated and used inside a PKCS#11 token (SoftHSM2
//! by default, a token of its own), through the workspace's PKCS#11 core (`ekm::hsm`).
//!
//! Each key version is one AES secret key object, labelled `kms:<key id>:<version id>`,
//! generated in the token with `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE` and
//! `CKA_EXTRACTABLE=false`, usable only to encrypt and decrypt: its material never exists
//! outside the token. The store keeps the label only (`backend_ref`). The payload is Alibaba's
//! layout, `IV[12] ‖ AES-GCM ciphertext ‖ tag[16]`, the GCM run inside the token; deleting the
//! key (after its waiting window) destroys its objects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ekm::hsm::aes::{AesUsage, IV_BYTES, TAG_BYTES};
use ekm::hsm::{Hsm, HsmConfig, HsmSession, KeyOpError, TokenSelector, VendorProfile};
use schemas::kms::{KeySpec, ProtectionLevel};
use zeroize::Zeroizing;

use super::{
    BackendError, Capabilities, Families, KeyBackend, KeyContext, NewVersion, VersionMaterial,
};
use crate::config::{ConfigError, HardwareInstanceConfig};
use crate::store::InstanceKind;

/// The specs hardware instances make.
pub const KEY_SPECS: &[KeySpec] = &[KeySpec::Aes256, KeySpec::Aes192, KeySpec::Aes128];

/// Opens the token `config` names (blocking: the PKCS#11 start-up calls), with its worker pool
/// (threads named `thread_name`): hardware instances and a root key kept in a token.
pub(crate) fn open_hsm(
    config: &HardwareInstanceConfig,
    thread_name: &'static str,
) -> Result<Hsm, ConfigError> {
    let token = match (&config.token_label, &config.token_serial) {
        (Some(label), None) => TokenSelector::Label(label.clone()),
        (None, Some(serial)) => TokenSelector::Serial(serial.clone()),
        _ => {
            return Err(ConfigError::Invalid(
                "give exactly one of token_label or token_serial".into(),
            ));
        }
    };
    let pin = config.pin.resolve()?;
    let profile =
        VendorProfile::by_name(&config.vendor).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Hsm::open(HsmConfig {
        module: config.module.clone(),
        token,
        pin: secrecy::SecretString::from(pin.expose().to_owned()),
        profile,
        workers: config.workers,
        queue_capacity: config.queue_capacity,
        thread_name,
        interchangeable_labels: Vec::new(),
    })
    .map_err(|e| ConfigError::Invalid(format!("PKCS#11 token: {e}")))
}

/// Opens a token for a one-off command (`kms-connector root-key create-in-token`).
pub fn open_token(config: &HardwareInstanceConfig) -> Result<Hsm, ConfigError> {
    open_hsm(config, "kms-hsm-cli")
}

/// A hardware instance's backend. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HardwareBackend {
    hsm: Arc<Hsm>,
    timeout: Duration,
}

impl HardwareBackend {
    /// Opens the token of `config` (blocking: the PKCS#11 start-up calls).
    pub fn open(config: &HardwareInstanceConfig) -> Result<Self, ConfigError> {
        let hsm = open_hsm(config, "kms-hsm")?;
        tracing::info!(target: "kms_connector::hardware", token = %hsm.token().label, model = %hsm.token().model, workers = config.workers, "hardware instance token opened");
        Ok(Self {
            hsm: Arc::new(hsm),
            timeout: Duration::from_millis(config.timeout_ms),
        })
    }

    async fn run<T, F>(&self, job: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&mut HsmSession) -> Result<T, BackendError> + Send + 'static,
    {
        let deadline = Instant::now() + self.timeout;
        let result = self
            .hsm
            .run(deadline, move |session| Ok(job(session)))
            .await
            .map_err(hsm_failure)?;
        result.value
    }
}

/// The object label of a version.
fn label(key: &KeyContext<'_>) -> Result<String, BackendError> {
    key.material
        .backend_ref
        .clone()
        .ok_or_else(|| BackendError::Internal("hardware version without an object label".into()))
}

/// Maps a token failure onto the backend vocabulary.
pub(crate) fn hsm_failure(error: ekm::Error) -> BackendError {
    match error {
        ekm::Error::Throttled => BackendError::Throttled,
        ekm::Error::DeadlineExceeded => BackendError::Timeout,
        ekm::Error::HsmUnavailable(why) => {
            tracing::warn!(target: "kms_connector::hardware", why, "the hardware token is unavailable");
            BackendError::TemporarilyUnavailable(
                "the hardware security module is unavailable".into(),
            )
        }
        ekm::Error::InvalidCiphertext => BackendError::InvalidCiphertext,
        other => BackendError::Internal(format!("hardware token: {other}")),
    }
}

/// Maps a failed key operation onto the backend vocabulary.
pub(crate) fn key_op_failure(error: KeyOpError) -> BackendError {
    match error {
        KeyOpError::BadTag => BackendError::InvalidCiphertext,
        KeyOpError::Pkcs11(rv, function) => {
            BackendError::Internal(format!("hardware token: {function:?}: {rv:?}"))
        }
        KeyOpError::Other(e) => hsm_failure(e),
    }
}

#[async_trait::async_trait]
impl KeyBackend for HardwareBackend {
    fn kind(&self) -> InstanceKind {
        InstanceKind::Hardware
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            families: Families::default(),
            key_specs: KEY_SPECS,
            protection_level: ProtectionLevel::Hsm,
            rotation: true,
            versions: true,
            import: false,
            needs_external_key_id: false,
        }
    }

    async fn new_version(&self, request: NewVersion<'_>) -> Result<VersionMaterial, BackendError> {
        let Some(bytes) = request
            .key_spec
            .aes_key_bytes()
            .filter(|_| KEY_SPECS.contains(&request.key_spec))
        else {
            return Err(BackendError::Unsupported(
                "hardware instances make Aliyun_AES_256, Aliyun_AES_192 and Aliyun_AES_128 keys",
            ));
        };
        let label = format!("kms:{}:{}", request.key_id, request.version_id);
        let object = label.clone();
        self.run(move |session| {
            let usage = AesUsage {
                encrypt: true,
                decrypt: true,
            };
            session
                .generate_aes(&object, bytes, usage)
                .map_err(hsm_failure)
        })
        .await?;
        Ok(VersionMaterial {
            sealed: None,
            backend_ref: Some(label),
        })
    }

    async fn encrypt(
        &self,
        key: KeyContext<'_>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, BackendError> {
        let label = label(&key)?;
        let (plaintext, aad) = (Zeroizing::new(plaintext.to_vec()), aad.to_vec());
        let sealed = self
            .run(move |session| {
                session
                    .encrypt(&label, &aad, &plaintext)
                    .map_err(key_op_failure)
            })
            .await?;
        let mut payload = Vec::with_capacity(IV_BYTES + sealed.ciphertext.len() + TAG_BYTES);
        payload.extend_from_slice(&sealed.iv);
        payload.extend_from_slice(&sealed.ciphertext);
        payload.extend_from_slice(&sealed.tag);
        Ok(payload)
    }

    async fn decrypt(
        &self,
        key: KeyContext<'_>,
        payload: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if payload.len() < IV_BYTES + TAG_BYTES {
            return Err(BackendError::InvalidCiphertext);
        }
        let label = label(&key)?;
        let (iv, rest) = payload.split_at(IV_BYTES);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let (iv, ciphertext, tag, aad) =
            (iv.to_vec(), ciphertext.to_vec(), tag.to_vec(), aad.to_vec());
        self.run(move |session| {
            session
                .decrypt(&label, &iv, &aad, &ciphertext, &tag)
                .map_err(key_op_failure)
        })
        .await
    }

    async fn destroy_version(&self, material: &VersionMaterial) -> Result<(), BackendError> {
        let Some(label) = material.backend_ref.clone() else {
            return Ok(());
        };
        self.run(move |session| {
            session
                .destroy_secret_key(&label)
                .map(drop)
                .map_err(hsm_failure)
        })
        .await
    }
}
