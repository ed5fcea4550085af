//! Faults the OpenAPI meets in-process: a write-locked database gives fast, retryable errors
//! and recovers by itself; caller-chosen nonces are bounded before anything is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::{Connection as _, SqliteConnection};
use harness::TestApp;
use time::OffsetDateTime;

fn lock_database(app: &TestApp) -> SqliteConnection {
    let path = app.dir.path().join("kms.db");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE;")
        .unwrap();
    conn
}

/// Issue: with the SQLite file write-locked for 8 s nothing completed and calls got 503 only
/// after 8 s. Now every call answers the retryable 503 within the database timeout (1 s by
/// default; the bound below leaves room for a loaded machine), and the API works again as soon
/// as the lock goes, with every ciphertext made before decrypting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_gives_fast_retryable_errors() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut blobs = Vec::new();
    for i in 0..5 {
        let plaintext = format!("before the lock {i}");
        let blob = c
            .ok("Encrypt", &[("KeyId", &key), ("Plaintext", &plaintext)])
            .await["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned();
        blobs.push((blob, plaintext));
    }

    let mut lock = lock_database(&app);
    let calls = (0..8).map(|i| {
        let c = c.clone();
        let key = key.clone();
        let blob = blobs[i % blobs.len()].0.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = if i % 2 == 0 {
                c.call("Encrypt", &[("KeyId", &key), ("Plaintext", "x")])
                    .await
            } else {
                c.call("Decrypt", &[("CiphertextBlob", &blob)]).await
            };
            (reply, started.elapsed())
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let (reply, elapsed) = call.await.unwrap();
        reply.expect("ServiceUnavailableTemporary", 503);
        assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    }
    lock.batch_execute("ROLLBACK").unwrap();
    drop(lock);

    for (blob, plaintext) in &blobs {
        let dec = c.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
        assert_eq!(dec["Plaintext"].as_str(), Some(plaintext.as_str()));
    }
    c.ok("Encrypt", &[("KeyId", &key), ("Plaintext", "after")])
        .await;
}

/// Issue: a 20,000-character `SignatureNonce` was stored. Nonces longer than 128 characters (or
/// with non-printable characters) are refused, under both signatures, and never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_chosen_nonces_are_bounded() {
    let app = TestApp::start().await;
    for (n, signing) in [harness::Signing::Acs3, harness::Signing::RpcPost]
        .into_iter()
        .enumerate()
    {
        let c = app.root().signing(signing);
        for nonce in ["n".repeat(20_000), "n".repeat(129)] {
            let request = c.prepare("ListKeys", &[], OffsetDateTime::now_utc(), &nonce);
            let reply = c.send(&request).await;
            reply.expect("InvalidParameter", 400);
            assert!(reply.message().contains("SignatureNonce"), "{}", reply.body);
        }
        let longest_allowed = format!("{n}{}", "n".repeat(127));
        let request = c.prepare("ListKeys", &[], OffsetDateTime::now_utc(), &longest_allowed);
        c.send(&request).await.ok();
    }
    let path = app.dir.path().join("kms.db");
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    #[derive(diesel::QueryableByName)]
    struct Longest {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        longest: i64,
    }
    let longest: Longest = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT COALESCE(MAX(LENGTH(nonce)), 0) AS longest FROM request_nonces"),
        &mut conn,
    )
    .unwrap();
    assert_eq!(longest.longest, 128);
}
