//! `/v1` routes, the liveness routes, and the wire ↔ domain conversions.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use rand::RngCore as _;
use schemas::ekm as wire;
use schemas::xki::ExternalKeyId;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::{Zeroize as _, Zeroizing};

use super::AppState;
use super::error;
use crate::error::Error;
use crate::manager::{
    AdoptKey, CreateKey, DecryptRequest, EncryptRequest, Health, HealthStatus, KeyInfo, KeyManager,
    KeyOrigin, KeyState, KeyUsage, OpContext,
};

type State = web::Data<AppState>;

/// Registers the API routes.
pub(super) fn api(cfg: &mut web::ServiceConfig) {
    fn post(path: &str, route: actix_web::Route) -> actix_web::Resource {
        web::resource(path)
            .route(route)
            .default_service(web::to(method_not_allowed))
    }
    cfg.service(
        web::resource("/v1/keys")
            .route(web::post().to(create_key))
            .route(web::get().to(list_keys))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/v1/keys/{id}")
            .route(web::get().to(describe_key))
            .default_service(web::to(method_not_allowed)),
    )
    .service(post("/v1/keys/{id}/encrypt", web::post().to(encrypt)))
    .service(post("/v1/keys/{id}/decrypt", web::post().to(decrypt)))
    .service(post("/v1/keys/{id}/enable", web::post().to(enable_key)))
    .service(post("/v1/keys/{id}/disable", web::post().to(disable_key)))
    .service(post("/v1/keys/{id}/rotate", web::post().to(rotate_key)))
    .service(post(
        "/v1/keys/{id}/schedule-deletion",
        web::post().to(schedule_deletion),
    ))
    .service(post(
        "/v1/keys/{id}/cancel-deletion",
        web::post().to(cancel_deletion),
    ))
    .service(post("/v1/keys/{id}/adopt", web::post().to(adopt_key)))
    .service(
        web::resource("/v1/health")
            .route(web::get().to(health))
            .default_service(web::to(method_not_allowed)),
    );
}

/// Registers the liveness routes.
pub(super) fn liveness(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/ping",
        web::get().to(|| async { HttpResponse::Ok().body("ok") }),
    )
    .route("/ready", web::get().to(ready))
    .route("/metrics", web::get().to(metrics));
}

async fn metrics(state: State) -> HttpResponse {
    let text = state.metrics.encode(state.manager.as_ref()).await;
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// JSON body limits and errors in the API's format.
pub(super) fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| {
            let response = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => error::body(
                    wire::ErrorCode::PayloadTooLarge,
                    "request body too large".into(),
                ),
                JsonPayloadError::ContentType => error::body(
                    wire::ErrorCode::ValidationError,
                    "content type must be application/json".into(),
                ),
                JsonPayloadError::Deserialize(e) => error::body(
                    wire::ErrorCode::ValidationError,
                    format!("invalid request body: {}", short(e)),
                ),
                _ => error::body(wire::ErrorCode::ValidationError, "unreadable body".into()),
            };
            InternalError::from_response(err, response).into()
        })
}

/// serde's message (field names and expected types; our Base64 fields are plain strings, so
/// their values never appear), kept short.
fn short(e: &serde_json::Error) -> String {
    let mut text = e.to_string();
    if let Some((cut, _)) = text.char_indices().nth(200) {
        text.truncate(cut);
    }
    text
}

pub(super) async fn unknown_path() -> HttpResponse {
    error::body(wire::ErrorCode::UnknownPath, "no such route".into())
}

async fn method_not_allowed() -> HttpResponse {
    error::body(
        wire::ErrorCode::MethodNotAllowed,
        "method not allowed".into(),
    )
}

/// Caller request ids are kept when they are short and plain (no log injection).
fn request_id(req: &HttpRequest) -> String {
    request_id_of(req.headers())
}

fn request_id_of(headers: &actix_web::http::header::HeaderMap) -> String {
    if let Some(given) = headers.get(wire::REQUEST_ID_HEADER) {
        if let Ok(text) = given.to_str() {
            let plain = text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
            if plain && (1..=128).contains(&text.len()) {
                return text.to_owned();
            }
        }
    }
    let mut bytes = [0u8; 12];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn deadline(req: &HttpRequest, state: &AppState, admin: bool) -> Result<Duration, Error> {
    let settings = &state.settings;
    let Some(value) = req.headers().get(wire::DEADLINE_HEADER) else {
        return Ok(if admin {
            settings.admin_deadline
        } else {
            settings.default_deadline
        });
    };
    let millis: u64 = value
        .to_str()
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Error::Validation(format!(
                "{} must be whole milliseconds",
                wire::DEADLINE_HEADER
            ))
        })?;
    Ok(Duration::from_millis(millis).min(settings.max_deadline))
}

