//! External key manager: key lifecycle and AES-256-GCM inside a PKCS#11 HSM.
//!
//! - [`KeyManager`] ([`manager`]) is the seam the EKM server and the XKI proxy hold as
//!   `Arc<dyn KeyManager>`; its one error enum is [`Error`].
//! - [`hsm`] is the workspace's PKCS#11 core (token, logged-in session pool with admission
//!   control and deadlines, vendor profile, object templates, per-mechanism operations), also
//!   used by the kms-connector's hardware instance.
//! - [`pkcs11::Pkcs11KeyManager`] implements it on that core (SoftHSM2 by default): the EKM's
//!   key directory, with key records kept in the token.
//! - [`fault::FaultInjecting`] wraps any manager with switchable delays and errors.
//! - `memory::MemoryKeyManager` (feature `memory`) is a software stand-in for other crates'
//!   unit tests only.
//! - [`server`] is the EKM API over HTTPS with mTLS; [`config`] loads its TOML configuration.
//! - `testing` (feature `testing`): a private SoftHSM2 token directory per test process, for
//!   this and other crates' tests and benches.
#![forbid(unsafe_code)]

pub mod ciphertext;
pub mod config;
pub mod error;
pub mod fault;
pub mod hsm;
pub mod manager;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod pkcs11;
pub mod record;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Operation, Result};
pub use manager::{
    AdoptKey, CreateKey, DecryptRequest, EncryptOutput, EncryptRequest, Health, HealthStatus,
    HsmHealth, KeyInfo, KeyManager, KeyOrigin, KeyState, KeyUsage, OpContext, OpTimings,
    QueueDepth,
};
