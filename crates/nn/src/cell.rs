//! `Cell`: one time step of a recurrent network, the trait any cell implements (the built-in RNN,
//! LSTM and GRU cells as well as a user's own), and `CellState`, what a cell carries from one step
//! to the next.
//!
//! A cell is its parameters plus a step. [`Recurrent`](crate::Recurrent) gives any cell layers,
//! directions, lengths, dropout between layers, checkpointed segments and the BPTT driver; it
//! calls [`Cell::project`] once on every step's input (one GEMM for the whole sequence, for cells
//! that have an input projection) and then [`Cell::step`] once per step.

use rewind_autograd::{Float, Tape, Tensor, Var};

use crate::module::Module;

/// One time step of a recurrent network: a [`Module`] (its parameters, any number, any names)
/// with a step from an input and a state to the next state.
///
/// The step reads its parameters with `tape.param(&self.weight)`, on whatever tape it is handed:
/// a stack's own tape, or the inner tape of a checkpointed segment, which takes the parameters a
/// step reads as the segment's inputs. Nothing in a cell knows about gradients; backpropagation
/// through time is the engine rewinding the stack's loop over [`step`](Cell::step).
///
/// ```
/// use rewind_autograd::rand::{rngs::StdRng, SeedableRng};
/// use rewind_autograd::{Param, Tape, Tensor, Var};
/// use rewind_nn::{Cell, Module, Recurrent, RecurrentConfig, StatePart};
///
/// /// h' = tanh(x W_xᵀ + h W_hᵀ), with no biases.
/// struct Elman {
///     w_x: Param,
///     w_h: Param,
/// }
///
/// impl Module for Elman {
///     fn params(&self) -> Vec<(String, &Param)> {
///         vec![("w_x".into(), &self.w_x), ("w_h".into(), &self.w_h)]
///     }
/// }
///
/// impl Cell for Elman {
///     type State<'t> = Var<'t>;
///     fn input_size(&self) -> usize {
///         self.w_x.shape()[1]
///     }
///     fn state_parts(&self) -> Vec<StatePart> {
///         vec![StatePart::new("h", &[self.w_h.shape()[0]])]
///     }
///     fn project<'t>(&self, tape: &'t Tape, x: Var<'t>) -> Var<'t> {
///         x.matmul(tape.param(&self.w_x).t()) // every step's x W_xᵀ in one product
///     }
///     fn step<'t>(&self, tape: &'t Tape, xp: Var<'t>, h: Var<'t>) -> Var<'t> {
///         xp.addmm(h, tape.param(&self.w_h).t()).tanh()
///     }
/// }
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let stack = Recurrent::with_cells(RecurrentConfig::new(3, 5).num_layers(2), |input, hidden| Elman {
///     w_x: Param::new(Tensor::uniform(&[hidden, input], -0.4, 0.4, &mut rng)),
///     w_h: Param::new(Tensor::uniform(&[hidden, hidden], -0.4, 0.4, &mut rng)),
/// });
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::uniform(&[7, 2, 3], -1.0, 1.0, &mut rng)); // [T, B, in]
/// let out = stack.forward(&tape, x, None, None);
/// assert_eq!(&out.output.shape()[..], &[7, 2, 5]);
/// assert_eq!(&out.state.shape()[..], &[2, 2, 5]); // h_n of both layers
/// let grads = out.output.sum().backward();
/// assert_eq!(grads.len(), stack.params().len());
/// ```
pub trait Cell<F: Float = f32>: Module<F> {
    /// What the cell carries from step to step, on a tape borrowed for `'t`: h alone (`Var`),
    /// h and c ([`State`]), or any parts the cell needs, each with the batch as its first axis.
    type State<'t>: CellState<'t, F>;

    /// The features of each step's input x.
    fn input_size(&self) -> usize;

    /// The parts of the state for one sequence, h first: each one's name and its shape without
    /// the batch axis. h must be a vector \[H\]; it is what a layer outputs at each step.
    fn state_parts(&self) -> Vec<StatePart>;

    /// The projection of the inputs of many steps at once, `x` [N, in] → [N, ·]: a stack calls
    /// it once on every step's input before its loop and hands each step its rows. A cell whose
    /// gates start with `x W_ihᵀ + b` does that product here, as one GEMM for the whole sequence;
    /// the default hands [`step`](Cell::step) the input itself.
    fn project<'t>(&self, tape: &'t Tape<F>, x: Var<'t, F>) -> Var<'t, F> {
        let _ = tape;
        x
    }

    /// One step: the next state from this step's rows of [`project`](Cell::project) [B, ·] and
    /// the state.
    fn step<'t>(
        &self,
        tape: &'t Tape<F>,
        input: Var<'t, F>,
        state: Self::State<'t>,
    ) -> Self::State<'t>;

    /// A short name for messages (`lstm`); by default the type's own name.
    fn name(&self) -> &'static str {
        let full = std::any::type_name::<Self>();
        let bare = full.split('<').next().unwrap_or(full);
        bare.rsplit("::").next().unwrap_or(bare)
    }

    /// H, by default the features of h. A cell whose h is a projection of fewer features (an
    /// LSTM with `proj_size`) returns the H of its gates and c instead.
    fn hidden_size(&self) -> usize {
        self.state_parts()[0].shape[0]
    }

    /// One step from the raw input `x` [B, in], as `torch.nn.LSTMCell.forward`: the step of
    /// `x`'s projection. The state is anything that converts into the cell's state: for the
    /// built-in cells a [`State`], h alone (RNN and GRU, as `torch.nn.GRUCell(x, h)`), or the
    /// pair `(h, c)` (LSTM, as `torch.nn.LSTMCell(x, (h, c))`), each part [B, ·].
    ///
    /// An unbatched `x` `[in]` takes a state without the batch axis (h `[H]`) and gives one back
    /// (h' `[H]`), as PyTorch's cells do: it is the step of a batch of one row.
    ///
    /// Panics, naming both shapes, unless `x` is `[B, in]` or `[in]` and each state part is
    /// `[B, ·]`, or without the batch axis for an unbatched `x`.
    #[track_caller]
    fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        x: Var<'t, F>,
        state: impl Into<Self::State<'t>>,
    ) -> Self::State<'t> {
        let state = state.into();
        if !check_step_input(self, x, &state) {
            let input = self.project(tape, x);
            return self.step(tape, input, state);
        }
        let batch_of_one = |v: Var<'t, F>| {
            let shape: Vec<usize> = std::iter::once(1)
                .chain(v.shape().iter().copied())
                .collect();
            v.reshape(&shape)
        };
        let input = self.project(tape, batch_of_one(x));
        let next = self.step(tape, input, state.map(batch_of_one));
        next.map(|v| v.reshape(&v.shape()[1..]))
    }

    /// The zero state for `batch` sequences, each part [batch, ·].
    fn zero_state<'t>(&self, tape: &'t Tape<F>, batch: usize) -> Self::State<'t> {
        let parts: Vec<Var<'t, F>> = self
            .state_parts()
            .iter()
            .map(|part| tape.constant(Tensor::zeros(&part.batched(batch))))
            .collect();
        Self::State::from_parts(&parts)
    }
}

