//! The conformance suite on the in-memory manager: it must answer exactly like the HSM one.

mod common;

#[tokio::test]
async fn conformance_suite() {
    let m = ekm::memory::MemoryKeyManager::new();
    common::conformance::run_all(&m, "m").await;
}
