//! The Alibaba Cloud KMS OpenAPI 2016-01-20 server: RPC style, `GET` or `POST /`, `Action` and
//! `Version` signed (ACS3 `x-acs-action` / `x-acs-version` headers, or the RPC parameters),
//! parameters in the query and/or a form body, JSON answers carrying `RequestId` (also in the
//! `x-acs-request-id` header), errors `{"HttpStatus","Code","Message","RequestId"}`.
//!
//! One request: decode → authenticate (signature, skew, nonce) → version → action → per-account
//! QPS limit → handler (resolve key, policy, state matrix, work) → answer → audit + log.

pub mod actions;
pub mod auth;
pub mod error;
pub mod policy;

mod aliases;
mod asymmetric;
mod audit;
mod crypto;
mod ctx;
mod instances;
mod keys;
mod lifecycle;
mod params;
mod tags;
mod versions;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::acs::{RequestParts, Verifier, api_parameters};
use schemas::kms::{API_VERSION, ErrorBody, ErrorCode};
use serde_json::Value;

use self::actions::Action;
use self::audit::{Outcome, Record};
use self::auth::AccessKeys;
use self::ctx::{Ctx, Reply};
pub use self::ctx::{iso8601, key_arn_of};
use self::error::ApiError;
use self::params::Params;
use crate::instances::Instances;
use crate::store::Store;

/// The response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-acs-request-id";

/// Everything requests share.
pub struct ApiState {
    /// The metadata store.
    pub store: Store,
    /// The served instances.
    pub instances: Arc<Instances>,
    /// AccessKey → principal.
    pub access_keys: AccessKeys,
    /// Signature verifier (with the configured skew window).
    pub verifier: Verifier,
    /// Per-account request rate limit.
    pub limiter: DefaultKeyedRateLimiter<String>,
    /// The region of every key.
    pub region: String,
    /// The account owning every key.
    pub account_id: String,
    /// The clock request timestamps are checked against.
    pub clock: RequestClock,
}

/// The clock request signatures are checked against (injectable for replaying captured
/// requests in tests).
pub type RequestClock = Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .field("access_keys", &self.access_keys)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

/// A keyed limiter allowing `qps` requests per second per account (burst = one second's worth).
pub fn limiter(qps: u32) -> DefaultKeyedRateLimiter<String> {
    let qps = std::num::NonZeroU32::new(qps).unwrap_or(std::num::NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(qps))
}

/// The one route: every method and path lands here.
pub async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ApiState>,
) -> HttpResponse {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let parts = RequestParts {
        method: req.method().as_str(),
        target: &target,
        headers: &headers,
        body: &body,
    };
    let mut record = Record {
        action: "-".to_owned(),
        principal: "-".to_owned(),
        source_ip: req.peer_addr().map(|a| a.ip().to_string()),
        ..Record::default()
    };
    let result = serve(&state, &parts, &request_id, &mut record).await;
    let (status, body, result_code) = match result {
        Ok(mut reply) => {
            reply.insert("RequestId".into(), Value::String(request_id.clone()));
            (StatusCode::OK, Value::Object(reply), "Success")
        }
        Err(error) => {
            let (code, message) = error.reply();
            if code.http_status() >= 500 {
                if let Some(detail) = error.internal_detail() {
                    tracing::error!(target: "kms_connector::api", request_id = %request_id, detail = %detail, "request failed inside the server");
                }
            }
            let body = ErrorBody::new(code, Some(&message), &request_id);
            let status = StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = serde_json::to_value(body).unwrap_or(Value::Null);
            (status, body, code.code())
        }
    };
    let outcome = Outcome {
        result: result_code,
        http_status: status.as_u16(),
        latency: started.elapsed(),
    };
    audit::finish(&state.store, &request_id, &record, outcome).await;
    HttpResponse::build(status)
        .insert_header((REQUEST_ID_HEADER, request_id))
        .json(body)
}

/// Printable ASCII, at most 64 characters: safe to echo and to audit.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .filter(char::is_ascii_graphic)
        .collect()
}

