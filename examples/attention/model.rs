//! The language model: an embedding, plain LSTM layers, the attentive layer on top, and a linear
//! readout; and what the BPTT driver carries for it between chunks.

use std::ops::Range;

use rewind::autograd::rand::Rng;
use rewind::nn::{
    nested, Carry, Cell, CellState, Chunk, ChunkLoss, Embedding, Linear, Lstm, ModelState, Module,
    Recurrent, RecurrentConfig, Run, State,
};
use rewind::prelude::*;

use super::cell::{Attending, Attentive, Kind};

/// The shape of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Which attention the top layer has.
    pub kind: Kind,
    /// Characters in the vocabulary V.
    pub vocab: usize,
    /// H of every layer (and the embedding's width).
    pub hidden: usize,
    /// Layers in all, the attentive one included.
    pub layers: usize,
    /// W, the past states attended over.
    pub window: usize,
    /// A, the features of queries and keys.
    pub key: usize,
}

/// Embedding [V, H] → `layers - 1` LSTM layers → the attentive layer → logits [V].
#[derive(Debug)]
pub struct AttentionLm<F: Float = f32> {
    /// [V, H].
    pub embed: Embedding<F>,
    /// The plain LSTM layers below the top one (none for a one-layer model).
    pub lower: Option<Lstm<F>>,
    /// The attentive layer.
    pub top: Recurrent<Attentive<F>, F>,
    /// [V, H] and [V], reading the attentive layer's output.
    pub head: Linear<F>,
}

/// The model's state on a tape: the lower stack's h and c, and the top layer's state with its
/// window, each part [layers, B, ·].
#[derive(Clone, Copy, Debug)]
pub struct LmState<'t, F: Float> {
    /// The LSTM layers below.
    pub lower: Option<State<'t, F>>,
    /// The attentive layer.
    pub top: Attending<'t, F>,
}

/// The model's state between tapes, as values: putting it on a new tape detaches it, the
/// window included.
#[derive(Clone, Debug)]
pub struct LmCarry<F: Float = f32> {
    /// The LSTM layers below.
    pub lower: Option<Carry<F>>,
    /// The attentive layer.
    pub top: Carry<F, Attending<'static, F>>,
}

impl<F: Float> ModelState<F> for LmCarry<F> {
    type Live<'t> = LmState<'t, F>;

    fn on<'t>(&self, tape: &'t Tape<F>) -> LmState<'t, F> {
        LmState {
            lower: self.lower.as_ref().map(|c| c.on(tape)),
            top: self.top.on(tape),
        }
    }

    fn of(state: LmState<'_, F>) -> Self {
        LmCarry {
            lower: state.lower.map(|s| Carry::of(s)),
            top: Carry::of(state.top),
        }
    }

    fn vars<'t>(state: Self::Live<'t>) -> Vec<Var<'t, F>> {
        let mut vars = state.top.parts();
        if let Some(lower) = state.lower {
            vars.extend(lower.parts());
        }
        vars
    }

    fn from_vars<'t>(vars: &[Var<'t, F>]) -> Self::Live<'t> {
        // The top layer's state has 3 parts, 6 with its window; the LSTM layers below add h and
        // c: 3, 5, 6 or 8 in all.
        let top = if vars.len() >= 6 { 6 } else { 3 };
        LmState {
            lower: (vars.len() > top).then(|| State::from_parts(&vars[top..])),
            top: Attending::from_parts(&vars[..top]),
        }
    }

    fn reset_lane(&mut self, lane: usize) {
        if let Some(lower) = &mut self.lower {
            lower.reset_lane(lane);
        }
        self.top.reset_lane(lane);
    }

    fn select_lanes(&self, lanes: Range<usize>) -> Self {
        LmCarry {
            lower: self.lower.as_ref().map(|c| c.select_lanes(lanes.clone())),
            top: self.top.select_lanes(lanes),
        }
    }

    fn join_lanes(shards: Vec<Self>) -> Self {
        let (lower, top): (Vec<_>, Vec<_>) = shards.into_iter().map(|s| (s.lower, s.top)).unzip();
        LmCarry {
            lower: lower
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(ModelState::join_lanes),
            top: ModelState::join_lanes(top),
        }
    }
}

