//! The XKI routes. One handler decides, in the spec's order: path (InvalidUriPathException,
//! before authentication), method (405), key store prefix, the SigV4 checks that need no body
//! (shape, date, scope, access key, signed host), then the body (413 past the cap, 408 past
//! the body deadline), the signature, per-prefix quota, JSON and field validation, key
//! allow-list, secondary authorization, then the key manager. A request refused before its
//! body is read has the body thrown away first, so the answer reaches HTTP/2 clients too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use schemas::b64;
use schemas::xki::validate::{Operation, check_metadata, parse_json};
use schemas::xki::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, ErrorName, ExternalKeyId,
    HealthRequest, KeySpec, KeyStatus, KeyUsage, MetadataRequest, MetadataResponse,
    RequestMetadata,
};

mod admit;

use self::admit::{Admitted, admit, authenticate};
use crate::error::XkiError;
use crate::health::HealthCache;
use crate::metrics::{ErrorLabels, Metrics, OpLabel};
use crate::policy;
use crate::tenancy::{KeyOp, KeyStore, Route, Tenancy};

/// Everything a request needs.
pub struct XkiState {
    /// Key stores.
    pub tenancy: Arc<Tenancy>,
    /// The key manager (remote EKM or in-process).
    pub backend: Arc<dyn ekm::KeyManager>,
    /// Key metadata, short TTL.
    pub metadata_cache: moka::sync::Cache<ExternalKeyId, ekm::KeyInfo>,
    /// Deep health.
    pub health: Arc<HealthCache>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Field limits.
    pub limits: schemas::xki::Limits,
    /// Backend deadline per request.
    pub deadline: Duration,
    /// Admission control: one permit per backend call in flight.
    pub in_flight: tokio::sync::Semaphore,
    /// Longest wait for a permit.
    pub admission_wait: Duration,
    /// Time a body may take, from its request head.
    pub body_timeout: Duration,
}

impl std::fmt::Debug for XkiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XkiState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What one request did, for its log line and metrics.
#[derive(Default)]
struct Trace {
    op: &'static str,
    prefix: String,
    key_id: String,
    kms_request_id: String,
    kms_operation: String,
    auth: Duration,
    backend: Duration,
    /// `(queue_us, hsm_us)` as reported by the key manager (0 = not measured).
    hsm_split: (u64, u64),
}

/// The catch-all handler of the KMS-facing listener.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<XkiState>,
) -> HttpResponse {
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let mut trace = Trace {
        op: "other",
        ..Default::default()
    };
    let result = serve(&req, payload, &state, &mut trace).await;
    state.metrics.in_flight.dec();
    let elapsed = started.elapsed();
    state
        .metrics
        .request_seconds
        .get_or_create(&OpLabel { op: trace.op })
        .observe(elapsed.as_secs_f64());
    let (response, outcome) = match result {
        Ok(response) => (response, "ok"),
        Err(Failure::MethodNotAllowed) => (
            HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "POST"))
                .finish(),
            "MethodNotAllowed",
        ),
        Err(Failure::Refused(refusal)) => {
            let (status, e) = crate::error::refusal(refusal);
            count_error(&state, trace.op, e.name);
            let mut response = e.error_response();
            *response.status_mut() = status;
            (response, e.name.as_str())
        }
        Err(Failure::Xki(e)) => {
            count_error(&state, trace.op, e.name);
            (e.error_response(), e.name.as_str())
        }
    };
    tracing::info!(
        target: "xki_proxy::request",
        kms_request_id = %trace.kms_request_id,
        kms_operation = %trace.kms_operation,
        prefix = %trace.prefix,
        key_id = %trace.key_id,
        op = trace.op,
        outcome,
        status = response.status().as_u16(),
        latency_us = elapsed.as_micros() as u64,
        auth_us = trace.auth.as_micros() as u64,
        backend_us = trace.backend.as_micros() as u64,
        queue_us = trace.hsm_split.0,
        hsm_us = trace.hsm_split.1,
    );
    response
}

fn count_error(state: &XkiState, op: &'static str, name: ErrorName) {
    count(&state.metrics, op, name);
}

fn count(metrics: &Metrics, op: &'static str, name: ErrorName) {
    metrics
        .errors
        .get_or_create(&ErrorLabels {
            op,
            error_name: name.as_str(),
        })
        .inc();
}

