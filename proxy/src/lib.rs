//! The XKI proxy: the server a KMS external key instance connects to, speaking a protocol
//! wire-compatible with the public XKS Proxy API v1, in front of the external key manager.
//!
//! The binary is the product; this library exists so that tests start the real application
//! in-process on random ports.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod credentials;
pub mod error;
pub mod health;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod remote;
pub mod tenancy;
pub mod tls;
pub mod xki;

pub use app::{Application, Reloader, StartError};
pub use config::Config;
