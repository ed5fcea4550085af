//! The EKM API: proxy ↔ external key manager, JSON over HTTPS (mTLS), versioned under `/v1`.
