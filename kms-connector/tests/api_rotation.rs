//! Key versions and rotation through the OpenAPI on software keys: CreateKey with automatic
//! rotation, CreateKeyVersion, UpdateRotationPolicy with its rules, Encrypt on the primary and
//! Decrypt / ReEncrypt with any version, the scheduler rotating a due key once per interval,
//! and a rotation cut between the new version and its promotion leaving one primary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use harness::{Client, TestApp};
use serde_json::Value;

const DAY: i64 = 86_400;

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

async fn meta(c: &Client, key: &str) -> Value {
    c.ok("DescribeKey", &[("KeyId", key)]).await["KeyMetadata"].clone()
}

async fn versions(c: &Client, key: &str) -> Vec<String> {
    let listed = c
        .ok("ListKeyVersions", &[("KeyId", key), ("PageSize", "100")])
        .await;
    listed["KeyVersions"]["KeyVersion"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| s(&v["KeyVersionId"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_and_rotation() {
    let app = TestApp::start().await;
    let c = app.root();
    let created = c
        .ok(
            "CreateKey",
            &[
                ("EnableAutomaticRotation", "true"),
                ("RotationInterval", "7d"),
            ],
        )
        .await["KeyMetadata"]
        .clone();
    let key = s(&created["KeyId"]);
    assert_eq!(created["AutomaticRotation"], "Enabled");
    assert_eq!(created["RotationInterval"], "604800s");
    assert_eq!(created["LastRotationDate"], created["CreationDate"]);
    assert!(created["NextRotationDate"].is_string(), "{created}");
    let v1 = s(&created["PrimaryKeyVersion"]);

    // Encrypt uses the primary version; a new version becomes primary.
    let blob1 = s(&c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "under v1")])
        .await["CiphertextBlob"]);
    let made = c.ok("CreateKeyVersion", &[("KeyId", &key)]).await;
    let v2 = s(&made["KeyVersion"]["KeyVersionId"]);
    assert_ne!(v1, v2);
    assert_eq!(s(&made["KeyVersion"]["KeyId"]), key);
    let after = meta(&c, &key).await;
    assert_eq!(s(&after["PrimaryKeyVersion"]), v2);
    let enc2 = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "under v2")])
        .await;
    assert_eq!(s(&enc2["KeyVersionId"]), v2);
    let blob2 = s(&enc2["CiphertextBlob"]);
    assert_eq!(&schemas::b64::decode(&blob2).unwrap()[..36], v2.as_bytes());
    // Decrypt works with any version; ReEncrypt moves an old blob to the primary.
    for (blob, plaintext, version) in [(&blob1, "under v1", &v1), (&blob2, "under v2", &v2)] {
        let dec = c.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
        assert_eq!(dec["Plaintext"], plaintext);
        assert_eq!(&s(&dec["KeyVersionId"]), version);
    }
    let moved = c
        .ok(
            "ReEncrypt",
            &[("CiphertextBlob", &blob1), ("DestinationKeyId", &key)],
        )
        .await;
    assert_eq!(s(&moved["KeyVersionId"]), v2);
    assert_eq!(versions(&c, &key).await, [v1.clone(), v2.clone()]);
    let described = c
        .ok(
            "DescribeKeyVersion",
            &[("KeyId", &key), ("KeyVersionId", &v1)],
        )
        .await;
    assert_eq!(s(&described["KeyVersion"]["KeyVersionId"]), v1);

    // The scheduler: past NextRotationDate, one new version; not again until the next one.
    app.advance_clock_and_sweep(8 * DAY).await;
    let rotated = versions(&c, &key).await;
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    let v3 = rotated[2].clone();
    assert_eq!(s(&meta(&c, &key).await["PrimaryKeyVersion"]), v3);
    app.advance_clock_and_sweep(DAY).await;
    assert_eq!(
        versions(&c, &key).await.len(),
        3,
        "rotated twice in one interval"
    );
    app.advance_clock_and_sweep(7 * DAY).await;
    assert_eq!(versions(&c, &key).await.len(), 4);
    for blob in [&blob1, &blob2] {
        c.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_policy_rules() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = s(&c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]);
    let plain = meta(&c, &key).await;
    assert_eq!(plain["AutomaticRotation"], "Disabled");
    assert!(plain.get("NextRotationDate").is_none(), "{plain}");
    for interval in ["6d", "366d", "7w", "x", "604799s"] {
        c.call(
            "UpdateRotationPolicy",
            &[
                ("KeyId", &key),
                ("EnableAutomaticRotation", "true"),
                ("RotationInterval", interval),
            ],
        )
        .await
        .expect("InvalidParameter", 400);
    }
    c.call(
        "UpdateRotationPolicy",
        &[("KeyId", &key), ("EnableAutomaticRotation", "true")],
    )
    .await
    .expect("MissingParameter", 400);
    c.call("UpdateRotationPolicy", &[("KeyId", &key)])
        .await
        .expect("MissingParameter", 400);
    c.ok(
        "UpdateRotationPolicy",
        &[
            ("KeyId", &key),
            ("EnableAutomaticRotation", "true"),
            ("RotationInterval", "168h"),
        ],
    )
    .await;
    let on = meta(&c, &key).await;
    assert_eq!(
        (
            on["AutomaticRotation"].as_str(),
            on["RotationInterval"].as_str()
        ),
        (Some("Enabled"), Some("604800s"))
    );
    c.ok(
        "UpdateRotationPolicy",
        &[("KeyId", &key), ("EnableAutomaticRotation", "false")],
    )
    .await;
    let off = meta(&c, &key).await;
    assert_eq!(off["AutomaticRotation"], "Disabled");
    assert!(off.get("NextRotationDate").is_none(), "{off}");
    c.call("CreateKey", &[("EnableAutomaticRotation", "true")])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "CreateKey",
        &[
            ("EnableAutomaticRotation", "true"),
            ("RotationInterval", "400d"),
        ],
    )
    .await
    .expect("InvalidParameter", 400);

    // Not on a disabled key (state matrix).
    c.ok("DisableKey", &[("KeyId", &key)]).await;
    for (action, params) in [
        ("CreateKeyVersion", vec![("KeyId", key.as_str())]),
        (
            "UpdateRotationPolicy",
            vec![
                ("KeyId", key.as_str()),
                ("EnableAutomaticRotation", "false"),
            ],
        ),
    ] {
        c.call(action, &params)
            .await
            .expect("Rejected.Disabled", 409);
    }
    // Only the owner's policies allow it.
    app.client(harness::Who::Stranger)
        .call("CreateKeyVersion", &[("KeyId", &key)])
        .await
        .expect("Forbidden.NoPermission", 403);
}

