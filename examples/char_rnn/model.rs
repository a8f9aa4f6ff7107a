//! The model: an embedding (or one-hot input), a recurrent stack of the chosen cell, and a linear
//! readout to the vocabulary, named as a PyTorch model with fields `embed`, `rnn` and `head`;
//! optionally dropout on the first layer's input (`--input-dropout`) and on the readout's input
//! (`--head-dropout`), the places a single-layer stack can have it.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::{Param, Tape, Tensor, Var};
use rewind::nn::{
    nested, Carry, Chunk, ChunkLoss, Dropout, Embedding, Gru, Linear, Lstm, Module,
    RecurrentConfig, Rnn, Run, StackState,
};

use super::cli::{BpttKind, CellKind, Hyper};
use super::train::{mix, SeedStream};

/// The recurrent stack, of the cell chosen at run time.
pub enum Stack {
    /// Vanilla RNN.
    Rnn(Rnn),
    /// LSTM.
    Lstm(Lstm),
    /// GRU.
    Gru(Gru),
}

macro_rules! each {
    ($stack:expr, $s:ident => $body:expr) => {
        match $stack {
            Stack::Rnn($s) => $body,
            Stack::Lstm($s) => $body,
            Stack::Gru($s) => $body,
        }
    };
}

/// Embedding → (dropout) → recurrent stack → (dropout) → linear readout.
pub struct CharModel {
    /// [V, E], absent for one-hot input.
    pub embed: Option<Embedding>,
    /// The stack.
    pub rnn: Stack,
    /// Dropout on the first layer's input.
    pub input_dropout: Dropout,
    /// Dropout on the top layer's output, before the head.
    pub head_dropout: Dropout,
    /// [V, H] and [V].
    pub head: Linear,
    vocab: usize,
}

impl CharModel {
    /// A freshly initialised model for `vocab` characters.
    pub fn new(h: &Hyper, vocab: usize, rng: &mut StdRng) -> Self {
        let embed = (h.embed > 0).then(|| Embedding::new(vocab, h.embed, rng));
        let input = if h.embed > 0 { h.embed } else { vocab };
        let mut config = RecurrentConfig::new(input, h.hidden)
            .num_layers(h.layers)
            .dropout(h.dropout);
        if let Some(b) = h.forget_bias {
            config = config.forget_bias(b);
        }
        let rnn = match h.cell {
            CellKind::Rnn => Stack::Rnn(Rnn::new(config, rng)),
            CellKind::Lstm => Stack::Lstm(Lstm::new(config, rng)),
            CellKind::Gru => Stack::Gru(Gru::new(config, rng)),
        };
        CharModel {
            embed,
            rnn,
            // Reseeded before every training step (`reseed_dropout`); the seeds here are
            // placeholders that no run draws from.
            input_dropout: Dropout::new(h.input_dropout, 0),
            head_dropout: Dropout::new(h.head_dropout, 0),
            head: Linear::new(h.hidden, vocab, rng),
            vocab,
        }
    }

    /// The zero state for `lanes` parallel sequences.
    pub fn zero_carry(&self, lanes: usize) -> Carry {
        each!(&self.rnn, s => Carry::zeros(s, lanes))
    }

    /// Training (dropout on) or evaluation mode.
    pub fn set_training(&self, on: bool) {
        each!(&self.rnn, s => s.set_training(on));
        self.input_dropout.set_training(on);
        self.head_dropout.set_training(on);
    }

    /// Restarts the dropout masks' generators from the step's `seed`: the stack's, the input's
    /// and the head's each from a seed of its own derived from it, so that no two draw the same
    /// masks, and none draws what the step's other uses of `seed` draw (its windows, its chunk
    /// lengths). (A batch run in shards draws every mask of a shard from the shard's own stream
    /// instead.)
    pub fn reseed_dropout(&self, seed: u64) {
        let stack = mix(seed, SeedStream::StackDropout as u64);
        each!(&self.rnn, s => s.reseed_dropout(stack));
        self.input_dropout
            .reseed(mix(seed, SeedStream::InputDropout as u64));
        self.head_dropout
            .reseed(mix(seed, SeedStream::HeadDropout as u64));
    }

