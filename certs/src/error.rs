//! The one error type of the `certs` library.

use std::path::PathBuf;

/// Everything that can go wrong while making, writing or checking the dev PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rcgen refused to build or sign a certificate or key.
    #[error("could not generate {what}: {source}")]
    Generate {
        /// What was being generated, e.g. `server certificate "ekm"`.
        what: String,
        #[source]
        source: rcgen::Error,
    },

    /// A common name or DNS subject alternative name is not usable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A validity period that cannot work (empty, inverted, or too long).
    #[error("invalid validity period: {0}")]
    InvalidValidity(String),

    /// Text that should hold a PEM certificate or key does not.
    #[error("invalid PEM in {what}: {reason}")]
    Pem {
        /// Which input was being read (a file path or a description).
        what: String,
        /// What the PEM parser said.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        /// What was attempted, e.g. `create`, `read`.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing without `overwrite` would replace a file that already exists.
    #[error("{path} already exists (pass --force / overwrite to replace the PKI)", path = path.display())]
    AlreadyExists {
        /// The first existing file found.
        path: PathBuf,
    },

    /// The directory holds some of the PKI files but not all of them.
    #[error(
        "incomplete PKI in {dir}: missing {missing} (pass --force / overwrite to regenerate)",
        dir = dir.display(),
        missing = display_paths(missing)
    )]
    IncompletePki {
        /// The PKI directory.
        dir: PathBuf,
        /// The files that are absent.
        missing: Vec<PathBuf>,
    },

    /// The directory holds a complete PKI that cannot serve as asked: a certificate
    /// does not chain to `ca.pem`, has expired, or lacks a requested name.
    #[error(
        "existing PKI in {dir} is unusable: {reason} (pass --force / overwrite to regenerate)",
        dir = dir.display()
    )]
    UnusablePki {
        /// The PKI directory.
        dir: PathBuf,
        /// What the check found.
        reason: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
