//! The BPTT driver over a token stream: truncation with k ≥ T is full BPTT, a chunk boundary cuts
//! the gradient exactly, TBPTT(k1, k2) equals its definition, checkpointed and π = 1 chunks equal
//! plain truncation, checkpointed model segments hold memory that grows as √k, lanes reset
//! independently, and token ids of any width read back the same. Over a stream of feature
//! vectors, the driver gives PyTorch's gradient of the mean squared error; and a model's loss
//! reduced by the mean or by the sum is the same update under every strategy.

use crate::support::golden::{self, tensor};
use rewind::autograd::rand::{rngs::StdRng, SeedableRng};
use rewind::autograd::{Grads, Param, Tape, Tensor, Var};
use rewind::nn::loss::mse_loss;
use rewind::nn::{
    load_state_dict, nested, Bptt, Carry, Chunk, ChunkLoss, Embedding, FeatureChunk, FeatureStream,
    Linear, Lstm, Module, RecurrentConfig, Run, Source, StackState, Strategy, Stream, Tokens,
};

pub(crate) const VOCAB: usize = 7;

/// A tiny character model: embedding, LSTM, linear readout.
struct CharModel {
    embed: Embedding<f64>,
    lstm: Lstm<f64>,
    head: Linear<f64>,
}

impl CharModel {
    fn new() -> Self {
        Self::with(RecurrentConfig::new(3, 4))
    }

    fn with(config: RecurrentConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(1);
        CharModel {
            embed: Embedding::init(VOCAB, 3, &mut rng),
            lstm: Lstm::init(config, &mut rng),
            head: Linear::init(4, VOCAB, &mut rng),
        }
    }

    /// The model with a learned initial state h_0, c_0, drawn away from zero so that where the
    /// state starts shows in every gradient.
    fn learning_its_initial_state() -> Self {
        let model = Self::with(RecurrentConfig::new(3, 4).learn_initial_state(true));
        for (name, p) in model.lstm.params() {
            if name.ends_with("_0") {
                p.update(|t| {
                    for (i, v) in t.data_mut().iter_mut().enumerate() {
                        *v = 0.3 * (i as f64 + 1.0).sin();
                    }
                });
            }
        }
        model
    }

    /// The learned initial state's parameters.
    fn initial(&self) -> Vec<&rewind::autograd::Param<f64>> {
        let params = self.lstm.params();
        let learned = params.into_iter().filter(|(name, _)| name.ends_with("_0"));
        learned.map(|(_, p)| p).collect()
    }

    /// Summed cross-entropy over the chunk's counted targets, and the final state.
    fn run<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &Chunk,
        state: StackState<'t, f64>,
        run: &Run<'_, f64>,
    ) -> (ChunkLoss<'t, f64>, StackState<'t, f64>) {
        self.run_from(tape, chunk, Some(state), run)
    }

    /// [`run`](CharModel::run) from `initial`, or from the stack's own initial state.
    fn run_from<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &Chunk,
        initial: Option<StackState<'t, f64>>,
        run: &Run<'_, f64>,
    ) -> (ChunkLoss<'t, f64>, StackState<'t, f64>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let run = Run { ..*run };
        let out = self.lstm.forward_with(tape, x, initial, &run);
        let logits = self
            .head
            .forward(tape, out.output)
            .reshape(&[chunk.steps * chunk.lanes, VOCAB]);
        (chunk.cross_entropy(logits), out.state)
    }

    fn params(&self) -> Vec<&rewind::autograd::Param<f64>> {
        let mut p: Vec<_> = self.embed.params().into_iter().map(|(_, p)| p).collect();
        p.extend(self.lstm.params().into_iter().map(|(_, p)| p));
        p.extend(self.head.params().into_iter().map(|(_, p)| p));
        p
    }
}

fn stream() -> Stream {
    let tokens: Vec<usize> = (0..3 * 25).map(|i| (i * i + 3 * i) % VOCAB).collect();
    Stream::new(tokens, 3) // 3 lanes of 25 tokens: 24 steps
}

fn all_updates(model: &CharModel, strategy: Strategy) -> Vec<(Grads<f64>, f64, usize)> {
    let mut s = stream();
    let mut driver = Bptt::new(strategy, Carry::zeros(&model.lstm, 3), 0);
    let mut out = Vec::new();
    while let Some(u) = driver.step(&mut s, |t, c, st, r| model.run(t, c, st, r)) {
        out.push((u.grads, u.loss, u.steps));
    }
    out
}

fn assert_same(model: &CharModel, a: &Grads<f64>, b: &Grads<f64>, tolerance: f64) {
    for p in model.params() {
        for (x, y) in a[p].data().iter().zip(b[p].data()) {
            assert!(
                (x - y).abs() <= tolerance * y.abs().max(1e-300),
                "{x} vs {y}"
            );
        }
    }
}

