//! The twelve XKI error names, their HTTP statuses, and the error body.

use serde::{Deserialize, Serialize};

/// Every error the XKI protocol can return (spec §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorName {
    /// 400: one or more inputs are invalid.
    ValidationException,
    /// 400: key or key store disabled, deactivated or blocked.
    InvalidStateException,
    /// 400: ciphertext, IV, AAD or tag corrupt or missing.
    InvalidCiphertextException,
    /// 400: the key does not allow the operation.
    InvalidKeyUsageException,
    /// 401: bad SigV4.
    AuthenticationFailedException,
    /// 403: secondary authorization denied.
    AccessDeniedException,
    /// 404: unknown external key.
    KeyNotFoundException,
    /// 404: unknown URI path.
    InvalidUriPathException,
    /// 429: proxy overloaded or per-prefix quota exceeded (retryable).
    ThrottlingException,
    /// 501: operation not implemented, or a value above the proxy's own limit.
    UnsupportedOperationException,
    /// 503: the proxy timed out on a dependency (retryable).
    DependencyTimeoutException,
    /// 500: generic failure, e.g. the HSM is down (retryable).
    InternalException,
}

impl ErrorName {
    /// All names, in the spec's table order.
    pub const ALL: [ErrorName; 12] = [
        Self::ValidationException,
        Self::InvalidStateException,
        Self::InvalidCiphertextException,
        Self::InvalidKeyUsageException,
        Self::AuthenticationFailedException,
        Self::AccessDeniedException,
        Self::KeyNotFoundException,
        Self::InvalidUriPathException,
        Self::ThrottlingException,
        Self::UnsupportedOperationException,
        Self::DependencyTimeoutException,
        Self::InternalException,
    ];

    /// The HTTP status the spec assigns.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::ValidationException
            | Self::InvalidStateException
            | Self::InvalidCiphertextException
            | Self::InvalidKeyUsageException => 400,
            Self::AuthenticationFailedException => 401,
            Self::AccessDeniedException => 403,
            Self::KeyNotFoundException | Self::InvalidUriPathException => 404,
            Self::ThrottlingException => 429,
            Self::UnsupportedOperationException => 501,
            Self::DependencyTimeoutException => 503,
            Self::InternalException => 500,
        }
    }

    /// Whether KMS treats the error as retryable (it then lowers the reliability graph).
    pub const fn retryable(self) -> bool {
        matches!(
            self,
            Self::ThrottlingException | Self::DependencyTimeoutException | Self::InternalException
        )
    }

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ValidationException => "ValidationException",
            Self::InvalidStateException => "InvalidStateException",
            Self::InvalidCiphertextException => "InvalidCiphertextException",
            Self::InvalidKeyUsageException => "InvalidKeyUsageException",
            Self::AuthenticationFailedException => "AuthenticationFailedException",
            Self::AccessDeniedException => "AccessDeniedException",
            Self::KeyNotFoundException => "KeyNotFoundException",
            Self::InvalidUriPathException => "InvalidUriPathException",
            Self::ThrottlingException => "ThrottlingException",
            Self::UnsupportedOperationException => "UnsupportedOperationException",
            Self::DependencyTimeoutException => "DependencyTimeoutException",
            Self::InternalException => "InternalException",
        }
    }
}

impl std::fmt::Display for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"errorName": "...", "errorMessage": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error name.
    pub error_name: ErrorName,
    /// A short human-readable message (< 512 printable ASCII characters, no secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl ErrorBody {
    /// Builds a body, forcing the message into the spec's shape.
    pub fn new(error_name: ErrorName, message: &str) -> Self {
        Self {
            error_name,
            error_message: Some(sanitize_error_message(message)),
        }
    }
}

/// Keeps printable ASCII only and cuts to fewer than 512 characters (spec §1.7).
pub fn sanitize_error_message(message: &str) -> String {
    message
        .chars()
        .filter(|c| (' '..='~').contains(c))
        .take(511)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_spec_table() {
        let table = [
            (ErrorName::ValidationException, 400, false),
            (ErrorName::InvalidStateException, 400, false),
            (ErrorName::InvalidCiphertextException, 400, false),
            (ErrorName::InvalidKeyUsageException, 400, false),
            (ErrorName::AuthenticationFailedException, 401, false),
            (ErrorName::AccessDeniedException, 403, false),
            (ErrorName::KeyNotFoundException, 404, false),
            (ErrorName::InvalidUriPathException, 404, false),
            (ErrorName::ThrottlingException, 429, true),
            (ErrorName::UnsupportedOperationException, 501, false),
            (ErrorName::DependencyTimeoutException, 503, true),
            (ErrorName::InternalException, 500, true),
        ];
        assert_eq!(table.len(), ErrorName::ALL.len());
        for (name, status, retryable) in table {
            assert_eq!(name.http_status(), status, "{name}");
            assert_eq!(name.retryable(), retryable, "{name}");
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, format!("\"{}\"", name.as_str()));
        }
    }

    #[test]
    fn body_is_compact_and_message_sanitized() {
        let body = ErrorBody::new(ErrorName::ValidationException, "bad\nfield é");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"errorName":"ValidationException","errorMessage":"badfield "}"#
        );
        assert_eq!(sanitize_error_message(&"x".repeat(600)).len(), 511);
    }
}
