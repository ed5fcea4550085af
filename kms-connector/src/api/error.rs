//! The OpenAPI error vocabulary: every internal failure (store, backend, signature, parameter
//! validation) becomes one [`ApiError`], and [`ApiError::reply`] maps it onto an Alibaba
//! [`ErrorCode`] and message in a single `match`. Handlers never build error JSON.
//!
//! Choices where Alibaba publishes nothing:
//! - a key whose backend needs an operator (instance disconnected, credentials, TLS or route
//!   refused) answers 409 `Rejected.Unavailable` (the spec's closest published code, §1.4);
//!   a backend that is down or slow for now (proxy or HSM unreachable, instance in a transient
//!   `Error`, a timeout) answers 503 `ServiceUnavailableTemporary`, which clients retry;
//! - a bad or tampered ciphertext answers 400 `InvalidParameter` naming `CiphertextBlob`;
//! - `ExternalKeyNotFound` / `ExternalKeyUnusable` answer 400 `InvalidParameter` naming
//!   `ExternalKeyId` at CreateKey, and 409 `Rejected.Unavailable` on crypto calls (the key was
//!   usable once; its external key went away);
//! - scheduling deletion of a protected key answers 409 `Rejected.StateModifiedFailed`.

use std::borrow::Cow;

use schemas::acs::AcsSignatureError;
use schemas::kms::ErrorCode;

use crate::backend::{BackendError, InstanceStatus};
use crate::blob::InvalidBlob;
use crate::context::InvalidContext;
use crate::ids::InvalidId;
use crate::store::{Entity, StoreError};

