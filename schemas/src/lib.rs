//! The wire contracts of the HYOK stack.
//!
//! One module per protocol, no I/O:
//! - [`xki`]: the KMS ↔ XKI proxy protocol (wire-compatible with the public XKS Proxy API v1);
//! - [`ekm`]: the proxy ↔ external key manager API (ours, versioned under `/v1`);
//! - [`kms`]: Alibaba Cloud KMS OpenAPI 2016-01-20 error codes and shapes;
//! - [`sigv4`]: AWS Signature Version 4 signer and verifier (XKI authentication);
//! - [`acs`]: Alibaba Cloud request signatures (ACS3-HMAC-SHA256 and the HMAC-SHA1 RPC signature);
//! - [`b64`]: strict standard Base64.
#![forbid(unsafe_code)]

pub mod acs;
pub mod b64;
pub mod config;
pub mod ekm;
pub mod http;
pub mod kms;
pub mod sigv4;
pub mod xki;