/// What the KMS-facing listener refuses before a handler runs (a header list over the cap, a
/// connection over the cap): XKI errors, logged and counted like the requests [`handle`]
/// answers.
#[derive(Debug)]
pub struct Refused {
    /// Where the refusals are counted.
    pub metrics: Arc<Metrics>,
}

impl listener::Refusals for Refused {
    fn answer(
        &self,
        refusal: listener::Refusal,
        request: Option<&listener::RequestHead>,
    ) -> listener::Answer {
        let (status, e) = crate::error::refusal(refusal);
        count(&self.metrics, "other", e.name);
        // Connections refused at the cap are counted and warned about by the listener.
        if let Some(head) = request {
            let path: String = head.uri.path().chars().take(200).collect();
            tracing::info!(
                target: "xki_proxy::request",
                op = "other",
                path = %path,
                refusal = refusal.as_str(),
                outcome = e.name.as_str(),
                status = status.as_u16(),
            );
        }
        listener::Answer::json(
            status.as_u16(),
            &schemas::xki::ErrorBody::new(e.name, &e.message),
        )
    }
}

/// Calls the backend under admission control (a request waits at most `admission_wait` for one
/// of `max_in_flight` slots, then gets a retryable `ThrottlingException`: bursts queue briefly,
/// sustained overload is shed instead of queueing into timeouts) and no longer than the request
/// deadline, counted from before the wait (a backend that ignores the deadline in its context
/// still gets the caller a clean, retryable 503 in time).
async fn within_deadline<T>(
    state: &XkiState,
    call: impl std::future::Future<Output = Result<T, ekm::Error>>,
) -> Result<T, ekm::Error> {
    let started = Instant::now();
    let Ok(Ok(_permit)) =
        tokio::time::timeout(state.admission_wait, state.in_flight.acquire()).await
    else {
        return Err(ekm::Error::Throttled);
    };
    let remaining = state.deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining, call).await {
        Ok(result) => result,
        Err(_) => Err(ekm::Error::DeadlineExceeded),
    }
}

enum Failure {
    MethodNotAllowed,
    /// The body is over the cap (413, before the signature is checked), too slow (408) or
    /// broken: a ValidationException body with the listener's status.
    Refused(listener::Refusal),
    Xki(XkiError),
}

impl<E: Into<XkiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Xki(e.into())
    }
}

fn xki(name: ErrorName, message: impl Into<String>) -> Failure {
    Failure::Xki(XkiError::new(name, message))
}

