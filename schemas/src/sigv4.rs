//! AWS Signature Version 4 for the XKI protocol (service `kms-xks-proxy`).
