//! rewind-nn: layers and recurrent networks built as unrolled graphs of generic ops.
//!
//! A recurrent layer is a `for` loop over time that calls a cell's `step`; nothing here knows
//! about gradients. Backpropagation through time is what the engine's backward does to that
//! loop, and sharing a weight across time steps is ordinary fan-out. Equations, parameter names,
//! shapes and initialisation follow PyTorch. A cell is parameters plus a step ([`Cell`]): the
//! built-in RNN, LSTM and GRU are three, and a user's own cell gets the same stacks
//! ([`Recurrent::with_cells`]) and BPTT driver ([`Bptt`]).
//!
//! ```
//! use rewind_autograd::rand::{rngs::StdRng, SeedableRng};
//! use rewind_autograd::{Tape, Tensor};
//! use rewind_nn::{Lstm, Module, RecurrentConfig};
//!
//! let mut rng = StdRng::seed_from_u64(0);
//! let lstm = Lstm::new(RecurrentConfig::new(8, 16).num_layers(2), &mut rng);
//! let tape = Tape::new();
//! let x = tape.constant(Tensor::uniform(&[5, 3, 8], -1.0, 1.0, &mut rng)); // [T, B, in]
//! let out = lstm.forward(&tape, x, None, None);
//! assert_eq!(&out.output.shape()[..], &[5, 3, 16]);
//! assert_eq!(&out.state.h.shape()[..], &[2, 3, 16]);
//! let grads = out.output.sum().backward(); // BPTT
//! assert_eq!(grads.len(), lstm.params().len());
//! ```

mod bptt;
mod carry;
mod cell;
mod chunk_loss;
pub mod collective;
#[cfg(feature = "mpi")]
mod collective_mpi;
mod diagnostics;
mod dropout;
mod gradcheck;
// The generic code compiled for f32 and f64 here, for unoptimised builds to link.
#[cfg(debug_assertions)]
mod instances;
mod linear;
pub mod loss;
mod module;
mod recurrent;
mod standard_cells;
mod stream;
mod sweep;
mod weights;

pub use bptt::{Bptt, Strategy, Update};
pub use carry::{Carry, ModelState};
pub use cell::{Cell, CellState, State, StatePart};
pub use chunk_loss::ChunkLoss;
pub use collective::{Collective, CollectiveError, ThreadRank, Threads};
pub use diagnostics::{
    grad_norms_through_time, param_grad_norms, recurrent_spectral_radii, spectral_radius,
};
pub use dropout::Dropout;
pub use gradcheck::gradcheck_module;
pub use linear::{Embedding, Linear};
pub use module::{nested, Module};
pub use recurrent::{Gru, Lstm, Recurrent, RecurrentConfig, RecurrentOutput, Rnn, Run, StackState};
pub use standard_cells::{CellParams, GruCell, LstmCell, Nonlinearity, RnnCell, StandardCell};
pub use stream::{Chunk, FeatureChunk, FeatureStream, Source, SourceChunk, Stream, Tokens};
pub use weights::{
    load_module, load_state_dict, load_state_dict_non_strict, load_weights,
    load_weights_non_strict, save_weights, state_dict, Unmatched, WeightProblem, WeightsError,
};
