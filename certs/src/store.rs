//! The PKI on disk: writing the layout, and keeping or generating it idempotently.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::layout::{CA_CERT, PkiFile, PkiPaths};
use crate::pki::{CONNECTOR_SERVICE, EKM_SERVICE, PROXY_SERVICE, server_dns_names, server_ips};
use crate::{DevPki, Error, PkiOptions};

/// What [`ensure_pki`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PkiOutcome {
    /// The directory held no PKI: a new one was generated and written.
    Generated(PkiPaths),
    /// The directory held a complete, valid PKI: it was kept untouched.
    Kept(PkiPaths),
}

impl PkiOutcome {
    /// The paths of the PKI, whichever way it came to be.
    pub fn paths(&self) -> &PkiPaths {
        match self {
            Self::Generated(paths) | Self::Kept(paths) => paths,
        }
    }

    /// The paths of the PKI, whichever way it came to be.
    pub fn into_paths(self) -> PkiPaths {
        match self {
            Self::Generated(paths) | Self::Kept(paths) => paths,
        }
    }
}

/// Keeps the PKI in `dir` if there is a complete one, generates one if there is none.
///
/// See [`ensure_pki`] for the rules; this only drops the outcome.
pub fn load_or_generate(dir: &Path, opts: &PkiOptions) -> Result<PkiPaths, Error> {
    ensure_pki(dir, opts).map(PkiOutcome::into_paths)
}

/// Keeps the PKI in `dir` if there is a complete one, generates one if there is none.
///
/// - No file of the layout present: generates a PKI and writes it ([`PkiOutcome::Generated`]).
/// - Every file a service needs present (`ca.key` may be absent, e.g. when the files come
///   from your own PKI): checks that each leaf parses, chains to `ca.pem`, is valid now, has
///   the right extended key usage and, for server certificates, covers the names and IPs that
///   `opts` asks for; then keeps the files untouched ([`PkiOutcome::Kept`]) or fails with
///   [`Error::UnusablePki`].
/// - Anything in between: [`Error::IncompletePki`]. Nothing is overwritten.
///
/// Callers racing on one empty directory never mix two PKIs: each file appears complete and
/// exclusively, the CA certificate first, so exactly one caller generates; the others get
/// [`Error::AlreadyExists`] (nothing written), [`Error::IncompletePki`] (they looked
/// mid-write) or [`PkiOutcome::Kept`].
pub fn ensure_pki(dir: &Path, opts: &PkiOptions) -> Result<PkiOutcome, Error> {
    let paths = PkiPaths::in_dir(dir);
    let mut present = 0;
    let mut missing_required = Vec::new();
    for file in paths.files() {
        let exists = file
            .path
            .try_exists()
            .map_err(|source| Error::io("inspect", file.path, source))?;
        if exists {
            present += 1;
        } else if file.path != paths.ca_key {
            missing_required.push(file.path.to_path_buf());
        }
    }
    if present == 0 {
        let paths = DevPki::generate(opts)?.write_to(dir, false)?;
        return Ok(PkiOutcome::Generated(paths));
    }
    if !missing_required.is_empty() {
        return Err(Error::IncompletePki {
            dir: dir.to_path_buf(),
            missing: missing_required,
        });
    }
    check_existing(&paths, opts)?;
    Ok(PkiOutcome::Kept(paths))
}

/// Writes `files` into `dir`; see [`DevPki::write_to`].
pub(crate) fn write_files(
    dir: &Path,
    files: &[(PkiFile<'_>, &str)],
    overwrite: bool,
) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::io("create directory", dir, source))?;
    if !overwrite {
        for (file, _) in files {
            if file.path.symlink_metadata().is_ok() {
                return Err(Error::AlreadyExists {
                    path: file.path.to_path_buf(),
                });
            }
        }
    }
    for (file, contents) in files {
        let mode = file.kind.mode();
        if overwrite {
            replace_file(file.path, contents, mode)?;
        } else {
            create_file(file.path, contents, mode)?;
        }
    }
    Ok(())
}

