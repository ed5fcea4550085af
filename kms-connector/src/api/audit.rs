//! The audit trail and the request log: one audit event and one structured log line per
//! request, success or failure, including requests refused before the caller is known.
//! Neither ever holds parameters: no plaintext, data key, ciphertext, policy or secret.

use std::time::Duration;

use crate::store::{AuditEvent, Store, UnixMillis};

/// What is known about a request as it is served.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The action, as signed or (before authentication) as claimed; `-` when none.
    pub action: String,
    /// The principal ARN, or `-` when the caller is unknown.
    pub principal: String,
    /// The caller's account, when known.
    pub account_id: String,
    /// The AccessKey id used or claimed.
    pub access_key_id: Option<String>,
    /// The key concerned.
    pub key_id: Option<String>,
    /// The client address.
    pub source_ip: Option<String>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// `Success` or the error code.
    pub result: &'a str,
    /// The HTTP status answered.
    pub http_status: u16,
    /// Time spent serving it.
    pub latency: Duration,
}

/// Appends the audit event and writes the request log line. A failure to write the event is
/// logged (at error level) but does not change the answer: the operation already happened.
pub async fn finish(store: &Store, request_id: &str, record: &Record, outcome: Outcome<'_>) {
    let event = AuditEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        time: UnixMillis::now(),
        request_id: request_id.to_owned(),
        principal: record.principal.clone(),
        account_id: record.account_id.clone(),
        action: record.action.clone(),
        key_id: record.key_id.clone(),
        result: outcome.result.to_owned(),
        source_ip: record.source_ip.clone(),
        detail: record
            .access_key_id
            .as_ref()
            .map(|id| format!("access_key_id={id}")),
    };
    if let Err(error) = store.append_audit(event).await {
        tracing::error!(target: "kms_connector::audit", request_id, %error, "cannot append the audit event");
    }
    tracing::info!(
        target: "kms_connector::api",
        request_id,
        action = %record.action,
        key_id = record.key_id.as_deref().unwrap_or(""),
        principal = %record.principal,
        outcome = outcome.result,
        http_status = outcome.http_status,
        latency_ms = u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX),
        source_ip = record.source_ip.as_deref().unwrap_or(""),
        "request"
    );
}
