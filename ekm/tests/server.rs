//! The EKM server over real TLS (mTLS, dev PKI from the `certs` crate) in front of a real
//! SoftHSM token: the API, its errors, fault injection, confinement of key bytes, concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{config, new_token, pkcs11};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use ekm::fault::{Fault, FaultInjecting};
use ekm::pkcs11::{Pkcs11KeyManager, TokenSelector, find_token};
use ekm::server::{Application, ServerSettings, tls};
use ekm::{Error, KeyManager};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Pki {
    ca: certs::Authority,
    client: certs::CertifiedKey,
}

struct Running {
    port: u16,
    liveness_port: u16,
    pki: Pki,
}

fn pki_and_tls() -> (Pki, rustls::ServerConfig) {
    let ca = certs::Authority::new("ekm test CA").unwrap();
    let server = ca
        .issue_server("localhost", &["localhost"], &[LOCALHOST])
        .unwrap();
    let client = ca.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let tls = tls::server_config(
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
        Some(ca.cert_pem().as_bytes()),
        &["XKI-Proxy".to_owned(), "backup-proxy".to_owned()],
    )
    .unwrap();
    (Pki { ca, client }, tls)
}

fn start(manager: Arc<dyn KeyManager>) -> Running {
    let (pki, tls) = pki_and_tls();
    let settings = ServerSettings {
        listen: SocketAddr::new(LOCALHOST, 0),
        liveness_listen: Some(SocketAddr::new(LOCALHOST, 0)),
        ..ServerSettings::default()
    };
    let app = Application::build(settings, tls, manager).unwrap();
    let (port, liveness_port) = (app.port(), app.liveness_port().unwrap());
    actix_web::rt::spawn(app.run_until_stopped());
    Running {
        port,
        liveness_port,
        pki,
    }
}

fn client_config(roots_pem: &str, identity: Option<&certs::CertifiedKey>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(roots_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der().unwrap()], id.key_der().unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

fn client(running: &Running) -> awc::Client {
    client_with(running, Some(&running.pki.client))
}

fn client_with(running: &Running, identity: Option<&certs::CertifiedKey>) -> awc::Client {
    let tls = client_config(running.pki.ca.cert_pem(), identity);
    awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(tls)))
        .timeout(Duration::from_secs(10))
        .finish()
}

