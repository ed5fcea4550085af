//! Root key rotation with the real CLI: keys made under the old root key, the configuration
//! switched to a new one with the old as `previous`, `kms-connector root-key rotate` interrupted
//! (`--limit`) and run again; every row ends sealed under the new key, every ciphertext made
//! before still decrypts on a server that knows only the new key, and no key's material changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

use std::process::Command;

use harness::TestApp;
use kms_connector::config::Config;

fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kms-connector"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KMS_CONNECTOR_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_rotation_is_resumable_and_changes_no_key() {
    let app = TestApp::start().await;
    let c = app.root();
    let mut blobs = Vec::new();
    for i in 0..5 {
        let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        c.ok("CreateKeyVersion", &[("KeyId", &key)]).await;
        let plaintext = format!("made under the old root key {i}");
        let blob = c
            .ok("Encrypt", &[("KeyId", &key), ("Plaintext", &plaintext)])
            .await["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned();
        blobs.push((blob, plaintext));
    }
    let dir = app.dir.path();
    std::fs::write(dir.join("new-root.key"), schemas::b64::encode([42u8; 32])).unwrap();
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let rotated = text.replace(
        "[root_key]\nfile = \"root.key\"\n",
        "[root_key]\nfile = \"new-root.key\"\nprevious = [{ file = \"root.key\" }]\n",
    );
    assert_ne!(rotated, text);
    let config_path = dir.join("rotating.toml");
    std::fs::write(&config_path, &rotated).unwrap();

    let (ok, before, err) = cli(&config_path, &["root-key", "status"]);
    assert!(ok, "{err}");
    assert!(
        before.contains("10 rows  previous (configured)"),
        "{before}"
    );
    // Interrupted after three rows, then finished.
    let (ok, out, err) = cli(&config_path, &["root-key", "rotate", "--limit", "3"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("3 rows re-sealed") && out.contains("run again"),
        "{out}"
    );
    let (ok, out, err) = cli(&config_path, &["root-key", "rotate"]);
    assert!(ok, "{err}");
    assert!(out.contains("7 rows re-sealed, 3 already current"), "{out}");
    let (ok, out, _) = cli(&config_path, &["root-key", "rotate"]);
    assert!(
        ok && out.contains("0 rows re-sealed, 10 already current"),
        "{out}"
    );
    let (_, after, _) = cli(&config_path, &["root-key", "status"]);
    assert!(
        after.contains("10 rows  current") && !after.contains("previous"),
        "{after}"
    );

    // A server that knows only the new root key decrypts everything made before.
    app.handle.stop(true).await;
    let only_new = rotated.replace("previous = [{ file = \"root.key\" }]\n", "");
    let config = Config::from_toml(&only_new, std::iter::empty(), dir).unwrap();
    let (port, _, handle) = harness::spawn(config, kms_connector::app::AppOptions::default());
    let c = c.at_port(port);
    for (blob, plaintext) in &blobs {
        let dec = c.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
        assert_eq!(dec["Plaintext"].as_str(), Some(plaintext.as_str()));
    }
    // Without the previous key, a row it still sealed would not unseal: the CLI says so.
    std::fs::write(
        dir.join("newest-root.key"),
        schemas::b64::encode([43u8; 32]),
    )
    .unwrap();
    let unconfigured = only_new.replace("file = \"new-root.key\"", "file = \"newest-root.key\"");
    std::fs::write(dir.join("unconfigured.toml"), unconfigured).unwrap();
    let (ok, _, err) = cli(&dir.join("unconfigured.toml"), &["root-key", "rotate"]);
    assert!(
        !ok && err.contains("10 rows are sealed under a root key that is not configured"),
        "{err}"
    );
    drop(handle.stop(false));
}
