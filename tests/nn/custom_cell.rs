//! A user's own cell in rewind's machinery: the peephole LSTM of examples/custom_cell, defined
//! outside the crates, checked against its equations written out in plain f64, gradchecked in
//! f64 through a two-layer bidirectional stack with lengths and a learned initial state,
//! checkpointed to the same gradients, and driven through every BPTT strategy.

use crate::peephole::Peephole;
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{
    gradcheck_module, nested, Bptt, Carry, Cell, Chunk, ChunkLoss, Linear, Module, Recurrent,
    RecurrentConfig, Run, State, Strategy, Stream,
};
use rewind::prelude::*;

fn uniform(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn peephole_step_follows_its_equations() {
    let (batch, input, hidden) = (2, 3, 4);
    let cell: Peephole<f64> = Peephole::new(input, hidden, &mut StdRng::seed_from_u64(1));
    let (x, h, c) = (
        uniform(&[batch, input], 2),
        uniform(&[batch, hidden], 3),
        uniform(&[batch, hidden], 4),
    );
    let tape = Tape::new();
    let state = State {
        h: tape.constant(h.clone()),
        c: Some(tape.constant(c.clone())),
    };
    let next = cell.forward(&tape, tape.constant(x.clone()), state);
    let (w_ih, w_hh, b) = (
        cell.weight_ih.value(),
        cell.weight_hh.value(),
        cell.bias.value(),
    );
    let peep = [&cell.w_ci, &cell.w_cf, &cell.w_co].map(|p| p.value().data().to_vec());
    for r in 0..batch {
        for u in 0..hidden {
            // a_k = x W_ihᵀ + b + h W_hhᵀ for gate block k, unit u.
            let a = |k: usize| {
                let row = k * hidden + u;
                let from_x: f64 = (0..input)
                    .map(|j| x.get(&[r, j]) * w_ih.get(&[row, j]))
                    .sum();
                let from_h: f64 = (0..hidden)
                    .map(|j| h.get(&[r, j]) * w_hh.get(&[row, j]))
                    .sum();
                from_x + from_h + b.data()[row]
            };
            let c_prev = c.get(&[r, u]);
            let i = sigmoid(a(0) + peep[0][u] * c_prev);
            let f = sigmoid(a(1) + peep[1][u] * c_prev);
            let g = a(2).tanh();
            let c_next = f * c_prev + i * g;
            let o = sigmoid(a(3) + peep[2][u] * c_next);
            let h_next = o * c_next.tanh();
            let got_c = next.c.unwrap().value().get(&[r, u]);
            let got_h = next.h.value().get(&[r, u]);
            assert!(
                (got_c - c_next).abs() < 1e-14,
                "c' [{r}, {u}]: {got_c} vs {c_next}"
            );
            assert!(
                (got_h - h_next).abs() < 1e-14,
                "h' [{r}, {u}]: {got_h} vs {h_next}"
            );
        }
    }
}

/// A two-layer bidirectional peephole stack with a learned initial state.
fn stack(seed: u64) -> Recurrent<Peephole<f64>, f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = RecurrentConfig::new(3, 4)
        .num_layers(2)
        .bidirectional(true)
        .learn_initial_state(true);
    Recurrent::with_cells(config, |input, hidden| {
        Peephole::new(input, hidden, &mut rng)
    })
}

/// Σ output ⊙ r + Σ h_n ⊙ s + Σ c_n ⊙ q: every output and final state reaches the loss.
fn loss<'t>(
    tape: &'t Tape<f64>,
    model: &Recurrent<Peephole<f64>, f64>,
    run: &Run<'_, f64>,
) -> Var<'t, f64> {
    let x = tape.constant(uniform(&[5, 3, 3], 10));
    let out = model.forward_with(tape, x, None, run);
    let r = tape.constant(uniform(&out.output.shape(), 11));
    let s = tape.constant(uniform(&out.state.h.shape(), 12));
    let q = tape.constant(uniform(&out.state.c.unwrap().shape(), 13));
    (out.output * r).sum() + (out.state.h * s).sum() + (out.state.c.unwrap() * q).sum()
}

#[test]
fn peephole_stack_gradchecks_in_f64_with_lengths_and_both_directions() {
    let mut model = stack(20);
    let lengths = [5, 2, 4];
    let run = Run {
        lengths: Some(&lengths),
        ..Run::default()
    };
    gradcheck_module(&mut model, |tape, m| loss(tape, m, &run)).unwrap();
}

#[test]
fn peephole_stack_gradchecks_in_f64_checkpointed() {
    let mut model = stack(21);
    let run = Run {
        checkpoint_every: Some(2),
        ..Run::default()
    };
    gradcheck_module(&mut model, |tape, m| loss(tape, m, &run)).unwrap();
}