/// POSTs (or GETs when `body` is `None`) and returns status and JSON body.
async fn call(
    c: &awc::Client,
    r: &Running,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = format!("https://localhost:{}{path}", r.port);
    let mut req = match body {
        Some(_) => c.post(&url),
        None => c.get(&url),
    };
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = match body {
        Some(b) => req.send_json(&b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let status = resp.status().as_u16();
    let bytes = resp.body().await.unwrap();
    RESPONSES.lock().unwrap().extend_from_slice(&bytes);
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Every response body seen by this test binary (scanned for key bytes).
static RESPONSES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn b64(bytes: &[u8]) -> String {
    schemas::b64::encode(bytes)
}

async fn pkcs11_manager(tag: &str) -> (common::TestToken, Pkcs11KeyManager) {
    let token = new_token(tag);
    let m = Pkcs11KeyManager::open(config(&token)).await.unwrap();
    (token, m)
}

#[actix_web::test]
async fn api_over_mtls() {
    logs(); // capture logs for the whole binary
    let (_token, m) = pkcs11_manager("api").await;
    let r = start(Arc::new(m));
    let c = client(&r);
    let (s, key) = call(
        &c,
        &r,
        "/v1/keys",
        Some(json!({"usage": ["ENCRYPT", "DECRYPT"], "description": "api"})),
        &[],
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let id = key["externalKeyId"].as_str().unwrap().to_owned();
    assert_eq!(key["keySpec"], "AES_256");
    assert_eq!(key["state"], "ENABLED");
    assert_eq!(key["usage"], json!(["ENCRYPT", "DECRYPT"]));
    let enc_body = json!({"plaintext": b64(b"top secret"), "additionalAuthenticatedData": b64(b"ctx"), "wantCdiv": true});
    let (s, enc) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/encrypt"),
        Some(enc_body.clone()),
        &[("x-request-id", "req-123")],
    )
    .await;
    assert_eq!(s, 200, "{enc}");
    assert_eq!(enc["keyVersion"], 1);
    let dec_body = json!({
        "ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"],
        "authenticationTag": enc["authenticationTag"], "ciphertextMetadata": enc["ciphertextMetadata"],
        "additionalAuthenticatedData": b64(b"ctx"),
    });
    let (s, dec) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/decrypt"),
        Some(dec_body.clone()),
        &[],
    )
    .await;
    assert_eq!(
        (s, dec["plaintext"].as_str()),
        (200, Some(b64(b"top secret").as_str()))
    );
    // CDIV recomputed from the response.
    let field = |k: &str| schemas::b64::decode(enc[k].as_str().unwrap()).unwrap();
    let cdiv = schemas::xki::aad::cdiv(
        b"ctx",
        &field("ciphertextMetadata"),
        &field("initializationVector"),
        &field("ciphertext"),
        &field("authenticationTag"),
    );
    assert_eq!(enc["ciphertextDataIntegrityValue"], b64(&cdiv));
    // Request id echoed.
    let resp = c
        .get(format!("https://localhost:{}/v1/keys/{id}", r.port))
        .insert_header(("x-request-id", "abc-42"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "abc-42");
    // Errors, each with its code and status.
    let mut tampered = dec_body.clone();
    tampered["authenticationTag"] = json!(b64(&[0u8; 16]));
    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        ("decrypt", Some(tampered), 400, "InvalidCiphertext"),
        (
            "encrypt",
            Some(json!({"plaintext": "not base64!"})),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            Some(json!({"plaintext": "aGVsbG8"})),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            Some(json!({"nothing": 1})),
            400,
            "ValidationError",
        ),
        (
            "encrypt",
            Some(json!({"plaintext": b64(&vec![0; 7000])})),
            400,
            "ValidationError",
        ),
        ("schedule-deletion", Some(json!({})), 409, "InvalidKeyState"),
        ("encrypt", None, 405, "MethodNotAllowed"),
    ];
    for (op, body, status, code) in cases {
        let (s, e) = call(&c, &r, &format!("/v1/keys/{id}/{op}"), body, &[]).await;
        assert_eq!((s, e["error"].as_str()), (status, Some(code)), "{op}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (s, e) = call(
        &c,
        &r,
        "/v1/keys/ghost/encrypt",
        Some(enc_body.clone()),
        &[],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (404, Some("KeyNotFound")));
    let (s, e) = call(&c, &r, "/v1/keys/bad%20id", None, &[]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("ValidationError")));
    let (s, e) = call(&c, &r, "/v2/nothing", None, &[]).await;
    assert_eq!((s, e["error"].as_str()), (404, Some("UnknownPath")));
    let (s, e) = call(&c, &r, "/v1/health", None, &[("x-ekm-deadline-ms", "soon")]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("ValidationError")));
    let big = json!({"plaintext": "A".repeat(70_000)});
    let (s, e) = call(&c, &r, &format!("/v1/keys/{id}/encrypt"), Some(big), &[]).await;
    assert_eq!((s, e["error"].as_str()), (413, Some("PayloadTooLarge")));
    // Lifecycle through the API.
    let (s, k) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/rotate"),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!((s, k["currentVersion"].as_u64()), (200, Some(2)));
    let (s, _) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/decrypt"),
        Some(dec_body.clone()),
        &[],
    )
    .await;
    assert_eq!(s, 200, "version 1 still decrypts after rotation");
    let (s, k) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/disable"),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!((s, k["state"].as_str()), (200, Some("DISABLED")));
    let (s, e) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/encrypt"),
        Some(enc_body),
        &[],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("KeyDisabled")));
    let (s, k) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/schedule-deletion"),
        Some(json!({"pendingWindowDays": 7})),
        &[],
    )
    .await;
    assert_eq!(
        (s, k["state"].as_str()),
        (200, Some("PENDING_DELETION")),
        "{k}"
    );
    assert!(k["deletionDate"].as_str().is_some());
    let (s, e) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/decrypt"),
        Some(dec_body),
        &[],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("KeyPendingDeletion")));
    let (s, k) = call(
        &c,
        &r,
        &format!("/v1/keys/{id}/cancel-deletion"),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!((s, k["state"].as_str()), (200, Some("DISABLED")));
    let (s, list) = call(&c, &r, "/v1/keys", None, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(list["keys"].as_array().unwrap().len(), 1);
    // Usage enforcement over the wire.
    let (_, enc_only) = call(
        &c,
        &r,
        "/v1/keys",
        Some(json!({"externalKeyId": "enc-only", "usage": ["ENCRYPT"]})),
        &[],
    )
    .await;
    assert_eq!(enc_only["usage"], json!(["ENCRYPT"]));
    let (s, e) = call(&c, &r, "/v1/keys/enc-only/decrypt", Some(json!({
        "ciphertext": "", "initializationVector": b64(&[0; 12]), "authenticationTag": b64(&[0; 16]),
        "ciphertextMetadata": b64(&[1, 0, 0, 0, 1]),
    })), &[]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (403, Some("KeyUsageNotPermitted"))
    );
    // Health on the API port, liveness on the plain port.
    let (s, h) = call(&c, &r, "/v1/health", None, &[]).await;
    // DEGRADED is the design's answer to a probe slowed by a busy machine, not a fault.
    assert!(
        s == 200 && matches!(h["status"].as_str(), Some("ACTIVE" | "DEGRADED")),
        "{s} {h}"
    );
    let plain = awc::Client::default();
    let resp = plain
        .get(format!("http://127.0.0.1:{}/ping", r.liveness_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = plain
        .get(format!("http://127.0.0.1:{}/ready", r.liveness_port))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = plain
        .get(format!("http://127.0.0.1:{}/v1/keys", r.liveness_port))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "the API is not on the plain port"
    );
}

#[actix_web::test]
async fn mtls_is_required() {
    let (_token, m) = pkcs11_manager("mtls").await;
    let r = start(Arc::new(m));
    let url = format!("https://localhost:{}/v1/health", r.port);
    assert!(client(&r).get(&url).send().await.is_ok());
    let other_ca = certs::Authority::new("other CA").unwrap();
    let foreign = other_ca.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let self_signed =
        certs::self_signed(&certs::LeafSpec::client("xki-proxy", &["xki-proxy"])).unwrap();
    // Same CA, a name not in `allowed_client_names` (the kms-connector's, say).
    let other_service = r
        .pki
        .ca
        .issue_client("kms-connector", &["kms-connector"])
        .unwrap();
    // Allowed by its DNS SAN alone.
    let by_san = r.pki.ca.issue_client("standby", &["backup-proxy"]).unwrap();
    let url_ok = url.clone();
    let resp = client_with(&r, Some(&by_san)).get(&url_ok).send().await;
    assert_eq!(resp.map(|r| r.status().as_u16()).ok(), Some(200), "SAN");
    for (what, identity) in [
        ("no client certificate", None),
        ("other CA", Some(&foreign)),
        ("self-signed", Some(&self_signed)),
        ("same CA, name not allowed", Some(&other_service)),
    ] {
        let result = client_with(&r, identity).get(&url).send().await;
        match result {
            Err(_) => {}
            Ok(resp) => panic!("{what}: got HTTP {}", resp.status()),
        }
    }
}

#[actix_web::test]
async fn faults_throttle_and_deadline_end_to_end_then_recover() {
    let (_token, m) = pkcs11_manager("fault").await;
    let faulty = Arc::new(FaultInjecting::new(Arc::new(m)));
    let r = start(Arc::clone(&faulty) as Arc<dyn KeyManager>);
    let c = client(&r);
    let (_, key) = call(
        &c,
        &r,
        "/v1/keys",
        Some(json!({"usage": ["ENCRYPT", "DECRYPT"]})),
        &[],
    )
    .await;
    let path = format!(
        "/v1/keys/{}/encrypt",
        key["externalKeyId"].as_str().unwrap()
    );
    let body = json!({"plaintext": b64(b"x")});
    let (s, _) = call(&c, &r, &path, Some(body.clone()), &[]).await;
    assert_eq!(s, 200);

    faulty.set(Fault::Fail(Error::Throttled));
    let (s, e) = call(&c, &r, &path, Some(body.clone()), &[]).await;
    assert_eq!((s, e["error"].as_str()), (429, Some("Throttled")));

    faulty.set(Fault::Delay(Duration::from_secs(2)));
    let started = Instant::now();
    let (s, e) = call(
        &c,
        &r,
        &path,
        Some(body.clone()),
        &[("x-ekm-deadline-ms", "150")],
    )
    .await;
    let took = started.elapsed();
    assert_eq!((s, e["error"].as_str()), (503, Some("DeadlineExceeded")));
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(1),
        "{took:?}"
    );

    faulty.set(Fault::Fail(Error::HsmUnavailable(
        "CKR_DEVICE_ERROR on slot 3".into(),
    )));
    let (s, e) = call(&c, &r, &path, Some(body.clone()), &[]).await;
    assert_eq!((s, e["error"].as_str()), (503, Some("HsmUnavailable")));
    assert!(
        !e["message"].as_str().unwrap().contains("slot"),
        "details stay in the logs"
    );
    let (s, h) = call(&c, &r, "/v1/health", None, &[]).await;
    assert_eq!((s, h["error"].as_str()), (503, Some("HsmUnavailable")));

    faulty.set(Fault::None);
    let (s, _) = call(&c, &r, &path, Some(body.clone()), &[]).await;
    assert_eq!(s, 200, "recovers when the fault stops");
    // The real queue: a deadline already spent never reaches the HSM.
    let (s, e) = call(&c, &r, &path, Some(body), &[("x-ekm-deadline-ms", "0")]).await;
    assert_eq!((s, e["error"].as_str()), (503, Some("DeadlineExceeded")));
}

#[actix_web::test]
async fn key_bytes_never_in_responses_or_logs() {
    let logs = logs();
    let (token, m) = pkcs11_manager("leak").await;
    // A key whose bytes the test knows, created by "another tool", then adopted.
    let known: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let p = pkcs11();
    let slot = find_token(&p, &TokenSelector::Label(token.label.clone())).unwrap();
    let session = p.open_rw_session(slot).unwrap();
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(known.clone()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(b"imported-known".to_vec()),
        ])
        .unwrap();
    let r = start(Arc::new(m));
    let c = client(&r);
    let (s, k) = call(
        &c,
        &r,
        "/v1/keys/known/adopt",
        Some(json!({"hsmLabel": "imported-known", "usage": ["ENCRYPT", "DECRYPT"]})),
        &[],
    )
    .await;
    assert_eq!((s, k["origin"].as_str()), (201, Some("ADOPTED")), "{k}");
    let secret_plaintext = b"PLAINTEXT-MARKER-9f8e7d";
    let secret_aad = b"AAD-MARKER-1a2b3c";
    for _ in 0..3 {
        let (s, enc) = call(&c, &r, "/v1/keys/known/encrypt", Some(json!({
            "plaintext": b64(secret_plaintext), "additionalAuthenticatedData": b64(secret_aad), "wantCdiv": true
        })), &[]).await;
        assert_eq!(s, 200);
        let (s, _) = call(&c, &r, "/v1/keys/known/decrypt", Some(json!({
            "ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"],
            "authenticationTag": enc["authenticationTag"], "ciphertextMetadata": enc["ciphertextMetadata"],
            "additionalAuthenticatedData": b64(secret_aad),
        })), &[]).await;
        assert_eq!(s, 200);
    }
    call(&c, &r, "/v1/keys/known", None, &[]).await;
    call(&c, &r, "/v1/keys", None, &[]).await;
    call(&c, &r, "/v1/health", None, &[]).await;
    let hex: String = known.iter().map(|b| format!("{b:02x}")).collect();
    let needles: Vec<Vec<u8>> = vec![
        known.clone(),
        hex.into_bytes(),
        b64(&known).into_bytes(),
        known[..16].to_vec(),
    ];
    let responses = RESPONSES.lock().unwrap().clone();
    let logged = logs.lock().unwrap().clone();
    assert!(!logged.is_empty(), "logs were captured");
    assert!(
        String::from_utf8_lossy(&logged).contains("\"op\":\"encrypt\""),
        "request lines logged"
    );
    for needle in &needles {
        assert!(!contains(&responses, needle), "key bytes in a response");
        assert!(!contains(&logged, needle), "key bytes in the logs");
    }
    for secret in [
        &secret_plaintext[..],
        secret_aad,
        b64(secret_plaintext).as_bytes(),
        b64(secret_aad).as_bytes(),
    ] {
        assert!(!contains(&logged, secret), "plaintext or AAD in the logs");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this binary's logs (JSON, debug level) into one buffer.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
    .clone()
}