/// Checks a cell's raw input `x` [B, in] or unbatched [in] against the state it steps from (each
/// part [B, ·], or without the batch axis when unbatched); returns true when unbatched.
#[track_caller]
fn check_step_input<'t, F: Float, C: Cell<F> + ?Sized>(
    cell: &C,
    x: Var<'t, F>,
    state: &C::State<'t>,
) -> bool {
    let name = cell.name();
    let (input, features) = (x.shape(), cell.input_size());
    if !(1..=2).contains(&input.len()) || input[input.len() - 1] != features {
        panic!(
            "{name}: expected an input [B, {features}] or unbatched [{features}], got {:?}",
            &input[..]
        );
    }
    let unbatched = input.len() == 1;
    for (part, v) in cell.state_parts().iter().zip(state.parts()) {
        let (found, part_name) = (v.shape(), part.name);
        if unbatched && found[..] != part.shape[..] {
            panic!(
                "{name}: an unbatched input {:?} needs an unbatched state, {part_name} {:?}; got \
                 {part_name} {:?}",
                &input[..],
                part.shape,
                &found[..]
            );
        }
        let rows = part.batched(input[0]);
        if !unbatched && found[..] != rows[..] {
            panic!(
                "{name}: an input {:?} needs a state of {} rows, {part_name} {rows:?}; got \
                 {part_name} {:?}",
                &input[..],
                input[0],
                &found[..]
            );
        }
    }
    unbatched
}

