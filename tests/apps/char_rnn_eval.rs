//! char_rnn's `eval` (issue 32): the static figure is the one training reports; dynamic
//! evaluation scores every character before anything is learnt from it, changes nothing with a
//! learning rate of 0, updates the weights by its formula, and a bad input is a one-line error of
//! its kind.

use crate::char_rnn_app as app;

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::char_rnn::{args, scratch_dir, tiny_text, train_args};
use app::checkpoint;
use app::cli::{DynRule, DynamicConfig};
use app::eval::{dynamic_losses, gradient_rms, sequence_losses, Adapt, Scores};
use app::model::CharModel;
use app::train::restore_model;
use app::{run, Error, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::{Carry, Module, Run, Stream};
use rewind::optim::{Optimizer, Sgd};

fn text(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory of this test's own with the tiny text, and a checkpoint trained on it for 30
/// steps in one shard (the same numbers on every machine) with the flags `extra` added; the
/// run's outcome.
fn trained(extra: &[&str]) -> (PathBuf, PathBuf, Outcome) {
    let dir = scratch_dir("rewind-eval");
    let data = tiny_text(&dir);
    let ckpt = dir.join("m.safetensors");
    let defaults = [
        ("--data", text(&data)),
        ("--checkpoint", text(&ckpt)),
        ("--batch", "2"),
        ("--seq-len", "8"),
        ("--hidden", "8"),
        ("--embed", "4"),
        ("--shards", "1"),
        ("--steps", "30"),
        ("--eval-every", "1000000"),
    ];
    let outcome = run(train_args(&defaults, extra)).unwrap();
    (data, ckpt, outcome)
}

fn scores(list: &[&str]) -> Scores {
    match run(args(list)).unwrap() {
        Outcome::Evaluated(s) => s,
        other => panic!("{list:?} gave {other:?}"),
    }
}

fn model(ckpt: &Path) -> CharModel {
    let saved = checkpoint::load(ckpt).unwrap();
    restore_model(&saved.hyper, &saved.vocab, &saved.weights, ckpt).unwrap()
}

fn config(rule: DynRule, lr: f64, decay: f64, segment: usize) -> DynamicConfig {
    DynamicConfig {
        rule,
        lr,
        decay,
        segment,
    }
}

/// The characters of the text at `data`, sorted: a checkpoint's vocabulary.
fn vocab_of(data: &Path) -> Vec<char> {
    let mut v: Vec<char> = fs::read_to_string(data).unwrap().chars().collect();
    v.sort();
    v.dedup();
    v
}

/// `text` as tokens of the vocabulary of the text at `data`.
fn tokens_of(data: &Path, text: &str) -> Vec<usize> {
    let vocab = vocab_of(data);
    text.chars()
        .map(|c| vocab.binary_search(&c).unwrap())
        .collect()
}

/// Each parameter's √MS on the text at `data`: what the RMS rule scales by.
fn rms_of_tiny(model: &CharModel, data: &Path, segment: usize) -> Vec<Tensor> {
    let all = fs::read_to_string(data).unwrap();
    gradient_rms(model, &tokens_of(data, &all).into(), segment)
}

#[test]
fn the_static_figure_is_the_validation_loss_training_reported() {
    // Two layers with dropout between them: eval must score in evaluation mode, as training's
    // evaluation does.
    let (data, ckpt, outcome) = trained(&["--layers", "2", "--dropout", "0.3"]);
    let Outcome::Trained { val_loss, .. } = outcome else {
        panic!("{outcome:?}");
    };
    let s = scores(&["eval", "--checkpoint", text(&ckpt), "--data", text(&data)]);
    assert_eq!(s.static_loss, val_loss);
    assert_eq!(s.dynamic, None, "without --dynamic, no dynamic figure");
    // 1440 characters, 144 held out: all but the first scored.
    assert_eq!(s.chars, 143);
}

/// The losses of `tokens` under dynamic evaluation, for the rule of `d`.
fn adapted(model: &CharModel, tokens: &[usize], d: &DynamicConfig, rms: &[Tensor]) -> Vec<f64> {
    let adapt = match d.rule {
        DynRule::Sgd => Adapt::sgd(d),
        DynRule::Rms => Adapt::rms(d, rms),
    };
    dynamic_losses(model, tokens, &adapt)
}

// The property that makes dynamic evaluation a fair score: the loss of character k depends on
// the characters up to k only. Changing every character after k must leave the losses of
// characters 1..=k bit for bit as they were: at the end of a segment (k = 7, 14), and inside one,
// where learning from a segment before scoring it would show.
#[test]
fn dynamic_evaluation_never_reads_a_character_before_scoring_it() {
    let (data, ckpt, _) = trained(&[]);
    let model = model(&ckpt);
    let vocab = vocab_of(&data).len();
    let mut rng = StdRng::seed_from_u64(7);
    let tokens: Vec<usize> = (0..60).map(|_| rng.random_range(0..vocab)).collect();
    let segment = 7;
    let rms = rms_of_tiny(&model, &data, segment);
    for (rule, lr) in [(DynRule::Sgd, 1.0), (DynRule::Rms, 1e-3)] {
        let d = config(rule, lr, 0.05, segment);
        let whole = adapted(&model, &tokens, &d, &rms);
        assert_eq!(whole.len(), 59);
        let fixed = sequence_losses(&model, &tokens, segment);
        assert!(
            whole.iter().zip(&fixed).any(|(a, f)| (a - f).abs() > 1e-3),
            "{rule:?}: the weights must move for the test to mean anything"
        );
        for k in [1, 3, 6, 7, 8, 10, 14, 15, 20, 33] {
            let mut changed = tokens.clone();
            for t in &mut changed[k + 1..] {
                *t = (*t + rng.random_range(1..vocab)) % vocab;
            }
            let again = adapted(&model, &changed, &d, &rms);
            assert_eq!(
                again[..k],
                whole[..k],
                "{rule:?}: the losses of characters 1..={k} moved when characters after {k} changed"
            );
            assert_ne!(
                again[k..],
                whole[k..],
                "{rule:?}, k = {k}: the change is seen"
            );
        }
    }
}

// With η = 0 the weights stay the trained ones whatever λ is (θ₀ - θ stays 0), so the dynamic
// figure is the unadapted reading's; and a checkpoint trained in one lane with chunks of the
// segment's length is evaluated by training in that same reading, so the static figure matches
// too, up to the order f32 sums are taken in.
#[test]
fn with_a_learning_rate_of_0_the_dynamic_figure_is_the_static_one() {
    let (data, ckpt, _) = trained(&["--batch", "1"]);
    for rule in ["sgd", "rms"] {
        for decay in ["0", "0.5"] {
            let s = scores(&[
                "eval",
                "--checkpoint",
                text(&ckpt),
                "--data",
                text(&data),
                "--dynamic",
                "--rule",
                rule,
                "--dyn-lr",
                "0",
                "--dyn-decay",
                decay,
                "--segment",
                "8",
            ]);
            let d = s.dynamic.unwrap();
            assert_eq!(d.adapted, d.unadapted, "{rule}, λ = {decay}");
            assert!(
                (d.unadapted.all - s.static_loss).abs() < 1e-6,
                "{rule}: {} unadapted, {} static",
                d.unadapted.all,
                s.static_loss
            );
        }
    }
}

/// Character losses from logits by hand, in f64: -log softmax(row)[target].
fn by_hand(logits: &Tensor, targets: &[i64]) -> Vec<f64> {
    let v = logits.shape()[1];
    targets
        .iter()
        .enumerate()
        .map(|(row, &t)| {
            let z: Vec<f64> = logits.data()[row * v..(row + 1) * v]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let max = z.iter().cloned().fold(f64::MIN, f64::max);
            let log_sum = z.iter().map(|x| (x - max).exp()).sum::<f64>().ln() + max;
            log_sum - z[t as usize]
        })
        .collect()
}

/// Dynamic evaluation written out with the library's pieces: score a segment, take the gradient
/// of its mean loss, then `update(model, grads, θ₀)`.
fn reference(
    model: &mut CharModel,
    tokens: &[usize],
    segment: usize,
    update: &mut dyn FnMut(&mut CharModel, &rewind::autograd::Grads, &[Tensor]),
) -> Vec<f64> {
    let trained: Vec<Tensor> = model.params().iter().map(|(_, p)| p.value()).collect();
    model.set_training(false);
    let mut stream = Stream::new(tokens.to_vec(), 1);
    let mut carry: Carry = model.zero_carry(1);
    let mut losses = Vec::new();
    while let Some(chunk) = stream.take(segment) {
        let tape = Tape::new();
        let state = carry.on(&tape);
        let (logits, state) =
            model.logits(&tape, &chunk.inputs, chunk.steps, 1, state, &Run::default());
        losses.extend(by_hand(&logits.value(), &chunk.targets));
        carry = Carry::of(state);
        let grads = chunk.cross_entropy(logits).mean().backward();
        update(model, &grads, &trained);
    }
    for ((_, p), t) in model.params().into_iter().zip(trained) {
        p.set(t);
    }
    losses
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5, "character {}: {g} against {w}", i + 1);
    }
}