#[actix_web::test]
async fn sixty_four_concurrent_tls_clients() {
    let (_token, m) = pkcs11_manager("tlsload").await;
    let r = start(Arc::new(m));
    let c = client(&r);
    let (_, key) = call(
        &c,
        &r,
        "/v1/keys",
        Some(json!({"usage": ["ENCRYPT", "DECRYPT"]})),
        &[],
    )
    .await;
    let id = key["externalKeyId"].as_str().unwrap().to_owned();
    let stop = Instant::now() + Duration::from_secs(2);
    let tasks = (0..64).map(|n: u32| {
        let (c, id, r) = (c.clone(), id.clone(), &r);
        async move {
            let mut done = 0u32;
            while Instant::now() < stop {
                let text = format!("client {n} #{done}");
                let (s, enc) = call(&c, r, &format!("/v1/keys/{id}/encrypt"), Some(json!({"plaintext": b64(text.as_bytes()), "additionalAuthenticatedData": b64(&n.to_be_bytes())})), &[("x-ekm-deadline-ms", "5000")]).await;
                assert_eq!(s, 200, "{enc}");
                let (s, dec) = call(&c, r, &format!("/v1/keys/{id}/decrypt"), Some(json!({
                    "ciphertext": enc["ciphertext"], "initializationVector": enc["initializationVector"],
                    "authenticationTag": enc["authenticationTag"], "ciphertextMetadata": enc["ciphertextMetadata"],
                    "additionalAuthenticatedData": b64(&n.to_be_bytes()),
                })), &[("x-ekm-deadline-ms", "5000")]).await;
                assert_eq!((s, dec["plaintext"].as_str()), (200, Some(b64(text.as_bytes()).as_str())));
                done += 1;
            }
            done
        }
    });
    let counts = tokio::time::timeout(Duration::from_secs(30), join_all(tasks))
        .await
        .expect("no deadlock");
    assert!(counts.iter().all(|n| *n > 0), "{counts:?}");
}

