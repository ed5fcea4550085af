//! The OpenAPI server's listener (`[server.limits]`): slow bodies are cut off at their deadline
//! while normal clients are served, connections past the cap get a clean overload answer,
//! refusals (body too large or too slow, broken framing) come in Alibaba's error shape, and the
//! TLS listener advertises its HTTP/2 limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use harness::{Setup, TestApp};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn app(limits: &str) -> TestApp {
    TestApp::start_with(Setup {
        extra_toml: format!("\n[server.limits]\n{limits}"),
        ..Setup::default()
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, app.port)))
        .await
        .unwrap()
}

/// Reads one HTTP/1.1 response framed by `Content-Length`: status, headers, JSON body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Value) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body =
                    serde_json::from_slice(&data[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return (status, head, body);
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&chunk[..n]);
    }
}

/// An error in Alibaba's shape: `{"HttpStatus","Code","Message","RequestId"}`, the status
/// repeated in the body and the request id in `x-acs-request-id` too.
fn assert_alibaba_error(status: u16, head: &str, body: &Value, expected: (u16, &str)) {
    assert_eq!(
        (status, body["Code"].as_str()),
        (expected.0, Some(expected.1)),
        "{body}"
    );
    assert_eq!(
        body["HttpStatus"].as_u64(),
        Some(u64::from(expected.0)),
        "{body}"
    );
    let id = body["RequestId"].as_str().unwrap();
    assert!(
        !id.is_empty() && !body["Message"].as_str().unwrap().is_empty(),
        "{body}"
    );
    assert!(
        head.contains(&format!("x-acs-request-id: {}", id.to_ascii_lowercase())),
        "{head}"
    );
}

/// Clients trickling their body (one byte, then nothing) are cut off at the body deadline with
/// an Alibaba error, while a normal signed request is served meanwhile. (Before, such a body
/// stayed open as long as it trickled: ~20,000 of them exhausted file descriptors.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_and_do_not_stop_a_normal_client() {
    let app = app("body_timeout_ms = 2000\n").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&app).await;
        stream
            .write_all(
                b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                  Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nA",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    app.root().ok("ListKeys", &[]).await;
    let answers = tokio::time::timeout(Duration::from_secs(60), async {
        let mut answers = Vec::new();
        for stream in &mut slow {
            answers.push(read_response(stream).await);
        }
        answers
    })
    .await
    .expect("every slow client got an answer");
    for (status, head, body) in answers {
        assert_alibaba_error(status, &head, &body, (408, "InvalidParameter"));
    }
    app.root().ok("ListKeys", &[]).await;
}

/// Past `max_connections`, a connection gets a clean, retryable 503
/// `ServiceUnavailableTemporary` and is closed; once connections close, new ones are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_an_overload_answer() {
    let app = app("max_connections = 20\nheader_timeout_ms = 30000\n").await;
    // Twenty connections that start a request and never finish its head (one worker takes
    // connections in order, so these hold the twenty slots).
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    let mut refused = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        let (status, head, body) =
            tokio::time::timeout(Duration::from_secs(20), read_response(&mut stream))
                .await
                .expect("an overload answer, not a hang");
        assert_alibaba_error(status, &head, &body, (503, "ServiceUnavailableTemporary"));
        assert!(head.contains("connection: close"), "{head}");
        refused.push(stream);
    }
    drop(held);
    // Once the server has seen them close, a connection is served again (an unsigned request
    // gets the OpenAPI's own refusal, not the overload answer).
    let served = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut stream = connect(&app).await;
            let sent = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await;
            if sent.is_ok() && read_response(&mut stream).await.0 != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(served.is_ok(), "served again once connections closed");
    app.root().ok("ListKeys", &[]).await;
}

/// A body over the cap (256 KiB) and a body whose chunked framing is broken are refused in
/// Alibaba's shape (they used to get actix's plain-text answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_refusals_are_alibaba_errors() {
    let app = app("").await;
    let mut stream = connect(&app).await;
    let body = vec![b'a'; 300 * 1024];
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The whole body goes out (the server reads and throws away what is past the cap).
    let (mut reader, mut writer) = stream.split();
    let (sent, answer) = tokio::join!(writer.write_all(&body), async {
        let mut data = Vec::new();
        let mut chunk = [0u8; 8192];
        while !data.windows(4).any(|w| w == b"\r\n\r\n") || !data.ends_with(b"}") {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&chunk[..n]);
        }
        data
    });
    sent.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, json) = text.split_once("\r\n\r\n").unwrap();
    let json: Value = serde_json::from_str(json).unwrap();
    assert_alibaba_error(
        head[9..12].parse().unwrap(),
        &head.to_ascii_lowercase(),
        &json,
        (413, "InvalidParameter"),
    );

    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nAction\r\nzz\r\n",
        )
        .await
        .unwrap();
    let (status, head, body) =
        tokio::time::timeout(Duration::from_secs(20), read_response(&mut stream))
            .await
            .expect("answered");
    assert_alibaba_error(
        status,
        &head,
        &body,
        (400, "ParseRequestParameterException"),
    );
}

/// The TLS listener speaks HTTP/2 and advertises its limits (streams per connection, header
/// list size) in SETTINGS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_advertises_its_http2_limits() {
    let app = TestApp::start_with(Setup {
        tls: true,
        extra_toml: "\n[server.limits]\nmax_concurrent_streams = 24\nmax_header_bytes = 8192\n"
            .into(),
        ..Setup::default()
    })
    .await;
    let port = app.tls_port.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut app.ca_pem.as_deref().unwrap().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and empty SETTINGS; the server's first frame is its SETTINGS.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut head = [0u8; 9];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], 0x4, "a SETTINGS frame");
    let mut payload = vec![0u8; usize::from(head[1]) << 8 | usize::from(head[2])];
    tls.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) and SETTINGS_MAX_HEADER_LIST_SIZE (6).
    assert!(settings.contains(&(0x3, 24)), "{settings:?}");
    assert!(settings.contains(&(0x6, 8192)), "{settings:?}");
}