fn key_id(text: &str) -> Result<ExternalKeyId, Error> {
    ExternalKeyId::parse(text).map_err(|e| Error::Validation(e.to_string()))
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, Error> {
    schemas::b64::decode(text)
        .map_err(|_| Error::Validation(format!("{field} is not canonical standard Base64")))
}

fn usage(list: &[wire::KeyUsage]) -> KeyUsage {
    KeyUsage {
        encrypt: list.contains(&wire::KeyUsage::Encrypt),
        decrypt: list.contains(&wire::KeyUsage::Decrypt),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// The wire view of a key.
pub fn metadata(info: KeyInfo) -> wire::KeyMetadata {
    let mut usage = Vec::new();
    if info.usage.encrypt {
        usage.push(wire::KeyUsage::Encrypt);
    }
    if info.usage.decrypt {
        usage.push(wire::KeyUsage::Decrypt);
    }
    let (state, deletion_date) = match info.state {
        KeyState::Enabled => (wire::KeyState::Enabled, None),
        KeyState::Disabled => (wire::KeyState::Disabled, None),
        KeyState::PendingDeletion { delete_at } => {
            (wire::KeyState::PendingDeletion, Some(rfc3339(delete_at)))
        }
    };
    wire::KeyMetadata {
        external_key_id: info.id,
        key_spec: wire::KEY_SPEC_AES_256.to_owned(),
        usage,
        state,
        deletion_date,
        current_version: info.current_version,
        created_at: rfc3339(info.created_at),
        origin: match info.origin {
            KeyOrigin::Generated => wire::KeyOrigin::Ekm,
            KeyOrigin::Adopted => wire::KeyOrigin::Adopted,
        },
        description: info.description,
    }
}

fn health_status(status: HealthStatus) -> wire::HealthStatus {
    match status {
        HealthStatus::Active => wire::HealthStatus::Active,
        HealthStatus::Degraded => wire::HealthStatus::Degraded,
        HealthStatus::Unavailable => wire::HealthStatus::Unavailable,
    }
}

/// The wire view of a health result.
pub fn health_body(health: Health) -> wire::HealthResponse {
    wire::HealthResponse {
        status: health_status(health.status),
        checked_at: rfc3339(health.checked_at),
        hsms: health
            .hsms
            .into_iter()
            .map(|h| wire::HsmHealth {
                id: h.id,
                model: h.model,
                health_status: health_status(h.status),
                probe_latency_us: h.probe_latency.map(|d| d.as_micros() as u64),
                detail: h.detail,
            })
            .collect(),
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status).json(body)
}

/// Runs one API call: request id, deadline, the call itself bounded by the deadline, the
/// error mapping, the response header and the log line.
async fn call<F, Fut>(
    state: &State,
    req: &HttpRequest,
    op: &'static str,
    admin: bool,
    f: F,
) -> HttpResponse
where
    F: FnOnce(OpContext, Arc<dyn KeyManager>) -> Fut,
    Fut: Future<Output = Result<HttpResponse, Error>>,
{
    let started = Instant::now();
    let id = request_id(req);
    let key = req.match_info().get("id").unwrap_or("-").to_owned();
    let timings = Arc::new(crate::OpTimings::default());
    let result = match deadline(req, state, admin) {
        Ok(budget) => {
            let ctx = OpContext {
                request_id: id.clone(),
                deadline: started + budget,
                timings: Arc::clone(&timings),
            };
            let manager = Arc::clone(&state.manager);
            match tokio::time::timeout(budget, f(ctx, manager)).await {
                Ok(result) => result,
                Err(_) => Err(Error::DeadlineExceeded),
            }
        }
        Err(e) => Err(e),
    };
    let latency = started.elapsed();
    let latency_us = latency.as_micros() as u64;
    let (queue_us, hsm_us) = timings.get();
    state.metrics.observe(
        op,
        latency,
        Duration::from_micros(queue_us),
        Duration::from_micros(hsm_us),
        result.as_ref().err().map(error::code),
    );
    let mut response = match result {
        Ok(response) => {
            tracing::info!(request_id = %id, op, key_id = %key, status = response.status().as_u16(), latency_us, queue_us, hsm_us, "request");
            response
        }
        Err(e) => {
            let response = error::response(&e);
            let code = error::code(&e);
            tracing::info!(request_id = %id, op, key_id = %key, status = response.status().as_u16(), error = ?code, detail = %e, latency_us, queue_us, hsm_us, "request");
            response
        }
    };
    // The split lets the proxy log queue and HSM time for remote calls too.
    for (name, value) in [
        (wire::QUEUE_TIME_HEADER, queue_us),
        (wire::HSM_TIME_HEADER, hsm_us),
    ] {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(name),
            actix_web::http::header::HeaderValue::from(value),
        );
    }
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(wire::REQUEST_ID_HEADER),
            value,
        );
    }
    response
}

