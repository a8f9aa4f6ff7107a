//! Recurrent stacks: `Rnn`, `Lstm`, `Gru` with layers, directions, dropout between layers,
//! batch-first or unbatched input, biases or none, initial states and variable lengths. The time
//! loop is a plain loop over [`Cell::step_projected`]; backpropagation through time is the engine
//! rewinding that loop.

use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use rewind_autograd::{concat, stack, Float, Param, Tape, Tensor, Var};

use crate::cell::{Cell, CellParams, GruCell, LstmCell, Nonlinearity, RnnCell, State};
use crate::dropout::Dropout;
use crate::module::Module;
use crate::weights::{load_state_dict, load_weights, WeightsError};

/// The shape and options of a recurrent stack, with PyTorch's defaults (1 layer, one direction,
/// biases, no dropout, time-major input).
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentConfig {
    /// Features of the input.
    pub input_size: usize,
    /// Features of the hidden state H.
    pub hidden_size: usize,
    /// Stacked layers L.
    pub num_layers: usize,
    /// Run a second direction backwards in time (D = 2) and concatenate.
    pub bidirectional: bool,
    /// Dropout on the outputs of every layer but the last, in training mode.
    pub dropout: f64,
    /// Input and output as [B, T, ·] instead of [T, B, ·].
    pub batch_first: bool,
    /// Learn the initial state as parameters `h_0` (and `c_0`) [D·L, H] instead of zeros.
    pub learn_initial_state: bool,
    /// tanh or relu (vanilla RNN only).
    pub nonlinearity: Nonlinearity,
    /// Give every cell the biases b_ih and b_hh (PyTorch's `bias`); without them the stack has
    /// no bias parameters at all.
    pub bias: bool,
}

impl RecurrentConfig {
    /// A one-layer, one-direction stack.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            dropout: 0.0,
            batch_first: false,
            learn_initial_state: false,
            nonlinearity: Nonlinearity::Tanh,
            bias: true,
        }
    }

    /// Sets the number of layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Sets bidirectionality.
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }

    /// Sets the dropout between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets batch-first layout.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Learns the initial state.
    pub fn learn_initial_state(mut self, on: bool) -> Self {
        self.learn_initial_state = on;
        self
    }

    /// Sets the RNN nonlinearity.
    pub fn nonlinearity(mut self, n: Nonlinearity) -> Self {
        self.nonlinearity = n;
        self
    }

    /// Gives the cells biases (the default) or none (PyTorch's `bias=False`).
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// A recurrent network of `num_layers` layers of cells `C`, one per direction.
#[derive(Debug)]
pub struct Recurrent<C, F: Float = f32> {
    config: RecurrentConfig,
    /// cells[layer][direction]
    cells: Vec<Vec<C>>,
    dropout: Dropout,
    h_0: Option<Param<F>>,
    c_0: Option<Param<F>>,
}

/// A vanilla RNN stack (`torch.nn.RNN`).
pub type Rnn<F = f32> = Recurrent<RnnCell<F>, F>;
/// An LSTM stack (`torch.nn.LSTM`).
pub type Lstm<F = f32> = Recurrent<LstmCell<F>, F>;
/// A GRU stack (`torch.nn.GRU`).
pub type Gru<F = f32> = Recurrent<GruCell<F>, F>;

/// States of a whole stack: h (and c) [D·L, B, H] ([D·L, H] for an unbatched input), ordered
/// layer by layer, forward direction first, as PyTorch's h_n.
#[derive(Clone, Copy, Debug)]
pub struct StackState<'t, F: Float = f32> {
    /// Hidden states [D·L, B, H] or [D·L, H].
    pub h: Var<'t, F>,
    /// Cell states [D·L, B, H] or [D·L, H] (LSTM only).
    pub c: Option<Var<'t, F>>,
}

