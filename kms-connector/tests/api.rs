//! The OpenAPI instance suite: key lifecycle, the state × operation matrix of spec §3.2, crypto
//! (both request signatures), data keys, ReEncrypt, DryRun, aliases as KeyIds, deletion
//! protection and scheduled deletion — one suite, parameterised by an instance [`Fixture`], run
//! here against the software instance; `api_external.rs` runs it against an external instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

#[path = "api/crypto.rs"]
mod crypto;

use harness::{ACCOUNT, Client, Fixture, REGION, TestApp};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn software_instance_suite() {
    let app = TestApp::start().await;
    instance_suite(&app, &Fixture::software()).await;
}

/// Everything a key of any instance kind does through the OpenAPI.
pub async fn instance_suite(app: &TestApp, fx: &Fixture) {
    metadata_and_lifecycle(app, fx).await;
    state_matrix(app, fx).await;
    crypto::crypto(app, fx).await;
    crypto::context_binding(app, fx).await;
    crypto::data_keys(app, fx).await;
    crypto::re_encrypt(app, fx).await;
    crypto::dry_run(app, fx).await;
    aliases_as_key_ids(app, fx).await;
    deletion_protection(app, fx).await;
    // Last: moves the sweeper's clock past every pending window.
    scheduled_deletion(app, fx).await;
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

async fn state_of(c: &Client, key: &str) -> String {
    let meta = c.ok("DescribeKey", &[("KeyId", key)]).await;
    s(&meta["KeyMetadata"]["KeyState"]).to_owned()
}

async fn encrypt(c: &Client, key: &str, plaintext: &str) -> String {
    let body = c
        .ok("Encrypt", &[("KeyId", key), ("Plaintext", plaintext)])
        .await;
    s(&body["CiphertextBlob"]).to_owned()
}

fn unique_alias(tag: &str) -> String {
    format!(
        "alias/{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn is_date(text: &str) -> bool {
    text.len() == 20 && text.as_bytes()[10] == b'T' && text.ends_with('Z')
}

async fn metadata_and_lifecycle(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let tags = r#"[{"TagKey":"team","TagValue":"kms"}]"#;
    let meta = fx
        .create(&c, &[("Description", "suite key ü & +/="), ("Tags", tags)])
        .await;
    let id = s(&meta["KeyId"]).to_owned();
    assert!(id.starts_with("key-hzz") && id.len() == 25, "{id}");
    for field in [
        "KeyId",
        "Arn",
        "KeyState",
        "KeySpec",
        "KeyUsage",
        "Origin",
        "ProtectionLevel",
        "Description",
        "Creator",
        "CreationDate",
        "MaterialExpireTime",
        "PrimaryKeyVersion",
        "LastRotationDate",
        "AutomaticRotation",
        "DeletionProtection",
        "DKMSInstanceId",
    ] {
        assert!(
            meta.get(field).is_some(),
            "KeyMetadata.{field} missing: {meta}"
        );
    }
    assert_eq!(
        meta["Arn"],
        json!(format!("acs:kms:{REGION}:{ACCOUNT}:key/{id}"))
    );
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["KeySpec"], "Aliyun_AES_256");
    assert_eq!(meta["KeyUsage"], "ENCRYPT/DECRYPT");
    assert_eq!(meta["Origin"], "Aliyun_KMS");
    assert_eq!(meta["Creator"], ACCOUNT);
    assert_eq!(meta["Description"], "suite key ü & +/=");
    assert_eq!(meta["DKMSInstanceId"], json!(fx.instance_id));
    assert_eq!(meta["DeletionProtection"], "Disabled");
    assert_eq!(meta["AutomaticRotation"], "Disabled");
    assert!(is_date(s(&meta["CreationDate"])), "{meta}");
    assert_eq!(meta["LastRotationDate"], meta["CreationDate"]);
    assert_eq!(s(&meta["PrimaryKeyVersion"]).len(), 36);
    assert!(meta.get("DeleteDate").is_none());

    let described = c.ok("DescribeKey", &[("KeyId", &id)]).await;
    assert_eq!(described["KeyMetadata"], meta);
    let tags = c.ok("ListResourceTags", &[("KeyId", &id)]).await;
    assert_eq!(
        tags["Tags"]["Tag"],
        json!([{"KeyId": id, "TagKey": "team", "TagValue": "kms"}])
    );
    let policy = c
        .ok("GetKeyPolicy", &[("KeyId", &id), ("PolicyName", "default")])
        .await;
    assert!(
        s(&policy["Policy"]).contains(&format!("acs:ram::{ACCOUNT}:*")),
        "{policy}"
    );

    c.ok(
        "UpdateKeyDescription",
        &[("KeyId", &id), ("Description", "new")],
    )
    .await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await;
    assert_eq!(meta["KeyMetadata"]["Description"], "new");
    c.ok(
        "UpdateKeyDescription",
        &[("KeyId", &id), ("Description", "")],
    )
    .await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await;
    assert_eq!(meta["KeyMetadata"]["Description"], "");

    for (action, state) in [
        ("DisableKey", "Disabled"),
        ("DisableKey", "Disabled"),
        ("EnableKey", "Enabled"),
        ("EnableKey", "Enabled"),
    ] {
        c.ok(action, &[("KeyId", &id)]).await;
        assert_eq!(state_of(&c, &id).await, state, "after {action}");
    }
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &id), ("PendingWindowInDays", "7")],
    )
    .await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await["KeyMetadata"].clone();
    assert_eq!(meta["KeyState"], "PendingDeletion");
    let delete_date = s(&meta["DeleteDate"]);
    assert!(
        is_date(delete_date) && delete_date > s(&meta["CreationDate"]),
        "{meta}"
    );
    c.ok("CancelKeyDeletion", &[("KeyId", &id)]).await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await["KeyMetadata"].clone();
    assert_eq!(meta["KeyState"], "Enabled");
    assert!(meta.get("DeleteDate").is_none(), "{meta}");

    let filters = format!(
        r#"[{{"Key":"DKMSInstanceId","Values":["{}"]}},{{"Key":"KeyState","Values":["Enabled"]}}]"#,
        fx.instance_id
    );
    let listed = c
        .ok("ListKeys", &[("Filters", &filters), ("PageSize", "100")])
        .await;
    let ids: Vec<&str> = listed["Keys"]["Key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| s(&k["KeyId"]))
        .collect();
    assert!(ids.contains(&id.as_str()), "{listed}");
    if !fx.versions {
        // Seed 000: the versions of external keys live in the external key manager.
        let version = s(&meta["PrimaryKeyVersion"]).to_owned();
        for (action, params) in [
            ("ListKeyVersions", vec![("KeyId", id.as_str())]),
            (
                "DescribeKeyVersion",
                vec![("KeyId", id.as_str()), ("KeyVersionId", version.as_str())],
            ),
        ] {
            c.call(action, &params)
                .await
                .expect("UnsupportedOperation", 400);
        }
        // Nor do they rotate (seeds 000/004).
        c.call("CreateKeyVersion", &[("KeyId", id.as_str())])
            .await
            .expect("UnsupportedOperation", 400);
        c.call(
            "UpdateRotationPolicy",
            &[
                ("KeyId", id.as_str()),
                ("EnableAutomaticRotation", "true"),
                ("RotationInterval", "30d"),
            ],
        )
        .await
        .expect("Rejected.UnsupportedOperation", 400);
        let extra = (fx.extra)().await;
        let mut params: Vec<(&str, &str)> = vec![
            ("DKMSInstanceId", &fx.instance_id),
            ("EnableAutomaticRotation", "true"),
            ("RotationInterval", "30d"),
        ];
        params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.call("CreateKey", &params)
            .await
            .expect("Rejected.UnsupportedOperation", 400);
        return;
    }
    let versions = c.ok("ListKeyVersions", &[("KeyId", &id)]).await;
    assert_eq!(versions["TotalCount"], 1);
    let version = s(&versions["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]).to_owned();
    assert_eq!(version, s(&meta["PrimaryKeyVersion"]));
    let described = c
        .ok(
            "DescribeKeyVersion",
            &[("KeyId", &id), ("KeyVersionId", &version)],
        )
        .await;
    assert_eq!(described["KeyVersion"]["KeyId"], json!(id));
}

const OK: &str = "OK";
const STATES: [&str; 3] = ["Enabled", "Disabled", "PendingDeletion"];

/// A key in `state`, and a ciphertext made while it was Enabled.
async fn key_in(c: &Client, fx: &Fixture, state: &str) -> (String, String) {
    let id = fx.key(c).await;
    let blob = encrypt(c, &id, "matrix").await;
    match state {
        "Enabled" => {}
        "Disabled" => drop(c.ok("DisableKey", &[("KeyId", &id)]).await),
        "PendingDeletion" => drop(
            c.ok(
                "ScheduleKeyDeletion",
                &[("KeyId", &id), ("PendingWindowInDays", "7")],
            )
            .await,
        ),
        other => panic!("no way to reach {other}"),
    }
    (id, blob)
}

/// Spec §3.2 through the API. `PendingImport` needs key import, which the connector refuses
/// (`Origin=EXTERNAL`); its column is covered by the unit test of `check_state`.
async fn state_matrix(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let smf = "Rejected.StateModifiedFailed";
    let pd = "Rejected.PendingDeletion";
    let rows: [(&str, [&str; 3]); 11] = [
        ("Encrypt", [OK, "Rejected.Disabled", pd]),
        ("Decrypt", [OK, "Rejected.Disabled", pd]),
        ("GenerateDataKey", [OK, "Rejected.Disabled", pd]),
        ("EnableKey", [OK, OK, smf]),
        ("DisableKey", [OK, OK, smf]),
        ("ScheduleKeyDeletion", [OK, OK, smf]),
        ("CancelKeyDeletion", [smf, smf, OK]),
        ("UpdateKeyDescription", [OK, OK, pd]),
        ("TagResource", [OK, OK, pd]),
        ("CreateAlias", [OK, OK, smf]),
        ("UpdateAlias", [OK, OK, pd]),
    ];
    for (action, expected) in rows {
        for (state, want) in STATES.iter().zip(expected) {
            let (id, blob) = key_in(&c, fx, state).await;
            let alias = unique_alias("matrix");
            if action == "UpdateAlias" {
                let other = fx.key(&c).await;
                c.ok("CreateAlias", &[("AliasName", &alias), ("KeyId", &other)])
                    .await;
            }
            let tags = r#"[{"TagKey":"k","TagValue":"v"}]"#;
            let params: Vec<(&str, &str)> = match action {
                "Decrypt" => vec![("CiphertextBlob", &blob)],
                "Encrypt" => vec![("KeyId", &id), ("Plaintext", "p")],
                "ScheduleKeyDeletion" => vec![("KeyId", &id), ("PendingWindowInDays", "7")],
                "UpdateKeyDescription" => vec![("KeyId", &id), ("Description", "d")],
                "TagResource" => vec![("KeyId", &id), ("Tags", tags)],
                "CreateAlias" | "UpdateAlias" => vec![("AliasName", &alias), ("KeyId", &id)],
                _ => vec![("KeyId", &id)],
            };
            let reply = c.call(action, &params).await;
            if want != OK {
                reply.expect(want, 409);
                continue;
            }
            assert_eq!(reply.status, 200, "{action} × {state}: {}", reply.body);
            let after = match action {
                "EnableKey" | "CancelKeyDeletion" => Some("Enabled"),
                "DisableKey" => Some("Disabled"),
                "ScheduleKeyDeletion" => Some("PendingDeletion"),
                _ => None,
            };
            if let Some(after) = after {
                assert_eq!(state_of(&c, &id).await, after, "{action} × {state}");
            }
            if action.ends_with("Alias") {
                let meta = c.ok("DescribeKey", &[("KeyId", &alias)]).await;
                assert_eq!(meta["KeyMetadata"]["KeyId"], json!(id));
            }
        }
    }
}

async fn aliases_as_key_ids(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let id = fx.key(&c).await;
    let alias = unique_alias("suite");
    c.ok("CreateAlias", &[("AliasName", &alias), ("KeyId", &id)])
        .await;
    let key_arn = format!("acs:kms:{REGION}:{ACCOUNT}:key/{id}");
    let alias_arn = format!("acs:kms:{REGION}:{ACCOUNT}:{alias}");
    for name in [&id, &alias, &key_arn, &alias_arn] {
        let meta = c.ok("DescribeKey", &[("KeyId", name)]).await;
        assert_eq!(meta["KeyMetadata"]["KeyId"], json!(id), "{name}");
        let enc = c
            .ok("Encrypt", &[("KeyId", name), ("Plaintext", "via alias")])
            .await;
        assert_eq!(enc["KeyId"], json!(id), "{name}");
        let gdk = c.ok("GenerateDataKey", &[("KeyId", name)]).await;
        assert_eq!(gdk["KeyId"], json!(id), "{name}");
        let moved = c
            .ok(
                "ReEncrypt",
                &[
                    ("CiphertextBlob", s(&enc["CiphertextBlob"])),
                    ("DestinationKeyId", name),
                ],
            )
            .await;
        assert_eq!(moved["KeyId"], json!(id), "{name}");
    }
    let listed = c.ok("ListAliasesByKeyId", &[("KeyId", &alias)]).await;
    assert_eq!(listed["Aliases"]["Alias"][0]["AliasName"], json!(alias));
    assert_eq!(listed["Aliases"]["Alias"][0]["AliasArn"], json!(alias_arn));
    c.ok("DisableKey", &[("KeyId", &alias_arn)]).await;
    assert_eq!(state_of(&c, &id).await, "Disabled");
    c.ok("EnableKey", &[("KeyId", &alias)]).await;
    for (name, code) in [
        (
            format!("acs:kms:{REGION}:999999999:key/{id}"),
            "Forbidden.KeyNotFound",
        ),
        (
            format!("acs:kms:cn-beijing:{ACCOUNT}:key/{id}"),
            "Forbidden.KeyNotFound",
        ),
        (
            format!("acs:kms:{REGION}:999999999:{alias}"),
            "Forbidden.AliasNotFound",
        ),
        (unique_alias("missing"), "Forbidden.AliasNotFound"),
        (
            "key-hzz68d1fd85nosuchkey0".to_owned(),
            "Forbidden.KeyNotFound",
        ),
    ] {
        c.call("DescribeKey", &[("KeyId", &name)])
            .await
            .expect(code, 404);
        c.call("Encrypt", &[("KeyId", &name), ("Plaintext", "p")])
            .await
            .expect(code, 404);
    }
}

async fn deletion_protection(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let id = fx.key(&c).await;
    let arn = format!("acs:kms:{REGION}:{ACCOUNT}:key/{id}");
    c.ok(
        "SetDeletionProtection",
        &[
            ("ProtectedResourceArn", &arn),
            ("EnableDeletionProtection", "true"),
            ("DeletionProtectionDescription", "keep"),
        ],
    )
    .await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await["KeyMetadata"].clone();
    assert_eq!(
        (
            &meta["DeletionProtection"],
            &meta["DeletionProtectionDescription"]
        ),
        (&json!("Enabled"), &json!("keep"))
    );
    c.call(
        "ScheduleKeyDeletion",
        &[("KeyId", &id), ("PendingWindowInDays", "7")],
    )
    .await
    .expect("Rejected.StateModifiedFailed", 409);
    assert_eq!(state_of(&c, &id).await, "Enabled");
    c.ok(
        "SetDeletionProtection",
        &[("KeyId", &id), ("EnableDeletionProtection", "false")],
    )
    .await;
    let meta = c.ok("DescribeKey", &[("KeyId", &id)]).await["KeyMetadata"].clone();
    assert_eq!(meta["DeletionProtection"], "Disabled");
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &id), ("PendingWindowInDays", "7")],
    )
    .await;
    c.call(
        "SetDeletionProtection",
        &[("KeyId", &id), ("EnableDeletionProtection", "true")],
    )
    .await
    .expect("Rejected.PendingDeletion", 409);
    c.call("SetDeletionProtection", &[("KeyId", &id)])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "SetDeletionProtection",
        &[("EnableDeletionProtection", "true")],
    )
    .await
    .expect("MissingParameter", 400);
}

async fn scheduled_deletion(app: &TestApp, fx: &Fixture) {
    let c = app.root();
    let (doomed, kept) = (fx.key(&c).await, fx.key(&c).await);
    let alias = unique_alias("doomed");
    c.ok("CreateAlias", &[("AliasName", &alias), ("KeyId", &doomed)])
        .await;
    let blob = encrypt(&c, &doomed, "gone soon").await;
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &doomed), ("PendingWindowInDays", "7")],
    )
    .await;
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &kept), ("PendingWindowInDays", "30")],
    )
    .await;
    app.advance_clock_and_sweep(8 * 86_400).await;
    c.call("DescribeKey", &[("KeyId", &doomed)])
        .await
        .expect("Forbidden.KeyNotFound", 404);
    c.call("Decrypt", &[("CiphertextBlob", &blob)])
        .await
        .expect("Forbidden.KeyNotFound", 404);
    c.call("DescribeKey", &[("KeyId", &alias)])
        .await
        .expect("Forbidden.AliasNotFound", 404);
    assert_eq!(state_of(&c, &kept).await, "PendingDeletion");
    app.clock_offset
        .store(0, std::sync::atomic::Ordering::SeqCst);
}