async fn serve(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &XkiState,
    trace: &mut Trace,
) -> Result<HttpResponse, Failure> {
    let deadline = listener::Deadline::after(state.body_timeout);
    let declared = listener::body::declared_length(req.headers());
    let cap = state.limits.max_body_bytes();
    let Admitted {
        route,
        store,
        headers,
    } = match admit(req, state, declared, trace) {
        Ok(admitted) => admitted,
        Err(failure) => {
            // Over HTTP/2 an answer sent while the client still sends its body is lost.
            listener::body::discard(&mut payload, deadline).await;
            return Err(failure);
        }
    };
    let body = listener::body::read(&mut payload, declared, cap, deadline)
        .await
        .map_err(|e| Failure::Refused(e.into()))?;

    let auth_started = Instant::now();
    authenticate(req, &headers, &body, &store)?;
    trace.auth += auth_started.elapsed();

    match route {
        Route::Health { .. } => {
            let request: HealthRequest = parse_json(&body)?;
            note_metadata(trace, &request.request_metadata);
            check_metadata(&request.request_metadata, Operation::Health)?;
            Ok(HttpResponse::Ok().json(state.health.response()))
        }
        Route::Key { key_id, op, .. } => {
            // The quota protects the HSM; health (answered from memory) is exempt.
            if !store.admit() {
                return Err(xki(
                    ErrorName::ThrottlingException,
                    "request quota of this key store exceeded",
                ));
            }
            let key = ExternalKeyId::parse(key_id)
                .map_err(|e| XkiError::new(ErrorName::ValidationException, e.to_string()))?;
            match op {
                KeyOp::Metadata => {
                    let request: MetadataRequest = parse_json(&body)?;
                    note_metadata(trace, &request.request_metadata);
                    check_metadata(&request.request_metadata, Operation::Metadata)?;
                    authorize(&store, &request.request_metadata, &key)?;
                    metadata(state, trace, &key).await
                }
                KeyOp::Encrypt => {
                    let request: EncryptRequest = parse_json(&body)?;
                    note_metadata(trace, &request.request_metadata);
                    let valid = request.validate(&state.limits)?;
                    authorize(&store, &request.request_metadata, &key)?;
                    let ctx = context(trace, state);
                    let started = Instant::now();
                    let (plaintext_len, want_cdiv) = (valid.plaintext.len(), valid.want_cdiv);
                    let result = within_deadline(
                        state,
                        state.backend.encrypt(
                            &ctx,
                            &key,
                            ekm::EncryptRequest {
                                plaintext: valid.plaintext,
                                aad: valid.aad,
                                want_cdiv: valid.want_cdiv,
                            },
                        ),
                    )
                    .await;
                    record_backend(state, trace, &ctx, started);
                    let out = result?;
                    check_sealed(&out, plaintext_len, want_cdiv)?;
                    Ok(HttpResponse::Ok().json(EncryptResponse {
                        ciphertext: b64::encode(&out.ciphertext),
                        ciphertext_metadata: (!out.ciphertext_metadata.is_empty())
                            .then(|| b64::encode(&out.ciphertext_metadata)),
                        initialization_vector: b64::encode(&out.iv),
                        authentication_tag: b64::encode(&out.tag),
                        ciphertext_data_integrity_value: out.cdiv.map(b64::encode),
                    }))
                }
                KeyOp::Decrypt => {
                    let request: DecryptRequest = parse_json(&body)?;
                    note_metadata(trace, &request.request_metadata);
                    let valid = request.validate(&state.limits)?;
                    authorize(&store, &request.request_metadata, &key)?;
                    let ctx = context(trace, state);
                    let started = Instant::now();
                    let result = within_deadline(
                        state,
                        state.backend.decrypt(
                            &ctx,
                            &key,
                            ekm::DecryptRequest {
                                ciphertext: valid.ciphertext,
                                iv: valid.iv,
                                tag: valid.tag,
                                ciphertext_metadata: valid.ciphertext_metadata,
                                aad: valid.aad,
                            },
                        ),
                    )
                    .await;
                    record_backend(state, trace, &ctx, started);
                    let plaintext = result?;
                    Ok(HttpResponse::Ok().json(DecryptResponse {
                        plaintext: b64::encode(&*plaintext),
                    }))
                }
            }
        }
    }
}

fn note_metadata(trace: &mut Trace, meta: &RequestMetadata) {
    // Opaque values: logged (bounded and printable), never judged.
    let clean = |s: &Option<String>| -> String {
        s.as_deref()
            .unwrap_or("")
            .chars()
            .filter(|c| (' '..='~').contains(c))
            .take(128)
            .collect()
    };
    trace.kms_request_id = clean(&meta.kms_request_id);
    trace.kms_operation = clean(&meta.kms_operation);
}

fn context(trace: &Trace, state: &XkiState) -> ekm::OpContext {
    ekm::OpContext::new(trace.kms_request_id.clone(), state.deadline)
}

fn record_backend(state: &XkiState, trace: &mut Trace, ctx: &ekm::OpContext, started: Instant) {
    trace.backend = started.elapsed();
    trace.hsm_split = ctx.timings.get();
    state
        .metrics
        .backend_seconds
        .get_or_create(&OpLabel { op: trace.op })
        .observe(trace.backend.as_secs_f64());
}

fn authorize(store: &KeyStore, meta: &RequestMetadata, key: &ExternalKeyId) -> Result<(), Failure> {
    if !store.allows_key(key) {
        // Same answer as a key the EKM does not have: the store must not learn other keys exist.
        return Err(xki(
            ErrorName::KeyNotFoundException,
            format!("key {key} not found"),
        ));
    }
    policy::evaluate(&store.rules, meta, key).map_err(|denial| {
        let rule = denial.rule_id.as_deref().unwrap_or("(no allow rule matched)");
        tracing::warn!(target: "xki_proxy::authz", prefix = %store.prefix, key_id = %key, rule, "secondary authorization denied");
        xki(ErrorName::AccessDeniedException, "denied by secondary authorization")
    })
}