/// Logs requests that never reached a handler (unknown path, wrong method, a body refused by
/// the JSON extractor: too large, wrong content type, malformed) like the others, and gives
/// their responses an `x-request-id`. Responses from [`call`] already carry one and are
/// logged there, with more detail.
pub(super) async fn log_refused(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let started = Instant::now();
    let mut response = next.call(req).await?;
    let header = HeaderName::from_static(wire::REQUEST_ID_HEADER);
    if response.headers().contains_key(&header) {
        return Ok(response); // answered and logged by `call`
    }
    let request = response.request();
    let id = request_id(request);
    let mut path = request.path();
    if let Some((cut, _)) = path.char_indices().nth(200) {
        path = &path[..cut];
    }
    tracing::info!(
        request_id = %id,
        op = "-",
        method = %request.method(),
        path = %path,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request refused before a handler"
    );
    if let Some(state) = request.app_data::<State>() {
        let code = match response.status().as_u16() {
            400 => wire::ErrorCode::ValidationError,
            404 => wire::ErrorCode::UnknownPath,
            405 => wire::ErrorCode::MethodNotAllowed,
            413 => wire::ErrorCode::PayloadTooLarge,
            _ => wire::ErrorCode::Internal,
        };
        let zero = Duration::ZERO;
        (state.metrics).observe("refused", started.elapsed(), zero, zero, Some(code));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(header, value);
    }
    Ok(response)
}

/// Requests the listener refused before a handler (header list or body too large, body too
/// slow, broken framing) and connections over the cap: the EKM's error body, an
/// `x-request-id`, a log line and a metric, like the requests [`log_refused`] sees.
pub(super) struct Refused(pub(super) State);

impl listener::Refusals for Refused {
    fn answer(
        &self,
        refusal: listener::Refusal,
        request: Option<&listener::RequestHead>,
    ) -> listener::Answer {
        let code = error::refusal_code(refusal);
        let id = match request {
            Some(head) => request_id_of(&head.headers),
            None => request_id_of(&actix_web::http::header::HeaderMap::new()),
        };
        // Connections refused at the cap are counted and warned about by the listener.
        if let Some(head) = request {
            let mut path = head.uri.path();
            if let Some((cut, _)) = path.char_indices().nth(200) {
                path = &path[..cut];
            }
            tracing::info!(
                request_id = %id,
                op = "-",
                method = %head.method,
                path = %path,
                status = code.http_status(),
                refusal = refusal.as_str(),
                "request refused before a handler"
            );
        }
        let zero = Duration::ZERO;
        (self.0.metrics).observe("refused", zero, zero, zero, Some(code));
        let body = wire::ErrorResponse {
            error: code,
            message: refusal.message(),
        };
        listener::Answer::json(code.http_status(), &body).with_header(wire::REQUEST_ID_HEADER, id)
    }
}

async fn create_key(
    state: State,
    req: HttpRequest,
    body: web::Json<wire::CreateKeyRequest>,
) -> HttpResponse {
    call(
        &state,
        &req,
        "create-key",
        true,
        |ctx, manager| async move {
            let body = body.into_inner();
            let request = CreateKey {
                id: body.external_key_id,
                usage: usage(&body.usage),
                description: body.description,
            };
            let info = manager.create_key(&ctx, request).await?;
            Ok(json(StatusCode::CREATED, &metadata(info)))
        },
    )
    .await
}

async fn adopt_key(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<wire::AdoptKeyRequest>,
) -> HttpResponse {
    call(&state, &req, "adopt-key", true, |ctx, manager| async move {
        let body = body.into_inner();
        let request = AdoptKey {
            id: Some(key_id(&path)?),
            hsm_label: body.hsm_label,
            usage: usage(&body.usage),
            description: body.description,
        };
        let info = manager.adopt_key(&ctx, request).await?;
        Ok(json(StatusCode::CREATED, &metadata(info)))
    })
    .await
}

