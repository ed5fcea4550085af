//! Harness of the end-to-end tests: they start the real binaries (`ekm`, `xki-proxy`,
//! `kms-connector`, `hyok-dev-pki`) as child processes on loopback ports, with configs and a
//! SoftHSM token in a temp dir, and talk to them as an operator and a KMS caller would.

// Test support code: a failed expectation here is a failed test, and a panic with the reason is
// the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod kms;
pub mod service;
pub mod stack;

pub use kms::{KmsClient, field};
pub use service::{Service, binary, free_port, run, target_dir, wait_for, workspace_root};
pub use stack::{Connector, Ekm, ExternalInstance, ExtraAccessKey, Pki, Proxy};
