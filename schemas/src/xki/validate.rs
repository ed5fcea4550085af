//! Strict validation of XKI requests: every check of spec §1 and §4.1, each failure mapped to
//! the error name the spec prescribes. Messages name the field, never its value.

use zeroize::Zeroizing;

use super::error::ErrorName;
use super::wire::{DecryptRequest, EncryptRequest, RequestMetadata};
use super::{
    CDIV_ALGORITHM, ENCRYPTION_ALGORITHM, IV_LENGTHS, MAX_AAD_BYTES, MAX_ARN_CHARS,
    MAX_CIPHERTEXT_METADATA_BYTES, SPEC_MIN_AAD_BYTES, SPEC_MIN_DATA_BYTES, TAG_BYTES,
};
use crate::b64;

/// A request the proxy refuses, with the protocol's error name and a safe message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct RequestError {
    /// The XKI error name.
    pub name: ErrorName,
    /// Short, printable, free of request data.
    pub message: String,
}

impl RequestError {
    /// A `ValidationException`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self {
            name: ErrorName::ValidationException,
            message: message.into(),
        }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self {
            name: ErrorName::UnsupportedOperationException,
            message: message.into(),
        }
    }
}

/// Size limits of one proxy. Values above a limit but legal in the protocol get
/// `UnsupportedOperationException` (501), as the spec's error table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest plaintext or ciphertext, in bytes (at least 4300).
    pub max_data_bytes: usize,
    /// Largest AAD, in bytes (8192 to 65535).
    pub max_aad_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: SPEC_MIN_DATA_BYTES,
            max_aad_bytes: SPEC_MIN_AAD_BYTES,
        }
    }
}

impl Limits {
    /// Limits below the spec's minimums (or AAD beyond the u16 prefix) are a configuration error.
    pub fn checked(self) -> Result<Self, &'static str> {
        if self.max_data_bytes < SPEC_MIN_DATA_BYTES {
            return Err("max_data_bytes must be at least 4300 (the XKS minimum)");
        }
        if !(SPEC_MIN_AAD_BYTES..=MAX_AAD_BYTES).contains(&self.max_aad_bytes) {
            return Err("max_aad_bytes must be between 8192 and 65535");
        }
        Ok(self)
    }

    /// Largest request body a legitimate client can send under these limits, with room for
    /// metadata (ARNs up to 2048 characters) and JSON framing. Bodies above it are refused
    /// before authentication.
    pub fn max_body_bytes(&self) -> usize {
        let data = b64::encoded_len(self.max_data_bytes);
        let aad = b64::encoded_len(self.max_aad_bytes);
        data + aad + 4 * MAX_ARN_CHARS + 4096
    }
}

/// Which operation a request is for: decides the required metadata fields (spec §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// GetHealthStatus.
    Health,
    /// GetKeyMetadata.
    Metadata,
    /// Encrypt.
    Encrypt,
    /// Decrypt.
    Decrypt,
}

/// Checks `requestMetadata` for `op`: required fields present, ARNs within 2048 characters.
/// `kmsRequestId` and `kmsOperation` values are never judged (unknown operations are legal).
pub fn check_metadata(meta: &RequestMetadata, op: Operation) -> Result<(), RequestError> {
    if meta.kms_operation.is_none() {
        return Err(RequestError::validation(
            "requestMetadata.kmsOperation is required",
        ));
    }
    if meta.kms_request_id.is_none() {
        return Err(RequestError::validation(
            "requestMetadata.kmsRequestId is required",
        ));
    }
    if op == Operation::Health {
        return Ok(());
    }
    match &meta.aws_principal_arn {
        None => {
            return Err(RequestError::validation(
                "requestMetadata.awsPrincipalArn is required",
            ));
        }
        Some(arn) if arn.chars().count() > MAX_ARN_CHARS => {
            return Err(RequestError::validation(
                "requestMetadata.awsPrincipalArn is too long",
            ));
        }
        Some(_) => {}
    }
    match &meta.kms_key_arn {
        None if matches!(op, Operation::Encrypt | Operation::Decrypt) => Err(
            RequestError::validation("requestMetadata.kmsKeyArn is required"),
        ),
        Some(arn) if arn.chars().count() > MAX_ARN_CHARS => Err(RequestError::validation(
            "requestMetadata.kmsKeyArn is too long",
        )),
        _ => Ok(()),
    }
}

