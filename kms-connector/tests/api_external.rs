//! The instance suite of `api.rs` against an external instance: the connector's external
//! backend talking to a real `xki-proxy` over TLS in front of a real PKCS#11 key manager on
//! SoftHSM (`common/xki.rs`); each key of the suite gets a freshly minted External Key ID. Then
//! what only external instances do: ExternalKeyId rules, connect / disconnect through the API
//! with the store row following, and an external key disabled at the XKI side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/xki.rs"]
mod xki;

// The suite itself (its software run comes along; it is quick).
#[path = "api.rs"]
mod suite;

use std::sync::Arc;
use std::time::Duration;

use ekm::KeyManager as _;
use kms_connector::store::{ConnectionState, Store};
use suite::harness::{Client, Fixture, Setup, TestApp};
use xki::{BOTH, TestProxy, create_key, ctx, ekm, poll};

const EXTERNAL: &str = "kst-hzz68d1fd85external01";

/// A connector with an external instance reaching `proxy`, connected through the API.
async fn start(proxy: &TestProxy) -> TestApp {
    start_with(proxy, Setup::default(), None).await
}

/// [`start`] with more settings and, optionally, another health interval.
async fn start_with(proxy: &TestProxy, setup: Setup, health_interval_secs: Option<u64>) -> TestApp {
    let mut config = proxy.instance_config();
    if health_interval_secs.is_some() {
        config.health_interval_secs = health_interval_secs;
        config.timeout_ms = Some(1000);
    }
    config.secret.as_mut().unwrap().file = Some(proxy.dir().join("xki-secret"));
    config.ca_file = Some(proxy.dir().join("ca.pem"));
    let mut instance = toml::Table::new();
    instance.insert("id".into(), EXTERNAL.into());
    instance.insert("kind".into(), "external".into());
    instance.insert("name".into(), "xki".into());
    instance.insert("external".into(), toml::Value::try_from(&config).unwrap());
    let instance = toml::Value::Table(instance);
    let mut root = toml::Table::new();
    root.insert("instances".into(), toml::Value::Array(vec![instance]));
    let extra_toml = format!("\n{}{}", setup.extra_toml, toml::to_string(&root).unwrap());
    let app = TestApp::start_with(Setup {
        extra_toml,
        ..setup
    })
    .await;
    let answer = app
        .root()
        .ok("ConnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    assert_eq!(answer["Status"], "Connected", "{answer}");
    app
}

fn fixture() -> Fixture {
    Fixture {
        instance_id: EXTERNAL.to_owned(),
        extra: Arc::new(|| {
            Box::pin(async {
                let id = create_key("api-suite", BOTH).await;
                vec![("ExternalKeyId".to_owned(), id.as_str().to_owned())]
            })
        }),
        versions: false,
    }
}

async fn stored_state(app: &TestApp) -> ConnectionState {
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    store.get_instance(EXTERNAL).await.unwrap().connection_state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_instance_suite() {
    xki::isolated_env();
    let proxy = TestProxy::start().await;
    let app = start(&proxy).await;
    suite::instance_suite(&app, &fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_key_ids_connections_and_key_states() {
    xki::isolated_env();
    let proxy = TestProxy::start().await;
    let app = start(&proxy).await;
    let c: Client = app.root();
    assert_eq!(stored_state(&app).await, ConnectionState::Connected);

    // CreateKey: the External Key ID is required, checked, and must exist at the XKI side.
    let create = |params: Vec<(&'static str, String)>| {
        let c = c.clone();
        async move {
            let mut all: Vec<(&str, &str)> = vec![("DKMSInstanceId", EXTERNAL)];
            all.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
            c.call("CreateKey", &all).await
        }
    };
    create(vec![]).await.expect("MissingParameter", 400);
    create(vec![("ExternalKeyId", "bad id!".into())])
        .await
        .expect("InvalidParameter", 400);
    let unknown = create(vec![("ExternalKeyId", "no-such-external-key".into())]).await;
    unknown.expect("InvalidParameter", 400);
    assert!(
        unknown.message().contains("ExternalKeyId") && unknown.message().contains("not found"),
        "{}",
        unknown.body
    );
    create(vec![
        ("ExternalKeyId", "x".into()),
        ("KeySpec", "Aliyun_AES_128".into()),
    ])
    .await
    .expect("UnsupportedOperation", 400);
    // Seeds 000/004: no asymmetric specs and no SIGN/VERIFY on external keys.
    for refused in [
        vec![("KeySpec", "RSA_2048".to_owned())],
        vec![("KeySpec", "EC_P256".to_owned())],
        vec![("KeyUsage", "SIGN/VERIFY".to_owned())],
    ] {
        let mut params = vec![("ExternalKeyId", "x".to_owned())];
        params.extend(refused);
        create(params).await.expect("UnsupportedOperation", 400);
    }

    let external_key = create_key("api-external", BOTH).await;
    let meta = create(vec![("ExternalKeyId", external_key.as_str().to_owned())])
        .await
        .ok()["KeyMetadata"]
        .clone();
    let key = meta["KeyId"].as_str().unwrap().to_owned();
    assert_eq!(meta["ExternalKeyId"], external_key.as_str());
    assert_eq!(meta["DKMSInstanceId"], EXTERNAL);
    // Several KMS keys may share one external key.
    let twin = create(vec![("ExternalKeyId", external_key.as_str().to_owned())])
        .await
        .ok()["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "external")])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = c
        .ok(
            "ReEncrypt",
            &[("CiphertextBlob", &blob), ("DestinationKeyId", &twin)],
        )
        .await;
    assert_eq!(moved["KeyId"], serde_json::json!(twin));

    // The external key disabled at the XKI side: crypto refused with its own message.
    ekm().disable_key(&ctx(), &external_key).await.unwrap();
    let refused = poll(Duration::from_secs(10), async || {
        let reply = c
            .call("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
            .await;
        (reply.status == 409).then_some(reply)
    })
    .await
    .expect("encrypt refused once the external key is disabled");
    refused.expect("Rejected.Unavailable", 409);
    assert!(
        refused
            .message()
            .contains("the external key is disabled in the XKI proxy"),
        "{}",
        refused.body
    );
    c.call("Decrypt", &[("CiphertextBlob", &blob)])
        .await
        .expect("Rejected.Unavailable", 409);
    ekm().enable_key(&ctx(), &external_key).await.unwrap();
    poll(Duration::from_secs(10), async || {
        c.call("Decrypt", &[("CiphertextBlob", &blob)]).await.body["Plaintext"]
            .as_str()
            .map(str::to_owned)
    })
    .await
    .expect("decrypt works again once the external key is enabled");

    // Disconnected on purpose: crypto refused naming the instance state; the store row follows.
    let answer = c
        .ok("DisconnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    assert_eq!(answer["Status"], "Disconnected");
    assert_eq!(stored_state(&app).await, ConnectionState::Disconnected);
    let reply = c
        .call("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;
    reply.expect("Rejected.Unavailable", 409);
    assert!(
        reply.message().contains(EXTERNAL) && reply.message().contains("Disconnected"),
        "{}",
        reply.body
    );
    let got = c.ok("GetKmsInstance", &[("KmsInstanceId", EXTERNAL)]).await["KmsInstance"].clone();
    assert_eq!(
        (
            got["Status"].as_str(),
            got["InstanceType"].as_str(),
            got["KeyNum"].as_u64()
        ),
        (Some("Disconnected"), Some("external"), Some(2))
    );
    c.ok("ConnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    assert_eq!(stored_state(&app).await, ConnectionState::Connected);
    c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
}

const CREATOR: &str = "LTAI5tKeyCreatorOnly1";

/// Issue: one CreateKey with `ExternalKeyId=..` by a user allowed only to create keys took the
/// external instance to `Error` and every external key offline. A hundred malformed or unknown
/// External Key IDs leave it `Connected`, and the root's encryptions on another external key
/// all succeed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_create_keys_by_a_low_privilege_user_leave_the_instance_connected() {
    xki::isolated_env();
    let proxy = TestProxy::start().await;
    let setup = Setup {
        access_keys: vec![(
            CREATOR.into(),
            format!("acs:ram::{}:user/creator", suite::harness::ACCOUNT),
            Some(
                r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:CreateKey"],"Resource":"*"}]}"#
                    .into(),
            ),
        )],
        ..Setup::default()
    };
    let app = start_with(&proxy, setup, None).await;
    let root = app.root();
    let external_key = create_key("low-privilege", BOTH).await;
    let key = root
        .ok(
            "CreateKey",
            &[
                ("DKMSInstanceId", EXTERNAL),
                ("ExternalKeyId", external_key.as_str()),
            ],
        )
        .await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let creator = app.client_for(CREATOR);
    let long = "x".repeat(129);
    let hostile = [
        "..",
        ".",
        "%2e%2e",
        ".%2E",
        "../health",
        "a/b",
        "..%2Fhealth",
        long.as_str(),
        "",
        "no-such-external-key",
        "...",
        "-",
        "_.",
    ];
    let mut refused = 0;
    for i in 0..100 {
        let id = hostile[i % hostile.len()];
        let reply = creator
            .call(
                "CreateKey",
                &[("DKMSInstanceId", EXTERNAL), ("ExternalKeyId", id)],
            )
            .await;
        assert_ne!(reply.status, 200, "{id:?}: {}", reply.body);
        assert!(
            matches!(reply.code(), "InvalidParameter" | "MissingParameter"),
            "{id:?}: {}",
            reply.body
        );
        refused += 1;
        let encrypted = root
            .call("Encrypt", &[("KeyId", &key), ("Plaintext", "root's data")])
            .await;
        assert_eq!(encrypted.status, 200, "after {id:?}: {}", encrypted.body);
    }
    assert_eq!(refused, 100);
    let got = root
        .ok("GetKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    assert_eq!(got["KmsInstance"]["Status"], "Connected", "{got}");
    assert_eq!(stored_state(&app).await, ConnectionState::Connected);
}

/// Account members cannot disconnect the HYOK link; the account root can, and a second replica
/// on the same database follows a disconnect and a connect made on the first one within one
/// health interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_link_is_managed_by_its_admins_and_shared_by_replicas() {
    xki::isolated_env();
    let proxy = TestProxy::start().await;
    let app = start_with(&proxy, Setup::default(), Some(1)).await;
    let replica = app.replica().await;
    let root = app.root();
    let on_replica = root.clone().at_port(replica.port);
    let external_key = create_key("replicas", BOTH).await;
    let key = root
        .ok(
            "CreateKey",
            &[
                ("DKMSInstanceId", EXTERNAL),
                ("ExternalKeyId", external_key.as_str()),
            ],
        )
        .await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The replica read the stored Connected at start.
    on_replica
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;

    let member = app.client(suite::harness::Who::App);
    for _ in 0..20 {
        member
            .call("DisconnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
            .await
            .expect("Forbidden.NoPermission", 403);
        root.ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
            .await;
    }
    assert_eq!(stored_state(&app).await, ConnectionState::Connected);

    root.ok("DisconnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    let status = |c: Client| async move {
        c.ok("GetKmsInstance", &[("KmsInstanceId", EXTERNAL)]).await["KmsInstance"]["Status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let followed = poll(Duration::from_secs(5), async || {
        (status(on_replica.clone()).await == "Disconnected").then_some(())
    })
    .await;
    assert!(
        followed.is_some(),
        "the replica did not follow the disconnect"
    );
    on_replica
        .call("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await
        .expect("Rejected.Unavailable", 409);

    on_replica
        .ok("ConnectKmsInstance", &[("KmsInstanceId", EXTERNAL)])
        .await;
    let followed = poll(Duration::from_secs(5), async || {
        (status(root.clone()).await == "Connected").then_some(())
    })
    .await;
    assert!(
        followed.is_some(),
        "the first replica did not follow the connect"
    );
    root.ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;
}