// θ ← θ - η·g + λ·(θ₀ - θ), over three segments of 6: the gradient step by the library's SGD
// optimizer, the decay toward θ₀ added by hand from the weights before the step.
#[test]
fn the_sgd_rule_is_an_sgd_step_plus_the_decay_toward_the_trained_weights() {
    let (data, ckpt, _) = trained(&[]);
    let mut model = model(&ckpt);
    let tokens = tokens_of(&data, "the cat sat on the log. the dog");
    let (lr, decay, segment) = (0.5, 0.2, 6);
    let got = dynamic_losses(
        &model,
        &tokens,
        &Adapt::sgd(&config(DynRule::Sgd, lr, decay, segment)),
    );
    let mut sgd = Sgd::new(lr);
    let want = reference(&mut model, &tokens, segment, &mut |m, grads, trained| {
        let before: Vec<Tensor> = m.params().iter().map(|(_, p)| p.value()).collect();
        sgd.step(m, grads);
        for (((_, p), theta), theta0) in m.params().into_iter().zip(before).zip(trained) {
            let stepped = p.value();
            let data = stepped
                .data()
                .iter()
                .zip(theta.data())
                .zip(theta0.data())
                .map(|((s, t), t0)| s + decay as f32 * (t0 - t))
                .collect();
            p.set(Tensor::from_vec(data, stepped.shape()).unwrap());
        }
    });
    assert_close(&got, &want);
    let fixed = sequence_losses(&model, &tokens, segment);
    assert_close(&got[..segment], &fixed[..segment]);
    assert!(
        got[segment..]
            .iter()
            .zip(&fixed[segment..])
            .any(|(g, f)| (g - f).abs() > 1e-3),
        "the updates change the later segments' losses"
    );
}

