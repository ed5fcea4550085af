//! The hardware instance through the OpenAPI: the instance suite on keys generated inside a
//! SoftHSM2 token of its own, AES-128/192/256, and what `pkcs11-tool` sees in the token: every
//! key object sensitive and never extractable, its value unreadable, and gone once the key's
//! deletion window has ended.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/xki.rs"]
mod xki;

#[path = "api.rs"]
mod suite;

use std::process::Command;
use std::sync::Arc;

use suite::harness::{Fixture, Setup, TestApp};

const HARDWARE: &str = "kst-hzz68d1fd85hardwarek1";

async fn start() -> TestApp {
    let token = xki::hardware_token();
    let extra_toml = format!(
        "\n[[instances]]\nid = \"{HARDWARE}\"\nkind = \"hardware\"\nname = \"hsm\"\n[instances.hardware]\nmodule = \"{}\"\ntoken_label = \"{}\"\npin = {{ file = \"{}\" }}\n",
        token.module.display(),
        token.token_label.as_deref().unwrap(),
        token.pin.file.as_ref().unwrap().display()
    );
    TestApp::start_with(Setup {
        extra_toml,
        ..Setup::default()
    })
    .await
}

fn fixture() -> Fixture {
    Fixture {
        instance_id: HARDWARE.to_owned(),
        extra: Arc::new(|| Box::pin(async { Vec::new() })),
        versions: true,
    }
}

/// `pkcs11-tool --list-objects --type secrkey` on the hardware token, logged in.
fn token_objects() -> String {
    let token = xki::hardware_token();
    let pin = std::fs::read_to_string(token.pin.file.as_ref().unwrap()).unwrap();
    let output = Command::new("pkcs11-tool")
        .args(["--module", token.module.to_str().unwrap()])
        .args(["--token-label", token.token_label.as_deref().unwrap()])
        .args(["--login", "--pin", pin.trim()])
        .args(["--list-objects", "--type", "secrkey"])
        .output()
        .expect("pkcs11-tool (Debian package opensc)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The object's `pkcs11-tool --list-objects` paragraph.
fn object<'a>(listing: &'a str, label: &str) -> Option<&'a str> {
    listing
        .split("Secret Key Object")
        .find(|block| block.contains(label))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_instance_suite() {
    xki::isolated_env();
    let app = start().await;
    suite::instance_suite(&app, &fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardware_keys_stay_in_the_token() {
    xki::isolated_env();
    let app = start().await;
    let c = app.root();
    let mut keys = Vec::new();
    for (spec, bytes) in [
        ("Aliyun_AES_128", 16),
        ("Aliyun_AES_192", 24),
        ("Aliyun_AES_256", 32),
    ] {
        let meta = c
            .ok(
                "CreateKey",
                &[("DKMSInstanceId", HARDWARE), ("KeySpec", spec)],
            )
            .await["KeyMetadata"]
            .clone();
        assert_eq!(meta["ProtectionLevel"], "HSM");
        assert_eq!(meta["KeySpec"], spec);
        let key = meta["KeyId"].as_str().unwrap().to_owned();
        let version = meta["PrimaryKeyVersion"].as_str().unwrap().to_owned();
        let blob = c
            .ok("Encrypt", &[("KeyId", &key), ("Plaintext", "hsm")])
            .await["CiphertextBlob"]
            .as_str()
            .unwrap()
            .to_owned();
        keys.push((key, version, blob, bytes));
    }
    c.call(
        "CreateKey",
        &[("DKMSInstanceId", HARDWARE), ("KeySpec", "RSA_2048")],
    )
    .await
    .expect("UnsupportedOperation", 400);

    let listing = token_objects();
    for (key, version, _, bytes) in &keys {
        let label = format!("kms:{key}:{version}");
        let block = object(&listing, &label).unwrap_or_else(|| panic!("{label} in {listing}"));
        assert!(block.contains(&format!("AES length {bytes}")), "{block}");
        assert!(block.contains("sensitive"), "{block}");
        assert!(block.contains("never extractable"), "{block}");
        assert!(
            block.contains("encrypt") && block.contains("decrypt"),
            "{block}"
        );
        // The value cannot be read out of the token.
        let token = xki::hardware_token();
        let pin = std::fs::read_to_string(token.pin.file.as_ref().unwrap()).unwrap();
        let read = Command::new("pkcs11-tool")
            .args(["--module", token.module.to_str().unwrap()])
            .args(["--token-label", token.token_label.as_deref().unwrap()])
            .args(["--login", "--pin", pin.trim()])
            .args(["--read-object", "--type", "secrkey", "--label", &label])
            .output()
            .unwrap();
        assert!(!read.status.success(), "CKA_VALUE was readable for {label}");
    }
    // No key material in the database: the version row holds the object label only.
    let store = kms_connector::store::Store::open(&format!(
        "sqlite://{}",
        app.dir.path().join("kms.db").display()
    ))
    .await
    .unwrap();
    for (_, version, _, _) in &keys {
        let row = store.get_key_version(version).await.unwrap();
        assert_eq!(row.sealed_material, None);
        assert!(row.backend_ref.unwrap().starts_with("kms:"));
    }

    // Deletion at the end of the window destroys the objects; the blob names no key any more.
    let (key, version, blob, _) = &keys[0];
    c.ok(
        "ScheduleKeyDeletion",
        &[("KeyId", key), ("PendingWindowInDays", "7")],
    )
    .await;
    app.advance_clock_and_sweep(8 * 86_400).await;
    let label = format!("kms:{key}:{version}");
    assert!(
        object(&token_objects(), &label).is_none(),
        "{label} still in the token"
    );
    c.call("Decrypt", &[("CiphertextBlob", blob)])
        .await
        .expect("Forbidden.KeyNotFound", 404);
    c.ok("Decrypt", &[("CiphertextBlob", &keys[1].2)]).await;
}
