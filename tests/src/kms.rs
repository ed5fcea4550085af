//! A KMS OpenAPI client: RPC-signed (HMAC-SHA1) `GET` requests, like `kms-connector sign-url`
//! prints, sent with reqwest.

use std::time::Duration;

use schemas::acs::{Credential, RpcRequest, encode_parameters, sign_rpc};
use serde_json::Value;

/// Calls one kms-connector's OpenAPI with one AccessKey.
#[derive(Debug, Clone)]
pub struct KmsClient {
    base: String,
    access_key_id: String,
    secret: String,
    http: reqwest::Client,
}

impl KmsClient {
    /// A client of `http://127.0.0.1:<port>/`.
    pub fn new(port: u16, access_key_id: &str, secret: &str) -> Self {
        Self {
            base: format!("http://127.0.0.1:{port}/"),
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    /// The presigned URL of `action` with `params`.
    pub fn signed_url(&self, action: &str, params: &[(&str, &str)]) -> String {
        let credential = Credential::new(self.access_key_id.clone(), self.secret.as_str());
        let nonce = uuid::Uuid::new_v4().to_string();
        let mut all = params.to_vec();
        all.push(("Format", "JSON"));
        let pairs = sign_rpc(
            &credential,
            &RpcRequest {
                method: "GET",
                action,
                version: schemas::kms::API_VERSION,
                params: &all,
                nonce: &nonce,
            },
            time::OffsetDateTime::now_utc(),
        )
        .expect("signing the request");
        format!("{}?{}", self.base, encode_parameters(pairs))
    }

    /// Sends `action`; the HTTP status and the JSON body. Transport errors are `Err` (the
    /// server is down or was killed mid-request).
    pub async fn try_call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .get(self.signed_url(action, params))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }

    /// [`Self::try_call`], panicking on transport errors.
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> (u16, Value) {
        self.try_call(action, params)
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"))
    }

    /// [`Self::call`] that must answer 200; the body.
    pub async fn ok(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = self.call(action, params).await;
        assert_eq!(status, 200, "{action} {params:?} answered {status}: {body}");
        body
    }

    /// Every `KeyId` ListKeys returns (all pages).
    pub async fn list_key_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for page in 1.. {
            let number = page.to_string();
            let body = self
                .ok("ListKeys", &[("PageNumber", &number), ("PageSize", "100")])
                .await;
            let keys = body["Keys"]["Key"].as_array().cloned().unwrap_or_default();
            let done = keys.len() < 100;
            ids.extend(
                keys.iter()
                    .map(|k| k["KeyId"].as_str().expect("KeyId").to_owned()),
            );
            if done {
                break;
            }
        }
        ids
    }
}

/// A string field of a JSON answer at a dotted path (`KeyMetadata.KeyId`), panicking with the
/// whole answer if it is missing.
pub fn field(value: &Value, path: &str) -> String {
    let mut current = value;
    for part in path.split('.') {
        current = &current[part];
    }
    current
        .as_str()
        .unwrap_or_else(|| panic!("no string {path} in {value}"))
        .to_owned()
}