// θ ← θ - η·g/(√MS + ε) + λ·(θ₀ - θ)·min(√MS / mean √MS, 1/λ), element by element in f64.
#[test]
fn the_rms_rule_scales_each_weight_by_its_gradient_rms() {
    let (data, ckpt, _) = trained(&[]);
    let mut model = model(&ckpt);
    let tokens = tokens_of(&data, "the cat sat on the log. the dog");
    let (lr, decay, segment) = (1e-3, 0.2, 6);
    let rms = rms_of_tiny(&model, &data, segment);
    let got = dynamic_losses(
        &model,
        &tokens,
        &Adapt::rms(&config(DynRule::Rms, lr, decay, segment), &rms),
    );
    let all: Vec<f64> = rms
        .iter()
        .flat_map(|t| t.data().iter().map(|&r| r as f64))
        .collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    let want = reference(&mut model, &tokens, segment, &mut |m, grads, trained| {
        for (((_, p), theta0), r) in m.params().into_iter().zip(trained).zip(&rms) {
            let theta = p.value();
            let g = grads.get(p).unwrap();
            let data = (0..theta.numel())
                .map(|j| {
                    let (t, t0, r) = (
                        theta.data()[j] as f64,
                        theta0.data()[j] as f64,
                        r.data()[j] as f64,
                    );
                    let scaled = lr * g.data()[j] as f64 / (r + 2e-5);
                    let pull = decay * (t0 - t) * (r / mean).min(1.0 / decay);
                    (t - scaled + pull) as f32
                })
                .collect();
            p.set(Tensor::from_vec(data, theta.shape()).unwrap());
        }
    });
    assert_close(&got, &want);
}

fn one_line_error(list: &[&str]) -> Error {
    let e = run(args(list)).expect_err("eval must fail");
    assert_eq!(e.to_string().lines().count(), 1, "{list:?}: {e}");
    e
}

#[test]
fn bad_inputs_to_eval_are_one_line_errors_of_their_kind() {
    let (data, ckpt, _) = trained(&[]);
    let dir = data.parent().unwrap();
    let (ckpt, data) = (text(&ckpt), text(&data));
    let missing = dir.join("missing.safetensors");
    let e = one_line_error(&["eval", "--checkpoint", text(&missing), "--data", data]);
    assert!(matches!(e, Error::Checkpoint(_)), "{e:?}");
    assert!(e.to_string().contains("missing.safetensors"), "{e}");

    // A text the checkpoint has no token for.
    let other = dir.join("other.txt");
    fs::write(&other, "the Zebra sat on the mat. ".repeat(10)).unwrap();
    let e = one_line_error(&["eval", "--checkpoint", ckpt, "--data", text(&other)]);
    assert!(matches!(e, Error::Data(_)), "{e:?}");
    assert!(e.to_string().contains("'Z'"), "{e}");

    let dynamic = ["eval", "--checkpoint", ckpt, "--data", data, "--dynamic"];
    for (flags, says) in [
        (&["--segment", "0"][..], "--segment"),
        (&["--dyn-lr", "-1"], "--dyn-lr -1"),
        (&["--dyn-lr", "NaN"], "--dyn-lr NaN"),
        (&["--dyn-decay", "-0.5"], "--dyn-decay -0.5"),
        (&["--dyn-decay", "2"], "--dyn-decay 2"),
        (&["--limit", "1"], "--limit"),
    ] {
        let e = one_line_error(&[&dynamic[..], flags].concat());
        assert!(matches!(e, Error::Usage(_)), "{flags:?}: {e:?}");
        assert!(e.to_string().contains(says), "{flags:?}: {e}");
    }
    // Dynamic settings without --dynamic would be silently ignored.
    for flag in ["--rule", "--dyn-lr", "--dyn-decay", "--segment"] {
        let value = if flag == "--rule" { "sgd" } else { "1" };
        let e = one_line_error(&["eval", "--checkpoint", ckpt, flag, value]);
        assert!(matches!(e, Error::Usage(_)), "{flag}: {e:?}");
        let says = format!("{flag} is a setting of dynamic evaluation: add --dynamic");
        assert!(e.to_string().starts_with(&says), "{e}");
    }
}
