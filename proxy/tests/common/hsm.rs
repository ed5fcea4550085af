//! The key manager under the proxy: a real `Pkcs11KeyManager` on one SoftHSM2 token per test
//! process (a private token directory, see `ekm::testing`), wrapped in `ekm`'s fault injector
//! and in a thin counter that tells a test when a request has reached the backend.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ekm::fault::{Fault, FaultInjecting};
use ekm::pkcs11::{Pkcs11Config, Pkcs11KeyManager, TokenSelector};
use ekm::{
    AdoptKey, CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Health, KeyInfo,
    KeyManager, OpContext,
};
use schemas::xki::ExternalKeyId;
use secrecy::SecretString;
use zeroize::Zeroizing;

/// The PKCS#11 module under test.
pub const MODULE: &str = ekm::testing::SOFTHSM_MODULE;
const PIN: &str = "xki-proxy-test-pin";
const SO_PIN: &str = "xki-proxy-so-pin";
/// Label of the process's token (what the health response names as the HSM).
pub const TOKEN_LABEL: &str = "xki-proxy-tests";
const MARKER: &str = "XKI_PROXY_TEST_SOFTHSM_DIR";

fn config() -> Pkcs11Config {
    let mut config = Pkcs11Config::new(
        PathBuf::from(MODULE),
        TokenSelector::Label(TOKEN_LABEL.into()),
        SecretString::from(PIN),
    );
    config.workers = 2;
    config.queue_capacity = 64;
    // A debug build on a shared 2-core box: a probe over 100 ms is noise here, not an HSM
    // problem, and would turn the expected ACTIVE into DEGRADED.
    config.degraded_latency = Duration::from_secs(2);
    config
}

/// The process's manager, opened once on a token initialised once, shared by every test.
///
/// One manager rather than one per test: opening one searches the whole token, and the tests
/// are about the proxy. (SoftHSM's race between a search and another session's write is
/// handled inside `ekm`, which orders them per process.)
pub fn manager() -> Arc<Pkcs11KeyManager> {
    static MANAGER: OnceLock<Arc<Pkcs11KeyManager>> = OnceLock::new();
    MANAGER
        .get_or_init(|| {
            ekm::testing::isolated_softhsm(MARKER, &[]);
            ekm::pkcs11::init_token(
                Path::new(MODULE),
                TOKEN_LABEL,
                &SecretString::from(SO_PIN),
                &SecretString::from(PIN),
            )
            .expect("init token");
            Arc::new(ekm::testing::open_blocking(config()).expect("open the token"))
        })
        .clone()
}

/// A context with a generous deadline, for direct backend calls from tests.
pub fn ctx() -> OpContext {
    OpContext::new("test", Duration::from_secs(10))
}

/// A key id unique in this process's token: `<tag>-<n>`.
pub fn unique_key_id(tag: &str) -> ExternalKeyId {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    ExternalKeyId::parse(&format!("{tag}-{n}")).expect("key id")
}

type R<T> = ekm::Result<T>;

/// What the proxy holds: the PKCS#11 manager behind `ekm`'s fault injector, plus counters of
/// encrypt/decrypt calls that reached the backend (so a test knows a request is past
/// authentication, and can check that a refused request never got there).
#[derive(Debug)]
pub struct Backend {
    faults: FaultInjecting<Pkcs11KeyManager>,
    crypto_calls: AtomicUsize,
    crypto_active: AtomicUsize,
}

impl Backend {
    /// The process's manager, no fault.
    pub fn new() -> Self {
        Self {
            faults: FaultInjecting::new(manager()),
            crypto_calls: AtomicUsize::new(0),
            crypto_active: AtomicUsize::new(0),
        }
    }

    /// Switches the injected fault (for calls that start afterwards).
    pub fn set_fault(&self, fault: Fault) {
        self.faults.set(fault);
    }

    /// The real manager, bypassing faults and counters.
    pub fn manager(&self) -> &Pkcs11KeyManager {
        self.faults.inner()
    }

    /// Encrypt/decrypt calls that reached the backend so far.
    pub fn crypto_calls(&self) -> usize {
        self.crypto_calls.load(Ordering::SeqCst)
    }

    /// Encrypt/decrypt calls inside the backend right now.
    pub fn crypto_active(&self) -> usize {
        self.crypto_active.load(Ordering::SeqCst)
    }

    fn enter(&self) -> ActiveGuard<'_> {
        self.crypto_calls.fetch_add(1, Ordering::SeqCst);
        self.crypto_active.fetch_add(1, Ordering::SeqCst);
        ActiveGuard(&self.crypto_active)
    }
}

struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl KeyManager for Backend {
    async fn create_key(&self, ctx: &OpContext, request: CreateKey) -> R<KeyInfo> {
        self.faults.create_key(ctx, request).await
    }
    async fn adopt_key(&self, ctx: &OpContext, request: AdoptKey) -> R<KeyInfo> {
        self.faults.adopt_key(ctx, request).await
    }
    async fn describe_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> R<KeyInfo> {
        self.faults.describe_key(ctx, id).await
    }
    async fn list_keys(&self, ctx: &OpContext) -> R<Vec<KeyInfo>> {
        self.faults.list_keys(ctx).await
    }
    async fn enable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> R<KeyInfo> {
        self.faults.enable_key(ctx, id).await
    }
    async fn disable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> R<KeyInfo> {
        self.faults.disable_key(ctx, id).await
    }
    async fn schedule_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        days: Option<u32>,
    ) -> R<KeyInfo> {
        self.faults.schedule_key_deletion(ctx, id, days).await
    }
    async fn cancel_key_deletion(&self, ctx: &OpContext, id: &ExternalKeyId) -> R<KeyInfo> {
        self.faults.cancel_key_deletion(ctx, id).await
    }
    async fn rotate_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> R<KeyInfo> {
        self.faults.rotate_key(ctx, id).await
    }
    async fn encrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: EncryptRequest,
    ) -> R<EncryptOutput> {
        let _active = self.enter();
        self.faults.encrypt(ctx, id, request).await
    }
    async fn decrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: DecryptRequest,
    ) -> R<Zeroizing<Vec<u8>>> {
        let _active = self.enter();
        self.faults.decrypt(ctx, id, request).await
    }
    async fn health(&self, ctx: &OpContext) -> R<Health> {
        self.faults.health(ctx).await
    }
    fn limits(&self) -> ekm::ciphertext::Limits {
        self.faults.limits()
    }
    fn queue_depth(&self) -> Option<ekm::QueueDepth> {
        self.faults.queue_depth()
    }
}
