//! The model: an embedding (or one-hot input), a recurrent stack of the chosen cell, and a linear
//! readout to the vocabulary, named as a PyTorch model with fields `embed`, `rnn` and `head`.

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::{CrossEntropyOptions, Param, Reduction, Tape, Tensor, Var};
use rewind::nn::{
    nested, Carry, Chunk, Embedding, Gru, Linear, Lstm, Module, RecurrentConfig, Rnn, Run,
    StackState,
};

use super::cli::{CellKind, Hyper};

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

/// Embedding → recurrent stack → linear readout.
pub struct CharModel {
    /// [V, E], absent for one-hot input.
    pub embed: Option<Embedding>,
    /// The stack.
    pub rnn: Stack,
    /// [V, H] and [V].
    pub head: Linear,
    vocab: usize,
}

impl CharModel {
    /// A freshly initialised model for `vocab` characters.
    pub fn new(h: &Hyper, vocab: usize, rng: &mut StdRng) -> Self {
        let embed = (h.embed > 0).then(|| Embedding::new(vocab, h.embed, rng));
        let input = if h.embed > 0 { h.embed } else { vocab };
        let config = RecurrentConfig::new(input, h.hidden)
            .num_layers(h.layers)
            .dropout(h.dropout);
        let rnn = match h.cell {
            CellKind::Rnn => Stack::Rnn(Rnn::new(config, rng)),
            CellKind::Lstm => Stack::Lstm(Lstm::new(config, rng)),
            CellKind::Gru => Stack::Gru(Gru::new(config, rng)),
        };
        CharModel {
            embed,
            rnn,
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
        each!(&self.rnn, s => s.set_training(on))
    }

    /// Restarts the dropout masks' generator.
    pub fn reseed_dropout(&self, seed: u64) {
        each!(&self.rnn, s => s.reseed_dropout(seed))
    }

    /// Logits [steps·lanes, V] for time-major tokens, and the final state.
    pub fn logits<'t>(
        &self,
        tape: &'t Tape,
        tokens: &[usize],
        steps: usize,
        lanes: usize,
        state: StackState<'t>,
        run: &Run<'_, 't>,
    ) -> (Var<'t>, StackState<'t>) {
        let x = match &self.embed {
            Some(e) => e.forward(tape, tokens, &[steps, lanes]),
            None => tape.constant(one_hot(tokens, steps, lanes, self.vocab)),
        };
        let run = Run {
            initial: Some(state),
            ..*run
        };
        let out = each!(&self.rnn, s => s.forward_with(tape, x, &run));
        let logits = self
            .head
            .forward(tape, out.output)
            .reshape(&[steps * lanes, self.vocab]);
        (logits, out.state)
    }

    /// The cross-entropy summed over the chunk's counted targets, and the final state: the
    /// model the BPTT driver calls.
    pub fn loss_sum<'t>(
        &self,
        tape: &'t Tape,
        chunk: &Chunk,
        state: StackState<'t>,
        run: &Run<'_, 't>,
    ) -> (Var<'t>, StackState<'t>) {
        let (logits, state) =
            self.logits(tape, &chunk.inputs, chunk.steps, chunk.lanes, state, run);
        let sum = CrossEntropyOptions {
            reduction: Reduction::Sum,
            ..Default::default()
        };
        (logits.cross_entropy_with(&chunk.targets, sum), state)
    }
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

    fn params_mut(&mut self) -> Vec<(String, &mut Param)> {
        let mut p = Vec::new();
        if let Some(e) = &mut self.embed {
            p.extend(nested("embed", e.params_mut()));
        }
        p.extend(nested("rnn", each!(&mut self.rnn, s => s.params_mut())));
        p.extend(nested("head", self.head.params_mut()));
        p
    }
}