#[test]
fn truncation_longer_than_the_sequence_is_full_bptt() {
    let model = CharModel::new();
    let full = all_updates(&model, Strategy::Full);
    let long = all_updates(&model, Strategy::Truncated { k: 100 });
    assert_eq!((full.len(), long.len()), (1, 1));
    assert_eq!(full[0].1, long[0].1);
    assert_same(&model, &long[0].0, &full[0].0, 0.0);
}

#[test]
fn a_chunk_boundary_gives_exactly_the_gradient_of_that_chunk_alone() {
    let model = CharModel::new();
    let mut s = stream();
    let mut driver = Bptt::new(
        Strategy::Truncated { k: 10 },
        Carry::zeros(&model.lstm, 3),
        0,
    );
    driver
        .step(&mut s, |t, c, st, r| model.run(t, c, st, r))
        .unwrap();
    let carried = driver.carry().clone();
    let second = driver
        .step(&mut s, |t, c, st, r| model.run(t, c, st, r))
        .unwrap();
    // The second chunk on its own, from the carried values.
    let tape = Tape::new();
    let (sum, _) = model.run(
        &tape,
        &stream().chunk(10, 10),
        carried.on(&tape),
        &Run::default(),
    );
    let alone = (sum.sum() * (1.0 / 30.0)).backward();
    assert_eq!(second.steps, 10);
    assert_same(&model, &second.grads, &alone, 0.0);
}

#[test]
fn tbptt_k1_k2_backpropagates_k2_steps_with_the_loss_on_k1() {
    let model = CharModel::new();
    let (k1, k2) = (4, 10);
    let updates = all_updates(&model, Strategy::Overlapping { k1, k2 });
    assert_eq!(updates.len(), 6);
    // The update at steps 12..16 by definition: from the state at step 6 (reached without
    // gradient), run 10 steps, count the loss on the last 4.
    let tape = Tape::new();
    let mut state = Carry::zeros(&model.lstm, 3).on(&tape);
    let warm = stream().chunk(0, 6);
    state = model.run(&tape, &warm, state, &Run::default()).1;
    let start = Carry::of(state);
    let tape = Tape::new();
    let mut chunk = stream().chunk(6, 10);
    chunk.targets[..6 * 3].fill(-100);
    let (sum, _) = model.run(&tape, &chunk, start.on(&tape), &Run::default());
    let expected = (sum.sum() * (1.0 / 12.0)).backward();
    assert_same(&model, &updates[3].0, &expected, 1e-12);
    // With k2 = k1 it is plain truncation.
    let same = all_updates(&model, Strategy::Overlapping { k1: 5, k2: 5 });
    let truncated = all_updates(&model, Strategy::Truncated { k: 5 });
    for (a, b) in same.iter().zip(&truncated) {
        assert_same(&model, &a.0, &b.0, 1e-12);
    }
}

#[test]
fn checkpointed_and_pi_one_chunks_equal_plain_truncation() {
    let model = CharModel::new();
    let truncated = all_updates(&model, Strategy::Truncated { k: 9 });
    let ckpt = all_updates(&model, Strategy::Checkpointed { k: 9, every: None });
    let pi_one = all_updates(&model, Strategy::Randomized { k: 9, pi: 1.0 });
    for ((a, b), c) in truncated.iter().zip(&ckpt).zip(&pi_one) {
        assert_same(&model, &b.0, &a.0, 1e-12);
        assert_same(&model, &c.0, &a.0, 0.0);
    }
    // Segments of 4 steps: two whole ones and one of a single step in each chunk of 9.
    let model_ckpt = all_updates(
        &model,
        Strategy::CheckpointedModel {
            k: 9,
            every: Some(4),
        },
    );
    assert_eq!(model_ckpt.len(), truncated.len());
    for (a, b) in truncated.iter().zip(&model_ckpt) {
        assert_same(&model, &b.0, &a.0, 1e-12);
        assert!((a.1 - b.1).abs() < 1e-12, "loss {} vs {}", a.1, b.1);
        assert_eq!(a.2, b.2);
    }
}

#[test]
fn random_lengths_cover_the_pass_in_chunks_within_bounds() {
    let model = CharModel::new();
    let updates = all_updates(&model, Strategy::RandomLength { min: 3, max: 7 });
    let steps: Vec<usize> = updates.iter().map(|u| u.2).collect();
    assert_eq!(steps.iter().sum::<usize>(), 24);
    assert!(
        steps[..steps.len() - 1].iter().all(|s| (3..=7).contains(s)),
        "{steps:?}"
    );
    assert!(
        steps.windows(2).any(|w| w[0] != w[1]),
        "lengths vary: {steps:?}"
    );
}

#[test]
fn resetting_a_lane_zeroes_only_that_lane() {
    let model = CharModel::new();
    let mut s = stream();
    let mut driver = Bptt::new(
        Strategy::Truncated { k: 5 },
        Carry::zeros(&model.lstm, 3),
        0,
    );
    driver
        .step(&mut s, |t, c, st, r| model.run(t, c, st, r))
        .unwrap();
    let before = driver.carry().clone();
    driver.reset_lane(1);
    let after = driver.carry();
    for (layer_b, (x, y)) in before.h().data().iter().zip(after.h().data()).enumerate() {
        let lane = layer_b / 4 % 3;
        if lane == 1 {
            assert_eq!(*y, 0.0);
        } else {
            assert_eq!(x, y);
        }
    }
    assert!(after.c().unwrap().data()[4..8].iter().all(|&v| v == 0.0));
}

