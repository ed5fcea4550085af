//! The PKI on disk: layout, modes, idempotence, refusals, and the fingerprint.

// Test code: a panic is the failure report (helpers included, not only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use certs::{
    DevPki, Error, FileKind, LeafSpec, PkiOptions, PkiOutcome, PkiPaths, ensure_pki,
    load_or_generate, sha256_fingerprint,
};

const LAYOUT: [&str; 12] = [
    "ca.pem",
    "ca.key",
    "ekm.pem",
    "ekm.key",
    "xki-proxy.pem",
    "xki-proxy.key",
    "kms-connector.pem",
    "kms-connector.key",
    "xki-proxy-client.pem",
    "xki-proxy-client.key",
    "kms-connector-client.pem",
    "kms-connector-client.key",
];

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn write_fresh(dir: &Path) -> (DevPki, PkiPaths) {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let paths = pki.write_to(dir, false).unwrap();
    (pki, paths)
}

#[test]
fn the_layout_is_the_documented_one_with_key_files_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/pki");
    let paths = load_or_generate(&dir, &PkiOptions::default()).unwrap();
    assert_eq!(paths, PkiPaths::in_dir(&dir));

    let names: Vec<String> = snapshot(&dir).into_keys().collect();
    let mut expected: Vec<String> = LAYOUT.iter().map(|name| (*name).to_owned()).collect();
    expected.sort();
    assert_eq!(names, expected, "exactly the layout, no leftovers");

    for file in paths.files() {
        let name = file.path.file_name().unwrap().to_string_lossy();
        match file.kind {
            FileKind::PrivateKey => {
                assert!(name.ends_with(".key"));
                assert_eq!(mode(file.path), 0o600, "{name}");
                let text = fs::read_to_string(file.path).unwrap();
                assert!(
                    text.starts_with(certs::PKCS8_PEM_HEADER),
                    "{name} is PKCS#8"
                );
            }
            FileKind::Certificate => {
                assert!(name.ends_with(".pem"));
                assert_eq!(mode(file.path), 0o644, "{name}");
                let text = fs::read_to_string(file.path).unwrap();
                assert_eq!(
                    text.matches("-----BEGIN CERTIFICATE-----").count(),
                    1,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn load_or_generate_twice_keeps_the_same_files() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = PkiOptions {
        extra_dns: vec!["xki.example.com".to_owned()],
        extra_ips: vec!["192.0.2.1".parse().unwrap()],
        ..PkiOptions::default()
    };
    let first = ensure_pki(tmp.path(), &opts).unwrap();
    assert!(matches!(first, PkiOutcome::Generated(_)));
    let before = snapshot(tmp.path());

    let second = ensure_pki(tmp.path(), &opts).unwrap();
    assert_eq!(second, PkiOutcome::Kept(first.paths().clone()));
    let again = load_or_generate(tmp.path(), &opts).unwrap();
    assert_eq!(&again, first.paths());
    // A subset of the names asked the first time is still covered.
    load_or_generate(tmp.path(), &PkiOptions::default()).unwrap();
    assert_eq!(snapshot(tmp.path()), before, "same bytes");
}

#[test]
fn write_to_refuses_to_replace_any_existing_file() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("xki-proxy.key"), "mine").unwrap();
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let err = pki.write_to(tmp.path(), false).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyExists { path } if path.ends_with("xki-proxy.key")),
        "{err}"
    );
    assert_eq!(snapshot(tmp.path()).len(), 1, "nothing written");
    assert_eq!(fs::read(tmp.path().join("xki-proxy.key")).unwrap(), b"mine");
}

#[test]
fn overwrite_replaces_every_file_with_the_right_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, paths) = write_fresh(tmp.path());
    // A key someone loosened must come back 0600.
    fs::set_permissions(&paths.ekm_key, fs::Permissions::from_mode(0o644)).unwrap();
    let before = snapshot(tmp.path());

    let replacement = DevPki::generate(&PkiOptions::default()).unwrap();
    replacement.write_to(tmp.path(), true).unwrap();
    let after = snapshot(tmp.path());
    assert_eq!(
        after.len(),
        12,
        "no temporary files left: {:?}",
        after.keys()
    );
    for name in LAYOUT {
        assert_ne!(before[name], after[name], "{name} replaced");
    }
    assert_eq!(after["ca.pem"], replacement.ca.cert_pem().as_bytes());
    assert_eq!(after["ekm.key"], replacement.ekm_server.key_pem.as_bytes());
    assert_eq!(mode(&paths.ekm_key), 0o600);
    assert_eq!(mode(&paths.ca_cert), 0o644);
    // And the replaced set is consistent.
    assert!(matches!(
        ensure_pki(tmp.path(), &PkiOptions::default()).unwrap(),
        PkiOutcome::Kept(_)
    ));
}

