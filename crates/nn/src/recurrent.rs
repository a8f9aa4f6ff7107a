//! Recurrent stacks of any [`Cell`]: `Rnn`, `Lstm`, `Gru` and a user's own cells, with layers,
//! directions, dropout between layers, batch-first or unbatched input, initial states (given or
//! learned), variable lengths, per-step gradient scaling, kept states and checkpointed segments.
//! The time loop itself is in `sweep.rs`; backpropagation through time is the engine rewinding it.

use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;
use rewind_autograd::{concat, stack, Float, Param, Tape, Tensor, Var};

use crate::cell::{Cell, CellState, State, StatePart};
use crate::dropout::Dropout;
use crate::module::Module;
use crate::standard_cells::{
    check_proj_size, CellParams, GruCell, LstmCell, Nonlinearity, RnnCell, StandardCell,
};
use crate::sweep::Sweep;
use crate::weights::{load_state_dict, load_weights, WeightsError};

/// The shape and options of a recurrent stack, with PyTorch's defaults (1 layer, one direction,
/// biases, no dropout, time-major input).
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// tanh or relu (built-in vanilla RNN cells only).
    pub nonlinearity: Nonlinearity,
    /// Give every built-in cell the biases b_ih and b_hh (PyTorch's `bias`); without them the
    /// stack has no bias parameters at all. A stack of one's own cells
    /// ([`Recurrent::with_cells`]) reads neither this nor `nonlinearity`.
    pub bias: bool,
    /// Initialise every LSTM cell's forget gate bias to this value (b_ih's forget block, b_hh's
    /// 0) instead of drawing it: rewind's addition, see
    /// [`StandardCell::with_forget_bias`](crate::StandardCell::with_forget_bias).
    pub forget_bias: Option<f64>,
    /// Project every LSTM cell's h to this many features P, 0 < P < H: h = (o ⊙ tanh(c)) W_hrᵀ
    /// (PyTorch's `proj_size`, whose 0 is `None` here). The output is then [T, B, D·P], h_n
    /// [D·L, B, P] while c_n stays [D·L, B, H], and layers above the first read D·P inputs.
    pub proj_size: Option<usize>,
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
            forget_bias: None,
            proj_size: None,
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

    /// Starts every LSTM cell's forget gate bias at `value` (1 is the usual choice), the rest
    /// drawn as PyTorch draws them: rewind's addition, which PyTorch lacks (its issue 20102).
    pub fn forget_bias(mut self, value: f64) -> Self {
        self.forget_bias = Some(value);
        self
    }

    /// Projects every LSTM cell's h to `p` features (PyTorch's `proj_size`): adds a
    /// `weight_hr_l{k}` [P, H] to each layer and direction. Only an LSTM takes it, and
    /// 0 < p < H; building the stack refuses anything else.
    pub fn proj_size(mut self, p: usize) -> Self {
        self.proj_size = Some(p);
        self
    }

    pub(crate) fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// The features of h, which a layer outputs: P with a projection, else H.
    pub(crate) fn h_size(&self) -> usize {
        self.proj_size.unwrap_or(self.hidden_size)
    }
}

/// A recurrent network of `num_layers` layers of cells `C`, one per direction.
#[derive(Debug)]
pub struct Recurrent<C, F: Float = f32> {
    config: RecurrentConfig,
    /// cells[layer][direction]
    cells: Vec<Vec<C>>,
    /// The cells' state parts, the same for every cell.
    parts: Vec<StatePart>,
    dropout: Dropout,
    /// With a learned initial state, one parameter `{part}_0` [D·L, ·] per state part.
    initial: Vec<Param<F>>,
}

/// A vanilla RNN stack (`torch.nn.RNN`).
pub type Rnn<F = f32> = Recurrent<RnnCell<F>, F>;
/// An LSTM stack (`torch.nn.LSTM`).
pub type Lstm<F = f32> = Recurrent<LstmCell<F>, F>;
/// A GRU stack (`torch.nn.GRU`).
pub type Gru<F = f32> = Recurrent<GruCell<F>, F>;