/// Creates `path`, failing if it exists. Readers never see a half-written file: the content
/// goes to a temporary file first, and a hard link publishes it under its name (a link, unlike
/// a rename, refuses to replace an existing name).
fn create_file(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let tmp = temporary_sibling(path);
    write_new_file(&tmp, contents, mode)?;
    let result = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        }),
        // File systems without hard links: write in place, still exclusively.
        Err(_) => write_new_file(path, contents, mode),
    };
    let _ = fs::remove_file(&tmp);
    result
}

/// Replaces `path` atomically: a reader sees the old file or the new one, never half of one.
fn replace_file(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let tmp = temporary_sibling(path);
    write_new_file(&tmp, contents, mode)?;
    let result = fs::rename(&tmp, path).map_err(|source| Error::io("rename into", path, source));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` exclusively with `mode` set at open, so a key is never readable by others,
/// not even for an instant.
fn write_new_file(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                Error::io("create", path, source)
            }
        })?;
    // The umask may have cleared bits of a certificate's 0644; set them exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::io("write", path, source))
}

/// A hidden name next to `path`, unique within this process and across processes.
fn temporary_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn check_existing(paths: &PkiPaths, opts: &PkiOptions) -> Result<(), Error> {
    let unusable = |reason: String| Error::UnusablePki {
        dir: paths.dir.clone(),
        reason,
    };
    let ca_chain = read_certs(&paths.ca_cert)?;
    let ca = ca_chain
        .first()
        .ok_or_else(|| unusable(format!("{CA_CERT} is empty")))?;
    let anchor = webpki::anchor_from_trusted_cert(ca)
        .map_err(|err| unusable(format!("{CA_CERT} is not a usable CA certificate: {err}")))?;
    let anchors = [anchor];
    let now = UnixTime::now();
    let ips = server_ips(opts);

    let leaves = [
        (&paths.ekm_cert, &paths.ekm_key, Some(EKM_SERVICE)),
        (&paths.proxy_cert, &paths.proxy_key, Some(PROXY_SERVICE)),
        (
            &paths.connector_cert,
            &paths.connector_key,
            Some(CONNECTOR_SERVICE),
        ),
        (&paths.proxy_client_cert, &paths.proxy_client_key, None),
        (
            &paths.connector_client_cert,
            &paths.connector_client_key,
            None,
        ),
    ];
    for (cert_path, key_path, service) in leaves {
        read_key(key_path)?;
        let chain = read_certs(cert_path)?;
        let shown = cert_path.display();
        // A PEM file may carry its intermediates after the leaf.
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(unusable(format!("{shown} is empty")));
        };
        let end_entity = EndEntityCert::try_from(leaf)
            .map_err(|err| unusable(format!("{shown} does not parse: {err:?}")))?;
        let usage = match service {
            Some(_) => KeyUsage::server_auth(),
            None => KeyUsage::client_auth(),
        };
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                intermediates,
                now,
                usage,
                None,
                None,
            )
            .map_err(|err| {
                unusable(format!(
                    "{shown} does not verify against {CA_CERT}: {err:?}"
                ))
            })?;
        let Some(service) = service else { continue };
        let mut wanted: Vec<(String, ServerName<'static>)> = Vec::new();
        for name in server_dns_names(service, opts) {
            // A wildcard SAN is checked through a name it must cover.
            let probe = match name.strip_prefix("*.") {
                Some(rest) => format!("wildcard-probe.{rest}"),
                None => name.clone(),
            };
            let server_name = ServerName::try_from(probe)
                .map_err(|_| unusable(format!("{name:?} is not a valid DNS name")))?;
            wanted.push((name, server_name));
        }
        wanted.extend(ips.iter().map(|ip| (ip.to_string(), ServerName::from(*ip))));
        for (name, server_name) in wanted {
            end_entity
                .verify_is_valid_for_subject_name(&server_name)
                .map_err(|_| unusable(format!("{shown} is not valid for {name}")))?;
        }
    }
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = fs::read(path).map_err(|source| Error::io("read", path, source))?;
    let pem_error = |reason: String| Error::Pem {
        what: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(err.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<(), Error> {
    let bytes = fs::read(path).map_err(|source| Error::io("read", path, source))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map(drop)
        .map_err(|err| Error::Pem {
            what: path.display().to_string(),
            reason: err.to_string(),
        })
}