impl<F: Float> AttentionLm<F> {
    /// A freshly initialised model of `shape`.
    pub fn new<R: Rng + ?Sized>(shape: Shape, rng: &mut R) -> Self {
        let h = shape.hidden;
        let lower = (shape.layers > 1)
            .then(|| Lstm::init(RecurrentConfig::new(h, h).num_layers(shape.layers - 1), rng));
        let top = Recurrent::with_cells(RecurrentConfig::new(h, h), |input, hidden| {
            Attentive::new(shape.kind, input, hidden, shape.window, shape.key, rng)
        });
        AttentionLm {
            embed: Embedding::init(shape.vocab, h, rng),
            lower,
            top,
            head: Linear::init(h, shape.vocab, rng),
        }
    }

    /// The state at the start of a stream of `lanes` lanes: zeros, and an empty window.
    pub fn zero_carry(&self, lanes: usize) -> LmCarry<F> {
        LmCarry {
            lower: self.lower.as_ref().map(|l| Carry::zeros(l, lanes)),
            top: Carry::zeros(&self.top, lanes),
        }
    }

    /// Logits [T·B, V] for the inputs `x` [T, B, H] from `state`, and the final state.
    #[track_caller]
    pub fn logits<'t>(
        &self,
        tape: &'t Tape<F>,
        x: Var<'t, F>,
        state: LmState<'t, F>,
        run: &Run<'_, F>,
    ) -> (Var<'t, F>, LmState<'t, F>) {
        let (x, lower) = match (&self.lower, state.lower) {
            (Some(stack), Some(s)) => {
                let out = stack.forward_with(tape, x, Some(s), run);
                (out.output, Some(out.state))
            }
            (None, None) => (x, None),
            _ => panic!("attention lm: the state's lower layers do not match the model's"),
        };
        let out = self.top.forward_with(tape, x, Some(state.top), run);
        let shape = out.output.shape();
        let rows = out.output.reshape(&[shape[0] * shape[1], shape[2]]);
        let next = LmState {
            lower,
            top: out.state,
        };
        (self.head.forward(tape, rows), next)
    }

    /// The chunk's cross-entropy (summed over its counted targets, with their number), and the
    /// final state: the model the BPTT driver calls.
    pub fn loss<'t>(
        &self,
        tape: &'t Tape<F>,
        chunk: &Chunk,
        state: LmState<'t, F>,
        run: &Run<'_, F>,
    ) -> (ChunkLoss<'t, F>, LmState<'t, F>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let (logits, state) = self.logits(tape, x, state, run);
        (chunk.cross_entropy(logits), state)
    }

    /// The attention weights at every step of one sequence `tokens` read from the start of a
    /// stream: a row [W] per step, oldest slot first. `None` without attention.
    pub fn attention_map(&self, tokens: &[usize]) -> Option<Vec<Vec<f64>>> {
        let cell = self.top.cell(0, 0);
        cell.attention.as_ref()?;
        let tape = Tape::new();
        let steps = tokens.len();
        let start = self.zero_carry(1).on(&tape);
        let mut x = self.embed.forward(&tape, tokens, &[steps, 1]);
        if let (Some(stack), Some(s)) = (&self.lower, start.lower) {
            x = stack.forward(&tape, x, Some(s), None).output;
        }
        let hidden = x.shape()[2];
        let xp = cell.project(&tape, x.reshape(&[steps, hidden]));
        // The stack's state has a leading axis of layers; a cell's has none.
        let mut state = start.top.map(|part| part.select(0, 0));
        let mut rows = Vec::with_capacity(steps);
        for t in 0..steps {
            let (next, alpha) = cell.step_with_weights(&tape, xp.narrow(0, t, 1), state);
            let alpha = alpha.expect("a cell with attention returns its weights");
            rows.push(alpha.value().data().iter().map(|a| a.to_f64()).collect());
            state = next;
        }
        Some(rows)
    }
}

impl<F: Float> Module<F> for AttentionLm<F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut all = nested("embed", self.embed.params());
        if let Some(lower) = &self.lower {
            all.extend(nested("lower", lower.params()));
        }
        all.extend(nested("top", self.top.params()));
        all.extend(nested("head", self.head.params()));
        all
    }
}
