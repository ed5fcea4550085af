//! XKI request and response bodies exactly as they travel. Unknown fields are ignored (spec
//! Appendix B: KMS may add fields); Base64 fields stay text here and are decoded by
//! [`super::validate`].

use serde::{Deserialize, Serialize};

/// `requestMetadata`, present in every request. Which fields are required depends on the
/// operation; [`super::validate`] checks that. `kmsRequestId` and `kmsOperation` are opaque.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadata {
    /// The caller's principal (`arn:…`, a service principal, or `AWS Internal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_principal_arn: Option<String>,
    /// Source VPC, for calls through a VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpc: Option<String>,
    /// Source VPC endpoint, for calls through a VPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_source_vpce: Option<String>,
    /// The KMS key on whose behalf the call is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_arn: Option<String>,
    /// The KMS operation that triggered the call; unknown values are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_operation: Option<String>,
    /// The KMS request id; logged, never validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_request_id: Option<String>,
    /// The cloud service that called KMS, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_via_service: Option<String>,
}

/// GetHealthStatus request: `POST …/health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRequest {
    /// Request metadata (only `kmsRequestId` and `kmsOperation` are used).
    pub request_metadata: RequestMetadata,
}

/// GetKeyMetadata request: `POST …/keys/{externalKeyId}/metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
}

/// Encrypt request: `POST …/keys/{externalKeyId}/encrypt`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
    /// Base64 plaintext (never logged).
    pub plaintext: String,
    /// Must be `AES_GCM`.
    pub encryption_algorithm: String,
    /// Base64 AAD, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    /// `SHA_256` to ask for a ciphertext data integrity value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value_algorithm: Option<String>,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("request_metadata", &self.request_metadata)
            .field("plaintext", &"[redacted]")
            .field("encryption_algorithm", &self.encryption_algorithm)
            .finish_non_exhaustive()
    }
}

/// Encrypt response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// Base64 ciphertext, as long as the plaintext.
    pub ciphertext: String,
    /// Base64 `ciphertextMetadata` (≤ 20 bytes), bound into the AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    /// Base64 IV, 12 or 16 bytes.
    pub initialization_vector: String,
    /// Base64 tag, 16 bytes.
    pub authentication_tag: String,
    /// Base64 SHA-256 integrity value, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

/// Decrypt request: `POST …/keys/{externalKeyId}/decrypt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptRequest {
    /// Request metadata.
    pub request_metadata: RequestMetadata,
    /// Base64 ciphertext.
    pub ciphertext: String,
    /// Base64 `ciphertextMetadata` returned by Encrypt, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext_metadata: Option<String>,
    /// Must be `AES_GCM`.
    pub encryption_algorithm: String,
    /// Base64 AAD, optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_authenticated_data: Option<String>,
    /// Base64 IV, 12 or 16 bytes.
    pub initialization_vector: String,
    /// Base64 tag, 16 bytes.
    pub authentication_tag: String,
}

/// Decrypt response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptResponse {
    /// Base64 plaintext (never logged).
    pub plaintext: String,
}

impl std::fmt::Debug for DecryptResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptResponse { plaintext: [redacted] }")
    }
}

/// Key spec of an external key. Only `AES_256` is in scope; other values are carried so that a
/// client can refuse them with a clear error.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeySpec {
    /// AES with a 256-bit key.
    #[serde(rename = "AES_256")]
    Aes256,
    /// Anything else.
    #[serde(untagged)]
    Other(String),
}

/// A key usage as the metadata call reports it (upper case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyUsage {
    /// May encrypt.
    Encrypt,
    /// May decrypt.
    Decrypt,
    /// May sign.
    Sign,
    /// May verify.
    Verify,
    /// May wrap keys.
    Wrap,
    /// May unwrap keys.
    Unwrap,
    /// May derive keys.
    Derive,
    /// A usage this version does not know.
    #[serde(untagged)]
    Other(String),
}

/// `keyStatus` of an external key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyStatus {
    /// Usable.
    Enabled,
    /// Refuses crypto (`InvalidStateException`).
    Disabled,
}

/// GetKeyMetadata response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataResponse {
    /// `AES_256` for every key this stack serves.
    pub key_spec: KeySpec,
    /// At most 10 usages.
    pub key_usage: Vec<KeyUsage>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: KeyStatus,
}