/// What a stack returns: the last layer's h at every step, and the final states.
#[derive(Clone, Debug)]
pub struct RecurrentOutput<'t, F: Float = f32> {
    /// [T, B, D·H] (or [B, T, D·H] batch-first, [T, D·H] unbatched); zero past each sequence's
    /// length.
    pub output: Var<'t, F>,
    /// The final states, each taken at its sequence's own length.
    pub state: StackState<'t, F>,
    /// With [`Run::keep_states`]: h_t [B, H] ([1, H] unbatched) of the last layer's forward
    /// direction at each step, in time order, with its gradient kept: `grads[states[t]]` is the
    /// total ∂L/∂h_t (what it means past a sequence's length is said at [`Run::keep_states`]).
    pub states: Vec<Var<'t, F>>,
}

impl<C: Cell<F>, F: Float> Recurrent<C, F> {
    /// A stack initialised from `rng` as PyTorch initialises one (every weight and bias
    /// ~ U(-1/√H, 1/√H), drawn layer by layer in PyTorch's order; a learned initial state starts
    /// at zero).
    #[track_caller]
    pub fn new<R: Rng + ?Sized>(config: RecurrentConfig, rng: &mut R) -> Self {
        let (h, bias) = (config.hidden_size, config.bias);
        let cells = Self::layers(&config, |input| {
            CellParams::init(C::GATES, input, h, bias, rng)
        });
        let seed = rng.random();
        Self::assemble(config, cells, seed)
    }

    /// A stack whose every parameter is zero, with the names and shapes of
    /// [`new`](Recurrent::new): the model to load weights into, built without a generator. The
    /// dropout masks between layers come from seed 0 ([`reseed_dropout`](Recurrent::reseed_dropout)
    /// changes it).
    #[track_caller]
    pub fn zeros(config: RecurrentConfig) -> Self {
        let (h, bias) = (config.hidden_size, config.bias);
        let cells = Self::layers(&config, |input| CellParams::zeros(C::GATES, input, h, bias));
        Self::assemble(config, cells, 0)
    }

    /// The stack of `config` with its weights read from the safetensors file at `path`, which
    /// must hold exactly the stack's parameters, by PyTorch's state_dict names, in their shapes
    /// (what `safetensors.torch.save_file(lstm.state_dict(), path)` writes for the matching
    /// `torch.nn.LSTM`). No generator is needed; a file that does not fit is an error listing
    /// every missing, unexpected and misshapen name.
    #[track_caller]
    pub fn load(config: RecurrentConfig, path: impl AsRef<Path>) -> Result<Self, WeightsError> {
        let mut stack = Self::zeros(config);
        load_weights(&mut stack, path.as_ref())?;
        Ok(stack)
    }

    /// The stack of `config` with its weights taken from `tensors` (a state_dict by PyTorch's
    /// names), strictly, as [`load`](Recurrent::load) takes them from a file.
    #[track_caller]
    pub fn from_state_dict(
        config: RecurrentConfig,
        tensors: &BTreeMap<String, Tensor<F>>,
    ) -> Result<Self, WeightsError> {
        let mut stack = Self::zeros(config);
        load_state_dict(&mut stack, tensors)?;
        Ok(stack)
    }

    /// cells[layer][direction], each from `params(input size of its layer)`, in PyTorch's order.
    #[track_caller]
    fn layers(
        config: &RecurrentConfig,
        mut params: impl FnMut(usize) -> CellParams<F>,
    ) -> Vec<Vec<C>> {
        assert!(
            config.num_layers >= 1,
            "{}: needs at least one layer",
            C::NAME
        );
        let (d, h) = (config.directions(), config.hidden_size);
        (0..config.num_layers)
            .map(|layer| {
                let input = if layer == 0 { config.input_size } else { d * h };
                (0..d)
                    .map(|_| C::from_params(params(input), config.nonlinearity))
                    .collect()
            })
            .collect()
    }

    #[track_caller]
    fn assemble(config: RecurrentConfig, cells: Vec<Vec<C>>, dropout_seed: u64) -> Self {
        let shape = [config.directions() * config.num_layers, config.hidden_size];
        let learned = |name: &str| Param::named(name, Tensor::zeros(&shape));
        Recurrent {
            h_0: config.learn_initial_state.then(|| learned("h_0")),
            c_0: (config.learn_initial_state && C::HAS_CELL_STATE).then(|| learned("c_0")),
            dropout: Dropout::new(config.dropout, dropout_seed),
            cells,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// The cell of one layer and direction (0 forward, 1 backward).
    pub fn cell(&self, layer: usize, direction: usize) -> &C {
        &self.cells[layer][direction]
    }

    /// Restarts the generator of the dropout masks between layers from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed);
    }

    /// Training mode (dropout between layers on) or evaluation mode.
    pub fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
    }