/// The states of a whole stack of built-in cells: h (and c) [D·L, B, H] ([D·L, H] for an
/// unbatched input; h [D·L, B, P] with a projection), ordered layer by layer, forward direction
/// first, as PyTorch's h_n (and c_n).
/// A stack of any cell returns its cell's state type the same way, each part stacked.
pub type StackState<'t, F = f32> = State<'t, F>;

/// What a stack returns: the last layer's h at every step, and the final states.
#[derive(Clone, Debug)]
pub struct RecurrentOutput<'t, F: Float = f32, S = State<'t, F>> {
    /// [T, B, D·H] (or [B, T, D·H] batch-first, [T, D·H] unbatched; D·P with a projection);
    /// zero past each sequence's length.
    pub output: Var<'t, F>,
    /// The final state, each part [D·L, B, ·] ([D·L, ·] unbatched) ordered layer by layer,
    /// forward direction first, each sequence's taken at its own length.
    pub state: S,
    /// With [`Run::keep_states`]: h_t [B, H] ([1, H] unbatched) of the last layer's forward
    /// direction at each step, in time order, with its gradient kept: `grads[states[t]]` is the
    /// total ∂L/∂h_t (what it means past a sequence's length is said at [`Run::keep_states`]).
    pub states: Vec<Var<'t, F>>,
}

impl<C: StandardCell<f32>> Recurrent<C, f32> {
    /// A stack in f32, initialised from `rng` as PyTorch initialises one:
    /// [`init`](Recurrent::init) in the precision a program gets without a type annotation
    /// (`Lstm::new(config, &mut rng)` is an f32 LSTM, as `torch.nn.LSTM` is float32). Another
    /// precision is `Lstm::<f64>::init(config, &mut rng)`.
    #[track_caller]
    pub fn new<R: Rng + ?Sized>(config: RecurrentConfig, rng: &mut R) -> Self {
        Self::init(config, rng)
    }
}

