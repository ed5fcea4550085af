//! Helpers for the end-to-end tests (they start the real binaries).
