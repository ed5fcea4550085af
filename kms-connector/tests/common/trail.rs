//! Checks: the audit trail and the nonce-replay table.

use super::TestDb;
use super::fixtures::*;
use kms_connector::store::{AuditEvent, AuditQuery, Entity, StoreError};

pub async fn audit_trail(db: &TestDb) {
    let store = &db.store;
    let at = |s| T0.plus_secs(s);
    // Appended out of time order; e3 and e4 share a timestamp.
    store
        .append_audit(event("e2", at(20), Some("key-1"), "Encrypt"))
        .await
        .unwrap();
    store
        .append_audit(event("e1", at(10), Some("key-1"), "CreateKey"))
        .await
        .unwrap();
    store
        .append_audit(event("e3", at(30), Some("key-2"), "Encrypt"))
        .await
        .unwrap();
    let mut failed = event("e4", at(30), None, "DescribeKey");
    failed.result = "Forbidden.KeyNotFound".to_owned();
    failed.source_ip = None;
    failed.detail = Some("€".repeat(500));
    store.append_audit(failed).await.unwrap();
    assert!(matches!(
        store
            .append_audit(event("e1", at(40), None, "Encrypt"))
            .await,
        Err(StoreError::AlreadyExists(Entity::AuditEvent))
    ));

    let ids = |events: Vec<AuditEvent>| events.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
    let all = store.query_audit(AuditQuery::default()).await.unwrap();
    let e4 = all[0].clone();
    assert_eq!(
        ids(all),
        ["e4", "e3", "e2", "e1"],
        "newest first, ties by append order"
    );
    assert_eq!(e4.result, "Forbidden.KeyNotFound");
    assert_eq!(e4.key_id, None);
    let detail = e4.detail.unwrap();
    assert!(detail.len() <= AuditEvent::MAX_DETAIL_BYTES && detail.chars().all(|c| c == '€'));

    let by_key = AuditQuery {
        key_id: Some("key-1".into()),
        ..AuditQuery::default()
    };
    assert_eq!(ids(store.query_audit(by_key).await.unwrap()), ["e2", "e1"]);
    let by_action = AuditQuery {
        action: Some("Encrypt".into()),
        ..AuditQuery::default()
    };
    assert_eq!(
        ids(store.query_audit(by_action).await.unwrap()),
        ["e3", "e2"]
    );
    let window = AuditQuery {
        since: Some(at(10)),
        until: Some(at(30)),
        ..AuditQuery::default()
    };
    assert_eq!(ids(store.query_audit(window).await.unwrap()), ["e2", "e1"]);
    let limited = AuditQuery {
        limit: 2,
        ..AuditQuery::default()
    };
    assert_eq!(ids(store.query_audit(limited).await.unwrap()), ["e4", "e3"]);
    let other_account = AuditQuery {
        account_id: Some("999".into()),
        ..AuditQuery::default()
    };
    assert!(store.query_audit(other_account).await.unwrap().is_empty());
    for limit in [0, AuditQuery::MAX_LIMIT + 1] {
        assert!(matches!(
            store
                .query_audit(AuditQuery {
                    limit,
                    ..AuditQuery::default()
                })
                .await,
            Err(StoreError::InvalidArgument(_))
        ));
    }
    assert_eq!(store.purge_audit_before(at(20), 1000).await.unwrap(), 1);
    assert_eq!(
        ids(store.query_audit(AuditQuery::default()).await.unwrap()),
        ["e4", "e3", "e2"]
    );
    // In batches, oldest first.
    assert_eq!(store.purge_audit_before(at(31), 1).await.unwrap(), 1);
    assert_eq!(
        ids(store.query_audit(AuditQuery::default()).await.unwrap()),
        ["e4", "e3"]
    );
    assert_eq!(store.purge_audit_before(at(31), 10).await.unwrap(), 2);
    assert_eq!(store.purge_audit_before(at(31), 10).await.unwrap(), 0);
}

pub async fn nonce_replay_across_replicas(db: &TestDb) {
    let store = &db.store;
    let replica = db.replica().await;
    let expires = T0.plus_secs(900);
    assert!(
        store
            .remember_nonce("AK1", "nonce-1", expires)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_nonce("AK1", "nonce-1", expires)
            .await
            .unwrap(),
        "replay on the same handle"
    );
    assert!(
        !replica
            .remember_nonce("AK1", "nonce-1", expires)
            .await
            .unwrap(),
        "replay on another replica"
    );
    assert!(
        replica
            .remember_nonce("AK2", "nonce-1", expires)
            .await
            .unwrap(),
        "nonces are per AccessKey"
    );

    // Many replicas see the same request at once: exactly one of them accepts it.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            replica.clone()
        };
        tasks.push(tokio::spawn(async move {
            handle.remember_nonce("AK1", "nonce-2", expires).await
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        fresh += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(fresh, 1);

    assert!(
        store
            .remember_nonce("AK1", "nonce-3", T0.plus_secs(2000))
            .await
            .unwrap()
    );
    assert_eq!(replica.purge_expired_nonces(expires).await.unwrap(), 3);
    assert!(
        store
            .remember_nonce("AK1", "nonce-1", T0.plus_secs(3000))
            .await
            .unwrap(),
        "purged → fresh"
    );
    assert!(
        !store
            .remember_nonce("AK1", "nonce-3", T0.plus_secs(3000))
            .await
            .unwrap(),
        "not expired yet"
    );
}
