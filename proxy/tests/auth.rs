//! Who may call: SigV4 as KMS and curl sign (spec §1.8, §4.1), tenants isolated by prefix,
//! secondary authorization (§1.9), per-prefix quotas, and a replay of captured curl requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::{Signing, encrypt_body, health_body, request_metadata};
use common::raw::{Conn, TlsOptions, client_config, http1_request};
use common::{Proxy, Setup, Store, new_credential};
use reqwest::Method;
use schemas::b64;
use schemas::sigv4::Credential;
use serde_json::Value;

#[actix_web::test]
async fn requests_without_a_valid_signature_are_refused() {
    let proxy = Proxy::default().await;
    let key = proxy.key("auth").await;
    let calls_before = proxy.backend.crypto_calls();
    let unsigned = proxy.unsigned("");
    unsigned
        .health()
        .await
        .error(401, "AuthenticationFailedException");
    unsigned
        .encrypt(&key, &encrypt_body(b"x", None, false))
        .await
        .error(401, "AuthenticationFailedException");

    let good = proxy.client("");
    let wrong_secret = Credential::new(
        good.credential.clone().unwrap().access_key_id,
        new_credential().secret,
    );
    let mut wrong_region = good.clone();
    wrong_region.region = "eu-west-1".into();
    let mut wrong_service = good.clone();
    wrong_service.service = "kms".into();
    let refused = [
        ("wrong secret", good.clone().with_credential(wrong_secret)),
        (
            "unknown access key",
            good.clone().with_credential(new_credential()),
        ),
        ("region not allowed", wrong_region),
        ("wrong service", wrong_service),
    ];
    for (what, client) in refused {
        let reply = client.health().await;
        assert_eq!(reply.status, 401, "{what}");
        reply.error(401, "AuthenticationFailedException");
        client
            .encrypt(&key, &encrypt_body(b"x", None, false))
            .await
            .error(401, "AuthenticationFailedException");
    }
    assert_eq!(
        proxy.backend.crypto_calls(),
        calls_before,
        "never reached the HSM"
    );
    good.health().await.ok();
}

