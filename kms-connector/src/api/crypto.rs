//! Encrypt, Decrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, ReEncrypt.
//!
//! Every call checks, in order: the key exists (404), the key policy allows it (403), the key
//! is `Enabled` (409 `Rejected.<State>`), its instance is `Connected` (409
//! `Rejected.Unavailable`); the backend then reports an external key that is not ENABLED.
//! `DryRun=true` stops after those checks with `DryRunOperationError`. Plaintext and data keys
//! live in `Zeroizing` buffers and are never logged or stored.

use rand::TryRngCore as _;
use rand::rngs::OsRng;
use schemas::kms::ErrorCode;
use schemas::xki::ExternalKeyId;
use serde_json::json;
use zeroize::Zeroizing;

use super::ctx::{Ctx, Reply, key_arn_of};
use super::error::ApiError;
use crate::backend::{BackendError, KeyContext, VersionMaterial};
use crate::blob::{Blob, ContextBinding};
use crate::context::EncryptionContext;
use crate::ids::{KeyId, KeyVersionId};
use crate::instances::InstanceHandle;
use crate::store::{Entity, InstanceKind, Key, KeyVersion, StoreError};

/// Largest `Plaintext` of Encrypt, bytes (6 KB).
pub const MAX_PLAINTEXT_BYTES: usize = 6 * 1024;

/// A stored value that fails its own format is a server fault, not the caller's.
fn stored<T, E>(result: Result<T, E>) -> Result<T, ApiError> {
    result.map_err(|_| ApiError::from(ErrorCode::InternalFailure))
}

/// A key version as the backend sees it, ready to encrypt or decrypt with (and, for
/// `super::asymmetric`, to sign with).
pub(super) struct Sealer<'a> {
    ctx: &'a Ctx<'a>,
    instance: &'a InstanceHandle,
    key_id: KeyId,
    version_id: KeyVersionId,
    external: Option<ExternalKeyId>,
    material: VersionMaterial,
    arn: String,
}

impl<'a> Sealer<'a> {
    pub(super) fn new(
        ctx: &'a Ctx<'a>,
        key: &Key,
        version: &KeyVersion,
        instance: &'a InstanceHandle,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            ctx,
            instance,
            key_id: stored(KeyId::parse(&key.key_id))?,
            version_id: stored(KeyVersionId::parse(&version.key_version_id))?,
            external: stored(
                key.external_key_id
                    .as_deref()
                    .map(ExternalKeyId::parse)
                    .transpose(),
            )?,
            material: VersionMaterial {
                sealed: version.sealed_material.clone(),
                backend_ref: version.backend_ref.clone(),
            },
            arn: key_arn_of(key),
        })
    }

    /// The backend of the version's instance.
    pub(super) fn backend(&self) -> &dyn crate::backend::KeyBackend {
        &*self.instance.backend
    }

    pub(super) fn view(&self) -> KeyContext<'_> {
        KeyContext {
            key_id: &self.key_id,
            key_arn: &self.arn,
            version_id: &self.version_id,
            material: &self.material,
            external_key_id: self.external.as_ref(),
            principal: self.ctx.caller.principal.arn(),
            operation: self.ctx.action.name(),
            request_id: self.ctx.request_id,
        }
    }

    /// Encrypts and returns the `CiphertextBlob`.
    async fn seal(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<String, ApiError> {
        let payload = self
            .instance
            .backend
            .encrypt(self.view(), plaintext, &context.aad())
            .await?;
        Ok(Blob::encode(&self.version_id, &payload))
    }

    /// Decrypts a blob, reading it as its format says ([`Blob::readings`]).
    async fn unseal(
        &self,
        blob: &Blob,
        context: &EncryptionContext,
    ) -> Result<Zeroizing<Vec<u8>>, ApiError> {
        // Format-1 software payloads begin with a random IV (see `crate::blob`).
        let unmarked_may_look_marked = self.instance.kind == InstanceKind::Software;
        let mut result = Err(BackendError::InvalidCiphertext);
        for (payload, binding) in blob.readings(unmarked_may_look_marked) {
            let aad = match binding {
                ContextBinding::Canonical => context.aad(),
                ContextBinding::Legacy => context.legacy_aad(),
            };
            result = self
                .instance
                .backend
                .decrypt(self.view(), payload, &aad)
                .await;
            if !matches!(result, Err(BackendError::InvalidCiphertext)) {
                break;
            }
        }
        Ok(result?)
    }
}