async fn metadata(
    state: &XkiState,
    trace: &mut Trace,
    key: &ExternalKeyId,
) -> Result<HttpResponse, Failure> {
    let info = match state.metadata_cache.get(key) {
        Some(info) => {
            state
                .metrics
                .cache
                .get_or_create(&crate::metrics::CacheLabel { result: "hit" })
                .inc();
            info
        }
        None => {
            state
                .metrics
                .cache
                .get_or_create(&crate::metrics::CacheLabel { result: "miss" })
                .inc();
            let ctx = context(trace, state);
            let started = Instant::now();
            let result = within_deadline(state, state.backend.describe_key(&ctx, key)).await;
            record_backend(state, trace, &ctx, started);
            let info = result?;
            state.metadata_cache.insert(key.clone(), info.clone());
            info
        }
    };
    Ok(HttpResponse::Ok().json(metadata_response(&info)))
}

/// The XKI view of a managed key.
pub fn metadata_response(info: &ekm::KeyInfo) -> MetadataResponse {
    let mut key_usage = Vec::with_capacity(2);
    if info.usage.encrypt {
        key_usage.push(KeyUsage::Encrypt);
    }
    if info.usage.decrypt {
        key_usage.push(KeyUsage::Decrypt);
    }
    MetadataResponse {
        // The EKM manages AES-256 keys only (it checks CKA_KEY_TYPE and CKA_VALUE_LEN on adopt).
        key_spec: KeySpec::Aes256,
        key_usage,
        key_status: match info.state {
            ekm::KeyState::Enabled => KeyStatus::Enabled,
            _ => KeyStatus::Disabled,
        },
    }
}

/// What a key manager (a remote EKM above all) returned for an encrypt must be something KMS
/// accepts: GCM output as long as the plaintext, a 12- or 16-byte IV, a 16-byte tag, at most
/// 20 bytes of ciphertext metadata, and the integrity value when one was asked for (a MUST).
fn check_sealed(
    out: &ekm::EncryptOutput,
    plaintext_len: usize,
    want_cdiv: bool,
) -> Result<(), ekm::Error> {
    use schemas::xki::{IV_LENGTHS, MAX_CIPHERTEXT_METADATA_BYTES, TAG_BYTES};
    let problem = if out.ciphertext.len() != plaintext_len {
        "ciphertext length differs from the plaintext's"
    } else if !IV_LENGTHS.contains(&out.iv.len()) {
        "IV length"
    } else if out.tag.len() != TAG_BYTES {
        "tag length"
    } else if out.ciphertext_metadata.len() > MAX_CIPHERTEXT_METADATA_BYTES {
        "ciphertext metadata longer than 20 bytes"
    } else if want_cdiv && out.cdiv.is_none() {
        "missing ciphertext data integrity value"
    } else {
        return Ok(());
    };
    Err(ekm::Error::Internal(format!(
        "the key manager returned an unusable encrypt result: {problem}"
    )))
}

#[cfg(test)]
mod sealed_tests {
    use super::*;

    #[test]
    fn unusable_encrypt_results_are_refused() {
        let good = ekm::EncryptOutput {
            ciphertext: vec![0; 5],
            iv: vec![0; 12],
            tag: vec![0; 16],
            ciphertext_metadata: vec![1, 0, 0, 0, 1],
            cdiv: Some([0; 32]),
            key_version: 1,
        };
        assert!(check_sealed(&good, 5, true).is_ok());
        type Spoil = fn(&mut ekm::EncryptOutput);
        let bad: [(Spoil, &str); 5] = [
            (|o| o.ciphertext.push(0), "ciphertext length"),
            (|o| o.iv = vec![0; 8], "IV"),
            (|o| o.tag.truncate(15), "tag"),
            (|o| o.ciphertext_metadata = vec![0; 21], "metadata"),
            (|o| o.cdiv = None, "integrity"),
        ];
        for (spoil, what) in bad {
            let mut out = good.clone();
            spoil(&mut out);
            let error = check_sealed(&out, 5, true).unwrap_err().to_string();
            assert!(error.contains(what), "{what}: {error}");
        }
        let mut no_cdiv = good.clone();
        no_cdiv.cdiv = None;
        assert!(check_sealed(&no_cdiv, 5, false).is_ok(), "not asked for");
    }
}
