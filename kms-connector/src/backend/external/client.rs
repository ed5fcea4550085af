//! The XKI client: one pooled keep-alive HTTPS/1.1 client per instance (reqwest on our own rustls
//! configuration), every request signed with SigV4 over `host;x-amz-date` as KMS signs, answers
//! parsed strictly: strict Base64, IV/tag/metadata lengths, ciphertext length, the CDIV
//! recomputed and compared.
//!
//! What goes wrong is reported as a [`CallError`]; the backend decides what it means for the
//! caller ([`super::BackendError`]) and for the connection state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use schemas::b64;
use schemas::sigv4::{RequestParts, Signer};
use schemas::xki::aad::cdiv;
use schemas::xki::{
    CDIV_ALGORITHM, DecryptRequest, DecryptResponse, ENCRYPTION_ALGORITHM, EncryptRequest,
    EncryptResponse, ErrorBody, ErrorName, ExternalKeyId, HealthRequest, HealthResponse,
    IV_LENGTHS, MAX_CIPHERTEXT_METADATA_BYTES, MetadataRequest, MetadataResponse, RequestMetadata,
    SIGV4_SERVICE, TAG_BYTES,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::config::{ConfigError, ExternalSettings};
use super::tls::TlsDiagnostics;
use crate::blob::XkiPayload;

/// Largest answer body read; a legitimate one is a few KiB.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Idle keep-alive connections are closed after this (longer than load balancers' 350 s).
const POOL_IDLE: Duration = Duration::from_secs(400);

/// A failure below the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The call's budget ran out (connect, TLS, or answer).
    Timeout,
    /// The TLS handshake failed: certificate, pin, protocol, client certificate refused.
    Tls,
    /// No TCP connection (refused, no route, name not resolved).
    Unreachable,
    /// The connection broke in another way.
    Other,
}

