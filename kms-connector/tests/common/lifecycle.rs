//! Checks: state compare-and-set, protection, rotation, versions, purge.

use super::TestDb;
use super::fixtures::*;
use kms_connector::store::{
    AuditQuery, AutomaticRotation, DEFAULT_POLICY_NAME, Entity, KeyState, Page, StoreError, Tag,
};

pub async fn state_compare_and_set(db: &TestDb) {
    let store = &db.store;
    with_keys(store, &["key-s"]).await;
    let disabled = store
        .compare_and_set_state("key-s", change(KeyState::Enabled, KeyState::Disabled, None))
        .await
        .unwrap();
    assert_eq!(disabled.key_state, KeyState::Disabled);
    // A stale expectation loses and reports what it found.
    assert!(matches!(
        store
            .compare_and_set_state("key-s", change(KeyState::Enabled, KeyState::Disabled, None))
            .await,
        Err(StoreError::StateMismatch {
            actual: KeyState::Disabled
        })
    ));
    let delete_at = T0.plus_secs(7 * DAY_SECS);
    let pending = store
        .compare_and_set_state(
            "key-s",
            change(
                KeyState::Disabled,
                KeyState::PendingDeletion,
                Some(delete_at),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (pending.key_state, pending.delete_date),
        (KeyState::PendingDeletion, Some(delete_at))
    );
    assert_eq!(store.get_key("key-s").await.unwrap(), pending);
    // Protection cannot be turned on while pending deletion.
    assert!(matches!(
        store
            .set_deletion_protection("key-s", true, Some("keep".into()))
            .await,
        Err(StoreError::StateMismatch {
            actual: KeyState::PendingDeletion
        })
    ));
    // CancelKeyDeletion: back to Enabled, DeleteDate cleared.
    let cancelled = store
        .compare_and_set_state(
            "key-s",
            change(KeyState::PendingDeletion, KeyState::Enabled, None),
        )
        .await
        .unwrap();
    assert_eq!(
        (cancelled.key_state, cancelled.delete_date),
        (KeyState::Enabled, None)
    );
    // A protected key cannot be scheduled for deletion.
    store
        .set_deletion_protection("key-s", true, Some("prod".into()))
        .await
        .unwrap();
    assert!(matches!(
        store
            .compare_and_set_state(
                "key-s",
                change(
                    KeyState::Enabled,
                    KeyState::PendingDeletion,
                    Some(delete_at)
                ),
            )
            .await,
        Err(StoreError::DeletionProtected)
    ));
    assert_eq!(
        store.get_key("key-s").await.unwrap().key_state,
        KeyState::Enabled
    );
    // DeleteDate goes with PendingDeletion only.
    for bad in [
        change(KeyState::Enabled, KeyState::PendingDeletion, None),
        change(KeyState::Enabled, KeyState::Disabled, Some(delete_at)),
    ] {
        assert!(matches!(
            store.compare_and_set_state("key-s", bad).await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        store
            .compare_and_set_state(
                "key-none",
                change(KeyState::Enabled, KeyState::Disabled, None)
            )
            .await,
        Err(StoreError::NotFound(Entity::Key))
    ));
}

pub async fn state_race_between_replicas(db: &TestDb) {
    with_keys(&db.store, &["key-r"]).await;
    let replica = db.replica().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            replica.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .compare_and_set_state("key-r", change(KeyState::Enabled, KeyState::Disabled, None))
                .await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(key) => {
                assert_eq!(key.key_state, KeyState::Disabled);
                won += 1;
            }
            Err(StoreError::StateMismatch {
                actual: KeyState::Disabled,
            }) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one replica wins the transition");
}

pub async fn description_protection_rotation(db: &TestDb) {
    let store = &db.store;
    let key = with_keys(store, &["key-d"]).await.remove(0);
    assert_eq!(
        store
            .update_description("key-d", "new text".into())
            .await
            .unwrap()
            .description,
        "new text"
    );
    assert_eq!(
        store
            .update_description("key-d", String::new())
            .await
            .unwrap()
            .description,
        ""
    );
    assert!(matches!(
        store.update_description("key-none", "x".into()).await,
        Err(StoreError::NotFound(Entity::Key))
    ));

    let protected = store
        .set_deletion_protection("key-d", true, Some("prod".into()))
        .await
        .unwrap();
    assert!(protected.deletion_protection);
    assert_eq!(
        protected.deletion_protection_description.as_deref(),
        Some("prod")
    );
    let open = store
        .set_deletion_protection("key-d", false, Some("ignored".into()))
        .await
        .unwrap();
    assert!(!open.deletion_protection);
    assert_eq!(open.deletion_protection_description, None);

    let rotating = store
        .set_rotation_policy("key-d", AutomaticRotation::Enabled, Some(7 * DAY_SECS))
        .await
        .unwrap();
    assert_eq!(rotating.automatic_rotation, AutomaticRotation::Enabled);
    assert_eq!(rotating.rotation_interval_secs, Some(7 * DAY_SECS));
    assert_eq!(
        rotating.next_rotation_date,
        Some(key.created_at.plus_secs(7 * DAY_SECS))
    );
    let due_at = key.created_at.plus_secs(7 * DAY_SECS);
    assert!(
        store
            .keys_due_for_rotation("kst-sw", due_at.plus_secs(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .keys_due_for_rotation("kst-sw", due_at, 10)
            .await
            .unwrap(),
        ["key-d"]
    );
    assert!(matches!(
        store
            .set_rotation_policy("key-d", AutomaticRotation::Enabled, None)
            .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let off = store
        .set_rotation_policy("key-d", AutomaticRotation::Disabled, None)
        .await
        .unwrap();
    assert_eq!(
        (off.next_rotation_date, off.rotation_interval_secs),
        (None, None)
    );
    assert!(
        store
            .keys_due_for_rotation("kst-sw", due_at, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn key_versions(db: &TestDb) {
    let store = &db.store;
    let key = with_keys(store, &["key-v", "key-w"]).await.remove(0);
    store
        .set_rotation_policy("key-v", AutomaticRotation::Enabled, Some(DAY_SECS))
        .await
        .unwrap();
    let v2 = version("key-v", T0.plus_secs(100));
    let rotated = store
        .add_key_version(v2.clone(), KeyState::Enabled, &key.primary_key_version)
        .await
        .unwrap();
    assert_eq!(rotated.primary_key_version, v2.key_version_id);
    assert_eq!(rotated.last_rotation_date, Some(v2.created_at));
    assert_eq!(
        rotated.next_rotation_date,
        Some(v2.created_at.plus_secs(DAY_SECS))
    );
    // A second rotation from the same starting point (another replica) loses.
    assert!(matches!(
        store
            .add_key_version(
                version("key-v", T0),
                KeyState::Enabled,
                &key.primary_key_version
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .add_key_version(version("key-v", T0), KeyState::Disabled, &v2.key_version_id)
            .await,
        Err(StoreError::StateMismatch {
            actual: KeyState::Enabled
        })
    ));
    assert!(matches!(
        store
            .add_key_version(version("key-none", T0), KeyState::Enabled, "x")
            .await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    // Version ids are global: reusing key-w's is refused.
    let other = store.get_key("key-w").await.unwrap();
    let mut reused = version("key-v", T0);
    reused.key_version_id = other.primary_key_version.clone();
    assert!(matches!(
        store
            .add_key_version(reused, KeyState::Enabled, &v2.key_version_id)
            .await,
        Err(StoreError::AlreadyExists(Entity::KeyVersion))
    ));
    let v3 = version("key-v", T0.plus_secs(200));
    store
        .add_key_version(v3.clone(), KeyState::Enabled, &v2.key_version_id)
        .await
        .unwrap();

    let all = store
        .list_key_versions("key-v", Page::new(1, 10).unwrap())
        .await
        .unwrap();
    let ids: Vec<_> = all.items.iter().map(|v| v.key_version_id.clone()).collect();
    assert_eq!(
        ids,
        [
            key.primary_key_version.clone(),
            v2.key_version_id.clone(),
            v3.key_version_id.clone()
        ]
    );
    assert_eq!(all.total_count, 3);
    let second = store
        .list_key_versions("key-v", Page::new(2, 2).unwrap())
        .await
        .unwrap();
    assert_eq!((second.items.len(), second.total_count), (1, 3));
    assert_eq!(second.items[0], v3);
    assert!(matches!(
        store.list_key_versions("key-none", Page::default()).await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    assert_eq!(store.get_key_version(&v2.key_version_id).await.unwrap(), v2);
    let (owner, found) = store.get_key_by_version(&v3.key_version_id).await.unwrap();
    assert_eq!((owner.key_id.as_str(), found), ("key-v", v3));
    assert!(matches!(
        store
            .get_key_by_version("00000000-0000-0000-0000-000000000000")
            .await,
        Err(StoreError::NotFound(Entity::KeyVersion))
    ));
}

pub async fn purge_cascades(db: &TestDb) {
    let store = &db.store;
    let keys = with_keys(store, &["key-p", "key-q"]).await;
    let v2 = version("key-p", T0.plus_secs(5));
    store
        .add_key_version(v2.clone(), KeyState::Enabled, &keys[0].primary_key_version)
        .await
        .unwrap();
    store
        .set_tags("key-p", vec![Tag::new("a", "1"), Tag::new("b", "2")])
        .await
        .unwrap();
    store
        .set_tags("key-q", vec![Tag::new("a", "1")])
        .await
        .unwrap();
    store
        .set_policy("key-p", DEFAULT_POLICY_NAME, "{}".into())
        .await
        .unwrap();
    for name in ["alias/p1", "alias/p2"] {
        store.create_alias(alias(name, "key-p")).await.unwrap();
    }
    store.create_alias(alias("alias/q", "key-q")).await.unwrap();
    store
        .append_audit(event("e1", T0, Some("key-p"), "CreateKey"))
        .await
        .unwrap();

    assert!(matches!(
        store.purge_key("key-p", T0).await,
        Err(StoreError::StateMismatch {
            actual: KeyState::Enabled
        })
    ));
    let delete_at = T0.plus_secs(7 * DAY_SECS);
    store
        .compare_and_set_state(
            "key-p",
            change(
                KeyState::Enabled,
                KeyState::PendingDeletion,
                Some(delete_at),
            ),
        )
        .await
        .unwrap();
    assert!(
        store
            .keys_due_for_deletion("kst-sw", delete_at.plus_secs(-1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.purge_key("key-p", delete_at.plus_secs(-1)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .keys_due_for_deletion("kst-sw", delete_at, 10)
            .await
            .unwrap(),
        ["key-p"]
    );
    assert!(
        store
            .keys_due_for_deletion("kst-other", delete_at, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let purged = store.purge_key("key-p", delete_at).await.unwrap();
    let ids: Vec<_> = purged.iter().map(|v| v.key_version_id.clone()).collect();
    assert_eq!(
        ids,
        [
            keys[0].primary_key_version.clone(),
            v2.key_version_id.clone()
        ]
    );
    assert!(matches!(
        store.get_key("key-p").await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    assert!(matches!(
        store.get_key_version(&v2.key_version_id).await,
        Err(StoreError::NotFound(Entity::KeyVersion))
    ));
    assert!(store.list_tags("key-p").await.unwrap().is_empty());
    assert!(matches!(
        store.get_policy("key-p", DEFAULT_POLICY_NAME).await,
        Err(StoreError::NotFound(Entity::Policy))
    ));
    assert!(matches!(
        store.get_alias(ACCOUNT, REGION, "alias/p1").await,
        Err(StoreError::NotFound(Entity::Alias))
    ));
    assert!(
        store
            .keys_due_for_deletion("kst-sw", delete_at, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.purge_key("key-p", delete_at).await,
        Err(StoreError::NotFound(Entity::Key))
    ));
    // The neighbour is untouched, and the audit trail outlives the key.
    assert_eq!(
        store.list_tags("key-q").await.unwrap(),
        [Tag::new("a", "1")]
    );
    assert_eq!(
        store
            .get_alias(ACCOUNT, REGION, "alias/q")
            .await
            .unwrap()
            .key_id,
        "key-q"
    );
    let trail = store
        .query_audit(AuditQuery {
            key_id: Some("key-p".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
}

/// Two replicas run the rotation scheduler at the same moment over the same due keys: every key
/// rotates exactly once (one new primary version), and the loser releases its material.
pub async fn due_keys_rotate_once_across_replicas(db: &TestDb) {
    use std::sync::Arc;

    use kms_connector::backend::software::{RootKey, SoftwareBackend};
    use kms_connector::instances::InstanceHandle;
    use kms_connector::rotation::rotate_due;
    use kms_connector::store::InstanceKind;

    let ids: Vec<String> = (0..12)
        .map(|_| kms_connector::ids::KeyId::generate(REGION).to_string())
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let keys = with_keys(&db.store, &refs).await;
    for key in &keys {
        db.store
            .set_rotation_policy(&key.key_id, AutomaticRotation::Enabled, Some(7 * DAY_SECS))
            .await
            .unwrap();
    }
    let due = T0.plus_secs(8 * DAY_SECS);
    let handle = |_: u8| {
        Arc::new(InstanceHandle {
            id: "kst-sw".into(),
            kind: InstanceKind::Software,
            name: "sw".into(),
            backend: Arc::new(SoftwareBackend::new(RootKey::from_bytes([9; 32]))),
            control: None,
        })
    };
    let replica = db.replica().await;
    let (a, b) = (handle(1), handle(2));
    let (first, second) = tokio::join!(
        rotate_due(&db.store, &a, due, 100),
        rotate_due(&replica, &b, due, 100)
    );
    assert_eq!(first + second, ids.len(), "{first} + {second} rotations");
    for id in &ids {
        let versions = db
            .store
            .list_key_versions(id, Page::new(1, 10).unwrap())
            .await
            .unwrap();
        assert_eq!(versions.total_count, 2, "{id}");
        let key = db.store.get_key(id).await.unwrap();
        assert_eq!(key.primary_key_version, versions.items[1].key_version_id);
        assert_eq!(key.last_rotation_date, Some(due));
        assert_eq!(key.next_rotation_date, Some(due.plus_secs(7 * DAY_SECS)));
    }
    // Nothing is due until the next interval.
    assert_eq!(rotate_due(&db.store, &a, due.plus_secs(60), 100).await, 0);
}