/// The key's primary version (what new ciphertexts use).
async fn primary_version(ctx: &Ctx<'_>, key: &Key) -> Result<KeyVersion, ApiError> {
    ctx.state
        .store
        .get_key_version(&key.primary_key_version)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::from(ErrorCode::InternalFailure),
            other => other.into(),
        })
}

/// The key and version a blob names, in the served account; anything else is "not found".
async fn blob_key(ctx: &Ctx<'_>, blob: &Blob) -> Result<(Key, KeyVersion), ApiError> {
    let found = ctx
        .state
        .store
        .get_key_by_version(blob.version.as_str())
        .await;
    let (key, version) = found.map_err(|e| match e {
        StoreError::NotFound(Entity::KeyVersion | Entity::Key) => {
            ApiError::from(ErrorCode::KeyNotFound)
        }
        other => other.into(),
    })?;
    if key.account_id != ctx.state.account_id || key.region != ctx.state.region {
        return Err(ErrorCode::KeyNotFound.into());
    }
    Ok((key, version))
}

/// Encrypt, GenerateDataKey* and ReEncrypt (destination) need a symmetric key.
fn symmetric(key: &Key) -> Result<(), ApiError> {
    if key.key_spec.is_symmetric() {
        Ok(())
    } else {
        Err(ApiError::invalid_because(
            "KeyId",
            format!(
                "{} keys do not encrypt with this action; use AsymmetricEncrypt",
                key.key_spec
            ),
        ))
    }
}

fn context_param(ctx: &Ctx<'_>, name: &'static str) -> Result<EncryptionContext, ApiError> {
    Ok(EncryptionContext::parse(name, ctx.params.optional(name))?)
}

fn reply(key: &Key, version: &KeyVersion, blob: Option<String>) -> Reply {
    let mut reply = Reply::new();
    reply.insert("KeyId".into(), json!(key.key_id));
    reply.insert("KeyVersionId".into(), json!(version.key_version_id));
    if let Some(blob) = blob {
        reply.insert("CiphertextBlob".into(), json!(blob));
    }
    reply
}

/// Encrypt: the UTF-8 bytes of `Plaintext` (≤ 6 KB), as-is.
pub async fn encrypt(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let plaintext = Zeroizing::new(ctx.params.required("Plaintext")?.as_bytes().to_vec());
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(ApiError::invalid_because("Plaintext", "longer than 6 KB"));
    }
    let context = context_param(ctx, "EncryptionContext")?;
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    symmetric(&key)?;
    let instance = ctx.connected_instance(&key)?;
    if dry_run {
        return Err(ApiError::DryRun);
    }
    let version = primary_version(ctx, &key).await?;
    let sealer = Sealer::new(ctx, &key, &version, &instance)?;
    let blob = sealer.seal(&plaintext, &context).await?;
    Ok(reply(&key, &version, Some(blob)))
}

/// Decrypt: no KeyId; the blob's version id names the key.
pub async fn decrypt(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let blob = Blob::decode(ctx.params.required("CiphertextBlob")?)?;
    let context = context_param(ctx, "EncryptionContext")?;
    let dry_run = ctx.params.dry_run()?;
    let (key, version) = blob_key(ctx, &blob).await?;
    ctx.key_id = Some(key.key_id.clone());
    ctx.authorize(&key, ctx.action.permission()).await?;
    ctx.check_state(&key)?;
    let instance = ctx.connected_instance(&key)?;
    if dry_run {
        return Err(ApiError::DryRun);
    }
    let sealer = Sealer::new(ctx, &key, &version, &instance)?;
    let plaintext = sealer.unseal(&blob, &context).await?;
    let mut reply = reply(&key, &version, None);
    reply.insert(
        "Plaintext".into(),
        json!(String::from_utf8_lossy(&plaintext).into_owned()),
    );
    Ok(reply)
}

