//! The optimizers', clipping's and schedules' tests against PyTorch's values.

#[path = "../support/mod.rs"]
mod support;

mod average_parity;
mod clip_parity;
mod optim_more_parity;
mod optim_parity;
mod schedules_parity;