#[test]
fn tokens_take_the_narrowest_width_and_read_back_the_same_chunks() {
    let width = |ids: Vec<usize>| match Tokens::from(ids) {
        Tokens::U8(_) => 1,
        Tokens::U16(_) => 2,
        Tokens::U32(_) => 4,
    };
    assert_eq!(width(vec![0, 255]), 1);
    assert_eq!(width(vec![0, 256]), 2);
    assert_eq!(width(vec![65_535]), 2);
    assert_eq!(width(vec![65_536]), 4);
    // The same ids as u8 and as u16 (a vocabulary of 300 declared) cut into the same chunks.
    let ids: Vec<usize> = (0..3 * 25).map(|i| (i * i + 3 * i) % VOCAB).collect();
    let mut wide = Tokens::for_vocab(300, ids.len());
    ids.iter().for_each(|&id| wide.push(id));
    assert!(matches!(wide, Tokens::U16(_)));
    let (mut a, mut b) = (stream(), Stream::new(wide, 3));
    while let Some(chunk) = a.take(5) {
        assert_eq!(Some(chunk), b.take(5));
    }
}

/// The tape's peak bytes of the first update of a long stream's pass under `strategy`.
fn first_update_peak(model: &CharModel, strategy: Strategy) -> usize {
    let tokens: Vec<usize> = (0..3 * 257).map(|i| (i * i + 3 * i) % VOCAB).collect();
    let mut s = Stream::new(tokens, 3);
    let mut driver = Bptt::new(strategy, Carry::zeros(&model.lstm, 3), 0);
    driver
        .step(&mut s, |t, c, st, r| model.run(t, c, st, r))
        .expect("the stream has steps")
        .peak_bytes
}

/// Checkpointed chunks keep each segment's final state and loss, and one segment's insides at a
/// time during backward: the model's outputs (hidden states, logits) are not kept for the whole
/// chunk, so the peak grows as √k, not as k.
#[test]
fn checkpointed_chunks_hold_memory_that_grows_as_the_root_of_their_length() {
    let model = CharModel::new();
    let peak = |k: usize| first_update_peak(&model, Strategy::CheckpointedModel { k, every: None });
    let (short, long) = (peak(64), peak(256));
    let whole = first_update_peak(&model, Strategy::Truncated { k: 256 });
    let growth = long as f64 / short as f64;
    assert!(
        growth < 2.3,
        "4x the steps took {growth:.2}x the bytes ({short} -> {long}); √ growth is 2x"
    );
    let less = whole as f64 / long as f64;
    assert!(
        less > 10.0,
        "checkpointed k = 256 holds {long} bytes, only {less:.1}x less than the whole chunk's {whole}"
    );
    // Checkpointing only the stack keeps its outputs, the logits and the loss's insides for the
    // whole chunk.
    let stack_only = first_update_peak(
        &model,
        Strategy::Checkpointed {
            k: 256,
            every: None,
        },
    );
    assert!(
        stack_only as f64 > 3.0 * long as f64,
        "the stack's segments alone hold {stack_only} bytes, the model's {long}"
    );
}

/// A bidirectional stack reads later steps, which one segment of `CheckpointedModel` does not
/// have: the stack refuses to run there rather than return the gradient of a different model.
#[test]
#[should_panic(expected = "lstm: bidirectional, inside one segment of Strategy::CheckpointedModel")]
fn checkpointed_model_segments_refuse_a_bidirectional_stack() {
    bidirectional_update(Some(4));
}

/// A segment as long as the chunk shows the model every step: a bidirectional stack runs, and
/// gets truncation's gradient.
#[test]
fn one_segment_per_chunk_runs_a_bidirectional_stack_as_truncation_does() {
    let (whole, truncated) = (bidirectional_update(Some(8)), bidirectional_update(None));
    assert!((whole.loss - truncated.loss).abs() <= 1e-12 * truncated.loss.abs());
    assert_eq!(whole.grads.len(), truncated.grads.len());
    // The two models' parameters were made in the same order: their ids sort alike.
    let mut a: Vec<_> = whole.grads.iter().collect();
    let mut b: Vec<_> = truncated.grads.iter().collect();
    a.sort_by_key(|&(id, _)| id);
    b.sort_by_key(|&(id, _)| id);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.data().iter().zip(y.data()) {
            assert!((p - q).abs() <= 1e-12 * q.abs().max(1e-300), "{p} vs {q}");
        }
    }
}

