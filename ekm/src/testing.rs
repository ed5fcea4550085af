//! Test support for the crates that run a real [`Pkcs11KeyManager`] on SoftHSM2 (feature
//! `testing`, enabled by dev-dependencies only; the services never build it).
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`. Edition 2024 makes `set_var` unsafe
//! and the workspace forbids unsafe code, so [`isolated_softhsm`] re-runs the current test (or
//! bench) binary, same arguments, with the variable pointing at a private token directory, and
//! exits with the child's status. The child sees the marker variable and runs for real. Tokens
//! created there vanish with the directory; the machine's own SoftHSM tokens are never touched.

use std::path::Path;
use std::sync::Mutex;

use crate::error::Result;
use crate::pkcs11::{Pkcs11Config, Pkcs11KeyManager};

/// Where Debian's `softhsm2` package installs the module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Makes sure this process runs with its own SoftHSM2 configuration (see the module doc).
///
/// `marker` names the variable that tells the re-run child apart (one per test crate, so that
/// a test binary started by another crate's test gets its own directory); `extra_env` is set in
/// the child as well. Idempotent; the first call in the parent never returns.
pub fn isolated_softhsm(marker: &str, extra_env: &[(&str, &str)]) {
    static ONCE: Mutex<bool> = Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done || std::env::var_os(marker).is_some() {
        *done = true;
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("softhsm-")
        .tempdir()
        .unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let conf = write_softhsm_conf(dir.path()).unwrap_or_else(|e| fail(&e));
    let status = std::process::Command::new(
        std::env::current_exe().unwrap_or_else(|e| fail(&format!("current exe: {e}"))),
    )
    .args(std::env::args_os().skip(1))
    .env("SOFTHSM2_CONF", &conf)
    .env(marker, dir.path())
    .envs(extra_env.iter().copied())
    .status()
    .unwrap_or_else(|e| fail(&format!("re-run: {e}")));
    drop(dir);
    std::process::exit(status.code().unwrap_or(101));
}

/// Writes `dir/softhsm2.conf` with a token directory `dir/tokens` (file object store, errors
/// only in the log) and returns the configuration's path.
pub fn write_softhsm_conf(dir: &Path) -> std::result::Result<std::path::PathBuf, String> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    Ok(conf)
}

/// Opens a manager from synchronous code that may run inside any async runtime (a `OnceLock`
/// initialiser reached from a test's runtime): on its own thread, with its own runtime.
pub fn open_blocking(config: Pkcs11Config) -> Result<Pkcs11KeyManager> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::Error::Internal(format!("runtime: {e}")))?
            .block_on(Pkcs11KeyManager::open(config))
    })
    .join()
    .unwrap_or_else(|_| Err(crate::Error::Internal("open thread panicked".into())))
}

fn fail(what: &str) -> ! {
    eprintln!("isolated SoftHSM2 environment: {what}");
    std::process::exit(101);
}