/// A checked Encrypt request with decoded fields.
pub struct ValidEncrypt {
    /// The plaintext, wiped on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The caller's AAD (empty when absent).
    pub aad: Vec<u8>,
    /// Whether the response must carry a CDIV.
    pub want_cdiv: bool,
}

impl std::fmt::Debug for ValidEncrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidEncrypt")
            .field("plaintext_len", &self.plaintext.len())
            .field("aad_len", &self.aad.len())
            .field("want_cdiv", &self.want_cdiv)
            .finish()
    }
}

/// A checked Decrypt request with decoded fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDecrypt {
    /// Ciphertext without tag.
    pub ciphertext: Vec<u8>,
    /// Metadata from Encrypt (empty when absent).
    pub ciphertext_metadata: Vec<u8>,
    /// Caller's AAD (empty when absent).
    pub aad: Vec<u8>,
    /// 12 or 16 bytes.
    pub iv: Vec<u8>,
    /// 16 bytes.
    pub tag: Vec<u8>,
}

fn decode_field(field: &str, text: &str) -> Result<Vec<u8>, RequestError> {
    b64::decode(text).map_err(|_| {
        RequestError::validation(format!(
            "{field} is not canonical standard Base64 with padding"
        ))
    })
}

fn check_data_len(field: &str, text: &str, limits: &Limits) -> Result<(), RequestError> {
    // Judge the size before decoding so an oversize field costs nothing.
    if b64::max_decoded_len(text.len()) > limits.max_data_bytes + 2 {
        return Err(RequestError::unsupported(format!(
            "{field} is larger than this proxy's limit of {} bytes",
            limits.max_data_bytes
        )));
    }
    Ok(())
}

fn decode_data(field: &str, text: &str, limits: &Limits) -> Result<Vec<u8>, RequestError> {
    check_data_len(field, text, limits)?;
    let bytes = decode_field(field, text)?;
    if bytes.is_empty() {
        return Err(RequestError::validation(format!(
            "{field} must not be empty"
        )));
    }
    if bytes.len() > limits.max_data_bytes {
        return Err(RequestError::unsupported(format!(
            "{field} is larger than this proxy's limit of {} bytes",
            limits.max_data_bytes
        )));
    }
    Ok(bytes)
}

fn decode_aad(text: Option<&str>, limits: &Limits) -> Result<Vec<u8>, RequestError> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    if b64::max_decoded_len(text.len()) > limits.max_aad_bytes + 2 {
        return Err(aad_too_long(limits));
    }
    let aad = decode_field("additionalAuthenticatedData", text)?;
    if aad.len() > limits.max_aad_bytes {
        return Err(aad_too_long(limits));
    }
    Ok(aad)
}

fn aad_too_long(limits: &Limits) -> RequestError {
    RequestError::unsupported(format!(
        "additionalAuthenticatedData is larger than this proxy's limit of {} bytes",
        limits.max_aad_bytes
    ))
}

fn check_algorithm(algorithm: &str) -> Result<(), RequestError> {
    if algorithm != ENCRYPTION_ALGORITHM {
        return Err(RequestError::validation(
            "encryptionAlgorithm must be AES_GCM",
        ));
    }
    Ok(())
}

impl EncryptRequest {
    /// Validates and decodes the request.
    pub fn validate(&self, limits: &Limits) -> Result<ValidEncrypt, RequestError> {
        check_metadata(&self.request_metadata, Operation::Encrypt)?;
        check_algorithm(&self.encryption_algorithm)?;
        let want_cdiv = match self.ciphertext_data_integrity_value_algorithm.as_deref() {
            None => false,
            Some(CDIV_ALGORITHM) => true,
            Some(_) => {
                return Err(RequestError::validation(
                    "ciphertextDataIntegrityValueAlgorithm must be SHA_256",
                ));
            }
        };
        let aad = decode_aad(self.additional_authenticated_data.as_deref(), limits)?;
        let plaintext = Zeroizing::new(decode_data("plaintext", &self.plaintext, limits)?);
        Ok(ValidEncrypt {
            plaintext,
            aad,
            want_cdiv,
        })
    }
}

