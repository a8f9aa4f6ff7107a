//! The grid that `benches/bptt.rs` and `examples/bptt_report.rs` both measure: a character model
//! (embedding V = 65 → one recurrent layer, B = 32, H = 256 → linear readout to V, cross-entropy)
//! run forward and backward over T steps, by full, truncated (k = 64) or checkpointed BPTT.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::{Rng, SeedableRng};
use rewind::autograd::Tape;
use rewind::nn::{Carry, Embedding, Linear, Recurrent, RecurrentConfig, Run, StandardCell};

pub const VOCAB: usize = 65;
pub const BATCH: usize = 32;
pub const HIDDEN: usize = 256;
pub const LENGTHS: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];
pub const CHUNK: usize = 64;

/// How the T steps are backpropagated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// All T steps on one tape.
    Full,
    /// Chunks of 64 steps, the state carried and detached.
    Truncated,
    /// All T steps, checkpointed every √T.
    Checkpointed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Truncated => "truncated64",
            Mode::Checkpointed => "checkpointed",
        }
    }
}

/// One model of cell `C` and its data.
pub struct Bench<C> {
    embed: Embedding,
    rnn: Recurrent<C>,
    head: Linear,
    tokens: Vec<usize>,
}

/// Time of one pass, split into forward and backward, and the most bytes a tape held.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    pub forward: Duration,
    pub backward: Duration,
    pub peak_bytes: usize,
}

impl<C: StandardCell<f32> + 'static> Bench<C> {
    pub fn new(max_steps: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(0);
        Bench {
            embed: Embedding::new(VOCAB, HIDDEN, &mut rng),
            rnn: Recurrent::new(RecurrentConfig::new(HIDDEN, HIDDEN), &mut rng),
            head: Linear::new(HIDDEN, VOCAB, &mut rng),
            tokens: (0..(max_steps + 1) * BATCH)
                .map(|_| rng.random_range(0..VOCAB))
                .collect(),
        }
    }

    /// One forward and backward pass over `steps` steps.
    pub fn pass(&self, steps: usize, mode: Mode) -> Measurement {
        let chunk = if mode == Mode::Truncated {
            CHUNK.min(steps)
        } else {
            steps
        };
        let every = (mode == Mode::Checkpointed).then(|| (steps as f64).sqrt().round() as usize);
        let mut carry = Carry::zeros(&self.rnn, BATCH);
        let mut m = Measurement {
            forward: Duration::ZERO,
            backward: Duration::ZERO,
            peak_bytes: 0,
        };
        for start in (0..steps).step_by(chunk) {
            let n = chunk.min(steps - start);
            let tape = Tape::new();
            let began = Instant::now();
            let inputs = &self.tokens[start * BATCH..(start + n) * BATCH];
            let targets: Vec<i64> = self.tokens[(start + 1) * BATCH..(start + n + 1) * BATCH]
                .iter()
                .map(|&t| t as i64)
                .collect();
            let x = self.embed.forward(&tape, inputs, &[n, BATCH]);
            let run = Run {
                checkpoint_every: every,
                ..Run::default()
            };
            let out = self.rnn.forward_with(&tape, x, Some(carry.on(&tape)), &run);
            let logits = self
                .head
                .forward(&tape, out.output)
                .reshape(&[n * BATCH, VOCAB]);
            let loss = logits.cross_entropy(&targets);
            let forwarded = Instant::now();
            black_box(loss.backward());
            m.forward += forwarded - began;
            m.backward += forwarded.elapsed();
            m.peak_bytes = m.peak_bytes.max(tape.stats().peak_bytes);
            carry = Carry::of(out.state);
        }
        m
    }
}
