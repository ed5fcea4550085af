//! The one place where the proxy's failures become XKI errors: `{"errorName","errorMessage"}`
//! with the spec's HTTP status.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use schemas::xki::{ErrorBody, ErrorName, RequestError};

/// An XKI error response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct XkiError {
    /// The spec's error name.
    pub name: ErrorName,
    /// Short printable message for the customer's logs (no secrets, no request data).
    pub message: String,
}

impl XkiError {
    /// Builds an error.
    pub fn new(name: ErrorName, message: impl Into<String>) -> Self {
        Self {
            name,
            message: message.into(),
        }
    }
}

impl From<RequestError> for XkiError {
    fn from(e: RequestError) -> Self {
        Self {
            name: e.name,
            message: e.message,
        }
    }
}

impl From<ekm::Error> for XkiError {
    fn from(e: ekm::Error) -> Self {
        use ekm::Error as E;
        let name = match &e {
            E::KeyNotFound(_) => ErrorName::KeyNotFoundException,
            E::KeyDisabled(_) | E::KeyPendingDeletion(_) | E::InvalidKeyState { .. } => {
                ErrorName::InvalidStateException
            }
            E::KeyUsageNotPermitted { .. } => ErrorName::InvalidKeyUsageException,
            E::InvalidCiphertext => ErrorName::InvalidCiphertextException,
            E::Validation(_) => ErrorName::ValidationException,
            E::Throttled => ErrorName::ThrottlingException,
            E::DeadlineExceeded => ErrorName::DependencyTimeoutException,
            _ => ErrorName::InternalException,
        };
        // The ekm messages carry no key material or request data; internal details of an HSM
        // failure stay in our logs, the customer sees a generic line.
        let message = match name {
            ErrorName::InternalException => {
                tracing::warn!(target: "xki_proxy::backend", error = %e, "key manager failure");
                "the external key manager failed".to_owned()
            }
            _ => e.to_string(),
        };
        Self { name, message }
    }
}

/// The XKI answer to what the listener refuses (and to a body the handler could not read):
/// `ThrottlingException` (429, retryable) for a connection over the cap, otherwise a
/// `ValidationException` body with the listener's status (431, 413, 408, 400), as the spec
/// allows for an oversized body ("413, or a ValidationException body").
pub fn refusal(refusal: listener::Refusal) -> (StatusCode, XkiError) {
    use listener::Refusal as R;
    let message = refusal.message();
    let status = |code| StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    match refusal {
        R::Overloaded => (
            StatusCode::TOO_MANY_REQUESTS,
            XkiError::new(ErrorName::ThrottlingException, message),
        ),
        R::HeadersTooLarge { .. } | R::BodyTooLarge { .. } | R::BodyTimeout { .. } | R::BadBody => {
            (
                status(refusal.status()),
                XkiError::new(ErrorName::ValidationException, message),
            )
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            XkiError::new(ErrorName::InternalException, message),
        ),
    }
}

impl ResponseError for XkiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.name.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(ErrorBody::new(self.name, &self.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::xki::ExternalKeyId;

    #[test]
    fn ekm_errors_map_to_spec_names() {
        let id = ExternalKeyId::parse("k").unwrap();
        let cases = [
            (
                ekm::Error::KeyNotFound(id.clone()),
                ErrorName::KeyNotFoundException,
                404,
            ),
            (
                ekm::Error::KeyDisabled(id.clone()),
                ErrorName::InvalidStateException,
                400,
            ),
            (
                ekm::Error::KeyPendingDeletion(id.clone()),
                ErrorName::InvalidStateException,
                400,
            ),
            (
                ekm::Error::KeyUsageNotPermitted {
                    key: id,
                    operation: ekm::Operation::Encrypt,
                },
                ErrorName::InvalidKeyUsageException,
                400,
            ),
            (
                ekm::Error::InvalidCiphertext,
                ErrorName::InvalidCiphertextException,
                400,
            ),
            (ekm::Error::Throttled, ErrorName::ThrottlingException, 429),
            (
                ekm::Error::DeadlineExceeded,
                ErrorName::DependencyTimeoutException,
                503,
            ),
            (
                ekm::Error::HsmUnavailable("CKR_DEVICE_ERROR".into()),
                ErrorName::InternalException,
                500,
            ),
        ];
        for (e, name, status) in cases {
            let x = XkiError::from(e);
            assert_eq!(x.name, name);
            assert_eq!(x.status_code().as_u16(), status);
        }
        let internal = XkiError::from(ekm::Error::Internal("slot 3 handle 77".into()));
        assert!(
            !internal.message.contains("handle"),
            "internal details must not reach KMS"
        );
    }
}
