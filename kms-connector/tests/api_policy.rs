//! Key policies through the API: the default policy, the seeds' administrator and user action
//! sets, explicit Deny, key-less calls limited to the account, SetKeyPolicy / GetKeyPolicy and
//! their validation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use harness::{ACCOUNT, Client, REGION, TestApp, Who};
use serde_json::{Value, json};

const ADMIN_SET: &[&str] = &[
    "kms:List*",
    "kms:Describe*",
    "kms:Create*",
    "kms:Enable*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Set*",
    "kms:Update*",
    "kms:Delete*",
    "kms:Cancel*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ImportKeyMaterial",
    "kms:ScheduleKeyDeletion",
];
const USER_SET: &[&str] = &[
    "kms:Encrypt",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "kms:GenerateAndExportDataKey",
    "kms:AsymmetricEncrypt",
    "kms:AsymmetricDecrypt",
    "kms:DescribeKey",
    "kms:DescribeKeyVersion",
    "kms:ListKeyVersions",
    "kms:ListAliasesByKeyId",
    "kms:TagResource",
];

fn statement(effect: &str, principal: &str, actions: &[&str]) -> Value {
    json!({"Effect": effect, "Principal": {"RAM": [principal]}, "Action": actions, "Resource": ["*"]})
}

fn policy(statements: Vec<Value>) -> String {
    json!({"Version": "1", "Statement": statements}).to_string()
}

