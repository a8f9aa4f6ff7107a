//! char_rnn's connectivity view (issue 32, item 3): for the prediction at position t, the
//! gradient of its loss with respect to each character's input agrees with central differences
//! for LSTM, GRU and RNN checkpoints and is exactly 0 for every later character;
//! `char_rnn connectivity` draws one strip per prediction and refuses bad input in one line.

use crate::char_rnn_app as app;

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::char_rnn::{args, binary, scratch_dir, tiny_text, train_args};
use app::connectivity::{self, Strip};
use app::data::Corpus;
use app::model::CharModel;
use app::{run, Error, Outcome};
use rewind::autograd::io::{load_tensors, save_tensors};
use rewind::autograd::{Tape, Tensor};
use rewind::nn::Run;

/// The text every test reads: all its characters are in the tiny text's vocabulary.
const TEXT: &str = "the dog sat on the mat.";

/// A directory of this test's own.
fn scratch() -> PathBuf {
    scratch_dir("rewind-connectivity")
}

/// A checkpoint of `cell` trained for 40 steps on the tiny text, in one shard, with the flags
/// `extra` added: a model whose gradients are no longer those of its initialisation.
fn trained(dir: &Path, cell: &str, extra: &[&str]) -> PathBuf {
    let data = tiny_text(dir);
    let ckpt = dir.join(format!("{cell}.safetensors"));
    let defaults = [
        ("--data", data.to_str().unwrap()),
        ("--checkpoint", ckpt.to_str().unwrap()),
        ("--cell", cell),
        ("--steps", "40"),
        ("--lr", "1e-2"),
        ("--batch", "4"),
        ("--seq-len", "16"),
        ("--hidden", "16"),
        ("--embed", "8"),
        ("--shards", "1"),
        ("--eval-every", "1000000"),
    ];
    run(train_args(&defaults, extra)).unwrap();
    ckpt
}

/// The model saved at `ckpt`, and the tokens of [`TEXT`] in its vocabulary.
fn restored(ckpt: &Path) -> (CharModel, Vec<usize>) {
    let saved = app::checkpoint::load(ckpt).unwrap();
    let model =
        app::train::restore_model(&saved.hyper, &saved.vocab, &saved.weights, ckpt).unwrap();
    (model, Corpus::encode(&saved.vocab, TEXT).unwrap())
}