#[actix_web::test]
async fn the_signature_covers_body_path_and_signed_headers() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("covered").await;
    let target = client.path(&format!("/keys/{key}/encrypt"));
    let body = serde_json::to_vec(&encrypt_body(b"signed body", None, false)).unwrap();
    let other_body = serde_json::to_vec(&encrypt_body(b"other body!", None, false)).unwrap();
    let mut conn = Conn::connect(
        proxy.port,
        client_config(proxy.ca.cert_pem(), None, &TlsOptions::default()),
    )
    .await
    .unwrap();
    let base_headers = vec![
        ("Host".to_owned(), client.authority()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let mut curl = client.clone();
    curl.signing = Signing::Curl;
    // Each part changed after signing: date, host, body, path, a signed extra header.
    let signature = client.sign("POST", &target, &body);
    let swapped = [base_headers.clone(), signature.clone()].concat();
    let metadata_target = client.path(&format!("/keys/{key}/metadata"));
    let curl_signature = curl.sign("POST", &target, &body);
    let retyped = [
        vec![
            base_headers[0].clone(),
            (
                "Content-Type".to_owned(),
                "application/x-amz-json-1.1".to_owned(),
            ),
        ],
        curl_signature.clone(),
    ]
    .concat();
    let undated: Vec<(String, String)> = swapped
        .iter()
        .filter(|(n, _)| n != "x-amz-date")
        .cloned()
        .collect();
    let other_host = [
        vec![("Host".to_owned(), "attacker.example".to_owned())],
        base_headers[1..].to_vec(),
        signature.clone(),
    ]
    .concat();
    for (what, target, headers, body) in [
        ("x-amz-date dropped", &target, &undated, &body),
        ("host", &target, &other_host, &body),
        ("body", &target, &swapped, &other_body),
        ("path", &metadata_target, &swapped, &body),
        ("signed content-type", &target, &retyped, &body),
    ] {
        let response = conn
            .exchange(&http1_request("POST", target, headers, body))
            .await
            .unwrap();
        assert_eq!(response.status, 401, "{what} changed after signing");
        response.reply().error(401, "AuthenticationFailedException");
    }
    // Unchanged, both styles pass.
    let kms = [base_headers.clone(), signature].concat();
    let curl_headers = [base_headers, curl_signature].concat();
    for headers in [kms, curl_headers] {
        let response = conn
            .exchange(&http1_request("POST", &target, &headers, &body))
            .await
            .unwrap();
        response.reply().ok();
    }
}

#[actix_web::test]
async fn curl_and_kms_signatures_both_work() {
    let proxy = Proxy::default().await;
    let key = proxy.key("styles").await;
    for signing in [Signing::Kms, Signing::Curl] {
        let mut client = proxy.client("/tenant-a");
        client.signing = signing;
        client.health().await.ok();
        let e = client.encrypt_ok(&key, b"styles", Some(b"a")).await;
        assert_eq!(client.decrypt_ok(&key, &e, Some(b"a")).await, b"styles");
    }
}

#[actix_web::test]
async fn clock_skew_beyond_five_minutes_is_refused() {
    let proxy = Proxy::default().await;
    let key = proxy.key("skew").await;
    for (minutes, accepted) in [(6, false), (-6, false), (4, true), (-4, true)] {
        let mut client = proxy.client("");
        client.clock_offset = time::Duration::minutes(minutes);
        let health = client.health().await;
        let encrypt = client.encrypt(&key, &encrypt_body(b"t", None, false)).await;
        if accepted {
            health.ok();
            encrypt.ok();
        } else {
            health.error(401, "AuthenticationFailedException");
            encrypt.error(401, "AuthenticationFailedException");
        }
    }
}

#[actix_web::test]
async fn two_credentials_per_prefix_and_several_regions_work() {
    let mut store = Store::new("/rotating");
    store.credentials.push(new_credential());
    store.regions.push("eu-central-1".into());
    let proxy = Proxy::start(Setup::with_stores(vec![store, Store::new("/other")])).await;
    let key = proxy.key("two-creds").await;
    for credential in proxy.setup.store("/rotating").credentials.clone() {
        for region in ["us-east-1", "eu-central-1"] {
            let mut client = proxy
                .client("/rotating")
                .with_credential(credential.clone());
            client.region = region.into();
            client.health().await.ok();
            client.metadata(&key).await.ok();
        }
    }
}

#[actix_web::test]
async fn a_tenant_credential_does_not_work_on_another_prefix() {
    let proxy = Proxy::default().await;
    let key = proxy.key("tenants").await;
    let tenant_a = proxy.setup.store("/tenant-a").credentials[0].clone();
    let root = proxy.setup.store("").credentials[0].clone();
    let a_on_root = proxy.client("").with_credential(tenant_a);
    a_on_root
        .health()
        .await
        .error(401, "AuthenticationFailedException");
    a_on_root
        .metadata(&key)
        .await
        .error(401, "AuthenticationFailedException");
    let root_on_a = proxy.client("/tenant-a").with_credential(root);
    root_on_a
        .health()
        .await
        .error(401, "AuthenticationFailedException");
    proxy.client("/tenant-a").metadata(&key).await.ok();
}

#[actix_web::test]
async fn secondary_authorization_denies_by_rule_and_by_allow_list() {
    let deny = "[[key_store.rule]]\nid = \"no-contractors\"\neffect = \"deny\"\n\
                principals = [\"arn:aws:iam::*:role/contractor-*\"]\n";
    let allow = "[[key_store.rule]]\nid = \"only-account-1\"\neffect = \"allow\"\n\
                 principals = [\"arn:aws:iam::111111111111:*\"]\n";
    let proxy = Proxy::start(Setup::with_stores(vec![
        Store::new("/deny").with_rules(deny),
        Store::new("/allow").with_rules(allow),
    ]))
    .await;
    let key = proxy.key("authz").await;
    let encrypt_as = |principal: &str| {
        let mut body = encrypt_body(b"authz", None, false);
        body["requestMetadata"] = request_metadata("Encrypt", principal);
        body
    };
    let metadata_as = |principal: &str| {
        let mut body = encrypt_as(principal);
        body["requestMetadata"]["kmsOperation"] = "CreateKey".into();
        body
    };
    let cases = [
        (
            "/deny",
            "arn:aws:iam::222222222222:role/contractor-bob",
            false,
        ),
        ("/deny", "arn:aws:iam::222222222222:role/employee", true),
        ("/allow", "arn:aws:iam::111111111111:role/app", true),
        ("/allow", "arn:aws:iam::222222222222:role/app", false),
    ];
    let calls_before = proxy.backend.crypto_calls();
    let mut allowed_calls = 0;
    for (prefix, principal, allowed) in cases {
        let client = proxy.client(prefix);
        let encrypt = client.encrypt(&key, &encrypt_as(principal)).await;
        let metadata = client
            .post(&format!("/keys/{key}/metadata"), &metadata_as(principal))
            .await;
        if allowed {
            encrypt.ok();
            metadata.ok();
            allowed_calls += 1;
        } else {
            encrypt.error(403, "AccessDeniedException");
            metadata.error(403, "AccessDeniedException");
        }
    }
    assert_eq!(proxy.backend.crypto_calls(), calls_before + allowed_calls);
}

#[actix_web::test]
async fn a_store_quota_throttles_only_that_prefix() {
    let mut limited = Store::new("/limited");
    limited.quota = Some((1, 2));
    let proxy = Proxy::start(Setup::with_stores(vec![limited, Store::new("/free")])).await;
    let limited = proxy.client("/limited");
    let free = proxy.client("/free");
    // Key operations spend the quota (an unknown key still costs a request).
    limited
        .metadata("no-such-key")
        .await
        .error(404, "KeyNotFoundException");
    limited
        .metadata("no-such-key")
        .await
        .error(404, "KeyNotFoundException");
    limited
        .metadata("no-such-key")
        .await
        .error(429, "ThrottlingException");
    // Health is answered from memory and never throttled by the quota.
    limited.health().await.ok();
    for _ in 0..5 {
        free.metadata("no-such-key")
            .await
            .error(404, "KeyNotFoundException");
    }
    // The bucket refills at one request per second.
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || async {
            limited.metadata("no-such-key").await.status == 404
        })
        .await,
        "the quota refills"
    );
}

