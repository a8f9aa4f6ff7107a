//! rewind-autograd: tensors, a tape, and reverse-mode automatic differentiation.
//!
//! A forward pass records one node per op on a [`Tape`]; [`Var::backward`] rewinds the tape in one
//! reverse loop and returns [`Grads`]. Record a recurrent network's loop over time and the rewind
//! is backpropagation through time: nothing about it is special-cased.
//!
//! ```
//! use rewind_autograd::{Param, Tape, Tensor};
//!
//! // One tanh neuron: y = tanh(x·wᵀ + b), loss = mean((y - target)²).
//! let w = Param::named("weight", Tensor::from_vec(vec![0.5, -0.3], &[1, 2]).unwrap());
//! let b = Param::named("bias", Tensor::from_vec(vec![0.1], &[1]).unwrap());
//! let tape = Tape::new();
//! let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0, -1.0, 0.5], &[2, 2]).unwrap());
//! let target = tape.constant(Tensor::from_vec(vec![0.2, -0.4], &[2, 1]).unwrap());
//! let y = (x.matmul(tape.param(&w).t()) + tape.param(&b)).tanh();
//! let loss = (y - target).powf(2.0).mean();
//! let grads = loss.backward();
//! assert_eq!(grads[&w].shape(), &[1, 2]);
//! assert_eq!(grads[&b].shape(), &[1]);
//! println!("loss {} dL/dw {}", loss.item(), grads[&w]);
//! ```
//!
//! The pieces:
//! - [`Tensor`]: a row-major n-d array with shared, copy-on-write storage, over [`Float`]
//!   (f32 by default; f64 for exact gradient checks).
//! - [`Tape`] and [`Var`]: the record and a `Copy` handle into it. Ops are methods on `Var`
//!   (`matmul`, `tanh`, `sum_axis`, `log_softmax`, `cross_entropy`, ...) and the operators
//!   `+ - * /`.
//! - [`Param`] and [`Grads`]: trainable tensors and the gradients a backward pass returns.
//! - [`CustomOp`]: your own op with its derivative.
//! - [`gradcheck`]: central finite differences against backward.
//!
//! Shape misuse is a programming error and panics at the caller's line with the op and both
//! shapes; building a tensor from data returns a [`TensorError`].

// The modules in layers: a module imports only from its own group and the groups before it,
// and no two modules import each other.
// Base types:
mod check;
mod class_index;
mod custom;
mod error;
mod float;
mod param;
mod recycle;
mod shape;
mod tensor;
// Plain numeric kernels, and the choice of which one runs:
mod kernels;
// Arithmetic, comparisons and reductions on plain tensors, built on the kernels:
mod tensor_ops;
// The tape's entries, and the op table with each primitive's forward and derivative:
mod node;
mod primitives;
// Recording a forward pass, and rewinding it:
mod anomaly;
mod backward;
mod grads;
mod tape;
// What user code calls on `Var`: its methods (`x.matmul(w)`, `x.tanh()`) and its operators
// (`a + b`, `2.0 * x`):
mod var_methods;
mod var_operators;
// Built on top: checkpointing, gradient checking, tensor files:
mod checkpoint;
mod grad_graph;
mod gradcheck;
// The generic code compiled for f32 and f64 here, for unoptimised builds to link.
#[cfg(debug_assertions)]
mod instances;
pub mod io;
mod second_order;

pub use checkpoint::CheckpointRows;
pub use class_index::ClassIndex;
pub use custom::CustomOp;
pub use error::TensorError;
pub use float::Float;
pub use gradcheck::{
    gradcheck, gradcheck_with, gradgradcheck, gradgradcheck_with, GradcheckError, GradcheckOptions,
};
pub use grads::{GradProblem, Grads, GradsError};
pub use kernels::{cores, kernel_path, on_this_thread, share_out};
pub use param::{Param, ParamId};
pub use primitives::Reduction;
pub use recycle::{buffer_cache_bytes, release_buffer_cache, set_buffer_cache_limit};
pub use second_order::{GaussNewton, Hessian};
pub use shape::{numel, Axis, Shape};
pub use tape::{Tape, TapeStats, Var};
pub use tensor::Tensor;
pub use tensor_ops::Operand;
pub use var_methods::{concat, stack, CrossEntropyOptions};

/// The random-number crate the constructors take generators from, re-exported so that seeding
/// (`rand::rngs::StdRng::seed_from_u64`) uses the same version.
pub use rand;