/// Polls every future concurrently on the current task (the clients borrow the server handle,
/// so they cannot be spawned).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *output = Some(v),
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// Requests refused before any handler ran (unknown path, wrong method, a body the JSON
/// extractor refuses) get an `x-request-id` and a log line like every other request.
#[actix_web::test]
async fn refused_requests_are_logged_with_an_id() {
    let logs = logs();
    let (_token, m) = pkcs11_manager("refused").await;
    let r = start(Arc::new(m));
    let c = client(&r);
    let base = format!("https://localhost:{}", r.port);
    let big = vec![b'a'; 2 * 1024 * 1024];
    let cases: Vec<(&str, awc::ClientRequest, Option<Vec<u8>>, u16)> = vec![
        (
            "unknown path",
            c.get(format!("{base}/v2/nothing")),
            None,
            404,
        ),
        (
            "wrong method",
            c.delete(format!("{base}/v1/keys")),
            None,
            405,
        ),
        (
            "malformed JSON",
            c.post(format!("{base}/v1/keys/k/encrypt"))
                .insert_header(("content-type", "application/json")),
            Some(b"{not json".to_vec()),
            400,
        ),
        (
            "body too large",
            c.post(format!("{base}/v1/keys/k/encrypt"))
                .insert_header(("content-type", "application/json")),
            Some(big),
            413,
        ),
    ];
    for (what, request, body, status) in cases {
        let response = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        }
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(response.status().as_u16(), status, "{what}");
        let id = response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no x-request-id"))
            .to_str()
            .unwrap()
            .to_owned();
        let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        let line = logged
            .lines()
            .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
            .unwrap_or_else(|| panic!("{what}: no log line for {id}"));
        assert!(
            line.contains(&format!("\"status\":{status}")),
            "{what}: {line}"
        );
    }
    // A caller's plain id is kept.
    let response = c
        .get(format!("{base}/v2/nothing"))
        .insert_header(("x-request-id", "caller-id-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "caller-id-1"
    );
}

