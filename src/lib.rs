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

// The crates under their own names too: the compiler's hints name a trait by its crate's name
// (`use rewind::rewind_nn::Cell`), and a hint should be a path that resolves.
#[doc(hidden)]
pub use {rewind_autograd, rewind_nn, rewind_optim};

/// The types most programs use, and every trait whose methods a program calls: `Module`
/// (`params`, `num_params`), `Cell` (`forward` on a cell), `StandardCell` (building a built-in
/// cell), `CellState`, `ModelState` (a model's state carried between tapes), `Source` (`take`
/// and `rewind` on a stream), `Optimizer` (`step`) and `LrSchedule`.
///
/// ```
/// use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
/// use rewind::nn::{GruCell, LstmCell};
/// use rewind::optim::Sgd;
/// use rewind::prelude::*;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut gru = GruCell::new(3, 4, &mut rng); // torch.nn.GRUCell(3, 4)
/// assert_eq!(gru.num_params(), 12 * 3 + 12 * 4 + 12 + 12);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::ones(&[2, 3]));
/// let h = tape.constant(Tensor::zeros(&[2, 4]));
/// let h = gru.forward(&tape, x, h).h; // gru(x, h)
/// let lstm = LstmCell::new(3, 4, &mut rng);
/// let c = tape.constant(Tensor::zeros(&[2, 4]));
/// let next = lstm.forward(&tape, x, (h, c)); // lstm(x, (h, c))
/// let grads = (next.h.sum() + h.sum()).backward();
/// Sgd::new(0.1).step(&mut gru, &grads);
/// ```
pub mod prelude {
    pub use rewind_autograd::{
        concat, gradcheck, gradgradcheck, stack, ClassIndex, CrossEntropyOptions, CustomOp, Float,
        Grads, Param, Reduction, Tape, Tensor, Var,
    };
    pub use rewind_nn::{Cell, CellState, ModelState, Module, Source, StandardCell};
    pub use rewind_optim::{LrSchedule, Optimizer};
}

/// The README's examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The guide's examples (docs/guide.md), compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideDoctests;