impl<C: StandardCell<F>, F: Float> Recurrent<C, F> {
    /// A stack in any precision, initialised from `rng` as PyTorch initialises one (every weight
    /// and bias ~ U(-1/√H, 1/√H), drawn layer by layer in PyTorch's order; a learned initial
    /// state starts at zero).
    #[track_caller]
    pub fn init<R: Rng + ?Sized>(config: RecurrentConfig, rng: &mut R) -> Self {
        let (hidden, bias, nonlinearity) = (config.hidden_size, config.bias, config.nonlinearity);
        // Here, not in the cells' closure: a panic there would point into the library.
        check_projects::<C, F>(&config);
        if let Some(value) = config.forget_bias {
            let name = cell_type_name::<C>();
            assert!(
                C::FORGET_GATE.is_some(),
                "recurrent: forget_bias needs a cell with a forget gate (an LSTM), not {name}"
            );
            assert!(
                bias,
                "recurrent: forget_bias needs biases, and bias is false"
            );
            assert!(
                value.is_finite(),
                "recurrent: forget_bias must be finite, got {value}"
            );
        }
        let cells = layers(&config, |input, _| {
            let cell = C::from_params(
                CellParams::init(C::GATES, input, hidden, config.proj_size, bias, rng),
                nonlinearity,
            );
            match config.forget_bias {
                Some(value) => cell.with_forget_bias(F::from_f64(value)),
                None => cell,
            }
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
        let (hidden, bias, nonlinearity) = (config.hidden_size, config.bias, config.nonlinearity);
        check_projects::<C, F>(&config);
        let cells = layers(&config, |input, _| {
            C::from_params(
                CellParams::zeros(C::GATES, input, hidden, config.proj_size, bias),
                nonlinearity,
            )
        });
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
}

/// The cell type's bare name for messages (`GruCell<f64>`).
fn cell_type_name<C>() -> &'static str {
    std::any::type_name::<C>()
        .rsplit("::")
        .next()
        .unwrap_or("cell")
}

/// Refuses a projection for a cell that has none (PyTorch: "proj_size argument is only supported
/// for LSTM").
#[track_caller]
fn check_projects<C: StandardCell<F>, F: Float>(config: &RecurrentConfig) {
    assert!(
        config.proj_size.is_none() || C::PROJECTS,
        "recurrent: proj_size needs an LSTM, not {}",
        cell_type_name::<C>()
    );
}

/// cells[layer][direction], each from `make(input size of its layer, hidden size)`, in PyTorch's
/// order (layer by layer, forward direction first).
#[track_caller]
fn layers<C>(config: &RecurrentConfig, mut make: impl FnMut(usize, usize) -> C) -> Vec<Vec<C>> {
    assert!(
        config.num_layers >= 1,
        "recurrent: needs at least one layer, got num_layers = 0"
    );
    // As torch.nn.RNNBase refuses it; the initialisation's bound 1/√H would be infinite.
    assert!(
        config.hidden_size >= 1,
        "recurrent: hidden_size must be greater than zero, got 0"
    );
    if let Some(p) = config.proj_size {
        check_proj_size("recurrent", p, config.hidden_size);
    }
    let (d, h) = (config.directions(), config.hidden_size);
    (0..config.num_layers)
        .map(|layer| {
            let input = if layer == 0 {
                config.input_size
            } else {
                d * config.h_size()
            };
            (0..d).map(|_| make(input, h)).collect()
        })
        .collect()
}

impl<C: Cell<F>, F: Float> Recurrent<C, F> {
    /// A stack of one's own cells: `make(input_size, hidden_size)` builds the cell of each layer
    /// and direction, in PyTorch's order (layer by layer, forward direction first), where a
    /// layer's input size is `config.input_size` for the first and D·H after it (D·P, with
    /// `proj_size`, for cells whose h has P features, such as
    /// [`LstmCell::init_projected`]). Every option of `config` applies except `nonlinearity`,
    /// `bias` and `forget_bias`, which belong to the built-in cells.
    /// The dropout masks between layers come from seed 0
    /// ([`reseed_dropout`](Recurrent::reseed_dropout) changes it).
    ///
    /// Panics, naming the layer, if a cell's input size or H is not what its place needs, or
    /// if the cells' state parts differ.
    #[track_caller]
    pub fn with_cells(config: RecurrentConfig, make: impl FnMut(usize, usize) -> C) -> Self {
        let cells = layers(&config, make);
        Self::assemble(config, cells, 0)
    }

    #[track_caller]
    fn assemble(config: RecurrentConfig, cells: Vec<Vec<C>>, dropout_seed: u64) -> Self {
        let parts = cells[0][0].state_parts();
        let d = config.directions();
        for (layer, row) in cells.iter().enumerate() {
            let input = if layer == 0 {
                config.input_size
            } else {
                d * config.h_size()
            };
            for cell in row {
                let name = cell.name();
                let found = (cell.input_size(), cell.hidden_size());
                assert!(
                    found == (input, config.hidden_size),
                    "{name}: layer {layer} needs a cell of input size {input} and H = {}, got \
                     input size {} and H = {}",
                    config.hidden_size,
                    found.0,
                    found.1
                );
                let own = cell.state_parts();
                assert!(
                    own == parts && own[0].shape.len() == 1,
                    "{name}: every cell of a stack needs the same state parts, h first as a \
                     vector [H]; layer {layer} has {own:?}, the first cell {parts:?}"
                );
                assert!(
                    own[0].shape[0] == config.h_size(),
                    "{name}: layer {layer} needs h of {} features (proj_size {:?}), got {}",
                    config.h_size(),
                    config.proj_size,
                    own[0].shape[0]
                );
            }
        }
        let learned = |part: &StatePart| {
            let shape: Vec<usize> = std::iter::once(d * config.num_layers)
                .chain(part.shape.iter().copied())
                .collect();
            Param::named(format!("{}_0", part.name), Tensor::zeros(&shape))
        };
        Recurrent {
            initial: if config.learn_initial_state {
                parts.iter().map(learned).collect()
            } else {
                Vec::new()
            },
            dropout: Dropout::new(config.dropout, dropout_seed),
            parts,
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

    /// The parts of each cell's state, h first, with their shapes for one sequence.
    pub fn state_parts(&self) -> &[StatePart] {
        &self.parts
    }

    /// Restarts the generator of the dropout masks between layers from `seed`.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed);
    }

    /// Training mode (dropout between layers on) or evaluation mode.
    pub fn set_training(&self, training: bool) {
        self.dropout.set_training(training);
    }

    fn name(&self) -> &'static str {
        self.cells[0][0].name()
    }

    /// Runs the stack over `input` [T, B, in] ([B, T, in] batch-first), or over one unbatched
    /// sequence [T, in] (batch-first or not), as `torch.nn.LSTM` and its siblings do.
    ///
    /// `initial` gives the initial state, each part [D·L, B, ·] ([D·L, ·] unbatched): h_0 (and
    /// c_0) for the built-in cells. Without it the state starts at zero, or at the learned
    /// initial state. `lengths` gives each sequence's length: past it, the state passes through
    /// unchanged and the output is zero, and the backward direction starts at each sequence's
    /// own end. An unbatched input gives an unbatched output [T, D·H] and state, and takes no
    /// `lengths`.
    ///
    /// To carry the final state into the next call on a new tape (the next chunk of a long
    /// sequence, detached), keep its values with [`Carry::of`](crate::Carry::of) and put them on
    /// the new tape with [`Carry::on`](crate::Carry::on): a `Var` belongs to its tape and cannot
    /// outlive it.
    #[track_caller]
    pub fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        input: Var<'t, F>,
        initial: Option<C::State<'t>>,
        lengths: Option<&[usize]>,
    ) -> RecurrentOutput<'t, F, C::State<'t>> {
        let run = Run {
            lengths,
            ..Run::default()
        };
        self.forward_with(tape, input, initial, &run)
    }

    /// [`forward`](Recurrent::forward) with every option of [`Run`]: also gradient scaling per
    /// step (randomized truncation), kept states and checkpointed segments.
    #[track_caller]
    pub fn forward_with<'t>(
        &self,
        tape: &'t Tape<F>,
        input: Var<'t, F>,
        initial: Option<C::State<'t>>,
        run: &Run<'_, F>,
    ) -> RecurrentOutput<'t, F, C::State<'t>> {
        let name = self.name();
        let unbatched = self.check_input(input);
        let x = if unbatched {
            input.reshape(&[input.shape()[0], 1, self.config.input_size])
        } else {
            self.time_major(input)
        };
        let shape = x.shape();
        let (steps, batch) = (shape[0], shape[1]);
        if steps == 0 {
            panic!(
                "{name}: the input {:?} has no time steps; a sequence needs at least one",
                &input.shape()[..]
            );
        }
        if self.config.bidirectional && in_model_segment() {
            panic!(
                "{name}: bidirectional, inside one segment of Strategy::CheckpointedModel, which \
                 shows the model only that segment's steps: the backward direction would miss \
                 every later segment and the gradient would be another model's; use \
                 Strategy::Checkpointed, which checkpoints the stack over the whole chunk"
            );
        }
        if unbatched && run.lengths.is_some() {
            panic!(
                "{name}: lengths need a batch; an unbatched input {:?} is one sequence of its own length",
                &input.shape()[..]
            );
        }
        // Not `Option::map`: a closure would lose the caller's line in the lengths check's panic.
        #[allow(clippy::manual_map)]
        let masks = match run.lengths {
            Some(l) => Some(self.step_masks(l, steps, batch)),
            None => None,
        };
        if let Some(xi) = run.grad_scale {
            assert_eq!(
                xi.len(),
                steps,
                "{name}: grad_scale needs one factor per step ({steps}), got {}",
                xi.len()
            );
        }
        assert!(
            run.checkpoint_every != Some(0),
            "{name}: checkpoint segments must be at least one step"
        );
        assert!(
            !(run.keep_states && run.checkpoint_every.is_some()),
            "{name}: keep_states needs the states on the tape, which checkpointing recomputes instead"
        );
        if let Some(fresh) = run.fresh_lanes {
            assert_eq!(
                fresh.len(),
                batch,
                "{name}: fresh_lanes needs one flag per lane ({batch}), got {}",
                fresh.len()
            );
        }
        // Not `Option::map`: a closure would lose the caller's line in the shape check's panic.
        #[allow(clippy::manual_map)]
        let initial = match initial {
            Some(s) => Some(self.check_initial(s, input, unbatched)),
            None => None,
        };
        let mut kept = Vec::new();
        let dirs = self.config.directions();
        let mut layer_input = x;
        let mut finals: Vec<Vec<Var<'t, F>>> = Vec::with_capacity(self.config.num_layers * dirs);
        for (layer, cells) in self.cells.iter().enumerate() {
            let features = layer_input.shape()[2];
            let flat = layer_input.reshape(&[steps * batch, features]);
            let mut outputs = Vec::with_capacity(dirs);
            for (direction, cell) in cells.iter().enumerate() {
                let index = layer * dirs + direction;
                let start =
                    self.initial_state(tape, initial.as_deref(), run.fresh_lanes, index, batch);
                let sweep = Sweep {
                    steps,
                    batch,
                    reverse: direction == 1,
                    masks: masks.as_deref(),
                    grad_scale: run.grad_scale,
                };
                let keep = run.keep_states && direction == 0 && layer + 1 == self.config.num_layers;
                let (hs, state) = match run.checkpoint_every {
                    None => sweep.run(tape, cell, flat, start, keep.then_some(&mut kept)),
                    Some(k) => sweep.run_checkpointed(tape, cell, flat, start, k),
                };
                outputs.push(hs);
                finals.push(state.parts());
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
        let stacked: Vec<Var<'t, F>> = (0..self.parts.len())
            .map(|p| {
                let across: Vec<Var<'t, F>> = finals.iter().map(|parts| parts[p]).collect();
                let s = stack(&across, 0);
                if unbatched {
                    let mut shape = vec![finals.len()];
                    shape.extend(&self.parts[p].shape);
                    s.reshape(&shape)
                } else {
                    s
                }
            })
            .collect();
        let output = if unbatched {
            let features = layer_input.shape()[2];
            layer_input.reshape(&[steps, features])
        } else {
            self.time_major(layer_input)
        };
        RecurrentOutput {
            output,
            state: C::State::from_parts(&stacked),
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
                self.name(),
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
                self.name()
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

    /// Checks the initial state against the input: each part [D·L, B, ·], or [D·L, ·] when
    /// unbatched; returns its parts.
    #[track_caller]
    fn check_initial<'t>(
        &self,
        initial: C::State<'t>,
        input: Var<'_, F>,
        unbatched: bool,
    ) -> Vec<Var<'t, F>> {
        let name = self.name();
        let parts = initial.parts();
        let names: Vec<&str> = self.parts.iter().map(|p| p.name).collect();
        assert!(
            parts.len() == self.parts.len(),
            "{name}: the initial state needs the parts {names:?}, got {} parts",
            parts.len()
        );
        let layers = self.config.directions() * self.config.num_layers;
        let input = input.shape();
        let batch = (!unbatched).then(|| input[usize::from(!self.config.batch_first)]);
        let kind = if unbatched {
            "an unbatched input"
        } else {
            "an input"
        };
        for (part, v) in self.parts.iter().zip(&parts) {
            let expected: Vec<usize> = std::iter::once(layers)
                .chain(batch)
                .chain(part.shape.iter().copied())
                .collect();
            let shape = v.shape();
            if shape[..] != expected[..] {
                panic!(
                    "{name}: initial {} must be {expected:?} for {kind} {:?}, got {:?}",
                    part.name,
                    &input[..],
                    &shape[..]
                );
            }
        }
        parts
    }

    /// The starting state of layer-direction `index`, each part [B, ·] (B = 1 for an unbatched
    /// input, whose initial state [D·L, ·] gives the same [1, ·] slices): the given state, with
    /// the `fresh` lanes (if any) taken from the learned state (if any).
    fn initial_state<'t>(
        &self,
        tape: &'t Tape<F>,
        initial: Option<&[Var<'t, F>]>,
        fresh: Option<&[bool]>,
        index: usize,
        batch: usize,
    ) -> C::State<'t> {
        let fresh = fresh.filter(|f| f.contains(&true));
        let parts: Vec<Var<'t, F>> = self
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| {
                let shape = part.batched(batch);
                let learned = |learned| tape.param(learned).narrow(0, index, 1);
                match (initial, self.initial.get(p)) {
                    (Some(given), Some(own)) if fresh.is_some() => {
                        let given = given[p].narrow(0, index, 1).reshape(&shape);
                        let mut lanes = vec![1; shape.len()];
                        lanes[0] = batch;
                        let flags = fresh.unwrap_or_default().iter();
                        let cond = flags.map(|&f| if f { F::ONE } else { F::ZERO }).collect();
                        let cond = Tensor::from_vec(cond, &lanes).expect("one flag per lane");
                        learned(own).where_cond(&cond, given)
                    }
                    (Some(given), _) => given[p].narrow(0, index, 1).reshape(&shape),
                    (None, Some(own)) => learned(own) + tape.constant(Tensor::zeros(&shape)),
                    (None, None) => tape.constant(Tensor::zeros(&shape)),
                }
            })
            .collect();
        C::State::from_parts(&parts)
    }
}

