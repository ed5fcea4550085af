//! Aliases (CreateAlias, UpdateAlias, DeleteAlias, ListAliases, ListAliasesByKeyId) and tags,
//! old API (TagResource, UntagResource, ListResourceTags: JSON parameters) and new API
//! (TagResources, UntagResources, ListTagResources: flattened lists, NextToken), with every
//! validation rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use harness::{ACCOUNT, Client, REGION, TestApp};
use serde_json::{Value, json};

async fn new_key(c: &Client) -> String {
    c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(body: &Value) -> Vec<String> {
    body["Aliases"]["Alias"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["AliasName"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases() {
    let app = TestApp::start().await;
    let c = app.root();
    let (a, b) = (new_key(&c).await, new_key(&c).await);
    for name in ["alias/app-1", "alias/app/2", "alias/app_3", "alias/z"] {
        c.ok("CreateAlias", &[("AliasName", name), ("KeyId", &a)])
            .await;
    }
    c.call(
        "CreateAlias",
        &[("AliasName", "alias/app-1"), ("KeyId", &b)],
    )
    .await
    .expect("AliasAlreadyExists", 400);
    for bad in [
        "app-1",
        "alias/",
        "alias/acs-reserved",
        "alias/acs",
        "alias/with space",
        "alias/ü",
        &format!("alias/{}", "a".repeat(256)),
    ] {
        let reply = c
            .call("CreateAlias", &[("AliasName", bad), ("KeyId", &a)])
            .await;
        reply.expect("InvalidParameter", 400);
        assert!(
            reply.message().contains("AliasName"),
            "{bad}: {}",
            reply.body
        );
    }
    c.call("CreateAlias", &[("AliasName", "alias/x")])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "CreateAlias",
        &[
            ("AliasName", "alias/x"),
            ("KeyId", "key-hzz68d1fd85nosuchkey0"),
        ],
    )
    .await
    .expect("Forbidden.KeyNotFound", 404);

    let listed = c.ok("ListAliases", &[]).await;
    assert_eq!(listed["TotalCount"], 4);
    assert_eq!(
        names(&listed),
        ["alias/app-1", "alias/app/2", "alias/app_3", "alias/z"]
    );
    assert_eq!(
        listed["Aliases"]["Alias"][0]["AliasArn"],
        json!(format!("acs:kms:{REGION}:{ACCOUNT}:alias/app-1"))
    );
    assert_eq!(listed["Aliases"]["Alias"][0]["KeyId"], json!(a));
    let page = c
        .ok("ListAliases", &[("PageNumber", "2"), ("PageSize", "3")])
        .await;
    assert_eq!(names(&page), ["alias/z"]);
    c.call("ListAliases", &[("PageSize", "101")])
        .await
        .expect("InvalidParameter", 400);

    c.ok("UpdateAlias", &[("AliasName", "alias/z"), ("KeyId", &b)])
        .await;
    assert_eq!(
        names(&c.ok("ListAliasesByKeyId", &[("KeyId", &b)]).await),
        ["alias/z"]
    );
    let by_a = c
        .ok("ListAliasesByKeyId", &[("KeyId", &a), ("PageSize", "2")])
        .await;
    assert_eq!(
        (by_a["TotalCount"].as_u64(), names(&by_a).len()),
        (Some(3), 2)
    );
    c.call("UpdateAlias", &[("AliasName", "alias/nope"), ("KeyId", &b)])
        .await
        .expect("Forbidden.AliasNotFound", 404);
    c.call(
        "UpdateAlias",
        &[
            ("AliasName", "alias/z"),
            ("KeyId", "key-hzz68d1fd85nosuchkey0"),
        ],
    )
    .await
    .expect("Forbidden.KeyNotFound", 404);

    // DeleteAlias works in every key state.
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &b), ("PendingWindowInDays", "7")],
    )
    .await;
    c.ok("DeleteAlias", &[("AliasName", "alias/z")]).await;
    c.call("DeleteAlias", &[("AliasName", "alias/z")])
        .await
        .expect("Forbidden.AliasNotFound", 404);
    c.call("DescribeKey", &[("KeyId", "alias/z")])
        .await
        .expect("Forbidden.AliasNotFound", 404);
    c.call("DeleteAlias", &[])
        .await
        .expect("MissingParameter", 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_tag_api() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = new_key(&c).await;
    c.ok("TagResource", &[("KeyId", &key), ("Tags", r#"[{"TagKey":"env","TagValue":"prod"},{"TagKey":"a/b\\c_d-e.f+g=h:i@j k","TagValue":""}]"#)]).await;
    c.ok(
        "TagResource",
        &[
            ("KeyId", &key),
            ("Tags", r#"[{"TagKey":"env","TagValue":"test"}]"#),
        ],
    )
    .await;
    let tags = c.ok("ListResourceTags", &[("KeyId", &key)]).await;
    assert_eq!(
        tags["Tags"]["Tag"],
        json!([{"KeyId": key, "TagKey": "a/b\\c_d-e.f+g=h:i@j k", "TagValue": ""}, {"KeyId": key, "TagKey": "env", "TagValue": "test"}])
    );
    c.ok(
        "UntagResource",
        &[("KeyId", &key), ("TagKeys", r#"["env","absent"]"#)],
    )
    .await;
    assert_eq!(
        c.ok("ListResourceTags", &[("KeyId", &key)]).await["Tags"]["Tag"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let twenty: Vec<String> = (0..19)
        .map(|i| format!(r#"{{"TagKey":"k{i}","TagValue":"v"}}"#))
        .collect();
    c.ok(
        "TagResource",
        &[
            ("KeyId", &key),
            ("Tags", &format!("[{}]", twenty.join(","))),
        ],
    )
    .await;
    c.call(
        "TagResource",
        &[
            ("KeyId", &key),
            ("Tags", r#"[{"TagKey":"one-too-many","TagValue":"v"}]"#),
        ],
    )
    .await
    .expect("InvalidParameter", 400);
    for (tags, code) in [
        (
            r#"[{"TagKey":"aliyun","TagValue":"v"}]"#,
            "InvalidParameter.TagKey",
        ),
        (
            r#"[{"TagKey":"ACS:x","TagValue":"v"}]"#,
            "InvalidParameter.TagKey",
        ),
        (
            r#"[{"TagKey":"","TagValue":"v"}]"#,
            "InvalidParameter.TagKey",
        ),
        (
            &format!(r#"[{{"TagKey":"{}","TagValue":"v"}}]"#, "k".repeat(129)),
            "InvalidParameter.TagKey",
        ),
        (
            &format!(r#"[{{"TagKey":"k","TagValue":"{}"}}]"#, "v".repeat(129)),
            "InvalidParameter.TagValue",
        ),
        (
            r#"[{"TagKey":"k0","TagValue":"v"},{"TagKey":"k0","TagValue":"w"}]"#,
            "Duplicate.TagKey",
        ),
        ("{}", "InvalidParameter"),
    ] {
        c.call("TagResource", &[("KeyId", &key), ("Tags", tags)])
            .await
            .expect(code, 400);
    }
    c.call("TagResource", &[("KeyId", &key)])
        .await
        .expect("MissingParameter", 400);
    c.call(
        "TagResource",
        &[
            ("SecretName", "db"),
            ("Tags", r#"[{"TagKey":"k","TagValue":"v"}]"#),
        ],
    )
    .await
    .expect("UnsupportedOperation", 400);
    c.call("UntagResource", &[("KeyId", &key), ("TagKeys", "k0")])
        .await
        .expect("InvalidParameter", 400);
    c.call("UntagResource", &[("KeyId", &key), ("TagKeys", "[]")])
        .await
        .expect("InvalidParameter", 400);
    c.call(
        "ListResourceTags",
        &[("KeyId", "key-hzz68d1fd85nosuchkey0")],
    )
    .await
    .expect("Forbidden.KeyNotFound", 404);
}

/// Calls with owned parameter values (the flattened lists are built at run time).
async fn send(c: &Client, action: &str, params: Vec<(&str, String)>) -> harness::Reply {
    let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.call(action, &borrowed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tag_api() {
    let app = TestApp::start().await;
    let c = app.root();
    let (a, b, untagged) = (new_key(&c).await, new_key(&c).await, new_key(&c).await);
    let scope = [("RegionId", REGION), ("ResourceType", "key")];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        scope
            .iter()
            .chain(extra)
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    let tag = with(&[
        ("ResourceId.1", &a),
        ("ResourceId.2", &b),
        ("Tag.1.Key", "team"),
        ("Tag.1.Value", "kms"),
        ("Tag.2.Key", "env"),
        ("Tag.2.Value", "prod"),
    ]);
    send(&c, "TagResources", tag).await.ok();
    send(
        &c,
        "TagResources",
        with(&[
            ("ResourceId.1", &b),
            ("Tag.1.Key", "only-b"),
            ("Tag.1.Value", "x"),
        ]),
    )
    .await
    .ok();

    let listed = send(
        &c,
        "ListTagResources",
        with(&[("ResourceId.1", &a), ("ResourceId.2", &b)]),
    )
    .await
    .ok();
    let rows = listed["TagResources"]["TagResource"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["ResourceType"], "key");
    assert_eq!(listed["NextToken"], "");
    let filtered = send(
        &c,
        "ListTagResources",
        with(&[("Tag.1.Key", "only-b"), ("Tag.1.Value", "x")]),
    )
    .await
    .ok();
    let ids: Vec<&str> = filtered["TagResources"]["TagResource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ResourceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [b.as_str(); 3],
        "every tag of the matching key, no other key"
    );
    let everything = send(&c, "ListTagResources", with(&[])).await.ok();
    assert_eq!(
        everything["TagResources"]["TagResource"]
            .as_array()
            .unwrap()
            .len(),
        5
    );

    send(
        &c,
        "UntagResources",
        with(&[("ResourceId.1", &a), ("TagKey.1", "env")]),
    )
    .await
    .ok();
    send(
        &c,
        "UntagResources",
        with(&[("ResourceId.1", &b), ("All", "true")]),
    )
    .await
    .ok();
    let listed = send(
        &c,
        "ListTagResources",
        with(&[
            ("ResourceId.1", &a),
            ("ResourceId.2", &b),
            ("ResourceId.3", &untagged),
        ]),
    )
    .await
    .ok();
    assert_eq!(
        listed["TagResources"]["TagResource"],
        json!([{"ResourceId": a, "ResourceType": "key", "TagKey": "team", "TagValue": "kms"}])
    );

    let missing = "key-hzz68d1fd85nosuchkey0";
    for (action, params, code, status) in [
        (
            "TagResources",
            with(&[("ResourceId.1", missing), ("Tag.1.Key", "k")]),
            "InvalidResourceId.NotFound",
            404,
        ),
        (
            "TagResources",
            with(&[("ResourceId.1", &a)]),
            "MissingParameter",
            400,
        ),
        (
            "TagResources",
            with(&[("Tag.1.Key", "k")]),
            "MissingParameter",
            400,
        ),
        (
            "TagResources",
            with(&[("ResourceId.1", &a), ("Tag.1.Key", "aliyun:x")]),
            "InvalidParameter.TagKey",
            400,
        ),
        (
            "TagResources",
            with(&[("ResourceId.1", &a), ("Tag.1.Key", "k"), ("Tag.2.Key", "k")]),
            "Duplicate.TagKey",
            400,
        ),
        (
            "UntagResources",
            with(&[("ResourceId.1", &a)]),
            "MissingParameter",
            400,
        ),
        (
            "UntagResources",
            with(&[("ResourceId.1", &a), ("TagKey.1", "k"), ("All", "true")]),
            "InvalidParameter",
            400,
        ),
        (
            "UntagResources",
            with(&[("ResourceId.1", missing), ("TagKey.1", "k")]),
            "InvalidResourceId.NotFound",
            404,
        ),
        (
            "ListTagResources",
            with(&[("NextToken", "garbage")]),
            "InvalidParameter",
            400,
        ),
        (
            "ListTagResources",
            vec![
                ("RegionId", "cn-beijing".into()),
                ("ResourceType", "key".into()),
            ],
            "InvalidParameter",
            400,
        ),
        (
            "ListTagResources",
            vec![
                ("RegionId", REGION.into()),
                ("ResourceType", "secret".into()),
            ],
            "UnsupportedOperation",
            400,
        ),
        (
            "ListTagResources",
            vec![("RegionId", REGION.into()), ("ResourceType", "disk".into())],
            "InvalidParameter",
            400,
        ),
        (
            "ListTagResources",
            vec![("ResourceType", "key".into())],
            "MissingParameter",
            400,
        ),
    ] {
        send(&c, action, params).await.expect(code, status);
    }
    let too_many: Vec<(String, String)> = (1..=51)
        .map(|i| (format!("ResourceId.{i}"), a.clone()))
        .collect();
    let mut params: Vec<(&str, &str)> = scope.to_vec();
    params.extend(too_many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.push(("Tag.1.Key", "k"));
    c.call("TagResources", &params)
        .await
        .expect("InvalidParameter", 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tag_resources_pages_with_next_token() {
    let app = TestApp::start().await;
    let c = app.root();
    let mut tagged = 0;
    for _ in 0..11 {
        let key = new_key(&c).await;
        let tags: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"TagKey":"t{i}","TagValue":"v"}}"#))
            .collect();
        c.ok(
            "TagResource",
            &[("KeyId", &key), ("Tags", &format!("[{}]", tags.join(",")))],
        )
        .await;
        tagged += 20;
    }
    let mut seen = 0;
    let mut token = String::new();
    loop {
        let mut params = vec![("RegionId", REGION), ("ResourceType", "key")];
        if !token.is_empty() {
            params.push(("NextToken", &token));
        }
        let page = c.ok("ListTagResources", &params).await;
        let rows = page["TagResources"]["TagResource"]
            .as_array()
            .unwrap()
            .len();
        assert!(rows <= 200);
        seen += rows;
        token = page["NextToken"].as_str().unwrap().to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, tagged);
}

/// Issue: the 20-tag limit was checked outside the transaction, so concurrent TagResource calls
/// each saw room and together went past it. Ten callers add three new tags each at once: the
/// key ends with at most 20, exactly three per accepted call, and the others are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tag_limit_holds_under_concurrent_calls() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = new_key(&c).await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                let tags = json!([
                    {"TagKey": format!("t{i}a"), "TagValue": "x"},
                    {"TagKey": format!("t{i}b"), "TagValue": "x"},
                    {"TagKey": format!("t{i}c"), "TagValue": "x"},
                ])
                .to_string();
                c.call("TagResource", &[("KeyId", &key), ("Tags", &tags)])
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == 200 {
            accepted += 1;
        } else {
            reply.expect("InvalidParameter", 400);
            assert!(reply.message().contains("at most 20"), "{}", reply.body);
        }
    }
    let listed = c.ok("ListResourceTags", &[("KeyId", &key)]).await;
    let count = listed["Tags"]["Tag"].as_array().unwrap().len();
    assert_eq!(count, 3 * accepted, "{listed}");
    assert!(count <= 20, "{count} tags");
    assert_eq!(accepted, 6);
}