    /// Runs the stack over `input` [T, B, in] ([B, T, in] batch-first), or over one unbatched
    /// sequence [T, in] (batch-first or not), as `torch.nn.LSTM` and its siblings do.
    ///
    /// `initial` gives h_0 (and c_0) [D·L, B, H] ([D·L, H] unbatched); without it the state
    /// starts at zero, or at the learned initial state. `lengths` gives each sequence's length:
    /// past it, the state passes through unchanged and the output is zero, and the backward
    /// direction starts at each sequence's own end. An unbatched input gives an unbatched output
    /// [T, D·H] and states [D·L, H], and takes no `lengths`.
    #[track_caller]
    pub fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        input: Var<'t, F>,
        initial: Option<StackState<'t, F>>,
        lengths: Option<&[usize]>,
    ) -> RecurrentOutput<'t, F> {
        let run = Run {
            initial,
            lengths,
            ..Run::default()
        };
        self.forward_with(tape, input, &run)
    }

    /// [`forward`](Recurrent::forward) with every option of [`Run`]: also gradient scaling per
    /// step (randomized truncation) and checkpointed segments.
    #[track_caller]
    pub fn forward_with<'t>(
        &self,
        tape: &'t Tape<F>,
        input: Var<'t, F>,
        run: &Run<'_, 't, F>,
    ) -> RecurrentOutput<'t, F> {
        let unbatched = self.check_input(input);
        let x = if unbatched {
            input.reshape(&[input.shape()[0], 1, self.config.input_size])
        } else {
            self.time_major(input)
        };
        let shape = x.shape();
        let (steps, batch) = (shape[0], shape[1]);
        if unbatched && run.lengths.is_some() {
            panic!(
                "{}: lengths need a batch; an unbatched input {:?} is one sequence of its own length",
                C::NAME,
                &input.shape()[..]
            );
        }
        let masks = run.lengths.map(|l| self.step_masks(l, steps, batch));
        if let Some(xi) = run.grad_scale {
            assert_eq!(
                xi.len(),
                steps,
                "{}: grad_scale needs one factor per step ({steps}), got {}",
                C::NAME,
                xi.len()
            );
        }
        assert!(
            run.checkpoint_every != Some(0),
            "{}: checkpoint segments must be at least one step",
            C::NAME
        );
        assert!(
            !(run.keep_states && run.checkpoint_every.is_some()),
            "{}: keep_states needs the states on the tape, which checkpointing recomputes instead",
            C::NAME
        );
        let mut kept = Vec::new();
        let dirs = self.config.directions();
        self.check_initial(run.initial, input, unbatched);
        let mut layer_input = x;
        let mut finals = Vec::with_capacity(self.config.num_layers * dirs);
        for (layer, cells) in self.cells.iter().enumerate() {
            let features = layer_input.shape()[2];
            let flat = layer_input.reshape(&[steps * batch, features]);
            let mut outputs = Vec::with_capacity(dirs);
            for (direction, cell) in cells.iter().enumerate() {
                let start = self.initial_state(tape, run.initial, layer * dirs + direction, batch);
                let lane = Lane {
                    steps,
                    batch,
                    reverse: direction == 1,
                    masks: masks.as_deref(),
                    grad_scale: run.grad_scale,
                };
                let keep = run.keep_states && direction == 0 && layer + 1 == self.config.num_layers;
                let (hs, state) = match run.checkpoint_every {
                    None => lane.run(tape, cell, flat, start, keep.then_some(&mut kept)),
                    Some(k) => lane.run_checkpointed(tape, cell, flat, start, k),
                };
                outputs.push(hs);
                finals.push(state);
            }
            let out = if dirs == 2 {
                concat(&outputs, 2)
            } else {
                outputs[0]
            };
            let last = layer + 1 == self.config.num_layers;
            layer_input = if last {
                out
            } else {
                self.dropout.forward(tape, out)
            };
        }
        let h: Vec<Var<'t, F>> = finals.iter().map(|s| s.h).collect();
        let c: Option<Vec<Var<'t, F>>> = finals.iter().map(|s| s.c).collect();
        let (h, c) = (stack(&h, 0), c.map(|c| stack(&c, 0)));
        if unbatched {
            let state = [finals.len(), self.config.hidden_size];
            let features = layer_input.shape()[2];
            return RecurrentOutput {
                output: layer_input.reshape(&[steps, features]),
                state: StackState {
                    h: h.reshape(&state),
                    c: c.map(|c| c.reshape(&state)),
                },
                states: kept,
            };
        }
        RecurrentOutput {
            output: self.time_major(layer_input),
            state: StackState { h, c },
            states: kept,
        }
    }

    /// Checks that `input` is [T, B, in] ([B, T, in] batch-first) or unbatched [T, in]; returns
    /// true when unbatched.
    #[track_caller]
    fn check_input(&self, input: Var<'_, F>) -> bool {
        let s = input.shape();
        let features = self.config.input_size;
        if !(2..=3).contains(&s.len()) || s[s.len() - 1] != features {
            let batched = if self.config.batch_first {
                "B, T"
            } else {
                "T, B"
            };
            panic!(
                "{}: expected an input [{batched}, {features}] or unbatched [T, {features}], got {:?}",
                C::NAME,
                &s[..]
            );
        }
        s.len() == 2
    }

    /// Swaps [B, T, ·] and [T, B, ·] when batch-first (its own inverse).
    fn time_major<'t>(&self, x: Var<'t, F>) -> Var<'t, F> {
        if self.config.batch_first {
            x.transpose(0, 1)
        } else {
            x
        }
    }

    /// mask[t] is 1 for the sequences still running at step t, as [B, 1].
    #[track_caller]
    fn step_masks(&self, lengths: &[usize], steps: usize, batch: usize) -> Vec<Tensor<F>> {
        if lengths.len() != batch || lengths.iter().any(|&l| l == 0 || l > steps) {
            panic!(
                "{}: lengths {lengths:?} must give each of the {batch} sequences a length in 1..={steps}",
                C::NAME
            );
        }
        (0..steps)
            .map(|t| {
                let m = lengths
                    .iter()
                    .map(|&l| if t < l { F::ONE } else { F::ZERO })
                    .collect();
                Tensor::from_vec(m, &[batch, 1]).expect("one per sequence")
            })
            .collect()
    }

    /// Checks the initial state against the input: [D·L, B, H], or [D·L, H] when unbatched.
    #[track_caller]
    fn check_initial(
        &self,
        initial: Option<StackState<'_, F>>,
        input: Var<'_, F>,
        unbatched: bool,
    ) {
        let Some(s) = initial else { return };
        let layers = self.config.directions() * self.config.num_layers;
        let hidden = self.config.hidden_size;
        let input = input.shape();
        let (expected, kind) = if unbatched {
            (vec![layers, hidden], "an unbatched input")
        } else {
            let batch = input[usize::from(!self.config.batch_first)];
            (vec![layers, batch, hidden], "an input")
        };
        match (s.c, C::HAS_CELL_STATE) {
            (None, true) => panic!("{}: the initial state needs c as well as h", C::NAME),
            (Some(_), false) => panic!("{}: this cell has no c state", C::NAME),
            _ => {}
        }
        for (name, v) in [("h", Some(s.h)), ("c", s.c)] {
            let Some(shape) = v.map(|v| v.shape()) else {
                continue;
            };
            if shape[..] != expected[..] {
                panic!(
                    "{}: initial {name} must be {expected:?} for {kind} {:?}, got {:?}",
                    C::NAME,
                    &input[..],
                    &shape[..]
                );
            }
        }
    }

    /// The starting state of layer-direction `index`, as [B, H] (B = 1 for an unbatched input,
    /// whose initial state [D·L, H] gives the same [1, H] slices).
    fn initial_state<'t>(
        &self,
        tape: &'t Tape<F>,
        initial: Option<StackState<'t, F>>,
        index: usize,
        batch: usize,
    ) -> State<'t, F> {
        let hidden = self.config.hidden_size;
        let zeros = || tape.constant(Tensor::zeros(&[batch, hidden]));
        let pick = |v: Var<'t, F>| v.narrow(0, index, 1).reshape(&[batch, hidden]);
        let learned = |p: &Param<F>| tape.param(p).narrow(0, index, 1) + zeros();
        let h = match (initial, &self.h_0) {
            (Some(s), _) => pick(s.h),
            (None, Some(p)) => learned(p),
            (None, None) => zeros(),
        };
        let c = C::HAS_CELL_STATE.then(|| match (initial.and_then(|s| s.c), &self.c_0) {
            (Some(c), _) => pick(c),
            (None, Some(p)) => learned(p),
            (None, None) => zeros(),
        });
        State { h, c }
    }
}

