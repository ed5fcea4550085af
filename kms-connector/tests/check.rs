//! The connectivity checker (`backend::external::check`, `kms-connector instances check`,
//! `kms-connector check-endpoint`) against a real `xki-proxy` over real TLS in front of a real
//! PKCS#11 key manager on SoftHSM, on random loopback ports, and against deliberately broken
//! set-ups: each asserts which step failed, its hint, and that every later step was skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/xki.rs"]
mod xki;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;

use ekm::KeyManager;
use ekm::fault::{Fault, FaultInjecting};
use kms_connector::backend::external::ExternalInstanceConfig;
use kms_connector::backend::external::check::{self, Report, Step, Verdict};
use schemas::xki::ExternalKeyId;
use xki::{BOTH, HOST, ProxyOptions, REGION, TestProxy, create_key, ekm};

async fn run(
    proxy: &TestProxy,
    config: &ExternalInstanceConfig,
    key: Option<&ExternalKeyId>,
) -> Report {
    let settings = config.resolve(REGION, proxy.dir()).unwrap();
    let report = check::run(&settings, key).await;
    eprintln!("{report}");
    report
}

/// `report` failed at `step` with a hint containing `hint`, every step before passed and every
/// step after was skipped.
fn failed_at(report: &Report, step: Step, hint: &str) {
    assert!(!report.passed(), "{report}");
    let failure = report.failure().expect("a failing step");
    assert_eq!(failure.step, step, "{report}");
    let given = failure.hint.as_deref().unwrap_or_default();
    assert!(
        given.contains(hint),
        "hint {given:?} lacks {hint:?}\n{report}"
    );
    let at = Step::ALL.iter().position(|s| *s == step).unwrap();
    for (i, s) in report.steps.iter().enumerate() {
        assert_eq!(s.step, Step::ALL[i], "{report}");
        let expected = match i.cmp(&at) {
            std::cmp::Ordering::Less => Verdict::Pass,
            std::cmp::Ordering::Equal => Verdict::Fail,
            std::cmp::Ordering::Greater => Verdict::Skip,
        };
        assert_eq!(s.verdict, expected, "{}\n{report}", s.step.as_str());
    }
}

fn detail(report: &Report, step: Step) -> &str {
    &report.step(step).unwrap().detail
}

/// Everything works: every step passes, with the certificate's expiry, the name match, the
/// fleet's health and the key's state in the details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_all_pass() {
    let proxy = TestProxy::start().await;
    let key = create_key("check-pass", BOTH).await;
    let report = run(&proxy, &proxy.instance_config(), Some(&key)).await;
    assert!(report.passed(), "{report}");
    assert!(
        report.steps.iter().all(|s| s.verdict == Verdict::Pass),
        "{report}"
    );
    assert!(detail(&report, Step::Dns).contains("127.0.0.1"), "{report}");
    let tls = detail(&report, Step::Tls);
    for part in [
        "chain verified against ca_file, pin matches",
        "name localhost matches",
        "days left",
        "client certificate not requested",
    ] {
        assert!(tls.contains(part), "{part}: {tls}");
    }
    assert!(
        detail(&report, Step::Health).starts_with("ACTIVE"),
        "{report}"
    );
    let metadata = detail(&report, Step::KeyMetadata);
    assert!(
        metadata.contains("ENABLED") && metadata.contains("ENCRYPT+DECRYPT"),
        "{metadata}"
    );

    // Without a test key the last step is skipped, and the check still passes.
    let report = run(&proxy, &proxy.instance_config(), None).await;
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.step(Step::KeyMetadata).unwrap().verdict,
        Verdict::Skip
    );
    // The JSON shape scripts read.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["steps"][3]["step"], "sigv4");
    assert_eq!(json["steps"][5]["verdict"], "skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_unknown_host() {
    let proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        endpoint: Some("https://no-such-proxy.invalid:8443".into()),
        ..proxy.instance_config()
    };
    failed_at(
        &run(&proxy, &config, None).await,
        Step::Dns,
        "cannot resolve no-such-proxy.invalid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_closed_port() {
    let proxy = TestProxy::start().await;
    let port = xki::closed_port();
    let config = ExternalInstanceConfig {
        endpoint: Some(format!("https://{HOST}:{port}")),
        ..proxy.instance_config()
    };
    failed_at(
        &run(&proxy, &config, None).await,
        Step::Tcp,
        &format!("connection refused on {HOST}:{port}: is the proxy running"),
    );
}

