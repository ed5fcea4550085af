//! Shared helpers: a private SoftHSM2 token directory per test process
//! ([`ekm::testing::isolated_softhsm`]), a fresh token per test, and manager configurations for
//! them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ekm::OpContext;
use ekm::pkcs11::{Pkcs11Config, TokenSelector};
use secrecy::SecretString;

/// The module under test.
pub const MODULE: &str = ekm::testing::SOFTHSM_MODULE;
/// User PIN of every test token.
pub const PIN: &str = "4711-test-pin";
/// SO PIN of every test token.
pub const SO_PIN: &str = "0815-so-pin";
const MARKER: &str = "EKM_TEST_SOFTHSM_DIR";

/// Makes sure this process runs with its own SoftHSM configuration.
pub fn softhsm_env() {
    ekm::testing::isolated_softhsm(MARKER, &[]);
}

/// A token created for one test.
#[derive(Debug, Clone)]
pub struct TestToken {
    /// Unique label.
    pub label: String,
}

/// Creates a fresh, uniquely labelled token (serialised: concurrent `C_InitToken` is unsafe).
pub fn new_token(tag: &str) -> TestToken {
    softhsm_env();
    static SERIAL: Mutex<()> = Mutex::new(());
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut label = format!("{tag}-{n}");
    label.truncate(32);
    ekm::pkcs11::init_token(
        Path::new(MODULE),
        &label,
        &SecretString::from(SO_PIN),
        &SecretString::from(PIN),
    )
    .expect("init token");
    TestToken { label }
}

/// A manager configuration for `token` (2 workers, background probe on).
pub fn config(token: &TestToken) -> Pkcs11Config {
    let mut config = Pkcs11Config::new(
        PathBuf::from(MODULE),
        TokenSelector::Label(token.label.clone()),
        SecretString::from(PIN),
    );
    config.workers = 2;
    config.queue_capacity = 256;
    config
}

/// A context with a generous deadline.
pub fn ctx() -> OpContext {
    OpContext::new("test", Duration::from_secs(10))
}

/// The PKCS#11 context of the test module (already initialised by the manager).
pub fn pkcs11() -> cryptoki::context::Pkcs11 {
    ekm::pkcs11::library(Path::new(MODULE)).expect("library")
}