/// How a stack runs over time, beyond its configuration. `Run::default()` is a plain forward
/// pass from a zero (or learned) state.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a, 't, F: Float = f32> {
    /// h_0 (and c_0) [D·L, B, H] ([D·L, H] for an unbatched input).
    pub initial: Option<StackState<'t, F>>,
    /// Each sequence's length (1..=T).
    pub lengths: Option<&'a [usize]>,
    /// ξ_k for each step k of the loop (in each direction's own order): the gradient flowing
    /// back into the state that enters step k is multiplied by ξ_k; 0 cuts it (truncation), 1
    /// leaves it, 1/π rescales it (Tallec & Ollivier's unbiased randomized truncation). The
    /// forward values are unchanged. ξ_0 is not used.
    pub grad_scale: Option<&'a [F]>,
    /// Keep the state only every k steps and recompute each segment's insides during backward
    /// (checkpointed BPTT: memory O(T/k + k) per layer instead of O(T)).
    pub checkpoint_every: Option<usize>,
    /// Return the last layer's forward-direction state h_t at every step in
    /// [`RecurrentOutput::states`] ([B, H] each, in time order, batch-first or not), each marked
    /// to keep its gradient. After backward, `grads[states[t]]` is the total derivative ∂L/∂h_t:
    /// every path from h_t to the loss, through the output at t and through the steps after t,
    /// as in the same network unrolled by hand with `retain_grad` on each h_t.
    ///
    /// With `lengths`, a sequence's state is frozen at its last valid step and its output past
    /// that step is zero (PyTorch's semantics). Its state at a step t past the length is a copy
    /// of the state at t - 1, which reaches the loss only through the final state h_n: there
    /// ∂L/∂h_t is the gradient reaching h_n (zero when the loss does not read h_n), and at the
    /// last valid step it is that plus the path through the step's own output.
    ///
    /// With `grad_scale`, the gradient from the steps after t arrives multiplied by ξ_{t+1}, as
    /// the weights see it. Not with `checkpoint_every` (it panics): checkpointed segments
    /// recompute their states during backward, so no node on the tape carries every path.
    pub keep_states: bool,
}