#[test]
fn checkpointed_peephole_stack_gives_the_recorded_gradients() {
    let model = stack(22);
    let lengths = [5, 3, 1];
    let grads = |every: Option<usize>| {
        let tape = Tape::new();
        let run = Run {
            lengths: Some(&lengths),
            checkpoint_every: every,
            ..Run::default()
        };
        loss(&tape, &model, &run).backward()
    };
    let (recorded, checkpointed) = (grads(None), grads(Some(2)));
    for (name, p) in model.params() {
        let (a, b) = (&recorded[p], &checkpointed[p]);
        for (x, y) in a.data().iter().zip(b.data()) {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + x.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn checkpointing_a_peephole_stack_holds_less_memory() {
    let mut rng = StdRng::seed_from_u64(30);
    let config = RecurrentConfig::new(8, 32);
    let model: Recurrent<Peephole> = Recurrent::with_cells(config, |input, hidden| {
        Peephole::new(input, hidden, &mut rng)
    });
    let x = Tensor::uniform(&[400, 4, 8], -1.0, 1.0, &mut rng);
    let peak = |every: Option<usize>| {
        let tape = Tape::new();
        let run = Run {
            checkpoint_every: every,
            ..Run::default()
        };
        let out = model.forward_with(&tape, tape.constant(x.clone()), None, &run);
        out.output.sum().backward();
        tape.stats().peak_bytes
    };
    let (recorded, checkpointed) = (peak(None), peak(Some(20)));
    assert!(
        checkpointed * 4 < recorded,
        "checkpointed peak {checkpointed} bytes against {recorded} recorded"
    );
}

/// Token ids → one-hot rows → the stack → a linear readout over the vocabulary.
struct Tagger {
    rnn: Recurrent<Peephole<f64>, f64>,
    head: Linear<f64>,
    vocab: usize,
}

impl Module<f64> for Tagger {
    fn params(&self) -> Vec<(String, &Param<f64>)> {
        let mut all = nested("rnn", self.rnn.params());
        all.extend(nested("head", self.head.params()));
        all
    }
}

impl Tagger {
    fn loss<'t>(
        &self,
        tape: &'t Tape<f64>,
        chunk: &Chunk,
        state: State<'t, f64>,
        run: &Run<'_, f64>,
    ) -> (ChunkLoss<'t, f64>, State<'t, f64>) {
        let mut x = vec![0.0; chunk.inputs.len() * self.vocab];
        for (i, &id) in chunk.inputs.iter().enumerate() {
            x[i * self.vocab + id] = 1.0;
        }
        let x = Tensor::from_vec(x, &[chunk.steps, chunk.lanes, self.vocab]).unwrap();
        let out = self
            .rnn
            .forward_with(tape, tape.constant(x), Some(state), run);
        let features = out.output.shape()[2];
        let h = out.output.reshape(&[chunk.steps * chunk.lanes, features]);
        (chunk.cross_entropy(self.head.forward(tape, h)), out.state)
    }
}

fn tagger(bidirectional: bool) -> Tagger {
    tagger_with(bidirectional, false)
}

fn tagger_with(bidirectional: bool, learn_initial_state: bool) -> Tagger {
    let mut rng = StdRng::seed_from_u64(40);
    let vocab = 5;
    let config = RecurrentConfig::new(vocab, 6)
        .num_layers(2)
        .bidirectional(bidirectional)
        .learn_initial_state(learn_initial_state);
    let d = if bidirectional { 2 } else { 1 };
    Tagger {
        rnn: Recurrent::with_cells(config, |input, hidden| {
            Peephole::new(input, hidden, &mut rng)
        }),
        head: Linear::init(d * 6, vocab, &mut rng),
        vocab,
    }
}

fn stream() -> Stream {
    let tokens: Vec<usize> = (0..2 * 60).map(|i| (i * i + 3 * i) % 5).collect();
    Stream::new(tokens, 2)
}

/// Every update of one pass over the stream, its loss and the gradient of W_hh of layer 0;
/// with `every`, the stack runs in checkpointed segments of that many steps whatever the
/// strategy asks.
fn pass(model: &Tagger, strategy: Strategy, every: Option<usize>) -> Vec<(f64, Vec<f64>)> {
    let mut stream = stream();
    let mut bptt = Bptt::new(strategy, Carry::zeros(&model.rnn, stream.lanes()), 7);
    let w_hh = model.rnn.cell(0, 0);
    let mut updates = Vec::new();
    while let Some(update) = bptt.step(&mut stream, |tape, chunk, state, run| {
        let run = Run {
            checkpoint_every: every.or(run.checkpoint_every),
            ..*run
        };
        model.loss(tape, chunk, state, &run)
    }) {
        assert!(
            update.loss.is_finite(),
            "{strategy:?}: loss {}",
            update.loss
        );
        let g = update.grads[&w_hh.weight_hh].data().to_vec();
        updates.push((update.loss, g));
    }
    updates
}

#[track_caller]
fn assert_same_updates(a: &[(f64, Vec<f64>)], b: &[(f64, Vec<f64>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: updates");
    for ((la, ga), (lb, gb)) in a.iter().zip(b) {
        assert!((la - lb).abs() < 1e-12, "{what}: loss {la} vs {lb}");
        for (x, y) in ga.iter().zip(gb) {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + x.abs()),
                "{what}: W_hh grad {x} vs {y}"
            );
        }
    }
}

#[test]
fn peephole_stack_runs_through_every_strategy_and_checkpointing_changes_nothing() {
    for bidirectional in [false, true] {
        let model = tagger(bidirectional);
        for strategy in [
            Strategy::Full,
            Strategy::Truncated { k: 7 },
            Strategy::Overlapping { k1: 4, k2: 8 },
            Strategy::Randomized { k: 7, pi: 0.5 },
            Strategy::RandomLength { min: 3, max: 9 },
        ] {
            let recorded = pass(&model, strategy, None);
            assert!(!recorded.is_empty(), "{strategy:?}");
            let checkpointed = pass(&model, strategy, Some(3));
            assert_same_updates(
                &recorded,
                &checkpointed,
                &format!("{strategy:?} checkpointed"),
            );
        }
        let truncated = pass(&model, Strategy::Truncated { k: 12 }, None);
        let checkpointed = pass(&model, Strategy::Checkpointed { k: 12, every: None }, None);
        assert_same_updates(&truncated, &checkpointed, "Checkpointed against Truncated");
        if !bidirectional {
            let segments = pass(
                &model,
                Strategy::CheckpointedModel { k: 12, every: None },
                None,
            );
            assert_same_updates(&truncated, &segments, "CheckpointedModel against Truncated");
        }
    }
}

/// A user's cell gets a learned initial state under the driver as the built-in cells do: every
/// lane of a pass's first update starts from h_0 and c_0 (both layers, both directions), which
/// get a gradient; the next update starts from the carried state and gives them none; a reset
/// lane starts from them again.
#[test]
fn a_peephole_stack_starts_fresh_lanes_from_its_learned_initial_state_under_the_driver() {
    let model = tagger_with(true, true);
    let initial: Vec<&Param<f64>> = model
        .rnn
        .params()
        .into_iter()
        .filter(|(name, _)| name.ends_with("_0"))
        .map(|(_, p)| p)
        .collect();
    assert_eq!(initial.len(), 2, "h_0 and c_0");
    let mut stream = stream();
    let mut bptt = Bptt::new(Strategy::Truncated { k: 7 }, Carry::zeros(&model.rnn, 2), 7);
    let mut update = || {
        bptt.step(&mut stream, |tape, chunk, state, run| {
            model.loss(tape, chunk, state, run)
        })
        .unwrap()
    };
    let reached = |u: &rewind::nn::Update<f64>| {
        initial.iter().all(|p| {
            u.grads
                .get(p)
                .is_some_and(|g| g.data().iter().any(|&v| v != 0.0))
        })
    };
    let untouched = |u: &rewind::nn::Update<f64>| {
        initial.iter().all(|p| {
            u.grads
                .get(p)
                .is_none_or(|g| g.data().iter().all(|&v| v == 0.0))
        })
    };
    assert!(reached(&update()), "the first update starts from h_0");
    assert!(untouched(&update()), "a carried state gives h_0 nothing");
    bptt.reset_lane(0);
    let after_reset = bptt
        .step(&mut stream, |tape, chunk, state, run| {
            model.loss(tape, chunk, state, run)
        })
        .unwrap();
    assert!(reached(&after_reset), "a reset lane starts from h_0 again");
}

/// A user's cell under the sharded driver: each lane on a tape of its own gives the one-tape
/// updates (the loss and W_hh's gradient) under every strategy, both directions, with a learned
/// initial state.
#[test]
fn a_peephole_stack_sharded_by_lane_gives_the_one_tape_updates() {
    for bidirectional in [false, true] {
        let model = tagger_with(bidirectional, true);
        for strategy in [
            Strategy::Full,
            Strategy::Truncated { k: 7 },
            Strategy::Overlapping { k1: 4, k2: 8 },
            Strategy::Randomized { k: 7, pi: 0.5 },
            Strategy::Checkpointed {
                k: 7,
                every: Some(3),
            },
        ] {
            let whole = pass(&model, strategy, None);
            let mut stream = stream();
            let mut bptt = Bptt::new(strategy, Carry::zeros(&model.rnn, stream.lanes()), 7);
            let w_hh = model.rnn.cell(0, 0);
            let mut sharded = Vec::new();
            while let Some(update) = bptt.step_sharded(&mut stream, 2, |tape, chunk, state, run| {
                model.loss(tape, chunk, state, run)
            }) {
                let g = update.grads[&w_hh.weight_hh].data().to_vec();
                sharded.push((update.loss, g));
            }
            assert_same_updates(&sharded, &whole, &format!("{strategy:?} sharded"));
        }
    }
}
