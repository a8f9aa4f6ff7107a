//! rewind-nn: layers and recurrent networks built as unrolled graphs of generic ops.
//!
//! This crate is being filled in; today it re-exports the engine it builds on.

pub use rewind_autograd as autograd;