impl<F: Float> Default for Run<'_, '_, F> {
    fn default() -> Self {
        Run {
            initial: None,
            lengths: None,
            grad_scale: None,
            checkpoint_every: None,
            keep_states: false,
        }
    }
}

/// One direction of one layer over the whole sequence.
struct Lane<'a, F: Float> {
    steps: usize,
    batch: usize,
    reverse: bool,
    /// By time step.
    masks: Option<&'a [Tensor<F>]>,
    /// By loop step.
    grad_scale: Option<&'a [F]>,
}

impl<F: Float> Lane<'_, F> {
    /// The time step that loop step `k` processes.
    fn time(&self, k: usize) -> usize {
        if self.reverse {
            self.steps - 1 - k
        } else {
            k
        }
    }

    /// The loop over time, every step recorded: returns h at every step [T, B, H] (time order)
    /// and the final state.
    fn run<'t, C: Cell<F>>(
        &self,
        tape: &'t Tape<F>,
        cell: &C,
        x: Var<'t, F>,
        start: State<'t, F>,
        keep: Option<&mut Vec<Var<'t, F>>>,
    ) -> (Var<'t, F>, State<'t, F>) {
        // The input projection of every step in one GEMM, before the loop.
        let param = |p: Option<&Param<F>>| p.map(|p| tape.param(p));
        let (w_hh, b_hh) = (tape.param(cell.weight_hh()), param(cell.bias_hh()));
        let (w_ih, b_ih) = (tape.param(cell.weight_ih()), param(cell.bias_ih()));
        let xp = C::project(x, w_ih, b_ih, b_hh);
        let weights = Weights { w_hh, b_hh, xp };
        let (hs, state) = self.steps::<C>(cell.kind(), weights, start, 0, keep);
        (stack(&hs, 0), state)
    }

    /// The loop in checkpointed segments of `k` steps: the tape keeps each segment's input
    /// rows, outputs and final state; its insides are recomputed during backward.
    fn run_checkpointed<'t, C: Cell<F>>(
        &self,
        tape: &'t Tape<F>,
        cell: &C,
        x: Var<'t, F>,
        start: State<'t, F>,
        k: usize,
    ) -> (Var<'t, F>, State<'t, F>) {
        let param = |p: Option<&Param<F>>| p.map(|p| tape.param(p));
        let (w_ih, b_ih) = (tape.param(cell.weight_ih()), param(cell.bias_ih()));
        let (w_hh, b_hh) = (tape.param(cell.weight_hh()), param(cell.bias_hh()));
        let mut state = start;
        let mut pieces = Vec::new();
        for first in (0..self.steps).step_by(k) {
            let n = k.min(self.steps - first);
            // Rows of the segment in time order: steps first..first+n of the loop.
            let t_lo = self.time(first).min(self.time(first + n - 1));
            let rows = x.narrow(0, t_lo * self.batch, n * self.batch);
            let segment = Segment {
                kind: cell.kind(),
                batch: self.batch,
                reverse: self.reverse,
                first,
                masks: self.masks.map(|m| m[t_lo..t_lo + n].to_vec()),
                grad_scale: self.grad_scale.map(|xi| xi[first..first + n].to_vec()),
                biases: [b_ih.is_some(), b_hh.is_some()],
            };
            let mut inputs = vec![rows, w_ih, w_hh, state.h];
            inputs.extend(state.c);
            inputs.extend(b_ih);
            inputs.extend(b_hh);
            let out = tape.checkpoint(&inputs, move |_, v| segment.run::<C>(v));
            state = State {
                h: out[1],
                c: out.get(2).copied(),
            };
            pieces.push((t_lo, out[0]));
        }
        pieces.sort_by_key(|(t, _)| *t);
        let hs: Vec<Var<'t, F>> = pieces.into_iter().map(|(_, h)| h).collect();
        (concat(&hs, 0), state)
    }
}