#[test]
fn an_incomplete_pki_is_reported_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, paths) = write_fresh(tmp.path());
    fs::remove_file(&paths.ekm_key).unwrap();
    fs::remove_file(&paths.proxy_cert).unwrap();
    let before = snapshot(tmp.path());

    let err = load_or_generate(tmp.path(), &PkiOptions::default()).unwrap_err();
    match &err {
        Error::IncompletePki { dir, missing } => {
            assert_eq!(dir, tmp.path());
            assert_eq!(
                missing,
                &vec![paths.ekm_key.clone(), paths.proxy_cert.clone()]
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn a_pki_without_the_ca_key_is_kept() {
    // As when the files come from your own PKI, whose CA key stays elsewhere.
    let tmp = tempfile::tempdir().unwrap();
    let (_, paths) = write_fresh(tmp.path());
    fs::remove_file(&paths.ca_key).unwrap();
    let outcome = ensure_pki(tmp.path(), &PkiOptions::default()).unwrap();
    assert!(matches!(outcome, PkiOutcome::Kept(_)));
    assert!(!paths.ca_key.exists());
}

#[test]
fn a_pki_that_lacks_a_requested_name_is_unusable() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _) = write_fresh(tmp.path());
    let before = snapshot(tmp.path());
    let more_dns = PkiOptions {
        extra_dns: vec!["xki.example.com".to_owned()],
        ..PkiOptions::default()
    };
    let err = load_or_generate(tmp.path(), &more_dns).unwrap_err();
    assert!(
        matches!(&err, Error::UnusablePki { reason, .. } if reason.contains("xki.example.com")),
        "{err}"
    );
    let more_ips = PkiOptions {
        extra_ips: vec!["198.51.100.4".parse().unwrap()],
        ..PkiOptions::default()
    };
    let err = load_or_generate(tmp.path(), &more_ips).unwrap_err();
    assert!(
        matches!(&err, Error::UnusablePki { reason, .. } if reason.contains("198.51.100.4")),
        "{err}"
    );
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn a_pki_with_an_expired_foreign_or_broken_leaf_is_unusable() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, paths) = write_fresh(tmp.path());
    let replace = |path: &PathBuf, contents: &str| fs::write(path, contents).unwrap();
    let unusable_because_of = |file: &str| {
        let err = load_or_generate(tmp.path(), &PkiOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::UnusablePki { reason, .. } if reason.contains(file)),
            "{err}"
        );
    };

    let expired = pki
        .ca
        .issue(&LeafSpec::server("ekm", &["ekm", "localhost"], &[]).expired())
        .unwrap();
    replace(&paths.ekm_cert, &expired.cert_pem);
    unusable_because_of("ekm.pem");
    replace(&paths.ekm_cert, &pki.ekm_server.cert_pem);

    let stranger = DevPki::generate(&PkiOptions::default()).unwrap();
    replace(
        &paths.connector_client_cert,
        &stranger.connector_client.cert_pem,
    );
    unusable_because_of("kms-connector-client.pem");
    // A server certificate where a client certificate belongs has the wrong usage.
    replace(&paths.connector_client_cert, &pki.connector_server.cert_pem);
    unusable_because_of("kms-connector-client.pem");
    replace(&paths.connector_client_cert, &pki.connector_client.cert_pem);

    replace(&paths.proxy_key, "not a key");
    let err = load_or_generate(tmp.path(), &PkiOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Pem { what, .. } if what.ends_with("xki-proxy.key")),
        "{err}"
    );
    replace(&paths.proxy_key, &pki.proxy_server.key_pem);

    load_or_generate(tmp.path(), &PkiOptions::default()).unwrap();
}

#[test]
fn racing_first_runs_never_mix_two_pkis() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let outcomes: Vec<Result<PkiOutcome, Error>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| ensure_pki(&dir, &PkiOptions::default())))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    let generated = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Ok(PkiOutcome::Generated(_))))
        .count();
    assert_eq!(generated, 1, "{outcomes:?}");
    for outcome in &outcomes {
        assert!(
            matches!(
                outcome,
                Ok(_) | Err(Error::AlreadyExists { .. } | Error::IncompletePki { .. })
            ),
            "{outcome:?}"
        );
    }
    let kept = ensure_pki(&dir, &PkiOptions::default()).unwrap();
    assert!(
        matches!(kept, PkiOutcome::Kept(_)),
        "one consistent PKI remains"
    );
}

/// PEM body → DER → SHA-256, with none of the library's code.
fn independent_fingerprint(pem: &str) -> String {
    let body: String = pem
        .lines()
        .skip_while(|line| *line != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|line| *line != "-----END CERTIFICATE-----")
        .collect();
    let der = STANDARD.decode(body).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[test]
fn the_fingerprint_is_the_sha256_of_the_der() {
    let pki = DevPki::generate(&PkiOptions::default()).unwrap();
    let pem = &pki.proxy_server.cert_pem;
    let fingerprint = sha256_fingerprint(pem).unwrap();
    assert_eq!(fingerprint, independent_fingerprint(pem));
    assert_eq!(fingerprint.len(), 64);
    assert!(
        fingerprint
            .chars()
            .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    );
    assert_ne!(
        fingerprint,
        sha256_fingerprint(&pki.ekm_server.cert_pem).unwrap()
    );

    // A chain file is pinned by its first certificate, the leaf.
    let chain = format!("{pem}{}", pki.ca.cert_pem());
    assert_eq!(sha256_fingerprint(&chain).unwrap(), fingerprint);
    assert!(matches!(
        sha256_fingerprint(&pki.proxy_server.key_pem),
        Err(Error::Pem { .. })
    ));
}