/// When a backend error happened: it means different things to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Making the first version of a new key (CreateKey).
    NewKey,
    /// Encrypting or decrypting.
    Crypto,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A specific code, with an optional precise message.
    #[error("{code}")]
    Code {
        /// The code.
        code: ErrorCode,
        /// Replaces the published message.
        message: Option<String>,
    },
    /// A required parameter is absent or empty.
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// A parameter has an invalid value.
    #[error("invalid parameter {parameter}")]
    Invalid {
        /// The parameter's name.
        parameter: Cow<'static, str>,
        /// Why, when it helps the caller (never echoes secrets).
        reason: Option<String>,
    },
    /// `DryRun=true` and everything else passed.
    #[error("dry run")]
    DryRun,
    /// The key's instance is not `Connected`.
    #[error("instance {instance_id} is {}", status.state.as_str())]
    InstanceNotConnected {
        /// The instance.
        instance_id: String,
        /// Its state and, in `Error`, why.
        status: InstanceStatus,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key backend failed.
    #[error("{error}")]
    Backend {
        /// The failure.
        error: BackendError,
        /// When.
        phase: Phase,
    },
    /// The request signature was refused.
    #[error(transparent)]
    Signature(#[from] AcsSignatureError),
    /// An identifier parameter is malformed.
    #[error(transparent)]
    Id(#[from] InvalidId),
    /// An encryption context parameter is malformed.
    #[error(transparent)]
    Context(#[from] InvalidContext),
    /// A ciphertext blob is malformed.
    #[error(transparent)]
    Blob(#[from] InvalidBlob),
}

impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        Self::Backend {
            error,
            phase: Phase::Crypto,
        }
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::Code {
            code,
            message: None,
        }
    }
}

impl ApiError {
    /// `code` with a precise message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Code {
            code,
            message: Some(message.into()),
        }
    }

    /// `InvalidParameter` naming `parameter`.
    pub fn invalid(parameter: impl Into<Cow<'static, str>>) -> Self {
        Self::Invalid {
            parameter: parameter.into(),
            reason: None,
        }
    }

    /// `InvalidParameter` naming `parameter`, with the reason.
    pub fn invalid_because(
        parameter: impl Into<Cow<'static, str>>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            parameter: parameter.into(),
            reason: Some(reason.into()),
        }
    }

    /// A backend failure while creating a key.
    pub fn new_key(error: BackendError) -> Self {
        Self::Backend {
            error,
            phase: Phase::NewKey,
        }
    }

    /// The code and message to answer with: the one place internal errors meet the protocol.
    pub fn reply(&self) -> (ErrorCode, Cow<'static, str>) {
        use ErrorCode as C;
        let published = |code: ErrorCode| (code, Cow::Borrowed(code.default_message()));
        let own = |code: ErrorCode, message: String| (code, Cow::Owned(message));
        match self {
            Self::Code { code, message } => match message {
                Some(m) => own(*code, m.clone()),
                None => published(*code),
            },
            Self::Missing(name) => own(
                C::MissingParameter,
                format!("The parameter \"{name}\" is needed but not provided."),
            ),
            Self::Invalid { parameter, reason } => own(
                C::InvalidParameter,
                match reason {
                    Some(r) => format!("The specified parameter {parameter} is not valid: {r}"),
                    None => format!("The specified parameter {parameter} is not valid."),
                },
            ),
            Self::DryRun => published(C::DryRunOperationError),
            Self::InstanceNotConnected {
                instance_id,
                status,
            } => {
                let cause = status
                    .error
                    .map_or(String::new(), |e| format!(" ({})", e.as_str()));
                let state = status.state.as_str();
                match status.error {
                    Some(error) if error.is_transient() => own(
                        C::ServiceUnavailableTemporary,
                        format!(
                            "Service Unavailable Temporary: the KMS instance {instance_id} cannot reach its XKI proxy now ({state}, {}); retry later.",
                            error.as_str()
                        ),
                    ),
                    _ => own(
                        C::RejectedUnavailable,
                        format!(
                            "The request was rejected because the KMS instance {instance_id} is {state}{cause}."
                        ),
                    ),
                }
            }
            Self::Store(error) => match error {
                StoreError::NotFound(Entity::Key) => published(C::KeyNotFound),
                StoreError::NotFound(Entity::Alias) => published(C::AliasNotFound),
                StoreError::NotFound(Entity::Instance) => published(C::DkmsInstanceNotFound),
                StoreError::NotFound(Entity::KeyVersion) => published(C::KeyVersionNotFound),
                StoreError::NotFound(Entity::Policy) => {
                    own(C::ResourceNotFound, "Policy not found.".into())
                }
                StoreError::AlreadyExists(Entity::Alias) => published(C::AliasAlreadyExists),
                StoreError::StateMismatch { .. } | StoreError::Conflict(_) => {
                    published(C::RejectedStateModifiedFailed)
                }
                StoreError::DeletionProtected => own(
                    C::RejectedStateModifiedFailed,
                    "Keystate modified failed: the key has deletion protection enabled.".into(),
                ),
                StoreError::InvalidArgument(reason) => {
                    own(C::InvalidParameter, format!("The specified parameter is not valid: {reason}"))
                }
                StoreError::Busy(_) | StoreError::Unavailable(_) => {
                    published(C::ServiceUnavailableTemporary)
                }
                _ => published(C::InternalFailure),
            },
            Self::Backend { error, phase } => match (error, phase) {
                (BackendError::InvalidCiphertext, _) => invalid_blob(),
                (BackendError::Unavailable(reason), _) => own(
                    C::RejectedUnavailable,
                    format!("The request was rejected because the key is unavailable: {reason}"),
                ),
                (BackendError::TemporarilyUnavailable(reason), _) => own(
                    C::ServiceUnavailableTemporary,
                    format!("Service Unavailable Temporary: {reason}; retry later."),
                ),
                (BackendError::ExternalKeyDisabled, _) => own(
                    C::RejectedUnavailable,
                    "The request was rejected because the external key is disabled in the XKI proxy."
                        .into(),
                ),
                (BackendError::ExternalKeyNotFound, Phase::NewKey) => own(
                    C::InvalidParameter,
                    "The specified parameter ExternalKeyId is not valid: the external key was not found in the XKI proxy."
                        .into(),
                ),
                (BackendError::ExternalKeyUnusable(reason), Phase::NewKey) => own(
                    C::InvalidParameter,
                    format!("The specified parameter ExternalKeyId is not valid: the external key cannot be used: {reason}"),
                ),
                (BackendError::ExternalKeyNotFound, Phase::Crypto) => own(
                    C::RejectedUnavailable,
                    "The request was rejected because the external key was not found in the XKI proxy."
                        .into(),
                ),
                (BackendError::ExternalKeyUnusable(reason), Phase::Crypto) => own(
                    C::RejectedUnavailable,
                    format!("The request was rejected because the external key cannot be used: {reason}"),
                ),
                (BackendError::Throttled, _) => published(C::RejectedThrottling),
                (BackendError::Timeout, _) => published(C::ServiceUnavailableTemporary),
                (BackendError::Unsupported(what), _) => {
                    own(C::RejectedUnsupportedOperation, format!("Unsupported operation: {what}"))
                }
                (BackendError::InvalidParameter(reason), _) => {
                    own(C::InvalidParameter, format!("The specified parameter is not valid: {reason}"))
                }
                _ => published(C::InternalFailure),
            },
            Self::Signature(error) => {
                let code = ErrorCode::from_code(error.code()).unwrap_or(C::IncompleteSignature);
                match error {
                    AcsSignatureError::ClockSkew { .. } => own(
                        code,
                        "Specified time stamp or date value is not within the allowed window."
                            .into(),
                    ),
                    AcsSignatureError::UnknownAccessKey(_) | AcsSignatureError::NonceReused => {
                        published(code)
                    }
                    other => own(code, format!("{}: {other}.", code.default_message().trim_end_matches('.'))),
                }
            }
            Self::Id(error) => own(C::InvalidParameter, error.0.to_owned()),
            Self::Context(error) => own(C::InvalidParameter, format!("{error}.")),
            Self::Blob(_) => invalid_blob(),
        }
    }

    /// Detail for the server log when the caller only sees a generic message.
    pub fn internal_detail(&self) -> Option<String> {
        match self {
            Self::Store(e) => Some(e.to_string()),
            Self::Backend { error, .. } => match error {
                BackendError::Internal(detail) => Some(detail.clone()),
                other => Some(other.to_string()),
            },
            _ => None,
        }
    }
}

