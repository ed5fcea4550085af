//! TLS of the KMS-facing listener (spec §1.1, §1.8, §4.1): the spec's versions and suites, and
//! mutual TLS with a configured CA and allowed names, where every refused client certificate
//! ends the handshake with an opaque `handshake_failure` alert.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::{Alpn, http_client};
use common::raw::{Conn, TlsOptions, attempt, client_config, rustls_error};
use common::{KMS_CLIENT_NAME, Mtls, Proxy, Setup};
use reqwest::Version;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::{AlertDescription, CipherSuite, ProtocolVersion};

const OTHER_REGION_NAME: &str = "cks.kms.eu-west-1.amazonaws.com";

fn tls12() -> TlsOptions {
    TlsOptions {
        versions: vec![&rustls::version::TLS12],
        ..TlsOptions::default()
    }
}

fn tls13() -> TlsOptions {
    TlsOptions {
        versions: vec![&rustls::version::TLS13],
        ..TlsOptions::default()
    }
}

/// A proxy requiring client certificates from `client_ca` named like KMS.
async fn mtls_proxy(client_ca: &certs::Authority) -> Proxy {
    let mut setup = Setup::new();
    setup.mtls = Some(Mtls {
        ca_pems: vec![client_ca.cert_pem().to_owned()],
        allowed_names: vec![KMS_CLIENT_NAME.into(), OTHER_REGION_NAME.into()],
    });
    Proxy::start(setup).await
}

/// Asserts that TLS (not HTTP) refused the connection with `alert`, for TLS 1.3 and 1.2.
async fn assert_refused(
    proxy: &Proxy,
    identity: Option<&certs::CertifiedKey>,
    alerts: &[AlertDescription],
    what: &str,
) {
    for options in [tls13(), tls12()] {
        let config = client_config(proxy.ca.cert_pem(), identity, &options);
        match attempt(proxy.port, config).await {
            Ok(status) => panic!("{what}: TLS let the request through (HTTP {status})"),
            Err(error) => match rustls_error(&error) {
                Some(rustls::Error::AlertReceived(alert)) if alerts.contains(&alert) => {}
                other => panic!("{what}: expected a TLS alert {alerts:?}, got {other:?} ({error})"),
            },
        }
    }
}

#[actix_web::test]
async fn the_spec_versions_and_suites_are_offered() {
    let proxy = Proxy::default().await;
    let cases = [
        (&rustls::version::TLS13, cs::TLS13_AES_256_GCM_SHA384),
        (&rustls::version::TLS13, cs::TLS13_CHACHA20_POLY1305_SHA256),
        (
            &rustls::version::TLS12,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
    ];
    for (version, suite) in cases {
        let options = TlsOptions {
            versions: vec![version],
            suites: Some(vec![suite]),
            ..TlsOptions::default()
        };
        let config = client_config(proxy.ca.cert_pem(), None, &options);
        let conn = Conn::connect(proxy.port, config).await.unwrap();
        let (got_version, got_suite, _) = conn.negotiated();
        assert_eq!((got_version, got_suite), (version.version, suite.suite()));
        drop(conn);
        let config = client_config(proxy.ca.cert_pem(), None, &options);
        assert_eq!(
            attempt(proxy.port, config).await.unwrap(),
            401,
            "unsigned, but served"
        );
    }
    // Offered everything ring has, the server settles on a spec suite.
    let config = client_config(proxy.ca.cert_pem(), None, &TlsOptions::default());
    let (version, suite, _) = Conn::connect(proxy.port, config)
        .await
        .unwrap()
        .negotiated();
    assert_eq!(version, ProtocolVersion::TLSv1_3);
    assert!(
        [
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ]
        .contains(&suite),
        "{suite:?}"
    );
}

#[actix_web::test]
async fn an_allowed_client_certificate_from_the_ca_is_accepted() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let proxy = mtls_proxy(&client_ca).await;
    let key = proxy.key("mtls").await;
    let accepted = [
        client_ca.issue_client(KMS_CLIENT_NAME, &[]).unwrap(),
        client_ca.issue_client(OTHER_REGION_NAME, &[]).unwrap(),
        // The name may be a DNS SAN instead of the CN.
        client_ca
            .issue_client("kms-client.example", &[KMS_CLIENT_NAME])
            .unwrap(),
    ];
    for identity in &accepted {
        for alpn in [Alpn::Http1, Alpn::Any] {
            let http = http_client(proxy.ca.cert_pem(), proxy.port, alpn, Some(identity));
            let client = proxy.client("").with_http(http);
            let health = client.health().await;
            assert_eq!(health.version == Version::HTTP_2, alpn == Alpn::Any);
            health.ok();
            let e = client.encrypt_ok(&key, b"mutual", None).await;
            assert_eq!(client.decrypt_ok(&key, &e, None).await, b"mutual");
        }
        for options in [tls13(), tls12()] {
            let config = client_config(proxy.ca.cert_pem(), Some(identity), &options);
            assert_eq!(
                attempt(proxy.port, config).await.unwrap(),
                401,
                "TLS passed"
            );
        }
    }
}