/// How a stack runs over time, beyond its configuration. `Run::default()` is a plain forward
/// pass from a zero (or learned) state.
#[derive(Clone, Copy, Debug)]
pub struct Run<'a, F: Float = f32> {
    /// Each sequence's length (1..=T).
    pub lengths: Option<&'a [usize]>,
    /// ξ_k for each step k of the loop (in each direction's own order): the gradient flowing
    /// back into the state that enters step k is multiplied by ξ_k; 0 cuts it (truncation), 1
    /// leaves it, 1/π rescales it (Tallec & Ollivier's unbiased randomized truncation). The
    /// forward values are unchanged. ξ_0 is not used.
    pub grad_scale: Option<&'a [F]>,
    /// Keep the state only every k steps and recompute each segment's insides during backward
    /// (checkpointed BPTT: memory O(T/k + k) per layer instead of O(T)). Any cell is
    /// checkpointed: the parameters its step reads become the segment's inputs.
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
    /// The lanes (batch rows) whose state starts fresh here: every lane at the start of a
    /// stream, and a lane that [`Bptt::reset_lane`](crate::Bptt::reset_lane) restarted. A
    /// stack with a learned initial state starts these lanes from it, whatever the given
    /// initial state holds there, so h_0 (and c_0) get the gradient of those lanes; the other
    /// lanes start from the given state. A stack without one ignores it. The
    /// [`Bptt`](crate::Bptt) driver sets it, and a model passes it on with the rest of `Run`.
    pub fresh_lanes: Option<&'a [bool]>,
}