async fn list_keys(state: State, req: HttpRequest) -> HttpResponse {
    call(&state, &req, "list-keys", true, |ctx, manager| async move {
        let keys = manager.list_keys(&ctx).await?;
        let keys = keys.into_iter().map(metadata).collect();
        Ok(json(StatusCode::OK, &wire::ListKeysResponse { keys }))
    })
    .await
}

/// The admin calls that take only the key id.
macro_rules! key_call {
    ($name:ident, $op:literal, $method:ident) => {
        async fn $name(state: State, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
            call(&state, &req, $op, true, |ctx, manager| async move {
                let info = manager.$method(&ctx, &key_id(&path)?).await?;
                Ok(json(StatusCode::OK, &metadata(info)))
            })
            .await
        }
    };
}

key_call!(describe_key, "describe-key", describe_key);
key_call!(enable_key, "enable-key", enable_key);
key_call!(disable_key, "disable-key", disable_key);
key_call!(rotate_key, "rotate-key", rotate_key);
key_call!(cancel_deletion, "cancel-key-deletion", cancel_key_deletion);

async fn schedule_deletion(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<wire::ScheduleDeletionRequest>,
) -> HttpResponse {
    call(
        &state,
        &req,
        "schedule-key-deletion",
        true,
        |ctx, manager| async move {
            let id = key_id(&path)?;
            let days = body.pending_window_days;
            let info = manager.schedule_key_deletion(&ctx, &id, days).await?;
            Ok(json(StatusCode::OK, &metadata(info)))
        },
    )
    .await
}

async fn encrypt(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<wire::EncryptRequest>,
) -> HttpResponse {
    call(&state, &req, "encrypt", false, |ctx, manager| async move {
        let id = key_id(&path)?;
        let mut body = body.into_inner();
        let plaintext = b64("plaintext", &body.plaintext);
        body.plaintext.zeroize();
        let request = EncryptRequest {
            plaintext: Zeroizing::new(plaintext?),
            aad: match &body.additional_authenticated_data {
                Some(text) => b64("additionalAuthenticatedData", text)?,
                None => Vec::new(),
            },
            want_cdiv: body.want_cdiv,
        };
        let out = manager.encrypt(&ctx, &id, request).await?;
        Ok(json(
            StatusCode::OK,
            &wire::EncryptResponse {
                ciphertext: schemas::b64::encode(&out.ciphertext),
                initialization_vector: schemas::b64::encode(&out.iv),
                authentication_tag: schemas::b64::encode(&out.tag),
                ciphertext_metadata: schemas::b64::encode(&out.ciphertext_metadata),
                ciphertext_data_integrity_value: out.cdiv.map(schemas::b64::encode),
                key_version: out.key_version,
            },
        ))
    })
    .await
}

async fn decrypt(
    state: State,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<wire::DecryptRequest>,
) -> HttpResponse {
    call(&state, &req, "decrypt", false, |ctx, manager| async move {
        let id = key_id(&path)?;
        let request = DecryptRequest {
            ciphertext: b64("ciphertext", &body.ciphertext)?,
            iv: b64("initializationVector", &body.initialization_vector)?,
            tag: b64("authenticationTag", &body.authentication_tag)?,
            ciphertext_metadata: b64("ciphertextMetadata", &body.ciphertext_metadata)?,
            aad: match &body.additional_authenticated_data {
                Some(text) => b64("additionalAuthenticatedData", text)?,
                None => Vec::new(),
            },
        };
        let plaintext = manager.decrypt(&ctx, &id, request).await?;
        let mut response = wire::DecryptResponse {
            plaintext: schemas::b64::encode(plaintext.as_slice()),
        };
        let http = json(StatusCode::OK, &response);
        response.plaintext.zeroize();
        Ok(http)
    })
    .await
}

async fn health(state: State, req: HttpRequest) -> HttpResponse {
    call(&state, &req, "health", false, |ctx, manager| async move {
        let health = manager.health(&ctx).await?;
        Ok(json(StatusCode::OK, &health_body(health)))
    })
    .await
}

async fn ready(state: State) -> HttpResponse {
    let ctx = OpContext::new("ready", Duration::from_secs(1));
    match state.manager.health(&ctx).await {
        Ok(h) if h.status != HealthStatus::Unavailable => json(StatusCode::OK, &health_body(h)),
        Ok(h) => json(StatusCode::SERVICE_UNAVAILABLE, &health_body(h)),
        Err(e) => error::response(&e),
    }
}
