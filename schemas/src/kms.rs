//! Alibaba Cloud KMS OpenAPI 2016-01-20: the error codes (spec `kms-openapi.md` §3.3), the
//! error body, and the typed key vocabulary (key specs, usages, origins, protection levels,
//! states, rotation intervals). The kms-connector maps its internal errors onto [`ErrorCode`]
//! in one place.

mod vocabulary;
pub use vocabulary::{
    AsymmetricAlgorithm, InvalidRotationInterval, KeySpec, KeyUsage, Origin, ProtectionLevel,
    RotationInterval, SigningAlgorithm,
};

use serde::{Deserialize, Serialize};

/// The API version every request names.
pub const API_VERSION: &str = "2016-01-20";

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal, $message:literal), )*) => {
        /// A KMS OpenAPI error code with its HTTP status and published message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in the spec's table order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The wire code, e.g. `Forbidden.KeyNotFound`.
            pub const fn code(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status Alibaba returns with it.
            pub const fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }

            /// The message Alibaba publishes for it (callers may give a more precise one).
            pub const fn default_message(self) -> &'static str {
                match self { $( ErrorCode::$variant => $message, )* }
            }

            /// Looks a wire code up.
            pub fn from_code(code: &str) -> Option<Self> {
                match code { $( $code => Some(ErrorCode::$variant), )* _ => None }
            }
        }
    };
}