/// The three cells, each as a checkpoint of its own: the LSTM in two layers, the RNN reading
/// one-hot vectors (no embedding), so that a stack and both kinds of input are covered.
fn checkpoints(dir: &Path) -> [(&'static str, PathBuf); 3] {
    [
        ("lstm", trained(dir, "lstm", &["--layers", "2"])),
        ("gru", trained(dir, "gru", &[])),
        ("rnn", trained(dir, "rnn", &["--embed", "0"])),
    ]
}

/// loss_t for each t of `at`, by its definition: the cross-entropy of character t + 1 under the
/// logits at t, the stack reading `x` [T, 1, E] in one lane from a zero state, without dropout.
fn losses(model: &CharModel, x: &Tensor, tokens: &[usize], at: &[usize]) -> Vec<f32> {
    let tape = Tape::new();
    model.set_training(false);
    let state = model.zero_carry(1).on(&tape);
    let x = tape.constant(x.clone());
    let (logits, _) = model.logits_of(&tape, x, tokens.len(), 1, state, &Run::default());
    model.set_training(true);
    at.iter()
        .map(|&t| {
            logits
                .narrow(0, t, 1)
                .cross_entropy(&[tokens[t + 1]])
                .item()
        })
        .collect()
}

// Central differences of the f32 model with h = 1e-2: the truncation error (h²/6)·∂³loss is about
// 1e-5, and rounding the loss (about 2 nats, an ulp of 2.4e-7, a few ulps after a forward pass) over
// 2h about 1e-4 at worst; these checkpoints' differences miss backward by at most 5e-5. 2e-4 plus
// 1% of the gradient bounds that, far below what a wrong gradient misses by (the norms compared
// are from 1e-3 to 1).
const H: f32 = 1e-2;
const ATOL: f64 = 2e-4;
const RTOL: f64 = 1e-2;

#[test]
fn the_gradient_of_each_loss_matches_central_differences_for_every_cell() {
    let dir = scratch();
    for (cell, ckpt) in checkpoints(&dir) {
        let (model, tokens) = restored(&ckpt);
        let at: Vec<usize> = (0..tokens.len() - 1).collect();
        let x = connectivity::inputs(&model, &tokens);
        let found = connectivity::gradients(&model, &x, &tokens, &at).unwrap();
        let strips = connectivity::strips(&model, &tokens, &at).unwrap();
        let reported: Vec<f32> = found.iter().map(|&(loss, _)| loss).collect();
        assert_eq!(reported, losses(&model, &x, &tokens, &at), "{cell}");
        let width = x.shape()[2];
        let (mut plus, mut minus) = (x.clone(), x.clone());
        let mut compared = 0;
        for s in 0..tokens.len() {
            // The central difference of every loss at once, coordinate by coordinate of x_s.
            let mut numeric = vec![vec![0.0f64; width]; at.len()];
            for e in 0..width {
                let i = s * width + e;
                let x_se = x.data()[i];
                plus.data_mut()[i] = x_se + H;
                minus.data_mut()[i] = x_se - H;
                let up = losses(&model, &plus, &tokens, &at);
                let down = losses(&model, &minus, &tokens, &at);
                plus.data_mut()[i] = x_se;
                minus.data_mut()[i] = x_se;
                for (k, (u, d)) in up.iter().zip(&down).enumerate() {
                    numeric[k][e] = (f64::from(*u) - f64::from(*d)) / (2.0 * f64::from(H));
                }
            }
            for (k, &t) in at.iter().enumerate() {
                let analytic = &found[k].1.data()[s * width..(s + 1) * width];
                for (e, (&a, &n)) in analytic.iter().zip(&numeric[k]).enumerate() {
                    let a = f64::from(a);
                    assert!(
                        (a - n).abs() <= ATOL + RTOL * a.abs(),
                        "{cell}: ∂loss_{t}/∂x_{s}[{e}] is {a} by backward, {n} by differences"
                    );
                }
                let norm = numeric[k].iter().map(|v| v * v).sum::<f64>().sqrt();
                let drawn = strips[k].norms[s];
                assert!(
                    (drawn - norm).abs() <= ATOL + RTOL * drawn,
                    "{cell}: ‖∂loss_{t}/∂x_{s}‖ is {drawn} in the strip, {norm} by differences"
                );
                compared += usize::from(s <= t && drawn > 10.0 * ATOL);
            }
        }
        assert!(
            compared > 50,
            "{cell}: only {compared} norms stand clear of the tolerance"
        );
    }
}

#[test]
fn the_gradient_is_exactly_zero_for_every_later_character_and_nonzero_before() {
    let dir = scratch();
    for (cell, ckpt) in checkpoints(&dir) {
        let (model, tokens) = restored(&ckpt);
        let at: Vec<usize> = (0..tokens.len() - 1).collect();
        let strips = connectivity::strips(&model, &tokens, &at).unwrap();
        assert_eq!(strips.len(), at.len());
        for Strip { at: t, norms, .. } in &strips {
            assert_eq!(norms.len(), tokens.len());
            for (s, &n) in norms.iter().enumerate() {
                if s > *t {
                    assert_eq!(n, 0.0, "{cell}: ‖∂loss_{t}/∂x_{s}‖ for a later s");
                } else {
                    assert!(n > 0.0, "{cell}: ‖∂loss_{t}/∂x_{s}‖ is {n} for s ≤ t");
                }
            }
        }
    }
}

fn connectivity_args(ckpt: &Path, text: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let base = [
        "connectivity",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--text",
        text,
        "--out",
        out.to_str().unwrap(),
    ];
    args(&[&base[..], extra].concat())
}

fn one_line_error(list: Vec<String>) -> Error {
    let e = run(list.clone()).expect_err("the command must fail");
    assert_eq!(e.to_string().lines().count(), 1, "{list:?}: {e}");
    e
}

#[test]
fn the_command_draws_one_strip_per_prediction_asked_for() {
    let dir = scratch();
    let ckpt = trained(&dir, "lstm", &[]);
    let svg = dir.join("c.svg");
    let out = run(connectivity_args(
        &ckpt,
        TEXT,
        &svg,
        &["--at", "10,3", "--at", "21", "--at", "3"],
    ))
    .unwrap();
    let Outcome::Connectivity(strips) = out else {
        panic!("{out:?}")
    };
    let at: Vec<usize> = strips.iter().map(|s| s.at).collect();
    assert_eq!(at, [3, 10, 21], "ascending, each once");
    let (model, tokens) = restored(&ckpt);
    assert_eq!(strips, connectivity::strips(&model, &tokens, &at).unwrap());

    let drawn = fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
    assert_eq!(drawn.matches("\nt = ").count(), 3, "one caption a strip");
    for t in at {
        assert_eq!(drawn.matches(&format!("\nt = {t}: ")).count(), 1, "{t}");
    }
    // The background, the legend's ten shades and its frame, then a cell a character (the spaces'
    // included) and the predicted character's frame in each strip.
    assert_eq!(
        drawn.matches("<rect").count(),
        1 + 10 + 1 + 3 * (TEXT.len() + 1)
    );
    assert!(drawn.contains("log scale"), "the legend names the scale");

    let last = dir.join("last.svg");
    let out = run(connectivity_args(&ckpt, TEXT, &last, &[])).unwrap();
    let Outcome::Connectivity(strips) = out else {
        panic!("{out:?}")
    };
    assert_eq!(strips.len(), 1);
    assert_eq!(
        strips[0].at,
        TEXT.len() - 2,
        "the last prediction by default"
    );
    assert_eq!(
        fs::read_to_string(&last).unwrap().matches("\nt = ").count(),
        1
    );
}

#[test]
fn bad_input_is_a_one_line_error_and_draws_nothing() {
    let dir = scratch();
    let ckpt = trained(&dir, "gru", &[]);
    let svg = dir.join("c.svg");

    let e = one_line_error(connectivity_args(&ckpt, "the cat sat!", &svg, &[]));
    assert!(
        matches!(&e, Error::Usage(m) if m.contains("'!'") && m.contains("vocabulary")),
        "{e:?}"
    );
    let e = one_line_error(connectivity_args(&ckpt, "", &svg, &[]));
    assert!(
        matches!(&e, Error::Usage(m) if m.contains("--text has 0 characters")),
        "{e:?}"
    );
    let e = one_line_error(connectivity_args(&ckpt, "t", &svg, &[]));
    assert!(matches!(&e, Error::Usage(m) if m.contains("--text has 1 character:")));
    // "the cat" has 7 characters: predictions at 0 to 5.
    run(connectivity_args(&ckpt, "the cat", &svg, &["--at", "5"])).unwrap();
    fs::remove_file(&svg).unwrap();
    let e = one_line_error(connectivity_args(&ckpt, "the cat", &svg, &["--at", "0,6"]));
    assert!(
        matches!(&e, Error::Usage(m) if m.contains("--at 6") && m.contains("0 to 5")),
        "{e:?}"
    );
    let e = one_line_error(connectivity_args(&ckpt, "the cat", &svg, &["--at", "-1"]));
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
    let e = one_line_error(connectivity_args(&dir.join("none"), TEXT, &svg, &[]));
    assert!(matches!(e, Error::Checkpoint(_)), "{e:?}");
    assert!(!svg.exists(), "nothing is drawn for a refused command");

    let nowhere = dir.join("missing").join("c.svg");
    let e = one_line_error(connectivity_args(&ckpt, TEXT, &nowhere, &[]));
    assert!(
        matches!(&e, Error::Metrics(m) if m.contains("missing")),
        "{e:?}"
    );
}

// As in `sample`: finite weights whose logits overflow f32 would give NaN gradients and a strip
// of noise; they are an error naming the first position.
#[test]
fn logits_that_overflow_are_an_error_naming_the_position() {
    let dir = scratch();
    let ckpt = trained(&dir, "lstm", &[]);
    let mut file = load_tensors::<f32>(&ckpt).unwrap();
    file.metadata.retain(|k, _| !k.starts_with("checksum."));
    let bias = file.tensors.get_mut("head.bias").unwrap();
    bias.data_mut().iter_mut().for_each(|b| *b = f32::MAX);
    let head = file.tensors.get_mut("head.weight").unwrap();
    head.data_mut().iter_mut().for_each(|w| *w = f32::MAX);
    save_tensors(&ckpt, &file).unwrap();
    let svg = dir.join("c.svg");
    let e = one_line_error(connectivity_args(&ckpt, TEXT, &svg, &[]));
    assert!(
        matches!(&e, Error::Checkpoint(m) if m.contains("logits at position 0 ")),
        "{e:?}"
    );
    assert!(!svg.exists());
}

// Every step of the text is on one tape, as a `sample --prime` is: under `ulimit -v` (1 GB, far
// below this machine's free memory) 131,000 characters on a 2 × 512 LSTM, some 14 GB, are refused
// before they are read, not an abort in allocation.
#[cfg(unix)]
#[test]
fn a_text_beyond_the_memory_limit_is_a_one_line_error() {
    let dir = scratch();
    let ckpt = trained(
        &dir,
        "lstm",
        &["--hidden", "512", "--layers", "2", "--steps", "1"],
    );
    let text = TEXT.repeat(131_000 / TEXT.len());
    let list = connectivity_args(&ckpt, &text, &dir.join("c.svg"), &[]);
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -v 1000000; exec \"$0\" \"$@\""])
        .arg(binary())
        .args(&list[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--text of ") && stderr.contains("at most"),
        "{stderr}"
    );
}

// Without an embedding, the vectors whose gradients a strip measures are the characters' one-hot
// vectors.
#[test]
fn the_inputs_are_one_row_per_character_one_hot_without_an_embedding() {
    let dir = scratch();
    let ckpt = trained(&dir, "rnn", &["--embed", "0"]);
    let (model, tokens) = restored(&ckpt);
    let x = connectivity::inputs(&model, &tokens);
    let vocab = x.shape()[2];
    assert_eq!(x.shape(), &[tokens.len(), 1, vocab]);
    for (row, &token) in x.data().chunks(vocab).zip(&tokens) {
        let hot: Vec<usize> = (0..vocab).filter(|&c| row[c] != 0.0).collect();
        assert_eq!(hot, [token]);
        assert_eq!(row[token], 1.0);
    }
}
