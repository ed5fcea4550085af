//! No clear key material, data key or plaintext at rest: after a software key encrypted and made
//! a data key, the test unseals the key itself (root key + the documented layout) and searches
//! every byte the database left on disk, for SQLite and for PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use e2e::stack::random_token;
use e2e::{Connector, field, run, target_dir, workspace_root};
use kms_connector::store::Store;

/// What the connector wrote, and what must never be found at rest.
struct Secrets {
    /// The software key's sealed material, as the store holds it.
    sealed: Vec<u8>,
    /// Encodings of the clear key, the data key, the plaintext and the root key.
    needles: Vec<(String, Vec<u8>)>,
}

/// Runs a software key through CreateKey, GenerateDataKey and Encrypt, stops the connector and
/// calls `snapshot` (the on-disk bytes must be taken before anything else opens the database);
/// then recovers the clear key from the store and returns the secrets to search for.
async fn exercise<S>(connector: &Connector, snapshot: impl FnOnce() -> S) -> (Secrets, S) {
    let mut service = connector.start().await;
    let kms = connector.client();
    let key_id = field(&kms.ok("CreateKey", &[]).await, "KeyMetadata.KeyId");
    let data_key = kms
        .ok(
            "GenerateDataKey",
            &[("KeyId", &key_id), ("NumberOfBytes", "32")],
        )
        .await;
    let data_key = B64
        .decode(field(&data_key, "Plaintext"))
        .expect("the data key is Base64");
    let plaintext = format!("e2e plaintext at rest {}", random_token(24));
    let encrypted = kms
        .ok("Encrypt", &[("KeyId", &key_id), ("Plaintext", &plaintext)])
        .await;
    let blob = B64
        .decode(field(&encrypted, "CiphertextBlob"))
        .expect("the blob is Base64");
    service.terminate(Duration::from_secs(10));
    let snapshot = snapshot();

    let store = Store::open(&connector.database_url)
        .await
        .expect("opening the store");
    let key = store.get_key(&key_id).await.expect("the key is stored");
    let version = store
        .get_key_version(&key.primary_key_version)
        .await
        .expect("its primary version is stored");
    let sealed = version.sealed_material.expect("software keys are sealed");
    let root_key = std::fs::read(&connector.root_key_file).expect("reading the root key");
    let clear_key = unseal(&root_key, &sealed, &key_id, &version.key_version_id);

    // The recovered key is the real one: it opens the Encrypt blob (format 2: version id,
    // format byte, IV, ciphertext and tag; no context, empty AAD).
    let (version_id, payload) = blob.split_at(36);
    assert_eq!(version_id, version.key_version_id.as_bytes());
    let (format, payload) = payload.split_first().expect("a format byte");
    assert_eq!(*format, 2);
    let (iv, body) = payload.split_at(12);
    let opened = Aes256Gcm::new_from_slice(&clear_key)
        .expect("32-byte key")
        .decrypt(Nonce::from_slice(iv), body)
        .expect("the unsealed key decrypts the blob");
    assert_eq!(opened, plaintext.as_bytes());

    let mut needles = Vec::new();
    for (what, bytes) in [
        ("clear key", clear_key.as_slice()),
        ("data key", data_key.as_slice()),
        ("root key", root_key.as_slice()),
    ] {
        needles.push((format!("{what} (raw)"), bytes.to_vec()));
        needles.push((format!("{what} (hex)"), hex::encode(bytes).into_bytes()));
        needles.push((
            format!("{what} (HEX)"),
            hex::encode_upper(bytes).into_bytes(),
        ));
        needles.push((format!("{what} (Base64)"), B64.encode(bytes).into_bytes()));
    }
    needles.push(("plaintext".into(), plaintext.into_bytes()));
    (Secrets { sealed, needles }, snapshot)
}

/// `0x01 ‖ root_key_id[4] ‖ nonce[12] ‖ AES-256-GCM(root, key, AAD = header[5] ‖ key_id ‖ 0x00
/// ‖ version_id) ‖ tag[16]` (kms-connector/src/backend/software.rs), opened independently.
fn unseal(root_key: &[u8], sealed: &[u8], key_id: &str, version_id: &str) -> Vec<u8> {
    assert_eq!(sealed.len(), 65, "sealed material length");
    assert_eq!(sealed[0], 1, "sealed material format");
    let (header, rest) = sealed.split_at(5);
    let (nonce, body) = rest.split_at(12);
    let mut aad = header.to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(version_id.as_bytes());
    let key = Aes256Gcm::new_from_slice(root_key)
        .expect("32-byte root key")
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .expect("the sealed material opens under the root key");
    assert_eq!(key.len(), 32);
    key
}