/// Why an XKI call did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// No HTTP answer.
    Transport(Transport),
    /// A non-200 answer; `name` when its body is an XKI error body.
    Refused {
        /// HTTP status.
        status: u16,
        /// `errorName`.
        name: Option<ErrorName>,
    },
    /// A 200 answer that breaks the protocol (the reason is logged, never the body).
    BadAnswer(&'static str),
    /// The request could not be made (a configuration the checks let through).
    Local(&'static str),
}

/// The client of one instance.
#[derive(Debug)]
pub(crate) struct XkiClient {
    http: reqwest::Client,
    endpoint: String,
    authority: String,
    path: String,
    signer: Signer,
    timeout: Duration,
    diagnostics: Arc<TlsDiagnostics>,
}

/// What an Encrypt returned, checked.
pub(crate) type Encrypted = XkiPayload;

impl XkiClient {
    /// Builds the pooled client (no connection is made yet).
    pub(crate) fn new(settings: &ExternalSettings) -> Result<Self, ConfigError> {
        let diagnostics = Arc::new(TlsDiagnostics::default());
        let tls = super::tls::client_config(settings, &diagnostics)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .http1_only()
            .https_only(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .build()
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            endpoint: settings.endpoint.clone(),
            authority: settings.authority.clone(),
            path: settings.path.clone(),
            signer: Signer::new(settings.credential.clone(), &settings.region, SIGV4_SERVICE),
            timeout: settings.timeout,
            diagnostics,
        })
    }

    /// GetHealthStatus with `kmsOperation` = `operation`. Checks the answer's shape; whether
    /// the fleet is usable is the caller's decision.
    pub(crate) async fn health(&self, operation: &str) -> Result<HealthResponse, CallError> {
        let request = HealthRequest {
            request_metadata: RequestMetadata {
                kms_operation: Some(operation.to_owned()),
                kms_request_id: Some(uuid::Uuid::new_v4().to_string()),
                ..RequestMetadata::default()
            },
        };
        let body = self.call("/health", operation, &request).await?;
        let health: HealthResponse = parse(&body)?;
        if health.xks_proxy_fleet_size == 0
            || health.ekm_fleet_details.is_empty()
            || health.ekm_fleet_details.len() > HealthResponse::MAX_FLEET_ENTRIES
        {
            return Err(CallError::BadAnswer(
                "health answer with an empty or oversized fleet",
            ));
        }
        Ok(health)
    }

    /// GetKeyMetadata.
    pub(crate) async fn metadata(
        &self,
        key: &ExternalKeyId,
        metadata: RequestMetadata,
    ) -> Result<MetadataResponse, CallError> {
        let request = MetadataRequest {
            request_metadata: metadata,
        };
        let body = self
            .call(
                &format!("/keys/{}/metadata", key.path_segment()),
                "metadata",
                &request,
            )
            .await?;
        parse(&body)
    }

    /// Encrypt, asking for the CDIV and verifying it.
    pub(crate) async fn encrypt(
        &self,
        key: &ExternalKeyId,
        metadata: RequestMetadata,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Encrypted, CallError> {
        let mut request = EncryptRequest {
            request_metadata: metadata,
            plaintext: b64::encode(plaintext),
            encryption_algorithm: ENCRYPTION_ALGORITHM.to_owned(),
            additional_authenticated_data: (!aad.is_empty()).then(|| b64::encode(aad)),
            ciphertext_data_integrity_value_algorithm: Some(CDIV_ALGORITHM.to_owned()),
        };
        let body = self
            .call(
                &format!("/keys/{}/encrypt", key.path_segment()),
                "encrypt",
                &request,
            )
            .await;
        // The request held the plaintext in Base64; wipe that copy.
        zeroize::Zeroize::zeroize(&mut request.plaintext);
        let answer: EncryptResponse = parse(&body?)?;
        check_encrypted(&answer, plaintext.len(), aad)
    }

    /// Decrypt.
    pub(crate) async fn decrypt(
        &self,
        key: &ExternalKeyId,
        metadata: RequestMetadata,
        payload: &XkiPayload,
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let request = DecryptRequest {
            request_metadata: metadata,
            ciphertext: b64::encode(&payload.ciphertext),
            ciphertext_metadata: (!payload.ciphertext_metadata.is_empty())
                .then(|| b64::encode(&payload.ciphertext_metadata)),
            encryption_algorithm: ENCRYPTION_ALGORITHM.to_owned(),
            additional_authenticated_data: (!aad.is_empty()).then(|| b64::encode(aad)),
            initialization_vector: b64::encode(&payload.iv),
            authentication_tag: b64::encode(&payload.tag),
        };
        let body = self
            .call(
                &format!("/keys/{}/decrypt", key.path_segment()),
                "decrypt",
                &request,
            )
            .await?;
        let answer: DecryptResponse = parse(&body)?;
        let text = Zeroizing::new(answer.plaintext);
        let plaintext = Zeroizing::new(
            b64::decode(&text)
                .map_err(|_| CallError::BadAnswer("plaintext is not strict Base64"))?,
        );
        if plaintext.len() != payload.ciphertext.len() {
            return Err(CallError::BadAnswer(
                "plaintext length differs from the ciphertext's",
            ));
        }
        Ok(plaintext)
    }

    /// Signs and sends one POST; returns the body of a 200 (wiped on drop: it may hold a
    /// plaintext in Base64).
    async fn call<T: Serialize>(
        &self,
        route: &str,
        operation: &str,
        request: &T,
    ) -> Result<Zeroizing<Vec<u8>>, CallError> {
        let started = Instant::now();
        let body = Zeroizing::new(
            serde_json::to_vec(request)
                .map_err(|_| CallError::Local("request not serialisable"))?,
        );
        let target = format!("{}{route}", self.path);
        let headers = [("host".to_owned(), self.authority.clone())];
        let parts = RequestParts {
            method: "POST",
            target: &target,
            headers: &headers,
            body: &body,
        };
        let signed = self
            .signer
            .sign(&parts, &[], time::OffsetDateTime::now_utc())
            .map_err(|_| CallError::Local("request cannot be signed"))?;
        let result = self
            .http
            .post(format!("{}{target}", self.endpoint))
            .header(CONTENT_TYPE, "application/json")
            .header("x-amz-date", signed.x_amz_date)
            .header(AUTHORIZATION, signed.authorization)
            .timeout(self.timeout)
            .body(body.to_vec())
            .send()
            .await;
        let outcome = match result {
            Err(e) => Err(CallError::Transport(self.classify(&e))),
            Ok(response) => {
                let status = response.status().as_u16();
                match read_capped(response).await.map_err(|e| self.refine(e)) {
                    Err(e) => Err(e),
                    Ok(bytes) if status == 200 => Ok(bytes),
                    Ok(bytes) => Err(CallError::Refused {
                        status,
                        name: serde_json::from_slice::<ErrorBody>(&bytes)
                            .ok()
                            .map(|b| b.error_name),
                    }),
                }
            }
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &outcome {
            Ok(_) => {
                tracing::debug!(target: "kms_connector::external", endpoint = %self.endpoint, operation, elapsed_ms, "XKI call succeeded");
            }
            Err(error) => {
                tracing::info!(target: "kms_connector::external", endpoint = %self.endpoint, operation, elapsed_ms, ?error, "XKI call failed");
            }
        }
        outcome
    }
}

impl XkiClient {
    fn classify(&self, error: &reqwest::Error) -> Transport {
        self.refine_transport(classify(error))
    }

    fn refine(&self, error: CallError) -> CallError {
        match error {
            CallError::Transport(t) => CallError::Transport(self.refine_transport(t)),
            other => other,
        }
    }

    /// A connection broken after the TCP connect is the TLS failure it is when the proxy asked
    /// for a client certificate this instance does not have (see `TlsDiagnostics`).
    fn refine_transport(&self, transport: Transport) -> Transport {
        match transport {
            Transport::Other if self.diagnostics.client_certificate_missing() => Transport::Tls,
            other => other,
        }
    }
}

async fn read_capped(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, CallError> {
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(CallError::BadAnswer("answer body too large"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(CallError::Transport(classify(&e))),
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body)
        .map_err(|_| CallError::BadAnswer("answer is not the expected JSON"))
}

/// Checks an Encrypt answer and turns it into the payload that goes into the blob.
fn check_encrypted(
    answer: &EncryptResponse,
    plaintext_len: usize,
    aad: &[u8],
) -> Result<Encrypted, CallError> {
    let decode =
        |text: &str, what: &'static str| b64::decode(text).map_err(|_| CallError::BadAnswer(what));
    let ciphertext = decode(&answer.ciphertext, "ciphertext is not strict Base64")?;
    let iv = decode(
        &answer.initialization_vector,
        "initializationVector is not strict Base64",
    )?;
    let tag = decode(
        &answer.authentication_tag,
        "authenticationTag is not strict Base64",
    )?;
    let ciphertext_metadata = match &answer.ciphertext_metadata {
        Some(text) => decode(text, "ciphertextMetadata is not strict Base64")?,
        None => Vec::new(),
    };
    if ciphertext.len() != plaintext_len {
        return Err(CallError::BadAnswer(
            "ciphertext length differs from the plaintext's",
        ));
    }
    if !IV_LENGTHS.contains(&iv.len()) {
        return Err(CallError::BadAnswer(
            "initializationVector is not 12 or 16 bytes",
        ));
    }
    if tag.len() != TAG_BYTES {
        return Err(CallError::BadAnswer("authenticationTag is not 16 bytes"));
    }
    if ciphertext_metadata.len() > MAX_CIPHERTEXT_METADATA_BYTES {
        return Err(CallError::BadAnswer(
            "ciphertextMetadata is longer than 20 bytes",
        ));
    }
    let Some(received) = &answer.ciphertext_data_integrity_value else {
        return Err(CallError::BadAnswer("ciphertextDataIntegrityValue missing"));
    };
    let received = decode(
        received,
        "ciphertextDataIntegrityValue is not strict Base64",
    )?;
    let expected = cdiv(aad, &ciphertext_metadata, &iv, &ciphertext, &tag);
    if !bool::from(received.as_slice().ct_eq(&expected)) {
        tracing::error!(target: "kms_connector::external", "the XKI proxy's ciphertextDataIntegrityValue does not match its answer; ciphertext discarded");
        return Err(CallError::BadAnswer(
            "ciphertextDataIntegrityValue does not match",
        ));
    }
    Ok(XkiPayload {
        iv,
        ciphertext_metadata,
        tag,
        ciphertext,
    })
}

/// Sorts a reqwest failure: timeout, TLS (a rustls error anywhere in the chain), no TCP, other.
fn classify(error: &reqwest::Error) -> Transport {
    if error.is_timeout() {
        return Transport::Timeout;
    }
    if let Some(transport) = find_cause(error) {
        return transport;
    }
    if error.is_connect() {
        Transport::Unreachable
    } else {
        Transport::Other
    }
}

/// Walks the cause chain. `io::Error::source` skips the error it wraps (and connectors nest
/// `io::Error`s), so wrapped errors are followed through `get_ref` as well.
fn find_cause(error: &(dyn std::error::Error + 'static)) -> Option<Transport> {
    if error.downcast_ref::<rustls::Error>().is_some() {
        return Some(Transport::Tls);
    }
    if let Some(io) = error.downcast_ref::<std::io::Error>() {
        if let Some(inner) = io.get_ref() {
            if let Some(found) = find_cause(inner) {
                return Some(found);
            }
        }
        if io.kind() == std::io::ErrorKind::TimedOut {
            return Some(Transport::Timeout);
        }
    }
    error.source().and_then(find_cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(plaintext_len: usize, aad: &[u8]) -> EncryptResponse {
        let (iv, ct, tag, ctm) = (
            vec![1u8; 12],
            vec![2u8; plaintext_len],
            vec![3u8; 16],
            vec![1, 0, 0, 0, 1],
        );
        EncryptResponse {
            ciphertext: b64::encode(&ct),
            ciphertext_metadata: Some(b64::encode(&ctm)),
            initialization_vector: b64::encode(&iv),
            authentication_tag: b64::encode(&tag),
            ciphertext_data_integrity_value: Some(b64::encode(cdiv(aad, &ctm, &iv, &ct, &tag))),
        }
    }

    #[test]
    fn encrypt_answers_are_checked() {
        let good = answer(5, b"aad");
        let payload = check_encrypted(&good, 5, b"aad").unwrap();
        assert_eq!(
            (
                payload.iv.len(),
                payload.tag.len(),
                payload.ciphertext.len()
            ),
            (12, 16, 5)
        );

        let bad = |f: &dyn Fn(&mut EncryptResponse)| {
            let mut a = answer(5, b"aad");
            f(&mut a);
            check_encrypted(&a, 5, b"aad")
        };
        assert!(
            check_encrypted(&good, 5, b"other aad").is_err(),
            "CDIV over other AAD"
        );
        assert!(check_encrypted(&good, 6, b"aad").is_err(), "length");
        assert!(bad(&|a| a.ciphertext_data_integrity_value = None).is_err());
        assert!(bad(&|a| a.initialization_vector = b64::encode([0u8; 8])).is_err());
        assert!(bad(&|a| a.authentication_tag = b64::encode([0u8; 12])).is_err());
        assert!(bad(&|a| a.ciphertext_metadata = Some(b64::encode([0u8; 21]))).is_err());
        assert!(
            bad(&|a| a.ciphertext = "AgICAgI".into()).is_err(),
            "unpadded Base64"
        );
        assert!(
            bad(&|a| a.ciphertext = b64::encode([9u8; 5])).is_err(),
            "CDIV over other ciphertext"
        );
    }
}