error_codes! {
    /// A parameter value is not valid.
    InvalidParameter => ("InvalidParameter", 400, "The specified parameter is not valid."),
    /// A required parameter is missing.
    MissingParameter => ("MissingParameter", 400, "The parameter is needed but not provided."),
    /// The request parameters cannot be parsed.
    ParseRequestParameterException => ("ParseRequestParameterException", 400, "Server parse parameters exception. Please check your input params."),
    /// The signature is missing, malformed or wrong.
    IncompleteSignature => ("IncompleteSignature", 400, "The request signature does not conform to Alibaba Cloud standards."),
    /// The timestamp is missing, malformed or outside the allowed window.
    IllegalTimestamp => ("IllegalTimestamp", 400, "The input parameter \"Timestamp\" that is mandatory for processing this request is not supplied."),
    /// The signature nonce was already used.
    SignatureNonceUsed => ("SignatureNonceUsed", 400, "The request signature nonce has been used."),
    /// A resource quota is exhausted.
    RejectedLimitExceeded => ("Rejected.LimitExceeded", 400, "The request was rejected because user create resource limit was exceeded."),
    /// The operation is not supported for this key or instance.
    RejectedUnsupportedOperation => ("Rejected.UnsupportedOperation", 400, "Unsupported operation."),
    /// The action is not supported.
    UnsupportedOperation => ("UnsupportedOperation", 400, "This action is not supported."),
    /// The alias name is taken.
    AliasAlreadyExists => ("AliasAlreadyExists", 400, "AliasName Already Exists."),
    /// The key origin does not allow this call.
    UnsupportedOrigin => ("Unsupported.Origin", 400, "This key origin is not valid for this api."),
    /// An alias is not allowed here.
    UnsupportedAlias => ("Unsupported.Alias", 400, "Alias is not valid for this api."),
    /// The protection level is not available.
    UnsupportedProtectionLevel => ("Unsupported.ProtectionLevel", 400, "This protection level is not valid for this region"),
    /// A tag key breaks the rules.
    InvalidTagKey => ("InvalidParameter.TagKey", 400, "The specified tagKey is not valid."),
    /// A tag value breaks the rules.
    InvalidTagValue => ("InvalidParameter.TagValue", 400, "The specified tagValue is not valid."),
    /// A tag key appears twice.
    DuplicateTagKey => ("Duplicate.TagKey", 400, "The specified tagKey is duplicate."),
    /// The key does not support key policies.
    KeyPolicyUnsupported => ("Forbidden.KeyPolicyUnSupported", 400, "The specified key does not support key policy."),
    /// DryRun: the call would have succeeded.
    DryRunOperationError => ("DryRunOperationError", 400, "Request validation has been passed with DryRun flag set."),
    /// The caller lacks permission.
    NoPermission => ("Forbidden.NoPermission", 403, "This operation is forbidden by permission system."),
    /// The AccessKey is disabled.
    ForbiddenAccessKey => ("Forbidden.AccessKey", 403, "This AccessKey is not enabled."),
    /// The HTTP method is not supported.
    UnsupportedHttpMethod => ("UnsupportedHTTPMethod", 403, "This http method is not supported."),
    /// The KMS instance does not exist.
    DkmsInstanceNotFound => ("Forbidden.DKMSInstanceNotFound", 403, "The specified DKMS Instance is not found."),
    /// The instance is not in a state that allows the call.
    DkmsInstanceStateInvalid => ("Forbidden.DKMSInstanceStateInvalid", 403, "The specified DKMS Instance state is invalid."),
    /// The key does not exist.
    KeyNotFound => ("Forbidden.KeyNotFound", 404, "The specified Key is not found."),
    /// The key version does not exist.
    KeyVersionNotFound => ("Forbidden.KeyVersionNotFound", 404, "The specified Key version is not found."),
    /// The alias does not exist.
    AliasNotFound => ("Forbidden.AliasNotFound", 404, "The specified Alias is not found."),
    /// The resource (policy, …) does not exist.
    ResourceNotFound => ("Forbidden.ResourceNotFound", 404, "The resource is not found."),
    /// The AccessKey id is unknown.
    InvalidAccessKeyIdNotFound => ("InvalidAccessKeyId.NotFound", 404, "The Access Key ID provided does not exist in our records."),
    /// The resource id of a tag call is unknown.
    InvalidResourceIdNotFound => ("InvalidResourceId.NotFound", 404, "The specified ResourceId is not found."),
    /// The key is Enabled.
    RejectedEnabled => ("Rejected.Enabled", 409, "The request was rejected because the key state is Enabled."),
    /// The key is Disabled.
    RejectedDisabled => ("Rejected.Disabled", 409, "The request was rejected because the key state is Disabled."),
    /// The key is PendingDeletion.
    RejectedPendingDeletion => ("Rejected.PendingDeletion", 409, "The request was rejected because the key state is PendingDeletion."),
    /// The key is PendingImport.
    RejectedPendingImport => ("Rejected.PendingImport", 409, "The request was rejected because the key state is PendingImport."),
    /// The key's backend (HSM, external proxy) is unreachable.
    RejectedUnavailable => ("Rejected.Unavailable", 409, "The request was rejected because the key state is Unavailable."),
    /// A state transition is not allowed.
    RejectedStateModifiedFailed => ("Rejected.StateModifiedFailed", 409, "Keystate modified failed."),
    /// The resource already exists.
    RejectedResourceExist => ("Rejected.ResourceExist", 409, "The resource already exists."),
    /// Too many requests.
    RejectedThrottling => ("Rejected.Throttling", 429, "QPS Limit Exceeded"),
    /// A server-side failure.
    InternalFailure => ("InternalFailure", 500, "Internal Failure."),
    /// The service (or a dependency) is temporarily unavailable.
    ServiceUnavailableTemporary => ("ServiceUnavailableTemporary", 503, "Service Unavailable Temporary."),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The error body: `{"HttpStatus":409,"Code":"Rejected.Disabled","Message":"…","RequestId":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// HTTP status, repeated in the body as Alibaba does.
    pub http_status: u16,
    /// The error code.
    pub code: String,
    /// Human-readable message (no secrets, no plaintext).
    pub message: String,
    /// The request id.
    pub request_id: String,
}

impl ErrorBody {
    /// Builds the body for `code`, with `message` or the published default.
    pub fn new(code: ErrorCode, message: Option<&str>, request_id: &str) -> Self {
        Self {
            http_status: code.http_status(),
            code: code.code().to_owned(),
            message: message.unwrap_or(code.default_message()).to_owned(),
            request_id: request_id.to_owned(),
        }
    }
}

/// A key state (spec §3.1), as `KeyState` in responses and `Rejected.<State>` in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Usable for metadata only.
    Disabled,
    /// Scheduled for deletion.
    PendingDeletion,
    /// Waiting for imported material.
    PendingImport,
    /// Its backend is unreachable.
    Unavailable,
}

impl KeyState {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Disabled => "Disabled",
            Self::PendingDeletion => "PendingDeletion",
            Self::PendingImport => "PendingImport",
            Self::Unavailable => "Unavailable",
        }
    }

    /// The `Rejected.<State>` error a call refused in this state gets.
    pub const fn rejection(self) -> ErrorCode {
        match self {
            Self::Enabled => ErrorCode::RejectedEnabled,
            Self::Disabled => ErrorCode::RejectedDisabled,
            Self::PendingDeletion => ErrorCode::RejectedPendingDeletion,
            Self::PendingImport => ErrorCode::RejectedPendingImport,
            Self::Unavailable => ErrorCode::RejectedUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_codes_and_statuses() {
        for (code, status) in [
            (ErrorCode::KeyNotFound, ("Forbidden.KeyNotFound", 404)),
            (ErrorCode::AliasNotFound, ("Forbidden.AliasNotFound", 404)),
            (ErrorCode::RejectedThrottling, ("Rejected.Throttling", 429)),
            (
                ErrorCode::RejectedStateModifiedFailed,
                ("Rejected.StateModifiedFailed", 409),
            ),
            (ErrorCode::NoPermission, ("Forbidden.NoPermission", 403)),
            (ErrorCode::InvalidParameter, ("InvalidParameter", 400)),
            (ErrorCode::IncompleteSignature, ("IncompleteSignature", 400)),
            (
                ErrorCode::InvalidAccessKeyIdNotFound,
                ("InvalidAccessKeyId.NotFound", 404),
            ),
            (ErrorCode::InternalFailure, ("InternalFailure", 500)),
        ] {
            assert_eq!((code.code(), code.http_status()), status);
        }
        for state in [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::PendingImport,
            KeyState::Unavailable,
        ] {
            let code = state.rejection();
            assert_eq!(code.code(), format!("Rejected.{}", state.as_str()));
            assert_eq!(code.http_status(), 409);
            assert!(
                code.default_message()
                    .ends_with(&format!("is {}.", state.as_str()))
            );
        }
    }

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate {code}");
            assert_eq!(ErrorCode::from_code(code.code()), Some(*code));
            assert!((400..600).contains(&code.http_status()));
        }
    }

    #[test]
    fn error_body_shape() {
        let body = ErrorBody::new(ErrorCode::RejectedDisabled, None, "req-1");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"HttpStatus":409,"Code":"Rejected.Disabled","Message":"The request was rejected because the key state is Disabled.","RequestId":"req-1"}"#
        );
    }
}