impl DecryptRequest {
    /// Validates and decodes the request.
    pub fn validate(&self, limits: &Limits) -> Result<ValidDecrypt, RequestError> {
        check_metadata(&self.request_metadata, Operation::Decrypt)?;
        check_algorithm(&self.encryption_algorithm)?;
        let ciphertext = decode_data("ciphertext", &self.ciphertext, limits)?;
        let aad = decode_aad(self.additional_authenticated_data.as_deref(), limits)?;
        let ciphertext_metadata = match &self.ciphertext_metadata {
            None => Vec::new(),
            Some(text) => {
                let bytes = decode_field("ciphertextMetadata", text)?;
                if bytes.len() > MAX_CIPHERTEXT_METADATA_BYTES {
                    return Err(RequestError::validation(
                        "ciphertextMetadata must be at most 20 bytes",
                    ));
                }
                bytes
            }
        };
        let iv = decode_field("initializationVector", &self.initialization_vector)?;
        if !IV_LENGTHS.contains(&iv.len()) {
            return Err(RequestError::validation(
                "initializationVector must be 12 or 16 bytes",
            ));
        }
        let tag = decode_field("authenticationTag", &self.authentication_tag)?;
        if tag.len() != TAG_BYTES {
            return Err(RequestError::validation(
                "authenticationTag must be 16 bytes",
            ));
        }
        Ok(ValidDecrypt {
            ciphertext,
            ciphertext_metadata,
            aad,
            iv,
            tag,
        })
    }
}

