//! The KMS side of the HYOK stack.

pub mod backend;
pub mod blob;
pub mod context;
pub mod ids;
pub mod store;
