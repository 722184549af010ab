//! `compact-keyed`: a full snapshot of keyed state with compact framing (see [`format`]),
//! and of operator state as length-prefixed elements.
//!
//! Entries come into the guest with `next-batch`, are re-encoded, and go back out through the
//! buffered writer: the cost a transforming format pays for crossing the component boundary
//! twice, which `snapshot-host bench` compares with the same encoder run natively.

pub mod format;

#[cfg(target_arch = "wasm32")]
mod strategy;