impl MetadataResponse {
    /// What KMS CreateKey requires of an external key: AES_256, ENCRYPT and DECRYPT, ENABLED.
    /// Returns the first unmet condition as a short reason.
    pub fn unusable_reason(&self) -> Option<&'static str> {
        if self.key_spec != KeySpec::Aes256 {
            return Some("external key spec is not AES_256");
        }
        if !self.key_usage.contains(&KeyUsage::Encrypt)
            || !self.key_usage.contains(&KeyUsage::Decrypt)
        {
            return Some("external key usage lacks ENCRYPT or DECRYPT");
        }
        if self.key_status != KeyStatus::Enabled {
            return Some("external key is not ENABLED");
        }
        None
    }
}

/// Health of one key manager (HSM) in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    /// Works.
    Active,
    /// Works, slowly or with errors.
    Degraded,
    /// Does not work.
    Unavailable,
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EkmFleetEntry {
    /// Identifier of the HSM (or token).
    pub id: String,
    /// Model string.
    pub model: String,
    /// Deep-health verdict.
    pub health_status: HealthStatus,
}

/// GetHealthStatus response (every field required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// Number of proxy instances behind the endpoint (> 0).
    pub xks_proxy_fleet_size: u32,
    /// Proxy vendor.
    pub xks_proxy_vendor: String,
    /// Proxy product and version.
    pub xks_proxy_model: String,
    /// Key manager vendor.
    pub ekm_vendor: String,
    /// 1 to 10 entries.
    pub ekm_fleet_details: Vec<EkmFleetEntry>,
}

impl HealthResponse {
    /// Most fleet entries the spec allows.
    pub const MAX_FLEET_ENTRIES: usize = 10;

    /// True when every entry is UNAVAILABLE (KMS then reports the proxy as not reachable).
    pub fn all_unavailable(&self) -> bool {
        self.ekm_fleet_details
            .iter()
            .all(|e| e.health_status == HealthStatus::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_ignored_and_compact() {
        let json = r#"{"requestMetadata":{"kmsRequestId":"","kmsOperation":"BulkEncrypt","futureField":{"a":1}},"plaintext":"AA==","encryptionAlgorithm":"AES_GCM","newTopLevel":true}"#;
        let req: EncryptRequest = serde_json::from_str(json).unwrap();
        assert_eq!(
            req.request_metadata.kms_operation.as_deref(),
            Some("BulkEncrypt")
        );
        assert_eq!(req.request_metadata.kms_request_id.as_deref(), Some(""));
        assert!(
            !format!("{req:?}").contains("AA=="),
            "plaintext must not reach Debug output"
        );
        let out = serde_json::to_string(&req).unwrap();
        assert!(!out.contains('\n') && !out.contains(": "));
    }

    #[test]
    fn metadata_conditions() {
        let good = MetadataResponse {
            key_spec: KeySpec::Aes256,
            key_usage: vec![KeyUsage::Encrypt, KeyUsage::Decrypt],
            key_status: KeyStatus::Enabled,
        };
        assert_eq!(
            serde_json::to_string(&good).unwrap(),
            r#"{"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"}"#
        );
        assert_eq!(good.unusable_reason(), None);
        let rsa: MetadataResponse =
            serde_json::from_str(r#"{"keySpec":"RSA_0","keyUsage":[],"keyStatus":"ENABLED"}"#)
                .unwrap();
        assert_eq!(rsa.key_spec, KeySpec::Other("RSA_0".into()));
        assert!(rsa.unusable_reason().is_some());
        let wrap: MetadataResponse = serde_json::from_str(
            r#"{"keySpec":"AES_256","keyUsage":["ENCRYPT","WRAP","FROBNICATE"],"keyStatus":"ENABLED"}"#,
        )
        .unwrap();
        assert_eq!(wrap.key_usage[2], KeyUsage::Other("FROBNICATE".into()));
        assert_eq!(
            wrap.unusable_reason(),
            Some("external key usage lacks ENCRYPT or DECRYPT")
        );
        let disabled = MetadataResponse {
            key_status: KeyStatus::Disabled,
            ..good
        };
        assert_eq!(
            disabled.unusable_reason(),
            Some("external key is not ENABLED")
        );
    }
}