/// The first update of a bidirectional character model in chunks of 8, in segments of
/// `every` steps (`None`: plain truncation).
fn bidirectional_update(every: Option<usize>) -> rewind::nn::Update<f64> {
    let mut rng = StdRng::seed_from_u64(2);
    let embed = Embedding::<f64>::init(VOCAB, 3, &mut rng);
    let lstm = Lstm::<f64>::init(RecurrentConfig::new(3, 4).bidirectional(true), &mut rng);
    let head = Linear::<f64>::init(8, VOCAB, &mut rng);
    let strategy = match every {
        Some(every) => Strategy::CheckpointedModel {
            k: 8,
            every: Some(every),
        },
        None => Strategy::Truncated { k: 8 },
    };
    let mut driver = Bptt::new(strategy, Carry::zeros(&lstm, 3), 0);
    let update = driver.step(&mut stream(), |tape, chunk, state, run| {
        let x = embed.forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let out = lstm.forward_with(tape, x, Some(state), run);
        let logits = head
            .forward(tape, out.output)
            .reshape(&[chunk.steps * chunk.lanes, VOCAB]);
        (chunk.cross_entropy(logits), out.state)
    });
    update.expect("the stream has steps")
}

/// With a learned initial state, every lane of a pass's first update starts from it: under every
/// strategy, the first update's gradients (h_0 and c_0 included) are those of the model run from
/// its own initial state, and the next update, which starts from the carried state, gives h_0
/// nothing.
#[test]
fn a_learned_initial_state_starts_the_first_update_under_every_strategy() {
    let model = CharModel::learning_its_initial_state();
    // k2 = k1: with k2 > k1 the second update reaches back to the pass's start, and h_0 rightly
    // gets a gradient from it.
    let strategies = [
        Strategy::Full,
        Strategy::Truncated { k: 5 },
        Strategy::Overlapping { k1: 5, k2: 5 },
        Strategy::Randomized { k: 5, pi: 1.0 },
        Strategy::RandomLength { min: 5, max: 5 },
        Strategy::Checkpointed {
            k: 5,
            every: Some(2),
        },
        Strategy::CheckpointedModel {
            k: 5,
            every: Some(2),
        },
    ];
    for strategy in strategies {
        let start = || Carry::zeros(&model.lstm, 3);
        let (mut s, mut expected) = (stream(), Bptt::new(strategy, start(), 0));
        let want = expected
            .step(&mut s, |t, c, st, r| {
                // The pass's first steps from the stack's own state; a later segment or piece of
                // the same update from the state the one before it reached.
                model.run_from(t, c, (c.start > 0).then_some(st), r)
            })
            .unwrap();
        let (mut s, mut driver) = (stream(), Bptt::new(strategy, start(), 0));
        let got = driver
            .step(&mut s, |t, c, st, r| model.run(t, c, st, r))
            .unwrap();
        for p in model.initial() {
            let g = got.grads.get(p).expect("h_0 and c_0 get a gradient");
            assert!(g.data().iter().any(|&v| v != 0.0), "{strategy:?}");
        }
        let mut all = model.params();
        all.extend(model.initial());
        for p in all {
            let (a, b) = (got.grads.get(p).unwrap(), want.grads.get(p).unwrap());
            for (x, y) in a.data().iter().zip(b.data()) {
                assert!(
                    (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                    "{strategy:?}: {x} vs {y}"
                );
            }
        }
        if let Some(next) = driver.step(&mut s, |t, c, st, r| model.run(t, c, st, r)) {
            for p in model.initial() {
                let zero = next
                    .grads
                    .get(p)
                    .is_none_or(|g| g.data().iter().all(|&v| v == 0.0));
                assert!(zero, "{strategy:?}: a carried state gives h_0 a gradient");
            }
        }
    }
}

/// A lane reset restarts that lane from the learned initial state: h_0's gradient in the next
/// update is that lane's alone, as if the model ran every lane from h_0 and counted only that
/// lane's loss; the other lanes go on from their carried state. A restart starts every lane again.
#[test]
fn a_reset_lane_restarts_from_the_learned_initial_state() {
    let model = CharModel::learning_its_initial_state();
    let truncated = Strategy::Truncated { k: 5 };
    let step = |d: &mut Bptt<f64>, s: &mut Stream| {
        d.step(s, |t, c, st, r| model.run(t, c, st, r)).unwrap()
    };
    let (mut s, mut driver) = (
        stream(),
        Bptt::new(truncated, Carry::zeros(&model.lstm, 3), 0),
    );
    step(&mut driver, &mut s);
    driver.reset_lane(1);
    let got = step(&mut driver, &mut s);
    let (mut s, mut expected) = (
        stream(),
        Bptt::new(truncated, Carry::zeros(&model.lstm, 3), 0),
    );
    step(&mut expected, &mut s);
    let lane_one = |c: &Chunk| {
        let mut only = c.clone();
        for (i, target) in only.targets.iter_mut().enumerate() {
            if i % c.lanes != 1 {
                *target = -100;
            }
        }
        only
    };
    let want = expected
        .step(&mut s, |t, c, _, r| {
            // Lane 1's loss, over the terms of every lane, as the driver's update divides.
            let (loss, state) = model.run_from(t, &lane_one(c), None, r);
            (ChunkLoss::summed(loss.sum(), c.counted()), state)
        })
        .unwrap();
    for p in model.initial() {
        let (a, b) = (got.grads.get(p).unwrap(), want.grads.get(p).unwrap());
        assert!(a.data().iter().any(|&v| v != 0.0));
        for (x, y) in a.data().iter().zip(b.data()) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
    // The update after that starts from carried states only; a restart starts every lane.
    let carried = step(&mut driver, &mut s);
    assert!(model.initial().iter().all(|p| carried
        .grads
        .get(p)
        .is_none_or(|g| g.data().iter().all(|&v| v == 0.0))));
    driver.restart(Carry::zeros(&model.lstm, 3));
    let (mut s, mut fresh) = (
        stream(),
        Bptt::new(truncated, Carry::zeros(&model.lstm, 3), 0),
    );
    let (again, first) = (step(&mut driver, &mut stream()), step(&mut fresh, &mut s));
    for p in model.initial() {
        assert_eq!(again.grads.get(p), first.grads.get(p));
    }
}

/// Every strategy the driver has, at chunk lengths that cut a 24-step pass unevenly.
fn every_strategy() -> [Strategy; 7] {
    [
        Strategy::Full,
        Strategy::Truncated { k: 5 },
        Strategy::Overlapping { k1: 3, k2: 7 },
        Strategy::Randomized { k: 5, pi: 0.5 },
        Strategy::RandomLength { min: 3, max: 7 },
        Strategy::Checkpointed {
            k: 7,
            every: Some(2),
        },
        Strategy::CheckpointedModel {
            k: 7,
            every: Some(3),
        },
    ]
}

/// A model that reduces its loss by the mean, as PyTorch's default, and says so: the driver's
/// updates are those of the model that sums, under every strategy. (Handed to the driver as a
/// bare value, which the driver then divided by its own count, this mean was divided twice: a
/// gradient 1/N of the true one. A bare value no longer compiles.) Pieces of TBPTT(k1, k2) that
/// are context only count no target, and their mean (NaN) adds nothing.
#[test]
fn a_loss_reduced_by_the_mean_or_by_the_sum_is_one_update_under_every_strategy() {
    let model = CharModel::new();
    for strategy in every_strategy() {
        let by_sum = all_updates(&model, strategy);
        let mut s = stream();
        let mut driver = Bptt::new(strategy, Carry::zeros(&model.lstm, 3), 0);
        let mut by_mean = Vec::new();
        while let Some(u) = driver.step(&mut s, |t, c, st, r| {
            let x = model.embed.forward(t, &c.inputs, &[c.steps, c.lanes]);
            let out = model.lstm.forward_with(t, x, Some(st), r);
            let logits = model
                .head
                .forward(t, out.output)
                .reshape(&[c.steps * c.lanes, VOCAB]);
            (
                ChunkLoss::averaged(logits.cross_entropy(&c.targets), c.counted()),
                out.state,
            )
        }) {
            by_mean.push((u.grads, u.loss, u.steps));
        }
        assert_eq!(by_mean.len(), by_sum.len(), "{strategy:?}");
        for ((g_mean, loss_mean, _), (g_sum, loss_sum, _)) in by_mean.iter().zip(&by_sum) {
            assert!(
                (loss_mean - loss_sum).abs() <= 1e-12 * loss_sum.abs(),
                "{strategy:?}: {loss_mean} vs {loss_sum}"
            );
            assert_same(&model, g_mean, g_sum, 1e-12);
        }
    }
}

/// The model of scripts/golden_feature_stream.py: an LSTM reading feature vectors and a linear
/// readout predicting a vector at every step.
struct Forecaster {
    lstm: Lstm<f64>,
    head: Linear<f64>,
}

impl Module<f64> for Forecaster {
    fn params(&self) -> Vec<(String, &Param<f64>)> {
        let mut all = nested("lstm", self.lstm.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

impl Forecaster {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(3);
        Forecaster {
            lstm: Lstm::init(RecurrentConfig::new(2, 4), &mut rng),
            head: Linear::init(4, 2, &mut rng),
        }
    }

    /// Predictions `[steps, lanes, 2]` and the final state.
    fn predict<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &FeatureChunk<f64>,
        state: StackState<'t, f64>,
        run: &Run<'_, f64>,
    ) -> (Var<'t, f64>, StackState<'t, f64>) {
        let x = tape.constant(chunk.inputs.clone());
        let out = self.lstm.forward_with(tape, x, Some(state), run);
        (self.head.forward(tape, out.output), out.state)
    }

    /// The squared error summed over the chunk's counted steps, with its number of elements.
    fn loss<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &FeatureChunk<f64>,
        state: StackState<'t, f64>,
        run: &Run<'_, f64>,
    ) -> (ChunkLoss<'t, f64>, StackState<'t, f64>) {
        let (prediction, state) = self.predict(tape, chunk, state, run);
        (chunk.mse(prediction), state)
    }

    /// Every update of one pass over `stream`.
    fn updates(&self, stream: &mut FeatureStream<f64>, strategy: Strategy) -> Vec<Grads<f64>> {
        let mut driver = Bptt::new(strategy, Carry::zeros(&self.lstm, stream.lanes()), 0);
        let mut out = Vec::new();
        while let Some(u) = driver.step(stream, |t, c, st, r| self.loss(t, c, st, r)) {
            out.push(u.grads);
        }
        stream.rewind();
        out
    }

    fn assert_same(&self, a: &Grads<f64>, b: &Grads<f64>, what: &str) {
        for (name, p) in self.params() {
            for (x, y) in a[p].data().iter().zip(b[p].data()) {
                assert!(
                    (x - y).abs() <= 1e-12 * (1.0 + y.abs()),
                    "{what} {name}: {x} vs {y}"
                );
            }
        }
    }
}

/// A stream of feature vectors under the driver, over the whole pass, gives PyTorch's loss and
/// gradients for `F.mse_loss` (the mean over every element) of an LSTM and a readout: whether
/// the target is a series of its own or the next vector, and whether the model sums the error
/// ([`FeatureChunk::mse`]) or takes PyTorch's mean and says so ([`ChunkLoss::averaged`]).
/// Golden values: scripts/golden_feature_stream.py.
#[test]
fn a_feature_stream_under_the_driver_gets_pytorchs_mean_squared_error_gradients() {
    let g = golden::load::<f64>(
        "feature_stream_golden.safetensors",
        "golden_feature_stream.py",
    );
    let (series, targets) = (tensor(&g, "series"), tensor(&g, "targets"));
    for case in ["paired", "next"] {
        let mut model = Forecaster::new();
        let prefix = format!("{case}.param.");
        let weights = g
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n.to_string(), v.clone())))
            .collect();
        load_state_dict(&mut model, &weights).expect("PyTorch's names and shapes");
        let mut stream = match case {
            "paired" => FeatureStream::paired(series.clone(), targets.clone(), 3),
            _ => FeatureStream::next_vector(series.clone(), 3),
        };
        assert_eq!(stream.steps(), if case == "paired" { 9 } else { 8 });
        let by_sum = Bptt::new(Strategy::Full, Carry::zeros(&model.lstm, 3), 0)
            .step(&mut stream, |t, c, st, r| model.loss(t, c, st, r))
            .expect("one pass");
        stream.rewind();
        let by_mean = Bptt::new(Strategy::Full, Carry::zeros(&model.lstm, 3), 0)
            .step(&mut stream, |t, c, st, r| {
                let (prediction, state) = model.predict(t, c, st, r);
                let target = t.constant(c.targets.clone());
                let mean = mse_loss(prediction, target);
                (ChunkLoss::averaged(mean, c.targets.numel()), state)
            })
            .expect("one pass");
        let want_loss = tensor(&g, &format!("{case}.loss")).item();
        for (what, update) in [("summed", &by_sum), ("averaged", &by_mean)] {
            assert!(
                (update.loss - want_loss).abs() <= 1e-12,
                "{case} {what} loss"
            );
            assert_eq!(
                update.targets,
                stream.steps() * 3 * 2,
                "{case} {what}: every element"
            );
            for (name, p) in model.params() {
                let want = tensor(&g, &format!("{case}.grad.{name}"));
                for (x, y) in update.grads[p].data().iter().zip(want.data()) {
                    assert!(
                        (x - y).abs() <= 1e-12,
                        "{case} {what} {name}: {x} vs PyTorch {y}"
                    );
                }
            }
        }
    }
}