/// GenerateDataKey.
pub async fn generate_data_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    data_key(ctx, true).await
}

/// GenerateDataKeyWithoutPlaintext.
pub async fn generate_data_key_without_plaintext(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    data_key(ctx, false).await
}

/// A CSPRNG data key of `NumberOfBytes` (1–1024; else 32 for `AES_256`, 16 for `AES_128`,
/// 32 without either). What gets encrypted is its Base64 text (spec §6.1), so Decrypt returns
/// that text, which is the `Plaintext` GenerateDataKey answered.
async fn data_key(ctx: &mut Ctx<'_>, with_plaintext: bool) -> Result<Reply, ApiError> {
    let spec_bytes = match ctx.params.optional("KeySpec") {
        None => None,
        Some("AES_256") => Some(32),
        Some("AES_128") => Some(16),
        Some(_) => return Err(ApiError::invalid("KeySpec")),
    };
    let length = ctx
        .params
        .int("NumberOfBytes", 1, 1024)?
        .or(spec_bytes)
        .unwrap_or(32);
    let context = context_param(ctx, "EncryptionContext")?;
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    symmetric(&key)?;
    let instance = ctx.connected_instance(&key)?;
    if dry_run {
        return Err(ApiError::DryRun);
    }
    let mut data_key = Zeroizing::new(vec![0u8; usize::try_from(length).unwrap_or(32)]);
    OsRng
        .try_fill_bytes(data_key.as_mut_slice())
        .map_err(|_| ApiError::from(ErrorCode::InternalFailure))?;
    let text = Zeroizing::new(schemas::b64::encode(data_key.as_slice()));
    let version = primary_version(ctx, &key).await?;
    let sealer = Sealer::new(ctx, &key, &version, &instance)?;
    let blob = sealer.seal(text.as_bytes(), &context).await?;
    let mut reply = reply(&key, &version, Some(blob));
    if with_plaintext {
        reply.insert("Plaintext".into(), json!(text.as_str()));
    }
    Ok(reply)
}

/// ReEncrypt: decrypt under the blob's key (`kms:ReEncryptFrom`), encrypt under
/// `DestinationKeyId` (`kms:ReEncryptTo`); both keys must be usable.
pub async fn re_encrypt(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    for asymmetric in [
        "SourceKeyId",
        "SourceKeyVersionId",
        "SourceEncryptionAlgorithm",
    ] {
        if ctx.params.optional(asymmetric).is_some() {
            return Err(ApiError::with_message(
                ErrorCode::UnsupportedOperation,
                "This action is not supported: asymmetric source ciphertexts need asymmetric keys.",
            ));
        }
    }
    let blob = Blob::decode(ctx.params.required("CiphertextBlob")?)?;
    let source_context = context_param(ctx, "SourceEncryptionContext")?;
    let destination_context = context_param(ctx, "DestinationEncryptionContext")?;
    let dry_run = ctx.params.dry_run()?;
    let (source, source_version) = blob_key(ctx, &blob).await?;
    ctx.authorize(&source, "kms:ReEncryptFrom").await?;
    ctx.check_state(&source)?;
    let source_instance = ctx.connected_instance(&source)?;
    let destination = ctx.resolve_key("DestinationKeyId").await?;
    ctx.authorize(&destination, "kms:ReEncryptTo").await?;
    ctx.check_state(&destination)?;
    symmetric(&destination)?;
    let destination_instance = ctx.connected_instance(&destination)?;
    if dry_run {
        return Err(ApiError::DryRun);
    }
    let destination_version = primary_version(ctx, &destination).await?;
    let unsealer = Sealer::new(ctx, &source, &source_version, &source_instance)?;
    let plaintext = unsealer.unseal(&blob, &source_context).await?;
    let sealer = Sealer::new(
        ctx,
        &destination,
        &destination_version,
        &destination_instance,
    )?;
    let new_blob = sealer.seal(&plaintext, &destination_context).await?;
    Ok(reply(&destination, &destination_version, Some(new_blob)))
}
