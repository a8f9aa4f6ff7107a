//! rewind-optim: optimizers, gradient clipping and learning-rate schedules.
//!
//! This crate is being filled in; today it re-exports the engine it builds on.

pub use rewind_autograd as autograd;
