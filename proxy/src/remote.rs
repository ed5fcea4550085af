//! The remote EKM backend: the EKM API over HTTPS with mutual TLS, one pooled keep-alive client
//! (no handshake per request), the request deadline passed on as a header so the EKM drops
//! work the proxy no longer waits for.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use schemas::b64;
use schemas::ekm as api;
use schemas::xki::ExternalKeyId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

use ekm::{Error, OpContext, Result};

use crate::tls::{TlsError, provider, read_certs, read_key, read_roots};

/// A `KeyManager` that forwards to a remote EKM.
#[derive(Debug, Clone)]
pub struct RemoteKeyManager {
    client: reqwest::Client,
    base: String,
    limits: ekm::ciphertext::Limits,
}

impl RemoteKeyManager {
    /// Builds the client: the EKM's CA, the proxy's client certificate, a keep-alive pool.
    pub fn new(
        base_url: &str,
        ca_file: &Path,
        cert_file: &Path,
        key_file: &Path,
        pool_max_idle: usize,
    ) -> std::result::Result<Self, TlsError> {
        let roots = read_roots(&[ca_file.to_owned()])?;
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots)
            .with_client_auth_cert(read_certs(cert_file)?, read_key(key_file)?)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .pool_max_idle_per_host(pool_max_idle)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
        Ok(Self {
            client,
            base: format!("{}{}", base_url.trim_end_matches('/'), api::API_PREFIX),
            limits: ekm::ciphertext::Limits {
                max_data_bytes: 65_536,
                max_aad_bytes: 65_535,
            },
        })
    }

    /// One request: `path` is `/keys`, `/health`, or (with `key`) the suffix after `/keys/{id}`.
    async fn call<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        ctx: &OpContext,
        method: reqwest::Method,
        key: Option<&ExternalKeyId>,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let path = match key {
            Some(id) => format!("/keys/{}{path}", id.path_segment()),
            None => path.to_owned(),
        };
        let remaining = ctx.remaining();
        if remaining.is_zero() {
            return Err(Error::DeadlineExceeded);
        }
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(api::REQUEST_ID_HEADER, &ctx.request_id)
            .header(api::DEADLINE_HEADER, remaining.as_millis().to_string())
            .timeout(remaining);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Error::DeadlineExceeded
            } else {
                // Connection refused, TLS failure, …: the EKM is down for us.
                Error::HsmUnavailable(format!("EKM unreachable: {}", root_cause(&e)))
            }
        })?;
        let status = response.status();
        let header_us = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        ctx.timings.record(
            Duration::from_micros(header_us(api::QUEUE_TIME_HEADER)),
            Duration::from_micros(header_us(api::HSM_TIME_HEADER)),
        );
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                Error::DeadlineExceeded
            } else {
                Error::HsmUnavailable(root_cause(&e))
            }
        })?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|_| {
                Error::Internal(format!("EKM answered {status} with an unreadable body"))
            })
        } else {
            let error: api::ErrorResponse = serde_json::from_slice(&bytes).map_err(|_| {
                Error::Internal(format!("EKM answered {status} without an error body"))
            })?;
            Err(from_api_error(error, key, &path))
        }
    }
}

/// The innermost cause of a transport error (reqwest's own text repeats the URL).
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string().chars().take(200).collect()
}

fn from_api_error(e: api::ErrorResponse, key: Option<&ExternalKeyId>, path: &str) -> Error {
    use api::ErrorCode as C;
    let Some(id) = key else {
        return match e.error {
            C::Throttled => Error::Throttled,
            C::DeadlineExceeded => Error::DeadlineExceeded,
            C::HsmUnavailable => Error::HsmUnavailable(e.message),
            C::ValidationError | C::PayloadTooLarge => Error::Validation(e.message),
            C::KeyAlreadyExists => Error::KeyAlreadyExists(e.message),
            _ => Error::Internal(e.message),
        };
    };
    let key = || id.clone();
    match e.error {
        C::KeyNotFound => Error::KeyNotFound(key()),
        C::KeyAlreadyExists => Error::KeyAlreadyExists(e.message),
        C::KeyDisabled => Error::KeyDisabled(key()),
        C::KeyPendingDeletion => Error::KeyPendingDeletion(key()),
        C::InvalidKeyState => Error::InvalidKeyState {
            key: key(),
            reason: "refused by the EKM",
        },
        C::KeyUsageNotPermitted => Error::KeyUsageNotPermitted {
            key: key(),
            operation: if path.ends_with("/decrypt") {
                ekm::Operation::Decrypt
            } else {
                ekm::Operation::Encrypt
            },
        },
        C::InvalidCiphertext => Error::InvalidCiphertext,
        C::ValidationError | C::PayloadTooLarge => Error::Validation(e.message),
        C::Throttled => Error::Throttled,
        C::DeadlineExceeded => Error::DeadlineExceeded,
        C::HsmUnavailable => Error::HsmUnavailable(e.message),
        _ => Error::Internal(e.message),
    }
}

