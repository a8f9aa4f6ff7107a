//! rewind-optim: optimizers, gradient clipping and learning-rate schedules, matching PyTorch's
//! update rules, defaults and order of operations.
//!
//! An optimizer updates a [`Module`](rewind_nn::Module)'s parameters in place from the
//! [`Grads`](rewind_autograd::Grads) of one backward pass:
//!
//! ```
//! use rewind_autograd::{Param, Tape, Tensor};
//! use rewind_optim::{clip_grad_norm, Adam, Optimizer};
//!
//! // Minimise (w - 3)² for a single weight.
//! let mut model = vec![Param::named("w", Tensor::<f32>::scalar(0.0))];
//! let mut opt = Adam::new(0.1);
//! for _ in 0..200 {
//!     let tape = Tape::new();
//!     let w = tape.param(&model[0]);
//!     let loss = (w - 3.0).powf(2.0);
//!     let mut grads = loss.backward();
//!     clip_grad_norm(&mut grads, 5.0);
//!     opt.step(&mut model, &grads);
//! }
//! assert!((model[0].value().item() - 3.0).abs() < 1e-2);
//! ```

mod adadelta;
mod adagrad;
mod adam;
mod adamax;
mod asgd;
mod average;
mod clip;
mod fused;
// The generic code compiled for f32 and f64 here, for unoptimised builds to link.
#[cfg(debug_assertions)]
mod instances;
mod lbfgs;
mod nadam;
mod optimizer;
mod plateau;
mod radam;
mod rmsprop;
mod rprop;
mod schedule;
mod sgd;

pub use adadelta::Adadelta;
pub use adagrad::Adagrad;
pub use adam::Adam;
pub use adamax::Adamax;
pub use asgd::Asgd;
pub use average::{AverageError, Averaging, WeightAverage};
pub use clip::{clip_grad_norm, clip_grad_norm_finite, clip_grad_value, grad_norm, NonFiniteNorm};
pub use clip::{clip_grad_norm_with, ClipOptions};
pub use lbfgs::{Lbfgs, LineSearch};
pub use nadam::NAdam;
pub use optimizer::{OptimState, Optimizer, ParamGroup, StateError};
pub use plateau::{PlateauMode, PlateauState, ReduceLrOnPlateau, ThresholdMode};
pub use radam::RAdam;
pub use rmsprop::RmsProp;
pub use rprop::Rprop;
pub use schedule::{
    Anneal, CosineAnnealingWarmRestarts, CyclicLr, CyclicMode, MultiStepLr, OneCycleLr,
};
pub use schedule::{
    BaseLr, ConstantLr, CosineAnnealingLr, ExponentialLr, LinearLr, LrSchedule, Scheduler, StepLr,
    Warmup,
};
pub use schedule::{ChainedScheduler, LambdaLr, MultiplicativeLr, PolynomialLr, SequentialLr};
pub use sgd::Sgd;
