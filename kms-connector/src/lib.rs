//! The KMS side of the HYOK stack.