/// Over feature vectors as over tokens: TBPTT(k1, k2) counts only its k1 new steps (the
/// replayed ones are context), and checkpointing, of the stacks or of the whole model, changes
/// no gradient of truncation.
#[test]
fn feature_chunks_count_only_their_new_steps_under_every_strategy() {
    let model = Forecaster::new();
    let rows = 3 * 12;
    let series = Tensor::from_vec(
        (0..rows * 2).map(|i| (0.37 * i as f64).sin()).collect(),
        &[rows, 2],
    )
    .unwrap();
    let mut stream = FeatureStream::next_vector(series, 3);
    // TBPTT(2, 5) at steps 6..8 by definition: from the state at step 3, reached without
    // gradient, run 5 steps and average the error of the last 2.
    let overlapping = model.updates(&mut stream, Strategy::Overlapping { k1: 2, k2: 5 });
    let tape = Tape::new();
    let warm = stream.chunk(0, 3);
    let state = model.loss(
        &tape,
        &warm,
        Carry::zeros(&model.lstm, 3).on(&tape),
        &Run::default(),
    );
    let start = Carry::of(state.1);
    let tape = Tape::new();
    let chunk = stream.chunk(3, 5);
    let (prediction, _) = model.predict(&tape, &chunk, start.on(&tape), &Run::default());
    let target = tape.constant(chunk.targets.clone());
    let error = (prediction - target).narrow(0, 3, 2);
    let expected = (error * error).mean().backward();
    model.assert_same(&overlapping[3], &expected, "TBPTT(2, 5)");

    let truncated = model.updates(&mut stream, Strategy::Truncated { k: 4 });
    for every in [Some(1), Some(3), None] {
        for strategy in [
            Strategy::Checkpointed { k: 4, every },
            Strategy::CheckpointedModel { k: 4, every },
        ] {
            let updates = model.updates(&mut stream, strategy);
            assert_eq!(updates.len(), truncated.len());
            for (a, b) in updates.iter().zip(&truncated) {
                model.assert_same(a, b, &format!("{strategy:?}"));
            }
        }
    }
}