fn usage_from_api(usage: &[api::KeyUsage]) -> ekm::KeyUsage {
    ekm::KeyUsage {
        encrypt: usage.contains(&api::KeyUsage::Encrypt),
        decrypt: usage.contains(&api::KeyUsage::Decrypt),
    }
}

fn usage_to_api(usage: ekm::KeyUsage) -> Vec<api::KeyUsage> {
    let mut out = Vec::new();
    if usage.encrypt {
        out.push(api::KeyUsage::Encrypt);
    }
    if usage.decrypt {
        out.push(api::KeyUsage::Decrypt);
    }
    out
}

fn parse_time(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| Error::Internal("EKM sent a bad timestamp".into()))
}

fn info_from_api(m: api::KeyMetadata) -> Result<ekm::KeyInfo> {
    let state = match m.state {
        api::KeyState::Enabled => ekm::KeyState::Enabled,
        api::KeyState::Disabled => ekm::KeyState::Disabled,
        api::KeyState::PendingDeletion => ekm::KeyState::PendingDeletion {
            delete_at: parse_time(m.deletion_date.as_deref().unwrap_or(""))?,
        },
    };
    if m.key_spec != api::KEY_SPEC_AES_256 {
        return Err(Error::Internal(format!(
            "EKM key {} is not AES_256",
            m.external_key_id
        )));
    }
    Ok(ekm::KeyInfo {
        id: m.external_key_id,
        usage: usage_from_api(&m.usage),
        state,
        current_version: m.current_version,
        created_at: parse_time(&m.created_at)?,
        origin: match m.origin {
            api::KeyOrigin::Ekm => ekm::KeyOrigin::Generated,
            api::KeyOrigin::Adopted => ekm::KeyOrigin::Adopted,
        },
        description: m.description,
    })
}

fn decode(field: &str, text: &str) -> Result<Vec<u8>> {
    b64::decode(text).map_err(|_| Error::Internal(format!("EKM sent bad Base64 in {field}")))
}

const NO_BODY: Option<&()> = None;

#[async_trait::async_trait]
impl ekm::KeyManager for RemoteKeyManager {
    async fn create_key(&self, ctx: &OpContext, request: ekm::CreateKey) -> Result<ekm::KeyInfo> {
        let body = api::CreateKeyRequest {
            external_key_id: request.id,
            usage: usage_to_api(request.usage),
            description: request.description,
        };
        info_from_api(
            self.call(ctx, reqwest::Method::POST, None, "/keys", Some(&body))
                .await?,
        )
    }

    async fn adopt_key(&self, ctx: &OpContext, request: ekm::AdoptKey) -> Result<ekm::KeyInfo> {
        let Some(id) = request.id else {
            return Err(Error::Validation(
                "adopting through the proxy needs an external key id".into(),
            ));
        };
        let body = api::AdoptKeyRequest {
            hsm_label: request.hsm_label,
            usage: usage_to_api(request.usage),
            description: request.description,
        };
        info_from_api(
            self.call(ctx, reqwest::Method::POST, Some(&id), "/adopt", Some(&body))
                .await?,
        )
    }

    async fn describe_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<ekm::KeyInfo> {
        info_from_api(
            self.call(ctx, reqwest::Method::GET, Some(id), "", NO_BODY)
                .await?,
        )
    }

    async fn list_keys(&self, ctx: &OpContext) -> Result<Vec<ekm::KeyInfo>> {
        let list: api::ListKeysResponse = self
            .call(ctx, reqwest::Method::GET, None, "/keys", NO_BODY)
            .await?;
        list.keys.into_iter().map(info_from_api).collect()
    }

    async fn enable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<ekm::KeyInfo> {
        info_from_api(
            self.call(ctx, reqwest::Method::POST, Some(id), "/enable", NO_BODY)
                .await?,
        )
    }

