//! The audit trail and the logs: one event per call, success or failure (unknown callers
//! included), the sweeper's deletions; no plaintext, data key or secret in the database files or
//! the JSON request log; and the CLI over the same configuration (`check-config`, `keys`,
//! `instances`, `audit`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use harness::{ACCOUNT, SOFTWARE, TestApp, Who};
use kms_connector::store::{AuditEvent, AuditQuery, Store};
use serde_json::Value;

async fn events(app: &TestApp) -> Vec<AuditEvent> {
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    store
        .query_audit(AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_audited() {
    let app = TestApp::start().await;
    let c = app.root();
    let created = c.ok("CreateKey", &[]).await;
    let key = created["KeyMetadata"]["KeyId"].as_str().unwrap().to_owned();
    let encrypted = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "audited")])
        .await;
    let missing = c
        .call("DescribeKey", &[("KeyId", "key-hzz68d1fd85nosuchkey0")])
        .await;
    let unknown = c
        .clone()
        .with_access_key("LTAI5tNobodyKnowsMe1")
        .call("ListKeys", &[])
        .await;
    let wrong = c
        .clone()
        .with_secret("wrong")
        .call("Encrypt", &[("KeyId", &key), ("Plaintext", "x")])
        .await;
    let stranger = app.client(Who::Stranger).call("ListKeys", &[]).await;
    let disabled = {
        c.ok("DisableKey", &[("KeyId", &key)]).await;
        c.call("Encrypt", &[("KeyId", &key), ("Plaintext", "x")])
            .await
    };

    let all = events(&app).await;
    let find = |request_id: &Value| {
        all.iter()
            .find(|e| e.request_id == request_id.as_str().unwrap())
            .unwrap_or_else(|| panic!("no event for {request_id}"))
            .clone()
    };
    let root = Who::Root.principal();
    for (reply, action, result, principal, key_id) in [
        (
            &created,
            "CreateKey",
            "Success",
            root.as_str(),
            Some(key.as_str()),
        ),
        (
            &encrypted,
            "Encrypt",
            "Success",
            root.as_str(),
            Some(key.as_str()),
        ),
        (
            &missing.body,
            "DescribeKey",
            "Forbidden.KeyNotFound",
            root.as_str(),
            None,
        ),
        (
            &unknown.body,
            "ListKeys",
            "InvalidAccessKeyId.NotFound",
            "-",
            None,
        ),
        (&wrong.body, "Encrypt", "IncompleteSignature", "-", None),
        (
            &stranger.body,
            "ListKeys",
            "Forbidden.NoPermission",
            "acs:ram::999999999:root",
            None,
        ),
        (
            &disabled.body,
            "Encrypt",
            "Rejected.Disabled",
            root.as_str(),
            Some(key.as_str()),
        ),
    ] {
        let event = find(&reply["RequestId"]);
        assert_eq!(
            (
                event.action.as_str(),
                event.result.as_str(),
                event.principal.as_str(),
                event.key_id.as_deref()
            ),
            (action, result, principal, key_id),
            "{event:?}"
        );
        assert_eq!(event.source_ip.as_deref(), Some("127.0.0.1"));
    }
    let event = find(&unknown.body["RequestId"]);
    assert_eq!(
        event.detail.as_deref(),
        Some("access_key_id=LTAI5tNobodyKnowsMe1")
    );
    assert_eq!(find(&created["RequestId"]).account_id, ACCOUNT);

    // The sweeper's deletions are audited too.
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", &key), ("PendingWindowInDays", "7")],
    )
    .await;
    app.advance_clock_and_sweep(8 * 86_400).await;
    let deleted: Vec<AuditEvent> = events(&app)
        .await
        .into_iter()
        .filter(|e| e.action == "DeleteKey")
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].key_id.as_deref(), deleted[0].principal.as_str()),
        (Some(key.as_str()), "kms-connector")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_data_key_or_secret_reaches_the_database() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let plaintext = format!("PLAINTEXT-MARKER-{}", uuid::Uuid::new_v4().simple());
    let blob = c
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", &plaintext)])
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await["Plaintext"],
        Value::String(plaintext.clone())
    );
    let data_key = c.ok("GenerateDataKey", &[("KeyId", &key)]).await;
    let data_key_text = data_key["Plaintext"].as_str().unwrap().to_owned();
    c.ok(
        "Decrypt",
        &[(
            "CiphertextBlob",
            data_key["CiphertextBlob"].as_str().unwrap(),
        )],
    )
    .await;
    // Refused calls carrying secrets-to-be are audited without them too.
    c.call(
        "Encrypt",
        &[
            ("KeyId", "key-hzz68d1fd85nosuchkey0"),
            ("Plaintext", &plaintext),
        ],
    )
    .await;

    let bytes = app.database_bytes();
    assert!(bytes.len() > 4096, "the database files were read");
    assert!(
        contains(&bytes, key.as_bytes()),
        "sanity: the key id is stored"
    );
    assert!(
        !contains(&bytes, plaintext.as_bytes()),
        "the plaintext is in the database"
    );
    assert!(
        !contains(&bytes, data_key_text.as_bytes()),
        "the data key (Base64) is in the database"
    );
    assert!(
        !contains(&bytes, &schemas::b64::decode(&data_key_text).unwrap()),
        "the data key is in the database"
    );
    for who in Who::ALL {
        assert!(
            !contains(&bytes, who.secret().as_bytes()),
            "an AccessKey secret is in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_the_same_store() {
    let app = TestApp::start().await;
    let c = app.root();
    let key = c.ok("CreateKey", &[("Description", "cli key")]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok("Encrypt", &[("KeyId", &key), ("Plaintext", "p")])
        .await;

    let (ok, out, err) = harness::cli(&app.config_path, &["check-config"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("is valid") && out.contains(SOFTWARE) && out.contains("software"),
        "{out}"
    );
    for who in Who::ALL {
        assert!(out.contains(who.access_key_id()), "{out}");
        assert!(
            !out.contains(&who.secret()),
            "check-config printed a secret"
        );
    }
    let (ok, out, _) = harness::cli(&app.config_path, &["keys", "list"]);
    assert!(
        ok && out.contains(&key) && out.contains("Enabled") && out.contains("cli key"),
        "{out}"
    );
    let (ok, out, _) = harness::cli(&app.config_path, &["keys", "describe", &key]);
    let meta: Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!(meta["KeyId"], Value::String(key.clone()));
    let (ok, out, _) = harness::cli(&app.config_path, &["instances", "list"]);
    assert!(
        ok && out.contains(SOFTWARE) && out.contains("Connected"),
        "{out}"
    );
    let (ok, out, _) = harness::cli(&app.config_path, &["instances", "describe", SOFTWARE]);
    let described: Value = serde_json::from_str(&out).unwrap();
    assert!(ok);
    assert_eq!(described["KeyNum"], 1);
    let (ok, out, _) = harness::cli(&app.config_path, &["audit", "--key-id", &key, "--json"]);
    assert!(ok);
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["Action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["Encrypt", "CreateKey"], "newest first");
    let (ok, out, _) = harness::cli(
        &app.config_path,
        &["audit", "--action", "CreateKey", "--limit", "5"],
    );
    assert!(
        ok && out.starts_with("TIME") && out.contains("CreateKey") && !out.contains("Encrypt"),
        "{out}"
    );
    // connect / disconnect ask the server at the configured address; port 0 names none.
    let (ok, _, err) = harness::cli(&app.config_path, &["instances", "connect", SOFTWARE]);
    assert!(!ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_json_requests_without_plaintext() {
    let app = TestApp::start().await;
    drop(app.handle.stop(false));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kms-connector"))
        .args(["serve", "--config"])
        .arg(&app.config_path)
        .env("KMS_CONNECTOR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line: Value =
            serde_json::from_str(&lines.next().expect("a log line").unwrap()).unwrap();
        if line["fields"]["message"] == "kms-connector listening" {
            break line["fields"]["port"].as_u64().unwrap();
        }
    };
    let mut client = app.root();
    client = client.at_port(u16::try_from(port).unwrap());
    let key = client.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_text = "LOGGED-PLAINTEXT-MARKER";
    let enc = client
        .ok("Encrypt", &[("KeyId", &key), ("Plaintext", secret_text)])
        .await;
    client
        .ok(
            "Decrypt",
            &[("CiphertextBlob", enc["CiphertextBlob"].as_str().unwrap())],
        )
        .await;
    let refused = client
        .call("DescribeKey", &[("KeyId", "key-hzz68d1fd85nosuchkey0")])
        .await;

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let text = lines.next().expect("request log lines").unwrap();
        assert!(!text.contains(secret_text), "plaintext in the log: {text}");
        let line: Value = serde_json::from_str(&text).unwrap();
        if line["fields"]["message"] == "request" {
            seen.push(line["fields"].clone());
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen[1]["action"], "Encrypt");
    assert_eq!(seen[1]["key_id"], Value::String(key));
    assert_eq!(seen[1]["outcome"], "Success");
    assert!(
        seen[1]["latency_ms"].is_u64() && seen[1]["request_id"].is_string(),
        "{:?}",
        seen[1]
    );
    assert_eq!(seen[3]["outcome"], "Forbidden.KeyNotFound");
    assert_eq!(seen[3]["request_id"], refused.body["RequestId"]);
    assert_eq!(seen[3]["http_status"], 404);
}

/// Issue: the audit table grew forever. Events older than `audit.retention_days` (default 180)
/// are purged by a background task: moving the server's clock past the window empties the
/// trail of the old events, and new ones are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_audit_events_are_purged() {
    let app = TestApp::start().await;
    let c = app.root();
    for _ in 0..3 {
        c.ok("ListKeys", &[]).await;
    }
    let store = Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    let listed = |store: Store| async move {
        store
            .query_audit(AuditQuery {
                action: Some("ListKeys".into()),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .len()
    };
    assert_eq!(listed(store.clone()).await, 3);
    app.clock_offset
        .fetch_add(181 * 86_400, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed(store.clone()).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "old events were not purged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Back to the real clock: a fresh event is within the retention and stays through
    // several purges.
    app.clock_offset
        .fetch_sub(181 * 86_400, std::sync::atomic::Ordering::SeqCst);
    c.ok("ListKeys", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(listed(store).await, 1, "recent events are kept");
}
