//! An XKI client: reqwest over real TLS trusting the test CA, every request signed with
//! `schemas::sigv4::Signer` the way KMS does (`host;x-amz-date`) or curl does
//! (`content-type;host;x-amz-date`), and strict checks of what comes back.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::{Method, Version};
use schemas::b64;
use schemas::sigv4::{Credential, RequestParts, Signer};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{HOST, Proxy, REGION};

/// Which headers the signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `host;x-amz-date`, as KMS signs.
    Kms,
    /// `content-type;host;x-amz-date`, as `curl --aws-sigv4` signs.
    Curl,
}

/// HTTP versions a client may negotiate through ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// Offers `http/1.1` only.
    Http1,
    /// Offers `h2` and `http/1.1` (the server picks).
    Any,
}

/// A reqwest client for the proxy at `port`: trusts only `ca_pem`, resolves [`HOST`] to
/// 127.0.0.1, keeps connections alive, optionally presents a client certificate.
pub fn http_client(
    ca_pem: &str,
    port: u16,
    alpn: Alpn,
    identity: Option<&certs::CertifiedKey>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(HOST, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60));
    if alpn == Alpn::Http1 {
        builder = builder.http1_only();
    }
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// A client of one key store prefix.
#[derive(Debug, Clone)]
pub struct Xki {
    http: reqwest::Client,
    port: u16,
    /// The key store prefix (`""` or `/a`).
    pub prefix: String,
    /// `None`: requests go unsigned.
    pub credential: Option<Credential>,
    /// Region of the credential scope.
    pub region: String,
    /// Service of the credential scope.
    pub service: String,
    /// Headers the signature covers.
    pub signing: Signing,
    /// Added to the clock when signing (skew tests).
    pub clock_offset: time::Duration,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// HTTP version used.
    pub version: Version,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Xki {
    /// A client for `prefix` of `proxy` over HTTP/1.1.
    pub fn new(proxy: &Proxy, prefix: &str, credential: Option<Credential>) -> Self {
        Self {
            http: http_client(proxy.ca.cert_pem(), proxy.port, Alpn::Http1, None),
            port: proxy.port,
            prefix: prefix.into(),
            credential,
            region: REGION.into(),
            service: schemas::xki::SIGV4_SERVICE.into(),
            signing: Signing::Kms,
            clock_offset: time::Duration::ZERO,
        }
    }

    /// The same client, on another reqwest client (other ALPN, client certificate).
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The same client signing with another credential.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// `host[:port]` as sent in `Host` / `:authority`.
    pub fn authority(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// `<prefix>/kms/xks/v1<api>`.
    pub fn path(&self, api: &str) -> String {
        format!("{}/kms/xks/v1{api}", self.prefix)
    }

    /// The `x-amz-date` and `Authorization` headers for a request, as the signer makes them.
    pub fn sign(&self, method: &str, target: &str, body: &[u8]) -> Vec<(String, String)> {
        let Some(credential) = &self.credential else {
            return Vec::new();
        };
        let signer = Signer::new(credential.clone(), &*self.region, &*self.service);
        let headers = vec![
            ("host".to_owned(), self.authority()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let parts = RequestParts {
            method,
            target,
            headers: &headers,
            body,
        };
        let extra: &[&str] = match self.signing {
            Signing::Kms => &[],
            Signing::Curl => &["content-type"],
        };
        let signed = signer
            .sign(&parts, extra, OffsetDateTime::now_utc() + self.clock_offset)
            .unwrap();
        vec![
            ("x-amz-date".to_owned(), signed.x_amz_date),
            ("authorization".to_owned(), signed.authorization),
        ]
    }

    /// Sends `body` to the absolute `target` (path and query) with `method`, signed.
    pub async fn send(&self, method: Method, target: &str, body: Vec<u8>) -> Reply {
        let signature = self.sign(method.as_str(), target, &body);
        let mut request = self
            .http
            .request(method, format!("https://{}{target}", self.authority()))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in signature {
            request = request.header(name, value);
        }
        let response = request.send().await.expect("HTTP exchange");
        Reply {
            status: response.status().as_u16(),
            version: response.version(),
            content_type: response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// POSTs JSON to `<prefix>/kms/xks/v1<api>`.
    pub async fn post(&self, api: &str, body: &Value) -> Reply {
        let target = self.path(api);
        self.send(Method::POST, &target, serde_json::to_vec(body).unwrap())
            .await
    }

    /// GetHealthStatus.
    pub async fn health(&self) -> Reply {
        self.post("/health", &health_body("KmsHealthCheck")).await
    }

    /// GetKeyMetadata.
    pub async fn metadata(&self, key: &str) -> Reply {
        self.post(&format!("/keys/{key}/metadata"), &metadata_body())
            .await
    }

    /// Encrypt with a body from [`encrypt_body`].
    pub async fn encrypt(&self, key: &str, body: &Value) -> Reply {
        self.post(&format!("/keys/{key}/encrypt"), body).await
    }

    /// Decrypt with a body from [`decrypt_body`].
    pub async fn decrypt(&self, key: &str, body: &Value) -> Reply {
        self.post(&format!("/keys/{key}/decrypt"), body).await
    }

    /// Encrypts and checks the answer; returns the decoded output.
    pub async fn encrypt_ok(&self, key: &str, plaintext: &[u8], aad: Option<&[u8]>) -> Encrypted {
        let reply = self
            .encrypt(key, &encrypt_body(plaintext, aad, false))
            .await;
        Encrypted::from_json(&reply.ok())
    }

    /// Decrypts `encrypted` and returns the plaintext.
    pub async fn decrypt_ok(
        &self,
        key: &str,
        encrypted: &Encrypted,
        aad: Option<&[u8]>,
    ) -> Vec<u8> {
        let reply = self.decrypt(key, &decrypt_body(encrypted, aad)).await;
        let json = reply.ok();
        b64::decode(json["plaintext"].as_str().unwrap()).unwrap()
    }
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn check_json_shape(&self) {
        assert_eq!(
            self.content_type
                .as_deref()
                .map(|c| c.split(';').next().unwrap().trim()),
            Some("application/json"),
            "Content-Type of a {} response",
            self.status
        );
        let text = std::str::from_utf8(&self.body).expect("UTF-8 body");
        // Compact serialisation has the same length whatever the key order.
        let compact = serde_json::to_string(&self.json()).unwrap();
        assert!(
            !text.contains('\n') && compact.len() == text.len(),
            "response JSON must be compact on one line: {text}"
        );
    }

    /// Asserts 200 with a compact JSON body; returns it.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self.check_json_shape();
        self.json()
    }

    /// Asserts an XKI error: the status, and a body that is exactly
    /// `{"errorName": name, "errorMessage": <printable ASCII, < 512 chars>}`. Returns the message.
    pub fn error(&self, status: u16, name: &str) -> String {
        assert_eq!(
            (self.status, self.error_name().as_deref()),
            (status, Some(name)),
            "expected {status} {name}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self.check_json_shape();
        let json = self.json();
        let object = json.as_object().expect("error body is an object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["errorMessage", "errorName"], "error body: {json}");
        let message = object["errorMessage"]
            .as_str()
            .expect("errorMessage string");
        assert!(
            message.len() < 512 && message.bytes().all(|b| (b' '..=b'~').contains(&b)),
            "errorMessage must be < 512 printable ASCII: {message:?}"
        );
        message.to_owned()
    }

    /// The `errorName` of the body, if it has one.
    pub fn error_name(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()?
            .get("errorName")?
            .as_str()
            .map(str::to_owned)
    }
}

/// A principal ARN.
pub const PRINCIPAL: &str = "arn:aws:iam::123456789012:role/app";
/// A KMS key ARN.
pub const KMS_KEY_ARN: &str =
    "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// `requestMetadata` of a key operation, as KMS sends it.
pub fn request_metadata(operation: &str, principal: &str) -> Value {
    json!({
        "awsPrincipalArn": principal,
        "kmsKeyArn": KMS_KEY_ARN,
        "kmsOperation": operation,
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
    })
}

/// A GetHealthStatus body.
pub fn health_body(operation: &str) -> Value {
    json!({"requestMetadata": {
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
        "kmsOperation": operation,
    }})
}

/// A GetKeyMetadata body as CreateKey sends it (no `kmsKeyArn`).
pub fn metadata_body() -> Value {
    json!({"requestMetadata": {
        "awsPrincipalArn": PRINCIPAL,
        "kmsOperation": "CreateKey",
        "kmsRequestId": uuid::Uuid::new_v4().to_string(),
    }})
}

/// An Encrypt body.
pub fn encrypt_body(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata("Encrypt", PRINCIPAL),
        "plaintext": b64::encode(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(b64::encode(aad));
    }
    if cdiv {
        body["ciphertextDataIntegrityValueAlgorithm"] = json!("SHA_256");
    }
    body
}

/// A Decrypt body for `encrypted`.
pub fn decrypt_body(encrypted: &Encrypted, aad: Option<&[u8]>) -> Value {
    let mut body = json!({
        "requestMetadata": request_metadata("Decrypt", PRINCIPAL),
        "ciphertext": b64::encode(&encrypted.ciphertext),
        "encryptionAlgorithm": "AES_GCM",
        "initializationVector": b64::encode(&encrypted.iv),
        "authenticationTag": b64::encode(&encrypted.tag),
    });
    if let Some(ctm) = &encrypted.ciphertext_metadata {
        body["ciphertextMetadata"] = json!(b64::encode(ctm));
    }
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = json!(b64::encode(aad));
    }
    body
}

/// A decoded Encrypt response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Ciphertext.
    pub ciphertext: Vec<u8>,
    /// IV.
    pub iv: Vec<u8>,
    /// Tag.
    pub tag: Vec<u8>,
    /// Ciphertext metadata, when present.
    pub ciphertext_metadata: Option<Vec<u8>>,
    /// CDIV, when present.
    pub cdiv: Option<Vec<u8>>,
}

impl Encrypted {
    /// Decodes an Encrypt response body; every field must be strict Base64.
    pub fn from_json(json: &Value) -> Self {
        let field = |name: &str| -> Option<Vec<u8>> {
            json.get(name).map(|v| {
                let text = v
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} is not a string"));
                b64::decode(text).unwrap_or_else(|_| panic!("{name} is not strict Base64"))
            })
        };
        Self {
            ciphertext: field("ciphertext").expect("ciphertext"),
            iv: field("initializationVector").expect("initializationVector"),
            tag: field("authenticationTag").expect("authenticationTag"),
            ciphertext_metadata: field("ciphertextMetadata"),
            cdiv: field("ciphertextDataIntegrityValue"),
        }
    }
}
