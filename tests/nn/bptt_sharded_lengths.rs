//! Sharding with variable lengths: a batch of padded sequences of different lengths, run through
//! `Recurrent::forward_with` with `Run::lengths`, gives the same update whether the driver cuts
//! its lanes into shards or runs them on one tape.

use std::ops::Range;

use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{CrossEntropyOptions, Float, Grads, Param, Reduction, Tape, Var};
use rewind::nn::{
    nested, Bptt, Carry, ChunkLoss, Embedding, GruCell, Linear, LstmCell, Module, Recurrent,
    RecurrentConfig, RnnCell, Run, Source, SourceChunk, StackState, StandardCell, Strategy,
};

const VOCAB: usize = 7;
/// The token past a sequence's end; it never counts, and past the length the stack ignores it.
const PAD: usize = 0;

/// A batch of token sequences of different lengths, one per lane, padded to the longest: each
/// lane reads its tokens and predicts the next one, up to its own length.
struct Padded {
    /// Per lane, `length + 1` tokens: the inputs and, one on, the targets.
    sequences: Vec<Vec<usize>>,
    steps: usize,
    position: usize,
}

/// Steps `start .. start + steps` of a [`Padded`] batch, time-major as `Chunk`.
#[derive(Clone, Debug)]
struct PaddedChunk {
    /// Input tokens [steps, lanes] (`PAD` past a lane's length).
    inputs: Vec<usize>,
    /// The next tokens [steps, lanes] (-100 past a lane's length, or in a context step).
    targets: Vec<i64>,
    /// Each lane's valid steps in this chunk (1..=steps).
    lengths: Vec<usize>,
    steps: usize,
    lanes: usize,
    start: usize,
}

impl Padded {
    fn new(sequences: Vec<Vec<usize>>) -> Self {
        let steps = sequences.iter().map(|s| s.len() - 1).max().unwrap();
        Padded {
            sequences,
            steps,
            position: 0,
        }
    }
}

impl Source for Padded {
    type Chunk = PaddedChunk;

    fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        self.steps - self.position
    }

    fn chunk(&self, start: usize, steps: usize) -> PaddedChunk {
        let lanes = self.sequences.len();
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for t in start..start + steps {
            for lane in &self.sequences {
                let valid = t + 1 < lane.len();
                inputs.push(if valid { lane[t] } else { PAD });
                targets.push(if valid { lane[t + 1] as i64 } else { -100 });
            }
        }
        let lengths = self
            .sequences
            .iter()
            .map(|s| (s.len() - 1).saturating_sub(start).min(steps))
            .collect();
        PaddedChunk {
            inputs,
            targets,
            lengths,
            steps,
            lanes,
            start,
        }
    }

    fn seek(&mut self, position: usize) {
        self.position = position;
    }
}

impl SourceChunk for PaddedChunk {
    fn steps(&self) -> usize {
        self.steps
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn start(&self) -> usize {
        self.start
    }

    fn piece(&self, first: usize, steps: usize) -> PaddedChunk {
        let rows = first * self.lanes..(first + steps) * self.lanes;
        PaddedChunk {
            inputs: self.inputs[rows.clone()].to_vec(),
            targets: self.targets[rows].to_vec(),
            lengths: self
                .lengths
                .iter()
                .map(|l| l.saturating_sub(first).min(steps))
                .collect(),
            steps,
            lanes: self.lanes,
            start: self.start + first,
        }
    }

    fn exclude_first(&mut self, steps: usize) {
        self.targets[..steps * self.lanes].fill(-100);
    }

    fn select_lanes(&self, lanes: Range<usize>) -> PaddedChunk {
        let rows = (0..self.steps).flat_map(|t| lanes.clone().map(move |b| t * self.lanes + b));
        let (inputs, targets) = rows.map(|i| (self.inputs[i], self.targets[i])).unzip();
        PaddedChunk {
            inputs,
            targets,
            lengths: self.lengths[lanes.clone()].to_vec(),
            steps: self.steps,
            lanes: lanes.len(),
            start: self.start,
        }
    }
}

impl PaddedChunk {
    /// The cross-entropy of `logits` [steps·lanes, vocab], summed over each lane's valid steps,
    /// with one term per valid step: the driver's mean is then over every valid position.
    fn cross_entropy<'t, F: Float>(&self, logits: Var<'t, F>) -> ChunkLoss<'t, F> {
        let sum = CrossEntropyOptions {
            reduction: Reduction::Sum,
            ..Default::default()
        };
        let terms = self.targets.iter().filter(|&&t| t != -100).count();
        ChunkLoss::summed(logits.cross_entropy_with(&self.targets, sum), terms)
    }
}

/// Two batches of four lanes: lengths 6, 1, 4, 6 (two lanes full length, one of a single step),
/// then 3, 5, 2, 5.
fn batches() -> Vec<Padded> {
    let lane = |seed: usize, length: usize| -> Vec<usize> {
        (0..=length)
            .map(|i| 1 + (seed * 3 + i * i + i) % (VOCAB - 1))
            .collect()
    };
    vec![
        Padded::new(vec![lane(0, 6), lane(1, 1), lane(2, 4), lane(3, 6)]),
        Padded::new(vec![lane(4, 3), lane(5, 5), lane(6, 2), lane(7, 5)]),
    ]
}

/// A character model over padded sequences: embedding, a two-layer stack with a learned initial
/// state that stops at each lane's length, readout.
struct Tagger<C, F: Float> {
    embed: Embedding<F>,
    rnn: Recurrent<C, F>,
    head: Linear<F>,
}