fn invalid_blob() -> (ErrorCode, Cow<'static, str>) {
    (
        ErrorCode::InvalidParameter,
        Cow::Borrowed("The specified parameter CiphertextBlob is not valid."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConnectionError;
    use crate::store::ConnectionState;

    fn code_of(error: ApiError) -> (&'static str, u16) {
        let (code, _) = error.reply();
        (code.code(), code.http_status())
    }

    #[test]
    fn store_errors() {
        assert_eq!(
            code_of(StoreError::NotFound(Entity::Key).into()),
            ("Forbidden.KeyNotFound", 404)
        );
        assert_eq!(
            code_of(StoreError::NotFound(Entity::Alias).into()),
            ("Forbidden.AliasNotFound", 404)
        );
        assert_eq!(
            code_of(StoreError::NotFound(Entity::Instance).into()),
            ("Forbidden.DKMSInstanceNotFound", 403)
        );
        assert_eq!(
            code_of(StoreError::AlreadyExists(Entity::Alias).into()),
            ("AliasAlreadyExists", 400)
        );
        assert_eq!(
            code_of(StoreError::DeletionProtected.into()),
            ("Rejected.StateModifiedFailed", 409)
        );
        assert_eq!(
            code_of(StoreError::Busy("x".into()).into()),
            ("ServiceUnavailableTemporary", 503)
        );
        let (code, message) = ApiError::from(StoreError::Database("secret row".into())).reply();
        assert_eq!(code, ErrorCode::InternalFailure);
        assert!(!message.contains("secret row"));
    }

    #[test]
    fn backend_errors() {
        let crypto = |e| code_of(ApiError::from(e));
        assert_eq!(
            crypto(BackendError::InvalidCiphertext),
            ("InvalidParameter", 400)
        );
        assert_eq!(
            crypto(BackendError::Throttled),
            ("Rejected.Throttling", 429)
        );
        assert_eq!(
            crypto(BackendError::Timeout),
            ("ServiceUnavailableTemporary", 503)
        );
        assert_eq!(
            crypto(BackendError::Unavailable("down".into())),
            ("Rejected.Unavailable", 409)
        );
        assert_eq!(
            crypto(BackendError::ExternalKeyDisabled),
            ("Rejected.Unavailable", 409)
        );
        assert_eq!(
            crypto(BackendError::ExternalKeyNotFound),
            ("Rejected.Unavailable", 409)
        );
        assert_eq!(
            code_of(ApiError::new_key(BackendError::ExternalKeyNotFound)),
            ("InvalidParameter", 400)
        );
        let (code, message) = ApiError::from(BackendError::Internal("hsm detail".into())).reply();
        assert_eq!(code, ErrorCode::InternalFailure);
        assert!(!message.contains("hsm detail"));
        let (_, message) = ApiError::from(BackendError::ExternalKeyDisabled).reply();
        assert!(message.contains("the external key is disabled in the XKI proxy"));
    }

    #[test]
    fn validation_and_signature_errors() {
        assert_eq!(
            code_of(ApiError::Missing("KeyId")),
            ("MissingParameter", 400)
        );
        let (_, message) = ApiError::Missing("KeyId").reply();
        assert!(message.contains("\"KeyId\""));
        assert_eq!(
            code_of(ApiError::invalid("KeySpec")),
            ("InvalidParameter", 400)
        );
        assert_eq!(code_of(ApiError::DryRun), ("DryRunOperationError", 400));
        assert_eq!(
            code_of(AcsSignatureError::SignatureMismatch.into()),
            ("IncompleteSignature", 400)
        );
        assert_eq!(
            code_of(AcsSignatureError::UnknownAccessKey("x".into()).into()),
            ("InvalidAccessKeyId.NotFound", 404)
        );
        assert_eq!(
            code_of(AcsSignatureError::ClockSkew { skew_seconds: 1200 }.into()),
            ("IllegalTimestamp", 400)
        );
        assert_eq!(
            code_of(AcsSignatureError::NonceReused.into()),
            ("SignatureNonceUsed", 400)
        );
        let not_connected = |state, error| ApiError::InstanceNotConnected {
            instance_id: "kst-x".into(),
            status: InstanceStatus { state, error },
        };
        assert_eq!(
            code_of(not_connected(ConnectionState::Disconnected, None)),
            ("Rejected.Unavailable", 409)
        );
        assert_eq!(
            code_of(not_connected(
                ConnectionState::Error,
                Some(ConnectionError::InvalidCredentials)
            )),
            ("Rejected.Unavailable", 409)
        );
        for transient in [ConnectionError::NotReachable, ConnectionError::TimedOut] {
            assert_eq!(
                code_of(not_connected(ConnectionState::Error, Some(transient))),
                ("ServiceUnavailableTemporary", 503)
            );
        }
        assert_eq!(
            code_of(BackendError::TemporarilyUnavailable("down".into()).into()),
            ("ServiceUnavailableTemporary", 503)
        );
    }
}