/// A feature stream cuts its rows into lanes as the token stream cuts its tokens: lane b holds
/// rows b·L .. (b+1)·L, a chunk is time-major, and the target is the next row of the lane or the
/// target series' row beside the input.
#[test]
fn a_feature_stream_reads_lanes_time_major_with_their_targets() {
    let rows: u32 = 2 * 4;
    let series =
        Tensor::from_vec((0..rows * 2).map(f64::from).collect(), &[rows as usize, 2]).unwrap();
    let labels = Tensor::from_vec(
        (0..rows).map(|r| -f64::from(r)).collect(),
        &[rows as usize, 1],
    )
    .unwrap();
    let mut next = FeatureStream::next_vector(series.clone(), 2);
    assert_eq!((next.lanes(), next.steps()), (2, 3));
    let c = next.take(2).unwrap();
    assert_eq!(c.inputs.shape(), &[2, 2, 2]);
    // Step 0: lane 0 reads row 0, lane 1 row 4; step 1: rows 1 and 5. Targets: one row on.
    assert_eq!(c.inputs.data(), &[0.0, 1.0, 8.0, 9.0, 2.0, 3.0, 10.0, 11.0]);
    assert_eq!(
        c.targets.data(),
        &[2.0, 3.0, 10.0, 11.0, 4.0, 5.0, 12.0, 13.0]
    );
    assert_eq!((c.start, c.context, c.counted()), (0, 0, 0..2));
    let last = next.take(5).unwrap();
    assert_eq!((last.start, last.steps), (2, 1));
    assert!(next.take(1).is_none());

    let mut paired = FeatureStream::paired(series, labels, 2);
    assert_eq!(paired.steps(), 4);
    let c = paired.take(4).unwrap();
    assert_eq!(c.targets.shape(), &[4, 2, 1]);
    assert_eq!(
        c.targets.data(),
        &[0.0, -4.0, -1.0, -5.0, -2.0, -6.0, -3.0, -7.0]
    );
}