/// Parses a JSON request body. The error message keeps serde's reason only where it cannot echo
/// request data (a missing field); otherwise it gives the position, so a plaintext never ends up
/// in an error message or a log line.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let message = match text.strip_prefix("missing field `") {
            Some(rest) => match rest.split_once('`') {
                Some((field, _)) => format!("missing field {field}"),
                None => "missing field".to_owned(),
            },
            None => format!(
                "malformed JSON body at line {} column {}",
                e.line(),
                e.column()
            ),
        };
        RequestError::validation(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RequestMetadata {
        RequestMetadata {
            aws_principal_arn: Some("arn:aws:iam::123456789012:user/Alice".into()),
            kms_key_arn: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
            kms_operation: Some("Encrypt".into()),
            kms_request_id: Some("4112f4d6".into()),
            ..Default::default()
        }
    }

    fn encrypt(plaintext: &[u8]) -> EncryptRequest {
        EncryptRequest {
            request_metadata: meta(),
            plaintext: b64::encode(plaintext),
            encryption_algorithm: "AES_GCM".into(),
            additional_authenticated_data: None,
            ciphertext_data_integrity_value_algorithm: None,
        }
    }

    fn decrypt() -> DecryptRequest {
        DecryptRequest {
            request_metadata: meta(),
            ciphertext: b64::encode([1u8; 32]),
            ciphertext_metadata: Some(b64::encode([1u8, 1])),
            encryption_algorithm: "AES_GCM".into(),
            additional_authenticated_data: Some(b64::encode(b"aad")),
            initialization_vector: b64::encode([0u8; 12]),
            authentication_tag: b64::encode([0u8; 16]),
        }
    }

    fn name_of<T: std::fmt::Debug>(r: Result<T, RequestError>) -> ErrorName {
        r.unwrap_err().name
    }

    #[test]
    fn spec_sizes_accepted() {
        let limits = Limits::default();
        let mut req = encrypt(&[7u8; 4300]);
        req.additional_authenticated_data = Some(b64::encode(vec![1u8; 8192]));
        req.ciphertext_data_integrity_value_algorithm = Some("SHA_256".into());
        let ok = req.validate(&limits).unwrap();
        assert_eq!(
            (ok.plaintext.len(), ok.aad.len(), ok.want_cdiv),
            (4300, 8192, true)
        );
        let mut d = decrypt();
        d.ciphertext = b64::encode([7u8; 4300]);
        d.initialization_vector = b64::encode([0u8; 16]);
        d.ciphertext_metadata = Some(b64::encode([0u8; 20]));
        assert!(d.validate(&limits).is_ok());
        assert!(req.validate(&limits).is_ok() && Limits::default().max_body_bytes() < 64 * 1024);
    }

    #[test]
    fn over_limits_are_unsupported() {
        let limits = Limits::default();
        assert_eq!(
            name_of(encrypt(&[7u8; 4301]).validate(&limits)),
            ErrorName::UnsupportedOperationException
        );
        let mut req = encrypt(b"x");
        req.additional_authenticated_data = Some(b64::encode(vec![1u8; 8193]));
        assert_eq!(
            name_of(req.validate(&limits)),
            ErrorName::UnsupportedOperationException
        );
        let big = Limits {
            max_data_bytes: 6144,
            max_aad_bytes: 65535,
        };
        assert!(encrypt(&[7u8; 6144]).validate(&big).is_ok());
        assert!(
            Limits {
                max_data_bytes: 100,
                ..big
            }
            .checked()
            .is_err()
        );
        assert!(
            Limits {
                max_aad_bytes: 70000,
                ..big
            }
            .checked()
            .is_err()
        );
    }

    #[test]
    fn validation_exceptions() {
        let limits = Limits::default();
        let cases: Vec<(&str, EncryptRequest)> = vec![
            ("empty plaintext", encrypt(b"")),
            (
                "url-safe",
                EncryptRequest {
                    plaintext: "-_-_".into(),
                    ..encrypt(b"x")
                },
            ),
            (
                "no padding",
                EncryptRequest {
                    plaintext: "YQ".into(),
                    ..encrypt(b"x")
                },
            ),
            (
                "whitespace",
                EncryptRequest {
                    plaintext: "YW Jj".into(),
                    ..encrypt(b"x")
                },
            ),
            (
                "algorithm",
                EncryptRequest {
                    encryption_algorithm: "AES_CBC".into(),
                    ..encrypt(b"x")
                },
            ),
            (
                "cdiv algorithm",
                EncryptRequest {
                    ciphertext_data_integrity_value_algorithm: Some("MD5".into()),
                    ..encrypt(b"x")
                },
            ),
            (
                "no principal",
                EncryptRequest {
                    request_metadata: RequestMetadata {
                        aws_principal_arn: None,
                        ..meta()
                    },
                    ..encrypt(b"x")
                },
            ),
            (
                "no key arn",
                EncryptRequest {
                    request_metadata: RequestMetadata {
                        kms_key_arn: None,
                        ..meta()
                    },
                    ..encrypt(b"x")
                },
            ),
            (
                "long arn",
                EncryptRequest {
                    request_metadata: RequestMetadata {
                        kms_key_arn: Some("a".repeat(2049)),
                        ..meta()
                    },
                    ..encrypt(b"x")
                },
            ),
        ];
        for (what, req) in cases {
            assert_eq!(
                name_of(req.validate(&limits)),
                ErrorName::ValidationException,
                "{what}"
            );
        }
        let d = |f: fn(&mut DecryptRequest)| {
            let mut r = decrypt();
            f(&mut r);
            name_of(r.validate(&limits))
        };
        assert!(decrypt().validate(&limits).is_ok());
        assert_eq!(
            d(|r| r.initialization_vector = b64::encode([0u8; 13])),
            ErrorName::ValidationException
        );
        assert_eq!(
            d(|r| r.authentication_tag = b64::encode([0u8; 12])),
            ErrorName::ValidationException
        );
        assert_eq!(
            d(|r| r.ciphertext_metadata = Some(b64::encode([0u8; 21]))),
            ErrorName::ValidationException
        );
        assert_eq!(
            d(|r| r.ciphertext = String::new()),
            ErrorName::ValidationException
        );
    }

    #[test]
    fn metadata_rules_per_operation() {
        let health = RequestMetadata {
            kms_operation: Some("KmsHealthCheck".into()),
            kms_request_id: Some(String::new()),
            ..Default::default()
        };
        assert!(check_metadata(&health, Operation::Health).is_ok());
        assert!(check_metadata(&health, Operation::Metadata).is_err());
        let create = RequestMetadata {
            kms_key_arn: None,
            ..meta()
        };
        assert!(check_metadata(&create, Operation::Metadata).is_ok());
        let unknown_op = RequestMetadata {
            kms_operation: Some("BulkEncrypt".into()),
            ..meta()
        };
        assert!(check_metadata(&unknown_op, Operation::Encrypt).is_ok());
        let no_op = RequestMetadata {
            kms_operation: None,
            ..meta()
        };
        assert!(check_metadata(&no_op, Operation::Health).is_err());
    }

    #[test]
    fn json_errors_never_echo_data() {
        let secret = "c2VjcmV0IHBsYWludGV4dA==";
        let body = format!(
            r#"{{"requestMetadata":{{}},"plaintext":{{"x":"{secret}"}},"encryptionAlgorithm":"AES_GCM"}}"#
        );
        let err = parse_json::<EncryptRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(err.name, ErrorName::ValidationException);
        assert!(!err.message.contains(secret), "{}", err.message);
        let err = parse_json::<EncryptRequest>(br#"{"requestMetadata":{}}"#).unwrap_err();
        assert_eq!(err.message, "missing field plaintext");
        let err = parse_json::<EncryptRequest>(b"not json").unwrap_err();
        assert!(err.message.starts_with("malformed JSON body"));
    }
}
