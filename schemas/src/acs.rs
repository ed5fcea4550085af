//! Alibaba Cloud OpenAPI request signatures: ACS3-HMAC-SHA256 and the HMAC-SHA1 RPC signature.
