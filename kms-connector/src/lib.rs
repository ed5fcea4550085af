//! The KMS side of the HYOK stack.

pub mod api;
pub mod app;
pub mod backend;
pub mod blob;
pub mod config;
pub mod context;
pub mod ids;
pub mod instances;
pub mod root_key;
pub mod rotation;
pub mod store;