/// One part of a cell's state: its name (a stack's learned initial state of it is the parameter
/// `{name}_0`) and its shape for one sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatePart {
    /// `h`, `c`, `memory`, …
    pub name: &'static str,
    /// The shape without the batch axis.
    pub shape: Vec<usize>,
}

impl StatePart {
    /// A part called `name` of shape `shape` per sequence.
    pub fn new(name: &'static str, shape: &[usize]) -> Self {
        StatePart {
            name,
            shape: shape.to_vec(),
        }
    }

    /// The part's shape for `batch` sequences: [batch, shape…].
    pub fn batched(&self, batch: usize) -> Vec<usize> {
        std::iter::once(batch)
            .chain(self.shape.iter().copied())
            .collect()
    }
}

/// A recurrent state as the list of its parts, h first, each a Var whose first axis is the batch
/// (or, for a whole stack's state, the layer-direction, then the batch). A stack masks, scales,
/// stacks, checkpoints and carries a state part by part, so a cell's state can be any such list.
///
/// Implemented for `Var` (h alone), [`State`] (h, and c for an LSTM), and tuples of two and three
/// Vars. A state of one's own implements the three items:
///
/// ```
/// use rewind_autograd::{Float, Var};
/// use rewind_nn::CellState;
///
/// #[derive(Clone, Copy)]
/// struct Attending<'t, F: Float> {
///     h: Var<'t, F>,
///     memory: Var<'t, F>, // [B, W, H]: the last W states
/// }
///
/// impl<'t, F: Float> CellState<'t, F> for Attending<'t, F> {
///     type On<'u> = Attending<'u, F>;
///     fn parts(&self) -> Vec<Var<'t, F>> {
///         vec![self.h, self.memory]
///     }
///     fn from_parts(parts: &[Var<'t, F>]) -> Self {
///         Attending { h: parts[0], memory: parts[1] }
///     }
/// }
/// ```
pub trait CellState<'t, F: Float>: Copy {
    /// The same state type on a tape borrowed for `'u` (the type with `'t` replaced): a
    /// [`Carry`](crate::Carry) names a state family by its `'static` member.
    type On<'u>: CellState<'u, F>;

    /// The parts, h first.
    fn parts(&self) -> Vec<Var<'t, F>>;

    /// The state made of `parts`, in the order [`parts`](CellState::parts) gives them.
    fn from_parts(parts: &[Var<'t, F>]) -> Self;

    /// h, the part a layer outputs.
    fn h(&self) -> Var<'t, F> {
        self.parts()[0]
    }

    /// Every part mapped through `f` (scaling each part's gradient, masking each part, …).
    fn map(&self, mut f: impl FnMut(Var<'t, F>) -> Var<'t, F>) -> Self {
        let parts: Vec<Var<'t, F>> = self.parts().into_iter().map(&mut f).collect();
        Self::from_parts(&parts)
    }
}

/// The recurrent state of the built-in cells: h, and c for an LSTM; for a whole stack
/// ([`StackState`](crate::StackState)), each [D·L, B, H].
///
/// A state's Vars belong to the tape they were recorded on. To carry a stack's final state into
/// the next chunk on a new tape (detached, as truncated BPTT does), keep its values and put them
/// on the new tape, one call each way:
///
/// ```
/// use rewind_autograd::rand::{rngs::StdRng, SeedableRng};
/// use rewind_autograd::{Tape, Tensor};
/// use rewind_nn::{Carry, Lstm, RecurrentConfig};
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let lstm = Lstm::new(RecurrentConfig::new(4, 8), &mut rng);
/// let first = Tape::new();
/// let out = lstm.forward(&first, first.constant(Tensor::zeros(&[5, 2, 4])), None, None);
/// let carry = Carry::of(out.state); // the values, off the first tape
///
/// let next = Tape::new();
/// let x = next.constant(Tensor::zeros(&[5, 2, 4]));
/// let out = lstm.forward(&next, x, Some(carry.on(&next)), None); // on the next tape, detached
/// assert_eq!(&out.state.h.shape()[..], &[1, 2, 8]);
/// ```
///
/// (Handing `out.state` itself to a forward pass on `next` does not compile: the first tape's
/// Vars cannot outlive it, and a gradient cannot flow between tapes.)
#[derive(Clone, Copy, Debug)]
pub struct State<'t, F: Float = f32> {
    /// The hidden state [B, H].
    pub h: Var<'t, F>,
    /// The cell state [B, H] (LSTM only).
    pub c: Option<Var<'t, F>>,
}