/// Requests captured from curl 7.88 `--aws-sigv4` earlier today: valid signatures, but old.
#[actix_web::test]
async fn captured_curl_requests_cannot_be_replayed() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/xki-sigv4.json"
    ))
    .expect("vector file");
    let vectors: Value = serde_json::from_str(&text).unwrap();
    let credential = Credential::new(
        vectors["access_key_id"].as_str().unwrap(),
        vectors["secret_access_key"].as_str().unwrap(),
    );
    let mut stores = Vec::new();
    for prefix in ["", "/example/prefix"] {
        let mut store = Store::new(prefix);
        store.credentials = vec![credential.clone()];
        store.regions = vec!["us-east-1".into(), "eu-west-1".into()];
        stores.push(store);
    }
    let proxy = Proxy::start(Setup::with_stores(stores)).await;
    let config = client_config(proxy.ca.cert_pem(), None, &TlsOptions::default());
    let mut conn = Conn::connect(proxy.port, config).await.unwrap();
    let requests = vectors["requests"].as_array().unwrap();
    assert!(!requests.is_empty());
    for request in requests {
        let target = request["target"].as_str().unwrap();
        let headers: Vec<(String, String)> = request["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
            .collect();
        let body = b64::decode(request["body_base64"].as_str().unwrap()).unwrap();
        let raw = http1_request(request["method"].as_str().unwrap(), target, &headers, &body);
        let response = conn.exchange(&raw).await.unwrap();
        let message = response.reply().error(401, "AuthenticationFailedException");
        assert!(message.contains("clock"), "refused for its age: {message}");
    }
    // The same body signed now is accepted: the replay failed only because it is stale.
    let mut client = proxy.client("/example/prefix");
    let health = &requests[0];
    let body = b64::decode(health["body_base64"].as_str().unwrap()).unwrap();
    client.signing = Signing::Curl;
    client
        .send(Method::POST, health["target"].as_str().unwrap(), body)
        .await
        .ok();
    client
        .post("/health", &health_body("KmsHealthCheck"))
        .await
        .ok();
}

/// Signs a health request for `host` (the `Host` header and the signed `host`), sent over a
/// TLS connection to the proxy (SNI the proxy's name).
async fn health_signed_for(proxy: &Proxy, prefix: &str, host: &str) -> (u16, Option<String>) {
    let credential = proxy.setup.store(prefix).credentials[0].clone();
    let signer = schemas::sigv4::Signer::new(credential, common::REGION, "kms-xks-proxy");
    let target = format!("{prefix}/kms/xks/v1/health");
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let mut headers = vec![
        ("Host".to_owned(), host.to_owned()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let signed = signer
        .sign(
            &schemas::sigv4::RequestParts {
                method: "POST",
                target: &target,
                headers: &headers,
                body: &body,
            },
            &[],
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    headers.push(("x-amz-date".to_owned(), signed.x_amz_date));
    headers.push(("authorization".to_owned(), signed.authorization));
    let mut conn = Conn::connect(
        proxy.port,
        client_config(proxy.ca.cert_pem(), None, &TlsOptions::default()),
    )
    .await
    .unwrap();
    let response = conn
        .exchange(&http1_request("POST", &target, &headers, &body))
        .await
        .unwrap();
    (response.status, response.reply().error_name())
}

/// A key store with `hosts` accepts only requests signed for one of them (port ignored): a
/// request validly signed for `evil.example` is refused. Without `hosts`, any host.
#[actix_web::test]
async fn a_store_with_hosts_refuses_requests_signed_for_another_host() {
    let mut pinned = Store::new("/pinned");
    pinned.hosts = vec![common::HOST.to_ascii_uppercase()];
    let proxy = Proxy::start(Setup::with_stores(vec![Store::new(""), pinned])).await;
    let port = proxy.port;
    for host in [format!("{}:{port}", common::HOST), common::HOST.to_owned()] {
        assert_eq!(
            health_signed_for(&proxy, "/pinned", &host).await.0,
            200,
            "{host}"
        );
    }
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("{}.evil.example", common::HOST),
    ] {
        assert_eq!(
            health_signed_for(&proxy, "/pinned", &host).await,
            (401, Some("AuthenticationFailedException".to_owned())),
            "{host}"
        );
    }
    assert_eq!(health_signed_for(&proxy, "", "evil.example").await.0, 200);
}
