//! The optimizers', clipping's and schedules' tests against PyTorch's values.

#[path = "../support/mod.rs"]
mod support;

mod clip_parity;
mod optim_more_parity;
mod optim_parity;
mod schedules_parity;