/// A character model over any built-in cell, in any precision: embedding, a two-layer stack with
/// a learned initial state, readout. `tests/nn/collective.rs` trains it on several ranks.
pub(crate) struct Tiny<C, F: rewind::autograd::Float> {
    embed: Embedding<F>,
    pub(crate) rnn: rewind::nn::Recurrent<C, F>,
    head: Linear<F>,
}

impl<C: rewind::nn::StandardCell<F> + Sync, F: rewind::autograd::Float> Tiny<C, F> {
    fn new() -> Self {
        Self::seeded(5)
    }

    /// The model drawn from `seed` (h_0 set the same whatever the seed).
    pub(crate) fn seeded(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let config = RecurrentConfig::new(3, 4)
            .num_layers(2)
            .learn_initial_state(true);
        let tiny = Tiny {
            embed: Embedding::init(VOCAB, 3, &mut rng),
            rnn: rewind::nn::Recurrent::init(config, &mut rng),
            head: Linear::init(4, VOCAB, &mut rng),
        };
        // h_0 away from zero, so that where a lane starts shows in every gradient.
        for (name, p) in tiny.rnn.params() {
            if name.ends_with("_0") {
                p.update(|t| {
                    for (i, v) in t.data_mut().iter_mut().enumerate() {
                        *v = F::from_f64(0.3 * (i as f64 + 1.0).sin());
                    }
                });
            }
        }
        tiny
    }

