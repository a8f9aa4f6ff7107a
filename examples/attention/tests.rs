//! The attention example through the code its binary runs: one step follows the equations of
//! additive and scaled dot-product attention; the loss at step t never depends on a later input,
//! within a chunk or across a carried chunk boundary; the window carried between chunks gives
//! the values of one long chunk, by hand and through the BPTT driver, and checkpointed segments
//! its gradients; the weights are a
//! distribution over the filled slots and zero where nothing is filled; the attentive cell and
//! the whole model pass gradcheck in f64; bad flags are one-line errors.

use crate::app;

use std::fs;
use std::path::{Path, PathBuf};

use app::cell::{Attending, Attentive, Kind, Score, Window};
use app::model::{AttentionLm, LmCarry, Shape};
use app::{run, Error, Outcome};
use rewind::autograd::rand::rngs::StdRng;
use rewind::autograd::rand::SeedableRng;
use rewind::nn::{
    gradcheck_module, Bptt, Cell, CellState, ModelState, Module, Recurrent, RecurrentConfig, Run,
    Strategy, Stream,
};
use rewind::prelude::*;

const KINDS: [Kind; 2] = [Kind::Additive, Kind::Dot];

fn uniform(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, &mut StdRng::seed_from_u64(seed))
}

/// A tiny model in f64: 5 characters, H = 4, two layers, keys of 3 features.
fn tiny(kind: Kind, window: usize, seed: u64) -> AttentionLm<f64> {
    let shape = Shape {
        kind,
        vocab: 5,
        hidden: 4,
        layers: 2,
        window,
        key: 3,
    };
    AttentionLm::new(shape, &mut StdRng::seed_from_u64(seed))
}

/// Rows `start..start + len` of a time-major [T, B, ·] tensor.
fn steps(x: &Tensor<f64>, start: usize, len: usize) -> Tensor<f64> {
    let row = x.numel() / x.shape()[0];
    let mut shape = x.shape().to_vec();
    shape[0] = len;
    Tensor::from_vec(x.data()[start * row..(start + len) * row].to_vec(), &shape).unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn softmax(e: &[f64]) -> Vec<f64> {
    let m = e.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = e.iter().map(|v| (v - m).exp()).sum();
    e.iter().map(|v| (v - m).exp() / z).collect()
}

/// y = x Wᵀ for one row x and a weight W [out, in].
fn linear(w: &Tensor<f64>, x: &[f64]) -> Vec<f64> {
    let (out, inp) = (w.shape()[0], w.shape()[1]);
    (0..out)
        .map(|o| (0..inp).map(|i| w.get(&[o, i]) * x[i]).sum())
        .collect()
}

#[test]
fn one_step_follows_the_attention_equations() {
    let (batch, input, hidden, w, key) = (2, 3, 4, 4, 3);
    for kind in KINDS {
        let cell: Attentive<f64> =
            Attentive::new(kind, input, hidden, w, key, &mut StdRng::seed_from_u64(1));
        let tape = Tape::new();
        // Lane 0 has every slot filled; lane 1 only the last two (its stream is two steps old).
        let filled = Tensor::from_vec(vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0], &[2, 4]);
        let (values, keys) = (
            uniform(&[batch, w, hidden], 2),
            uniform(&[batch, w, key], 3),
        );
        let state = Attending {
            out: tape.constant(uniform(&[batch, hidden], 4)),
            h: tape.constant(uniform(&[batch, hidden], 5)),
            c: tape.constant(uniform(&[batch, hidden], 6)),
            window: Some(Window {
                values: tape.constant(values.clone()),
                keys: tape.constant(keys.clone()),
                filled: tape.constant(filled.unwrap()),
            }),
        };
        let x = tape.constant(uniform(&[batch, input], 7));
        let (next, alpha) = cell.step_with_weights(&tape, cell.project(&tape, x), state);
        let alpha = alpha.unwrap().value();
        let attention = cell.attention.as_ref().unwrap();
        let (w_q, w_k) = (attention.w_q.value(), attention.w_k.value());
        let (w_c, b_c) = (cell.w_c.value(), cell.b_c.value());
        let h = next.h.value();
        for b in 0..batch {
            let h_b = &h.data()[b * hidden..(b + 1) * hidden];
            let q = linear(&w_q, h_b);
            let first = if b == 0 { 0 } else { 2 };
            let e: Vec<f64> = (first..w)
                .map(|j| {
                    let k = &keys.data()[(b * w + j) * key..(b * w + j + 1) * key];
                    match &attention.score {
                        Score::Additive { v } => {
                            let v = v.value();
                            (0..key).map(|a| v.data()[a] * (q[a] + k[a]).tanh()).sum()
                        }
                        Score::Dot => {
                            (0..key).map(|a| q[a] * k[a]).sum::<f64>() / (key as f64).sqrt()
                        }
                    }
                })
                .collect();
            let mut expected = vec![0.0; first];
            expected.extend(softmax(&e));
            let got = &alpha.data()[b * w..(b + 1) * w];
            assert!(
                max_abs_diff(got, &expected) < 1e-14,
                "{kind:?} α lane {b}: {got:?} vs {expected:?}"
            );
            assert!(
                got[..first].iter().all(|&a| a == 0.0),
                "{kind:?}: unfilled slots weigh {got:?}"
            );

            let context: Vec<f64> = (0..hidden)
                .map(|u| (0..w).map(|j| expected[j] * values.get(&[b, j, u])).sum())
                .collect();
            let read: Vec<f64> = h_b.iter().chain(&context).copied().collect();
            let out: Vec<f64> = linear(&w_c, &read)
                .iter()
                .zip(b_c.data())
                .map(|(a, bias)| (a + bias).tanh())
                .collect();
            let got = next.out.value().data()[b * hidden..(b + 1) * hidden].to_vec();
            assert!(max_abs_diff(&got, &out) < 1e-14, "{kind:?} out lane {b}");

            // The window moved on by one: the oldest slot dropped, h_t and its key the newest.
            let window = next.window.unwrap();
            let slots = window.values.value();
            for j in 0..w - 1 {
                for u in 0..hidden {
                    assert_eq!(slots.get(&[b, j, u]), values.get(&[b, j + 1, u]));
                }
            }
            let newest: Vec<f64> = (0..hidden).map(|u| slots.get(&[b, w - 1, u])).collect();
            assert_eq!(newest, h_b);
            let key_t: Vec<f64> = (0..key)
                .map(|a| window.keys.value().get(&[b, w - 1, a]))
                .collect();
            assert!(max_abs_diff(&key_t, &linear(&w_k, h_b)) < 1e-14);
            let mask = window.filled.value();
            let expected_mask = if b == 0 {
                [1.0; 4]
            } else {
                [0.0, 1.0, 1.0, 1.0]
            };
            assert_eq!(&mask.data()[b * w..(b + 1) * w], &expected_mask);
        }
    }
}

