//! XKI proxy library (kept thin; the binary is the product).
