//! Checks: instances, aliases, tags, policies.

use super::TestDb;
use super::fixtures::*;
use kms_connector::store::{
    ConnectionState, DEFAULT_POLICY_NAME, Entity, InstanceKind, KeyTag, Page, StoreError, Tag,
};

pub async fn instances(db: &TestDb) {
    let store = &db.store;
    let created = store
        .create_instance(instance("kst-ext", InstanceKind::External))
        .await
        .unwrap();
    assert_eq!(created.connection_state, ConnectionState::Uninitialized);
    assert_eq!(created.updated_at, T0);
    assert!(matches!(
        store
            .create_instance(instance("kst-ext", InstanceKind::Software))
            .await,
        Err(StoreError::AlreadyExists(Entity::Instance))
    ));
    let mut hsm = instance("kst-hsm", InstanceKind::Hardware);
    hsm.created_at = T0.plus_secs(1);
    store.create_instance(hsm).await.unwrap();
    assert_eq!(store.get_instance("kst-ext").await.unwrap(), created);
    assert!(matches!(
        store.get_instance("kst-none").await,
        Err(StoreError::NotFound(Entity::Instance))
    ));
    let ids: Vec<_> = store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids, ["kst-ext", "kst-hsm"]);

    let t1 = T0.plus_secs(60);
    let failed = store
        .update_instance_connection(
            "kst-ext",
            ConnectionState::Error,
            Some("TLS_HANDSHAKE".into()),
            t1,
        )
        .await
        .unwrap();
    assert_eq!(failed.connection_state, ConnectionState::Error);
    assert_eq!(
        failed.connection_error_code.as_deref(),
        Some("TLS_HANDSHAKE")
    );
    assert_eq!(failed.updated_at, t1);
    let connected = store
        .update_instance_connection("kst-ext", ConnectionState::Connected, None, t1)
        .await
        .unwrap();
    assert_eq!(connected.connection_error_code, None);
    assert_eq!(store.get_instance("kst-ext").await.unwrap(), connected);
    assert!(matches!(
        store
            .update_instance_connection("kst-none", ConnectionState::Connected, None, t1)
            .await,
        Err(StoreError::NotFound(Entity::Instance))
    ));
    let respecced = store
        .update_instance_spec(
            "kst-ext",
            r#"{"endpoint":"https://other"}"#.into(),
            t1.plus_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(respecced.spec, r#"{"endpoint":"https://other"}"#);
    assert_eq!(respecced.kind, InstanceKind::External);
}

pub async fn aliases(db: &TestDb) {
    let store = &db.store;
    with_keys(store, &["key-1", "key-2"]).await;
    let created = store
        .create_alias(alias("alias/app", "key-1"))
        .await
        .unwrap();
    assert_eq!(
        store.get_alias(ACCOUNT, REGION, "alias/app").await.unwrap(),
        created
    );
    assert!(matches!(
        store.create_alias(alias("alias/app", "key-2")).await,
        Err(StoreError::AlreadyExists(Entity::Alias))
    ));
    assert!(matches!(
        store.create_alias(alias("alias/ghost", "key-none")).await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    // Unique per account and region: the same name elsewhere is another alias.
    let mut beijing = new_key("key-bj", "kst-sw", T0);
    beijing.region = "cn-beijing".to_owned();
    store
        .create_key(beijing, version("key-bj", T0), vec![], None)
        .await
        .unwrap();
    let mut elsewhere = alias("alias/app", "key-bj");
    elsewhere.region = "cn-beijing".to_owned();
    store.create_alias(elsewhere).await.unwrap();
    // …but it may only name a key of its own account and region.
    assert!(matches!(
        store.create_alias(alias("alias/cross", "key-bj")).await,
        Err(StoreError::NotFound(Entity::Key))
    ));

    let moved = store
        .update_alias(ACCOUNT, REGION, "alias/app", "key-2", T0.plus_secs(9))
        .await
        .unwrap();
    assert_eq!(
        (moved.key_id.as_str(), moved.created_at, moved.updated_at),
        ("key-2", T0, T0.plus_secs(9))
    );
    assert!(matches!(
        store
            .update_alias(ACCOUNT, REGION, "alias/none", "key-2", T0)
            .await,
        Err(StoreError::NotFound(Entity::Alias))
    ));
    assert!(matches!(
        store
            .update_alias(ACCOUNT, REGION, "alias/app", "key-none", T0)
            .await,
        Err(StoreError::NotFound(Entity::Key))
    ));

    for i in 0..11 {
        store
            .create_alias(alias(&format!("alias/n{i:02}"), "key-1"))
            .await
            .unwrap();
    }
    let page = |n| Page::new(n, 5).unwrap();
    let p1 = store.list_aliases(ACCOUNT, REGION, page(1)).await.unwrap();
    let names: Vec<_> = p1.items.iter().map(|a| a.alias_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "alias/app",
            "alias/n00",
            "alias/n01",
            "alias/n02",
            "alias/n03"
        ]
    );
    assert_eq!(p1.total_count, 12);
    let p3 = store.list_aliases(ACCOUNT, REGION, page(3)).await.unwrap();
    let names: Vec<_> = p3.items.iter().map(|a| a.alias_name.as_str()).collect();
    assert_eq!(names, ["alias/n09", "alias/n10"]);
    let by_key = store.list_aliases_by_key("key-1", page(3)).await.unwrap();
    assert_eq!((by_key.items.len(), by_key.total_count), (1, 11));
    let by_key2 = store
        .list_aliases_by_key("key-2", Page::default())
        .await
        .unwrap();
    assert_eq!(by_key2.items, [moved]);

    store
        .delete_alias(ACCOUNT, REGION, "alias/app")
        .await
        .unwrap();
    assert!(matches!(
        store.delete_alias(ACCOUNT, REGION, "alias/app").await,
        Err(StoreError::NotFound(Entity::Alias))
    ));
    assert_eq!(
        store
            .get_alias(ACCOUNT, "cn-beijing", "alias/app")
            .await
            .unwrap()
            .key_id,
        "key-bj"
    );
}

pub async fn tags_and_policies(db: &TestDb) {
    let store = &db.store;
    with_keys(store, &["key-t", "key-u"]).await;
    let twenty: Vec<_> = (0..20)
        .map(|i| Tag::new(format!("k{i:02}"), format!("v{i}")))
        .collect();
    store.set_tags("key-t", twenty.clone()).await.unwrap();
    assert_eq!(store.list_tags("key-t").await.unwrap(), twenty);
    // Upsert: an existing key gets its new value, the rest stays.
    store
        .set_tags("key-t", vec![Tag::new("k00", "changed")])
        .await
        .unwrap();
    let tags = store.list_tags("key-t").await.unwrap();
    assert_eq!(tags.len(), 20);
    assert_eq!(tags[0], Tag::new("k00", "changed"));
    assert_eq!(tags[1], twenty[1]);
    // A 21st tag is refused inside the transaction: nothing of the call is kept.
    assert!(matches!(
        store
            .set_tags(
                "key-t",
                vec![Tag::new("k01", "changed too"), Tag::new("z", "new")],
            )
            .await,
        Err(StoreError::TooManyTags { max: 20 })
    ));
    let tags = store.list_tags("key-t").await.unwrap();
    assert_eq!((tags.len(), &tags[1]), (20, &twenty[1]));
    assert_eq!(
        store
            .remove_tags("key-t", vec!["k00".into(), "absent".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.list_tags("key-t").await.unwrap(), twenty[1..]);
    assert!(matches!(
        store.set_tags("key-none", vec![Tag::new("a", "b")]).await,
        Err(StoreError::NotFound(Entity::Key))
    ));

    store
        .set_tags("key-u", vec![Tag::new("env", "dev")])
        .await
        .unwrap();
    let both = store
        .list_tags_for_keys(vec!["key-u".into(), "key-t".into(), "key-none".into()])
        .await
        .unwrap();
    assert_eq!(both.len(), 20);
    assert_eq!(both[0].key_id, "key-t");
    assert_eq!(
        both[19],
        KeyTag {
            key_id: "key-u".into(),
            tag_key: "env".into(),
            tag_value: "dev".into()
        }
    );

    assert!(matches!(
        store.get_policy("key-t", DEFAULT_POLICY_NAME).await,
        Err(StoreError::NotFound(Entity::Policy))
    ));
    let policy =
        r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["kms:*"],"Resource":["*"]}]}"#;
    store
        .set_policy("key-t", DEFAULT_POLICY_NAME, policy.into())
        .await
        .unwrap();
    assert_eq!(
        store
            .get_policy("key-t", DEFAULT_POLICY_NAME)
            .await
            .unwrap(),
        policy
    );
    store
        .set_policy("key-t", DEFAULT_POLICY_NAME, "{}".into())
        .await
        .unwrap();
    assert_eq!(
        store
            .get_policy("key-t", DEFAULT_POLICY_NAME)
            .await
            .unwrap(),
        "{}"
    );
    assert!(matches!(
        store.get_policy("key-t", "other").await,
        Err(StoreError::NotFound(Entity::Policy))
    ));
    assert!(matches!(
        store
            .set_policy("key-none", DEFAULT_POLICY_NAME, "{}".into())
            .await,
        Err(StoreError::NotFound(Entity::Key))
    ));
}

pub async fn concurrent_tag_writes_lose_nothing(db: &TestDb) {
    with_keys(&db.store, &["key-c"]).await;
    let replica = db.replica().await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        tasks.push(tokio::spawn(async move {
            // Each writer adds its own tag and overwrites the shared one.
            store
                .set_tags(
                    "key-c",
                    vec![
                        Tag::new(format!("w{i}"), "x"),
                        Tag::new("shared", format!("{i}")),
                    ],
                )
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let tags = replica.list_tags("key-c").await.unwrap();
    assert_eq!(tags.len(), 11, "{tags:?}");
    assert!((0..10).all(|i| tags.iter().any(|t| t.tag_key == format!("w{i}"))));
}