/// A checkpointed segment: everything it needs besides its input Vars, owned, so it can run again
/// during backward.
struct Segment<K, F: Float> {
    kind: K,
    batch: usize,
    reverse: bool,
    first: usize,
    masks: Option<Vec<Tensor<F>>>,
    grad_scale: Option<Vec<F>>,
    /// Whether the cell has b_ih and b_hh.
    biases: [bool; 2],
}

impl<K: Copy, F: Float> Segment<K, F> {
    /// inputs: [rows of x, W_ih, W_hh, h, (c), (b_ih), (b_hh)]; outputs: [h at each step
    /// [n, B, H] in time order, final h, (final c)].
    fn run<'s, C: Cell<F, Kind = K>>(&self, v: &[Var<'s, F>]) -> Vec<Var<'s, F>> {
        let n = v[0].shape()[0] / self.batch;
        let c = C::HAS_CELL_STATE.then(|| v[4]);
        let mut rest = v[4 + usize::from(C::HAS_CELL_STATE)..].iter().copied();
        let [b_ih, b_hh] = self
            .biases
            .map(|has| has.then(|| rest.next().expect("a bias")));
        let xp = C::project(v[0], v[1], b_ih, b_hh);
        let lane = Lane {
            steps: n,
            batch: self.batch,
            reverse: self.reverse,
            masks: self.masks.as_deref(),
            grad_scale: self.grad_scale.as_deref(),
        };
        let start = State { h: v[3], c };
        let weights = Weights {
            w_hh: v[2],
            b_hh,
            xp,
        };
        let (hs, state) = lane.steps::<C>(self.kind, weights, start, self.first, None);
        let mut out = vec![stack(&hs, 0), state.h];
        out.extend(state.c);
        out
    }
}

