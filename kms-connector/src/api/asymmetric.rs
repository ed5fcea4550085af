//! AsymmetricSign, AsymmetricVerify, AsymmetricEncrypt, AsymmetricDecrypt and GetPublicKey
//! (spec §2.4): on the version `KeyVersionId` names (required), of a key whose spec and usage
//! fit the call.
//!
//! Checks, in order: parameters; the key exists, the policy allows the action, the key is
//! `Enabled` (the Encrypt row of §3.2); the key's spec and usage fit; the version belongs to
//! the key (404 `Forbidden.KeyVersionNotFound`); the instance is `Connected`; `DryRun`.
//! Refusals follow §2.4: Sign/Verify answer `InvalidParameter` (wrong usage, algorithm or
//! digest length); Encrypt/Decrypt and GetPublicKey answer `Rejected.UnsupportedOperation` for
//! a key that does not encrypt (or has no public key).

use schemas::kms::{AsymmetricAlgorithm, ErrorCode, KeyUsage, SigningAlgorithm};
use serde_json::json;
use zeroize::Zeroizing;

use super::crypto::Sealer;
use super::ctx::{Ctx, Reply};
use super::error::ApiError;
use crate::ids::KeyVersionId;
use crate::store::{Key, KeyVersion};

/// Length of a SHA-256 digest, the only digest the signing algorithms take.
const DIGEST_BYTES: usize = 32;

/// A Base64 parameter's bytes.
fn base64(ctx: &Ctx<'_>, name: &'static str) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    schemas::b64::decode(ctx.params.required(name)?)
        .map(Zeroizing::new)
        .map_err(|_| ApiError::invalid_because(name, "not Base64"))
}

fn signing_algorithm(ctx: &Ctx<'_>, key: &Key) -> Result<SigningAlgorithm, ApiError> {
    let text = ctx.params.required("Algorithm")?;
    let algorithm = SigningAlgorithm::parse(text).ok_or_else(|| ApiError::invalid("Algorithm"))?;
    if key.key_usage != KeyUsage::SignVerify || key.key_spec.is_symmetric() {
        return Err(ApiError::invalid_because(
            "KeyId",
            format!("the key's usage is {}, not SIGN/VERIFY", key.key_usage),
        ));
    }
    let is_rsa = algorithm != SigningAlgorithm::EcdsaSha256;
    let key_is_rsa = key.key_spec.as_str().starts_with("RSA_");
    if is_rsa != key_is_rsa {
        return Err(ApiError::invalid_because(
            "Algorithm",
            format!("{algorithm} does not fit KeySpec {}", key.key_spec),
        ));
    }
    Ok(algorithm)
}

fn encryption_algorithm(ctx: &Ctx<'_>, key: &Key) -> Result<AsymmetricAlgorithm, ApiError> {
    let text = ctx.params.required("Algorithm")?;
    let algorithm =
        AsymmetricAlgorithm::parse(text).ok_or_else(|| ApiError::invalid("Algorithm"))?;
    if key.key_usage != KeyUsage::EncryptDecrypt || key.key_spec.is_symmetric() {
        return Err(ApiError::with_message(
            ErrorCode::RejectedUnsupportedOperation,
            format!(
                "Unsupported operation: {} keys with usage {} do not encrypt with {algorithm}.",
                key.key_spec, key.key_usage
            ),
        ));
    }
    Ok(algorithm)
}

fn digest(ctx: &Ctx<'_>) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let digest = base64(ctx, "Digest")?;
    if digest.len() != DIGEST_BYTES {
        return Err(ApiError::invalid_because(
            "Digest",
            format!(
                "a SHA-256 digest is {DIGEST_BYTES} bytes, not {}",
                digest.len()
            ),
        ));
    }
    Ok(digest)
}

/// The version `KeyVersionId` names, which must be one of `key`'s.
async fn named_version(ctx: &Ctx<'_>, key: &Key) -> Result<KeyVersion, ApiError> {
    let text = ctx.params.required("KeyVersionId")?;
    KeyVersionId::parse(text).map_err(|_| ApiError::invalid("KeyVersionId"))?;
    let version = ctx.state.store.get_key_version(text).await?;
    if version.key_id != key.key_id {
        return Err(ErrorCode::KeyVersionNotFound.into());
    }
    Ok(version)
}

