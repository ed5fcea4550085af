//! Transport and authentication: both request signatures over every transport the SDKs use,
//! the answer and error shapes, unknown AccessKeys, wrong secrets, the clock-skew window, nonce
//! replay (shared by replicas through the store), version and action checks, throttling, and
//! the HTTPS listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use harness::{Setup, Signing, TestApp, Who};
use kms_connector::app::AppOptions;
use kms_connector::config::Config;
use time::{Duration, OffsetDateTime};

const SIGNINGS: [Signing; 3] = [Signing::Acs3, Signing::RpcPost, Signing::RpcGet];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_signatures_over_every_transport() {
    let app = TestApp::start().await;
    for signing in SIGNINGS {
        let c = app.root().signing(signing);
        let reply = c.call("ListKeys", &[("PageSize", "5")]).await;
        assert_eq!(reply.status, 200, "{signing:?}: {}", reply.body);
        let request_id = reply.body["RequestId"].as_str().unwrap();
        assert_eq!(request_id.len(), 36, "a UUID");
        assert_eq!(reply.request_id_header.as_deref(), Some(request_id));
        assert_eq!(reply.body["PageSize"], 5);
        let created = c.ok("CreateKey", &[("Description", "signed")]).await;
        assert_eq!(created["KeyMetadata"]["KeyState"], "Enabled", "{signing:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_exactly_the_four_fields() {
    let app = TestApp::start().await;
    let reply = app
        .root()
        .call("DescribeKey", &[("KeyId", "key-hzz68d1fd85nosuchkey0")])
        .await;
    reply.expect("Forbidden.KeyNotFound", 404);
    let fields: Vec<&String> = reply.body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["Code", "HttpStatus", "Message", "RequestId"]);
    assert_eq!(
        reply.request_id_header.as_deref(),
        reply.body["RequestId"].as_str()
    );
    assert_eq!(reply.message(), "The specified Key is not found.");
    app.root()
        .call("DescribeKey", &[])
        .await
        .expect("MissingParameter", 400);
    let bad = app
        .root()
        .call("DescribeKey", &[("KeyId", "not a key id")])
        .await;
    bad.expect("InvalidParameter", 400);
    assert!(bad.message().contains("KeyId"), "{}", bad.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_access_keys_and_wrong_secrets() {
    let app = TestApp::start().await;
    for signing in SIGNINGS {
        let stranger = app
            .root()
            .signing(signing)
            .with_access_key("LTAI5tNobodyKnowsMe1");
        stranger
            .call("ListKeys", &[])
            .await
            .expect("InvalidAccessKeyId.NotFound", 404);
        let wrong = app.root().signing(signing).with_secret("not-the-secret");
        wrong
            .call("ListKeys", &[])
            .await
            .expect("IncompleteSignature", 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_outside_the_window_are_refused() {
    let app = TestApp::start().await;
    let now = OffsetDateTime::now_utc();
    for signing in SIGNINGS {
        let c = app.root().signing(signing);
        for (skew, ok) in [(-20, false), (20, false), (-10, true), (10, true)] {
            let nonce = uuid::Uuid::new_v4().to_string();
            let request = c.prepare("ListKeys", &[], now + Duration::minutes(skew), &nonce);
            let reply = c.send(&request).await;
            if ok {
                assert_eq!(reply.status, 200, "{signing:?} {skew} min: {}", reply.body);
            } else {
                reply.expect("IllegalTimestamp", 400);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_cannot_be_replayed_even_on_another_replica() {
    let app = TestApp::start().await;
    let replica = app.replica().await;
    for signing in SIGNINGS {
        let c = app.root().signing(signing);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let request = c.prepare("ListKeys", &[], OffsetDateTime::now_utc(), &nonce);
        assert_eq!(c.send(&request).await.status, 200);
        c.send(&request).await.expect("SignatureNonceUsed", 400);
        // The same nonce is fresh for another AccessKey.
        let other = app.client(Who::App).signing(signing);
        let request = other.prepare("ListKeys", &[], OffsetDateTime::now_utc(), &nonce);
        assert_eq!(other.send(&request).await.status, 200);
        // A replica on the same database sees the nonce too.
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let request = c.prepare("ListKeys", &[], OffsetDateTime::now_utc(), &fresh);
        let replica_client = replica.root().signing(signing);
        assert_eq!(replica_client.send(&request).await.status, 200);
        c.send(&request).await.expect("SignatureNonceUsed", 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_requests_methods_and_paths() {
    let app = TestApp::start().await;
    app.raw("POST", "/?Action=ListKeys&Version=2016-01-20")
        .await
        .expect("IncompleteSignature", 400);
    app.raw("GET", "/").await.expect("IncompleteSignature", 400);
    app.raw("PUT", "/?Action=ListKeys")
        .await
        .expect("UnsupportedHTTPMethod", 403);
    app.raw("DELETE", "/")
        .await
        .expect("UnsupportedHTTPMethod", 403);
    app.raw("POST", "/other?Action=ListKeys")
        .await
        .expect("InvalidParameter", 400);
    app.raw("POST", "/?A=%zz")
        .await
        .expect("InvalidParameter", 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_actions() {
    let app = TestApp::start().await;
    for signing in SIGNINGS {
        let c = app.root().signing(signing);
        let nonce = uuid::Uuid::new_v4().to_string();
        let request = c.prepare_version(
            "ListKeys",
            "2014-05-26",
            &[],
            OffsetDateTime::now_utc(),
            &nonce,
        );
        let reply = c.send(&request).await;
        reply.expect("InvalidParameter", 400);
        assert!(reply.message().contains("Version"), "{}", reply.body);
        for action in ["FooBar", "encrypt", "CreateSecret"] {
            let reply = c.call(action, &[]).await;
            reply.expect("UnsupportedOperation", 400);
            assert!(reply.message().contains(action), "{}", reply.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_per_account() {
    let app = TestApp::start_with(Setup {
        qps: Some(2),
        ..Setup::default()
    })
    .await;
    let c = app.root();
    let mut throttled = None;
    for _ in 0..6 {
        let reply = c.call("ListKeys", &[]).await;
        if reply.status != 200 {
            throttled = Some(reply);
            break;
        }
    }
    let reply = throttled.expect("six calls at 2 QPS are throttled");
    reply.expect("Rejected.Throttling", 429);
    assert_eq!(reply.message(), "QPS Limit Exceeded");
    // Another account has its own budget (and is then refused for what it asks).
    app.client(Who::Stranger)
        .call("ListKeys", &[])
        .await
        .expect("Forbidden.NoPermission", 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_the_same_api() {
    let app = TestApp::start_with(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    let port = app.tls_port.expect("an HTTPS port");
    for signing in SIGNINGS {
        let c = app.root().signing(signing).https(port);
        let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        let enc = c
            .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "over TLS")])
            .await;
        let dec = c
            .ok(
                "Decrypt",
                &[("CiphertextBlob", enc["CiphertextBlob"].as_str().unwrap())],
            )
            .await;
        assert_eq!(dec["Plaintext"], "over TLS");
    }
}

/// `kms.expected_hosts`: an ACS3 request signed for another host is refused (the signature
/// covers `host`, so a request captured for one endpoint cannot be replayed to this one);
/// the HMAC-SHA1 RPC signature signs no host and is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acs3_requests_must_be_signed_for_an_expected_host() {
    let app = TestApp::start_with(harness::Setup {
        kms_toml: "expected_hosts = [\"127.0.0.1\", \"kms.example.com\"]".into(),
        ..harness::Setup::default()
    })
    .await;
    let c = app.root();
    c.ok("ListKeys", &[]).await;
    c.clone()
        .with_host("kms.example.com:443")
        .ok("ListKeys", &[])
        .await;
    let refused = c
        .clone()
        .with_host("evil.example")
        .call("ListKeys", &[])
        .await;
    refused.expect("IncompleteSignature", 400);
    c.clone()
        .signing(harness::Signing::RpcPost)
        .ok("ListKeys", &[])
        .await;
    // Without the setting, any host.
    let open = TestApp::start().await;
    open.root()
        .with_host("evil.example")
        .ok("ListKeys", &[])
        .await;
}

/// Without `server.listen` the plain HTTP listener is off: the API answers over HTTPS only,
/// and a configuration with neither listener is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_http_listener_can_be_switched_off() {
    let app = TestApp::start_with(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let https_only = text.replacen("[server]\nlisten = \"127.0.0.1:0\"\n", "[server]\n", 1);
    assert_ne!(https_only, text);
    let dir = app.dir.path();
    let config = Config::from_toml(&https_only, std::iter::empty(), dir).unwrap();
    let (http, tls, handle) = harness::spawn_listeners(config, AppOptions::default());
    assert_eq!(http, None);
    let c = app.root().https(tls.expect("an HTTPS port"));
    let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok("DescribeKey", &[("KeyId", &key)]).await;
    drop(handle.stop(false));

    let (head, rest) = https_only.split_once("[server.tls]").unwrap();
    let neither = format!("{head}{}", &rest[rest.find("\n[").unwrap()..]);
    let error = Config::from_toml(&neither, std::iter::empty(), dir)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("give listen (HTTP), [server.tls] (HTTPS) or both"),
        "{error}"
    );
}