async fn key_with(c: &Client, policy: &str) -> String {
    let meta = c.ok("CreateKey", &[("Policy", policy)]).await;
    meta["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_administrator_and_user_sets() {
    let app = TestApp::start().await;
    let root = app.root();
    let document = policy(vec![
        statement("Allow", &Who::Root.principal(), &["kms:*"]),
        statement("Allow", &Who::Admin.principal(), ADMIN_SET),
        statement("Allow", &Who::App.principal(), USER_SET),
    ]);
    let key = key_with(&root, &document).await;
    let blob = root
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "for the app")])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let tags = r#"[{"TagKey":"k","TagValue":"v"}]"#;

    let user = app.client(Who::App);
    for (action, params) in [
        ("Encrypt", vec![("KeyId", key.as_str()), ("Plaintext", "p")]),
        ("Decrypt", vec![("CiphertextBlob", blob.as_str())]),
        ("GenerateDataKey", vec![("KeyId", key.as_str())]),
        ("DescribeKey", vec![("KeyId", key.as_str())]),
        ("ListAliasesByKeyId", vec![("KeyId", key.as_str())]),
        ("ListKeyVersions", vec![("KeyId", key.as_str())]),
        ("TagResource", vec![("KeyId", key.as_str()), ("Tags", tags)]),
    ] {
        user.ok(action, &params).await;
    }
    for (action, params) in [
        (
            "ScheduleKeyDeletion",
            vec![("KeyId", key.as_str()), ("PendingWindowInDays", "7")],
        ),
        ("DisableKey", vec![("KeyId", key.as_str())]),
        (
            "SetKeyPolicy",
            vec![("KeyId", key.as_str()), ("Policy", document.as_str())],
        ),
        ("GetKeyPolicy", vec![("KeyId", key.as_str())]),
        (
            "UntagResource",
            vec![("KeyId", key.as_str()), ("TagKeys", r#"["k"]"#)],
        ),
        (
            "GenerateDataKeyWithoutPlaintext",
            vec![("KeyId", key.as_str())],
        ),
        (
            "ReEncrypt",
            vec![
                ("CiphertextBlob", blob.as_str()),
                ("DestinationKeyId", key.as_str()),
            ],
        ),
    ] {
        let reply = user.call(action, &params).await;
        reply.expect("Forbidden.NoPermission", 403);
        assert!(reply.message().contains("user/app"), "{}", reply.body);
    }

    let admin = app.client(Who::Admin);
    for (action, params) in [
        ("Encrypt", vec![("KeyId", key.as_str()), ("Plaintext", "p")]),
        ("Decrypt", vec![("CiphertextBlob", blob.as_str())]),
        ("GenerateDataKey", vec![("KeyId", key.as_str())]),
    ] {
        admin
            .call(action, &params)
            .await
            .expect("Forbidden.NoPermission", 403);
    }
    let alias = format!(
        "alias/admin-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    for (action, params) in [
        ("DescribeKey", vec![("KeyId", key.as_str())]),
        ("DisableKey", vec![("KeyId", key.as_str())]),
        ("EnableKey", vec![("KeyId", key.as_str())]),
        (
            "UpdateKeyDescription",
            vec![("KeyId", key.as_str()), ("Description", "by admin")],
        ),
        (
            "CreateAlias",
            vec![("AliasName", alias.as_str()), ("KeyId", key.as_str())],
        ),
        ("GetKeyPolicy", vec![("KeyId", key.as_str())]),
        (
            "UntagResource",
            vec![("KeyId", key.as_str()), ("TagKeys", r#"["k"]"#)],
        ),
        (
            "ScheduleKeyDeletion",
            vec![("KeyId", key.as_str()), ("PendingWindowInDays", "7")],
        ),
        ("CancelKeyDeletion", vec![("KeyId", key.as_str())]),
        ("DeleteAlias", vec![("AliasName", alias.as_str())]),
    ] {
        admin.ok(action, &params).await;
    }

    let stranger = app.client(Who::Stranger);
    let arn = format!("acs:kms:{REGION}:{ACCOUNT}:key/{key}");
    stranger
        .call("DescribeKey", &[("KeyId", &arn)])
        .await
        .expect("Forbidden.NoPermission", 403);
    stranger
        .call("Encrypt", &[("KeyId", &arn), ("Plaintext", "p")])
        .await
        .expect("Forbidden.NoPermission", 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_deny_wins() {
    let app = TestApp::start().await;
    let root = app.root();
    let document = policy(vec![
        statement("Allow", &format!("acs:ram::{ACCOUNT}:*"), &["kms:*"]),
        statement(
            "Deny",
            &Who::App.principal(),
            &["kms:Encrypt", "kms:Generate*"],
        ),
    ]);
    let key = key_with(&root, &document).await;
    let app_user = app.client(Who::App);
    app_user
        .call("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await
        .expect("Forbidden.NoPermission", 403);
    app_user
        .call("GenerateDataKey", &[("KeyId", &key)])
        .await
        .expect("Forbidden.NoPermission", 403);
    app_user.ok("DescribeKey", &[("KeyId", &key)]).await;
    app.client(Who::Admin)
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_less_calls_belong_to_the_account() {
    let app = TestApp::start().await;
    for who in [Who::Root, Who::App, Who::Admin] {
        let c = app.client(who);
        c.ok("ListKeys", &[]).await;
        c.ok("ListAliases", &[]).await;
        c.ok("CreateKey", &[]).await;
    }
    let stranger = app.client(Who::Stranger);
    for action in ["ListKeys", "ListAliases", "CreateKey", "ListKmsInstances"] {
        stranger
            .call(action, &[])
            .await
            .expect("Forbidden.NoPermission", 403);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_and_set_key_policy() {
    let app = TestApp::start().await;
    let root = app.root();
    let key = root.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = root.ok("GetKeyPolicy", &[("KeyId", &key)]).await;
    let current: Value = serde_json::from_str(got["Policy"].as_str().unwrap()).unwrap();
    assert_eq!(current["Version"], "1");
    assert_eq!(
        current["Statement"][0]["Principal"]["RAM"],
        json!([format!("acs:ram::{ACCOUNT}:*")])
    );
    assert_eq!(current["Statement"][0]["Action"], json!(["kms:*"]));
    // The default policy lets every principal of the account do everything.
    app.client(Who::App)
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;

    let only_root = policy(vec![statement("Allow", &Who::Root.principal(), &["kms:*"])]);
    root.ok(
        "SetKeyPolicy",
        &[
            ("KeyId", &key),
            ("PolicyName", "default"),
            ("Policy", &only_root),
        ],
    )
    .await;
    let got = root.ok("GetKeyPolicy", &[("KeyId", &key)]).await;
    assert_eq!(got["Policy"], json!(only_root));
    app.client(Who::App)
        .call("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await
        .expect("Forbidden.NoPermission", 403);
    root.ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;

    let huge = policy(vec![statement(
        "Allow",
        &Who::Root.principal(),
        &[&format!("kms:{}", "A".repeat(33_000))],
    )]);
    for bad in [
        r#"{"Version":"2","Statement":[]}"#.to_owned(),
        "not json".to_owned(),
        policy(vec![statement(
            "Allow",
            &Who::Root.principal(),
            &["ecs:DescribeInstances"],
        )]),
        policy(vec![statement("Maybe", &Who::Root.principal(), &["kms:*"])]),
        policy(vec![
            json!({"Effect": "Allow", "Principal": {"RAM": ["*"]}, "Action": ["kms:*"], "Resource": ["acs:kms:*"]}),
        ]),
        huge,
    ] {
        let reply = root
            .call("SetKeyPolicy", &[("KeyId", &key), ("Policy", &bad)])
            .await;
        reply.expect("InvalidParameter", 400);
        assert!(reply.message().contains("Policy"), "{}", reply.body);
        root.call("CreateKey", &[("Policy", &bad)])
            .await
            .expect("InvalidParameter", 400);
    }
    root.call("SetKeyPolicy", &[("KeyId", &key)])
        .await
        .expect("MissingParameter", 400);
    root.call("GetKeyPolicy", &[("KeyId", &key), ("PolicyName", "other")])
        .await
        .expect("Forbidden.ResourceNotFound", 404);

    // A policy may lock its author out; another principal it names stays in.
    let admin_only = policy(vec![statement(
        "Allow",
        &Who::Admin.principal(),
        &["kms:*"],
    )]);
    root.ok("SetKeyPolicy", &[("KeyId", &key), ("Policy", &admin_only)])
        .await;
    root.call("GetKeyPolicy", &[("KeyId", &key)])
        .await
        .expect("Forbidden.NoPermission", 403);
    app.client(Who::Admin)
        .ok("GetKeyPolicy", &[("KeyId", &key)])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_named_by_the_policy_may_use_the_key() {
    let app = TestApp::start().await;
    let root = app.root();
    let document = policy(vec![
        statement("Allow", &format!("acs:ram::{ACCOUNT}:*"), &["kms:*"]),
        statement(
            "Allow",
            &Who::Stranger.principal(),
            &["kms:Encrypt", "kms:Decrypt"],
        ),
    ]);
    let key = key_with(&root, &document).await;
    let arn = format!("acs:kms:{REGION}:{ACCOUNT}:key/{key}");
    let stranger = app.client(Who::Stranger);
    let enc = stranger
        .ok(
            "Encrypt",
            &[("KeyId", &arn), ("Plaintext", "cross-account")],
        )
        .await;
    let dec = stranger
        .ok(
            "Decrypt",
            &[("CiphertextBlob", enc["CiphertextBlob"].as_str().unwrap())],
        )
        .await;
    assert_eq!(dec["Plaintext"], "cross-account");
    stranger
        .call("DisableKey", &[("KeyId", &arn)])
        .await
        .expect("Forbidden.NoPermission", 403);
}

/// UpdateAlias needs `kms:UpdateAlias` on the key the alias points to now, not only on the new
/// target: otherwise a caller could redirect an alias other applications encrypt through to a
/// key of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_alias_needs_the_current_key_too() {
    let app = TestApp::start().await;
    let root = app.root();
    let victim = key_with(
        &root,
        &policy(vec![statement("Allow", &Who::Root.principal(), &["kms:*"])]),
    )
    .await;
    let attackers = key_with(
        &root,
        &policy(vec![
            statement("Allow", &Who::Root.principal(), &["kms:*"]),
            statement("Allow", &Who::App.principal(), &["kms:*"]),
        ]),
    )
    .await;
    root.ok(
        "CreateAlias",
        &[("AliasName", "alias/prod"), ("KeyId", &victim)],
    )
    .await;
    app.client(Who::App)
        .call(
            "UpdateAlias",
            &[("AliasName", "alias/prod"), ("KeyId", &attackers)],
        )
        .await
        .expect("Forbidden.NoPermission", 403);
    let described = root.ok("DescribeKey", &[("KeyId", "alias/prod")]).await;
    assert_eq!(described["KeyMetadata"]["KeyId"], victim.as_str());
    // Allowed on both keys: the alias moves.
    root.ok(
        "UpdateAlias",
        &[("AliasName", "alias/prod"), ("KeyId", &attackers)],
    )
    .await;
}

/// A policy whose Action has a multi-byte character around byte 4 is a validation error, not
/// a crash of the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_with_multibyte_action_is_refused() {
    let app = TestApp::start().await;
    let root = app.root();
    for action in ["kmsé", "km€:Encrypt", "é"] {
        let document = policy(vec![statement("Allow", &Who::Root.principal(), &[action])]);
        let reply = root.call("CreateKey", &[("Policy", &document)]).await;
        assert_eq!(reply.status, 400, "{action}: {}", reply.body);
    }
    root.ok("ListKeys", &[]).await; // the server is still up
}

const CRYPTO_ONLY: &str = "LTAI5tCryptoOnlyKey01";
const READ_ONLY: &str = "LTAI5tReadOnlyKey0001";
const LINK_ADMIN: &str = "LTAI5tLinkAdminKey001";

fn identity(statements: Value) -> String {
    json!({"Version": "1", "Statement": statements}).to_string()
}

/// Identity policies on access keys: a crypto-only, a read-only and an instance-admin key; the
/// key policy applies on top (deny wins either way); instance connect/disconnect is refused to
/// account members that hold no grant for it; refusals are 403 and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_policies_limit_what_an_access_key_may_do() {
    let keys = format!("acs:kms:{REGION}:{ACCOUNT}:key/*");
    let app = TestApp::start_with(harness::Setup {
        access_keys: vec![
            (
                CRYPTO_ONLY.into(),
                format!("acs:ram::{ACCOUNT}:user/crypto"),
                Some(identity(json!([{"Effect": "Allow",
                    "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": [keys]}]))),
            ),
            (
                READ_ONLY.into(),
                format!("acs:ram::{ACCOUNT}:user/reader"),
                Some(identity(json!([{"Effect": "Allow",
                    "Action": ["kms:Describe*", "kms:List*", "kms:Get*"], "Resource": "*"}]))),
            ),
            (
                LINK_ADMIN.into(),
                format!("acs:ram::{ACCOUNT}:user/linkadmin"),
                Some(identity(json!([{"Effect": "Allow",
                    "Action": ["kms:ConnectKmsInstance", "kms:DisconnectKmsInstance", "kms:GetKmsInstance"],
                    "Resource": format!("acs:kms:{REGION}:{ACCOUNT}:keystore/*")}]))),
            ),
        ],
        ..harness::Setup::default()
    })
    .await;
    let root = app.root();
    let visible = root.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let hidden = root.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The hidden key's policy denies the reader DescribeKey and the crypto key Encrypt.
    let denying = policy(vec![
        statement("Allow", &format!("acs:ram::{ACCOUNT}:*"), &["kms:*"]),
        statement(
            "Deny",
            &format!("acs:ram::{ACCOUNT}:user/crypto"),
            &["kms:Encrypt"],
        ),
        statement(
            "Deny",
            &format!("acs:ram::{ACCOUNT}:user/reader"),
            &["kms:DescribeKey"],
        ),
    ]);
    root.ok("SetKeyPolicy", &[("KeyId", &hidden), ("Policy", &denying)])
        .await;

    let forbidden = |reply: harness::Reply| {
        reply.expect("Forbidden.NoPermission", 403);
    };
    let crypto = app.client_for(CRYPTO_ONLY);
    let blob = crypto
        .ok("Encrypt", &[("KeyId", &visible), ("Plaintext", "p")])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    crypto.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
    forbidden(
        crypto
            .call("Encrypt", &[("KeyId", &hidden), ("Plaintext", "p")])
            .await,
    );
    for (action, params) in [
        ("DescribeKey", vec![("KeyId", visible.as_str())]),
        ("DisableKey", vec![("KeyId", visible.as_str())]),
        ("ListKeys", vec![]),
        ("CreateKey", vec![]),
        ("ListKmsInstances", vec![]),
        ("GetKmsInstance", vec![("KmsInstanceId", harness::SOFTWARE)]),
        (
            "DisconnectKmsInstance",
            vec![("KmsInstanceId", harness::SOFTWARE)],
        ),
    ] {
        forbidden(crypto.call(action, &params).await);
    }

    let reader = app.client_for(READ_ONLY);
    reader.ok("DescribeKey", &[("KeyId", &visible)]).await;
    forbidden(reader.call("DescribeKey", &[("KeyId", &hidden)]).await);
    forbidden(
        reader
            .call("Encrypt", &[("KeyId", &visible), ("Plaintext", "p")])
            .await,
    );
    let listed = reader.ok("ListKeys", &[("PageSize", "100")]).await;
    let ids: Vec<&str> = listed["Keys"]["Key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["KeyId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&visible.as_str()), "{listed}");
    assert!(!ids.contains(&hidden.as_str()), "{listed}");
    assert_eq!(listed["TotalCount"].as_u64(), Some(ids.len() as u64));
    let all = root.ok("ListKeys", &[("PageSize", "100")]).await;
    assert_eq!(all["TotalCount"].as_u64(), Some(ids.len() as u64 + 1));
    let instances = reader.ok("ListKmsInstances", &[]).await;
    assert_eq!(instances["TotalCount"], 2, "{instances}");

    let admin = app.client_for(LINK_ADMIN);
    // Authorized; a software instance just has no link to drive.
    admin
        .call(
            "DisconnectKmsInstance",
            &[("KmsInstanceId", harness::SOFTWARE)],
        )
        .await
        .expect("Rejected.UnsupportedOperation", 400);
    admin
        .ok("GetKmsInstance", &[("KmsInstanceId", harness::SOFTWARE)])
        .await;
    forbidden(admin.call("ListKmsInstances", &[]).await);
    forbidden(
        admin
            .call("Encrypt", &[("KeyId", &visible), ("Plaintext", "p")])
            .await,
    );

    // Members without an identity policy use keys but do not manage the link.
    let member = app.client(Who::App);
    member
        .ok("Encrypt", &[("KeyId", &visible), ("Plaintext", "p")])
        .await;
    member
        .ok("GetKmsInstance", &[("KmsInstanceId", harness::SOFTWARE)])
        .await;
    for action in ["ConnectKmsInstance", "DisconnectKmsInstance"] {
        forbidden(
            member
                .call(action, &[("KmsInstanceId", harness::SOFTWARE)])
                .await,
        );
    }
    root.call(
        "DisconnectKmsInstance",
        &[("KmsInstanceId", harness::SOFTWARE)],
    )
    .await
    .expect("Rejected.UnsupportedOperation", 400);

    // Refusals are audited with their code.
    let store = kms_connector::store::Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let events = store
        .query_audit(kms_connector::store::AuditQuery {
            action: Some("DisconnectKmsInstance".into()),
            ..kms_connector::store::AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.principal.ends_with("user/app") && e.result == "Forbidden.NoPermission"),
        "{events:?}"
    );
}

#[test]
fn identity_policies_are_checked_at_start() {
    let bad = "default_instance = \"kst-hzz68d1fd85software01\"\n[server]\nlisten = \"127.0.0.1:0\"\n[kms]\nregion = \"cn-hangzhou\"\naccount_id = \"1\"\n[[access_keys]]\naccess_key_id = \"AK\"\nsecret = { env = \"X\" }\nprincipal = \"acs:ram::1:user/a\"\npolicy = '{\"Version\":\"1\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"RAM\":[\"*\"]},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}'\n";
    let error = kms_connector::config::Config::from_toml(
        bad,
        std::iter::empty(),
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("access_keys AK: policy"), "{error}");
}
