//! Checks: key creation (atomicity, material round trip), lookups, listing.

use super::TestDb;
use super::fixtures::*;
use kms_connector::store::{
    AutomaticRotation, DEFAULT_POLICY_NAME, Entity, InstanceKind, KeyFilter, KeySpec, KeyState,
    KeyUsage, Origin, Page, ProtectionLevel, StoreError, Tag,
};

pub async fn create_and_get_key(db: &TestDb) {
    let store = &db.store;
    store
        .create_instance(instance("kst-ext", InstanceKind::External))
        .await
        .unwrap();
    let mut key = new_key("key-hzz0001", "kst-ext", T0);
    key.description = "payments ✓".to_owned();
    key.external_key_id = Some("ext-key-1".to_owned());
    key.automatic_rotation = AutomaticRotation::Enabled;
    key.rotation_interval_secs = Some(30 * DAY_SECS);
    key.material_expire_time = Some(T0.plus_secs(DAY_SECS));
    key.protection_level = ProtectionLevel::Hsm;
    let first = version("key-hzz0001", T0);
    let tags = vec![Tag::new("env", "prod"), Tag::new("team", "pay")];
    let created = store
        .create_key(
            key.clone(),
            first.clone(),
            tags.clone(),
            Some(r#"{"Version":"1"}"#.into()),
        )
        .await
        .unwrap();
    assert_eq!(created.primary_key_version, first.key_version_id);
    assert_eq!(created.last_rotation_date, Some(T0));
    assert_eq!(
        created.next_rotation_date,
        Some(T0.plus_secs(30 * DAY_SECS))
    );
    assert_eq!(created.delete_date, None);
    assert!(!created.deletion_protection);

    let read = store.get_key("key-hzz0001").await.unwrap();
    assert_eq!(read, created);
    assert_eq!(read.description, "payments ✓");
    assert_eq!(read.external_key_id.as_deref(), Some("ext-key-1"));
    assert_eq!(read.material_expire_time, Some(T0.plus_secs(DAY_SECS)));
    assert_eq!(read.protection_level, ProtectionLevel::Hsm);
    assert_eq!(read.origin, Origin::AliyunKms);
    assert_eq!(store.list_tags("key-hzz0001").await.unwrap(), tags);
    assert_eq!(
        store
            .get_policy("key-hzz0001", DEFAULT_POLICY_NAME)
            .await
            .unwrap(),
        r#"{"Version":"1"}"#
    );
    // Several keys may share one external key.
    let mut twin = new_key("key-hzz0002", "kst-ext", T0);
    twin.external_key_id = Some("ext-key-1".to_owned());
    twin.origin = Origin::External;
    twin.key_state = KeyState::PendingImport;
    let twin = store
        .create_key(twin, version("key-hzz0002", T0), vec![], None)
        .await
        .unwrap();
    assert_eq!(twin.key_state, KeyState::PendingImport);
    assert_eq!(twin.next_rotation_date, None);

    assert!(matches!(
        store.get_key("key-none").await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    assert!(matches!(
        store
            .create_key(key.clone(), version("key-hzz0001", T0), vec![], None)
            .await,
        Err(StoreError::AlreadyExists(Entity::Key))
    ));
    assert!(matches!(
        store
            .create_key(
                new_key("key-x", "kst-none", T0),
                version("key-x", T0),
                vec![],
                None
            )
            .await,
        Err(StoreError::NotFound(Entity::Instance))
    ));
    let mut short = version("key-y", T0);
    short.key_version_id.truncate(35);
    assert!(matches!(
        store
            .create_key(new_key("key-y", "kst-ext", T0), short, vec![], None)
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store
            .create_key(
                new_key("key-y", "kst-ext", T0),
                version("key-z", T0),
                vec![],
                None
            )
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let duplicate_tags = vec![Tag::new("a", "1"), Tag::new("a", "2")];
    assert!(matches!(
        store
            .create_key(
                new_key("key-y", "kst-ext", T0),
                version("key-y", T0),
                duplicate_tags,
                None
            )
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        store.get_key("key-y").await,
        Err(StoreError::NotFound(Entity::Key))
    ));
}

pub async fn create_key_is_atomic(db: &TestDb) {
    let store = &db.store;
    let keys = with_keys(store, &["key-a"]).await;
    // key-b's first version collides with key-a's: the failure comes after key-b's row was
    // inserted, in the same transaction, which must leave nothing of key-b behind.
    let mut clash = version("key-b", T0);
    clash.key_version_id = keys[0].primary_key_version.clone();
    let result = store
        .create_key(
            new_key("key-b", "kst-sw", T0),
            clash,
            vec![Tag::new("k", "v")],
            Some("{}".into()),
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::AlreadyExists(Entity::KeyVersion))),
        "{result:?}"
    );
    assert!(matches!(
        store.get_key("key-b").await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    assert!(store.list_tags("key-b").await.unwrap().is_empty());
    assert!(matches!(
        store.get_policy("key-b", DEFAULT_POLICY_NAME).await,
        Err(StoreError::NotFound(Entity::Policy))
    ));
    let listed = store
        .list_keys(ACCOUNT, REGION, KeyFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!(listed.total_count, 1);
    // The version still belongs to key-a, and key-b can be created cleanly afterwards.
    let (owner, _) = store
        .get_key_by_version(&keys[0].primary_key_version)
        .await
        .unwrap();
    assert_eq!(owner.key_id, "key-a");
    store
        .create_key(
            new_key("key-b", "kst-sw", T0),
            version("key-b", T0),
            vec![],
            None,
        )
        .await
        .unwrap();
}

pub async fn sealed_material_is_bit_exact(db: &TestDb) {
    let store = &db.store;
    store
        .create_instance(instance("kst-sw", InstanceKind::Software))
        .await
        .unwrap();
    // Every byte value, NULs and high bytes included, plus an odd length.
    let material: Vec<u8> = (0..=255u8).chain([0, 0, 0xFF, 0x7F, 0x80]).collect();
    let mut first = version("key-m", T0);
    first.sealed_material = Some(material.clone());
    store
        .create_key(new_key("key-m", "kst-sw", T0), first.clone(), vec![], None)
        .await
        .unwrap();
    let (key, read) = store
        .get_key_by_version(&first.key_version_id)
        .await
        .unwrap();
    assert_eq!(key.key_id, "key-m");
    assert_eq!(read.sealed_material.as_deref(), Some(material.as_slice()));
    assert_eq!(read, first);
    // Debug shows the length, never the bytes.
    let shown = format!("{read:?}");
    assert!(shown.contains("<261 bytes>"), "{shown}");
    assert!(!shown.contains("0, 1, 2, 3"), "{shown}");

    // A hardware version: no material, a backend reference.
    let mut hsm = version("key-m", T0.plus_secs(10));
    hsm.sealed_material = None;
    hsm.backend_ref = Some("hyok/key-m/v2".to_owned());
    store
        .add_key_version(hsm.clone(), KeyState::Enabled, &first.key_version_id)
        .await
        .unwrap();
    assert_eq!(
        store.get_key_version(&hsm.key_version_id).await.unwrap(),
        hsm
    );
    // An empty blob stays an empty blob, distinct from NULL.
    let mut empty = version("key-m", T0.plus_secs(20));
    empty.sealed_material = Some(Vec::new());
    store
        .add_key_version(empty.clone(), KeyState::Enabled, &hsm.key_version_id)
        .await
        .unwrap();
    assert_eq!(
        store.get_key_version(&empty.key_version_id).await.unwrap(),
        empty
    );
}

pub async fn list_keys_filters_and_paging(db: &TestDb) {
    let store = &db.store;
    store
        .create_instance(instance("kst-sw", InstanceKind::Software))
        .await
        .unwrap();
    store
        .create_instance(instance("kst-hsm", InstanceKind::Hardware))
        .await
        .unwrap();
    // 23 keys: i % 3 == 0 in kst-hsm (HSM), i % 2 == 0 Disabled, i % 5 == 0 Aliyun_SM4.
    for i in 0..23i64 {
        let id = format!("key-{i:02}");
        let mut key = new_key(
            &id,
            if i % 3 == 0 { "kst-hsm" } else { "kst-sw" },
            T0.plus_secs(i),
        );
        if i % 3 == 0 {
            key.protection_level = ProtectionLevel::Hsm;
        }
        if i % 2 == 0 {
            key.key_state = KeyState::Disabled;
        }
        if i % 5 == 0 {
            key.key_spec = KeySpec::Sm4;
        }
        store
            .create_key(key, version(&id, T0), vec![], None)
            .await
            .unwrap();
    }
    // Other account and other region: never listed.
    let mut foreign = new_key("key-foreign", "kst-sw", T0);
    foreign.account_id = "999".to_owned();
    store
        .create_key(foreign, version("key-foreign", T0), vec![], None)
        .await
        .unwrap();
    let mut elsewhere = new_key("key-elsewhere", "kst-sw", T0);
    elsewhere.region = "cn-beijing".to_owned();
    store
        .create_key(elsewhere, version("key-elsewhere", T0), vec![], None)
        .await
        .unwrap();

    let count = |filter: KeyFilter| async move {
        store
            .list_keys(ACCOUNT, REGION, filter, Page::new(1, 100).unwrap())
            .await
            .unwrap()
    };
    let all = count(KeyFilter::default()).await;
    assert_eq!(all.total_count, 23);
    let ids: Vec<_> = all.items.iter().map(|k| k.key_id.clone()).collect();
    let expected: Vec<_> = (0..23).map(|i| format!("key-{i:02}")).collect();
    assert_eq!(ids, expected, "oldest first");

    let disabled = KeyFilter {
        key_states: vec![KeyState::Disabled],
        ..KeyFilter::default()
    };
    assert_eq!(count(disabled.clone()).await.total_count, 12);
    // OR within one filter key.
    let both_states = KeyFilter {
        key_states: vec![KeyState::Disabled, KeyState::Enabled],
        ..KeyFilter::default()
    };
    assert_eq!(count(both_states).await.total_count, 23);
    // AND across keys: Disabled ∧ HSM → i ≡ 0 (mod 6): 0, 6, 12, 18.
    let disabled_hsm = KeyFilter {
        protection_levels: vec![ProtectionLevel::Hsm],
        ..disabled.clone()
    };
    let page = count(disabled_hsm).await;
    let ids: Vec<_> = page.items.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["key-00", "key-06", "key-12", "key-18"]);
    // Disabled ∧ SM4 ∧ instance kst-sw → i ≡ 0 (mod 10), i % 3 != 0: 10, 20.
    let narrow = KeyFilter {
        key_specs: vec![KeySpec::Sm4],
        instance_ids: vec!["kst-sw".to_owned()],
        ..disabled
    };
    let ids: Vec<_> = count(narrow)
        .await
        .items
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(ids, ["key-10", "key-20"]);
    let usage = KeyFilter {
        key_usages: vec![KeyUsage::SignVerify],
        ..KeyFilter::default()
    };
    assert_eq!(count(usage).await.total_count, 0);
    let instances = KeyFilter {
        instance_ids: vec!["kst-hsm".to_owned(), "kst-none".to_owned()],
        ..KeyFilter::default()
    };
    assert_eq!(count(instances).await.total_count, 8);

    // Paging: 23 rows in pages of 10 → 10, 10, 3, then an empty page; the total is constant.
    let mut seen = Vec::new();
    for (number, len) in [(1, 10), (2, 10), (3, 3), (4, 0)] {
        let page = Page::new(number, 10).unwrap();
        let got = store
            .list_keys(ACCOUNT, REGION, KeyFilter::default(), page)
            .await
            .unwrap();
        assert_eq!(
            (got.items.len(), got.total_count, got.page),
            (len, 23, page)
        );
        seen.extend(got.items.into_iter().map(|k| k.key_id));
    }
    assert_eq!(seen, expected, "pages are disjoint and complete");
    let single = store
        .list_keys(
            ACCOUNT,
            REGION,
            KeyFilter::default(),
            Page::new(7, 3).unwrap(),
        )
        .await
        .unwrap();
    let ids: Vec<_> = single.items.into_iter().map(|k| k.key_id).collect();
    assert_eq!(ids, ["key-18", "key-19", "key-20"]);
    assert!(matches!(
        Page::new(0, 10),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        Page::new(1, 101),
        Err(StoreError::InvalidArgument(_))
    ));
}