/// The proxy's certificate is from another CA than ca_file's (no pin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wrong_ca() {
    let proxy = TestProxy::start().await;
    let stranger = certs::Authority::new("some other CA").unwrap();
    proxy.write("other-ca.pem", stranger.cert_pem());
    let config = ExternalInstanceConfig {
        ca_file: Some("other-ca.pem".into()),
        certificate_sha256: None,
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    failed_at(
        &report,
        Step::Tls,
        "not signed by the CA in ca_file: check ca_file or the pin",
    );
    assert!(
        detail(&report, Step::Tls).contains("kms-connector test proxy CA"),
        "{report}"
    );
}

/// Pin only, and the pin is someone else's certificate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wrong_pin() {
    let proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        ca_file: None,
        certificate_sha256: Some("ab".repeat(32)),
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    failed_at(
        &report,
        Step::Tls,
        "does not match the pinned ServerCertificateSha256",
    );
    assert!(
        detail(&report, Step::Tls).contains(&proxy.fingerprint),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_expired_certificate() {
    let proxy = TestProxy::start_custom(ProxyOptions {
        server_cert: Some(
            certs::LeafSpec::server(HOST, &[HOST], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expired(),
        ),
        ..ProxyOptions::default()
    })
    .await;
    let config = ExternalInstanceConfig {
        certificate_sha256: None,
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    failed_at(&report, Step::Tls, "certificate expired on ");
    // The date is the certificate's notAfter, yesterday.
    let yesterday = (time::OffsetDateTime::now_utc() - time::Duration::days(1)).date();
    let hint = report.failure().unwrap().hint.clone().unwrap();
    assert!(hint.contains(&yesterday.to_string()), "{hint}");
}

/// The certificate names another host than the endpoint's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wrong_name() {
    let proxy = TestProxy::start_custom(ProxyOptions {
        server_cert: Some(certs::LeafSpec::server(
            "xki.example.test",
            &["xki.example.test"],
            &[],
        )),
        ..ProxyOptions::default()
    })
    .await;
    let config = ExternalInstanceConfig {
        certificate_sha256: None,
        ..proxy.instance_config()
    };
    failed_at(
        &run(&proxy, &config, None).await,
        Step::Tls,
        "the name localhost is not in the certificate (SANs: xki.example.test)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wrong_secret() {
    let proxy = TestProxy::start().await;
    proxy.write(
        "other-secret",
        &xki_proxy::credentials::NewCredential::generate().secret,
    );
    let config = ExternalInstanceConfig {
        secret: Some(kms_connector::backend::external::SecretRef {
            env: None,
            file: Some("other-secret".into()),
        }),
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    failed_at(
        &report,
        Step::Sigv4,
        "the proxy refused the signature: check the access key id and secret",
    );
    assert!(
        detail(&report, Step::Sigv4).contains("AuthenticationFailedException"),
        "{report}"
    );
    let secret = std::fs::read_to_string(proxy.dir().join("other-secret")).unwrap();
    assert!(
        !serde_json::to_string(&report).unwrap().contains(&secret),
        "secret printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_wrong_prefix() {
    let proxy = TestProxy::start().await;
    let config = ExternalInstanceConfig {
        path: Some("/wrong-prefix/kms/xks/v1".into()),
        ..proxy.instance_config()
    };
    failed_at(
        &run(&proxy, &config, None).await,
        Step::Sigv4,
        "no route at /wrong-prefix/kms/xks/v1: check the URI path prefix",
    );
}

/// The proxy answers, its key manager does not: every HSM UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ekm_down() {
    let broken = Arc::new(FaultInjecting::new(ekm()));
    broken.set(Fault::Fail(ekm::Error::HsmUnavailable(
        "switched off by the test".into(),
    )));
    let backend: Arc<dyn KeyManager> = broken;
    let proxy = TestProxy::start_custom(ProxyOptions {
        backend: Some(backend),
        ..ProxyOptions::default()
    })
    .await;
    let report = run(&proxy, &proxy.instance_config(), None).await;
    failed_at(
        &report,
        Step::Health,
        "every key manager (HSM) behind it is UNAVAILABLE",
    );
    assert!(
        detail(&report, Step::Health).starts_with("UNAVAILABLE"),
        "{report}"
    );
}

/// The test key does not exist behind the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_unknown_key() {
    let proxy = TestProxy::start().await;
    let key = ExternalKeyId::parse("check-no-such-key").unwrap();
    failed_at(
        &run(&proxy, &proxy.instance_config(), Some(&key)).await,
        Step::KeyMetadata,
        "no key check-no-such-key behind this proxy",
    );
}

/// Mutual TLS: no client certificate, one from a CA the proxy does not trust, the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mutual_tls() {
    let client_ca = certs::Authority::new("kms-connector client CA").unwrap();
    let name = "kms-connector.test";
    let proxy = TestProxy::start_with(Some(xki::Mtls {
        ca_pem: client_ca.cert_pem().to_owned(),
        allowed_name: name.into(),
    }))
    .await;

    failed_at(
        &run(&proxy, &proxy.instance_config(), None).await,
        Step::Tls,
        "the proxy requires a client certificate and none is configured",
    );

    let stranger = certs::Authority::new("untrusted client CA").unwrap();
    let untrusted = stranger.issue_client(name, &[name]).unwrap();
    proxy.write("untrusted.pem", &untrusted.cert_pem);
    proxy.write("untrusted.key", &untrusted.key_pem);
    let config = ExternalInstanceConfig {
        client_cert_file: Some("untrusted.pem".into()),
        client_key_file: Some("untrusted.key".into()),
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    failed_at(
        &report,
        Step::Tls,
        "the proxy refused the client certificate",
    );
    let tls = detail(&report, Step::Tls);
    assert!(
        [
            "unknown_ca",
            "bad_certificate",
            "certificate_unknown",
            "access_denied",
            "handshake_failure"
        ]
        .iter()
        .any(|alert| tls.contains(&format!("TLS alert {alert}"))),
        "the alert is not named: {tls}"
    );

    let identity = client_ca.issue_client(name, &[name]).unwrap();
    proxy.write("client.pem", &identity.cert_pem);
    proxy.write("client.key", &identity.key_pem);
    let config = ExternalInstanceConfig {
        client_cert_file: Some("client.pem".into()),
        client_key_file: Some("client.key".into()),
        ..proxy.instance_config()
    };
    let report = run(&proxy, &config, None).await;
    assert!(report.passed(), "{report}");
    assert!(
        detail(&report, Step::Tls)
            .contains("client certificate requested by the proxy and accepted"),
        "{report}"
    );
}

/// The binary: `check-endpoint --settings` on the JSON `xki-proxy credentials new` prints (the
/// proxy crate's own type), `--json`, exit status 0; then a wrong prefix: exit status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_endpoint_command() {
    let proxy = TestProxy::start().await;
    let secret = std::fs::read_to_string(proxy.dir().join("xki-secret")).unwrap();
    let write_settings = |path: &str| {
        let settings = xki_proxy::credentials::ConnectionSettings {
            xks_proxy_uri_endpoint: format!("https://{HOST}:{}", proxy.port),
            xks_proxy_uri_path: path.to_owned(),
            xks_proxy_authentication_credential: xki_proxy::credentials::AuthenticationCredential {
                access_key_id: proxy.access_key_id.clone(),
                raw_secret_access_key: secret.clone(),
            },
            server_certificate_sha256: proxy.fingerprint.clone(),
            connectivity: "public".into(),
        };
        proxy.write(
            "settings.json",
            &serde_json::to_string_pretty(&settings).unwrap(),
        )
    };
    let command = |settings: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_kms-connector"))
            .arg("check-endpoint")
            .arg("--settings")
            .arg(settings)
            .arg("--ca-file")
            .arg(proxy.dir().join("ca.pem"))
            .args(["--region", REGION, "--timeout-ms", "5000", "--json"])
            .env_remove("KMS_CONNECTOR_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(!stdout.contains(&secret), "secret printed");
        eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        (
            output.status.code(),
            serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        )
    };

    let settings = write_settings(&format!("{}/kms/xks/v1", xki::PREFIX));
    let (status, json) = command(&settings);
    assert_eq!(status, Some(0), "{json}");
    assert_eq!(json["passed"], true);
    assert_eq!(json["steps"].as_array().unwrap().len(), 6);

    let settings = write_settings("/nope/kms/xks/v1");
    let (status, json) = command(&settings);
    assert_eq!(status, Some(1), "{json}");
    assert_eq!(json["steps"][3]["verdict"], "fail");
    assert!(
        json["steps"][3]["hint"]
            .as_str()
            .unwrap()
            .contains("no route at /nope/kms/xks/v1")
    );
}

/// The binary: `instances check ID` on a configured external instance (its `settings_file`),
/// text output, exit status 0; an instance that is not external is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_check_command() {
    const INSTANCE: &str = "kst-hzz68d1fd85external01";
    let proxy = TestProxy::start().await;
    let settings = xki_proxy::credentials::ConnectionSettings {
        xks_proxy_uri_endpoint: format!("https://{HOST}:{}", proxy.port),
        xks_proxy_uri_path: format!("{}/kms/xks/v1", xki::PREFIX),
        xks_proxy_authentication_credential: xki_proxy::credentials::AuthenticationCredential {
            access_key_id: proxy.access_key_id.clone(),
            raw_secret_access_key: std::fs::read_to_string(proxy.dir().join("xki-secret")).unwrap(),
        },
        server_certificate_sha256: proxy.fingerprint.clone(),
        connectivity: "private-link".into(),
    };
    proxy.write("settings.json", &serde_json::to_string(&settings).unwrap());
    proxy.write("root.key", &"A".repeat(32));
    let config = proxy.write(
        "kms-connector.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[kms]\nregion = \"{REGION}\"\naccount_id = \"1540355698848\"\n\n\
             [database]\nurl = \"kms.db\"\n\n[root_key]\nfile = \"root.key\"\n\n\
             [[instances]]\nid = \"{INSTANCE}\"\nkind = \"external\"\nname = \"checked\"\n\n\
             [instances.external]\nsettings_file = \"settings.json\"\nca_file = \"ca.pem\"\ntimeout_ms = 5000\n"
        ),
    );
    let key = create_key("check-cli", BOTH).await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_kms-connector"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_remove("KMS_CONNECTOR_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        eprintln!("{stdout}{stderr}");
        (output.status.code(), stdout, stderr)
    };
    let (status, stdout, _) = run(&["instances", "check", INSTANCE, "--key-id", key.as_str()]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("result: pass"), "{stdout}");
    for step in ["dns", "tcp", "tls", "sigv4", "health", "key-metadata"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains(" pass ")),
            "{step} did not pass: {stdout}"
        );
    }
    let (status, _, stderr) = run(&["instances", "check", "kst-hzz68d1fd85nosuchone1"]);
    assert_eq!(status, Some(1));
    assert!(
        stderr.contains("no instance kst-hzz68d1fd85nosuchone1"),
        "{stderr}"
    );
}
