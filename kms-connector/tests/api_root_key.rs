//! Root key rotation with the real CLI: keys made under the old root key, the configuration
//! switched to a new one with the old as `previous`, `kms-connector root-key rotate` interrupted
//! (`--limit`) and run again; every row ends sealed under the new key, every ciphertext made
//! before still decrypts on a server that knows only the new key, and no key's material changed.
//! The same from a root key file into a root key kept in a PKCS#11 token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/api.rs"]
pub mod harness;

#[path = "common/xki.rs"]
mod xki;

use std::process::Command;

use harness::{TestApp, cli};
use kms_connector::config::Config;

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
    // An asymmetric key: its private key is a format-2 row, re-sealed like the data keys.
    let ec = c.ok("CreateKey", &[("KeySpec", "EC_P256")]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let ec_version = c.ok("ListKeyVersions", &[("KeyId", &ec)]).await["KeyVersions"]["KeyVersion"]
        [0]["KeyVersionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let digest = schemas::b64::encode([5u8; 32]);
    let sign = [
        ("KeyId", ec.as_str()),
        ("KeyVersionId", ec_version.as_str()),
        ("Algorithm", "ECDSA_SHA_256"),
        ("Digest", digest.as_str()),
    ];
    let public = [
        ("KeyId", ec.as_str()),
        ("KeyVersionId", ec_version.as_str()),
    ];
    let signature = c.ok("AsymmetricSign", &sign).await["Value"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem = c.ok("GetPublicKey", &public).await["PublicKey"].clone();
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
        before.contains("11 rows  previous (configured)"),
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
    assert!(out.contains("8 rows re-sealed, 3 already current"), "{out}");
    let (ok, out, _) = cli(&config_path, &["root-key", "rotate"]);
    assert!(
        ok && out.contains("0 rows re-sealed, 11 already current"),
        "{out}"
    );
    let (_, after, _) = cli(&config_path, &["root-key", "status"]);
    assert!(
        after.contains("11 rows  current") && !after.contains("previous"),
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
    assert_eq!(c.ok("GetPublicKey", &public).await["PublicKey"], pem);
    let mut verify = sign.to_vec();
    verify.push(("Value", &signature));
    assert_eq!(c.ok("AsymmetricVerify", &verify).await["Value"], true);
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
        !ok && err.contains("11 rows are sealed under a root key that is not configured"),
        "{err}"
    );
    drop(handle.stop(false));
}

/// `[root_key] token`: the root key generated in a SoftHSM token by the CLI, rows moved into it
/// from a file key by `root-key rotate`, a server that knows only the token key decrypting what
/// was made before and making new keys; a missing object or a second create is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_in_a_token_takes_over_from_a_file() {
    let token = xki::hardware_token();
    let app = TestApp::start().await;
    let c = app.root();
    let mut blobs = Vec::new();
    for i in 0..3 {
        let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
            .as_str()
            .unwrap()
            .to_owned();
        let plaintext = format!("sealed under the file root key {i}");
        let blob = c
            .ok("Encrypt", &[("KeyId", &key), ("Plaintext", &plaintext)])
            .await["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned();
        blobs.push((blob, plaintext));
    }
    let dir = app.dir.path();
    let label = format!("root-key-test-{}", std::process::id());
    let token_toml = format!(
        "token = {{ module = \"{}\", token_label = \"{}\", pin = {{ file = \"{}\" }} }}\nkey_label = \"{label}\"\n",
        token.module.display(),
        token.token_label.as_deref().unwrap(),
        token.pin.file.as_ref().unwrap().display()
    );
    let text = std::fs::read_to_string(&app.config_path).unwrap();
    let into_token = text.replace(
        "[root_key]\nfile = \"root.key\"\n",
        &format!("[root_key]\n{token_toml}previous = [{{ file = \"root.key\" }}]\n"),
    );
    assert_ne!(into_token, text);
    let config_path = dir.join("into-token.toml");
    std::fs::write(&config_path, &into_token).unwrap();

    // Before the object exists, nothing starts on it.
    let (ok, _, err) = cli(&config_path, &["root-key", "status"]);
    assert!(!ok && err.contains("cannot seal and unseal"), "{err}");
    let (ok, out, err) = cli(&config_path, &["root-key", "create-in-token"]);
    assert!(ok && out.contains("created in token"), "{out} {err}");
    let (ok, _, err) = cli(&config_path, &["root-key", "create-in-token"]);
    assert!(!ok && err.contains("already holds an object"), "{err}");
    let (ok, out, err) = cli(&config_path, &["root-key", "rotate"]);
    assert!(ok && out.contains("3 rows re-sealed"), "{out} {err}");

    // A server that knows only the token's root key.
    app.handle.stop(true).await;
    let only_token = into_token.replace("previous = [{ file = \"root.key\" }]\n", "");
    std::fs::remove_file(dir.join("root.key")).unwrap();
    let config = Config::from_toml(&only_token, std::iter::empty(), dir).unwrap();
    let (port, _, handle) = harness::spawn(config, kms_connector::app::AppOptions::default());
    let c = c.at_port(port);
    for (blob, plaintext) in &blobs {
        let dec = c.ok("Decrypt", &[("CiphertextBlob", blob)]).await;
        assert_eq!(dec["Plaintext"].as_str(), Some(plaintext.as_str()));
    }
    let key = c.ok("CreateKey", &[]).await["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = c
        .ok(
            "Encrypt",
            &[("KeyId", &key), ("Plaintext", "sealed in the token")],
        )
        .await["CiphertextBlob"]
        .as_str()
        .unwrap()
        .to_owned();
    let dec = c.ok("Decrypt", &[("CiphertextBlob", &blob)]).await;
    assert_eq!(dec["Plaintext"].as_str(), Some("sealed in the token"));
    drop(handle.stop(false));
    let only_token_path = dir.join("only-token.toml");
    std::fs::write(&only_token_path, &only_token).unwrap();
    let (ok, out, err) = cli(&only_token_path, &["root-key", "status"]);
    assert!(ok && out.contains("4 rows  current"), "{out} {err}");

    // The object is a sensitive, never extractable AES key: what pkcs11-tool shows.
    let listing = Command::new("pkcs11-tool")
        .args(["--module", &token.module.display().to_string()])
        .args(["--token-label", token.token_label.as_deref().unwrap()])
        .args([
            "--login",
            "--pin",
            std::fs::read_to_string(token.pin.file.as_ref().unwrap())
                .unwrap()
                .trim(),
        ])
        .args(["--list-objects", "--type", "secrkey", "--label", &label])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("AES")
            && listing.contains("sensitive")
            && listing.contains("never extractable"),
        "{listing}"
    );
}