    /// Logits [steps·lanes, V] for time-major tokens, and the final state.
    pub fn logits<'t>(
        &self,
        tape: &'t Tape,
        tokens: &[usize],
        steps: usize,
        lanes: usize,
        state: StackState<'t>,
        run: &Run<'_>,
    ) -> (Var<'t>, StackState<'t>) {
        let x = self.inputs(tape, tokens, steps, lanes);
        self.logits_of(tape, x, steps, lanes, state, run)
    }

    /// What the recurrent stack reads for time-major tokens: their embedding rows
    /// [steps, lanes, E], or their one-hot vectors [steps, lanes, V] when there is no embedding.
    pub fn inputs<'t>(
        &self,
        tape: &'t Tape,
        tokens: &[usize],
        steps: usize,
        lanes: usize,
    ) -> Var<'t> {
        match &self.embed {
            Some(e) => e.forward(tape, tokens, &[steps, lanes]),
            None => tape.constant(one_hot(tokens, steps, lanes, self.vocab)),
        }
    }

    /// [`CharModel::logits`] from the stack's inputs `x` as [`CharModel::inputs`] makes them.
    pub fn logits_of<'t>(
        &self,
        tape: &'t Tape,
        x: Var<'t>,
        steps: usize,
        lanes: usize,
        state: StackState<'t>,
        run: &Run<'_>,
    ) -> (Var<'t>, StackState<'t>) {
        let run = Run { ..*run };
        // Without input or head dropout the tape is what it was before the options existed.
        let x = if self.input_dropout.p() > 0.0 {
            self.input_dropout.forward(tape, x)
        } else {
            x
        };
        let out = each!(&self.rnn, s => s.forward_with(tape, x, Some(state), &run));
        let top = if self.head_dropout.p() > 0.0 {
            self.head_dropout.forward(tape, out.output)
        } else {
            out.output
        };
        let logits = self
            .head
            .forward(tape, top)
            .reshape(&[steps * lanes, self.vocab]);
        (logits, out.state)
    }

    /// The chunk's cross-entropy (summed over its counted targets, with their number), and the
    /// final state: the model the BPTT driver calls.
    pub fn loss<'t>(
        &self,
        tape: &'t Tape,
        chunk: &Chunk,
        state: StackState<'t>,
        run: &Run<'_>,
    ) -> (ChunkLoss<'t>, StackState<'t>) {
        let (logits, state) =
            self.logits(tape, &chunk.inputs, chunk.steps, chunk.lanes, state, run);
        (chunk.cross_entropy(logits), state)
    }
}

/// The parameters of a model of shape `h` over `vocab` characters: the embedding V·E, then per
/// layer G·H·(input + H + 2) for G gates (w_ih, w_hh and two biases; the input is E, or V one-hot,
/// then H), and the head V·(H + 1). `None` if the count overflows.
pub fn param_count(h: &Hyper, vocab: usize) -> Option<usize> {
    let gates: usize = match h.cell {
        CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    };
    let input = if h.embed > 0 { h.embed } else { vocab };
    let layer = |inp: usize| {
        let width = inp.checked_add(h.hidden)?.checked_add(2)?;
        gates.checked_mul(h.hidden)?.checked_mul(width)
    };
    let rest = layer(h.hidden)?.checked_mul(h.layers.saturating_sub(1))?;
    let head = vocab.checked_mul(h.hidden.checked_add(1)?)?;
    vocab
        .checked_mul(h.embed)?
        .checked_add(layer(input)?)?
        .checked_add(rest)?
        .checked_add(head)
}

