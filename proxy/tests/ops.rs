//! The operations side (spec §1.10, §4.3): liveness and readiness for a load balancer,
//! Prometheus metrics named after the XKS errors, and the admin API behind its bearer token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::encrypt_body;
use common::{Proxy, Setup};
use reqwest::Method;

#[actix_web::test]
async fn ping_and_ready_answer_on_the_ops_port() {
    let proxy = Proxy::default().await;
    assert_eq!(proxy.ops_get("/ping").await.0, 200);
    let (status, body) = proxy.ops_get("/ready").await;
    assert_eq!(status, 200, "healthy SoftHSM: {body}");
}

/// §4.3: "/ping and /ready on a separate plain-HTTP port; the same routes on the main port
/// when mTLS is off" (a load balancer's TLS health check).
#[actix_web::test]
async fn ping_and_ready_are_also_served_on_the_main_port_without_mtls() {
    let proxy = Proxy::default().await;
    let client = proxy.unsigned("");
    for path in ["/ping", "/ready"] {
        let reply = client.send(Method::GET, path, Vec::new()).await;
        assert_eq!(
            reply.status,
            200,
            "GET {path} on the TLS port: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
}

/// `/ready` on the KMS-facing port (anyone who can connect reaches it) says ready or not and
/// names no HSM, vendor, model or firmware; the ops port keeps the details.
#[actix_web::test]
async fn ready_on_the_main_port_reveals_nothing_about_the_hsms() {
    let proxy = Proxy::default().await;
    let reply = proxy
        .unsigned("")
        .send(Method::GET, "/ready", Vec::new())
        .await;
    assert_eq!(reply.status, 200);
    let public = String::from_utf8(reply.body).unwrap();
    assert_eq!(public, r#"{"status":"READY"}"#);
    let (_, detailed) = proxy.ops_get("/ready").await;
    assert!(detailed.contains("ekmFleetDetails"), "{detailed}");
    assert!(detailed.contains(common::hsm::TOKEN_LABEL), "{detailed}");
}

/// The admin API has its own listener: the ops port (what load balancers and monitoring
/// reach) does not serve it.
#[actix_web::test]
async fn the_admin_api_is_not_on_the_ops_port() {
    let proxy = Proxy::default().await;
    let response = reqwest::Client::new()
        .get(proxy.ops_url("/admin/keys"))
        .bearer_auth(&proxy.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = reqwest::Client::new()
        .get(proxy.admin_url("/admin/keys"))
        .bearer_auth(&proxy.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let (status, _) = proxy.admin_get_path("/ping").await;
    assert_eq!(status, 404, "and the admin port serves no probes");
}

/// Off loopback the admin listener needs TLS: a plain one is refused at start; with
/// `[admin.tls]` it serves HTTPS (and `xki-proxy keys` finds it through the configuration,
/// trusting exactly the configured certificate).
#[actix_web::test]
async fn a_non_loopback_admin_listener_needs_tls() {
    let mut plain = Setup::new();
    plain.admin_listen = "0.0.0.0:0".into();
    let error = Proxy::try_start(plain, "admin-token-long-enough")
        .await
        .expect_err("a plain admin listener on 0.0.0.0 was accepted");
    assert!(error.contains("admin.tls"), "{error}");

    let mut tls = Setup::new();
    tls.admin_listen = "0.0.0.0:0".into();
    tls.admin = "[admin.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n".into();
    let proxy = Proxy::start(tls).await;
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(proxy.ca.cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let response = https
        .get(format!("https://127.0.0.1:{}/admin/keys", proxy.admin_port))
        .bearer_auth(&proxy.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let plain_http = reqwest::get(proxy.admin_url("/admin/keys")).await;
    assert!(
        plain_http.is_err() || plain_http.is_ok_and(|r| r.status().as_u16() != 200),
        "plain HTTP on the TLS admin port"
    );
    // The CLI, from the configuration file (the admin port from the environment, as the
    // file says port 0).
    let output = tokio::task::spawn_blocking({
        let config = proxy.dir().join(common::CONFIG_FILE);
        let listen = format!("\"127.0.0.1:{}\"", proxy.admin_port);
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_xki-proxy"))
                .args(["keys", "--config"])
                .arg(config)
                .args(["--json", "list"])
                .env("XKI_PROXY__ADMIN__LISTEN", listen)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(listed.is_array(), "{listed}");
}

#[actix_web::test]
async fn metrics_expose_latency_and_errors_by_xks_error_name() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let key = proxy.key("metrics").await;
    client.health().await.ok();
    client.encrypt_ok(&key, b"counted", None).await;
    let mut bad = encrypt_body(b"x", None, false);
    bad["encryptionAlgorithm"] = "AES_CBC".into();
    client
        .encrypt(&key, &bad)
        .await
        .error(400, "ValidationException");
    proxy
        .unsigned("")
        .health()
        .await
        .error(401, "AuthenticationFailedException");

    let (status, text) = proxy.ops_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("xki_request_duration_seconds"), "{text}");
    let capacity = text
        .lines()
        .find_map(|l| l.strip_prefix("xki_hsm_queue_capacity "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(
        capacity.is_some_and(|c| c > 0.0),
        "HSM queue capacity exported: {text}"
    );
    assert!(text.contains("xki_hsm_queue_depth"), "{text}");
    let errors = |name: &str| -> f64 {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("error_name=\"{name}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(errors("ValidationException") >= 1.0, "{text}");
    assert!(errors("AuthenticationFailedException") >= 1.0, "{text}");
    assert_eq!(errors("InternalException"), 0.0);
    let encrypt_count = text
        .lines()
        .find(|l| l.starts_with("xki_request_duration_seconds_count") && l.contains("encrypt"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(encrypt_count.unwrap_or(0.0) >= 2.0, "{text}");
}

#[actix_web::test]
async fn the_admin_api_requires_its_bearer_token() {
    let proxy = Proxy::start(Setup::new()).await;
    let key = proxy.key("admin").await;
    let client = proxy.client("");
    for token in [None, Some("wrong-token"), Some("")] {
        let (status, body) = proxy
            .admin_post(&format!("/admin/keys/{key}/disable"), token)
            .await;
        assert_eq!(status, 401, "token {token:?}: {body}");
        let response = reqwest::Client::new()
            .get(proxy.admin_url("/admin/keys"))
            .bearer_auth(token.unwrap_or_default())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    // Nothing changed.
    assert_eq!(client.metadata(&key).await.ok()["keyStatus"], "ENABLED");
    let listed = reqwest::Client::new()
        .get(proxy.admin_url("/admin/keys"))
        .bearer_auth(&proxy.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let keys: serde_json::Value = listed.json().await.unwrap();
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["externalKeyId"] == key.as_str() && k["state"] == "ENABLED"),
        "{keys}"
    );
}

/// An admin token that is empty or short is refused at start: with an empty one, a request
/// without any `Authorization` header would have matched it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_or_short_admin_tokens_are_refused() {
    for token in ["", "short"] {
        let error = Proxy::try_start(Setup::new(), token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{token:?} accepted"));
        assert!(error.contains("admin.token"), "{token:?}: {error}");
    }
}
