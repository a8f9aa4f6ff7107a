//! A model's recurrent state as the BPTT driver carries it from one tape to the next, as plain
//! values detached where they are put on the new tape ([`ModelState`]), and [`Carry`], that
//! state for one recurrent stack. Cells have a [`CellState`], stacks a `StackState` on a tape;
//! a model has a `ModelState` between tapes.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use rewind_autograd::{Float, Tape, Tensor, Var};

use crate::cell::{Cell, CellState, State};
use crate::recurrent::Recurrent;

/// A model's recurrent state carried from one tape to the next as plain values: what the BPTT
/// driver keeps between updates, and what a model says about its state to be driven. Putting it on a
/// new tape detaches it from the graph that produced it.
///
/// [`Carry`] is this for any [`Recurrent`] stack. A model whose state is more than one stack's
/// (two stacks, or a stack and a memory of past states) implements it for its own values:
///
/// ```
/// use std::ops::Range;
///
/// use rewind_autograd::{Tape, Tensor, Var};
/// use rewind_nn::{Carry, ModelState, State};
///
/// /// An LSTM's state and the last few hidden states, each lane's [W, H] rows in `memory`.
/// #[derive(Clone)]
/// struct Remembering {
///     lstm: Carry,
///     memory: Tensor, // [lanes, W, H]
/// }
///
/// impl ModelState<f32> for Remembering {
///     type Live<'t> = (State<'t>, Var<'t>);
///     fn on<'t>(&self, tape: &'t Tape) -> Self::Live<'t> {
///         (self.lstm.on(tape), tape.constant(self.memory.clone()))
///     }
///     fn of((lstm, memory): Self::Live<'_>) -> Self {
///         Remembering { lstm: Carry::of(lstm), memory: memory.value() }
///     }
///     fn vars<'t>((lstm, memory): Self::Live<'t>) -> Vec<Var<'t>> {
///         let mut vars = <Carry as ModelState<f32>>::vars(lstm);
///         vars.push(memory);
///         vars
///     }
///     fn from_vars<'t>(vars: &[Var<'t>]) -> Self::Live<'t> {
///         let (memory, lstm) = vars.split_last().expect("h, c and the memory");
///         (<Carry as ModelState<f32>>::from_vars(lstm), *memory)
///     }
///     fn reset_lane(&mut self, lane: usize) {
///         self.lstm.reset_lane(lane);
///         let per_lane = self.memory.numel() / self.memory.shape()[0];
///         self.memory.data_mut()[lane * per_lane..][..per_lane].fill(0.0);
///     }
///     fn select_lanes(&self, lanes: Range<usize>) -> Self {
///         Remembering {
///             lstm: self.lstm.select_lanes(lanes.clone()),
///             memory: self.memory.narrow(0, lanes.start, lanes.len()),
///         }
///     }
///     fn join_lanes(shards: Vec<Self>) -> Self {
///         let memory: Vec<Tensor> = shards.iter().map(|s| s.memory.clone()).collect();
///         Remembering {
///             lstm: ModelState::<f32>::join_lanes(shards.into_iter().map(|s| s.lstm).collect()),
///             memory: Tensor::concat(&memory, 0),
///         }
///     }
/// }
/// ```
pub trait ModelState<F: Float>: Clone {
    /// The state on a tape borrowed for `'t`.
    type Live<'t>: Copy;

    /// This state as constants on `tape`: no gradient flows back past it.
    fn on<'t>(&self, tape: &'t Tape<F>) -> Self::Live<'t>;

    /// The values of a state on a tape.
    fn of(state: Self::Live<'_>) -> Self;

    /// The state's vars, in an order [`from_vars`](ModelState::from_vars) reads back: how the
    /// driver passes the state into and out of a checkpointed segment.
    fn vars<'t>(state: Self::Live<'t>) -> Vec<Var<'t, F>>;

    /// The state made of `vars`, as [`vars`](ModelState::vars) gave them.
    fn from_vars<'t>(vars: &[Var<'t, F>]) -> Self::Live<'t>;

    /// Zeroes one lane's state (its document ended; the next starts fresh).
    #[track_caller]
    fn reset_lane(&mut self, lane: usize);

    /// The state of lanes `lanes` alone: one shard of the batch, which
    /// [`Bptt::step_sharded`](crate::Bptt::step_sharded) runs on a tape of its own.
    fn select_lanes(&self, lanes: Range<usize>) -> Self;

    /// The states of consecutive shards side by side again, in lane order: what
    /// [`select_lanes`](ModelState::select_lanes) cut apart.
    fn join_lanes(shards: Vec<Self>) -> Self;
}

