//! rewind: a small reverse-mode autodiff engine whose recurrent layers are loops over generic ops,
//! so that backpropagation through time is what rewinding the tape does.
//!
//! This crate gathers the workspace: [`autograd`] (tensors, tape, backward, gradcheck), [`nn`]
//! (layers and recurrent networks) and [`optim`] (optimizers and schedules). Most programs need
//! only the [`prelude`].
//!
//! ```
//! use rewind::prelude::*;
//!
//! let tape = Tape::<f64>::new();
//! let x = tape.var(Tensor::scalar(2.0));
//! let y = (x * x).tanh(); // dy/dx = 2x·(1 - tanh²(x²))
//! let g = y.backward()[x].item();
//! assert!((g - 4.0 * (1.0 - 4f64.tanh().powi(2))).abs() < 1e-12);
//! ```

pub use rewind_autograd as autograd;
pub use rewind_nn as nn;
pub use rewind_optim as optim;

/// The types most programs use.
pub mod prelude {
    pub use rewind_autograd::{
        concat, gradcheck, gradgradcheck, stack, ClassIndex, CrossEntropyOptions, CustomOp, Float,
        Grads, Param, Reduction, Tape, Tensor, Var,
    };
}

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