#[test]
fn weights_sum_to_one_over_filled_slots_and_are_zero_before_any() {
    let (batch, w) = (2, 4);
    for kind in KINDS {
        let cell: Attentive<f64> = Attentive::new(kind, 3, 4, w, 3, &mut StdRng::seed_from_u64(8));
        let tape = Tape::new();
        let mut state = cell.zero_state(&tape, batch);
        for t in 0..7 {
            let x = tape.constant(uniform(&[batch, 3], 10 + t as u64));
            let (next, alpha) = cell.step_with_weights(&tape, cell.project(&tape, x), state);
            let alpha = alpha.unwrap().value();
            let filled = t.min(w);
            for b in 0..batch {
                let row = &alpha.data()[b * w..(b + 1) * w];
                assert!(
                    row[..w - filled].iter().all(|&a| a == 0.0),
                    "{kind:?} step {t}: unfilled slots weigh {row:?}"
                );
                let total: f64 = row.iter().sum();
                let expected = if filled == 0 { 0.0 } else { 1.0 };
                assert!(
                    (total - expected).abs() < 1e-12,
                    "{kind:?} step {t}: Σα = {total}"
                );
                assert!(row[w - filled..].iter().all(|&a| a > 0.0));
            }
            state = next;
        }
    }
}

#[test]
fn a_reset_lane_starts_with_an_empty_window() {
    for kind in KINDS {
        let model = tiny(kind, 3, 12);
        let tape = Tape::new();
        let x = tape.constant(uniform(&[5, 2, 4], 13));
        let (_, state) = model.logits(&tape, x, model.zero_carry(2).on(&tape), &Run::default());
        let mut carry = LmCarry::of(state);
        carry.reset_lane(1);

        let tape = Tape::new();
        let cell = model.top.cell(0, 0);
        let state = carry.on(&tape).top.map(|part| part.select(0, 0));
        let xp = cell.project(&tape, tape.constant(uniform(&[2, 4], 14)));
        let (_, alpha) = cell.step_with_weights(&tape, xp, state);
        let alpha = alpha.unwrap().value();
        let lane = |b: usize| alpha.data()[b * 3..(b + 1) * 3].to_vec();
        assert!((lane(0).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(lane(1), [0.0; 3], "{kind:?}: the reset lane still attends");
    }
}

/// ∂L_t/∂x_s for the inputs `x` [T, B, H] of a model started from `carry`, where L_t reads the
/// logits of step t only: one [T·B·H] gradient per t.
fn input_grads(model: &AttentionLm<f64>, carry: &LmCarry<f64>, x: &Tensor<f64>) -> Vec<Vec<f64>> {
    let (steps, batch) = (x.shape()[0], x.shape()[1]);
    (0..steps)
        .map(|t| {
            let tape = Tape::new();
            let xv = tape.var(x.clone());
            let (logits, _) = model.logits(&tape, xv, carry.on(&tape), &Run::default());
            let r = tape.constant(uniform(&[batch, 5], 20 + t as u64));
            let loss = (logits.narrow(0, t * batch, batch) * r).sum();
            loss.backward().wrt(xv).unwrap().data().to_vec()
        })
        .collect()
}

/// Every row of a later input has exactly zero gradient; every earlier or current one has some.
fn assert_causal(grads: &[Vec<f64>], what: &str) {
    let steps = grads.len();
    for (t, g) in grads.iter().enumerate() {
        let row = g.len() / steps;
        for s in 0..steps {
            let part = &g[s * row..(s + 1) * row];
            if s > t {
                assert!(
                    part.iter().all(|&v| v == 0.0),
                    "{what}: ∂L_{t}/∂x_{s} = {part:?}"
                );
            } else {
                assert!(
                    part.iter().any(|&v| v != 0.0),
                    "{what}: ∂L_{t}/∂x_{s} is zero"
                );
            }
        }
    }
}

#[test]
fn the_loss_at_step_t_has_zero_gradient_from_later_inputs() {
    for kind in [Kind::None, Kind::Additive, Kind::Dot] {
        let model = tiny(kind, 3, 30);
        let x = uniform(&[7, 2, 4], 31);
        assert_causal(
            &input_grads(&model, &model.zero_carry(2), &x),
            &format!("{kind:?}"),
        );
    }
}

#[test]
fn the_loss_stays_causal_after_a_carried_chunk_boundary() {
    // W = 6 outlasts the first chunk's 4 steps: the second chunk's window holds states of both.
    for kind in KINDS {
        let model = tiny(kind, 6, 32);
        let tape = Tape::new();
        let first = tape.constant(uniform(&[4, 2, 4], 33));
        let (_, state) = model.logits(&tape, first, model.zero_carry(2).on(&tape), &Run::default());
        let carry = LmCarry::of(state);
        let filled = carry.top.parts()[5].clone();
        assert_eq!(
            filled.data().iter().sum::<f64>(),
            2.0 * 4.0,
            "4 of 6 slots per lane"
        );

        let x = uniform(&[5, 2, 4], 34);
        assert_causal(
            &input_grads(&model, &carry, &x),
            &format!("{kind:?} after a boundary"),
        );
    }
}

/// The logits of `x` [T, B, H] read in pieces of the given lengths, the state carried (and
/// detached) between them.
fn logits_in_pieces(model: &AttentionLm<f64>, x: &Tensor<f64>, pieces: &[usize]) -> Vec<f64> {
    let mut carry = model.zero_carry(x.shape()[1]);
    let (mut start, mut all) = (0, Vec::new());
    for &len in pieces {
        let tape = Tape::new();
        let xv = tape.constant(steps(x, start, len));
        let (logits, state) = model.logits(&tape, xv, carry.on(&tape), &Run::default());
        all.extend_from_slice(logits.value().data());
        carry = LmCarry::of(state);
        start += len;
    }
    all
}

#[test]
fn a_window_carried_across_chunks_gives_the_values_of_one_chunk() {
    let x = uniform(&[12, 2, 4], 40);
    for kind in KINDS {
        for window in [1, 4, 8] {
            let model = tiny(kind, window, 41);
            let whole = logits_in_pieces(&model, &x, &[12]);
            for pieces in [&[5, 7][..], &[3, 3, 3, 3], &[1, 10, 1]] {
                let cut = logits_in_pieces(&model, &x, pieces);
                let diff = max_abs_diff(&whole, &cut);
                assert!(
                    diff < 1e-12,
                    "{kind:?} W = {window} in {pieces:?}: {diff:e}"
                );
            }
        }
    }
}

#[test]
fn truncated_bptt_through_the_driver_measures_the_loss_of_full_bptt() {
    let tokens: Vec<usize> = (0..60).map(|i| (i * i + 3 * i) % 5).collect();
    for kind in KINDS {
        let model = tiny(kind, 8, 42);
        let total = |strategy: Strategy| {
            let mut stream = Stream::new(tokens.clone(), 2);
            let mut driver = Bptt::new(strategy, model.zero_carry(2), 0);
            let mut nats = 0.0;
            while let Some(u) = driver.step(&mut stream, |tape, chunk, state, run| {
                model.loss(tape, chunk, state, run)
            }) {
                nats += u.loss * u.targets as f64;
            }
            nats
        };
        let (full, truncated) = (total(Strategy::Full), total(Strategy::Truncated { k: 5 }));
        assert!(
            (full - truncated).abs() < 1e-10,
            "{kind:?}: {full} vs {truncated}"
        );
    }
}

#[test]
fn checkpointed_segments_give_the_gradients_of_truncated_bptt() {
    let tokens: Vec<usize> = (0..40).map(|i| (i * 7 + i / 4) % 5).collect();
    for kind in KINDS {
        let model = tiny(kind, 4, 43);
        let updates = |strategy: Strategy| {
            let mut stream = Stream::new(tokens.clone(), 2);
            let mut driver = Bptt::new(strategy, model.zero_carry(2), 0);
            let mut all = Vec::new();
            while let Some(u) = driver.step(&mut stream, |tape, chunk, state, run| {
                model.loss(tape, chunk, state, run)
            }) {
                let grads: Vec<f64> = model
                    .params()
                    .iter()
                    // The last chunk is one step long: it never reads the key it makes, so W_k
                    // gets no gradient there.
                    .flat_map(|(_, p)| {
                        u.grads
                            .get(p)
                            .map_or_else(|| vec![0.0; p.value().numel()], |g| g.data().to_vec())
                    })
                    .collect();
                all.push((u.loss, grads));
            }
            all
        };
        let plain = updates(Strategy::Truncated { k: 6 });
        for strategy in [
            Strategy::Checkpointed {
                k: 6,
                every: Some(2),
            },
            Strategy::CheckpointedModel {
                k: 6,
                every: Some(2),
            },
        ] {
            let checkpointed = updates(strategy);
            assert_eq!(plain.len(), checkpointed.len());
            for ((loss, grads), (loss_c, grads_c)) in plain.iter().zip(&checkpointed) {
                assert!(
                    (loss - loss_c).abs() < 1e-12,
                    "{kind:?} {strategy:?}: {loss} vs {loss_c}"
                );
                let diff = max_abs_diff(grads, grads_c);
                assert!(
                    diff < 1e-12,
                    "{kind:?} {strategy:?}: gradients differ by {diff:e}"
                );
            }
        }
    }
}

#[test]
fn the_attentive_cell_gradchecks_in_f64_from_an_empty_and_a_partly_filled_window() {
    for kind in KINDS {
        let mut rng = StdRng::seed_from_u64(50);
        let mut stack = Recurrent::with_cells(RecurrentConfig::new(3, 4), |input, hidden| {
            Attentive::<f64>::new(kind, input, hidden, 3, 2, &mut rng)
        });
        // Lane 0 starts its stream here (nothing to attend to at its first step), lane 1 has
        // seen two steps: [layers, B, ·] each.
        let filled = Tensor::from_vec(vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0], &[1, 2, 3]).unwrap();
        gradcheck_module(&mut stack, |tape, m| {
            let initial = Attending::from_parts(&[
                tape.constant(uniform(&[1, 2, 4], 51)),
                tape.constant(uniform(&[1, 2, 4], 52)),
                tape.constant(uniform(&[1, 2, 4], 53)),
                tape.constant(uniform(&[1, 2, 3, 4], 54)),
                tape.constant(uniform(&[1, 2, 3, 2], 55)),
                tape.constant(filled.clone()),
            ]);
            let x = tape.constant(uniform(&[5, 2, 3], 56));
            let out = m.forward(tape, x, Some(initial), None);
            let r = tape.constant(uniform(&out.output.shape(), 57));
            let s = tape.constant(uniform(&[1, 2, 3, 4], 58));
            (out.output * r).sum() + (out.state.window.unwrap().values * s).sum()
        })
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

#[test]
fn the_whole_model_gradchecks_in_f64_over_two_chunks() {
    let tokens: Vec<usize> = (0..14).map(|i| (3 * i + i / 3) % 5).collect();
    let mut stream = Stream::new(tokens, 2);
    let (first, second) = (stream.take(3).unwrap(), stream.take(3).unwrap());
    for kind in KINDS {
        let mut model = tiny(kind, 4, 60);
        // The first chunk's state is carried as values: the gradient is that of the second
        // chunk alone, through a window that holds the first chunk's states.
        let carry = {
            let tape = Tape::new();
            let start = model.zero_carry(2).on(&tape);
            LmCarry::of(model.loss(&tape, &first, start, &Run::default()).1)
        };
        gradcheck_module(&mut model, |tape, m| {
            m.loss(tape, &second, carry.on(tape), &Run::default())
                .0
                .sum()
        })
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    }
}

/// A directory of this test's own (tests run in parallel).
fn scratch() -> PathBuf {
    let test = std::thread::current()
        .name()
        .unwrap_or("main")
        .replace("::", "-");
    let dir = std::env::temp_dir().join(format!("rewind-attention-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A text of `lines` short lines.
fn text(dir: &Path, lines: usize) -> PathBuf {
    let path = dir.join("text.txt");
    let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
    let body: String = (0..lines)
        .map(|i| {
            let line: Vec<&str> = (0..6)
                .map(|k| words[(i * 5 + k * 3) % words.len()])
                .collect();
            format!("{}\n", line.join(" "))
        })
        .collect();
    fs::write(&path, body).unwrap();
    path
}

fn run_with(data: &Path, extra: &[&str]) -> Result<Outcome, Error> {
    let base = ["attention", "--data", data.to_str().unwrap()];
    run(base.iter().chain(extra))
}

#[test]
fn a_tiny_run_trains_measures_and_draws_the_attention() {
    let dir = scratch();
    let data = text(&dir, 400);
    let svg = dir.join("map.svg");
    let tiny = [
        "--hidden",
        "6",
        "--key-size",
        "3",
        "--window",
        "5",
        "--lanes",
        "4",
        "--chunk",
        "8",
        "--updates",
        "3",
    ];
    let outcome = run_with(
        &data,
        &[&tiny[..], &["--svg", svg.to_str().unwrap()]].concat(),
    );
    let Ok(Outcome::Trained(summary)) = outcome else {
        panic!("expected a trained run, got {outcome:?}");
    };
    assert_eq!(
        (summary.attention, summary.window, summary.updates),
        (Kind::Additive, 5, 3)
    );
    assert!(summary.best_val.is_finite() && summary.best_val > 0.0);
    let drawn = fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert!(drawn.contains("additive attention over the last 5 states, after 3 updates"));
    assert!(
        drawn.matches("<rect").count() > 5 * 20,
        "a row of 5 cells per character"
    );

    let outcome = run_with(&data, &[&tiny[..], &["--attention", "none"]].concat());
    let Ok(Outcome::Trained(baseline)) = outcome else {
        panic!("expected a trained run, got {outcome:?}");
    };
    assert!(baseline.params < summary.params);
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = scratch();
    let good = text(&dir, 400);
    let missing = dir.join("missing.txt");
    let short = dir.join("short.txt");
    fs::write(&short, "to be\n").unwrap();
    let elsewhere = dir.join("no-such-dir").join("map.svg");
    let cases: Vec<(Result<Outcome, Error>, &str)> = vec![
        (run_with(&missing, &[]), "cannot read"),
        (run_with(&short, &[]), "--lanes 32 needs at least"),
        (
            run_with(&good, &["--attention", "soft"]),
            "invalid value 'soft'",
        ),
        (
            run_with(&good, &["--window", "0"]),
            "--window must be at least 1",
        ),
        (run_with(&good, &["--window", "-3"]), "invalid value '-3'"),
        (
            run_with(&good, &["--hidden", "many"]),
            "invalid value 'many'",
        ),
        (
            run_with(&good, &["--minutes", "-1"]),
            "--minutes must be a positive number",
        ),
        (
            run_with(&good, &["--lr", "NaN"]),
            "--lr must be a positive number",
        ),
        (
            run_with(&good, &["--attention", "none", "--svg", "a.svg"]),
            "needs --attention additive or dot",
        ),
        (
            run_with(&good, &["--svg", elsewhere.to_str().unwrap()]),
            "its directory does not exist",
        ),
        (run_with(&good, &["--frobnicate"]), "unexpected argument"),
    ];
    for (result, expected) in cases {
        let message = match result {
            Err(e) => e.to_string(),
            Ok(o) => panic!("expected an error containing {expected:?}, got {o:?}"),
        };
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert!(!message.contains('\n'), "more than one line: {message:?}");
    }
}