async fn serve(
    state: &ApiState,
    parts: &RequestParts<'_>,
    request_id: &str,
    record: &mut Record,
) -> Result<Reply, ApiError> {
    if !matches!(parts.method, "GET" | "POST") {
        return Err(ErrorCode::UnsupportedHttpMethod.into());
    }
    // Known before authentication, so that refused requests are audited with what they claim.
    let raw = api_parameters(parts);
    if let Ok(raw) = &raw {
        let claimed = parts
            .header_values("x-acs-action")
            .next()
            .or_else(|| raw.get("Action").map(String::as_str));
        if let Some(action) = claimed {
            record.action = printable(action);
        }
        record.access_key_id = auth::claimed_access_key(parts, raw);
    }
    if !matches!(parts.path(), "/" | "") {
        return Err(ApiError::with_message(
            ErrorCode::InvalidParameter,
            "The specified path is not valid: OpenAPI requests go to /.",
        ));
    }
    let params = Params::from(raw?);
    let now = (state.clock)();
    let caller = auth::authenticate(
        &state.verifier,
        &state.access_keys,
        &state.store,
        parts,
        now,
    )
    .await?;
    record.principal = caller.principal.arn().to_owned();
    record.account_id = caller.principal.account().to_owned();
    record.access_key_id = Some(caller.access_key_id.clone());

    let action_name = caller.action.clone().ok_or(ApiError::Missing("Action"))?;
    record.action = printable(&action_name);
    match caller.version.as_deref() {
        None => return Err(ApiError::Missing("Version")),
        Some(API_VERSION) => {}
        Some(_) => {
            return Err(ApiError::invalid_because(
                "Version",
                format!("this server implements {API_VERSION}"),
            ));
        }
    }
    let action = Action::parse(&action_name).ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::UnsupportedOperation,
            format!("This action is not supported: {}.", printable(&action_name)),
        )
    })?;
    if state
        .limiter
        .check_key(&caller.principal.account().to_owned())
        .is_err()
    {
        return Err(ErrorCode::RejectedThrottling.into());
    }
    let mut ctx = Ctx {
        state,
        caller: &caller,
        params,
        action,
        request_id,
        key_id: None,
    };
    let result = dispatch(&mut ctx).await;
    record.key_id = ctx.key_id.take();
    result
}

async fn dispatch(ctx: &mut Ctx<'_>) -> Result<Reply, ApiError> {
    use Action as A;
    match ctx.action {
        A::CreateKey => keys::create_key(ctx).await,
        A::DescribeKey => keys::describe_key(ctx).await,
        A::ListKeys => keys::list_keys(ctx).await,
        A::DescribeKeyVersion => versions::describe_key_version(ctx).await,
        A::ListKeyVersions => versions::list_key_versions(ctx).await,
        A::CreateKeyVersion => versions::create_key_version(ctx).await,
        A::UpdateRotationPolicy => versions::update_rotation_policy(ctx).await,
        A::EnableKey => lifecycle::enable_key(ctx).await,
        A::DisableKey => lifecycle::disable_key(ctx).await,
        A::ScheduleKeyDeletion => lifecycle::schedule_key_deletion(ctx).await,
        A::CancelKeyDeletion => lifecycle::cancel_key_deletion(ctx).await,
        A::SetDeletionProtection => lifecycle::set_deletion_protection(ctx).await,
        A::UpdateKeyDescription => lifecycle::update_key_description(ctx).await,
        A::GetKeyPolicy => lifecycle::get_key_policy(ctx).await,
        A::SetKeyPolicy => lifecycle::set_key_policy(ctx).await,
        A::CreateAlias => aliases::create_alias(ctx).await,
        A::UpdateAlias => aliases::update_alias(ctx).await,
        A::DeleteAlias => aliases::delete_alias(ctx).await,
        A::ListAliases => aliases::list_aliases(ctx).await,
        A::ListAliasesByKeyId => aliases::list_aliases_by_key_id(ctx).await,
        A::TagResource => tags::tag_resource(ctx).await,
        A::UntagResource => tags::untag_resource(ctx).await,
        A::ListResourceTags => tags::list_resource_tags(ctx).await,
        A::TagResources => tags::tag_resources(ctx).await,
        A::UntagResources => tags::untag_resources(ctx).await,
        A::ListTagResources => tags::list_tag_resources(ctx).await,
        A::Encrypt => crypto::encrypt(ctx).await,
        A::Decrypt => crypto::decrypt(ctx).await,
        A::GenerateDataKey => crypto::generate_data_key(ctx).await,
        A::GenerateDataKeyWithoutPlaintext => {
            crypto::generate_data_key_without_plaintext(ctx).await
        }
        A::ReEncrypt => crypto::re_encrypt(ctx).await,
        A::AsymmetricSign => asymmetric::asymmetric_sign(ctx).await,
        A::AsymmetricVerify => asymmetric::asymmetric_verify(ctx).await,
        A::AsymmetricEncrypt => asymmetric::asymmetric_encrypt(ctx).await,
        A::AsymmetricDecrypt => asymmetric::asymmetric_decrypt(ctx).await,
        A::GetPublicKey => asymmetric::get_public_key(ctx).await,
        A::ListKmsInstances => instances::list_kms_instances(ctx).await,
        A::GetKmsInstance => instances::get_kms_instance(ctx).await,
        A::ConnectKmsInstance => instances::connect_kms_instance(ctx).await,
        A::DisconnectKmsInstance => instances::disconnect_kms_instance(ctx).await,
    }
}

/// Re-exported for the CLI: `KeyMetadata` of a stored key.
pub fn key_metadata(key: &crate::store::Key) -> Value {
    keys::key_metadata(key)
}
