//! The EKM's HTTP edges over real TLS (dev PKI from `certs`), in front of the in-memory key
//! manager: ALPN offers what the TLS configuration names, a refused client certificate gets
//! its alert under TLS 1.3 (curl), a body that does not arrive in time is cut off with the
//! EKM's own error, and the dot segments `.` and `..` are refused as key ids wherever an id
//! can be written (JSON, path, percent-encoded path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ekm::KeyManager;
use ekm::memory::MemoryKeyManager;
use ekm::server::{Application, ServerSettings, tls};
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

struct Running {
    port: u16,
    ca: certs::Authority,
    client: certs::CertifiedKey,
    dir: tempfile::TempDir,
}

fn start(limits: listener::Limits) -> Running {
    let ca = certs::Authority::new("ekm listener test CA").unwrap();
    let server = ca
        .issue_server("localhost", &["localhost"], &[LOCALHOST])
        .unwrap();
    let client = ca.issue_client("xki-proxy", &["xki-proxy"]).unwrap();
    let tls = tls::server_config(
        server.cert_pem.as_bytes(),
        server.key_pem.as_bytes(),
        Some(ca.cert_pem().as_bytes()),
        &["xki-proxy".to_owned()],
    )
    .unwrap();
    let settings = ServerSettings {
        listen: SocketAddr::new(LOCALHOST, 0),
        liveness_listen: None,
        limits,
        ..ServerSettings::default()
    };
    let manager: Arc<dyn KeyManager> = Arc::new(MemoryKeyManager::new());
    let app = Application::build(settings, tls, manager).unwrap();
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    Running {
        port,
        ca,
        client,
        dir,
    }
}

fn client_config(
    r: &Running,
    identity: &certs::CertifiedKey,
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(r.ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![identity.cert_der().unwrap()],
        identity.key_der().unwrap(),
    )
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn connect(
    r: &Running,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(SocketAddr::new(LOCALHOST, r.port)).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `server_config` names `http/1.1` only, and that is what the EKM offers: a client offering
/// `h2` first gets HTTP/1.1, a client offering only `h2` is refused. (actix's acceptor used to
/// put `h2` in front of whatever the configuration said.)
#[actix_web::test]
async fn alpn_offers_exactly_what_the_configuration_names() {
    let r = start(listener::Limits::default());
    let both = client_config(&r, &r.client, &[b"h2", b"http/1.1"]);
    let conn = connect(&r, both).await.unwrap();
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let h2_only = client_config(&r, &r.client, &[b"h2"]);
    let refused = match connect(&r, h2_only).await {
        Ok(mut conn) => {
            // TLS 1.3: the alert may come with the first read.
            let mut byte = [0u8; 1];
            conn.read(&mut byte).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    assert!(refused.is_err(), "an h2-only client was served");
}

/// A client certificate the EKM refuses (another CA, a name not allowed) ends the handshake
/// with an alert that curl, writing its request right after its TLS 1.3 `Finished`, still
/// reads: 20 tries each, 20 alerts. (The EKM used to close with the request unread, and the
/// reset destroyed the alert.)
#[actix_web::test]
async fn a_refused_client_certificate_gets_its_alert_under_tls13() {
    let r = start(listener::Limits::default());
    let other_ca = certs::Authority::new("other CA").unwrap();
    let refused = [
        (
            "other-ca",
            other_ca.issue_client("xki-proxy", &["xki-proxy"]).unwrap(),
        ),
        (
            "name-not-allowed",
            r.ca.issue_client("kms-connector", &["kms-connector"])
                .unwrap(),
        ),
    ];
    // curl runs off this thread: the server's workers are started by this runtime.
    let run = |identity: &certs::CertifiedKey, name: &str| {
        let cert = r.dir.path().join(format!("{name}.pem"));
        let key = r.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &identity.cert_pem).unwrap();
        std::fs::write(&key, &identity.key_pem).unwrap();
        let (ca, port) = (r.dir.path().join("ca.pem"), r.port);
        tokio::task::spawn_blocking(move || {
            Command::new("curl")
                .args(["--silent", "--show-error", "--max-time", "20"])
                .args(["--tlsv1.3", "--tls-max", "1.3"])
                .arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-H", "Content-Type: application/json", "-d", "{}"])
                .arg(format!("https://localhost:{port}/v1/keys"))
                .output()
                .expect("curl is installed (scripts/deps.sh)")
        })
    };
    for (name, identity) in &refused {
        let mut without_alert = Vec::new();
        for _ in 0..20 {
            let output = run(identity, name).await.unwrap();
            assert!(
                !output.status.success(),
                "{name}: TLS let a request through"
            );
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            if !stderr.contains("alert") {
                without_alert.push(stderr);
            }
        }
        assert!(
            without_alert.is_empty(),
            "{name}: {} of 20 saw no alert: {without_alert:?}",
            without_alert.len()
        );
    }
    let output = run(&r.client, "allowed").await.unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// A body trickled slower than `body_timeout` is cut off with the EKM's own error (400
/// `ValidationError`), and the connection is free again for the next request.
#[actix_web::test]
async fn a_body_slower_than_its_deadline_is_refused() {
    let limits = listener::Limits {
        body_timeout: Duration::from_millis(500),
        ..listener::Limits::default()
    };
    let r = start(limits);
    let config = client_config(&r, &r.client, &[b"http/1.1"]);
    let conn = connect(&r, config).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(conn);
    writer
        .write_all(
            b"POST /v1/keys HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 64\r\n\r\n{",
        )
        .await
        .unwrap();
    // One byte every half second: the declared 64 bytes would take half a minute.
    let trickle = actix_web::rt::spawn(async move {
        for _ in 0..62 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        while !(answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}")) {
            let n = reader.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the slow body was answered");
    trickle.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"error\":\"ValidationError\""), "{text}");
    assert!(text.contains("x-request-id"), "{text}");
}

async fn exchange(r: &Running, request: &[u8]) -> String {
    let config = client_config(r, &r.client, &[b"http/1.1"]);
    let mut conn = connect(r, config).await.unwrap();
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer))
        .await
        .expect("answered")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// `.` and `..` as key ids: refused with `ValidationError` when creating (they could never be
/// used: clients normalise them out of URLs) and when they arrive in a path, as written or
/// percent-encoded. (Before, `..` was a key the admin API created, and a raw `..` in a path was
/// looked up as a key.)
#[actix_web::test]
async fn dot_segment_key_ids_are_validation_errors() {
    let r = start(listener::Limits::default());
    for id in [".", ".."] {
        let body = format!("{{\"externalKeyId\":\"{id}\"}}");
        let text = exchange(
            &r,
            format!(
                "POST /v1/keys HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 400"), "{id}: {text}");
        assert!(text.contains("ValidationError"), "{id}: {text}");
    }
    for path in [
        "/v1/keys/..",
        "/v1/keys/.",
        "/v1/keys/%2E%2E",
        "/v1/keys/../encrypt",
        "/v1/keys/%2e/disable",
    ] {
        let method = if path.matches('/').count() > 3 {
            "POST"
        } else {
            "GET"
        };
        let text = exchange(
            &r,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 400"), "{method} {path}: {text}");
        assert!(text.contains("ValidationError"), "{path}: {text}");
    }
}