impl<'t, F: Float> From<Var<'t, F>> for State<'t, F> {
    /// The state of an RNN or GRU cell: h alone.
    fn from(h: Var<'t, F>) -> Self {
        State { h, c: None }
    }
}

impl<'t, F: Float> From<(Var<'t, F>, Var<'t, F>)> for State<'t, F> {
    /// The state of an LSTM cell: (h, c), in PyTorch's order.
    fn from((h, c): (Var<'t, F>, Var<'t, F>)) -> Self {
        State { h, c: Some(c) }
    }
}

impl<'t, F: Float> CellState<'t, F> for State<'t, F> {
    type On<'u> = State<'u, F>;

    fn parts(&self) -> Vec<Var<'t, F>> {
        std::iter::once(self.h).chain(self.c).collect()
    }

    #[track_caller]
    fn from_parts(parts: &[Var<'t, F>]) -> Self {
        match *parts {
            [h] => State { h, c: None },
            [h, c] => State { h, c: Some(c) },
            _ => panic!("state: h, or h and c, expected; got {} parts", parts.len()),
        }
    }

    fn h(&self) -> Var<'t, F> {
        self.h
    }
}

impl<'t, F: Float> CellState<'t, F> for Var<'t, F> {
    type On<'u> = Var<'u, F>;

    fn parts(&self) -> Vec<Var<'t, F>> {
        vec![*self]
    }

    #[track_caller]
    fn from_parts(parts: &[Var<'t, F>]) -> Self {
        match *parts {
            [h] => h,
            _ => panic!("state: one part (h) expected; got {}", parts.len()),
        }
    }

    fn h(&self) -> Var<'t, F> {
        *self
    }
}

impl<'t, F: Float> CellState<'t, F> for (Var<'t, F>, Var<'t, F>) {
    type On<'u> = (Var<'u, F>, Var<'u, F>);

    fn parts(&self) -> Vec<Var<'t, F>> {
        vec![self.0, self.1]
    }

    #[track_caller]
    fn from_parts(parts: &[Var<'t, F>]) -> Self {
        match *parts {
            [a, b] => (a, b),
            _ => panic!("state: two parts expected; got {}", parts.len()),
        }
    }

    fn h(&self) -> Var<'t, F> {
        self.0
    }
}

impl<'t, F: Float> CellState<'t, F> for (Var<'t, F>, Var<'t, F>, Var<'t, F>) {
    type On<'u> = (Var<'u, F>, Var<'u, F>, Var<'u, F>);

    fn parts(&self) -> Vec<Var<'t, F>> {
        vec![self.0, self.1, self.2]
    }

    #[track_caller]
    fn from_parts(parts: &[Var<'t, F>]) -> Self {
        match *parts {
            [a, b, c] => (a, b, c),
            _ => panic!("state: three parts expected; got {}", parts.len()),
        }
    }

    fn h(&self) -> Var<'t, F> {
        self.0
    }
}