impl<C: StandardCell<F> + Sync, F: Float> Tagger<C, F> {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(5);
        let config = RecurrentConfig::new(3, 4)
            .num_layers(2)
            .learn_initial_state(true);
        let tagger = Tagger {
            embed: Embedding::init(VOCAB, 3, &mut rng),
            rnn: Recurrent::init(config, &mut rng),
            head: Linear::init(4, VOCAB, &mut rng),
        };
        // h_0 away from zero, so that where a lane starts shows in every gradient.
        for (name, p) in tagger.rnn.params() {
            if name.ends_with("_0") {
                p.update(|t| {
                    for (i, v) in t.data_mut().iter_mut().enumerate() {
                        *v = F::from_f64(0.3 * (i as f64 + 1.0).sin());
                    }
                });
            }
        }
        tagger
    }

    fn loss<'t>(
        &self,
        tape: &'t Tape<F>,
        chunk: &PaddedChunk,
        state: StackState<'t, F>,
        run: &Run<'_, F>,
    ) -> (ChunkLoss<'t, F>, StackState<'t, F>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        // The driver's own options (fresh_lanes above all) pass on; the lengths are the chunk's.
        let run = Run {
            lengths: Some(&chunk.lengths),
            ..*run
        };
        let out = self.rnn.forward_with(tape, x, Some(state), &run);
        let logits = self
            .head
            .forward(tape, out.output)
            .reshape(&[chunk.steps * chunk.lanes, VOCAB]);
        (chunk.cross_entropy(logits), out.state)
    }

    /// One update per batch (the driver restarted between them, so every lane starts from h_0),
    /// in `shards` shards (`None`: on one tape): (loss, gradients, the state carried after it).
    fn pass(&self, shards: Option<usize>) -> Vec<(f64, Grads<F>, Carry<F>)> {
        let mut driver = Bptt::new(Strategy::Full, Carry::zeros(&self.rnn, 4), 9);
        let mut out = Vec::new();
        for mut batch in batches() {
            driver.restart(Carry::zeros(&self.rnn, 4));
            while let Some(u) = match shards {
                Some(n) => driver.step_sharded(&mut batch, n, |t, c, st, r| self.loss(t, c, st, r)),
                None => driver.step(&mut batch, |t, c, st, r| self.loss(t, c, st, r)),
            } {
                out.push((u.loss, u.grads, driver.carry().clone()));
            }
        }
        out
    }

    /// Sharded passes against the one-tape pass: losses, every gradient (h_0's and c_0's
    /// included) and the carried states agree to `tolerance`, relative.
    fn assert_sharding_changes_nothing(&self, tolerance: f64) {
        let close = |x: F, y: F| {
            let (x, y) = (x.to_f64(), y.to_f64());
            (x - y).abs() <= tolerance * (1.0 + y.abs())
        };
        let whole = self.pass(None);
        assert_eq!(whole.len(), 2, "one update per batch");
        for shards in [1, 2, 3, 5] {
            let sharded = self.pass(Some(shards));
            assert_eq!(sharded.len(), whole.len(), "{shards} shards");
            for (u, ((l1, g1, c1), (l2, g2, c2))) in sharded.iter().zip(&whole).enumerate() {
                let at = format!("{shards} shards, batch {u}");
                assert!(
                    close(F::from_f64(*l1), F::from_f64(*l2)),
                    "{at}: loss {l1} vs {l2}"
                );
                for (name, p) in self.params() {
                    let (a, b) = (g1.get(p), g2.get(p));
                    assert_eq!(a.is_some(), b.is_some(), "{at}: {name}");
                    if let (Some(a), Some(b)) = (a, b) {
                        for (x, y) in a.data().iter().zip(b.data()) {
                            assert!(close(*x, *y), "{at}: {name}: {x:?} vs {y:?}");
                        }
                    }
                }
                for (a, b) in c1.parts().iter().zip(c2.parts()) {
                    assert_eq!(a.shape(), b.shape(), "{at}: carried state");
                    assert!(
                        a.data().iter().zip(b.data()).all(|(x, y)| close(*x, *y)),
                        "{at}: carried state"
                    );
                }
            }
        }
    }
}

impl<C: StandardCell<F>, F: Float> Module<F> for Tagger<C, F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut all = nested("embed", self.embed.params());
        all.extend(nested("rnn", self.rnn.params()));
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// Padded sequences of different lengths (1 to 6 steps, two lanes full length), run with
/// `Run::lengths` and a learned initial state, give the same update cut into 1, 2, 3 or 5 shards
/// (5 is more than the 4 lanes) as on one tape: the loss, every gradient (h_0 and c_0 included)
/// and the carried state, frozen at each lane's last valid step; for every built-in cell, to
/// 1e-12 in f64 and to f32 rounding in f32.
///
/// Under `Strategy::Full`, one update per batch: padded sequences are trained whole. A truncated
/// chunk would begin after a short lane has ended, and a length of 0 is no length
/// `Recurrent::forward_with` takes (it asks 1..=T of every lane).
#[test]
fn a_sharded_update_over_padded_sequences_with_lengths_is_the_one_tape_update() {
    Tagger::<RnnCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tagger::<GruCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tagger::<LstmCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tagger::<LstmCell<f32>, f32>::new().assert_sharding_changes_nothing(2e-5);
}