/// What a lane's steps read: the recurrent weight and bias, and the input projection of every
/// step (rows in time order).
struct Weights<'t, F: Float> {
    w_hh: Var<'t, F>,
    b_hh: Option<Var<'t, F>>,
    xp: Var<'t, F>,
}

impl<F: Float> Lane<'_, F> {
    /// Runs every step of the lane from `state`; `offset` is the loop index of its first step in
    /// the whole sequence (the sequence's first step has no incoming gradient to scale). Returns h
    /// per step in time order, and the final state; pushes each state onto `keep` if given.
    fn steps<'t, C: Cell<F>>(
        &self,
        kind: C::Kind,
        w: Weights<'t, F>,
        mut state: State<'t, F>,
        offset: usize,
        mut keep: Option<&mut Vec<Var<'t, F>>>,
    ) -> (Vec<Var<'t, F>>, State<'t, F>) {
        let mut hs = vec![None; self.steps];
        let masks = self
            .masks
            .map(|m| (m, w.xp.tape().constant(Tensor::scalar(F::ZERO))));
        for k in 0..self.steps {
            if let Some(xi) = self.grad_scale.filter(|_| offset + k > 0) {
                state = State {
                    h: state.h.scale_grad(xi[k]),
                    c: state.c.map(|c| c.scale_grad(xi[k])),
                };
            }
            let t = self.time(k);
            let xp_t = w.xp.narrow(0, t * self.batch, self.batch);
            let next = C::recur(kind, w.w_hh, w.b_hh, xp_t, state);
            state = match masks {
                Some((m, _)) => masked(&m[t], next, state),
                None => next,
            };
            if let Some(kept) = keep.as_deref_mut() {
                kept.push(state.h.retain_grad());
            }
            // The output reads the state node itself, not the cell's `next.h` (equal where the
            // sequence runs): then h_t is one node that every path to the loss passes through,
            // and a kept state's gradient is the total ∂L/∂h_t.
            hs[t] = Some(match masks {
                Some((m, zero)) => state.h.where_cond(&m[t], zero),
                None => state.h,
            });
        }
        let hs = hs.into_iter().map(|h| h.expect("every step ran")).collect();
        (hs, state)
    }
}

/// Where `mask` [B, 1] is 0 (the sequence has ended), keeps the previous state.
fn masked<'t, F: Float>(mask: &Tensor<F>, next: State<'t, F>, prev: State<'t, F>) -> State<'t, F> {
    State {
        h: next.h.where_cond(mask, prev.h),
        c: next.c.zip(prev.c).map(|(n, p)| n.where_cond(mask, p)),
    }
}

impl<C: Cell<F>, F: Float> Module<F> for Recurrent<C, F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut out = Vec::new();
        for (layer, cells) in self.cells.iter().enumerate() {
            for (direction, cell) in cells.iter().enumerate() {
                for (name, p) in cell.params() {
                    out.push((stacked_name(&name, layer, direction), p));
                }
            }
        }
        out.extend(self.h_0.iter().map(|p| ("h_0".to_string(), p)));
        out.extend(self.c_0.iter().map(|p| ("c_0".to_string(), p)));
        out
    }
}

/// PyTorch's name for a cell parameter in a stack: `weight_ih` of layer 1's backward direction
/// is `weight_ih_l1_reverse`.
fn stacked_name(name: &str, layer: usize, direction: usize) -> String {
    let suffix = if direction == 1 { "_reverse" } else { "" };
    format!("{name}_l{layer}{suffix}")
}
