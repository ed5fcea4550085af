//! External key manager: key lifecycle and AES-256-GCM inside a PKCS#11 HSM.
