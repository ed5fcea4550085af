//! SIGKILL of the kms-connector in the middle of a CreateKey burst: after a restart on the same
//! SQLite database, every key is complete and nothing acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::{Connector, KmsClient, field, wait_for};
use kms_connector::store::{DEFAULT_POLICY_NAME, KeyFilter, Page, Store};

const TASKS: usize = 8;
const KEYS_PER_TASK: usize = 50;
/// Acknowledged CreateKeys before the kill: well inside the burst.
const KILL_AFTER: usize = 100;
const TAG_KEY: &str = "burst";

/// CreateKeys until done or the server stops answering; the ids of the 200 answers.
async fn create_keys(kms: KmsClient, task: usize, acknowledged: Arc<AtomicUsize>) -> Vec<String> {
    let tags = format!(r#"[{{"TagKey":"{TAG_KEY}","TagValue":"task-{task}"}}]"#);
    let mut ids = Vec::new();
    for _ in 0..KEYS_PER_TASK {
        match kms.try_call("CreateKey", &[("Tags", &tags)]).await {
            Ok((200, body)) => {
                ids.push(field(&body, "KeyMetadata.KeyId"));
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, body)) => panic!("CreateKey answered {status} while serving: {body}"),
            // Killed mid-request: this call is not acknowledged.
            Err(_) => break,
        }
    }
    ids
}

/// Every key through the Store API, all pages.
async fn stored_keys(store: &Store) -> Vec<kms_connector::store::Key> {
    let mut all = Vec::new();
    for number in 1.. {
        let page = store
            .list_keys(
                e2e::stack::ACCOUNT_ID,
                e2e::stack::REGION,
                KeyFilter::default(),
                Page::new(number, Page::MAX_SIZE).expect("page"),
            )
            .await
            .expect("list_keys");
        let done = page.items.len() < Page::MAX_SIZE as usize;
        all.extend(page.items);
        if done {
            break;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_create_key_burst() {
    let temp = tempfile::tempdir().expect("temp dir");
    let connector = Connector::configure(temp.path(), None, None);
    let mut service = connector.start().await;
    let kms = connector.client();

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(create_keys(kms.clone(), task, Arc::clone(&acknowledged))))
        .collect();
    wait_for(
        "the burst to get going",
        Duration::from_secs(120),
        || async { (acknowledged.load(Ordering::SeqCst) >= KILL_AFTER).then_some(()) },
    )
    .await;
    service.kill();
    let mut acknowledged_ids = HashSet::new();
    for task in tasks {
        acknowledged_ids.extend(task.await.expect("CreateKey task"));
    }
    let total = TASKS * KEYS_PER_TASK;
    assert!(
        acknowledged_ids.len() < total,
        "the kill came after the burst ({} of {total} acknowledged)",
        acknowledged_ids.len()
    );
    eprintln!(
        "{} of {total} CreateKeys acknowledged before SIGKILL",
        acknowledged_ids.len()
    );

    let _service = connector.start().await;
    let listed = kms.list_key_ids().await;
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(listed_set.len(), listed.len(), "ListKeys repeats a key");
    let lost: Vec<&String> = acknowledged_ids
        .iter()
        .filter(|id| !listed_set.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged keys lost: {lost:?}");

    // Every key is complete through the API.
    for key_id in &listed {
        let described = kms.ok("DescribeKey", &[("KeyId", key_id)]).await;
        assert!(
            !field(&described, "KeyMetadata.PrimaryKeyVersion").is_empty(),
            "{key_id} has no primary version: {described}"
        );
        assert_eq!(field(&described, "KeyMetadata.KeyState"), "Enabled");
        let encrypted = kms
            .ok("Encrypt", &[("KeyId", key_id), ("Plaintext", key_id)])
            .await;
        let decrypted = kms
            .ok(
                "Decrypt",
                &[("CiphertextBlob", &field(&encrypted, "CiphertextBlob"))],
            )
            .await;
        assert_eq!(&field(&decrypted, "Plaintext"), key_id);
    }

    // And in the store: one sealed primary version per key, its tag and policy, no key the
    // API does not list.
    let store = Store::open(&connector.database_url)
        .await
        .expect("opening the store");
    let keys = stored_keys(&store).await;
    let stored: HashSet<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(stored, listed_set, "the store and ListKeys disagree");
    assert_eq!(
        store
            .count_instance_keys(&connector.software_instance)
            .await
            .expect("count_instance_keys"),
        keys.len() as u64
    );
    for key in &keys {
        let versions = store
            .list_key_versions(&key.key_id, Page::new(1, Page::MAX_SIZE).expect("page"))
            .await
            .expect("list_key_versions");
        assert_eq!(versions.total_count, 1, "{} versions", key.key_id);
        let version = &versions.items[0];
        assert_eq!(version.key_version_id, key.primary_key_version);
        assert_eq!(
            version.sealed_material.as_ref().map(Vec::len),
            Some(kms_connector::backend::software::SEALED_BYTES),
            "{} has no sealed material",
            key.key_id
        );
        let (owner, _) = store
            .get_key_by_version(&key.primary_key_version)
            .await
            .expect("get_key_by_version");
        assert_eq!(owner.key_id, key.key_id);
        let tags = store.list_tags(&key.key_id).await.expect("list_tags");
        assert_eq!(tags.len(), 1, "{} tags: {tags:?}", key.key_id);
        assert_eq!(tags[0].tag_key, TAG_KEY);
        store
            .get_policy(&key.key_id, DEFAULT_POLICY_NAME)
            .await
            .expect("every key has its policy");
    }
}
