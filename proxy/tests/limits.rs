//! What one client may hold of the KMS-facing listener (`[server.limits]`): a body within its
//! deadline, a connection slot (the next one gets a clean overload answer), HTTP/2 streams
//! (advertised and enforced), header bytes (both protocols). Slow or greedy clients do not
//! stop a normal one from being served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::client::health_body;
use common::h2raw::{self, H2};
use common::raw::{Conn, TlsOptions, client_config, http1_request};
use common::{HOST, Proxy, Setup, curl, eventually};

fn setup(server_limits: &str) -> Setup {
    let mut setup = Setup::new();
    setup.server_limits = server_limits.into();
    setup
}

async fn connect(proxy: &Proxy) -> Conn {
    Conn::connect(
        proxy.port,
        client_config(proxy.ca.cert_pem(), None, &TlsOptions::default()),
    )
    .await
    .unwrap()
}

/// The head of a health request announcing `length` body bytes, signed for that body when
/// `signed_for` is given.
fn slow_head(proxy: &Proxy, length: usize, signed_for: Option<&[u8]>) -> Vec<u8> {
    let client = proxy.client("");
    let target = client.path("/health");
    let mut headers = vec![
        ("Host".to_owned(), client.authority()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("Content-Length".to_owned(), length.to_string()),
    ];
    if let Some(body) = signed_for {
        headers.extend(client.sign("POST", &target, body));
    }
    http1_request("POST", &target, &headers, &[])
}

/// Clients that send a head and then trickle their body (signed ones and unsigned ones) are cut
/// off at the body deadline with an answer (408, or the unsigned one's 401), while a normal
/// client is served meanwhile. (Before, such a body was held open for as long as it trickled.)
#[actix_web::test]
async fn slow_bodies_are_cut_off_and_do_not_stop_a_normal_client() {
    let proxy = Proxy::start(setup("body_timeout_ms = 2000\n")).await;
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let mut slow = Vec::new();
    for i in 0..100 {
        let mut conn = connect(&proxy).await;
        let signed = i % 2 == 0;
        let head = slow_head(&proxy, body.len(), signed.then_some(&body[..]));
        conn.write(&head).await.unwrap();
        conn.write(&body[..1]).await.unwrap();
        slow.push((signed, conn));
    }
    // A normal client is served while the hundred wait for their deadline.
    proxy.client("").health().await.ok();
    let answers = tokio::time::timeout(Duration::from_secs(60), async {
        let mut answers = Vec::new();
        for (signed, conn) in &mut slow {
            let response = conn.read_response().await.unwrap();
            answers.push((*signed, response.status, response.reply().error_name()));
        }
        answers
    })
    .await
    .expect("every slow client got an answer");
    for (signed, status, name) in answers {
        if signed {
            assert_eq!(status, 408, "signed");
            assert_eq!(name.as_deref(), Some("ValidationException"));
        } else {
            assert_eq!(
                status, 401,
                "unsigned: refused unread, answered at the deadline"
            );
        }
    }
}

/// Past `max_connections`, a connection gets a clean, retryable overload answer (429
/// `ThrottlingException`) and is closed, instead of being served until descriptors run out;
/// when connections close, new ones are served again.
#[actix_web::test]
async fn connections_past_the_cap_get_an_overload_answer() {
    let proxy = Proxy::start(setup("max_connections = 20\nheader_timeout_ms = 30000\n")).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(&proxy).await);
    }
    // The 21st (and more): the answer comes without any request being read.
    for _ in 0..3 {
        let mut conn = connect(&proxy).await;
        let response = conn.read_response().await.unwrap();
        assert_eq!(response.status, 429);
        assert_eq!(response.header("connection"), Some("close"));
        assert_eq!(
            response.reply().error_name().as_deref(),
            Some("ThrottlingException")
        );
    }
    assert!(proxy.metric("xki_connections_refused ").await.unwrap() >= 3.0);
    assert_eq!(proxy.metric("xki_connections_open ").await, Some(20.0));
    drop(held);
    // Once the proxy has seen them close, a connection is served again (unsigned: 401).
    assert!(
        eventually(Duration::from_secs(10), || async {
            let config = client_config(proxy.ca.cert_pem(), None, &TlsOptions::default());
            matches!(common::raw::attempt(proxy.port, config).await, Ok(401))
        })
        .await,
        "served again once connections closed"
    );
    proxy.client("").health().await.ok();
}