/// The state of a [`Recurrent`] stack of any cell, carried between tapes as plain values: each
/// part of the cell's state ([`CellState::parts`], h first) as a tensor [D·L, lanes, ·].
///
/// `S` names the stack's state type by its `'static` member: `State<'static, F>` (the default)
/// for the built-in cells, which share it, and the cell's own state type for any other.
///
/// This is also how a stack's final state reaches the next call on a new tape (the next chunk of
/// a long sequence): `Carry::of(out.state)` keeps the values, `carry.on(&tape)` puts them on the
/// new tape. (Passing `out.state` itself to a later tape does not compile: a `Var` belongs to
/// its tape.)
///
/// ```
/// use rewind_autograd::rand::{rngs::StdRng, SeedableRng};
/// use rewind_autograd::{Tape, Tensor};
/// use rewind_nn::{Carry, Lstm, RecurrentConfig};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let lstm: Lstm = Lstm::new(RecurrentConfig::new(4, 8), &mut rng);
/// let mut carry = Carry::zeros(&lstm, 2);
/// for _chunk in 0..3 {
///     let tape = Tape::new();
///     let x = tape.constant(Tensor::uniform(&[5, 2, 4], -1.0, 1.0, &mut rng));
///     let out = lstm.forward(&tape, x, Some(carry.on(&tape)), None);
///     let grads = out.output.sum().backward(); // BPTT through this chunk only
///     carry = Carry::of(out.state);
/// #   let _ = grads;
/// }
/// assert_eq!(carry.h().shape(), &[1, 2, 8]);
/// ```
pub struct Carry<F: Float = f32, S = State<'static, F>> {
    parts: Vec<Tensor<F>>,
    state: PhantomData<fn() -> S>,
}

impl<F: Float, S> Carry<F, S> {
    /// A carry of these values, each part [D·L, lanes, ·], h first (as a checkpoint stored them).
    #[track_caller]
    pub fn from_parts(parts: Vec<Tensor<F>>) -> Self {
        assert!(
            !parts.is_empty() && parts.iter().all(|p| p.ndim() >= 3),
            "carry: needs at least one part, each [D·L, lanes, ·]"
        );
        Carry {
            parts,
            state: PhantomData,
        }
    }

    /// The parts, h first, each [D·L, lanes, ·].
    pub fn parts(&self) -> &[Tensor<F>] {
        &self.parts
    }

    /// h [D·L, lanes, H].
    pub fn h(&self) -> &Tensor<F> {
        &self.parts[0]
    }

    /// The second part (an LSTM's c [D·L, lanes, H]), if the state has one.
    pub fn c(&self) -> Option<&Tensor<F>> {
        self.parts.get(1)
    }
}

impl<F: Float, S: CellState<'static, F>> Carry<F, S> {
    /// The zero state of `stack` for `lanes` lanes.
    pub fn zeros<C>(stack: &Recurrent<C, F>, lanes: usize) -> Self
    where
        C: Cell<F, State<'static> = S>,
    {
        let layers = stack.config().directions() * stack.config().num_layers;
        let parts = stack
            .state_parts()
            .iter()
            .map(|part| {
                let mut shape = vec![layers];
                shape.extend(part.batched(lanes));
                Tensor::zeros(&shape)
            })
            .collect();
        Carry::from_parts(parts)
    }

    /// The values of a stack's final state.
    pub fn of<'t, T: CellState<'t, F, On<'static> = S>>(state: T) -> Self {
        Carry::from_parts(state.parts().iter().map(Var::value).collect())
    }

    /// This state as constants on `tape`: no gradient flows back past it.
    pub fn on<'t>(&self, tape: &'t Tape<F>) -> S::On<'t> {
        let parts: Vec<Var<'t, F>> = self
            .parts
            .iter()
            .map(|p| tape.constant(p.clone()))
            .collect();
        S::On::from_parts(&parts)
    }

    /// Zeroes one lane's state (its document ended; the next starts fresh).
    #[track_caller]
    pub fn reset_lane(&mut self, lane: usize) {
        for t in &mut self.parts {
            let (layers, lanes) = (t.shape()[0], t.shape()[1]);
            assert!(lane < lanes, "reset_lane: lane {lane} of {lanes}");
            let per_lane = t.numel() / (layers * lanes);
            let data = t.data_mut();
            for l in 0..layers {
                data[(l * lanes + lane) * per_lane..][..per_lane].fill(F::ZERO);
            }
        }
    }
}

impl<F: Float, S: CellState<'static, F>> ModelState<F> for Carry<F, S> {
    type Live<'t> = S::On<'t>;

    fn on<'t>(&self, tape: &'t Tape<F>) -> S::On<'t> {
        Carry::on(self, tape)
    }

    fn of(state: S::On<'_>) -> Self {
        Carry::from_parts(state.parts().iter().map(Var::value).collect())
    }

    fn vars<'t>(state: S::On<'t>) -> Vec<Var<'t, F>> {
        state.parts()
    }

    fn from_vars<'t>(vars: &[Var<'t, F>]) -> S::On<'t> {
        S::On::from_parts(vars)
    }

    #[track_caller]
    fn reset_lane(&mut self, lane: usize) {
        Carry::reset_lane(self, lane)
    }

    fn select_lanes(&self, lanes: Range<usize>) -> Self {
        let part = |t: &Tensor<F>| t.narrow(1, lanes.start, lanes.len());
        Carry::from_parts(self.parts.iter().map(part).collect())
    }

    fn join_lanes(shards: Vec<Self>) -> Self {
        let parts = (0..shards[0].parts.len()).map(|i| {
            let pieces: Vec<Tensor<F>> = shards.iter().map(|s| s.parts[i].clone()).collect();
            Tensor::concat(&pieces, 1)
        });
        Carry::from_parts(parts.collect())
    }
}

impl<F: Float, S> Clone for Carry<F, S> {
    fn clone(&self) -> Self {
        Carry {
            parts: self.parts.clone(),
            state: PhantomData,
        }
    }
}

impl<F: Float, S> PartialEq for Carry<F, S> {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl<F: Float, S> fmt::Debug for Carry<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carry").field("parts", &self.parts).finish()
    }
}
