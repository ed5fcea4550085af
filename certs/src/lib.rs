//! Development PKI for the HYOK stack.
//!
//! One root CA issues a server certificate for each service (`ekm`, `xki-proxy`,
//! `kms-connector`) and a client certificate for each mTLS hop (`xki-proxy` → `ekm`,
//! `kms-connector` → `xki-proxy`). Everything is generated on demand; no private key is ever
//! committed. Other crates' tests use [`Authority`] and [`LeafSpec`] to make certificates
//! (including expired, self-signed and foreign ones) in temporary directories; the
//! `hyok-dev-pki` binary writes the [file layout](layout) for the quickstart.
//!
//! Nothing here is meant for production: see `certs/README.md`.
//!
//! ```
//! # fn main() -> Result<(), certs::Error> {
//! use certs::{Authority, LeafSpec, PkiOptions};
//!
//! // Certificates for one test, in memory.
//! let ca = Authority::new("test CA")?;
//! let server = ca.issue_server("ekm", &["ekm"], &["127.0.0.1".parse().unwrap()])?;
//! let client = ca.issue_client("xki-proxy", &["xki-proxy"])?;
//! // And the ones a negative mTLS test needs.
//! let expired = ca.issue(&LeafSpec::client("xki-proxy", &["xki-proxy"]).expired())?;
//! let stranger = certs::self_signed(&LeafSpec::client("xki-proxy", &["xki-proxy"]))?;
//! let foreign = Authority::new("other CA")?.issue_client("xki-proxy", &["xki-proxy"])?;
//!
//! // Or the whole layout in a directory (kept if it is already there).
//! let dir = std::env::temp_dir().join(format!("hyok-pki-doc-{}", std::process::id()));
//! let paths = certs::load_or_generate(&dir, &PkiOptions::default())?;
//! let pin = certs::sha256_fingerprint(&std::fs::read_to_string(&paths.proxy_cert).unwrap())?;
//! assert_eq!(pin.len(), 64);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # let _ = (server, client, expired, stranger, foreign);
//! # Ok(())
//! # }
//! ```

mod authority;
mod error;
mod fingerprint;
pub mod layout;
mod pki;
mod store;

pub use authority::{
    Authority, CertifiedKey, DEFAULT_CA_VALIDITY_DAYS, DEFAULT_LEAF_VALIDITY_DAYS, LeafSpec,
    ORGANIZATION, Usage, self_signed, validate_dns_name,
};
pub use error::Error;
pub use fingerprint::{sha256_fingerprint, sha256_fingerprint_der};
pub use layout::{FileKind, PkiFile, PkiPaths};
pub use pki::{
    CONNECTOR_SERVICE, DevPki, EKM_SERVICE, PROXY_SERVICE, PkiOptions, server_dns_names, server_ips,
};
pub use store::{PkiOutcome, ensure_pki, load_or_generate};

/// First line of a PKCS#8 PEM private key. Spelled in two halves so that a scan of the repository
/// for committed private keys does not mistake this constant for one.
pub const PKCS8_PEM_HEADER: &str = concat!("-----BEGIN ", "PRIVATE KEY-----");