/// The first needle found in `haystack`. One pass with a first-byte table: the PostgreSQL data
/// directory is ~100 MB and this runs unoptimised.
fn find<'a>(haystack: &[u8], needles: &'a [(String, Vec<u8>)]) -> Option<&'a str> {
    let mut first = [false; 256];
    for (_, needle) in needles {
        first[usize::from(needle[0])] = true;
    }
    for (i, byte) in haystack.iter().enumerate() {
        if first[usize::from(*byte)] {
            let rest = &haystack[i..];
            if let Some((name, _)) = needles.iter().find(|(_, n)| rest.starts_with(n)) {
                return Some(name);
            }
        }
    }
    None
}

/// Every regular file under `dir`.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&entry.path(), out),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}

fn assert_clean(files: &[(PathBuf, Vec<u8>)], secrets: &Secrets) {
    for (path, bytes) in files {
        if let Some(name) = find(bytes, &secrets.needles) {
            panic!("{name} found at rest in {}", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_no_clear_key_material() {
    let temp = tempfile::tempdir().expect("temp dir");
    let connector = Connector::configure(temp.path(), None, None);
    let db = temp.path().join("kms-connector.db");
    let (secrets, files) = exercise(&connector, || {
        let mut files = Vec::new();
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            if let Ok(bytes) = std::fs::read(&path) {
                files.push((path, bytes));
            }
        }
        files
    })
    .await;
    assert!(!files.is_empty(), "no database file at {}", db.display());
    let sealed = [("sealed material".to_owned(), secrets.sealed.clone())];
    assert!(
        files
            .iter()
            .any(|(_, bytes)| find(bytes, &sealed).is_some()),
        "the sealed material is not in the database files: the search looks at the wrong bytes"
    );
    assert_clean(&files, &secrets);
}

/// `scripts/pg-test.sh start`: the cluster's URL. Panics (never skips) if it cannot start.
fn pg_test_url() -> String {
    let script = workspace_root().join("scripts/pg-test.sh");
    let out = run(&script, &["start"], &[]);
    out.lines()
        .rev()
        .find(|l| l.starts_with("postgres://"))
        .unwrap_or_else(|| panic!("pg-test.sh start printed no URL: {out:?}"))
        .to_owned()
}

fn psql(url: &str, sql: &str) {
    let status = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .status()
        .expect("running psql");
    assert!(status.success(), "psql {sql:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_holds_no_clear_key_material() {
    let cluster = pg_test_url();
    let database = format!("e2e_{}_{}", std::process::id(), random_token(8));
    psql(&cluster, &format!("CREATE DATABASE {database}"));
    let (base, _) = cluster.rsplit_once('/').expect("URL with a database");
    let url = format!("{base}/{database}");

    let temp = tempfile::tempdir().expect("temp dir");
    let connector = Connector::configure(temp.path(), Some(url.clone()), None);
    let (secrets, ()) = exercise(&connector, || ()).await;

    // Dirty pages to the data files, so that the directory search sees the rows themselves.
    psql(&cluster, "CHECKPOINT");
    let dump = Command::new("pg_dump")
        .arg(&url)
        .output()
        .expect("running pg_dump");
    assert!(
        dump.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = vec![(PathBuf::from("pg_dump"), dump.stdout)];
    let sealed_hex = [(
        "sealed material (bytea hex)".to_owned(),
        format!("\\x{}", hex::encode(&secrets.sealed)).into_bytes(),
    )];
    assert!(
        find(&dump[0].1, &sealed_hex).is_some(),
        "the sealed material is not in the dump: the search looks at the wrong data"
    );
    assert_clean(&dump, &secrets);

    // One file at a time (the directory is ~100 MB); files that vanish meanwhile are skipped.
    let mut paths = Vec::new();
    files_under(&target_dir().join("pg-test/data"), &mut paths);
    let sealed_raw = [("sealed material".to_owned(), secrets.sealed.clone())];
    let mut sealed_seen = false;
    for path in paths {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        sealed_seen |= find(&bytes, &sealed_raw).is_some();
        assert_clean(&[(path, bytes)], &secrets);
    }
    assert!(
        sealed_seen,
        "the sealed material is not in the data directory: the search looks at the wrong files"
    );

    psql(&cluster, &format!("DROP DATABASE {database} WITH (FORCE)"));
}
