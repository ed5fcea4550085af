//! Requests captured from Alibaba Cloud's own Python SDKs (`alibabacloud-kms20160120`, ACS3;
//! `aliyun-python-sdk-kms`, HMAC-SHA1 RPC) replayed byte for byte against the server, with its
//! request clock set to each capture's timestamp: every one authenticates and reaches its
//! handler (the answer is the handler's), and none can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use harness::{ACCOUNT, Prepared, Setup, TestApp};
use serde::Deserialize;
use time::OffsetDateTime;
use time::macros::format_description;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/kms-openapi-signatures.json"
);
/// The instance the captured ACS3 CreateKey names.
const VECTOR_INSTANCE: &str = "kst-hzz62f1cb66fi1p7n4slk";

#[derive(Deserialize)]
struct Vectors {
    access_key_id: String,
    access_key_secret: String,
    requests: Vec<Captured>,
}

#[derive(Deserialize)]
struct Captured {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body_base64: String,
    sdk: String,
    action: String,
}

impl Captured {
    /// `x-acs-date` (ACS3) or the `Timestamp` parameter (RPC).
    fn timestamp(&self) -> OffsetDateTime {
        let text = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-acs-date"))
            .map(|(_, v)| v.clone())
            .or_else(|| {
                let query = self.target.split_once('?').unwrap().1;
                query
                    .split('&')
                    .find_map(|p| p.strip_prefix("Timestamp="))
                    .map(|v| v.replace("%3A", ":"))
            })
            .unwrap();
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        time::PrimitiveDateTime::parse(&text, format)
            .unwrap()
            .assume_utc()
    }

    fn prepared(&self) -> Prepared {
        let hop_by_hop = ["content-length", "connection"];
        Prepared {
            method: self.method.clone(),
            target: self.target.clone(),
            headers: self
                .headers
                .iter()
                .filter(|(n, _)| !hop_by_hop.contains(&n.to_ascii_lowercase().as_str()))
                .cloned()
                .collect(),
            body: schemas::b64::decode(&self.body_base64).unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_sdk_requests_are_served() {
    let vectors: Vectors =
        serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let now = Arc::new(AtomicI64::new(0));
    let clock = now.clone();
    let extra_toml = format!(
        "\n[[access_keys]]\naccess_key_id = \"{}\"\nsecret = {{ file = \"vector.secret\" }}\nprincipal = \"acs:ram::{ACCOUNT}:root\"\n\n[[instances]]\nid = \"{VECTOR_INSTANCE}\"\nkind = \"software\"\nname = \"vectors\"\n",
        vectors.access_key_id
    );
    let app = TestApp::start_with(Setup {
        extra_toml,
        files: vec![("vector.secret".into(), vectors.access_key_secret.clone())],
        request_clock: Some(Arc::new(move || {
            OffsetDateTime::from_unix_timestamp(clock.load(Ordering::SeqCst)).unwrap()
        })),
        ..Setup::default()
    })
    .await;
    let client = app.root();
    assert_eq!(vectors.requests.len(), 8);
    for captured in &vectors.requests {
        now.store(captured.timestamp().unix_timestamp(), Ordering::SeqCst);
        let reply = client.send(&captured.prepared()).await;
        let rpc = captured.sdk.contains("HMAC-SHA1");
        let expected = match (captured.action.as_str(), rpc) {
            ("Encrypt", _) => ("Forbidden.KeyNotFound", 404),
            ("Decrypt", _) => ("InvalidParameter", 400),
            ("GenerateDataKey" | "DescribeKey", _) => ("Forbidden.AliasNotFound", 404),
            ("CreateKey" | "ListKeys", _) => ("", 200),
            (other, _) => panic!("unexpected captured action {other}"),
        };
        assert_eq!(
            (reply.code(), reply.status),
            expected,
            "{} {}: {}",
            captured.sdk,
            captured.action,
            reply.body
        );
        if captured.action == "CreateKey" {
            let meta = &reply.body["KeyMetadata"];
            assert_eq!(
                meta["Description"], "vector key: 日本語 & symbols +/=",
                "{}",
                reply.body
            );
            if !rpc {
                assert_eq!(meta["DKMSInstanceId"], VECTOR_INSTANCE);
                // Signed at the server's (captured) time.
                let key_id = meta["KeyId"].as_str().unwrap();
                let request = client.prepare(
                    "ListResourceTags",
                    &[("KeyId", key_id)],
                    captured.timestamp(),
                    "vector-tags",
                );
                let tags = client.send(&request).await.ok();
                assert_eq!(tags["Tags"]["Tag"][0]["TagKey"], "env");
            }
        }
        // The same bytes again: the nonce was remembered.
        client
            .send(&captured.prepared())
            .await
            .expect("SignatureNonceUsed", 400);
    }
}
