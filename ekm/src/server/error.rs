//! The EKM API's error vocabulary: the crate's [`Error`] onto an [`ErrorCode`] and its HTTP
//! status, in one `match`. Handlers never build error bodies by hand.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use schemas::ekm::{ErrorCode, ErrorResponse};

use crate::error::Error;

/// The code an error travels as.
pub fn code(error: &Error) -> ErrorCode {
    match error {
        Error::KeyNotFound(_) => ErrorCode::KeyNotFound,
        Error::KeyAlreadyExists(_) => ErrorCode::KeyAlreadyExists,
        Error::KeyDisabled(_) => ErrorCode::KeyDisabled,
        Error::KeyPendingDeletion(_) => ErrorCode::KeyPendingDeletion,
        Error::InvalidKeyState { .. } => ErrorCode::InvalidKeyState,
        Error::KeyUsageNotPermitted { .. } => ErrorCode::KeyUsageNotPermitted,
        Error::InvalidCiphertext => ErrorCode::InvalidCiphertext,
        Error::Validation(_) => ErrorCode::ValidationError,
        Error::Throttled => ErrorCode::Throttled,
        Error::DeadlineExceeded => ErrorCode::DeadlineExceeded,
        Error::HsmUnavailable(_)
        | Error::TokenNotFound(_)
        | Error::PinIncorrect
        | Error::PinLocked => ErrorCode::HsmUnavailable,
        Error::Config(_) | Error::Internal(_) => ErrorCode::Internal,
    }
}

/// The message sent for an error: internal details stay in the logs.
fn message(error: &Error) -> String {
    match error {
        Error::Internal(_) | Error::Config(_) => "internal error".to_owned(),
        Error::HsmUnavailable(_)
        | Error::TokenNotFound(_)
        | Error::PinIncorrect
        | Error::PinLocked => "the HSM is unavailable".to_owned(),
        other => other.to_string(),
    }
}

/// The response for an error.
pub fn response(error: &Error) -> HttpResponse {
    body(code(error), message(error))
}

/// The response for a code and message (request-level failures: JSON, paths, methods).
pub fn body(code: ErrorCode, message: String) -> HttpResponse {
    let status =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(ErrorResponse {
        error: code,
        message,
    })
}

/// The code a request refused by the listener (before a handler) travels as.
pub fn refusal_code(refusal: listener::Refusal) -> ErrorCode {
    use listener::Refusal as R;
    match refusal {
        R::BodyTooLarge { .. } => ErrorCode::PayloadTooLarge,
        R::Overloaded => ErrorCode::Throttled,
        R::HeadersTooLarge { .. } | R::BodyTimeout { .. } | R::BadBody => {
            ErrorCode::ValidationError
        }
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::xki::ExternalKeyId;

    #[test]
    fn statuses() {
        let id = ExternalKeyId::parse("k").unwrap();
        let cases = [
            (Error::KeyNotFound(id.clone()), 404),
            (Error::KeyDisabled(id.clone()), 409),
            (Error::KeyPendingDeletion(id.clone()), 409),
            (
                Error::KeyUsageNotPermitted {
                    key: id,
                    operation: crate::Operation::Decrypt,
                },
                403,
            ),
            (Error::InvalidCiphertext, 400),
            (Error::Validation("x".into()), 400),
            (Error::Throttled, 429),
            (Error::DeadlineExceeded, 503),
            (Error::HsmUnavailable("CKR_DEVICE_ERROR".into()), 503),
            (Error::Internal("detail".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(response(&error).status().as_u16(), status, "{error:?}");
        }
        assert_eq!(
            message(&Error::Internal("secret detail".into())),
            "internal error"
        );
    }
}
