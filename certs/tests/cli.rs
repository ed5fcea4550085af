//! The `hyok-dev-pki` binary, run as the quickstart runs it.

// Test code: a panic is the failure report (helpers included, not only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use certs::{PkiPaths, sha256_fingerprint};

fn hyok_dev_pki(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hyok-dev-pki"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[test]
fn init_writes_then_keeps_the_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = hyok_dev_pki(&[
        "init",
        "--out",
        arg(&dir),
        "--dns",
        "xki.example.com",
        "--ip",
        "192.0.2.9",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let paths = PkiPaths::in_dir(&dir);
    for file in paths.files() {
        assert!(file.path.is_file(), "{}", file.path.display());
        assert!(
            stdout.contains(arg(file.path)),
            "lists {}: {stdout}",
            file.path.display()
        );
    }
    assert!(
        stdout.contains("xki.example.com") && stdout.contains("192.0.2.9"),
        "{stdout}"
    );
    let pin = sha256_fingerprint(&fs::read_to_string(&paths.proxy_cert).unwrap()).unwrap();
    assert!(stdout.contains(&pin), "prints the proxy pin: {stdout}");
    let before = fs::read(&paths.ca_cert).unwrap();

    let again = hyok_dev_pki(&[
        "init",
        "--out",
        arg(&dir),
        "--dns",
        "xki.example.com",
        "--ip",
        "192.0.2.9",
    ]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains(&format!("kept existing PKI in {}", dir.display())),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(fs::read(&paths.ca_cert).unwrap(), before);
}

#[test]
fn init_refuses_an_incomplete_pki_until_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(hyok_dev_pki(&["init", "--out", arg(dir)]).status.success());
    let paths = PkiPaths::in_dir(dir);
    fs::remove_file(&paths.ekm_key).unwrap();
    let before = fs::read(&paths.ca_cert).unwrap();

    let refused = hyok_dev_pki(&["init", "--out", arg(dir)]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("ekm.key") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert_eq!(fs::read(&paths.ca_cert).unwrap(), before);

    let forced = hyok_dev_pki(&["init", "--out", arg(dir), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(paths.ekm_key.is_file());
    assert_ne!(fs::read(&paths.ca_cert).unwrap(), before, "a new CA");
    let kept = hyok_dev_pki(&["init", "--out", arg(dir)]);
    assert!(text(&kept.stdout).contains("kept existing PKI"));
}

#[test]
fn fingerprint_prints_only_the_hex() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(
        hyok_dev_pki(&["init", "--out", arg(tmp.path())])
            .status
            .success()
    );
    let proxy = PkiPaths::in_dir(tmp.path()).proxy_cert;
    let out = hyok_dev_pki(&["fingerprint", arg(&proxy)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = sha256_fingerprint(&fs::read_to_string(&proxy).unwrap()).unwrap();
    assert_eq!(text(&out.stdout), format!("{expected}\n"));

    let not_a_cert = hyok_dev_pki(&["fingerprint", arg(&PkiPaths::in_dir(tmp.path()).proxy_key)]);
    assert!(!not_a_cert.status.success());
    assert!(text(&not_a_cert.stdout).is_empty());
}

#[test]
fn bad_arguments_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    for args in [
        vec!["init", "--out", arg(&dir), "--dns", "192.0.2.1"],
        vec!["init", "--out", arg(&dir), "--dns", "not a name"],
        vec!["init", "--out", arg(&dir), "--ip", "999.1.1.1"],
        vec!["init", "--out", arg(&dir), "--validity-days", "0"],
        vec!["init"],
    ] {
        let out = hyok_dev_pki(&args);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(!dir.exists(), "{args:?} wrote something");
    }
}

#[test]
fn help_names_both_commands() {
    let out = hyok_dev_pki(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.contains("init") && help.contains("fingerprint"),
        "{help}"
    );
    let init_help = text(&hyok_dev_pki(&["init", "--help"]).stdout);
    for flag in ["--out", "--dns", "--ip", "--force"] {
        assert!(init_help.contains(flag), "{init_help}");
    }
}