    async fn disable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<ekm::KeyInfo> {
        info_from_api(
            self.call(ctx, reqwest::Method::POST, Some(id), "/disable", NO_BODY)
                .await?,
        )
    }

    async fn schedule_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        pending_window_days: Option<u32>,
    ) -> Result<ekm::KeyInfo> {
        let body = api::ScheduleDeletionRequest {
            pending_window_days,
        };
        info_from_api(
            self.call(
                ctx,
                reqwest::Method::POST,
                Some(id),
                "/schedule-deletion",
                Some(&body),
            )
            .await?,
        )
    }

    async fn cancel_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
    ) -> Result<ekm::KeyInfo> {
        info_from_api(
            self.call(
                ctx,
                reqwest::Method::POST,
                Some(id),
                "/cancel-deletion",
                NO_BODY,
            )
            .await?,
        )
    }

    async fn rotate_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<ekm::KeyInfo> {
        info_from_api(
            self.call(ctx, reqwest::Method::POST, Some(id), "/rotate", NO_BODY)
                .await?,
        )
    }

    async fn encrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: ekm::EncryptRequest,
    ) -> Result<ekm::EncryptOutput> {
        let body = api::EncryptRequest {
            plaintext: b64::encode(&*request.plaintext),
            additional_authenticated_data: (!request.aad.is_empty())
                .then(|| b64::encode(&request.aad)),
            want_cdiv: request.want_cdiv,
        };
        let out: api::EncryptResponse = self
            .call(
                ctx,
                reqwest::Method::POST,
                Some(id),
                "/encrypt",
                Some(&body),
            )
            .await?;
        let cdiv = match out.ciphertext_data_integrity_value {
            Some(text) => Some(
                decode("cdiv", &text)?
                    .try_into()
                    .map_err(|_| Error::Internal("EKM sent a CDIV of the wrong length".into()))?,
            ),
            None => None,
        };
        Ok(ekm::EncryptOutput {
            ciphertext: decode("ciphertext", &out.ciphertext)?,
            iv: decode("initializationVector", &out.initialization_vector)?,
            tag: decode("authenticationTag", &out.authentication_tag)?,
            ciphertext_metadata: decode("ciphertextMetadata", &out.ciphertext_metadata)?,
            cdiv,
            key_version: out.key_version,
        })
    }

    async fn decrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: ekm::DecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let body = api::DecryptRequest {
            ciphertext: b64::encode(&request.ciphertext),
            initialization_vector: b64::encode(&request.iv),
            authentication_tag: b64::encode(&request.tag),
            ciphertext_metadata: b64::encode(&request.ciphertext_metadata),
            additional_authenticated_data: (!request.aad.is_empty())
                .then(|| b64::encode(&request.aad)),
        };
        let out: api::DecryptResponse = self
            .call(
                ctx,
                reqwest::Method::POST,
                Some(id),
                "/decrypt",
                Some(&body),
            )
            .await?;
        let plaintext = Zeroizing::new(out.plaintext);
        Ok(Zeroizing::new(decode("plaintext", &plaintext)?))
    }

    async fn health(&self, ctx: &OpContext) -> Result<ekm::Health> {
        let h: api::HealthResponse = self
            .call(ctx, reqwest::Method::GET, None, "/health", NO_BODY)
            .await?;
        let status = |s: api::HealthStatus| match s {
            api::HealthStatus::Active => ekm::HealthStatus::Active,
            api::HealthStatus::Degraded => ekm::HealthStatus::Degraded,
            api::HealthStatus::Unavailable => ekm::HealthStatus::Unavailable,
        };
        Ok(ekm::Health {
            status: status(h.status),
            checked_at: parse_time(&h.checked_at)?,
            hsms: h
                .hsms
                .into_iter()
                .map(|hsm| ekm::HsmHealth {
                    id: hsm.id,
                    model: hsm.model,
                    status: status(hsm.health_status),
                    probe_latency: hsm.probe_latency_us.map(Duration::from_micros),
                    detail: hsm.detail,
                })
                .collect(),
        })
    }

    fn limits(&self) -> ekm::ciphertext::Limits {
        self.limits
    }
}

/// The backend chosen by configuration.
pub fn shared(manager: impl ekm::KeyManager) -> Arc<dyn ekm::KeyManager> {
    Arc::new(manager)
}