    pub(crate) fn loss<'t>(
        &self,
        tape: &'t Tape<F>,
        chunk: &Chunk,
        state: StackState<'t, F>,
        run: &Run<'_, F>,
    ) -> (ChunkLoss<'t, F>, StackState<'t, F>) {
        let x = self
            .embed
            .forward(tape, &chunk.inputs, &[chunk.steps, chunk.lanes]);
        let out = self.rnn.forward_with(tape, x, Some(state), run);
        let logits = self
            .head
            .forward(tape, out.output)
            .reshape(&[chunk.steps * chunk.lanes, VOCAB]);
        (chunk.cross_entropy(logits), out.state)
    }

    /// Every update of a pass in `shards` shards (`None`: on one tape), with lane 1 reset after
    /// the second update: (loss, gradients, the state carried after it).
    fn pass(&self, strategy: Strategy, shards: Option<usize>) -> Vec<(f64, Grads<F>, Carry<F>)> {
        let mut s = stream();
        let mut driver = Bptt::new(strategy, Carry::zeros(&self.rnn, 3), 9);
        let mut out = Vec::new();
        loop {
            let update = match shards {
                Some(n) => driver.step_sharded(&mut s, n, |t, c, st, r| self.loss(t, c, st, r)),
                None => driver.step(&mut s, |t, c, st, r| self.loss(t, c, st, r)),
            };
            let Some(u) = update else { break };
            out.push((u.loss, u.grads, driver.carry().clone()));
            if out.len() == 2 {
                driver.reset_lane(1);
            }
        }
        out
    }

    /// Sharded passes against the one-tape pass: losses, every gradient (h_0's included) and the
    /// carried states agree to `tolerance`, relative.
    fn assert_sharding_changes_nothing(&self, tolerance: f64) {
        let close = |x: F, y: F| {
            let (x, y) = (x.to_f64(), y.to_f64());
            (x - y).abs() <= tolerance * (1.0 + y.abs())
        };
        for strategy in every_strategy() {
            let whole = self.pass(strategy, None);
            for shards in [1, 2, 3, 5] {
                let sharded = self.pass(strategy, Some(shards));
                assert_eq!(sharded.len(), whole.len(), "{strategy:?}, {shards} shards");
                for (u, ((l1, g1, c1), (l2, g2, c2))) in sharded.iter().zip(&whole).enumerate() {
                    let at = format!("{strategy:?}, {shards} shards, update {u}");
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
                            "{at}"
                        );
                    }
                }
            }
        }
    }
}

impl<C: rewind::nn::StandardCell<F>, F: rewind::autograd::Float> Module<F> for Tiny<C, F> {
    fn params(&self) -> Vec<(String, &Param<F>)> {
        let mut all = nested("embed", self.embed.params());
        all.extend(nested("rnn", self.rnn.params()));
        all.extend(nested("head", self.head.params()));
        all
    }
}

/// The batch cut into shards, each on a tape of its own and on whichever thread is free (more
/// shards than this machine's cores included, and more than lanes), gives the one-tape update:
/// for every built-in cell, under every strategy, with a learned initial state and a lane reset;
/// to 1e-12 in f64 and to f32 rounding in f32.
#[test]
fn a_sharded_update_is_the_one_tape_update_for_every_cell_and_strategy() {
    use rewind::nn::{GruCell, LstmCell, RnnCell};
    Tiny::<RnnCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tiny::<GruCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tiny::<LstmCell<f64>, f64>::new().assert_sharding_changes_nothing(1e-12);
    Tiny::<LstmCell<f32>, f32>::new().assert_sharding_changes_nothing(2e-5);
}

/// Over feature vectors too: the forecaster's sharded updates are its one-tape updates.
#[test]
fn a_sharded_update_over_feature_vectors_is_the_one_tape_update() {
    let model = Forecaster::new();
    let rows = 4 * 10;
    let series = Tensor::from_vec(
        (0..rows * 2).map(|i| (0.23 * i as f64).cos()).collect(),
        &[rows, 2],
    )
    .unwrap();
    for strategy in every_strategy() {
        let mut stream = FeatureStream::next_vector(series.clone(), 4);
        let whole = model.updates(&mut stream, strategy);
        let mut driver = Bptt::new(strategy, Carry::zeros(&model.lstm, 4), 0);
        let mut sharded = Vec::new();
        while let Some(u) =
            driver.step_sharded(&mut stream, 3, |t, c, st, r| model.loss(t, c, st, r))
        {
            sharded.push(u.grads);
        }
        assert_eq!(sharded.len(), whole.len());
        for (a, b) in sharded.iter().zip(&whole) {
            model.assert_same(a, b, &format!("{strategy:?} sharded"));
        }
    }
}

/// A shard's panic reaches the caller with its own message once every thread has stopped: the
/// first failing shard's in shard order, whichever thread ran it. Every lane but lane 0 panics
/// here, so the message must be lane 1's.
#[test]
fn a_panic_in_a_shard_reaches_the_caller_with_its_message() {
    let model = Forecaster::new();
    // 4 lanes of 2 rows; every value of lane b is b.
    let series = Tensor::from_vec((0..16).map(|i| f64::from(i / 4)).collect(), &[8, 2]).unwrap();
    let mut stream = FeatureStream::next_vector(series, 4);
    let mut driver = Bptt::new(Strategy::Full, Carry::zeros(&model.lstm, 4), 0);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        driver.step_sharded(&mut stream, 4, |t, c, st, r| {
            assert!(c.lanes == 1, "the shard's own message");
            let lane = c.inputs.data()[0];
            let (loss, state) = model.loss(t, c, st, r);
            assert!(lane == 0.0, "lane {lane} refuses to go on");
            (loss, state)
        })
    }));
    let payload = caught.expect_err("lanes 1, 2 and 3 panic");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert_eq!(message, "lane 1 refuses to go on");
}