/// A rotation that fails between storing the new version and promoting it (a fault injected by
/// an SQLite trigger that aborts the promotion, as a crash at that point would end it) leaves
/// the key as it was: one version, the old primary. After a restart the next rotation makes
/// exactly one new primary and every earlier blob still decrypts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_a_new_version_and_its_promotion_leaves_one_primary() {
    use diesel::{Connection as _, RunQueryDsl as _, SqliteConnection};

    let app = TestApp::start().await;
    let c = app.root();
    let created = c.ok("CreateKey", &[]).await["KeyMetadata"].clone();
    let (key, v1) = (s(&created["KeyId"]), s(&created["PrimaryKeyVersion"]));
    let blob = s(&c
        .ok(
            "Encrypt",
            &[("KeyId", &key), ("Plaintext", "before the fault")],
        )
        .await["CiphertextBlob"]);

    let path = app.dir.path().join("kms.db");
    let mut db = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    diesel::sql_query(
        "CREATE TRIGGER injected_crash BEFORE UPDATE OF primary_key_version ON keys \
         BEGIN SELECT RAISE(ABORT, 'injected crash before the promotion'); END",
    )
    .execute(&mut db)
    .unwrap();
    let reply = c.call("CreateKeyVersion", &[("KeyId", &key)]).await;
    assert!(reply.status >= 500, "{}", reply.body);
    assert_eq!(versions(&c, &key).await, vec![v1.clone()]);
    assert_eq!(s(&meta(&c, &key).await["PrimaryKeyVersion"]), v1);

    diesel::sql_query("DROP TRIGGER injected_crash")
        .execute(&mut db)
        .unwrap();
    drop(db);
    app.handle.stop(true).await;
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let config =
        kms_connector::config::Config::from_toml(&text, std::iter::empty(), app.dir.path())
            .unwrap();
    let (port, _, handle) = harness::spawn(config, kms_connector::app::AppOptions::default());
    let c = c.at_port(port);
    let v2 = s(&c.ok("CreateKeyVersion", &[("KeyId", &key)]).await["KeyVersion"]["KeyVersionId"]);
    assert_eq!(versions(&c, &key).await, vec![v1, v2.clone()]);
    assert_eq!(s(&meta(&c, &key).await["PrimaryKeyVersion"]), v2);
    let dec = c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
    assert_eq!(dec["Plaintext"], "before the fault");
    drop(handle.stop(false));
}
