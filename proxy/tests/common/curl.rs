//! curl as a subprocess: the strict external client that found the lost HTTP/2 refusals and
//! TLS 1.3 alerts, driven with exact protocol versions, bodies and client certificates.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{HOST, Proxy};

/// What one curl run gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The HTTP version of the response (`1.1`, `2`), when one arrived.
    pub version: String,
    /// The response body.
    pub body: Vec<u8>,
    /// curl's error output (empty on success).
    pub stderr: String,
}

impl Outcome {
    /// The XKI `errorName` of the body, if it is an XKI error.
    pub fn error_name(&self) -> Option<String> {
        let json: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        json["errorName"].as_str().map(str::to_owned)
    }
}

/// Files curl reads: the CA, and client certificates by name.
#[derive(Debug)]
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// A directory holding `ca.pem` (the proxy's server CA).
    pub fn new(proxy: &Proxy) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), proxy.ca.cert_pem()).unwrap();
        Self { dir }
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes a client identity; returns its certificate and key paths.
    pub fn identity(&self, name: &str, id: &certs::CertifiedKey) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &id.cert_pem).unwrap();
        std::fs::write(&key, &id.key_pem).unwrap();
        (cert, key)
    }

    /// Writes `contents` to a file of the directory.
    pub fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// Runs curl against `https://HOST:port<target>` (HOST resolved to 127.0.0.1) trusting `ca`,
/// with `args` before the URL and `stdin` as the body source when `--data-binary @-` is among
/// them.
pub fn run(port: u16, ca: &Path, target: &str, args: &[&str], stdin: &[u8]) -> Outcome {
    let mut child = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("{HOST}:{port}:127.0.0.1")])
        .args(["--write-out", "\n%{http_version} %{http_code}"])
        .args(args)
        .arg(format!("https://{HOST}:{port}{target}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl is installed (scripts/deps.sh)");
    let mut input = child.stdin.take().unwrap();
    // curl may stop reading early (a refusal); a broken pipe here is its business.
    let _ = input.write_all(stdin);
    drop(input);
    let output = child.wait_with_output().unwrap();
    let stdout = output.stdout;
    let split = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let last = String::from_utf8_lossy(&stdout[(split + 1).min(stdout.len())..]).into_owned();
    let (version, code) = last.trim().split_once(' ').unwrap_or(("", ""));
    Outcome {
        status: code.parse().ok().filter(|&c| c != 0),
        version: version.to_owned(),
        body: stdout[..split].to_vec(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