/// One HTTP/2 connection cannot open more than `max_concurrent_streams` streams: the limit is
/// advertised in SETTINGS, streams past it are refused (`REFUSED_STREAM`) and never reach a
/// handler, so 1,000 streams opened at once leave at most the limit in flight. The header-list
/// cap is advertised too.
#[actix_web::test]
async fn an_http2_stream_flood_is_bounded() {
    let proxy = Proxy::start(setup(
        "max_concurrent_streams = 16\nbody_timeout_ms = 5000\n",
    ))
    .await;
    let options = TlsOptions {
        alpn: vec![b"h2".to_vec()],
        ..TlsOptions::default()
    };
    let tcp = tokio::net::TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, proxy.port)))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(
        proxy.ca.cert_pem(),
        None,
        &options,
    )))
    .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
    .await
    .unwrap();
    let mut h2 = H2::handshake(tls).await.unwrap();
    assert_eq!(
        h2.server_settings.get(&h2raw::MAX_CONCURRENT_STREAMS),
        Some(&16)
    );
    assert_eq!(
        h2.server_settings.get(&h2raw::MAX_HEADER_LIST_SIZE),
        Some(&16384)
    );
    let authority = format!("{HOST}:{}", proxy.port);
    let streams = 1000u32;
    for i in 0..streams {
        h2.open(2 * i + 1, &authority, "/kms/xks/v1/health")
            .await
            .unwrap();
    }
    // The first 16 reach the handler (which waits for their bodies, up to the deadline);
    // the rest are refused as they come.
    assert!(
        eventually(Duration::from_secs(10), || async {
            proxy.metric("xki_in_flight_requests ").await == Some(16.0)
        })
        .await,
        "16 streams in flight"
    );
    for _ in 0..5 {
        let in_flight = proxy.metric("xki_in_flight_requests ").await.unwrap();
        assert!(in_flight <= 16.0, "{in_flight} streams reached a handler");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut refused, mut answered) = (0, 0);
    let read = async {
        while answered < 16 {
            let frame = h2.read_frame().await.unwrap();
            assert!(!frame.is_goaway(), "connection ended: {frame:?}");
            if frame.is_reset() && frame.error_code() == Some(h2raw::REFUSED_STREAM) {
                refused += 1;
            }
            if frame.is_headers() {
                answered += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the 16 streams were answered at their body deadline");
    assert!(refused > 0, "streams past the limit are refused");
}

/// A header list over `max_header_bytes` (16 KiB by default) never reaches a handler: over
/// HTTP/1.1 it gets 431 with a ValidationException body (60 KB used to be accepted), over
/// HTTP/2 the advertised limit is enforced by h2 (300 KB used to be accepted).
#[actix_web::test]
async fn header_lists_over_the_cap_are_refused() {
    let proxy = Proxy::default().await;
    let client = proxy.client("");
    let target = client.path("/health");
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let mut headers = vec![
        ("Host".to_owned(), client.authority()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("X-Padding".to_owned(), "p".repeat(60 * 1024)),
    ];
    headers.extend(client.sign("POST", &target, &body));
    let mut conn = connect(&proxy).await;
    let response = conn
        .exchange(&http1_request("POST", &target, &headers, &body))
        .await
        .unwrap();
    assert_eq!(response.status, 431);
    assert_eq!(
        response.reply().error_name().as_deref(),
        Some("ValidationException")
    );

    // Over HTTP/2: a little over the cap gets h2's 431; far over it (300 KB in CONTINUATION
    // frames) ends the connection, as h2 does against header floods. Neither reaches a handler.
    let files = curl::Files::new(&proxy);
    for (kilobytes, expected) in [(20, Some(431)), (300, None)] {
        let padding = files.write(
            &format!("padding-{kilobytes}.txt"),
            format!("X-Padding: {}\n", "p".repeat(kilobytes * 1024)).as_bytes(),
        );
        let header_file = format!("@{}", padding.display());
        let outcome = curl::run(
            proxy.port,
            &files.ca(),
            "/kms/xks/v1/health",
            &[
                "--http2",
                "--retry",
                "0",
                "-H",
                &header_file,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@-",
            ],
            &body,
        );
        assert_eq!(outcome.status, expected, "{kilobytes} KB: {outcome:?}");
    }
    // And a normal request still works.
    client.health().await.ok();
}

/// The 16 KiB default leaves room for any real request: a KMS-sized one with a long
/// `Authorization` and metadata headers passes.
#[actix_web::test]
async fn ordinary_headers_fit_under_the_cap() {
    let proxy = Proxy::default().await;
    let mut conn = connect(&proxy).await;
    let client = proxy.client("");
    let target = client.path("/health");
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let mut headers = vec![
        ("Host".to_owned(), client.authority()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), "aws-sdk-kms/".repeat(40)),
    ];
    headers.extend(client.sign("POST", &target, &body));
    let response = conn
        .exchange(&http1_request("POST", &target, &headers, &body))
        .await
        .unwrap();
    response.reply().ok();
}

/// On a kept-alive connection, the next request head must come within `keep_alive +
/// header_timeout` too: a client that trickles it a byte at a time is closed. (actix times out
/// only the first head of a connection, and each trickled byte cleared its keep-alive timer.)
#[actix_web::test]
async fn a_trickled_head_on_a_kept_alive_connection_is_cut_off() {
    let mut setup = setup("header_timeout_ms = 1000\n");
    setup.keep_alive_secs = Some(1);
    let proxy = Proxy::start(setup).await;
    let client = proxy.client("");
    let target = client.path("/health");
    let body = serde_json::to_vec(&health_body("KmsHealthCheck")).unwrap();
    let mut headers = vec![
        ("Host".to_owned(), client.authority()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    headers.extend(client.sign("POST", &target, &body));
    let mut conn = connect(&proxy).await;
    let first = conn
        .exchange(&http1_request("POST", &target, &headers, &body))
        .await
        .unwrap();
    first.reply().ok();
    // The next head, one byte every 200 ms: it would take minutes.
    let head = http1_request("POST", &target, &headers, &body);
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        for byte in head.iter().cycle() {
            if conn.write(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the trickling connection stayed open");
}
