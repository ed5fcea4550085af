//! `FaultInjecting<K>`: wraps any [`KeyManager`] and, while a fault is switched on, delays or
//! fails its cryptographic operations and health. Used to drive the throttled and
//! deadline-exceeded paths end to end, and to show recovery when the fault is switched off.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use schemas::xki::ExternalKeyId;
use zeroize::Zeroizing;

use crate::ciphertext::Limits;
use crate::error::{Error, Result};
use crate::manager::{
    AdoptKey, CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Health, KeyInfo,
    KeyManager, OpContext,
};

/// What to inject into each cryptographic call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass through.
    #[default]
    None,
    /// Sleep this long (asynchronously) before calling the inner manager.
    Delay(Duration),
    /// Fail at once with this error.
    Fail(Error),
}

/// A manager whose crypto and health calls can be delayed or failed at run time. It shares the
/// manager it wraps (`K` may be `dyn KeyManager`), so a test can inject faults in front of a
/// manager that other parts of the process use directly.
#[derive(Debug)]
pub struct FaultInjecting<K: ?Sized> {
    inner: Arc<K>,
    fault: RwLock<Fault>,
}

impl<K: KeyManager + ?Sized> FaultInjecting<K> {
    /// Wraps `inner` with no fault.
    pub fn new(inner: Arc<K>) -> Self {
        Self {
            inner,
            fault: RwLock::new(Fault::None),
        }
    }

    /// Switches the fault (takes effect for calls that start afterwards).
    pub fn set(&self, fault: Fault) {
        *self.fault.write().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// The wrapped manager.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    async fn inject(&self) -> Result<()> {
        let fault = self.fault.read().unwrap_or_else(|p| p.into_inner()).clone();
        match fault {
            Fault::None => Ok(()),
            Fault::Delay(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            Fault::Fail(error) => Err(error),
        }
    }
}

#[async_trait::async_trait]
impl<K: KeyManager + ?Sized> KeyManager for FaultInjecting<K> {
    async fn create_key(&self, ctx: &OpContext, request: CreateKey) -> Result<KeyInfo> {
        self.inner.create_key(ctx, request).await
    }
    async fn adopt_key(&self, ctx: &OpContext, request: AdoptKey) -> Result<KeyInfo> {
        self.inner.adopt_key(ctx, request).await
    }
    async fn describe_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.describe_key(ctx, id).await
    }
    async fn list_keys(&self, ctx: &OpContext) -> Result<Vec<KeyInfo>> {
        self.inner.list_keys(ctx).await
    }
    async fn enable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.enable_key(ctx, id).await
    }
    async fn disable_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.disable_key(ctx, id).await
    }
    async fn schedule_key_deletion(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        pending_window_days: Option<u32>,
    ) -> Result<KeyInfo> {
        self.inner
            .schedule_key_deletion(ctx, id, pending_window_days)
            .await
    }
    async fn cancel_key_deletion(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.cancel_key_deletion(ctx, id).await
    }
    async fn rotate_key(&self, ctx: &OpContext, id: &ExternalKeyId) -> Result<KeyInfo> {
        self.inner.rotate_key(ctx, id).await
    }
    async fn encrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: EncryptRequest,
    ) -> Result<EncryptOutput> {
        self.inject().await?;
        self.inner.encrypt(ctx, id, request).await
    }
    async fn decrypt(
        &self,
        ctx: &OpContext,
        id: &ExternalKeyId,
        request: DecryptRequest,
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.inject().await?;
        self.inner.decrypt(ctx, id, request).await
    }
    async fn health(&self, ctx: &OpContext) -> Result<Health> {
        self.inject().await?;
        self.inner.health(ctx).await
    }
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn queue_depth(&self) -> Option<crate::QueueDepth> {
        self.inner.queue_depth()
    }
}