impl<F: Float> Default for Run<'_, F> {
    fn default() -> Self {
        Run {
            lengths: None,
            grad_scale: None,
            checkpoint_every: None,
            keep_states: false,
            fresh_lanes: None,
        }
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
        out.extend(self.initial.iter().map(|p| (own_name(p), p)));
        out
    }
}

fn own_name<F: Float>(p: &Param<F>) -> String {
    p.name()
        .expect("a learned initial state is named")
        .to_string()
}

/// PyTorch's name for a cell parameter in a stack: `weight_ih` of layer 1's backward direction
/// is `weight_ih_l1_reverse`.
fn stacked_name(name: &str, layer: usize, direction: usize) -> String {
    let suffix = if direction == 1 { "_reverse" } else { "" };
    format!("{name}_l{layer}{suffix}")
}

thread_local! {
    /// How many segments of `CheckpointedModel` this thread is running the model inside.
    static SEGMENTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is running a model call inside one segment of
/// [`Strategy::CheckpointedModel`], where the model sees only that segment's steps: a
/// bidirectional stack would read no later segment, and must refuse to run.
pub(crate) fn in_model_segment() -> bool {
    SEGMENTS.with(|s| s.get() > 0)
}

/// Marks a segment's model call (its first run, and its recompute during backward) for as long
/// as it lives, and unmarks it on drop, a panic included.
pub(crate) struct InSegment;

impl InSegment {
    pub(crate) fn enter() -> Self {
        SEGMENTS.with(|s| s.set(s.get() + 1));
        InSegment
    }
}

impl Drop for InSegment {
    fn drop(&mut self) {
        SEGMENTS.with(|s| s.set(s.get() - 1));
    }
}
