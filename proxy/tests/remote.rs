//! The remote EKM backend against a real EKM server (mTLS, the process's SoftHSM token): key
//! ids with dots travel as they are, and the dot segments `.` and `..`, which HTTP clients and
//! servers normalise away, never reach the EKM as a path: the proxy and its admin API refuse
//! them with their own errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use common::client::{encrypt_body, metadata_body};
use common::raw::{Conn, TlsOptions, client_config, http1_request};
use common::{Proxy, Setup, ctx};
use ekm::KeyManager as _;
use schemas::xki::ExternalKeyId;
use xki_proxy::remote::RemoteKeyManager;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An EKM server on the process's token, and a remote client of it.
struct Ekm {
    client: RemoteKeyManager,
    _dir: tempfile::TempDir,
}

fn ekm() -> Ekm {
    let ca = certs::Authority::new("remote EKM test CA").unwrap();
    let server = ca
        .issue_server("localhost", &["localhost"], &[LOCALHOST])
        .unwrap();
    let proxy = ca.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let tls = ekm::server::tls::server_config(
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
        Some(ca.cert_pem().as_bytes()),
        &["xki-proxy".to_owned()],
    )
    .unwrap();
    let settings = ekm::server::ServerSettings {
        listen: SocketAddr::new(LOCALHOST, 0),
        liveness_listen: None,
        ..ekm::server::ServerSettings::default()
    };
    let manager: Arc<dyn ekm::KeyManager> = common::hsm::manager();
    let app = ekm::server::Application::build(settings, tls, manager).unwrap();
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    };
    let client = RemoteKeyManager::new(
        &format!("https://localhost:{port}"),
        &file("ca.pem", ca.cert_pem()),
        &file("proxy.pem", &proxy.cert_pem),
        &file("proxy.key", &proxy.key_pem),
        4,
    )
    .unwrap();
    Ekm { client, _dir: dir }
}

/// Ids made of dots and other characters (`...`, `.x`, `x.`) name exactly their key through
/// the EKM API: the client builds each URL segment through `ExternalKeyId::path_segment`, and
/// nothing on the way normalises them. `.` and `..` cannot even be named.
#[actix_web::test]
async fn ids_with_dots_travel_as_they_are() {
    let ekm = ekm();
    let n = std::process::id();
    for id in [
        format!("...{n}"),
        format!(".{n}"),
        format!("{n}."),
        "...".to_owned(),
    ] {
        let id = ExternalKeyId::parse(&id).unwrap();
        let created = ekm
            .client
            .create_key(
                &ctx(),
                ekm::CreateKey {
                    id: Some(id.clone()),
                    usage: ekm::KeyUsage::BOTH,
                    description: None,
                },
            )
            .await;
        // "..." may exist from an earlier run on this process's token: either way it is ours.
        match created {
            Ok(info) => assert_eq!(info.id, id),
            Err(ekm::Error::KeyAlreadyExists(other)) => assert_eq!(other, id.as_str()),
            Err(e) => panic!("{id}: {e}"),
        }
        assert_eq!(ekm.client.describe_key(&ctx(), &id).await.unwrap().id, id);
        let sealed = ekm
            .client
            .encrypt(
                &ctx(),
                &id,
                ekm::EncryptRequest {
                    plaintext: zeroize::Zeroizing::new(b"dots".to_vec()),
                    aad: Vec::new(),
                    want_cdiv: true,
                },
            )
            .await
            .unwrap();
        let opened = ekm
            .client
            .decrypt(
                &ctx(),
                &id,
                ekm::DecryptRequest {
                    ciphertext: sealed.ciphertext,
                    iv: sealed.iv,
                    tag: sealed.tag,
                    ciphertext_metadata: sealed.ciphertext_metadata,
                    aad: Vec::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(&*opened, b"dots");
    }
    for dot in [".", ".."] {
        assert!(ExternalKeyId::parse(dot).is_err(), "{dot}");
    }
}

/// `…/keys/../encrypt` and friends, sent as written (no client normalisation), are a
/// ValidationException at the proxy, with a remote EKM behind it. (`..` used to reach the EKM
/// as `POST /v1/encrypt` and come back as a 500 InternalException.)
#[actix_web::test]
async fn dot_segment_key_ids_are_validation_exceptions() {
    let ekm = ekm();
    let proxy = Proxy::start_serving(Setup::new(), Arc::new(ekm.client)).await;
    let client = proxy.client("");
    for id in [".", "..", "%2E", "%2e%2E", ".%2E"] {
        for (op, body) in [
            ("metadata", metadata_body()),
            ("encrypt", encrypt_body(b"x", None, false)),
            ("decrypt", encrypt_body(b"x", None, false)),
        ] {
            let target = client.path(&format!("/keys/{id}/{op}"));
            let body = serde_json::to_vec(&body).unwrap();
            let mut headers = vec![
                ("Host".to_owned(), client.authority()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ];
            headers.extend(client.sign("POST", &target, &body));
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
            response.reply().error(400, "ValidationException");
        }
    }
    // The admin API refuses to create them (a key named `..` could never be used).
    for id in [".", ".."] {
        let response = reqwest::Client::new()
            .post(proxy.admin_url("/admin/keys"))
            .bearer_auth(&proxy.admin_token)
            .json(&serde_json::json!({"externalKeyId": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{id}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "ValidationException", "{id}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(". or .."),
            "{body}"
        );
    }
    // Nor does the EKM behind it hold one.
    let keys = proxy.backend.list_keys(&ctx()).await.unwrap();
    assert!(
        keys.iter().all(|k| !matches!(k.id.as_str(), "." | "..")),
        "{keys:?}"
    );
}