#[actix_web::test]
async fn refused_client_certificates_end_the_handshake_with_handshake_failure() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let other_ca = certs::Authority::new("Some other CA").unwrap();
    let proxy = mtls_proxy(&client_ca).await;
    let kms_leaf = certs::LeafSpec::client(KMS_CLIENT_NAME, &[]);
    let cases = [
        (
            "expired",
            client_ca.issue(&kms_leaf.clone().expired()).unwrap(),
        ),
        ("self-signed", certs::self_signed(&kms_leaf).unwrap()),
        ("another CA", other_ca.issue(&kms_leaf).unwrap()),
        (
            "name not allowed",
            client_ca
                .issue_client("cks.kms.evil.example.com", &[])
                .unwrap(),
        ),
        (
            "server-only certificate",
            client_ca
                .issue_server(KMS_CLIENT_NAME, &[KMS_CLIENT_NAME], &[])
                .unwrap(),
        ),
    ];
    for (what, identity) in &cases {
        assert_refused(
            &proxy,
            Some(identity),
            &[AlertDescription::HandshakeFailure],
            what,
        )
        .await;
        // Through reqwest too: no HTTP response at all.
        let http = http_client(proxy.ca.cert_pem(), proxy.port, Alpn::Http1, Some(identity));
        let result = http
            .post(format!(
                "https://{}:{}/kms/xks/v1/health",
                common::HOST,
                proxy.port
            ))
            .body("{}")
            .send()
            .await;
        assert!(
            result.is_err(),
            "{what}: got HTTP {:?}",
            result.map(|r| r.status())
        );
    }
}

#[actix_web::test]
async fn no_client_certificate_fails_the_handshake() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let proxy = mtls_proxy(&client_ca).await;
    // TLS 1.3 names the problem (`certificate_required`); TLS 1.2 has no such alert.
    assert_refused(
        &proxy,
        None,
        &[
            AlertDescription::CertificateRequired,
            AlertDescription::HandshakeFailure,
        ],
        "no certificate",
    )
    .await;
}

#[actix_web::test]
async fn mtls_names_and_cas_reload_for_new_connections() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let next_ca = certs::Authority::new("KMS client next CA").unwrap();
    let mut proxy = mtls_proxy(&client_ca).await;
    let us = client_ca.issue_client(KMS_CLIENT_NAME, &[]).unwrap();
    let eu_next = next_ca.issue_client(OTHER_REGION_NAME, &[]).unwrap();
    let works = |identity| client_config(proxy.ca.cert_pem(), Some(identity), &tls13());
    assert_eq!(attempt(proxy.port, works(&us)).await.unwrap(), 401);
    assert_refused(
        &proxy,
        Some(&eu_next),
        &[AlertDescription::HandshakeFailure],
        "next CA",
    )
    .await;

    let mut setup = proxy.setup.clone();
    setup.mtls = Some(Mtls {
        ca_pems: vec![next_ca.cert_pem().to_owned()],
        allowed_names: vec![OTHER_REGION_NAME.into()],
    });
    proxy.apply(setup).unwrap();
    let works = |identity| client_config(proxy.ca.cert_pem(), Some(identity), &tls13());
    assert_eq!(attempt(proxy.port, works(&eu_next)).await.unwrap(), 401);
    assert_refused(
        &proxy,
        Some(&us),
        &[AlertDescription::HandshakeFailure],
        "old CA",
    )
    .await;
}

/// A reload that drops a client's CA also ends that client's TLS session resumption: a resumed
/// session skips client-certificate verification, so with mTLS on the proxy offers none.
#[actix_web::test]
async fn a_reload_is_not_bypassed_by_session_resumption() {
    let client_ca = certs::Authority::new("KMS client test CA").unwrap();
    let next_ca = certs::Authority::new("KMS client next CA").unwrap();
    let mut proxy = mtls_proxy(&client_ca).await;
    let us = client_ca.issue_client(KMS_CLIENT_NAME, &[]).unwrap();
    // One client configuration per version, reused: clones share its session cache.
    let configs: Vec<_> = [tls13(), tls12()]
        .iter()
        .map(|options| client_config(proxy.ca.cert_pem(), Some(&us), options))
        .collect();
    for config in &configs {
        for _ in 0..2 {
            assert_eq!(attempt(proxy.port, config.clone()).await.unwrap(), 401);
        }
    }
    let mut setup = proxy.setup.clone();
    setup.mtls = Some(Mtls {
        ca_pems: vec![next_ca.cert_pem().to_owned()],
        allowed_names: vec![KMS_CLIENT_NAME.into()],
    });
    proxy.apply(setup).unwrap();
    for (config, version) in configs.iter().zip(["TLS 1.3", "TLS 1.2"]) {
        if let Ok(status) = attempt(proxy.port, config.clone()).await {
            panic!("{version}: a client of the dropped CA got HTTP {status} after the reload");
        }
    }
}