/// The rest of every call: version, connected instance, `DryRun`, then `run` on the version.
async fn on_version<T, F>(ctx: &Ctx<'_>, key: &Key, dry_run: bool, run: F) -> Result<T, ApiError>
where
    F: AsyncFnOnce(&Sealer<'_>) -> Result<T, ApiError>,
{
    let version = named_version(ctx, key).await?;
    let instance = ctx.connected_instance(key)?;
    if dry_run {
        return Err(ApiError::DryRun);
    }
    let sealer = Sealer::new(ctx, key, &version, &instance)?;
    run(&sealer).await
}

fn reply(key: &Key, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let mut reply = Reply::new();
    reply.insert("KeyId".into(), json!(key.key_id));
    reply.insert(
        "KeyVersionId".into(),
        json!(ctx.params.required("KeyVersionId")?),
    );
    Ok(reply)
}

/// AsymmetricSign: `Value` is the Base64 signature of `Digest`.
pub async fn asymmetric_sign(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    let algorithm = signing_algorithm(ctx, &key)?;
    let digest = digest(ctx)?;
    let signature = on_version(ctx, &key, dry_run, async |v| {
        Ok(v.backend().sign(v.view(), algorithm, &digest).await?)
    })
    .await?;
    let mut reply = reply(&key, ctx)?;
    reply.insert("Value".into(), json!(schemas::b64::encode(signature)));
    Ok(reply)
}

/// AsymmetricVerify: `Value` is whether the Base64 signature `Value` is valid for `Digest`.
pub async fn asymmetric_verify(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    let algorithm = signing_algorithm(ctx, &key)?;
    let digest = digest(ctx)?;
    let signature = base64(ctx, "Value")?;
    let valid = on_version(ctx, &key, dry_run, async |v| {
        Ok(v.backend()
            .verify(v.view(), algorithm, &digest, &signature)
            .await?)
    })
    .await?;
    let mut reply = reply(&key, ctx)?;
    reply.insert("Value".into(), json!(valid));
    Ok(reply)
}

/// AsymmetricEncrypt: `CiphertextBlob` is the Base64 RSAES-OAEP ciphertext of `Plaintext`.
pub async fn asymmetric_encrypt(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    let algorithm = encryption_algorithm(ctx, &key)?;
    let plaintext = base64(ctx, "Plaintext")?;
    let ciphertext = on_version(ctx, &key, dry_run, async |v| {
        Ok(v.backend()
            .asymmetric_encrypt(v.view(), algorithm, &plaintext)
            .await?)
    })
    .await?;
    let mut reply = reply(&key, ctx)?;
    reply.insert(
        "CiphertextBlob".into(),
        json!(schemas::b64::encode(ciphertext)),
    );
    Ok(reply)
}

/// AsymmetricDecrypt: `Plaintext` is the Base64 of what `CiphertextBlob` encrypts.
pub async fn asymmetric_decrypt(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    let algorithm = encryption_algorithm(ctx, &key)?;
    let ciphertext = base64(ctx, "CiphertextBlob")?;
    let plaintext = on_version(ctx, &key, dry_run, async |v| {
        Ok(v.backend()
            .asymmetric_decrypt(v.view(), algorithm, &ciphertext)
            .await?)
    })
    .await?;
    let mut reply = reply(&key, ctx)?;
    reply.insert("Plaintext".into(), json!(schemas::b64::encode(&*plaintext)));
    Ok(reply)
}

/// GetPublicKey: `PublicKey` is the version's SubjectPublicKeyInfo in PEM.
pub async fn get_public_key(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    let dry_run = ctx.params.dry_run()?;
    let key = ctx.key_for_action("KeyId").await?;
    if key.key_spec.is_symmetric() {
        return Err(ApiError::with_message(
            ErrorCode::RejectedUnsupportedOperation,
            format!(
                "Unsupported operation: {} keys have no public key.",
                key.key_spec
            ),
        ));
    }
    let der = on_version(ctx, &key, dry_run, async |v| {
        Ok(v.backend().public_key(v.view()).await?)
    })
    .await?;
    let mut reply = reply(&key, ctx)?;
    reply.insert("PublicKey".into(), json!(pem("PUBLIC KEY", &der)));
    Ok(reply)
}

/// PEM with 64-character lines and `\n` line breaks.
fn pem(label: &str, der: &[u8]) -> String {
    let body = schemas::b64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines() {
        let text = pem("PUBLIC KEY", &[0xab; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
        assert_eq!(
            lines[1..lines.len() - 1].concat(),
            schemas::b64::encode([0xab; 100])
        );
        assert!(text.ends_with("-----\n"));
    }
}