/// Bytes one step of one lane needs, in f32s: per layer (6G + 3)·H for the gates, states and
/// their gradients; 3·V for the logits, their softmax and its gradient; the input, one-hot V or
/// an embedding row and its gradient; with input dropout, twice the input for its mask and the
/// masked input; with head dropout, 2·H for its mask and the masked output (neither of which
/// sampling, with dropout off, needs: an overestimate there). The rest is fitted to the peak
/// memory of runs of this example; the dropouts' terms are counted, not fitted.
fn floats_per_step(h: &Hyper, vocab: usize) -> Option<u64> {
    let gates: u64 = match h.cell {
        CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    };
    let layers = (h.layers as u64).checked_mul(h.hidden as u64)?;
    // What the stack reads per lane-step: a one-hot vector, or an embedding row (and, for the
    // embedding, its gradient too).
    let input_width = match h.embed {
        0 => vocab as u64,
        e => e as u64,
    };
    let input = match h.embed {
        0 => input_width,
        _ => input_width.checked_mul(2)?,
    };
    let input_dropout = if h.input_dropout > 0.0 {
        input_width.checked_mul(2)?
    } else {
        0
    };
    let head_dropout = if h.head_dropout > 0.0 {
        (h.hidden as u64).checked_mul(2)?
    } else {
        0
    };
    (6 * gates + 3)
        .checked_mul(layers)?
        .checked_add((vocab as u64).checked_mul(3)?)?
        .checked_add(input)?
        .checked_add(input_dropout)?
        .checked_add(head_dropout)
}

/// Bytes training needs beyond the text: five copies of the parameters (weights, gradients,
/// Adam's two moments, a checkpoint's copy; seven with `--ema`, its average and the model that
/// evaluates it) and the activations of a chunk of the longest
/// `steps` (3/2 of `--seq-len` for random lengths) in `--batch` lanes. `None` if it overflows.
pub fn training_bytes(h: &Hyper, vocab: usize) -> Option<u64> {
    let steps = match h.bptt {
        BpttKind::Random => (h.seq_len as u64).checked_mul(3)? / 2,
        _ => h.seq_len as u64,
    };
    let activations = floats_per_step(h, vocab)?
        .checked_mul(steps)?
        .checked_mul(h.batch as u64)?;
    let copies = if h.ema > 0.0 { 7 } else { 5 };
    (param_count(h, vocab)? as u64)
        .checked_mul(copies)?
        .checked_add(activations)?
        .checked_mul(4)
}

/// Bytes loading and sampling need: the parameters twice (the loaded tensors and the model) and
/// one step of one lane. `None` if it overflows.
pub fn sampling_bytes(h: &Hyper, vocab: usize) -> Option<u64> {
    (param_count(h, vocab)? as u64)
        .checked_mul(2)?
        .checked_add(floats_per_step(h, vocab)?)?
        .checked_mul(4)
}

/// Bytes feeding a priming text of `chars` characters needs beyond [`sampling_bytes`]: the prime
/// is fed in one call, so every step of it is on one tape, one lane wide. `None` if it overflows.
pub fn priming_bytes(h: &Hyper, vocab: usize, chars: usize) -> Option<u64> {
    floats_per_step(h, vocab)?
        .checked_mul(chars as u64)?
        .checked_mul(4)
}

fn one_hot(tokens: &[usize], steps: usize, lanes: usize, vocab: usize) -> Tensor {
    let mut data = vec![0.0; steps * lanes * vocab];
    for (i, &t) in tokens.iter().enumerate() {
        data[i * vocab + t] = 1.0;
    }
    Tensor::from_vec(data, &[steps, lanes, vocab]).expect("one row per token")
}

impl Module for CharModel {
    fn params(&self) -> Vec<(String, &Param)> {
        let mut p = Vec::new();
        if let Some(e) = &self.embed {
            p.extend(nested("embed", e.params()));
        }
        p.extend(nested("rnn", each!(&self.rnn, s => s.params())));
        p.extend(nested("head", self.head.params()));
        p
    }
}
