//! Key management validation: every CreateKey rule (and that a refused CreateKey leaves
//! nothing behind), ListKeys paging and filters, parameter rules of the lifecycle calls, and
//! key versions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;
#[path = "common/api.rs"]
mod harness;

use harness::{Client, SOFTWARE, TestApp};
use serde_json::Value;

type Params<'a> = Vec<(&'a str, &'a str)>;

async fn total_keys(c: &Client) -> u64 {
    c.ok("ListKeys", &[]).await["TotalCount"].as_u64().unwrap()
}

async fn new_key(c: &Client) -> String {
    c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_key_rules() {
    let app = TestApp::start().await;
    let c = app.root();
    let long = "d".repeat(8193);
    let many_tags = format!(
        "[{}]",
        (0..21)
            .map(|i| format!(r#"{{"TagKey":"k{i}","TagValue":"v"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: Vec<(Params, &str, u16)> = vec![
        (
            vec![("DKMSInstanceId", "kst-hzz68d1fd85nosuchinst")],
            "Forbidden.DKMSInstanceNotFound",
            403,
        ),
        (vec![("DKMSInstanceId", "kst-bad")], "InvalidParameter", 400),
        (vec![("KeySpec", "Aliyun_SM4")], "UnsupportedOperation", 400),
        (vec![("KeySpec", "EC_SM2")], "UnsupportedOperation", 400),
        (
            vec![("KeySpec", "EC_P256K"), ("KeyUsage", "ENCRYPT/DECRYPT")],
            "UnsupportedOperation",
            400,
        ),
        (vec![("KeySpec", "Bogus_Spec")], "InvalidParameter", 400),
        (
            vec![("KeyUsage", "SIGN/VERIFY")],
            "UnsupportedOperation",
            400,
        ),
        (vec![("KeyUsage", "ENCRYPT")], "InvalidParameter", 400),
        (vec![("Origin", "EXTERNAL")], "UnsupportedOperation", 400),
        (vec![("Origin", "aliyun_kms")], "InvalidParameter", 400),
        (vec![("ProtectionLevel", "GOLD")], "InvalidParameter", 400),
        (
            vec![("Description", long.as_str())],
            "InvalidParameter",
            400,
        ),
        (
            vec![("ExternalKeyId", "some-external-key")],
            "InvalidParameter",
            400,
        ),
        (
            vec![
                ("EnableAutomaticRotation", "true"),
                ("RotationInterval", "3d"),
            ],
            "InvalidParameter",
            400,
        ),
        (
            vec![("EnableAutomaticRotation", "yes")],
            "InvalidParameter",
            400,
        ),
        (vec![("Tags", many_tags.as_str())], "InvalidParameter", 400),
        (
            vec![("Tags", r#"[{"TagKey":"aliyun-x","TagValue":"v"}]"#)],
            "InvalidParameter.TagKey",
            400,
        ),
        (
            vec![("Tags", r#"[{"TagKey":"acs:x","TagValue":"v"}]"#)],
            "InvalidParameter.TagKey",
            400,
        ),
        (
            vec![("Tags", r#"[{"TagKey":"k","TagValue":"bad#value"}]"#)],
            "InvalidParameter.TagValue",
            400,
        ),
        (
            vec![(
                "Tags",
                r#"[{"TagKey":"k","TagValue":"1"},{"TagKey":"k","TagValue":"2"}]"#,
            )],
            "Duplicate.TagKey",
            400,
        ),
        (vec![("Tags", "not json")], "InvalidParameter", 400),
    ];
    for (params, code, status) in &cases {
        let reply = c.call("CreateKey", params).await;
        assert_eq!(
            (reply.code(), reply.status),
            (*code, *status),
            "{params:?}: {}",
            reply.body
        );
    }
    assert_eq!(
        total_keys(&c).await,
        0,
        "refused CreateKey calls leave nothing behind"
    );

    let ok = [
        vec![],
        vec![
            ("DKMSInstanceId", SOFTWARE),
            ("KeySpec", "Aliyun_AES_256"),
            ("KeyUsage", "ENCRYPT/DECRYPT"),
            ("Origin", "Aliyun_KMS"),
        ],
        vec![("ProtectionLevel", "HSM"), ("Description", &long[..8192])],
        vec![("EnableAutomaticRotation", "false")],
    ];
    for params in &ok {
        let meta = c.ok("CreateKey", params).await["KeyMetadata"].clone();
        assert_eq!(meta["DKMSInstanceId"], SOFTWARE);
        assert_eq!(
            meta["ProtectionLevel"], "SOFTWARE",
            "the instance decides the protection level"
        );
    }
    assert_eq!(total_keys(&c).await, ok.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_pages_and_filters() {
    let app = TestApp::start().await;
    let c = app.root();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_key(&c).await);
    }
    let mut seen = Vec::new();
    for page in ["1", "2", "3"] {
        let body = c
            .ok("ListKeys", &[("PageNumber", page), ("PageSize", "2")])
            .await;
        assert_eq!(
            (body["TotalCount"].as_u64(), body["PageSize"].as_u64()),
            (Some(5), Some(2))
        );
        assert_eq!(body["PageNumber"].as_u64(), Some(page.parse().unwrap()));
        for key in body["Keys"]["Key"].as_array().unwrap() {
            let id = key["KeyId"].as_str().unwrap().to_owned();
            assert!(
                key["KeyArn"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!(":key/{id}"))
            );
            seen.push(id);
        }
    }
    assert_eq!(seen, ids, "oldest first, every key once");
    for id in &ids[..2] {
        c.ok("DisableKey", &[("KeyId", id)]).await;
    }
    let count = |body: Value| body["TotalCount"].as_u64().unwrap();
    for (filters, expected) in [
        (r#"[{"Key":"KeyState","Values":["Disabled"]}]"#, 2),
        (r#"[{"Key":"KeyState","Values":["Enabled","Disabled"]}]"#, 5),
        (
            r#"[{"Key":"KeyState","Values":["Enabled"]},{"Key":"KeyState","Values":["Disabled"]}]"#,
            5,
        ),
        (
            r#"[{"Key":"KeyState","Values":["Disabled"]},{"Key":"KeySpec","Values":["Aliyun_AES_256"]}]"#,
            2,
        ),
        (
            r#"[{"Key":"DKMSInstanceId","Values":["kst-hzz68d1fd85spareinst1"]}]"#,
            0,
        ),
        (
            r#"[{"Key":"ProtectionLevel","Values":["SOFTWARE"]},{"Key":"KeyUsage","Values":["ENCRYPT/DECRYPT"]}]"#,
            5,
        ),
        (r#"[{"Key":"CreatorType","Values":["Service"]}]"#, 0),
        (r#"[{"Key":"CreatorType","Values":["User"]}]"#, 5),
        ("[]", 5),
    ] {
        assert_eq!(
            count(c.ok("ListKeys", &[("Filters", filters)]).await),
            expected,
            "{filters}"
        );
    }
    for bad in [
        vec![("PageSize", "0")],
        vec![("PageSize", "101")],
        vec![("PageNumber", "0")],
        vec![("PageNumber", "x")],
        vec![("Filters", "{}")],
        vec![("Filters", r#"[{"Key":"Color","Values":["red"]}]"#)],
        vec![("Filters", r#"[{"Key":"KeyState","Values":["On"]}]"#)],
    ] {
        c.call("ListKeys", &bad)
            .await
            .expect("InvalidParameter", 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_parameters() {
    let app = TestApp::start().await;
    let c = app.root();
    let id = new_key(&c).await;
    for action in [
        "DescribeKey",
        "EnableKey",
        "DisableKey",
        "CancelKeyDeletion",
        "ListKeyVersions",
        "GetKeyPolicy",
    ] {
        c.call(action, &[]).await.expect("MissingParameter", 400);
        // Shaped like a key id but none: not found, as Alibaba's SDK users branch on.
        for absent in [
            "KEY-UPPER",
            "key-hzz",
            "08C33A6F-4E0A-4A1B-A3FA-7DDFA1D4ABCD",
        ] {
            c.call(action, &[("KeyId", absent)])
                .await
                .expect("Forbidden.KeyNotFound", 404);
            c.call(
                action,
                &[(
                    "KeyId",
                    &format!("acs:kms:cn-hangzhou:1540355698848:key/{absent}"),
                )],
            )
            .await
            .expect("Forbidden.KeyNotFound", 404);
        }
        // Text that can never be a key id.
        let long = "k".repeat(129);
        for impossible in ["key id", "key/x", "ключ", long.as_str()] {
            c.call(action, &[("KeyId", impossible)])
                .await
                .expect("InvalidParameter", 400);
        }
    }
    c.call("ScheduleKeyDeletion", &[("KeyId", &id)])
        .await
        .expect("MissingParameter", 400);
    for days in ["6", "367", "x", "-7"] {
        c.call(
            "ScheduleKeyDeletion",
            &[("KeyId", &id), ("PendingWindowInDays", days)],
        )
        .await
        .expect("InvalidParameter", 400);
    }
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &id), ("PendingWindowInDays", "366")],
    )
    .await;
    c.ok("CancelKeyDeletion", &[("KeyId", &id)]).await;
    c.call("UpdateKeyDescription", &[("KeyId", &id)])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "UpdateKeyDescription",
        &[("KeyId", &id), ("Description", &"d".repeat(8193))],
    )
    .await
    .expect("InvalidParameter", 400);
    c.call(
        "SetDeletionProtection",
        &[("KeyId", &id), ("EnableDeletionProtection", "on")],
    )
    .await
    .expect("InvalidParameter", 400);

    let other = new_key(&c).await;
    let versions = c.ok("ListKeyVersions", &[("KeyId", &other)]).await;
    let other_version = versions["KeyVersions"]["KeyVersion"][0]["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    c.call(
        "DescribeKeyVersion",
        &[("KeyId", &id), ("KeyVersionId", &other_version)],
    )
    .await
    .expect("Forbidden.KeyVersionNotFound", 404);
    c.call(
        "DescribeKeyVersion",
        &[("KeyId", &id), ("KeyVersionId", "v1")],
    )
    .await
    .expect("InvalidParameter", 400);
    c.call("DescribeKeyVersion", &[("KeyId", &id)])
        .await
        .expect("MissingParameter", 400);
    c.call("ListKeyVersions", &[("KeyId", &id), ("PageSize", "101")])
        .await
        .expect("InvalidParameter", 400);
}

/// Issue: the deletion sweep took the 100 earliest due keys across all instances, so a backlog
/// of another replica's instance starved this replica's keys. Each served instance now gets its
/// own batch: 150 long-due keys of an instance served elsewhere do not stop this one's key from
/// being deleted, and are left to their own replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deletion_sweep_is_fair_across_instances() {
    use kms_connector::store::{InstanceKind, KeyState, StateChange, Store};
    let app = TestApp::start().await;
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let elsewhere = "kst-hzz68d1fd85elsewhere1";
    store
        .create_instance(fixtures::instance(elsewhere, InstanceKind::Software))
        .await
        .unwrap();
    for i in 0..150 {
        let id = format!("key-elsewhere-{i:03}");
        let at = fixtures::T0;
        store
            .create_key(
                fixtures::new_key(&id, elsewhere, at),
                fixtures::version(&id, at),
                vec![],
                None,
            )
            .await
            .unwrap();
        store
            .compare_and_set_state(
                &id,
                StateChange {
                    expected: KeyState::Enabled,
                    new: KeyState::PendingDeletion,
                    delete_date: Some(at.plus_secs(fixtures::DAY_SECS)),
                },
            )
            .await
            .unwrap();
    }
    let c = app.root();
    let key = new_key(&c).await;
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &key), ("PendingWindowInDays", "7")],
    )
    .await;
    app.advance_clock_and_sweep(8 * fixtures::DAY_SECS).await;
    c.call("DescribeKey", &[("KeyId", &key)])
        .await
        .expect("Forbidden.KeyNotFound", 404);
    assert!(store.get_key("key-elsewhere-000").await.is_ok());
}
