//! The fixed file layout of a PKI directory.
//!
//! | file | what | mode |
//! | --- | --- | --- |
//! | `ca.pem` / `ca.key` | root CA certificate / its private key | 0644 / 0600 |
//! | `ekm.pem` / `ekm.key` | ekm server certificate / key | 0644 / 0600 |
//! | `xki-proxy.pem` / `xki-proxy.key` | xki-proxy server certificate / key | 0644 / 0600 |
//! | `kms-connector.pem` / `kms-connector.key` | kms-connector (OpenAPI) server certificate / key | 0644 / 0600 |
//! | `xki-proxy-client.pem` / `xki-proxy-client.key` | client certificate the proxy shows to ekm | 0644 / 0600 |
//! | `kms-connector-client.pem` / `kms-connector-client.key` | client certificate the connector shows to the proxy | 0644 / 0600 |
//!
//! Keys are PKCS#8 PEM, certificates one PEM block each.

use std::path::{Path, PathBuf};

/// Root CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// Root CA private key.
pub const CA_KEY: &str = "ca.key";
/// ekm server certificate.
pub const EKM_CERT: &str = "ekm.pem";
/// ekm server key.
pub const EKM_KEY: &str = "ekm.key";
/// xki-proxy server certificate.
pub const PROXY_CERT: &str = "xki-proxy.pem";
/// xki-proxy server key.
pub const PROXY_KEY: &str = "xki-proxy.key";
/// kms-connector server certificate.
pub const CONNECTOR_CERT: &str = "kms-connector.pem";
/// kms-connector server key.
pub const CONNECTOR_KEY: &str = "kms-connector.key";
/// Client certificate of xki-proxy towards ekm.
pub const PROXY_CLIENT_CERT: &str = "xki-proxy-client.pem";
/// Client key of xki-proxy towards ekm.
pub const PROXY_CLIENT_KEY: &str = "xki-proxy-client.key";
/// Client certificate of kms-connector towards xki-proxy.
pub const CONNECTOR_CLIENT_CERT: &str = "kms-connector-client.pem";
/// Client key of kms-connector towards xki-proxy.
pub const CONNECTOR_CLIENT_KEY: &str = "kms-connector-client.key";

/// Mode of certificate files.
pub const CERT_MODE: u32 = 0o644;
/// Mode of private-key files.
pub const KEY_MODE: u32 = 0o600;

/// Whether a file holds a certificate or a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A PEM certificate, world-readable.
    Certificate,
    /// A PEM private key, owner-only.
    PrivateKey,
}

impl FileKind {
    /// The Unix permission bits the file is written with.
    pub fn mode(self) -> u32 {
        match self {
            Self::Certificate => CERT_MODE,
            Self::PrivateKey => KEY_MODE,
        }
    }
}

/// One file of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PkiFile<'a> {
    /// Where it lives.
    pub path: &'a Path,
    /// Certificate or key.
    pub kind: FileKind,
    /// What it is for, in a few words.
    pub role: &'static str,
}

/// The paths of every file of a PKI directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiPaths {
    /// The directory itself.
    pub dir: PathBuf,
    /// `ca.pem`: the trust anchor every peer loads.
    pub ca_cert: PathBuf,
    /// `ca.key`: the CA private key (needed by no service).
    pub ca_key: PathBuf,
    /// `ekm.pem`
    pub ekm_cert: PathBuf,
    /// `ekm.key`
    pub ekm_key: PathBuf,
    /// `xki-proxy.pem`: the certificate the kms-connector pins by fingerprint.
    pub proxy_cert: PathBuf,
    /// `xki-proxy.key`
    pub proxy_key: PathBuf,
    /// `kms-connector.pem`
    pub connector_cert: PathBuf,
    /// `kms-connector.key`
    pub connector_key: PathBuf,
    /// `xki-proxy-client.pem`
    pub proxy_client_cert: PathBuf,
    /// `xki-proxy-client.key`
    pub proxy_client_key: PathBuf,
    /// `kms-connector-client.pem`
    pub connector_client_cert: PathBuf,
    /// `kms-connector-client.key`
    pub connector_client_key: PathBuf,
}

impl PkiPaths {
    /// The layout inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            ekm_cert: dir.join(EKM_CERT),
            ekm_key: dir.join(EKM_KEY),
            proxy_cert: dir.join(PROXY_CERT),
            proxy_key: dir.join(PROXY_KEY),
            connector_cert: dir.join(CONNECTOR_CERT),
            connector_key: dir.join(CONNECTOR_KEY),
            proxy_client_cert: dir.join(PROXY_CLIENT_CERT),
            proxy_client_key: dir.join(PROXY_CLIENT_KEY),
            connector_client_cert: dir.join(CONNECTOR_CLIENT_CERT),
            connector_client_key: dir.join(CONNECTOR_CLIENT_KEY),
        }
    }

    /// Every file, in the order they are written (the CA first).
    pub fn files(&self) -> [PkiFile<'_>; 12] {
        use FileKind::{Certificate, PrivateKey};
        fn file<'a>(path: &'a Path, kind: FileKind, role: &'static str) -> PkiFile<'a> {
            PkiFile { path, kind, role }
        }
        [
            file(&self.ca_cert, Certificate, "CA certificate (trust anchor)"),
            file(
                &self.ca_key,
                PrivateKey,
                "CA private key (used by no service)",
            ),
            file(&self.ekm_cert, Certificate, "ekm server certificate"),
            file(&self.ekm_key, PrivateKey, "ekm server key"),
            file(
                &self.proxy_cert,
                Certificate,
                "xki-proxy server certificate",
            ),
            file(&self.proxy_key, PrivateKey, "xki-proxy server key"),
            file(
                &self.connector_cert,
                Certificate,
                "kms-connector server certificate",
            ),
            file(&self.connector_key, PrivateKey, "kms-connector server key"),
            file(
                &self.proxy_client_cert,
                Certificate,
                "xki-proxy client certificate (-> ekm)",
            ),
            file(
                &self.proxy_client_key,
                PrivateKey,
                "xki-proxy client key (-> ekm)",
            ),
            file(
                &self.connector_client_cert,
                Certificate,
                "kms-connector client certificate (-> xki-proxy)",
            ),
            file(
                &self.connector_client_key,
                PrivateKey,
                "kms-connector client key (-> xki-proxy)",
            ),
        ]
    }
}