/// `/metrics` on the liveness port: per-operation latency, HSM time, errors by code (requests
/// refused before a handler included), the queue and the health state; no key ids.
#[actix_web::test]
async fn metrics_on_the_liveness_port() {
    let (_token, m) = pkcs11_manager("metrics").await;
    let r = start(Arc::new(m));
    let c = client(&r);
    let (status, key) = call(
        &c,
        &r,
        "/v1/keys",
        Some(json!({"usage": ["ENCRYPT", "DECRYPT"]})),
        &[],
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = key["externalKeyId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let (status, _) = call(
            &c,
            &r,
            &format!("/v1/keys/{key}/encrypt"),
            Some(json!({"plaintext": b64(b"metrics"), "additionalAuthenticatedData": ""})),
            &[],
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _) = call(&c, &r, "/v1/keys/no-such-key", None, &[]).await;
    assert_eq!(status, 404);
    let (status, _) = call(&c, &r, "/v2/nothing", None, &[]).await;
    assert_eq!(status, 404);
    let text = awc::Client::default()
        .get(format!("http://127.0.0.1:{}/metrics", r.liveness_port))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    for expected in [
        "ekm_request_duration_seconds_count{op=\"encrypt\"} 3",
        "ekm_hsm_duration_seconds_count{op=\"encrypt\"} 3",
        "ekm_errors_total{op=\"describe-key\",error=\"KeyNotFound\"} 1",
        "ekm_errors_total{op=\"refused\",error=\"UnknownPath\"} 1",
        "ekm_hsm_queue_capacity 256",
        "ekm_health 2",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains(&key), "no key ids in metrics");
}
