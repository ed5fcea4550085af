//! The admin API the `xki-proxy keys …` commands use (`/admin/*`, bearer token): list,
//! describe, create, enable and disable keys in the EKM, and reload the configuration. It has
//! its own listener (`[admin]`), off without a token, loopback-only unless it has TLS: it
//! creates and disables keys, so it never shares a port with what load balancers probe.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use schemas::sigv4::Secret;
use schemas::xki::ExternalKeyId;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::app::Reloader;

/// State of the admin listener.
pub struct AdminState {
    /// The key manager.
    pub backend: Arc<dyn ekm::KeyManager>,
    /// Metadata cache to invalidate on admin changes.
    pub metadata_cache: moka::sync::Cache<ExternalKeyId, ekm::KeyInfo>,
    /// The bearer token.
    pub token: Secret,
    /// What `/admin/reload` runs (same as SIGHUP).
    pub reloader: Reloader,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

/// Routes of the admin listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/keys", web::get().to(list_keys))
        .route("/admin/keys", web::post().to(create_key))
        .route("/admin/keys/{id}", web::get().to(describe_key))
        .route("/admin/keys/{id}/{action}", web::post().to(key_action))
        .route("/admin/reload", web::post().to(reload));
}

/// Admin view of a key (never holds material).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AdminKey {
    /// External Key ID: what a KMS user types into CreateKey.
    pub external_key_id: String,
    /// `ENABLED`, `DISABLED` or `PENDING_DELETION`.
    pub state: String,
    /// `ENCRYPT` / `DECRYPT`.
    pub usage: Vec<String>,
    /// Version used for encryption.
    pub current_version: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Operator's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl From<&ekm::KeyInfo> for AdminKey {
    fn from(info: &ekm::KeyInfo) -> Self {
        let mut usage = Vec::new();
        if info.usage.encrypt {
            usage.push("ENCRYPT".to_owned());
        }
        if info.usage.decrypt {
            usage.push("DECRYPT".to_owned());
        }
        Self {
            external_key_id: info.id.to_string(),
            state: match info.state {
                ekm::KeyState::Enabled => "ENABLED",
                ekm::KeyState::Disabled => "DISABLED",
                ekm::KeyState::PendingDeletion { .. } => "PENDING_DELETION",
            }
            .to_owned(),
            usage,
            current_version: info.current_version,
            created_at: info
                .created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            description: info.description.clone(),
        }
    }
}

/// Body of `POST /admin/keys`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminCreateKey {
    /// Chosen id; absent = the EKM generates one.
    #[serde(default)]
    pub external_key_id: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
}

/// Error body of the admin API.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminError {
    /// Short code.
    pub error: String,
    /// Message.
    pub message: String,
}

fn admin_error(
    status: actix_web::http::StatusCode,
    error: &str,
    message: impl Into<String>,
) -> HttpResponse {
    HttpResponse::build(status).json(AdminError {
        error: error.into(),
        message: message.into(),
    })
}

fn check_token(req: &HttpRequest, state: &AdminState) -> Result<(), HttpResponse> {
    use actix_web::http::StatusCode;
    let token = &state.token;
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expected = token.expose().as_bytes();
    // An empty token never matches (the config refuses one; this is the second line).
    let matches = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected)));
    if matches && !expected.is_empty() {
        Ok(())
    } else {
        Err(admin_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "bad or missing admin token",
        ))
    }
}

fn ctx() -> ekm::OpContext {
    ekm::OpContext::new(
        format!("admin-{}", uuid::Uuid::new_v4()),
        Duration::from_secs(30),
    )
}

fn ekm_error(e: ekm::Error) -> HttpResponse {
    let x = crate::error::XkiError::from(e.clone());
    let status = actix_web::http::StatusCode::from_u16(x.name.http_status())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    admin_error(status, x.name.as_str(), e.to_string())
}

fn parse_id(raw: &str) -> Result<ExternalKeyId, HttpResponse> {
    ExternalKeyId::parse(raw).map_err(|e| {
        admin_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "ValidationException",
            e.to_string(),
        )
    })
}

async fn list_keys(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = check_token(&req, &state) {
        return r;
    }
    match state.backend.list_keys(&ctx()).await {
        Ok(keys) => HttpResponse::Ok().json(keys.iter().map(AdminKey::from).collect::<Vec<_>>()),
        Err(e) => ekm_error(e),
    }
}

async fn describe_key(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Err(r) = check_token(&req, &state) {
        return r;
    }
    let id = match parse_id(&path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match state.backend.describe_key(&ctx(), &id).await {
        Ok(info) => HttpResponse::Ok().json(AdminKey::from(&info)),
        Err(e) => ekm_error(e),
    }
}

async fn create_key(
    req: HttpRequest,
    body: web::Json<AdminCreateKey>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Err(r) = check_token(&req, &state) {
        return r;
    }
    let id = match body.external_key_id.as_deref().map(parse_id).transpose() {
        Ok(id) => id,
        Err(r) => return r,
    };
    let request = ekm::CreateKey {
        id,
        usage: ekm::KeyUsage::BOTH,
        description: body.description.clone(),
    };
    match state.backend.create_key(&ctx(), request).await {
        Ok(info) => {
            tracing::info!(target: "xki_proxy::admin", key_id = %info.id, "key created");
            HttpResponse::Created().json(AdminKey::from(&info))
        }
        Err(e) => ekm_error(e),
    }
}

async fn key_action(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Err(r) = check_token(&req, &state) {
        return r;
    }
    let (raw_id, action) = path.into_inner();
    let id = match parse_id(&raw_id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let ctx = ctx();
    let result = match action.as_str() {
        "enable" => state.backend.enable_key(&ctx, &id).await,
        "disable" => state.backend.disable_key(&ctx, &id).await,
        _ => {
            return admin_error(
                actix_web::http::StatusCode::NOT_FOUND,
                "UnknownAction",
                "use enable or disable",
            );
        }
    };
    // Whatever happened, the next metadata call asks the EKM again.
    state.metadata_cache.invalidate(&id);
    match result {
        Ok(info) => {
            tracing::info!(target: "xki_proxy::admin", key_id = %info.id, action = %action, "key state changed");
            HttpResponse::Ok().json(AdminKey::from(&info))
        }
        Err(e) => ekm_error(e),
    }
}

async fn reload(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(r) = check_token(&req, &state) {
        return r;
    }
    // Applied or refused here and now, so the caller learns which (SIGHUP can only log it).
    match state.reloader.reload_file() {
        Ok(()) => {
            tracing::info!(target: "xki_proxy::reload", "configuration reloaded (admin API)");
            HttpResponse::Ok().json(serde_json::json!({"reloaded": true}))
        }
        Err(e) => {
            tracing::error!(target: "xki_proxy::reload", error = %e, "reload refused; previous configuration stays in force");
            admin_error(
                actix_web::http::StatusCode::CONFLICT,
                "ReloadRefused",
                e.to_string(),
            )
        }
    }
}
